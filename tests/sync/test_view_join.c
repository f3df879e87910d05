/* The join of a split source's <name>_data view (`join:`): the rows of a
 * left and an inner join, on dataset_id and on two columns, as PostgreSQL
 * computes them from the same queries; the reported row count follows the
 * view when only its join changes; a join column a query lacks is a config
 * error that leaves the synced data readable; and AXIS's metadata and data
 * endpoints count what the view holds. */
#include "testlib.h"
#include "tl_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DATASET_QUERY "SELECT trace_id AS dataset_id, run, prompt AS query, created_at FROM traces"
#define RESULTS_QUERY                                                                                        \
    "SELECT trace_id AS dataset_id, run, metric_name, score AS metric_score, created_at FROM results"

/* Three traces (t1 in two runs, t2 in one); results of t1/1, t1/2, t2/2
 * (no trace of that run) and t3 (no trace at all). */
static void create_tables(PGconn *pg)
{
    tl_pg_exec(pg, "CREATE TABLE traces (trace_id text, run int, prompt text, "
                   "created_at timestamptz NOT NULL DEFAULT clock_timestamp());"
                   "CREATE TABLE results (trace_id text, run int, metric_name text, score float8, "
                   "created_at timestamptz NOT NULL DEFAULT clock_timestamp());"
                   "INSERT INTO traces (trace_id, run, prompt) VALUES ('t1', 1, 'p1 run 1'), "
                   "('t1', 2, 'p1 run 2'), ('t2', 1, 'p2 run 1');"
                   "INSERT INTO results (trace_id, run, metric_name, score) VALUES ('t1', 1, 'm', 0.1), "
                   "('t1', 2, 'm', 0.2), ('t2', 2, 'm', 0.3), ('t3', 1, 'm', 0.4)");
}

/* The source's YAML body (after its url), with join lines. */
static void write_source(tl_env *e, const char *join_yaml)
{
    tl_env_source(e, "mon", "  dataset_query: %s\n  results_query: %s\n  incremental_column: created_at\n%s",
                  DATASET_QUERY, RESULTS_QUERY, join_yaml);
}

/* The view's rows, as PostgreSQL joins the same queries: on is the ON
 * clause, kind LEFT or INNER; dataset columns but the join's follow the
 * results' (run of the dataset renamed dataset_run when not joined on). */
static char *pg_view_checksum(tl_env *e, const char *kind, const char *on, bool run_joined)
{
    char *relation =
        tl_keepf("(SELECT r.*, %s d.query, d.created_at AS dataset_created_at FROM (" RESULTS_QUERY
                 ") AS r %s JOIN (" DATASET_QUERY ") AS d ON %s) AS v",
                 run_joined ? "" : "d.run AS dataset_run,", kind, on);
    const char *spec = run_joined ? "dataset_id,run,metric_name,metric_score,created_at:ts,query,"
                                    "dataset_created_at:ts"
                                  : "dataset_id,run,metric_name,metric_score,created_at:ts,dataset_run,query,"
                                    "dataset_created_at:ts";
    return tl_keep(tl_pg_checksum(e->pg, relation, spec));
}

static char *duck_view_checksum(tl_env *e, bool run_joined)
{
    const char *spec = run_joined ? "dataset_id,run,metric_name,metric_score,created_at:ts,query,"
                                    "dataset_created_at:ts"
                                  : "dataset_id,run,metric_name,metric_score,created_at:ts,dataset_run,query,"
                                    "dataset_created_at:ts";
    return tl_keep(tl_duck_checksum(e->con, "mon_data", spec));
}

typedef struct join_case {
    const char *yaml; /* the join lines ("" = none) */
    const char *kind; /* LEFT / INNER */
    const char *on;   /* ON clause of the same join in PostgreSQL */
    bool run_joined;  /* run is a join column */
    int64_t rows;     /* the view's row count */
} join_case;

