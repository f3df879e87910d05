/* Full and incremental syncs of a split source in the runbook's shape: the
 * first sync is full, later ones append only new rows past exact watermarks
 * (the PostgreSQL sessions run in New York time), forced full syncs and
 * watermark resets rebuild, and a changed schema rebuilds instead of
 * appending. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("sync_fullinc"));
    PGconn *pg = tl_pg_connect(g_conninfo);
    /* Every connection the sync opens runs in this zone: watermarks and
     * their comparisons must not depend on it. */
    tl_pg_exec(pg, "ALTER DATABASE \"%s\" SET timezone = 'America/New_York'", PQdb(pg));
    PQfinish(pg);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

/* max(column) of a PostgreSQL table as DuckDB writes a TIMESTAMPTZ in UTC. */
static char *pg_max_utc(tl_env *e, const char *table, const char *column)
{
    return tl_pg_scalar(e->pg, "SELECT (max(%s) AT TIME ZONE 'UTC')::text || '+00' FROM %s", column, table);
}

static const char *status_watermark(const json_t *doc, const char *table)
{
    json_t *wm = json_object_get(json_object_get(doc, "watermarks"), table);
    if (wm == NULL)
        fail_msg("status has no watermark entry for %s", table);
    return json_string_value(wm);
}

static json_int_t status_int(const json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);
    if (!json_is_integer(v))
        fail_msg("status field %s is not an integer", key);
    return json_integer_value(v);
}

static char *columns_of(tl_env *e, const char *table)
{
    return tl_duck_scalar(
        e->con,
        "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) "
        "FROM information_schema.columns WHERE table_name = '%s'",
        table);
}

static void assert_no_staging(tl_env *e)
{
    assert_int_equal(
        tl_duck_int(e->con, "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '%%staging%%'"), 0);
}

static void assert_watermarks_match_pg(tl_env *e, const json_t *doc)
{
    char *want_d = pg_max_utc(e, "llm_traces", "created_at");
    char *want_r = pg_max_utc(e, "llm_metric_results", "created_at");
    assert_string_equal(status_watermark(doc, "monitoring_dataset"), want_d);
    assert_string_equal(status_watermark(doc, "monitoring_results"), want_r);
    free(want_d);
    free(want_r);
}

