/* Rows committed late, or with values a plain `> watermark` read skips,
 * still arrive exactly once (docs/incremental.md): a sequence id taken by a
 * transaction that commits after a later one, a prepared transaction
 * committed after the sync, a hot standby as the source, coarse watermark
 * values (dates, batch numbers), NULL watermarks and rows dated in the
 * future. Each case lost rows before the read's snapshot was tracked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

static const char *g_conninfo;

static int64_t rows_of(tl_env *e, const char *table)
{
    return tl_duck_int(e->con, "SELECT count(*) FROM %s", table);
}

static const char *holder_of(json_t *status, const char *table)
{
    json_t *t = json_object_get(json_object_get(status, "tables"), table);
    return tl_json_str(t, "horizon_held_by");
}

/* A table of 100 orders with a bigserial id, synced once by id. */
static void open_sequence_orders(tl_env *e, const char *schema)
{
    tl_env_open(e, g_conninfo, schema, "");
    tl_pg_exec(e->pg, "CREATE TABLE orders (id bigserial PRIMARY KEY, item text NOT NULL)");
    tl_pg_exec(e->pg, "INSERT INTO orders (item) SELECT 'o' || i FROM generate_series(1, 100) AS i");
    tl_env_source(e, "orders", "  query: SELECT id, item FROM orders\n  incremental_column: id\n");
    sync_report r;
    tl_sync_ok(e->st, &e->cfg, "orders", false, &r);
    assert_int_equal(rows_of(e, "orders_data"), 100);
}

/* Settled: the next read starts at the watermark again (it reads only the
 * row there) and the cache holds rows. */
static void assert_settled(tl_env *e, int64_t rows)
{
    sync_report r;
    tl_sync_ok(e->st, &e->cfg, "orders", false, &r);
    assert_int_equal(r.tables[0].rows_loaded, 1);
    assert_int_equal(rows_of(e, "orders_data"), rows);
}

/* Case 1: a bigint sequence. A session takes id n and stays open, a second
 * takes n+1 and commits, a sync runs, then the first commits. */
static void test_sequence_id_late_commit(void **state)
{
    (void)state;
    tl_env e;
    open_sequence_orders(&e, "seq");
    sync_report r;

    PGconn *slow = tl_pg_connect(e.url);
    tl_pg_exec(slow, "SET application_name = 'late-writer'");
    tl_pg_exec(slow, "BEGIN");
    tl_pg_exec(slow, "INSERT INTO orders (item) VALUES ('late')");  /* id 101, committed last */
    tl_pg_exec(e.pg, "INSERT INTO orders (item) VALUES ('early')"); /* id 102 */
    tl_sync_ok(e.st, &e.cfg, "orders", false, &r);
    assert_true(r.incremental);
    assert_int_equal(rows_of(&e, "orders_data"), 101);
    tl_assert_contains(r.tables[0].horizon_holder, "application late-writer");
    json_t *status = tl_sync_status(e.st, &e.cfg, "orders");
    tl_assert_contains(holder_of(status, "orders_data"), "late-writer");
    assert_true(json_is_true(json_object_get(status, "commit_horizon")));
    json_decref(status);

    /* Still open: the next sync neither waits nor re-reads from the start. */
    tl_pg_exec(e.pg, "INSERT INTO orders (item) VALUES ('third')"); /* id 103 */
    tl_sync_ok(e.st, &e.cfg, "orders", false, &r);
    assert_int_equal(rows_of(&e, "orders_data"), 102);
    assert_true(r.tables[0].rows_loaded <= 2);

    tl_pg_exec(slow, "COMMIT");
    PQfinish(slow);
    tl_sync_ok(e.st, &e.cfg, "orders", false, &r);
    assert_int_equal(rows_of(&e, "orders_data"), 103);
    assert_int_equal(tl_duck_int(e.con, "SELECT id FROM orders_data WHERE item = 'late'"), 101);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) - count(DISTINCT id) FROM orders_data"), 0);
    assert_string_equal(r.tables[0].horizon_holder, "");

    assert_settled(&e, 103);
    tl_env_close(&e);
}

