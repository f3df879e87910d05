/* The endpoints AXIS's dashboards read (GET /api/store/metadata/NAME and
 * GET /api/store/data/NAME) and the compatibility of the others with AXIS
 * clients, end to end against `duckstore serve` and the harness
 * PostgreSQL: exact JSON of metadata and pages (filters, search with % and
 * _, sort with a stable tie-breaker, column selection, 422 bodies), POST
 * /api/store/sync?full=true and AXIS's boolean spellings, "detail" in error
 * answers, last_sync vs last_attempt after a failure, CORS preflight and
 * allow-list, and the loud max_sync_rows truncation (log, status, CLI). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "server/axis.h"
#include "testlib.h"
#include "tl_http.h"

#define TOKEN "axis-t0ken"
#define ORIGIN "http://axis.example:3000"

static char *g_dir, *g_config, *g_log, *g_conninfo;
static PGconn *g_pg;

static int teardown_test(void **state)
{
    (void)state;
    tl_server_kill_all();
    return 0;
}

static char *path_in(const char *dir, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        fail_msg("out of memory");
    return p;
}

/* The runbook's split source: traces and their metric results, with a %,
 * an _ and mixed case in the prompts, a NULL environment, categories SCORE,
 * score, NULL and ANALYSIS, a NaN cost. */
static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("axisapi"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg, "CREATE TABLE llm_traces (trace_id text, ts timestamp, prompt text, completion text,"
                     " deployment_env text, service_name text, component_name text, response_time_ms float8);"
                     "INSERT INTO llm_traces VALUES"
                     " ('t1', '2026-02-13 10:00:00', '50%% off', 'yes', 'prod', 'svc_a', 'c1', 100),"
                     " ('t2', '2026-02-13 10:01:00', 'a_b c', 'no', 'prod', 'svc_a', 'c1', 200),"
                     " ('t3', '2026-02-13 10:02:00', 'plain text', 'ok', 'staging', 'svc_a', 'c1', 300),"
                     " ('t4', '2026-02-13 10:03:00', 'axb', 'fine', 'prod', 'svc_b', 'c1', 400),"
                     " ('t5', '2026-02-13 10:04:00', 'aXb 50 off', 'sure', 'dev', 'svc_b', 'c1', 500),"
                     " ('t6', '2026-02-13 10:05:00', NULL, NULL, NULL, 'svc_a', 'c1', NULL);"
                     "CREATE TABLE llm_metric_results (trace_id text, metric_name text, metric_value float8,"
                     " metric_category text, cost float8);"
                     "INSERT INTO llm_metric_results VALUES"
                     " ('t1', 'faithfulness', 0.9, 'SCORE', 0.25), ('t1', 'relevance', 0.4, NULL, 0.25),"
                     " ('t2', 'faithfulness', 0.5, 'score', 0.5), ('t2', 'relevance', 0.2, 'ANALYSIS', 0.5),"
                     " ('t3', 'faithfulness', 0.8, 'SCORE', 1), ('t3', 'relevance', 0.5, 'SCORE', 1),"
                     " ('t4', 'faithfulness', 0.1, NULL, 2), ('t5', 'faithfulness', 0.6, 'SCORE', 'NaN'),"
                     " ('t6', 'faithfulness', NULL, 'SCORE', 0);"
                     "CREATE TABLE flaky (id int);"
                     "INSERT INTO flaky VALUES (1), (2);");
    g_dir = tl_mkdtemp();
    g_config = path_in(g_dir, "config");
    g_log = path_in(g_dir, "server.log");
    mkdir(g_config, 0755);
    char *file = path_in(g_config, "duckdb.yaml");
    tl_write_filef(file,
                   "duckdb:\n  path: %s/store.duckdb\n  sync_mode: manual\n"
                   "  cors_origins: [\"" ORIGIN "\"]\n",
                   g_dir);
    free(file);
    file = path_in(g_config, "monitoring_db.yaml");
    tl_write_filef(file,
                   "monitoring_db:\n"
                   "  url: \"%s\"\n"
                   "  dataset_query: |\n"
                   "    SELECT trace_id AS dataset_id, ts AS timestamp, prompt AS query,\n"
                   "      completion AS actual_output, deployment_env AS environment,\n"
                   "      service_name AS source_name, component_name AS source_component,\n"
                   "      response_time_ms AS latency FROM llm_traces\n"
                   "  results_query: |\n"
                   "    SELECT trace_id AS dataset_id, metric_name, metric_value AS metric_score,\n"
                   "      metric_category, cost FROM llm_metric_results\n",
                   g_conninfo);
    free(file);
    /* 250 distinct kpi names: the metadata lists 200 and says so. */
    file = path_in(g_config, "wide_db.yaml");
    tl_write_filef(
        file,
        "wide_db:\n  url: \"%s\"\n"
        "  query: SELECT g AS id, 'k' || lpad(g::text, 3, '0') AS kpi_name FROM generate_series(1, "
        "250) g\n",
        g_conninfo);
    free(file);
    file = path_in(g_config, "flaky_db.yaml");
    tl_write_filef(file,
                   "flaky_db:\n  url: \"%s\"\n  query: SELECT id, timestamptz '2026-02-13 10:00:00+00' + id *"
                   " interval '1 hour' AS \"timestamp\" FROM flaky\n",
                   g_conninfo);
    free(file);
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
    free(g_conninfo);
    return 0;
}

