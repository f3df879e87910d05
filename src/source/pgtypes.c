/* Type mapping tables for pgtypes.h: built-in PostgreSQL OIDs, typmod
 * decoding for numeric, and DuckDB type names. */
#include "source/pgtypes.h"

#include <stdio.h>
#include <string.h>

enum {
    OID_BOOL = 16,
    OID_BYTEA = 17,
    OID_NAME = 19,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_TEXT = 25,
    OID_OID = 26,
    OID_JSON = 114,
    OID_CIDR = 650,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_INET = 869,
    OID_BPCHAR = 1042,
    OID_VARCHAR = 1043,
    OID_DATE = 1082,
    OID_TIME = 1083,
    OID_TIMESTAMP = 1114,
    OID_TIMESTAMPTZ = 1184,
    OID_INTERVAL = 1186,
    OID_NUMERIC = 1700,
    OID_UUID = 2950,
    OID_JSONB = 3802,
};

typedef struct array_oid {
    uint32_t array_oid, elem_oid;
} array_oid;

static const array_oid array_oids[] = {
    {1000, OID_BOOL},    {1001, OID_BYTEA},     {1003, OID_NAME},        {1005, OID_INT2},
    {1007, OID_INT4},    {1009, OID_TEXT},      {1014, OID_BPCHAR},      {1015, OID_VARCHAR},
    {1016, OID_INT8},    {1021, OID_FLOAT4},    {1022, OID_FLOAT8},      {1182, OID_DATE},
    {1183, OID_TIME},    {1115, OID_TIMESTAMP}, {1185, OID_TIMESTAMPTZ}, {1187, OID_INTERVAL},
    {1231, OID_NUMERIC}, {2951, OID_UUID},      {199, OID_JSON},         {3807, OID_JSONB},
    {1028, OID_OID},     {1041, OID_INET},      {651, OID_CIDR},
};

static void set_scalar(pgsrc_type *t, pgsrc_kind kind, const char *ddl)
{
    t->kind = kind;
    snprintf(t->ddl, sizeof t->ddl, "%s", ddl);
}

/* numeric typmod: ((precision << 16) | scale) + 4, scale as a signed 11-bit
 * field since PostgreSQL 15. DuckDB DECIMAL needs 1 <= p <= 38, 0 <= s <= p. */
static void map_numeric(int32_t typmod, pgsrc_type *t)
{
    if (typmod >= 4) {
        int precision = ((typmod - 4) >> 16) & 0xffff;
        int scale = (((typmod - 4) & 0x7ff) ^ 1024) - 1024;
        if (precision >= 1 && precision <= 38 && scale >= 0 && scale <= precision) {
            t->kind = PGSRC_NUMERIC_DECIMAL;
            t->precision = (uint8_t)precision;
            t->scale = (uint8_t)scale;
            t->decimal_bytes = precision <= 4 ? 2 : precision <= 9 ? 4 : precision <= 18 ? 8 : 16;
            snprintf(t->ddl, sizeof t->ddl, "DECIMAL(%d,%d)", precision, scale);
            return;
        }
    }
    set_scalar(t, PGSRC_NUMERIC_DOUBLE, "DOUBLE");
}

