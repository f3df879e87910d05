/* PostgreSQL's protocol of `duckstore serve` (pg_listen) with the real
 * clients: psql and libpq. SCRAM logins (and their refusals, with the same
 * delay), TLS with sslmode=require, simple and extended queries, errors
 * with their SQLSTATE and position, refused writes, \copy, a cancel, the
 * statement timeout, pg_max_connections, and a session that keeps reading
 * its snapshot while a full sync commits. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"
#include "tl_http.h"

#define PASSWORD "r3ader-Secret"
#define MAX_CONN 4
#define ROWS 1000

static char *g_dir, *g_conninfo, *g_log;
static PGconn *g_pg;
static tl_server g_srv;
static uint16_t g_pg_port;

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("pgwire"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(
        g_pg,
        "CREATE TABLE t (id int PRIMARY KEY, name text, ts timestamptz);"
        "INSERT INTO t SELECT g, 'n' || g, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 hour'"
        " FROM generate_series(1, %d) g;",
        ROWS);
    g_dir = tl_mkdtemp();
    /* A self-signed certificate, as an operator would make one. */
    char *out = NULL;
    int rc =
        tl_run(&out,
               "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -keyout %s/key.pem "
               "-out %s/cert.pem 2>&1",
               g_dir, g_dir);
    if (rc != 0)
        fail_msg("openssl req failed: %s", out ? out : "");
    free(out);
    g_pg_port = tl_free_port();
    setenv("PGWIRE_TEST_PASSWORD", PASSWORD, 1);
    char path[700];
    snprintf(path, sizeof path, "%s/duckdb.yaml", g_dir);
    tl_write_filef(path,
                   "duckdb:\n  path: %s/store.duckdb\n  pg_listen: \"127.0.0.1:%u\"\n"
                   "  pg_max_connections: %d\n  pg_tls_cert: cert.pem\n  pg_tls_key: key.pem\n"
                   "  pg_users:\n    reader: \"${PGWIRE_TEST_PASSWORD}\"\n",
                   g_dir, g_pg_port, MAX_CONN);
    snprintf(path, sizeof path, "%s/t_db.yaml", g_dir);
    tl_write_filef(path, "t_db:\n  url: \"%s\"\n  query: SELECT * FROM t\n", g_conninfo);
    if (asprintf(&g_log, "%s/serve.log", g_dir) < 0)
        fail_msg("out of memory");
    tl_server_start(&g_srv, g_dir, g_log, NULL);
    json_decref(tl_server_wait_state(&g_srv, "t_data", "ready", 60));
    return 0;
}

static int teardown_group(void **state)
{
    (void)state;
    if (g_srv.pid != 0)
        assert_int_equal(tl_server_stop(&g_srv, 30, NULL), 0);
    tl_assert_clean_log(g_log);
    char *log = tl_read_file(g_log);
    if (log != NULL && strstr(log, PASSWORD) != NULL)
        fail_msg("the pg_users password is in the log:\n%s", log);
    free(log);
    tl_server_kill_all();
    PQfinish(g_pg);
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_log);
    free(g_conninfo);
    return 0;
}

static char *conninfo(const char *user, const char *password, const char *sslmode)
{
    return tl_keepf("host=127.0.0.1 port=%u dbname=cache user=%s password=%s sslmode=%s connect_timeout=30",
                    g_pg_port, user, password, sslmode);
}

static PGconn *connect_ok(const char *sslmode)
{
    /* Sessions an earlier test closed free their places when the server
     * sees the close, soon but not at once (test_max_connections fills
     * them all): wait for a place rather than fail. */
    double deadline = tl_now_ms() + 30000;
    for (;;) {
        PGconn *c = PQconnectdb(conninfo("reader", PASSWORD, sslmode));
        if (PQstatus(c) == CONNECTION_OK)
            return c;
        if (strstr(PQerrorMessage(c), "too many clients") == NULL || tl_now_ms() > deadline)
            fail_msg("connect: %s", PQerrorMessage(c));
        PQfinish(c);
        tl_sleep_ms(20);
    }
}

