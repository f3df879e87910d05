/* duckstore's PostgreSQL protocol with the real drivers (drivers.py,
 * Drivers.java, node/drivers.js): each connects with SCRAM (psycopg over TLS), discovers the
 * catalog, runs a parameterized query, reads every type of the type table
 * and compares it value by value with what the same driver reads from the
 * source PostgreSQL, cancels a query, streams 1M rows and has a write
 * refused. The checks are the drivers' own programs; this test serves the
 * cache they read and asserts their verdicts. */
#include "testlib.h"
#include "tl_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READER_PASSWORD "reader-Pa55-w0rd"

static char *g_dir, *g_log, *g_clients;
static tl_server g_srv;
static uint16_t g_pg_port;

/* The type table: every type of the type table, with edge values
 * and a row of NULLs. */
static const char *const types_sql =
    "CREATE TABLE types (id int PRIMARY KEY, i2 smallint, i4 int, i8 bigint, f4 real, f8 double precision, "
    "num numeric(12,3), t text, vc varchar(20), b boolean, d date, ts timestamp, tstz timestamptz, tm time, "
    "iv interval, u uuid, j json, jb jsonb, bt bytea, ai int[], ta text[]);"
    "INSERT INTO types VALUES "
    "(1, 1, -2147483648, 9007199254740993, 1.5, 0.1, 1234.500, 'héllo \"q\"', 'vc', true, '2024-02-29', "
    " '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456+02', '13:14:15.5', "
    " '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', "
    " '{\"b\": 1}', '\\xdeadbeef', '{1,NULL,3}', '{\"a b\",NULL,\"c,d\"}'),"
    "(2, -32768, 2147483647, -1, 'NaN', 'Infinity', -0.001, '', '', false, '1970-01-01', "
    " '1999-12-31 23:59:59', '1999-12-31 23:59:59+00', '00:00:00', '-1 days', "
    " '00000000-0000-0000-0000-000000000000', '[]', '[]', '\\x', '{}', '{}'),"
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, "
    " NULL, NULL, NULL);"
    "CREATE TABLE big AS SELECT g::bigint AS id, repeat(md5(g::text), 3) AS pad "
    "FROM generate_series(1, 1000000) g;";

static int setup_group(void **state)
{
    (void)state;
    const char *conninfo = tl_pg_fresh_db("pgclients");
    setenv("DS_SRC", conninfo, 1);
    PGconn *pg = tl_pg_connect(conninfo);
    tl_pg_exec(pg, "%s", types_sql);
    PQfinish(pg);

    g_dir = tl_mkdtemp();
    char *out = NULL;
    int rc =
        tl_run(&out,
               "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -keyout %s/key.pem "
               "-out %s/cert.pem",
               g_dir, g_dir);
    if (rc != 0)
        fail_msg("openssl req: %s", out);
    free(out);
    g_pg_port = tl_free_port();
    /* The password reaches the config through ${VAR}, as in production. */
    setenv("DS_TEST_READER_PASSWORD", READER_PASSWORD, 1);
    char path[700];
    snprintf(path, sizeof path, "%s/duckdb.yaml", g_dir);
    tl_write_filef(path,
                   "duckdb:\n  path: %s/store.duckdb\n  sync_mode: startup\n  pg_listen: \"127.0.0.1:%u\"\n"
                   "  pg_users:\n    reader: \"${DS_TEST_READER_PASSWORD}\"\n"
                   "  pg_tls_cert: %s/cert.pem\n  pg_tls_key: %s/key.pem\n",
                   g_dir, g_pg_port, g_dir, g_dir);
    snprintf(path, sizeof path, "%s/types_db.yaml", g_dir);
    tl_write_filef(path, "types_db:\n  url: \"%s\"\n  query: SELECT * FROM types\n", conninfo);
    snprintf(path, sizeof path, "%s/big_db.yaml", g_dir);
    tl_write_filef(path, "big_db:\n  url: \"%s\"\n  query: SELECT * FROM big\n", conninfo);
    if (asprintf(&g_log, "%s/serve.log", g_dir) < 0)
        fail_msg("out of memory");
    tl_server_start(&g_srv, g_dir, g_log, NULL);
    json_decref(tl_server_wait_state(&g_srv, "types_data", "ready", 120));
    json_decref(tl_server_wait_state(&g_srv, "big_data", "ready", 300));

    char value[1200];
    snprintf(value, sizeof value, "host=127.0.0.1 port=%u user=reader password=%s dbname=store", g_pg_port,
             READER_PASSWORD);
    setenv("DS_PG", value, 1);
    snprintf(value, sizeof value, "%u", (unsigned)g_srv.port);
    setenv("DS_HTTP_PORT", value, 1);
    snprintf(value, sizeof value, "%d", (int)g_srv.pid);
    setenv("DS_SERVER_PID", value, 1);
    const char *src = getenv("DUCKSTORE_SOURCE_DIR");
    if (asprintf(&g_clients, "%s/tests/pgwire/clients", src ? src : ".") < 0)
        fail_msg("out of memory");
    return 0;
}

