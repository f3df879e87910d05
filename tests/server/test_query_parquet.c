/* /api/store/query with real clients (curl, a raw socket) against a real
 * `duckstore serve`: Parquet extracts read back with DuckDB (exact rows and
 * types), the same refusals as the other formats, max_rows, a timeout, a
 * client leaving mid-stream (no thread or pipe left behind), and GET
 * arguments decoded in full (%2F in ?sql=). */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testlib.h"
#include "tl_http.h"

#define TOKEN "pq-t0ken"

static char *g_dir, *g_conninfo, *g_log;
static PGconn *g_pg;
static tl_server g_srv;

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("queryparquet"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg,
               "CREATE TABLE pq (id int PRIMARY KEY, amount numeric(12,3), ts timestamptz, note text,"
               " big bigint, ok boolean);"
               "INSERT INTO pq VALUES"
               " (1, 1234.500, '2024-01-02 03:04:05.123456+02', E'say \"hi\"\\nit''s, ok', 9007199254740993,"
               "  true),"
               " (2, -0.001, '2000-01-01 00:00:00+00', '', -5, false),"
               " (3, NULL, NULL, NULL, NULL, NULL);");
    g_dir = tl_mkdtemp();
    char path[700];
    snprintf(path, sizeof path, "%s/duckdb.yaml", g_dir);
    tl_write_filef(path,
                   "duckdb:\n  path: %s/store.duckdb\n  sync_mode: startup\n  query_concurrency: 2\n"
                   "  query_max_rows: 0\n  memory_limit: 512MB\n  query_memory_limit: 48MB\n",
                   g_dir);
    snprintf(path, sizeof path, "%s/pq_db.yaml", g_dir);
    tl_write_filef(path, "pq_db:\n  url: \"%s\"\n  query: SELECT * FROM pq\n", g_conninfo);
    if (asprintf(&g_log, "%s/serve.log", g_dir) < 0)
        fail_msg("out of memory");
    tl_server_start(&g_srv, g_dir, g_log, TOKEN);
    json_decref(tl_server_wait_state(&g_srv, "pq_data", "ready", 60));
    return 0;
}

static int teardown_group(void **state)
{
    (void)state;
    if (g_srv.pid != 0)
        assert_int_equal(tl_server_stop(&g_srv, 30, NULL), 0);
    tl_assert_clean_log(g_log);
    tl_server_kill_all();
    PQfinish(g_pg);
    tl_rmtree(g_dir);
    free(g_dir);
    free(g_log);
    free(g_conninfo);
    tl_free_kept();
    return 0;
}

/* curl with the token: the body goes to `out`, the headers (trailers
 * included) to `out`.h. Returns curl's exit status. */
static int curl(const char *args, const char *out)
{
    char *output = NULL;
    int rc =
        tl_run(&output, "curl -sS --max-time 120 -H 'Authorization: Bearer " TOKEN "' -D '%s.h' -o '%s' %s",
               out, out, args);
    if (rc != 0)
        print_error("curl %s: %s\n", args, output);
    free(output);
    return rc;
}

/* POSTs body as JSON with an Accept header into out; the status. */
static int post_to_file(const char *body, const char *accept, const char *out)
{
    char *body_file = tl_keepf("%s.req", out);
    tl_write_file(body_file, body);
    char *args = tl_keepf("-H 'Content-Type: application/json' -H 'Accept: %s' --data-binary '@%s' "
                          "'http://127.0.0.1:%u/api/store/query'",
                          accept, body_file, g_srv.port);
    assert_int_equal(curl(args, out), 0);
    char *headers = tl_read_file(tl_keepf("%s.h", out));
    int status = atoi(strchr(headers, ' ') + 1);
    free(headers);
    if (status >= 400 && strstr(accept, "parquet") != NULL)
        print_message("%s answered %d: %s\n", body, status, tl_keep(tl_read_file(out)));
    return status;
}

static char *header_text(const char *out)
{
    return tl_keep(tl_read_file(tl_keepf("%s.h", out)));
}

