/* What a partitioned read asks PostgreSQL before it reads again: whether
 * the planner runs the query with parallel workers once they are free
 * (pgsrc_plans_parallel, the settings kept only then), and whether the
 * reading backend waits to send (pgsrc_sample_send_waits): a backend whose
 * client does not read fills its socket, one that sleeps does not. */
#include "testlib.h"

#include <stdlib.h>
#include <string.h>

#include "source/pgsrc.h"
#include "source/ranges.h"

static char *g_conninfo;

static pgsrc_conn connect_fresh(void)
{
    pgsrc_conn conn;
    ds_error err = {0};
    if (!pgsrc_connect(g_conninfo, 60, &conn, &err))
        fail_msg("%s", err.msg);
    return conn;
}

static char *setting(pgsrc_conn *conn, const char *name)
{
    char sql[120], *v = NULL;
    ds_error err = {0};
    snprintf(sql, sizeof sql, "SELECT current_setting('%s')", name);
    if (!pgsrc_query_value(conn, sql, &v, &err))
        fail_msg("%s", err.msg);
    return v;
}

static void assert_setting(pgsrc_conn *conn, const char *name, const char *want)
{
    char *got = setting(conn, name);
    if (strcmp(got, want) != 0)
        fail_msg("%s = %s, want %s", name, got, want);
    free(got);
}

/* A scan of a table is planned with a Gather and keeps the settings for
 * the read; a query without a table is not, and leaves them as they were.
 * A server that allows no parallel workers is not asked. */
static void test_plans_parallel_keeps_settings_only_when_used(void **state)
{
    (void)state;
    pgsrc_conn conn = connect_fresh();
    ds_error err = {0};
    if (!pgsrc_exec(&conn,
                    "CREATE TABLE IF NOT EXISTS scanned AS SELECT i FROM generate_series(1, 1000) AS i",
                    &err) ||
        !pgsrc_exec(&conn, "BEGIN", &err))
        fail_msg("%s", err.msg);
    bool parallel = false;
    if (!pgsrc_plans_parallel(&conn, "SELECT i FROM scanned", 3, &parallel, &err))
        fail_msg("%s", err.msg);
    assert_true(parallel);
    assert_setting(&conn, "max_parallel_workers_per_gather", "3");
    assert_setting(&conn, "parallel_setup_cost", "0");
    assert_setting(&conn, "min_parallel_table_scan_size", "0");
    if (!pgsrc_parallel_off(&conn, &err))
        fail_msg("%s", err.msg);
    assert_setting(&conn, "max_parallel_workers_per_gather", "2");
    assert_setting(&conn, "parallel_setup_cost", "1000");

    if (!pgsrc_plans_parallel(&conn, "SELECT 1 AS x -- no table\n", 3, &parallel, &err))
        fail_msg("%s", err.msg);
    assert_false(parallel);
    assert_setting(&conn, "max_parallel_workers_per_gather", "2");

    if (!pgsrc_exec(&conn, "SET LOCAL max_parallel_workers_per_gather = 0", &err) ||
        !pgsrc_plans_parallel(&conn, "SELECT i FROM scanned", 3, &parallel, &err))
        fail_msg("%s", err.msg);
    assert_false(parallel);
    assert_setting(&conn, "parallel_setup_cost", "1000");
    if (!pgsrc_exec(&conn, "ROLLBACK", &err))
        fail_msg("%s", err.msg);
    pgsrc_disconnect(&conn);
}

static int backend_pid(PGconn *pg)
{
    int pid = PQbackendPID(pg);
    assert_true(pid > 0);
    return pid;
}

/* A client that sent a query with a large result and reads none of it:
 * its backend fills the socket and waits to send in every sample. */
static void test_backend_waiting_to_send_is_seen(void **state)
{
    (void)state;
    PGconn *reader = tl_pg_connect(g_conninfo);
    if (!PQsendQuery(reader, "SELECT repeat('x', 1000) FROM generate_series(1, 1000000)"))
        fail_msg("%s", PQerrorMessage(reader));
    pgsrc_conn side = connect_fresh();
    ds_error err = {0};
    int waiting = -1;
    /* The socket fills within moments; wait for it rather than guess. */
    for (int tries = 0; tries < 100 && waiting != 5; tries++)
        if (!pgsrc_sample_send_waits(&side, backend_pid(reader), 5, 0.01, &waiting, &err))
            fail_msg("%s", err.msg);
    assert_int_equal(waiting, 5);
    pgsrc_disconnect(&side);
    PQfinish(reader);
}

/* A backend that computes or sleeps does not wait to send: none of the
 * samples, each a fresh look (the sleep ends within them and the backend
 * goes idle: not ClientWrite either). */
static void test_sleeping_backend_is_not_waiting_to_send(void **state)
{
    (void)state;
    PGconn *reader = tl_pg_connect(g_conninfo);
    if (!PQsendQuery(reader, "SELECT pg_sleep(0.3)"))
        fail_msg("%s", PQerrorMessage(reader));
    pgsrc_conn side = connect_fresh();
    ds_error err = {0};
    int waiting = -1;
    if (!pgsrc_sample_send_waits(&side, backend_pid(reader), 10, 0.05, &waiting, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(waiting, 0);
    /* No such backend: no sample finds it. */
    if (!pgsrc_sample_send_waits(&side, 0, 3, 0.01, &waiting, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(waiting, 0);
    pgsrc_disconnect(&side);
    PQfinish(reader);
}

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("parallelread"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plans_parallel_keeps_settings_only_when_used),
        cmocka_unit_test(test_backend_waiting_to_send_is_seen),
        cmocka_unit_test(test_sleeping_backend_is_not_waiting_to_send),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
