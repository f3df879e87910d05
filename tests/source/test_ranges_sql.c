/* The PostgreSQL statements of source/ranges.h and source/horizon.h on
 * columns with hostile names (quotes, backslashes, 63-byte and unicode
 * names, SQL words, 1,600 columns): the exact text for small cases, and
 * each statement run on the harness PostgreSQL: partition bounds in the
 * column's own type (int, date, timestamps with ±infinity, numeric), range
 * conditions that put every row in exactly one range, incremental read
 * conditions, and the commit horizon. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/strbuf.h"
#include "source/horizon.h"
#include "source/pgsrc.h"
#include "source/ranges.h"

static char *g_conninfo;
static PGconn *g_pg;
static pgsrc_conn g_src;

/* 63 bytes, the longest name PostgreSQL keeps: quotes, backslashes, a dot. */
static const char NAME63[] =
    "\"q\"\"uo'te''d\\ba\\\\ck.sl\xc3\xa9sh\" \"'\\'\"'\\\"\"\"''...''\\\\\"\"\"end of 63 B.\"";

/* The test table: a hostile name, hostile column names, 1,000 rows. */
#define TABLE "it's \"ranges\""
static const char *const COLS[][2] = {
    {"c\"1\"", "integer"},                /* 1..999, every 100th NULL */
    {"'", "bigint"},                      /* both extremes */
    {"back\\slash", "date"},              /* 2024-01-02.. */
    {"\xc3\xa9 名前", "timestamp"},       /* ±infinity, a NULL */
    {NAME63, "timestamp with time zone"}, /* ±infinity */
    {"select", "numeric(12,4)"},          /* -49.875..75 */
    {"order", "numeric"},                 /* 1.5..1500 */
    {"?column?", "smallint"},             /* -150..149 */
    {" ", "text"},                        /* incremental reads */
};
#define NCOLS (sizeof COLS / sizeof COLS[0])

