/* The HTTP API of `duckstore serve`, end to end against the harness
 * PostgreSQL: every endpoint and error with its exact JSON, syncs triggered
 * over HTTP (202, 409, rows, watermarks, incremental, reset-watermark),
 * bearer-token auth, scripts/sync-once.sh, and that the source password never
 * reaches the log or an answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"
#include "tl_http.h"

#define TOKEN "t0ken-for-tests"

/* See slow_hold. */
#define SLOW_GATE 5151

#define FULL_VALUES                                                                                          \
    "{\"success\":false,\"error\":\"full must be true or false (also 1/0, yes/no, on/off, t/f, "             \
    "y/n)\",\"detail\":\"full must be true or false (also 1/0, yes/no, on/off, t/f, y/n)\"}"

static char *g_dir, *g_config, *g_log, *g_transcript, *g_conninfo;
static PGconn *g_pg;

/* After every test: no server outlives a failed one. */
static int teardown_test(void **state)
{
    (void)state;
    tl_server_kill_all();
    tl_free_kept();
    return 0;
}

static char *path_in(const char *dir, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        fail_msg("out of memory");
    return p;
}

/* The harness server's port, for a postgresql:// URL. */
static char *harness_port(void)
{
    PQconninfoOption *opts = PQconninfoParse(tl_pg_base_conninfo(), NULL);
    char *port = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "port") == 0 && o->val)
            port = strdup(o->val);
    PQconninfoFree(opts);
    return port ? port : strdup("5432");
}

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("srvapi"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg,
               "CREATE TABLE traces (id int PRIMARY KEY, created_at timestamptz NOT NULL, prompt text);"
               "INSERT INTO traces SELECT g, timestamptz '2026-02-13 10:00:00+00' + g * interval '1 minute',"
               " 'prompt ' || g FROM generate_series(1, 20) g;"
               "CREATE TABLE metric_results (id serial, trace_id int, created_at timestamptz NOT NULL,"
               " metric_name text, score float8);"
               "INSERT INTO metric_results (trace_id, created_at, metric_name, score)"
               " SELECT (g + 1) / 2, timestamptz '2026-02-13 10:00:00+00' + g * interval '30 seconds',"
               " 'm' || (g %% 2), g / 40.0 FROM generate_series(1, 40) g;");
    g_dir = tl_mkdtemp();
    g_config = path_in(g_dir, "config");
    g_log = path_in(g_dir, "server.log");
    g_transcript = path_in(g_dir, "transcript.txt");
    mkdir(g_config, 0755);
    char *file = path_in(g_config, "duckdb.yaml");
    tl_write_filef(file, "duckdb:\n  path: %s/store.duckdb\n  sync_mode: manual\n", g_dir);
    free(file);
    file = path_in(g_config, "mon_db.yaml");
    tl_write_filef(file,
                   "mon_db:\n"
                   "  url: \"%s\"\n"
                   "  dataset_query: SELECT id AS dataset_id, created_at, prompt FROM traces\n"
                   "  results_query: SELECT trace_id AS dataset_id, created_at, metric_name, score FROM "
                   "metric_results\n"
                   "  incremental_column: created_at\n",
                   g_conninfo);
    free(file);
    /* Caught syncing however slow the machine: its query waits for the
     * advisory lock SLOW_GATE while the test holds it (slow_hold). */
    file = path_in(g_config, "slow_db.yaml");
    tl_write_filef(file,
                   "slow_db:\n"
                   "  url: \"%s\"\n"
                   "  query: |\n"
                   "    WITH gate AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(%d))\n"
                   "    SELECT t.id, t.created_at FROM traces t, gate\n",
                   g_conninfo, SLOW_GATE);
    free(file);
    /* A postgresql:// URL with the password in it, to a database that does
     * not exist: its syncs fail, and the message must not show the password. */
    char *port = harness_port();
    file = path_in(g_config, "broken_db.yaml");
    tl_write_filef(file,
                   "broken_db:\n"
                   "  url: \"postgresql://postgres:%s@127.0.0.1:%s/no_such_database?connect_timeout=5\"\n"
                   "  query: SELECT 1 AS one\n",
                   getenv("DUCKSTORE_TEST_PG_PASSWORD"), port);
    free(port);
    free(file);
    tl_http_set_transcript(g_transcript);
    return 0;
}

static int teardown_group(void **state)
{
    (void)state;
    tl_server_kill_all();
    tl_http_set_transcript(NULL);
    PQfinish(g_pg);
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_config);
    free(g_log);
    free(g_transcript);
    free(g_conninfo);
    return 0;
}

/* Sends a request and asserts the status, Content-Type application/json and
 * the exact body. */
static void expect_exact(const tl_server *srv, const char *method, const char *target, const char *token,
                         int status, const char *body)
{
    char *raw = NULL;
    json_t *doc = tl_http_json(srv->port, method, target, token, status, &raw);
    if (strcmp(raw, body) != 0)
        fail_msg("%s %s:\n  expected %s\n  got      %s", method, target, body, raw);
    json_decref(doc);
    free(raw);
}

/* Like expect_exact for 405, and checks the Allow header. */
static void expect_405(const tl_server *srv, const char *method, const char *target, const char *allow,
                       const char *body)
{
    tl_http_response resp;
    assert_true(tl_http_request(srv->port, method, target, NULL, NULL, 0, &resp));
    assert_int_equal(resp.status, 405);
    assert_string_equal(resp.content_type, "application/json");
    assert_string_equal(resp.body, body);
    char buf[64];
    assert_non_null(tl_http_header(&resp, "Allow", buf, sizeof buf));
    assert_string_equal(buf, allow);
    tl_http_response_free(&resp);
}

static void stop_ok(tl_server *srv)
{
    double elapsed;
    assert_int_equal(tl_server_stop(srv, 20, &elapsed), 0);
    tl_assert_clean_log(g_log);
}

