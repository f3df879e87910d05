/* /api/store/query against a real `duckstore serve`: exact JSON, NDJSON and
 * CSV bodies of synced PostgreSQL types, every kind of refused statement and
 * file or network function, bound parameters, max_rows, timeout_ms, 429
 * under query_concurrency, a query that reads the old state in full while a
 * full sync commits, and the server's peak memory while it streams millions
 * of rows. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"
#include "tl_http.h"

#define TOKEN "q-t0ken"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"
#define BIG_ROWS 300000

static char *g_dir, *g_conninfo, *g_log;
static PGconn *g_pg;
static tl_server g_srv;
static bool g_expect_429; /* post_query returns a 429 instead of retrying */

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("queryapi"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(
        g_pg,
        "CREATE TABLE typ (id int PRIMARY KEY, small smallint, big bigint, dec numeric(12,3), dbl float8,"
        " txt text, d date, ts timestamp, tstz timestamptz, u uuid, arr int[], tags text[]);"
        "INSERT INTO typ VALUES"
        " (1, 7, 9007199254740993, 1234.500, 'NaN', E'say \"hi\"\\nnext, line \u00fc\u20ac\U0001F600',"
        "  '2024-02-29', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+02',"
        "  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2,3}', '{\"a,b\",\"c\\\"d\"}'),"
        " (2, -1, -9007199254740993, -0.001, 'Infinity', '', '1999-12-31', '2000-01-01 00:00:00',"
        "  '2000-01-01 00:00:00+00', NULL, '{}', NULL),"
        " (3, NULL, 9007199254740992, NULL, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, '{}'),"
        " (4, 0, 42, 0, 0.1, 'plain', '0044-03-15', '1970-01-01 00:00:00.5', '1970-01-01 00:00:00.5+00',"
        "  '00000000-0000-0000-0000-000000000000', '{NULL,5}', '{x}');"
        "CREATE TABLE typ2 (id int PRIMARY KEY, ok boolean, r real, b bytea, j jsonb, t time, iv interval);"
        "INSERT INTO typ2 VALUES (1, true, 1.5, '\\x00ff41', '{\"k\": [1, \"v\"]}', '12:30:00.25',"
        "  '1 day 90 minutes'), (2, false, 'NaN', '', 'null', '00:00:00', '0'),"
        "  (3, NULL, NULL, NULL, NULL, NULL, NULL);"
        "CREATE TABLE big (id int PRIMARY KEY, v text);"
        "INSERT INTO big SELECT g, 'old-' || g || '-' || repeat('x', 100) FROM generate_series(1, %d) g;",
        BIG_ROWS);
    g_dir = tl_mkdtemp();
    char path[700];
    snprintf(path, sizeof path, "%s/duckdb.yaml", g_dir);
    /* query_max_rows 0: NDJSON and CSV have no cap, JSON keeps 10,000. */
    tl_write_filef(path,
                   "duckdb:\n  path: %s/store.duckdb\n  sync_mode: startup\n  query_concurrency: 2\n"
                   "  query_max_rows: 0\n",
                   g_dir);
    snprintf(path, sizeof path, "%s/typ_db.yaml", g_dir);
    tl_write_filef(path, "typ_db:\n  url: \"%s\"\n  query: SELECT * FROM typ\n", g_conninfo);
    snprintf(path, sizeof path, "%s/typ2_db.yaml", g_dir);
    tl_write_filef(path, "typ2_db:\n  url: \"%s\"\n  query: SELECT * FROM typ2\n", g_conninfo);
    snprintf(path, sizeof path, "%s/big_db.yaml", g_dir);
    tl_write_filef(path, "big_db:\n  url: \"%s\"\n  query: SELECT id, v FROM big\n", g_conninfo);
    if (asprintf(&g_log, "%s/serve.log", g_dir) < 0)
        fail_msg("out of memory");
    tl_server_start(&g_srv, g_dir, g_log, TOKEN);
    json_decref(tl_server_wait_state(&g_srv, "typ_data", "ready", 60));
    json_decref(tl_server_wait_state(&g_srv, "typ2_data", "ready", 60));
    json_decref(tl_server_wait_state(&g_srv, "big_data", "ready", 60));
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
    return 0;
}

/* POST /api/store/query with a JSON body (and an Accept header). */
static void post_query(const char *body, const char *accept, tl_http_response *out)
{
    char headers[256];
    snprintf(headers, sizeof headers, AUTH "Content-Type: application/json\r\n%s%s%s",
             accept ? "Accept: " : "", accept ? accept : "", accept ? "\r\n" : "");
    /* A query held open by an earlier test may still be ending: retry a
     * 429 as a client would. */
    double deadline = tl_now_ms() + 60000;
    for (;;) {
        if (!tl_http_request(g_srv.port, "POST", "/api/store/query", headers, body, strlen(body), out))
            fail_msg("no answer to POST /api/store/query %s", body);
        if (out->status != 429 || g_expect_429 || tl_now_ms() > deadline)
            return;
        tl_http_response_free(out);
        tl_sleep_ms(50);
    }
}

