/* Readers' memory (read_memory_limit): at the defaults, 10 dashboard
 * aggregates at once through PostgreSQL's protocol all answer, over a split
 * source whose join needs more working memory in all than the 64MB
 * memory_limit the syncs get; DuckDB's memory_limit while `serve` runs is
 * memory_limit plus read_memory_limit, and a key given in duckdb.yaml sets
 * it. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "tl_http.h"

#define TRACES 250000
#define METRICS 4
#define CLIENTS 10

/* The dashboard aggregate of bench/read.sh over the source's view. */
#define AGGREGATE                                                                                            \
    "SELECT metric_name, date_trunc('hour', timestamp) AS h, count(*) AS n, avg(metric_score) AS avg_score " \
    "FROM llm_data GROUP BY 1, 2 ORDER BY 1, 2"

static char *g_conninfo, *g_dir;
static PGconn *g_pg;

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("readmem"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_llm_create(g_pg);
    tl_llm_add(g_pg, 1, TRACES, METRICS);
    g_dir = tl_mkdtemp();
    return 0;
}

static int teardown_group(void **state)
{
    (void)state;
    tl_server_kill_all();
    PQfinish(g_pg);
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_conninfo);
    tl_free_kept();
    return 0;
}

/* A served config in DIR/name with the llm source; extra: more duckdb:
 * lines. Returns the protocol's port once the source is synced. */
static uint16_t serve(tl_server *srv, const char *name, const char *extra)
{
    return tl_serve_for_readers(
        srv, tl_keepf("%s/%s", g_dir, name), tl_keepf("  max_sync_rows: 0\n%s", extra), "llm_db.yaml",
        tl_keepf("llm_db:\n  url: \"%s\"\n" TL_LLM_SOURCE_YAML, g_conninfo), "llm_data", 300);
}

static char *scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    char *v = tl_keep(strdup(PQgetvalue(r, 0, 0)));
    PQclear(r);
    return v;
}

static void test_ten_aggregates_at_the_defaults(void **state)
{
    (void)state;
    tl_server srv;
    uint16_t port = serve(&srv, "defaults", "");
    PGconn *c[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        c[i] = tl_reader_connect(port);
    /* The answer every client must get, from PostgreSQL over the same rows. */
    int64_t groups =
        tl_pg_int(g_pg, "SELECT count(*) FROM (SELECT metric_name, date_trunc('hour', t.timestamp) "
                        "FROM llm_metric_results r LEFT JOIN llm_traces t USING (trace_id) "
                        "GROUP BY 1, 2) g");
    for (int i = 0; i < CLIENTS; i++)
        if (!PQsendQuery(c[i], AGGREGATE))
            fail_msg("send: %s", PQerrorMessage(c[i]));
    int answered = 0;
    char errors[2048] = "";
    for (int i = 0; i < CLIENTS; i++) {
        PGresult *r;
        while ((r = PQgetResult(c[i])) != NULL) {
            if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == groups) {
                answered++;
            } else if (strlen(errors) < sizeof errors / 2) {
                snprintf(
                    errors + strlen(errors), sizeof errors - strlen(errors), "client %d: %s %s (%d rows)\n",
                    i, PQresultErrorField(r, PG_DIAG_SQLSTATE) ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : "",
                    PQresultErrorMessage(r), PQntuples(r));
            }
            PQclear(r);
        }
    }
    if (answered != CLIENTS)
        fail_msg("%d of %d concurrent aggregates answered:\n%s", answered, CLIENTS, errors);
    /* memory_limit 64MB for the syncs plus 512MB for readers */
    assert_string_equal(scalar(c[0], "SELECT value FROM duckdb_settings() WHERE name = 'memory_limit'"),
                        "549.3 MiB");
    for (int i = 0; i < CLIENTS; i++)
        PQfinish(c[i]);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(srv.log_path);
    char *log = tl_keep(tl_read_file(srv.log_path));
    tl_assert_contains(log, "DuckDB memory_limit 576MB: memory_limit 64MB for syncs plus read_memory_limit "
                            "512MB for readers");
}

/* read_memory_limit in duckdb.yaml sets the readers' part. */
static void test_read_memory_limit_key(void **state)
{
    (void)state;
    tl_server srv;
    uint16_t port = serve(&srv, "key", "  memory_limit: 100MB\n  read_memory_limit: 1GB\n");
    PGconn *c = tl_reader_connect(port);
    assert_string_equal(scalar(c, "SELECT value FROM duckdb_settings() WHERE name = 'memory_limit'"),
                        "1.0 GiB");
    PQfinish(c);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(srv.log_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ten_aggregates_at_the_defaults),
        cmocka_unit_test(test_read_memory_limit_key),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
