/* Fuzz body of the SQL builders: store/tables.h (DuckDB) and the conditions
 * and bounds query of source/ranges.h (PostgreSQL). The input becomes table
 * and column names (any bytes but NUL, made valid UTF-8 as names from
 * PostgreSQL are), DuckDB types from a fixed list and a value. Every
 * statement built from them must parse as exactly one statement
 * (duckdb_extract_statements, json_serialize_sql), the SELECTs must name
 * exactly the given identifiers and values once parsed, and the DuckDB
 * statements must run on an in-memory DuckDB holding tables made from those
 * names and do what they say: the created tables have the given columns,
 * the view the promised names and rows, a merge leaves the rows it should,
 * max and the dataset_id check agree with the same question asked by
 * column position. The PostgreSQL SQL is parsed by DuckDB's parser (the
 * same grammar for what the builders emit) and checked the same way. */
#include "fuzz_harness.h"

#include <duckdb.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/strbuf.h"
#include "source/querytext.h"
#include "source/ranges.h"
#include "store/store.h"
#include "store/tables.h"

/* A DuckDB type a PostgreSQL column maps to (source/pgtypes.c), how
 * duckdb_columns() spells it, three values, and the lookback it takes as an
 * incremental column ("" when it cannot be one). */
typedef struct fuzz_type {
    const char *ddl, *spelled, *values[3], *lookback;
} fuzz_type;

static const fuzz_type TYPES[] = {
    {"INTEGER", "INTEGER", {"1", "-2147483648", "7"}, "2.5"},
    {"BIGINT", "BIGINT", {"-9223372036854775808", "0", "9223372036854775807"}, "100"},
    {"SMALLINT", "SMALLINT", {"-5", "0", "7"}, "1"},
    {"DOUBLE", "DOUBLE", {"-1.5", "0.25", "1e300"}, "0.5"},
    {"FLOAT", "FLOAT", {"-1.5", "0.5", "2.5"}, "1"},
    {"DECIMAL(12,4)", "DECIMAL(12,4)", {"-12.5", "0", "99999999.9999"}, "0.0001"},
    {"DECIMAL(38,10)", "DECIMAL(38,10)", {"-1", "0.0000000001", "1234567890123456789012345678"}, "1e3"},
    {"VARCHAR", "VARCHAR", {"it's", "\\", "\xc3\xa9\""}, ""},
    {"DATE", "DATE", {"2024-02-29", "infinity", "1970-01-01"}, "1 day"},
    {"TIME", "TIME", {"00:00:00", "12:34:56.789", "23:59:59.999999"}, "90 seconds"},
    {"TIMESTAMP",
     "TIMESTAMP",
     {"2024-02-29 13:45:07.123456", "-infinity", "1970-01-01 00:00:00"},
     "5 minutes"},
    {"TIMESTAMPTZ",
     "TIMESTAMP WITH TIME ZONE",
     {"2024-02-29 13:45:07+02", "infinity", "2000-01-01 00:00:00+00"},
     "1 hour 30 minutes"},
    {"BOOLEAN", "BOOLEAN", {"true", "false", "true"}, ""},
    {"UUID",
     "UUID",
     {"00000000-0000-0000-0000-000000000000", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
      "ffffffff-ffff-ffff-ffff-ffffffffffff"},
     ""},
    {"INTERVAL", "INTERVAL", {"1 day", "-00:00:01", "00:00:00"}, ""},
    {"JSON", "JSON", {"{\"a\": [1, \"'\"]}", "null", "[]"}, ""},
    {"BLOB", "BLOB", {"\\x00\\xFF'", "", "abc"}, ""},
    {"VARCHAR[]", "VARCHAR[]", {"[a, 'b''', \"c\"]", "[]", "[NULL]"}, ""},
    {"INTEGER[]", "INTEGER[]", {"[1, 2]", "[]", "[NULL, 3]"}, ""},
};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])
/* The first NORDERED types can be incremental columns. */
#define NORDERED 12

/* PostgreSQL types of partition and incremental columns, as format_type()
 * spells them, with their kind. */
static const struct {
    const char *pg_type;
    pgsrc_kind kind;
} PG_TYPES[] = {
    {"integer", PGSRC_INT4},
    {"bigint", PGSRC_INT8},
    {"smallint", PGSRC_INT2},
    {"numeric(12,4)", PGSRC_NUMERIC_DECIMAL},
    {"numeric", PGSRC_NUMERIC_DOUBLE},
    {"date", PGSRC_DATE},
    {"timestamp without time zone", PGSRC_TIMESTAMP},
    {"timestamp with time zone", PGSRC_TIMESTAMPTZ},
    {"text", PGSRC_TEXT},
    {"character varying(10)", PGSRC_TEXT},
    {"public.\"my \"\"enum\"\"\"", PGSRC_TEXT},
    {"double precision", PGSRC_FLOAT8},
};
#define NPG_TYPES (sizeof PG_TYPES / sizeof PG_TYPES[0])

#define MAX_EXTRA 7
#define MAX_NAME 256

/* One input, decoded. Column 0 of both tables is dataset_id. */
typedef struct fuzz_case {
    char tables[4][MAX_NAME + 16]; /* dataset, results, view, staging */
    char dcols[MAX_EXTRA + 1][MAX_NAME + 16], rcols[MAX_EXTRA + 1][MAX_NAME + 16];
    const fuzz_type *dtypes[MAX_EXTRA + 1], *rtypes[MAX_EXTRA + 1];
    size_t nd, nr; /* columns, dataset_id included */
    size_t order;  /* the incremental column, in rcols */
    char *key[MAX_EXTRA + 1];
    size_t keyidx[MAX_EXTRA + 1], nkey; /* key columns: names and indexes in rcols */
    bool overlap, inclusive, qualified, distinct_ids;
    size_t start; /* index of the start value, and of the floor of max */
    uint8_t pick; /* further choices */
    char value[MAX_NAME + 16];
} fuzz_case;

