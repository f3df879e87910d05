/* A full disk at the commit of a sync, made deterministic with a file size
 * limit (RLIMIT_FSIZE, SIGXFSZ ignored: a write past it fails with EFBIG,
 * as one on a full disk fails with ENOSPC; no root needed). The limit is
 * set just above the WAL (the batch does not fit, the small failure record
 * does) or at the WAL's size (neither fits).
 *
 * After a failed commit the store is reopened from the file: the previous
 * data stays readable, _duckstore holds exactly one row per table and one
 * status per source (no row mixed from two transactions), and the next sync
 * starts from the last committed state. A failure the file cannot record
 * still shows in the status and /metrics (from memory) until a sync is
 * saved; the log says it could not be recorded. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"
#include "tl_fault.h"
#include "tl_http.h"

#define FIRST_ROWS 100
#define BATCH_ROWS 2000 /* ~660 KB of WAL: far past the limit, below a row group */

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("fault_disk_full"));
    /* Ignored, so a write past the limit fails instead of killing the
     * process; servers started from here inherit it. */
    signal(SIGXFSZ, SIG_IGN);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tl_server_kill_all();
    free(g_conninfo);
    return 0;
}

/* Sets the file size limit of process pid (0: this one); RLIM_INFINITY
 * lifts it (back to the hard limit). */
static void file_limit(pid_t pid, rlim_t bytes)
{
    struct rlimit rl;
    if (prlimit(pid, RLIMIT_FSIZE, NULL, &rl) != 0)
        fail_msg("cannot read RLIMIT_FSIZE");
    rl.rlim_cur = bytes == RLIM_INFINITY || bytes > rl.rlim_max ? rl.rlim_max : bytes;
    if (prlimit(pid, RLIMIT_FSIZE, &rl, NULL) != 0)
        fail_msg("cannot set RLIMIT_FSIZE to %llu", (unsigned long long)bytes);
}

static rlim_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (rlim_t)sb.st_size : 0;
}

static rlim_t wal_size(const char *db_path)
{
    char wal[700];
    snprintf(wal, sizeof wal, "%s.wal", db_path);
    return file_size(wal);
}

/* Rows first..last of t: id and ~330 bytes of text. */
static void add_rows(PGconn *pg, int first, int last)
{
    tl_pg_exec(pg, "INSERT INTO t SELECT g, md5(g::text) || repeat('y', 300) FROM generate_series(%d, %d) g",
               first, last);
}

static void open_source(tl_env *e, const char *schema)
{
    tl_env_open(e, g_conninfo, schema, "");
    tl_pg_exec(e->pg, "CREATE TABLE t (id bigint PRIMARY KEY, payload text NOT NULL)");
    add_rows(e->pg, 1, FIRST_ROWS);
    tl_env_source(e, "x", "  query: SELECT id, payload FROM t\n  incremental_column: id\n");
}

/* A sync of x under the file size limit; it must fail (its error returned). */
static ds_error sync_limited(tl_env *e, rlim_t limit)
{
    sync_options opt = {0};
    sync_report r;
    ds_error err;
    memset(&err, 0, sizeof err);
    file_limit(0, limit);
    bool ok = sync_source(e->st, &e->cfg, tl_source(&e->cfg, "x"), &opt, &r, &err);
    file_limit(0, RLIM_INFINITY);
    if (ok)
        fail_msg("the sync succeeded under a file size limit of %llu bytes", (unsigned long long)limit);
    tl_assert_contains(err.msg, "x: ");
    tl_assert_contains(err.msg, "Could not write file");
    return err;
}

/* _duckstore as a whole: one row per table with this watermark ("" for
 * NULL), one status of source x in this state with these rows. */
static void assert_metadata(duckdb_connection con, const char *watermark, const char *state, int64_t rows)
{
    char *tables = tl_duck_scalar(con, "SELECT string_agg(table_name || '=' || coalesce(watermark, ''), ',' "
                                       "ORDER BY table_name) FROM _duckstore.tables");
    char *want = tl_keepf("x_data=%s", watermark);
    assert_string_equal(tables, want);
    free(tables);
    assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM _duckstore.sync_status"), 1);
    char *text = tl_duck_scalar(con, "SELECT status FROM _duckstore.sync_status WHERE source = 'x'");
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    if (doc == NULL)
        fail_msg("the persisted status of x is not a JSON document: %s", text ? text : "NULL");
    assert_string_equal(tl_json_str(doc, "state"), state);
    assert_int_equal(json_integer_value(json_object_get(doc, "rows")), rows);
    json_decref(doc);
    free(text);
}