/* The JSON answer with its elapsed_ms (which varies) set to 0. */
static char *without_elapsed(const char *body)
{
    char *copy = strdup(body);
    char *e = strstr(copy, "\"elapsed_ms\":");
    assert_non_null(e);
    e += strlen("\"elapsed_ms\":");
    char *stop = e + strcspn(e, "}");
    memmove(e + 1, stop, strlen(stop) + 1);
    e[0] = '0';
    return copy;
}

/* A 200 JSON answer's body, elapsed_ms zeroed. */
static char *json_query(const char *body)
{
    tl_http_response r;
    post_query(body, NULL, &r);
    if (r.status != 200)
        fail_msg("%s answered %d: %s", body, r.status, r.body);
    assert_string_equal(r.content_type, "application/json");
    char *chunked = tl_http_dechunk(r.body, NULL);
    char *out = without_elapsed(chunked);
    free(chunked);
    tl_http_response_free(&r);
    return out;
}

static void test_token_required(void **state)
{
    (void)state;
    tl_http_response r;
    const char *body = "{\"sql\":\"SELECT 1\"}";
    assert_true(tl_http_request(g_srv.port, "POST", "/api/store/query", NULL, body, strlen(body), &r));
    assert_int_equal(r.status, 401);
    tl_http_response_free(&r);
    assert_true(tl_http_request(g_srv.port, "GET", "/api/store/query?sql=SELECT+1", NULL, NULL, 0, &r));
    assert_int_equal(r.status, 401);
    tl_http_response_free(&r);
}

/* Every type duckstore stores, as JSON: big integers and decimals as
 * strings, NaN and infinities as null, ISO 8601 times. */
static void test_typed_json(void **state)
{
    (void)state;
    char *got = json_query("{\"sql\":\"SELECT * FROM typ_data ORDER BY id\"}");
    assert_string_equal(
        got,
        "{\"columns\":[{\"name\":\"id\",\"type\":\"INTEGER\"},{\"name\":\"small\",\"type\":\"SMALLINT\"},"
        "{\"name\":\"big\",\"type\":\"BIGINT\"},{\"name\":\"dec\",\"type\":\"DECIMAL(12,3)\"},"
        "{\"name\":\"dbl\",\"type\":\"DOUBLE\"},{\"name\":\"txt\",\"type\":\"VARCHAR\"},"
        "{\"name\":\"d\",\"type\":\"DATE\"},{\"name\":\"ts\",\"type\":\"TIMESTAMP\"},"
        "{\"name\":\"tstz\",\"type\":\"TIMESTAMP WITH TIME ZONE\"},{\"name\":\"u\",\"type\":\"UUID\"},"
        "{\"name\":\"arr\",\"type\":\"INTEGER[]\"},{\"name\":\"tags\",\"type\":\"VARCHAR[]\"}],"
        "\"rows\":["
        "[1,7,\"9007199254740993\",\"1234.500\",null,\"say \\\"hi\\\"\\nnext, line \u00fc\u20ac\U0001F600\","
        "\"2024-02-29\",\"2024-01-02T03:04:05.123456\",\"2024-01-02T01:04:05Z\","
        "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\",[1,2,3],[\"a,b\",\"c\\\"d\"]],"
        "[2,-1,\"-9007199254740993\",\"-0.001\",null,\"\",\"1999-12-31\",\"2000-01-01T00:00:00\","
        "\"2000-01-01T00:00:00Z\",null,[],null],"
        "[3,null,9007199254740992,null,null,null,null,null,null,null,null,[]],"
        "[4,0,42,\"0.000\",0.1,\"plain\",\"0044-03-15\",\"1970-01-01T00:00:00.5\",\"1970-01-01T00:00:00.5Z\","
        "\"00000000-0000-0000-0000-000000000000\",[null,5],[\"x\"]]],"
        "\"row_count\":4,\"truncated\":false,\"elapsed_ms\":0}");
    free(got);
    got = json_query("{\"sql\":\"SELECT * FROM typ2_data ORDER BY id\"}");
    assert_string_equal(
        got, "{\"columns\":[{\"name\":\"id\",\"type\":\"INTEGER\"},{\"name\":\"ok\",\"type\":\"BOOLEAN\"},"
             "{\"name\":\"r\",\"type\":\"FLOAT\"},{\"name\":\"b\",\"type\":\"BLOB\"},"
             "{\"name\":\"j\",\"type\":\"JSON\"},{\"name\":\"t\",\"type\":\"TIME\"},"
             "{\"name\":\"iv\",\"type\":\"INTERVAL\"}],"
             "\"rows\":[[1,true,1.5,\"\\\\x00\\\\xFFA\",{\"k\": [1, \"v\"]},\"12:30:00.25\",\"P1DT1H30M\"],"
             "[2,false,null,\"\",null,\"00:00:00\",\"PT0S\"],[3,null,null,null,null,null,null]],"
             "\"row_count\":3,\"truncated\":false,\"elapsed_ms\":0}");
    free(got);
    tl_http_response r;
    post_query("{\"sql\":\"SELECT * FROM typ2_data ORDER BY id\",\"format\":\"csv\"}", NULL, &r);
    char *csv = tl_http_dechunk(r.body, NULL);
    assert_string_equal(csv,
                        "id,ok,r,b,j,t,iv\r\n"
                        "1,true,1.5,\\x00\\xFFA,\"{\"\"k\"\": [1, \"\"v\"\"]}\",12:30:00.25,P1DT1H30M\r\n"
                        "2,false,nan,\"\",null,00:00:00,PT0S\r\n"
                        "3,,,,,,\r\n");
    free(csv);
    tl_http_response_free(&r);
    /* DESCRIBE, SHOW, SUMMARIZE, EXPLAIN and a PRAGMA that reads are reads. */
    static const char *const reads[] = {
        "{\"sql\":\"DESCRIBE typ_data\"}",
        "{\"sql\":\"SHOW TABLES\"}",
        "{\"sql\":\"SUMMARIZE SELECT id, txt FROM typ_data\"}",
        "{\"sql\":\"EXPLAIN SELECT * FROM typ_data\"}",
        "{\"sql\":\"PRAGMA table_info('typ_data')\"}",
        "{\"sql\":\"FROM typ_data\"}",
    };
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++)
        free(json_query(reads[i]));
}