static duckdb_database db;
static duckdb_connection con;
static duckdb_prepared_statement serialize, columns;

static void close_db(void)
{
    duckdb_destroy_prepare(&serialize);
    duckdb_destroy_prepare(&columns);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    db = NULL;
}

static void run_ok(const char *sql)
{
    duckdb_result res;
    CHECK(duckdb_query(con, sql, &res) == DuckDBSuccess, "%s\nSQL: %s", duckdb_result_error(&res), sql);
    duckdb_destroy_result(&res);
}

/* An in-memory DuckDB for many inputs (opening one takes 40 ms), each
 * working in a schema of its own, dropped after it. DuckDB's memory still
 * grows by some kB per input, so a database serves INPUTS_PER_DB inputs;
 * the last is closed at exit. */
#define INPUTS_PER_DB 256

static void open_db(void)
{
    static unsigned inputs;
    static bool registered;
    if (db != NULL && ++inputs % INPUTS_PER_DB != 0)
        return;
    if (db != NULL)
        close_db();
    CHECK(duckdb_open(NULL, &db) == DuckDBSuccess && duckdb_connect(db, &con) == DuckDBSuccess, "open");
    run_ok("SET threads = 1");
    run_ok("SET TimeZone = 'UTC'");
    CHECK(duckdb_prepare(con, "SELECT json_serialize_sql($1::VARCHAR)", &serialize) == DuckDBSuccess, "%s",
          duckdb_prepare_error(serialize));
    CHECK(duckdb_prepare(con,
                         "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'fz' AND "
                         "table_name = $1 ORDER BY column_index",
                         &columns) == DuckDBSuccess,
          "%s", duckdb_prepare_error(columns));
    if (!registered)
        atexit(close_db);
    registered = true;
}

/* ---- decoding the input ------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s (RFC 3629), 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t len = s[0] >= 0xc2 && s[0] <= 0xdf   ? 2
                 : s[0] >= 0xe0 && s[0] <= 0xef ? 3
                 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
                                                : 0;
    if (len == 0 || len > n)
        return 0;
    unsigned char lo = 0x80, hi = 0xbf;
    if (s[0] == 0xe0)
        lo = 0xa0;
    else if (s[0] == 0xed)
        hi = 0x9f;
    else if (s[0] == 0xf0)
        lo = 0x90;
    else if (s[0] == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* A field as valid UTF-8 (an invalid byte becomes '?'), at most MAX_NAME
 * bytes; fallback when empty (neither DuckDB nor PostgreSQL has empty names). */
static void take_name(char *out, const uint8_t *p, size_t n, const char *fallback)
{
    size_t used = 0;
    for (size_t i = 0; i < n && used < MAX_NAME;) {
        size_t len = utf8_len(p + i, n - i);
        if (len == 0 || used + len > MAX_NAME) {
            out[used++] = '?';
            i++;
            continue;
        }
        memcpy(out + used, p + i, len);
        used += len;
        i += len;
    }
    out[used] = '\0';
    if (used == 0)
        snprintf(out, MAX_NAME, "%s", fallback);
}

/* DuckDB compares names case-insensitively (ASCII only), so a table or a
 * query cannot hold two names that differ only so; PostgreSQL queries that
 * do fail at CREATE TABLE. Renames such a name until it is free. */
static void make_unique(char *name, char (*taken)[MAX_NAME + 16], size_t ntaken)
{
    size_t base = strlen(name);
    for (unsigned k = 1;; k++) {
        bool clash = false;
        for (size_t i = 0; i < ntaken && !clash; i++)
            clash = strcasecmp(name, taken[i]) == 0;
        if (!clash)
            return;
        snprintf(name + base, 16, "_%u", k);
    }
}

#define NCTL 19

static bool decode(const uint8_t *data, size_t size, fuzz_case *c)
{
    memset(c, 0, sizeof *c);
    const uint8_t *ctl = data;
    size_t nctl = size < NCTL ? size : NCTL;
    data += nctl;
    size -= nctl;
    const uint8_t *field[24];
    size_t flen[24], nf = 0;
    for (size_t start = 0; nf < 24 && start <= size;) {
        const uint8_t *nul = size > start ? memchr(data + start, 0, size - start) : NULL;
        size_t end = nul ? (size_t)(nul - data) : size;
        field[nf] = data + start;
        flen[nf++] = end - start;
        if (nul == NULL)
            break;
        start = end + 1;
    }
#define CTL(i) ((i) < nctl ? ctl[i] : 0)
    c->nd = 1 + (CTL(0) & 7);
    c->nr = 1 + ((CTL(0) >> 3) & 7);
    c->overlap = CTL(0) & 0x40;
    c->inclusive = CTL(0) & 0x80;
    c->qualified = CTL(2) & 1;
    c->distinct_ids = CTL(2) & 2;
    c->start = (CTL(2) >> 2 & 3) % 3;
    c->pick = CTL(3);
    const fuzz_type *id_type = &TYPES[CTL(2) & 0x10 ? 7 : 0];
    c->dtypes[0] = c->rtypes[0] = id_type;
    for (size_t i = 1; i < c->nd; i++)
        c->dtypes[i] = &TYPES[CTL(3 + i) % NTYPES];
    for (size_t i = 1; i < c->nr; i++)
        c->rtypes[i] = &TYPES[CTL(3 + MAX_EXTRA + i) % NTYPES];
    /* The incremental column: dataset_id or a results column of an orderable type. */
    c->order = c->nr > 1 ? CTL(1) % c->nr : 0;
    if (c->order > 0 && (size_t)(c->rtypes[c->order] - TYPES) >= NORDERED)
        c->rtypes[c->order] = &TYPES[(size_t)(c->rtypes[c->order] - TYPES) % NORDERED];

    static const char *const table_fallback[4] = {"dataset", "results", "view", "staging"};
    size_t f = 0;
    for (size_t t = 0; t < 4; t++, f++) {
        take_name(c->tables[t], f < nf ? field[f] : NULL, f < nf ? flen[f] : 0, table_fallback[t]);
        make_unique(c->tables[t], c->tables, t);
    }
    snprintf(c->dcols[0], MAX_NAME, "dataset_id");
    snprintf(c->rcols[0], MAX_NAME, "dataset_id");
    char fallback[24];
    for (size_t i = 1; i < c->nd; i++, f++) {
        snprintf(fallback, sizeof fallback, "d%zu", i);
        take_name(c->dcols[i], f < nf ? field[f] : NULL, f < nf ? flen[f] : 0, fallback);
        make_unique(c->dcols[i], c->dcols, i);
    }
    for (size_t i = 1; i < c->nr; i++, f++) {
        snprintf(fallback, sizeof fallback, "r%zu", i);
        take_name(c->rcols[i], f < nf ? field[f] : NULL, f < nf ? flen[f] : 0, fallback);
        make_unique(c->rcols[i], c->rcols, i);
    }
    take_name(c->value, f < nf ? field[f] : NULL, f < nf ? flen[f] : 0, "v");
    /* Key columns: a mask over the results columns. */
    for (size_t i = 0; i < c->nr; i++)
        if (CTL(4 + 2 * MAX_EXTRA) >> i & 1) {
            c->keyidx[c->nkey] = i;
            c->key[c->nkey++] = c->rcols[i];
        }
    return true;
#undef CTL
}