/* A request with the token; asserts status, JSON and the exact body. */
static void expect_exact(const tl_server *srv, const char *method, const char *target, int status,
                         const char *body)
{
    char *raw = NULL;
    json_t *doc = tl_http_json(srv->port, method, target, TOKEN, status, &raw);
    if (strcmp(raw, body) != 0)
        fail_msg("%s %s:\n  expected %s\n  got      %s", method, target, body, raw);
    json_decref(doc);
    free(raw);
}

static json_t *get_json(const tl_server *srv, const char *target, int status)
{
    return tl_http_json(srv->port, "GET", target, TOKEN, status, NULL);
}

static void sync_ready(const tl_server *srv, const char *name)
{
    char target[128], dataset[128];
    snprintf(target, sizeof target, "/api/store/sync/%s", name);
    snprintf(dataset, sizeof dataset, "%s_data", name);
    json_decref(tl_http_json(srv->port, "POST", target, TOKEN, 202, NULL));
    json_decref(tl_server_wait_state(srv, dataset, "ready", 60));
}

static const char monitoring_metadata[] =
    "{\"success\":true,\"dataset\":\"monitoring_data\",\"metadata\":{\"row_count\":9,\"columns\":["
    "{\"column_name\":\"dataset_id\",\"column_type\":\"VARCHAR\"},"
    "{\"column_name\":\"metric_name\",\"column_type\":\"VARCHAR\"},"
    "{\"column_name\":\"metric_score\",\"column_type\":\"DOUBLE\"},"
    "{\"column_name\":\"metric_category\",\"column_type\":\"VARCHAR\"},"
    "{\"column_name\":\"cost\",\"column_type\":\"DOUBLE\"},"
    "{\"column_name\":\"timestamp\",\"column_type\":\"TIMESTAMP\"},"
    "{\"column_name\":\"query\",\"column_type\":\"VARCHAR\"},"
    "{\"column_name\":\"actual_output\",\"column_type\":\"VARCHAR\"},"
    "{\"column_name\":\"environment\",\"column_type\":\"VARCHAR\"},"
    "{\"column_name\":\"source_name\",\"column_type\":\"VARCHAR\"},"
    "{\"column_name\":\"source_component\",\"column_type\":\"VARCHAR\"},"
    "{\"column_name\":\"latency\",\"column_type\":\"DOUBLE\"}],"
    "\"filter_values\":{\"environment\":[\"dev\",\"prod\",\"staging\"],\"source_name\":[\"svc_a\",\"svc_b\"],"
    "\"source_component\":[\"c1\"],\"metric_name\":[\"faithfulness\",\"relevance\"],"
    "\"metric_category\":[\"ANALYSIS\",\"SCORE\",\"score\"]},"
    "\"filter_values_truncated\":{\"environment\":false,\"source_name\":false,\"source_component\":false,"
    "\"metric_name\":false,\"metric_category\":false},"
    "\"time_range\":{\"min\":\"2026-02-13 10:00:00\",\"max\":\"2026-02-13 10:05:00\"},"
    "\"summary_stats\":{\"total_records\":9,\"avg_score\":0.5,\"pass_rate\":62.5,\"p50_latency\":250.0,"
    "\"p95_latency\":465.0,\"p99_latency\":493.0}}}";

