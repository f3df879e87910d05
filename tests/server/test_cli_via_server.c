/* The CLI while `duckstore serve` holds the DuckDB file: query (every
 * format), status, sync, reset-watermark go through the server's API, found
 * through <file>.serve.json, and print what they print when they open the
 * file themselves; a token-protected server, a stale server file (the
 * server killed) and the file's removal at SIGTERM. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"
#include "tl_http.h"

#define TOKEN "cli-t0ken"
/* The slow source's query waits for this advisory lock while the test holds it. */
#define SLOW_GATE 7171

static char *g_dir, *g_config, *g_log, *g_db, *g_serve_file, *g_conninfo;
static PGconn *g_pg;

static int teardown_test(void **state)
{
    (void)state;
    tl_server_kill_all();
    tl_free_kept();
    return 0;
}

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("cliserver"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg, "CREATE TABLE ev (id int PRIMARY KEY, created_at timestamptz NOT NULL, note text);"
                     "INSERT INTO ev VALUES (1, '2026-02-13 10:00:00+00', 'plain'),"
                     " (2, '2026-02-13 10:01:00+00', NULL), (3, '2026-02-13 10:02:00+00', 'a,\"b\"'),"
                     " (4, '2026-02-13 10:03:00+00', '');");
    g_dir = tl_mkdtemp();
    if (asprintf(&g_config, "%s/config", g_dir) < 0 || asprintf(&g_log, "%s/server.log", g_dir) < 0 ||
        asprintf(&g_db, "%s/store.duckdb", g_dir) < 0 || asprintf(&g_serve_file, "%s.serve.json", g_db) < 0)
        fail_msg("out of memory");
    mkdir(g_config, 0755);
    tl_write_filef(tl_keepf("%s/duckdb.yaml", g_config), "duckdb:\n  path: %s\n  sync_mode: manual\n", g_db);
    tl_write_filef(tl_keepf("%s/ev_db.yaml", g_config),
                   "ev_db:\n"
                   "  url: \"%s\"\n"
                   "  query: SELECT id, created_at, note FROM ev\n"
                   "  incremental_column: created_at\n",
                   g_conninfo);
    tl_write_filef(tl_keepf("%s/slow_db.yaml", g_config),
                   "slow_db:\n"
                   "  url: \"%s\"\n"
                   "  query: |\n"
                   "    WITH gate AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(%d))\n"
                   "    SELECT t.id, t.created_at FROM ev t, gate\n",
                   g_conninfo, SLOW_GATE);
    tl_free_kept();
    return 0;
}

static int teardown_group(void **state)
{
    (void)state;
    tl_server_kill_all();
    PQfinish(g_pg);
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_config);
    free(g_log);
    free(g_db);
    free(g_serve_file);
    free(g_conninfo);
    return 0;
}

typedef struct cli_out {
    int rc;
    char *out; /* stdout */
    char *err; /* stderr */
} cli_out;

/* Runs `duckstore --config-dir CONFIG <args>` (args already shell-quoted)
 * with env in front (e.g. "DUCKSTORE_API_TOKEN=x"); stdout and stderr apart. */
static cli_out cli(const char *env, const char *args)
{
    cli_out o;
    char *out_path = tl_keepf("%s/cli.out", g_dir), *err_path = tl_keepf("%s/cli.err", g_dir);
    o.rc = tl_run(NULL, "unset DUCKSTORE_API_TOKEN; %s '%s' --config-dir '%s' %s >'%s' 2>'%s'",
                  env ? env : "", getenv("DUCKSTORE_BIN"), g_config, args, out_path, err_path);
    o.out = tl_keep(tl_read_file(out_path));
    o.err = tl_keep(tl_read_file(err_path));
    return o;
}

static void expect_ok(const cli_out *o, const char *what)
{
    if (o->rc != 0)
        fail_msg("%s: exit %d\nstdout: %s\nstderr: %s", what, o->rc, o->out, o->err);
}

static bool serve_file_exists(void)
{
    return access(g_serve_file, F_OK) == 0;
}

