/* The DuckDB statements of store/tables.h built from hostile names (quotes,
 * backslashes, 63-byte and unicode names, SQL words, the builders' own
 * aliases, 1,600 columns): the exact text for small cases, and every
 * statement run on an in-memory DuckDB against tables created from those
 * names, checking the columns and rows it leaves. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/strbuf.h"
#include "store/store.h"
#include "store/tables.h"

static duckdb_database g_db;
static duckdb_connection g_con;

/* Strings a test allocates, freed after it. */

static int duck_setup(void **state)
{
    (void)state;
    if (duckdb_open(NULL, &g_db) != DuckDBSuccess || duckdb_connect(g_db, &g_con) != DuckDBSuccess)
        return -1;
    duckdb_result res;
    bool ok = duckdb_query(g_con, "SET TimeZone = 'UTC'", &res) == DuckDBSuccess;
    duckdb_destroy_result(&res);
    return ok ? 0 : -1;
}

static int duck_teardown(void **state)
{
    (void)state;
    duckdb_disconnect(&g_con);
    duckdb_close(&g_db);
    tl_free_kept();
    return 0;
}

/* Runs a statement a builder returned (and frees it). */
static void run_built(char *sql)
{
    assert_non_null(sql);
    duckdb_result res;
    if (duckdb_query(g_con, sql, &res) != DuckDBSuccess)
        fail_msg("DuckDB error: %s\nSQL: %s", duckdb_result_error(&res), sql);
    duckdb_destroy_result(&res);
    free(sql);
}

/* The rows of a query as text, sorted: columns joined by '|', rows by '\n',
 * NULL as "NULL". */
static char *rows_of(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *rows_of(const char *fmt, ...)
{
    ds_buf q = DS_BUF_INIT, out = DS_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    ds_buf_vappendf(&q, fmt, ap);
    va_end(ap);
    char *inner = tl_keep(ds_buf_take(&q));
    char *sql = tl_keepf("SELECT COLUMNS(*)::VARCHAR FROM (%s) ORDER BY ALL", inner);
    duckdb_result res;
    if (duckdb_query(g_con, sql, &res) != DuckDBSuccess)
        fail_msg("DuckDB error: %s\nSQL: %s", duckdb_result_error(&res), sql);
    ds_buf_append(&out, "");
    for (idx_t r = 0; r < duckdb_row_count(&res); r++) {
        if (r > 0)
            ds_buf_appendc(&out, '\n');
        for (idx_t c = 0; c < duckdb_column_count(&res); c++) {
            if (c > 0)
                ds_buf_appendc(&out, '|');
            char *v = duckdb_value_is_null(&res, c, r) ? NULL : duckdb_value_varchar(&res, c, r);
            ds_buf_append(&out, v ? v : "NULL");
            duckdb_free(v);
        }
    }
    duckdb_destroy_result(&res);
    return tl_keep(ds_buf_take(&out));
}

/* name and data_type of each column of a table or view of the main schema,
 * in order (the names may hold anything, so the table name is bound). */
typedef struct table_cols {
    char *names[2048];
    char *types[2048];
    size_t n;
} table_cols;

static void columns_of(const char *table, table_cols *out)
{
    duckdb_prepared_statement st;
    assert_int_equal(duckdb_prepare(g_con,
                                    "SELECT column_name, data_type FROM duckdb_columns() WHERE "
                                    "schema_name = 'main' AND table_name = $1 ORDER BY column_index",
                                    &st),
                     DuckDBSuccess);
    assert_int_equal(duckdb_bind_varchar(st, 1, table), DuckDBSuccess);
    duckdb_result res;
    if (duckdb_execute_prepared(st, &res) != DuckDBSuccess)
        fail_msg("duckdb_columns(): %s", duckdb_result_error(&res));
    out->n = duckdb_row_count(&res);
    assert_true(out->n <= 2048);
    for (idx_t r = 0; r < out->n; r++) {
        char *name = duckdb_value_varchar(&res, 0, r), *type = duckdb_value_varchar(&res, 1, r);
        out->names[r] = tl_keep(strdup(name));
        out->types[r] = tl_keep(strdup(type));
        duckdb_free(name);
        duckdb_free(type);
    }
    duckdb_destroy_result(&res);
    duckdb_destroy_prepare(&st);
}

/* Names PostgreSQL can return and DuckDB must take as they are: quotes,
 * backslashes, unicode (composed and combining), blanks, SQL comments and
 * words, printf conversions, and the aliases the builders use (t, s, r, d). */
static const char *const HOSTILE[] = {
    "c\"1\"",    "'",         "it's", "back\\slash", "\\", "\"",  "\"\"",  "\xc3\xa9", "名前",
    "🦆 duck", "e\xcc\x81", " ",    "?column?",    ".",  "a.b", "-- x",  "/* y",     "; DROP TABLE t; --",
    "select",    "from",      "t",    "s",           "r",  "d",   "order", "#1",       "$1",
    "%s%n",      "\t\n",
};
#define NHOSTILE (sizeof HOSTILE / sizeof HOSTILE[0])

/* 63 bytes, the longest name PostgreSQL keeps: quotes, backslashes, a dot. */
static const char NAME63[] =
    "\"q\"\"uo'te''d\\ba\\\\ck.sl\xc3\xa9sh\" \"'\\'\"'\\\"\"\"''...''\\\\\"\"\"end of 63 B.\"";

/* A DuckDB type per column index, and how duckdb_columns() spells it. */
static const char *const TYPES[][2] = {
    {"INTEGER", "INTEGER"},
    {"VARCHAR", "VARCHAR"},
    {"DECIMAL(12,4)", "DECIMAL(12,4)"},
    {"TIMESTAMP", "TIMESTAMP"},
    {"TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"},
    {"DATE", "DATE"},
    {"DOUBLE", "DOUBLE"},
    {"BIGINT", "BIGINT"},
    {"BOOLEAN", "BOOLEAN"},
    {"JSON", "JSON"},
    {"BLOB", "BLOB"},
    {"UUID", "UUID"},
    {"INTERVAL", "INTERVAL"},
    {"TIME", "TIME"},
    {"VARCHAR[]", "VARCHAR[]"},
    {"INTEGER[]", "INTEGER[]"},
    {"FLOAT", "FLOAT"},
    {"SMALLINT", "SMALLINT"},
};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])

/* ---- typed literals --------------------------------------------------- */

static char *typed_literal(const char *value, const char *type)
{
    ds_buf b = DS_BUF_INIT;
    store_append_typed_literal(&b, value, type);
    return tl_keep(ds_buf_take(&b));
}

static void test_typed_literal(void **state)
{
    (void)state;
    assert_string_equal(typed_literal("it's \\ 'x'", "VARCHAR"), "CAST('it''s \\ ''x''' AS VARCHAR)");
    assert_string_equal(typed_literal("", "DATE"), "CAST('' AS DATE)");

    /* Any text comes back unchanged, and a watermark in its type. */
    for (size_t i = 0; i < NHOSTILE; i++) {
        char *v = tl_duck_scalar(g_con, "SELECT %s", typed_literal(HOSTILE[i], "VARCHAR"));
        assert_string_equal(v, HOSTILE[i]);
        free(v);
    }
    char *v = tl_duck_scalar(g_con, "SELECT %s", typed_literal(NAME63, "VARCHAR"));
    assert_string_equal(v, NAME63);
    free(v);
    static const char *const typed[][3] = {
        {"2024-02-29", "DATE", "2024-02-29"},
        {"2024-02-29 13:45:07.123456", "TIMESTAMP", "2024-02-29 13:45:07.123456"},
        {"2024-02-29 13:45:07+02", "TIMESTAMPTZ", "2024-02-29 11:45:07+00"},
        {"infinity", "TIMESTAMP", "infinity"},
        {"-12.5", "DECIMAL(12,4)", "-12.5000"},
        {"-9223372036854775808", "BIGINT", "-9223372036854775808"},
        {"5 minutes", "INTERVAL", "00:05:00"},
        {"23:59:59.999999", "TIME", "23:59:59.999999"},
    };
    for (size_t i = 0; i < sizeof typed / sizeof typed[0]; i++) {
        v = tl_duck_scalar(g_con, "SELECT %s", typed_literal(typed[i][0], typed[i][1]));
        assert_string_equal(v, typed[i][2]);
        free(v);
    }

    /* Text that is not a value of the type is a conversion error, never SQL. */
    duckdb_result res;
    char *sql = tl_keepf("SELECT %s", typed_literal("1' OR '1' = '1", "INTEGER"));
    assert_int_equal(duckdb_query(g_con, sql, &res), DuckDBError);
    assert_int_equal(duckdb_result_error_type(&res), DUCKDB_ERROR_CONVERSION);
    duckdb_destroy_result(&res);
}

