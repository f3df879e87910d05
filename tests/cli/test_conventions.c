/* The command line's conventions, on the built binary against the harness
 * PostgreSQL, with the CLI opening the DuckDB file itself and through a
 * running server: global options before or after the command and as
 * --option=value, --version, help and CMD --help (stdout, exit 0) against
 * usage errors (stderr, exit 2), several sources and status keys in one
 * sync, query's formats, the wording of counts, Ctrl-C during a sync
 * (what was cancelled, the data unchanged, exit 130) also through a server
 * (the CLI's own sync cancelled there, another's left alone), progress per
 * table, and the sync's JSON log events. */
#include "cli_harness.h"

/* The slow source's query waits for this advisory lock while the test
 * holds it. */
#define GATE 7272

static char *g_dir, *g_config, *g_db, *g_conninfo;
static PGconn *g_pg;

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("cliconv"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg, "CREATE TABLE ev (id int PRIMARY KEY, created_at timestamptz NOT NULL, note text);"
                     "INSERT INTO ev VALUES (1, '2026-02-13 10:00:00+00', 'plain'),"
                     " (2, '2026-02-13 10:01:00+00', NULL), (3, '2026-02-13 10:02:00+00', 'a,\"b\"');"
                     "CREATE TABLE one (id int PRIMARY KEY);"
                     "INSERT INTO one VALUES (1);");
    g_dir = tl_mkdtemp();
    if (asprintf(&g_config, "%s/config", g_dir) < 0 || asprintf(&g_db, "%s/store.duckdb", g_dir) < 0)
        fail_msg("out of memory");
    mkdir(g_config, 0755);
    tl_write_filef(tl_keepf("%s/duckdb.yaml", g_config), "duckdb:\n  path: %s\n  sync_mode: manual\n", g_db);
    tl_write_filef(tl_keepf("%s/ev_db.yaml", g_config),
                   "ev_db:\n  url: \"%s\"\n  query: SELECT id, created_at, note FROM ev\n"
                   "  incremental_column: created_at\n",
                   g_conninfo);
    tl_write_filef(tl_keepf("%s/one_db.yaml", g_config),
                   "one_db:\n  url: \"%s\"\n  query: SELECT id FROM one\n", g_conninfo);
    tl_write_filef(tl_keepf("%s/slow_db.yaml", g_config),
                   "slow_db:\n  url: \"%s\"\n  query: |\n"
                   "    WITH gate AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(%d))\n"
                   "    SELECT t.id, t.created_at FROM ev t, gate\n"
                   "  incremental_column: created_at\n",
                   g_conninfo, GATE);
    tl_free_kept();
    return 0;
}

/* A split source behind the gate: two tables read at once. */
static void write_split_source(void)
{
    tl_write_filef(tl_keepf("%s/split_db.yaml", g_config),
                   "split_db:\n  url: \"%s\"\n  dataset_query: |\n"
                   "    WITH gate AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(%d))\n"
                   "    SELECT t.id AS dataset_id, t.created_at FROM ev t, gate\n"
                   "  results_query: |\n"
                   "    WITH gate AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(%d))\n"
                   "    SELECT t.id AS dataset_id, t.note FROM ev t, gate\n",
                   g_conninfo, GATE, GATE);
}

static int teardown_group(void **state)
{
    (void)state;
    tl_server_kill_all();
    PQfinish(g_pg);
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_config);
    free(g_db);
    free(g_conninfo);
    return 0;
}

static int teardown_test(void **state)
{
    (void)state;
    tl_server_kill_all();
    /* A failed test may have left the gate closed. */
    PQclear(PQexec(g_pg, "SELECT pg_advisory_unlock_all()"));
    tl_free_kept();
    return 0;
}

static const char *const all_commands[] = {
    "sync", "plan", "status", "reset-watermark", "check-config", "serve", "query", "version", "help"};