/* Case 1 again, with a writer that has taken sequence values but has no
 * transaction id yet, so no snapshot lists it: a COPY keeps its first rows
 * in a buffer (up to 1,000) before it writes any, and takes an id only
 * then. A later row commits and a sync runs meanwhile; the COPY's rows
 * arrive after it commits. Before, the watermark passed them for good. */
/* Starts a COPY of 13 rows into orders that keeps them in its buffer (no
 * transaction id yet) and waits until the server took their ids, up to
 * last_id. */
static PGconn *start_buffered_copy(tl_env *e, const char *label, int64_t last_id)
{
    PGconn *copy = tl_pg_connect(e->url);
    tl_pg_exec(copy, "BEGIN");
    PGresult *res = PQexec(copy, "COPY orders (item) FROM STDIN");
    assert_int_equal(PQresultStatus(res), PGRES_COPY_IN);
    PQclear(res);
    char rows[512] = "";
    for (int i = 1; i <= 13; i++)
        snprintf(rows + strlen(rows), sizeof rows - strlen(rows), "%s %d\n", label, i);
    assert_int_equal(PQputCopyData(copy, rows, (int)strlen(rows)), 1);
    assert_int_equal(PQflush(copy), 0);
    for (int tries = 0; tl_pg_int(e->pg, "SELECT last_value FROM orders_id_seq") < last_id; tries++) {
        if (tries > 3000)
            fail_msg("the COPY's rows did not take their ids within 30 s");
        usleep(10000);
    }
    return copy;
}

static void commit_copy(PGconn *copy)
{
    assert_int_equal(PQputCopyEnd(copy, NULL), 1);
    PGresult *res;
    while ((res = PQgetResult(copy)) != NULL) {
        assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
        PQclear(res);
    }
    tl_pg_exec(copy, "COMMIT");
    PQfinish(copy);
}

static void test_copy_without_transaction_id(void **state)
{
    (void)state;
    tl_env e;
    open_sequence_orders(&e, "copyid");
    sync_report r;
    /* A nextval that writes the sequence to the WAL gives its transaction
     * an id; one such now lets the COPYs' next values go unlogged. */
    assert_int_equal(tl_pg_int(e.pg, "SELECT nextval('orders_id_seq')"), 101);

    PGconn *first = start_buffered_copy(&e, "first", 114);          /* ids 102-114 */
    tl_pg_exec(e.pg, "INSERT INTO orders (item) VALUES ('after')"); /* id 115, committed first */
    tl_sync_ok(e.st, &e.cfg, "orders", false, &r);
    assert_int_equal(rows_of(&e, "orders_data"), 101);
    commit_copy(first);

    /* A second COPY begins after that read: the read after it does not
     * start at the first one's start again, only at the read before. */
    PGconn *second = start_buffered_copy(&e, "second", 128);         /* ids 116-128 */
    tl_pg_exec(e.pg, "INSERT INTO orders (item) VALUES ('after2')"); /* id 129 */
    tl_sync_ok(e.st, &e.cfg, "orders", false, &r);
    assert_int_equal(rows_of(&e, "orders_data"), 115);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM orders_data WHERE item LIKE 'first %%'"), 13);
    commit_copy(second);
    tl_sync_ok(e.st, &e.cfg, "orders", false, &r);
    assert_int_equal(rows_of(&e, "orders_data"), 128);
    assert_int_equal(r.tables[0].rows_loaded, 15); /* ids 115-129, not from 100 */
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) - count(DISTINCT id) FROM orders_data"), 0);
    assert_settled(&e, 128);
    tl_env_close(&e);
}

/* A date column stamped with current_date, the day the writer's
 * transaction began: one that began on day D and writes only after the
 * next day's first row was synced (after midnight) still arrives. The
 * writer had no transaction id at that sync, so only the time horizon, on
 * the horizon's day, bounds it. */