/* ---- CREATE TABLE ----------------------------------------------------- */

static void test_create_table_sql_text(void **state)
{
    (void)state;
    const store_column cols[] = {{"c\"1\"", "INTEGER"}, {"'", "VARCHAR"}, {"back\\slash", "DECIMAL(12,4)"}};
    char *sql = tl_keep(store_create_table_sql("memory.main.\"st\"\"g\"", cols, 3));
    assert_string_equal(sql, "CREATE TABLE memory.main.\"st\"\"g\" (\"c\"\"1\"\"\" INTEGER, \"'\" VARCHAR, "
                             "\"back\\slash\" DECIMAL(12,4))");
    assert_string_equal(tl_keep(store_create_table_sql("\"t\"", cols, 0)), "CREATE TABLE \"t\" ()");
}

/* Every hostile name as a table, each with every hostile name as a column:
 * DuckDB holds exactly those names and types, and a row goes in and out. */
static void test_create_table_hostile_names(void **state)
{
    (void)state;
    store_column cols[NHOSTILE + 1];
    for (size_t i = 0; i < NHOSTILE; i++)
        cols[i] = (store_column){HOSTILE[i], TYPES[i % NTYPES][0]};
    cols[NHOSTILE] = (store_column){NAME63, "VARCHAR"};
    const char *tables[NHOSTILE + 1];
    memcpy(tables, HOSTILE, sizeof HOSTILE);
    tables[NHOSTILE] = NAME63;
    for (size_t t = 0; t <= NHOSTILE; t++) {
        /* The staging tables of incremental syncs are qualified. */
        char *ref = t % 2 ? tl_keep_ident(tables[t])
                          : tl_keepf(STORE_SCRATCH_CATALOG ".main.%s", tl_keep_ident(tables[t]));
        run_built(store_create_table_sql(ref, cols, NHOSTILE + 1));
        table_cols got;
        columns_of(tables[t], &got);
        assert_int_equal(got.n, NHOSTILE + 1);
        for (size_t i = 0; i <= NHOSTILE; i++) {
            assert_string_equal(got.names[i], cols[i].name);
            assert_string_equal(got.types[i], i < NHOSTILE ? TYPES[i % NTYPES][1] : "VARCHAR");
        }
    }
    assert_int_equal(tl_duck_int(g_con, "SELECT count(*) FROM duckdb_tables()"), NHOSTILE + 1);
    tl_duck_exec(g_con, "INSERT INTO %s (%s, %s) VALUES (42, 'x''y')", tl_keep_ident("it's"),
                 tl_keep_ident("c\"1\""), tl_keep_ident(NAME63));
    assert_string_equal(rows_of("SELECT %s, %s FROM %s", tl_keep_ident(NAME63), tl_keep_ident("c\"1\""),
                                tl_keep_ident("it's")),
                        "x'y|42");
}

/* PostgreSQL's limit: 1,600 columns, each a 63-byte hostile name. */
static void test_create_table_1600_columns(void **state)
{
    (void)state;
    assert_int_equal(strlen(NAME63), 63);
    static store_column cols[1600];
    for (size_t i = 0; i < 1600; i++) {
        char *name = tl_keepf("%04zu%s", i, NAME63);
        name[63] = '\0';
        cols[i] = (store_column){name, TYPES[i % NTYPES][0]};
    }
    char *sql = store_create_table_sql(tl_keep_ident(NAME63), cols, 1600);
    assert_non_null(sql);
    assert_true(strlen(sql) > 1600 * 70);
    run_built(sql);
    table_cols got;
    columns_of(NAME63, &got);
    assert_int_equal(got.n, 1600);
    for (size_t i = 0; i < 1600; i++) {
        assert_int_equal(strlen(got.names[i]), 63);
        assert_string_equal(got.names[i], cols[i].name);
        assert_string_equal(got.types[i], TYPES[i % NTYPES][1]);
    }
}

/* ---- the view of a split source ---------------------------------------- */

/* The default join: LEFT JOIN on dataset_id. */
static char *const ON_ID_COLS[] = {"dataset_id"};
static const store_join ON_ID = {.inner = false, .cols = ON_ID_COLS, .n = 1};

static void test_view_sql_text(void **state)
{
    (void)state;
    const store_column data[] = {{"dataset_id", "UUID"}, {"x", "INTEGER"}, {"c\"1\"", "VARCHAR"}};
    const store_column results[] = {
        {"dataset_id", "UUID"}, {"x", "INTEGER"}, {"dataset_x", "INTEGER"}, {"dataset_dataset_x", "INTEGER"}};
    char *sql = tl_keep(store_view_sql("v'\"", "d\"s", data, 3, "r\"s", results, 4, &ON_ID));
    assert_string_equal(sql,
                        "CREATE OR REPLACE VIEW \"v'\"\"\" AS SELECT r.\"dataset_id\", r.\"x\", "
                        "r.\"dataset_x\", r.\"dataset_dataset_x\", d.\"x\" AS \"dataset_dataset_dataset_x\", "
                        "d.\"c\"\"1\"\"\" FROM \"r\"\"s\" AS r LEFT JOIN \"d\"\"s\" AS d ON "
                        "r.\"dataset_id\" = d.\"dataset_id\"");
    /* Without other columns on either side. */
    sql = tl_keep(store_view_sql("v", "d", data, 1, "r", results, 1, &ON_ID));
    assert_string_equal(sql, "CREATE OR REPLACE VIEW \"v\" AS SELECT r.\"dataset_id\" FROM \"r\" AS r LEFT "
                             "JOIN \"d\" AS d ON r.\"dataset_id\" = d.\"dataset_id\"");
}

/* Hostile table, view and column names, some used by both queries: the
 * view has every results column, then every dataset column but dataset_id
 * (renamed dataset_<col>, again while taken, when the results use it), and
 * each row of the results with its dataset row or NULLs. */
static void test_view_hostile_names(void **state)
{
    (void)state;
    const store_column data[] = {{"c\"1\"", "VARCHAR"}, {"dataset_id", "INTEGER"}, {"'", "VARCHAR"},
                                 {"\\", "VARCHAR"},     {"\xc3\xa9", "VARCHAR"},   {"d", "INTEGER"},
                                 {NAME63, "VARCHAR"}};
    const store_column results[] = {{"dataset_id", "INTEGER"}, {"c\"1\"", "VARCHAR"}, {"'", "VARCHAR"},
                                    {"dataset_'", "VARCHAR"},  {"r", "VARCHAR"},      {"d", "INTEGER"}};
    const char *dtable = "it's \"data\"", *rtable = "r", *view = NAME63;
    run_built(store_create_table_sql(tl_keep_ident(dtable), data, 7));
    run_built(store_create_table_sql(tl_keep_ident(rtable), results, 6));
    tl_duck_exec(g_con,
                 "INSERT INTO %s VALUES ('d1', 1, 'q1', 'b1', 'e1', 11, 'n1'), "
                 "('d3', 3, 'q3', 'b3', 'e3', 33, 'n3')",
                 tl_keep_ident(dtable));
    tl_duck_exec(g_con,
                 "INSERT INTO %s VALUES (1, 'rc1', 'rq1', 'rdq1', 'rr1', 111), "
                 "(2, 'rc2', 'rq2', 'rdq2', 'rr2', 222), (1, 'rc1b', NULL, NULL, NULL, NULL)",
                 tl_keep_ident(rtable));
    run_built(store_view_sql(view, dtable, data, 7, rtable, results, 6, &ON_ID));

    table_cols got;
    columns_of(view, &got);
    static const char *const expect[] = {
        "dataset_id",        "c\"1\"", "'",        "dataset_'", "r",   "d", "dataset_c\"1\"",
        "dataset_dataset_'", "\\",     "\xc3\xa9", "dataset_d", NAME63};
    assert_int_equal(got.n, sizeof expect / sizeof expect[0]);
    for (size_t i = 0; i < got.n; i++)
        assert_string_equal(got.names[i], expect[i]);
    assert_string_equal(rows_of("SELECT * FROM %s", tl_keep_ident(view)),
                        "1|rc1|rq1|rdq1|rr1|111|d1|q1|b1|e1|11|n1\n"
                        "1|rc1b|NULL|NULL|NULL|NULL|d1|q1|b1|e1|11|n1\n"
                        "2|rc2|rq2|rdq2|rr2|222|NULL|NULL|NULL|NULL|NULL|NULL");
    /* Each column is reachable by its name. */
    assert_string_equal(rows_of("SELECT %s, %s, %s FROM %s WHERE dataset_id = 2",
                                tl_keep_ident("dataset_dataset_'"), tl_keep_ident("'"), tl_keep_ident("d"),
                                tl_keep_ident(view)),
                        "NULL|rq2|222");
    assert_string_equal(rows_of("SELECT %s, %s FROM %s WHERE %s = 'rc1'", tl_keep_ident("dataset_d"),
                                tl_keep_ident(NAME63), tl_keep_ident(view), tl_keep_ident("c\"1\"")),
                        "11|n1");
}