/* help, --help, -h and CMD --help: stdout, exit 0, nothing on stderr. */
static void test_help_everywhere(void **state)
{
    (void)state;
    const char *tops[] = {"--help", "-h", "help", "--config-dir /nonexistent --help"};
    for (size_t i = 0; i < sizeof tops / sizeof tops[0]; i++) {
        cli_out o = cli_run(g_dir, NULL, "%s", tops[i]);
        cli_expect(&o, 0, tops[i]);
        tl_assert_contains(o.out, "usage: duckstore [OPTIONS] COMMAND [ARGS]\n");
        tl_assert_contains(o.out, "  plan [NAME...] [--full]");
        tl_assert_contains(o.out, "global options (before or after the command; --option=value works too):");
        assert_string_equal(o.err, "");
    }
    for (size_t i = 0; i < sizeof all_commands / sizeof all_commands[0]; i++) {
        const char *cmd = all_commands[i];
        char *want = tl_keepf("usage: duckstore [OPTIONS] %s", cmd);
        const char *forms[] = {tl_keepf("%s --help", cmd), tl_keepf("%s -h", cmd), tl_keepf("help %s", cmd),
                               tl_keepf("--help %s", cmd)};
        for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
            cli_out o = cli_run(g_dir, NULL, "%s", forms[f]);
            cli_expect(&o, 0, forms[f]);
            tl_assert_contains(o.out, want);
            assert_string_equal(o.err, "");
        }
    }
    /* The command's own options are in its help. */
    cli_out o = cli_run(g_dir, NULL, "sync --help");
    tl_assert_contains(o.out, "  --dry-run ");
    tl_assert_contains(o.out, "status key (monitoring_data)");
    o = cli_run(g_dir, NULL, "query --help");
    tl_assert_contains(o.out, "  --format F  table, tsv, csv or json");
}

/* Usage errors: stderr, exit 2, nothing on stdout. */
static void test_usage_errors(void **state)
{
    (void)state;
    static const struct {
        const char *args, *err;
    } cases[] = {
        {"", "usage: duckstore [OPTIONS] COMMAND [ARGS]"},
        {"frobnicate", "duckstore: unknown command \"frobnicate\" (duckstore help lists them)"},
        {"--bogus status", "duckstore: unknown option --bogus (see duckstore --help)"},
        {"sync --bogus", "duckstore sync: unknown option --bogus (see duckstore sync --help)\n"
                         "usage: duckstore sync [NAME...] [--full] [--dry-run]\n"},
        {"status extra", "duckstore status: unexpected argument extra (see duckstore status --help)"},
        {"reset-watermark",
         "duckstore reset-watermark: missing argument\nusage: duckstore reset-watermark NAME"},
        {"status --config-dir", "duckstore: --config-dir needs a value (see duckstore --help)"},
        {"help nosuch", "duckstore: unknown command \"nosuch\""},
        {"query --format xml 'SELECT 1'", "--format takes table, tsv, csv or json, not \"xml\""},
        {"query --format=xml 'SELECT 1'", "--format takes table, tsv, csv or json, not \"xml\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cli_out o = cli_run(g_dir, NULL, "--config-dir '%s' %s", g_config, cases[i].args);
        cli_expect(&o, 2, cases[i].args);
        tl_assert_contains(o.err, cases[i].err);
        assert_string_equal(o.out, "");
    }
    /* A directory without a YAML file is a mistaken --config-dir. */
    char *empty = tl_keepf("%s/empty", g_dir);
    mkdir(empty, 0755);
    const char *commands[] = {"status", "check-config", "sync", "plan"};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        cli_out o = cli_run(g_dir, NULL, "%s --config-dir '%s'", commands[i], empty);
        cli_expect(&o, 2, tl_keepf("%s on an empty directory", commands[i]));
        tl_assert_contains(
            o.err,
            tl_keepf("duckstore: %s: no config file in this directory; it must hold duckdb.yaml", empty));
        tl_assert_contains(o.err, "or pass the right directory with --config-dir\n");
        assert_string_equal(o.out, "");
    }
    /* An unknown source lists the known ones with their status keys. */
    cli_out o = cli_run(g_dir, NULL, "sync nosuch --config-dir '%s'", g_config);
    cli_expect(&o, 2, "sync nosuch");
    tl_assert_contains(o.err, tl_keepf("no source named \"nosuch\" in %s; known sources: ev (ev_data) one "
                                       "(one_data) slow (slow_data)",
                                       g_config));
}