static void test_date_stamped_by_a_transaction_across_midnight(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "dayend", "");
    tl_pg_exec(e.pg, "CREATE TABLE visits (id serial PRIMARY KEY, day date NOT NULL DEFAULT current_date)");
    tl_pg_exec(e.pg, "INSERT INTO visits (day) SELECT current_date - 3 FROM generate_series(1, 5)");
    tl_env_source(&e, "visits", "  query: SELECT id, day FROM visits\n  incremental_column: day\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "visits", false, &r);
    assert_int_equal(rows_of(&e, "visits_data"), 5);

    PGconn *slow = tl_pg_connect(e.url);
    tl_pg_exec(slow, "SET application_name = 'day-writer'");
    tl_pg_exec(slow, "BEGIN");
    tl_pg_exec(slow, "SELECT 1");                                           /* begun on day D, no id yet */
    tl_pg_exec(e.pg, "INSERT INTO visits (day) VALUES (current_date + 1)"); /* the next day's row */
    tl_sync_ok(e.st, &e.cfg, "visits", false, &r);
    assert_int_equal(rows_of(&e, "visits_data"), 6);
    tl_assert_contains(r.tables[0].horizon_holder, "application day-writer");
    tl_pg_exec(slow, "INSERT INTO visits DEFAULT VALUES"); /* current_date: day D */
    tl_pg_exec(slow, "COMMIT");
    PQfinish(slow);
    tl_sync_ok(e.st, &e.cfg, "visits", false, &r);
    assert_int_equal(rows_of(&e, "visits_data"), 7);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) - count(DISTINCT id) FROM visits_data"), 0);
    tl_env_close(&e);
}

/* A transaction open during the full load whose id is below rows the load
 * saw: no earlier read bounds it, so the read after its commit starts at
 * the beginning, and stores nothing twice. One that rolls back, or one that
 * writes only to a table the query does not read, costs nothing. */
static void test_open_during_full_load(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "fullload", "");
    tl_pg_exec(e.pg, "CREATE TABLE items (id bigserial PRIMARY KEY, v int NOT NULL)");
    tl_pg_exec(e.pg, "INSERT INTO items (v) SELECT i FROM generate_series(1, 50) AS i");
    PGconn *slow = tl_pg_connect(e.url);
    PGconn *aborting = tl_pg_connect(e.url);
    tl_pg_exec(slow, "BEGIN");
    tl_pg_exec(slow, "INSERT INTO items (v) VALUES (-1)"); /* id 51 */
    tl_pg_exec(aborting, "BEGIN");
    tl_pg_exec(aborting, "INSERT INTO items (v) VALUES (-2)"); /* id 52 */
    tl_pg_exec(e.pg, "INSERT INTO items (v) VALUES (53)");     /* id 53 */
    /* A writer of another table: nothing the read touched. */
    tl_pg_exec(e.pg, "CREATE TABLE unrelated (v int)");
    PGconn *elsewhere = tl_pg_connect(e.url);
    tl_pg_exec(elsewhere, "BEGIN");
    tl_pg_exec(elsewhere, "INSERT INTO unrelated VALUES (1)");
    tl_env_source(&e, "items", "  query: SELECT id, v FROM items\n  incremental_column: id\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "items", false, &r);
    assert_false(r.incremental);
    assert_int_equal(rows_of(&e, "items_data"), 51);

    tl_pg_exec(aborting, "ROLLBACK");
    PQfinish(aborting);
    /* The two writers of items are waited for, not the other. */
    char *rs =
        tl_duck_scalar(e.con, "SELECT read_state FROM _duckstore.tables WHERE table_name = 'items_data'");
    json_t *read_state = json_loads(rs, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(read_state, "pending")), 2);
    json_decref(read_state);
    free(rs);
    tl_pg_exec(elsewhere, "COMMIT");
    PQfinish(elsewhere);
    tl_sync_ok(e.st, &e.cfg, "items", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.tables[0].rows_loaded, 1); /* only the row at the watermark */

    tl_pg_exec(slow, "COMMIT");
    PQfinish(slow);
    tl_sync_ok(e.st, &e.cfg, "items", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.tables[0].rows_loaded, 52); /* from the beginning */
    assert_int_equal(r.tables[0].rows_inserted, 1);
    assert_int_equal(rows_of(&e, "items_data"), 52);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM items_data WHERE v = -1"), 1);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) - count(DISTINCT id) FROM items_data"), 0);
    tl_env_close(&e);
}