static const join_case CASES[] = {
    {"", "LEFT", "r.dataset_id = d.dataset_id", false, 6},
    {"  join:\n    type: inner\n", "INNER", "r.dataset_id = d.dataset_id", false, 5},
    {"  join: {type: inner, columns: [dataset_id, run]}\n", "INNER",
     "r.dataset_id = d.dataset_id AND r.run = d.run", true, 2},
    {"  join:\n    columns: [dataset_id, run]\n", "LEFT", "r.dataset_id = d.dataset_id AND r.run = d.run",
     true, 4},
    {"  join: {type: left, columns: dataset_id}\n", "LEFT", "r.dataset_id = d.dataset_id", false, 6},
};
#define NCASES (sizeof CASES / sizeof CASES[0])

/* Each join, reached by a full sync and again by an incremental sync that
 * reads no row (only the config changed): the view's rows are
 * PostgreSQL's, and the reported rows are the view's count. */
static void test_view_rows_per_join(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, tl_pg_fresh_db("view_join"), "vj", "");
    create_tables(e.pg);
    for (size_t i = 0; i < NCASES; i++) {
        for (int incremental = 0; incremental < 2; incremental++) {
            const join_case *c = &CASES[incremental ? NCASES - 1 - i : i];
            write_source(&e, c->yaml);
            sync_report r;
            tl_sync_ok(e.st, &e.cfg, "mon", !incremental, &r);
            assert_int_equal(r.incremental, incremental == 1);
            if (strcmp(duck_view_checksum(&e, c->run_joined),
                       pg_view_checksum(&e, c->kind, c->on, c->run_joined)) != 0)
                fail_msg("join \"%s\": the view's rows differ from PostgreSQL's", c->yaml);
            assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM mon_data"), c->rows);
            if (r.rows != c->rows)
                fail_msg("join \"%s\" (%s sync): reported %lld rows, the view has %lld", c->yaml,
                         incremental ? "incremental" : "full", (long long)r.rows, (long long)c->rows);
            json_t *st = tl_sync_status(e.st, &e.cfg, "mon");
            assert_int_equal(json_integer_value(json_object_get(st, "rows")), c->rows);
            json_decref(st);
        }
    }
    tl_env_close(&e);
}

/* A join column the results query does not select fails the sync as a
 * config error naming the file, the line of join and the columns, before
 * anything is stored: the view still reads what the last sync stored. */
static void test_missing_join_column(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, tl_pg_fresh_db("view_join_missing"), "vj", "");
    create_tables(e.pg);
    write_source(&e, "");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "mon", true, &r);
    char *before = duck_view_checksum(&e, false);
    tl_pg_exec(e.pg, "INSERT INTO results (trace_id, run, metric_name, score) VALUES ('t1', 1, 'n', 1)");

    tl_env_source(&e, "mon",
                  "  dataset_query: %s\n  results_query: SELECT trace_id AS dataset_id, metric_name, "
                  "created_at FROM results\n  incremental_column: created_at\n  join:\n    type: inner\n"
                  "    columns: [dataset_id, run]\n",
                  DATASET_QUERY);
    const cfg_source *src = tl_source(&e.cfg, "mon");
    sync_options opt = {.force_full = true};
    ds_error err;
    ds_error_clear(&err);
    assert_false(sync_source(e.st, &e.cfg, src, &opt, &r, &err));
    assert_int_equal(err.code, DS_ERR_CONFIG);
    char *want = tl_keepf("%s/mon_db.yaml:6: join column \"run\" is not a column of results_query (columns: "
                          "dataset_id, metric_name, created_at); both queries of a split source must select "
                          "each column of join.columns: select it or fix join.columns",
                          e.dir);
    tl_assert_contains(err.msg, want);
    assert_string_equal(duck_view_checksum(&e, false), before);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM mon_data"), 6);
    tl_env_close(&e);
}

/* The integer at doc[key] (or doc[key][sub]) of a GET answer. */
/* A join column of two types DuckDB can only compare through a cast that
 * may fail (text and integer) fails the sync as a config error naming the
 * column and both types; the commit is rolled back, so the view reads
 * what the last sync stored and the watermarks stay. */
