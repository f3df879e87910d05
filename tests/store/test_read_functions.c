/* The readers' date_trunc (store/read_functions.h) on a real store file:
 * in a UTC session it takes the plain-TIMESTAMP path (seen in the plan) and
 * equals DuckDB's ICU function on every value, BC dates, infinities and
 * NULL included, for every unit it claims; PostgreSQL's date_trunc gives
 * the same instants; other zones, units and argument types get DuckDB's own
 * function, values, types and errors. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/read_functions.h"

static char *g_dir;
static store *g_st;
static duckdb_connection g_con;

/* Units of the fast path in UTC, as the readers' macro lists them. */
static const char *const fast_units[] = {"microseconds",
                                         "microsecond",
                                         "us",
                                         "usec",
                                         "usecs",
                                         "milliseconds",
                                         "millisecond",
                                         "ms",
                                         "msec",
                                         "msecs",
                                         "second",
                                         "seconds",
                                         "sec",
                                         "secs",
                                         "s",
                                         "minute",
                                         "minutes",
                                         "min",
                                         "mins",
                                         "m",
                                         "hour",
                                         "hours",
                                         "hr",
                                         "hrs",
                                         "h",
                                         "day",
                                         "days",
                                         "d",
                                         "week",
                                         "weeks",
                                         "w",
                                         "month",
                                         "months",
                                         "mon",
                                         "mons",
                                         "quarter",
                                         "quarters",
                                         "year",
                                         "years",
                                         "yr",
                                         "yrs",
                                         "y",
                                         "isoyear"};

static int setup(void **state)
{
    (void)state;
    g_dir = tl_mkdtemp();
    char path[600];
    snprintf(path, sizeof path, "%s/store.duckdb", g_dir);
    ds_error err;
    if (!store_open(path, &g_st, &err))
        fail_msg("%s", err.msg);
    g_con = tl_store_connect(g_st);
    if (!store_read_functions_use(g_con, &err))
        fail_msg("%s", err.msg);
    /* 400k instants from 283230 BC to 287168 AD, then edge values. */
    tl_duck_exec(g_con,
                 "CREATE TABLE v AS SELECT make_timestamptz(((hash(i) %% 18000000000000000000)::HUGEINT - "
                 "9000000000000000000)::BIGINT) AS ts FROM range(300000) r(i) UNION ALL "
                 "SELECT make_timestamptz(((hash(i) %% 200000000000000000)::HUGEINT - "
                 "100000000000000000)::BIGINT) FROM range(100000) r(i) UNION ALL SELECT * FROM (VALUES "
                 "(TIMESTAMPTZ 'infinity'), (TIMESTAMPTZ '-infinity'), (NULL), "
                 "(TIMESTAMPTZ '0001-01-01 00:00:00+00'), (TIMESTAMPTZ '2000-02-29 23:59:59.999999+00'), "
                 "(TIMESTAMPTZ '1969-12-31 23:59:59.999999+00'), (TIMESTAMPTZ '2024-03-10 07:00:00+00'))");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    duckdb_disconnect(&g_con);
    store_close(g_st);
    tl_rmtree(g_dir);
    free(g_dir);
    tl_free_kept();
    return 0;
}

static char *plan_of(const char *sql)
{
    duckdb_result res;
    char explain[500];
    snprintf(explain, sizeof explain, "EXPLAIN %s", sql);
    if (duckdb_query(g_con, explain, &res) == DuckDBError)
        fail_msg("%s: %s", explain, duckdb_result_error(&res));
    char *plan = duckdb_value_varchar(&res, 1, 0);
    duckdb_destroy_result(&res);
    char *copy = strdup(plan ? plan : "");
    duckdb_free(plan);
    return tl_keep(copy);
}

static void test_utc_equals_icu_for_every_fast_unit(void **state)
{
    (void)state;
    tl_duck_exec(g_con, "SET TimeZone = 'UTC'");
    for (size_t i = 0; i < sizeof fast_units / sizeof fast_units[0]; i++) {
        const char *u = fast_units[i];
        int64_t differ = tl_duck_int(g_con,
                                     "SELECT count(*) FILTER (WHERE date_trunc('%s', ts) IS DISTINCT FROM "
                                     "system.main.date_trunc('%s', ts)) FROM v",
                                     u, u);
        if (differ != 0)
            fail_msg("date_trunc('%s') differs from DuckDB's on %lld values", u, (long long)differ);
        /* Upper case, as dashboards write it. */
        char upper[32];
        snprintf(upper, sizeof upper, "%s", u);
        for (char *c = upper; *c; c++)
            *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
        assert_int_equal(tl_duck_int(g_con,
                                     "SELECT count(*) FILTER (WHERE date_trunc('%s', ts) IS DISTINCT FROM "
                                     "system.main.date_trunc('%s', ts)) FROM v",
                                     upper, u),
                         0);
    }
    assert_string_equal(
        tl_keep(tl_duck_scalar(g_con, "SELECT typeof(date_trunc('hour', ts)) FROM v LIMIT 1")),
        "TIMESTAMP WITH TIME ZONE");
    assert_string_equal(tl_keep(tl_duck_scalar(
                            g_con, "SELECT string_agg(coalesce(date_trunc('day', ts)::VARCHAR, 'null'), ',' "
                                   "ORDER BY ts NULLS LAST) FROM v WHERE NOT isfinite(ts) OR ts IS NULL")),
                        "-infinity,infinity,null");
    /* At the last representable microsecond DuckDB's own function
     * overflows to 290309 BC; the readers' one does not. */
    assert_int_equal(
        tl_duck_int(g_con, "SELECT epoch_us(date_trunc('ms', make_timestamptz(9223372036854775806)))"),
        9223372036854775000LL);
    /* The fast path is the one taken: the plan calls it, not ICU's
     * date_trunc on the TIMESTAMPTZ. */
    const char *plan = plan_of("SELECT date_trunc('hour', ts) FROM v");
    tl_assert_contains(plan, "duckstore_date_trunc_utc");
    assert_null(strstr(plan, "date_trunc('hour'"));
}

