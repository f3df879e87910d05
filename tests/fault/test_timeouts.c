/* Syncs that wait on PostgreSQL are bounded, under the server: a query past
 * query_timeout, a server that accepts the connection and never answers
 * (connect_timeout, 10 s), and a server that goes silent in the middle of a
 * COPY (pgsrc's silence bound: query_timeout + 10 s). Each sync ends in
 * `error` within its bound with a message saying why, and the next trigger
 * of the same source syncs normally. The silent peers are a loopback TCP
 * relay in front of the harness PostgreSQL (tl_proxy). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "tl_fault.h"
#include "tl_http.h"

#define ROWS 20000
/* The planned source's statements wait for this advisory lock while the test
 * holds it (the partition ranges query first). */
#define PLAN_GATE 7171

static char *g_dir, *g_conninfo, *g_config, *g_log;
static PGconn *g_pg;
static tl_proxy *g_proxy;
static tl_server g_srv;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("fault_timeouts"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg,
               "CREATE TABLE events (id bigint PRIMARY KEY, payload text NOT NULL);"
               "INSERT INTO events SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, %d) g;"
               "CREATE TABLE ctl (slow boolean NOT NULL); INSERT INTO ctl VALUES (true)",
               ROWS);
    g_proxy = tl_proxy_start((uint16_t)atoi(PQport(g_pg)), TL_PROXY_FORWARD);
    g_dir = tl_mkdtemp();
    if (asprintf(&g_log, "%s/server.log", g_dir) < 0)
        fail_msg("out of memory");
    char lines[700];
    snprintf(lines, sizeof lines, "  path: %s/timeouts.duckdb\n  sync_mode: manual\n  sync_workers: 2\n",
             g_dir);
    g_config = tl_conf_dir(g_dir, "config", lines);
    /* Sleeps 30 s before its first row while ctl.slow is set: far longer
     * than query_timeout, so a sync that waited for the query to end is
     * told apart from one that gave up, whatever the machine's speed. */
    tl_conf_source(g_config, "slowq",
                   "  url: \"%s\"\n  query_timeout: 1\n  query: |\n"
                   "    SELECT e.id, e.payload FROM events e,\n"
                   "      (SELECT pg_sleep(CASE WHEN slow THEN 30 ELSE 0 END) FROM ctl) AS pause\n",
                   g_conninfo);
    /* Through the relay (a later port= wins in a conninfo); its COPY takes
     * about a second, 10 ms pauses spread over the rows (query_timeout
     * leaves room for a loaded CI machine). */
    tl_conf_source(
        g_config, "relayed",
        "  url: \"%s port=%u\"\n  query_timeout: 8\n  query: |\n"
        "    SELECT id, payload FROM events WHERE (id %% 200 <> 0 OR pg_sleep(0.01) IS NOT NULL)\n",
        g_conninfo, (unsigned)tl_proxy_port(g_proxy));
    /* Partitioned: a full sync first asks PostgreSQL for the ranges; every
     * statement over this query waits for PLAN_GATE first. */
    tl_conf_source(
        g_config, "planned",
        "  url: \"%s port=%u\"\n  query_timeout: 3\n  partition_column: id\n  query: |\n"
        "    SELECT e.id, e.payload FROM events e, (SELECT pg_advisory_xact_lock_shared(%d)) AS gate\n",
        g_conninfo, (unsigned)tl_proxy_port(g_proxy), PLAN_GATE);
    tl_server_start(&g_srv, g_config, g_log, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_srv.pid > 0)
        assert_int_equal(tl_server_stop(&g_srv, 30, NULL), 0);
    tl_assert_clean_log(g_log);
    tl_server_kill_all();
    tl_proxy_stop(g_proxy);
    PQfinish(g_pg);
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_conninfo);
    free(g_config);
    free(g_log);
    return 0;
}

/* Waits for the sync to end and returns its final document; *elapsed_s is
 * the time from `since_ms`. */
static json_t *wait_done(const char *dataset, double since_ms, double timeout_s, double *elapsed_s)
{
    double deadline = tl_now_ms() + timeout_s * 1000;
    for (;;) {
        json_t *ds = tl_server_dataset(&g_srv, dataset);
        const char *state = json_string_value(json_object_get(ds, "state"));
        if (state && strcmp(state, "syncing") != 0) {
            *elapsed_s = (tl_now_ms() - since_ms) / 1000;
            return ds;
        }
        if (tl_now_ms() > deadline) {
            char *text = json_dumps(ds, 0);
            fail_msg("%s still syncing after %.0f s: a stuck sync; status %s", dataset, timeout_s, text);
        }
        json_decref(ds);
        tl_sleep_ms(50);
    }
}

