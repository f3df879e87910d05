/* PostgreSQL going away under `duckstore serve`, on a PostgreSQL instance of
 * this test's own (the harness server is shared with the other test
 * programs): stopped in the middle of a COPY, unreachable when the server
 * starts, and a backend frozen with SIGSTOP. The sync ends in `error` with
 * the reason, the previous data stays readable, the watermarks are cleared,
 * the scheduler retries (30 s doubling, capped at the refresh interval: 3 s
 * here) and recovers by itself once PostgreSQL is back.
 *
 * DUCKSTORE_SOAK=1: the startup case uses a 1-minute interval, so the
 * retries come after 30 s, then 60 s, 60 s (the doubling and its cap). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "testlib.h"
#include "tl_fault.h"
#include "tl_http.h"

#define FIRST_ROWS 50000
#define MORE_ROWS 10000
/* A full sync's COPY stops before row GATE_ID while the test holds this
 * advisory lock, so PostgreSQL is stopped in the middle of it however slow
 * the machine. */
#define GATE 6161
#define GATE_ID 5000

static tl_pg_instance g_pg;
static char *g_dir;
static pid_t g_stopped_backend;

static int group_setup(void **state)
{
    (void)state;
    tl_pg_instance_init(&g_pg);
    PGconn *pg = tl_pg_connect(g_pg.conninfo);
    tl_pg_exec(pg,
               "CREATE TABLE events (id bigint PRIMARY KEY, payload text NOT NULL);"
               "INSERT INTO events SELECT g, md5(g::text) FROM generate_series(1, %d) g",
               FIRST_ROWS);
    PQfinish(pg);
    g_dir = tl_mkdtemp();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_stopped_backend > 0)
        kill(g_stopped_backend, SIGCONT);
    tl_server_kill_all();
    tl_pg_instance_destroy(&g_pg);
    tl_rmtree(g_dir);
    free(g_dir);
    return 0;
}

/* A config dir DIR/name: store DIR/name.duckdb, source `outage` reading
 * events with 20 ms pauses every `every` rows (with 1000, a full sync of
 * 50k rows takes ~1 s), waiting for GATE before row GATE_ID, incremental
 * on id. */
static char *outage_config(const char *name, const char *mode, const char *interval, int every,
                           const char *extra)
{
    char lines[700];
    snprintf(lines, sizeof lines, "  path: %s/%s.duckdb\n  sync_mode: %s\n  max_sync_rows: 0\n", g_dir, name,
             mode);
    char *dir = tl_conf_dir(g_dir, name, lines);
    tl_conf_source(dir, "outage",
                   "  url: \"%s\"\n  query: |\n"
                   "    SELECT id, payload FROM events WHERE (id %% %d <> 0 OR pg_sleep(0.02) IS NOT NULL)\n"
                   "      AND (id <> %d OR pg_advisory_xact_lock_shared(%d) IS NOT NULL)\n"
                   "  incremental_column: id\n  refresh_interval_minutes: %s\n%s",
                   g_pg.conninfo, every, GATE_ID, GATE, interval, extra);
    return dir;
}

static char *path_in(const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", g_dir, name) < 0)
        fail_msg("out of memory");
    return p;
}

static const char *str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static json_t *watermark(json_t *ds)
{
    return json_object_get(json_object_get(ds, "watermarks"), "outage_data");
}

/* The DuckDB file after the server stopped: rows 1..n exactly once, no
 * staging table, and the stored watermark (NULL or text). */