static void test_endpoints_and_errors(void **state)
{
    (void)state;
    tl_server srv;
    tl_server_start(&srv, g_config, g_log, NULL);

    char expected[4096];
    snprintf(expected, sizeof expected, "{\"status\":\"ok\",\"store\":\"open\",\"path\":\"%s/store.duckdb\"}",
             g_dir);
    expect_exact(&srv, "GET", "/health", NULL, 200, expected);

    /* HEAD answers like GET, without a body. */
    tl_http_response resp;
    assert_true(tl_http_request(srv.port, "HEAD", "/health", NULL, NULL, 0, &resp));
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.content_type, "application/json");
    assert_int_equal(resp.body_len, 0);
    tl_http_response_free(&resp);

    /* Status before any sync: every field present, state not_synced. */
    static const char not_synced[] =
        "{\"state\":\"not_synced\",\"rows\":0,\"sync_type\":null,\"last_incremental\":null,"
        "\"incremental_rows\":0,\"truncated\":false,\"error\":null,\"warnings\":[],\"last_sync\":null,"
        "\"last_attempt\":null,\"duration_seconds\":null,";
    snprintf(expected, sizeof expected,
             "{\"success\":true,\"enabled\":true,\"datasets\":{"
             "\"broken_data\":%s\"watermarks\":{\"broken_data\":null},\"refresh_interval_minutes\":0,"
             "\"incremental_column\":null,\"mode\":\"append\",\"lookback\":null,\"commit_horizon\":false,"
             "\"full_refresh_interval_minutes\":null,\"next_full_refresh\":null},"
             "\"mon_data\":%s\"watermarks\":{\"mon_dataset\":null,\"mon_results\":null},"
             "\"refresh_interval_minutes\":0,\"incremental_column\":\"created_at\",\"mode\":\"append\","
             "\"lookback\":null,\"commit_horizon\":true,\"full_refresh_interval_minutes\":null,\"next_full_"
             "refresh\":null},"
             "\"slow_data\":%s\"watermarks\":{\"slow_data\":null},\"refresh_interval_minutes\":0,"
             "\"incremental_column\":null,\"mode\":\"append\",\"lookback\":null,\"commit_horizon\":false,"
             "\"full_refresh_interval_minutes\":null,\"next_full_refresh\":null}}}",
             not_synced, not_synced, not_synced);
    expect_exact(&srv, "GET", "/api/store/status", NULL, 200, expected);

    /* /metrics: Prometheus text, one line per source and series. */
    assert_true(tl_http_request(srv.port, "GET", "/metrics", NULL, NULL, 0, &resp));
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.content_type, "text/plain; version=0.0.4; charset=utf-8");
    static const char *const sources[] = {"broken", "mon", "slow"};
    char text[8192];
    size_t len = (size_t)snprintf(text, sizeof text, "%s",
                                  "# HELP duckstore_syncs_total Completed syncs by result.\n"
                                  "# TYPE duckstore_syncs_total counter\n");
    for (int i = 0; i < 3; i++)
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "duckstore_syncs_total{source=\"%s\",result=\"success\"} 0\n"
                                "duckstore_syncs_total{source=\"%s\",result=\"error\"} 0\n",
                                sources[i], sources[i]);
    len += (size_t)snprintf(text + len, sizeof text - len, "%s",
                            "# HELP duckstore_rows_synced_total Rows read from PostgreSQL and stored.\n"
                            "# TYPE duckstore_rows_synced_total counter\n");
    for (int i = 0; i < 3; i++)
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "duckstore_rows_synced_total{source=\"%s\"} 0\n", sources[i]);
    len +=
        (size_t)snprintf(text + len, sizeof text - len, "%s",
                         "# HELP duckstore_last_success_timestamp_seconds Unix time of the last successful "
                         "sync.\n# TYPE duckstore_last_success_timestamp_seconds gauge\n");
    for (int i = 0; i < 3; i++)
        len +=
            (size_t)snprintf(text + len, sizeof text - len,
                             "duckstore_last_success_timestamp_seconds{source=\"%s\"} 0.000\n", sources[i]);
    len += (size_t)snprintf(text + len, sizeof text - len, "%s",
                            "# HELP duckstore_last_sync_duration_seconds Duration of the last sync.\n"
                            "# TYPE duckstore_last_sync_duration_seconds gauge\n");
    for (int i = 0; i < 3; i++)
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "duckstore_last_sync_duration_seconds{source=\"%s\"} 0.000\n", sources[i]);
    len +=
        (size_t)snprintf(text + len, sizeof text - len, "%s",
                         "# HELP duckstore_source_state Current state of each source (1 = in that state).\n"
                         "# TYPE duckstore_source_state gauge\n");
    for (int i = 0; i < 3; i++)
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "duckstore_source_state{source=\"%s\",state=\"not_synced\"} 1\n"
                                "duckstore_source_state{source=\"%s\",state=\"syncing\"} 0\n"
                                "duckstore_source_state{source=\"%s\",state=\"ready\"} 0\n"
                                "duckstore_source_state{source=\"%s\",state=\"error\"} 0\n",
                                sources[i], sources[i], sources[i], sources[i]);
    len +=
        (size_t)snprintf(text + len, sizeof text - len, "%s",
                         "# HELP duckstore_consecutive_failures Failed syncs of each source in a row, since "
                         "its last success or the server's start.\n"
                         "# TYPE duckstore_consecutive_failures gauge\n");
    for (int i = 0; i < 3; i++)
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "duckstore_consecutive_failures{source=\"%s\"} 0\n", sources[i]);
    /* Per table: no rows nor data age before a first sync; no bytes read yet. */
    len += (size_t)snprintf(
        text + len, sizeof text - len, "%s",
        "# HELP duckstore_table_rows Rows of each DuckDB table after its last successful sync.\n"
        "# TYPE duckstore_table_rows gauge\n"
        "# HELP duckstore_bytes_read_total Bytes of binary COPY data read from PostgreSQL per table, by "
        "every "
        "sync since start.\n# TYPE duckstore_bytes_read_total counter\n"
        "duckstore_bytes_read_total{source=\"broken\",table=\"broken_data\"} 0\n"
        "duckstore_bytes_read_total{source=\"mon\",table=\"mon_dataset\"} 0\n"
        "duckstore_bytes_read_total{source=\"mon\",table=\"mon_results\"} 0\n"
        "duckstore_bytes_read_total{source=\"slow\",table=\"slow_data\"} 0\n"
        "# HELP duckstore_data_age_seconds Now minus the time of the table's watermark (its newest stored "
        "data), for timestamp watermarks.\n# TYPE duckstore_data_age_seconds gauge\n");
    snprintf(
        text + len, sizeof text - len, "%s",
        "# HELP duckstore_idle_source_connections PostgreSQL connections kept open between syncs, all "
        "sources.\n# TYPE duckstore_idle_source_connections gauge\nduckstore_idle_source_connections 0\n"
        "# HELP duckstore_read_queries_running Reader queries (PostgreSQL protocol, /api/store/query) DuckDB "
        "works on now.\n# TYPE duckstore_read_queries_running gauge\nduckstore_read_queries_running 0\n"
        "# HELP duckstore_read_queries_waiting Reader queries waiting for their turn "
        "(duckdb.read_concurrency).\n# TYPE duckstore_read_queries_waiting gauge\n"
        "duckstore_read_queries_waiting 0\n"
        "# HELP duckstore_read_queries_waited_total Reader queries that had to wait for their turn, since "
        "the "
        "start.\n# TYPE duckstore_read_queries_waited_total counter\nduckstore_read_queries_waited_total "
        "0\n");
    assert_string_equal(resp.body, text);
    tl_http_response_free(&resp);

    /* 404: unknown paths, and unknown sources with the list of sources. */
    static const char no_endpoint[] = "{\"success\":false,\"error\":\"no such endpoint; see "
                                      "docs/api.md\",\"detail\":\"no such endpoint; see docs/api.md\"}";
    static const char *const unknown_paths[] = {"/ui/",
                                                "/nope",
                                                "/api",
                                                "/api/",
                                                "/api/store",
                                                "/api/store/status/",
                                                "/api/store/sync/",
                                                "/api/store/sync/mon/other",
                                                "/api/store/sync/mon/reset-watermark/x",
                                                "/api/store/sync/Mon",
                                                "/api/store/sync/9lives",
                                                "/metrics/"};
    for (size_t i = 0; i < sizeof unknown_paths / sizeof unknown_paths[0]; i++) {
        expect_exact(&srv, "GET", unknown_paths[i], NULL, 404, no_endpoint);
        expect_exact(&srv, "POST", unknown_paths[i], NULL, 404, no_endpoint);
    }
    expect_exact(&srv, "POST", "/api/store/sync/nosuch", NULL, 404,
                 "{\"success\":false,\"error\":\"no source named "
                 "\\\"nosuch\\\"\",\"sources\":[\"broken\",\"mon\",\"slow\"],\"detail\":\"no source named "
                 "\\\"nosuch\\\"\"}");
    expect_exact(&srv, "POST", "/api/store/sync/nosuch/reset-watermark", NULL, 404,
                 "{\"success\":false,\"error\":\"no source named "
                 "\\\"nosuch\\\"\",\"sources\":[\"broken\",\"mon\",\"slow\"],\"detail\":\"no source named "
                 "\\\"nosuch\\\"\"}");

    /* 405 with the right Allow header. */
    expect_405(&srv, "POST", "/health", "GET, HEAD",
               "{\"success\":false,\"error\":\"use GET for /health\",\"detail\":\"use GET for /health\"}");
    expect_405(
        &srv, "POST", "/", "GET, HEAD",
        "{\"success\":false,\"error\":\"use GET for the status page\",\"detail\":\"use GET for the status "
        "page\"}");
    expect_405(&srv, "DELETE", "/metrics", "GET, HEAD",
               "{\"success\":false,\"error\":\"use GET for /metrics\",\"detail\":\"use GET for /metrics\"}");
    expect_405(&srv, "POST", "/api/store/status", "GET, HEAD",
               "{\"success\":false,\"error\":\"use GET for /api/store/status\",\"detail\":\"use GET for "
               "/api/store/status\"}");
    expect_405(&srv, "PUT", "/api/store/status", "GET, HEAD",
               "{\"success\":false,\"error\":\"use GET for /api/store/status\",\"detail\":\"use GET for "
               "/api/store/status\"}");
    expect_405(&srv, "GET", "/api/store/sync", "POST",
               "{\"success\":false,\"error\":\"use POST for /api/store/sync\",\"detail\":\"use POST for "
               "/api/store/sync\"}");
    expect_405(&srv, "GET", "/api/store/sync/mon", "POST",
               "{\"success\":false,\"error\":\"use POST\",\"detail\":\"use POST\"}");
    expect_405(&srv, "DELETE", "/api/store/sync/mon", "POST",
               "{\"success\":false,\"error\":\"use POST\",\"detail\":\"use POST\"}");
    expect_405(&srv, "GET", "/api/store/sync/mon/reset-watermark", "POST",
               "{\"success\":false,\"error\":\"use POST\",\"detail\":\"use POST\"}");
    /* ... also for a source that does not exist: the method is checked first. */
    expect_405(&srv, "GET", "/api/store/sync/nosuch", "POST",
               "{\"success\":false,\"error\":\"use POST\",\"detail\":\"use POST\"}");

    /* 400: bad or unknown query parameters. */
    expect_exact(&srv, "POST", "/api/store/sync/mon?full=maybe", NULL, 400, FULL_VALUES);
    expect_exact(&srv, "POST", "/api/store/sync/mon?full=", NULL, 400, FULL_VALUES);
    expect_exact(&srv, "POST", "/api/store/sync/mon?foo=1", NULL, 400,
                 "{\"success\":false,\"error\":\"unknown query parameter \\\"foo\\\"; accepted: "
                 "full\",\"detail\":\"unknown query parameter \\\"foo\\\"; accepted: full\"}");
    expect_exact(&srv, "POST", "/api/store/sync/mon?full=true&foo=1", NULL, 400,
                 "{\"success\":false,\"error\":\"unknown query parameter \\\"foo\\\"; accepted: "
                 "full\",\"detail\":\"unknown query parameter \\\"foo\\\"; accepted: full\"}");
    expect_exact(&srv, "GET", "/api/store/status?verbose=1", NULL, 400,
                 "{\"success\":false,\"error\":\"unknown query parameter "
                 "\\\"verbose\\\"\",\"detail\":\"unknown query parameter \\\"verbose\\\"\"}");
    expect_exact(&srv, "POST", "/api/store/sync?foo=1", NULL, 400,
                 "{\"success\":false,\"error\":\"unknown query parameter \\\"foo\\\"; accepted: "
                 "full\",\"detail\":\"unknown query parameter \\\"foo\\\"; accepted: full\"}");
    expect_exact(&srv, "POST", "/api/store/sync/mon/reset-watermark?full=true", NULL, 400,
                 "{\"success\":false,\"error\":\"unknown query parameter \\\"full\\\"\",\"detail\":\"unknown "
                 "query parameter \\\"full\\\"\"}");

    /* Limits: a path over 2048 bytes (414), a body over 64 KiB (413). */
    char long_path[2100] = "/api/";
    memset(long_path + 5, 'a', 2044);
    long_path[2049] = '\0';
    expect_exact(&srv, "GET", long_path, NULL, 414,
                 "{\"success\":false,\"error\":\"URL too long\",\"detail\":\"URL too long\"}");
    long_path[2048] = '\0'; /* exactly 2048 bytes: an ordinary 404 */
    expect_exact(&srv, "GET", long_path, NULL, 404, no_endpoint);
    size_t big = 64 * 1024 + 1;
    char *body = malloc(big);
    memset(body, 'x', big);
    assert_true(tl_http_request(srv.port, "POST", "/api/store/sync/mon", NULL, body, big, &resp));
    assert_int_equal(resp.status, 413);
    assert_string_equal(resp.content_type, "application/json");
    assert_string_equal(
        resp.body,
        "{\"success\":false,\"error\":\"request body too large\",\"detail\":\"request body too large\"}");
    tl_http_response_free(&resp);
    /* A body up to the limit is read and ignored. */
    assert_true(tl_http_request(srv.port, "POST", "/api/store/status", NULL, body, big - 1, &resp));
    assert_int_equal(resp.status, 405);
    tl_http_response_free(&resp);
    free(body);

    /* Nothing above started a sync. */
    json_t *mon = tl_server_dataset(&srv, "mon_data");
    assert_string_equal(tl_json_str(mon, "state"), "not_synced");
    json_decref(mon);
    stop_ok(&srv);
}

