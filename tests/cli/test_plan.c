/* duckstore plan (and sync --dry-run) on the built binary against the
 * harness PostgreSQL: a full plan before the first sync, an incremental
 * one from the stored watermark, one after the query's columns changed,
 * one whose commit horizon an open transaction holds back; the exact SQL,
 * PostgreSQL's estimate, the masked url; and that a plan changes nothing
 * (status, watermarks and the DuckDB file's bytes and mtime); through a
 * running server, the very same output. */
#include "cli_harness.h"

static char *g_conninfo;
static PGconn *g_pg;

/* One test's world: a directory with config/ and store.duckdb. */
typedef struct world {
    char *dir, *config, *db;
} world;

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("cliplan"));
    g_pg = tl_pg_connect(g_conninfo);
    return 0;
}

static int teardown_group(void **state)
{
    (void)state;
    PQfinish(g_pg);
    free(g_conninfo);
    return 0;
}

static int teardown_test(void **state)
{
    (void)state;
    tl_server_kill_all();
    tl_free_kept();
    return 0;
}

/* A config of one source `name` with the given YAML body lines. */
static world world_open(const char *name, const char *body)
{
    world w;
    w.dir = tl_keep(tl_mkdtemp());
    w.config = tl_keepf("%s/config", w.dir);
    w.db = tl_keepf("%s/store.duckdb", w.dir);
    mkdir(w.config, 0755);
    tl_write_filef(tl_keepf("%s/duckdb.yaml", w.config), "duckdb:\n  path: %s\n", w.db);
    tl_write_filef(tl_keepf("%s/%s_db.yaml", w.config, name), "%s_db:\n  url: \"%s\"\n%s", name, g_conninfo,
                   body);
    return w;
}

static cli_out run(const world *w, const char *args)
{
    return cli_run(w->dir, NULL, "--config-dir '%s' %s", w->config, args);
}

/* The stored watermark of table, from status --json. */
static const char *watermark_of(const world *w, const char *table)
{
    cli_out o = run(w, "status --json");
    cli_expect(&o, 0, "status --json");
    json_t *doc = json_loads(o.out, 0, NULL);
    json_t *datasets = json_object_get(doc, "datasets");
    const char *key;
    json_t *ds;
    const char *wm = NULL;
    json_object_foreach(datasets, key, ds)
    {
        json_t *v = json_object_get(json_object_get(ds, "watermarks"), table);
        if (json_is_string(v))
            wm = tl_keep(strdup(json_string_value(v)));
    }
    json_decref(doc);
    if (wm == NULL)
        fail_msg("no watermark of %s in:\n%s", table, o.out);
    return wm;
}

/* The harness password, which no output may show. */
static const char *password(void)
{
    const char *p = strstr(g_conninfo, "password=");
    if (p == NULL)
        return NULL;
    p += 9;
    return tl_keep(strndup(p, strcspn(p, " ")));
}

static void assert_no_password(const cli_out *o)
{
    const char *pw = password();
    if (pw != NULL && (strstr(o->out, pw) != NULL || strstr(o->err, pw) != NULL))
        fail_msg("the password shows:\n%s\n%s", o->out, o->err);
}

/* Before the first sync: full, the exact COPY, the estimate of the
 * analyzed table, and still no DuckDB file afterwards. */
static void test_full_before_first_sync(void **state)
{
    (void)state;
    tl_pg_exec(g_pg,
               "CREATE TABLE fa (id int PRIMARY KEY, created_at timestamptz NOT NULL, note text);"
               "INSERT INTO fa SELECT i, '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 s', 'n'"
               " FROM generate_series(1, 1000) AS i;"
               "ANALYZE fa");
    world w =
        world_open("fa", "  query: SELECT id, created_at, note FROM fa\n  incremental_column: created_at\n");
    cli_out o = run(&w, "plan");
    cli_expect(&o, 0, "plan");
    tl_assert_contains(o.out, tl_keepf("# %s does not exist yet: the first sync creates it\n", w.db));
    tl_assert_contains(o.out, tl_keepf("fa (%s/fa_db.yaml:1) -> fa_data, from ", w.config));
    tl_assert_contains(o.out, "password=***");
    tl_assert_contains(o.out, "  fa_data (query): full sync: the table is not in the DuckDB file yet\n");
    tl_assert_contains(o.out, "    commit horizon: ");
    tl_assert_contains(o.out, "    estimate:       1000 rows (PostgreSQL's EXPLAIN)\n");
    tl_assert_contains(o.out,
                       "    SQL:            COPY (SELECT \"id\", \"created_at\", \"note\" FROM (SELECT id, "
                       "created_at, note FROM fa\n) AS _ds LIMIT 2000001) TO STDOUT (FORMAT binary)\n");
    tl_assert_contains(o.out, "# nothing was changed: ");
    assert_no_password(&o);
    assert_int_equal(access(w.db, F_OK), -1);

    /* sync --dry-run is the same plan. */
    cli_out dry = run(&w, "sync fa --dry-run");
    cli_expect(&dry, 0, "sync --dry-run");
    tl_assert_contains(dry.out, "  fa_data (query): full sync: the table is not in the DuckDB file yet\n");
    assert_int_equal(access(w.db, F_OK), -1);
    tl_rmtree(w.dir);
}