static void test_first_sync_is_full(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "first_sync", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 200, 3);
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);

    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_false(r.incremental);
    assert_int_equal(r.rows, 600);
    assert_int_equal(r.rows_added, 600);
    assert_false(r.truncated);
    assert_int_equal(r.nwarnings, 0);
    assert_int_equal(r.ntables, 2);
    assert_string_equal(r.tables[0].table, "monitoring_dataset");
    assert_false(r.tables[0].incremental);
    assert_int_equal(r.tables[0].rows_loaded, 200);
    assert_int_equal(r.tables[0].rows_total, 200);
    assert_string_equal(r.tables[1].table, "monitoring_results");
    assert_false(r.tables[1].incremental);
    assert_int_equal(r.tables[1].rows_loaded, 600);
    assert_int_equal(r.tables[1].rows_total, 600);

    /* Two tables, one view, nothing left over. */
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main'"),
                     2);
    assert_int_equal(
        tl_duck_int(e.con, "SELECT count(*) FROM duckdb_views() WHERE view_name = 'monitoring_data'"), 1);
    assert_no_staging(&e);
    char *cols = columns_of(&e, "monitoring_dataset");
    assert_string_equal(cols,
                        "dataset_id UUID, id BIGINT, timestamp TIMESTAMP WITH TIME ZONE, query VARCHAR, "
                        "actual_output VARCHAR, environment VARCHAR, latency DECIMAL(10,3), metadata JSON, "
                        "created_at TIMESTAMP WITH TIME ZONE");
    free(cols);
    cols = columns_of(&e, "monitoring_results");
    assert_string_equal(cols, "dataset_id UUID, id BIGINT, metric_name VARCHAR, metric_score DECIMAL(6,4), "
                              "metric_category VARCHAR, explanation VARCHAR, details JSON, "
                              "created_at TIMESTAMP WITH TIME ZONE");
    free(cols);
    /* Results columns, then dataset columns without dataset_id; names both
     * queries have get a dataset_ prefix (twice for id: dataset_id is taken). */
    cols = tl_duck_scalar(e.con, "SELECT string_agg(column_name, ',') FROM (DESCRIBE monitoring_data)");
    assert_string_equal(
        cols, "dataset_id,id,metric_name,metric_score,metric_category,explanation,details,created_at,"
              "dataset_dataset_id,timestamp,query,actual_output,environment,latency,metadata,"
              "dataset_created_at");
    free(cols);

    tl_llm_assert_synced(&e, "monitoring");
    /* One spot check by hand: trace 7 has no completion, its metadata is jsonb text. */
    char *row = tl_duck_scalar(
        e.con, "SELECT query || '|' || coalesce(actual_output, 'NULL') || '|' || metadata::VARCHAR || "
               "'|' || latency::VARCHAR FROM monitoring_data WHERE metric_name = 'metric_2' AND "
               "dataset_id = md5('trace7')::UUID");
    assert_string_equal(
        row, "prompt 7|NULL|{\"i\": 7, \"tags\": [\"t3\", false], \"score\": 0.87500000000000000000}|11.900");
    free(row);

    json_t *s = tl_sync_status(e.st, &e.cfg, "monitoring");
    assert_string_equal(tl_json_str(s, "state"), "ready");
    assert_string_equal(tl_json_str(s, "sync_type"), "full");
    assert_int_equal(status_int(s, "rows"), 600);
    assert_int_equal(status_int(s, "incremental_rows"), 0);
    assert_true(json_is_null(json_object_get(s, "last_incremental")));
    assert_true(json_is_false(json_object_get(s, "truncated")));
    assert_true(json_is_null(json_object_get(s, "error")));
    assert_int_equal(json_array_size(json_object_get(s, "warnings")), 0);
    assert_non_null(tl_json_str(s, "last_full"));
    assert_string_equal(tl_json_str(s, "incremental_column"), "created_at");
    assert_int_equal(json_object_size(json_object_get(s, "watermarks")), 2);
    assert_watermarks_match_pg(&e, s);
    json_decref(s);
    tl_env_close(&e);
}

static void test_incremental_appends_only_new_rows(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "incremental", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 200, 3);
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_false(r.incremental);
    json_t *before = tl_sync_status(e.st, &e.cfg, "monitoring");

    /* 60 new traces with 3 results each; an old row is changed too: an
     * append-only sync must not pick that up. */
    tl_llm_add(e.pg, 201, 260, 3);
    tl_pg_exec(e.pg, "UPDATE llm_traces SET prompt = 'edited' WHERE id = 1");
    int64_t again_d = tl_duck_at_max(e.con, "monitoring_dataset", "created_at");
    int64_t again_r = tl_duck_at_max(e.con, "monitoring_results", "created_at");
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows, 780);
    assert_int_equal(r.rows_added, 180);
    /* Each read starts at the watermark itself: the newest stored trace is
     * read again (and not stored twice). */
    assert_true(r.tables[0].incremental);
    assert_int_equal(r.tables[0].rows_loaded, 60 + again_d);
    assert_int_equal(r.tables[0].rows_inserted, 60);
    assert_int_equal(r.tables[0].rows_total, 260);
    assert_true(r.tables[1].incremental);
    assert_int_equal(r.tables[1].rows_loaded, 180 + again_r);
    assert_int_equal(r.tables[1].rows_inserted, 180);
    assert_int_equal(r.tables[1].rows_total, 780);
    char *old = tl_duck_scalar(e.con, "SELECT query FROM monitoring_dataset WHERE id = 1");
    assert_string_equal(old, "prompt 1");
    free(old);
    tl_pg_exec(e.pg, "UPDATE llm_traces SET prompt = 'prompt 1' WHERE id = 1");
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) - count(DISTINCT id) FROM monitoring_dataset"), 0);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) - count(DISTINCT id) FROM monitoring_results"), 0);
    tl_llm_assert_synced(&e, "monitoring");
    assert_no_staging(&e);

    json_t *s = tl_sync_status(e.st, &e.cfg, "monitoring");
    assert_string_equal(tl_json_str(s, "state"), "ready");
    assert_string_equal(tl_json_str(s, "sync_type"), "incremental");
    assert_int_equal(status_int(s, "rows"), 780);
    assert_int_equal(status_int(s, "incremental_rows"), 180);
    assert_non_null(tl_json_str(s, "last_incremental"));
    assert_watermarks_match_pg(&e, s);
    /* Advanced: the new maximum is later than the old one. */
    assert_string_not_equal(status_watermark(s, "monitoring_dataset"),
                            status_watermark(before, "monitoring_dataset"));
    assert_string_not_equal(status_watermark(s, "monitoring_results"),
                            status_watermark(before, "monitoring_results"));
    json_decref(before);

    /* Nothing new: an incremental sync that adds nothing and keeps the watermarks. */
    again_d = tl_duck_at_max(e.con, "monitoring_dataset", "created_at");
    again_r = tl_duck_at_max(e.con, "monitoring_results", "created_at");
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows, 780);
    assert_int_equal(r.rows_added, 0);
    assert_int_equal(r.tables[0].rows_loaded, again_d); /* the rows at the watermark, read again */
    assert_int_equal(r.tables[1].rows_loaded, again_r);
    json_t *again = tl_sync_status(e.st, &e.cfg, "monitoring");
    assert_string_equal(tl_json_str(again, "sync_type"), "incremental");
    assert_int_equal(status_int(again, "incremental_rows"), 0);
    assert_int_equal(status_int(again, "rows"), 780);
    assert_string_equal(status_watermark(again, "monitoring_dataset"),
                        status_watermark(s, "monitoring_dataset"));
    assert_string_equal(status_watermark(again, "monitoring_results"),
                        status_watermark(s, "monitoring_results"));
    json_decref(again);
    json_decref(s);
    tl_llm_assert_synced(&e, "monitoring");
    tl_env_close(&e);
}

