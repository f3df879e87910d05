/* Values on PostgreSQL's wire: the type OID, typmod and typlen a DuckDB
 * column is described as in RowDescription, each value's text and binary
 * form exactly as PostgreSQL 15 prints and sends it, and Bind parameters
 * (text or binary, of the OIDs drivers send) as DuckDB values to bind. */
#ifndef DS_PGWIRE_PGVALUES_H
#define DS_PGWIRE_PGVALUES_H

#include <stdbool.h>
#include <stdint.h>

#include <duckdb.h>

#include "common/error.h"
#include "common/strbuf.h"

typedef struct pgv_type {
    uint32_t oid;
    int32_t typmod; /* -1 when the type has none */
    int16_t typlen; /* -1 for variable length */
} pgv_type;

/* PostgreSQL's type for a DuckDB type; types PostgreSQL has no counterpart
 * for (STRUCT, MAP, UNION, ...) are text (25), their values DuckDB's text. */
pgv_type pgv_type_of(duckdb_logical_type t);

typedef struct pgv_session {
    const char *timezone;   /* the session's TimeZone (IANA name); "UTC" by default */
    int extra_float_digits; /* as set by the client; drivers send 3 */
} pgv_session;

/* One result column's writer, prepared once per result column. */
typedef struct pgv_column pgv_column;

/* Fails (err set) for a time zone that is not known. The column keeps
 * what it needs of t and s: both may go once it is made. */
pgv_column *pgv_column_new(duckdb_logical_type t, const pgv_session *s, bool binary, ds_error *err);
/* Appends one DataRow field: Int32 length then the bytes, or -1 for NULL. */
bool pgv_put(pgv_column *c, duckdb_vector vec, idx_t row, ds_buf *out, ds_error *err);
void pgv_column_free(pgv_column *c);

/* A Bind parameter (format 0 text / 1 binary) of the given OID (0 =
 * unspecified: text) as a value to bind; NULL with err set when the data is
 * not a valid value of the type. len -1 (a NULL parameter) gives DuckDB's
 * NULL. The caller destroys the value. */
duckdb_value pgv_param_value(uint32_t oid, int format, const char *data, int32_t len, ds_error *err);

/* The OID a prepared statement's parameter is described as
 * (ParameterDescription). */
uint32_t pgv_param_oid(duckdb_type t);

#endif