/* The DuckDB text of MAX(col) in UTC, as duckstore stores watermarks. */
static char *pg_watermark(const char *table)
{
    return tl_pg_scalar(
        g_pg, "SELECT to_char(max(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00' FROM %s",
        table);
}

static void assert_watermarks(json_t *ds, const char *dataset_wm, const char *results_wm)
{
    json_t *wm = json_object_get(ds, "watermarks");
    assert_int_equal(json_object_size(wm), 2);
    if (dataset_wm)
        assert_string_equal(tl_json_str(wm, "mon_dataset"), dataset_wm);
    else
        assert_true(json_is_null(json_object_get(wm, "mon_dataset")));
    if (results_wm)
        assert_string_equal(tl_json_str(wm, "mon_results"), results_wm);
    else
        assert_true(json_is_null(json_object_get(wm, "mon_results")));
}

static json_int_t int_of(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        fail_msg("%s is not an integer", key);
    return json_integer_value(v);
}

static void assert_table(json_t *ds, const char *table, json_int_t rows, json_int_t loaded, const char *mode)
{
    json_t *t = json_object_get(json_object_get(ds, "tables"), table);
    assert_non_null(t);
    assert_int_equal(int_of(t, "rows"), rows);
    assert_int_equal(int_of(t, "rows_loaded"), loaded);
    assert_string_equal(tl_json_str(t, "mode"), mode);
    assert_true(json_is_false(json_object_get(t, "truncated")));
}