/* rows of <name>_data after a sync, as PostgreSQL counts the same join. */
static void assert_view_rows(tl_env *e, const sync_report *r, bool ids_unique)
{
    int64_t want = tl_pg_int(e->pg, "SELECT count(*) FROM %s", TL_LLM_VIEW_RELATION);
    assert_int_equal(r->rows, want);
    assert_int_equal(tl_duck_int(e->con, "SELECT count(*) FROM monitoring_data"), want);
    json_t *s = tl_sync_status(e->st, &e->cfg, "monitoring");
    assert_int_equal(status_int(s, "rows"), want);
    json_t *unique = json_object_get(s, "dataset_id_unique");
    if (!json_is_boolean(unique) || json_is_true(unique) != ids_unique)
        fail_msg("dataset_id_unique should be %s", ids_unique ? "true" : "false");
    json_decref(s);
}

/* The view's row count is the results table's while every dataset_id is
 * stored once; a repeated dataset_id (in one batch, or matching a stored
 * row) makes each of its results appear once per copy, and the count must
 * follow, through incremental and full syncs. */
static void test_view_rows_with_repeated_dataset_ids(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "repeated_ids", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 50, 2);
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_false(r.incremental);
    assert_int_equal(r.rows, 100);
    assert_view_rows(&e, &r, true);

    tl_llm_add(e.pg, 51, 60, 2); /* new ids only */
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows, 120);
    assert_int_equal(r.rows_added, 20);
    assert_view_rows(&e, &r, true);

    tl_llm_add(e.pg, 61, 61, 3);
    tl_llm_add(e.pg, 5, 5, 0); /* a second dataset row for a stored id: its 2 results show twice */
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows, 125);
    assert_int_equal(r.rows_added, 5);
    assert_view_rows(&e, &r, false);

    tl_llm_add(e.pg, 5, 5, 1); /* a third copy and one more result: 3 × 3 rows for id 5 */
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_int_equal(r.rows, 130);
    assert_view_rows(&e, &r, false);
    tl_llm_assert_synced(&e, "monitoring");

    tl_sync_ok(e.st, &e.cfg, "monitoring", true, &r);
    assert_false(r.incremental);
    assert_int_equal(r.rows, 130);
    assert_view_rows(&e, &r, false);

    /* Unique again after a full rebuild; then a repeat inside one batch. */
    tl_pg_exec(e.pg, "DELETE FROM llm_traces WHERE id > 61");
    tl_sync_ok(e.st, &e.cfg, "monitoring", true, &r);
    assert_view_rows(&e, &r, true);
    tl_pg_exec(e.pg, "INSERT INTO llm_traces (trace_id, \"timestamp\", prompt) "
                     "SELECT md5('trace' || 70)::uuid, now(), 'copy ' || c FROM generate_series(1, 2) AS c");
    tl_llm_add(e.pg, 70, 70, 2);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_true(r.incremental);
    assert_view_rows(&e, &r, false);
    tl_llm_assert_synced(&e, "monitoring");
    tl_env_close(&e);
}