static void test_version(void **state)
{
    (void)state;
    const char *forms[] = {"--version", "version", "status --version", "--config-dir=/nowhere --version"};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        cli_out o = cli_run(g_dir, NULL, "%s", forms[i]);
        cli_expect(&o, 0, forms[i]);
        assert_true(strncmp(o.out, "duckstore 0.", 12) == 0);
        tl_assert_contains(o.out, " (DuckDB v");
        assert_string_equal(o.err, "");
    }
}

/* The global options before or after the command, as two arguments or
 * one with "=", give the same result. */
static void test_global_options_anywhere(void **state)
{
    (void)state;
    cli_out first = cli_run(g_dir, NULL, "--config-dir '%s' sync ev", g_config);
    cli_expect(&first, 0, "sync ev");
    const char *forms[] = {"--config-dir '%s' status", "status --config-dir '%s'", "--config-dir='%s' status",
                           "status --config-dir='%s'", "-v status --config-dir '%s'"};
    cli_out ref = cli_run(g_dir, NULL, "--config-dir '%s' status", g_config);
    cli_expect(&ref, 0, "status");
    tl_assert_contains(ref.out, "ev_data: ready, 3 rows, last sync ");
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char *args = tl_keepf(forms[i], g_config);
        cli_out o = cli_run(g_dir, NULL, "%s", args);
        cli_expect(&o, 0, args);
        assert_string_equal(o.out, ref.out);
    }
    /* --db= as well: status names the file it was given, which does not
     * exist (and is not created). */
    char *other = tl_keepf("%s/other.duckdb", g_dir);
    cli_out o = cli_run(g_dir, NULL, "status --db='%s' --config-dir '%s'", other, g_config);
    cli_expect(&o, 1, "status --db=");
    tl_assert_contains(o.err, tl_keepf("the DuckDB file %s does not exist yet", other));
    assert_int_equal(access(other, F_OK), -1);
}

/* sync takes several sources, by name or status key, in the order given;
 * counts read "1 row", "1 column". */
static void test_several_sources_and_wording(void **state)
{
    (void)state;
    cli_out o = cli_run(g_dir, NULL, "--config-dir '%s' sync one_data ev --full", g_config);
    cli_expect(&o, 0, "sync one_data ev");
    const char *one = strstr(o.out, "one: full sync, 1 row in one_data (+1), ");
    const char *ev = strstr(o.out, "ev: full sync, 3 rows in ev_data (+0), ");
    if (one == NULL || ev == NULL || one > ev)
        fail_msg("sync one_data ev printed:\n%s", o.out);
    tl_assert_contains(o.out, "  one_data                         full        1 row read, 1 row total\n");
    tl_assert_contains(o.out, "  ev_data                          full        3 rows read, 3 rows total\n");
    assert_null(strstr(o.out, "slow"));

    o = cli_run(g_dir, NULL, "--config-dir '%s' status", g_config);
    tl_assert_contains(o.out, "one_data: ready, 1 row, last sync ");

    o = cli_run(g_dir, NULL, "--config-dir '%s' reset-watermark ev_data", g_config);
    cli_expect(&o, 0, "reset-watermark ev_data");
    assert_string_equal(o.out, "ev: watermarks cleared; the next sync is a full rebuild\n");

    o = cli_run(g_dir, NULL, "--config-dir '%s' check-config", g_config);
    cli_expect(&o, 0, "check-config");
    tl_assert_contains(o.out, "# one: query returns 1 column:\n");
    tl_assert_contains(o.out, "# ev: query returns 3 columns:\n");
    tl_assert_contains(o.out, tl_keepf("# config directory %s: OK\n", g_config));
    assert_null(strstr(o.out, "1 columns"));
}

/* CSV leaves NULL empty (an empty string is ""); a terminal gets a table,
 * a pipe TSV. */