static void test_metadata(void **state)
{
    (void)state;
    tl_server srv;
    tl_server_start(&srv, g_config, g_log, TOKEN);
    /* Before the first sync: {} (AXIS's answer), and no page to read. */
    expect_exact(&srv, "GET", "/api/store/metadata/monitoring_data", 200,
                 "{\"success\":true,\"dataset\":\"monitoring_data\",\"metadata\":{}}");
    expect_exact(&srv, "GET", "/api/store/data/monitoring_data", 404,
                 "{\"success\":false,\"error\":\"monitoring_data has not been synced yet\","
                 "\"detail\":\"monitoring_data has not been synced yet\"}");
    expect_exact(
        &srv, "GET", "/api/store/metadata/nosuch_data", 404,
        "{\"success\":false,\"error\":\"no dataset named \\\"nosuch_data\\\"; see /api/store/status\","
        "\"detail\":\"no dataset named \\\"nosuch_data\\\"; see /api/store/status\"}");
    expect_exact(&srv, "POST", "/api/store/metadata/monitoring_data", 405,
                 "{\"success\":false,\"error\":\"use GET for /api/store/metadata\","
                 "\"detail\":\"use GET for /api/store/metadata\"}");
    sync_ready(&srv, "monitoring");
    expect_exact(&srv, "GET", "/api/store/metadata/monitoring_data", 200, monitoring_metadata);

    /* A filter column with more than 200 values: the first 200, sorted, and
     * filter_values_truncated says so; no metric_score, no summary. */
    sync_ready(&srv, "wide");
    json_t *doc = get_json(&srv, "/api/store/metadata/wide_data", 200);
    json_t *meta = json_object_get(doc, "metadata");
    json_t *kpis = json_object_get(json_object_get(meta, "filter_values"), "kpi_name");
    assert_int_equal(json_array_size(kpis), 200);
    assert_string_equal(json_string_value(json_array_get(kpis, 0)), "k001");
    assert_string_equal(json_string_value(json_array_get(kpis, 199)), "k200");
    assert_true(json_is_true(json_object_get(json_object_get(meta, "filter_values_truncated"), "kpi_name")));
    assert_int_equal(json_integer_value(json_object_get(meta, "row_count")), 250);
    assert_true(json_is_null(json_object_get(meta, "time_range")));
    assert_null(json_object_get(meta, "summary_stats"));
    json_decref(doc);

    /* Computed again after each sync: new rows change the metadata with
     * the data. */
    tl_pg_exec(g_pg, "INSERT INTO llm_traces VALUES ('t7', '2026-02-14 00:00:00', 'new', 'x', 'qa', 'svc_c',"
                     " 'c2', 50); INSERT INTO llm_metric_results VALUES ('t7', 'toxicity', 1, 'SCORE', 0)");
    sync_ready(&srv, "monitoring");
    doc = get_json(&srv, "/api/store/metadata/monitoring", 200);
    meta = json_object_get(doc, "metadata");
    assert_int_equal(json_integer_value(json_object_get(meta, "row_count")), 10);
    assert_string_equal(json_string_value(json_object_get(json_object_get(meta, "time_range"), "max")),
                        "2026-02-14 00:00:00");
    assert_string_equal(json_string_value(json_object_get(doc, "dataset")), "monitoring");
    json_decref(doc);
    tl_pg_exec(g_pg, "DELETE FROM llm_traces WHERE trace_id = 't7'; DELETE FROM llm_metric_results WHERE"
                     " trace_id = 't7'");
    sync_ready(&srv, "monitoring");
    expect_exact(&srv, "GET", "/api/store/metadata/monitoring_data", 200, monitoring_metadata);
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(g_log);
}

#define COLS "&columns=dataset_id,metric_name"