/* The data of x: ids 1..rows, each once. */
static void assert_rows(duckdb_connection con, int64_t rows)
{
    int64_t v[3];
    tl_duck_ints(con, v, 3, "SELECT count(*), count(DISTINCT id), max(id) FROM x_data");
    assert_int_equal(v[0], rows);
    assert_int_equal(v[1], rows);
    assert_int_equal(v[2], rows);
}

/* Closes and opens the store again, as a restart does. */
static void reopen(tl_env *e)
{
    duckdb_disconnect(&e->con);
    store_close(e->st);
    ds_error err;
    if (!store_open(e->store_path, &e->st, &err))
        fail_msg("the DuckDB file does not open again: %s", err.msg);
    e->con = tl_store_connect(e->st);
}

/* The batch does not fit; the failure record does. */
static void test_commit_fails_record_saved(void **state)
{
    (void)state;
    tl_env e;
    open_source(&e, "saved");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "x", false, &r);
    add_rows(e.pg, FIRST_ROWS + 1, FIRST_ROWS + BATCH_ROWS);

    ds_error err = sync_limited(&e, wal_size(e.store_path) + 64 * 1024);
    json_t *s = tl_sync_status(e.st, &e.cfg, "x");
    assert_string_equal(tl_json_str(s, "state"), "error");
    assert_string_equal(tl_json_str(s, "error"), err.msg);
    assert_null(json_object_get(s, "status_save_error"));
    assert_int_equal(json_integer_value(json_object_get(s, "rows")), FIRST_ROWS);
    assert_true(json_is_null(json_object_get(json_object_get(s, "watermarks"), "x_data")));
    json_decref(s);
    duckdb_connection con = tl_store_connect(e.st);
    assert_rows(con, FIRST_ROWS);
    assert_metadata(con, "", "error", FIRST_ROWS);
    duckdb_disconnect(&con);

    /* Watermark cleared: the next sync is full, and writes one clean row. */
    tl_sync_ok(e.st, &e.cfg, "x", false, &r);
    assert_false(r.incremental);
    assert_int_equal(r.rows, FIRST_ROWS + BATCH_ROWS);
    con = tl_store_connect(e.st);
    assert_rows(con, FIRST_ROWS + BATCH_ROWS);
    assert_metadata(con, "2100", "ready", FIRST_ROWS + BATCH_ROWS);
    duckdb_disconnect(&con);

    reopen(&e);
    assert_rows(e.con, FIRST_ROWS + BATCH_ROWS);
    assert_metadata(e.con, "2100", "ready", FIRST_ROWS + BATCH_ROWS);
    tl_env_close(&e);
}

/* Neither the batch nor the failure record fits: the file keeps the last
 * commit (data, watermark and ready status agree), the status served says
 * error from memory, and the next sync continues from the file's state. */
static void test_failure_not_saved(void **state)
{
    (void)state;
    tl_env e;
    open_source(&e, "unsaved");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "x", false, &r);
    add_rows(e.pg, FIRST_ROWS + 1, FIRST_ROWS + BATCH_ROWS);

    ds_error err = sync_limited(&e, wal_size(e.store_path));
    json_t *s = tl_sync_status(e.st, &e.cfg, "x");
    assert_string_equal(tl_json_str(s, "state"), "error");
    assert_string_equal(tl_json_str(s, "error"), err.msg);
    assert_non_null(tl_json_str(s, "last_error"));
    tl_assert_contains(tl_json_str(s, "status_save_error"), "Could not write file");
    assert_int_equal(json_integer_value(json_object_get(s, "rows")), FIRST_ROWS);
    json_decref(s);
    duckdb_connection con = tl_store_connect(e.st);
    assert_rows(con, FIRST_ROWS);
    assert_metadata(con, "100", "ready", FIRST_ROWS);
    duckdb_disconnect(&con);

    /* The file's state is consistent: the next sync goes on from it. */
    tl_sync_ok(e.st, &e.cfg, "x", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows_added, BATCH_ROWS);
    s = tl_sync_status(e.st, &e.cfg, "x");
    assert_string_equal(tl_json_str(s, "state"), "ready");
    assert_true(json_is_null(json_object_get(s, "error")));
    assert_null(json_object_get(s, "status_save_error"));
    json_decref(s);
    con = tl_store_connect(e.st);
    assert_rows(con, FIRST_ROWS + BATCH_ROWS);
    assert_metadata(con, "2100", "ready", FIRST_ROWS + BATCH_ROWS);
    duckdb_disconnect(&con);

    reopen(&e);
    assert_rows(e.con, FIRST_ROWS + BATCH_ROWS);
    assert_metadata(e.con, "2100", "ready", FIRST_ROWS + BATCH_ROWS);
    tl_env_close(&e);
}

