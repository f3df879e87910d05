/* Quiet syncs: an incremental sync that finds nothing new writes nothing to
 * the DuckDB file (no WAL write, no fsync), yet the status it serves says
 * it ran; its record is saved by the next write, when the saved one is
 * STATUS_QUIET_SAVE_S old, or when the store closes (a restart, the end of
 * `duckstore sync`). And `duckstore -v` names each step of a sync. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "sync/status.h"
#include "tl_http.h"

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("sync_quiet"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

static const char *bin(void)
{
    const char *b = getenv("DUCKSTORE_BIN");
    if (b == NULL || b[0] == '\0')
        fail_msg("DUCKSTORE_BIN is not set (ctest sets it)");
    return b;
}

/* What the file system says of the DuckDB file and its WAL. */
typedef struct file_facts {
    bool exists;
    off_t size;
    struct timespec mtime;
} file_facts;

static file_facts facts_of(const char *path)
{
    struct stat sb;
    file_facts f = {0};
    if (stat(path, &sb) == 0)
        f = (file_facts){.exists = true, .size = sb.st_size, .mtime = sb.st_mtim};
    return f;
}

static void assert_same_facts(const file_facts *a, const file_facts *b, const char *what)
{
    if (a->exists != b->exists || a->size != b->size || a->mtime.tv_sec != b->mtime.tv_sec ||
        a->mtime.tv_nsec != b->mtime.tv_nsec)
        fail_msg(
            "%s changed: %s, %lld bytes, mtime %lld.%09ld before; %s, %lld bytes, mtime %lld.%09ld after",
            what, a->exists ? "present" : "absent", (long long)a->size, (long long)a->mtime.tv_sec,
            a->mtime.tv_nsec, b->exists ? "present" : "absent", (long long)b->size,
            (long long)b->mtime.tv_sec, b->mtime.tv_nsec);
}

/* The status document the file holds (not the one served). */
static json_t *saved_status(tl_env *e, const char *source)
{
    char *text =
        tl_duck_scalar(e->con, "SELECT status FROM _duckstore.sync_status WHERE source = '%s'", source);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    if (!json_is_object(doc))
        fail_msg("the file holds no status of %s", source);
    return doc;
}

static time_t iso_time(const json_t *doc, const char *key)
{
    time_t t = 0;
    if (!sync_parse_iso(tl_json_str(doc, key), &t))
        fail_msg("%s is not a time: %s", key, tl_json_str(doc, key) ? tl_json_str(doc, key) : "null");
    return t;
}

/* Status times have whole seconds: wait (bounded) until the clock is past
 * `after`, so that the next record's time tells it apart. */
static void wait_past(time_t after)
{
    time_t deadline = time(NULL) + 10;
    while (time(NULL) <= after) {
        if (time(NULL) > deadline)
            fail_msg("the clock did not advance");
        struct timespec ms = {0, 10 * 1000 * 1000};
        nanosleep(&ms, NULL);
    }
}

static void open_llm(tl_env *e, const char *schema)
{
    tl_env_open(e, g_conninfo, schema, "");
    tl_llm_create(e->pg);
    tl_llm_add(e->pg, 1, 40, 3);
    tl_env_source(e, "monitoring", TL_LLM_SOURCE_YAML);
}

/* Closes the store (running its close hook) and opens it again, as a
 * restart does. */
static void reopen_store(tl_env *e)
{
    duckdb_disconnect(&e->con);
    store_close(e->st);
    e->st = NULL;
    ds_error err;
    if (!store_open(e->store_path, &e->st, &err))
        fail_msg("%s", err.msg);
    e->con = tl_store_connect(e->st);
}