/* Starts a server and waits (60 s at most) until its server file names it:
 * /health answers a moment before the file is written. */
static void start_server(tl_server *srv, const char *token)
{
    tl_server_start(srv, g_config, g_log, token);
    for (double deadline = tl_now_ms() + 60000;;) {
        json_t *doc = json_load_file(g_serve_file, 0, NULL);
        bool ours = json_integer_value(json_object_get(doc, "pid")) == srv->pid;
        json_decref(doc);
        if (ours)
            return;
        if (tl_now_ms() > deadline)
            fail_msg("no server file %s naming PID %ld after 60 s", g_serve_file, (long)srv->pid);
        tl_sleep_ms(10);
    }
}

static const char query_sql[] = "'SELECT id, note FROM ev_data ORDER BY id'";

static const char *const formats[] = {"", "--format tsv", "--format csv", "--format json", "--format table"};
static const char *const expected[] = {
    "id\tnote\n1\tplain\n2\tNULL\n3\ta,\"b\"\n4\t\n",
    "id\tnote\n1\tplain\n2\tNULL\n3\ta,\"b\"\n4\t\n",
    "id,note\n1,plain\n2,\n3,\"a,\"\"b\"\"\"\n4,\"\"\n",
    "[\n{\"id\":\"1\",\"note\":\"plain\"},\n{\"id\":\"2\",\"note\":null},\n{\"id\":\"3\",\"note\":\"a,"
    "\\\"b\\\"\"},\n"
    "{\"id\":\"4\",\"note\":\"\"}\n]\n",
    " id | note\n----+-------\n 1  | plain\n 2  | NULL\n 3  | a,\"b\"\n 4  | \n(4 rows)\n",
};

/* Every format prints the same bytes with and without the server. */
static void test_query_formats(void **state)
{
    (void)state;
    cli_out o = cli(NULL, "sync ev");
    expect_ok(&o, "sync without a server");
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        o = cli(NULL, tl_keepf("query %s %s", formats[i], query_sql));
        expect_ok(&o, formats[i]);
        assert_string_equal(o.out, expected[i]);
    }
    assert_false(serve_file_exists());

    tl_server srv;
    start_server(&srv, NULL);
    /* The server file: PID, where to reach it, no token. */
    json_t *doc = json_load_file(g_serve_file, 0, NULL);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "pid")), srv.pid);
    assert_string_equal(tl_json_str(doc, "url"), tl_keepf("http://127.0.0.1:%u", srv.port));
    assert_true(json_is_false(json_object_get(doc, "token_required")));
    json_decref(doc);

    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        o = cli(NULL, tl_keepf("query %s %s", formats[i], query_sql));
        expect_ok(&o, tl_keepf("query %s through the server", formats[i]));
        assert_string_equal(o.out, expected[i]);
        assert_string_equal(o.err, "");
    }
    /* On a terminal (script(1) gives it one) the default is the table. */
    char *tty = NULL;
    int rc =
        tl_run(&tty, "unset DUCKSTORE_API_TOKEN; script -qec \"'%s' --config-dir '%s' query %s\" /dev/null",
               getenv("DUCKSTORE_BIN"), g_config, query_sql);
    assert_int_equal(rc, 0);
    char *w = tty;
    for (const char *r = tty; *r; r++) /* the terminal ends lines with \r\n */
        if (*r != '\r')
            *w++ = *r;
    *w = '\0';
    assert_string_equal(tty, expected[4]);
    free(tty);
    o = cli(NULL, "query 'SELECT count(*) AS n, sum(id) AS s FROM ev_data'");
    expect_ok(&o, "count through the server");
    assert_string_equal(o.out, "n\ts\n4\t10\n");
    /* A statement that would write is refused (exit 2), as without a server. */
    o = cli(NULL, "query 'DELETE FROM ev_data'");
    assert_int_equal(o.rc, 2);
    tl_assert_contains(o.err, "only reads are allowed");
    /* A failing query: exit 1 with DuckDB's message. */
    o = cli(NULL, "query 'SELECT nope FROM ev_data'");
    assert_int_equal(o.rc, 1);
    tl_assert_contains(o.err, "nope");
    o = cli(NULL, "query --format xml 'SELECT 1'");
    assert_int_equal(o.rc, 2);
    tl_assert_contains(o.err, "--format takes table, tsv, csv or json");

    assert_int_equal(tl_server_stop(&srv, 60, NULL), 0);
    assert_false(serve_file_exists());
    tl_assert_clean_log(g_log);
}