static void assert_file(const char *db_path, int64_t n, const char *wm)
{
    duckdb_database db;
    duckdb_connection con;
    tl_duck_open_ro(db_path, &db, &con);
    int64_t v[4];
    tl_duck_ints(con, v, 4, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM outage_data");
    assert_int_equal(v[0], n);
    assert_int_equal(v[1], n);
    assert_int_equal(v[2], 1);
    assert_int_equal(v[3], n);
    assert_int_equal(
        tl_duck_int(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '%%staging'"), 0);
    char *stored =
        tl_duck_scalar(con, "SELECT watermark FROM _duckstore.tables WHERE table_name = 'outage_data'");
    if (wm == NULL)
        assert_null(stored);
    else
        assert_string_equal(stored, wm);
    free(stored);
    tl_duck_close(&db, &con);
}

static int failures(const tl_server *srv)
{
    char *m = tl_server_metrics(srv);
    int n = (int)tl_metric(m, "duckstore_syncs_total{source=\"outage\",result=\"error\"}");
    free(m);
    return n;
}

/* Seconds of the day of each log line holding `needle`. */
static size_t log_times(const char *log_path, const char *needle, double *out, size_t cap)
{
    char *log = tl_read_file(log_path);
    size_t n = 0;
    for (char *line = log; line && *line && n < cap;) {
        char *eol = strchr(line, '\n');
        if (eol)
            *eol = '\0';
        int hh, mm;
        double ss;
        if (strstr(line, needle) && sscanf(line, "%*4d-%*2d-%*2dT%d:%d:%lfZ", &hh, &mm, &ss) == 3)
            out[n++] = hh * 3600.0 + mm * 60.0 + ss;
        line = eol ? eol + 1 : NULL;
    }
    free(log);
    return n;
}

static void test_stopped_in_the_middle_of_a_copy(void **state)
{
    (void)state;
    char *config = outage_config("midcopy", "startup", "0.05", 1000, ""), *log = path_in("midcopy.log");
    char *db_path = path_in("midcopy.duckdb");
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    json_t *ds = tl_server_wait_state(&srv, "outage_data", "ready", 60);
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), FIRST_ROWS);
    json_decref(ds);
    PGconn *pg = tl_pg_connect(g_pg.conninfo);
    tl_pg_exec(pg, "INSERT INTO events SELECT g, md5(g::text) FROM generate_series(%d, %d) g", FIRST_ROWS + 1,
               FIRST_ROWS + MORE_ROWS);
    PQfinish(pg);

    /* A full sync (the scheduler's incremental ones run every 3 s too):
     * stop PostgreSQL once rows are flowing (the gate holds the COPY before
     * row GATE_ID until then). */
    PGconn *gate = tl_pg_connect(g_pg.conninfo);
    tl_pg_exec(gate, "SELECT pg_advisory_lock(%d)", GATE);
    tl_trigger(&srv, "outage", true);
    int64_t rows = 0;
    double deadline = tl_now_ms() + 30000;
    while (strcmp(tl_phase(&srv, "outage_data", &rows), "reading") != 0 || rows < 2048) {
        if (tl_now_ms() > deadline)
            fail_msg("the full sync never started reading");
        tl_sleep_ms(5);
    }
    tl_pg_instance_stop(&g_pg, "fast");
    PQfinish(gate);
    ds = tl_server_wait_state(&srv, "outage_data", "error", 60);
    const char *msg = str(ds, "error");
    printf("# PostgreSQL stopped after %lld rows of the COPY: %s\n", (long long)rows, msg);
    tl_assert_contains(msg, "outage: query: ");
    if (strstr(msg, "terminating connection due to administrator command") == NULL &&
        strstr(msg, "server closed the connection unexpectedly") == NULL)
        fail_msg("the error does not say PostgreSQL went away: %s", msg);
    assert_true(json_is_null(watermark(ds)));                                      /* auto-recovery */
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), FIRST_ROWS); /* previous data */
    json_decref(ds);

    /* The scheduler keeps trying every 3 s while PostgreSQL is down. */
    int before = failures(&srv);
    double until = tl_now_ms() + 60000;
    while (failures(&srv) < before + 2 && tl_now_ms() < until)
        tl_sleep_ms(100);
    assert_true(failures(&srv) >= before + 2);
    ds = tl_server_dataset(&srv, "outage_data");
    tl_assert_contains(str(ds, "error"), "outage: cannot connect to PostgreSQL: ");
    tl_assert_contains(str(ds, "error"), "Connection refused");
    json_decref(ds);

    /* The previous data is intact on disk, without a watermark. */
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    assert_file(db_path, FIRST_ROWS, NULL);

    /* Restarted while PostgreSQL is still down: the API answers with the
     * persisted error; once PostgreSQL is back the next scheduled sync
     * rebuilds in full, with no trigger. */
    tl_server_start(&srv, config, log, NULL);
    ds = tl_server_wait_state(&srv, "outage_data", "error", 60);
    tl_assert_contains(str(ds, "error"), "cannot connect to PostgreSQL");
    json_decref(ds);
    double t0 = tl_now_ms();
    tl_pg_instance_start(&g_pg);
    ds = tl_server_wait_state(&srv, "outage_data", "ready", 60);
    printf("# recovered %.1f s after PostgreSQL came back\n", (tl_now_ms() - t0) / 1000);
    assert_string_equal(str(ds, "sync_type"), "full");
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), FIRST_ROWS + MORE_ROWS);
    assert_string_equal(json_string_value(watermark(ds)), "60000");
    json_decref(ds);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(log);
    assert_file(db_path, FIRST_ROWS + MORE_ROWS, "60000");
    free(config);
    free(log);
    free(db_path);
}