static void assert_error(json_t *ds, const char *needle)
{
    assert_string_equal(json_string_value(json_object_get(ds, "state")), "error");
    const char *msg = json_string_value(json_object_get(ds, "error"));
    assert_non_null(msg);
    tl_assert_contains(msg, needle);
}

/* The same source syncs normally on the next trigger. */
static void assert_next_sync_ok(const char *source, const char *dataset)
{
    double t0 = tl_now_ms(), elapsed;
    tl_trigger(&g_srv, source, false);
    json_t *ds = wait_done(dataset, t0, 60, &elapsed);
    if (strcmp(json_string_value(json_object_get(ds, "state")), "ready") != 0)
        fail_msg("the next sync of %s failed: %s", source, json_string_value(json_object_get(ds, "error")));
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), ROWS);
    json_decref(ds);
}

static void test_query_timeout(void **state)
{
    (void)state;
    double t0 = tl_now_ms(), elapsed;
    tl_trigger(&g_srv, "slowq", false);
    json_t *ds = wait_done("slowq_data", t0, 30, &elapsed);
    assert_error(ds, "slowq: query (");
    assert_error(ds, "exceeded query_timeout (1 s); narrow the query or raise query_timeout");
    json_decref(ds);
    printf("# query_timeout 1 s: the sync ended in error after %.2f s\n", elapsed);
    assert_true(elapsed >= 0.9 && elapsed < 20); /* not the query's 30 s */
    tl_pg_exec(g_pg, "UPDATE ctl SET slow = false");
    assert_next_sync_ok("slowq", "slowq_data");
}

static void test_server_never_answers(void **state)
{
    (void)state;
    tl_proxy_set_mode(g_proxy, TL_PROXY_HANG);
    int accepted = tl_proxy_accepted(g_proxy);
    double t0 = tl_now_ms(), elapsed;
    tl_trigger(&g_srv, "relayed", false);
    /* The bound runs from the connection, not from the trigger: a loaded
     * machine may take a while to get there. */
    double deadline = t0 + 30000;
    while (tl_proxy_accepted(g_proxy) == accepted) {
        if (tl_now_ms() > deadline)
            fail_msg("the sync never connected to the silent listener");
        tl_sleep_ms(5);
    }
    double connected = tl_now_ms();
    json_t *ds = wait_done("relayed_data", t0, 40, &elapsed);
    double since_connect = elapsed - (connected - t0) / 1000;
    assert_error(ds, "relayed: cannot connect to PostgreSQL: ");
    assert_error(ds, "timeout expired");
    json_decref(ds);
    printf("# a server that accepts and never answers: error %.2f s after the trigger, %.2f s after the "
           "connection (connect_timeout 10 s)\n",
           elapsed, since_connect);
    assert_true(elapsed >= 9.5);     /* the trigger came before the connection */
    assert_true(since_connect < 18); /* one connect_timeout, not two */
    tl_proxy_set_mode(g_proxy, TL_PROXY_FORWARD);
    assert_next_sync_ok("relayed", "relayed_data");
}

