/* Foundation check: the harness PostgreSQL answers, and values written to a
 * DuckDB file through the C API appender read back exactly after reopening. */
#include "testlib.h"

#include <stdlib.h>
#include <string.h>

static void test_pg_values_reach_duckdb_file(void **state)
{
    (void)state;
    PGconn *pg = tl_pg_connect(tl_pg_fresh_db("roundtrip"));
    tl_pg_exec(pg, "CREATE TABLE t (id int, name text)");
    tl_pg_exec(pg, "INSERT INTO t VALUES (1, 'alpha'), (2, 'beta'), (3, NULL)");
    PGresult *res = PQexec(pg, "SELECT id, name FROM t ORDER BY id");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(res), 3);

    char *dir = tl_mkdtemp();
    char path[512];
    snprintf(path, sizeof path, "%s/roundtrip.duckdb", dir);

    duckdb_database db;
    duckdb_connection con;
    assert_int_equal(duckdb_open(path, &db), DuckDBSuccess);
    assert_int_equal(duckdb_connect(db, &con), DuckDBSuccess);
    tl_duck_exec(con, "CREATE TABLE t (id INTEGER, name VARCHAR)");
    duckdb_appender app;
    assert_int_equal(duckdb_appender_create(con, NULL, "t", &app), DuckDBSuccess);
    for (int r = 0; r < PQntuples(res); r++) {
        duckdb_append_int32(app, atoi(PQgetvalue(res, r, 0)));
        if (PQgetisnull(res, r, 1))
            duckdb_append_null(app);
        else
            duckdb_append_varchar(app, PQgetvalue(res, r, 1));
        assert_int_equal(duckdb_appender_end_row(app), DuckDBSuccess);
    }
    assert_int_equal(duckdb_appender_destroy(&app), DuckDBSuccess);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    PQclear(res);
    PQfinish(pg);

    assert_int_equal(duckdb_open(path, &db), DuckDBSuccess);
    assert_int_equal(duckdb_connect(db, &con), DuckDBSuccess);
    assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM t"), 3);
    assert_int_equal(tl_duck_int(con, "SELECT sum(id) FROM t"), 6);
    char *names = tl_duck_scalar(con, "SELECT string_agg(coalesce(name, '<null>'), ',' ORDER BY id) FROM t");
    assert_string_equal(names, "alpha,beta,<null>");
    free(names);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    tl_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pg_values_reach_duckdb_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