/* Other units and zones go to DuckDB's own function: its values (the DST
 * day of New York has 23 hours), types and error. */
static void test_other_zones_units_and_types_are_duckdbs(void **state)
{
    (void)state;
    tl_duck_exec(g_con, "SET TimeZone = 'America/New_York'");
    assert_int_equal(tl_duck_int(g_con,
                                 "SELECT count(*) FILTER (WHERE date_trunc('day', ts) IS DISTINCT FROM "
                                 "system.main.date_trunc('day', ts)) FROM v"),
                     0);
    assert_string_equal(
        tl_keep(
            tl_duck_scalar(g_con, "SELECT date_trunc('day', TIMESTAMPTZ '2024-03-10 07:00:00+00')::VARCHAR")),
        "2024-03-10 00:00:00-05");
    assert_null(strstr(plan_of("SELECT date_trunc('hour', ts) FROM v"), "duckstore_date_trunc_utc"));
    tl_duck_exec(g_con, "SET TimeZone = 'UTC'");
    static const char *const icu_units[] = {"decade", "century", "millennium"};
    for (size_t i = 0; i < sizeof icu_units / sizeof icu_units[0]; i++)
        assert_int_equal(tl_duck_int(g_con,
                                     "SELECT count(*) FILTER (WHERE date_trunc('%s', ts) IS DISTINCT FROM "
                                     "system.main.date_trunc('%s', ts)) FROM v",
                                     icu_units[i], icu_units[i]),
                         0);
    assert_string_equal(
        tl_keep(tl_duck_scalar(g_con, "SELECT typeof(date_trunc('day', DATE '2024-03-10')) || ' ' "
                                      "|| date_trunc('month', DATE '2024-03-10')::VARCHAR")),
        "TIMESTAMP 2024-03-01 00:00:00");
    assert_string_equal(tl_keep(tl_duck_scalar(g_con, "SELECT date_trunc('hour', TIMESTAMP '2024-03-10 "
                                                      "12:34:56')::VARCHAR")),
                        "2024-03-10 12:00:00");
    assert_string_equal(
        tl_keep(tl_duck_scalar(g_con, "SELECT date_trunc('hour', INTERVAL '3 hours 25 minutes')::VARCHAR")),
        "03:00:00");
    assert_null(tl_duck_scalar(g_con, "SELECT date_trunc(NULL, TIMESTAMPTZ '2024-03-10 07:00:00+00')"));
    duckdb_result res;
    assert_int_equal(duckdb_query(g_con, "SELECT date_trunc('bogus', ts) FROM v", &res), DuckDBError);
    tl_assert_contains(duckdb_result_error(&res), "\"bogus\" not recognized");
    duckdb_destroy_result(&res);
}

/* PostgreSQL's date_trunc in UTC gives the same instants (its range:
 * 1906 to 2160 here), compared as epoch microseconds. */
static void test_postgresql_agrees(void **state)
{
    (void)state;
    PGconn *pg = tl_pg_connect(tl_pg_fresh_db("read_functions"));
    tl_pg_exec(pg, "SET TimeZone = 'UTC'");
    tl_duck_exec(g_con, "SET TimeZone = 'UTC'");
    static const char *const units[] = {"microseconds", "milliseconds", "second", "minute",  "hour",
                                        "day",          "week",         "month",  "quarter", "year"};
    for (size_t k = 0; k < sizeof units / sizeof units[0]; k++) {
        char *want =
            tl_pg_scalar(pg,
                         "SELECT md5(string_agg(x, ',' ORDER BY i)) FROM (SELECT i, ((i * 7919 * 104729) %% "
                         "8000000000000000) - 2000000000000000 + i AS e FROM generate_series(1::bigint, "
                         "20000) AS i) s, LATERAL "
                         "(SELECT (extract(epoch FROM date_trunc('%s', timestamptz 'epoch' + e * interval '1 "
                         "microsecond')) "
                         "* 1000000)::bigint::text AS x) t",
                         units[k]);
        char *got = tl_duck_scalar(
            g_con,
            "SELECT md5(string_agg(epoch_us(date_trunc('%s', make_timestamptz(e)))::VARCHAR, ',' ORDER BY "
            "i)) "
            "FROM (SELECT i, ((i * 7919 * 104729) %% 8000000000000000) - 2000000000000000 + i AS e FROM "
            "range(1, 20001) r(i))",
            units[k]);
        if (strcmp(want, got) != 0)
            fail_msg("date_trunc('%s'): PostgreSQL and duckstore differ", units[k]);
        free(want);
        free(got);
    }
    PQfinish(pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utc_equals_icu_for_every_fast_unit),
        cmocka_unit_test(test_other_zones_units_and_types_are_duckdbs),
        cmocka_unit_test(test_postgresql_agrees),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
