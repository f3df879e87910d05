/* The server's periodic scheduler (runbook section 4) with fractional-minute
 * intervals: repeated incremental syncs with advancing watermarks, a source
 * busy with a manual sync is skipped (never two syncs of one source at
 * once), retry after a failure with auto-recovery, and no periodic syncs
 * when duckdb.enabled is false. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"
#include "tl_http.h"

static char *g_dir, *g_conninfo;
static PGconn *g_pg;

static pid_t g_frozen; /* a PostgreSQL backend a test stopped with SIGSTOP */

static int teardown_test(void **state)
{
    (void)state;
    if (g_frozen > 0)
        kill(g_frozen, SIGCONT);
    g_frozen = 0;
    tl_server_kill_all();
    return 0;
}

/* Writes DIR/NAME/duckdb.yaml plus one source file; returns DIR/NAME. */
static char *make_config(const char *name, const char *duckdb_extra, const char *source_yaml)
{
    char *dir = NULL, *file = NULL;
    if (asprintf(&dir, "%s/%s", g_dir, name) < 0)
        fail_msg("out of memory");
    mkdir(dir, 0755);
    if (asprintf(&file, "%s/duckdb.yaml", dir) < 0)
        fail_msg("out of memory");
    tl_write_filef(file, "duckdb:\n  path: %s/%s.duckdb\n%s", g_dir, name, duckdb_extra);
    free(file);
    if (asprintf(&file, "%s/source_db.yaml", dir) < 0)
        fail_msg("out of memory");
    tl_write_file(file, source_yaml);
    free(file);
    return dir;
}

static char *log_of(const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s.log", g_dir, name) < 0)
        fail_msg("out of memory");
    return p;
}

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("srvsched"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg, "CREATE TABLE events (id serial PRIMARY KEY, created_at timestamptz NOT NULL, v text);"
                     "INSERT INTO events (created_at, v) SELECT timestamptz '2026-02-13 10:00:00+00' + g * "
                     "interval '1 minute', 'e' || g FROM generate_series(1, 10) g;"
                     "CREATE TABLE flaky AS SELECT * FROM events;");
    g_dir = tl_mkdtemp();
    return 0;
}

static int teardown_group(void **state)
{
    (void)state;
    tl_server_kill_all();
    PQfinish(g_pg);
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_conninfo);
    return 0;
}

/* Polls /metrics until the series reaches at least min; returns its value. */
static double wait_metric(const tl_server *srv, const char *series, double min, double timeout_s)
{
    double deadline = tl_now_ms() + timeout_s * 1000;
    for (;;) {
        char *text = tl_server_metrics(srv);
        double v = tl_metric(text, series);
        if (v >= min) {
            free(text);
            return v;
        }
        if (tl_now_ms() > deadline)
            fail_msg("%s stayed below %g for %g s:\n%s", series, min, timeout_s, text);
        free(text);
        tl_sleep_ms(50);
    }
}

static char *max_created(const char *table)
{
    return tl_pg_scalar(
        g_pg, "SELECT to_char(max(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00' FROM %s",
        table);
}

static json_int_t int_of(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        fail_msg("%s is not an integer", key);
    return json_integer_value(v);
}

static const char *watermark(json_t *ds, const char *table)
{
    return json_string_value(json_object_get(json_object_get(ds, "watermarks"), table));
}