/* Each row of a query over the Parquet file as text, columns joined by
 * '|' (NULL as NULL), rows by '\n'. */
static char *read_parquet_rows(const char *file, const char *select)
{
    duckdb_database db;
    duckdb_connection con;
    assert_int_equal(duckdb_open(NULL, &db), DuckDBSuccess);
    assert_int_equal(duckdb_connect(db, &con), DuckDBSuccess);
    char *sql =
        tl_keepf("SELECT string_agg(line, chr(10) ORDER BY n) FROM (SELECT row_number() OVER () AS n, "
                 "concat_ws('|', *COLUMNS(*)) AS line FROM (SELECT coalesce(COLUMNS(*)::VARCHAR, 'NULL') "
                 "FROM (%s FROM read_parquet('%s'))))",
                 select, file);
    char *got = tl_duck_scalar(con, "%s", sql);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    return tl_keep(got ? got : strdup(""));
}

static char *describe_parquet(const char *file)
{
    duckdb_database db;
    duckdb_connection con;
    assert_int_equal(duckdb_open(NULL, &db), DuckDBSuccess);
    assert_int_equal(duckdb_connect(db, &con), DuckDBSuccess);
    char *got = tl_duck_scalar(
        con,
        "SELECT string_agg(column_name || ' ' || column_type, ', ') FROM (DESCRIBE FROM read_parquet('%s'))",
        file);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    return tl_keep(got);
}

static void test_get_decodes_arguments(void **state)
{
    (void)state;
    char *out = tl_keepf("%s/get.csv", g_dir);
    /* %2F is a slash in an argument; %00 stays as the three characters. */
    char *args =
        tl_keepf("'http://127.0.0.1:%u/api/store/query?sql=SELECT%%20%%27a%%2Fb%%2f%%27%%20AS%%20s,%%20"
                 "%%27x%%00y%%27%%20AS%%20n,%%20%%27%%25%%27%%20AS%%20p&format=csv'",
                 g_srv.port);
    assert_int_equal(curl(args, out), 0);
    char *body = tl_keep(tl_read_file(out));
    assert_string_equal(body, "s,n,p\r\na/b/,x%00y,%\r\n");
    /* In the path, %2F is still no separator. */
    assert_int_equal(curl(tl_keepf("'http://127.0.0.1:%u/api%%2Fstore/query?sql=SELECT+1'", g_srv.port), out),
                     0);
    tl_assert_contains(header_text(out), "HTTP/1.1 404");
}

static void test_parquet_extract(void **state)
{
    (void)state;
    char *out = tl_keepf("%s/all.parquet", g_dir);
    assert_int_equal(post_to_file("{\"sql\":\"SELECT * FROM pq_data ORDER BY id\"}",
                                  "application/vnd.apache.parquet", out),
                     200);
    char *h = header_text(out);
    tl_assert_contains(h, "Content-Type: application/vnd.apache.parquet");
    tl_assert_contains(h, "X-Duckstore-Row-Count: 3");
    tl_assert_contains(h, "X-Duckstore-Truncated: false");
    assert_string_equal(describe_parquet(out),
                        "id INTEGER, amount DECIMAL(12,3), ts TIMESTAMP WITH TIME ZONE, "
                        "note VARCHAR, big BIGINT, ok BOOLEAN");
    assert_string_equal(read_parquet_rows(out, "SELECT id, amount, strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ'), "
                                               "note, big, ok"),
                        "1|1234.500|2024-01-02T01:04:05.123456Z|say \"hi\"\nit's, ok|9007199254740993|true\n"
                        "2|-0.001|2000-01-01T00:00:00.000000Z||-5|false\n"
                        "3|NULL|NULL|NULL|NULL|NULL");
    assert_string_equal(read_parquet_rows(out, "SELECT count(*) FILTER (WHERE amount IS NULL), "
                                               "count(*) FILTER (WHERE note IS NULL)"),
                        "1|1");

    /* GET with ?format=parquet, and the other media type, with a bound
     * parameter; an empty result is a valid file too. */
    out = tl_keepf("%s/get.parquet", g_dir);
    assert_int_equal(curl(tl_keepf("'http://127.0.0.1:%u/api/store/query?sql=SELECT+id+FROM+pq_data+WHERE+id+"
                                   ">+%%3F+ORDER+BY+id&param=1&format=parquet'",
                                   g_srv.port),
                          out),
                     0);
    tl_assert_contains(header_text(out), "HTTP/1.1 200");
    assert_string_equal(read_parquet_rows(out, "SELECT id"), "2\n3");
    out = tl_keepf("%s/empty.parquet", g_dir);
    assert_int_equal(post_to_file("{\"sql\":\"SELECT id FROM pq_data WHERE id > ?\",\"params\":[10]}",
                                  "application/x-parquet", out),
                     200);
    assert_string_equal(describe_parquet(out), "id INTEGER");
    assert_string_equal(read_parquet_rows(out, "SELECT count(*)"), "0");
}

