/* Secrets never leave duckstore: one config holds the harness PostgreSQL
 * password in every form a url can carry it (conninfo, URI user info,
 * ${VAR}, ?password=), next to sources with a wrong password, an
 * unreachable port, an unknown database, an SSL demand the server refuses
 * and a socket directory that does not exist. Everything the runs below produce is
 * gathered: the output of every CLI command (plain and -v), the server's
 * log, every HTTP answer, and the DuckDB files where the status and its
 * error messages persist. The harness password, the wrong password and the
 * API token appear nowhere. */
#include "testlib.h"
#include "tl_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN "tok-3f9c1d7e-secret-api-token"
#define ENV_PW "DUCKSTORE_SECRETS_TEST_PASSWORD"

static char wrong_pw[64];
static const char *secrets[3];

/* Everything produced, in one file, for the final grep (and for a reader
 * when the test fails). */
static char *g_dir;
static char g_all[700];

static void gather(const char *label, const char *text, size_t len)
{
    FILE *f = fopen(g_all, "ab");
    assert_non_null(f);
    fprintf(f, "\n===== %s =====\n", label);
    fwrite(text, 1, len, f);
    fclose(f);
}

static void gather_file(const char *label, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return;
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, out);
    fclose(f);
    fclose(out);
    gather(label, buf, size);
    free(buf);
}

static char *run_cli(int *rc, const char *args)
{
    char *out = NULL;
    *rc = tl_run(&out, "'%s' --config-dir '%s/config' --db '%s/cli.duckdb' %s", getenv("DUCKSTORE_BIN"),
                 g_dir, g_dir, args);
    gather(args, out, strlen(out));
    return out;
}

