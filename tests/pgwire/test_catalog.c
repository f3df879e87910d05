/* pgwire/catalog.c: the catalog queries real PostgreSQL clients send, run on
 * a DuckDB connection after pgc_install, answer as PostgreSQL would; the
 * additions are the session's own (TEMP), never written to the store. */
#include "testlib.h"

#include <stdlib.h>
#include <string.h>

#include "pgwire/catalog.h"

typedef struct fixture {
    char *dir;
    duckdb_database db;
    duckdb_connection con;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = tl_mkdtemp();
    char *path = tl_keepf("%s/catalog.duckdb", f->dir);
    assert_int_equal(duckdb_open(path, &f->db), DuckDBSuccess);
    assert_int_equal(duckdb_connect(f->db, &f->con), DuckDBSuccess);
    tl_duck_exec(f->con, "CREATE TABLE orders (id BIGINT NOT NULL, amount DECIMAL(12,2), note VARCHAR, "
                         "created TIMESTAMPTZ)");
    tl_duck_exec(f->con, "CREATE SCHEMA _duckstore");
    tl_duck_exec(f->con, "CREATE TABLE _duckstore.tables (table_name VARCHAR)");
    ds_error err = {0};
    if (!pgc_install(f->con, &err))
        fail_msg("pgc_install: %s", err.msg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    duckdb_disconnect(&f->con);
    duckdb_close(&f->db);
    tl_rmtree(f->dir);
    free(f->dir);
    free(f);
    tl_free_kept();
    return 0;
}

/* Every row of a query as "a|b|c" lines ("" for an empty result), NULL as
 * "<null>"; fails the test on error. */
static char *rows_of(duckdb_connection con, const char *sql)
{
    duckdb_result res;
    if (duckdb_query(con, sql, &res) == DuckDBError) {
        char *msg = tl_keepf("%s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        fail_msg("%s\nSQL: %s", msg, sql);
    }
    ds_buf out = DS_BUF_INIT;
    ds_buf_append(&out, "");
    for (idx_t r = 0; r < duckdb_row_count(&res); r++) {
        for (idx_t c = 0; c < duckdb_column_count(&res); c++) {
            char *v = duckdb_value_is_null(&res, c, r) ? NULL : duckdb_value_varchar(&res, c, r);
            ds_buf_appendf(&out, "%s%s", c ? "|" : "", v ? v : "<null>");
            duckdb_free(v);
        }
        ds_buf_append(&out, "\n");
    }
    duckdb_destroy_result(&res);
    return tl_keep(ds_buf_take(&out));
}

static void test_functions_psql_calls(void **state)
{
    fixture *f = *state;
    assert_string_equal(rows_of(f->con, "SELECT pg_get_userbyid(c.relowner), pg_encoding_to_char(6) "
                                        "FROM pg_catalog.pg_class c WHERE c.relname = 'orders'"),
                        "duckstore|UTF8\n");
    char *version = rows_of(f->con, "SELECT version()");
    assert_true(strncmp(version, "PostgreSQL 15.", 14) == 0);
    tl_assert_contains(version, "duckstore");
}

/* Installing twice (a DISCARD ALL, a reused connection) is harmless, and a
 * connection without the catalog does not see it: it is TEMP, not in the
 * file. */
static void test_install_is_session_only(void **state)
{
    fixture *f = *state;
    ds_error err = {0};
    assert_true(pgc_install(f->con, &err));
    duckdb_connection other;
    assert_int_equal(duckdb_connect(f->db, &other), DuckDBSuccess);
    duckdb_result res;
    assert_int_equal(duckdb_query(other, "SELECT pg_get_userbyid(1)", &res), DuckDBError);
    duckdb_destroy_result(&res);
    duckdb_disconnect(&other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_functions_psql_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_is_session_only, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