/* ---- parsing ------------------------------------------------------------ */

/* What a parsed SELECT names: column references (the last part), tables
 * and string constants. */
typedef struct named {
    const char *cols[64], *tables[16], *strings[16];
    size_t ncols, ntables, nstrings;
} named;

static void collect(json_t *j, named *n)
{
    if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++)
            collect(json_array_get(j, i), n);
        return;
    }
    if (!json_is_object(j))
        return;
    const char *cls = json_string_value(json_object_get(j, "class"));
    const char *type = json_string_value(json_object_get(j, "type"));
    if (cls != NULL && strcmp(cls, "COLUMN_REF") == 0) {
        json_t *names = json_object_get(j, "column_names");
        CHECK(json_array_size(names) > 0 && n->ncols < 64, "column reference");
        n->cols[n->ncols++] = json_string_value(json_array_get(names, json_array_size(names) - 1));
    }
    if (type != NULL && strcmp(type, "BASE_TABLE") == 0) {
        CHECK(n->ntables < 16, "tables");
        n->tables[n->ntables++] = json_string_value(json_object_get(j, "table_name"));
    }
    if (type != NULL && strcmp(type, "VALUE_CONSTANT") == 0) {
        json_t *v = json_object_get(json_object_get(j, "value"), "value");
        if (json_is_string(v)) {
            CHECK(n->nstrings < 16, "strings");
            n->strings[n->nstrings++] = json_string_value(v);
        }
    }
    const char *key;
    json_t *value;
    json_object_foreach(j, key, value) collect(value, n);
}

/* sql must be one statement DuckDB parses. For a SELECT, returns what
 * json_serialize_sql made of it (the caller json_decref()s it); NULL for
 * other statements, which it does not serialize. */
static json_t *parse_one(const char *sql, const char *what)
{
    CHECK(sql != NULL, "%s: NULL", what);
    duckdb_extracted_statements ext = NULL;
    idx_t n = duckdb_extract_statements(con, sql, &ext);
    CHECK(n == 1, "%s: %llu statements (%s)\nSQL: %s", what, (unsigned long long)n,
          n == 0 ? duckdb_extract_statements_error(ext) : "", sql);
    duckdb_destroy_extracted(&ext);

    CHECK(duckdb_bind_varchar(serialize, 1, sql) == DuckDBSuccess, "bind");
    duckdb_result res;
    CHECK(duckdb_execute_prepared(serialize, &res) == DuckDBSuccess, "json_serialize_sql: %s",
          duckdb_result_error(&res));
    char *text = duckdb_value_varchar(&res, 0, 0);
    duckdb_destroy_result(&res);
    json_error_t jerr;
    /* query_location is 2^64 - 1 where there is none: too big for json_int_t. */
    json_t *j = json_loads(text, JSON_DECODE_INT_AS_REAL, &jerr);
    CHECK(j != NULL, "%s: json_serialize_sql returned %s", what, text);
    duckdb_free(text);
    if (json_is_true(json_object_get(j, "error"))) {
        const char *type = json_string_value(json_object_get(j, "error_type"));
        /* Only SELECTs are serialized; anything else must still parse. */
        CHECK(type != NULL && strcmp(type, "not implemented") == 0, "%s: %s: %s\nSQL: %s", what,
              type ? type : "?", json_string_value(json_object_get(j, "error_message")), sql);
        json_decref(j);
        return NULL;
    }
    CHECK(json_array_size(json_object_get(j, "statements")) == 1, "%s: statements\nSQL: %s", what, sql);
    return j;
}

static bool among(const char *s, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] != NULL && strcmp(s, set[i]) == 0)
            return true;
    return false;
}

static size_t count_of(const char *s, const char *const *set, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += strcmp(s, set[i]) == 0;
    return k;
}

/* A parsed SELECT names only the given columns and tables, the first
 * column at least `times` times and every table, and holds the given
 * strings. */