static void test_data_pages(void **state)
{
    (void)state;
    tl_server srv;
    tl_server_start(&srv, g_config, g_log, TOKEN);
    sync_ready(&srv, "monitoring");
    /* Sorted by timestamp; rows of one trace share it and the tie-breaker
     * orders them, so three pages of three are the nine rows once each. */
    static const char *const pages[] = {
        "{\"success\":true,\"data\":[{\"dataset_id\":\"t1\",\"metric_name\":\"faithfulness\"},"
        "{\"dataset_id\":\"t1\",\"metric_name\":\"relevance\"},{\"dataset_id\":\"t2\",\"metric_name\":"
        "\"faithfulness\"}],\"total\":9,\"page\":1,\"page_size\":3}",
        "{\"success\":true,\"data\":[{\"dataset_id\":\"t2\",\"metric_name\":\"relevance\"},"
        "{\"dataset_id\":\"t3\",\"metric_name\":\"faithfulness\"},{\"dataset_id\":\"t3\",\"metric_name\":"
        "\"relevance\"}],\"total\":9,\"page\":2,\"page_size\":3}",
        "{\"success\":true,\"data\":[{\"dataset_id\":\"t4\",\"metric_name\":\"faithfulness\"},"
        "{\"dataset_id\":\"t5\",\"metric_name\":\"faithfulness\"},{\"dataset_id\":\"t6\",\"metric_name\":"
        "\"faithfulness\"}],\"total\":9,\"page\":3,\"page_size\":3}",
    };
    for (int p = 1; p <= 3; p++) {
        char target[256];
        snprintf(target, sizeof target,
                 "/api/store/data/monitoring_data?page=%d&page_size=3&sort_by=timestamp&sort_dir=asc" COLS,
                 p);
        expect_exact(&srv, "GET", target, 200, pages[p - 1]);
    }
    /* Descending by metric_score, NULL last, equal scores (0.5) by the
     * tie-breaker; a page past the end is empty. */
    expect_exact(
        &srv, "GET", "/api/store/data/monitoring_data?page_size=4&sort_by=metric_score" COLS ",metric_score",
        200,
        "{\"success\":true,\"data\":[{\"dataset_id\":\"t1\",\"metric_name\":\"faithfulness\","
        "\"metric_score\":0.9},{\"dataset_id\":\"t3\",\"metric_name\":\"faithfulness\",\"metric_score\":0.8},"
        "{\"dataset_id\":\"t5\",\"metric_name\":\"faithfulness\",\"metric_score\":0.6},"
        "{\"dataset_id\":\"t2\",\"metric_name\":\"faithfulness\",\"metric_score\":0.5}],\"total\":9,"
        "\"page\":1,\"page_size\":4}");
    expect_exact(&srv, "GET", "/api/store/data/monitoring_data?page=3&page_size=4&sort_by=metric_score" COLS,
                 200,
                 "{\"success\":true,\"data\":[{\"dataset_id\":\"t6\",\"metric_name\":\"faithfulness\"}],"
                 "\"total\":9,\"page\":3,\"page_size\":4}");
    expect_exact(&srv, "GET", "/api/store/data/monitoring_data?page=4&page_size=4" COLS, 200,
                 "{\"success\":true,\"data\":[],\"total\":9,\"page\":4,\"page_size\":4}");
    /* A whole row: every column, NaN as null, defaults page 1 / 50. */
    expect_exact(
        &srv, "GET", "/api/store/data/monitoring_data?search=aXb%2050", 200,
        "{\"success\":true,\"data\":[{\"dataset_id\":\"t5\",\"metric_name\":\"faithfulness\","
        "\"metric_score\":0.6,\"metric_category\":\"SCORE\",\"cost\":null,\"timestamp\":"
        "\"2026-02-13 10:04:00\",\"query\":\"aXb 50 off\",\"actual_output\":\"sure\",\"environment\":"
        "\"dev\",\"source_name\":\"svc_b\",\"source_component\":\"c1\",\"latency\":500.0}],"
        "\"total\":1,\"page\":1,\"page_size\":50}");
    /* columns: unknown names dropped, the order asked kept; DuckDB sorts
     * NaN above every number. */
    expect_exact(
        &srv, "GET",
        "/api/store/data/monitoring_data?columns=cost,nosuch,dataset_id&sort_by=cost&page_size=2", 200,
        "{\"success\":true,\"data\":[{\"cost\":null,\"dataset_id\":\"t5\"},{\"cost\":2.0,\"dataset_id\":"
        "\"t4\"}],\"total\":9,\"page\":1,\"page_size\":2}");
    /* An unknown sort_by is ignored: the tie-breaker alone orders. */
    expect_exact(
        &srv, "GET", "/api/store/data/monitoring_data?sort_by=nosuch&page_size=2" COLS, 200,
        "{\"success\":true,\"data\":[{\"dataset_id\":\"t1\",\"metric_name\":\"faithfulness\"},"
        "{\"dataset_id\":\"t1\",\"metric_name\":\"relevance\"}],\"total\":9,\"page\":1,\"page_size\":2}");
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(g_log);
}

/* total of a filtered read, and its dataset_ids in order. */
static void expect_ids(const tl_server *srv, const char *query, const char *ids)
{
    char target[512];
    snprintf(target, sizeof target, "/api/store/data/monitoring_data?columns=dataset_id&sort_dir=asc%s",
             query);
    json_t *doc = get_json(srv, target, 200);
    char got[256] = "";
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(doc, "data"), i, row)
    {
        strcat(got, i ? "," : "");
        strcat(got, json_string_value(json_object_get(row, "dataset_id")));
    }
    if (strcmp(got, ids) != 0)
        fail_msg("%s: expected %s, got %s", target, ids, got);
    assert_int_equal(json_integer_value(json_object_get(doc, "total")),
                     json_array_size(json_object_get(doc, "data")));
    json_decref(doc);
}