/* After a sync: incremental from the stored watermark, the read start and
 * the WHERE in the SQL; the file, status and watermarks as they were; -v
 * sync logs the same decision. --full plans a full one. */
static void test_incremental_changes_nothing(void **state)
{
    (void)state;
    tl_pg_exec(
        g_pg,
        "CREATE TABLE inc (id int PRIMARY KEY, created_at timestamptz NOT NULL, note text);"
        "INSERT INTO inc VALUES (1, '2026-02-13 10:00:00+00', 'a'), (2, '2026-02-13 10:01:00+00', 'b')");
    world w = world_open("inc",
                         "  query: SELECT id, created_at, note FROM inc\n  incremental_column: created_at\n");
    cli_out o = run(&w, "sync inc");
    cli_expect(&o, 0, "sync inc");
    tl_pg_exec(g_pg, "INSERT INTO inc VALUES (3, '2026-02-13 10:02:00+00', 'c')");
    const char *wm = watermark_of(&w, "inc_data");
    assert_string_equal(wm, "2026-02-13 10:01:00+00");

    cli_out status_before = run(&w, "status --json");
    size_t len_before, len_after;
    char *bytes_before = file_bytes(w.db, &len_before);
    struct stat st_before, st_after;
    assert_int_equal(stat(w.db, &st_before), 0);

    o = run(&w, "plan inc_data");
    cli_expect(&o, 0, "plan inc_data");
    tl_assert_contains(
        o.out, "  inc_data (query): incremental sync: a watermark is stored and the columns are unchanged\n"
               "    watermark:      2026-02-13 10:01:00+00\n"
               "    read starts at: 2026-02-13 10:01:00+00 (inclusive)\n"
               "    commit horizon: ");
    tl_assert_contains(o.out, "(no open transaction holds it back)\n");
    tl_assert_contains(o.out, "    estimate:       ");
    tl_assert_contains(o.out, " rows (PostgreSQL's EXPLAIN)\n");
    tl_assert_contains(o.out,
                       "    SQL:            COPY (SELECT \"id\", \"created_at\", \"note\" FROM (SELECT id, "
                       "created_at, note FROM inc\n) AS _ds WHERE (\"created_at\" >= '2026-02-13 "
                       "10:01:00+00'::timestamp with time zone OR \"created_at\" IS NULL) LIMIT 1999999) TO "
                       "STDOUT (FORMAT binary)\n");
    assert_no_password(&o);

    o = run(&w, "plan --full");
    cli_expect(&o, 0, "plan --full");
    tl_assert_contains(o.out, "  inc_data (query): full sync: a full sync was asked for (--full)\n"
                              "    commit horizon: ");
    o = run(&w, "sync --dry-run --full inc");
    cli_expect(&o, 0, "sync --dry-run --full");
    tl_assert_contains(o.out, "  inc_data (query): full sync: a full sync was asked for (--full)\n");

    /* Nothing changed: the status document, the file's bytes and mtime. */
    cli_out status_after = run(&w, "status --json");
    assert_string_equal(status_after.out, status_before.out);
    char *bytes_after = file_bytes(w.db, &len_after);
    assert_int_equal(stat(w.db, &st_after), 0);
    assert_int_equal(len_after, len_before);
    assert_memory_equal(bytes_after, bytes_before, len_before);
    assert_int_equal(st_after.st_mtim.tv_sec, st_before.st_mtim.tv_sec);
    assert_int_equal(st_after.st_mtim.tv_nsec, st_before.st_mtim.tv_nsec);
    assert_int_equal(access(tl_keepf("%s.wal", w.db), F_OK), -1);

    /* -v sync logs the decision the plan showed, then syncs as planned. */
    o = run(&w, "-v sync inc");
    cli_expect(&o, 0, "-v sync inc");
    tl_assert_contains(o.err,
                       "DEBUG inc: inc_data: incremental sync: a watermark is stored and the columns are "
                       "unchanged; watermark 2026-02-13 10:01:00+00\n");
    tl_assert_contains(o.err, "DEBUG inc: inc_data: the read starts at 2026-02-13 10:01:00+00 (inclusive)\n");
    tl_assert_contains(o.out, "inc: incremental sync, 3 rows in inc_data (+1)");
    tl_rmtree(w.dir);
}

