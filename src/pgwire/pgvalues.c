/* DuckDB values as PostgreSQL 15 sends them: the type each column is
 * described as, the text form (what psql shows: float8out, timestamptz_out,
 * interval_out in the postgres style, array_out's quoting...) and the
 * binary form (the *_send functions), read straight from DuckDB's vectors.
 * Bind parameters go the other way, in pgvalues_param.c. */
#include "pgwire/pgvalues.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pgwire/pgvalues_internal.h"
#include "pgwire/pgvalues_tz.h"

/* Days and microseconds between 1970-01-01 (DuckDB's epoch) and
 * 2000-01-01 (PostgreSQL's). */
#define PG_EPOCH_DAYS 10957
#define PG_EPOCH_USECS (INT64_C(10957) * 86400 * 1000000)
#define USECS_PER_SEC INT64_C(1000000)
#define USECS_PER_DAY (INT64_C(86400) * USECS_PER_SEC)

struct pgv_column {
    duckdb_type id;
    pgv_type pg;
    bool binary;
    int extra_float_digits;
    const pgv_tz *tz;
    uint8_t dec_width, dec_scale;
    duckdb_type internal; /* DECIMAL and ENUM storage */
    char **enum_names;
    uint32_t enum_count;
    pgv_column **children; /* LIST/ARRAY: 1; STRUCT/UNION: the members; MAP: key, value */
    char **child_names;
    idx_t nchildren;
    idx_t array_size; /* ARRAY */
};

/* ---- types ---------------------------------------------------------- */

typedef struct array_oid {
    uint32_t elem, array;
} array_oid;

static const array_oid array_oids[] = {
    {PGV_OID_BOOL, 1000},        {PGV_OID_BYTEA, 1001},    {PGV_OID_INT2, 1005},    {PGV_OID_INT4, 1007},
    {PGV_OID_TEXT, 1009},        {PGV_OID_VARCHAR, 1015},  {PGV_OID_INT8, 1016},    {PGV_OID_FLOAT4, 1021},
    {PGV_OID_FLOAT8, 1022},      {PGV_OID_DATE, 1182},     {PGV_OID_TIME, 1183},    {PGV_OID_TIMESTAMP, 1115},
    {PGV_OID_TIMESTAMPTZ, 1185}, {PGV_OID_INTERVAL, 1187}, {PGV_OID_NUMERIC, 1231}, {PGV_OID_UUID, 2951},
    {PGV_OID_JSON, 199},         {PGV_OID_JSONB, 3807},    {PGV_OID_TIMETZ, 1270},  {PGV_OID_VARBIT, 1563},
};

uint32_t pgv_array_oid(uint32_t elem)
{
    for (size_t i = 0; i < sizeof array_oids / sizeof array_oids[0]; i++)
        if (array_oids[i].elem == elem)
            return array_oids[i].array;
    return 1009; /* text[] */
}

static bool is_json(duckdb_logical_type t)
{
    char *alias = duckdb_logical_type_get_alias(t);
    bool json = alias && strcmp(alias, "JSON") == 0;
    duckdb_free(alias);
    return json;
}

static pgv_type scalar(uint32_t oid, int16_t typlen)
{
    pgv_type r = {oid, -1, typlen};
    return r;
}

/* The element type of a (nested) list: PostgreSQL arrays are flat, with
 * dimensions, so int[][] is int4[] (1007) too. */
static pgv_type list_elem(duckdb_logical_type t)
{
    duckdb_type id = duckdb_get_type_id(t);
    duckdb_logical_type child =
        id == DUCKDB_TYPE_LIST ? duckdb_list_type_child_type(t) : duckdb_array_type_child_type(t);
    duckdb_type cid = duckdb_get_type_id(child);
    pgv_type r = cid == DUCKDB_TYPE_LIST || cid == DUCKDB_TYPE_ARRAY ? list_elem(child) : pgv_type_of(child);
    duckdb_destroy_logical_type(&child);
    return r;
}

pgv_type pgv_type_of(duckdb_logical_type t)
{
    switch (duckdb_get_type_id(t)) {
    case DUCKDB_TYPE_BOOLEAN:
        return scalar(PGV_OID_BOOL, 1);
    case DUCKDB_TYPE_TINYINT:
    case DUCKDB_TYPE_SMALLINT:
    case DUCKDB_TYPE_UTINYINT:
        return scalar(PGV_OID_INT2, 2);
    case DUCKDB_TYPE_INTEGER:
    case DUCKDB_TYPE_USMALLINT:
        return scalar(PGV_OID_INT4, 4);
    case DUCKDB_TYPE_BIGINT:
    case DUCKDB_TYPE_UINTEGER:
        return scalar(PGV_OID_INT8, 8);
    case DUCKDB_TYPE_UBIGINT:
    case DUCKDB_TYPE_HUGEINT:
    case DUCKDB_TYPE_UHUGEINT:
        return scalar(PGV_OID_NUMERIC, -1);
    case DUCKDB_TYPE_DECIMAL: {
        pgv_type r = {PGV_OID_NUMERIC, ((int32_t)duckdb_decimal_width(t) << 16 | duckdb_decimal_scale(t)) + 4,
                      -1};
        return r;
    }
    case DUCKDB_TYPE_FLOAT:
        return scalar(PGV_OID_FLOAT4, 4);
    case DUCKDB_TYPE_DOUBLE:
        return scalar(PGV_OID_FLOAT8, 8);
    case DUCKDB_TYPE_VARCHAR:
        return scalar(is_json(t) ? PGV_OID_JSON : PGV_OID_TEXT, -1);
    case DUCKDB_TYPE_BLOB:
        return scalar(PGV_OID_BYTEA, -1);
    case DUCKDB_TYPE_DATE:
        return scalar(PGV_OID_DATE, 4);
    case DUCKDB_TYPE_TIME:
    case DUCKDB_TYPE_TIME_NS:
        return scalar(PGV_OID_TIME, 8);
    case DUCKDB_TYPE_TIME_TZ:
        return scalar(PGV_OID_TIMETZ, 12);
    case DUCKDB_TYPE_TIMESTAMP:
    case DUCKDB_TYPE_TIMESTAMP_NS: {
        pgv_type r = scalar(PGV_OID_TIMESTAMP, 8);
        return r;
    }
    case DUCKDB_TYPE_TIMESTAMP_S: {
        pgv_type r = {PGV_OID_TIMESTAMP, 0, 8};
        return r;
    }
    case DUCKDB_TYPE_TIMESTAMP_MS: {
        pgv_type r = {PGV_OID_TIMESTAMP, 3, 8};
        return r;
    }
    case DUCKDB_TYPE_TIMESTAMP_TZ:
        return scalar(PGV_OID_TIMESTAMPTZ, 8);
    case DUCKDB_TYPE_INTERVAL:
        return scalar(PGV_OID_INTERVAL, 16);
    case DUCKDB_TYPE_UUID:
        return scalar(PGV_OID_UUID, 16);
    case DUCKDB_TYPE_BIT:
        return scalar(PGV_OID_VARBIT, -1);
    case DUCKDB_TYPE_LIST:
    case DUCKDB_TYPE_ARRAY: {
        /* an array column carries its element's typmod, as numeric(5,2)[] */
        pgv_type elem = list_elem(t), r = {pgv_array_oid(elem.oid), elem.typmod, -1};
        return r;
    }
    default: /* ENUM, STRUCT, MAP, UNION, ...: their text */
        return scalar(PGV_OID_TEXT, -1);
    }
}