/* DuckDB compares names without case (ASCII only), and an alias may be
 * the name of another dataset column or alias: each view column must still
 * have a name of its own, or a query by that name reads another column. */
static void test_view_names_unique_to_duckdb(void **state)
{
    (void)state;
    const store_column data[] = {
        {"dataset_id", "INTEGER"}, {"name", "VARCHAR"}, {"x", "VARCHAR"}, {"dataset_x", "VARCHAR"}};
    const store_column results[] = {{"dataset_id", "INTEGER"}, {"Name", "VARCHAR"}, {"x", "VARCHAR"}};
    run_built(store_create_table_sql(tl_keep_ident("d"), data, 4));
    run_built(store_create_table_sql(tl_keep_ident("r"), results, 3));
    tl_duck_exec(g_con, "INSERT INTO d VALUES (1, 'd.name', 'd.x', 'd.dataset_x')");
    tl_duck_exec(g_con, "INSERT INTO r VALUES (1, 'r.Name', 'r.x')");
    run_built(store_view_sql("v", "d", data, 4, "r", results, 3, &ON_ID));
    table_cols got;
    columns_of("v", &got);
    for (size_t i = 0; i < got.n; i++)
        for (size_t k = 0; k < i; k++)
            if (strcasecmp(got.names[i], got.names[k]) == 0)
                fail_msg("view columns %zu \"%s\" and %zu \"%s\" are one name to DuckDB", k, got.names[k], i,
                         got.names[i]);
    assert_string_equal(rows_of("SELECT \"Name\", dataset_name, x, dataset_x, dataset_dataset_x FROM v"),
                        "r.Name|d.name|r.x|d.dataset_x|d.x");
}

/* join: an INNER JOIN on two columns, one of them a hostile name: each
 * quoted, every dataset column but the join's listed, and no SQL without
 * a join column. */
static void test_view_join_sql_text(void **state)
{
    (void)state;
    const store_column data[] = {{"dataset_id", "INTEGER"}, {"run \"x\"", "INTEGER"}, {"q", "VARCHAR"}};
    const store_column results[] = {{"dataset_id", "INTEGER"}, {"run \"x\"", "INTEGER"}, {"s", "DOUBLE"}};
    char *cols[] = {"dataset_id", "run \"x\""};
    const store_join inner = {.inner = true, .cols = cols, .n = 2};
    assert_string_equal(
        tl_keep(store_view_sql("v", "d", data, 3, "r", results, 3, &inner)),
        "CREATE OR REPLACE VIEW \"v\" AS SELECT r.\"dataset_id\", r.\"run \"\"x\"\"\", r.\"s\", "
        "d.\"q\" FROM \"r\" AS r INNER JOIN \"d\" AS d ON r.\"dataset_id\" = d.\"dataset_id\" "
        "AND r.\"run \"\"x\"\"\" = d.\"run \"\"x\"\"\"");
    /* A join on a column that is not dataset_id keeps dataset_id of the
     * dataset, renamed as every shared name is. */
    char *run_only[] = {"RUN \"x\""};
    const store_join left_run = {.inner = false, .cols = run_only, .n = 1};
    assert_string_equal(
        tl_keep(store_view_sql("v", "d", data, 3, "r", results, 3, &left_run)),
        "CREATE OR REPLACE VIEW \"v\" AS SELECT r.\"dataset_id\", r.\"run \"\"x\"\"\", r.\"s\", "
        "d.\"dataset_id\" AS \"dataset_dataset_id\", d.\"q\" FROM \"r\" AS r LEFT JOIN \"d\" AS d "
        "ON r.\"RUN \"\"x\"\"\" = d.\"RUN \"\"x\"\"\"");
    const store_join none = {.inner = false, .cols = cols, .n = 0};
    assert_null(store_view_sql("v", "d", data, 3, "r", results, 3, &none));
}

/* The rows of each join: left keeps every result (NULLs without a dataset
 * row), inner only those with one; a two-column key matches on both. */
static void test_view_join_rows(void **state)
{
    (void)state;
    const store_column data[] = {{"dataset_id", "INTEGER"}, {"run", "INTEGER"}, {"q", "VARCHAR"}};
    const store_column results[] = {{"dataset_id", "INTEGER"}, {"run", "INTEGER"}, {"s", "DOUBLE"}};
    run_built(store_create_table_sql(tl_keep_ident("d"), data, 3));
    run_built(store_create_table_sql(tl_keep_ident("r"), results, 3));
    tl_duck_exec(g_con, "INSERT INTO d VALUES (1, 1, 'q1r1'), (1, 2, 'q1r2'), (2, 1, 'q2r1')");
    tl_duck_exec(g_con, "INSERT INTO r VALUES (1, 1, 0.1), (1, 2, 0.2), (2, 2, 0.3), (3, 1, 0.4)");
    char *id[] = {"dataset_id"}, *id_run[] = {"dataset_id", "run"};
    const store_join cases[] = {{false, id, 1}, {true, id, 1}, {false, id_run, 2}, {true, id_run, 2}};
    static const char *const expect[] = {
        /* left on dataset_id: result 1 matches two dataset rows */
        "1|1|0.1|1|q1r1\n1|1|0.1|2|q1r2\n1|2|0.2|1|q1r1\n1|2|0.2|2|q1r2\n2|2|0.3|1|q2r1\n3|1|0.4|NULL|NULL",
        "1|1|0.1|1|q1r1\n1|1|0.1|2|q1r2\n1|2|0.2|1|q1r1\n1|2|0.2|2|q1r2\n2|2|0.3|1|q2r1",
        "1|1|0.1|q1r1\n1|2|0.2|q1r2\n2|2|0.3|NULL\n3|1|0.4|NULL",
        "1|1|0.1|q1r1\n1|2|0.2|q1r2",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_built(store_view_sql("v", "d", data, 3, "r", results, 3, &cases[i]));
        assert_string_equal(rows_of("SELECT * FROM v ORDER BY ALL"), expect[i]);
    }
}

/* Join columns compare as they are when of one type or both numbers; the
 * first other one is named with its two types. */
static void test_join_mismatch(void **state)
{
    (void)state;
    const store_column data[] = {
        {"dataset_id", "UUID"}, {"Run", "INTEGER"}, {"k", "VARCHAR"}, {"n", "DECIMAL(10,2)"}};
    const store_column results[] = {
        {"dataset_id", "UUID"}, {"run", "BIGINT"}, {"k", "INTEGER"}, {"n", "DOUBLE"}};
    const char *dt = NULL, *rt = NULL;
    char *ok_cols[] = {"dataset_id", "run", "n"}, *bad_cols[] = {"dataset_id", "k", "run"};
    const store_join ok = {false, ok_cols, 3}, bad = {true, bad_cols, 3};
    assert_null(store_join_mismatch(data, 4, results, 4, &ok, &dt, &rt));
    assert_string_equal(store_join_mismatch(data, 4, results, 4, &bad, &dt, &rt), "k");
    assert_string_equal(dt, "VARCHAR");
    assert_string_equal(rt, "INTEGER");
}

/* The view's definition reads back equal while the view is the same, and
 * differs once its join does; no view reads as NULL. */
static void test_view_definition(void **state)
{
    (void)state;
    const store_column data[] = {{"dataset_id", "INTEGER"}, {"q", "VARCHAR"}};
    const store_column results[] = {{"dataset_id", "INTEGER"}, {"s", "DOUBLE"}};
    run_built(store_create_table_sql(tl_keep_ident("d"), data, 2));
    run_built(store_create_table_sql(tl_keep_ident("r"), results, 2));
    ds_error err;
    char *none = NULL, *first = NULL, *again = NULL, *inner = NULL;
    assert_true(store_view_definition(g_con, "it's v", &none, &err));
    assert_null(none);
    run_built(store_view_sql("it's v", "d", data, 2, "r", results, 2, &ON_ID));
    assert_true(store_view_definition(g_con, "it's v", &first, &err));
    run_built(store_view_sql("it's v", "d", data, 2, "r", results, 2, &ON_ID));
    assert_true(store_view_definition(g_con, "it's v", &again, &err));
    const store_join on_id_inner = {.inner = true, .cols = ON_ID_COLS, .n = 1};
    run_built(store_view_sql("it's v", "d", data, 2, "r", results, 2, &on_id_inner));
    assert_true(store_view_definition(g_con, "it's v", &inner, &err));
    assert_non_null(first);
    assert_string_equal(first, again);
    assert_non_null(inner);
    assert_string_not_equal(first, inner);
    free(first);
    free(again);
    free(inner);
}

