/* Failed syncs: the previous data stays readable, watermarks are cleared,
 * the status says error with the reason, and the next sync after the fix is
 * full (the runbook's auto-recovery). Also query_timeout, queries that lack
 * the configured columns, and a split source without dataset_id. */
#include "testlib.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("sync_failures"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs a sync that must fail; returns its error. progress may be NULL. */
static ds_error sync_fails_with(tl_env *e, const char *source, sync_progress *progress)
{
    sync_options opt = {.progress = progress};
    sync_report r;
    ds_error err;
    memset(&err, 0, sizeof err);
    if (sync_source(e->st, &e->cfg, tl_source(&e->cfg, source), &opt, &r, &err))
        fail_msg("sync of %s succeeded; it should have failed", source);
    assert_int_not_equal(err.code, DS_OK);
    return err;
}

static ds_error sync_fails(tl_env *e, const char *source)
{
    return sync_fails_with(e, source, NULL);
}

/* The status after a failure: state error with exactly err's message and
 * every watermark null, or, after a configuration error (found before
 * anything is stored), every watermark kept. */
static void assert_error_status(tl_env *e, const char *source, const ds_error *err)
{
    json_t *s = tl_sync_status(e->st, &e->cfg, source);
    assert_string_equal(tl_json_str(s, "state"), "error");
    assert_string_equal(tl_json_str(s, "error"), err->msg);
    assert_non_null(tl_json_str(s, "last_error"));
    json_t *wms = json_object_get(s, "watermarks");
    const char *key;
    json_t *value;
    assert_true(json_object_size(wms) > 0);
    json_object_foreach(wms, key, value)
    {
        if (err->code == DS_ERR_CONFIG && json_is_null(value))
            fail_msg("watermark of %s was cleared by a configuration error", key);
        if (err->code != DS_ERR_CONFIG && !json_is_null(value))
            fail_msg("watermark of %s is still %s after a failed sync", key, json_string_value(value));
    }
    json_decref(s);
    assert_int_equal(
        tl_duck_int(e->con, "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '%%staging%%'"), 0);
}

static void assert_ready(tl_env *e, const char *source, const sync_report *r, bool incremental)
{
    assert_int_equal(r->incremental, incremental);
    for (size_t i = 0; i < r->ntables; i++)
        assert_int_equal(r->tables[i].incremental, incremental);
    json_t *s = tl_sync_status(e->st, &e->cfg, source);
    assert_string_equal(tl_json_str(s, "state"), "ready");
    assert_string_equal(tl_json_str(s, "sync_type"), incremental ? "incremental" : "full");
    assert_true(json_is_null(json_object_get(s, "error")));
    json_decref(s);
}

/* The source table disappears after a good sync (renamed away), then comes
 * back. */
static void test_failed_incremental_keeps_data_and_recovers(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "recover_rename", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 120, 3);
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    tl_llm_add(e.pg, 121, 130, 3);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows, 390);

    tl_llm_add(e.pg, 131, 140, 3);
    tl_pg_exec(e.pg, "ALTER TABLE llm_traces RENAME TO llm_traces_moved");
    ds_error err = sync_fails(&e, "monitoring");
    /* A query PostgreSQL rejects as written (SQLSTATE 42P01) is a config
     * error: the CLI exits 2 for it. */
    assert_int_equal(err.code, DS_ERR_CONFIG);
    tl_assert_contains(err.msg, "monitoring_db.yaml:4:");
    tl_assert_contains(err.msg, ": dataset_query: relation \"llm_traces\" does not exist");
    /* The previous data is still there, complete. */
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM monitoring_data"), 390);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM monitoring_dataset"), 130);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM monitoring_results"), 390);
    assert_error_status(&e, "monitoring", &err);

    tl_pg_exec(e.pg, "ALTER TABLE llm_traces_moved RENAME TO llm_traces");
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    /* The watermarks were kept: the rows added meanwhile come incrementally. */
    assert_ready(&e, "monitoring", &r, true);
    assert_int_equal(r.rows, 420);
    tl_llm_assert_synced(&e, "monitoring");
    /* Back to normal: the next one is incremental. */
    tl_llm_add(e.pg, 141, 141, 3);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows_added, 3);
    tl_env_close(&e);
}

