/* Text reaches DuckDB without DuckDB's UTF-8 check (duckstore asks for
 * client_encoding UTF8, so PostgreSQL validates what it sends). This holds
 * that premise to account: multibyte text from a UTF8 and a LATIN1 server
 * is stored byte for byte, and a SQL_ASCII server's invalid bytes are
 * refused by PostgreSQL with its own error, never stored. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A database of the given encoding; returns its conninfo (kept). */
static const char *db_with_encoding(const char *encoding)
{
    static unsigned counter;
    char name[64];
    snprintf(name, sizeof name, "unchecked_%s_%d_%u", encoding, (int)getpid(), counter++);
    PGconn *admin = tl_pg_connect(tl_pg_base_conninfo());
    tl_pg_exec(admin, "CREATE DATABASE \"%s\" TEMPLATE template0 ENCODING '%s' LC_COLLATE 'C' LC_CTYPE 'C'",
               name, encoding);
    PQfinish(admin);
    return tl_keepf("%s dbname=%s", tl_pg_base_conninfo(), name);
}

static void sync_cli(tl_env *e, const char *source, int want_rc, char **out)
{
    int rc = tl_run(out, "rm -f '%s/cli.duckdb'; '%s' --config-dir '%s' --db '%s/cli.duckdb' sync %s --full",
                    e->dir, getenv("DUCKSTORE_BIN"), e->dir, e->dir, source);
    if (rc != want_rc)
        fail_msg("sync %s: exit %d, not %d:\n%s", source, rc, want_rc, *out);
}

/* The stored text's bytes, as hex, row by row. */
static char *stored_hex(tl_env *e, const char *table)
{
    char path[700];
    snprintf(path, sizeof path, "%s/cli.duckdb", e->dir);
    duckdb_database db = NULL;
    duckdb_connection con = NULL;
    if (duckdb_open(path, &db) != DuckDBSuccess || duckdb_connect(db, &con) != DuckDBSuccess)
        fail_msg("cannot open %s", path);
    char *hex = tl_duck_scalar(con, "SELECT string_agg(hex(encode(t)), ',' ORDER BY id) FROM %s", table);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    return hex;
}

static void test_multibyte_text_is_exact(void **state)
{
    (void)state;
    static const char *const encodings[] = {"UTF8", "LATIN1"};
    for (size_t i = 0; i < 2; i++) {
        tl_env e;
        tl_env_open(&e, db_with_encoding(encodings[i]), "texts", "");
        /* é (U+00E9) exists in both; ☃ only in UTF8. */
        tl_pg_exec(e.pg, "CREATE TABLE src (id int, t text)");
        tl_pg_exec(e.pg, "INSERT INTO src VALUES (1, 'caf' || chr(233)), (2, 'plain'), (3, %s)",
                   i == 0 ? "chr(9731) || chr(233)" : "repeat(chr(233), 3)");
        tl_env_source(&e, "texts", "  query: SELECT id, t FROM src\n");
        char *out = NULL;
        sync_cli(&e, "texts", 0, &out);
        free(out);
        char *hex = stored_hex(&e, "texts_data");
        assert_string_equal(hex, i == 0 ? "636166C3A9,706C61696E,E29883C3A9"
                                        : "636166C3A9,706C61696E,C3A9C3A9C3A9");
        free(hex);
        tl_env_close(&e);
    }
}

static void test_sql_ascii_invalid_bytes_are_refused(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, db_with_encoding("SQL_ASCII"), "ascii", "");
    tl_pg_exec(e.pg, "CREATE TABLE src (id int, t text)");
    tl_pg_exec(e.pg, "INSERT INTO src VALUES (1, 'ok'), (2, E'bad\\xff byte')");
    tl_env_source(&e, "ascii", "  query: SELECT id, t FROM src\n");
    char *out = NULL;
    sync_cli(&e, "ascii", 1, &out);
    tl_assert_contains(out, "invalid byte sequence for encoding \"UTF8\": 0xff");
    free(out);
    /* Valid bytes from the same server pass. */
    tl_pg_exec(e.pg, "DELETE FROM src WHERE id = 2");
    sync_cli(&e, "ascii", 0, &out);
    free(out);
    char *hex = stored_hex(&e, "ascii_data");
    assert_string_equal(hex, "6F6B");
    free(hex);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multibyte_text_is_exact),
        cmocka_unit_test(test_sql_ascii_invalid_bytes_are_refused),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tl_free_kept();
    return rc;
}