/* NDJSON: one object per line; CSV: NULL empty, "" for an empty string,
 * RFC 4180 quoting, NaN and infinities as DuckDB prints them. Both carry
 * the row count and the cut in trailers. */
static void test_ndjson_and_csv(void **state)
{
    (void)state;
    const char *sql = "{\"sql\":\"SELECT id, big, dec, dbl, txt, d, tstz, tags FROM typ_data ORDER BY id\"}";
    tl_http_response r;
    post_query(sql, "application/x-ndjson", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "application/x-ndjson");
    char *trailers = NULL, *body = tl_http_dechunk(r.body, &trailers);
    assert_string_equal(
        body, "{\"id\":1,\"big\":\"9007199254740993\",\"dec\":\"1234.500\",\"dbl\":null,"
              "\"txt\":\"say \\\"hi\\\"\\nnext, line \u00fc\u20ac\U0001F600\",\"d\":\"2024-02-29\","
              "\"tstz\":\"2024-01-02T01:04:05Z\",\"tags\":[\"a,b\",\"c\\\"d\"]}\n"
              "{\"id\":2,\"big\":\"-9007199254740993\",\"dec\":\"-0.001\",\"dbl\":null,\"txt\":\"\","
              "\"d\":\"1999-12-31\",\"tstz\":\"2000-01-01T00:00:00Z\",\"tags\":null}\n"
              "{\"id\":3,\"big\":9007199254740992,\"dec\":null,\"dbl\":null,\"txt\":null,\"d\":null,"
              "\"tstz\":null,\"tags\":[]}\n"
              "{\"id\":4,\"big\":42,\"dec\":\"0.000\",\"dbl\":0.1,\"txt\":\"plain\",\"d\":\"0044-03-15\","
              "\"tstz\":\"1970-01-01T00:00:00.5Z\",\"tags\":[\"x\"]}\n");
    assert_string_equal(trailers, "X-Duckstore-Row-Count: 4\r\nX-Duckstore-Truncated: false\r\n\r\n");
    free(body);
    free(trailers);
    tl_http_response_free(&r);

    /* ?format= wins over the body's format and over Accept. */
    const char *both = "{\"sql\":\"SELECT 1 AS a\",\"format\":\"csv\"}";
    if (!tl_http_request(g_srv.port, "POST", "/api/store/query?format=ndjson", AUTH, both, strlen(both), &r))
        fail_msg("no answer");
    assert_int_equal(r.status, 200);
    body = tl_http_dechunk(r.body, NULL);
    assert_string_equal(body, "{\"a\":1}\n");
    free(body);
    tl_http_response_free(&r);

    if (!tl_http_request(g_srv.port, "POST", "/api/store/query?format=csv",
                         AUTH "Accept: application/json\r\n", sql, strlen(sql), &r))
        fail_msg("no answer");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "text/csv; charset=utf-8; header=present");
    body = tl_http_dechunk(r.body, &trailers);
    assert_string_equal(
        body,
        "id,big,dec,dbl,txt,d,tstz,tags\r\n"
        "1,9007199254740993,1234.500,nan,\"say \"\"hi\"\"\nnext, line "
        "\u00fc\u20ac\U0001F600\",2024-02-29,2024-01-02T01:04:05Z,\"[\"\"a,b\"\",\"\"c\\\"\"d\"\"]\"\r\n"
        "2,-9007199254740993,-0.001,inf,\"\",1999-12-31,2000-01-01T00:00:00Z,\r\n"
        "3,9007199254740992,,-inf,,,,[]\r\n"
        "4,42,0.000,0.1,plain,0044-03-15,1970-01-01T00:00:00.5Z,\"[\"\"x\"\"]\"\r\n");
    assert_string_equal(trailers, "X-Duckstore-Row-Count: 4\r\nX-Duckstore-Truncated: false\r\n\r\n");
    free(body);
    free(trailers);
    tl_http_response_free(&r);
}