static void test_join_column_types_differ(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, tl_pg_fresh_db("view_join_types"), "vj", "");
    create_tables(e.pg);
    write_source(&e, "");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "mon", true, &r);
    char *before = duck_view_checksum(&e, false);
    char *watermark = tl_keep(
        tl_duck_scalar(e.con, "SELECT watermark FROM _duckstore.tables WHERE table_name = 'mon_results'"));
    assert_non_null(watermark);

    tl_env_source(
        &e, "mon",
        "  dataset_query: SELECT trace_id AS dataset_id, run::text AS run, prompt AS query, created_at "
        "FROM traces\n  results_query: %s\n  incremental_column: created_at\n"
        "  join: {columns: [dataset_id, run]}\n",
        RESULTS_QUERY);
    const cfg_source *src = tl_source(&e.cfg, "mon");
    sync_options opt = {.force_full = true};
    ds_error err;
    ds_error_clear(&err);
    assert_false(sync_source(e.st, &e.cfg, src, &opt, &r, &err));
    assert_int_equal(err.code, DS_ERR_CONFIG);
    tl_assert_contains(err.msg,
                       tl_keepf("%s/mon_db.yaml:6: join column \"run\" is VARCHAR in dataset_query but "
                                "INTEGER in results_query; the view joins on it: cast it in one query so "
                                "both return the same type",
                                e.dir));
    assert_string_equal(duck_view_checksum(&e, false), before);
    assert_string_equal(
        tl_keep(tl_duck_scalar(e.con,
                               "SELECT watermark FROM _duckstore.tables WHERE table_name = 'mon_results'")),
        watermark);
    tl_env_close(&e);
}

static void expect_count(const tl_server *srv, const char *target, const char *key, const char *sub,
                         int64_t want)
{
    json_t *doc = tl_http_json(srv->port, "GET", target, NULL, 200, NULL);
    assert_true(json_is_true(json_object_get(doc, "success")));
    json_t *v = json_object_get(doc, key);
    if (sub != NULL)
        v = json_object_get(v, sub);
    if (!json_is_integer(v) || json_integer_value(v) != want)
        fail_msg("%s: %s%s%s is not %lld", target, key, sub ? "." : "", sub ? sub : "", (long long)want);
    json_decref(doc);
}

/* The server's AXIS endpoints read the view: for an inner join on two
 * columns the metadata's row_count, the data's total and the rows of a
 * page are the view's two rows; the status agrees. */
static void test_endpoints_follow_the_view(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, tl_pg_fresh_db("view_join_api"), "vj", "");
    create_tables(e.pg);
    write_source(&e, CASES[2].yaml);
    /* The server opens the file itself. */
    duckdb_disconnect(&e.con);
    store_close(e.st);
    e.st = NULL;
    tl_env_store(&e, "  sync_mode: startup\n");
    char *log = tl_keepf("%s/server.log", e.dir);
    tl_server srv;
    tl_server_start(&srv, e.dir, log, NULL);
    json_t *ready = tl_server_wait_state(&srv, "mon_data", "ready", 60);
    assert_int_equal(json_integer_value(json_object_get(ready, "rows")), 2);
    json_decref(ready);
    expect_count(&srv, "/api/store/metadata/mon", "metadata", "row_count", 2);
    expect_count(&srv, "/api/store/data/mon?page_size=500", "total", NULL, 2);
    json_t *page = tl_http_json(srv.port, "GET",
                                "/api/store/data/mon?sort_by=run&sort_dir=asc&columns=dataset_id,run,query",
                                NULL, 200, NULL);
    char *rows = json_dumps(json_object_get(page, "data"), JSON_COMPACT);
    assert_string_equal(rows, "[{\"dataset_id\":\"t1\",\"run\":1,\"query\":\"p1 run 1\"},"
                              "{\"dataset_id\":\"t1\",\"run\":2,\"query\":\"p1 run 2\"}]");
    free(rows);
    json_decref(page);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_rows_per_join),
        cmocka_unit_test(test_missing_join_column),
        cmocka_unit_test(test_join_column_types_differ),
        cmocka_unit_test(test_endpoints_follow_the_view),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tl_free_kept();
    return rc;
}