/* Triggers a sync and waits for its result (the state is `syncing` as soon
 * as the 202 is sent). */
static json_t *sync_and_wait(const tl_server *srv, const char *target, const char *dataset, const char *state)
{
    json_decref(tl_http_json(srv->port, "POST", target, NULL, 202, NULL));
    return tl_server_wait_state(srv, dataset, state, 60);
}

/* Holds (or releases) SLOW_GATE: syncs of `slow` wait meanwhile. */
static void slow_hold(bool hold)
{
    tl_pg_exec(g_pg, "SELECT pg_advisory_%s(%d)", hold ? "lock" : "unlock", SLOW_GATE);
}

/* Polls a file (written by a background command) until it holds needle. */
static void wait_for_text(const char *path, const char *needle)
{
    double deadline = tl_now_ms() + 60000;
    for (;;) {
        char *text = tl_read_file(path);
        bool found = text && strstr(text, needle);
        free(text);
        if (found)
            return;
        if (tl_now_ms() > deadline)
            fail_msg("no \"%s\" in %s after 60 s", needle, path);
        tl_sleep_ms(20);
    }
}

static void test_sync_over_http(void **state)
{
    (void)state;
    tl_server srv;
    tl_server_start(&srv, g_config, g_log, NULL);

    /* 202, then 409 while that sync runs; status shows progress. */
    slow_hold(true);
    expect_exact(&srv, "POST", "/api/store/sync/slow", NULL, 202,
                 "{\"success\":true,\"message\":\"sync of slow started\"}");
    expect_exact(
        &srv, "POST", "/api/store/sync/slow", NULL, 409,
        "{\"success\":false,\"error\":\"slow is already syncing\",\"detail\":\"slow is already syncing\"}");
    expect_exact(
        &srv, "POST", "/api/store/sync/slow?full=true", NULL, 409,
        "{\"success\":false,\"error\":\"slow is already syncing\",\"detail\":\"slow is already syncing\"}");
    expect_exact(&srv, "POST", "/api/store/sync/slow/reset-watermark", NULL, 409,
                 "{\"success\":false,\"error\":\"slow is syncing; reset its watermarks when the sync is "
                 "done\",\"detail\":\"slow is syncing; reset its watermarks when the sync is done\"}");
    json_t *ds = tl_server_dataset(&srv, "slow_data");
    assert_string_equal(tl_json_str(ds, "state"), "syncing");
    json_t *progress = json_object_get(ds, "progress");
    assert_non_null(progress);
    assert_int_equal(json_object_size(progress), 8);
    assert_string_equal(tl_json_str(progress, "trigger"), "manual");
    assert_true(json_integer_value(json_object_get(progress, "sync_id")) > 0);
    json_t *tables = json_object_get(progress, "tables");
    assert_int_equal(json_object_size(tables), 1);
    assert_true(json_is_integer(json_object_get(json_object_get(tables, "slow_data"), "rows_read")));
    assert_true(json_is_integer(json_object_get(json_object_get(tables, "slow_data"), "bytes_read")));
    const char *phase = tl_json_str(progress, "phase");
    assert_true(strcmp(phase, "describing") == 0 || strcmp(phase, "reading") == 0);
    assert_true(json_is_integer(json_object_get(progress, "rows_read")));
    assert_true(json_is_integer(json_object_get(progress, "bytes_read")));
    assert_non_null(tl_json_str(progress, "started_at"));
    assert_true(json_is_false(json_object_get(progress, "full")));
    json_decref(ds);
    char *metrics = tl_server_metrics(&srv);
    assert_true(tl_metric(metrics, "duckstore_source_state{source=\"slow\",state=\"syncing\"}") == 1);
    free(metrics);
    slow_hold(false);
    ds = tl_server_wait_state(&srv, "slow_data", "ready", 60);
    assert_int_equal(int_of(ds, "rows"), 20);
    assert_null(json_object_get(ds, "progress"));
    json_decref(ds);

    /* First sync of a split source: full, rows and watermarks from PostgreSQL. */
    char *wm_d = pg_watermark("traces"), *wm_r = pg_watermark("metric_results");
    assert_string_equal(wm_d, "2026-02-13 10:20:00+00");
    ds = sync_and_wait(&srv, "/api/store/sync/mon", "mon_data", "ready");
    static const char *const keys[] = {"state",
                                       "rows",
                                       "sync_type",
                                       "last_sync",
                                       "last_attempt",
                                       "last_full",
                                       "truncated",
                                       "error",
                                       "warnings",
                                       "duration_seconds",
                                       "tables",
                                       "last_incremental",
                                       "incremental_rows",
                                       "watermarks",
                                       "refresh_interval_minutes",
                                       "incremental_column",
                                       "mode",
                                       "lookback",
                                       "commit_horizon",
                                       "full_refresh_interval_minutes",
                                       "next_full_refresh",
                                       "dataset_id_unique"};
    assert_int_equal(json_object_size(ds), sizeof keys / sizeof keys[0]);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (json_object_get(ds, keys[i]) == NULL)
            fail_msg("status has no %s", keys[i]);
    assert_int_equal(int_of(ds, "rows"), 40);
    assert_true(json_is_true(json_object_get(ds, "dataset_id_unique")));
    assert_string_equal(tl_json_str(ds, "sync_type"), "full");
    assert_true(json_is_null(json_object_get(ds, "last_incremental")));
    assert_int_equal(int_of(ds, "incremental_rows"), 0);
    assert_true(json_is_null(json_object_get(ds, "error")));
    assert_int_equal(json_array_size(json_object_get(ds, "warnings")), 0);
    assert_true(json_is_number(json_object_get(ds, "duration_seconds")));
    assert_string_equal(tl_json_str(ds, "last_sync"), tl_json_str(ds, "last_full"));
    assert_string_equal(tl_json_str(ds, "incremental_column"), "created_at");
    assert_int_equal(int_of(ds, "refresh_interval_minutes"), 0);
    assert_table(ds, "mon_dataset", 20, 20, "full");
    assert_table(ds, "mon_results", 40, 40, "full");
    assert_watermarks(ds, wm_d, wm_r);
    free(wm_d);
    free(wm_r);
    json_decref(ds);

    /* New rows: the next sync is incremental and advances the watermarks. */
    tl_pg_exec(g_pg,
               "INSERT INTO traces SELECT g, timestamptz '2026-02-13 11:00:00+00' + g * interval '1 minute',"
               " 'new ' || g FROM generate_series(21, 25) g;"
               "INSERT INTO metric_results (trace_id, created_at, metric_name, score)"
               " SELECT 21 + g %% 5, timestamptz '2026-02-13 11:00:00+00' + g * interval '1 minute', 'm', 1"
               " FROM generate_series(1, 7) g;");
    wm_d = pg_watermark("traces");
    wm_r = pg_watermark("metric_results");
    ds = sync_and_wait(&srv, "/api/store/sync/mon", "mon_data", "ready");
    assert_string_equal(tl_json_str(ds, "sync_type"), "incremental");
    assert_int_equal(int_of(ds, "rows"), 47);
    assert_int_equal(int_of(ds, "incremental_rows"), 7);
    assert_string_equal(tl_json_str(ds, "last_incremental"), tl_json_str(ds, "last_sync"));
    /* rows_loaded: the new rows and the one at each watermark, read again. */
    assert_table(ds, "mon_dataset", 25, 6, "incremental");
    assert_table(ds, "mon_results", 47, 8, "incremental");
    assert_watermarks(ds, wm_d, wm_r);
    json_decref(ds);

    /* reset-watermark clears both; the next sync is full again. */
    expect_exact(
        &srv, "POST", "/api/store/sync/mon/reset-watermark", NULL, 200,
        "{\"success\":true,\"message\":\"watermarks of mon cleared; the next sync is a full rebuild\"}");
    ds = tl_server_dataset(&srv, "mon_data");
    assert_string_equal(tl_json_str(ds, "state"), "ready");
    assert_watermarks(ds, NULL, NULL);
    json_decref(ds);
    ds = sync_and_wait(&srv, "/api/store/sync/mon", "mon_data", "ready");
    assert_string_equal(tl_json_str(ds, "sync_type"), "full");
    assert_int_equal(int_of(ds, "rows"), 47);
    assert_table(ds, "mon_dataset", 25, 25, "full");
    assert_watermarks(ds, wm_d, wm_r);
    json_decref(ds);

    /* ?full=true forces a full rebuild while watermarks exist. */
    expect_exact(&srv, "POST", "/api/store/sync/mon?full=true", NULL, 202,
                 "{\"success\":true,\"message\":\"full sync of mon started\"}");
    ds = tl_server_wait_state(&srv, "mon_data", "ready", 60);
    assert_string_equal(tl_json_str(ds, "sync_type"), "full");
    assert_watermarks(ds, wm_d, wm_r);
    json_decref(ds);
    free(wm_d);
    free(wm_r);

    /* POST /api/store/sync: every enabled source; busy ones are listed. */
    slow_hold(true);
    expect_exact(&srv, "POST", "/api/store/sync", NULL, 202,
                 "{\"success\":true,\"message\":\"sync started for 3 source(s)\","
                 "\"started\":[\"broken\",\"mon\",\"slow\"],\"already_syncing\":[]}");
    json_t *again = tl_http_json(srv.port, "POST", "/api/store/sync", NULL, 202, NULL);
    json_t *busy = json_object_get(again, "already_syncing");
    bool slow_busy = false;
    for (size_t i = 0; i < json_array_size(busy); i++)
        slow_busy |= strcmp(json_string_value(json_array_get(busy, i)), "slow") == 0;
    assert_true(slow_busy);
    json_decref(again);
    slow_hold(false);
    json_decref(tl_server_wait_state(&srv, "slow_data", "ready", 60));
    json_decref(tl_server_wait_state(&srv, "mon_data", "ready", 60));
    ds = tl_server_wait_state(&srv, "broken_data", "error", 60);
    assert_non_null(strstr(tl_json_str(ds, "error"), "no_such_database"));
    /* never synced: last_sync stays null, last_attempt is the failure */
    assert_true(json_is_null(json_object_get(ds, "last_sync")));
    assert_string_equal(tl_json_str(ds, "last_attempt"), tl_json_str(ds, "last_error"));
    json_decref(ds);

    metrics = tl_server_metrics(&srv);
    assert_true(tl_metric(metrics, "duckstore_syncs_total{source=\"broken\",result=\"error\"}") >= 1);
    assert_true(tl_metric(metrics, "duckstore_syncs_total{source=\"broken\",result=\"success\"}") == 0);
    assert_true(tl_metric(metrics, "duckstore_syncs_total{source=\"mon\",result=\"success\"}") >= 5);
    assert_true(tl_metric(metrics, "duckstore_source_state{source=\"broken\",state=\"error\"}") == 1);
    assert_true(tl_metric(metrics, "duckstore_source_state{source=\"mon\",state=\"ready\"}") == 1);
    assert_true(tl_metric(metrics, "duckstore_last_success_timestamp_seconds{source=\"mon\"}") > 1.7e9);
    free(metrics);
    stop_ok(&srv);

    /* The rows are in DuckDB as PostgreSQL has them. */
    char *out = NULL;
    int rc = tl_run(
        &out, "'%s' --config-dir '%s' query 'SELECT count(*), count(DISTINCT dataset_id) FROM mon_data'",
        getenv("DUCKSTORE_BIN"), g_config);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "47\t25"));
    free(out);
}