/* Over 200,000 loaded ids the uniqueness check runs in slices of the id
 * hash (each GROUP BY must fit memory_limit): a repeat is still found, in a
 * full load and in a large incremental batch. */
static void test_uniqueness_checked_in_slices(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "sliced_ids", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 10, 2);
    tl_pg_exec(e.pg,
               "INSERT INTO llm_traces (trace_id, \"timestamp\", prompt) SELECT md5('trace' || i)::uuid, "
               "now(), 'bulk' FROM generate_series(11, 250010) AS i");
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_int_equal(r.tables[0].rows_loaded, 250010);
    assert_view_rows(&e, &r, true);

    tl_pg_exec(e.pg,
               "INSERT INTO llm_traces (trace_id, \"timestamp\", prompt) SELECT md5('trace' || i)::uuid, "
               "now(), 'more' FROM generate_series(250011, 460010) AS i");
    tl_pg_exec(e.pg, "INSERT INTO llm_traces (trace_id, \"timestamp\", prompt) "
                     "VALUES (md5('trace' || 3)::uuid, now(), 'a second copy of trace 3')");
    int64_t again = tl_duck_at_max(e.con, "monitoring_dataset", "created_at");
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.tables[0].rows_loaded, 210001 + again); /* and the rows at the watermark */
    assert_int_equal(r.rows, 22);
    assert_view_rows(&e, &r, false);

    tl_pg_exec(e.pg, "DELETE FROM llm_traces WHERE prompt = 'a second copy of trace 3'");
    tl_sync_ok(e.st, &e.cfg, "monitoring", true, &r);
    assert_int_equal(r.rows, 20);
    assert_view_rows(&e, &r, true);
    tl_pg_exec(e.pg,
               "INSERT INTO llm_traces (trace_id, \"timestamp\", prompt) SELECT md5('trace' || 7)::uuid, "
               "now(), 'copy ' || c FROM generate_series(1, 2) AS c");
    tl_sync_ok(e.st, &e.cfg, "monitoring", true, &r);
    assert_int_equal(r.rows, 24);
    assert_view_rows(&e, &r, false);
    tl_env_close(&e);
}

/* Rows 1 µs apart straddling the watermark, across the New York DST switch
 * (2026-03-08 07:00 UTC): each incremental sync takes exactly the rows past
 * the watermark, for timestamptz and for timestamp columns. */
