/* The server's life cycle: startup vs manual sync mode, the persisted status
 * after a restart, status latency while a multi-second sync of a 300k-row
 * source runs (against the idle latency of the same run), and SIGTERM in
 * the middle of a sync (clean exit 0 within 10 s, no staging tables,
 * previous data and status intact). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"
#include "tl_http.h"

#define BIG_ROWS 300000
#define MORE_ROWS 50000
/* The small query waits for this advisory lock while the test holds it, so
 * the startup sync is still running when its first status is asked for,
 * however slow the machine. */
#define SMALL_GATE 4242
#define MAX_SAMPLES 8192

static char *g_dir, *g_conninfo;
static PGconn *g_pg;
/* What the startup sync of `small` stored, for the restart test. */
static char *g_small_last_sync, *g_small_watermark;

static int teardown_test(void **state)
{
    (void)state;
    tl_server_kill_all();
    return 0;
}

static char *in_dir(const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", g_dir, name) < 0)
        fail_msg("out of memory");
    return p;
}

/* A config directory DIR/name with the given store file, sync_mode and
 * source files (NULL-terminated pairs of file name and YAML). */
static char *make_config(const char *name, const char *store_file, const char *mode, const char *const *files)
{
    char *dir = in_dir(name);
    mkdir(dir, 0755);
    char *path = NULL;
    if (asprintf(&path, "%s/duckdb.yaml", dir) < 0)
        fail_msg("out of memory");
    tl_write_filef(path, "duckdb:\n  path: %s/%s\n  sync_mode: %s\n", g_dir, store_file, mode);
    free(path);
    for (size_t i = 0; files[i]; i += 2) {
        if (asprintf(&path, "%s/%s", dir, files[i]) < 0)
            fail_msg("out of memory");
        tl_write_file(path, files[i + 1]);
        free(path);
    }
    return dir;
}

static char *g_small_yaml, *g_lazy_yaml, *g_big_yaml;

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("srvlife"));
    g_pg = tl_pg_connect(g_conninfo);
    /* 300k rows of 200-byte text; the big query sleeps 10 ms every 1000
     * rows, so its sync takes a few seconds, spread over the whole read. */
    tl_pg_exec(g_pg,
               "CREATE TABLE big (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, payload text);"
               "INSERT INTO big SELECT g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second',"
               " repeat(md5(g::text), 6) || 'abcdefgh' FROM generate_series(1, %d) g;"
               "CREATE TABLE small (id int PRIMARY KEY, created_at timestamptz NOT NULL);"
               "INSERT INTO small SELECT g, timestamptz '2026-02-13 10:00:00+00' + g * interval '1 minute'"
               " FROM generate_series(1, 20) g;",
               BIG_ROWS);
    g_dir = tl_mkdtemp();
    if (asprintf(&g_small_yaml,
                 "small_db:\n  url: \"%s\"\n  query: |\n"
                 "    WITH gate AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(%d))\n"
                 "    SELECT s.id, s.created_at FROM small s, gate\n"
                 "  incremental_column: created_at\n",
                 g_conninfo, SMALL_GATE) < 0 ||
        asprintf(&g_lazy_yaml, "lazy_db:\n  url: \"%s\"\n  auto_load: false\n  query: SELECT 1 AS one\n",
                 g_conninfo) < 0 ||
        asprintf(&g_big_yaml,
                 "big_db:\n  url: \"%s\"\n  query: |\n"
                 "    SELECT id, created_at, payload FROM big\n"
                 "    WHERE (id %% 1000 <> 0 OR pg_sleep(0.01) IS NOT NULL)\n"
                 "  incremental_column: created_at\n",
                 g_conninfo) < 0)
        fail_msg("out of memory");
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
    free(g_small_yaml);
    free(g_lazy_yaml);
    free(g_big_yaml);
    free(g_small_last_sync);
    free(g_small_watermark);
    return 0;
}

