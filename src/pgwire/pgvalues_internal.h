/* What pgvalues.c and pgvalues_param.c share: PostgreSQL's type OIDs and
 * the text forms tests compare with PostgreSQL's own. */
#ifndef DS_PGWIRE_PGVALUES_INTERNAL_H
#define DS_PGWIRE_PGVALUES_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/strbuf.h"
#include "pgwire/pgvalues_tz.h"

enum {
    PGV_OID_BOOL = 16,
    PGV_OID_BYTEA = 17,
    PGV_OID_INT8 = 20,
    PGV_OID_INT2 = 21,
    PGV_OID_INT4 = 23,
    PGV_OID_TEXT = 25,
    PGV_OID_JSON = 114,
    PGV_OID_FLOAT4 = 700,
    PGV_OID_FLOAT8 = 701,
    PGV_OID_UNKNOWN = 705,
    PGV_OID_BPCHAR = 1042,
    PGV_OID_VARCHAR = 1043,
    PGV_OID_DATE = 1082,
    PGV_OID_TIME = 1083,
    PGV_OID_TIMESTAMP = 1114,
    PGV_OID_TIMESTAMPTZ = 1184,
    PGV_OID_INTERVAL = 1186,
    PGV_OID_TIMETZ = 1266,
    PGV_OID_VARBIT = 1562,
    PGV_OID_NUMERIC = 1700,
    PGV_OID_UUID = 2950,
    PGV_OID_JSONB = 3802,
};

/* The array type of an element type (text[] for the others). */
uint32_t pgv_array_oid(uint32_t elem);

void pgv_float_text(double v, bool float4, int extra_float_digits, ds_buf *b);
void pgv_date_text(int32_t days, ds_buf *b);
void pgv_timestamp_text(int64_t usecs, const pgv_tz *tz, ds_buf *b);
void pgv_interval_text(int32_t months, int32_t days, int64_t micros, ds_buf *b);

#endif