static void check_named(const char *sql, const char *what, const char *const *cols, size_t ncols,
                        size_t times, const char *const *tables, size_t ntables, const char *const *strings,
                        size_t nstrings)
{
    json_t *j = parse_one(sql, what);
    CHECK(j != NULL, "%s: not a SELECT\nSQL: %s", what, sql);
    named n = {0};
    collect(j, &n);
    for (size_t i = 0; i < n.ncols; i++)
        CHECK(among(n.cols[i], cols, ncols), "%s: column \"%s\" is not among the given names\nSQL: %s", what,
              n.cols[i], sql);
    if (times > 0)
        CHECK(count_of(cols[0], n.cols, n.ncols) >= times,
              "%s: column \"%s\" named fewer than %zu times\nSQL: %s", what, cols[0], times, sql);
    for (size_t i = 0; i < n.ntables; i++)
        CHECK(among(n.tables[i], tables, ntables), "%s: table \"%s\" is not among the given names\nSQL: %s",
              what, n.tables[i], sql);
    for (size_t i = 0; i < ntables; i++)
        CHECK(count_of(tables[i], n.tables, n.ntables) >= 1, "%s: table \"%s\" lost\nSQL: %s", what,
              tables[i], sql);
    for (size_t i = 0; i < nstrings; i++)
        CHECK(among(strings[i], n.strings, n.nstrings), "%s: string '%s' lost\nSQL: %s", what, strings[i],
              sql);
    json_decref(j);
}

/* ---- running ----------------------------------------------------------- */

static char *quoted(const char *name)
{
    char *q = ds_quote_ident(name);
    CHECK(q != NULL, "out of memory");
    return q;
}

/* Runs sql: true, or false with a data error (a value that is not one of
 * its type, out of range); anything else aborts. */
static bool run_value(const char *sql, char **out)
{
    duckdb_result res;
    *out = NULL;
    if (duckdb_query(con, sql, &res) != DuckDBSuccess) {
        duckdb_error_type t = duckdb_result_error_type(&res);
        CHECK(t == DUCKDB_ERROR_CONVERSION || t == DUCKDB_ERROR_OUT_OF_RANGE ||
                  t == DUCKDB_ERROR_INVALID_INPUT,
              "error type %d: %s\nSQL: %s", (int)t, duckdb_result_error(&res), sql);
        duckdb_destroy_result(&res);
        return false;
    }
    if (duckdb_row_count(&res) > 0 && !duckdb_value_is_null(&res, 0, 0)) {
        char *v = duckdb_value_varchar(&res, 0, 0);
        *out = strdup(v);
        duckdb_free(v);
    }
    duckdb_destroy_result(&res);
    return true;
}

/* Rows of a query as text (columns joined by \x1f, NULL as \x1e), sorted. */
typedef struct rows {
    char **row;
    size_t n;
} rows;

static int compare_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void rows_of(const char *query, rows *out)
{
    ds_buf q = DS_BUF_INIT;
    ds_buf_appendf(&q, "SELECT COLUMNS(*)::VARCHAR FROM (%s)", query);
    const char *sql = ds_buf_str(&q);
    duckdb_result res;
    CHECK(duckdb_query(con, sql, &res) == DuckDBSuccess, "%s\nSQL: %s", duckdb_result_error(&res), sql);
    ds_buf_free(&q);
    out->n = duckdb_row_count(&res);
    out->row = calloc(out->n + 1, sizeof *out->row);
    for (idx_t r = 0; r < out->n; r++) {
        ds_buf b = DS_BUF_INIT;
        ds_buf_append(&b, "");
        for (idx_t c = 0; c < duckdb_column_count(&res); c++) {
            if (c > 0)
                ds_buf_appendc(&b, '\x1f');
            if (duckdb_value_is_null(&res, c, r)) {
                ds_buf_appendc(&b, '\x1e');
            } else {
                char *v = duckdb_value_varchar(&res, c, r);
                ds_buf_append(&b, v);
                duckdb_free(v);
            }
        }
        out->row[r] = ds_buf_take(&b);
    }
    duckdb_destroy_result(&res);
    qsort(out->row, out->n, sizeof *out->row, compare_str);
}

static void rows_free(rows *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->row[i]);
    free(r->row);
}

/* Field i of a row of rows_of (malloc'd). */
static char *field_of(const char *row, size_t i)
{
    for (; i > 0; i--)
        row = strchr(row, '\x1f') + 1;
    return strndup(row, strcspn(row, "\x1f"));
}

/* The rows of a table read by position: SELECT * FROM table. */
static void table_rows(const char *table, rows *out)
{
    char *q = quoted(table);
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "SELECT * FROM %s", q);
    rows_of(ds_buf_str(&b), out);
    ds_buf_free(&b);
    free(q);
}

/* A table's column names and types must be names and types. */
static void check_columns(const char *table, char (*names)[MAX_NAME + 16], const fuzz_type *const *types,
                          size_t n)
{
    CHECK(duckdb_bind_varchar(columns, 1, table) == DuckDBSuccess, "bind");
    duckdb_result res;
    CHECK(duckdb_execute_prepared(columns, &res) == DuckDBSuccess, "%s", duckdb_result_error(&res));
    CHECK(duckdb_row_count(&res) == n, "table \"%s\": %llu columns, not %zu", table,
          (unsigned long long)duckdb_row_count(&res), n);
    for (size_t i = 0; i < n; i++) {
        char *name = duckdb_value_varchar(&res, 0, i), *type = duckdb_value_varchar(&res, 1, i);
        CHECK(strcmp(name, names[i]) == 0, "table \"%s\": column %zu is \"%s\", not \"%s\"", table, i, name,
              names[i]);
        CHECK(types == NULL || strcmp(type, types[i]->spelled) == 0, "table \"%s\": column %zu is %s, not %s",
              table, i, type, types[i]->spelled);
        duckdb_free(name);
        duckdb_free(type);
    }
    duckdb_destroy_result(&res);
}