static void test_query_formats(void **state)
{
    (void)state;
    cli_out o = cli_run(g_dir, NULL, "--config-dir '%s' sync ev", g_config);
    cli_expect(&o, 0, "sync ev");
    const char *sql = "'SELECT id, note FROM ev_data ORDER BY id'";
    o = cli_run(g_dir, NULL, "query --format=csv %s --config-dir '%s'", sql, g_config);
    cli_expect(&o, 0, "query --format=csv");
    assert_string_equal(o.out, "id,note\n1,plain\n2,\n3,\"a,\"\"b\"\"\"\n");
    o = cli_run(g_dir, NULL, "query %s --config-dir '%s'", sql, g_config);
    assert_string_equal(o.out, "id\tnote\n1\tplain\n2\tNULL\n3\ta,\"b\"\n");
    char *tty = NULL;
    int rc = tl_run(&tty, "script -qec \"'%s' query --config-dir '%s' %s\" /dev/null",
                    getenv("DUCKSTORE_BIN"), g_config, sql);
    tl_keep(tty);
    assert_int_equal(rc, 0);
    tl_assert_contains(tty, " id | note");
    tl_assert_contains(tty, "(3 rows)");
}

/* Ctrl-C (or SIGTERM) while the sync reads: the sync is cancelled before
 * its commit, the message says which and that the data is unchanged, exit
 * 130 (143); the sources not reached are named; data, watermark and status
 * stay. */
static void test_ctrl_c_local(void **state)
{
    (void)state;
    static const struct {
        int sig, rc;
        const char *label;
    } signals[] = {{SIGINT, 130, "Ctrl-C"}, {SIGTERM, 143, "SIGTERM"}};
    cli_out o = cli_run(g_dir, NULL, "--config-dir '%s' sync slow --full", g_config);
    cli_expect(&o, 0, "sync slow");
    cli_out before = cli_run(g_dir, NULL, "--config-dir '%s' status --json", g_config);
    tl_pg_exec(g_pg, "INSERT INTO ev VALUES (10, '2026-02-14 10:00:00+00', 'new')");

    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        tl_pg_exec(g_pg, "SELECT pg_advisory_lock(%d)", GATE);
        cli_bg bg = {0};
        cli_bg_start(&bg, g_dir, tl_keepf("--config-dir '%s' sync slow one", g_config));
        wait_for_gate(g_pg);
        kill(bg.pid, signals[i].sig);
        int rc = cli_bg_wait(&bg);
        tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", GATE);
        char *err = tl_keep(tl_read_file(bg.err_path));
        char *out = tl_keep(tl_read_file(bg.out_path));
        if (rc != signals[i].rc)
            fail_msg("exit %d after %s, expected %d\nstdout: %s\nstderr: %s", rc, signals[i].label,
                     signals[i].rc, out, err);
        tl_assert_contains(err,
                           tl_keepf("duckstore: %s: the sync of slow was cancelled before its commit "
                                    "(tables slow_data); the DuckDB file is unchanged: slow_data keeps its "
                                    "previous data, watermarks and status\n",
                                    signals[i].label));
        tl_assert_contains(err, tl_keepf("duckstore: %s: not synced: one (unchanged)\n", signals[i].label));
        assert_string_equal(out, "");

        cli_out after = cli_run(g_dir, NULL, "--config-dir '%s' status --json", g_config);
        assert_string_equal(after.out, before.out);
        o = cli_run(g_dir, NULL, "--config-dir '%s' query --format csv 'SELECT count(*) AS n FROM slow_data'",
                    g_config);
        assert_string_equal(o.out, "n\n3\n");
    }
    tl_pg_exec(g_pg, "DELETE FROM ev WHERE id = 10");
}

/* On a terminal (script(1) gives one) a progress line per table is drawn
 * while the tables are read. */