static void test_watermarks_exact_to_the_microsecond(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "exact_wm", "");
    tl_pg_exec(e.pg, "CREATE TABLE wm_a (k int PRIMARY KEY, created_at timestamptz NOT NULL)");
    tl_pg_exec(e.pg, "CREATE TABLE wm_b (k int PRIMARY KEY, created_at timestamptz NOT NULL, tz text)");
    tl_pg_exec(e.pg, "CREATE TABLE wm_local (k int PRIMARY KEY, created_at timestamp NOT NULL)");
    /* 20 rows: 06:59:59.999990 .. 07:00:00.000009 UTC. */
    tl_pg_exec(e.pg,
               "INSERT INTO wm_a SELECT i, timestamptz '2026-03-08 06:59:59.99999+00' + i * interval '1 "
               "microsecond' FROM generate_series(0, 19) AS i");
    tl_pg_exec(e.pg, "INSERT INTO wm_b SELECT k, created_at, 'x' FROM wm_a");
    tl_pg_exec(e.pg, "INSERT INTO wm_local SELECT i, timestamp '2026-03-08 01:59:59.99999' + i * interval '1 "
                     "microsecond' FROM generate_series(0, 19) AS i");
    tl_env_source(
        &e, "wm",
        "  dataset_query: SELECT k AS dataset_id, created_at FROM wm_a\n"
        "  results_query: SELECT k AS dataset_id, created_at, current_setting('TimeZone') AS session_tz "
        "FROM wm_b\n"
        "  incremental_column: created_at\n");
    tl_env_source(&e, "local",
                  "  query: SELECT k, created_at FROM wm_local\n  incremental_column: created_at\n");

    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "wm", false, &r);
    assert_false(r.incremental);
    tl_sync_ok(e.st, &e.cfg, "local", false, &r);
    assert_false(r.incremental);
    char *tz = tl_duck_scalar(e.con, "SELECT DISTINCT session_tz FROM wm_results");
    assert_string_equal(tz, "America/New_York");
    free(tz);
    json_t *s = tl_sync_status(e.st, &e.cfg, "wm");
    assert_string_equal(status_watermark(s, "wm_dataset"), "2026-03-08 07:00:00.000009+00");
    assert_string_equal(status_watermark(s, "wm_results"), "2026-03-08 07:00:00.000009+00");
    json_decref(s);
    s = tl_sync_status(e.st, &e.cfg, "local");
    assert_string_equal(status_watermark(s, "local_data"), "2026-03-08 02:00:00.000009");
    json_decref(s);

    /* Rounds of 5 rows at watermark + 1..5 µs. */
    static const char *const want[] = {"2026-03-08 07:00:00.000014+00", "2026-03-08 07:00:00.000019+00",
                                       "2026-03-08 07:00:00.000024+00", "2026-03-08 07:00:00.000029+00"};
    static const char *const want_local[] = {"2026-03-08 02:00:00.000014", "2026-03-08 02:00:00.000019",
                                             "2026-03-08 02:00:00.000024", "2026-03-08 02:00:00.000029"};
    for (int round = 0; round < 4; round++) {
        int k0 = 20 + round * 5;
        tl_pg_exec(e.pg,
                   "INSERT INTO wm_a SELECT i, timestamptz '2026-03-08 06:59:59.99999+00' + i * interval '1 "
                   "microsecond' FROM generate_series(%d, %d) AS i",
                   k0, k0 + 4);
        tl_pg_exec(e.pg, "INSERT INTO wm_b SELECT k, created_at, 'x' FROM wm_a WHERE k >= %d", k0);
        tl_pg_exec(e.pg,
                   "INSERT INTO wm_local SELECT i, timestamp '2026-03-08 01:59:59.99999' + i * interval '1 "
                   "microsecond' FROM generate_series(%d, %d) AS i",
                   k0, k0 + 4);
        tl_sync_ok(e.st, &e.cfg, "wm", false, &r);
        assert_true(r.incremental);
        /* The 5 new rows and the one at the watermark, read again. */
        assert_int_equal(r.tables[0].rows_loaded, 6);
        assert_int_equal(r.tables[1].rows_loaded, 6);
        assert_int_equal(r.rows_added, 5);
        assert_int_equal(r.rows, k0 + 5);
        tl_sync_ok(e.st, &e.cfg, "local", false, &r);
        assert_true(r.incremental);
        assert_int_equal(r.tables[0].rows_loaded, 6);
        assert_int_equal(r.rows, k0 + 5);
        for (int t = 0; t < 3; t++) {
            const char *table = (const char *[]){"wm_dataset", "wm_results", "local_data"}[t];
            const char *key = t == 2 ? "k" : "dataset_id";
            assert_int_equal(tl_duck_int(e.con, "SELECT count(DISTINCT %s) FROM %s", key, table), k0 + 5);
            assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM %s", table), k0 + 5);
        }
        s = tl_sync_status(e.st, &e.cfg, "wm");
        assert_string_equal(status_watermark(s, "wm_dataset"), want[round]);
        assert_string_equal(status_watermark(s, "wm_results"), want[round]);
        assert_int_equal(status_int(s, "incremental_rows"), 5);
        json_decref(s);
        s = tl_sync_status(e.st, &e.cfg, "local");
        assert_string_equal(status_watermark(s, "local_data"), want_local[round]);
        json_decref(s);
    }
    char *want_sum = tl_pg_checksum(e.pg, "wm_a", "k,created_at:ts");
    char *got_sum =
        tl_duck_checksum(e.con, "(SELECT dataset_id AS k, created_at FROM wm_dataset)", "k,created_at:ts");
    assert_string_equal(got_sum, want_sum);
    free(want_sum);
    free(got_sum);
    want_sum = tl_pg_checksum(e.pg, "wm_local", "k,created_at:ts");
    got_sum = tl_duck_checksum(e.con, "local_data", "k,created_at:ts");
    assert_string_equal(got_sum, want_sum);
    free(want_sum);
    free(got_sum);
    tl_env_close(&e);
}