static void write_config(void)
{
    const char *conninfo = tl_pg_fresh_db("secrets");
    PGconn *pg = tl_pg_connect(conninfo);
    tl_pg_exec(pg, "CREATE TABLE events (id int, created_at timestamptz DEFAULT now())");
    tl_pg_exec(pg, "INSERT INTO events (id) SELECT g FROM generate_series(1, 100) AS g");
    char host[64], port[16], user[64], db[128];
    snprintf(host, sizeof host, "%s", PQhost(pg));
    snprintf(port, sizeof port, "%s", PQport(pg));
    snprintf(user, sizeof user, "%s", PQuser(pg));
    snprintf(db, sizeof db, "%s", PQdb(pg));
    PQfinish(pg);
    const char *pw = secrets[0];
    setenv(ENV_PW, pw, 1);

    char dir[700];
    snprintf(dir, sizeof dir, "%s/config", g_dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    char path[800];
    snprintf(path, sizeof path, "%s/duckdb.yaml", dir);
    tl_write_file(path, "duckdb:\n  sync_mode: startup\n");
    struct {
        const char *name;
        char url[600];
    } sources[] = {{"good_conninfo", ""},  {"good_uri", ""},  {"good_env", ""},    {"good_param", ""},
                   {"wrong_conninfo", ""}, {"wrong_uri", ""}, {"unreachable", ""}, {"no_database", ""},
                   {"ssl_refused", ""},    {"no_socket", ""}};
    snprintf(sources[0].url, 600, "%s", conninfo);
    snprintf(sources[1].url, 600, "postgresql://%s:%s@%s:%s/%s", user, pw, host, port, db);
    snprintf(sources[2].url, 600, "postgresql://%s:${%s}@%s:%s/%s", user, ENV_PW, host, port, db);
    snprintf(sources[3].url, 600, "postgresql://%s@%s:%s/%s?application_name=x&password=%s", user, host, port,
             db, pw);
    snprintf(sources[4].url, 600, "host=%s port=%s user=%s password='%s' dbname=%s", host, port, user,
             wrong_pw, db);
    snprintf(sources[5].url, 600, "postgresql://%s:%s@%s:%s/%s", user, wrong_pw, host, port, db);
    snprintf(sources[6].url, 600, "postgresql://%s:%s@127.0.0.1:1/%s", user, pw, db);
    snprintf(sources[7].url, 600, "postgresql://%s:%s@%s:%s/%s_missing", user, pw, host, port, db);
    snprintf(sources[8].url, 600, "postgresql://%s:%s@%s:%s/%s?sslmode=require", user, pw, host, port, db);
    /* A socket directory that does not exist: fails at once, no DNS. */
    snprintf(sources[9].url, 600, "postgresql://%s:%s@%%2Fnonexistent%%2Fdir:%s/%s", user, pw, port, db);
    for (size_t i = 0; i < sizeof sources / sizeof sources[0]; i++) {
        snprintf(path, sizeof path, "%s/%s_db.yaml", dir, sources[i].name);
        tl_write_filef(path,
                       "%s_db:\n  url: \"%s\"\n  query: SELECT id, created_at FROM events\n"
                       "  incremental_column: created_at\n",
                       sources[i].name, sources[i].url);
    }
}

static void assert_no_secret(const char *what, const char *text, size_t len)
{
    for (size_t s = 0; s < sizeof secrets / sizeof secrets[0]; s++) {
        if (memmem(text, len, secrets[s], strlen(secrets[s])) != NULL) {
            const char *at = memmem(text, len, secrets[s], strlen(secrets[s]));
            const char *from = at - text > 300 ? at - 300 : text;
            fail_msg("secret %zu (%s) found in %s:\n...%.*s...", s, secrets[s], what, (int)(at - from + 80),
                     from);
        }
    }
}

static void test_no_secret_anywhere(void **state)
{
    (void)state;
    const char *pw = getenv("DUCKSTORE_TEST_PG_PASSWORD");
    if (pw == NULL || pw[0] == '\0')
        fail_msg("DUCKSTORE_TEST_PG_PASSWORD is not set (scripts/with-test-pg.sh sets it)");
    snprintf(wrong_pw, sizeof wrong_pw, "wr0ng-%d-pw-secret", (int)getpid());
    secrets[0] = pw;
    secrets[1] = wrong_pw;
    secrets[2] = TOKEN;
    g_dir = tl_mkdtemp();
    snprintf(g_all, sizeof g_all, "%s/everything.txt", g_dir);
    write_config();

    /* The CLI: every command, plain and verbose, good and bad sources. */
    int rc;
    char *out = run_cli(&rc, "check-config");
    assert_int_equal(rc, 1); /* connection failures, no config error */
    tl_assert_contains(out, "password authentication failed for user");
    tl_assert_contains(out, "# good_conninfo: query returns 2 columns:");
    tl_assert_contains(out, "password=***");
    free(out);
    free(run_cli(&rc, "check-config --offline"));
    assert_int_equal(rc, 0);
    out = run_cli(&rc, "-v sync");
    assert_int_equal(rc, 1);
    tl_assert_contains(out, "good_uri: full sync, 100 rows");
    tl_assert_contains(out, "good_env: full sync, 100 rows");
    tl_assert_contains(out, "good_param: full sync, 100 rows");
    tl_assert_contains(out, "wrong_uri: cannot connect to PostgreSQL");
    tl_assert_contains(out, "no_database: cannot connect to PostgreSQL");
    tl_assert_contains(out, "ssl_refused: cannot connect to PostgreSQL");
    free(out);
    free(run_cli(&rc, "sync good_uri --full"));
    assert_int_equal(rc, 0);
    free(run_cli(&rc, "sync wrong_conninfo"));
    assert_int_equal(rc, 1);
    out = run_cli(&rc, "status");
    assert_int_equal(rc, 0);
    tl_assert_contains(out, "good_conninfo_data: ready, 100 rows");
    tl_assert_contains(out, "wrong_conninfo_data: error");
    free(out);
    free(run_cli(&rc, "status --json"));
    free(run_cli(&rc, "reset-watermark unreachable"));
    free(run_cli(&rc, "query \"SELECT source, status FROM _duckstore.sync_status ORDER BY 1\""));
    assert_int_equal(rc, 0);
    free(run_cli(&rc, "query \"SELECT no_such_column\""));
    assert_int_equal(rc, 1);

    /* The server: startup syncs of every source, then the API. */
    char config[720], log[720], transcript[720];
    snprintf(config, sizeof config, "%s/config", g_dir);
    snprintf(log, sizeof log, "%s/server.log", g_dir);
    snprintf(transcript, sizeof transcript, "%s/http.txt", g_dir);
    char path[800];
    snprintf(path, sizeof path, "%s/duckdb.yaml", config);
    tl_write_filef(path, "duckdb:\n  sync_mode: startup\n  path: %s/server.duckdb\n", g_dir);
    tl_http_set_transcript(transcript);
    tl_server srv;
    tl_server_start(&srv, config, log, TOKEN);
    json_t *ds = tl_server_wait_state(&srv, "good_conninfo_data", "ready", 60);
    json_decref(ds);
    ds = tl_server_wait_state(&srv, "wrong_uri_data", "error", 60);
    tl_assert_contains(tl_json_str(ds, "error"), "password authentication failed");
    json_decref(ds);
    static const char *const slow_to_fail[] = {"no_socket_data", "unreachable_data", "ssl_refused_data",
                                               "no_database_data", "wrong_conninfo_data"};
    for (size_t i = 0; i < sizeof slow_to_fail / sizeof slow_to_fail[0]; i++)
        json_decref(tl_server_wait_state(&srv, slow_to_fail[i], "error", 60));
    json_decref(tl_http_json(srv.port, "GET", "/api/store/status", TOKEN, 200, NULL));
    json_decref(tl_http_json(srv.port, "GET", "/api/store/status", NULL, 401, NULL));
    json_decref(tl_http_json(srv.port, "GET", "/api/store/status", "wrong-token", 401, NULL));
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/wrong_uri", TOKEN, 202, NULL));
    json_decref(tl_server_wait_state(&srv, "wrong_uri_data", "error", 60));
    /* Its startup sync first: a sync asked for while one runs is refused (409). */
    json_decref(tl_server_wait_state(&srv, "good_env_data", "ready", 60));
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/good_env?full=true", TOKEN, 202, NULL));
    json_decref(tl_server_wait_state(&srv, "good_env_data", "ready", 60));
    json_decref(
        tl_http_json(srv.port, "POST", "/api/store/sync/unreachable/reset-watermark", TOKEN, 200, NULL));
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/nope", TOKEN, 404, NULL));
    json_decref(tl_http_json(srv.port, "GET", "/health", NULL, 200, NULL));
    free(tl_server_metrics(&srv));
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_http_set_transcript(NULL);
    tl_assert_clean_log(log);

    gather_file("server log", log);
    gather_file("HTTP answers", transcript);
    snprintf(path, sizeof path, "%s/cli.duckdb", g_dir);
    gather_file("cli.duckdb", path);
    snprintf(path, sizeof path, "%s/server.duckdb", g_dir);
    gather_file("server.duckdb", path);

    char *all = tl_read_file(g_all);
    assert_non_null(all);
    size_t len;
    {
        FILE *f = fopen(g_all, "rb");
        fseek(f, 0, SEEK_END);
        len = (size_t)ftell(f);
        fclose(f);
    }
    /* The runs did what they should, so the grep below means something. */
    tl_assert_contains(all, "password authentication failed for user");
    tl_assert_contains(all, "Connection refused");
    tl_assert_contains(all, "does not exist");
    tl_assert_contains(all, "SSL");
    tl_assert_contains(all, "\"state\":\"ready\"");
    tl_assert_contains(all, "postgresql://postgres:***@");
    tl_assert_contains(all, "password=***");
    assert_true(len > 20000);
    assert_no_secret(g_all, all, len);
    print_message("%zu bytes of output, logs, HTTP answers and DuckDB files: no password, no token\n", len);
    free(all);
    tl_rmtree(g_dir);
    free(g_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_secret_anywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