/* The query's columns changed since the last sync: a full rebuild. */
static void test_schema_changed(void **state)
{
    (void)state;
    tl_pg_exec(g_pg, "CREATE TABLE sc (id int PRIMARY KEY, created_at timestamptz NOT NULL);"
                     "INSERT INTO sc VALUES (1, '2026-02-13 10:00:00+00')");
    world w = world_open("sc", "  query: SELECT * FROM sc\n  incremental_column: created_at\n");
    cli_out o = run(&w, "sync");
    cli_expect(&o, 0, "sync");
    o = run(&w, "plan");
    tl_assert_contains(o.out, "  sc_data (query): incremental sync: ");
    tl_pg_exec(g_pg, "ALTER TABLE sc ADD COLUMN extra text");
    o = run(&w, "plan sc");
    cli_expect(&o, 0, "plan sc");
    tl_assert_contains(o.out,
                       "  sc_data (query): full sync: the query's columns (or max_sync_rows) changed since "
                       "the last sync\n"
                       "    commit horizon: ");
    tl_assert_contains(
        o.out, "COPY (SELECT \"id\", \"created_at\", \"extra\" FROM (SELECT * FROM sc\n) AS _ds LIMIT "
               "2000001) TO STDOUT (FORMAT binary)\n");
    /* The watermark is still the stored one: the plan changed nothing. */
    assert_string_equal(watermark_of(&w, "sc_data"), "2026-02-13 10:00:00+00");
    o = run(&w, "sync");
    tl_assert_contains(o.out, "sc: full sync, 1 row in sc_data (+0)");
    tl_rmtree(w.dir);
}

/* An open transaction holding a row lock on the source table holds the
 * commit horizon back to its start: the plan names it and the value. */
static void test_held_horizon(void **state)
{
    (void)state;
    tl_pg_exec(g_pg, "CREATE TABLE hz (id int PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT "
                     "clock_timestamp(), note text);"
                     "INSERT INTO hz (id, note) VALUES (1, 'a'), (2, 'b')");
    world w =
        world_open("hz", "  query: SELECT id, created_at, note FROM hz\n  incremental_column: created_at\n");
    cli_out o = run(&w, "sync");
    cli_expect(&o, 0, "sync");

    PGconn *late = tl_pg_connect(g_conninfo);
    tl_pg_exec(late, "SET application_name = 'late-writer'");
    tl_pg_exec(late, "BEGIN");
    tl_pg_exec(late, "UPDATE hz SET note = 'held' WHERE id = 1");
    char *horizon = tl_keep(
        tl_pg_scalar(g_pg, "SELECT to_char(xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') "
                           "|| '+00' FROM pg_stat_activity WHERE application_name = 'late-writer'"));
    int64_t pid = tl_pg_int(g_pg, "SELECT pid FROM pg_stat_activity WHERE application_name = 'late-writer'");
    o = run(&w, "plan");
    tl_pg_exec(late, "ROLLBACK");
    PQfinish(late);
    cli_expect(&o, 0, "plan");
    tl_assert_contains(
        o.out, tl_keepf("    commit horizon: %s, held back by pid %lld (user ", horizon, (long long)pid));
    tl_assert_contains(o.out, "application late-writer) in a transaction open since ");
    tl_assert_contains(o.out, "    in progress:    1 transaction(s) the next read looks for again\n");
    tl_rmtree(w.dir);
}

/* full_refresh_interval_minutes: the plan says when the server's scheduler
 * rebuilds in full, and that it is due once the time has passed. */
static void test_periodic_full_refresh(void **state)
{
    (void)state;
    tl_pg_exec(g_pg, "CREATE TABLE pf (id int PRIMARY KEY, created_at timestamptz NOT NULL);"
                     "INSERT INTO pf VALUES (1, '2026-02-13 10:00:00+00')");
    world w = world_open("pf", "  query: SELECT id, created_at FROM pf\n  incremental_column: created_at\n"
                               "  full_refresh_interval_minutes: 0.01\n");
    cli_out o = run(&w, "sync");
    cli_expect(&o, 0, "sync");
    o = run(&w, "status --json");
    json_t *doc = json_loads(o.out, 0, NULL);
    const char *next = tl_keep(strdup(
        tl_json_str(json_object_get(json_object_get(doc, "datasets"), "pf_data"), "next_full_refresh")));
    json_decref(doc);
    /* 0.6 s after the full sync it is due: poll until the plan says so. */
    for (double deadline = tl_now_ms() + 30000;;) {
        o = run(&w, "plan");
        cli_expect(&o, 0, "plan");
        if (strstr(o.out, "  periodic full refresh: due since ") != NULL)
            break;
        tl_assert_contains(
            o.out, tl_keepf("  periodic full refresh: next at %s (duckstore serve's scheduler)\n", next));
        if (tl_now_ms() > deadline)
            fail_msg("the periodic full refresh never came due:\n%s", o.out);
        tl_sleep_ms(100);
    }
    tl_assert_contains(o.out,
                       tl_keepf("  periodic full refresh: due since %s: the next scheduled sync in duckstore "
                                "serve rebuilds every table in full",
                                next));
    tl_assert_contains(o.out, "  pf_data (query): incremental sync: ");
    tl_rmtree(w.dir);
}

