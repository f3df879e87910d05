/* SIGHUP reloads the config of `duckstore serve`: sent in the middle of a
 * sync (held on an advisory lock), the process lives, that sync completes
 * with the config it started with, an added source shows in the status,
 * a removed one is gone (its data stays), a changed refresh interval
 * applies, and a setting read only at start says it needs a restart;
 * three more reloads while that sync runs free configs no sync uses. A
 * broken config keeps the one in force and the log says why (file:line).
 * Under sync_mode: startup an added source syncs at once. SIGTERM
 * afterwards still exits 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "testlib.h"
#include "tl_http.h"

#define ROWS 50
#define GATE 5151

static char *g_dir, *g_conninfo;
static PGconn *g_pg;

static int teardown_test(void **state)
{
    (void)state;
    tl_server_kill_all();
    return 0;
}

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("reload"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg,
               "CREATE TABLE items (id int PRIMARY KEY, created_at timestamptz NOT NULL);"
               "INSERT INTO items SELECT g, timestamptz '2026-02-13 10:00:00+00' + g * interval '1 minute'"
               " FROM generate_series(1, %d) g;",
               ROWS);
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

static void write_store(const char *dir, const char *name, const char *extra)
{
    tl_write_filef(tl_keepf("%s/duckdb.yaml", dir), "duckdb:\n  path: %s/%s.duckdb\n  sync_mode: manual\n%s",
                   g_dir, name, extra);
}

/* DIR/name/<source>_db.yaml with the url first, then body. */
static void write_source(const char *dir, const char *source, const char *body)
{
    tl_write_filef(tl_keepf("%s/%s_db.yaml", dir, source), "%s_db:\n  url: \"%s\"\n%s", source, g_conninfo,
                   body);
}

/* The slow source's query waits for the advisory lock the test holds. */
static const char slow_old[] = "  query: |\n"
                               "    WITH gate AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(5151))\n"
                               "    SELECT i.id, i.created_at FROM items i, gate\n"
                               "  incremental_column: created_at\n";
static const char slow_new[] = "  query: SELECT id, created_at, 'new' AS tag FROM items\n"
                               "  incremental_column: created_at\n";
static const char items_query[] = "  query: SELECT id, created_at FROM items\n";

static void assert_alive(const tl_server *srv)
{
    int status;
    pid_t done = waitpid(srv->pid, &status, WNOHANG);
    if (done == srv->pid)
        fail_msg("the server died: %s %d", WIFSIGNALED(status) ? "signal" : "exit",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    assert_int_equal(done, 0);
}

/* Waits for a log line, failing at once if the server died meanwhile. */
static void wait_log(const tl_server *srv, const char *log, const char *needle)
{
    double deadline = tl_now_ms() + 30000;
    for (;;) {
        assert_alive(srv);
        char *text = tl_read_file(log);
        bool found = text != NULL && strstr(text, needle) != NULL;
        if (found) {
            free(text);
            return;
        }
        if (tl_now_ms() > deadline)
            fail_msg("no \"%s\" in the log after 30 s:\n%s", needle, text ? text : "(unreadable)");
        free(text);
        tl_sleep_ms(20);
    }
}

static const char *state_of(json_t *ds)
{
    return json_string_value(json_object_get(ds, "state"));
}

static void sync_ready(const tl_server *srv, const char *source)
{
    json_decref(tl_http_json(srv->port, "POST", tl_keepf("/api/store/sync/%s", source), NULL, 202, NULL));
    json_t *ds = tl_server_wait_state(srv, tl_keepf("%s_data", source), "ready", 60);
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), ROWS);
    json_decref(ds);
}

static double metric(const tl_server *srv, const char *series)
{
    char *text = tl_server_metrics(srv);
    double v = tl_metric(text, series);
    free(text);
    return v;
}