static void test_scheduler_runs_incremental_syncs(void **state)
{
    (void)state;
    char source[2048];
    snprintf(source, sizeof source,
             "tick_db:\n  url: \"%s\"\n  query: SELECT id, created_at, v FROM events\n"
             "  incremental_column: created_at\n  refresh_interval_minutes: 0.02\n",
             g_conninfo);
    char *config = make_config("tick", "  sync_mode: manual\n", source), *log = log_of("tick");
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    static const char ok_series[] = "duckstore_syncs_total{source=\"tick\",result=\"success\"}";
    static const char last_series[] = "duckstore_last_success_timestamp_seconds{source=\"tick\"}";

    /* Manual mode: nothing at boot; the first periodic sync comes one
     * interval (1.2 s) after the scheduler starts, and is full. */
    json_t *ds = tl_server_dataset(&srv, "tick_data");
    assert_string_equal(json_string_value(json_object_get(ds, "state")), "not_synced");
    assert_true(json_real_value(json_object_get(ds, "refresh_interval_minutes")) == 0.02);
    json_decref(ds);
    wait_metric(&srv, ok_series, 1, 60);
    ds = tl_server_dataset(&srv, "tick_data");
    assert_string_equal(json_string_value(json_object_get(ds, "sync_type")), "full");
    assert_int_equal(int_of(ds, "rows"), 10);
    char *wm = max_created("events");
    assert_string_equal(watermark(ds, "tick_data"), wm);
    free(wm);
    json_decref(ds);
    char *metrics = tl_server_metrics(&srv);
    double last = tl_metric(metrics, last_series);
    free(metrics);

    /* Rows inserted between ticks arrive incrementally; watermarks advance. */
    static const int inserts[] = {3, 2, 0};
    int rows = 10;
    for (int round = 0; round < 3; round++) {
        if (inserts[round] > 0)
            tl_pg_exec(g_pg,
                       "INSERT INTO events (created_at, v) SELECT (SELECT max(created_at) FROM events) + g * "
                       "interval '1 second', 'round %d' FROM generate_series(1, %d) g",
                       round, inserts[round]);
        rows += inserts[round];
        wait_metric(&srv, ok_series, round + 2, 60);
        /* The tick after the INSERT's commit brings its rows, all at once;
         * on a slow machine that may be a later tick than the next one, and
         * a tick after it may already show +0: the log tells. */
        double deadline = tl_now_ms() + 60000;
        for (;;) {
            ds = tl_server_dataset(&srv, "tick_data");
            if (int_of(ds, "rows") == rows)
                break;
            if (tl_now_ms() > deadline)
                fail_msg("tick_data did not reach %d rows in 60 s (%lld)", rows,
                         (long long)int_of(ds, "rows"));
            json_decref(ds);
            tl_sleep_ms(50);
        }
        assert_string_equal(json_string_value(json_object_get(ds, "sync_type")), "incremental");
        if (inserts[round] == 0) {
            assert_int_equal(int_of(ds, "incremental_rows"), 0);
        } else {
            char line[128], *text = tl_read_file(log);
            snprintf(line, sizeof line, "tick: incremental sync done, %d rows (+%d)", rows, inserts[round]);
            tl_assert_contains(text, line);
            free(text);
        }
        wm = max_created("events");
        assert_string_equal(watermark(ds, "tick_data"), wm);
        free(wm);
        json_decref(ds);
        /* The interval runs from the end of one sync to the next start. */
        metrics = tl_server_metrics(&srv);
        double now = tl_metric(metrics, last_series);
        free(metrics);
        if (now - last < 1.1)
            fail_msg("periodic syncs only %.3f s apart; the interval is 1.2 s", now - last);
        last = now;
    }
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(log);
    char *text = tl_read_file(log);
    assert_true(tl_count(text, "tick: sync started (scheduled)\n") >= 4);
    assert_int_equal(tl_count(text, "tick: sync started (scheduled, full"), 0);
    assert_int_equal(tl_count(text, "tick: full sync done"), 1);
    assert_true(tl_count(text, "tick: incremental sync done") >= 3);
    assert_non_null(strstr(text, "scheduler started"));
    free(text);
    free(config);
    free(log);
}

/* duckstore's backends on the test database, as "pid,pid". */
static char *duckstore_backends(void)
{
    return tl_pg_scalar(g_pg, "SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '') FROM "
                              "pg_stat_activity WHERE application_name = 'duckstore' AND "
                              "datname = current_database()");
}

static void sync_and_count(const tl_server *srv, double nth)
{
    json_decref(tl_http_json(srv->port, "POST", "/api/store/sync/keep", NULL, 202, NULL));
    wait_metric(srv, "duckstore_syncs_total{source=\"keep\",result=\"success\"}", nth, 60);
}

/* The server keeps a source's PostgreSQL connections between syncs (no
 * connect per periodic sync); a kept connection the server has closed
 * meanwhile is replaced, and the sync stays incremental (a stale
 * connection must not fail it and clear the watermarks). */