static int free_kept(void **state)
{
    (void)state;
    tl_free_kept();
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("ranges_sql"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg, "SET TimeZone = 'UTC'");
    ds_buf create = DS_BUF_INIT;
    ds_buf_append(&create, "CREATE TABLE ");
    ds_buf_append_ident(&create, TABLE);
    for (size_t i = 0; i < NCOLS; i++) {
        ds_buf_append(&create, i ? ", " : " (");
        ds_buf_append_ident(&create, COLS[i][0]);
        ds_buf_appendf(&create, " %s", COLS[i][1]);
    }
    ds_buf_append(&create, ")");
    tl_pg_exec(g_pg, "%s", ds_buf_str(&create));
    ds_buf_free(&create);
    char *table = ds_quote_ident(TABLE);
    tl_pg_exec(g_pg,
               "INSERT INTO %s SELECT "
               "CASE WHEN i %% 100 = 0 THEN NULL ELSE i END, "
               "CASE i WHEN 1 THEN -9223372036854775808 WHEN 2 THEN 9223372036854775807 ELSE i * 1000 END, "
               "'2024-01-01'::date + i, "
               "CASE i WHEN 1 THEN '-infinity' WHEN 2 THEN 'infinity' WHEN 3 THEN NULL "
               "ELSE '2024-01-01'::timestamp + i * interval '1 hour' END, "
               "CASE i WHEN 4 THEN '-infinity' WHEN 5 THEN 'infinity' "
               "ELSE '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 minute' END, "
               "i / 8.0 - 50, i * 1.5, i %% 300 - 150, "
               "CASE i %% 4 WHEN 0 THEN 'a''b\\c' || i WHEN 1 THEN '\xc3\xa9' || i ELSE 'z\"' || i END "
               "FROM generate_series(1, 1000) AS i",
               table);
    free(table);
    ds_error err = {0};
    if (!pgsrc_connect(g_conninfo, 60, &g_src, &err)) {
        fprintf(stderr, "pgsrc_connect: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pgsrc_disconnect(&g_src);
    PQfinish(g_pg);
    free(g_conninfo);
    return 0;
}

/* The query a source would run, and its description. */
static const char *table_query(void)
{
    return tl_keepf("SELECT * FROM %s;\n", tl_keep_ident(TABLE));
}

static void describe(const char *query, pgsrc_desc *desc)
{
    ds_error err = {0};
    if (!pgsrc_describe(&g_src, query, desc, &err))
        fail_msg("pgsrc_describe: %s", err.msg);
}

/* pgsrc_plan_ranges, failing the test with its message. */
static void plan(const char *query, const pgsrc_column *col, int ranges, pgsrc_ranges *r)
{
    ds_error err = {0};
    if (!pgsrc_plan_ranges(&g_src, query, col, ranges, r, &err))
        fail_msg("pgsrc_plan_ranges(%s): %s", col->name, err.msg);
}

/* The rows of a query, first column, joined by ','. */
static char *column_text(const char *sql)
{
    PGresult *res = PQexec(g_pg, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("PostgreSQL error: %s\nSQL: %s", PQerrorMessage(g_pg), sql);
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "");
    for (int r = 0; r < PQntuples(res); r++) {
        if (r > 0)
            ds_buf_appendc(&b, ',');
        ds_buf_append(&b, PQgetisnull(res, r, 0) ? "NULL" : PQgetvalue(res, r, 0));
    }
    PQclear(res);
    return tl_keep(ds_buf_take(&b));
}

/* ---- the text of each statement ---------------------------------------- */

static void test_range_and_since_sql_text(void **state)
{
    (void)state;
    assert_string_equal(tl_keep(pgsrc_range_sql("c\"1\"", "'5'::integer", NULL)),
                        "\"c\"\"1\"\"\" >= '5'::integer");
    assert_string_equal(tl_keep(pgsrc_range_sql("c\"1\"", NULL, "'5'::integer")),
                        "\"c\"\"1\"\"\" < '5'::integer");
    assert_string_equal(tl_keep(pgsrc_range_sql("'", "'1'::date", "'2'::date")),
                        "\"'\" >= '1'::date AND \"'\" < '2'::date");
    assert_string_equal(tl_keep(pgsrc_range_sql("back\\slash", NULL, NULL)), "\"back\\slash\" IS NOT NULL");
    pgsrc_column ts = {.name = "it's \"x\"", .pg_type = "timestamp with time zone"};
    ts.type.kind = PGSRC_TIMESTAMPTZ;
    assert_string_equal(
        tl_keep(pgsrc_since_sql(&ts, "'a''b'", false)),
        "(\"it's \"\"x\"\"\" > 'a''b'::timestamp with time zone OR \"it's \"\"x\"\"\" IS NULL)");
    pgsrc_column text = {.name = "\\", .pg_type = "text"};
    text.type.kind = PGSRC_TEXT;
    assert_string_equal(tl_keep(pgsrc_since_sql(&text, " E'a\\\\b'", true)),
                        "(\"\\\" COLLATE \"C\" >=  E'a\\\\b'::text OR \"\\\" IS NULL)");
}

static void test_bounds_sql_text(void **state)
{
    (void)state;
    pgsrc_column col = {.name = "c\"1\"", .pg_type = "integer", .type = {.kind = PGSRC_INT4}};
    assert_string_equal(
        tl_keep(pgsrc_bounds_sql("SELECT * FROM t; \n;", &col, 4)),
        "WITH b AS (SELECT min(\"c\"\"1\"\"\") AS lo, max(\"c\"\"1\"\"\") AS hi FROM (SELECT * FROM t\n) AS "
        "_p) "
        "SELECT bound::text AS bound_text FROM (SELECT DISTINCT ((lo::numeric + (hi::numeric - lo::numeric) "
        "* i "
        "/ 4))::integer AS bound FROM b, generate_series(1, 3) AS i WHERE lo IS NOT NULL) AS bounds ORDER BY "
        "bound");
    col = (pgsrc_column){.name = "'", .pg_type = "date", .type = {.kind = PGSRC_DATE}};
    assert_string_equal(
        tl_keep(pgsrc_bounds_sql("SELECT 1 -- c", &col, 3)),
        "WITH b AS (SELECT min(\"'\") AS lo, max(\"'\") AS hi FROM (SELECT 1 -- c\n) AS _p WHERE "
        "isfinite(\"'\")) SELECT bound::text AS bound_text FROM (SELECT DISTINCT (lo + ((hi - "
        "lo)::int8 * i / 3)::int4)::date AS bound FROM b, generate_series(1, 2) AS i WHERE lo IS NOT NULL) "
        "AS bounds ORDER BY bound");
    col = (pgsrc_column){
        .name = "\\", .pg_type = "timestamp with time zone", .type = {.kind = PGSRC_TIMESTAMPTZ}};
    assert_string_equal(
        tl_keep(pgsrc_bounds_sql("q", &col, 2)),
        "WITH b AS (SELECT min(\"\\\") AS lo, max(\"\\\") AS hi FROM (q\n) AS _p WHERE "
        "isfinite(\"\\\")) SELECT bound::text AS bound_text FROM (SELECT DISTINCT (lo + (hi - "
        "lo) * (i::float8 / 2))::timestamp with time zone AS bound FROM b, generate_series(1, "
        "1) AS i WHERE lo IS NOT NULL) AS bounds ORDER BY bound");
}

/* ---- partitions -------------------------------------------------------- */

/* How many rows of the query each condition selects; fails unless every
 * row is selected by exactly one. */
static void check_partition(const char *query, const pgsrc_ranges *r, int64_t rows, int64_t *counts)
{
    char *trimmed = tl_keep(pgsrc_trim_query(query));
    ds_buf sum = DS_BUF_INIT;
    for (size_t i = 0; i < r->n; i++)
        ds_buf_appendf(&sum, "%scoalesce((%s)::int, 0)", i ? " + " : "", r->conditions[i]);
    char *total = tl_keep(ds_buf_take(&sum));
    assert_int_equal(tl_pg_int(g_pg, "SELECT count(*) FROM (%s\n) AS _p", trimmed), rows);
    int64_t wrong = tl_pg_int(g_pg, "SELECT count(*) FROM (%s\n) AS _p WHERE %s <> 1", trimmed, total);
    if (wrong != 0)
        fail_msg("%lld rows are not in exactly one range of: %s", (long long)wrong, total);
    for (size_t i = 0; i < r->n; i++)
        counts[i] = tl_pg_int(g_pg, "SELECT count(*) FROM (%s\n) AS _p WHERE %s", trimmed, r->conditions[i]);
}

/* Bounds and ranges of one column of the test table, with 4 ranges asked. */
typedef struct partition_case {
    const char *column;
    const char *bounds; /* what the bounds query returns */
    int64_t counts[8];  /* rows per range, the IS NULL one last, then -1 */
} partition_case;

static void check_column_partition(const partition_case *c)
{
    const char *query = table_query();
    pgsrc_desc desc;
    describe(query, &desc);
    int idx = pgsrc_desc_find(&desc, c->column);
    assert_true(idx >= 0);
    const pgsrc_column *col = &desc.cols[idx];
    assert_string_equal(column_text(tl_keep(pgsrc_bounds_sql(query, col, 4))), c->bounds);

    pgsrc_ranges r;
    plan(query, col, 4, &r);
    int64_t counts[8] = {0};
    assert_true(r.n <= 8);
    check_partition(query, &r, 1000, counts);
    for (size_t i = 0; i < r.n; i++)
        if (counts[i] != c->counts[i])
            fail_msg("%s: range %zu (%s) has %lld rows, expected %lld", c->column, i, r.conditions[i],
                     (long long)counts[i], (long long)c->counts[i]);
    assert_int_equal(c->counts[r.n], -1);
    assert_string_equal(r.conditions[r.n - 1], tl_keepf("%s IS NULL", tl_keep_ident(c->column)));
    pgsrc_ranges_free(&r);
    pgsrc_desc_free(&desc);
}

static void test_partition_int(void **state)
{
    (void)state;
    /* 1..999 without the multiples of 100: bounds at a quarter, a half and
     * three quarters of [1, 999], rounded. */
    partition_case c = {"c\"1\"", "251,500,750", {248, 247, 247, 248, 10, -1}};
    check_column_partition(&c);
    /* The whole bigint range: no overflow on the way. */
    partition_case big = {"'", "-4611686018427387904,0,4611686018427387903", {1, 0, 998, 1, 0, -1}};
    check_column_partition(&big);
    partition_case small = {"?column?", "-75,-1,74", {299, 248, 225, 228, 0, -1}};
    check_column_partition(&small);
}

static void test_partition_date(void **state)
{
    (void)state;
    partition_case c = {"back\\slash", "2024-09-07,2025-05-15,2026-01-20", {249, 250, 250, 251, 0, -1}};
    check_column_partition(&c);
}

/* ±infinity are left out of the span and land in the open first and last
 * ranges. */
static void test_partition_timestamps(void **state)
{
    (void)state;
    partition_case ts = {"\xc3\xa9 名前",
                         "2024-01-11 13:00:00,2024-01-21 22:00:00,2024-02-01 07:00:00",
                         {250, 249, 249, 251, 1, -1}};
    check_column_partition(&ts);
    partition_case tz = {NAME63,
                         "2024-01-01 04:10:45+00,2024-01-01 08:20:30+00,2024-01-01 12:30:15+00",
                         {249, 250, 250, 251, 0, -1}};
    check_column_partition(&tz);
    /* -infinity in the first range, infinity in the last before NULL. */
    const char *cols[] = {"\xc3\xa9 名前", NAME63};
    for (size_t i = 0; i < 2; i++) {
        pgsrc_desc desc;
        describe(table_query(), &desc);
        pgsrc_ranges r;
        plan(table_query(), &desc.cols[pgsrc_desc_find(&desc, cols[i])], 4, &r);
        assert_int_equal(r.n, 5);
        const char *c = tl_keep_ident(cols[i]);
        assert_string_equal(column_text(tl_keepf("SELECT %s::text FROM %s WHERE %s AND NOT isfinite(%s)", c,
                                                 tl_keep_ident(TABLE), r.conditions[0], c)),
                            "-infinity");
        assert_string_equal(column_text(tl_keepf("SELECT %s::text FROM %s WHERE %s AND NOT isfinite(%s)", c,
                                                 tl_keep_ident(TABLE), r.conditions[3], c)),
                            "infinity");
        pgsrc_ranges_free(&r);
        pgsrc_desc_free(&desc);
    }
}

static void test_partition_numeric(void **state)
{
    (void)state;
    partition_case dec = {"select",
                          "-18.6562500000000000,12.5625000000000000,43.7812500000000000",
                          {250, 250, 250, 250, 0, -1}};
    check_column_partition(&dec);
    partition_case num = {"order",
                          "376.1250000000000000,750.7500000000000000,1125.3750000000000000",
                          {250, 250, 250, 250, 0, -1}};
    check_column_partition(&num);

    /* NaN and ±Infinity (numeric sorts NaN above Infinity) still fall in
     * exactly one range each. */
    const char *query = tl_keepf(
        "SELECT %s FROM %s UNION ALL SELECT v::numeric FROM unnest(ARRAY['NaN', 'Infinity', '-Infinity', "
        "'NaN']) AS v",
        tl_keep_ident("order"), tl_keep_ident(TABLE));
    pgsrc_desc desc;
    describe(query, &desc);
    pgsrc_ranges r;
    plan(query, &desc.cols[0], 4, &r);
    int64_t counts[8];
    assert_true(r.n <= 8);
    check_partition(query, &r, 1004, counts);
    pgsrc_ranges_free(&r);
    pgsrc_desc_free(&desc);
}

/* Dates as far apart as PostgreSQL allows: the span in days times the
 * range number must not overflow an integer. */
static void test_partition_date_extremes(void **state)
{
    (void)state;
    const char *query =
        tl_keepf("SELECT * FROM (VALUES ('4713-01-01 BC'::date), ('5874897-12-31'), ('2024-02-29'), "
                 "('infinity'), (NULL)) AS v(%s)",
                 tl_keep_ident("back\\slash"));
    pgsrc_desc desc;
    describe(query, &desc);
    assert_string_equal(column_text(tl_keep(pgsrc_bounds_sql(query, &desc.cols[0], 4))),
                        "1465190-07-02,2935092-12-31,4404995-07-02");
    pgsrc_ranges r;
    plan(query, &desc.cols[0], 4, &r);
    int64_t counts[8];
    assert_int_equal(r.n, 5);
    check_partition(query, &r, 5, counts);
    pgsrc_ranges_free(&r);
    pgsrc_desc_free(&desc);
}

/* No rows, or only NULLs: one range for the values, one for NULL. */
static void test_partition_empty(void **state)
{
    (void)state;
    const char *query = tl_keepf("SELECT %s FROM %s WHERE %s IS NULL", tl_keep_ident("c\"1\""),
                                 tl_keep_ident(TABLE), tl_keep_ident("c\"1\""));
    pgsrc_desc desc;
    describe(query, &desc);
    assert_string_equal(column_text(tl_keep(pgsrc_bounds_sql(query, &desc.cols[0], 4))), "");
    pgsrc_ranges r;
    plan(query, &desc.cols[0], 4, &r);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.conditions[0], "\"c\"\"1\"\"\" IS NOT NULL");
    int64_t counts[2];
    check_partition(query, &r, 10, counts);
    assert_int_equal(counts[0], 0);
    assert_int_equal(counts[1], 10);
    pgsrc_ranges_free(&r);
    pgsrc_desc_free(&desc);
}

/* A query of 1,600 columns, each a 63-byte hostile name, partitioned on the
 * last one. */
static void test_partition_1600_columns(void **state)
{
    (void)state;
    ds_buf create = DS_BUF_INIT, insert = DS_BUF_INIT;
    char names[1600][64];
    ds_buf_append(&create, "CREATE TABLE ");
    ds_buf_append_ident(&create, NAME63);
    ds_buf_append(&insert, "INSERT INTO ");
    ds_buf_append_ident(&insert, NAME63);
    for (int i = 0; i < 1600; i++) {
        snprintf(names[i], sizeof names[i], "%04d%.59s", i, NAME63);
        ds_buf_append(&create, i ? ", " : " (");
        ds_buf_append_ident(&create, names[i]);
        ds_buf_append(&create, " int");
    }
    ds_buf_append(&create, ")");
    ds_buf_append(&insert, " (");
    ds_buf_append_ident(&insert, names[0]);
    ds_buf_append(&insert, ", ");
    ds_buf_append_ident(&insert, names[1599]);
    ds_buf_append(&insert, ") SELECT i, i FROM generate_series(0, 99) AS i");
    tl_pg_exec(g_pg, "%s", ds_buf_str(&create));
    tl_pg_exec(g_pg, "%s", ds_buf_str(&insert));
    ds_buf_free(&create);
    ds_buf_free(&insert);

    const char *query = tl_keepf("SELECT * FROM %s", tl_keep_ident(NAME63));
    pgsrc_desc desc;
    describe(query, &desc);
    assert_int_equal(desc.ncols, 1600);
    assert_int_equal(strlen(desc.cols[1599].name), 63);
    assert_string_equal(desc.cols[1599].name, names[1599]);
    assert_string_equal(column_text(tl_keep(pgsrc_bounds_sql(query, &desc.cols[1599], 5))), "20,40,59,79");
    pgsrc_ranges r;
    plan(query, &desc.cols[1599], 5, &r);
    int64_t counts[6];
    assert_int_equal(r.n, 6);
    check_partition(query, &r, 100, counts);
    static const int64_t want[6] = {20, 20, 19, 20, 21, 0};
    for (int i = 0; i < 6; i++)
        assert_int_equal(counts[i], want[i]);
    pgsrc_ranges_free(&r);
    pgsrc_desc_free(&desc);
}

/* ---- incremental reads ------------------------------------------------- */

/* Rows the incremental condition on a column selects, with the watermark
 * quoted the way a sync quotes it (libpq, E'' with backslashes). */
static int64_t rows_since(const char *column, const char *watermark, bool inclusive)
{
    const char *query = table_query();
    pgsrc_desc desc;
    describe(query, &desc);
    int idx = pgsrc_desc_find(&desc, column);
    assert_true(idx >= 0);
    char *lit = tl_keep(pgsrc_quote_literal(&g_src, watermark));
    char *cond = tl_keep(pgsrc_since_sql(&desc.cols[idx], lit, inclusive));
    pgsrc_desc_free(&desc);
    char *ident = tl_keep(ds_quote_ident(column));
    const char *trimmed = tl_keep(pgsrc_trim_query(query));
    /* Rows without a value are read every time: counted apart. */
    int64_t nulls = tl_pg_int(g_pg, "SELECT count(*) FROM (%s) AS _p WHERE %s IS NULL", trimmed, ident);
    return tl_pg_int(g_pg, "SELECT count(*) FROM (%s) AS _p WHERE %s", trimmed, cond) - nulls;
}

static void test_since_sql(void **state)
{
    (void)state;
    /* ' 3000 ... 1000000 and both extremes. */
    assert_int_equal(rows_since("'", "500000", false), 501);
    assert_int_equal(rows_since("'", "500000", true), 502);
    assert_int_equal(rows_since("c\"1\"", "990", true), 10);
    assert_int_equal(tl_pg_int(g_pg, "SELECT count(*) FROM (%s) AS _p WHERE \"c\"\"1\"\"\" IS NULL",
                               tl_keep(pgsrc_trim_query(table_query()))),
                     10);
    assert_int_equal(rows_since("back\\slash", "2026-09-27", false), 0);
    assert_int_equal(rows_since("back\\slash", "2026-09-26", true), 2);
    assert_int_equal(rows_since(NAME63, "2024-01-01 16:39:00+00", true), 3);
    assert_int_equal(rows_since(NAME63, "2024-01-01 18:39:00+02", false), 2);
    assert_int_equal(rows_since("select", "74.875", false), 1);
    /* Text watermarks with quotes and backslashes (all é... and z"... rows
     * sort after a'b\c...). */
    assert_int_equal(rows_since(" ", "a'b\\c996", false), 750);
    assert_int_equal(rows_since(" ", "a'b\\c996", true), 751);
    assert_int_equal(rows_since(" ", "z\"999", true), 251);
    assert_int_equal(rows_since(" ", "\xc3\xa9", false), 250);
}

/* ---- the commit horizon ------------------------------------------------ */

/* The horizon query's one row: value, holder, sees_all. */
static void horizon_row(PGconn *conn, bool with_time_zone, char **value, char **holder, char **sees_all)
{
    char *sql = tl_keep(pgsrc_horizon_sql(with_time_zone, false));
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("PostgreSQL error: %s\nSQL: %s", PQerrorMessage(conn), sql);
    assert_int_equal(PQntuples(res), 1);
    assert_int_equal(PQnfields(res), 4);
    assert_false(PQgetisnull(res, 0, 0));
    *value = tl_keep(strdup(PQgetvalue(res, 0, 0)));
    *holder = PQgetisnull(res, 0, 1) ? NULL : tl_keep(strdup(PQgetvalue(res, 0, 1)));
    *sees_all = tl_keep(strdup(PQgetvalue(res, 0, 2)));
    PQclear(res);
}

static void test_horizon_sql(void **state)
{
    (void)state;
    PGconn *conn = tl_pg_connect(g_conninfo);
    tl_pg_exec(conn, "SET TimeZone = 'America/New_York'");
    char *value, *holder, *sees_all;

    /* Nothing open: now, in UTC with +00, or in the session's zone. */
    horizon_row(conn, true, &value, &holder, &sees_all);
    assert_null(holder);
    assert_string_equal(sees_all, "t");
    assert_int_equal(strlen(value), strlen("2024-01-01 00:00:00.000000+00"));
    assert_string_equal(value + strlen(value) - 3, "+00");
    assert_int_equal(
        tl_pg_int(conn, "SELECT (abs(extract(epoch FROM now() - '%s'::timestamptz)) < 60)::int", value), 1);
    horizon_row(conn, false, &value, &holder, &sees_all);
    assert_int_equal(strlen(value), strlen("2024-01-01 00:00:00.000000"));
    assert_int_equal(tl_pg_int(conn,
                               "SELECT (abs(extract(epoch FROM localtimestamp - '%s'::timestamp)) < 60)::int",
                               value),
                     1);

    /* A transaction left open by another client holds it back; duckstore's
     * own sessions do not. */
    PGconn *holder_conn = tl_pg_connect(tl_keepf("%s application_name='holder\\'s \\\\app'", g_conninfo));
    PGconn *own = tl_pg_connect(tl_keepf("%s application_name=duckstore", g_conninfo));
    tl_pg_exec(own, "BEGIN");
    tl_pg_exec(own, "SELECT 1");
    usleep(20000);
    tl_pg_exec(holder_conn, "BEGIN");
    tl_pg_exec(holder_conn, "SELECT 1");
    char *pid = tl_keep(tl_pg_scalar(holder_conn, "SELECT pg_backend_pid()"));
    char *start_utc = tl_keep(tl_pg_scalar(
        holder_conn, "SELECT to_char(xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM "
                     "pg_stat_activity WHERE pid = pg_backend_pid()"));
    char *start_ny = tl_keep(tl_pg_scalar(
        holder_conn, "SELECT to_char(xact_start AT TIME ZONE 'America/New_York', 'YYYY-MM-DD HH24:MI:SS.US') "
                     "FROM pg_stat_activity WHERE pid = pg_backend_pid()"));
    /* The holder's transaction must have started before this one's now(). */
    for (int tries = 0; tries < 100; tries++) {
        horizon_row(conn, true, &value, &holder, &sees_all);
        if (holder != NULL)
            break;
        usleep(10000);
    }
    assert_string_equal(value, tl_keepf("%s+00", start_utc));
    assert_non_null(holder);
    tl_assert_contains(holder,
                       tl_keepf("pid %s (user postgres, application holder's \\app) in a transaction open "
                                "since %.10sT%.8s+00:00",
                                pid, start_utc, start_utc + 11));
    horizon_row(conn, false, &value, &holder, &sees_all);
    assert_string_equal(value, start_ny);
    tl_pg_exec(holder_conn, "COMMIT");
    horizon_row(conn, true, &value, &holder, &sees_all);
    assert_null(holder);
    tl_pg_exec(own, "COMMIT");
    PQfinish(own);
    PQfinish(holder_conn);
    PQfinish(conn);
}

#define T(f) cmocka_unit_test_teardown(f, free_kept)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_range_and_since_sql_text),
        T(test_bounds_sql_text),
        T(test_partition_int),
        T(test_partition_date),
        T(test_partition_date_extremes),
        T(test_partition_timestamps),
        T(test_partition_numeric),
        T(test_partition_empty),
        T(test_partition_1600_columns),
        T(test_since_sql),
        T(test_horizon_sql),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