static void test_sighup_mid_sync(void **state)
{
    (void)state;
    char *dir = tl_keepf("%s/mid", g_dir), *log = tl_keepf("%s/mid.log", g_dir);
    mkdir(dir, 0755);
    write_store(dir, "mid", "");
    write_source(dir, "slow", slow_old);
    write_source(dir, "gone", items_query);
    write_source(dir, "tick", items_query);
    tl_server srv;
    tl_server_start(&srv, dir, log, NULL);
    sync_ready(&srv, "gone");

    tl_pg_exec(g_pg, "SELECT pg_advisory_lock(%d)", GATE);
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/slow", NULL, 202, NULL));
    double deadline = tl_now_ms() + 30000;
    while (tl_pg_int(g_pg, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") ==
           0) {
        if (tl_now_ms() > deadline)
            fail_msg("the slow sync never waited for the lock");
        tl_sleep_ms(20);
    }

    /* The new config: slow reads another column, gone is removed, tick
     * gets a refresh interval, fresh is added; threads needs a restart. */
    write_store(dir, "mid", "  threads: 2\n");
    write_source(dir, "slow", slow_new);
    unlink(tl_keepf("%s/gone_db.yaml", dir));
    write_source(dir, "tick", tl_keepf("%s  refresh_interval_minutes: 0.01\n", items_query));
    write_source(dir, "fresh", items_query);
    assert_int_equal(kill(srv.pid, SIGHUP), 0);
    wait_log(&srv, log, "config reloaded from ");
    assert_alive(&srv);
    char *text = tl_read_file(log);
    tl_assert_contains(text, "SIGHUP received: reloading the config");
    tl_assert_contains(text, "3 sources; added: fresh; removed: gone");
    tl_assert_contains(text, "duckdb.threads changed from 1 to 2; needs a restart");
    free(text);

    /* The status shows the new set of sources at once; the slow sync still
     * runs, with its old query. */
    json_t *status = tl_http_json(srv.port, "GET", "/api/store/status", NULL, 200, NULL);
    json_t *datasets = json_object_get(status, "datasets");
    assert_int_equal(json_object_size(datasets), 3);
    assert_string_equal(state_of(json_object_get(datasets, "fresh_data")), "not_synced");
    assert_string_equal(state_of(json_object_get(datasets, "slow_data")), "syncing");
    assert_null(json_object_get(datasets, "gone_data"));
    json_decref(status);
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/gone", NULL, 404, NULL));
    json_t *ds;

    /* More reloads while the sync runs: each frees the config before it
     * but not the one the sync started with (the sanitizer build sees any
     * use after free). */
    for (int i = 2; i <= 4; i++) {
        assert_int_equal(kill(srv.pid, SIGHUP), 0);
        double until = tl_now_ms() + 30000;
        for (;;) {
            assert_alive(&srv);
            char *now = tl_read_file(log);
            size_t reloads = tl_count(now, "config reloaded from ");
            free(now);
            if (reloads >= (size_t)i)
                break;
            if (tl_now_ms() > until)
                fail_msg("reload %d not logged after 30 s", i);
            tl_sleep_ms(20);
        }
    }
    ds = tl_server_dataset(&srv, "slow_data");
    assert_string_equal(state_of(ds), "syncing");
    json_decref(ds);

    tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", GATE);
    ds = tl_server_wait_state(&srv, "slow_data", "ready", 60);
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), ROWS);
    json_decref(ds);
    sync_ready(&srv, "fresh");
    /* The next sync of slow reads the new query: a column more. */
    sync_ready(&srv, "slow");
    wait_log(&srv, log, "slow: the columns of query (or max_sync_rows) changed since the last sync");
    /* tick now syncs every 0.6 s with no trigger. */
    double until = tl_now_ms() + 60000;
    while (metric(&srv, "duckstore_syncs_total{source=\"tick\",result=\"success\"}") < 2) {
        if (tl_now_ms() > until)
            fail_msg("tick was not synced by the scheduler after its interval was set");
        tl_sleep_ms(50);
    }
    assert_alive(&srv);
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(log);
    text = tl_read_file(log);
    assert_null(strstr(text, "sync failed"));
    assert_null(strstr(text, "slow: sync cancelled")); /* tick's may be, by the SIGTERM */
    tl_assert_contains(text, "slow: full sync done, 50 rows");
    free(text);
}

static void test_broken_config_keeps_the_old_one(void **state)
{
    (void)state;
    char *dir = tl_keepf("%s/broken", g_dir), *log = tl_keepf("%s/broken.log", g_dir);
    mkdir(dir, 0755);
    write_store(dir, "broken", "");
    write_source(dir, "one", items_query);
    tl_server srv;
    tl_server_start(&srv, dir, log, NULL);

    write_source(dir, "two", "  query: SELECT 1 AS x\n  refresh_intervall_minutes: 5\n");
    write_source(dir, "one", "  query: SELECT 2 AS y\n");
    assert_int_equal(kill(srv.pid, SIGHUP), 0);
    wait_log(&srv, log, "config reload failed: ");
    assert_alive(&srv);
    char *text = tl_read_file(log);
    tl_assert_contains(text, tl_keepf("config reload failed: %s/two_db.yaml:4: unknown key "
                                      "\"refresh_intervall_minutes\"",
                                      dir));
    tl_assert_contains(text, "the config in force stays");
    free(text);

    /* Still the old config: one source, its old query. */
    json_t *status = tl_http_json(srv.port, "GET", "/api/store/status", NULL, 200, NULL);
    json_t *datasets = json_object_get(status, "datasets");
    assert_int_equal(json_object_size(datasets), 1);
    assert_non_null(json_object_get(datasets, "one_data"));
    json_decref(status);
    sync_ready(&srv, "one");
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/two", NULL, 404, NULL));

    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(log);
}

/* Under sync_mode: startup a source added by a reload syncs at once. */
static void test_added_source_syncs_under_startup(void **state)
{
    (void)state;
    char *dir = tl_keepf("%s/startup", g_dir), *log = tl_keepf("%s/startup.log", g_dir);
    mkdir(dir, 0755);
    tl_write_filef(tl_keepf("%s/duckdb.yaml", dir), "duckdb:\n  path: %s/startup.duckdb\n", g_dir);
    write_source(dir, "first", items_query);
    tl_server srv;
    tl_server_start(&srv, dir, log, NULL);
    json_decref(tl_server_wait_state(&srv, "first_data", "ready", 60));
    write_source(dir, "second", items_query);
    write_source(dir, "later", tl_keepf("%s  auto_load: false\n", items_query));
    assert_int_equal(kill(srv.pid, SIGHUP), 0);
    wait_log(&srv, log, "config reloaded from ");
    json_t *ds = tl_server_wait_state(&srv, "second_data", "ready", 60);
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), ROWS);
    json_decref(ds);
    ds = tl_server_dataset(&srv, "later_data");
    assert_string_equal(state_of(ds), "not_synced");
    json_decref(ds);
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(log);
    char *text = tl_read_file(log);
    assert_int_equal(tl_count(text, "first: sync started"), 1); /* not again */
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sighup_mid_sync, teardown_test),
        cmocka_unit_test_teardown(test_broken_config_keeps_the_old_one, teardown_test),
        cmocka_unit_test_teardown(test_added_source_syncs_under_startup, teardown_test),
    };
    int rc = cmocka_run_group_tests(tests, setup_group, teardown_group);
    tl_free_kept();
    return rc;
}