static void test_server_silent_mid_copy(void **state)
{
    (void)state;
    tl_trigger(&g_srv, "relayed", true);
    int64_t rows = 0;
    double deadline = tl_now_ms() + 30000;
    while (strcmp(tl_phase(&g_srv, "relayed_data", &rows), "reading") != 0 || rows == 0) {
        if (tl_now_ms() > deadline)
            fail_msg("the sync never started reading");
        tl_sleep_ms(5);
    }
    tl_proxy_set_mode(g_proxy, TL_PROXY_FREEZE);
    double t0 = tl_now_ms(), elapsed;
    json_t *ds = wait_done("relayed_data", t0, 60, &elapsed);
    assert_error(ds, "relayed: query: PostgreSQL sent nothing for 18 s (query_timeout + 10 s): the server or "
                     "the network path to it hangs; the connection was closed");
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), ROWS); /* previous result kept */
    json_decref(ds);
    printf("# PostgreSQL silent in the middle of a COPY (after %lld rows): error after %.2f s (query_timeout "
           "8 s "
           "+ 10 s)\n",
           (long long)rows, elapsed);
    /* The last bytes may have left PostgreSQL a moment before the relay
     * froze (a busy machine stretches that moment): 15 s tells the 18 s
     * bound from query_timeout alone. */
    assert_true(elapsed >= 15 && elapsed < 26);
    /* The path stays dead for the old connections: the backend of the
     * failed sync's lock never learns that its connection was closed, and
     * holds the source's lock. The next sync ends it instead of being
     * refused as busy by duckstore's own leftover. */
    tl_proxy_strand_existing(g_proxy);
    assert_next_sync_ok("relayed", "relayed_data");
    char *log = tl_read_file(g_log);
    tl_assert_contains(log, "relayed: ended PostgreSQL backend PID ");
    tl_assert_contains(log,
                       "which still held the source's sync lock after this server gave its connection up");
    free(log);
    char *metrics = tl_server_metrics(&g_srv);
    assert_int_equal((int)tl_metric(metrics, "duckstore_syncs_total{source=\"relayed\",result=\"error\"}"),
                     2);
    assert_int_equal((int)tl_metric(metrics, "duckstore_syncs_total{source=\"relayed\",result=\"success\"}"),
                     2);
    free(metrics);
}

/* Backends of duckstore on the test database waiting for PLAN_GATE. */
static int64_t gate_waiters(void)
{
    return tl_pg_int(
        g_pg,
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted "
        "AND l.locktype = 'advisory' AND l.objid = %d AND a.datname = current_database() AND "
        "a.application_name = 'duckstore'",
        PLAN_GATE);
}

/* PostgreSQL going silent while the partition ranges are computed: the
 * planning statement is bounded like every other (it once used a bare
 * PQexec and left the source `syncing` forever). The test holds PLAN_GATE,
 * so the ranges query waits in PostgreSQL until the relay is frozen; only
 * then is it let finish, and its answer never arrives. The ranges query
 * gives up after query_timeout (3 s) by itself: when the test was too slow
 * to freeze the relay before that, the sync is let end and tried again. */
static void test_server_silent_during_partition_planning(void **state)
{
    (void)state;
    bool frozen_in_planning = false;
    for (int attempt = 0; attempt < 5 && !frozen_in_planning; attempt++) {
        tl_proxy_set_mode(g_proxy, TL_PROXY_FORWARD);
        tl_pg_exec(g_pg, "SELECT pg_advisory_lock(%d)", PLAN_GATE);
        tl_trigger(&g_srv, "planned", true);
        double deadline = tl_now_ms() + 30000;
        while (gate_waiters() == 0) {
            if (tl_now_ms() > deadline)
                fail_msg("the sync never sent its partition ranges query");
            tl_sleep_ms(5);
        }
        tl_proxy_set_mode(g_proxy, TL_PROXY_FREEZE);
        /* Still waiting after the freeze: whatever PostgreSQL sends from now
         * on, the server does not get it. */
        frozen_in_planning = gate_waiters() > 0;
        int64_t rows = -1;
        tl_phase(&g_srv, "planned_data", &rows);
        tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", PLAN_GATE);
        double t0 = tl_now_ms(), elapsed;
        if (!frozen_in_planning) {
            printf("# the ranges query ended before the relay froze; again\n");
            tl_proxy_set_mode(g_proxy, TL_PROXY_FORWARD);
            json_decref(wait_done("planned_data", t0, 60, &elapsed));
            continue;
        }
        assert_int_equal(rows, 0); /* still planning: no row read yet */
        json_t *ds = wait_done("planned_data", t0, 40, &elapsed);
        assert_error(ds, "PostgreSQL sent nothing for 13 s");
        json_decref(ds);
    }
    if (!frozen_in_planning)
        fail_msg("in 5 attempts the relay never froze while the ranges query waited");
    tl_proxy_set_mode(g_proxy, TL_PROXY_FORWARD);
    assert_next_sync_ok("planned", "planned_data");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_timeout),
        cmocka_unit_test(test_server_never_answers),
        cmocka_unit_test(test_server_silent_mid_copy),
        cmocka_unit_test(test_server_silent_during_partition_planning),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