static void test_data_filters(void **state)
{
    (void)state;
    tl_server srv;
    tl_server_start(&srv, g_config, g_log, TOKEN);
    sync_ready(&srv, "monitoring");
    expect_ids(&srv, "&environment=prod", "t1,t1,t2,t2,t4");
    expect_ids(&srv, "&environment=prod&metric_name=relevance", "t1,t2");
    expect_ids(&srv, "&source_name=svc_b&source_component=c1", "t4,t5");
    expect_ids(&srv, "&environment=nosuch", "");
    /* metric_category: any case, and SCORE also matches NULL */
    expect_ids(&srv, "&metric_category=score", "t1,t1,t2,t3,t3,t4,t5,t6");
    expect_ids(&srv, "&metric_category=analysis", "t2");
    /* time bounds are inclusive */
    expect_ids(&srv, "&time_start=2026-02-13%2010:01:00&time_end=2026-02-13T10:03:00", "t2,t2,t3,t3,t4");
    /* search: ILIKE over query and actual_output; % and _ are literal */
    expect_ids(&srv, "&search=%25", "t1,t1");
    expect_ids(&srv, "&search=_", "t2,t2");
    expect_ids(&srv, "&search=AXB", "t4,t5");
    expect_ids(&srv, "&search=SURE", "t5");
    expect_ids(&srv, "&search=50%25%20OFF&environment=prod", "t1,t1");
    /* A TIMESTAMPTZ column: DuckDB's text in UTC in rows and metadata, and
     * the time bounds compare as times. */
    sync_ready(&srv, "flaky");
    expect_exact(
        &srv, "GET", "/api/store/data/flaky_data?sort_by=timestamp&time_start=2026-02-13T11:30:00Z", 200,
        "{\"success\":true,\"data\":[{\"id\":2,\"timestamp\":\"2026-02-13 12:00:00+00\"}],\"total\":1,"
        "\"page\":1,\"page_size\":50}");
    json_t *doc = get_json(&srv, "/api/store/metadata/flaky_data", 200);
    char *range = json_dumps(json_object_get(json_object_get(doc, "metadata"), "time_range"), JSON_COMPACT);
    assert_string_equal(range, "{\"min\":\"2026-02-13 11:00:00+00\",\"max\":\"2026-02-13 12:00:00+00\"}");
    free(range);
    json_decref(doc);
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(g_log);
}

static void test_data_invalid(void **state)
{
    (void)state;
    tl_server srv;
    tl_server_start(&srv, g_config, g_log, TOKEN);
    sync_ready(&srv, "monitoring");
    expect_exact(
        &srv, "GET", "/api/store/data/monitoring_data?page=0", 422,
        "{\"success\":false,\"error\":\"page: Input should be greater than or equal to 1\",\"detail\":"
        "[{\"type\":\"greater_than_equal\",\"loc\":[\"query\",\"page\"],\"msg\":\"Input should be greater "
        "than or equal to 1\",\"input\":\"0\"}]}");
    expect_exact(
        &srv, "GET", "/api/store/data/monitoring_data?page=abc", 422,
        "{\"success\":false,\"error\":\"page: Input should be a valid integer, unable to parse string as "
        "an integer\",\"detail\":[{\"type\":\"int_parsing\",\"loc\":[\"query\",\"page\"],\"msg\":\"Input "
        "should be a valid integer, unable to parse string as an integer\",\"input\":\"abc\"}]}");
    expect_exact(
        &srv, "GET", "/api/store/data/monitoring_data?page_size=0", 422,
        "{\"success\":false,\"error\":\"page_size: Input should be greater than or equal to 1\",\"detail\":"
        "[{\"type\":\"greater_than_equal\",\"loc\":[\"query\",\"page_size\"],\"msg\":\"Input should be "
        "greater than or equal to 1\",\"input\":\"0\"}]}");
    expect_exact(
        &srv, "GET", "/api/store/data/monitoring_data?page_size=501", 422,
        "{\"success\":false,\"error\":\"page_size: Input should be less than or equal to 500\",\"detail\":"
        "[{\"type\":\"less_than_equal\",\"loc\":[\"query\",\"page_size\"],\"msg\":\"Input should be less "
        "than or equal to 500\",\"input\":\"501\"}]}");
    expect_exact(
        &srv, "GET", "/api/store/data/monitoring_data?sort_dir=up", 422,
        "{\"success\":false,\"error\":\"sort_dir: String should match pattern '^(asc|desc)$'\",\"detail\":"
        "[{\"type\":\"string_pattern_mismatch\",\"loc\":[\"query\",\"sort_dir\"],\"msg\":\"String should "
        "match pattern '^(asc|desc)$'\",\"input\":\"up\"}]}");
    expect_exact(
        &srv, "GET", "/api/store/data/monitoring_data?time_start=yesterday", 422,
        "{\"success\":false,\"error\":\"time_start: Input should be a valid datetime\",\"detail\":"
        "[{\"type\":\"datetime_parsing\",\"loc\":[\"query\",\"time_start\"],\"msg\":\"Input should be a "
        "valid datetime\",\"input\":\"yesterday\"}]}");
    /* Every invalid parameter is listed, as FastAPI does. */
    json_t *doc = get_json(&srv, "/api/store/data/monitoring_data?page=-1&page_size=x&time_end=never", 422);
    assert_int_equal(json_array_size(json_object_get(doc, "detail")), 3);
    json_decref(doc);
    expect_exact(&srv, "GET", "/api/store/data/nosuch", 404,
                 "{\"success\":false,\"error\":\"no dataset named \\\"nosuch\\\"; see /api/store/status\","
                 "\"detail\":\"no dataset named \\\"nosuch\\\"; see /api/store/status\"}");
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(g_log);
}