static void test_parquet_max_rows(void **state)
{
    (void)state;
    char *out = tl_keepf("%s/cap.parquet", g_dir);
    assert_int_equal(post_to_file("{\"sql\":\"SELECT range AS i FROM range(100000)\",\"max_rows\":3000}",
                                  "application/vnd.apache.parquet", out),
                     200);
    char *h = header_text(out);
    tl_assert_contains(h, "X-Duckstore-Max-Rows: 3000");
    tl_assert_contains(h, "X-Duckstore-Row-Count: 3000");
    tl_assert_contains(h, "X-Duckstore-Truncated: true");
    assert_string_equal(read_parquet_rows(out, "SELECT count(*), min(i), max(i)"), "3000|0|2999");
    /* Exactly max_rows rows: not truncated. */
    assert_int_equal(post_to_file("{\"sql\":\"SELECT range AS i FROM range(2048)\",\"max_rows\":2048}",
                                  "application/vnd.apache.parquet", out),
                     200);
    tl_assert_contains(header_text(out), "X-Duckstore-Truncated: false");
    assert_string_equal(read_parquet_rows(out, "SELECT count(*)"), "2048");
}

/* A refused or failed query gets its JSON error, not a broken file. */
static void expect_refused(const char *sql, int status, const char *needle)
{
    char *out = tl_keepf("%s/refused.out", g_dir);
    json_t *req = json_pack("{s:s}", "sql", sql);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    int got = post_to_file(body, "application/vnd.apache.parquet", out);
    free(body);
    char *text = tl_keep(tl_read_file(out));
    if (got != status)
        fail_msg("%s answered %d: %s", sql, got, text);
    tl_assert_contains(header_text(out), "Content-Type: application/json");
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    assert_non_null(doc);
    assert_true(json_is_false(json_object_get(doc, "success")));
    const char *detail = json_string_value(json_object_get(doc, "detail"));
    assert_non_null(detail);
    tl_assert_contains(detail, needle);
    json_decref(doc);
}

static void test_parquet_refusals(void **state)
{
    (void)state;
    expect_refused("DELETE FROM pq_data", 400, "the statement is of kind DELETE");
    expect_refused("COPY pq_data TO '/tmp/x.parquet' (FORMAT parquet)", 400, "reaches outside the cache");
    expect_refused("SELECT * FROM read_csv('/etc/passwd')", 400, "reaches outside the cache");
    expect_refused("SELECT * FROM glob('/proc/self/fd/*')", 400, "reaches outside the cache");
    expect_refused("SELECT * FROM read_parquet('/proc/self/fd/0')", 400, "reaches outside the cache");
    expect_refused("SELECT 1::HUGEINT AS h", 400, "column \"h\" holds HUGEINT values");
    expect_refused("SELECT [1::UHUGEINT] AS l", 400, "column \"l\" holds UHUGEINT values");
    expect_refused("SELECT CAST(note AS INTEGER) FROM pq_data WHERE id = 1", 400, "the query failed");
    /* 16,384 rows of 4 KB are more than the writer's 48MB: it has no temp
     * directory to spill to. */
    expect_refused("SELECT repeat(md5(range::VARCHAR), 128) AS wide FROM range(20000)", 422,
                   "a row group of 16384 rows does not fit the Parquet writer's memory, "
                   "duckdb.query_memory_limit (48MB)");
}