static void test_unreachable_at_startup(void **state)
{
    (void)state;
    const char *interval = tl_soak() ? "1" : "0.05";
    double interval_s = atof(interval) * 60;
    char *config = outage_config("startup", "startup", interval, 1000, ""), *log = path_in("startup.log");
    tl_pg_instance_stop(&g_pg, "fast");
    tl_server srv;
    double t0 = tl_now_ms();
    tl_server_start(&srv, config, log, NULL);
    printf("# PostgreSQL down: the API answered after %.2f s\n", (tl_now_ms() - t0) / 1000);
    json_t *ds = tl_server_wait_state(&srv, "outage_data", "error", 30);
    char expect[128];
    snprintf(expect, sizeof expect, "port %u failed: Connection refused", (unsigned)g_pg.port);
    tl_assert_contains(str(ds, "error"), "outage: cannot connect to PostgreSQL: connection to server at ");
    tl_assert_contains(str(ds, "error"), expect);
    json_decref(ds);

    /* Retries: 30 s x 2^(n-1) after n failures, never later than the
     * interval, counted from the end of the failed sync to the start of
     * the next (how long a failing attempt takes is the machine's
     * business). */
    int want = 4;
    double deadline = tl_now_ms() + (tl_soak() ? 300000 : 60000);
    while (failures(&srv) < want) {
        if (tl_now_ms() > deadline)
            fail_msg("only %d failed syncs so far", failures(&srv));
        tl_sleep_ms(100);
    }
    double ends[16], starts[16];
    size_t n = log_times(log, "outage: sync failed", ends, 16);
    size_t nstarts = log_times(log, "outage: sync started", starts, 16);
    assert_true(n >= (size_t)want);
    assert_true(nstarts >= n);
    for (size_t i = 1; i < n; i++) {
        double backoff = 30.0 * (double)(1 << (i - 1));
        double expected = backoff < interval_s ? backoff : interval_s;
        double gap = starts[i] - ends[i - 1];
        printf("# retry %zu came %.2f s after the failure before it (expected %.0f s)\n", i, gap, expected);
        assert_true(gap >= expected - 0.5 && gap <= expected + 2.5);
    }
    t0 = tl_now_ms();
    tl_pg_instance_start(&g_pg);
    ds = tl_server_wait_state(&srv, "outage_data", "ready", interval_s + 60);
    printf("# recovered %.1f s after PostgreSQL came up\n", (tl_now_ms() - t0) / 1000);
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), FIRST_ROWS + MORE_ROWS);
    json_decref(ds);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(log);
    free(config);
    free(log);
}

static void test_backend_frozen(void **state)
{
    (void)state;
    /* query_timeout 10 s: the sync gives up after 20 s of silence. */
    /* Pauses every 200 rows: its COPY lasts ~6 s (within query_timeout),
     * time enough to catch it. */
    char *config = outage_config("frozen", "manual", "0", 200, "  query_timeout: 10\n"),
         *log = path_in("frozen.log");
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    tl_trigger(&srv, "outage", false);
    int64_t rows = 0;
    double deadline = tl_now_ms() + 30000;
    while (strcmp(tl_phase(&srv, "outage_data", &rows), "reading") != 0 || rows < 2048) {
        if (tl_now_ms() > deadline)
            fail_msg("the sync never started reading");
        tl_sleep_ms(5);
    }
    PGconn *pg = tl_pg_connect(g_pg.conninfo);
    g_stopped_backend = (pid_t)tl_pg_int(pg, "SELECT pid FROM pg_stat_activity WHERE application_name = "
                                             "'duckstore' AND query LIKE 'COPY %%' AND state = 'active'");
    assert_int_equal(kill(g_stopped_backend, SIGSTOP), 0);
    double t0 = tl_now_ms();
    json_t *ds = tl_server_wait_state(&srv, "outage_data", "error", 40);
    double elapsed = (tl_now_ms() - t0) / 1000;
    printf("# backend %d stopped (SIGSTOP) after %lld rows: error after %.2f s\n", (int)g_stopped_backend,
           (long long)rows, elapsed);
    assert_string_equal(str(ds, "error"),
                        "outage: query: PostgreSQL sent nothing for 20 s (query_timeout + 10 s): "
                        "the server or the network path to it hangs; the connection was closed");
    /* From the last bytes the backend sent, a moment before SIGSTOP. */
    assert_true(elapsed >= 18 && elapsed < 26);
    json_decref(ds);
    kill(g_stopped_backend, SIGCONT);
    g_stopped_backend = 0;
    PQfinish(pg);
    /* The source is not blocked: the next trigger syncs. */
    tl_trigger(&srv, "outage", false);
    ds = tl_server_wait_state(&srv, "outage_data", "ready", 60);
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), FIRST_ROWS + MORE_ROWS);
    json_decref(ds);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(log);
    free(config);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stopped_in_the_middle_of_a_copy),
        cmocka_unit_test(test_unreachable_at_startup),
        cmocka_unit_test(test_backend_frozen),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