/* The staging table's reference: quoted, qualified when c->qualified. */
static char *staging_ref(const fuzz_case *c)
{
    ds_buf b = DS_BUF_INIT;
    if (c->qualified)
        ds_buf_append(&b, STORE_SCRATCH_CATALOG ".fz.");
    ds_buf_append_ident(&b, c->tables[3]);
    return ds_buf_take(&b);
}

static void create_table(const char *ref, const char *table, char (*names)[MAX_NAME + 16],
                         const fuzz_type *const *types, size_t n)
{
    store_column cols[MAX_EXTRA + 1];
    for (size_t i = 0; i < n; i++)
        cols[i] = (store_column){names[i], types[i]->ddl};
    char *sql = store_create_table_sql(ref, cols, n);
    CHECK(parse_one(sql, "store_create_table_sql") == NULL, "a SELECT");
    run_ok(sql);
    free(sql);
    check_columns(table, names, types, n);
}

/* Inserts rows: row r has dataset_id ids[r] (-1: NULL, the whole row NULL)
 * and in column i value (r + shift + i) % 3 of its type. */
static void insert_rows(const char *ref, const fuzz_type *const *types, size_t ncols, const int *ids,
                        size_t nrows, size_t shift)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "INSERT INTO %s VALUES ", ref);
    for (size_t r = 0; r < nrows; r++) {
        ds_buf_append(&b, r ? "), (" : "(");
        for (size_t i = 0; i < ncols; i++) {
            if (i > 0)
                ds_buf_append(&b, ", ");
            if (ids[r] < 0) {
                ds_buf_append(&b, "NULL");
                continue;
            }
            char id[16];
            snprintf(id, sizeof id, "%d", ids[r]);
            store_append_typed_literal(&b, i == 0 ? id : types[i]->values[(r + shift + i) % 3],
                                       types[i]->ddl);
        }
    }
    ds_buf_append(&b, ")");
    run_ok(ds_buf_str(&b));
    ds_buf_free(&b);
}

/* ---- the checks ---------------------------------------------------------- */

/* Text comes back as it went in; in any type it is a value or a data error. */
static void check_literal(const fuzz_case *c)
{
    static const char *const no_names[1];
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT ");
    store_append_typed_literal(&b, c->value, "VARCHAR");
    const char *strings[] = {c->value};
    check_named(ds_buf_str(&b), "store_append_typed_literal", no_names, 0, 0, no_names, 0, strings, 1);
    char *out = NULL;
    CHECK(run_value(ds_buf_str(&b), &out) && out != NULL && strcmp(out, c->value) == 0,
          "'%s' came back as '%s'", c->value, out ? out : "NULL");
    free(out);
    ds_buf_reset(&b);
    ds_buf_append(&b, "SELECT ");
    store_append_typed_literal(&b, c->value, TYPES[c->pick % NTYPES].ddl);
    /* The parser folds some casts of constants (to BLOB) into a constant of the type. */
    check_named(ds_buf_str(&b), "store_append_typed_literal", no_names, 0, 0, no_names, 0, strings, 0);
    run_value(ds_buf_str(&b), &out);
    free(out);
    ds_buf_free(&b);
}

/* The view's columns (the documented naming rule) and rows (each results
 * row with its dataset row by dataset_id, or NULLs). */
static void check_view(const fuzz_case *c)
{
    store_column dcols[MAX_EXTRA + 1], rcols[MAX_EXTRA + 1];
    for (size_t i = 0; i < c->nd; i++)
        dcols[i] = (store_column){c->dcols[i], c->dtypes[i]->ddl};
    for (size_t i = 0; i < c->nr; i++)
        rcols[i] = (store_column){c->rcols[i], c->rtypes[i]->ddl};
    static char *const on_id[] = {"dataset_id"};
    const store_join join = {.inner = false, .cols = on_id, .n = 1};
    char *sql = store_view_sql(c->tables[2], c->tables[0], dcols, c->nd, c->tables[1], rcols, c->nr, &join);
    CHECK(parse_one(sql, "store_view_sql") == NULL, "a SELECT");
    run_ok(sql);
    free(sql);

    static char names[2 * MAX_EXTRA + 2][MAX_NAME + 16];
    size_t n = 0;
    for (size_t i = 0; i < c->nr; i++)
        snprintf(names[n++], sizeof names[0], "%s", c->rcols[i]);
    for (size_t i = 1; i < c->nd; i++) {
        ds_buf alias = DS_BUF_INIT;
        ds_buf_append(&alias, c->dcols[i]);
        /* Renamed when the results use the name (without case, as DuckDB
         * compares), then while any column or earlier alias has it. */
        bool renamed = false;
        for (bool taken = true; taken;) {
            taken = false;
            for (size_t k = 0; k < c->nr && !taken; k++)
                taken = strcasecmp(c->rcols[k], ds_buf_str(&alias)) == 0;
            for (size_t k = 1; renamed && k < c->nd && !taken; k++)
                taken = strcasecmp(c->dcols[k], ds_buf_str(&alias)) == 0;
            for (size_t k = c->nr; renamed && k < n && !taken; k++)
                taken = strcasecmp(names[k], ds_buf_str(&alias)) == 0;
            if (taken) {
                char *prev = ds_buf_take(&alias);
                ds_buf_appendf(&alias, "dataset_%s", prev);
                free(prev);
                renamed = true;
            }
        }
        CHECK(alias.len < sizeof names[0], "alias length");
        snprintf(names[n++], sizeof names[0], "%s", ds_buf_str(&alias));
        ds_buf_free(&alias);
    }
    /* Each column can be read by its name. */
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < i; k++)
            CHECK(strcasecmp(names[i], names[k]) != 0, "view: columns %zu \"%s\" and %zu \"%s\" are one name",
                  k, names[k], i, names[i]);
    check_columns(c->tables[2], names, NULL, n);

    rows view, data, results;
    table_rows(c->tables[2], &view);
    table_rows(c->tables[0], &data);
    table_rows(c->tables[1], &results);
    CHECK(view.n == results.n, "view: %zu rows for %zu results rows", view.n, results.n);
    char **expect = calloc(results.n + 1, sizeof *expect);
    for (size_t r = 0; r < results.n; r++) {
        char *id = field_of(results.row[r], 0);
        const char *match = NULL;
        for (size_t d = 0; d < data.n && strcmp(id, "\x1e") != 0; d++) {
            char *did = field_of(data.row[d], 0);
            if (strcmp(id, did) == 0)
                match = data.row[d];
            free(did);
        }
        ds_buf b = DS_BUF_INIT;
        ds_buf_append(&b, results.row[r]);
        for (size_t i = 1; i < c->nd; i++) {
            ds_buf_appendc(&b, '\x1f');
            char *v = match ? field_of(match, i) : strdup("\x1e");
            ds_buf_append(&b, v);
            free(v);
        }
        expect[r] = ds_buf_take(&b);
        free(id);
    }
    qsort(expect, results.n, sizeof *expect, compare_str);
    for (size_t r = 0; r < results.n; r++) {
        CHECK(strcmp(expect[r], view.row[r]) == 0, "view row %zu: %s, expected %s", r, view.row[r],
              expect[r]);
        free(expect[r]);
    }
    free(expect);
    rows_free(&view);
    rows_free(&data);
    rows_free(&results);
}