/* POST /api/store/sync/NAME/cancel: 404, 409 with nothing running, 400
 * for a bad sync_id, 409 for another sync than the one named; the running
 * sync cancelled before its commit (200, result cancelled) changes
 * nothing; GET /api/store/plan[/NAME]: the plan's lines, 404, 405. */
static void test_cancel_and_plan(void **state)
{
    (void)state;
    tl_server srv;
    tl_server_start(&srv, g_config, g_log, NULL);
    expect_exact(
        &srv, "POST", "/api/store/sync/slow/cancel", NULL, 409,
        "{\"success\":false,\"error\":\"slow is not syncing: nothing to cancel\",\"detail\":\"slow is "
        "not syncing: nothing to cancel\"}");
    expect_exact(&srv, "POST", "/api/store/sync/nosuch/cancel", NULL, 404,
                 "{\"success\":false,\"error\":\"no source named "
                 "\\\"nosuch\\\"\",\"sources\":[\"broken\",\"mon\",\"slow\"],\"detail\":\"no source named "
                 "\\\"nosuch\\\"\"}");
    expect_exact(
        &srv, "POST", "/api/store/sync/slow/cancel?sync_id=x", NULL, 400,
        "{\"success\":false,\"error\":\"sync_id must be a positive integer (progress.sync_id of the "
        "status)\",\"detail\":\"sync_id must be a positive integer (progress.sync_id of the status)\"}");
    expect_405(&srv, "GET", "/api/store/sync/slow/cancel", "POST",
               "{\"success\":false,\"error\":\"use POST\",\"detail\":\"use POST\"}");

    /* A first sync, then one held at the gate and cancelled. */
    json_decref(sync_and_wait(&srv, "/api/store/sync/slow", "slow_data", "ready"));
    json_t *before = tl_server_dataset(&srv, "slow_data");
    tl_pg_exec(g_pg, "INSERT INTO traces VALUES (1000, '2026-02-14 10:00:00+00', 'new')");
    slow_hold(true);
    expect_exact(&srv, "POST", "/api/store/sync/slow?full=true", NULL, 202,
                 "{\"success\":true,\"message\":\"full sync of slow started\"}");
    json_t *ds = tl_server_dataset(&srv, "slow_data");
    json_int_t id = json_integer_value(json_object_get(json_object_get(ds, "progress"), "sync_id"));
    json_decref(ds);
    assert_true(id > 0);
    expect_exact(
        &srv, "POST", tl_keepf("/api/store/sync/slow/cancel?sync_id=%lld", (long long)id + 1), NULL, 409,
        tl_keepf("{\"success\":false,\"error\":\"the running sync of slow is sync %lld (manual), not "
                 "sync %lld: not cancelled\",\"sync_id\":%lld,\"trigger\":\"manual\",\"detail\":\"the "
                 "running sync of slow is sync %lld (manual), not sync %lld: not cancelled\"}",
                 (long long)id, (long long)id + 1, (long long)id, (long long)id, (long long)id + 1));
    expect_exact(&srv, "POST", tl_keepf("/api/store/sync/slow/cancel?sync_id=%lld", (long long)id), NULL, 200,
                 tl_keepf("{\"success\":true,\"message\":\"the sync of slow was cancelled before its commit; "
                          "its data, watermarks and status are unchanged\",\"sync_id\":%lld,\"trigger\":"
                          "\"manual\",\"result\":\"cancelled\"}",
                          (long long)id));
    slow_hold(false);
    ds = tl_server_dataset(&srv, "slow_data");
    assert_true(json_equal(ds, before));
    json_decref(ds);
    json_decref(before);
    expect_exact(&srv, "POST", tl_keepf("/api/store/sync/slow/cancel?sync_id=%lld", (long long)id), NULL, 409,
                 tl_keepf("{\"success\":false,\"error\":\"slow is not syncing: sync %lld is not running\","
                          "\"sync_id\":%lld,\"detail\":\"slow is not syncing: sync %lld is not running\"}",
                          (long long)id, (long long)id, (long long)id));
    tl_pg_exec(g_pg, "DELETE FROM traces WHERE id = 1000");

    /* The plan: the lines duckstore plan prints. */
    char *raw = NULL;
    json_t *doc = tl_http_json(srv.port, "GET", "/api/store/plan/slow", NULL, 200, &raw);
    assert_true(json_is_true(json_object_get(doc, "success")));
    assert_string_equal(tl_json_str(doc, "source"), "slow");
    json_t *lines = json_object_get(doc, "lines");
    assert_true(json_array_size(lines) >= 4);
    tl_assert_contains(json_string_value(json_array_get(lines, 0)), "slow (");
    tl_assert_contains(json_string_value(json_array_get(lines, 0)), "slow_db.yaml:1) -> slow_data, from ");
    assert_string_equal(json_string_value(json_array_get(lines, 1)),
                        "  slow_data (query): full sync: no incremental_column is configured");
    tl_assert_contains(raw, "\"    SQL:            COPY (SELECT ");
    json_decref(doc);
    free(raw);
    doc = tl_http_json(srv.port, "GET", "/api/store/plan/broken", NULL, 200, &raw);
    assert_true(json_is_false(json_object_get(doc, "success")));
    assert_string_equal(tl_json_str(doc, "error_kind"), "postgresql");
    assert_non_null(tl_json_str(doc, "error"));
    json_decref(doc);
    free(raw);
    doc = tl_http_json(srv.port, "GET", "/api/store/plan", NULL, 200, &raw);
    json_t *plans = json_object_get(doc, "plans");
    assert_int_equal(json_array_size(plans), 3);
    assert_true(json_is_false(json_object_get(doc, "success"))); /* broken fails */
    assert_string_equal(tl_json_str(json_array_get(plans, 2), "source"), "slow");
    json_decref(doc);
    free(raw);
    expect_exact(&srv, "GET", "/api/store/plan/nosuch", NULL, 404,
                 "{\"success\":false,\"error\":\"no source named "
                 "\\\"nosuch\\\"\",\"sources\":[\"broken\",\"mon\",\"slow\"],\"detail\":\"no source named "
                 "\\\"nosuch\\\"\"}");
    expect_405(&srv, "POST", "/api/store/plan/slow", "GET, HEAD",
               "{\"success\":false,\"error\":\"use GET\",\"detail\":\"use GET\"}");
    stop_ok(&srv);
}