/* A psql run: its stdout (and stderr) and exit code. */
static int psql(char **out, const char *args)
{
    return tl_run(out,
                  "PGPASSWORD=%s PGCONNECT_TIMEOUT=30 psql -X \"host=127.0.0.1 port=%u dbname=cache "
                  "user=reader sslmode=disable\" %s 2>&1",
                  PASSWORD, g_pg_port, args);
}

static void test_psql_scram_and_queries(void **state)
{
    (void)state;
    char *out = NULL;
    int rc = psql(&out,
                  "-At -c 'SELECT count(*), min(name), max(id) FROM t_data' -c 'SELECT 1 AS a; SELECT 2 AS b'"
                  " -c 'SHOW TimeZone' -c 'SELECT ts FROM t_data WHERE id = 1'");
    assert_int_equal(rc, 0);
    assert_string_equal(out, "1000|n1|1000\n1\n2\nUTC\n2024-01-01 01:00:00+00\n");
    free(out);
    /* What drivers send on connect is accepted, and SET reads back. */
    rc = psql(&out, "-qAt -c \"SET extra_float_digits = 3; SET application_name TO 'dash'; BEGIN READ ONLY;"
                    " SHOW application_name; COMMIT; DISCARD ALL; SHOW application_name\"");
    assert_int_equal(rc, 0);
    assert_string_equal(out, "dash\n\n");
    free(out);
    /* Semicolons inside quotes, E'' strings, dollar quoting and comments
     * do not split; a statement may start with a quote (a syntax error at
     * its first character). */
    PGconn *c = connect_ok("disable");
    PGresult *r = PQexec(c, "SELECT E'it\\'s;' AS a, $$x;y$$ AS b -- c;\n; SELECT 2 /* ; */ AS c");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQfname(r, 0), "c");
    assert_string_equal(PQgetvalue(r, 0, 0), "2");
    PQclear(r);
    r = PQexec(c, "'a;b'; SELECT 1");
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42601");
    assert_string_equal(PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION), "1");
    PQclear(r);
    r = PQexec(c, "SELECT E'it\\'s;' AS a, $$x;y$$ AS b");
    assert_string_equal(PQgetvalue(r, 0, 0), "it's;");
    assert_string_equal(PQgetvalue(r, 0, 1), "x;y");
    PQclear(r);
    PQfinish(c);
}

/* The server logs a refusal right after the client has it: poll. */
static void wait_log(const char *needle)
{
    double deadline = tl_now_ms() + 30000;
    for (;;) {
        char *log = tl_read_file(g_log);
        bool found = log != NULL && strstr(log, needle) != NULL;
        if (!found && tl_now_ms() > deadline)
            fail_msg("\"%s\" not in the log:\n%s", needle, log ? log : "");
        free(log);
        if (found)
            return;
        tl_sleep_ms(20);
    }
}

static void test_wrong_password_and_unknown_user(void **state)
{
    (void)state;
    const char *users[][2] = {{"reader", "wrong"}, {"nobody", PASSWORD}};
    double took[2];
    for (int i = 0; i < 2; i++) {
        double t0 = tl_now_ms();
        PGconn *c = PQconnectdb(conninfo(users[i][0], users[i][1], "disable"));
        took[i] = tl_now_ms() - t0;
        assert_int_equal(PQstatus(c), CONNECTION_BAD);
        char want[128];
        snprintf(want, sizeof want, "password authentication failed for user \"%s\"", users[i][0]);
        tl_assert_contains_at(PQerrorMessage(c), want, __FILE__, __LINE__);
        PQfinish(c);
    }
    /* The same fixed delay whichever part was wrong. */
    assert_true(took[0] >= 500 && took[1] >= 500);
    wait_log("authentication of user \"nobody\" failed: no such user in pg_users");
    wait_log("authentication of user \"reader\" failed: wrong password");
}