static void test_progress_on_terminal(void **state)
{
    (void)state;
    write_split_source();
    char *typescript = tl_keepf("%s/typescript", g_dir);
    tl_pg_exec(g_pg, "SELECT pg_advisory_lock(%d)", GATE);
    cli_bg bg = {0};
    cli_bg_start_raw(&bg, g_dir,
                     tl_keepf("exec script -qfec \"'%s' --config-dir '%s' sync split\" '%s'",
                              getenv("DUCKSTORE_BIN"), g_config, typescript));
    wait_for_gate(g_pg);
    char *seen = NULL;
    for (double deadline = tl_now_ms() + 60000;;) {
        free(seen);
        seen = tl_read_file(typescript);
        if (seen != NULL && strstr(seen, " split_dataset: 0 rows, 0.0 MB") != NULL &&
            strstr(seen, " split_results: 0 rows, 0.0 MB") != NULL)
            break;
        if (tl_now_ms() > deadline) {
            tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", GATE);
            fail_msg("no progress line per table within 60 s:\n%s", seen ? seen : "");
        }
        tl_sleep_ms(20);
    }
    free(seen);
    tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", GATE);
    assert_int_equal(cli_bg_wait(&bg), 0);
    char *done = tl_keep(tl_read_file(typescript));
    tl_assert_contains(done, "split: full sync, 3 rows in split_data (+3)");
    unlink(tl_keepf("%s/split_db.yaml", g_config));
}

/* Waits until the file at path holds needle; its text, kept. */
static char *wait_for_text(const char *path, const char *needle)
{
    for (double deadline = tl_now_ms() + 60000;;) {
        char *text = tl_read_file(path);
        if (text != NULL && strstr(text, needle) != NULL)
            return tl_keep(text);
        if (tl_now_ms() > deadline)
            fail_msg("%s did not show \"%s\" within 60 s:\n%s", path, needle, text ? text : "");
        free(text);
        tl_sleep_ms(20);
    }
}

/* log: the server's log file, in g_dir. */
static void start_server(tl_server *srv, const char *log)
{
    tl_server_start(srv, g_config, tl_keepf("%s/%s", g_dir, log), NULL);
    char *serve_file = tl_keepf("%s.serve.json", g_db);
    for (double deadline = tl_now_ms() + 60000; access(serve_file, F_OK) != 0;) {
        if (tl_now_ms() > deadline)
            fail_msg("no server file %s after 60 s", serve_file);
        tl_sleep_ms(10);
    }
}

/* Through a running server: help and options alike, several sources and
 * status keys, plan; Ctrl-C cancels the sync this command started in the
 * server, before its commit, and says so as a local sync does (exit 130);
 * the server logs the sync as cancelled and its status is unchanged. */
static void test_through_server(void **state)
{
    (void)state;
    tl_server srv;
    char *log = tl_keepf("%s/server.log", g_dir);
    start_server(&srv, "server.log");
    cli_out o = cli_run(g_dir, NULL, "sync one_data ev --config-dir='%s'", g_config);
    cli_expect(&o, 0, "sync one_data ev through the server");
    const char *one = strstr(o.out, "one: full sync, 1 row in one_data (+0)");
    const char *ev = strstr(o.out, "ev: incremental sync, 3 rows in ev_data (+0)");
    if (one == NULL || ev == NULL || one > ev)
        fail_msg("sync one_data ev through the server printed:\n%s\nstderr: %s", o.out, o.err);
    o = cli_run(g_dir, NULL, "status --config-dir '%s'", g_config);
    cli_expect(&o, 0, "status through the server");
    tl_assert_contains(o.out, "one_data: ready, 1 row, last sync ");
    o = cli_run(g_dir, NULL,
                "query --format=csv 'SELECT id, note FROM ev_data ORDER BY id' --config-dir '%s'", g_config);
    assert_string_equal(o.out, "id,note\n1,plain\n2,\n3,\"a,\"\"b\"\"\"\n");
    o = cli_run(g_dir, NULL, "sync --help --config-dir '%s'", g_config);
    cli_expect(&o, 0, "sync --help");

    o = cli_run(g_dir, NULL, "plan ev --config-dir '%s'", g_config);
    cli_expect(&o, 0, "plan while the server runs");
    tl_assert_contains(o.out, "  ev_data (query): incremental sync: a watermark is stored");

    cli_out before = cli_run(g_dir, NULL, "--config-dir '%s' status --json", g_config);
    tl_pg_exec(g_pg, "SELECT pg_advisory_lock(%d)", GATE);
    cli_bg bg = {0};
    cli_bg_start(&bg, g_dir, tl_keepf("--config-dir '%s' sync slow one", g_config));
    json_t *ds = tl_server_wait_state(&srv, "slow_data", "syncing", 60);
    json_decref(ds);
    wait_for_gate(g_pg);
    kill(bg.pid, SIGINT);
    int rc = cli_bg_wait(&bg);
    char *err = tl_keep(tl_read_file(bg.err_path));
    char *out = tl_keep(tl_read_file(bg.out_path));
    tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", GATE);
    if (rc != 130)
        fail_msg("exit %d after Ctrl-C, expected 130\nstderr: %s", rc, err);
    tl_assert_contains(err, "duckstore: Ctrl-C: the sync of slow was cancelled before its commit (tables "
                            "slow_data); the DuckDB file is unchanged: slow_data keeps its previous data, "
                            "watermarks and status\n");
    tl_assert_contains(err, "duckstore: Ctrl-C: not synced: one (unchanged)\n");
    assert_string_equal(out, "");
    /* Cancelled, not stopped waiting: nothing runs on in the server. */
    ds = tl_server_dataset(&srv, "slow_data");
    assert_string_not_equal(tl_json_str(ds, "state"), "syncing");
    json_decref(ds);
    cli_out after = cli_run(g_dir, NULL, "--config-dir '%s' status --json", g_config);
    assert_string_equal(after.out, before.out);
    tl_assert_contains(tl_keep(tl_read_file(log)),
                       "slow: sync cancelled; the previous data, watermarks and status stay");
    o = cli_run(g_dir, NULL, "--config-dir '%s' query --format csv 'SELECT count(*) AS n FROM slow_data'",
                g_config);
    assert_string_equal(o.out, "n\n3\n");
    assert_int_equal(tl_server_stop(&srv, 60, NULL), 0);
}