static void test_token_auth(void **state)
{
    (void)state;
    tl_server srv;
    tl_server_start(&srv, g_config, g_log, TOKEN);
    static const char unauthorized[] = "{\"success\":false,\"error\":\"missing or wrong bearer "
                                       "token\",\"detail\":\"missing or wrong bearer token\"}";
    static const char *const protected_[][2] = {{"GET", "/api/store/status"},
                                                {"GET", "/metrics"},
                                                {"POST", "/api/store/sync/mon"},
                                                {"POST", "/api/store/sync"},
                                                {"POST", "/api/store/sync/mon/reset-watermark"},
                                                {"GET", "/api/nope"},
                                                {"POST", "/api/store/sync/nosuch"}};
    static const char *const bad_headers[] = {
        NULL,
        "Authorization: Bearer wrong\r\n",
        "Authorization: Bearer " TOKEN "x\r\n",
        "Authorization: Bearer t0ken-for-test\r\n",
        "Authorization: Bearer \r\n",
        "Authorization: Basic dXNlcjpwYXNz\r\n",
        "Authorization: " TOKEN "\r\n",
    };
    for (size_t p = 0; p < sizeof protected_ / sizeof protected_[0]; p++) {
        for (size_t h = 0; h < sizeof bad_headers / sizeof bad_headers[0]; h++) {
            tl_http_response resp;
            assert_true(tl_http_request(srv.port, protected_[p][0], protected_[p][1], bad_headers[h], NULL, 0,
                                        &resp));
            if (resp.status != 401)
                fail_msg("%s %s with %s: %d", protected_[p][0], protected_[p][1],
                         bad_headers[h] ? bad_headers[h] : "no header", resp.status);
            assert_string_equal(resp.content_type, "application/json");
            assert_string_equal(resp.body, unauthorized);
            char buf[64];
            assert_non_null(tl_http_header(&resp, "WWW-Authenticate", buf, sizeof buf));
            assert_string_equal(buf, "Bearer");
            tl_http_response_free(&resp);
        }
    }
    /* Nothing was started by those requests. */
    json_t *ds = tl_server_dataset(&srv, "mon_data");
    assert_string_equal(tl_json_str(ds, "state"), "ready");
    json_decref(ds);
    char *metrics = tl_server_metrics(&srv);
    assert_true(tl_metric(metrics, "duckstore_syncs_total{source=\"mon\",result=\"success\"}") == 0);
    free(metrics);

    /* The right token opens everything; the scheme is case-insensitive. */
    json_decref(tl_http_json(srv.port, "GET", "/api/store/status", TOKEN, 200, NULL));
    expect_exact(&srv, "GET", "/api/nope", TOKEN, 404,
                 "{\"success\":false,\"error\":\"no such endpoint; see docs/api.md\",\"detail\":\"no such "
                 "endpoint; see docs/api.md\"}");
    tl_http_response resp;
    assert_true(tl_http_request(srv.port, "GET", "/api/store/status", "Authorization: bearer " TOKEN "\r\n",
                                NULL, 0, &resp));
    assert_int_equal(resp.status, 200);
    tl_http_response_free(&resp);
    /* /health stays open, and ignores a wrong token. */
    assert_true(tl_http_request(srv.port, "GET", "/health", NULL, NULL, 0, &resp));
    assert_int_equal(resp.status, 200);
    tl_http_response_free(&resp);
    assert_true(
        tl_http_request(srv.port, "GET", "/health", "Authorization: Bearer wrong\r\n", NULL, 0, &resp));
    assert_int_equal(resp.status, 200);
    tl_http_response_free(&resp);

    /* scripts/sync-once.sh: token from the environment, exit codes. */
    const char *srcdir = getenv("DUCKSTORE_SOURCE_DIR");
    char script[1024];
    snprintf(script, sizeof script, "%s/scripts/sync-once.sh", srcdir ? srcdir : ".");
    char *out = NULL;
    int rc = tl_run(&out, "DUCKSTORE_API_TOKEN=%s '%s' mon --url http://127.0.0.1:%u --interval 0.2", TOKEN,
                    script, (unsigned)srv.port);
    if (rc != 0)
        fail_msg("sync-once.sh mon: exit %d: %s", rc, out);
    assert_non_null(strstr(out, "sync-once: sync of mon started"));
    assert_non_null(strstr(out, "sync-once: mon_data ready: 47 rows, incremental sync (+0 rows)"));
    free(out);
    rc = tl_run(&out, "DUCKSTORE_API_TOKEN=%s '%s' mon --full --url http://127.0.0.1:%u/ --interval 0.2",
                TOKEN, script, (unsigned)srv.port);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "sync-once: mon_data ready: 47 rows, full sync"));
    free(out);
    rc = tl_run(&out, "DUCKSTORE_API_TOKEN=%s '%s' broken --url http://127.0.0.1:%u --interval 0.2", TOKEN,
                script, (unsigned)srv.port);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "sync-once: broken_data failed: broken: "));
    assert_non_null(strstr(out, "no_such_database"));
    free(out);
    /* While slow syncs, a second run waits for that sync: it runs in the
     * background until it says so, then the sync is let finish. */
    slow_hold(true);
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/slow", TOKEN, 202, NULL));
    char *bg_out = path_in(g_dir, "sync-once.out"), *bg_rc = path_in(g_dir, "sync-once.rc");
    rc = tl_run(&out,
                "(DUCKSTORE_API_TOKEN=%s '%s' slow --url http://127.0.0.1:%u --interval 0.2 >'%s' 2>&1;"
                " echo $? >'%s.tmp' && mv '%s.tmp' '%s') </dev/null >/dev/null 2>&1 &",
                TOKEN, script, (unsigned)srv.port, bg_out, bg_rc, bg_rc, bg_rc);
    assert_int_equal(rc, 0);
    free(out);
    wait_for_text(bg_out, "waiting for that sync");
    slow_hold(false);
    wait_for_text(bg_rc, "\n");
    char *code = tl_read_file(bg_rc);
    assert_int_equal(atoi(code), 0);
    free(code);
    out = tl_read_file(bg_out);
    free(bg_out);
    free(bg_rc);
    assert_non_null(strstr(out, "slow is already syncing; waiting for that sync"));
    assert_non_null(strstr(out, "sync-once: slow_data ready: 25 rows"));
    free(out);
    rc = tl_run(&out, "unset DUCKSTORE_API_TOKEN; '%s' mon --url http://127.0.0.1:%u", script,
                (unsigned)srv.port);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "HTTP 401: missing or wrong bearer token"));
    free(out);
    rc = tl_run(&out, "DUCKSTORE_API_TOKEN=%s '%s' nosuch --url http://127.0.0.1:%u", TOKEN, script,
                (unsigned)srv.port);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "HTTP 404: no source named \"nosuch\""));
    assert_non_null(strstr(out, "known sources: broken, mon, slow"));
    free(out);
    rc = tl_run(&out, "'%s' mon --url http://127.0.0.1:1", script);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "cannot reach http://127.0.0.1:1"));
    free(out);
    rc = tl_run(&out, "'%s'", script);
    assert_int_equal(rc, 2);
    free(out);
    stop_ok(&srv);
}