/* ---- merging an incremental batch -------------------------------------- */

static void test_merge_sql_text(void **state)
{
    (void)state;
    char *key[] = {"c\"1\"", "'"};
    store_batch upsert = {.table = "it's",
                          .staging_ref = "memory.main.\"s\"\"g\"",
                          .order_col = "back\\slash",
                          .type = "TIMESTAMP",
                          .key = key,
                          .nkey = 2};
    char *sql[2];
    assert_int_equal(store_merge_sql(&upsert, sql), 2);
    tl_keep(sql[0]);
    tl_keep(sql[1]);
    assert_string_equal(sql[0], "DELETE FROM \"it's\" AS t USING (SELECT DISTINCT \"c\"\"1\"\"\", \"'\" FROM "
                                "memory.main.\"s\"\"g\") AS s WHERE t.\"c\"\"1\"\"\" IS NOT DISTINCT FROM "
                                "s.\"c\"\"1\"\"\" AND t.\"'\" IS NOT DISTINCT FROM s.\"'\"");
    assert_string_equal(sql[1], "INSERT INTO \"it's\" SELECT * FROM memory.main.\"s\"\"g\" QUALIFY "
                                "row_number() OVER (PARTITION BY \"c\"\"1\"\"\", \"'\" ORDER BY "
                                "\"back\\slash\" DESC NULLS LAST) = 1");

    store_batch overlap = {.table = "t\"",
                           .staging_ref = "\"s\"",
                           .order_col = "o'",
                           .type = "VARCHAR",
                           .overlap = true,
                           .start = "it's",
                           .start_inclusive = true};
    assert_int_equal(store_merge_sql(&overlap, sql), 1);
    assert_string_equal(
        tl_keep(sql[0]),
        "INSERT INTO \"t\"\"\" SELECT * FROM (SELECT * FROM \"s\" EXCEPT ALL SELECT * FROM (SELECT * FROM "
        "\"t\"\"\" WHERE \"o'\" >= CAST('it''s' AS VARCHAR) UNION ALL SELECT * FROM \"t\"\"\" WHERE \"o'\" "
        "IS NULL) AS _overlap) AS _new_rows");
    char *added = tl_keep(store_batch_new_rows_sql(&overlap));
    assert_string_equal(added, "(SELECT * FROM \"s\" EXCEPT ALL SELECT * FROM (SELECT * FROM \"t\"\"\" WHERE "
                               "\"o'\" >= CAST('it''s' AS VARCHAR) UNION ALL SELECT * FROM \"t\"\"\" WHERE "
                               "\"o'\" IS NULL) AS _overlap) AS _new_rows");
    /* A read from the beginning meets every stored row. */
    overlap.start = NULL;
    assert_int_equal(store_merge_sql(&overlap, sql), 1);
    assert_string_equal(tl_keep(sql[0]),
                        "INSERT INTO \"t\"\"\" SELECT * FROM (SELECT * FROM \"s\" EXCEPT ALL "
                        "SELECT * FROM \"t\"\"\") AS _new_rows");
    overlap.start = "it's";
    overlap.start_inclusive = false;
    assert_int_equal(store_merge_sql(&overlap, sql), 1);
    assert_string_equal(
        tl_keep(sql[0]),
        "INSERT INTO \"t\"\"\" SELECT * FROM (SELECT * FROM \"s\" EXCEPT ALL SELECT * FROM (SELECT * FROM "
        "\"t\"\"\" WHERE \"o'\" > CAST('it''s' AS VARCHAR) UNION ALL SELECT * FROM \"t\"\"\" WHERE \"o'\" "
        "IS NULL) AS _overlap) AS _new_rows");
    overlap.overlap = false;
    assert_int_equal(store_merge_sql(&overlap, sql), 1);
    assert_string_equal(tl_keep(sql[0]), "INSERT INTO \"t\"\"\" SELECT * FROM \"s\"");
    assert_string_equal(tl_keep(store_batch_new_rows_sql(&overlap)), "\"s\"");
}

/* The columns of the merge tests: a two-column key, the incremental column
 * and a value, all hostile names. */
static const store_column MERGE_COLS[] = {
    {"c\"1\"", "INTEGER"}, {"'", "VARCHAR"}, {"back\\slash", "TIMESTAMP"}, {"t", "VARCHAR"}};
#define MERGE_TABLE "it's \"stored\""
#define MERGE_STAGING STORE_SCRATCH_CATALOG ".main.\"s\"\"t'g\""

static void create_merge_tables(const char *stored_rows, const char *staged_rows)
{
    run_built(store_create_table_sql(tl_keep_ident(MERGE_TABLE), MERGE_COLS, 4));
    run_built(store_create_table_sql(MERGE_STAGING, MERGE_COLS, 4));
    tl_duck_exec(g_con, "INSERT INTO %s VALUES %s", tl_keep_ident(MERGE_TABLE), stored_rows);
    tl_duck_exec(g_con, "INSERT INTO " MERGE_STAGING " VALUES %s", staged_rows);
}

/* An upsert of the merge tables on a two-column key. */
static store_batch upsert_batch(char **key)
{
    return (store_batch){.table = MERGE_TABLE,
                         .staging_ref = MERGE_STAGING,
                         .order_col = "back\\slash",
                         .type = "TIMESTAMP",
                         .key = key,
                         .nkey = 2};
}

static void run_merge(const store_batch *batch, size_t statements)
{
    char *sql[2];
    assert_int_equal(store_merge_sql(batch, sql), statements);
    for (size_t i = 0; i < statements; i++)
        run_built(sql[i]);
}

/* Upsert: each staged key replaces what is stored under it (NULL keys
 * included), its newest version (a NULL incremental value last) winning;
 * other stored rows stay. */
static void test_merge_upsert(void **state)
{
    (void)state;
    create_merge_tables("(1, 'a''', '2024-01-01', 'old 1'), (2, 'b\\', '2024-01-01', 'old 2'), "
                        "(NULL, 'n', '2024-01-01', 'old null'), (3, 'c', '2024-01-01', 'kept'), "
                        "(1, 'b\\', '2024-01-01', 'other key')",
                        "(1, 'a''', '2024-01-02', 'new 1'), (1, 'a''', '2024-01-03', 'newest 1'), "
                        "(2, 'b\\', NULL, 'new 2 null'), (2, 'b\\', '2023-01-01', 'new 2 older'), "
                        "(NULL, 'n', '2024-01-02', 'new null'), (4, 'd', '2024-01-02', 'added')");
    char *key[] = {"c\"1\"", "'"};
    store_batch batch = upsert_batch(key);
    run_merge(&batch, 2);
    assert_string_equal(rows_of("SELECT * FROM %s", tl_keep_ident(MERGE_TABLE)),
                        "1|a'|2024-01-03 00:00:00|newest 1\n"
                        "1|b\\|2024-01-01 00:00:00|other key\n"
                        "2|b\\|2023-01-01 00:00:00|new 2 older\n"
                        "3|c|2024-01-01 00:00:00|kept\n"
                        "4|d|2024-01-02 00:00:00|added\n"
                        "NULL|n|2024-01-02 00:00:00|new null");
}

/* store_merge runs the same statements and counts: 3 stored rows replaced,
 * 1 added. */
static void test_merge_counts(void **state)
{
    (void)state;
    create_merge_tables("(1, 'a', '2024-01-01', 'x'), (2, 'b', '2024-01-01', 'x'), (NULL, 'n', NULL, 'x')",
                        "(1, 'a', '2024-01-02', 'y'), (2, 'b', '2024-01-02', 'y'), "
                        "(NULL, 'n', '2024-01-02', 'y'), (5, 'e', '2024-01-02', 'y')");
    char *key[] = {"'", "c\"1\""};
    store_batch batch = upsert_batch(key);
    int64_t inserted = -1, updated = -1;
    ds_error err = {0};
    if (!store_merge(g_con, &batch, &inserted, &updated, &err))
        fail_msg("store_merge: %s", err.msg);
    assert_int_equal(inserted, 1);
    assert_int_equal(updated, 3);
    assert_int_equal(tl_duck_int(g_con, "SELECT count(*) FROM %s", tl_keep_ident(MERGE_TABLE)), 4);
}

