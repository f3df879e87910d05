/* Source schema changes between syncs, under the server: a column added,
 * dropped, retyped, in one query of a split source. Each sync is asked for
 * over HTTP without ?full=true; the changed table is rebuilt in full (its
 * status mode "full", a WARN line naming it), the other keeps appending, and
 * the DuckDB tables and the view show the new columns and types with every
 * row exactly once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "tl_fault.h"
#include "tl_http.h"

static char *g_dir, *g_conninfo, *g_config, *g_log, *g_db;
static PGconn *g_pg;
static int g_traces;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("fault_schema"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg, "CREATE TABLE ds (dataset_id bigint PRIMARY KEY, id bigint NOT NULL, a int, b text);"
                     "CREATE TABLE res (dataset_id bigint NOT NULL, id bigint PRIMARY KEY, score int)");
    g_dir = tl_mkdtemp();
    if (asprintf(&g_log, "%s/server.log", g_dir) < 0 || asprintf(&g_db, "%s/schema.duckdb", g_dir) < 0)
        fail_msg("out of memory");
    char lines[700];
    snprintf(lines, sizeof lines, "  path: %s\n  sync_mode: manual\n", g_db);
    g_config = tl_conf_dir(g_dir, "config", lines);
    /* SELECT *: the columns follow the tables. */
    tl_conf_source(g_config, "schema",
                   "  url: \"%s\"\n  dataset_query: SELECT * FROM ds\n  results_query: SELECT * FROM res\n"
                   "  incremental_column: id\n",
                   g_conninfo);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tl_server_kill_all();
    PQfinish(g_pg);
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_conninfo);
    free(g_config);
    free(g_log);
    free(g_db);
    return 0;
}

/* n more traces (ids continue), two results each; the dataset columns are
 * filled by the INSERT's defaults except dataset_id and id. */
static void add_traces(int n)
{
    tl_pg_exec(g_pg,
               "INSERT INTO ds (dataset_id, id) SELECT g, g FROM generate_series(%d, %d) g;"
               "INSERT INTO res SELECT (g + 1) / 2, g, g %% 10 FROM generate_series(%d, %d) g",
               g_traces + 1, g_traces + n, 2 * g_traces + 1, 2 * (g_traces + n));
    g_traces += n;
}

/* One sync over HTTP (no ?full=true): asserts the mode of each table, the
 * rows and watermarks in the status, then the columns and rows of the
 * DuckDB file once the server stopped. */
static void sync_and_check(const char *dataset_mode, const char *results_mode, const char *dataset_columns,
                           const char *results_columns)
{
    tl_server srv;
    tl_server_start(&srv, g_config, g_log, NULL);
    tl_trigger(&srv, "schema", false);
    json_t *ds = tl_server_wait_state(&srv, "schema_data", "ready", 60);
    json_t *tables = json_object_get(ds, "tables");
    assert_string_equal(json_string_value(json_object_get(json_object_get(tables, "schema_dataset"), "mode")),
                        dataset_mode);
    assert_string_equal(json_string_value(json_object_get(json_object_get(tables, "schema_results"), "mode")),
                        results_mode);
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), 2 * g_traces);
    char wm[32];
    snprintf(wm, sizeof wm, "%d", g_traces);
    json_t *wms = json_object_get(ds, "watermarks");
    assert_string_equal(json_string_value(json_object_get(wms, "schema_dataset")), wm);
    snprintf(wm, sizeof wm, "%d", 2 * g_traces);
    assert_string_equal(json_string_value(json_object_get(wms, "schema_results")), wm);
    json_decref(ds);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(g_log);

    duckdb_database db;
    duckdb_connection con;
    tl_duck_open_ro(g_db, &db, &con);
    static const char *const cols_sql = "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY "
                                        "column_index) FROM duckdb_columns() "
                                        "WHERE table_name = '%s'";
    char *cols = tl_duck_scalar(con, cols_sql, "schema_dataset");
    assert_string_equal(cols, dataset_columns);
    free(cols);
    cols = tl_duck_scalar(con, cols_sql, "schema_results");
    assert_string_equal(cols, results_columns);
    free(cols);
    int64_t v[4];
    tl_duck_ints(con, v, 4,
                 "SELECT count(*), count(DISTINCT id), max(id), count(*) FILTER (WHERE dataset_id = id) "
                 "FROM schema_dataset");
    assert_int_equal(v[0], g_traces);
    assert_int_equal(v[1], g_traces);
    assert_int_equal(v[2], g_traces);
    assert_int_equal(v[3], g_traces);
    tl_duck_ints(con, v, 3, "SELECT count(*), count(DISTINCT id), max(id) FROM schema_results");
    assert_int_equal(v[0], 2 * g_traces);
    assert_int_equal(v[1], 2 * g_traces);
    assert_int_equal(v[2], 2 * g_traces);
    /* Every result row joins its trace through the view (which shows the
     * dataset's id as dataset_dataset_id). */
    assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM schema_data WHERE dataset_dataset_id IS NULL"),
                     0);
    tl_duck_close(&db, &con);
}

