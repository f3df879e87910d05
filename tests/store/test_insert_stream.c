/* store_insert_stream: a C producer's rows reach the table, its own error
 * comes back as it was raised, and the producers of running streams belong
 * to their database and connection: streams on two stores and on two
 * connections of one store run at once without meeting, and neither a
 * stray call of the table function nor a user's macro of the same name
 * reaches a producer. */
#include "testlib.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows first..first+n-1 as (i BIGINT, s VARCHAR 's<i>'), in chunks of at
 * most `chunk` rows; fails with DS_ERR_DECODE after fail_after rows when
 * that is >= 0. Optionally runs `probe` on another connection while the
 * stream runs. */
typedef struct producer {
    int64_t next, end;
    idx_t chunk;
    int64_t fail_after;
    duckdb_connection probe_con;
    char *probe_error; /* what the probe query answered */
    int chunks;
} producer;

static bool produce(void *ctx, duckdb_data_chunk out, ds_error *err)
{
    producer *p = ctx;
    if (p->probe_con != NULL && p->probe_error == NULL) {
        duckdb_result res;
        if (duckdb_query(p->probe_con, "SELECT * FROM duckstore_stream()", &res) == DuckDBError)
            p->probe_error = strdup(duckdb_result_error(&res));
        else
            p->probe_error = strdup("(the stray call succeeded)");
        duckdb_destroy_result(&res);
    }
    if (p->fail_after >= 0 && p->next >= p->fail_after)
        return ds_error_set(err, DS_ERR_DECODE, "producer gave up at row %lld", (long long)p->next);
    int64_t *ids = duckdb_vector_get_data(duckdb_data_chunk_get_vector(out, 0));
    duckdb_vector strs = duckdb_data_chunk_get_vector(out, 1);
    idx_t n = 0;
    while (n < p->chunk && p->next < p->end) {
        char s[32];
        snprintf(s, sizeof s, "s%lld", (long long)p->next);
        ids[n] = p->next++;
        duckdb_vector_assign_string_element(strs, n++, s);
    }
    duckdb_data_chunk_set_size(out, n);
    p->chunks += n > 0;
    return true;
}

static producer rows(int64_t first, int64_t n, idx_t chunk)
{
    producer p = {.next = first, .end = first + n, .chunk = chunk, .fail_after = -1};
    return p;
}

static store *open_store(const char *dir, const char *name)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    store *st;
    ds_error err;
    if (!store_open(path, &st, &err))
        fail_msg("%s", err.msg);
    return st;
}

static void insert_ok(store *st, duckdb_connection con, const char *table_ref, producer *p)
{
    ds_error err = {0};
    if (!store_insert_stream(st, con, table_ref, produce, p, &err))
        fail_msg("store_insert_stream into %s: %s", table_ref, err.msg);
}

/* count, min, max and the sum of lengths of s: "n/min/max/len". */
static void assert_rows(duckdb_connection con, const char *table_ref, const char *expected)
{
    char *got = tl_duck_scalar(con,
                               "SELECT count(*) || '/' || min(i) || '/' || max(i) || '/' || sum(length(s)) "
                               "FROM %s WHERE s = 's' || i",
                               table_ref);
    assert_non_null(got);
    assert_string_equal(got, expected);
    free(got);
}

static void test_rows_arrive(void **state)
{
    (void)state;
    char *dir = tl_mkdtemp();
    store *st = open_store(dir, "a.duckdb");
    duckdb_connection con = tl_store_connect(st);
    tl_duck_exec(con, "CREATE TABLE \"we\"\"ird \\ t\" (i BIGINT, s VARCHAR)");
    producer p = rows(1, 5000, 2048);
    insert_ok(st, con, "\"we\"\"ird \\ t\"", &p);
    assert_int_equal(p.chunks, 3);
    /* 9 one-digit, 90 two-digit, 900 three-digit, 4001 four-digit ids. */
    assert_rows(con, "\"we\"\"ird \\ t\"", "5000/1/5000/23893");

    /* Inside the caller's transaction: a rollback takes the rows back. */
    tl_duck_exec(con, "BEGIN TRANSACTION");
    p = rows(5001, 10, 2048);
    insert_ok(st, con, "\"we\"\"ird \\ t\"", &p);
    tl_duck_exec(con, "ROLLBACK");
    assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM \"we\"\"ird \\ t\""), 5000);

    duckdb_disconnect(&con);
    store_close(st);
    tl_rmtree(dir);
    free(dir);
}

static void test_producer_error_comes_back(void **state)
{
    (void)state;
    char *dir = tl_mkdtemp();
    store *st = open_store(dir, "a.duckdb");
    duckdb_connection con = tl_store_connect(st);
    tl_duck_exec(con, "CREATE TABLE t (i BIGINT, s VARCHAR)");
    producer p = rows(0, 10000, 1000);
    p.fail_after = 3000;
    ds_error err = {0};
    assert_false(store_insert_stream(st, con, "t", produce, &p, &err));
    assert_int_equal(err.code, DS_ERR_DECODE);
    assert_string_equal(err.msg, "producer gave up at row 3000");
    assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM t"), 0);

    /* A table that does not exist is DuckDB's error, and the connection
     * streams again afterwards. */
    memset(&err, 0, sizeof err);
    p = rows(0, 5, 1000);
    assert_false(store_insert_stream(st, con, "missing", produce, &p, &err));
    assert_int_equal(err.code, DS_ERR_STORE);
    tl_assert_contains(err.msg, "missing");
    insert_ok(st, con, "t", &p);
    assert_rows(con, "t", "5/0/4/10");

    duckdb_disconnect(&con);
    store_close(st);
    tl_rmtree(dir);
    free(dir);
}