static void test_forced_full_rebuilds(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "forced_full", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 150, 2);
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    tl_llm_add(e.pg, 151, 160, 2);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_true(r.incremental);

    /* Corrections an incremental sync cannot see: edits, deletes, and a row
     * back-dated below the watermark. */
    tl_pg_exec(e.pg, "UPDATE llm_traces SET prompt = 'corrected ' || id WHERE id %% 10 = 0");
    tl_pg_exec(e.pg, "DELETE FROM llm_metric_results WHERE id %% 7 = 0");
    tl_pg_exec(e.pg, "INSERT INTO llm_metric_results (trace_id, metric_name, metric_value, created_at) "
                     "VALUES (md5('trace3')::uuid, 'late', 0.5, timestamptz '2000-01-01 00:00:00+00')");
    int64_t want_rows = tl_pg_int(e.pg, "SELECT count(*) FROM llm_metric_results");

    tl_sync_ok(e.st, &e.cfg, "monitoring", true, &r);
    assert_false(r.incremental);
    assert_false(r.tables[0].incremental);
    assert_false(r.tables[1].incremental);
    assert_int_equal(r.rows, want_rows);
    assert_int_equal(r.tables[0].rows_loaded, 160);
    assert_int_equal(r.tables[1].rows_loaded, want_rows);
    tl_llm_assert_synced(&e, "monitoring");
    assert_no_staging(&e);
    json_t *s = tl_sync_status(e.st, &e.cfg, "monitoring");
    assert_string_equal(tl_json_str(s, "state"), "ready");
    assert_string_equal(tl_json_str(s, "sync_type"), "full");
    assert_int_equal(status_int(s, "rows"), want_rows);
    assert_watermarks_match_pg(&e, s);
    json_decref(s);

    /* Forcing again is still full and changes nothing. */
    tl_sync_ok(e.st, &e.cfg, "monitoring", true, &r);
    assert_false(r.incremental);
    assert_int_equal(r.rows, want_rows);
    assert_int_equal(r.rows_added, 0);
    tl_llm_assert_synced(&e, "monitoring");
    tl_env_close(&e);
}

static void test_reset_watermarks_makes_next_sync_full(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "reset_wm", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 100, 2);
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);

    ds_error err;
    assert_true(sync_reset_watermarks(e.st, tl_source(&e.cfg, "monitoring"), &err));
    json_t *s = tl_sync_status(e.st, &e.cfg, "monitoring");
    json_t *wms = json_object_get(s, "watermarks");
    assert_int_equal(json_object_size(wms), 2);
    assert_true(json_is_null(json_object_get(wms, "monitoring_dataset")));
    assert_true(json_is_null(json_object_get(wms, "monitoring_results")));
    /* The data stays until the rebuild. */
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM monitoring_data"), 200);
    json_decref(s);

    /* A row back-dated below the old watermark shows that the rebuild reads everything. */
    tl_pg_exec(e.pg, "INSERT INTO llm_metric_results (trace_id, metric_name, metric_value, created_at) "
                     "VALUES (md5('trace3')::uuid, 'late', 0.5, timestamptz '2000-01-01 00:00:00+00')");
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_false(r.incremental);
    assert_false(r.tables[0].incremental);
    assert_false(r.tables[1].incremental);
    assert_int_equal(r.rows, 201);
    tl_llm_assert_synced(&e, "monitoring");
    s = tl_sync_status(e.st, &e.cfg, "monitoring");
    assert_string_equal(tl_json_str(s, "sync_type"), "full");
    assert_watermarks_match_pg(&e, s);
    json_decref(s);

    /* And the one after it is incremental again. */
    tl_llm_add(e.pg, 101, 105, 2);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows_added, 10);
    tl_llm_assert_synced(&e, "monitoring");
    tl_env_close(&e);
}