static void test_columns_added_dropped_retyped(void **state)
{
    (void)state;
    add_traces(1000);
    sync_and_check("full", "full", "dataset_id BIGINT, id BIGINT, a INTEGER, b VARCHAR",
                   "dataset_id BIGINT, id BIGINT, score INTEGER");
    add_traces(100);
    sync_and_check("incremental", "incremental", "dataset_id BIGINT, id BIGINT, a INTEGER, b VARCHAR",
                   "dataset_id BIGINT, id BIGINT, score INTEGER");

    /* Added: the new column's values, old rows included, are visible. */
    tl_pg_exec(g_pg, "ALTER TABLE ds ADD COLUMN c text DEFAULT 'new'");
    add_traces(100);
    sync_and_check("full", "incremental", "dataset_id BIGINT, id BIGINT, a INTEGER, b VARCHAR, c VARCHAR",
                   "dataset_id BIGINT, id BIGINT, score INTEGER");
    char *log = tl_read_file(g_log);
    tl_assert_contains(log, "WARN  schema: the columns of dataset_query");
    tl_assert_contains(log, "rebuilding schema_dataset in full");
    free(log);

    /* Dropped. */
    tl_pg_exec(g_pg, "ALTER TABLE ds DROP COLUMN b");
    add_traces(100);
    sync_and_check("full", "incremental", "dataset_id BIGINT, id BIGINT, a INTEGER, c VARCHAR",
                   "dataset_id BIGINT, id BIGINT, score INTEGER");

    /* Retyped, in the results query this time. */
    tl_pg_exec(g_pg, "ALTER TABLE res ALTER COLUMN score TYPE numeric(12,3) USING score + 0.5");
    add_traces(100);
    sync_and_check("incremental", "full", "dataset_id BIGINT, id BIGINT, a INTEGER, c VARCHAR",
                   "dataset_id BIGINT, id BIGINT, score DECIMAL(12,3)");

    /* The values behind the changes are exact. */
    duckdb_database db;
    duckdb_connection con;
    tl_duck_open_ro(g_db, &db, &con);
    assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM schema_dataset WHERE c = 'new'"), g_traces);
    assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM schema_data WHERE c = 'new'"), 2 * g_traces);
    char *sum = tl_duck_scalar(con, "SELECT sum(score)::VARCHAR FROM schema_results");
    char *want = tl_pg_scalar(g_pg, "SELECT sum(score)::text FROM res");
    assert_string_equal(sum, want);
    free(sum);
    free(want);
    tl_duck_close(&db, &con);

    /* And quiet again: both tables append. */
    add_traces(10);
    sync_and_check("incremental", "incremental", "dataset_id BIGINT, id BIGINT, a INTEGER, c VARCHAR",
                   "dataset_id BIGINT, id BIGINT, score DECIMAL(12,3)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_columns_added_dropped_retyped),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