/* SELECT ... FROM table AS _x(c1, ..., cn): the table read by position, so
 * no name of the input is involved. */
static void append_by_position(ds_buf *b, const char *table, size_t ncols)
{
    char *q = quoted(table);
    ds_buf_appendf(b, "%s AS _x(", q);
    for (size_t i = 0; i < ncols; i++)
        ds_buf_appendf(b, "%sc%zu", i ? ", " : "", i);
    ds_buf_append(b, ")");
    free(q);
}

/* max of the incremental column, without and with a floor. */
static void check_max(const fuzz_case *c)
{
    const char *col = c->rcols[c->order];
    const fuzz_type *type = c->rtypes[c->order];
    for (int with_floor = 0; with_floor < 2; with_floor++) {
        const char *floor = with_floor ? type->values[c->start] : NULL;
        char *sql = store_max_sql(c->tables[1], col, type->ddl, floor);
        const char *cols[] = {col}, *tables[] = {c->tables[1]}, *strings[] = {floor};
        check_named(sql, "store_max_sql", cols, 1, floor ? 2 : 1, tables, 1, strings, floor ? 1 : 0);
        char *got = NULL, *want = NULL;
        CHECK(run_value(sql, &got), "store_max_sql failed\nSQL: %s", sql);
        ds_buf b = DS_BUF_INIT;
        ds_buf_appendf(&b, "SELECT max(c%zu)::VARCHAR FROM ", c->order);
        append_by_position(&b, c->tables[1], c->nr);
        if (floor) {
            ds_buf_appendf(&b, " WHERE c%zu >= ", c->order);
            store_append_typed_literal(&b, floor, type->ddl);
        }
        CHECK(run_value(ds_buf_str(&b), &want), "%s", ds_buf_str(&b));
        CHECK((got == NULL) == (want == NULL) && (got == NULL || strcmp(got, want) == 0),
              "max: %s, by position %s\nSQL: %s", got ? got : "NULL", want ? want : "NULL", sql);
        free(got);
        free(want);
        free(sql);
        ds_buf_free(&b);
    }
}

/* The watermark minus a lookback: a value of the type or a data error. */
static void check_minus(const fuzz_case *c)
{
    const fuzz_type *type = c->rtypes[c->order];
    if (type->lookback[0] == '\0')
        return;
    bool number = strchr(type->lookback, ' ') == NULL;
    const char *value = c->pick & 1 ? c->value : type->values[c->start];
    char *sql = store_minus_sql(value, type->ddl, type->lookback, number);
    const char *strings[] = {value, type->lookback};
    check_named(sql, "store_minus_sql", NULL, 0, 0, NULL, 0, strings, 2);
    char *out = NULL;
    if (run_value(sql, &out) && out != NULL) {
        /* A read start past the watermark would skip rows for good. */
        ds_buf b = DS_BUF_INIT;
        ds_buf_append(&b, "SELECT ");
        store_append_typed_literal(&b, out, type->ddl);
        ds_buf_append(&b, " <= ");
        store_append_typed_literal(&b, value, type->ddl);
        char *at_most = NULL;
        CHECK(run_value(ds_buf_str(&b), &at_most) && at_most != NULL && strcmp(at_most, "true") == 0,
              "%s minus %s is %s, past it\nSQL: %s", value, type->lookback, out, sql);
        free(at_most);
        ds_buf_free(&b);
    }
    free(out);
    free(sql);
}

/* Whether some dataset_id of the staging table is there twice, or also
 * stored: asked of every slice, and by position. */