/* The table function serves only the connection whose stream is running:
 * not a connection without one, not another connection while it runs. */
static void test_stray_calls_reach_no_producer(void **state)
{
    (void)state;
    char *dir = tl_mkdtemp();
    store *st = open_store(dir, "a.duckdb");
    duckdb_connection con = tl_store_connect(st), other = tl_store_connect(st);
    tl_duck_exec(con, "CREATE TABLE t (i BIGINT, s VARCHAR)");

    duckdb_result res;
    assert_int_equal(duckdb_query(other, "SELECT * FROM duckstore_stream()", &res), DuckDBError);
    tl_assert_contains(duckdb_result_error(&res), "internal to duckstore syncs");
    duckdb_destroy_result(&res);

    producer p = rows(0, 100, 2048);
    p.probe_con = other;
    insert_ok(st, con, "t", &p);
    assert_non_null(p.probe_error);
    tl_assert_contains(p.probe_error, "internal to duckstore syncs");
    free(p.probe_error);
    assert_rows(con, "t", "100/0/99/290");

    duckdb_disconnect(&other);
    duckdb_disconnect(&con);
    store_close(st);
    tl_rmtree(dir);
    free(dir);
}

/* A macro named like the stream's function in the user's file is not what
 * the stream calls. */
static void test_user_macros_do_not_stand_in(void **state)
{
    (void)state;
    char *dir = tl_mkdtemp();
    store *st = open_store(dir, "a.duckdb");
    duckdb_connection con = tl_store_connect(st);
    tl_duck_exec(con, "CREATE TABLE t (i BIGINT, s VARCHAR)");
    tl_duck_exec(con, "CREATE MACRO duckstore_stream() AS TABLE SELECT -1::BIGINT AS i, 'macro' AS s");
    producer p = rows(7, 3, 2048);
    insert_ok(st, con, "t", &p);
    assert_rows(con, "t", "3/7/9/6");
    /* The store registers one function, which takes no argument and
     * returns rows only to the connection whose insert it serves: no
     * address or handle of duckstore's memory is reachable from SQL. */
    assert_int_equal(tl_duck_int(con,
                                 "SELECT count(*) FROM duckdb_functions() WHERE database_name = 'system' "
                                 "AND function_name LIKE 'duckstore%%'"),
                     1);
    duckdb_result res;
    assert_int_equal(duckdb_query(con, "SELECT count(*) FROM system.main.duckstore_stream()", &res),
                     DuckDBError);
    tl_assert_contains(duckdb_result_error(&res), "internal to duckstore syncs");
    duckdb_destroy_result(&res);
    duckdb_disconnect(&con);
    store_close(st);
    tl_rmtree(dir);
    free(dir);
}

typedef struct stream_job {
    store *st;
    duckdb_connection con;
    const char *table;
    producer p;
    bool ok;
    ds_error err;
} stream_job;

static void *run_stream(void *arg)
{
    stream_job *j = arg;
    j->ok = store_insert_stream(j->st, j->con, j->table, produce, &j->p, &j->err);
    return NULL;
}

/* Four streams at once: two connections of one store, one connection each
 * of two more stores (three databases in the process). Each table gets its
 * own producer's rows. */
static void test_streams_of_databases_and_connections_run_at_once(void **state)
{
    (void)state;
    char *dir = tl_mkdtemp();
    store *stores[3] = {open_store(dir, "a.duckdb"), open_store(dir, "b.duckdb"),
                        open_store(dir, "c.duckdb")};
    stream_job jobs[4] = {
        {.st = stores[0], .con = tl_store_connect(stores[0]), .table = "t1", .p = rows(0, 200000, 2048)},
        {.st = stores[0],
         .con = tl_store_connect(stores[0]),
         .table = "t2",
         .p = rows(1000000, 150000, 1000)},
        {.st = stores[1], .con = tl_store_connect(stores[1]), .table = "t", .p = rows(2000000, 100000, 2048)},
        {.st = stores[2], .con = tl_store_connect(stores[2]), .table = "t", .p = rows(3000000, 120000, 777)},
    };
    for (int i = 0; i < 4; i++)
        tl_duck_exec(jobs[i].con, "CREATE TABLE %s (i BIGINT, s VARCHAR)", jobs[i].table);
    pthread_t threads[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, run_stream, &jobs[i]), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        if (!jobs[i].ok)
            fail_msg("stream %d: %s", i, jobs[i].err.msg);
    }
    assert_rows(jobs[0].con, "t1", "200000/0/199999/1288890");
    assert_rows(jobs[1].con, "t2", "150000/1000000/1149999/1200000");
    assert_rows(jobs[2].con, "t", "100000/2000000/2099999/800000");
    assert_rows(jobs[3].con, "t", "120000/3000000/3119999/960000");
    for (int i = 0; i < 4; i++)
        duckdb_disconnect(&jobs[i].con);
    for (int i = 0; i < 3; i++)
        store_close(stores[i]);
    tl_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_arrive),
        cmocka_unit_test(test_producer_error_comes_back),
        cmocka_unit_test(test_stray_calls_reach_no_producer),
        cmocka_unit_test(test_user_macros_do_not_stand_in),
        cmocka_unit_test(test_streams_of_databases_and_connections_run_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