/* Ctrl-C while the CLI waits for a sync someone else started in the
 * server (the scheduler, another client): that sync is not the CLI's to
 * cancel; it runs on and succeeds, and the CLI says it started nothing. */
static void test_ctrl_c_leaves_others_sync(void **state)
{
    (void)state;
    tl_server srv;
    start_server(&srv, "others.log");
    tl_pg_exec(g_pg, "SELECT pg_advisory_lock(%d)", GATE);
    char *raw = NULL;
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/slow", NULL, 202, &raw));
    free(raw);
    wait_for_gate(g_pg);
    cli_bg bg = {0};
    cli_bg_start(&bg, g_dir, tl_keepf("--config-dir '%s' sync slow", g_config));
    wait_for_text(bg.err_path, "duckstore: slow is syncing in the server; waiting for that sync to end\n");
    kill(bg.pid, SIGINT);
    int rc = cli_bg_wait(&bg);
    char *err = tl_keep(tl_read_file(bg.err_path));
    if (rc != 130)
        fail_msg("exit %d after Ctrl-C, expected 130\nstderr: %s", rc, err);
    tl_assert_contains(err,
                       "duckstore: Ctrl-C: the sync of slow was not started (the server's own sync of it "
                       "was still running); this command changed nothing\n");
    /* The other sync still runs, then ends well. */
    json_t *ds = tl_server_dataset(&srv, "slow_data");
    assert_string_equal(tl_json_str(ds, "state"), "syncing");
    json_decref(ds);
    tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", GATE);
    ds = tl_server_wait_state(&srv, "slow_data", "ready", 60);
    json_decref(ds);
    char *log = tl_keep(tl_read_file(tl_keepf("%s/others.log", g_dir)));
    if (strstr(log, "slow: sync cancelled") != NULL)
        fail_msg("the server's own sync was cancelled:\n%s", log);
    assert_int_equal(tl_server_stop(&srv, 60, NULL), 0);
}