/* While duckstore serve holds the file, plan asks the server, which plans
 * on its own store with the same code: the output is byte for byte the
 * local plan's of the same state (also --full, sync --dry-run, and a
 * source PostgreSQL rejects, exit 2), and nothing changes. */
static void test_plan_through_server(void **state)
{
    (void)state;
    tl_pg_exec(g_pg,
               "CREATE TABLE ps (id int PRIMARY KEY, created_at timestamptz NOT NULL, note text);"
               "INSERT INTO ps SELECT g, timestamptz '2026-02-13 10:00:00+00' + g * interval '1 minute',"
               " 'n' || g FROM generate_series(1, 50) g; ANALYZE ps;");
    world w = world_open("ps", "  query: SELECT id, created_at, note FROM ps\n"
                               "  incremental_column: created_at\n  full_refresh_interval_minutes: 600\n");
    tl_write_filef(tl_keepf("%s/duckdb.yaml", w.config), "duckdb:\n  path: %s\n  sync_mode: manual\n", w.db);
    tl_write_filef(tl_keepf("%s/bad_db.yaml", w.config),
                   "bad_db:\n  url: \"%s\"\n  query: SELECT id, scroe FROM ps\n", g_conninfo);
    cli_out o = run(&w, "sync ps");
    cli_expect(&o, 0, "sync ps");
    tl_pg_exec(g_pg, "INSERT INTO ps VALUES (51, '2026-02-14 10:00:00+00', 'late')");
    /* An open transaction holds the commit horizon at its start: both
     * plans see the same one (else it is PostgreSQL's clock, another at
     * each plan). */
    PGconn *late = tl_pg_connect(g_conninfo);
    tl_pg_exec(late, "BEGIN");
    tl_pg_exec(late, "UPDATE ps SET note = 'held' WHERE id = 1");
    const char *const args[] = {"plan ps", "plan ps --full", "sync --dry-run ps", "plan"};
    cli_out local[4];
    for (size_t i = 0; i < 4; i++)
        local[i] = run(&w, args[i]);
    cli_expect(&local[0], 0, "plan ps");
    cli_expect(&local[3], 2, "plan with a source PostgreSQL rejects");
    tl_assert_contains(local[0].out, "  periodic full refresh: next at ");
    tl_assert_contains(local[0].out, "  ps_data (query): incremental sync: ");
    tl_assert_contains(local[0].out, "    commit horizon: ");
    tl_assert_contains(local[0].out, ", held back by pid ");
    tl_assert_contains(local[3].err, "column \"scroe\" does not exist");

    tl_server srv;
    tl_server_start(&srv, w.config, tl_keepf("%s/server.log", w.dir), NULL);
    char *serve_file = tl_keepf("%s.serve.json", w.db);
    for (double deadline = tl_now_ms() + 60000; access(serve_file, F_OK) != 0;) {
        if (tl_now_ms() > deadline)
            fail_msg("no server file %s after 60 s", serve_file);
        tl_sleep_ms(10);
    }
    o = run(&w, "status --json");
    const char *status_before = o.out;
    for (size_t i = 0; i < 4; i++) {
        cli_out remote = run(&w, args[i]);
        if (remote.rc != local[i].rc || strcmp(remote.out, local[i].out) != 0 ||
            strcmp(remote.err, local[i].err) != 0)
            fail_msg("%s through the server (exit %d) differs from the local one (exit %d)\n"
                     "--- local stdout:\n%s--- server stdout:\n%s--- local stderr:\n%s--- server stderr:\n%s",
                     args[i], remote.rc, local[i].rc, local[i].out, remote.out, local[i].err, remote.err);
    }
    tl_pg_exec(late, "ROLLBACK");
    PQfinish(late);
    o = run(&w, "status --json");
    assert_string_equal(o.out, status_before);
    assert_int_equal(tl_server_stop(&srv, 60, NULL), 0);
    tl_pg_exec(g_pg, "DROP TABLE ps");
    tl_rmtree(w.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_full_before_first_sync, teardown_test),
        cmocka_unit_test_teardown(test_incremental_changes_nothing, teardown_test),
        cmocka_unit_test_teardown(test_schema_changed, teardown_test),
        cmocka_unit_test_teardown(test_held_horizon, teardown_test),
        cmocka_unit_test_teardown(test_periodic_full_refresh, teardown_test),
        cmocka_unit_test_teardown(test_plan_through_server, teardown_test),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