/* ---- columns -------------------------------------------------------- */

void pgv_column_free(pgv_column *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->enum_count; i++)
        duckdb_free(c->enum_names[i]);
    free(c->enum_names);
    for (idx_t i = 0; i < c->nchildren; i++) {
        pgv_column_free(c->children[i]);
        if (c->child_names)
            duckdb_free(c->child_names[i]);
    }
    free(c->children);
    free(c->child_names);
    free(c);
}

static bool supported(duckdb_type id)
{
    switch (id) {
    case DUCKDB_TYPE_INVALID:
    case DUCKDB_TYPE_ANY:
    case DUCKDB_TYPE_BIGNUM:
    case DUCKDB_TYPE_STRING_LITERAL:
    case DUCKDB_TYPE_INTEGER_LITERAL:
        return false;
    default:
        return true;
    }
}

static bool add_children(pgv_column *c, duckdb_logical_type t, const pgv_session *s, ds_error *err)
{
    idx_t n = 1;
    if (c->id == DUCKDB_TYPE_STRUCT)
        n = duckdb_struct_type_child_count(t);
    else if (c->id == DUCKDB_TYPE_UNION)
        n = duckdb_union_type_member_count(t);
    else if (c->id == DUCKDB_TYPE_MAP)
        n = 2;
    c->children = calloc(n ? n : 1, sizeof(pgv_column *));
    if (c->id == DUCKDB_TYPE_STRUCT || c->id == DUCKDB_TYPE_UNION)
        c->child_names = calloc(n ? n : 1, sizeof *c->child_names);
    if (!c->children || ((c->id == DUCKDB_TYPE_STRUCT || c->id == DUCKDB_TYPE_UNION) && !c->child_names))
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    for (idx_t i = 0; i < n; i++) {
        duckdb_logical_type ct;
        switch (c->id) {
        case DUCKDB_TYPE_LIST:
            ct = duckdb_list_type_child_type(t);
            break;
        case DUCKDB_TYPE_ARRAY:
            ct = duckdb_array_type_child_type(t);
            break;
        case DUCKDB_TYPE_MAP:
            ct = i == 0 ? duckdb_map_type_key_type(t) : duckdb_map_type_value_type(t);
            break;
        case DUCKDB_TYPE_STRUCT:
            ct = duckdb_struct_type_child_type(t, i);
            c->child_names[i] = duckdb_struct_type_child_name(t, i);
            break;
        default:
            ct = duckdb_union_type_member_type(t, i);
            c->child_names[i] = duckdb_union_type_member_name(t, i);
            break;
        }
        c->children[i] = pgv_column_new(ct, s, c->binary, err);
        duckdb_destroy_logical_type(&ct);
        c->nchildren = i + 1;
        if (!c->children[i])
            return false;
    }
    return true;
}