static void test_connections_kept_between_syncs(void **state)
{
    (void)state;
    char source[2048];
    snprintf(source, sizeof source,
             "keep_db:\n  url: \"%s\"\n  query: SELECT id, created_at, v FROM events\n"
             "  incremental_column: created_at\n",
             g_conninfo);
    char *config = make_config("keep", "  sync_mode: manual\n", source), *log = log_of("keep");
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    char *none = duckstore_backends();
    assert_string_equal(none, "");
    free(none);

    sync_and_count(&srv, 1);
    char *first = duckstore_backends();
    assert_string_not_equal(first, ""); /* kept open after the sync */
    /* One query, one connection, and the one holding the source's lock. */
    assert_non_null(strchr(first, ','));
    assert_null(strchr(strchr(first, ',') + 1, ','));
    sync_and_count(&srv, 2);
    char *second = duckstore_backends();
    assert_string_equal(second, first);

    tl_pg_exec(g_pg, "SELECT pg_terminate_backend(pid) FROM unnest('{%s}'::int[]) AS pid", first);
    tl_pg_exec(g_pg,
               "INSERT INTO events (created_at, v) SELECT max(created_at) + interval '1 s', 'after kill' "
               "FROM events");
    sync_and_count(&srv, 3);
    json_t *ds = tl_server_dataset(&srv, "keep_data");
    assert_string_equal(json_string_value(json_object_get(ds, "sync_type")), "incremental");
    assert_int_equal(int_of(ds, "incremental_rows"), 1);
    assert_int_equal(int_of(ds, "rows"), tl_pg_int(g_pg, "SELECT count(*) FROM events"));
    char *wm = max_created("events");
    assert_string_equal(watermark(ds, "keep_data"), wm);
    free(wm);
    json_decref(ds);
    char *third = duckstore_backends();
    assert_string_not_equal(third, "");
    assert_string_not_equal(third, first);

    /* A kept connection whose backend went silent (frozen with SIGSTOP) is
     * given up after a short check, not query_timeout (600 s here). */
    g_frozen = (pid_t)atoi(third);
    assert_int_equal(kill(g_frozen, SIGSTOP), 0);
    double started = tl_now_ms();
    sync_and_count(&srv, 4);
    double took_s = (tl_now_ms() - started) / 1000;
    kill(g_frozen, SIGCONT);
    g_frozen = 0;
    /* At least the 5 s check; far less than query_timeout (600 s), with
     * room for a loaded machine. */
    if (took_s < 4.0 || took_s > 30.0)
        fail_msg("the sync past a frozen kept connection took %.1f s; the check waits 5 s", took_s);
    ds = tl_server_dataset(&srv, "keep_data");
    assert_string_equal(json_string_value(json_object_get(ds, "sync_type")), "incremental");
    json_decref(ds);

    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(log);
    /* Closed at shutdown (the backend exits a moment after the client). */
    double deadline = tl_now_ms() + 30000;
    char *left = duckstore_backends();
    while (left[0] != '\0' && tl_now_ms() < deadline) {
        free(left);
        tl_sleep_ms(20);
        left = duckstore_backends();
    }
    assert_string_equal(left, "");
    free(left);
    free(first);
    free(second);
    free(third);
    free(config);
    free(log);
}

/* Backends of the harness running the busy source's query right now. */
static int active_busy_queries(void)
{
    char *n = tl_pg_scalar(g_pg, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
                                 "query LIKE '%%pg_sleep(4)%%' AND pid <> pg_backend_pid()");
    int v = atoi(n);
    free(n);
    return v;
}

/* Checks that in the log every "busy: sync started" is followed by the end of
 * that sync before the next one starts. */
static void assert_syncs_alternate(const char *log, int *nsyncs)
{
    bool running = false;
    *nsyncs = 0;
    for (const char *line = log; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        if (strstr(buf, " busy: sync started")) {
            if (running)
                fail_msg("two syncs of busy overlap:\n%s", log);
            running = true;
            (*nsyncs)++;
        } else if (strstr(buf, " busy: full sync done") || strstr(buf, " busy: incremental sync done") ||
                   strstr(buf, " busy: sync failed") || strstr(buf, " busy: sync cancelled")) {
            if (!running)
                fail_msg("a sync of busy ended that never started:\n%s", log);
            running = false;
        }
        line = eol ? eol + 1 : NULL;
    }
}