static void test_sqlstates(void **state)
{
    (void)state;
    PGconn *c = connect_ok("disable");
    static const char *const cases[][3] = {
        {"CREATE TABLE x (a int)", "25006", "cannot execute CREATE in a read-only transaction"},
        {"INSERT INTO t_data VALUES (5000, 'x', now())", "25006",
         "cannot execute INSERT in a read-only transaction"},
        {"SELECT 1 FRM t", "42601", "syntax error"},
        {"SELECT * FROM nosuch", "42P01", "nosuch"},
        {"SELECT nocol FROM t_data", "42703", "nocol"},
        {"SELECT 'a'::int", "22P02", "'a'"},
        {"COPY t FROM STDIN", "25006", "COPY FROM"},
        /* 1.6 GB of list state against the default 64 MB + 512 MB:
         * duckstore's keys are named, not DuckDB's SET advice. */
        {"SELECT list(range) FROM range(200000000)", "53200",
         "memory_limit plus read_memory_limit in duckdb.yaml"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        PGresult *r = PQexec(c, cases[i][0]);
        assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (st == NULL || strcmp(st, cases[i][1]) != 0)
            fail_msg("%s: SQLSTATE %s, expected %s (%s)", cases[i][0], st ? st : "(none)", cases[i][1],
                     PQresultErrorMessage(r));
        tl_assert_contains_at(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY), cases[i][2], __FILE__,
                              __LINE__);
        PQclear(r);
    }
    /* The position counts characters, from 1, as PostgreSQL's does. */
    PGresult *r = PQexec(c, "SELECT 'é', nocol FROM t_data");
    assert_string_equal(PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION), "13");
    PQclear(r);
    /* The connection is still good; the data untouched. */
    r = PQexec(c, "SELECT count(*) FROM t_data");
    assert_string_equal(PQgetvalue(r, 0, 0), "1000");
    PQclear(r);
    /* Inside a block an error aborts it until ROLLBACK. */
    PQclear(PQexec(c, "BEGIN"));
    PQclear(PQexec(c, "SELECT nocol FROM t_data"));
    assert_int_equal(PQtransactionStatus(c), PQTRANS_INERROR);
    r = PQexec(c, "SELECT 1");
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "25P02");
    PQclear(r);
    PQclear(PQexec(c, "ROLLBACK"));
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
    PQfinish(c);
}

/* A session reaches nothing outside the cache, as /api/store/query: no
 * file of the server, no environment, no network, no extension, no other
 * database (each statement kind and function on its own). */
static void test_no_access_outside_the_cache(void **state)
{
    (void)state;
    PGconn *c = connect_ok("disable");
    static const char *const refused[] = {
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT getenv('HOME')",
        "SELECT * FROM read_parquet('/tmp/other.parquet')",
        "SELECT * FROM read_json('http://127.0.0.1:1/x.json')",
        "COPY (SELECT 1) TO '/tmp/duckstore-pgwire-out.csv'",
        "ATTACH '/tmp/duckstore-pgwire-other.duckdb' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        PGresult *r = PQexec(c, refused[i]);
        if (PQresultStatus(r) != PGRES_FATAL_ERROR)
            fail_msg("%s: status %s, expected an error", refused[i], PQresStatus(PQresultStatus(r)));
        PQclear(r);
        /* The session is still usable and in no transaction. */
        r = PQexec(c, "SELECT count(*) FROM t_data");
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        PQclear(r);
    }
    assert_int_equal(access("/tmp/duckstore-pgwire-out.csv", F_OK), -1);
    assert_int_equal(access("/tmp/duckstore-pgwire-other.duckdb", F_OK), -1);
    /* SET of a name that is not PostgreSQL's is kept by the session for
     * SHOW, never handed to DuckDB: access stays off. */
    PQclear(PQexec(c, "SET enable_external_access = true"));
    PQclear(PQexec(c, "SET allowed_directories = ['/']"));
    PGresult *r = PQexec(c, "SELECT * FROM read_csv('/etc/passwd')");
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    PQfinish(c);
}