/* Overlap without a key: staged rows already stored at or past the start
 * (past it when exclusive) are not stored again; a row staged twice but
 * stored once is added once (EXCEPT ALL counts). */
static void test_merge_overlap(void **state)
{
    (void)state;
    static const store_column cols[] = {{"o'", "VARCHAR"}, {"c\"1\"", "INTEGER"}};
    run_built(store_create_table_sql(tl_keep_ident("t"), cols, 2));
    run_built(store_create_table_sql(tl_keep_ident("s\"'"), cols, 2));
    tl_duck_exec(g_con, "INSERT INTO t VALUES ('a''1', 1), ('a''2', 2), ('a''3', 3), ('a''3', 3)");
    tl_duck_exec(g_con,
                 "INSERT INTO %s VALUES ('a''2', 2), ('a''3', 3), ('a''3', 3), ('a''3', 3), "
                 "('a''3', 30), ('a''4', 4), ('a''1', 1)",
                 tl_keep_ident("s\"'"));
    store_batch batch = {.table = "t",
                         .staging_ref = tl_keep_ident("s\"'"),
                         .order_col = "o'",
                         .type = "VARCHAR",
                         .overlap = true,
                         .start = "a'2",
                         .start_inclusive = true};
    run_merge(&batch, 1);
    /* a'1 is before the start: the stored one does not count, so it is added. */
    assert_string_equal(rows_of("SELECT * FROM t"),
                        "a'1|1\na'1|1\na'2|2\na'3|3\na'3|3\na'3|3\na'3|30\na'4|4");

    tl_duck_exec(g_con, "DELETE FROM t");
    tl_duck_exec(g_con, "INSERT INTO t VALUES ('a''2', 2), ('a''3', 3)");
    batch.start_inclusive = false;
    run_merge(&batch, 1);
    /* Exclusive: the stored a'2 is not past the start, so the staged one is added. */
    assert_string_equal(rows_of("SELECT * FROM t"),
                        "a'1|1\na'2|2\na'2|2\na'3|3\na'3|3\na'3|3\na'3|30\na'4|4");
}

static void test_merge_append(void **state)
{
    (void)state;
    create_merge_tables("(1, 'a', '2024-01-01', 'x')", "(1, 'a', '2024-01-01', 'x'), (2, 'b', NULL, NULL)");
    store_batch batch = {.table = MERGE_TABLE, .staging_ref = MERGE_STAGING, .order_col = "back\\slash"};
    run_merge(&batch, 1);
    assert_string_equal(rows_of("SELECT * FROM %s", tl_keep_ident(MERGE_TABLE)),
                        "1|a|2024-01-01 00:00:00|x\n1|a|2024-01-01 00:00:00|x\n2|b|NULL|NULL");
}

/* A sliced merge: each slice's statements carry hash(<key or incremental
 * column>) % slices = slice. */
static void test_merge_slice_sql_text(void **state)
{
    (void)state;
    store_batch overlap = {.table = "t\"",
                           .staging_ref = "\"s\"",
                           .order_col = "o'",
                           .type = "VARCHAR",
                           .overlap = true,
                           .start = "it's"};
    char *sql[2];
    assert_int_equal(store_merge_slice_sql(&overlap, 3, 2, sql), 1);
    assert_string_equal(tl_keep(sql[0]),
                        "INSERT INTO \"t\"\"\" SELECT * FROM (SELECT * FROM \"s\" WHERE hash(\"o'\") % 3 = 2 "
                        "EXCEPT ALL SELECT * FROM (SELECT * FROM \"t\"\"\" WHERE \"o'\" > CAST('it''s' AS "
                        "VARCHAR) UNION ALL SELECT * FROM \"t\"\"\" WHERE \"o'\" IS NULL) AS _overlap WHERE "
                        "hash(\"o'\") % 3 = 2) AS _new_rows");
    char *key[] = {"k\"", "'"};
    store_batch upsert = {.table = "t", .staging_ref = "s", .order_col = "o", .key = key, .nkey = 2};
    assert_int_equal(store_merge_slice_sql(&upsert, 4, 0, sql), 2);
    assert_string_equal(
        tl_keep(sql[0]),
        "DELETE FROM \"t\" AS t USING (SELECT DISTINCT \"k\"\"\", \"'\" FROM (SELECT * "
        "FROM s WHERE hash(\"k\"\"\", \"'\") % 4 = 0) AS _new_rows) AS s WHERE "
        "t.\"k\"\"\" IS NOT DISTINCT FROM s.\"k\"\"\" AND t.\"'\" IS NOT DISTINCT FROM s.\"'\"");
    assert_string_equal(
        tl_keep(sql[1]),
        "INSERT INTO \"t\" SELECT * FROM (SELECT * FROM s WHERE hash(\"k\"\"\", \"'\") % 4 = "
        "0) AS _new_rows QUALIFY row_number() OVER (PARTITION BY \"k\"\"\", \"'\" ORDER BY \"o\" "
        "DESC NULLS LAST) = 1");
    /* One slice is the whole batch: no hash. */
    assert_int_equal(store_merge_slice_sql(&overlap, 1, 0, sql), 1);
    assert_string_equal(tl_keep(sql[0]),
                        "INSERT INTO \"t\"\"\" SELECT * FROM (SELECT * FROM \"s\" EXCEPT ALL "
                        "SELECT * FROM (SELECT * FROM \"t\"\"\" WHERE \"o'\" > CAST('it''s' AS VARCHAR) "
                        "UNION ALL SELECT * FROM \"t\"\"\" WHERE \"o'\" IS NULL) AS _overlap) AS _new_rows");
}

/* Slices: each within half of memory_limit as text, at least one, at most
 * 4,096. */
static void test_merge_slices(void **state)
{
    (void)state;
    assert_int_equal(store_merge_slices(0, 100, 64000000), 1);
    assert_int_equal(store_merge_slices(1000, 0, 64000000), 1);
    assert_int_equal(store_merge_slices(1000, 1000, 0), 1);
    assert_int_equal(store_merge_slices(1000, 1000, 64000000), 1);
    assert_int_equal(store_merge_slices(260000, 1100, 64000000), 9);
    assert_int_equal(store_merge_slices(64000, 1000, 64000000), 2);
    assert_int_equal(store_merge_slices(64001, 1000, 64000000), 3);
    assert_int_equal(store_merge_slices(INT64_C(1) << 40, 1000, 64000000), 4096);
}

/* The merge in 1..6 slices stores the same rows as at once, for the
 * overlap (duplicates, NULL incremental values, rows before the start) and
 * for the upsert (NULL keys, a key staged twice). */
static void run_merge_sliced(const store_batch *batch, int64_t slices)
{
    for (int64_t k = 0; k < slices; k++) {
        char *sql[2];
        size_t n = store_merge_slice_sql(batch, slices, k, sql);
        assert_true(n > 0);
        for (size_t i = 0; i < n; i++)
            run_built(sql[i]);
    }
}

static void test_merge_in_slices_matches_whole(void **state)
{
    (void)state;
    static const char *const stored = "(1, 'a', '2024-01-01', 'x'), (2, 'b', '2024-01-02', 'x'), "
                                      "(2, 'b', '2024-01-02', 'x'), (3, 'c', '2024-01-03', 'x'), "
                                      "(NULL, 'n', NULL, 'x'), (4, 'd', '2024-01-04', 'x')";
    static const char *const staged = "(1, 'a', '2024-01-01', 'x'), (2, 'b', '2024-01-02', 'x'), "
                                      "(2, 'b', '2024-01-02', 'x'), (2, 'b', '2024-01-02', 'x'), "
                                      "(3, 'c', '2024-01-03', 'y'), (3, 'c', '2024-01-05', 'z'), "
                                      "(NULL, 'n', NULL, 'x'), (NULL, 'n', '2024-01-06', 'w'), "
                                      "(5, 'e', '2024-01-07', 'x'), (5, 'e', '2024-01-07', 'x')";
    char *key[] = {"c\"1\"", "'"};
    store_batch batches[2] = {upsert_batch(key),
                              {.table = MERGE_TABLE,
                               .staging_ref = MERGE_STAGING,
                               .order_col = "back\\slash",
                               .type = "TIMESTAMP",
                               .overlap = true,
                               .start = "2024-01-01",
                               .start_inclusive = false}};
    for (size_t b = 0; b < 2; b++) {
        char *whole = NULL;
        for (int64_t slices = 1; slices <= 6; slices++) {
            tl_duck_exec(g_con, "DROP TABLE IF EXISTS %s", tl_keep_ident(MERGE_TABLE));
            tl_duck_exec(g_con, "DROP TABLE IF EXISTS " MERGE_STAGING);
            create_merge_tables(stored, staged);
            run_merge_sliced(&batches[b], slices);
            char *got = rows_of("SELECT * FROM %s", tl_keep_ident(MERGE_TABLE));
            if (whole == NULL)
                whole = got;
            else
                assert_string_equal(got, whole);
        }
    }
}