static void test_quiet_sync_writes_nothing(void **state)
{
    (void)state;
    tl_env e;
    open_llm(&e, "quiet_nothing");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &report);
    tl_llm_add(e.pg, 41, 50, 3);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &report);
    assert_true(report.incremental);
    assert_int_equal(report.rows_added, 30);
    /* The watermark settles on the last row; from then on nothing changes. */
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &report);
    json_t *before = tl_sync_status(e.st, &e.cfg, "monitoring");
    time_t last = iso_time(before, "last_attempt");
    char wal[700];
    snprintf(wal, sizeof wal, "%s.wal", e.store_path);
    file_facts db0 = facts_of(e.store_path), wal0 = facts_of(wal);
    json_t *saved = saved_status(&e, "monitoring");
    time_t saved_at = iso_time(saved, "last_attempt");
    json_decref(saved);

    for (int i = 0; i < 3; i++) {
        wait_past(last);
        tl_sync_ok(e.st, &e.cfg, "monitoring", false, &report);
        assert_true(report.incremental);
        assert_int_equal(report.rows_added, 0);
        assert_int_equal(report.tables[0].rows_inserted + report.tables[1].rows_inserted, 0);
        /* Served: the sync ran now and found nothing. */
        json_t *now = tl_sync_status(e.st, &e.cfg, "monitoring");
        assert_string_equal(tl_json_str(now, "state"), "ready");
        assert_true(iso_time(now, "last_attempt") > last);
        assert_true(iso_time(now, "last_sync") > last);
        assert_true(iso_time(now, "last_incremental") > last);
        assert_int_equal(json_integer_value(json_object_get(now, "incremental_rows")), 0);
        assert_int_equal(json_integer_value(json_object_get(now, "rows")), 150);
        assert_null(json_object_get(now, "status_save_error"));
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(now, "watermarks"), "monitoring_results")),
            json_string_value(json_object_get(json_object_get(before, "watermarks"), "monitoring_results")));
        last = iso_time(now, "last_attempt");
        json_decref(now);
    }
    /* Not a byte of the file or its WAL was written. */
    file_facts db1 = facts_of(e.store_path), wal1 = facts_of(wal);
    assert_same_facts(&db0, &db1, "the DuckDB file");
    assert_same_facts(&wal0, &wal1, "the WAL file");
    saved = saved_status(&e, "monitoring");
    assert_int_equal(iso_time(saved, "last_attempt"), saved_at);
    json_decref(saved);
    tl_llm_assert_synced(&e, "monitoring");

    /* A restart shows the last quiet sync: the store's close saved it. */
    reopen_store(&e);
    saved = saved_status(&e, "monitoring");
    assert_int_equal(iso_time(saved, "last_attempt"), last);
    assert_string_equal(tl_json_str(saved, "state"), "ready");
    assert_int_equal(json_integer_value(json_object_get(saved, "incremental_rows")), 0);
    json_decref(saved);
    json_decref(before);
    tl_env_close(&e);
}

/* New rows after quiet syncs: the sync writes its record with theirs, and
 * what the file holds is what is served. */
static void test_rows_after_quiet_syncs(void **state)
{
    (void)state;
    tl_env e;
    open_llm(&e, "quiet_rows");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &report);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &report);
    json_t *doc = tl_sync_status(e.st, &e.cfg, "monitoring");
    wait_past(iso_time(doc, "last_attempt"));
    json_decref(doc);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &report);
    assert_int_equal(report.rows_added, 0);
    tl_llm_add(e.pg, 41, 45, 2);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &report);
    assert_int_equal(report.rows_added, 10);
    json_t *served = tl_sync_status(e.st, &e.cfg, "monitoring");
    json_t *saved = saved_status(&e, "monitoring");
    assert_string_equal(tl_json_str(saved, "last_attempt"), tl_json_str(served, "last_attempt"));
    assert_int_equal(json_integer_value(json_object_get(saved, "incremental_rows")), 10);
    assert_int_equal(json_integer_value(json_object_get(saved, "rows")), 130);
    json_decref(saved);
    json_decref(served);
    tl_llm_assert_synced(&e, "monitoring");
    tl_env_close(&e);
}

/* A saved record STATUS_QUIET_SAVE_S old, or one that does not say ready,
 * is rewritten by a quiet sync: a crash then loses at most that much of
 * the status's times, and never shows an error a sync has cleared. */