static void test_parquet_timeout(void **state)
{
    (void)state;
    char *out = tl_keepf("%s/slow.parquet", g_dir);
    assert_int_equal(
        post_to_file("{\"sql\":\"SELECT count(*) FROM range(1000000000000)\",\"timeout_ms\":300}",
                     "application/vnd.apache.parquet", out),
        504);
    tl_assert_contains(tl_keep(tl_read_file(out)), "ran longer than its timeout_ms (300 ms)");
}

static long vm_hwm_kb(pid_t pid)
{
    char *text = tl_keep(tl_read_file(tl_keepf("/proc/%d/status", (int)pid)));
    const char *hwm = strstr(text, "VmHWM:");
    assert_non_null(hwm);
    return strtol(hwm + 6, NULL, 10);
}

/* 5M rows of hard-to-compress text (~250 MB of Parquet): the server's
 * peak memory does not grow with the size of the extract. */
static void test_parquet_bounded_memory(void **state)
{
    (void)state;
    long before = vm_hwm_kb(g_srv.pid);
    char *out = tl_keepf("%s/big.parquet", g_dir);
    assert_int_equal(
        post_to_file("{\"sql\":\"SELECT range AS n, md5(range::VARCHAR) || md5((range + 1)::VARCHAR) "
                     "AS h FROM range(5000000)\",\"timeout_ms\":600000}",
                     "application/vnd.apache.parquet", out),
        200);
    tl_assert_contains(header_text(out), "X-Duckstore-Row-Count: 5000000");
    assert_string_equal(read_parquet_rows(out, "SELECT count(*), sum(n), count(DISTINCT h), min(length(h))"),
                        "5000000|12499997500000|5000000|64");
    long after = vm_hwm_kb(g_srv.pid);
    print_message("# server peak RSS %ld kB before, %ld kB after a 5M-row Parquet extract\n", before, after);
    if (tl_rss_checked() && after - before > 100 * 1024)
        fail_msg("a 5M-row Parquet extract raised the server's peak RSS by %ld kB (bound: 100 MB)",
                 after - before);
}

static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    char link[600], target[256];
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (prefix == NULL) {
            n++;
            continue;
        }
        snprintf(link, sizeof link, "%s/%s", dir, e->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len > 0) {
            target[len] = '\0';
            n += strncmp(target, prefix, strlen(prefix)) == 0;
        }
    }
    closedir(d);
    return n;
}

static int server_threads(void)
{
    return count_entries(tl_keepf("/proc/%d/task", (int)g_srv.pid), NULL);
}

static int server_pipes(void)
{
    return count_entries(tl_keepf("/proc/%d/fd", (int)g_srv.pid), "pipe:");
}

/* The client reads the start of a large extract and hangs up: the query
 * and its writer stop, their threads end and the pipe is closed, and the
 * server answers the next query. */
