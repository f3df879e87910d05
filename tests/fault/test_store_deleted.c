/* The DuckDB file deleted (or replaced) while `duckstore serve` runs: DuckDB
 * keeps writing to the open file, which no path names any more, so
 * everything synced from then on would be lost at exit. duckstore notices
 * (the path no longer names the open file's device and inode): /health
 * answers 503 naming the file and the fix, the status document says it,
 * syncs fail with that error instead of reporting ready, the log says it
 * once, and a restart recreates the file with a full sync. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"
#include "tl_fault.h"
#include "tl_http.h"

static char *g_conninfo, *g_dir;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("fault_store_deleted"));
    PGconn *pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(pg, "CREATE TABLE t (id bigint PRIMARY KEY, payload text NOT NULL);"
                   "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g");
    PQfinish(pg);
    g_dir = tl_mkdtemp();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tl_server_kill_all();
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_conninfo);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    tl_server_kill_all();
    tl_free_kept();
    return 0;
}

/* A config dir g_dir/name for source x over t, its DuckDB file and log. */
typedef struct world {
    char *config;
    const char *db, *log;
} world;

static world make_world(const char *name)
{
    world w;
    w.db = tl_keepf("%s/%s.duckdb", g_dir, name);
    w.log = tl_keepf("%s/%s.log", g_dir, name);
    w.config = tl_conf_dir(g_dir, name, tl_keepf("  path: %s\n  sync_mode: manual\n", w.db));
    tl_conf_source(w.config, "x",
                   "  url: \"%s\"\n  query: SELECT id, payload FROM t\n  incremental_column: id\n",
                   g_conninfo);
    return w;
}

static void sync_ready(tl_server *srv, int64_t rows)
{
    tl_trigger(srv, "x", false);
    json_t *ds = tl_server_wait_state(srv, "x_data", "ready", 60);
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), rows);
    json_decref(ds);
}

/* /health: 503 with store "lost" and an error naming the file, what
 * happened and the fix. */
static void assert_health_lost(const tl_server *srv, const world *w, const char *what)
{
    json_t *h = tl_http_json(srv->port, "GET", "/health", NULL, 503, NULL);
    assert_string_equal(tl_json_str(h, "status"), "error");
    assert_string_equal(tl_json_str(h, "store"), "lost");
    assert_string_equal(tl_json_str(h, "path"), w->db);
    tl_assert_contains(tl_json_str(h, "error"), w->db);
    tl_assert_contains(tl_json_str(h, "error"), what);
    tl_assert_contains(tl_json_str(h, "error"), "restart duckstore to recreate the file");
    json_decref(h);
}

/* A sync after the loss fails with the loss as its error. */
static void assert_sync_refused(tl_server *srv, const char *what)
{
    tl_trigger(srv, "x", false);
    json_t *ds = tl_server_wait_state(srv, "x_data", "error", 60);
    tl_assert_contains(tl_json_str(ds, "error"), what);
    tl_assert_contains(tl_json_str(ds, "error"), "would be lost at exit");
    json_decref(ds);
}

static void test_file_deleted(void **state)
{
    (void)state;
    world w = make_world("deleted");
    tl_server srv;
    tl_server_start(&srv, w.config, w.log, NULL);
    sync_ready(&srv, 500);
    json_decref(tl_http_json(srv.port, "GET", "/health", NULL, 200, NULL));

    assert_int_equal(unlink(w.db), 0);
    unlink(tl_keepf("%s.wal", w.db)); /* there may be none */
    assert_health_lost(&srv, &w, "was deleted");
    json_t *status = tl_http_json(srv.port, "GET", "/api/store/status", NULL, 200, NULL);
    tl_assert_contains(tl_json_str(status, "store_error"), "was deleted");
    json_decref(status);

    /* Refused, twice, with one log line of its own; the scheduler's
     * metrics say error. */
    assert_sync_refused(&srv, "was deleted");
    assert_sync_refused(&srv, "was deleted");
    char *metrics = tl_server_metrics(&srv);
    assert_int_equal(tl_metric(metrics, "duckstore_source_state{source=\"x\",state=\"error\"}"), 1);
    assert_int_equal(tl_metric(metrics, "duckstore_syncs_total{source=\"x\",result=\"error\"}"), 2);
    free(metrics);
    char *log = tl_read_file(w.log);
    assert_int_equal(tl_count(log, "ERROR the DuckDB file "), 1);
    free(log);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(w.log);
    struct stat sb;
    assert_int_not_equal(stat(w.db, &sb), 0); /* nothing half-made at the path */

    /* A restart recreates the file; a full sync fills it. */
    tl_server_start(&srv, w.config, w.log, NULL);
    json_decref(tl_http_json(srv.port, "GET", "/health", NULL, 200, NULL));
    tl_trigger(&srv, "x", false);
    json_t *ds = tl_server_wait_state(&srv, "x_data", "ready", 60);
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), 500);
    assert_string_equal(tl_json_str(ds, "sync_type"), "full");
    json_decref(ds);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    duckdb_database db;
    duckdb_connection con;
    tl_duck_open_ro(w.db, &db, &con);
    assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM x_data"), 500);
    tl_duck_close(&db, &con);
    free(w.config);
}

/* Another file moved to the path (a restore copied over it): the open
 * file is no longer the one there. */
static void test_file_replaced(void **state)
{
    (void)state;
    world w = make_world("replaced");
    tl_server srv;
    tl_server_start(&srv, w.config, w.log, NULL);
    sync_ready(&srv, 500);
    char *out = NULL;
    assert_int_equal(tl_run(&out, "cp '%s' '%s.copy' && mv '%s.copy' '%s'", w.db, w.db, w.db, w.db), 0);
    free(out);
    assert_health_lost(&srv, &w, "was replaced by another file");
    assert_sync_refused(&srv, "was replaced by another file");
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(w.log);
    free(w.config);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_file_deleted, test_teardown),
        cmocka_unit_test_teardown(test_file_replaced, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
