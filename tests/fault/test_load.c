/* wrk against GET /api/store/status and GET /health while full syncs run
 * back to back (a thread asks for ?full=true again as soon as the previous
 * one ended): no answer but 200, no socket error, and the syncs keep
 * succeeding. Prints requests/s and the latency percentiles that
 * docs/operations.md quotes. 10 s per endpoint; DUCKSTORE_SOAK=1: 30 s.
 * Loopback only. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "tl_fault.h"
#include "tl_http.h"

#define ROWS 150000

static char *g_dir, *g_conninfo, *g_config, *g_log;
static tl_server g_srv;

static int group_setup(void **state)
{
    (void)state;
    char *out = NULL;
    if (tl_run(&out, "command -v wrk") != 0)
        fail_msg("wrk is not installed (Debian package wrk; scripts/install-deps.sh installs it)");
    free(out);
    g_conninfo = strdup(tl_pg_fresh_db("fault_load"));
    PGconn *pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(pg,
               "CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, kind text, "
               "value double precision);"
               "INSERT INTO events SELECT g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', "
               "'kind-' || (g %% 17), g / 3.0 FROM generate_series(1, %d) g",
               ROWS);
    PQfinish(pg);
    g_dir = tl_mkdtemp();
    if (asprintf(&g_log, "%s/server.log", g_dir) < 0)
        fail_msg("out of memory");
    char lines[700];
    snprintf(lines, sizeof lines, "  path: %s/load.duckdb\n  sync_mode: startup\n", g_dir);
    g_config = tl_conf_dir(g_dir, "config", lines);
    tl_conf_source(g_config, "load",
                   "  url: \"%s\"\n  query: SELECT * FROM events\n  incremental_column: id\n", g_conninfo);
    tl_server_start(&g_srv, g_config, g_log, NULL);
    json_decref(tl_server_wait_state(&g_srv, "load_data", "ready", 60));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_srv.pid > 0)
        assert_int_equal(tl_server_stop(&g_srv, 30, NULL), 0);
    tl_assert_clean_log(g_log);
    tl_server_kill_all();
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_conninfo);
    free(g_config);
    free(g_log);
    return 0;
}

/* Asks for a full sync again and again: 202 when one starts, 409 while
 * one runs; anything else is counted as a failure. */
typedef struct syncer {
    pthread_t thread;
    atomic_bool stop;
    int started, busy, other, last_other;
} syncer;

static void *syncer_main(void *arg)
{
    syncer *s = arg;
    while (!atomic_load(&s->stop)) {
        tl_http_response resp;
        bool answered =
            tl_http_request(g_srv.port, "POST", "/api/store/sync/load?full=true", NULL, NULL, 0, &resp);
        int status = answered ? resp.status : 0;
        tl_http_response_free(&resp);
        if (status == 202) {
            s->started++;
        } else if (status == 409) {
            s->busy++;
            tl_sleep_ms(20);
        } else {
            s->other++;
            s->last_other = status;
        }
    }
    return NULL;
}

static double metric(const char *series)
{
    char *m = tl_server_metrics(&g_srv);
    double v = tl_metric(m, series);
    free(m);
    return v;
}

/* A latency of wrk's output ("812.00us", "1.52ms", "2.01s") in ms. */
static double wrk_ms(const char *text)
{
    char *end = NULL;
    double v = strtod(text, &end);
    if (strncmp(end, "us", 2) == 0)
        return v / 1000;
    if (strncmp(end, "ms", 2) == 0)
        return v;
    if (strncmp(end, "s", 1) == 0)
        return v * 1000;
    if (strncmp(end, "m", 1) == 0)
        return v * 60000;
    fail_msg("cannot read wrk's latency \"%s\"", text);
    return 0;
}

/* The number after `label` in wrk's output, 0 when the line is absent
 * (wrk prints error lines only when there were errors). */
static double after(const char *out, const char *label)
{
    const char *p = strstr(out, label);
    return p ? strtod(p + strlen(label), NULL) : 0;
}

/* One wrk run of `seconds` against path; fails on any error, adds its
 * requests to *total and returns its output (caller frees). */
static char *wrk_round(const char *path, int seconds, long *total)
{
    char *out = NULL;
    int rc = tl_run(&out, "wrk -t2 -c16 -d%ds --timeout 5s --latency http://127.0.0.1:%u%s", seconds,
                    (unsigned)g_srv.port, path);
    if (rc != 0)
        fail_msg("wrk failed (%d):\n%s", rc, out);
    const char *requests = strstr(out, " requests in ");
    if (requests == NULL || strstr(out, "     99%") == NULL || strstr(out, "     50%") == NULL)
        fail_msg("unexpected wrk output:\n%s", out);
    while (requests > out && requests[-1] != '\n')
        requests--;
    *total += strtol(requests, NULL, 10);
    if (after(out, "Non-2xx or 3xx responses:") != 0 || strstr(out, "Socket errors:") != NULL)
        fail_msg("errors under load:\n%s", out);
    return out;
}

/* wrk for `seconds` while the syncer asks for full syncs; on a machine so
 * slow that fewer than two of them finished meanwhile, wrk runs again (at
 * most 5 more times): the point is syncs succeeding under load, however
 * long a sync takes here. */
static void run_wrk(const char *path)
{
    int seconds = tl_scale(10, 30);
    const char *ok_series = "duckstore_syncs_total{source=\"load\",result=\"success\"}";
    syncer s = {0};
    atomic_init(&s.stop, false);
    double ok_before = metric(ok_series);
    assert_int_equal(pthread_create(&s.thread, NULL, syncer_main, &s), 0);
    long total = 0;
    int rounds = 1;
    char *out = wrk_round(path, seconds, &total);
    for (; metric(ok_series) - ok_before < 2 && rounds < 6; rounds++) {
        char *next = wrk_round(path, seconds, &total);
        free(out);
        out = next;
    }
    atomic_store(&s.stop, true);
    pthread_join(s.thread, NULL);
    json_decref(tl_server_wait_state(&g_srv, "load_data", "ready", 120));
    double ok = metric(ok_series) - ok_before;
    double failed = metric("duckstore_syncs_total{source=\"load\",result=\"error\"}");
    const char *p99 = strstr(out, "     99%"), *p50 = strstr(out, "     50%");
    double rps = after(out, "Requests/sec:");
    double p99_ms = wrk_ms(p99 + 8 + strspn(p99 + 8, " ")), p50_ms = wrk_ms(p50 + 8 + strspn(p50 + 8, " "));
    printf("# wrk GET %s for %d x %d s (2 threads, 16 connections) during %.0f full syncs of %d rows: %ld "
           "requests; last run %.0f requests/s, latency p50 %.2f ms, p99 %.2f ms\n",
           path, rounds, seconds, ok, ROWS, total, rps, p50_ms, p99_ms);
    assert_int_equal(s.other, 0);
    assert_true(s.started >= 2);
    assert_true(ok >= 2);
    assert_true(failed == 0);
    assert_true(total >= 1000);
    free(out);
}

static void test_status_under_load(void **state)
{
    (void)state;
    run_wrk("/api/store/status");
}

static void test_health_under_load(void **state)
{
    (void)state;
    run_wrk("/health");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_under_load),
        cmocka_unit_test(test_health_under_load),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