/* The query fails at run time in the middle of an incremental COPY, after
 * thousands of rows reached the staging table. */
static void test_failure_mid_stream(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "recover_midstream", "  sync_chunk_size: 1000\n");
    tl_pg_exec(e.pg, "CREATE TABLE div_src (k int PRIMARY KEY, divisor int NOT NULL, "
                     "created_at timestamptz NOT NULL DEFAULT clock_timestamp())");
    tl_pg_exec(e.pg, "INSERT INTO div_src (k, divisor) SELECT i, 1 + i %% 5 FROM generate_series(1, 1000) i");
    tl_env_source(&e, "div",
                  "  query: SELECT k, 1000 / divisor AS q, created_at FROM div_src\n"
                  "  incremental_column: created_at\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "div", false, &r);
    assert_int_equal(r.rows, 1000);

    tl_pg_exec(e.pg, "INSERT INTO div_src (k, divisor) SELECT i, CASE WHEN i = 6000 THEN 0 ELSE 1 END "
                     "FROM generate_series(1001, 6000) i");
    /* Heap order puts k = 6000 last: 4999 rows are appended before the error. */
    sync_progress progress;
    memset(&progress, 0, sizeof progress);
    ds_error err = sync_fails_with(&e, "div", &progress);
    assert_true(atomic_load(&progress.rows) >= 4000);
    assert_int_equal(err.code, DS_ERR_SOURCE);
    tl_assert_contains(err.msg, "div: query: ");
    tl_assert_contains(err.msg, "division by zero");
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM div_data"), 1000);
    assert_int_equal(tl_duck_int(e.con, "SELECT max(k) FROM div_data"), 1000);
    assert_error_status(&e, "div", &err);

    tl_pg_exec(e.pg, "UPDATE div_src SET divisor = 2 WHERE divisor = 0");
    tl_sync_ok(e.st, &e.cfg, "div", false, &r);
    assert_ready(&e, "div", &r, false);
    assert_int_equal(r.rows, 6000);
    char *want = tl_pg_checksum(e.pg, "(SELECT k, 1000 / divisor AS q, created_at FROM div_src) AS q",
                                "k,q,created_at:ts");
    char *got = tl_duck_checksum(e.con, "div_data", "k,q,created_at:ts");
    assert_string_equal(got, want);
    free(want);
    free(got);
    tl_env_close(&e);
}

/* The config changes to name a table that does not exist, then is fixed. */
static void test_bad_query_in_config_then_fixed(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "recover_config", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 80, 2);
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);

    tl_env_source(&e, "monitoring",
                  "  dataset_query: |\n    " TL_LLM_DATASET_QUERY "\n"
                  "  results_query: |\n    SELECT trace_id AS dataset_id, metric_name, created_at\n"
                  "    FROM llm_metric_results_v2\n"
                  "  incremental_column: created_at\n");
    ds_error err = sync_fails(&e, "monitoring");
    assert_int_equal(err.code, DS_ERR_CONFIG);
    /* The line and column of the unknown name in the | block. */
    tl_assert_contains(
        err.msg, "monitoring_db.yaml:7:10: results_query: relation \"llm_metric_results_v2\" does not exist");
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM monitoring_data"), 160);
    assert_error_status(&e, "monitoring", &err);

    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    tl_llm_add(e.pg, 81, 90, 2);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_ready(&e, "monitoring", &r, true);
    assert_int_equal(r.rows, 180);
    tl_llm_assert_synced(&e, "monitoring");
    tl_env_close(&e);
}

/* query_timeout 0.5 s against pg_sleep(3): the statement is cancelled by
 * PostgreSQL well before the sleep ends, and the error says which query and
 * which setting. */
static void expect_timeout(tl_env *e, const char *source, const char *label)
{
    double t0 = now_s();
    ds_error err = sync_fails(e, source);
    double took = now_s() - t0;
    if (took > 2.5)
        fail_msg("the timed-out sync of %s took %.2f s", source, took);
    if (err.code != DS_ERR_TIMEOUT)
        fail_msg("expected DS_ERR_TIMEOUT, got code %d: %s", (int)err.code, err.msg);
    char want[256];
    snprintf(want, sizeof want, "%s: %s (", source, label);
    tl_assert_contains(err.msg, want);
    tl_assert_contains(err.msg, "exceeded query_timeout (0.5 s)");
    assert_error_status(e, source, &err);
}