static void test_busy_source_is_not_synced_twice(void **state)
{
    (void)state;
    char source[2048];
    snprintf(source, sizeof source,
             "busy_db:\n  url: \"%s\"\n  query: |\n"
             "    WITH pause AS MATERIALIZED (SELECT pg_sleep(4))\n"
             "    SELECT e.id, e.created_at FROM events e, pause\n"
             "  incremental_column: created_at\n  refresh_interval_minutes: 0.05\n",
             g_conninfo);
    char *config = make_config("busy", "  sync_mode: manual\n", source), *log = log_of("busy");
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    static const char ok_series[] = "duckstore_syncs_total{source=\"busy\",result=\"success\"}";

    /* A manual sync started once the scheduler runs (the port answers
     * before it does; a sync started earlier would only delay its first
     * tick) lasts 4 s: the first tick, 3 s after the scheduler started,
     * finds it running and is skipped. */
    double start_deadline = tl_now_ms() + 30000;
    for (;;) {
        char *text = tl_read_file(log);
        bool started = text != NULL && strstr(text, "scheduler started") != NULL;
        free(text);
        if (started)
            break;
        if (tl_now_ms() > start_deadline)
            fail_msg("the scheduler did not start in 30 s");
        tl_sleep_ms(20);
    }
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/busy", NULL, 202, NULL));
    int max_active = 0;
    double deadline = tl_now_ms() + 60000;
    bool skipped = false, rejected = false;
    double ok = 0;
    while (ok < 2 || !rejected) {
        int active = active_busy_queries();
        max_active = active > max_active ? active : max_active;
        char *metrics = tl_server_metrics(&srv);
        ok = tl_metric(metrics, ok_series);
        free(metrics);
        char *text = tl_read_file(log);
        if (!skipped && strstr(text, "busy: already syncing; skipped by the scheduler this time")) {
            skipped = true;
            /* The skipped tick did not start a second sync. */
            assert_true(ok <= 1);
        }
        free(text);
        /* A periodic sync after the manual one (the next, or a later one
         * when a slow poll missed it): a manual trigger now is refused. */
        json_t *ds = tl_server_dataset(&srv, "busy_data");
        if (ok >= 1 && !rejected && strcmp(json_string_value(json_object_get(ds, "state")), "syncing") == 0) {
            json_t *err = tl_http_json(srv.port, "POST", "/api/store/sync/busy", NULL, 409, NULL);
            assert_string_equal(json_string_value(json_object_get(err, "error")), "busy is already syncing");
            json_decref(err);
            rejected = true;
        }
        json_decref(ds);
        if (tl_now_ms() > deadline)
            fail_msg("busy did not complete two syncs, one of them seen refusing a trigger, in 60 s");
        tl_sleep_ms(100);
    }
    assert_true(skipped);
    assert_true(rejected);
    assert_int_equal(max_active, 1);
    json_t *ds = tl_server_dataset(&srv, "busy_data");
    assert_string_equal(json_string_value(json_object_get(ds, "sync_type")), "incremental");
    json_decref(ds);
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(log);
    char *text = tl_read_file(log);
    int nsyncs;
    assert_syncs_alternate(text, &nsyncs);
    assert_true(nsyncs >= 2);
    free(text);
    free(config);
    free(log);
}

/* A periodic sync that fails (at run time, not because of its
 * configuration) is retried (30 s backoff, capped at the 1.2 s interval
 * here); the failure clears the watermarks and keeps the data, so the retry
 * after the fix is a full rebuild. */
/* The dataset's document once no sync runs (the scheduler may have started
 * the next one meanwhile). */
static json_t *settled(const tl_server *srv, const char *dataset)
{
    double deadline = tl_now_ms() + 60000;
    for (;;) {
        json_t *ds = tl_server_dataset(srv, dataset);
        if (strcmp(json_string_value(json_object_get(ds, "state")), "syncing") != 0)
            return ds;
        if (tl_now_ms() > deadline)
            fail_msg("%s still syncing after 60 s", dataset);
        json_decref(ds);
        tl_sleep_ms(20);
    }
}