/* sync, sync --full and reset-watermark go through the server: rows and
 * watermarks change in the server's file; status prints what it prints
 * from the file once the server is gone. */
static void test_sync_reset_status(void **state)
{
    (void)state;
    tl_server srv;
    start_server(&srv, NULL);
    tl_pg_exec(
        g_pg,
        "INSERT INTO ev VALUES (5, '2026-02-13 10:04:00+00', 'five'), (6, '2026-02-13 10:05:00+00', 'six')");
    cli_out o = cli(NULL, "sync ev");
    expect_ok(&o, "sync through the server");
    tl_assert_contains(o.out, "ev: incremental sync, 6 rows in ev_data (+2), ");
    tl_assert_contains(o.out, "  ev_data                          incremental 3 rows read, 6 rows total\n");
    o = cli(NULL, "query 'SELECT count(*) AS n, max(id) AS m FROM ev_data'");
    expect_ok(&o, "count after the sync");
    assert_string_equal(o.out, "n\tm\n6\t6\n");

    o = cli(NULL, "reset-watermark ev");
    expect_ok(&o, "reset-watermark through the server");
    assert_string_equal(o.out, "ev: watermarks cleared; the next sync is a full rebuild\n");
    json_t *ds = tl_server_dataset(&srv, "ev_data");
    assert_true(json_is_null(json_object_get(json_object_get(ds, "watermarks"), "ev_data")));
    json_decref(ds);
    o = cli(NULL, "reset-watermark nosuch");
    assert_int_equal(o.rc, 2);
    tl_assert_contains(o.err, "no source named \"nosuch\"");

    tl_pg_exec(g_pg, "UPDATE ev SET note = 'changed' WHERE id = 1");
    o = cli(NULL, "sync ev --full");
    expect_ok(&o, "sync --full through the server");
    tl_assert_contains(o.out, "ev: full sync, 6 rows in ev_data (+0), ");
    o = cli(NULL, "query 'SELECT note FROM ev_data WHERE id = 1'");
    assert_string_equal(o.out, "note\nchanged\n");

    /* A failing sync: exit 1 and the server's reason. */
    tl_pg_exec(g_pg, "ALTER TABLE ev RENAME TO ev_gone");
    o = cli(NULL, "sync ev");
    tl_pg_exec(g_pg, "ALTER TABLE ev_gone RENAME TO ev");
    assert_int_equal(o.rc, 1);
    tl_assert_contains(o.err, "duckstore: sync failed: ");
    tl_assert_contains(o.err, "ev");
    o = cli(NULL, "sync ev");
    expect_ok(&o, "sync after the failure");

    cli_out text = cli(NULL, "status"), json = cli(NULL, "status --json");
    expect_ok(&text, "status through the server");
    expect_ok(&json, "status --json through the server");
    tl_assert_contains(text.out, "ev_data: ready, 6 rows, last sync ");
    assert_int_equal(tl_server_stop(&srv, 60, NULL), 0);
    assert_false(serve_file_exists());
    cli_out text_direct = cli(NULL, "status"), json_direct = cli(NULL, "status --json");
    expect_ok(&text_direct, "status from the file");
    assert_string_equal(text.out, text_direct.out);
    assert_string_equal(json.out, json_direct.out);
    tl_assert_clean_log(g_log);
}

