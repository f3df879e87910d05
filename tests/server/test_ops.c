/* What an operator sees of `duckstore serve`: JSON log lines (every line
 * parses, and real syncs carry source, table, rows, duration, trigger,
 * SQLSTATE), the kind of each sync (startup, scheduled, manual) in the text
 * log and in the status, the per-table metrics and the age of the newest
 * data, a taken port refused before anything else, and the warning for a
 * listener beyond loopback without a token. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"
#include "tl_http.h"

/* The manual sync of `fresh` waits for this advisory lock while the test
 * holds it, so the status is seen while it runs, however fast the machine. */
#define GATE 5151
/* fresh_t's newest created_at: 2020-01-01 00:00:10 UTC. */
#define NEWEST_UNIX 1577836810.0

static char *g_dir, *g_conninfo;
static PGconn *g_pg;

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("ops"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg,
               "CREATE TABLE fresh_t (id int PRIMARY KEY, created_at timestamptz NOT NULL);"
               "INSERT INTO fresh_t SELECT g, timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second'"
               " FROM generate_series(1, 10) g;");
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
    return 0;
}

static int teardown_test(void **state)
{
    (void)state;
    tl_server_kill_all();
    tl_free_kept();
    return 0;
}

/* A config directory g_dir/name: duckdb.yaml with store_lines under
 * duckdb: (the file g_dir/name.duckdb), and the given source files
 * (NULL-terminated pairs of source name and body lines after its url). */
static char *make_config(const char *name, const char *store_lines, const char *const *sources)
{
    char *dir = tl_keepf("%s/%s", g_dir, name);
    mkdir(dir, 0755);
    tl_write_filef(tl_keepf("%s/duckdb.yaml", dir), "duckdb:\n  path: %s/%s.duckdb\n%s", g_dir, name,
                   store_lines);
    for (size_t i = 0; sources[i]; i += 2)
        tl_write_filef(tl_keepf("%s/%s_db.yaml", dir, sources[i]), "%s_db:\n  url: \"%s\"\n%s", sources[i],
                       g_conninfo, sources[i + 1]);
    return dir;
}

static const char fresh_body[] = "  query: |\n"
                                 "    WITH gate AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(5151))\n"
                                 "    SELECT f.id, f.created_at FROM fresh_t f, gate\n"
                                 "  incremental_column: created_at\n";

/* Every line of the log as a JSON object; fails the test on a line that
 * is not one. Caller decrefs the array. */
static json_t *json_lines(const char *log_path)
{
    char *text = tl_read_file(log_path);
    assert_non_null(text);
    json_t *lines = json_array();
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t jerr;
        json_t *doc = json_loads(line, 0, &jerr);
        if (!json_is_object(doc))
            fail_msg("a log line is not a JSON object (%s):\n%s", jerr.text, line);
        const char *keys[] = {"time", "level", "source", "table", "event", "message", "fields"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
            if (json_object_get(doc, keys[k]) == NULL)
                fail_msg("log line without \"%s\":\n%s", keys[k], line);
        /* 2026-11-30T13:20:47.123Z */
        const char *t = tl_json_str(doc, "time");
        if (t == NULL || strlen(t) != 24 || t[10] != 'T' || t[19] != '.' || t[23] != 'Z')
            fail_msg("time is not ISO 8601 UTC with milliseconds:\n%s", line);
        json_array_append_new(lines, doc);
    }
    free(text);
    return lines;
}

/* The first line of that event and source whose fields hold the given
 * string (key = value; NULL key: any); NULL when none. */
static json_t *find_event(json_t *lines, const char *event, const char *source, const char *key,
                          const char *value)
{
    size_t i;
    json_t *doc;
    json_array_foreach(lines, i, doc)
    {
        const char *e = tl_json_str(doc, "event"), *s = tl_json_str(doc, "source");
        if (e == NULL || strcmp(e, event) != 0 || (source && (s == NULL || strcmp(s, source) != 0)))
            continue;
        const char *v = key ? tl_json_str(json_object_get(doc, "fields"), key) : NULL;
        if (key == NULL || (v != NULL && strcmp(v, value) == 0))
            return doc;
    }
    return NULL;
}

static json_t *fields_of(json_t *doc)
{
    json_t *f = json_object_get(doc, "fields");
    assert_true(json_is_object(f));
    return f;
}

/* Polls the log until an event matches (the scheduler's syncs come when
 * they come); fails after 60 s showing the log. */