/* Case 3: a transaction PREPAREd before the sync and COMMIT PREPARED after
 * it, on a timestamp column the time horizon (pg_stat_activity) cannot see
 * it through, and on a sequence. */
static void test_prepared_transaction(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "twophase", "");
    tl_pg_exec(e.pg, "CREATE TABLE events (id bigserial PRIMARY KEY, payload text, "
                     "created_at timestamptz NOT NULL DEFAULT now())");
    tl_pg_exec(e.pg, "INSERT INTO events (payload) VALUES ('first')");
    tl_env_source(&e, "ev",
                  "  query: SELECT id, payload, created_at FROM events\n  incremental_column: created_at\n");
    tl_env_source(&e, "evid", "  query: SELECT id, payload FROM events\n  incremental_column: id\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "ev", false, &r);
    tl_sync_ok(e.st, &e.cfg, "evid", false, &r);

    PGconn *twophase = tl_pg_connect(e.url);
    tl_pg_exec(twophase, "BEGIN");
    tl_pg_exec(twophase, "INSERT INTO events (payload) VALUES ('prepared')");
    tl_pg_exec(twophase, "PREPARE TRANSACTION 'late_one'");
    PQfinish(twophase); /* a prepared transaction outlives its session */
    tl_pg_exec(e.pg, "INSERT INTO events (payload) VALUES ('second')");
    tl_sync_ok(e.st, &e.cfg, "ev", false, &r);
    assert_int_equal(rows_of(&e, "ev_data"), 2);
    tl_assert_contains(r.tables[0].horizon_holder, "prepared transaction 'late_one'");
    tl_sync_ok(e.st, &e.cfg, "evid", false, &r);
    assert_int_equal(rows_of(&e, "evid_data"), 2);
    tl_assert_contains(r.tables[0].horizon_holder, "prepared transaction 'late_one'");

    tl_pg_exec(e.pg, "COMMIT PREPARED 'late_one'");
    tl_sync_ok(e.st, &e.cfg, "ev", false, &r);
    tl_sync_ok(e.st, &e.cfg, "evid", false, &r);
    for (int i = 0; i < 2; i++) {
        const char *table = i ? "evid_data" : "ev_data";
        assert_int_equal(rows_of(&e, table), 3);
        assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM %s WHERE payload = 'prepared'", table), 1);
    }
    tl_env_close(&e);
}

/* ---- a hot standby as the source ----------------------------------------- */

static char g_standby_dir[600];
static int g_standby_port;

/* The harness server's PostgreSQL programs run as its owner. */
static int run_pg_tool(const char *cmd)
{
    char full[2048];
    snprintf(full, sizeof full, "%s%s", getuid() == 0 ? "runuser -u postgres -- " : "", cmd);
    int rc = system(full);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int conninfo_port(const char *conninfo)
{
    const char *p = strstr(conninfo, "port=");
    assert_non_null(p);
    return atoi(p + 5);
}

/* pg_basebackup of the harness server, started as a streaming standby. */
static void standby_start(void)
{
    const char *bin = getenv("DUCKSTORE_TEST_PG_BIN"), *data = getenv("DUCKSTORE_TEST_PG_DATA");
    const char *password = getenv("DUCKSTORE_TEST_PG_PASSWORD");
    assert_non_null(bin);
    assert_non_null(data);
    assert_non_null(password);
    /* The harness's directory (it stops any standby* left there); one per
     * process, removed when stopped: the plain and sanitizer suites share
     * the server. */
    snprintf(g_standby_dir, sizeof g_standby_dir, "%.500s/../standby-%d", data, (int)getpid());
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "timeout 300 env PGPASSWORD=%s %s/pg_basebackup -h 127.0.0.1 -p %d -U postgres -D %s -R -X "
             "stream --checkpoint=fast",
             password, bin, conninfo_port(tl_pg_base_conninfo()), g_standby_dir);
    assert_int_equal(run_pg_tool(cmd), 0);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    /* A start fails on a port in use (another port is tried) or by not
     * being ready within the wait, as on a loaded machine: that server is
     * stopped before the next attempt, which would otherwise only find it
     * still starting ("another server might be running"). */
    for (int attempt = 0; attempt < 6; attempt++) {
        g_standby_port = 20000 + rand() % 40000;
        snprintf(
            cmd, sizeof cmd,
            "%s/pg_ctl -D %s -l %s/log -w -t 180 start -o \"-c listen_addresses=127.0.0.1 -p %d -k %s/.. "
            "-c hot_standby=on -c max_connections=200 -c max_prepared_transactions=10\" >/dev/null",
            bin, g_standby_dir, g_standby_dir, g_standby_port, g_standby_dir);
        if (run_pg_tool(cmd) == 0)
            return;
        snprintf(cmd, sizeof cmd, "%s/pg_ctl -D %s -m immediate -w -t 60 stop >/dev/null 2>&1", bin,
                 g_standby_dir);
        run_pg_tool(cmd);
    }
    fail_msg("cannot start the standby (log in %s/log)", g_standby_dir);
}