static void test_old_record_is_saved(void **state)
{
    (void)state;
    tl_env e;
    open_llm(&e, "quiet_old");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &report);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &report);
    json_t *saved = saved_status(&e, "monitoring");
    char old[SYNC_TIME_CAP];
    time_t then = time(NULL) - STATUS_QUIET_SAVE_S - 5;
    strftime(old, sizeof old, "%Y-%m-%dT%H:%M:%S+00:00", gmtime(&then));
    json_object_set_new(saved, "last_attempt", json_string(old));
    char *text = json_dumps(saved, JSON_COMPACT);
    char *lit = tl_keep(store_quote_literal(text));
    tl_duck_exec(e.con, "UPDATE _duckstore.sync_status SET status = %s WHERE source = 'monitoring'", lit);
    store_forget_metadata(e.st);
    free(text);
    json_decref(saved);
    time_t start = time(NULL);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &report);
    assert_int_equal(report.rows_added, 0);
    saved = saved_status(&e, "monitoring");
    assert_true(iso_time(saved, "last_attempt") >= start);

    /* A saved failure that kept the watermarks (a configuration error) is
     * replaced by the quiet sync after it, at once. */
    json_object_set_new(saved, "state", json_string("error"));
    json_object_set_new(saved, "error", json_string("monitoring_db.yaml:3: a configuration error"));
    text = json_dumps(saved, JSON_COMPACT);
    lit = tl_keep(store_quote_literal(text));
    tl_duck_exec(e.con, "UPDATE _duckstore.sync_status SET status = %s WHERE source = 'monitoring'", lit);
    store_forget_metadata(e.st);
    free(text);
    json_decref(saved);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &report);
    assert_int_equal(report.rows_added, 0);
    saved = saved_status(&e, "monitoring");
    assert_string_equal(tl_json_str(saved, "state"), "ready");
    assert_null(json_string_value(json_object_get(saved, "error")));
    json_decref(saved);
    tl_free_kept();
    tl_env_close(&e);
}

/* Rows without a value in the incremental column are read by every sync
 * and merged against the stored ones: never stored twice, and a sync that
 * meets only them again is quiet. */
static void test_rows_without_watermark_value(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "quiet_nulls", "");
    tl_pg_exec(e.pg, "CREATE TABLE events (id int PRIMARY KEY, v text, created_at timestamptz)");
    tl_pg_exec(e.pg, "INSERT INTO events SELECT g, 'v' || g, CASE WHEN g %% 4 = 0 THEN NULL ELSE "
                     "timestamptz '2026-01-01' + g * interval '1 minute' END FROM generate_series(1, 40) g");
    tl_env_source(&e, "ev",
                  "  query: SELECT id, v, created_at FROM events\n  incremental_column: created_at\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_int_equal(report.rows, 40);
    tl_pg_exec(e.pg, "INSERT INTO events SELECT g, 'v' || g, CASE WHEN g %% 4 = 0 THEN NULL ELSE "
                     "timestamptz '2026-01-01' + g * interval '1 minute' END FROM generate_series(41, 60) g");
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_true(report.incremental);
    assert_int_equal(report.rows_added, 20);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM ev_data WHERE created_at IS NULL"), 15);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(DISTINCT id) FROM ev_data"), 60);
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_int_equal(report.rows_added, 0);
    /* Every stored NULL row was read again and none added. */
    assert_int_equal(report.tables[0].rows_loaded, 16);
    assert_int_equal(report.tables[0].rows_inserted, 0);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM ev_data"), 60);
    tl_env_close(&e);
}

/* A re-read of rows the process knows are stored (the last batch's) is not
 * merged (src/sync/memo.h); a row among them that is new (an identical
 * copy, another row at the watermark's time) is; a restart or a full sync
 * forgets what was known, and a keyed source never skips its merge. */
/* Two syncs in a row, each reading `loaded` rows again and finding them
 * stored: nothing added, `rows` in all. */
static void assert_found_stored(tl_env *e, const char *source, int64_t loaded, int64_t rows)
{
    sync_report report;
    for (int i = 0; i < 2; i++) {
        tl_sync_ok(e->st, &e->cfg, source, false, &report);
        assert_int_equal(report.tables[0].rows_loaded, loaded);
        assert_true(report.tables[0].stored_already);
        assert_int_equal(report.rows_added, 0);
        assert_int_equal(report.rows, rows);
    }
}

