/* The metadata of store/metadata.h: the exact SQL of its builders (quoted
 * names, exact or approximated percentiles), the document computed on an
 * in-memory DuckDB for a relation with a hostile name and odd column
 * types. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/metadata.h"

static duckdb_database g_db;
static duckdb_connection g_con;

static int duck_setup(void **state)
{
    (void)state;
    if (duckdb_open(NULL, &g_db) != DuckDBSuccess || duckdb_connect(g_db, &g_con) != DuckDBSuccess)
        return -1;
    return 0;
}

static int duck_teardown(void **state)
{
    (void)state;
    duckdb_disconnect(&g_con);
    duckdb_close(&g_db);
    tl_free_kept();
    return 0;
}

static void test_builders(void **state)
{
    (void)state;
    const char *const cols[] = {"environment", "kpi\"name"};
    assert_string_equal(
        tl_keep(store_filter_values_sql("a\"b", cols, 2, 201)),
        "SELECT \"environment\", \"kpi\"\"name\", CAST(\"environment\" AS VARCHAR), CAST(\"kpi\"\"name\" AS "
        "VARCHAR) FROM (SELECT GROUPING(\"environment\", \"kpi\"\"name\") AS _ds_set, \"environment\", "
        "\"kpi\"\"name\" FROM \"a\"\"b\" GROUP BY GROUPING SETS ((\"environment\"), (\"kpi\"\"name\"))) "
        "WHERE "
        "\"environment\" IS NOT NULL OR \"kpi\"\"name\" IS NOT NULL QUALIFY row_number() OVER (PARTITION BY "
        "_ds_set ORDER BY \"environment\", \"kpi\"\"name\") <= 201 ORDER BY _ds_set, \"environment\", "
        "\"kpi\"\"name\"");
    assert_string_equal(
        tl_keep(store_summary_sql("t", "metric_score", "latency", true, true)),
        "SELECT count(*), avg(TRY_CAST(\"metric_score\" AS DOUBLE)), 100.0 * count(*) FILTER "
        "(WHERE TRY_CAST(\"metric_score\" AS DOUBLE) >= 0.5) / nullif(count(TRY_CAST("
        "\"metric_score\" AS DOUBLE)), 0), quantile_cont(TRY_CAST(\"latency\" AS DOUBLE), 0.5), "
        "quantile_cont(TRY_CAST(\"latency\" AS DOUBLE), 0.95), quantile_cont(TRY_CAST(\"latency\" "
        "AS DOUBLE), 0.99), CAST(min(\"timestamp\") AS VARCHAR), CAST(max(\"timestamp\") AS VARCHAR) FROM "
        "\"t\"");
    /* past STORE_EXACT_PERCENTILES_MAX rows: bounded memory */
    assert_string_equal(tl_keep(store_summary_sql("t", NULL, "la\"t", false, false)),
                        "SELECT count(*), NULL, NULL, approx_quantile(TRY_CAST(\"la\"\"t\" AS DOUBLE), 0.5), "
                        "approx_quantile(TRY_CAST(\"la\"\"t\" AS DOUBLE), 0.95), approx_quantile(TRY_CAST("
                        "\"la\"\"t\" AS DOUBLE), 0.99) FROM \"t\"");
    assert_string_equal(tl_keep(store_summary_sql("t", "metric_score", NULL, true, false)),
                        "SELECT count(*), avg(TRY_CAST(\"metric_score\" AS DOUBLE)), 100.0 * count(*) FILTER "
                        "(WHERE TRY_CAST(\"metric_score\" AS DOUBLE) >= 0.5) / nullif(count(TRY_CAST("
                        "\"metric_score\" AS DOUBLE)), 0), NULL, NULL, NULL FROM \"t\"");
}

/* A relation named with a quote; a STRUCT score (not a number: NULL
 * summary, no failed statement); integer filter values stay numbers, DATE
 * ones are text; the TIMESTAMPTZ range is DuckDB's text in UTC (the C API
 * prints no TIMESTAMPTZ); a NaN latency. */