static void standby_stop(void)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/pg_ctl -D %s -m immediate -w stop >/dev/null 2>&1; rm -rf %s",
             getenv("DUCKSTORE_TEST_PG_BIN"), g_standby_dir, g_standby_dir);
    run_pg_tool(cmd);
}

/* Waits until the standby has replayed everything the primary wrote so far. */
static void standby_catch_up(PGconn *primary, PGconn *standby)
{
    char *lsn = tl_pg_scalar(primary, "SELECT pg_current_wal_insert_lsn()::text");
    for (int i = 0; i < 600; i++) {
        if (tl_pg_int(standby, "SELECT (pg_last_wal_replay_lsn() >= '%s'::pg_lsn)::int", lsn) == 1) {
            free(lsn);
            return;
        }
        usleep(50000);
    }
    fail_msg("the standby did not replay %s within 30 s", lsn);
}

/* Case 2: the standby's pg_stat_activity cannot see the primary's open
 * transactions; its snapshots can. */
static void test_hot_standby_source(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "standby", "");
    tl_pg_exec(e.pg, "CREATE TABLE events (id bigserial PRIMARY KEY, payload text, "
                     "created_at timestamptz NOT NULL DEFAULT now())");
    tl_pg_exec(e.pg, "INSERT INTO events (payload) VALUES ('first')");
    char primary_url[sizeof e.url];
    snprintf(primary_url, sizeof primary_url, "%s", e.url);
    standby_start();
    /* The source reads the standby; writers use the primary. */
    snprintf(e.url, sizeof e.url, "%.1500s port=%d", primary_url, g_standby_port);
    PGconn *standby = tl_pg_connect(e.url);
    assert_int_equal(tl_pg_int(standby, "SELECT pg_is_in_recovery()::int"), 1);
    standby_catch_up(e.pg, standby);
    tl_env_source(&e, "sb",
                  "  query: SELECT id, payload, created_at FROM events\n  incremental_column: created_at\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "sb", false, &r);
    assert_int_equal(rows_of(&e, "sb_data"), 1);
    /* What the standby cannot see is said once, with the fix. */
    assert_int_equal(r.nwarnings, 1);
    tl_assert_contains(r.warnings[0], "hot standby");
    tl_assert_contains(r.warnings[0], "set lookback");

    PGconn *slow = tl_pg_connect(primary_url);
    tl_pg_exec(slow, "BEGIN");
    tl_pg_exec(slow, "INSERT INTO events (payload) VALUES ('late')"); /* stamped now, committed later */
    usleep(20000);
    tl_pg_exec(e.pg, "INSERT INTO events (payload) VALUES ('second')");
    standby_catch_up(e.pg, standby);
    tl_sync_ok(e.st, &e.cfg, "sb", false, &r);
    assert_int_equal(rows_of(&e, "sb_data"), 2);
    assert_int_equal(r.nwarnings, 0);
    tl_assert_contains(r.tables[0].horizon_holder, "on the primary");

    tl_pg_exec(slow, "COMMIT");
    PQfinish(slow);
    standby_catch_up(e.pg, standby);
    /* The standby settles the late transaction once every transaction of
     * the cluster older than its marker has ended (other tests' too): the
     * row arrives then, exactly once. Without the marker it never would. */
    for (int i = 0; i < 600 && rows_of(&e, "sb_data") < 3; i++) {
        tl_sync_ok(e.st, &e.cfg, "sb", false, &r);
        if (rows_of(&e, "sb_data") < 3)
            usleep(100000);
    }
    assert_int_equal(rows_of(&e, "sb_data"), 3);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM sb_data WHERE payload = 'late'"), 1);
    tl_sync_ok(e.st, &e.cfg, "sb", false, &r);
    assert_int_equal(rows_of(&e, "sb_data"), 3);
    PQfinish(standby);
    standby_stop();
    tl_env_close(&e);
}