static void test_known_rows_are_not_merged(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "quiet_known", "");
    tl_pg_exec(e.pg, "CREATE TABLE ev (v text, n int, created_at timestamptz)");
    tl_pg_exec(e.pg, "INSERT INTO ev SELECT 'v' || g, g, timestamptz '2026-01-01' + g * interval '1 minute' "
                     "FROM generate_series(1, 5) g");
    tl_env_source(&e, "ev", "  query: SELECT v, n, created_at FROM ev\n  incremental_column: created_at\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_false(report.incremental);
    /* A full load is not remembered: the first re-read is merged. */
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_true(report.incremental);
    assert_int_equal(report.tables[0].rows_loaded, 1);
    assert_false(report.tables[0].stored_already);
    assert_found_stored(&e, "ev", 1, 5);
    /* An identical copy of the row at the watermark is a new row. */
    tl_pg_exec(e.pg, "INSERT INTO ev SELECT v, n, created_at FROM ev WHERE n = 5");
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_false(report.tables[0].stored_already);
    assert_int_equal(report.rows_added, 1);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM ev_data WHERE n = 5"), 2);
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_int_equal(report.tables[0].rows_loaded, 2);
    assert_true(report.tables[0].stored_already);
    assert_int_equal(report.rows, 6);
    /* Another row at the same time: new too. */
    tl_pg_exec(e.pg, "INSERT INTO ev SELECT 'other', 6, created_at FROM ev WHERE n = 5 LIMIT 1");
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_false(report.tables[0].stored_already);
    assert_int_equal(report.rows_added, 1);
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_true(report.tables[0].stored_already);
    /* A restart (a new DuckDB instance) knows nothing. */
    reopen_store(&e);
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_false(report.tables[0].stored_already);
    assert_int_equal(report.rows_added, 0);
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_true(report.tables[0].stored_already);
    /* Nor does a full sync leave anything known. */
    tl_sync_ok(e.st, &e.cfg, "ev", true, &report);
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_false(report.tables[0].stored_already);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM ev_data"), 7);
    assert_string_equal(tl_keep(tl_pg_checksum(e.pg, "ev", "v,n,created_at:ts")),
                        tl_keep(tl_duck_checksum(e.con, "ev_data", "v,n,created_at:ts")));
    /* Upserts replace by key: always merged. */
    tl_env_source(&e, "ev",
                  "  query: SELECT v, n, created_at FROM ev\n  incremental_column: created_at\n"
                  "  unique_key: v\n");
    tl_pg_exec(e.pg, "DELETE FROM ev WHERE n = 5 AND ctid <> (SELECT min(ctid) FROM ev WHERE n = 5)");
    tl_sync_ok(e.st, &e.cfg, "ev", true, &report);
    for (int i = 0; i < 2; i++) {
        tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
        assert_true(report.incremental);
        assert_false(report.tables[0].stored_already);
        assert_int_equal(report.rows, 6);
    }
    tl_env_close(&e);
}

/* A read that finds no row at all (the row at the watermark was deleted),
 * and re-reads too large to keep (past 64 KB at the watermark): the
 * first stores nothing and changes nothing, the second is merged as
 * before; both leave the table equal to PostgreSQL's. */