static void test_extended_protocol(void **state)
{
    (void)state;
    PGconn *c = connect_ok("disable");
    const char *params[] = {"10", "n1%"};
    PGresult *r = PQexecParams(c, "SELECT id, name FROM t_data WHERE id <= $1 AND name LIKE $2 ORDER BY id",
                               2, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 2); /* n1, n10 */
    assert_string_equal(PQgetvalue(r, 1, 1), "n10");
    assert_int_equal(PQftype(r, 0), 23); /* int4 */
    assert_int_equal(PQftype(r, 1), 25); /* text */
    PQclear(r);
    /* A named statement, described and run twice. */
    r = PQprepare(c, "byid", "SELECT name FROM t_data WHERE id = $1", 0, NULL);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQdescribePrepared(c, "byid");
    assert_int_equal(PQnparams(r), 1);
    assert_int_equal(PQnfields(r), 1);
    assert_string_equal(PQfname(r, 0), "name");
    PQclear(r);
    for (int i = 1; i <= 2; i++) {
        char id[8];
        snprintf(id, sizeof id, "%d", i * 7);
        const char *p[] = {id};
        r = PQexecPrepared(c, "byid", 1, p, NULL, NULL, 0);
        char want[16];
        snprintf(want, sizeof want, "n%d", i * 7);
        assert_string_equal(PQgetvalue(r, 0, 0), want);
        PQclear(r);
    }
    /* A refused write through Parse. */
    r = PQprepare(c, "w", "DELETE FROM t_data", 0, NULL);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "25006");
    PQclear(r);
    PQfinish(c);
}

static void test_copy_to_file(void **state)
{
    (void)state;
    char *out = NULL;
    char *csv = tl_keepf("%s/out.csv", g_dir), *txt = tl_keepf("%s/out.txt", g_dir);
    int rc = psql(
        &out, tl_keepf("-c \"\\copy (SELECT id, name, NULL AS z FROM t_data WHERE id <= 2 ORDER BY id) TO "
                       "'%s' CSV HEADER\" -c \"\\copy (SELECT 'a,b' AS s, E'x\\ty' AS u, NULL AS z) TO "
                       "'%s'\"",
                       csv, txt));
    if (rc != 0)
        fail_msg("psql: %s", out);
    tl_assert_contains_at(out, "COPY 2", __FILE__, __LINE__);
    free(out);
    char *got = tl_read_file(csv);
    assert_string_equal(got, "id,name,z\n1,n1,\n2,n2,\n");
    free(got);
    got = tl_read_file(txt);
    assert_string_equal(got, "a,b\tx\\ty\t\\N\n");
    free(got);
    /* \copy of a table reads all of it. */
    rc = psql(&out, tl_keepf("-c \"\\copy t_data TO '%s' CSV\"", csv));
    assert_int_equal(rc, 0);
    tl_assert_contains_at(out, "COPY 1000", __FILE__, __LINE__);
    free(out);
}

static void test_cancel_and_statement_timeout(void **state)
{
    (void)state;
    PGconn *c = connect_ok("disable");
    assert_int_equal(PQsendQuery(c, "SELECT count(*) FROM range(100000000000) a"), 1);
    /* Cancel until the query is seen stopped: a cancel that arrives before
     * the statement starts has nothing to stop, and is sent again. */
    PGresult *r = NULL;
    double deadline = tl_now_ms() + 60000;
    while (r == NULL && tl_now_ms() < deadline) {
        PGcancel *cancel = PQgetCancel(c);
        char err[256];
        assert_int_equal(PQcancel(cancel, err, sizeof err), 1);
        PQfreeCancel(cancel);
        PQconsumeInput(c);
        double until = tl_now_ms() + 200;
        while (PQisBusy(c) && tl_now_ms() < until) {
            tl_sleep_ms(10);
            PQconsumeInput(c);
        }
        if (!PQisBusy(c))
            r = PQgetResult(c);
    }
    assert_non_null(r);
    if (PQresultErrorField(r, PG_DIAG_SQLSTATE) == NULL)
        fail_msg("not cancelled: %s", PQresStatus(PQresultStatus(r)));
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "57014");
    assert_string_equal(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY),
                        "canceling statement due to user request");
    PQclear(r);
    while ((r = PQgetResult(c)) != NULL)
        PQclear(r);
    /* The session goes on, and its statement_timeout stops a long query. */
    PQclear(PQexec(c, "SET statement_timeout = 200"));
    r = PQexec(c, "SELECT count(*) FROM range(100000000000) a");
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "57014");
    assert_string_equal(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY),
                        "canceling statement due to statement timeout");
    PQclear(r);
    r = PQexec(c, "SELECT 41 + 1");
    assert_string_equal(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    PQfinish(c);
}