/* A measured merge: the staged rows above the stored maximum are taken as
 * they are, those at or below it compared with the stored rows past the
 * start, those without a value with the stored ones without (or taken when
 * none is stored), each part sliced alike. */
static void test_measured_merge_sql_text(void **state)
{
    (void)state;
    store_overlap shape = {
        .stored_rows = 3, .stored_max = "it's max", .staged_below = 2, .staged_nulls = 1, .stored_nulls = 1};
    store_batch batch = {.table = "t\"",
                         .staging_ref = "\"s\"",
                         .order_col = "o'",
                         .type = "VARCHAR",
                         .overlap = true,
                         .start = "it's",
                         .start_inclusive = true,
                         .shape = &shape};
    assert_string_equal(
        tl_keep(store_batch_new_rows_sql(&batch)),
        "(SELECT * FROM \"s\" WHERE \"o'\" > CAST('it''s max' AS VARCHAR) UNION ALL (SELECT * FROM \"s\" "
        "WHERE \"o'\" <= CAST('it''s max' AS VARCHAR) EXCEPT ALL SELECT * FROM \"t\"\"\" WHERE \"o'\" >= "
        "CAST('it''s' AS VARCHAR)) UNION ALL (SELECT * FROM \"s\" WHERE \"o'\" IS NULL EXCEPT ALL SELECT * "
        "FROM \"t\"\"\" WHERE \"o'\" IS NULL)) AS _new_rows");
    char *sql[2];
    assert_int_equal(store_merge_slice_sql(&batch, 2, 1, sql), 1);
    assert_string_equal(
        tl_keep(sql[0]),
        "INSERT INTO \"t\"\"\" SELECT * FROM (SELECT * FROM \"s\" WHERE \"o'\" > CAST('it''s max' AS "
        "VARCHAR) "
        "AND hash(\"o'\") % 2 = 1 UNION ALL (SELECT * FROM \"s\" WHERE \"o'\" <= CAST('it''s max' AS "
        "VARCHAR) "
        "AND hash(\"o'\") % 2 = 1 EXCEPT ALL SELECT * FROM \"t\"\"\" WHERE \"o'\" >= CAST('it''s' AS "
        "VARCHAR) "
        "AND hash(\"o'\") % 2 = 1) UNION ALL (SELECT * FROM \"s\" WHERE \"o'\" IS NULL AND hash(\"o'\") % 2 "
        "= "
        "1 EXCEPT ALL SELECT * FROM \"t\"\"\" WHERE \"o'\" IS NULL AND hash(\"o'\") % 2 = 1)) AS _new_rows");
    /* Nothing stored past the start, no stored row without a value, staged
     * rows only above the maximum: nothing is compared. */
    shape = (store_overlap){.staged_nulls = 4};
    batch.start = NULL;
    assert_string_equal(tl_keep(store_batch_new_rows_sql(&batch)),
                        "(SELECT * FROM \"s\" WHERE \"o'\" IS NOT NULL UNION ALL SELECT * FROM \"s\" WHERE "
                        "\"o'\" IS NULL) AS _new_rows");
    shape = (store_overlap){.stored_rows = 1, .stored_max = "z", .stored_nulls = 5};
    assert_string_equal(tl_keep(store_batch_new_rows_sql(&batch)),
                        "(SELECT * FROM \"s\" WHERE \"o'\" > CAST('z' AS VARCHAR)) AS _new_rows");

    /* What measures it. */
    batch.start = "it's";
    batch.start_inclusive = false;
    assert_string_equal(
        tl_keep(store_overlap_stored_sql(&batch)),
        "SELECT count(*), max(\"o'\")::VARCHAR, TRY_CAST(max(\"o'\")::VARCHAR AS VARCHAR) = "
        "max(\"o'\"), (SELECT count(*) FROM \"t\"\"\" WHERE \"o'\" IS NULL), "
        "current_setting('memory_limit') FROM \"t\"\"\" WHERE \"o'\" > CAST('it''s' AS VARCHAR)");
    assert_string_equal(tl_keep(store_overlap_staged_sql(&batch, "a'")),
                        "SELECT count(*), count(*) FILTER (WHERE \"o'\" <= CAST('a''' AS VARCHAR)), count(*) "
                        "FILTER (WHERE \"o'\" IS NULL) FROM \"s\"");
    assert_string_equal(tl_keep(store_overlap_staged_sql(&batch, NULL)),
                        "SELECT count(*), count(*) FILTER (WHERE false), count(*) FILTER (WHERE \"o'\" IS "
                        "NULL) FROM \"s\"");
}

/* The stored rows of a merge scenario, then the staged ones. */
typedef struct merge_case {
    const char *stored, *staged;
} merge_case;

static const merge_case MEASURED_CASES[] = {
    /* Rows at, below and above the stored maximum, duplicates, NULLs. */
    {"(1, 'a', '2024-01-01', 'x'), (2, 'b', '2024-01-02', 'x'), (2, 'b', '2024-01-02', 'x'), "
     "(3, 'c', '2024-01-03', 'x'), (NULL, 'n', NULL, 'x'), (4, 'd', '2024-01-04', 'x')",
     "(1, 'a', '2024-01-01', 'x'), (2, 'b', '2024-01-02', 'x'), (2, 'b', '2024-01-02', 'x'), "
     "(2, 'b', '2024-01-02', 'x'), (3, 'c', '2024-01-03', 'y'), (3, 'c', '2024-01-05', 'z'), "
     "(NULL, 'n', NULL, 'x'), (NULL, 'n', NULL, 'x'), (NULL, 'n', '2024-01-06', 'w'), "
     "(4, 'd', '2024-01-04', 'x'), (5, 'e', '2024-01-07', 'x'), (5, 'e', '2024-01-07', 'x')"},
    /* Nothing stored past the start; stored rows without a value. */
    {"(1, 'a', '2023-01-01', 'x'), (9, 'n', NULL, 'x')",
     "(1, 'a', '2024-01-02', 'y'), (9, 'n', NULL, 'x'), (8, 'm', NULL, 'y'), (7, 'g', '2024-01-03', 'x')"},
    /* Nothing stored past the start nor without a value. */
    {"(1, 'a', '2023-01-01', 'x')", "(1, 'a', NULL, 'y'), (1, 'a', NULL, 'y'), (2, 'b', '2024-01-09', 'x')"},
    /* The stored maximum's key is updated (an upsert deletes it before it
     * inserts), a new key comes in below it. */
    {"(1, 'a', '2024-01-02', 'x'), (2, 'b', '2024-01-05', 'x')",
     "(2, 'b', '2024-01-06', 'y'), (3, 'c', '2024-01-04', 'x'), (1, 'a', '2024-01-02', 'x')"},
    {"(1, 'a', '2023-01-01', 'x'), (2, 'b', '2024-01-05', 'x')",
     "(2, 'b', '2024-01-06', 'y'), (3, 'c', '2024-01-04', 'x')"},
    /* Only rows stored already. */
    {"(1, 'a', '2024-01-02', 'x'), (2, 'b', '2024-01-05', 'x'), (3, 'n', NULL, 'x')",
     "(2, 'b', '2024-01-05', 'x'), (3, 'n', NULL, 'x')"},
};

/* Measured merges (whole, and in slices) store exactly the rows of the
 * unmeasured form, which compares every staged row, for upserts and plain
 * merges, inclusive, exclusive and from-the-beginning reads. */