/* Runs last: the password of the source URLs is in no answer and not in
 * the server's log, though every test above used those URLs. */
static void test_password_never_leaks(void **state)
{
    (void)state;
    const char *password = getenv("DUCKSTORE_TEST_PG_PASSWORD");
    if (password == NULL || password[0] == '\0')
        fail_msg("DUCKSTORE_TEST_PG_PASSWORD is not set (scripts/with-test-pg.sh sets it)");
    char *log = tl_read_file(g_log), *transcript = tl_read_file(g_transcript);
    assert_non_null(log);
    assert_non_null(transcript);
    assert_non_null(strstr(log, "no_such_database")); /* the failure was logged ... */
    assert_non_null(strstr(transcript, "no_such_database"));
    if (strstr(log, password))
        fail_msg("the password is in the server log:\n%s", log);
    if (strstr(transcript, password))
        fail_msg("the password is in an answer:\n%s", strstr(transcript, password));
    free(log);
    free(transcript);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_endpoints_and_errors, teardown_test),
        cmocka_unit_test_teardown(test_sync_over_http, teardown_test),
        cmocka_unit_test_teardown(test_cancel_and_plan, teardown_test),
        cmocka_unit_test_teardown(test_token_auth, teardown_test),
        cmocka_unit_test(test_password_never_leaks),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