/* A role without pg_read_all_stats: the sync and check-config say so with
 * the role's name and the grant; the log and status of a long-running
 * process only once, and once for both queries of a split source. */
static void test_role_without_stats_warned_once(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "rolewarn", "");
    tl_pg_exec(
        e.pg,
        "CREATE TABLE events (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now())");
    tl_pg_exec(e.pg, "INSERT INTO events DEFAULT VALUES");
    tl_pg_exec(e.pg,
               "DROP ROLE IF EXISTS plain_reader; CREATE ROLE plain_reader LOGIN PASSWORD 'pr-secret';"
               "GRANT USAGE ON SCHEMA rolewarn TO plain_reader; GRANT SELECT ON events TO plain_reader");
    char owner_url[sizeof e.url];
    snprintf(owner_url, sizeof owner_url, "%s", e.url);
    snprintf(e.url, sizeof e.url, "%.1400s user=plain_reader password=pr-secret", owner_url);
    tl_env_source(&e, "rw",
                  "  dataset_query: SELECT id AS dataset_id, created_at FROM events\n"
                  "  results_query: SELECT id AS dataset_id, created_at FROM events\n"
                  "  incremental_column: created_at\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "rw", false, &r);
    assert_int_equal(r.nwarnings, 1);
    tl_assert_contains(r.warnings[0], "the role \"plain_reader\" cannot see other users' sessions");
    tl_assert_contains(r.warnings[0], "GRANT pg_read_all_stats TO \"plain_reader\"");
    tl_sync_ok(e.st, &e.cfg, "rw", false, &r);
    assert_int_equal(r.nwarnings, 0);

    const char *bin = getenv("DUCKSTORE_BIN");
    assert_non_null(bin);
    char *out = NULL;
    int rc = tl_run(&out, "'%s' --config-dir '%s' --db '%s/check.duckdb' check-config", bin, e.dir, e.dir);
    assert_int_equal(rc, 0);
    tl_assert_contains(out, "# warning: rw: the role \"plain_reader\" cannot see other users' sessions");
    free(out);
    tl_pg_exec(e.pg,
               "REVOKE ALL ON events FROM plain_reader; REVOKE ALL ON SCHEMA rolewarn FROM plain_reader");
    tl_env_close(&e);
}

/* ---- coarse, NULL and future watermarks ---------------------------------- */

/* Case 4: rows added later with the watermark's own date or batch number. */
static void test_coarse_watermarks(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "coarse", "");
    tl_pg_exec(e.pg, "CREATE TABLE sales (day date NOT NULL, batch int NOT NULL, amount int NOT NULL)");
    tl_pg_exec(e.pg, "INSERT INTO sales VALUES ('2026-11-01', 1, 10), ('2026-11-02', 1, 20)");
    tl_env_source(&e, "byday", "  query: SELECT day, amount FROM sales\n  incremental_column: day\n");
    tl_env_source(&e, "bybatch", "  query: SELECT batch, amount FROM sales\n  incremental_column: batch\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "byday", false, &r);
    tl_sync_ok(e.st, &e.cfg, "bybatch", false, &r);

    /* Same day, same batch, later. One of them equal to a stored row. */
    tl_pg_exec(e.pg, "INSERT INTO sales VALUES ('2026-11-02', 1, 30), ('2026-11-02', 1, 20)");
    for (int round = 0; round < 2; round++) {
        tl_sync_ok(e.st, &e.cfg, "byday", false, &r);
        assert_true(r.incremental);
        tl_sync_ok(e.st, &e.cfg, "bybatch", false, &r);
        assert_true(r.incremental);
        for (int i = 0; i < 2; i++) {
            const char *table = i ? "bybatch_data" : "byday_data";
            assert_int_equal(rows_of(&e, table), 4);
            assert_int_equal(tl_duck_int(e.con, "SELECT sum(amount) FROM %s", table), 80);
        }
    }
    tl_env_close(&e);
}