static void test_measured_merge_matches_unmeasured(void **state)
{
    (void)state;
    char *key[] = {"c\"1\"", "'"};
    store_batch inclusive = {.table = MERGE_TABLE,
                             .staging_ref = MERGE_STAGING,
                             .order_col = "back\\slash",
                             .type = "TIMESTAMP",
                             .overlap = true,
                             .start = "2024-01-02",
                             .start_inclusive = true};
    store_batch upsert = upsert_batch(key);
    upsert.overlap = true;
    upsert.start = "2024-01-02";
    upsert.start_inclusive = true;
    store_batch exclusive = inclusive, beginning = inclusive;
    exclusive.start_inclusive = false;
    beginning.start = NULL;
    const store_batch *batches[] = {&inclusive, &upsert, &exclusive, &beginning};
    int64_t measured_below = 0, measured_direct = 0;
    for (size_t c = 0; c < sizeof MEASURED_CASES / sizeof MEASURED_CASES[0]; c++) {
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
            const store_batch *batch = batches[b];
            tl_duck_exec(g_con, "DROP TABLE IF EXISTS %s", tl_keep_ident(MERGE_TABLE));
            tl_duck_exec(g_con, "DROP TABLE IF EXISTS " MERGE_STAGING);
            create_merge_tables(MEASURED_CASES[c].stored, MEASURED_CASES[c].staged);
            tl_duck_exec(g_con, "CREATE TABLE stored_before AS SELECT * FROM %s", tl_keep_ident(MERGE_TABLE));
            run_merge(batch, batch->nkey > 0 ? 2 : 1);
            char *expected = rows_of("SELECT * FROM %s", tl_keep_ident(MERGE_TABLE));
            for (int64_t slices = 0; slices <= 3; slices++) {
                /* slices 0: store_merge itself, which measures. */
                tl_duck_exec(g_con, "DELETE FROM %s", tl_keep_ident(MERGE_TABLE));
                tl_duck_exec(g_con, "INSERT INTO %s SELECT * FROM stored_before", tl_keep_ident(MERGE_TABLE));
                store_overlap shape;
                ds_error err = {0};
                if (!store_measure_overlap(g_con, batch, &shape, &err))
                    fail_msg("store_measure_overlap: %s", err.msg);
                assert_true(store_overlap_usable(&shape));
                measured_below += shape.staged_below;
                measured_direct += shape.staged_rows - shape.staged_below - shape.staged_nulls;
                if (slices == 0) {
                    int64_t inserted, updated;
                    if (!store_merge(g_con, batch, &inserted, &updated, &err))
                        fail_msg("store_merge: %s", err.msg);
                } else {
                    store_batch measured = *batch;
                    measured.shape = &shape;
                    run_merge_sliced(&measured, slices);
                }
                store_overlap_free(&shape);
                char *got = rows_of("SELECT * FROM %s", tl_keep_ident(MERGE_TABLE));
                if (strcmp(got, expected) != 0)
                    fail_msg("case %zu, batch %zu, %lld slices:\n%s\nexpected:\n%s", c, b, (long long)slices,
                             got, expected);
            }
            tl_duck_exec(g_con, "DROP TABLE stored_before");
        }
    }
    /* Both kinds of staged row were met. */
    assert_true(measured_below > 0);
    assert_true(measured_direct > 0);
}

/* A maximum whose text does not cast back to it (here, on purpose, a
 * DOUBLE column merged as DECIMAL(2,0): 2.4 would read back as 2) is not
 * used: the merge compares every staged row and stores none twice. */
static void test_inexact_maximum_is_not_used(void **state)
{
    (void)state;
    tl_duck_exec(g_con, "CREATE TABLE t (o DOUBLE, v VARCHAR)");
    tl_duck_exec(g_con, "CREATE TABLE s (o DOUBLE, v VARCHAR)");
    tl_duck_exec(g_con, "INSERT INTO t VALUES (1.5, 'a'), (2.4, 'b')");
    tl_duck_exec(g_con, "INSERT INTO s VALUES (2.4, 'b'), (3.5, 'c')");
    store_batch batch = {.table = "t",
                         .staging_ref = "s",
                         .order_col = "o",
                         .type = "DECIMAL(2,0)",
                         .overlap = true,
                         .start = "2",
                         .start_inclusive = true};
    store_overlap shape;
    ds_error err = {0};
    assert_true(store_measure_overlap(g_con, &batch, &shape, &err));
    assert_int_equal(shape.stored_rows, 1);
    assert_null(shape.stored_max);
    assert_false(store_overlap_usable(&shape));
    store_overlap_free(&shape);
    int64_t inserted = -1, updated = -1;
    if (!store_merge(g_con, &batch, &inserted, &updated, &err))
        fail_msg("store_merge: %s", err.msg);
    assert_int_equal(inserted, 1);
    assert_string_equal(rows_of("SELECT * FROM t"), "1.5|a\n2.4|b\n3.5|c");
}

/* ---- watermark values -------------------------------------------------- */

static void test_max_sql(void **state)
{
    (void)state;
    assert_string_equal(tl_keep(store_max_sql("t\"", "c\"1\"", "DECIMAL(12,4)", NULL)),
                        "SELECT max(\"c\"\"1\"\"\")::VARCHAR FROM \"t\"\"\"");
    assert_string_equal(tl_keep(store_max_sql("t\"", "c\"1\"", "DECIMAL(12,4)", "it's")),
                        "SELECT max(\"c\"\"1\"\"\")::VARCHAR FROM \"t\"\"\" WHERE \"c\"\"1\"\"\" >= "
                        "CAST('it''s' AS DECIMAL(12,4))");

    /* A table named like one of its columns, whose column is named t too. */
    static const store_column cols[] = {{"t", "DECIMAL(12,4)"}, {"c\"1\"", "VARCHAR"}, {"'", "TIMESTAMPTZ"}};
    run_built(store_create_table_sql(tl_keep_ident("t"), cols, 3));
    for (size_t i = 0; i < 3; i++) {
        char *v = tl_duck_scalar(g_con, "%s", tl_keep(store_max_sql("t", cols[i].name, cols[i].type, NULL)));
        assert_null(v);
    }
    tl_duck_exec(g_con, "INSERT INTO t VALUES (1.5, 'it''s', '2024-01-01 00:00:00+00'), "
                        "(-2, 'z\\', '2024-06-01 12:00:00+02'), (NULL, NULL, NULL)");
    static const char *const want[][3] = {{"1.5000", "1.5", "-1"},
                                          {"z\\", "it's", "zz"},
                                          {"2024-06-01 10:00:00+00", "2024-06-01 10:00:00+00", "2025-01-01"}};
    for (size_t i = 0; i < 3; i++) {
        char *v = tl_duck_scalar(g_con, "%s", tl_keep(store_max_sql("t", cols[i].name, cols[i].type, NULL)));
        assert_string_equal(v, want[i][0]);
        free(v);
        /* With a floor the answer is the same, or NULL when nothing reaches it. */
        v = tl_duck_scalar(g_con, "%s", tl_keep(store_max_sql("t", cols[i].name, cols[i].type, want[i][1])));
        assert_string_equal(v, want[i][0]);
        free(v);
        v = tl_duck_scalar(g_con, "%s", tl_keep(store_max_sql("t", cols[i].name, cols[i].type, want[i][2])));
        if (i == 0) {
            assert_string_equal(v, want[i][0]);
        } else {
            assert_null(v);
            /* store_max_value then scans the whole table. */
            char *max = NULL;
            ds_error err = {0};
            assert_true(store_max_value(g_con, "t", cols[i].name, cols[i].type, want[i][2], &max, &err));
            assert_string_equal(max, want[i][0]);
            free(max);
        }
        free(v);
    }
}