/* A server started with DUCKSTORE_API_TOKEN: the CLI needs the same token. */
static void test_token(void **state)
{
    (void)state;
    tl_server srv;
    start_server(&srv, TOKEN);
    json_t *doc = json_load_file(g_serve_file, 0, NULL);
    assert_true(json_is_true(json_object_get(doc, "token_required")));
    json_decref(doc);
    char *file = tl_keep(tl_read_file(g_serve_file));
    assert_null(strstr(file, TOKEN));

    cli_out o = cli(NULL, "query 'SELECT 1 AS one'");
    assert_int_equal(o.rc, 2);
    tl_assert_contains(o.err, "requires a bearer token: set DUCKSTORE_API_TOKEN");
    assert_string_equal(o.out, "");
    o = cli("DUCKSTORE_API_TOKEN=wrong", "status");
    assert_int_equal(o.rc, 2);
    tl_assert_contains(o.err, "refused DUCKSTORE_API_TOKEN (wrong token)");
    assert_null(strstr(o.err, TOKEN));
    o = cli("DUCKSTORE_API_TOKEN=" TOKEN, "query 'SELECT 1 AS one'");
    expect_ok(&o, "query with the token");
    assert_string_equal(o.out, "one\n1\n");
    o = cli("DUCKSTORE_API_TOKEN=" TOKEN, "reset-watermark ev");
    expect_ok(&o, "reset-watermark with the token");
    o = cli("DUCKSTORE_API_TOKEN=" TOKEN, "sync ev");
    expect_ok(&o, "sync with the token");
    tl_assert_contains(o.out, "ev: full sync, 6 rows in ev_data (+0), ");
    assert_int_equal(tl_server_stop(&srv, 60, NULL), 0);
    tl_assert_clean_log(g_log);
}

/* A server killed without its shutdown leaves its file: the CLI sees the
 * PID gone and opens the DuckDB file itself; the next server writes its own. */
static void test_stale_file(void **state)
{
    (void)state;
    tl_server srv;
    start_server(&srv, NULL);
    pid_t killed = srv.pid;
    tl_server_kill(&srv);
    assert_true(serve_file_exists());
    cli_out o = cli(NULL, tl_keepf("query %s", query_sql));
    expect_ok(&o, "query beside a stale server file");
    assert_string_equal(o.out, "id\tnote\n1\tchanged\n2\tNULL\n3\ta,\"b\"\n4\t\n5\tfive\n6\tsix\n");
    o = cli(NULL, "status");
    expect_ok(&o, "status beside a stale server file");

    start_server(&srv, NULL);
    json_t *doc = json_load_file(g_serve_file, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(doc, "pid")), srv.pid);
    assert_int_not_equal(srv.pid, killed);
    json_decref(doc);
    o = cli(NULL, "query 'SELECT count(*) AS n FROM ev_data'");
    expect_ok(&o, "query through the new server");
    assert_string_equal(o.out, "n\n6\n");
    assert_int_equal(tl_server_stop(&srv, 60, NULL), 0);
    assert_false(serve_file_exists());
}

/* A server file whose PID is alive but where nothing listens (the PID
 * reused after a crash): the CLI opens the file itself. */
static void test_nothing_listening(void **state)
{
    (void)state;
    tl_write_filef(g_serve_file, "{\"pid\":%ld,\"url\":\"http://127.0.0.1:%u\",\"token_required\":false}\n",
                   (long)getpid(), tl_free_port());
    cli_out o = cli(NULL, "query 'SELECT count(*) AS n FROM ev_data'");
    expect_ok(&o, "query beside a server file where nothing listens");
    assert_string_equal(o.out, "n\n6\n");
    unlink(g_serve_file);
}

/* Starts the CLI in the background; its exit code goes to <dir>/NAME.rc,
 * its output to NAME.out and NAME.err. */
static void cli_background(const char *name, const char *args)
{
    char *base = tl_keepf("%s/%s", g_dir, name);
    unlink(tl_keepf("%s.rc", base));
    int rc = tl_run(
        NULL,
        "(unset DUCKSTORE_API_TOKEN; '%s' --config-dir '%s' %s >'%s.out' 2>'%s.err'; echo $? >'%s.rc.tmp'; "
        "mv '%s.rc.tmp' '%s.rc') </dev/null >/dev/null 2>&1 &",
        getenv("DUCKSTORE_BIN"), g_config, args, base, base, base, base, base);
    assert_int_equal(rc, 0);
}