static int teardown_group(void **state)
{
    (void)state;
    if (g_srv.pid != 0)
        assert_int_equal(tl_server_stop(&g_srv, 30, NULL), 0);
    tl_assert_clean_log(g_log);
    /* The password never reaches the log. */
    char *log = tl_read_file(g_log);
    assert_non_null(log);
    assert_null(strstr(log, READER_PASSWORD));
    free(log);
    tl_server_kill_all();
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_log);
    free(g_clients);
    tl_free_kept();
    return 0;
}

/* Runs one client program; fails the test with its output unless it
 * exits 0 having printed "done" and each expected line. */
static char *run_client(const char *cmd, const char *const *expect)
{
    char *out = NULL;
    int rc = tl_run(&out, "%s", cmd);
    tl_keep(out);
    if (rc != 0 || strstr(out, "\ndone\n") == NULL) {
        fprintf(stderr, "%s", out);
        fail_msg("%s: exit %d (its output is above)", cmd, rc);
    }
    for (size_t i = 0; expect[i]; i++)
        tl_assert_contains(out, expect[i]);
    return out;
}

static void test_psycopg(void **state)
{
    (void)state;
    const char *expect[] = {"ok psycopg: SCRAM over TLS, server_version 15.",
                            "ok psycopg: TypeInfo.fetch finds PostgreSQL's OIDs",
                            "ok psycopg binary: 3 rows x 20 types equal to PostgreSQL's",
                            "ok psycopg text: 3 rows x 20 types equal to PostgreSQL's",
                            "ok psycopg: server-side parameters",
                            "ok psycopg: write refused, 25006",
                            "ok psycopg: cancel gives QueryCanceled (57014)",
                            "ok psycopg: 1M rows streamed",
                            NULL};
    run_client(tl_keepf("/usr/bin/python3 %s/drivers.py psycopg", g_clients), expect);
}

static void test_psycopg2(void **state)
{
    (void)state;
    const char *expect[] = {"ok psycopg2: SCRAM, server_version 150",
                            "ok psycopg2: RowDescription OIDs equal to PostgreSQL's",
                            "ok psycopg2: 3 rows x 20 types equal to PostgreSQL's",
                            "ok psycopg2: parameterized query",
                            "ok psycopg2: write refused, 25006",
                            "ok psycopg2: cancel gives QueryCanceled (57014)",
                            "ok psycopg2: 1M rows streamed",
                            NULL};
    run_client(tl_keepf("/usr/bin/python3 %s/drivers.py psycopg2", g_clients), expect);
}

static void test_sqlalchemy_pandas(void **state)
{
    (void)state;
    const char *expect[] = {"ok sqlalchemy: get_table_names() = ['big_data', 'types_data']",
                            "ok sqlalchemy: get_columns() types",
                            "ok sqlalchemy: pandas.read_sql with a parameter", NULL};
    run_client(tl_keepf("/usr/bin/python3 %s/drivers.py sqlalchemy", g_clients), expect);
}

static void test_jdbc(void **state)
{
    (void)state;
    const char *expect[] = {"ok jdbc: SCRAM, PostgreSQL 15.",
                            "ok jdbc: getTables [main.big_data, main.types_data]",
                            "ok jdbc: getColumns as PostgreSQL's",
                            "ok jdbc: 3 rows x 20 types equal to PostgreSQL's",
                            "ok jdbc: parameterized query",
                            "ok jdbc: write refused, 25006",
                            "ok jdbc: cancel gives 57014",
                            "ok jdbc: 1M rows streamed",
                            NULL};
    char *classes = tl_keepf("%s/java", g_dir);
    run_client(tl_keepf("javac -d %s %s/Drivers.java && java -cp /usr/share/java/postgresql.jar:%s Drivers",
                        classes, g_clients, classes),
               expect);
}

static void test_node_postgres(void **state)
{
    (void)state;
    const char *expect[] = {"ok node-postgres: SCRAM, PostgreSQL 15.",
                            "ok node-postgres: catalog lists big_data, types_data",
                            "ok node-postgres: 3 rows x 20 types equal to PostgreSQL's",
                            "ok node-postgres: parameterized query",
                            "ok node-postgres: write refused, 25006",
                            "ok node-postgres: cancel gives 57014",
                            "ok node-postgres: 1M rows streamed",
                            NULL};
    /* pg and pg-cursor as node/package-lock.json pins them */
    run_client(tl_keepf("%s/node/install.sh && node %s/node/drivers.js", g_clients, g_clients), expect);
}

/* Last: it changes the source and syncs it back to what it was. */
static void test_full_sync_while_reading(void **state)
{
    (void)state;
    const char *expect[] = {
        "ok psycopg: a transaction keeps its snapshot while a full sync commits (3 rows, then 4)", NULL};
    run_client(tl_keepf("/usr/bin/python3 %s/drivers.py sync", g_clients), expect);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_psycopg),           cmocka_unit_test(test_psycopg2),
        cmocka_unit_test(test_sqlalchemy_pandas), cmocka_unit_test(test_jdbc),
        cmocka_unit_test(test_node_postgres),     cmocka_unit_test(test_full_sync_while_reading),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