/* The UTC time now in the status's format. */
static void now_iso(char *out, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%S+00:00", &tm);
}

static void test_sync_compat(void **state)
{
    (void)state;
    tl_server srv;
    tl_server_start(&srv, g_config, g_log, TOKEN);
    /* POST /api/store/sync?full=true starts every source in full. */
    json_t *doc = tl_http_json(srv.port, "POST", "/api/store/sync?full=true", TOKEN, 202, NULL);
    assert_int_equal(json_array_size(json_object_get(doc, "started")), 3);
    json_decref(doc);
    json_decref(tl_server_wait_state(&srv, "monitoring_data", "ready", 60));
    json_decref(tl_server_wait_state(&srv, "wide_data", "ready", 60));
    json_decref(tl_server_wait_state(&srv, "flaky_data", "ready", 60));
    /* AXIS's spellings of a boolean, any case. */
    static const char *const yes[] = {"true", "1", "YES", "On", "t", "Y"};
    static const char *const no[] = {"FALSE", "0", "no", "off", "F", "n"};
    for (size_t i = 0; i < 6; i++) {
        char target[96];
        snprintf(target, sizeof target, "/api/store/sync/wide?full=%s", yes[i]);
        expect_exact(&srv, "POST", target, 202,
                     "{\"success\":true,\"message\":\"full sync of wide started\"}");
        json_decref(tl_server_wait_state(&srv, "wide_data", "ready", 60));
        snprintf(target, sizeof target, "/api/store/sync/wide?full=%s", no[i]);
        expect_exact(&srv, "POST", target, 202, "{\"success\":true,\"message\":\"sync of wide started\"}");
        json_decref(tl_server_wait_state(&srv, "wide_data", "ready", 60));
    }
    static const char bad_full[] =
        "{\"success\":false,\"error\":\"full must be true or false (also 1/0, yes/no, on/off, t/f, y/n)\","
        "\"detail\":\"full must be true or false (also 1/0, yes/no, on/off, t/f, y/n)\"}";
    expect_exact(&srv, "POST", "/api/store/sync/wide?full=maybe", 400, bad_full);
    expect_exact(&srv, "POST", "/api/store/sync?full=2", 400, bad_full);
    /* Errors carry AXIS's "detail" next to duckstore's "error". */
    expect_exact(&srv, "GET", "/api/store/nosuch", 404,
                 "{\"success\":false,\"error\":\"no such endpoint; see docs/api.md\","
                 "\"detail\":\"no such endpoint; see docs/api.md\"}");
    expect_exact(&srv, "POST", "/api/store/sync/nosuch", 404,
                 "{\"success\":false,\"error\":\"no source named \\\"nosuch\\\"\",\"sources\":[\"flaky\","
                 "\"monitoring\",\"wide\"],\"detail\":\"no source named \\\"nosuch\\\"\"}");

    /* last_sync is the last success; last_attempt the failure after it.
     * The failure starts in a later second than the success ended. */
    json_t *ok = tl_server_dataset(&srv, "flaky_data");
    char last_ok[64], now[64];
    snprintf(last_ok, sizeof last_ok, "%s", tl_json_str(ok, "last_sync"));
    assert_string_equal(tl_json_str(ok, "last_attempt"), last_ok);
    json_decref(ok);
    for (double deadline = tl_now_ms() + 10000; tl_now_ms() < deadline; tl_sleep_ms(50)) {
        now_iso(now, sizeof now);
        if (strcmp(now, last_ok) > 0)
            break;
    }
    tl_pg_exec(g_pg, "ALTER TABLE flaky RENAME TO flaky_gone");
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/flaky", TOKEN, 202, NULL));
    json_t *failed = tl_server_wait_state(&srv, "flaky_data", "error", 60);
    tl_pg_exec(g_pg, "ALTER TABLE flaky_gone RENAME TO flaky");
    assert_string_equal(tl_json_str(failed, "last_sync"), last_ok);
    assert_string_equal(tl_json_str(failed, "last_attempt"), tl_json_str(failed, "last_error"));
    assert_true(strcmp(tl_json_str(failed, "last_attempt"), last_ok) > 0);
    json_decref(failed);
    sync_ready(&srv, "flaky");
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(g_log);
}

