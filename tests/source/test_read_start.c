/* The first statements of a read (pgsrc_begin_read_after_horizon): the
 * commit horizon, BEGIN and the snapshot statement in one round trip, the
 * horizon and snapshot statements prepared once per session and reused by
 * a kept connection's later reads, anew when the session lost them. */
#include "testlib.h"

#include <stdlib.h>
#include <string.h>

#include "source/horizon.h"
#include "source/pgsrc.h"

static char *g_conninfo;

static pgsrc_conn connect_fresh(void)
{
    pgsrc_conn conn;
    ds_error err = {0};
    if (!pgsrc_connect(g_conninfo, 60, &conn, &err))
        fail_msg("%s", err.msg);
    return conn;
}

/* One read's first statements, then COMMIT: the horizon is a time, the
 * snapshot's xmax a transaction id. */
static void begin_and_commit(pgsrc_conn *conn, const char *query)
{
    pgsrc_horizon horizon;
    pgsrc_snapshot snap;
    ds_error err = {0};
    if (!pgsrc_begin_read_after_horizon(conn, query, true, false, &horizon, &snap, &err))
        fail_msg("%s", err.msg);
    assert_non_null(horizon.value);
    assert_true(strlen(horizon.value) >= 19);
    assert_true(snap.xmax > 0);
    pgsrc_horizon_free(&horizon);
    pgsrc_snapshot_free(&snap);
    if (!pgsrc_exec(conn, "COMMIT", &err))
        fail_msg("%s", err.msg);
}

static int64_t prepared_here(pgsrc_conn *conn)
{
    char *v = NULL;
    ds_error err = {0};
    if (!pgsrc_query_value(
            conn, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'duckstore\\_%'", &v, &err))
        fail_msg("%s", err.msg);
    int64_t n = strtoll(v, NULL, 10);
    free(v);
    return n;
}

/* Two statements prepared by the first read, none by the second of the
 * same query; a second query adds its snapshot statement only. */
static void test_prepared_once_per_session(void **state)
{
    (void)state;
    pgsrc_conn conn = connect_fresh();
    begin_and_commit(&conn, "SELECT 1 AS x");
    assert_int_equal(prepared_here(&conn), 2);
    assert_int_equal(conn.nprepared, 2);
    begin_and_commit(&conn, "SELECT 1 AS x");
    assert_int_equal(prepared_here(&conn), 2);
    begin_and_commit(&conn, "SELECT 2 AS y");
    assert_int_equal(prepared_here(&conn), 3);
    pgsrc_disconnect(&conn);
    assert_int_equal(conn.nprepared, 0);
}

/* A session that lost its statements (DEALLOCATE ALL, as a pooler may)
 * still reads: they are prepared anew, under new names. */
static void test_lost_statements_prepared_anew(void **state)
{
    (void)state;
    pgsrc_conn conn = connect_fresh();
    begin_and_commit(&conn, "SELECT 1 AS x");
    ds_error err = {0};
    if (!pgsrc_exec(&conn, "DEALLOCATE ALL", &err))
        fail_msg("%s", err.msg);
    assert_int_equal(prepared_here(&conn), 0);
    begin_and_commit(&conn, "SELECT 1 AS x");
    assert_int_equal(prepared_here(&conn), 2);
    begin_and_commit(&conn, "SELECT 1 AS x");
    assert_int_equal(prepared_here(&conn), 2);
    pgsrc_disconnect(&conn);
}

/* Past PGSRC_PREPARED_MAX statements a read's are sent unnamed, and it
 * reads all the same. */
static void test_cap_then_unnamed(void **state)
{
    (void)state;
    pgsrc_conn conn = connect_fresh();
    for (int i = 0; i < PGSRC_PREPARED_MAX + 3; i++) {
        char query[64];
        snprintf(query, sizeof query, "SELECT %d AS n", i);
        begin_and_commit(&conn, query);
    }
    assert_int_equal(prepared_here(&conn), PGSRC_PREPARED_MAX);
    assert_int_equal(conn.nprepared, PGSRC_PREPARED_MAX);
    pgsrc_disconnect(&conn);
}

/* A query that fails is named in the error, and the next reads work,
 * their statements prepared once. */
static void test_failing_query_then_read(void **state)
{
    (void)state;
    pgsrc_conn conn = connect_fresh();
    pgsrc_horizon horizon;
    pgsrc_snapshot snap;
    ds_error err = {0};
    assert_false(pgsrc_begin_read_after_horizon(&conn, "SELECT * FROM no_such_table", true, false, &horizon,
                                                &snap, &err));
    assert_non_null(strstr(err.msg, "no_such_table"));
    /* The failed read forgot what it prepared: the horizon it prepared
     * stays in the session, unused, beside the two prepared anew. */
    begin_and_commit(&conn, "SELECT 1 AS x");
    assert_int_equal(prepared_here(&conn), 3);
    begin_and_commit(&conn, "SELECT 1 AS x");
    assert_int_equal(prepared_here(&conn), 3);
    assert_int_equal(conn.nprepared, 2);
    pgsrc_disconnect(&conn);
}

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("readstart"));
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
        cmocka_unit_test(test_prepared_once_per_session),
        cmocka_unit_test(test_lost_statements_prepared_anew),
        cmocka_unit_test(test_cap_then_unnamed),
        cmocka_unit_test(test_failing_query_then_read),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
