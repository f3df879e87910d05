/* PostgreSQL connections `serve` keeps between syncs, against a role with
 * a connection limit: 30 sources synced one after the other never leave
 * more than max_idle_source_connections idle connections (default 8; a
 * sampler watches pg_stat_activity the whole time), every source syncs,
 * another client of the role can still connect, and a sync refused for
 * want of a slot (SQLSTATE 53300) closes the idle ones and connects once
 * more. Idle connections close after idle_source_connection_timeout. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"
#include "tl_http.h"

#define NSOURCES 30
#define DEFAULT_CAP 8
/* Room for the idle ones, one running sync (its read and the connection
 * holding the source's advisory lock) and one other client. */
#define ROLE_LIMIT (DEFAULT_CAP + 3)
#define ROWS 10

static char *g_dir, *g_conninfo, *g_role_url;
static char g_role[64];
static PGconn *g_pg;

static int teardown_test(void **state)
{
    (void)state;
    tl_server_kill_all();
    return 0;
}

static int setup_group(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("conncap"));
    g_pg = tl_pg_connect(g_conninfo);
    snprintf(g_role, sizeof g_role, "ds_conncap_%d", (int)getpid());
    tl_pg_exec(g_pg, "CREATE ROLE %s LOGIN PASSWORD 'cap-%d-pw' CONNECTION LIMIT %d", g_role, (int)getpid(),
               ROLE_LIMIT);
    tl_pg_exec(g_pg,
               "CREATE TABLE items (id int PRIMARY KEY, created_at timestamptz NOT NULL);"
               "INSERT INTO items SELECT g, timestamptz '2026-02-13 10:00:00+00' + g * interval '1 minute'"
               " FROM generate_series(1, %d) g;"
               "GRANT SELECT ON items TO %s",
               ROWS, g_role);
    if (asprintf(&g_role_url, "host=%s port=%s dbname=%s user=%s password=cap-%d-pw", PQhost(g_pg),
                 PQport(g_pg), PQdb(g_pg), g_role, (int)getpid()) < 0)
        fail_msg("out of memory");
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
    free(g_role_url);
    return 0;
}

/* DIR/name with duckdb.yaml (sync_mode: manual plus extra lines) and n
 * sources s00, s01, ... reading items as the limited role. */
static char *make_config(const char *name, const char *store_extra, int n)
{
    char *dir = tl_keepf("%s/%s", g_dir, name);
    mkdir(dir, 0755);
    tl_write_filef(tl_keepf("%s/duckdb.yaml", dir), "duckdb:\n  path: %s/%s.duckdb\n  sync_mode: manual\n%s",
                   g_dir, name, store_extra);
    for (int i = 0; i < n; i++)
        tl_write_filef(tl_keepf("%s/s%02d_db.yaml", dir, i),
                       "s%02d_db:\n  url: \"%s\"\n  query: SELECT id, created_at FROM items\n"
                       "  incremental_column: created_at\n",
                       i, g_role_url);
    return dir;
}

/* duckstore's connections as the role: all of them, and the idle ones. */
static int64_t role_conns(const char *state)
{
    return tl_pg_int(g_pg,
                     "SELECT count(*) FROM pg_stat_activity WHERE usename = '%s' AND "
                     "application_name = 'duckstore' AND ('%s' = '' OR state = '%s')",
                     g_role, state, state);
}

/* Watches duckstore's connections of the role until told to stop. */
typedef struct sampler {
    pthread_t thread;
    atomic_bool stop;
    int64_t max_total, samples;
    char error[256];
} sampler;

static void *sample(void *arg)
{
    sampler *s = arg;
    PGconn *pg = PQconnectdb(g_conninfo);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE usename = '%s' AND application_name = 'duckstore'",
             g_role);
    while (!atomic_load(&s->stop) && PQstatus(pg) == CONNECTION_OK) {
        PGresult *res = PQexec(pg, sql);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            snprintf(s->error, sizeof s->error, "%s", PQerrorMessage(pg));
            PQclear(res);
            break;
        }
        int64_t total = atoll(PQgetvalue(res, 0, 0));
        PQclear(res);
        if (total > s->max_total)
            s->max_total = total;
        s->samples++;
        usleep(1000);
    }
    if (PQstatus(pg) != CONNECTION_OK && s->error[0] == '\0')
        snprintf(s->error, sizeof s->error, "%s", PQerrorMessage(pg));
    PQfinish(pg);
    return NULL;
}

/* Triggers a sync of one source and waits for its result: fails the test
 * showing the status when it ends in error. */