/* Several failed commits in a row, each limit a little higher, then a
 * sync with room: nothing of the failed ones leaks into the file. */
static void test_repeated_failures(void **state)
{
    (void)state;
    tl_env e;
    open_source(&e, "repeated");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "x", false, &r);
    add_rows(e.pg, FIRST_ROWS + 1, FIRST_ROWS + BATCH_ROWS);
    for (rlim_t extra = 0; extra <= 256 * 1024; extra += 32 * 1024)
        sync_limited(&e, wal_size(e.store_path) + extra);
    json_t *s = tl_sync_status(e.st, &e.cfg, "x");
    assert_string_equal(tl_json_str(s, "state"), "error");
    json_decref(s);
    tl_sync_ok(e.st, &e.cfg, "x", false, &r);
    assert_int_equal(r.rows, FIRST_ROWS + BATCH_ROWS);
    duckdb_connection con = tl_store_connect(e.st);
    assert_rows(con, FIRST_ROWS + BATCH_ROWS);
    assert_metadata(con, "2100", "ready", FIRST_ROWS + BATCH_ROWS);
    duckdb_disconnect(&con);
    reopen(&e);
    assert_rows(e.con, FIRST_ROWS + BATCH_ROWS);
    assert_metadata(e.con, "2100", "ready", FIRST_ROWS + BATCH_ROWS);
    tl_env_close(&e);
}

/* Bytes at offset 8 of the file (DuckDB's magic "DUCK") swapped for others
 * in place: the same inode, no longer a DuckDB file. Returns the old ones. */
static void swap_magic(const char *path, const char *put, char *old)
{
    FILE *f = fopen(path, "r+b");
    if (f == NULL || fseek(f, 8, SEEK_SET) != 0 || fread(old, 1, 4, f) != 4 || fseek(f, 8, SEEK_SET) != 0 ||
        fwrite(put, 1, 4, f) != 4)
        fail_msg("cannot rewrite the header of %s", path);
    fclose(f);
}

/* The file does not open again after a failure (its header damaged while
 * the store was to be reopened): the store stays closed, /health would say
 * "closed", the sync fails with the reason and the status cannot be read;
 * once the file is whole again the next sync reopens it and goes on. */
static void test_reopen_fails_then_recovers(void **state)
{
    (void)state;
    tl_env e;
    open_source(&e, "reopen");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "x", false, &r);
    add_rows(e.pg, FIRST_ROWS + 1, FIRST_ROWS + BATCH_ROWS);
    /* Nothing fits: the store is left to be reopened by the next sync. */
    sync_limited(&e, wal_size(e.store_path));
    duckdb_disconnect(&e.con);

    char magic[4];
    swap_magic(e.store_path, "XXXX", magic);
    assert_memory_equal(magic, "DUCK", 4);
    sync_options opt = {0};
    ds_error err;
    assert_false(sync_source(e.st, &e.cfg, tl_source(&e.cfg, "x"), &opt, &r, &err));
    tl_assert_contains(err.msg, "x: cannot open DuckDB file");
    const char *health;
    ds_error herr;
    assert_false(store_health(e.st, &health, &herr));
    assert_string_equal(health, "closed");
    tl_assert_contains(herr.msg, "is not open (reopening it failed: ");
    tl_assert_contains(herr.msg, "restart duckstore");
    json_t *s = sync_status_json(e.st, tl_source(&e.cfg, "x"), &herr);
    assert_null(s);
    tl_assert_contains(herr.msg, "is not open");

    char damaged[4];
    swap_magic(e.store_path, magic, damaged);
    tl_sync_ok(e.st, &e.cfg, "x", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows, FIRST_ROWS + BATCH_ROWS);
    assert_true(store_health(e.st, &health, &herr));
    assert_string_equal(health, "open");
    e.con = tl_store_connect(e.st);
    assert_rows(e.con, FIRST_ROWS + BATCH_ROWS);
    assert_metadata(e.con, "2100", "ready", FIRST_ROWS + BATCH_ROWS);
    tl_env_close(&e);
}