static void test_quiet_reads_of_none_and_of_many(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "quiet_edges", "");
    tl_pg_exec(e.pg, "CREATE TABLE big (v text, n int, created_at timestamptz)");
    tl_pg_exec(e.pg, "INSERT INTO big SELECT repeat('x', 1000) || g, g, timestamptz '2026-01-01' "
                     "FROM generate_series(1, 100) g");
    tl_pg_exec(e.pg, "INSERT INTO big VALUES ('last', 101, timestamptz '2026-01-02')");
    tl_env_source(&e, "big",
                  "  query: SELECT v, n, created_at FROM big\n  incremental_column: created_at\n"
                  "  commit_horizon: false\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "big", false, &report);
    tl_sync_ok(e.st, &e.cfg, "big", false, &report);
    tl_sync_ok(e.st, &e.cfg, "big", false, &report);
    assert_true(report.tables[0].stored_already);
    assert_int_equal(report.tables[0].rows_loaded, 1);
    /* The row at the watermark deleted: the read finds nothing. */
    tl_pg_exec(e.pg, "DELETE FROM big WHERE n = 101");
    tl_sync_ok(e.st, &e.cfg, "big", false, &report);
    assert_true(report.incremental);
    assert_int_equal(report.tables[0].rows_loaded, 0);
    assert_int_equal(report.rows_added, 0);
    assert_int_equal(report.rows, 101); /* deletes reach the cache at a full sync */
    /* 100 rows of 1 KB at the watermark, read again by every sync. */
    tl_pg_exec(e.pg, "UPDATE big SET created_at = timestamptz '2026-01-03'");
    tl_sync_ok(e.st, &e.cfg, "big", true, &report);
    for (int i = 0; i < 2; i++) {
        tl_sync_ok(e.st, &e.cfg, "big", false, &report);
        assert_true(report.incremental);
        assert_int_equal(report.tables[0].rows_loaded, 100);
        assert_false(report.tables[0].stored_already);
        assert_int_equal(report.rows_added, 0);
        assert_int_equal(report.rows, 100);
    }
    tl_pg_exec(e.pg, "INSERT INTO big VALUES ('new', 102, timestamptz '2026-01-03')");
    tl_sync_ok(e.st, &e.cfg, "big", false, &report);
    assert_int_equal(report.rows_added, 1);
    /* A batch too large to keep (100 KB of new rows, and rows without a
     * value): its rows at the largest value and its NULL ones are
     * remembered, so the next read, which meets exactly those, is found
     * stored. */
    tl_pg_exec(e.pg, "INSERT INTO big SELECT repeat('z', 1000) || g, 200 + g, timestamptz '2026-01-04' + "
                     "g * interval '1 second' FROM generate_series(1, 100) g");
    tl_pg_exec(e.pg, "INSERT INTO big VALUES ('no time', 301, NULL), ('no time', 302, NULL)");
    tl_sync_ok(e.st, &e.cfg, "big", false, &report);
    assert_int_equal(report.rows_added, 102);
    assert_false(report.tables[0].stored_already);
    assert_found_stored(&e, "big", 3, 203); /* the row at the maximum, the two NULL ones */
    /* A copy of the row at the maximum is new, and found. */
    tl_pg_exec(e.pg, "INSERT INTO big SELECT v, n, created_at FROM big WHERE n = 300");
    tl_sync_ok(e.st, &e.cfg, "big", false, &report);
    assert_false(report.tables[0].stored_already);
    assert_int_equal(report.rows_added, 1);
    assert_string_equal(tl_keep(tl_pg_checksum(e.pg, "big", "v,n,created_at:ts")),
                        tl_keep(tl_duck_checksum(e.con, "big_data", "v,n,created_at:ts")));
    tl_free_kept();
    tl_env_close(&e);
}

/* One sync through the server; waits (bounded) until /metrics counts
 * `done` successful syncs of monitoring. */
static void serve_sync(const tl_server *srv, double done)
{
    tl_http_response resp;
    tl_http_request(srv->port, "POST", "/api/store/sync/monitoring", NULL, NULL, 0, &resp);
    if (resp.status != 202)
        fail_msg("POST /api/store/sync/monitoring: %d %s", resp.status, resp.body ? resp.body : "");
    tl_http_response_free(&resp);
    double deadline = tl_now_ms() + 60000;
    for (;;) {
        char *metrics = tl_server_metrics(srv);
        double ok = tl_metric(metrics, "duckstore_syncs_total{source=\"monitoring\",result=\"success\"}");
        double failed = tl_metric(metrics, "duckstore_syncs_total{source=\"monitoring\",result=\"error\"}");
        free(metrics);
        if (failed > 0)
            fail_msg("a sync failed; log: %s", srv->log_path);
        if (ok >= done)
            return;
        if (tl_now_ms() > deadline)
            fail_msg("the server counted %g syncs, not %g", ok, done);
        tl_sleep_ms(20);
    }
}

/* Under `duckstore serve`: quiet syncs write nothing, the API and /metrics
 * show each of them, and SIGTERM saves the last one's record. */