/* The answer allows ORIGIN (a failure, not a crash, when it does not). */
static void assert_origin(const tl_http_response *resp)
{
    char buf[256];
    const char *v = tl_http_header(resp, "Access-Control-Allow-Origin", buf, sizeof buf);
    if (v == NULL)
        fail_msg("no Access-Control-Allow-Origin in:\n%s", resp->headers);
    assert_string_equal(v, ORIGIN);
}

static void test_cors(void **state)
{
    (void)state;
    tl_server srv;
    tl_server_start(&srv, g_config, g_log, TOKEN);
    char buf[256];
    /* A preflight from the allowed origin: no token needed, 204. */
    tl_http_response resp;
    assert_true(tl_http_request(srv.port, "OPTIONS", "/api/store/data/monitoring_data?page=1",
                                "Origin: " ORIGIN "\r\nAccess-Control-Request-Method: GET\r\n"
                                "Access-Control-Request-Headers: authorization\r\n",
                                NULL, 0, &resp));
    assert_int_equal(resp.status, 204);
    assert_origin(&resp);
    assert_string_equal(tl_http_header(&resp, "Access-Control-Allow-Methods", buf, sizeof buf),
                        "GET, HEAD, POST, OPTIONS");
    assert_string_equal(tl_http_header(&resp, "Access-Control-Allow-Headers", buf, sizeof buf),
                        "Authorization, Content-Type");
    tl_http_response_free(&resp);
    /* Another origin: 403 and no CORS header, so the browser refuses. */
    assert_true(tl_http_request(srv.port, "OPTIONS", "/api/store/status",
                                "Origin: http://evil.example\r\nAccess-Control-Request-Method: GET\r\n", NULL,
                                0, &resp));
    assert_int_equal(resp.status, 403);
    assert_null(tl_http_header(&resp, "Access-Control-Allow-Origin", buf, sizeof buf));
    assert_string_equal(resp.body,
                        "{\"success\":false,\"error\":\"origin not allowed; list it in duckdb.cors_origins "
                        "(docs/configuration.md)\",\"detail\":\"origin not allowed; list it in "
                        "duckdb.cors_origins (docs/configuration.md)\"}");
    tl_http_response_free(&resp);
    /* The actual calls: the allowed origin is echoed (errors too), others
     * get nothing. */
    assert_true(tl_http_request(srv.port, "GET", "/api/store/status",
                                "Origin: " ORIGIN "\r\nAuthorization: Bearer " TOKEN "\r\n", NULL, 0, &resp));
    assert_int_equal(resp.status, 200);
    assert_origin(&resp);
    assert_string_equal(tl_http_header(&resp, "Vary", buf, sizeof buf), "Origin");
    tl_http_response_free(&resp);
    assert_true(
        tl_http_request(srv.port, "GET", "/api/store/status", "Origin: " ORIGIN "\r\n", NULL, 0, &resp));
    assert_int_equal(resp.status, 401);
    assert_origin(&resp);
    tl_http_response_free(&resp);
    /* The SQL endpoint's streamed answers and its own errors too. */
    static const char sql[] = "{\"sql\":\"SELECT 1 AS one\"}";
    assert_true(tl_http_request(srv.port, "POST", "/api/store/query",
                                "Origin: " ORIGIN "\r\nAuthorization: Bearer " TOKEN
                                "\r\nContent-Type: application/json\r\n",
                                sql, strlen(sql), &resp));
    assert_int_equal(resp.status, 200);
    assert_origin(&resp);
    tl_http_response_free(&resp);
    static const char slow[] =
        "{\"sql\":\"SELECT count(*) FROM range(1000000000) a, range(1000000) b\",\"timeout_ms\":100}";
    assert_true(tl_http_request(srv.port, "POST", "/api/store/query",
                                "Origin: " ORIGIN "\r\nAuthorization: Bearer " TOKEN
                                "\r\nContent-Type: application/json\r\n",
                                slow, strlen(slow), &resp));
    assert_int_equal(resp.status, 504);
    assert_origin(&resp);
    json_t *err = json_loads(resp.body, 0, NULL);
    assert_string_equal(tl_json_str(err, "detail"), tl_json_str(err, "error"));
    json_decref(err);
    tl_http_response_free(&resp);
    assert_true(tl_http_request(srv.port, "GET", "/api/store/status",
                                "Origin: http://evil.example\r\nAuthorization: Bearer " TOKEN "\r\n", NULL, 0,
                                &resp));
    assert_int_equal(resp.status, 200);
    assert_null(tl_http_header(&resp, "Access-Control-Allow-Origin", buf, sizeof buf));
    tl_http_response_free(&resp);
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(g_log);
}