static void test_query_timeout(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "timeouts", "");
    tl_pg_exec(e.pg, "CREATE TABLE slow (k int, created_at timestamptz DEFAULT clock_timestamp())");
    tl_pg_exec(e.pg, "INSERT INTO slow (k) SELECT generate_series(1, 100)");
    tl_env_source(&e, "single",
                  "  query: SELECT k, created_at FROM slow, (SELECT pg_sleep(3)) AS s\n"
                  "  query_timeout: 0.5\n");
    expect_timeout(&e, "single", "query");
    tl_env_source(&e, "split",
                  "  dataset_query: SELECT k AS dataset_id, created_at FROM slow\n"
                  "  results_query: SELECT k AS dataset_id, created_at FROM slow, (SELECT pg_sleep(3)) AS s\n"
                  "  query_timeout: 0.5\n");
    expect_timeout(&e, "split", "results_query");
    tl_env_source(&e, "split2",
                  "  dataset_query: SELECT k AS dataset_id, created_at FROM slow, (SELECT pg_sleep(3)) AS s\n"
                  "  results_query: SELECT k AS dataset_id, created_at FROM slow\n"
                  "  query_timeout: 0.5\n");
    expect_timeout(&e, "split2", "dataset_query");
    /* Partitioned reads: the range planning query runs the slow query too. */
    tl_env_store(&e, "  sync_workers: 4\n");
    tl_env_source(&e, "parted",
                  "  query: SELECT k, created_at FROM slow, (SELECT pg_sleep(3)) AS s\n"
                  "  partition_column: k\n"
                  "  query_timeout: 0.5\n");
    expect_timeout(&e, "parted", "query");

    /* A timeout after a good sync keeps the data and clears the watermark. */
    tl_env_store(&e, "");
    tl_env_source(&e, "later",
                  "  query: SELECT k, created_at FROM slow\n  incremental_column: created_at\n"
                  "  query_timeout: 0.5\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "later", false, &r);
    assert_int_equal(r.rows, 100);
    tl_env_source(&e, "later",
                  "  query: SELECT k, created_at FROM slow, (SELECT pg_sleep(3)) AS s\n"
                  "  incremental_column: created_at\n  query_timeout: 0.5\n");
    expect_timeout(&e, "later", "query");
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM later_data"), 100);
    tl_env_close(&e);
}

static void *cancel_soon(void *arg)
{
    usleep(300 * 1000);
    sync_cancel_request(arg);
    return NULL;
}

/* A sync cancelled from another thread (the server's shutdown) stops its
 * PostgreSQL statements at once. A stop on request is no failure of the
 * source: data, watermark and status stay as they were. */