static bool map_scalar(uint32_t oid, int32_t typmod, pgsrc_type *t)
{
    switch (oid) {
    case OID_BOOL:
        set_scalar(t, PGSRC_BOOL, "BOOLEAN");
        return true;
    case OID_INT2:
        set_scalar(t, PGSRC_INT2, "SMALLINT");
        return true;
    case OID_INT4:
        set_scalar(t, PGSRC_INT4, "INTEGER");
        return true;
    case OID_INT8:
        set_scalar(t, PGSRC_INT8, "BIGINT");
        return true;
    case OID_OID:
        set_scalar(t, PGSRC_OID, "BIGINT");
        return true;
    case OID_FLOAT4:
        set_scalar(t, PGSRC_FLOAT4, "FLOAT");
        return true;
    case OID_FLOAT8:
        set_scalar(t, PGSRC_FLOAT8, "DOUBLE");
        return true;
    case OID_NUMERIC:
        map_numeric(typmod, t);
        return true;
    case OID_TEXT:
    case OID_VARCHAR:
    case OID_BPCHAR:
    case OID_NAME:
        set_scalar(t, PGSRC_TEXT, "VARCHAR");
        return true;
    case OID_JSON:
        set_scalar(t, PGSRC_JSON, "JSON");
        return true;
    case OID_JSONB:
        set_scalar(t, PGSRC_JSONB, "JSON");
        return true;
    case OID_BYTEA:
        set_scalar(t, PGSRC_BYTEA, "BLOB");
        return true;
    case OID_DATE:
        set_scalar(t, PGSRC_DATE, "DATE");
        return true;
    case OID_TIME:
        set_scalar(t, PGSRC_TIME, "TIME");
        return true;
    case OID_TIMESTAMP:
        set_scalar(t, PGSRC_TIMESTAMP, "TIMESTAMP");
        return true;
    case OID_TIMESTAMPTZ:
        set_scalar(t, PGSRC_TIMESTAMPTZ, "TIMESTAMPTZ");
        return true;
    case OID_INTERVAL:
        set_scalar(t, PGSRC_INTERVAL, "INTERVAL");
        return true;
    case OID_UUID:
        set_scalar(t, PGSRC_UUID, "UUID");
        return true;
    case OID_INET:
    case OID_CIDR: /* decoded, not cast: inet's ::text adds /32 where its output has none */
        set_scalar(t, PGSRC_INET, "VARCHAR");
        return true;
    default:
        return false;
    }
}

bool pgtypes_map_builtin(uint32_t oid, int32_t typmod, pgsrc_type *out)
{
    memset(out, 0, sizeof *out);
    if (map_scalar(oid, typmod, out))
        return true;
    for (size_t i = 0; i < sizeof array_oids / sizeof array_oids[0]; i++) {
        if (array_oids[i].array_oid != oid)
            continue;
        pgsrc_type elem;
        memset(&elem, 0, sizeof elem);
        map_scalar(array_oids[i].elem_oid, typmod, &elem);
        *out = elem;
        out->kind = PGSRC_LIST;
        out->elem_kind = elem.kind;
        snprintf(out->ddl, sizeof out->ddl, "%.37s[]", elem.ddl);
        return true;
    }
    return false;
}

void pgtypes_text_type(pgsrc_type *out)
{
    memset(out, 0, sizeof *out);
    set_scalar(out, PGSRC_TEXT, "VARCHAR");
    out->as_text = true;
}

void pgtypes_text_list_type(pgsrc_type *out)
{
    pgtypes_text_type(out);
    out->kind = PGSRC_LIST;
    out->elem_kind = PGSRC_TEXT;
    snprintf(out->ddl, sizeof out->ddl, "VARCHAR[]");
}

bool pgtypes_is_orderable(const pgsrc_type *type)
{
    switch (type->kind) {
    case PGSRC_INT2:
    case PGSRC_INT4:
    case PGSRC_INT8:
    case PGSRC_OID:
    case PGSRC_FLOAT4:
    case PGSRC_FLOAT8:
    case PGSRC_NUMERIC_DECIMAL:
    case PGSRC_NUMERIC_DOUBLE:
    case PGSRC_DATE:
    case PGSRC_TIME:
    case PGSRC_TIMESTAMP:
    case PGSRC_TIMESTAMPTZ:
    case PGSRC_UUID:
        return true;
    case PGSRC_TEXT:
        return !type->as_text;
    default:
        return false;
    }
}

bool pgtypes_is_text_form(const pgsrc_type *type)
{
    return type->kind == PGSRC_INET || (type->kind == PGSRC_TEXT && type->as_text);
}

bool pgtypes_is_partitionable(const pgsrc_type *type)
{
    switch (type->kind) {
    case PGSRC_INT2:
    case PGSRC_INT4:
    case PGSRC_INT8:
    case PGSRC_NUMERIC_DECIMAL:
    case PGSRC_NUMERIC_DOUBLE:
    case PGSRC_DATE:
    case PGSRC_TIMESTAMP:
    case PGSRC_TIMESTAMPTZ:
        return true;
    default:
        return false;
    }
}