pgv_column *pgv_column_new(duckdb_logical_type t, const pgv_session *s, bool binary, ds_error *err)
{
    duckdb_type id = duckdb_get_type_id(t);
    if (!supported(id)) {
        ds_error_set(err, DS_ERR_STORE,
                     "a result column of DuckDB type %s has no PostgreSQL form; cast it to VARCHAR",
                     id == DUCKDB_TYPE_BIGNUM ? "BIGNUM" : "ANY or unresolved");
        return NULL;
    }
    pgv_column *c = calloc(1, sizeof *c);
    if (!c) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    c->id = id;
    c->pg = pgv_type_of(t);
    c->extra_float_digits = s ? s->extra_float_digits : 1;
    /* Types PostgreSQL has no counterpart for go as text even when the
     * client asked for binary: their binary form is their text (as for
     * PostgreSQL's text type). */
    c->binary = binary;
    const char *zone = s && s->timezone && *s->timezone ? s->timezone : "UTC";
    if (id == DUCKDB_TYPE_TIMESTAMP_TZ || id == DUCKDB_TYPE_STRUCT || id == DUCKDB_TYPE_MAP ||
        id == DUCKDB_TYPE_UNION || id == DUCKDB_TYPE_LIST || id == DUCKDB_TYPE_ARRAY) {
        c->tz = pgv_tz_get(zone, err);
        if (!c->tz)
            goto fail;
    }
    switch (id) {
    case DUCKDB_TYPE_DECIMAL:
        c->dec_width = duckdb_decimal_width(t);
        c->dec_scale = duckdb_decimal_scale(t);
        c->internal = duckdb_decimal_internal_type(t);
        break;
    case DUCKDB_TYPE_ENUM:
        c->internal = duckdb_enum_internal_type(t);
        c->enum_count = duckdb_enum_dictionary_size(t);
        c->enum_names = calloc(c->enum_count ? c->enum_count : 1, sizeof *c->enum_names);
        if (!c->enum_names) {
            c->enum_count = 0;
            ds_error_set(err, DS_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (uint32_t i = 0; i < c->enum_count; i++)
            c->enum_names[i] = duckdb_enum_dictionary_value(t, i);
        break;
    case DUCKDB_TYPE_ARRAY:
        c->array_size = duckdb_array_type_array_size(t);
        /* fall through */
    case DUCKDB_TYPE_LIST:
    case DUCKDB_TYPE_STRUCT:
    case DUCKDB_TYPE_MAP:
    case DUCKDB_TYPE_UNION:
        if (!add_children(c, t, s, err))
            goto fail;
        break;
    default:
        break;
    }
    return c;
fail:
    pgv_column_free(c);
    return NULL;
}

/* ---- reading vectors ------------------------------------------------ */

static bool is_valid(duckdb_vector vec, idx_t row)
{
    uint64_t *validity = duckdb_vector_get_validity(vec);
    return !validity || (validity[row / 64] >> (row % 64) & 1);
}

static void get_string(duckdb_vector vec, idx_t row, const char **data, uint32_t *len)
{
    duckdb_string_t *s = (duckdb_string_t *)duckdb_vector_get_data(vec) + row;
    *len = duckdb_string_t_length(*s);
    *data = duckdb_string_t_data(s);
}

#define DATA(type, vec, row) (((type *)duckdb_vector_get_data(vec))[row])

/* An integer column's value (DuckDB's integer types and the storage of
 * decimals and enums), widened. */
static __int128 get_int(duckdb_type id, duckdb_vector vec, idx_t row)
{
    switch (id) {
    case DUCKDB_TYPE_TINYINT:
        return DATA(int8_t, vec, row);
    case DUCKDB_TYPE_SMALLINT:
        return DATA(int16_t, vec, row);
    case DUCKDB_TYPE_INTEGER:
        return DATA(int32_t, vec, row);
    case DUCKDB_TYPE_BIGINT:
        return DATA(int64_t, vec, row);
    case DUCKDB_TYPE_UTINYINT:
        return DATA(uint8_t, vec, row);
    case DUCKDB_TYPE_USMALLINT:
        return DATA(uint16_t, vec, row);
    case DUCKDB_TYPE_UINTEGER:
        return DATA(uint32_t, vec, row);
    case DUCKDB_TYPE_UBIGINT:
        return DATA(uint64_t, vec, row);
    case DUCKDB_TYPE_HUGEINT: {
        duckdb_hugeint h = DATA(duckdb_hugeint, vec, row);
        return (__int128)((unsigned __int128)(uint64_t)h.upper << 64 | h.lower);
    }
    default:
        return 0;
    }
}

/* Decimal digits of |v| (as text) into buf, returning the start. */
static char *u128_digits(unsigned __int128 v, char *end)
{
    *--end = '\0';
    do {
        *--end = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    return end;
}

/* The decimal text of an integer scaled by 10^scale: "-12.3400". */
static void decimal_text(bool negative, unsigned __int128 magnitude, int scale, ds_buf *b)
{
    char tmp[48];
    char *digits = u128_digits(magnitude, tmp + sizeof tmp);
    size_t n = (size_t)(tmp + sizeof tmp - 1 - digits);
    /* Built whole, then appended once: sign, integer part, point, fraction
     * (a DECIMAL has at most 38 digits). */
    char text[48 + 42];
    size_t k = 0;
    if (negative && magnitude)
        text[k++] = '-';
    if (scale <= 0) {
        memcpy(text + k, digits, n);
        k += n;
    } else if (n <= (size_t)scale) {
        text[k++] = '0';
        text[k++] = '.';
        for (size_t i = n; i < (size_t)scale; i++)
            text[k++] = '0';
        memcpy(text + k, digits, n);
        k += n;
    } else {
        memcpy(text + k, digits, n - (size_t)scale);
        k += n - (size_t)scale;
        text[k++] = '.';
        memcpy(text + k, digits + n - scale, (size_t)scale);
        k += (size_t)scale;
    }
    ds_buf_appendn(b, text, k);
}

/* The number of a numeric column (integer types beyond int8, decimals) as
 * sign, magnitude and scale. */
static void get_number(const pgv_column *c, duckdb_vector vec, idx_t row, bool *negative,
                       unsigned __int128 *magnitude, int *scale)
{
    unsigned __int128 m;
    bool neg = false;
    if (c->id == DUCKDB_TYPE_UHUGEINT) {
        duckdb_uhugeint h = DATA(duckdb_uhugeint, vec, row);
        m = (unsigned __int128)h.upper << 64 | h.lower;
    } else {
        __int128 v = get_int(c->id == DUCKDB_TYPE_DECIMAL ? c->internal : c->id, vec, row);
        neg = v < 0;
        m = neg ? (unsigned __int128)0 - (unsigned __int128)v : (unsigned __int128)v;
    }
    *negative = neg;
    *magnitude = m;
    *scale = c->id == DUCKDB_TYPE_DECIMAL ? c->dec_scale : 0;
}

/* ---- text forms ----------------------------------------------------- */

/* Powers of ten a double holds exactly. */
static const double exact_pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                     1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The 15 digits of v (> 0, normal) when 15 digits read back as v, found
 * without printf: m * 10^-k with m < 2^53 and k <= 22 is an exact operand
 * pair, so one IEEE operation gives the correctly rounded double (the fast
 * path of strtod) and the comparison is exact. 1 found, 0 when 15 digits
 * do not read back, -1 when v is beyond the fast path. */
static int fast_15_digits(double v, uint64_t *m_out, int *exp10)
{
    int e0 = (int)floor(log10(v));
    for (int e = e0 - 1; e <= e0 + 1; e++) {
        int k = 14 - e;
        if (k > 22 || k < -22)
            return -1;
        double scaled = k >= 0 ? v * exact_pow10[k] : v / exact_pow10[-k];
        double m0 = nearbyint(scaled);
        for (int d = -1; d <= 1; d++) {
            double m = m0 + d;
            if (m < 1e14 || m >= 1e15)
                continue;
            if ((k >= 0 ? m / exact_pow10[k] : m * exact_pow10[-k]) == v) {
                *m_out = (uint64_t)m;
                *exp10 = e;
                return 1;
            }
        }
    }
    return 0;
}

/* The shortest decimal digits of v (> 0 or +0, finite) that read back as
 * v (as a float4 when float4), as Ryu finds them: where DBL_DIG (FLT_DIG)
 * digits read back, no other decimal of that many digits lies as close, so
 * it is that text without its trailing zeros; beyond, the closest of 16 or
 * 17 (8 or 9) digits. Subnormals, whose spacing is coarser, are searched
 * digit count by digit count. Returns the number of digits; *exp10 is the
 * exponent of the first. */
static int shortest_digits(double v, bool float4, char digits[24], int *exp10)
{
    char tmp[64];
    int nd = 0;
    uint64_t m;
    if (v == 0) {
        memcpy(digits, "0", 2);
        *exp10 = 0;
        return 1;
    }
    int fast = !float4 && v >= DBL_MIN ? fast_15_digits(v, &m, exp10) : -1;
    if (fast == 1) {
        char *end = u128_digits(m, tmp + sizeof tmp);
        nd = (int)strlen(end);
        memcpy(digits, end, (size_t)nd);
    } else {
        bool subnormal = float4 ? v < FLT_MIN : v < DBL_MIN;
        int min = float4 ? FLT_DIG : DBL_DIG, max = float4 ? 9 : 17;
        int precision = subnormal ? 1 : fast == 0 ? DBL_DIG + 1 : min;
        for (; precision < max; precision++) {
            snprintf(tmp, sizeof tmp, "%.*e", precision - 1, v);
            double back = strtod(tmp, NULL);
            if (float4 ? (float)back == (float)v : back == v)
                break;
        }
        if (precision == max)
            snprintf(tmp, sizeof tmp, "%.*e", precision - 1, v);
        /* tmp is d[.ddd]e±XX */
        const char *p = tmp;
        for (; *p && *p != 'e'; p++)
            if (*p >= '0' && *p <= '9')
                digits[nd++] = *p;
        *exp10 = atoi(p + 1);
    }
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    return nd;
}

/* float4out/float8out: the shortest text that reads back as the same value
 * (extra_float_digits > 0, PostgreSQL 12's default), else %g with
 * FLT_DIG/DBL_DIG + extra_float_digits digits. Exponent form outside
 * 1e-4 <= |v| < 1e15 (1e6 for float4), as PostgreSQL's Ryu output. */
void pgv_float_text(double v, bool float4, int extra_float_digits, ds_buf *b)
{
    if (isnan(v)) {
        ds_buf_append(b, "NaN");
        return;
    }
    if (isinf(v)) {
        ds_buf_append(b, v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    char tmp[64];
    if (extra_float_digits <= 0) {
        int digits = (float4 ? FLT_DIG : DBL_DIG) + extra_float_digits;
        snprintf(tmp, sizeof tmp, "%.*g", digits < 1 ? 1 : digits, v);
        ds_buf_append(b, tmp);
        return;
    }
    char digits[24];
    int exp10;
    bool negative = signbit(v);
    int nd = shortest_digits(fabs(v), float4, digits, &exp10);
    if (negative)
        ds_buf_appendc(b, '-');
    if (exp10 < -4 || exp10 >= (float4 ? FLT_DIG : DBL_DIG)) {
        ds_buf_appendc(b, digits[0]);
        if (nd > 1) {
            ds_buf_appendc(b, '.');
            ds_buf_append(b, digits + 1);
        }
        ds_buf_appendf(b, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (exp10 < 0) {
        ds_buf_append(b, "0.");
        for (int i = -1; i > exp10; i--)
            ds_buf_appendc(b, '0');
        ds_buf_append(b, digits);
    } else if (nd <= exp10 + 1) {
        ds_buf_append(b, digits);
        for (int i = nd; i <= exp10; i++)
            ds_buf_appendc(b, '0');
    } else {
        ds_buf_appendn(b, digits, (size_t)exp10 + 1);
        ds_buf_appendc(b, '.');
        ds_buf_append(b, digits + exp10 + 1);
    }
}

/* Civil date of a day count since 1970-01-01 (proleptic Gregorian, any
 * sign; H. Hinnant's days_from_civil inverse). */
static void civil(int64_t days, int64_t *year, int *month, int *day)
{
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *day = (int)(doy - (153 * mp + 2) / 5 + 1);
    *month = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = yoe + era * 400 + (*month <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* A date or time's text, built on the stack and appended to the row at
 * once: timestamps are written a million times a second, and one append
 * per part cost more than the arithmetic. Room for the longest: a
 * 6-digit year, time, fraction, +HH:MM:SS zone and " BC". */
typedef struct tbuf {
    char s[64];
    size_t n;
} tbuf;

static void tb_c(tbuf *t, char c)
{
    t->s[t->n++] = c;
}

/* v in decimal, zero-padded to width digits (printf's %0*d without its
 * cost). */
static void append_padded(tbuf *t, uint64_t v, int width)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < width)
        tmp[sizeof tmp - 1 - n++] = '0';
    memcpy(t->s + t->n, tmp + sizeof tmp - n, (size_t)n);
    t->n += (size_t)n;
}

/* YYYY-MM-DD of the ISO DateStyle; returns whether the year is BC (year 0
 * is 1 BC), which the caller writes last. */
static bool date_part(int64_t days, tbuf *t)
{
    int64_t year;
    int month, day;
    civil(days, &year, &month, &day);
    bool bc = year <= 0;
    append_padded(t, (uint64_t)(bc ? 1 - year : year), 4);
    tb_c(t, '-');
    append_padded(t, (uint64_t)month, 2);
    tb_c(t, '-');
    append_padded(t, (uint64_t)day, 2);
    return bc;
}

/* SS[.ffffff]: the fraction without its trailing zeros (AppendSeconds). */
static void seconds_part(int secs, int fsec, tbuf *t)
{
    append_padded(t, (uint64_t)secs, 2);
    if (fsec) {
        int n = 6;
        while (fsec % 10 == 0)
            fsec /= 10, n--;
        tb_c(t, '.');
        append_padded(t, (uint64_t)fsec, n);
    }
}

/* HH:MM:SS[.ffffff] of microseconds since midnight. */
static void time_part(int64_t usecs, tbuf *t)
{
    int64_t secs = usecs / USECS_PER_SEC;
    append_padded(t, (uint64_t)(secs / 3600), 2);
    tb_c(t, ':');
    append_padded(t, (uint64_t)(secs / 60 % 60), 2);
    tb_c(t, ':');
    seconds_part((int)(secs % 60), (int)(usecs % USECS_PER_SEC), t);
}

/* +HH, +HH:MM or +HH:MM:SS of an offset east of UTC (EncodeTimezone). */
static void zone_part(int32_t east, tbuf *t)
{
    int s = abs(east);
    tb_c(t, east >= 0 ? '+' : '-');
    append_padded(t, (uint64_t)(s / 3600), 2);
    if (s % 3600) {
        tb_c(t, ':');
        append_padded(t, (uint64_t)(s / 60 % 60), 2);
    }
    if (s % 60) {
        tb_c(t, ':');
        append_padded(t, (uint64_t)(s % 60), 2);
    }
}

static void bc_and_append(tbuf *t, bool bc, ds_buf *b)
{
    if (bc) {
        memcpy(t->s + t->n, " BC", 3);
        t->n += 3;
    }
    ds_buf_appendn(b, t->s, t->n);
}

#define DUCK_TS_INFINITY INT64_MAX
#define DUCK_TS_NINFINITY (-INT64_MAX)
#define DUCK_DATE_INFINITY INT32_MAX
#define DUCK_DATE_NINFINITY (-INT32_MAX)

void pgv_date_text(int32_t days, ds_buf *b)
{
    if (days == DUCK_DATE_INFINITY || days == DUCK_DATE_NINFINITY) {
        ds_buf_append(b, days > 0 ? "infinity" : "-infinity");
        return;
    }
    tbuf t = {.n = 0};
    bool bc = date_part(days, &t);
    bc_and_append(&t, bc, b);
}

/* A timestamp (microseconds since 1970) as timestamp_out prints it; with
 * tz, as timestamptz_out prints it in that zone. */
void pgv_timestamp_text(int64_t usecs, const pgv_tz *tz, ds_buf *b)
{
    if (usecs == DUCK_TS_INFINITY || usecs == DUCK_TS_NINFINITY) {
        ds_buf_append(b, usecs > 0 ? "infinity" : "-infinity");
        return;
    }
    int32_t east = tz ? pgv_tz_offset(tz, floor_div(usecs, USECS_PER_SEC)) : 0;
    int64_t local = usecs + (int64_t)east * USECS_PER_SEC;
    int64_t days = floor_div(local, USECS_PER_DAY);
    tbuf t = {.n = 0};
    bool bc = date_part(days, &t);
    tb_c(&t, ' ');
    time_part(local - days * USECS_PER_DAY, &t);
    if (tz)
        zone_part(east, &t);
    bc_and_append(&t, bc, b);
}

static void interval_unit(ds_buf *b, int64_t value, const char *unit, bool *is_zero, bool *is_before)
{
    if (value == 0)
        return;
    ds_buf_appendf(b, "%s%s%" PRId64 " %s%s", *is_zero ? "" : " ", (*is_before && value > 0) ? "+" : "",
                   value, unit, value != 1 ? "s" : "");
    *is_before = value < 0;
    *is_zero = false;
}

/* interval_out with IntervalStyle postgres: "1 year 2 mons 3 days
 * 04:05:06.789", "-1 days +02:00:00", "00:00:00". */
void pgv_interval_text(int32_t months, int32_t days, int64_t micros, ds_buf *b)
{
    bool is_zero = true, is_before = false;
    interval_unit(b, months / 12, "year", &is_zero, &is_before);
    interval_unit(b, months % 12, "mon", &is_zero, &is_before);
    interval_unit(b, days, "day", &is_zero, &is_before);
    if (!is_zero && micros == 0)
        return;
    bool minus = micros < 0;
    uint64_t m = minus ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
    ds_buf_appendf(b, "%s%s%02" PRIu64 ":%02d:", is_zero ? "" : " ", minus ? "-" : (is_before ? "+" : ""),
                   m / 3600000000u, (int)(m / 60000000u % 60));
    tbuf t = {.n = 0};
    seconds_part((int)(m / 1000000u % 60), (int)(m % 1000000u), &t);
    ds_buf_appendn(b, t.s, t.n);
}

static void uuid_bytes(duckdb_hugeint h, uint8_t out[16])
{
    uint64_t upper = (uint64_t)h.upper ^ (UINT64_C(1) << 63); /* DuckDB flips the top bit to order uuids */
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(upper >> (56 - 8 * i));
        out[8 + i] = (uint8_t)(h.lower >> (56 - 8 * i));
    }
}

/* 8-4-4-4-12 lowercase hex digits, written at once: a result may hold
 * millions (one printf per byte was the encoder's largest cost). */
static void uuid_text(duckdb_hugeint h, ds_buf *b)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t u[16];
    uuid_bytes(h, u);
    char text[36];
    int n = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            text[n++] = '-';
        text[n++] = hex[u[i] >> 4];
        text[n++] = hex[u[i] & 15];
    }
    ds_buf_appendn(b, text, sizeof text);
}

static void bytea_text(const char *data, uint32_t len, ds_buf *b)
{
    static const char hex[] = "0123456789abcdef";
    ds_buf_append(b, "\\x");
    for (uint32_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        char pair[2] = {hex[c >> 4], hex[c & 15]};
        ds_buf_appendn(b, pair, 2);
    }
}

/* DuckDB's BIT: a first byte counting the padding bits at the start of the
 * second, then the bits. */
static uint32_t bit_count(const char *data, uint32_t len)
{
    return len < 1 ? 0 : (len - 1) * 8 - (uint8_t)data[0];
}

static bool bit_at(const char *data, uint32_t i, uint32_t padding)
{
    uint32_t at = i + padding;
    return ((uint8_t)data[1 + at / 8] >> (7 - at % 8)) & 1;
}

static void bit_text(const char *data, uint32_t len, ds_buf *b)
{
    uint32_t n = bit_count(data, len);
    for (uint32_t i = 0; i < n; i++)
        ds_buf_appendc(b, bit_at(data, i, (uint8_t)data[0]) ? '1' : '0');
}

static const char *enum_name(const pgv_column *c, duckdb_vector vec, idx_t row)
{
    uint64_t i = (uint64_t)get_int(c->internal, vec, row);
    return i < c->enum_count ? c->enum_names[i] : "";
}

static int64_t timestamp_usecs(duckdb_type id, duckdb_vector vec, idx_t row)
{
    int64_t v = DATA(int64_t, vec, row);
    if (v == DUCK_TS_INFINITY || v == DUCK_TS_NINFINITY)
        return v;
    switch (id) {
    case DUCKDB_TYPE_TIMESTAMP_S:
        return v * USECS_PER_SEC;
    case DUCKDB_TYPE_TIMESTAMP_MS:
        return v * 1000;
    case DUCKDB_TYPE_TIMESTAMP_NS:
        return floor_div(v, 1000);
    default:
        return v;
    }
}

static bool put_text(const pgv_column *c, duckdb_vector vec, idx_t row, ds_buf *b, ds_error *err);

/* array_out's quoting of one element: quoted when empty, "NULL", or holding
 * braces, quotes, backslashes, commas or white space. */
static void array_element(const char *s, size_t n, ds_buf *b)
{
    bool quote = n == 0 || (n == 4 && strncasecmp(s, "NULL", 4) == 0);
    for (size_t i = 0; i < n && !quote; i++)
        quote = strchr("{}\",\\ \t\n\r\v\f", s[i]) != NULL && s[i] != '\0';
    if (!quote) {
        ds_buf_appendn(b, s, n);
        return;
    }
    ds_buf_appendc(b, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            ds_buf_appendc(b, '\\');
        ds_buf_appendc(b, s[i]);
    }
    ds_buf_appendc(b, '"');
}

static bool is_list(duckdb_type id)
{
    return id == DUCKDB_TYPE_LIST || id == DUCKDB_TYPE_ARRAY;
}

/* Offset and length of a LIST or ARRAY row in its child vector. */
static void list_span(const pgv_column *c, duckdb_vector vec, idx_t row, duckdb_vector *child, idx_t *offset,
                      idx_t *length)
{
    if (c->id == DUCKDB_TYPE_ARRAY) {
        *child = duckdb_array_vector_get_child(vec);
        *offset = row * c->array_size;
        *length = c->array_size;
    } else {
        duckdb_list_entry e = DATA(duckdb_list_entry, vec, row);
        *child = duckdb_list_vector_get_child(vec);
        *offset = e.offset;
        *length = e.length;
    }
}

static bool array_text(const pgv_column *c, duckdb_vector vec, idx_t row, ds_buf *b, ds_error *err)
{
    duckdb_vector child;
    idx_t offset, length;
    list_span(c, vec, row, &child, &offset, &length);
    const pgv_column *ec = c->children[0];
    ds_buf elem = DS_BUF_INIT;
    bool ok = true;
    ds_buf_appendc(b, '{');
    for (idx_t i = 0; i < length && ok; i++) {
        if (i)
            ds_buf_appendc(b, ',');
        if (!is_valid(child, offset + i)) {
            ds_buf_append(b, "NULL");
        } else if (is_list(ec->id)) {
            ok = array_text(ec, child, offset + i, b, err);
        } else {
            ds_buf_reset(&elem);
            ok = put_text(ec, child, offset + i, &elem, err);
            ok = ok && !elem.failed;
            if (ok)
                array_element(ds_buf_str(&elem), elem.len, b);
        }
    }
    ds_buf_appendc(b, '}');
    ds_buf_free(&elem);
    return ok;
}

/* A scalar inside DuckDB's text of a nested value, quoted as DuckDB's
 * cast to VARCHAR quotes it: when empty, "null", starting (or ending) with
 * white space or holding one of "'(),:=[]{}; ' and \ then escaped. */
static void nested_scalar(const char *s, size_t n, bool always, ds_buf *b)
{
    static const char space[] = " \t\n\v\f\r";
    bool quote = always || n == 0 || (n == 4 && strncasecmp(s, "null", 4) == 0) ||
                 (s[0] && strchr(space, s[0])) || (n >= 2 && s[n - 1] && strchr(space, s[n - 1]));
    for (size_t i = 0; i < n && !quote; i++)
        quote = s[i] && strchr("\"'(),:=[]{}", s[i]);
    if (!quote) {
        ds_buf_appendn(b, s, n);
        return;
    }
    ds_buf_appendc(b, '\'');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\'' || s[i] == '\\')
            ds_buf_appendc(b, '\\');
        ds_buf_appendc(b, s[i]);
    }
    ds_buf_appendc(b, '\'');
}

/* DuckDB's text of a nested value ({'a': 1, 'b': x}, {k=v}, [1, 2]), its
 * scalars as PostgreSQL prints them but booleans, DuckDB's true/false. */
static bool nested_text(const pgv_column *c, duckdb_vector vec, idx_t row, ds_buf *b, ds_error *err)
{
    if (!is_valid(vec, row)) {
        ds_buf_append(b, "NULL");
        return true;
    }
    switch (c->id) {
    case DUCKDB_TYPE_STRUCT:
        ds_buf_appendc(b, '{');
        for (idx_t i = 0; i < c->nchildren; i++) {
            ds_buf_append(b, i ? ", " : "");
            nested_scalar(c->child_names[i], strlen(c->child_names[i]), true, b);
            ds_buf_append(b, ": ");
            if (!nested_text(c->children[i], duckdb_struct_vector_get_child(vec, i), row, b, err))
                return false;
        }
        ds_buf_appendc(b, '}');
        return true;
    case DUCKDB_TYPE_UNION: {
        /* member 0 of the struct is the tag */
        uint8_t tag = DATA(uint8_t, duckdb_struct_vector_get_child(vec, 0), row);
        if ((idx_t)tag + 1 >= c->nchildren + 1)
            return true;
        return nested_text(c->children[tag], duckdb_struct_vector_get_child(vec, (idx_t)tag + 1), row, b,
                           err);
    }
    case DUCKDB_TYPE_MAP:
    case DUCKDB_TYPE_LIST:
    case DUCKDB_TYPE_ARRAY: {
        duckdb_vector child;
        idx_t offset, length;
        bool map = c->id == DUCKDB_TYPE_MAP;
        if (map) {
            duckdb_list_entry e = DATA(duckdb_list_entry, vec, row);
            child = duckdb_list_vector_get_child(vec);
            offset = e.offset;
            length = e.length;
        } else {
            list_span(c, vec, row, &child, &offset, &length);
        }
        ds_buf_appendc(b, map ? '{' : '[');
        for (idx_t i = 0; i < length; i++) {
            ds_buf_append(b, i ? ", " : "");
            if (map) {
                if (!nested_text(c->children[0], duckdb_struct_vector_get_child(child, 0), offset + i, b,
                                 err))
                    return false;
                ds_buf_appendc(b, '=');
                if (!nested_text(c->children[1], duckdb_struct_vector_get_child(child, 1), offset + i, b,
                                 err))
                    return false;
            } else if (!nested_text(c->children[0], child, offset + i, b, err)) {
                return false;
            }
        }
        ds_buf_appendc(b, map ? '}' : ']');
        return true;
    }
    case DUCKDB_TYPE_BOOLEAN:
        ds_buf_append(b, DATA(bool, vec, row) ? "true" : "false");
        return true;
    default: {
        ds_buf text = DS_BUF_INIT;
        bool ok = put_text(c, vec, row, &text, err);
        if (ok && text.failed)
            ok = ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        if (ok)
            nested_scalar(ds_buf_str(&text), text.len, false, b);
        ds_buf_free(&text);
        return ok;
    }
    }
}

/* The text form of a non-NULL value. */
static bool put_text(const pgv_column *c, duckdb_vector vec, idx_t row, ds_buf *b, ds_error *err)
{
    switch (c->id) {
    case DUCKDB_TYPE_BOOLEAN:
        ds_buf_appendc(b, DATA(bool, vec, row) ? 't' : 'f');
        return true;
    case DUCKDB_TYPE_TINYINT:
    case DUCKDB_TYPE_SMALLINT:
    case DUCKDB_TYPE_INTEGER:
    case DUCKDB_TYPE_BIGINT:
    case DUCKDB_TYPE_UTINYINT:
    case DUCKDB_TYPE_USMALLINT:
    case DUCKDB_TYPE_UINTEGER:
    case DUCKDB_TYPE_UBIGINT:
    case DUCKDB_TYPE_HUGEINT:
    case DUCKDB_TYPE_UHUGEINT:
    case DUCKDB_TYPE_DECIMAL: {
        bool negative;
        unsigned __int128 magnitude;
        int scale;
        get_number(c, vec, row, &negative, &magnitude, &scale);
        decimal_text(negative, magnitude, scale, b);
        return true;
    }
    case DUCKDB_TYPE_FLOAT:
        pgv_float_text(DATA(float, vec, row), true, c->extra_float_digits, b);
        return true;
    case DUCKDB_TYPE_DOUBLE:
        pgv_float_text(DATA(double, vec, row), false, c->extra_float_digits, b);
        return true;
    case DUCKDB_TYPE_VARCHAR: {
        const char *s;
        uint32_t n;
        get_string(vec, row, &s, &n);
        ds_buf_appendn(b, s, n);
        return true;
    }
    case DUCKDB_TYPE_BLOB: {
        const char *s;
        uint32_t n;
        get_string(vec, row, &s, &n);
        bytea_text(s, n, b);
        return true;
    }
    case DUCKDB_TYPE_BIT: {
        const char *s;
        uint32_t n;
        get_string(vec, row, &s, &n);
        bit_text(s, n, b);
        return true;
    }
    case DUCKDB_TYPE_DATE:
        pgv_date_text(DATA(int32_t, vec, row), b);
        return true;
    case DUCKDB_TYPE_TIME:
    case DUCKDB_TYPE_TIME_NS: {
        int64_t v = DATA(int64_t, vec, row);
        tbuf t = {.n = 0};
        time_part(c->id == DUCKDB_TYPE_TIME_NS ? v / 1000 : v, &t);
        ds_buf_appendn(b, t.s, t.n);
        return true;
    }
    case DUCKDB_TYPE_TIME_TZ: {
        duckdb_time_tz_struct tt = duckdb_from_time_tz(DATA(duckdb_time_tz, vec, row));
        tbuf t = {.n = 0};
        time_part(duckdb_to_time(tt.time).micros, &t);
        zone_part(tt.offset, &t);
        ds_buf_appendn(b, t.s, t.n);
        return true;
    }
    case DUCKDB_TYPE_TIMESTAMP:
    case DUCKDB_TYPE_TIMESTAMP_S:
    case DUCKDB_TYPE_TIMESTAMP_MS:
    case DUCKDB_TYPE_TIMESTAMP_NS:
        pgv_timestamp_text(timestamp_usecs(c->id, vec, row), NULL, b);
        return true;
    case DUCKDB_TYPE_TIMESTAMP_TZ:
        pgv_timestamp_text(DATA(int64_t, vec, row), c->tz, b);
        return true;
    case DUCKDB_TYPE_INTERVAL: {
        duckdb_interval iv = DATA(duckdb_interval, vec, row);
        pgv_interval_text(iv.months, iv.days, iv.micros, b);
        return true;
    }
    case DUCKDB_TYPE_UUID:
        uuid_text(DATA(duckdb_hugeint, vec, row), b);
        return true;
    case DUCKDB_TYPE_ENUM:
        ds_buf_append(b, enum_name(c, vec, row));
        return true;
    case DUCKDB_TYPE_LIST:
    case DUCKDB_TYPE_ARRAY:
        return array_text(c, vec, row, b, err);
    case DUCKDB_TYPE_STRUCT:
    case DUCKDB_TYPE_MAP:
    case DUCKDB_TYPE_UNION:
        return nested_text(c, vec, row, b, err);
    default:
        return ds_error_set(err, DS_ERR_STORE, "a value of DuckDB type id %d has no PostgreSQL form",
                            (int)c->id);
    }
}

/* ---- binary forms --------------------------------------------------- */

static void be16(ds_buf *b, uint16_t v)
{
    char s[2] = {(char)(v >> 8), (char)v};
    ds_buf_appendn(b, s, 2);
}

static void be32(ds_buf *b, uint32_t v)
{
    char s[4] = {(char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v};
    ds_buf_appendn(b, s, 4);
}

static void be64(ds_buf *b, uint64_t v)
{
    be32(b, (uint32_t)(v >> 32));
    be32(b, (uint32_t)v);
}

/* numeric_send: base-10000 digits with weight, sign and display scale. */
static void numeric_binary(bool negative, unsigned __int128 magnitude, int scale, ds_buf *b)
{
    char tmp[48];
    char *digits = u128_digits(magnitude, tmp + sizeof tmp);
    int n = (int)strlen(digits);
    int int_len = n > scale ? n - scale : 0;
    int int_groups = (int_len + 3) / 4, frac_groups = (scale + 3) / 4;
    /* The decimal digit at position p, where position 0 is the units and
     * p < 0 the fraction's. */
    int16_t groups[24] = {0};
    int ngroups = 0;
    for (int g = int_groups - 1; g >= -frac_groups; g--) {
        int v = 0;
        for (int k = 3; k >= 0; k--) {
            int p = g * 4 + k;             /* decimal position, units = 0 */
            int index = n - scale - 1 - p; /* its index in digits */
            v = v * 10 + (index >= 0 && index < n ? digits[index] - '0' : 0);
        }
        groups[ngroups++] = (int16_t)v;
    }
    int first = 0, last = ngroups;
    int weight = int_groups - 1;
    while (first < last && groups[first] == 0) {
        first++;
        weight--;
    }
    while (last > first && groups[last - 1] == 0)
        last--;
    if (first == last) {
        weight = 0;
        negative = false;
    }
    be16(b, (uint16_t)(last - first));
    be16(b, (uint16_t)(int16_t)weight);
    be16(b, negative ? 0x4000 : 0);
    be16(b, (uint16_t)scale);
    for (int i = first; i < last; i++)
        be16(b, (uint16_t)groups[i]);
}

static int64_t pg_timestamp(int64_t usecs)
{
    if (usecs == DUCK_TS_INFINITY)
        return INT64_MAX;
    if (usecs == DUCK_TS_NINFINITY)
        return INT64_MIN;
    return usecs - PG_EPOCH_USECS;
}

static int32_t pg_date(int32_t days)
{
    if (days == DUCK_DATE_INFINITY)
        return INT32_MAX;
    if (days == DUCK_DATE_NINFINITY)
        return INT32_MIN;
    return days - PG_EPOCH_DAYS;
}

static bool put_binary(const pgv_column *c, duckdb_vector vec, idx_t row, ds_buf *b, ds_error *err);

/* The dimensions of a (nested) list row as a PostgreSQL array: each level's
 * length, the same for every sub-list (arrays are rectangular). */
static bool array_dims(const pgv_column *c, duckdb_vector vec, idx_t row, int *ndim, int32_t dims[6],
                       ds_error *err)
{
    duckdb_vector child;
    idx_t offset, length;
    list_span(c, vec, row, &child, &offset, &length);
    if (*ndim >= 6)
        return ds_error_set(err, DS_ERR_STORE,
                            "a list nested deeper than 6 levels has no PostgreSQL array form");
    if (length > INT32_MAX)
        return ds_error_set(err, DS_ERR_STORE, "a list of %" PRIu64 " elements is too long for PostgreSQL",
                            (uint64_t)length);
    dims[(*ndim)++] = (int32_t)length;
    const pgv_column *ec = c->children[0];
    if (!is_list(ec->id) || length == 0)
        return true;
    int level = *ndim;
    for (idx_t i = 0; i < length; i++) {
        int sub = level;
        int32_t subdims[6];
        if (!is_valid(child, offset + i))
            return ds_error_set(
                err, DS_ERR_STORE,
                "a list holding a NULL list has no PostgreSQL array form; use the text format");
        memcpy(subdims, dims, sizeof subdims);
        if (!array_dims(ec, child, offset + i, &sub, subdims, err))
            return false;
        if (i == 0) {
            memcpy(dims, subdims, sizeof subdims);
            *ndim = sub;
        } else if (sub != *ndim || memcmp(subdims, dims, sizeof(int32_t) * (size_t)sub) != 0) {
            return ds_error_set(
                err, DS_ERR_STORE,
                "lists of different lengths in one list have no PostgreSQL array form (arrays "
                "are rectangular); use the text format");
        }
    }
    return true;
}

static bool array_elements(const pgv_column *c, duckdb_vector vec, idx_t row, ds_buf *b, ds_error *err)
{
    duckdb_vector child;
    idx_t offset, length;
    list_span(c, vec, row, &child, &offset, &length);
    const pgv_column *ec = c->children[0];
    for (idx_t i = 0; i < length; i++) {
        if (is_list(ec->id)) {
            if (!array_elements(ec, child, offset + i, b, err))
                return false;
        } else if (!pgv_put((pgv_column *)ec, child, offset + i, b, err)) {
            return false;
        }
    }
    return true;
}

/* Whether any leaf element of a (nested) list row is NULL. */
static bool array_has_null(const pgv_column *c, duckdb_vector vec, idx_t row)
{
    duckdb_vector child;
    idx_t offset, length;
    list_span(c, vec, row, &child, &offset, &length);
    const pgv_column *ec = c->children[0];
    for (idx_t i = 0; i < length; i++) {
        if (!is_valid(child, offset + i))
            return true;
        if (is_list(ec->id) && array_has_null(ec, child, offset + i))
            return true;
    }
    return false;
}

/* array_send: dimensions, a NULL flag, the element type, then each element
 * as a field of its own. */
static bool array_binary(const pgv_column *c, duckdb_vector vec, idx_t row, ds_buf *b, ds_error *err)
{
    int ndim = 0;
    int32_t dims[6];
    if (!array_dims(c, vec, row, &ndim, dims, err))
        return false;
    for (int i = 0; i < ndim; i++)
        if (dims[i] == 0)
            ndim = 0;
    const pgv_column *leaf = c;
    while (is_list(leaf->id))
        leaf = leaf->children[0];
    be32(b, (uint32_t)ndim);
    be32(b, ndim && array_has_null(c, vec, row) ? 1 : 0);
    be32(b, leaf->pg.oid);
    for (int i = 0; i < ndim; i++) {
        be32(b, (uint32_t)dims[i]);
        be32(b, 1); /* lower bound */
    }
    return ndim == 0 || array_elements(c, vec, row, b, err);
}

/* The binary form of a non-NULL value. */
static bool put_binary(const pgv_column *c, duckdb_vector vec, idx_t row, ds_buf *b, ds_error *err)
{
    switch (c->pg.oid) {
    case PGV_OID_BOOL:
        ds_buf_appendc(b, DATA(bool, vec, row) ? 1 : 0);
        return true;
    case PGV_OID_INT2:
        be16(b, (uint16_t)(int16_t)get_int(c->id, vec, row));
        return true;
    case PGV_OID_INT4:
        be32(b, (uint32_t)(int32_t)get_int(c->id, vec, row));
        return true;
    case PGV_OID_INT8:
        be64(b, (uint64_t)(int64_t)get_int(c->id, vec, row));
        return true;
    case PGV_OID_NUMERIC: {
        bool negative;
        unsigned __int128 magnitude;
        int scale;
        get_number(c, vec, row, &negative, &magnitude, &scale);
        numeric_binary(negative, magnitude, scale, b);
        return true;
    }
    case PGV_OID_FLOAT4: {
        float f = DATA(float, vec, row);
        uint32_t bits;
        memcpy(&bits, &f, sizeof bits);
        be32(b, bits);
        return true;
    }
    case PGV_OID_FLOAT8: {
        double d = DATA(double, vec, row);
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        be64(b, bits);
        return true;
    }
    case PGV_OID_BYTEA:
    case PGV_OID_JSON: {
        const char *s;
        uint32_t n;
        get_string(vec, row, &s, &n);
        ds_buf_appendn(b, s, n);
        return true;
    }
    case PGV_OID_VARBIT: {
        const char *s;
        uint32_t n;
        get_string(vec, row, &s, &n);
        uint32_t bits = bit_count(s, n), padding = n ? (uint8_t)s[0] : 0;
        be32(b, bits);
        for (uint32_t i = 0; i < bits; i += 8) {
            uint8_t byte = 0;
            for (uint32_t k = 0; k < 8; k++)
                byte = (uint8_t)(byte << 1 | (i + k < bits && bit_at(s, i + k, padding)));
            ds_buf_appendc(b, (char)byte);
        }
        return true;
    }
    case PGV_OID_DATE:
        be32(b, (uint32_t)pg_date(DATA(int32_t, vec, row)));
        return true;
    case PGV_OID_TIME:
        be64(b, (uint64_t)(c->id == DUCKDB_TYPE_TIME_NS ? DATA(int64_t, vec, row) / 1000
                                                        : DATA(int64_t, vec, row)));
        return true;
    case PGV_OID_TIMETZ: {
        duckdb_time_tz_struct t = duckdb_from_time_tz(DATA(duckdb_time_tz, vec, row));
        be64(b, (uint64_t)duckdb_to_time(t.time).micros);
        be32(b, (uint32_t)-t.offset); /* PostgreSQL counts seconds west */
        return true;
    }
    case PGV_OID_TIMESTAMP:
    case PGV_OID_TIMESTAMPTZ:
        be64(b, (uint64_t)pg_timestamp(timestamp_usecs(c->id, vec, row)));
        return true;
    case PGV_OID_INTERVAL: {
        duckdb_interval iv = DATA(duckdb_interval, vec, row);
        be64(b, (uint64_t)iv.micros);
        be32(b, (uint32_t)iv.days);
        be32(b, (uint32_t)iv.months);
        return true;
    }
    case PGV_OID_UUID: {
        uint8_t u[16];
        uuid_bytes(DATA(duckdb_hugeint, vec, row), u);
        ds_buf_appendn(b, (const char *)u, 16);
        return true;
    }
    default:
        if (is_list(c->id))
            return array_binary(c, vec, row, b, err);
        /* text, and types sent as their text: the binary form of text is
         * its bytes */
        return put_text(c, vec, row, b, err);
    }
}

bool pgv_put(pgv_column *c, duckdb_vector vec, idx_t row, ds_buf *out, ds_error *err)
{
    if (!is_valid(vec, row)) {
        be32(out, UINT32_MAX); /* -1 */
        return !out->failed || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    size_t at = out->len;
    be32(out, 0);
    if (!(c->binary ? put_binary(c, vec, row, out, err) : put_text(c, vec, row, out, err)))
        return false;
    if (out->failed)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    size_t n = out->len - at - 4;
    if (n > INT32_MAX)
        return ds_error_set(err, DS_ERR_STORE, "a value of %zu bytes is too large for PostgreSQL's protocol",
                            n);
    uint8_t *p = (uint8_t *)out->data + at;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    return true;
}