static void check_duplicate_ids(const fuzz_case *c, const char *staging)
{
    int64_t slices = 1 + c->pick % 3;
    bool unique = true;
    for (int64_t s = 0; s < slices; s++) {
        const char *table = c->pick & 4 ? c->tables[1] : NULL;
        char *sql = store_duplicate_ids_sql(staging, table, slices, s);
        const char *cols[] = {"dataset_id"}, *tables[] = {c->tables[3], table};
        check_named(sql, "store_duplicate_ids_sql", cols, 1, 1, tables, table ? 2 : 1, NULL, 0);
        char *out = NULL;
        CHECK(run_value(sql, &out) && out != NULL, "store_duplicate_ids_sql failed\nSQL: %s", sql);
        unique = unique && strcmp(out, "true") == 0;
        free(out);
        free(sql);
    }
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT count(*) = 0 FROM (SELECT c0 FROM (SELECT c0 FROM ");
    append_by_position(&b, c->tables[3], c->nr);
    if (c->pick & 4) {
        ds_buf_append(&b, " UNION ALL SELECT c0 FROM ");
        append_by_position(&b, c->tables[1], c->nr);
        ds_buf_append(&b, " WHERE c0 IN (SELECT c0 FROM ");
        append_by_position(&b, c->tables[3], c->nr);
        ds_buf_append(&b, ")");
    }
    ds_buf_append(&b, ") GROUP BY c0 HAVING count(*) > 1)");
    char *want = NULL;
    CHECK(run_value(ds_buf_str(&b), &want) && want != NULL, "%s", ds_buf_str(&b));
    CHECK(unique == (strcmp(want, "true") == 0), "unique %d, by position %s", unique, want);
    free(want);
    ds_buf_free(&b);
}

/* The key columns of a row of rows_of, as one string. */
static char *key_of(const fuzz_case *c, const char *row)
{
    ds_buf b = DS_BUF_INIT;
    for (size_t k = 0; k < c->nkey; k++) {
        char *v = field_of(row, c->keyidx[k]);
        ds_buf_appendf(&b, "%s\x1f", v);
        free(v);
    }
    return ds_buf_take(&b);
}

/* Merges the staging table into the results table; the rows left must be
 * what the kind of merge promises, counted from the rows before. */
static void check_merge(const fuzz_case *c, const char *staging)
{
    const fuzz_type *type = c->rtypes[c->order];
    store_batch batch = {.table = c->tables[1],
                         .staging_ref = staging,
                         .order_col = c->rcols[c->order],
                         .type = type->ddl,
                         .key = (char *const *)c->key,
                         .nkey = c->nkey,
                         .overlap = c->overlap,
                         .start = type->values[c->start],
                         .start_inclusive = c->inclusive};
    rows stored, staged;
    table_rows(c->tables[1], &stored);
    table_rows(c->tables[3], &staged);
    size_t expect = stored.n + staged.n;
    if (c->nkey > 0) {
        /* Stored rows whose key is not staged stay; one row per staged key. */
        char **skeys = calloc(staged.n + 1, sizeof *skeys);
        size_t distinct = 0;
        for (size_t r = 0; r < staged.n; r++) {
            skeys[r] = key_of(c, staged.row[r]);
            bool seen = false;
            for (size_t q = 0; q < r && !seen; q++)
                seen = strcmp(skeys[q], skeys[r]) == 0;
            distinct += !seen;
        }
        expect = distinct;
        for (size_t r = 0; r < stored.n; r++) {
            char *key = key_of(c, stored.row[r]);
            bool replaced = false;
            for (size_t q = 0; q < staged.n && !replaced; q++)
                replaced = strcmp(skeys[q], key) == 0;
            expect += !replaced;
            free(key);
        }
        for (size_t r = 0; r < staged.n; r++)
            free(skeys[r]);
        free(skeys);
    } else if (c->overlap) {
        ds_buf b = DS_BUF_INIT;
        ds_buf_append(&b, "SELECT count(*) FROM (SELECT * FROM ");
        append_by_position(&b, c->tables[3], c->nr);
        ds_buf_append(&b, " EXCEPT ALL SELECT * FROM ");
        append_by_position(&b, c->tables[1], c->nr);
        ds_buf_appendf(&b, " WHERE c%zu %s ", c->order, c->inclusive ? ">=" : ">");
        store_append_typed_literal(&b, batch.start, type->ddl);
        ds_buf_appendf(&b, " OR c%zu IS NULL)", c->order); /* read every time */
        char *n = NULL;
        CHECK(run_value(ds_buf_str(&b), &n) && n != NULL, "%s", ds_buf_str(&b));
        expect = stored.n + (size_t)strtoull(n, NULL, 10);
        free(n);
        ds_buf_free(&b);
    }
    /* The measured form, as store_merge runs it, when the maximum serves. */
    store_overlap shape = {0};
    ds_error err = {0};
    if (c->overlap) {
        CHECK(store_measure_overlap(con, &batch, &shape, &err), "store_measure_overlap: %s", err.msg);
        if (store_overlap_usable(&shape))
            batch.shape = &shape;
    }
    char *sql[2];
    size_t n = store_merge_sql(&batch, sql);
    CHECK(n == (c->nkey > 0 ? 2u : 1u), "%zu statements", n);
    for (size_t i = 0; i < n; i++) {
        CHECK(parse_one(sql[i], "store_merge_sql") == NULL, "a SELECT");
        run_ok(sql[i]);
        free(sql[i]);
    }
    store_overlap_free(&shape);
    rows after;
    table_rows(c->tables[1], &after);
    CHECK(after.n == expect, "merge (%zu key columns, overlap %d): %zu rows, expected %zu", c->nkey,
          c->overlap, after.n, expect);
    rows_free(&after);
    rows_free(&stored);
    rows_free(&staged);
}

/* The PostgreSQL conditions and bounds query, parsed by DuckDB. */
static void check_pg(const fuzz_case *c)
{
    const char *col = c->rcols[c->order];
    const char *pg_type = PG_TYPES[c->pick % NPG_TYPES].pg_type;
    char *table = quoted(c->tables[1]);
    const char *tables[] = {c->tables[1]};
    char *lo = NULL, *hi = NULL, *lit = ds_quote_literal(c->value);
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "%s::%s", lit, pg_type);
    lo = ds_buf_take(&b);
    ds_buf_appendf(&b, "'%u'::%s", c->pick, pg_type);
    hi = ds_buf_take(&b);
    const char *strings[] = {c->value};
    for (int side = 0; side < 4; side++) {
        char *cond = pgsrc_range_sql(col, side & 1 ? lo : NULL, side & 2 ? hi : NULL);
        ds_buf_appendf(&b, "SELECT 1 FROM %s WHERE %s", table, cond);
        const char *cols[] = {col};
        check_named(ds_buf_str(&b), "pgsrc_range_sql", cols, 1, side == 3 ? 2 : 1, tables, 1, strings,
                    side & 1 ? 1 : 0);
        ds_buf_reset(&b);
        free(cond);
    }
    pgsrc_column since_col = {.name = (char *)col, .pg_type = (char *)pg_type};
    since_col.type.kind = c->pick % 2 ? PGSRC_TEXT : PGSRC_INT8;
    char *cond = pgsrc_since_sql(&since_col, lit, c->inclusive);
    ds_buf_appendf(&b, "SELECT 1 FROM %s WHERE %s", table, cond);
    const char *cols[] = {col};
    check_named(ds_buf_str(&b), "pgsrc_since_sql", cols, 1, 2, tables, 1, strings, 1);
    ds_buf_reset(&b);
    free(cond);

    /* The bounds query around the source's query (with what a user may end it with). */
    size_t t = c->pick % 7;
    pgsrc_column pcol = {.name = (char *)col, .pg_type = (char *)PG_TYPES[t].pg_type};
    pcol.type.kind = PG_TYPES[t].kind;
    ds_buf_appendf(&b, "SELECT * FROM %s%s", table, c->pick & 8 ? " -- the query;\n ;" : "");
    char *sql = pgsrc_bounds_sql(ds_buf_str(&b), &pcol, 2 + c->pick % 9);
    bool temporal = PG_TYPES[t].kind == PGSRC_DATE || PG_TYPES[t].kind == PGSRC_TIMESTAMP ||
                    PG_TYPES[t].kind == PGSRC_TIMESTAMPTZ;
    const char *bcols[] = {col, "lo", "hi", "i", "bound"}, *btables[] = {c->tables[1], "b"};
    check_named(sql, "pgsrc_bounds_sql", bcols, 5, temporal ? 3 : 2, btables, 2, NULL, 0);
    free(sql);
    ds_buf_free(&b);
    free(lo);
    free(hi);
    free(lit);
    free(table);
}

/* pgsrc_top_level_limit on the input as text (up to its first NUL): it
 * names one of its three clauses or none, and what it finds depends only on
 * the text's top level: a LIMIT before the text is found whatever follows;
 * the text inside a line comment, a string, a quoted identifier, a dollar
 * quote or parentheses (each made so the text cannot end it) holds none. */
static void check_limit_scan(const uint8_t *data, size_t size)
{
    char *text = strndup((const char *)data, size);
    CHECK(text != NULL);
    const char *found = pgsrc_top_level_limit(text);
    CHECK(found == NULL || strcmp(found, "LIMIT") == 0 || strcmp(found, "OFFSET") == 0 ||
          strcmp(found, "FETCH") == 0);
    size_t n = strlen(text);
    char *buf = malloc(2 * n + 32);
    CHECK(buf != NULL);
    snprintf(buf, 2 * n + 32, "SELECT 1 LIMIT 1 %s", text);
    found = pgsrc_top_level_limit(buf);
    CHECK(found != NULL && strcmp(found, "LIMIT") == 0, "%s", buf);

    static const struct {
        const char *open, *close;
        char doubled;        /* a character doubled inside, or 0 */
        const char *dropped; /* characters left out */
    } wraps[] = {
        {"SELECT 1 -- ", "", 0, "\n\r"}, {"SELECT '", "'", '\'', ""},   {"SELECT \"", "\"", '"', ""},
        {"SELECT $q$", "$q$", 0, "$"},   {"SELECT /* ", " */", 0, "*"}, {"SELECT (", ")", 0, "'\"$-/()"},
    };
    for (size_t w = 0; w < sizeof wraps / sizeof wraps[0]; w++) {
        char *q = buf + snprintf(buf, 32, "%s", wraps[w].open);
        for (size_t i = 0; i < n; i++) {
            if (strchr(wraps[w].dropped, text[i]) != NULL)
                continue;
            *q++ = text[i];
            if (text[i] == wraps[w].doubled)
                *q++ = text[i];
        }
        snprintf(q, 32, "%s", wraps[w].close);
        CHECK(pgsrc_top_level_limit(buf) == NULL, "%s", buf);
    }
    free(buf);
    free(text);
}

int fuzz_sql_input(const uint8_t *data, size_t size)
{
    static fuzz_case c;
    check_limit_scan(data, size);
    if (!decode(data, size, &c))
        return 0;
    open_db();
    run_ok("CREATE SCHEMA fz");
    run_ok("USE memory.fz");

    check_literal(&c);
    char *dref = quoted(c.tables[0]), *rref = quoted(c.tables[1]), *sref = staging_ref(&c);
    create_table(dref, c.tables[0], c.dcols, c.dtypes, c.nd);
    create_table(rref, c.tables[1], c.rcols, c.rtypes, c.nr);
    create_table(sref, c.tables[3], c.rcols, c.rtypes, c.nr);
    static const int dataset_ids[] = {0, 1, 2, 9}, stored_ids[] = {0, 1, 2, -1},
                     same_ids[] = {0, 1, 2, 0, -1}, new_ids[] = {10, 11, 12, 13, -1};
    insert_rows(dref, c.dtypes, c.nd, dataset_ids, 4, 0);
    insert_rows(rref, c.rtypes, c.nr, stored_ids, 4, 0);
    insert_rows(sref, c.rtypes, c.nr, c.distinct_ids ? new_ids : same_ids, 5, 1);

    check_view(&c);
    check_max(&c);
    check_minus(&c);
    check_duplicate_ids(&c, sref);
    check_merge(&c, sref);
    check_pg(&c);

    free(dref);
    free(rref);
    free(sref);
    run_ok("USE memory.main");
    run_ok("DROP SCHEMA fz CASCADE");
    return 0;
}