static void test_serve_quiet_then_stop(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "quiet_serve", "  sync_mode: manual\n");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 40, 3);
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    duckdb_disconnect(&e.con);
    store_close(e.st);
    e.st = NULL;
    char log[700], wal[700];
    snprintf(log, sizeof log, "%s/serve.log", e.dir);
    snprintf(wal, sizeof wal, "%s.wal", e.store_path);
    tl_server srv;
    tl_server_start(&srv, e.dir, log, NULL);
    for (int i = 1; i <= 3; i++)
        serve_sync(&srv, i);
    json_t *ds = tl_server_dataset(&srv, "monitoring_data");
    time_t last = iso_time(ds, "last_attempt");
    json_decref(ds);
    file_facts db0 = facts_of(e.store_path), wal0 = facts_of(wal);
    wait_past(last);
    serve_sync(&srv, 4);
    ds = tl_server_dataset(&srv, "monitoring_data");
    assert_string_equal(tl_json_str(ds, "state"), "ready");
    assert_true(iso_time(ds, "last_attempt") > last);
    assert_int_equal(json_integer_value(json_object_get(ds, "incremental_rows")), 0);
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), 120);
    last = iso_time(ds, "last_attempt");
    json_decref(ds);
    file_facts db1 = facts_of(e.store_path), wal1 = facts_of(wal);
    assert_same_facts(&db0, &db1, "the DuckDB file");
    assert_same_facts(&wal0, &wal1, "the WAL file");
    char *metrics = tl_server_metrics(&srv);
    assert_int_equal((int)tl_metric(metrics, "duckstore_source_state{source=\"monitoring\",state=\"ready\"}"),
                     1);
    free(metrics);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(log);

    ds_error err;
    if (!store_open(e.store_path, &e.st, &err))
        fail_msg("%s", err.msg);
    e.con = tl_store_connect(e.st);
    json_t *saved = saved_status(&e, "monitoring");
    assert_int_equal(iso_time(saved, "last_attempt"), last);
    assert_string_equal(tl_json_str(saved, "state"), "ready");
    json_decref(saved);
    tl_env_close(&e);
}

/* `duckstore -v sync` names each step with its time; the quiet sync's
 * record is saved when the command ends. */
static void test_verbose_steps(void **state)
{
    (void)state;
    tl_env e;
    open_llm(&e, "quiet_verbose");
    duckdb_disconnect(&e.con);
    store_close(e.st);
    e.st = NULL;
    char *out = NULL;
    int rc = tl_run(&out, "'%s' -v --config-dir '%s' sync monitoring", bin(), e.dir);
    tl_keep(out);
    if (rc != 0)
        fail_msg("duckstore sync failed (%d): %s", rc, out);
    static const char *const steps[] = {"monitoring: sync steps (ms): lock ",
                                        "; monitoring_dataset: connect ",
                                        ", describe ",
                                        ", staging ",
                                        ", horizon ",
                                        ", read ",
                                        "; monitoring_results: connect ",
                                        "; merge monitoring_dataset ",
                                        "; merge monitoring_results ",
                                        "; view and counts ",
                                        "; status ",
                                        "; commit ",
                                        "; unlock ",
                                        "; total "};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        tl_assert_contains(out, steps[i]);

    /* Later syncs find nothing: no commit, and the record is saved at exit. */
    rc = tl_run(&out, "'%s' -v --config-dir '%s' sync monitoring", bin(), e.dir);
    tl_keep(out);
    if (rc != 0)
        fail_msg("duckstore sync failed (%d): %s", rc, out);
    ds_error err;
    if (!store_open(e.store_path, &e.st, &err))
        fail_msg("%s", err.msg);
    e.con = tl_store_connect(e.st);
    json_t *saved = saved_status(&e, "monitoring");
    wait_past(iso_time(saved, "last_attempt"));
    json_decref(saved);
    duckdb_disconnect(&e.con);
    store_close(e.st);
    e.st = NULL;
    time_t start = time(NULL);
    rc = tl_run(&out, "'%s' -v --config-dir '%s' sync monitoring", bin(), e.dir);
    tl_keep(out);
    if (rc != 0)
        fail_msg("duckstore sync failed (%d): %s", rc, out);
    tl_assert_contains(out, "; nothing written ");
    tl_assert_contains(out, "; total ");
    if (!store_open(e.store_path, &e.st, &err))
        fail_msg("%s", err.msg);
    e.con = tl_store_connect(e.st);
    saved = saved_status(&e, "monitoring");
    assert_true(iso_time(saved, "last_attempt") >= start);
    assert_string_equal(tl_json_str(saved, "state"), "ready");
    json_decref(saved);
    tl_free_kept();
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quiet_sync_writes_nothing),
        cmocka_unit_test(test_rows_after_quiet_syncs),
        cmocka_unit_test(test_old_record_is_saved),
        cmocka_unit_test(test_rows_without_watermark_value),
        cmocka_unit_test(test_serve_quiet_then_stop),
        cmocka_unit_test(test_verbose_steps),
        cmocka_unit_test(test_known_rows_are_not_merged),
        cmocka_unit_test(test_quiet_reads_of_none_and_of_many),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