/* max_sync_rows cuts a table: a WARN line in the server log, a warnings
 * entry in the status, and the CLI's sync prints it. */
static void test_truncation_is_loud(void **state)
{
    (void)state;
    char *dir = path_in(g_dir, "capped");
    mkdir(dir, 0755);
    char *file = path_in(dir, "duckdb.yaml"), *log = path_in(g_dir, "capped.log");
    tl_write_filef(file, "duckdb:\n  path: %s/capped.duckdb\n  sync_mode: manual\n  max_sync_rows: 100\n",
                   g_dir);
    free(file);
    file = path_in(dir, "wide_db.yaml");
    tl_write_filef(file, "wide_db:\n  url: \"%s\"\n  query: SELECT g AS id FROM generate_series(1, 250) g\n",
                   g_conninfo);
    free(file);
    /* A metric_score that is no number (a list) and a text latency: the
     * summary has NULLs, and the sync's commit does not fail over it. */
    file = path_in(dir, "odd_db.yaml");
    tl_write_filef(file,
                   "odd_db:\n  url: \"%s\"\n  query: SELECT ARRAY[1, 2] AS metric_score, 'slow' AS latency, "
                   "'prod' AS environment\n",
                   g_conninfo);
    free(file);
    static const char warning[] =
        "wide: wide_data was truncated at max_sync_rows (100 rows); rows past the cap "
        "were not stored: narrow the query with a WHERE clause, or raise "
        "duckdb.max_sync_rows (0 = no cap)";
    tl_server srv;
    tl_server_start(&srv, dir, log, TOKEN);
    sync_ready(&srv, "wide");
    json_t *ds = tl_server_dataset(&srv, "wide_data");
    assert_true(json_is_true(json_object_get(ds, "truncated")));
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), 100);
    json_t *warnings = json_object_get(ds, "warnings");
    assert_int_equal(json_array_size(warnings), 1);
    assert_string_equal(json_string_value(json_array_get(warnings, 0)), warning);
    json_decref(ds);
    sync_ready(&srv, "odd");
    json_t *doc = get_json(&srv, "/api/store/metadata/odd", 200);
    char *stats = json_dumps(json_object_get(json_object_get(doc, "metadata"), "summary_stats"),
                             JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(stats, "{\"total_records\":1,\"avg_score\":null,\"pass_rate\":null,\"p50_latency\":"
                               "null,\"p95_latency\":null,\"p99_latency\":null}");
    free(stats);
    json_decref(doc);
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    char *text = tl_read_file(log);
    char line[1024];
    snprintf(line, sizeof line, "WARN  %s", warning);
    assert_non_null(strstr(text, line));
    free(text);
    tl_assert_clean_log(log);

    char *out = NULL;
    int rc = tl_run(&out, "%s --config-dir %s sync wide --full 2>&1", getenv("DUCKSTORE_BIN"), dir);
    assert_int_equal(rc, 0);
    if (strstr(out, line) == NULL)
        fail_msg("the CLI did not print the warning:\n%s", out);
    if (strstr(out, "Sanitizer") != NULL)
        fail_msg("a sanitizer report from the CLI:\n%s", out);
    free(out);
    free(log);
    free(dir);
}

/* A streaming source's document is served again while younger than ten
 * times what it cost; a free one (or a clock gone back) never. */
static void test_streaming_metadata_reuse_rule(void **state)
{
    (void)state;
    assert_true(axis_metadata_reusable(0.0, 0.35));
    assert_true(axis_metadata_reusable(3.49, 0.35));
    assert_false(axis_metadata_reusable(3.51, 0.35));
    assert_false(axis_metadata_reusable(0.0, 0.0));
    assert_false(axis_metadata_reusable(-1.0, 0.35));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streaming_metadata_reuse_rule),
        cmocka_unit_test_teardown(test_metadata, teardown_test),
        cmocka_unit_test_teardown(test_data_pages, teardown_test),
        cmocka_unit_test_teardown(test_data_filters, teardown_test),
        cmocka_unit_test_teardown(test_data_invalid, teardown_test),
        cmocka_unit_test_teardown(test_sync_compat, teardown_test),
        cmocka_unit_test_teardown(test_cors, teardown_test),
        cmocka_unit_test_teardown(test_truncation_is_loud, teardown_test),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