/* A column added or retyped in PostgreSQL: the would-be incremental sync
 * rebuilds the table in full with the new columns. */
static void test_schema_change_rebuilds(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "schema_change", "");
    tl_pg_exec(e.pg, "CREATE TABLE items (id int PRIMARY KEY, score int, label text, "
                     "created_at timestamptz NOT NULL DEFAULT clock_timestamp())");
    tl_pg_exec(
        e.pg,
        "INSERT INTO items (id, score, label) SELECT i, i * 3, 'l' || i FROM generate_series(1, 500) i");
    tl_env_source(&e, "items", "  query: SELECT * FROM items\n  incremental_column: created_at\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "items", false, &r);
    assert_false(r.incremental);
    tl_pg_exec(
        e.pg,
        "INSERT INTO items (id, score, label) SELECT i, i * 3, 'l' || i FROM generate_series(501, 520) i");
    tl_sync_ok(e.st, &e.cfg, "items", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows_added, 20);

    /* A new column: full rebuild; old rows get its default from PostgreSQL. */
    tl_pg_exec(e.pg, "ALTER TABLE items ADD COLUMN extra text DEFAULT 'dflt'");
    tl_pg_exec(e.pg, "INSERT INTO items (id, score, label, extra) VALUES (521, 1, 'new', 'set')");
    tl_sync_ok(e.st, &e.cfg, "items", false, &r);
    assert_false(r.incremental);
    assert_false(r.tables[0].incremental);
    assert_int_equal(r.tables[0].rows_loaded, 521);
    assert_int_equal(r.rows, 521);
    char *cols = columns_of(&e, "items_data");
    assert_string_equal(cols,
                        "id INTEGER, score INTEGER, label VARCHAR, created_at TIMESTAMP WITH TIME ZONE, "
                        "extra VARCHAR");
    free(cols);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM items_data WHERE extra = 'dflt'"), 520);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM items_data WHERE extra = 'set'"), 1);
    json_t *s = tl_sync_status(e.st, &e.cfg, "items");
    assert_string_equal(tl_json_str(s, "sync_type"), "full");
    json_decref(s);

    /* A changed type: full rebuild with the new DuckDB type. */
    tl_pg_exec(e.pg, "ALTER TABLE items ALTER COLUMN score TYPE bigint");
    tl_pg_exec(e.pg, "UPDATE items SET score = 5000000000 WHERE id = 1");
    tl_sync_ok(e.st, &e.cfg, "items", false, &r);
    assert_false(r.incremental);
    cols = columns_of(&e, "items_data");
    assert_string_equal(cols, "id INTEGER, score BIGINT, label VARCHAR, created_at TIMESTAMP WITH TIME ZONE, "
                              "extra VARCHAR");
    free(cols);
    assert_int_equal(tl_duck_int(e.con, "SELECT score FROM items_data WHERE id = 1"), 5000000000LL);
    char *want = tl_pg_checksum(e.pg, "items", "id,score,label,created_at:ts,extra");
    char *got = tl_duck_checksum(e.con, "items_data", "id,score,label,created_at:ts,extra");
    assert_string_equal(got, want);
    free(want);
    free(got);

    /* Unchanged columns again: back to incremental. */
    tl_pg_exec(e.pg, "INSERT INTO items (id, score, label) VALUES (522, 2, 'after')");
    tl_sync_ok(e.st, &e.cfg, "items", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows_added, 1);

    /* Split source: only the changed query's table is rebuilt, the view
     * shows the new type, and the other table still appends. */
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 50, 2);
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    tl_pg_exec(e.pg, "ALTER TABLE llm_metric_results ALTER COLUMN metric_value TYPE numeric(9,5)");
    tl_llm_add(e.pg, 51, 55, 2);
    int64_t again = tl_duck_at_max(e.con, "monitoring_dataset", "created_at");
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_true(r.tables[0].incremental);
    assert_int_equal(r.tables[0].rows_loaded, 5 + again); /* and those at the watermark */
    assert_false(r.tables[1].incremental);
    assert_int_equal(r.tables[1].rows_loaded, 110);
    assert_int_equal(r.rows, 110);
    char *type = tl_duck_scalar(e.con, "SELECT data_type FROM information_schema.columns WHERE table_name = "
                                       "'monitoring_data' AND column_name = 'metric_score'");
    assert_string_equal(type, "DECIMAL(9,5)");
    free(type);
    s = tl_sync_status(e.st, &e.cfg, "monitoring");
    json_t *tables = json_object_get(s, "tables");
    assert_string_equal(tl_json_str(json_object_get(tables, "monitoring_dataset"), "mode"), "incremental");
    assert_string_equal(tl_json_str(json_object_get(tables, "monitoring_results"), "mode"), "full");
    json_decref(s);
    tl_llm_assert_synced(&e, "monitoring");
    tl_env_close(&e);
}

