/* The readers' turn (duckdb.read_concurrency, read_turn_seconds): with one
 * turn that never runs out, a query through PostgreSQL's protocol or
 * /api/store/query waits while another runs, in line, and answers once
 * that one ends; a waiting query can be
 * cancelled and its statement timeout (or timeout_ms) counts the wait;
 * /metrics shows who runs and who waits. With a turn of half a second, a
 * long query lets the next one run beside it. */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "tl_http.h"

/* Runs until cancelled: DuckDB counts a range it never reaches the end of. */
#define LONG_QUERY "SELECT count(*) FROM range(100000000000) a"

static char *g_dir, *g_conninfo, *g_log;
static PGconn *g_pg;
static tl_server g_srv;
static uint16_t g_pg_port;

/* serve with one turn and the source t in DIR/name; extra: more duckdb:
 * lines. Returns the protocol's port; *log: the server's log. */
static uint16_t start_server(tl_server *srv, const char *name, const char *extra, char **log)
{
    char *dir = tl_keepf("%s/%s", g_dir, name);
    *log = strdup(tl_keepf("%s/serve.log", dir));
    return tl_serve_for_readers(srv, dir, tl_keepf("  read_concurrency: 1\n%s", extra), "t_db.yaml",
                                tl_keepf("t_db:\n  url: \"%s\"\n  query: SELECT * FROM t\n", g_conninfo),
                                "t_data", 60);
}

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("readgate"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10);");
    g_dir = tl_mkdtemp();
    /* A turn that never runs out: a long query holds the line for good. */
    g_pg_port = start_server(&g_srv, "main", "  read_turn_seconds: 0\n", &g_log);
    return 0;
}

static int teardown_group(void **state)
{
    (void)state;
    if (g_srv.pid != 0)
        assert_int_equal(tl_server_stop(&g_srv, 30, NULL), 0);
    tl_assert_clean_log(g_log);
    tl_server_kill_all();
    PQfinish(g_pg);
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_log);
    free(g_conninfo);
    tl_free_kept();
    return 0;
}

static PGconn *connect_reader(void)
{
    return tl_reader_connect(g_pg_port);
}

/* The gauge `name` of a server's /metrics. */
static double gauge_of(const tl_server *srv, const char *name)
{
    char *text = tl_server_metrics(srv);
    double v = tl_metric(text, name);
    free(text);
    return v;
}

static double gauge(const char *name)
{
    return gauge_of(&g_srv, name);
}

/* Polls /metrics until the gauge reads want; fails after 30 s. */
static void wait_gauge_of(const tl_server *srv, const char *name, double want)
{
    double deadline = tl_now_ms() + 30000, v = -1;
    while ((v = gauge_of(srv, name)) != want && tl_now_ms() < deadline)
        tl_sleep_ms(10);
    if (v != want)
        fail_msg("%s stayed %g, expected %g", name, v, want);
}

static void wait_gauge(const char *name, double want)
{
    wait_gauge_of(&g_srv, name, want);
}

/* Whether the client has its whole answer, after reading what arrived. */
static bool answered(PGconn *c)
{
    PQconsumeInput(c);
    return !PQisBusy(c);
}

/* The one result of a query sent with PQsendQuery (waits for it). */
static PGresult *only_result(PGconn *c)
{
    PGresult *r = PQgetResult(c), *extra;
    while ((extra = PQgetResult(c)) != NULL)
        PQclear(extra);
    assert_non_null(r);
    return r;
}

static void assert_sqlstate(PGresult *r, const char *state, const char *message)
{
    const char *got = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (got == NULL)
        fail_msg("expected %s, the query ended %s", state, PQresStatus(PQresultStatus(r)));
    assert_string_equal(got, state);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY), message);
}

/* Cancels the client's running query, again until it has stopped (a
 * cancel that arrives before the statement starts has nothing to stop). */
static void cancel_until_stopped(PGconn *c)
{
    double deadline = tl_now_ms() + 60000;
    while (!answered(c) && tl_now_ms() < deadline) {
        PGcancel *cancel = PQgetCancel(c);
        char err[256];
        assert_int_equal(PQcancel(cancel, err, sizeof err), 1);
        PQfreeCancel(cancel);
        double until = tl_now_ms() + 200;
        while (!answered(c) && tl_now_ms() < until)
            tl_sleep_ms(10);
    }
    PGresult *r = only_result(c);
    assert_sqlstate(r, "57014", "canceling statement due to user request");
    PQclear(r);
}

/* A long query through the protocol that holds the one turn. */
static PGconn *hold_the_turn_of(const tl_server *srv, uint16_t port)
{
    PGconn *c = tl_reader_connect(port);
    assert_int_equal(PQsendQuery(c, LONG_QUERY), 1);
    wait_gauge_of(srv, "duckstore_read_queries_running", 1);
    return c;
}

static PGconn *hold_the_turn(void)
{
    return hold_the_turn_of(&g_srv, g_pg_port);
}