/* `duckstore serve` whose file cannot take the failure record: the status
 * endpoint and /metrics say error (not ready), the log says the failure
 * could not be recorded, and the next sync with room is saved. */
static void test_server_failure_not_saved(void **state)
{
    (void)state;
    char *dir = tl_mkdtemp();
    const char *db = tl_keepf("%s/full.duckdb", dir), *log = tl_keepf("%s/server.log", dir);
    char *config = tl_conf_dir(dir, "config", tl_keepf("  path: %s\n  sync_mode: manual\n", db));
    PGconn *admin = tl_pg_connect(g_conninfo);
    tl_pg_exec(admin,
               "CREATE SCHEMA served; CREATE TABLE served.t (id bigint PRIMARY KEY, payload text NOT NULL)");
    tl_pg_exec(admin, "SET search_path = served");
    add_rows(admin, 1, FIRST_ROWS);
    tl_conf_source(config, "x",
                   "  url: \"%s options='-c search_path=served'\"\n  query: SELECT id, payload FROM t\n"
                   "  incremental_column: id\n",
                   g_conninfo);
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    tl_trigger(&srv, "x", false);
    json_decref(tl_server_wait_state(&srv, "x_data", "ready", 60));
    add_rows(admin, FIRST_ROWS + 1, FIRST_ROWS + BATCH_ROWS);

    /* The log is emptied first so that it stays below the limit too. */
    tl_assert_clean_log(log);
    assert_int_equal(truncate(log, 0), 0);
    /* The first sync's WAL is there (no checkpoint yet): the limit at its
     * size leaves room for neither the batch nor the record. */
    if (wal_size(db) < 8192)
        fail_msg("expected the first sync's WAL beside %s, found %llu bytes", db,
                 (unsigned long long)wal_size(db));
    file_limit(srv.pid, wal_size(db));
    tl_trigger(&srv, "x", false);
    json_t *ds = tl_server_wait_state(&srv, "x_data", "error", 60);
    file_limit(srv.pid, RLIM_INFINITY);
    tl_assert_contains(tl_json_str(ds, "error"), "Could not write file");
    tl_assert_contains(tl_json_str(ds, "status_save_error"), "Could not write file");
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), FIRST_ROWS);
    json_decref(ds);
    char *metrics = tl_server_metrics(&srv);
    assert_int_equal(tl_metric(metrics, "duckstore_source_state{source=\"x\",state=\"error\"}"), 1);
    assert_int_equal(tl_metric(metrics, "duckstore_source_state{source=\"x\",state=\"ready\"}"), 0);
    assert_int_equal(tl_metric(metrics, "duckstore_syncs_total{source=\"x\",result=\"error\"}"), 1);
    free(metrics);
    char *text = tl_read_file(log);
    tl_assert_contains(text, "x: cannot record the failed sync");
    free(text);

    tl_trigger(&srv, "x", false);
    ds = tl_server_wait_state(&srv, "x_data", "ready", 60);
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), FIRST_ROWS + BATCH_ROWS);
    assert_true(json_is_null(json_object_get(ds, "error")));
    assert_null(json_object_get(ds, "status_save_error"));
    json_decref(ds);
    metrics = tl_server_metrics(&srv);
    assert_int_equal(tl_metric(metrics, "duckstore_source_state{source=\"x\",state=\"ready\"}"), 1);
    free(metrics);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(log);

    duckdb_database ddb;
    duckdb_connection con;
    tl_duck_open_ro(db, &ddb, &con);
    assert_rows(con, FIRST_ROWS + BATCH_ROWS);
    assert_metadata(con, "2100", "ready", FIRST_ROWS + BATCH_ROWS);
    tl_duck_close(&ddb, &con);
    PQfinish(admin);
    free(config);
    tl_rmtree(dir);
    free(dir);
}

static int test_teardown(void **state)
{
    (void)state;
    file_limit(0, RLIM_INFINITY);
    tl_free_kept();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_commit_fails_record_saved, test_teardown),
        cmocka_unit_test_teardown(test_failure_not_saved, test_teardown),
        cmocka_unit_test_teardown(test_repeated_failures, test_teardown),
        cmocka_unit_test_teardown(test_reopen_fails_then_recovers, test_teardown),
        cmocka_unit_test_teardown(test_server_failure_not_saved, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