static const char *state_of(json_t *ds)
{
    return json_string_value(json_object_get(ds, "state"));
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

static void stop_ok(tl_server *srv, const char *log)
{
    double elapsed;
    int code = tl_server_stop(srv, 20, &elapsed);
    if (code != 0)
        fail_msg("the server exited with %d; log:\n%s", code, tl_read_file(log));
    tl_assert_clean_log(log);
}

static void test_startup_mode_syncs_at_boot(void **state)
{
    (void)state;
    const char *const files[] = {"small_db.yaml", g_small_yaml, "lazy_db.yaml", g_lazy_yaml, NULL};
    char *config = make_config("boot", "boot.duckdb", "startup", files), *log = in_dir("boot.log");
    tl_pg_exec(g_pg, "SELECT pg_advisory_lock(%d)", SMALL_GATE);
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    /* The first status answer already shows the startup sync, with no
     * trigger; auto_load: false sources are left alone. */
    json_t *ds = tl_server_dataset(&srv, "small_data");
    assert_string_equal(state_of(ds), "syncing");
    assert_non_null(json_object_get(ds, "progress"));
    json_decref(ds);
    ds = tl_server_dataset(&srv, "lazy_data");
    assert_string_equal(state_of(ds), "not_synced");
    json_decref(ds);
    tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", SMALL_GATE);
    ds = tl_server_wait_state(&srv, "small_data", "ready", 30);
    assert_int_equal(int_of(ds, "rows"), 20);
    assert_string_equal(json_string_value(json_object_get(ds, "sync_type")), "full");
    assert_string_equal(watermark(ds, "small_data"), "2026-02-13 10:20:00+00");
    g_small_last_sync = strdup(json_string_value(json_object_get(ds, "last_sync")));
    g_small_watermark = strdup(watermark(ds, "small_data"));
    json_decref(ds);
    ds = tl_server_dataset(&srv, "lazy_data");
    assert_string_equal(state_of(ds), "not_synced");
    json_decref(ds);
    stop_ok(&srv, log);
    free(config);
    free(log);
}

static void test_manual_mode_waits_for_a_trigger(void **state)
{
    (void)state;
    const char *const files[] = {"small_db.yaml", g_small_yaml, NULL};
    char *config = make_config("manual", "manual.duckdb", "manual", files), *log = in_dir("manual.log");
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    for (int i = 0; i < 2; i++) {
        json_t *ds = tl_server_dataset(&srv, "small_data");
        assert_string_equal(state_of(ds), "not_synced");
        json_decref(ds);
        char *metrics = tl_server_metrics(&srv);
        assert_true(tl_metric(metrics, "duckstore_source_state{source=\"small\",state=\"not_synced\"}") == 1);
        assert_true(tl_metric(metrics, "duckstore_source_state{source=\"small\",state=\"syncing\"}") == 0);
        free(metrics);
        if (i == 0)
            tl_sleep_ms(1500);
    }
    stop_ok(&srv, log);
    char *text = tl_read_file(log);
    assert_null(strstr(text, "sync started"));
    free(text);
    free(config);
    free(log);
}

/* Restarted (in manual mode, so nothing syncs), the server shows the last
 * persisted result of the startup sync. */
static void test_restart_shows_persisted_status(void **state)
{
    (void)state;
    assert_non_null(g_small_last_sync);
    const char *const files[] = {"small_db.yaml", g_small_yaml, "lazy_db.yaml", g_lazy_yaml, NULL};
    char *config = make_config("reboot", "boot.duckdb", "manual", files), *log = in_dir("reboot.log");
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    json_t *ds = tl_server_dataset(&srv, "small_data");
    assert_string_equal(state_of(ds), "ready");
    assert_int_equal(int_of(ds, "rows"), 20);
    assert_string_equal(json_string_value(json_object_get(ds, "sync_type")), "full");
    assert_string_equal(json_string_value(json_object_get(ds, "last_sync")), g_small_last_sync);
    assert_string_equal(watermark(ds, "small_data"), g_small_watermark);
    assert_non_null(json_object_get(json_object_get(ds, "tables"), "small_data"));
    json_decref(ds);
    ds = tl_server_dataset(&srv, "lazy_data");
    assert_string_equal(state_of(ds), "not_synced");
    json_decref(ds);
    stop_ok(&srv, log);
    free(config);
    free(log);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (0..1) of n samples; sorts them. */
static double quantile(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n > 0 ? v[(int)(q * (n - 1))] : 0;
}

/* GET /api/store/status, timed; the parsed body when doc is not NULL. */
static double status_ms(const tl_server *srv, json_t **doc)
{
    tl_http_response resp;
    assert_true(tl_http_request(srv->port, "GET", "/api/store/status", NULL, NULL, 0, &resp));
    assert_int_equal(resp.status, 200);
    double ms = resp.ms;
    if (doc)
        *doc = json_loads(resp.body, 0, NULL);
    tl_http_response_free(&resp);
    return ms;
}

/* Opens the store file read-only (the server must be stopped). */
static void open_store_ro(const char *path, duckdb_database *db, duckdb_connection *con)
{
    duckdb_config cfg;
    char *errmsg = NULL;
    duckdb_create_config(&cfg);
    duckdb_set_config(cfg, "access_mode", "READ_ONLY");
    if (duckdb_open_ext(path, db, cfg, &errmsg) == DuckDBError)
        fail_msg("cannot open %s: %s", path, errmsg ? errmsg : "?");
    duckdb_destroy_config(&cfg);
    if (duckdb_connect(*db, con) == DuckDBError)
        fail_msg("cannot connect to %s", path);
}

static void test_big_sync_status_latency_and_sigterm(void **state)
{
    (void)state;
    const char *const files[] = {"big_db.yaml", g_big_yaml, NULL};
    char *config = make_config("big", "big.duckdb", "manual", files), *log = in_dir("big.log");
    char *store_path = in_dir("big.duckdb");
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);

    /* Status answers in milliseconds while the sync reads and appends. One
     * slow answer only says the machine was busy; a status that waits for
     * the sync shows in most answers. So the median and the 90th percentile
     * while reading are bounded, each against the same quantile with no
     * sync running, measured first in this run (the machine's load and the
     * build's speed count in both). */
    static double idle[40], busy[MAX_SAMPLES];
    int nidle = 0, nbusy = 0;
    for (; nidle < 40; nidle++) {
        idle[nidle] = status_ms(&srv, NULL);
        tl_sleep_ms(25);
    }
    double idle_p50 = quantile(idle, nidle, 0.5), idle_p90 = quantile(idle, nidle, 0.9);
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/big", NULL, 202, NULL));
    double max_ms = 0;
    int samples = 0;
    json_int_t last_rows_read = -1;
    for (;;) {
        json_t *doc = NULL;
        double ms = status_ms(&srv, &doc);
        max_ms = ms > max_ms ? ms : max_ms;
        samples++;
        json_t *ds = json_object_get(json_object_get(doc, "datasets"), "big_data");
        bool syncing = strcmp(state_of(ds), "syncing") == 0;
        if (syncing) {
            json_t *progress = json_object_get(ds, "progress");
            json_int_t rows_read = int_of(progress, "rows_read");
            if (strcmp(json_string_value(json_object_get(progress, "phase")), "reading") == 0 &&
                rows_read > 0) {
                if (nbusy < MAX_SAMPLES)
                    busy[nbusy++] = ms;
                assert_true(rows_read >= last_rows_read); /* live, monotonic progress */
                assert_true(int_of(progress, "bytes_read") > 0);
                last_rows_read = rows_read;
            }
        }
        json_decref(doc);
        if (!syncing)
            break;
        tl_sleep_ms(25);
    }
    json_t *ds = tl_server_dataset(&srv, "big_data");
    assert_string_equal(state_of(ds), "ready");
    assert_int_equal(int_of(ds, "rows"), BIG_ROWS);
    double duration = json_number_value(json_object_get(ds, "duration_seconds"));
    double busy_p50 = quantile(busy, nbusy, 0.5), busy_p90 = quantile(busy, nbusy, 0.9);
    print_message("status latency during a %.1f s sync of %d rows: median %.1f ms, p90 %.1f ms, max %.1f ms "
                  "over %d requests (%d while reading); idle: median %.1f ms, p90 %.1f ms\n",
                  duration, BIG_ROWS, busy_p50, busy_p90, max_ms, samples, nbusy, idle_p50, idle_p90);
    /* A multi-second sync (its query sleeps 3 s in all) ... */
    assert_true(duration >= 2.0);
    /* ... read for seconds, so even slow answers sampled it many times ... */
    assert_true(nbusy >= 10);
    /* ... and did not slow status down (typically a few ms; a status that
     * waited for the sync would take seconds). */
    if (busy_p50 > 250 + 10 * idle_p50 || busy_p90 > 1000 + 10 * idle_p90)
        fail_msg("status slowed down by the sync: median %.1f ms, p90 %.1f ms while reading; idle median "
                 "%.1f ms, p90 %.1f ms",
                 busy_p50, busy_p90, idle_p50, idle_p90);
    char *last_sync = strdup(json_string_value(json_object_get(ds, "last_sync")));
    char *wm = strdup(watermark(ds, "big_data"));
    assert_string_equal(wm, "2026-01-04 11:20:00+00");
    json_decref(ds);

    /* More rows, a full rebuild, and SIGTERM in the middle of its read. */
    tl_pg_exec(g_pg,
               "INSERT INTO big SELECT g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second',"
               " repeat(md5(g::text), 6) || 'abcdefgh' FROM generate_series(%d, %d) g",
               BIG_ROWS + 1, BIG_ROWS + MORE_ROWS);
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/big?full=true", NULL, 202, NULL));
    double deadline = tl_now_ms() + 60000;
    for (;;) {
        ds = tl_server_dataset(&srv, "big_data");
        json_t *progress = json_object_get(ds, "progress");
        assert_non_null(progress); /* still syncing */
        json_int_t rows_read = int_of(progress, "rows_read");
        json_decref(ds);
        if (rows_read >= 30000)
            break;
        if (tl_now_ms() > deadline)
            fail_msg("the full sync read no rows in 60 s");
        tl_sleep_ms(20);
    }
    double elapsed;
    int code = tl_server_stop(&srv, 10, &elapsed);
    print_message("SIGTERM mid-sync: exit code %d after %.2f s\n", code, elapsed);
    if (code != 0)
        fail_msg("exit code %d after SIGTERM (-1: still running after 10 s); log:\n%s", code,
                 tl_read_file(log));
    assert_true(elapsed < 10);
    tl_assert_clean_log(log);
    char *text = tl_read_file(log);
    assert_non_null(strstr(text, "SIGTERM received: shutting down"));
    assert_non_null(strstr(text, "INFO  stopped"));
    /* The cancelled sync is no failure: no ERROR line to alert on. */
    assert_non_null(strstr(text, "INFO  big: sync cancelled; the previous data, watermarks and status stay"));
    assert_null(strstr(text, "ERROR"));
    free(text);

    /* Right after the exit (before a restart could clean up): no staging
     * table, the previous rows and watermark. */
    duckdb_database db;
    duckdb_connection con;
    open_store_ro(store_path, &db, &con);
    assert_int_equal(
        tl_duck_int(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '%%staging%%'"), 0);
    assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM big_data"), BIG_ROWS);
    char *stored_wm =
        tl_duck_scalar(con, "SELECT watermark FROM _duckstore.tables WHERE table_name = 'big_data'");
    assert_non_null(stored_wm);
    assert_string_equal(stored_wm, wm);
    free(stored_wm);
    duckdb_disconnect(&con);
    duckdb_close(&db);

    /* Restarted: the previous result, then an incremental sync picks up
     * exactly the rows the cancelled sync did not store. */
    tl_server_start(&srv, config, log, NULL);
    ds = tl_server_dataset(&srv, "big_data");
    assert_string_equal(state_of(ds), "ready");
    assert_int_equal(int_of(ds, "rows"), BIG_ROWS);
    assert_string_equal(json_string_value(json_object_get(ds, "last_sync")), last_sync);
    assert_string_equal(watermark(ds, "big_data"), wm);
    assert_true(json_is_null(json_object_get(ds, "error")));
    json_decref(ds);
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/big", NULL, 202, NULL));
    ds = tl_server_wait_state(&srv, "big_data", "ready", 60);
    assert_string_equal(json_string_value(json_object_get(ds, "sync_type")), "incremental");
    assert_int_equal(int_of(ds, "incremental_rows"), MORE_ROWS);
    assert_int_equal(int_of(ds, "rows"), BIG_ROWS + MORE_ROWS);
    json_decref(ds);
    stop_ok(&srv, log);
    free(last_sync);
    free(wm);
    free(store_path);
    free(config);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_startup_mode_syncs_at_boot, teardown_test),
        cmocka_unit_test_teardown(test_manual_mode_waits_for_a_trigger, teardown_test),
        cmocka_unit_test_teardown(test_restart_shows_persisted_status, teardown_test),
        cmocka_unit_test_teardown(test_big_sync_status_latency_and_sigterm, teardown_test),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