/* Waits (60 s at most) for a background CLI to end. */
static cli_out cli_wait(const char *name)
{
    char *base = tl_keepf("%s/%s", g_dir, name);
    char *rc_text = NULL;
    for (double deadline = tl_now_ms() + 60000; (rc_text = tl_read_file(tl_keepf("%s.rc", base))) == NULL;) {
        if (tl_now_ms() > deadline)
            fail_msg("duckstore %s did not end in 60 s", name);
        tl_sleep_ms(20);
    }
    cli_out o = {.rc = atoi(rc_text),
                 .out = tl_keep(tl_read_file(tl_keepf("%s.out", base))),
                 .err = tl_keep(tl_read_file(tl_keepf("%s.err", base)))};
    free(rc_text);
    return o;
}

/* Waits until the server log holds at least n status requests. */
static void wait_status_requests(size_t n)
{
    for (double deadline = tl_now_ms() + 60000;;) {
        char *log = tl_read_file(g_log);
        size_t seen = log ? tl_count(log, "GET /api/store/status 200") : 0;
        free(log);
        if (seen >= n)
            return;
        if (tl_now_ms() > deadline)
            fail_msg("the server saw %zu status requests in 60 s, not %zu", seen, n);
        tl_sleep_ms(20);
    }
}

/* `sync` while the server already syncs the source waits for that sync,
 * then runs its own; the server going away while the CLI waits for a sync
 * ends the CLI with exit 1 and a message naming the server. */
static void test_waits_and_server_gone(void **state)
{
    (void)state;
    tl_pg_exec(g_pg, "SELECT pg_advisory_lock(%d)", SLOW_GATE);
    tl_server srv;
    tl_write_file(g_log, "");
    start_server(&srv, NULL);
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/slow", NULL, 202, NULL));
    json_decref(tl_server_wait_state(&srv, "slow_data", "syncing", 60));
    char *log = tl_read_file(g_log);
    size_t before = tl_count(log, "GET /api/store/status 200");
    free(log);
    cli_background("waiting", "sync slow");
    /* Two status reads by the CLI while the gate holds the first sync: it
     * is waiting for it. */
    wait_status_requests(before + 2);
    tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", SLOW_GATE);
    cli_out o = cli_wait("waiting");
    expect_ok(&o, "sync while the server syncs the source");
    tl_assert_contains(o.out, "slow: full sync, 6 rows in slow_data (+0), ");
    char *metrics = tl_server_metrics(&srv);
    assert_true(tl_metric(metrics, "duckstore_syncs_total{source=\"slow\",result=\"success\"}") == 2);
    free(metrics);

    tl_pg_exec(g_pg, "SELECT pg_advisory_lock(%d)", SLOW_GATE);
    cli_background("gone", "sync slow --full");
    json_decref(tl_server_wait_state(&srv, "slow_data", "syncing", 60));
    long pid = (long)srv.pid;
    tl_server_kill(&srv);
    o = cli_wait("gone");
    tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", SLOW_GATE);
    assert_int_equal(o.rc, 1);
    tl_assert_contains(o.err,
                       tl_keepf("the duckstore server (PID %ld) at http://127.0.0.1:%u that holds %s did not "
                                "answer GET /api/store/status: ",
                                pid, srv.port, g_db));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_query_formats, teardown_test),
        cmocka_unit_test_teardown(test_sync_reset_status, teardown_test),
        cmocka_unit_test_teardown(test_token, teardown_test),
        cmocka_unit_test_teardown(test_stale_file, teardown_test),
        cmocka_unit_test_teardown(test_nothing_listening, teardown_test),
        cmocka_unit_test_teardown(test_waits_and_server_gone, teardown_test),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