/* Through a server on a terminal: one progress line per table, as locally. */
static void test_progress_through_server(void **state)
{
    (void)state;
    write_split_source();
    tl_server srv;
    start_server(&srv, "progress.log");
    char *typescript = tl_keepf("%s/typescript", g_dir);
    tl_pg_exec(g_pg, "SELECT pg_advisory_lock(%d)", GATE);
    cli_bg bg = {0};
    cli_bg_start_raw(&bg, g_dir,
                     tl_keepf("exec script -qfec \"'%s' --config-dir '%s' sync split\" '%s'",
                              getenv("DUCKSTORE_BIN"), g_config, typescript));
    wait_for_gate(g_pg);
    char *seen = NULL;
    for (double deadline = tl_now_ms() + 60000;;) {
        free(seen);
        seen = tl_read_file(typescript);
        if (seen != NULL && strstr(seen, " split_dataset: 0 rows, 0.0 MB") != NULL &&
            strstr(seen, " split_results: 0 rows, 0.0 MB") != NULL)
            break;
        if (tl_now_ms() > deadline) {
            tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", GATE);
            fail_msg("no progress line per table through the server within 60 s:\n%s", seen ? seen : "");
        }
        tl_sleep_ms(20);
    }
    free(seen);
    tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", GATE);
    assert_int_equal(cli_bg_wait(&bg), 0);
    char *done = tl_keep(tl_read_file(typescript));
    tl_assert_contains(done, "split: full sync, 3 rows in split_data (");
    assert_int_equal(tl_server_stop(&srv, 60, NULL), 0);
    unlink(tl_keepf("%s/split_db.yaml", g_config));
}

/* A sync of the CLI alone logs the events of a server's sync, in JSON:
 * sync_start, sync_table per table, sync_end with its result. */
static void test_json_log_events(void **state)
{
    (void)state;
    cli_out o = cli_run(g_dir, NULL, "--log-format json --config-dir '%s' sync one --full", g_config);
    cli_expect(&o, 0, "sync one --full with JSON logs");
    const char *want[] = {"sync_start", "sync_table", "sync_end"};
    json_t *seen[3] = {NULL, NULL, NULL};
    for (char *line = o.err; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl != NULL)
            *nl = '\0';
        json_t *doc = json_loads(line, 0, NULL);
        if (doc == NULL)
            fail_msg("a log line is not JSON: %s", line);
        const char *event = tl_json_str(doc, "event");
        for (size_t i = 0; i < 3; i++)
            if (event != NULL && strcmp(event, want[i]) == 0 && seen[i] == NULL) {
                seen[i] = doc;
                doc = NULL;
            }
        json_decref(doc);
        line = nl ? nl + 1 : NULL;
    }
    for (size_t i = 0; i < 3; i++) {
        if (seen[i] == NULL)
            fail_msg("no %s event in the log of sync:\n%s", want[i], o.err);
        assert_string_equal(tl_json_str(seen[i], "source"), "one");
        assert_string_equal(tl_json_str(json_object_get(seen[i], "fields"), "trigger"), "manual");
    }
    assert_true(json_is_true(json_object_get(json_object_get(seen[0], "fields"), "full")));
    assert_string_equal(tl_json_str(seen[1], "table"), "one_data");
    json_t *end = json_object_get(seen[2], "fields");
    assert_string_equal(tl_json_str(end, "result"), "success");
    assert_string_equal(tl_json_str(end, "sync_type"), "full");
    assert_int_equal(json_integer_value(json_object_get(end, "rows")), 1);
    for (size_t i = 0; i < 3; i++)
        json_decref(seen[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_help_everywhere, teardown_test),
        cmocka_unit_test_teardown(test_usage_errors, teardown_test),
        cmocka_unit_test_teardown(test_version, teardown_test),
        cmocka_unit_test_teardown(test_global_options_anywhere, teardown_test),
        cmocka_unit_test_teardown(test_several_sources_and_wording, teardown_test),
        cmocka_unit_test_teardown(test_query_formats, teardown_test),
        cmocka_unit_test_teardown(test_ctrl_c_local, teardown_test),
        cmocka_unit_test_teardown(test_progress_on_terminal, teardown_test),
        cmocka_unit_test_teardown(test_through_server, teardown_test),
        cmocka_unit_test_teardown(test_ctrl_c_leaves_others_sync, teardown_test),
        cmocka_unit_test_teardown(test_progress_through_server, teardown_test),
        cmocka_unit_test_teardown(test_json_log_events, teardown_test),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