static void test_minus_sql(void **state)
{
    (void)state;
    assert_string_equal(tl_keep(store_minus_sql("2024-01-01 00:00:00", "TIMESTAMP", "5 minutes", false)),
                        "SELECT least(CAST('2024-01-01 00:00:00' AS TIMESTAMP), (CAST('2024-01-01 00:00:00' "
                        "AS TIMESTAMP) - CAST('5 minutes' AS INTERVAL)))::VARCHAR");
    assert_string_equal(
        tl_keep(store_minus_sql("10", "DECIMAL(12,4)", "2.5", true)),
        "SELECT least(CAST('10' AS DECIMAL(12,4)), (CAST('10' AS DECIMAL(12,4)) - CAST('2.5' AS "
        "DECIMAL(38,10)))::DECIMAL(12,4))::VARCHAR");
    assert_string_equal(tl_keep(store_minus_sql("1.5", "DOUBLE", "0.5", true)),
                        "SELECT least(CAST('1.5' AS DOUBLE), (CAST('1.5' AS DOUBLE) - CAST('0.5' AS "
                        "DOUBLE))::DOUBLE)::VARCHAR");
    static const char *const cases[][5] = {
        /* value, type, lookback, number?, result */
        {"2024-01-01 00:00:00", "TIMESTAMP", "5 minutes", "", "2023-12-31 23:55:00"},
        {"2024-03-01 00:00:00+00", "TIMESTAMPTZ", "1 day 2 hours", "", "2024-02-28 22:00:00+00"},
        {"2024-03-01", "DATE", "1 hour", "", "2024-02-29 23:00:00"},
        {"100", "INTEGER", "10", "y", "90"},
        {"-9223372036854775708", "BIGINT", "100", "y", "-9223372036854775808"},
        {"10.5000", "DECIMAL(12,4)", "0.25", "y", "10.2500"},
        {"1.5", "DOUBLE", "0.5", "y", "1.0"},
        {"12:00:00", "TIME", "90 seconds", "", "11:58:30"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *v = tl_duck_scalar(
            g_con, "%s",
            tl_keep(store_minus_sql(cases[i][0], cases[i][1], cases[i][2], cases[i][3][0] != '\0')));
        assert_string_equal(v, cases[i][4]);
        free(v);
    }
}

/* ---- dataset_id uniqueness --------------------------------------------- */

/* The read start of a lookback is never past the watermark: a start above
 * it would skip the rows in between for good. */
static void test_minus_never_above_value(void **state)
{
    (void)state;
    /* Exact in the column's type, not through a DOUBLE (2^53). */
    char *v =
        tl_duck_scalar(g_con, "%s", tl_keep(store_minus_sql("1499999999999999990", "BIGINT", "100", true)));
    assert_string_equal(v, "1499999999999999890");
    free(v);
    v = tl_duck_scalar(g_con, "%s",
                       tl_keep(store_minus_sql("12345678901234569116", "DECIMAL(38,10)", "1", true)));
    assert_string_equal(v, "12345678901234569115.0000000000");
    free(v);
    /* A time of day does not wrap to the evening before. */
    v = tl_duck_scalar(g_con, "%s", tl_keep(store_minus_sql("00:02:00", "TIME", "5 minutes", false)));
    assert_int_equal(tl_duck_int(g_con, "SELECT CAST('%s' AS TIME) <= TIME '00:02:00'", v), 1);
    free(v);
}

/* store_value_at_least compares plain times without DuckDB: it must
 * answer as DuckDB does, for every pair of these (fractions of every
 * length, the same instant written two ways, month and year edges) and
 * for texts it leaves to DuckDB (far years, infinity, another zone). */
static void test_value_at_least_agrees_with_duckdb(void **state)
{
    (void)state;
    static const char *const times[] = {"2026-12-01 09:52:26",
                                        "2026-12-01 09:52:26.6",
                                        "2026-12-01 09:52:26.64528",
                                        "2026-12-01 09:52:26.645280",
                                        "2026-12-01 09:52:26.645281",
                                        "2026-12-01 09:52:27",
                                        "2026-11-30 23:59:59.999999",
                                        "2026-12-31 23:59:59.999999",
                                        "2027-01-01 00:00:00",
                                        "1999-02-28 12:00:00.5",
                                        "0001-01-01 00:00:00",
                                        "20000-01-01 00:00:00",
                                        "infinity",
                                        "-infinity"};
    static const char *const types[] = {"TIMESTAMP", "TIMESTAMPTZ"};
    size_t n = sizeof times / sizeof times[0];
    for (size_t t = 0; t < 2; t++) {
        for (size_t i = 0; i < n; i++) {
            for (size_t j = 0; j < n; j++) {
                char a[64], b[64];
                bool tz = t == 1, special_a = strchr(times[i], ' ') == NULL,
                     special_b = strchr(times[j], ' ') == NULL;
                snprintf(a, sizeof a, "%s%s", times[i], tz && !special_a ? "+00" : "");
                snprintf(b, sizeof b, "%s%s", times[j], tz && !special_b ? "+00" : "");
                bool got = !(i == j);
                ds_error err = {0};
                if (!store_value_at_least(g_con, a, b, types[t], &got, &err))
                    fail_msg("%s >= %s: %s", a, b, err.msg);
                int64_t want = tl_duck_int(g_con, "SELECT CAST('%s' AS %s) >= CAST('%s' AS %s)", a, types[t],
                                           b, types[t]);
                if (got != (want == 1))
                    fail_msg("%s >= %s (%s): %d, DuckDB says %d", a, b, types[t], got, (int)want);
            }
        }
    }
    /* Another zone's offset is DuckDB's to read. */
    bool got = true;
    ds_error err = {0};
    assert_true(store_value_at_least(g_con, "2026-12-01 10:00:00+02", "2026-12-01 09:00:00+00", "TIMESTAMPTZ",
                                     &got, &err));
    assert_false(got);
}

static bool ids_unique(const char *staging_ref, const char *table, int64_t slices)
{
    bool unique = true;
    for (int64_t i = 0; unique && i < slices; i++) {
        char *v =
            tl_duck_scalar(g_con, "%s", tl_keep(store_duplicate_ids_sql(staging_ref, table, slices, i)));
        assert_non_null(v);
        unique = strcmp(v, "true") == 0;
        free(v);
    }
    return unique;
}

static void test_duplicate_ids_sql(void **state)
{
    (void)state;
    assert_string_equal(tl_keep(store_duplicate_ids_sql("memory.main.\"s\"\"'\"", NULL, 1, 0)),
                        "SELECT count(*) = 0 FROM (SELECT dataset_id FROM memory.main.\"s\"\"'\" WHERE true "
                        "GROUP BY dataset_id HAVING count(*) > 1)");
    assert_string_equal(
        tl_keep(store_duplicate_ids_sql("\"s\"", "it's \"t\"", 3, 2)),
        "SELECT count(*) = 0 FROM (SELECT dataset_id FROM (SELECT dataset_id FROM \"s\" WHERE "
        "hash(dataset_id) % 3 = 2 UNION ALL SELECT dataset_id FROM \"it's \"\"t\"\"\" WHERE "
        "hash(dataset_id) % 3 = 2 AND dataset_id IN (SELECT dataset_id FROM \"s\" WHERE "
        "hash(dataset_id) % 3 = 2)) GROUP BY dataset_id HAVING count(*) > 1)");

    static const store_column cols[] = {{"c\"1\"", "VARCHAR"}, {"dataset_id", "VARCHAR"}};
    const char *staging = STORE_SCRATCH_CATALOG ".main.\"s\"\"'\"", *table = "it's \"t\"";
    run_built(store_create_table_sql(staging, cols, 2));
    run_built(store_create_table_sql(tl_keep_ident(table), cols, 2));
    tl_duck_exec(g_con, "INSERT INTO %s SELECT 'x', 'id-' || i FROM range(100) AS r(i)", staging);
    tl_duck_exec(g_con, "INSERT INTO %s VALUES ('y', 'stored-1'), ('y', 'stored-1')", tl_keep_ident(table));
    for (int64_t slices = 1; slices <= 7; slices += 3) {
        assert_true(ids_unique(staging, NULL, slices));
        /* The stored duplicate is not among the staged ids. */
        assert_true(ids_unique(staging, table, slices));
    }
    tl_duck_exec(g_con, "INSERT INTO %s VALUES ('y', 'id-42')", tl_keep_ident(table));
    for (int64_t slices = 1; slices <= 7; slices += 3) {
        assert_true(ids_unique(staging, NULL, slices));
        assert_false(ids_unique(staging, table, slices));
    }
    /* The duplicate is in exactly one slice. */
    int found = 0;
    for (int64_t i = 0; i < 5; i++) {
        char *v = tl_duck_scalar(g_con, "%s", tl_keep(store_duplicate_ids_sql(staging, table, 5, i)));
        found += strcmp(v, "false") == 0;
        free(v);
    }
    assert_int_equal(found, 1);
    tl_duck_exec(g_con, "INSERT INTO %s VALUES ('z', 'id-7')", staging);
    for (int64_t slices = 1; slices <= 7; slices += 3)
        assert_false(ids_unique(staging, NULL, slices));
}

#define T(f) cmocka_unit_test_setup_teardown(f, duck_setup, duck_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_typed_literal),
        T(test_create_table_sql_text),
        T(test_create_table_hostile_names),
        T(test_create_table_1600_columns),
        T(test_view_sql_text),
        T(test_view_hostile_names),
        T(test_view_names_unique_to_duckdb),
        T(test_view_join_sql_text),
        T(test_view_join_rows),
        T(test_view_definition),
        T(test_join_mismatch),
        T(test_merge_sql_text),
        T(test_merge_upsert),
        T(test_merge_counts),
        T(test_merge_overlap),
        T(test_merge_append),
        T(test_merge_slice_sql_text),
        T(test_merge_slices),
        T(test_merge_in_slices_matches_whole),
        T(test_measured_merge_sql_text),
        T(test_measured_merge_matches_unmeasured),
        T(test_inexact_maximum_is_not_used),
        T(test_max_sql),
        T(test_minus_sql),
        T(test_minus_never_above_value),
        T(test_duplicate_ids_sql),
        T(test_value_at_least_agrees_with_duckdb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