static void sync_ok(const tl_server *srv, int i)
{
    json_decref(tl_http_json(srv->port, "POST", tl_keepf("/api/store/sync/s%02d", i), NULL, 202, NULL));
    const char *data = tl_keepf("s%02d_data", i);
    double deadline = tl_now_ms() + 60000;
    for (;;) {
        json_t *ds = tl_server_dataset(srv, data);
        const char *state = json_string_value(json_object_get(ds, "state"));
        if (strcmp(state, "ready") == 0) {
            assert_int_equal(json_integer_value(json_object_get(ds, "rows")), ROWS);
            json_decref(ds);
            return;
        }
        if (strcmp(state, "error") == 0 || tl_now_ms() > deadline)
            fail_msg("s%02d did not sync: %s", i, json_dumps(ds, 0));
        json_decref(ds);
        tl_sleep_ms(20);
    }
}

static void test_idle_connections_capped(void **state)
{
    (void)state;
    char *config = make_config("cap", "", NSOURCES), *log = tl_keepf("%s/cap.log", g_dir);
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    sampler s = {.max_total = 0};
    atomic_init(&s.stop, false);
    assert_int_equal(pthread_create(&s.thread, NULL, sample, &s), 0);
    for (int i = 0; i < NSOURCES; i++) {
        sync_ok(&srv, i);
        int64_t idle = role_conns("idle");
        if (idle > DEFAULT_CAP)
            fail_msg("%lld idle connections after syncing s%02d; the cap is %d", (long long)idle, i,
                     DEFAULT_CAP);
    }
    atomic_store(&s.stop, true);
    pthread_join(s.thread, NULL);
    assert_string_equal(s.error, "");
    assert_true(s.samples > 0);
    /* The idle ones plus the two of the running sync (its read and its
     * lock), at every sample. */
    if (s.max_total > DEFAULT_CAP + 2)
        fail_msg("duckstore held %lld connections of the role at once (cap %d + 2 of the running sync)",
                 (long long)s.max_total, DEFAULT_CAP);
    assert_int_equal(role_conns("idle"), DEFAULT_CAP); /* kept for the next syncs */
    char *metrics = tl_server_metrics(&srv);
    assert_true(tl_metric(metrics, "duckstore_idle_source_connections") == DEFAULT_CAP);
    free(metrics);

    /* Another client of the role still gets in. */
    PGconn *other = PQconnectdb(g_role_url);
    assert_int_equal(PQstatus(other), CONNECTION_OK);

    /* Fill the role's last slots: the next new connection is refused
     * (53300); duckstore closes its idle ones and connects once more. */
    PGconn *filler = PQconnectdb(g_role_url), *filler2 = PQconnectdb(g_role_url);
    assert_int_equal(PQstatus(filler), CONNECTION_OK);
    assert_int_equal(PQstatus(filler2), CONNECTION_OK);
    PGconn *refused = PQconnectdb(g_role_url);
    assert_int_not_equal(PQstatus(refused), CONNECTION_OK);
    tl_assert_contains(PQerrorMessage(refused), "too many connections for role");
    PQfinish(refused);
    sync_ok(&srv, 0); /* s00's connection was closed long ago to make room */
    PQfinish(filler);
    PQfinish(filler2);
    PQfinish(other);

    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(log);
    char *text = tl_read_file(log);
    tl_assert_contains(text, "s00: PostgreSQL has no connection slot left");
    tl_assert_contains(text, tl_keepf("closed %d idle kept connections, connecting once more", DEFAULT_CAP));
    assert_null(strstr(text, "sync failed"));
    assert_int_equal(tl_count(text, "sync done"), NSOURCES + 1);
    free(text);
}

static void test_idle_connections_closed_after_timeout(void **state)
{
    (void)state;
    char *config =
        make_config("timeout", "  max_idle_source_connections: 2\n  idle_source_connection_timeout: 1\n", 3);
    char *log = tl_keepf("%s/timeout.log", g_dir);
    tl_server srv;
    tl_server_start(&srv, config, log, NULL);
    for (int i = 0; i < 3; i++)
        sync_ok(&srv, i);
    /* At most 2 kept, then none once they have been idle for a second. */
    assert_true(role_conns("idle") <= 2);
    double deadline = tl_now_ms() + 30000;
    while (role_conns("") > 0) {
        if (tl_now_ms() > deadline)
            fail_msg("%lld connections still open 30 s after the syncs; the idle timeout is 1 s",
                     (long long)role_conns(""));
        tl_sleep_ms(50);
    }
    char *metrics = tl_server_metrics(&srv);
    assert_true(tl_metric(metrics, "duckstore_idle_source_connections") == 0);
    free(metrics);
    /* A sync after that connects anew. */
    sync_ok(&srv, 1);
    assert_int_equal(tl_server_stop(&srv, 20, NULL), 0);
    tl_assert_clean_log(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_idle_connections_capped, teardown_test),
        cmocka_unit_test_teardown(test_idle_connections_closed_after_timeout, teardown_test),
    };
    int rc = cmocka_run_group_tests(tests, setup_group, teardown_group);
    tl_free_kept();
    return rc;
}