static void test_parquet_client_leaves(void **state)
{
    (void)state;
    /* The baseline once the threads of earlier queries have ended (they
     * end just after their answer). */
    int threads = server_threads(), pipes = server_pipes();
    for (double until = tl_now_ms() + 10000; tl_now_ms() < until;) {
        tl_sleep_ms(200);
        int now = server_threads();
        if (now == threads)
            break;
        threads = now;
    }
    const char *body = "{\"sql\":\"SELECT range AS i, md5(range::VARCHAR) AS h FROM range(200000000)\","
                       "\"timeout_ms\":600000}";
    char *req = tl_keepf("POST /api/store/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN "\r\n"
                         "Accept: application/vnd.apache.parquet\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         strlen(body), body);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(g_srv.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    char buf[65536];
    size_t got = 0;
    while (got < 2u << 20) {
        ssize_t n = read(fd, buf, sizeof buf);
        assert_true(n > 0);
        if (got == 0)
            assert_memory_equal(buf, "HTTP/1.1 200", 12);
        got += (size_t)n;
    }
    /* Mid-stream: the writer and the query are both still running. */
    assert_true(server_threads() > threads);
    assert_true(server_pipes() > pipes);
    close(fd);
    double deadline = tl_now_ms() + 60000;
    while ((server_threads() > threads || server_pipes() > pipes) && tl_now_ms() < deadline)
        tl_sleep_ms(50);
    assert_int_equal(server_pipes(), pipes);
    assert_int_equal(server_threads(), threads);
    char *out = tl_keepf("%s/after.parquet", g_dir);
    assert_int_equal(post_to_file("{\"sql\":\"SELECT 42 AS answer\"}", "application/vnd.apache.parquet", out),
                     200);
    assert_string_equal(read_parquet_rows(out, "SELECT answer"), "42");
}

/* A query whose hash table passes query_memory_limit is stopped with an
 * answer naming the key; the next query and a sync still work. */
static void test_query_memory_limit(void **state)
{
    (void)state;
    char *out = tl_keepf("%s/mem.json", g_dir);
    assert_int_equal(
        post_to_file("{\"sql\":\"SELECT max(x), count(*) FROM (SELECT range % 4000037 AS x, count(*) "
                     "AS c FROM range(40000000) GROUP BY x)\",\"timeout_ms\":600000}",
                     "application/json", out),
        422);
    tl_assert_contains(header_text(out), "Content-Type: application/json");
    json_error_t jerr;
    json_t *doc = json_loads(tl_keep(tl_read_file(out)), 0, &jerr);
    assert_non_null(doc);
    assert_true(json_is_false(json_object_get(doc, "success")));
    assert_string_equal(
        json_string_value(json_object_get(doc, "detail")),
        "the query held more memory than duckdb.query_memory_limit (48MB) and was stopped; make it "
        "cheaper (filter or aggregate earlier, fewer columns) or raise query_memory_limit in "
        "duckdb.yaml");
    json_decref(doc);

    assert_int_equal(post_to_file("{\"sql\":\"SELECT count(*) AS n FROM pq_data\"}", "text/csv", out), 200);
    assert_string_equal(tl_keep(tl_read_file(out)), "n\r\n3\r\n");
    tl_pg_exec(g_pg, "INSERT INTO pq (id, note) VALUES (4, 'after the stopped query')");
    json_decref(tl_http_json(g_srv.port, "POST", "/api/store/sync/pq?full=true", TOKEN, 202, NULL));
    /* The sync's commit shows the new row. */
    char *text = NULL;
    for (double until = tl_now_ms() + 60000; tl_now_ms() < until; tl_sleep_ms(50)) {
        assert_int_equal(post_to_file("{\"sql\":\"SELECT note FROM pq_data WHERE id = 4\"}", "text/csv", out),
                         200);
        text = tl_keep(tl_read_file(out));
        if (strcmp(text, "note\r\n") != 0)
            break;
    }
    assert_string_equal(text, "note\r\nafter the stopped query\r\n");
    json_t *st = tl_server_wait_state(&g_srv, "pq_data", "ready", 60);
    json_t *error = json_object_get(st, "error");
    assert_true(error == NULL || json_is_null(error));
    json_decref(st);
    tl_pg_exec(g_pg, "DELETE FROM pq WHERE id = 4");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_decodes_arguments), cmocka_unit_test(test_parquet_extract),
        cmocka_unit_test(test_parquet_max_rows),      cmocka_unit_test(test_parquet_refusals),
        cmocka_unit_test(test_parquet_timeout),       cmocka_unit_test(test_parquet_bounded_memory),
        cmocka_unit_test(test_parquet_client_leaves), cmocka_unit_test(test_query_memory_limit),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