static json_t *wait_event(const char *log_path, const char *event, const char *source, const char *key,
                          const char *value)
{
    double deadline = tl_now_ms() + 60000;
    for (;;) {
        json_t *lines = json_lines(log_path);
        json_t *doc = find_event(lines, event, source, key, value);
        if (doc != NULL) {
            json_incref(doc);
            json_decref(lines);
            return doc;
        }
        json_decref(lines);
        if (tl_now_ms() > deadline)
            fail_msg("no %s of %s with %s = %s in 60 s; log:\n%s", event, source, key ? key : "-",
                     value ? value : "-", tl_keep(tl_read_file(log_path)));
        tl_sleep_ms(50);
    }
}

static void test_json_log_lines_of_real_syncs(void **state)
{
    (void)state;
    static const char *const sources[] = {
        "fresh",
        fresh_body,
        "broken",
        "  query: SELECT 1 / (n - 3) AS v FROM generate_series(1, 5) n\n",
        "warned",
        "  query: SELECT 1 AS one\n  incremental_column: created_at\n",
        "tick",
        "  query: SELECT id, created_at FROM fresh_t\n  incremental_column: created_at\n"
        "  refresh_interval_minutes: 0.01\n  full_refresh_interval_minutes: 0.01\n",
        NULL};
    char *dir = make_config("jsonlog", "  log_format: json\n", sources);
    char *log = tl_keepf("%s/jsonlog.log", g_dir);
    tl_server srv;
    tl_server_start(&srv, dir, log, "ops-token");

    /* Startup syncs: named so, with rows, duration and each table. */
    json_t *ds = tl_server_wait_state(&srv, "fresh_data", "ready", 60);
    json_decref(ds);
    json_t *start = wait_event(log, "sync_start", "fresh", "trigger", "startup");
    assert_string_equal(tl_json_str(start, "level"), "info");
    assert_true(json_is_false(json_object_get(fields_of(start), "full")));
    tl_assert_contains(tl_json_str(start, "message"), "fresh: sync started (startup)");
    json_decref(start);
    json_t *end = wait_event(log, "sync_end", "fresh", "trigger", "startup");
    json_t *f = fields_of(end);
    assert_string_equal(tl_json_str(f, "result"), "success");
    assert_string_equal(tl_json_str(f, "sync_type"), "full");
    assert_int_equal(json_integer_value(json_object_get(f, "rows")), 10);
    assert_int_equal(json_integer_value(json_object_get(f, "rows_added")), 10);
    assert_true(json_is_real(json_object_get(f, "duration_s")));
    assert_true(json_real_value(json_object_get(f, "duration_s")) > 0);
    assert_true(json_is_null(json_object_get(end, "table")));
    json_decref(end);
    json_t *table = wait_event(log, "sync_table", "fresh", "trigger", "startup");
    assert_string_equal(tl_json_str(table, "table"), "fresh_data");
    f = fields_of(table);
    assert_string_equal(tl_json_str(f, "sync_type"), "full");
    assert_int_equal(json_integer_value(json_object_get(f, "rows_read")), 10);
    assert_int_equal(json_integer_value(json_object_get(f, "rows")), 10);
    assert_true(json_integer_value(json_object_get(f, "bytes_read")) > 0);
    json_decref(table);

    /* A failure PostgreSQL reports: an ERROR line with its SQLSTATE. */
    json_t *failed = wait_event(log, "sync_end", "broken", "result", "error");
    assert_string_equal(tl_json_str(failed, "level"), "error");
    assert_string_equal(tl_json_str(fields_of(failed), "sqlstate"), "22012");
    assert_string_equal(tl_json_str(fields_of(failed), "trigger"), "startup");
    tl_assert_contains(tl_json_str(failed, "message"), "broken: sync failed: ");
    tl_assert_contains(tl_json_str(failed, "message"), "division by zero");
    json_decref(failed);

    /* A warning of the sync: WARN, with its source. */
    json_t *warning = wait_event(log, "sync_warning", "warned", NULL, NULL);
    assert_string_equal(tl_json_str(warning, "level"), "warn");
    tl_assert_contains(tl_json_str(warning, "message"), "incremental_column \"created_at\"");
    json_decref(warning);

    /* A periodic full refresh is a scheduled sync, not a requested one. */
    json_t *tick = wait_event(log, "sync_start", "tick", "trigger", "scheduled");
    f = fields_of(tick);
    assert_true(json_is_true(json_object_get(f, "full")));
    assert_string_equal(tl_json_str(f, "full_reason"), "full_refresh_interval_minutes reached");
    json_decref(tick);
    json_decref(wait_event(log, "sync_end", "tick", "trigger", "scheduled"));

    /* A manual sync, seen as such in the status while it runs and in the log. */
    tl_pg_exec(g_pg, "SELECT pg_advisory_lock(%d)", GATE);
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/fresh", "ops-token", 202, NULL));
    ds = tl_server_dataset(&srv, "fresh_data");
    assert_string_equal(tl_json_str(ds, "state"), "syncing");
    assert_string_equal(tl_json_str(json_object_get(ds, "progress"), "trigger"), "manual");
    json_decref(ds);
    tl_pg_exec(g_pg, "SELECT pg_advisory_unlock(%d)", GATE);
    json_decref(tl_server_wait_state(&srv, "fresh_data", "ready", 60));
    end = wait_event(log, "sync_end", "fresh", "trigger", "manual");
    assert_string_equal(tl_json_str(fields_of(end), "sync_type"), "incremental");
    json_decref(end);

    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    /* The access log and the shutdown lines are JSON too; no password. */
    json_t *lines = json_lines(log);
    assert_non_null(find_event(lines, "listening", NULL, NULL, NULL));
    size_t i;
    json_t *doc;
    bool access = false;
    json_array_foreach(lines, i, doc)
    {
        const char *m = tl_json_str(doc, "message");
        access |= m != NULL && strstr(m, "GET /api/store/status 200") != NULL;
    }
    assert_true(access);
    json_decref(lines);
    tl_assert_clean_log(log);
}