/* One refused request: status 400 and the reason in the body. */
static void expect_refused(const char *body, const char *reason)
{
    tl_http_response r;
    post_query(body, NULL, &r);
    json_error_t jerr;
    json_t *doc = json_loads(r.body, 0, &jerr);
    const char *msg = doc ? tl_json_str(doc, "error") : NULL;
    if (r.status != 400 || msg == NULL || strstr(msg, reason) == NULL)
        fail_msg("%s answered %d %s; expected 400 naming \"%s\"", body, r.status, r.body, reason);
    json_decref(doc);
    tl_http_response_free(&r);
}

static void test_refused_statements(void **state)
{
    (void)state;
    static const char only_reads[] = "only reads are allowed";
    static const struct {
        const char *body, *reason;
    } cases[] = {
        {"{\"sql\":\"COPY typ_data TO 'out.csv'\"}", "reaches outside the cache"},
        {"{\"sql\":\"COPY (SELECT 1) TO 'out.csv'\"}", "reaches outside the cache"},
        {"{\"sql\":\"ATTACH ':memory:' AS other\"}", "the statement is of kind ATTACH"},
        {"{\"sql\":\"DETACH typ\"}", "the statement is of kind DETACH"},
        {"{\"sql\":\"INSTALL httpfs\"}", "the statement is of kind LOAD or INSTALL"},
        {"{\"sql\":\"LOAD httpfs\"}", "the statement is of kind LOAD or INSTALL"},
        {"{\"sql\":\"SET threads = 4\"}", "the statement is of kind SET"},
        {"{\"sql\":\"RESET threads\"}", "the statement is of kind SET"},
        {"{\"sql\":\"USE memory\"}", "the statement is of kind SET"},
        {"{\"sql\":\"PRAGMA threads = 4\"}", "the statement is of kind SET"},
        {"{\"sql\":\"PRAGMA disable_checkpoint_on_shutdown\"}", only_reads},
        {"{\"sql\":\"CREATE TABLE t2 (a int)\"}", "the statement is of kind CREATE"},
        {"{\"sql\":\"CREATE VIEW v2 AS SELECT 1\"}", "the statement is of kind CREATE"},
        {"{\"sql\":\"CREATE MACRO m2(a) AS a\"}", only_reads},
        {"{\"sql\":\"INSERT INTO typ_data (id) VALUES (9)\"}", "the statement is of kind INSERT"},
        {"{\"sql\":\"UPDATE typ_data SET small = 1\"}", "the statement is of kind UPDATE"},
        {"{\"sql\":\"DELETE FROM typ_data\"}", "the statement is of kind DELETE"},
        {"{\"sql\":\"DROP TABLE typ_data\"}", "the statement is of kind DROP"},
        {"{\"sql\":\"ALTER TABLE typ_data ADD COLUMN z int\"}", "the statement is of kind ALTER"},
        {"{\"sql\":\"CALL pragma_version()\"}", "the statement is of kind CALL"},
        {"{\"sql\":\"CHECKPOINT\"}", "the statement is of kind CALL"},
        {"{\"sql\":\"BEGIN\"}", "the statement is of kind transaction"},
        {"{\"sql\":\"COMMIT\"}", "the statement is of kind transaction"},
        {"{\"sql\":\"VACUUM\"}", "the statement is of kind VACUUM"},
        {"{\"sql\":\"EXPORT DATABASE 'dump'\"}", "reaches outside the cache"},
        {"{\"sql\":\"PREPARE p AS SELECT 1\"}", "the statement is of kind PREPARE"},
        {"{\"sql\":\"SELECT 1; SELECT 2\"}", "exactly one statement is allowed; the text holds 2"},
        {"{\"sql\":\"SELECT 1; DROP TABLE typ_data\"}", "exactly one statement is allowed"},
        {"{\"sql\":\"EXPLAIN ANALYZE DELETE FROM typ_data\"}", "read-only"},
        {"{\"sql\":\"\"}", "no \"sql\""},
        {"{\"sql\":\"SELEC 1\"}", "syntax error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_refused(cases[i].body, cases[i].reason);
    /* Nothing changed. */
    char *got = json_query("{\"sql\":\"SELECT count(*) AS n FROM typ_data\"}");
    assert_string_equal(got, "{\"columns\":[{\"name\":\"n\",\"type\":\"BIGINT\"}],\"rows\":[[4]],"
                             "\"row_count\":1,\"truncated\":false,\"elapsed_ms\":0}");
    free(got);
}

/* Functions that read the server's files or the network fail while the
 * statement is prepared: external access is off. */
static void test_refused_file_and_network_functions(void **state)
{
    (void)state;
    static const char outside[] = "reaches outside the cache";
    static const struct {
        const char *body, *reason;
    } cases[] = {
        {"{\"sql\":\"SELECT * FROM read_csv('/etc/passwd')\"}", outside},
        {"{\"sql\":\"SELECT * FROM read_csv_auto('/etc/passwd')\"}", outside},
        {"{\"sql\":\"SELECT * FROM read_text('/etc/passwd')\"}", outside},
        {"{\"sql\":\"SELECT * FROM read_blob('/etc/passwd')\"}", outside},
        {"{\"sql\":\"SELECT * FROM glob('/etc/*')\"}", outside},
        {"{\"sql\":\"SELECT * FROM '/etc/passwd'\"}", "/etc/passwd does not exist"},
        {"{\"sql\":\"SELECT * FROM read_parquet('/tmp/other.parquet')\"}", outside},
        {"{\"sql\":\"SELECT * FROM parquet_metadata('/tmp/other.parquet')\"}", outside},
        {"{\"sql\":\"SELECT * FROM read_json('/etc/hostname')\"}", outside},
        {"{\"sql\":\"SELECT * FROM read_csv('https://example.com/x.csv')\"}", outside},
        {"{\"sql\":\"SELECT * FROM read_parquet('s3://bucket/x.parquet')\"}", outside},
        {"{\"sql\":\"SELECT * FROM read_csv(?)\",\"params\":[\"/etc/passwd\"]}", outside},
        {"{\"sql\":\"SELECT * FROM sniff_csv('/etc/passwd')\"}", outside},
        {"{\"sql\":\"SELECT * FROM duckdb_extensions()\"}", outside},
        {"{\"sql\":\"SELECT getenv('HOME')\"}", "getenv does not exist"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_refused(cases[i].body, cases[i].reason);
}

/* Parameters are bound values of their JSON type, never SQL text. */
static void test_params_bound(void **state)
{
    (void)state;
    char *got =
        json_query("{\"sql\":\"SELECT ?::VARCHAR AS s, ? + 1 AS n, ? AS b, ? IS NULL AS z, ?::DOUBLE AS d\","
                   "\"params\":[\"x'); DROP TABLE typ_data; --\",41,true,null,2.5]}");
    assert_string_equal(
        got, "{\"columns\":[{\"name\":\"s\",\"type\":\"VARCHAR\"},{\"name\":\"n\",\"type\":\"BIGINT\"},"
             "{\"name\":\"b\",\"type\":\"BOOLEAN\"},{\"name\":\"z\",\"type\":\"BOOLEAN\"},"
             "{\"name\":\"d\",\"type\":\"DOUBLE\"}],"
             "\"rows\":[[\"x'); DROP TABLE typ_data; --\",42,true,true,2.5]],"
             "\"row_count\":1,\"truncated\":false,\"elapsed_ms\":0}");
    free(got);
    got = json_query(
        "{\"sql\":\"SELECT id FROM typ_data WHERE txt = ? ORDER BY id\",\"params\":[\"plain' OR '1'='1\"]}");
    assert_non_null(strstr(got, "\"rows\":[],\"row_count\":0"));
    free(got);
    expect_refused("{\"sql\":\"SELECT ? AS a\",\"params\":[]}", "takes 1 parameter(s); 0 given");
    expect_refused("{\"sql\":\"SELECT 1\",\"params\":[1]}", "takes 0 parameter(s); 1 given");
    expect_refused("{\"sql\":\"SELECT ? AS a\",\"params\":[[1]]}", "parameter 1 is an array or object");

    /* GET: repeated param=, strings. */
    tl_http_response r;
    assert_true(tl_http_request(g_srv.port, "GET",
                                "/api/store/query?sql=SELECT+%3F%3A%3AVARCHAR+AS+a%2C+%3F+AS+b"
                                "&param=it%27s%3B+DROP+TABLE+typ_data&param=%22q%22&format=ndjson",
                                AUTH, NULL, 0, &r));
    assert_int_equal(r.status, 200);
    char *body = tl_http_dechunk(r.body, NULL);
    assert_string_equal(body, "{\"a\":\"it's; DROP TABLE typ_data\",\"b\":\"\\\"q\\\"\"}\n");
    free(body);
    tl_http_response_free(&r);
    assert_true(
        tl_http_request(g_srv.port, "GET", "/api/store/query?sql=SELECT+1&nope=1", AUTH, NULL, 0, &r));
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "unknown query parameter \\\"nope\\\""));
    tl_http_response_free(&r);
}

/* At the defaults (memory_limit 64MB) a query may use the readers'
 * budget, read_memory_limit: a 3-million-group aggregate (about 100MB of
 * hash table) answers. With the old default cap, half of memory_limit
 * (32MB), the dashboard aggregate of make bench was stopped with 422. */
static void test_default_query_memory_is_the_readers_budget(void **state)
{
    (void)state;
    char *got = json_query("{\"sql\":\"SELECT count(*) AS groups FROM (SELECT range % 3000000 AS g, "
                           "count(*) FROM range(6000000) GROUP BY g)\"}");
    assert_string_equal(got, "{\"columns\":[{\"name\":\"groups\",\"type\":\"BIGINT\"}],\"rows\":[[3000000]],"
                             "\"row_count\":1,\"truncated\":false,\"elapsed_ms\":0}");
    free(got);
}

/* serve gives readers the cores the syncs' threads (1) leave: DuckDB's
 * worker threads are threads + read_threads, at least 2. */
static void test_readers_get_the_cores(void **state)
{
    (void)state;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long want = 1 + (cores > 1 ? cores - 1 : 1);
    char *got = json_query("{\"sql\":\"SELECT current_setting('threads')::BIGINT AS t\"}");
    char expect[200];
    snprintf(expect, sizeof expect,
             "{\"columns\":[{\"name\":\"t\",\"type\":\"BIGINT\"}],\"rows\":[[%ld]],\"row_count\":1,"
             "\"truncated\":false,\"elapsed_ms\":0}",
             want);
    assert_string_equal(got, expect);
    free(got);
}

/* A UTC query's date_trunc on a TIMESTAMPTZ takes the readers' faster
 * path (store/read_functions.h), with PostgreSQL's values. */
static void test_date_trunc_fast_path(void **state)
{
    (void)state;
    char *got =
        json_query("{\"sql\":\"SELECT id, date_trunc('hour', tstz) AS h FROM typ_data WHERE id IN (1, 4) "
                   "ORDER BY id\"}");
    assert_string_equal(
        got, "{\"columns\":[{\"name\":\"id\",\"type\":\"INTEGER\"},{\"name\":\"h\",\"type\":"
             "\"TIMESTAMP WITH TIME ZONE\"}],\"rows\":[[1,\"2024-01-02T01:00:00Z\"],"
             "[4,\"1970-01-01T00:00:00Z\"]],\"row_count\":2,\"truncated\":false,\"elapsed_ms\":0}");
    free(got);
    got = json_query("{\"sql\":\"EXPLAIN SELECT date_trunc('hour', tstz) FROM typ_data\"}");
    tl_assert_contains(got, "duckstore_date_trunc_utc");
    free(got);
}

static void test_max_rows(void **state)
{
    (void)state;
    /* JSON keeps a cap of 10,000 rows when query_max_rows is 0. */
    char *got = json_query("{\"sql\":\"SELECT range AS n FROM range(20000)\"}");
    assert_non_null(strstr(got, ",[9999]],\"row_count\":10000,\"truncated\":true,"));
    free(got);
    got = json_query("{\"sql\":\"SELECT range AS n FROM range(10)\",\"max_rows\":3}");
    assert_string_equal(got, "{\"columns\":[{\"name\":\"n\",\"type\":\"BIGINT\"}],\"rows\":[[0],[1],[2]],"
                             "\"row_count\":3,\"truncated\":true,\"elapsed_ms\":0}");
    free(got);
    /* Exactly max_rows rows is no cut. */
    got = json_query("{\"sql\":\"SELECT range AS n FROM range(3)\",\"max_rows\":3}");
    assert_non_null(strstr(got, "\"row_count\":3,\"truncated\":false"));
    free(got);
    tl_http_response r;
    post_query("{\"sql\":\"SELECT range AS n FROM range(10)\",\"max_rows\":4,\"format\":\"csv\"}", NULL, &r);
    assert_int_equal(r.status, 200);
    char *trailers = NULL, *body = tl_http_dechunk(r.body, &trailers);
    assert_string_equal(body, "n\r\n0\r\n1\r\n2\r\n3\r\n");
    assert_string_equal(trailers, "X-Duckstore-Row-Count: 4\r\nX-Duckstore-Truncated: true\r\n\r\n");
    free(body);
    free(trailers);
    tl_http_response_free(&r);
    expect_refused("{\"sql\":\"SELECT 1\",\"max_rows\":-1}", "max_rows must be an integer >= 0");
}

static void test_timeout(void **state)
{
    (void)state;
    tl_http_response r;
    double t0 = tl_now_ms();
    post_query("{\"sql\":\"SELECT count(*) FROM range(1000000000) a, range(1000000) b\",\"timeout_ms\":300}",
               NULL, &r);
    double ms = tl_now_ms() - t0;
    assert_int_equal(r.status, 504);
    assert_string_equal(
        r.body,
        "{\"success\":false,\"error\":\"the query ran longer than its timeout_ms (300 ms) and was stopped; "
        "make it cheaper or give a larger timeout_ms\",\"detail\":\"the query ran longer than its timeout_ms "
        "(300 ms) and was stopped; make it cheaper or give a larger timeout_ms\"}");
    if (ms > 20000)
        fail_msg("the 300 ms timeout answered after %.0f ms", ms);
    tl_http_response_free(&r);
    expect_refused("{\"sql\":\"SELECT 1\",\"timeout_ms\":0}",
                   "timeout_ms must be an integer between 1 and 3600000");
}

/* A query the server streams to a client that reads only the head: it
 * stays running (the server waits for the client) until the socket closes.
 * -1 when the answer is a 429. */
static int try_stream(const char *body)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(g_srv.port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        fail_msg("cannot connect: %s", strerror(errno));
    struct timeval tv = {60, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    /* HTTP/1.0: no chunked encoding, the body ends when the server closes. */
    char *req = NULL;
    if (asprintf(&req,
                 "POST /api/store/query HTTP/1.0\r\nHost: 127.0.0.1\r\n" AUTH
                 "Accept: text/csv\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 strlen(body), body) < 0)
        fail_msg("out of memory");
    size_t len = strlen(req), sent = 0;
    while (sent < len) {
        ssize_t n = send(fd, req + sent, len - sent, MSG_NOSIGNAL);
        if (n <= 0)
            fail_msg("send: %s", strerror(errno));
        sent += (size_t)n;
    }
    free(req);
    /* The status line: the query is running. */
    char head[13];
    size_t got = 0;
    while (got < 12) {
        ssize_t n = recv(fd, head + got, 12 - got, 0);
        if (n <= 0)
            fail_msg("no answer to the streamed query");
        got += (size_t)n;
    }
    head[12] = '\0';
    if (strcmp(head, "HTTP/1.1 429") == 0) {
        close(fd);
        return -1;
    }
    assert_string_equal(head, "HTTP/1.1 200");
    return fd;
}

static int open_stream(const char *body)
{
    double deadline = tl_now_ms() + 60000;
    int fd;
    while ((fd = try_stream(body)) < 0) {
        if (tl_now_ms() > deadline)
            fail_msg("the query was refused with 429 for 60 s");
        tl_sleep_ms(50);
    }
    return fd;
}

/* Reads the rest of a stream: its body (after the headers) when keep,
 * else only its size; *lines counts '\n' in the body. */
static char *drain_stream(int fd, bool keep, size_t *body_len, size_t *lines)
{
    size_t cap = 1 << 20, len = 0, total = 0, nl = 0;
    char *buf = malloc(cap);
    bool in_body = false;
    char last4[4] = {0};
    for (;;) {
        char chunk[65536];
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail_msg("recv: %s", strerror(errno));
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            if (!in_body) {
                memmove(last4, last4 + 1, 3);
                last4[3] = chunk[i];
                in_body = memcmp(last4, "\r\n\r\n", 4) == 0;
                continue;
            }
            total++;
            nl += chunk[i] == '\n';
            if (keep) {
                if (len + 1 >= cap) {
                    char *grown = realloc(buf, cap *= 2);
                    if (grown == NULL)
                        fail_msg("out of memory");
                    buf = grown;
                }
                buf[len++] = chunk[i];
            }
        }
    }
    close(fd);
    buf[len] = '\0';
    *body_len = total;
    *lines = nl;
    return buf;
}

static long vm_hwm_kb(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *text = tl_read_file(path);
    assert_non_null(text);
    const char *hwm = strstr(text, "VmHWM:");
    assert_non_null(hwm);
    long kb = strtol(hwm + 6, NULL, 10);
    free(text);
    return kb;
}

/* query_concurrency 2: two queries held open, a third is answered 429 with
 * Retry-After at once; once they end, queries run again. */
static void test_concurrency_429(void **state)
{
    (void)state;
    const char *slow =
        "{\"sql\":\"SELECT range, repeat('x', 200) FROM range(100000000)\",\"timeout_ms\":120000}";
    int a = open_stream(slow), b = open_stream(slow);
    tl_http_response r;
    double t0 = tl_now_ms();
    g_expect_429 = true;
    post_query("{\"sql\":\"SELECT 1\"}", NULL, &r);
    g_expect_429 = false;
    assert_int_equal(r.status, 429);
    char retry[16];
    assert_non_null(tl_http_header(&r, "Retry-After", retry, sizeof retry));
    assert_string_equal(retry, "1");
    assert_string_equal(r.body, "{\"success\":false,\"error\":\"2 queries are running, the most "
                                "duckdb.query_concurrency allows; retry later\",\"detail\":\"2 queries are "
                                "running, the most duckdb.query_concurrency allows; retry later\"}");
    assert_true(tl_now_ms() - t0 < 10000);
    tl_http_response_free(&r);
    /* Other endpoints are not held up by the queries. */
    json_t *st = tl_http_json(g_srv.port, "GET", "/api/store/status", TOKEN, 200, NULL);
    json_decref(st);
    close(a);
    close(b);
    /* Both slots come back: two queries can be held at once again. */
    a = open_stream(slow);
    b = open_stream(slow);
    close(a);
    close(b);
}

/* A query that starts before a full sync reads the old table in full,
 * while the sync commits (a read never holds up a commit). */
static void test_query_during_full_sync(void **state)
{
    (void)state;
    int fd = open_stream("{\"sql\":\"SELECT id, v FROM big_data\",\"timeout_ms\":600000}");
    tl_pg_exec(g_pg, "UPDATE big SET v = 'new-' || id");
    json_t *doc = tl_http_json(g_srv.port, "POST", "/api/store/sync/big?full=true", TOKEN, 202, NULL);
    json_decref(doc);
    /* The sync commits while the first query is still open. */
    double deadline = tl_now_ms() + 120000;
    for (;;) {
        char *got = json_query("{\"sql\":\"SELECT count(*) AS n FROM big_data WHERE v LIKE 'new-%'\"}");
        bool done = strstr(got, "\"rows\":[[300000]]") != NULL;
        free(got);
        if (done)
            break;
        if (tl_now_ms() > deadline)
            fail_msg("the full sync did not commit in 120 s while a query was reading");
        tl_sleep_ms(100);
    }
    /* ... and is still running: with a second query held, a third is
     * refused (query_concurrency 2). */
    int held = open_stream("{\"sql\":\"SELECT range, repeat('x', 200) FROM range(100000000)\"}");
    tl_http_response r;
    g_expect_429 = true;
    post_query("{\"sql\":\"SELECT 1\"}", NULL, &r);
    g_expect_429 = false;
    assert_int_equal(r.status, 429);
    tl_http_response_free(&r);
    close(held);
    size_t len, lines;
    char *body = drain_stream(fd, true, &len, &lines);
    assert_int_equal(lines, BIG_ROWS + 1);
    /* Every row is whole and old: "<id>,old-<id>-xxx...". */
    const char *p = body;
    assert_memory_equal(p, "id,v\r\n", 6);
    p += 6;
    size_t old_rows = 0;
    for (const char *end = body + len; p < end; old_rows++) {
        const char *eol = p;
        while (eol < end && *eol != '\n')
            eol++;
        char *rest;
        long id = strtol(p, &rest, 10);
        char want[64];
        int n = snprintf(want, sizeof want, ",old-%ld-", id);
        if (rest + n > eol || memcmp(rest, want, (size_t)n) != 0 || eol - (rest + n) != 101)
            fail_msg("not an old row: %.*s", (int)(eol - p), p);
        p = eol + 1;
    }
    assert_int_equal(old_rows, BIG_ROWS);
    free(body);
}

/* 5 million rows of CSV (over 300 MB) stream through a bounded buffer. */
static void test_large_csv_bounded_memory(void **state)
{
    (void)state;
    long before = vm_hwm_kb(g_srv.pid);
    int fd =
        open_stream("{\"sql\":\"SELECT range AS n, 'row-' || range || '-' || repeat('x', 50) AS pad FROM "
                    "range(5000000)\",\"timeout_ms\":600000}");
    /* A client that stops reading for a while: the server must wait for it
     * rather than keep what it cannot send in memory. */
    tl_sleep_ms(3000);
    size_t len, lines;
    free(drain_stream(fd, false, &len, &lines));
    assert_int_equal(lines, 5000000 + 1);
    assert_true(len > 300u * 1000 * 1000);
    long after = vm_hwm_kb(g_srv.pid);
    print_message("# server peak RSS %ld kB before, %ld kB after streaming %zu bytes\n", before, after, len);
    if (after - before > 100 * 1024)
        fail_msg("streaming %zu bytes raised the server's peak RSS by %ld kB (bound: 100 MB)", len,
                 after - before);
}

/* SIGTERM while a query streams: the query is stopped and the server
 * exits cleanly. */
static void test_shutdown_with_query_running(void **state)
{
    (void)state;
    int fd = open_stream(
        "{\"sql\":\"SELECT range, repeat('x', 200) FROM range(100000000)\",\"timeout_ms\":600000}");
    double elapsed;
    assert_int_equal(tl_server_stop(&g_srv, 60, &elapsed), 0);
    size_t len, lines;
    free(drain_stream(fd, false, &len, &lines));
    if (elapsed > 30)
        fail_msg("the server took %.1f s to stop with a query running", elapsed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_required),
        cmocka_unit_test(test_typed_json),
        cmocka_unit_test(test_ndjson_and_csv),
        cmocka_unit_test(test_refused_statements),
        cmocka_unit_test(test_refused_file_and_network_functions),
        cmocka_unit_test(test_params_bound),
        cmocka_unit_test(test_max_rows),
        cmocka_unit_test(test_default_query_memory_is_the_readers_budget),
        cmocka_unit_test(test_date_trunc_fast_path),
        cmocka_unit_test(test_readers_get_the_cores),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_concurrency_429),
        cmocka_unit_test(test_large_csv_bounded_memory),
        cmocka_unit_test(test_query_during_full_sync),
        cmocka_unit_test(test_shutdown_with_query_running),
    };
    int rc = cmocka_run_group_tests(tests, setup_group, teardown_group);
    tl_server_kill_all();
    return rc;
}