static void test_cancel_stops_a_running_sync(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "cancelled", "");
    tl_pg_exec(e.pg,
               "CREATE TABLE cancel_src (k int, created_at timestamptz NOT NULL DEFAULT clock_timestamp())");
    tl_pg_exec(e.pg, "INSERT INTO cancel_src (k) SELECT generate_series(1, 10)");
    static const char fast[] =
        "  query: SELECT k, created_at FROM cancel_src\n  incremental_column: created_at\n"
        "  partition_column: k\n";
    tl_env_source(&e, "slow", fast);
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "slow", false, &r);
    json_t *before = tl_sync_status(e.st, &e.cfg, "slow");
    static const char *const stores[] = {"", "  sync_workers: 4\n"};
    for (size_t i = 0; i < 2; i++) {
        tl_env_store(&e, stores[i]);
        tl_env_source(&e, "slow",
                      "  query: SELECT k, created_at FROM cancel_src, (SELECT pg_sleep(30)) AS s\n"
                      "  incremental_column: created_at\n  partition_column: k\n");
        sync_cancel cancel;
        sync_cancel_init(&cancel);
        sync_options opt = {.cancel = &cancel};
        pthread_t thread;
        assert_int_equal(pthread_create(&thread, NULL, cancel_soon, &cancel), 0);
        ds_error err;
        double t0 = now_s();
        assert_false(sync_source(e.st, &e.cfg, tl_source(&e.cfg, "slow"), &opt, &r, &err));
        double took = now_s() - t0;
        pthread_join(thread, NULL);
        sync_cancel_destroy(&cancel);
        /* Far less than the 30 s the statements sleep (a loaded machine
         * may take seconds to connect and cancel). */
        if (took > 15.0)
            fail_msg("the cancelled sync took %.2f s", took);
        assert_int_equal(err.code, DS_ERR_CANCELLED);
        tl_assert_contains(err.msg, "slow: ");
        tl_assert_contains(err.msg, "cancel");
        assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM slow_data"), 10);
        assert_int_equal(
            tl_duck_int(e.con, "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '%%staging%%'"),
            0);
        json_t *s = tl_sync_status(e.st, &e.cfg, "slow");
        assert_string_equal(tl_json_str(s, "state"), "ready");
        assert_true(json_is_null(json_object_get(s, "error")));
        assert_string_equal(tl_json_str(json_object_get(s, "watermarks"), "slow_data"),
                            tl_json_str(json_object_get(before, "watermarks"), "slow_data"));
        json_decref(s);
    }
    json_decref(before);
    /* No statement of the cancelled syncs is left running (PostgreSQL ends a
     * cancelled backend's statement a moment after the request). */
    double deadline = now_s() + 10;
    while (tl_pg_int(e.pg, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(30)%%' "
                           "AND pid <> pg_backend_pid() AND state = 'active'") != 0) {
        if (now_s() > deadline)
            fail_msg("a statement of the cancelled syncs still runs 10 s later");
        usleep(20000);
    }
    /* The next sync carries on incrementally. */
    tl_env_store(&e, "");
    tl_env_source(&e, "slow", fast);
    tl_pg_exec(e.pg, "INSERT INTO cancel_src (k) VALUES (11)");
    tl_sync_ok(e.st, &e.cfg, "slow", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows_added, 1);
    tl_env_close(&e);
}

/* The runbook's own queries select neither created_at nor id: syncing still
 * works, in full every time, with a warning per query and key. */
static void test_missing_columns_warn_and_sync_full(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "missing_cols", "  sync_workers: 4\n");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 100, 3);
    tl_env_source(
        &e, "monitoring",
        "  dataset_query: SELECT trace_id AS dataset_id, timestamp, prompt AS query FROM llm_traces\n"
        "  results_query: SELECT trace_id AS dataset_id, metric_name, metric_value AS metric_score "
        "FROM llm_metric_results\n"
        "  partition_column: id\n"
        "  incremental_column: created_at\n");
    static const char *const want[] = {
        "monitoring: incremental_column \"created_at\" is not a column of dataset_query (columns: "
        "dataset_id, "
        "timestamp, query); dataset_query is read in full on every sync. Fix: select \"created_at\" in "
        "dataset_query, or change incremental_column",
        "monitoring: partition_column \"id\" is not a column of dataset_query (columns: dataset_id, "
        "timestamp, "
        "query); dataset_query is read in one stream. Fix: select \"id\" in dataset_query, or change "
        "partition_column",
        "monitoring: incremental_column \"created_at\" is not a column of results_query (columns: "
        "dataset_id, "
        "metric_name, metric_score); results_query is read in full on every sync. Fix: select \"created_at\" "
        "in "
        "results_query, or change incremental_column",
        "monitoring: partition_column \"id\" is not a column of results_query (columns: dataset_id, "
        "metric_name, "
        "metric_score); results_query is read in one stream. Fix: select \"id\" in results_query, or change "
        "partition_column",
    };
    for (int round = 0; round < 2; round++) {
        sync_report r;
        tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
        assert_false(r.incremental);
        assert_int_equal(r.rows, 300 + round * 30);
        assert_int_equal(r.tables[0].rows_loaded, 100 + round * 10);
        assert_int_equal(r.nwarnings, 4);
        for (size_t i = 0; i < 4; i++)
            assert_string_equal(r.warnings[i], want[i]);
        json_t *s = tl_sync_status(e.st, &e.cfg, "monitoring");
        assert_string_equal(tl_json_str(s, "state"), "ready");
        assert_string_equal(tl_json_str(s, "sync_type"), "full");
        json_t *warnings = json_object_get(s, "warnings");
        assert_int_equal(json_array_size(warnings), 4);
        for (size_t i = 0; i < 4; i++)
            assert_string_equal(json_string_value(json_array_get(warnings, i)), want[i]);
        assert_true(json_is_null(json_object_get(json_object_get(s, "watermarks"), "monitoring_dataset")));
        assert_true(json_is_null(json_object_get(json_object_get(s, "watermarks"), "monitoring_results")));
        json_decref(s);
        assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM monitoring_results"), 300 + round * 30);
        tl_llm_add(e.pg, 101 + round * 10, 110 + round * 10, 3);
    }

    /* Columns that exist but cannot serve: jsonb as watermark, uuid as partition. */
    tl_env_source(&e, "typed",
                  "  query: SELECT id AS k, metadata AS created_at, trace_id AS id FROM llm_traces\n"
                  "  partition_column: id\n"
                  "  incremental_column: created_at\n");
    sync_report r;
    for (int round = 0; round < 2; round++) {
        tl_sync_ok(e.st, &e.cfg, "typed", false, &r);
        assert_false(r.incremental);
        assert_int_equal(r.rows, 120);
        assert_int_equal(r.nwarnings, 2);
        assert_string_equal(r.warnings[0],
                            "typed: incremental_column \"created_at\" of query has type jsonb, which "
                            "cannot be used for it; query is read in full on every sync");
        assert_string_equal(r.warnings[1],
                            "typed: partition_column \"id\" of query has type uuid, which cannot be "
                            "used for it; query is read in one stream");
    }
    tl_env_close(&e);
}