static void test_max_connections(void **state)
{
    (void)state;
    PGconn *c[MAX_CONN];
    for (int i = 0; i < MAX_CONN; i++)
        c[i] = connect_ok("disable");
    PGconn *over = PQconnectdb(conninfo("reader", PASSWORD, "disable"));
    assert_int_equal(PQstatus(over), CONNECTION_BAD);
    tl_assert_contains_at(PQerrorMessage(over), "sorry, too many clients already", __FILE__, __LINE__);
    PQfinish(over);
    PQfinish(c[0]);
    /* A closed session frees its place (the server sees the close soon,
     * not at once: poll). */
    PGconn *again = NULL;
    double deadline = tl_now_ms() + 30000;
    while (tl_now_ms() < deadline) {
        again = PQconnectdb(conninfo("reader", PASSWORD, "disable"));
        if (PQstatus(again) == CONNECTION_OK)
            break;
        PQfinish(again);
        again = NULL;
        tl_sleep_ms(20);
    }
    assert_non_null(again);
    PQfinish(again);
    for (int i = 1; i < MAX_CONN; i++)
        PQfinish(c[i]);
}

static void test_tls(void **state)
{
    (void)state;
    PGconn *c = connect_ok("require");
    assert_int_equal(PQsslInUse(c), 1);
    PGresult *r = PQexec(c, "SELECT count(*) FROM t_data");
    assert_string_equal(PQgetvalue(r, 0, 0), "1000");
    PQclear(r);
    PQfinish(c);
    char *out = NULL;
    int rc =
        tl_run(&out,
               "PGPASSWORD=%s psql -X -At \"host=127.0.0.1 port=%u dbname=cache user=reader sslmode=require\""
               " -c 'SELECT ssl FROM (SELECT 1) x(ssl)' -c 'SELECT 7' 2>&1",
               PASSWORD, g_pg_port);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "1\n7\n");
    free(out);
}

/* A session's transaction keeps its snapshot while a full sync commits;
 * the next transaction sees the new data. */
static void test_read_during_full_sync(void **state)
{
    (void)state;
    PGconn *c = connect_ok("disable");
    PQclear(PQexec(c, "BEGIN"));
    PGresult *r = PQexec(c, "SELECT count(*) FROM t_data");
    assert_string_equal(PQgetvalue(r, 0, 0), "1000");
    PQclear(r);
    tl_pg_exec(g_pg, "INSERT INTO t SELECT g, 'n' || g, now() FROM generate_series(1001, 1500) g");
    json_decref(tl_http_json(g_srv.port, "POST", "/api/store/sync/t?full=true", NULL, 202, NULL));
    double deadline = tl_now_ms() + 60000;
    for (;;) {
        json_t *ds = tl_server_dataset(&g_srv, "t_data");
        json_int_t rows = json_integer_value(json_object_get(ds, "rows"));
        const char *st = json_string_value(json_object_get(ds, "state"));
        bool done = rows == 1500 && st != NULL && strcmp(st, "ready") == 0;
        json_decref(ds);
        if (done)
            break;
        if (tl_now_ms() > deadline)
            fail_msg("the full sync did not finish");
        tl_sleep_ms(50);
    }
    r = PQexec(c, "SELECT count(*) FROM t_data");
    assert_string_equal(PQgetvalue(r, 0, 0), "1000");
    PQclear(r);
    PQclear(PQexec(c, "COMMIT"));
    r = PQexec(c, "SELECT count(*) FROM t_data");
    assert_string_equal(PQgetvalue(r, 0, 0), "1500");
    PQclear(r);
    PQfinish(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_psql_scram_and_queries),
        cmocka_unit_test(test_wrong_password_and_unknown_user),
        cmocka_unit_test(test_sqlstates),
        cmocka_unit_test(test_no_access_outside_the_cache),
        cmocka_unit_test(test_extended_protocol),
        cmocka_unit_test(test_copy_to_file),
        cmocka_unit_test(test_cancel_and_statement_timeout),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_read_during_full_sync),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