static void test_document(void **state)
{
    (void)state;
    tl_duck_exec(g_con, "SET TimeZone = 'UTC'");
    tl_duck_exec(g_con,
                 "CREATE TABLE \"we\"\"ird\" (kpi_name INTEGER, metric_score STRUCT(v INTEGER),"
                 " \"timestamp\" TIMESTAMPTZ, duration_ms DOUBLE, kpi_category HUGEINT, source_type DATE)");
    tl_duck_exec(
        g_con, "INSERT INTO \"we\"\"ird\" VALUES (2, {'v': 1}, '2026-01-01 10:00:00+02', 1, 5, '2026-01-01'),"
               " (1, NULL, NULL, 'NaN', 170141183460469231731687303715884105727, NULL),"
               " (2, {'v': 3}, '2026-01-02 00:00:00+00', 3, 5, '2025-12-31')");
    json_t *doc = NULL;
    ds_error err;
    if (!store_dataset_metadata(g_con, "we\"ird", &doc, &err))
        fail_msg("%s", err.msg);
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    /* filter columns in AXIS's order; a huge integer past int64 as text;
     * DuckDB sorts NaN above every number, so the median is 3 and the
     * upper percentiles NaN, read as null */
    assert_string_equal(
        text, "{\"row_count\":3,\"columns\":[{\"column_name\":\"kpi_name\",\"column_type\":\"INTEGER\"},{"
              "\"column_name\":\"metric_score\",\"column_type\":\"STRUCT(v "
              "INTEGER)\"},{\"column_name\":\"timestamp\",\"column_type\":\"TIMESTAMP WITH TIME "
              "ZONE\"},{\"column_name\":\"duration_ms\",\"column_type\":\"DOUBLE\"},{\"column_name\":\"kpi_"
              "category\",\"column_type\":\"HUGEINT\"},{\"column_name\":\"source_type\",\"column_type\":"
              "\"DATE\"}],\"filter_values\":{\"source_type\":[\"2025-12-31\",\"2026-01-01\"],\"kpi_name\":[1,"
              "2],\"kpi_category\":[5,\"170141183460469231731687303715884105727\"]},\"filter_values_"
              "truncated\":{\"source_type\":false,\"kpi_name\":false,\"kpi_category\":false},\"time_range\":{"
              "\"min\":\"2026-01-01 08:00:00+00\",\"max\":\"2026-01-02 "
              "00:00:00+00\"},\"summary_stats\":{\"total_records\":3,\"avg_score\":null,\"pass_rate\":null,"
              "\"p50_latency\":3.0,\"p95_latency\":null,\"p99_latency\":null}}");
    free(text);
    json_decref(doc);
}

/* Filter columns read together: one past 200 values (the first 200,
 * sorted, and truncated), one with NULLs (left out), one only NULL (an
 * empty list), each in its own list whatever the others hold. */
static void test_filter_values_apart(void **state)
{
    (void)state;
    tl_duck_exec(g_con, "CREATE TABLE f (environment VARCHAR, source_name VARCHAR, metric_name VARCHAR)");
    tl_duck_exec(g_con, "INSERT INTO f SELECT CASE WHEN i %% 3 = 0 THEN NULL WHEN i %% 3 = 1 THEN 'prod' "
                        "ELSE 'dev' END, NULL, 'm' || lpad((250 - i)::VARCHAR, 3, '0') FROM range(250) t(i)");
    json_t *doc = NULL;
    ds_error err;
    if (!store_dataset_metadata(g_con, "f", &doc, &err))
        fail_msg("%s", err.msg);
    json_t *values = json_object_get(doc, "filter_values"),
           *truncated = json_object_get(doc, "filter_values_truncated");
    char *env = json_dumps(json_object_get(values, "environment"), JSON_COMPACT);
    assert_string_equal(env, "[\"dev\",\"prod\"]");
    free(env);
    assert_int_equal(json_array_size(json_object_get(values, "source_name")), 0);
    json_t *names = json_object_get(values, "metric_name");
    assert_int_equal(json_array_size(names), 200);
    assert_string_equal(json_string_value(json_array_get(names, 0)), "m001");
    assert_string_equal(json_string_value(json_array_get(names, 199)), "m200");
    assert_true(json_is_false(json_object_get(truncated, "environment")));
    assert_true(json_is_false(json_object_get(truncated, "source_name")));
    assert_true(json_is_true(json_object_get(truncated, "metric_name")));
    char *keys = json_dumps(truncated, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(keys, "{\"environment\":false,\"source_name\":false,\"metric_name\":true}");
    free(keys);
    assert_true(json_is_null(json_object_get(doc, "time_range")));
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builders),
        cmocka_unit_test(test_document),
        cmocka_unit_test(test_filter_values_apart),
    };
    return cmocka_run_group_tests(tests, duck_setup, duck_teardown);
}