/* Rows whose incremental column is NULL are read by every incremental sync
 * and stored once; with a key, a NULL row that gets a value replaces it. */
static void test_null_watermarks(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "nulls", "");
    tl_pg_exec(e.pg, "CREATE TABLE tickets (id int PRIMARY KEY, updated_at timestamptz, state text)");
    tl_pg_exec(e.pg, "INSERT INTO tickets VALUES (1, now(), 'open'), (2, NULL, 'new')");
    tl_env_source(&e, "plain",
                  "  query: SELECT id, updated_at, state FROM tickets\n  incremental_column: updated_at\n");
    tl_env_source(&e, "keyed",
                  "  query: SELECT id, updated_at, state FROM tickets\n  incremental_column: updated_at\n"
                  "  unique_key: id\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "plain", false, &r);
    tl_sync_ok(e.st, &e.cfg, "keyed", false, &r);
    tl_pg_exec(e.pg, "INSERT INTO tickets VALUES (3, NULL, 'new')");
    for (int round = 0; round < 2; round++) {
        tl_sync_ok(e.st, &e.cfg, "plain", false, &r);
        assert_true(r.incremental);
        tl_sync_ok(e.st, &e.cfg, "keyed", false, &r);
        for (int i = 0; i < 2; i++) {
            const char *table = i ? "keyed_data" : "plain_data";
            assert_int_equal(rows_of(&e, table), 3);
            assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM %s WHERE updated_at IS NULL", table),
                             2);
        }
    }
    tl_pg_exec(e.pg, "UPDATE tickets SET updated_at = now(), state = 'triaged' WHERE id = 3");
    tl_sync_ok(e.st, &e.cfg, "keyed", false, &r);
    assert_int_equal(rows_of(&e, "keyed_data"), 3);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM keyed_data WHERE state = 'triaged'"), 1);
    tl_env_close(&e);
}

/* With commit_horizon off, one row dated in the future no longer hides
 * every row written after it: the watermark stops at the source's clock. */
static void test_future_row_with_horizon_off(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "future", "");
    tl_pg_exec(e.pg, "CREATE TABLE readings (id int, at timestamptz NOT NULL)");
    tl_pg_exec(e.pg, "INSERT INTO readings VALUES (1, now() - interval '1 hour')");
    tl_env_source(
        &e, "rd",
        "  query: SELECT id, at FROM readings\n  incremental_column: at\n  commit_horizon: false\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "rd", false, &r);
    tl_pg_exec(e.pg, "INSERT INTO readings VALUES (2, now() + interval '1 day')");
    tl_sync_ok(e.st, &e.cfg, "rd", false, &r);
    assert_int_equal(rows_of(&e, "rd_data"), 2);
    tl_pg_exec(e.pg, "INSERT INTO readings VALUES (3, now())");
    tl_sync_ok(e.st, &e.cfg, "rd", false, &r);
    tl_sync_ok(e.st, &e.cfg, "rd", false, &r);
    assert_int_equal(rows_of(&e, "rd_data"), 3);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(DISTINCT id) FROM rd_data"), 3);
    tl_env_close(&e);
}

int main(void)
{
    g_conninfo = tl_pg_fresh_db("late");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequence_id_late_commit),
        cmocka_unit_test(test_copy_without_transaction_id),
        cmocka_unit_test(test_date_stamped_by_a_transaction_across_midnight),
        cmocka_unit_test(test_open_during_full_load),
        cmocka_unit_test(test_prepared_transaction),
        cmocka_unit_test(test_hot_standby_source),
        cmocka_unit_test(test_role_without_stats_warned_once),
        cmocka_unit_test(test_coarse_watermarks),
        cmocka_unit_test(test_null_watermarks),
        cmocka_unit_test(test_future_row_with_horizon_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