/* An unconstrained numeric is a DOUBLE in DuckDB, so its max cannot be an
 * exact watermark: such a query is read in full (no duplicates), with a
 * warning; given a precision it is an exact DECIMAL and works incrementally. */
static void test_inexact_numeric_watermark(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "numeric_wm", "");
    tl_pg_exec(e.pg, "CREATE TABLE seqs (k int PRIMARY KEY, seq numeric NOT NULL)");
    /* 2^53 + 1 and 2^53: the same DOUBLE. */
    tl_pg_exec(e.pg, "INSERT INTO seqs VALUES (1, 9007199254740993), (2, 9007199254740992)");
    tl_env_source(&e, "loose", "  query: SELECT k, seq FROM seqs\n  incremental_column: seq\n");
    sync_report r;
    for (int round = 0; round < 3; round++) {
        tl_sync_ok(e.st, &e.cfg, "loose", false, &r);
        assert_false(r.incremental);
        assert_int_equal(r.rows, 2);
        assert_int_equal(r.nwarnings, 1);
        assert_string_equal(r.warnings[0],
                            "loose: incremental_column \"seq\" of query has type numeric, which cannot "
                            "be used for it; query is read in full on every sync. Fix: give it a "
                            "precision in the query, e.g. ::numeric(20,0), so DuckDB stores it exactly");
    }

    tl_env_source(&e, "exact",
                  "  query: SELECT k, seq::numeric(20,0) AS seq FROM seqs\n  incremental_column: seq\n");
    tl_sync_ok(e.st, &e.cfg, "exact", false, &r);
    assert_false(r.incremental);
    assert_int_equal(r.nwarnings, 0);
    json_t *s = tl_sync_status(e.st, &e.cfg, "exact");
    assert_string_equal(status_watermark(s, "exact_data"), "9007199254740993");
    json_decref(s);
    tl_sync_ok(e.st, &e.cfg, "exact", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows_added, 0);
    tl_pg_exec(e.pg, "INSERT INTO seqs VALUES (3, 9007199254740995), (4, 9007199254740994)");
    tl_sync_ok(e.st, &e.cfg, "exact", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows_added, 2);
    assert_int_equal(r.rows, 4);
    s = tl_sync_status(e.st, &e.cfg, "exact");
    assert_string_equal(status_watermark(s, "exact_data"), "9007199254740995");
    json_decref(s);
    char *all = tl_duck_scalar(e.con, "SELECT string_agg(seq::VARCHAR, ',' ORDER BY k) FROM exact_data");
    assert_string_equal(all, "9007199254740993,9007199254740992,9007199254740995,9007199254740994");
    free(all);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_sync_is_full),
        cmocka_unit_test(test_incremental_appends_only_new_rows),
        cmocka_unit_test(test_view_rows_with_repeated_dataset_ids),
        cmocka_unit_test(test_uniqueness_checked_in_slices),
        cmocka_unit_test(test_watermarks_exact_to_the_microsecond),
        cmocka_unit_test(test_forced_full_rebuilds),
        cmocka_unit_test(test_reset_watermarks_makes_next_sync_full),
        cmocka_unit_test(test_schema_change_rebuilds),
        cmocka_unit_test(test_inexact_numeric_watermark),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