static void test_split_source_without_dataset_id(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "no_dataset_id", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 10, 2);
    tl_env_source(&e, "monitoring",
                  "  dataset_query: SELECT trace_id AS dataset_id, prompt FROM llm_traces\n"
                  "  results_query: SELECT trace_id, metric_name, metric_value FROM llm_metric_results\n");
    ds_error err = sync_fails(&e, "monitoring");
    assert_int_equal(err.code, DS_ERR_CONFIG);
    tl_assert_contains(err.msg, "monitoring: results_query (");
    tl_assert_contains(err.msg, "monitoring_db.yaml:1) has no column named dataset_id (columns: trace_id, "
                                "metric_name, metric_value)");
    tl_assert_contains(err.msg, "trace_id AS dataset_id");
    /* Nothing was created, and the status says why. */
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main'"),
                     0);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM duckdb_views() WHERE NOT internal"), 0);
    json_t *s = tl_sync_status(e.st, &e.cfg, "monitoring");
    assert_string_equal(tl_json_str(s, "state"), "error");
    assert_string_equal(tl_json_str(s, "error"), err.msg);
    json_decref(s);

    tl_env_source(&e, "monitoring",
                  "  dataset_query: SELECT trace_id, prompt FROM llm_traces\n"
                  "  results_query: SELECT trace_id AS dataset_id, metric_name FROM llm_metric_results\n");
    err = sync_fails(&e, "monitoring");
    assert_int_equal(err.code, DS_ERR_CONFIG);
    tl_assert_contains(err.msg, "monitoring: dataset_query (");
    tl_assert_contains(err.msg, "has no column named dataset_id (columns: trace_id, prompt)");

    /* Fixed: the first good sync is full. */
    tl_env_source(&e, "monitoring",
                  "  dataset_query: SELECT trace_id AS dataset_id, prompt FROM llm_traces\n"
                  "  results_query: SELECT trace_id AS dataset_id, metric_name FROM llm_metric_results\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_ready(&e, "monitoring", &r, false);
    assert_int_equal(r.rows, 20);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_incremental_keeps_data_and_recovers),
        cmocka_unit_test(test_failure_mid_stream),
        cmocka_unit_test(test_bad_query_in_config_then_fixed),
        cmocka_unit_test(test_query_timeout),
        cmocka_unit_test(test_cancel_stops_a_running_sync),
        cmocka_unit_test(test_missing_columns_warn_and_sync_full),
        cmocka_unit_test(test_split_source_without_dataset_id),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