static void test_failure_is_retried_and_recovers(void **state)
{
    (void)state;
    char source[2048];
    snprintf(source, sizeof source,
             "flaky_db:\n  url: \"%s\"\n  query: SELECT id, created_at, v FROM flaky\n"
             "  incremental_column: created_at\n  refresh_interval_minutes: 0.02\n",
             g_conninfo);
    char *config = make_config("flaky", "  sync_mode: startup\n", source), *log = log_of("flaky");
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    static const char ok_series[] = "duckstore_syncs_total{source=\"flaky\",result=\"success\"}";
    static const char err_series[] = "duckstore_syncs_total{source=\"flaky\",result=\"error\"}";
    wait_metric(&srv, ok_series, 1, 60);
    json_t *ds = tl_server_dataset(&srv, "flaky_data");
    assert_int_equal(int_of(ds, "rows"), 10);
    assert_non_null(watermark(ds, "flaky_data"));
    json_decref(ds);

    /* A failure at run time (division by zero on the rows), not one the
     * query's check finds (that is a configuration error, which keeps the
     * watermarks). */
    tl_pg_exec(g_pg, "ALTER TABLE flaky RENAME TO flaky_away;"
                     "CREATE VIEW flaky AS SELECT * FROM flaky_away WHERE 1 / (id - id) = 1");
    wait_metric(&srv, err_series, 2, 60);
    ds = settled(&srv, "flaky_data");
    assert_string_equal(json_string_value(json_object_get(ds, "state")), "error");
    assert_non_null(strstr(json_string_value(json_object_get(ds, "error")), "flaky"));
    assert_int_equal(int_of(ds, "rows"), 10); /* the data stays */
    assert_true(json_is_null(json_object_get(json_object_get(ds, "watermarks"), "flaky_data")));
    json_decref(ds);
    char *metrics = tl_server_metrics(&srv);
    assert_true(tl_metric(metrics, "duckstore_source_state{source=\"flaky\",state=\"error\"}") == 1);
    free(metrics);

    tl_pg_exec(g_pg, "DROP VIEW flaky; ALTER TABLE flaky_away RENAME TO flaky;"
                     "INSERT INTO flaky (id, created_at, v) VALUES (100, '2026-03-01 00:00:00+00', 'late')");
    wait_metric(&srv, ok_series, 2, 60);
    ds = settled(&srv, "flaky_data");
    assert_string_equal(json_string_value(json_object_get(ds, "state")), "ready");
    assert_int_equal(int_of(ds, "rows"), 11);
    /* The first success after the failure was the full rebuild (a later
     * tick may have appended nothing since). */
    char *text = tl_read_file(log);
    const char *failed = strstr(text, "flaky: sync failed");
    assert_non_null(failed);
    const char *full = strstr(failed, "flaky: full sync done, 11 rows");
    const char *incremental = strstr(failed, "flaky: incremental sync done");
    assert_non_null(full);
    assert_true(incremental == NULL || incremental > full);
    free(text);
    assert_string_equal(watermark(ds, "flaky_data"), "2026-03-01 00:00:00+00");
    assert_true(json_is_null(json_object_get(ds, "error")));
    json_decref(ds);
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(log);
    free(config);
    free(log);
}

static void test_no_syncs_when_disabled(void **state)
{
    (void)state;
    char source[2048];
    snprintf(source, sizeof source,
             "tick_db:\n  url: \"%s\"\n  query: SELECT id, created_at, v FROM events\n"
             "  refresh_interval_minutes: 0.02\n",
             g_conninfo);
    char *config = make_config("off", "  enabled: false\n  sync_mode: startup\n", source),
         *log = log_of("off");
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    static const char disabled[] = "{\"success\":false,\"error\":\"syncing is disabled (duckdb.enabled: "
                                   "false)\",\"detail\":\"syncing is disabled (duckdb.enabled: false)\"}";
    char *raw = NULL;
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/tick", NULL, 409, &raw));
    assert_string_equal(raw, disabled);
    free(raw);
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync", NULL, 409, &raw));
    assert_string_equal(raw, disabled);
    free(raw);
    json_t *doc = tl_http_json(srv.port, "GET", "/api/store/status", NULL, 200, NULL);
    assert_true(json_is_false(json_object_get(doc, "enabled")));
    json_decref(doc);
    /* Neither the startup sync nor two scheduler intervals sync anything. */
    tl_sleep_ms(2600);
    json_t *ds = tl_server_dataset(&srv, "tick_data");
    assert_string_equal(json_string_value(json_object_get(ds, "state")), "not_synced");
    json_decref(ds);
    char *metrics = tl_server_metrics(&srv);
    assert_true(tl_metric(metrics, "duckstore_syncs_total{source=\"tick\",result=\"success\"}") == 0);
    assert_true(tl_metric(metrics, "duckstore_syncs_total{source=\"tick\",result=\"error\"}") == 0);
    free(metrics);
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(log);
    char *text = tl_read_file(log);
    assert_null(strstr(text, "sync started"));
    free(text);
    free(config);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_scheduler_runs_incremental_syncs, teardown_test),
        cmocka_unit_test_teardown(test_busy_source_is_not_synced_twice, teardown_test),
        cmocka_unit_test_teardown(test_connections_kept_between_syncs, teardown_test),
        cmocka_unit_test_teardown(test_failure_is_retried_and_recovers, teardown_test),
        cmocka_unit_test_teardown(test_no_syncs_when_disabled, teardown_test),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