/* The text format names the kind of every sync. */
static void test_text_log_names_sync_kinds(void **state)
{
    (void)state;
    static const char *const sources[] = {
        "tock",
        "  query: SELECT id, created_at FROM fresh_t\n  incremental_column: created_at\n"
        "  refresh_interval_minutes: 0.01\n  full_refresh_interval_minutes: 0.01\n",
        NULL};
    char *dir = make_config("textlog", "", sources);
    char *log = tl_keepf("%s/textlog.log", g_dir);
    tl_server srv;
    tl_server_start(&srv, dir, log, NULL);
    /* 409 while a startup or scheduled sync runs: asked again until it starts. */
    double deadline = tl_now_ms() + 60000;
    for (int status = 0; status != 202;) {
        tl_http_response resp;
        tl_http_request(srv.port, "POST", "/api/store/sync/tock?full=true", NULL, NULL, 0, &resp);
        status = resp.status;
        tl_http_response_free(&resp);
        if (status != 202 && status != 409)
            fail_msg("POST /api/store/sync/tock?full=true answered %d", status);
        if (status == 409 && tl_now_ms() > deadline)
            fail_msg("tock stayed busy for 60 s");
        if (status == 409)
            tl_sleep_ms(20);
    }
    static const char *const want[] = {
        "INFO  tock: sync started (startup)\n",
        "INFO  tock: sync started (scheduled, full: full_refresh_interval_minutes reached)\n",
        "INFO  tock: sync started (manual, full: full requested)\n",
        "rows (+0) in ",
        " (scheduled)\n",
        "INFO  tock: tock_data: full, 10 rows read, 10 rows in the table\n",
        /* Read at start: a reload keeps them, and says so. */
        "WARN  config reload: duckdb.read_memory_limit changed from 512MB to 300MB; needs a restart",
        "WARN  config reload: duckdb.log_format changed from text to json; needs a restart",
        "INFO  config reloaded from ",
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        if (strstr(want[k], "duckdb.read_memory_limit changed") != NULL) {
            tl_write_filef(
                tl_keepf("%s/duckdb.yaml", dir),
                "duckdb:\n  path: %s/textlog.duckdb\n  log_format: json\n  read_memory_limit: 300MB\n",
                g_dir);
            kill(srv.pid, SIGHUP);
        }
        for (;;) {
            char *text = tl_read_file(log);
            bool seen = text != NULL && strstr(text, want[k]) != NULL;
            if (seen) {
                free(text);
                break;
            }
            if (tl_now_ms() > deadline)
                fail_msg("no \"%s\" in the log in 60 s:\n%s", want[k], text ? text : "");
            free(text);
            tl_sleep_ms(50);
        }
    }
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    char *text = tl_keep(tl_read_file(log));
    assert_null(strstr(text, "(full)"));
    assert_null(strstr(text, "\"event\""));
    tl_assert_clean_log(log);
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Rows, bytes and the age of the newest data per table; the age grows
 * between two scrapes with no sync in between. */
static void test_metrics_freshness(void **state)
{
    (void)state;
    static const char *const sources[] = {
        "aged",
        "  query: SELECT id, created_at FROM aged_t WHERE id / (SELECT count(*) FROM aged_gate) > -1\n"
        "  incremental_column: created_at\n",
        "ids", "  query: SELECT id FROM fresh_t\n  incremental_column: id\n", NULL};
    /* aged_t's reads divide by the rows of aged_gate: emptied, a sync
     * fails while reading (not a config error, which keeps watermarks). */
    tl_pg_exec(g_pg, "CREATE TABLE aged_t AS SELECT * FROM fresh_t;"
                     "CREATE TABLE aged_gate AS SELECT 1 AS x;");
    char *dir = make_config("metrics", "", sources);
    char *log = tl_keepf("%s/metrics.log", g_dir);
    tl_server srv;
    tl_server_start(&srv, dir, log, NULL);
    json_decref(tl_server_wait_state(&srv, "aged_data", "ready", 60));
    json_decref(tl_server_wait_state(&srv, "ids_data", "ready", 60));

    static const char age_series[] = "duckstore_data_age_seconds{source=\"aged\",table=\"aged_data\"}";
    static const char ok_series[] = "duckstore_syncs_total{source=\"aged\",result=\"success\"}";
    double before = wall_s();
    char *m1 = tl_keep(tl_server_metrics(&srv));
    double age1 = tl_metric(m1, age_series);
    /* At least now - 2020-01-01 00:00:10 (the sample is printed in ms). */
    if (age1 < before - NEWEST_UNIX - 0.001)
        fail_msg("age %.3f below the known %.3f", age1, before - NEWEST_UNIX);
    assert_true(age1 < wall_s() - NEWEST_UNIX + 0.001);
    assert_true(tl_metric(m1, "duckstore_table_rows{source=\"aged\",table=\"aged_data\"}") == 10);
    assert_true(tl_metric(m1, "duckstore_bytes_read_total{source=\"aged\",table=\"aged_data\"}") > 10 * 12);
    assert_true(tl_metric(m1, "duckstore_table_rows{source=\"ids\",table=\"ids_data\"}") == 10);
    assert_true(tl_metric(m1, "duckstore_consecutive_failures{source=\"aged\"}") == 0);
    /* An integer watermark has no time: no age sample. */
    assert_null(strstr(m1, "duckstore_data_age_seconds{source=\"ids\""));

    double deadline = tl_now_ms() + 30000, age2 = age1;
    char *m2 = NULL;
    while (age2 <= age1) {
        if (tl_now_ms() > deadline)
            fail_msg("the data age stayed at %.3f for 30 s", age1);
        tl_sleep_ms(10);
        free(m2);
        m2 = tl_server_metrics(&srv);
        age2 = tl_metric(m2, age_series);
    }
    /* It grew with the clock, not through a sync. */
    assert_true(tl_metric(m2, ok_series) == tl_metric(m1, ok_series));
    assert_true(tl_metric(m2, "duckstore_table_rows{source=\"aged\",table=\"aged_data\"}") == 10);

    /* A failed sync clears the watermark, not the data: the age stays. */
    tl_pg_exec(g_pg, "DELETE FROM aged_gate");
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/aged", NULL, 202, NULL));
    json_t *ds = tl_server_wait_state(&srv, "aged_data", "error", 60);
    assert_true(json_is_null(json_object_get(json_object_get(ds, "watermarks"), "aged_data")));
    json_decref(ds);
    char *m3 = tl_keep(tl_server_metrics(&srv));
    assert_true(tl_metric(m3, "duckstore_consecutive_failures{source=\"aged\"}") == 1);
    assert_true(tl_metric(m3, age_series) > age2);
    free(m2);
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(log);
}

/* A loopback listener on a port the kernel picks; returns the socket. */
static int hold_port(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A taken port: exit 2 at once, naming the port, before any sync and
 * before the DuckDB file exists. */
static void test_taken_port_exits_at_once(void **state)
{
    (void)state;
    static const char *const sources[] = {"fresh", fresh_body, NULL};
    char *dir = make_config("taken", "", sources);
    char *db = tl_keepf("%s/taken.duckdb", g_dir);
    uint16_t port;
    int fd = hold_port(&port);
    const char *bin = getenv("DUCKSTORE_BIN");
    assert_non_null(bin);
    for (int json = 0; json < 2; json++) {
        char *out = NULL;
        double t0 = tl_now_ms();
        int rc = tl_run(&out, "%s %s --config-dir %s serve --listen 127.0.0.1:%u", bin,
                        json ? "--log-format json" : "", dir, port);
        double elapsed_ms = tl_now_ms() - t0;
        tl_keep(out);
        if (rc != 2)
            fail_msg("exit %d, not 2:\n%s", rc, out);
        tl_assert_contains(out, tl_keepf("port %u in use", port));
        assert_null(strstr(out, "sync started"));
        assert_null(strstr(out, "port 0"));
        assert_int_equal(access(db, F_OK), -1);
        /* Process start and config load only: no sync, no DuckDB. */
        assert_true(elapsed_ms < 10000);
        if (json) {
            json_error_t jerr;
            json_t *doc = json_loads(out, 0, &jerr);
            if (doc == NULL)
                fail_msg("not one JSON line (%s):\n%s", jerr.text, out);
            assert_string_equal(tl_json_str(doc, "level"), "error");
            assert_string_equal(tl_json_str(doc, "event"), "start_failed");
            assert_int_equal(json_integer_value(json_object_get(fields_of(doc), "exit_code")), 2);
            json_decref(doc);
        }
    }
    close(fd);
}

/* Beyond loopback without a token: a warning. The DuckDB path is a
 * directory, so the server stops right after binding and warning: the
 * warning comes before the file is opened. */
static void test_warning_beyond_loopback_without_token(void **state)
{
    (void)state;
    char *dir = tl_keepf("%s/wide", g_dir);
    mkdir(dir, 0755);
    tl_write_filef(tl_keepf("%s/duckdb.yaml", dir), "duckdb:\n  path: %s\n", g_dir);
    const char *bin = getenv("DUCKSTORE_BIN");
    static const char warning[] = "reaches beyond loopback and DUCKSTORE_API_TOKEN is not set";
    struct {
        const char *listen, *env;
        bool warns;
    } cases[] = {{"0.0.0.0:0", "unset DUCKSTORE_API_TOKEN;", true},
                 {"0.0.0.0:0", "DUCKSTORE_API_TOKEN=secret-token-1 &&export DUCKSTORE_API_TOKEN;", false},
                 {"127.0.0.1:0", "unset DUCKSTORE_API_TOKEN;", false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL;
        int rc =
            tl_run(&out, "%s %s --config-dir %s serve --listen %s", cases[i].env, bin, dir, cases[i].listen);
        tl_keep(out);
        assert_int_equal(rc, 1); /* the directory is no DuckDB file */
        tl_assert_contains(out, "cannot open DuckDB file");
        if (cases[i].warns) {
            tl_assert_contains(out, tl_keepf("WARN  --listen %s %s", cases[i].listen, warning));
            tl_assert_contains(out, "set DUCKSTORE_API_TOKEN");
        } else if (strstr(out, warning) != NULL) {
            fail_msg("warned for %s:\n%s", cases[i].listen, out);
        }
        assert_null(strstr(out, "secret-token-1"));
    }
}

/* --log-format and log_format take text or json only. */
static void test_log_format_values(void **state)
{
    (void)state;
    char *dir = tl_keepf("%s/fmt", g_dir);
    mkdir(dir, 0755);
    const char *bin = getenv("DUCKSTORE_BIN");
    char *out = NULL;
    tl_write_filef(tl_keepf("%s/duckdb.yaml", dir), "duckdb:\n  path: %s/fmt.duckdb\n  log_format: yaml\n",
                   g_dir);
    assert_int_equal(tl_run(&out, "%s --config-dir %s status", bin, dir), 2);
    tl_assert_contains(tl_keep(out),
                       "/duckdb.yaml:3: log_format must be \"text\" or \"json\" (got \"yaml\")");
    assert_int_equal(tl_run(&out, "%s --log-format xml --config-dir %s status", bin, dir), 2);
    tl_assert_contains(tl_keep(out), "--log-format must be text or json, got \"xml\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_log_format_values, teardown_test),
        cmocka_unit_test_teardown(test_taken_port_exits_at_once, teardown_test),
        cmocka_unit_test_teardown(test_warning_beyond_loopback_without_token, teardown_test),
        cmocka_unit_test_teardown(test_metrics_freshness, teardown_test),
        cmocka_unit_test_teardown(test_text_log_names_sync_kinds, teardown_test),
        cmocka_unit_test_teardown(test_json_log_lines_of_real_syncs, teardown_test),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