typedef struct http_call {
    const char *body;
    tl_http_response r;
    bool ok;
} http_call;

static void *post_query(void *arg)
{
    http_call *call = arg;
    call->ok = tl_http_request(g_srv.port, "POST", "/api/store/query", NULL, call->body, strlen(call->body),
                               &call->r);
    return NULL;
}

static void test_queries_wait_their_turn(void **state)
{
    (void)state;
    double waited_before = gauge("duckstore_read_queries_waited_total");
    PGconn *a = hold_the_turn();
    PGconn *b = connect_reader();
    assert_int_equal(PQsendQuery(b, "SELECT 41 + 1"), 1);
    wait_gauge("duckstore_read_queries_waiting", 1);
    http_call call = {.body = "{\"sql\":\"SELECT 7 AS seven\"}"};
    pthread_t http;
    assert_int_equal(pthread_create(&http, NULL, post_query, &call), 0);
    wait_gauge("duckstore_read_queries_waiting", 2);
    /* Neither answers while the long query holds the turn. */
    tl_sleep_ms(300);
    assert_false(answered(b));
    assert_int_equal(gauge("duckstore_read_queries_waiting"), 2);
    cancel_until_stopped(a);
    PGresult *r = only_result(b);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    pthread_join(http, NULL);
    assert_true(call.ok);
    assert_int_equal(call.r.status, 200);
    char *body = tl_http_dechunk(call.r.body, NULL);
    json_t *doc = json_loads(body, 0, NULL);
    free(body);
    assert_non_null(doc);
    json_t *row = json_array_get(json_object_get(doc, "rows"), 0);
    assert_int_equal(json_integer_value(json_array_get(row, 0)), 7);
    json_decref(doc);
    tl_http_response_free(&call.r);
    wait_gauge("duckstore_read_queries_running", 0);
    assert_int_equal(gauge("duckstore_read_queries_waiting"), 0);
    assert_int_equal(gauge("duckstore_read_queries_waited_total"), waited_before + 2);
    PQfinish(a);
    PQfinish(b);
}

static void test_a_waiting_query_can_be_stopped(void **state)
{
    (void)state;
    PGconn *a = hold_the_turn();
    PGconn *b = connect_reader();
    /* A cancel reaches a query waiting in line. */
    assert_int_equal(PQsendQuery(b, "SELECT 1"), 1);
    wait_gauge("duckstore_read_queries_waiting", 1);
    cancel_until_stopped(b);
    assert_int_equal(gauge("duckstore_read_queries_waiting"), 0);
    /* The statement timeout counts the wait. */
    PQclear(PQexec(b, "SET statement_timeout = 300"));
    double t0 = tl_now_ms();
    PGresult *r = PQexec(b, "SELECT 1");
    assert_sqlstate(r, "57014", "canceling statement due to statement timeout");
    assert_true(tl_now_ms() - t0 >= 300);
    PQclear(r);
    /* So does /api/store/query's timeout_ms. */
    http_call call = {.body = "{\"sql\":\"SELECT 1\",\"timeout_ms\":300}"};
    post_query(&call);
    assert_true(call.ok);
    assert_int_equal(call.r.status, 504);
    tl_assert_contains(call.r.body, "the query ran longer than its timeout_ms (300 ms)");
    tl_http_response_free(&call.r);
    assert_int_equal(gauge("duckstore_read_queries_waiting"), 0);
    /* The long query still holds the turn; once it ends, the next runs. */
    assert_false(answered(a));
    cancel_until_stopped(a);
    PQclear(PQexec(b, "RESET statement_timeout"));
    r = PQexec(b, "SELECT 41 + 1");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    PQfinish(a);
    PQfinish(b);
}

/* With read_turn_seconds, a long query lets the next one in once its turn
 * has run out, and goes on beside it. */
static void test_a_long_query_gives_its_turn_up(void **state)
{
    (void)state;
    tl_server srv;
    char *log = NULL;
    uint16_t port = start_server(&srv, "turn", "  read_turn_seconds: 0.5\n", &log);
    PGconn *a = hold_the_turn_of(&srv, port);
    PGconn *b = tl_reader_connect(port);
    PGresult *r = PQexec(b, "SELECT 41 + 1");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    /* It waited for the long query's turn to run out. */
    assert_int_equal(gauge_of(&srv, "duckstore_read_queries_waited_total"), 1);
    /* The long query runs on, still counted as running. */
    assert_false(answered(a));
    assert_int_equal(gauge_of(&srv, "duckstore_read_queries_running"), 1);
    assert_int_equal(gauge_of(&srv, "duckstore_read_queries_waiting"), 0);
    cancel_until_stopped(a);
    PQfinish(a);
    PQfinish(b);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(log);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queries_wait_their_turn),
        cmocka_unit_test(test_a_waiting_query_can_be_stopped),
        cmocka_unit_test(test_a_long_query_gives_its_turn_up),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
