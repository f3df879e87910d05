/* A logical-capture source with publish: inside `duckstore serve`: its
 * initial load is published, the stream's changes become new versions
 * (one per interval, none while nothing changes), each version equals
 * PostgreSQL row for row; and a periodic source beside the stream keeps
 * its schedule (the stream never ends, so it must not hold the scheduler). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "tl_http.h"

static const char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("cdcpub"));
    /* The stream's versions, at most one a second here (a minute by default). */
    setenv("DUCKSTORE_PUBLISH_STREAM_SECONDS", "1", 1);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tl_server_kill_all();
    free((char *)g_conninfo);
    return 0;
}

/* The manifest's version, and its rows in *rows; 0 before the first. */
static json_int_t manifest_version(const char *dir, json_int_t *rows)
{
    char path[800];
    snprintf(path, sizeof path, "%s/_duckstore_manifest.json", dir);
    json_error_t jerr;
    json_t *m = json_load_file(path, 0, &jerr);
    if (m == NULL)
        return 0;
    json_int_t version = json_integer_value(json_object_get(m, "version"));
    if (rows != NULL)
        *rows = json_integer_value(json_object_get(m, "rows"));
    json_decref(m);
    return version;
}

/* Waits until the manifest holds a version above `above` with `want_rows`. */
static json_int_t wait_version(const char *dir, json_int_t above, json_int_t want_rows)
{
    json_int_t version = 0, rows = -1;
    for (double t0 = tl_now_ms(); tl_now_ms() - t0 < 60000; tl_sleep_ms(50)) {
        version = manifest_version(dir, &rows);
        if (version > above && rows == want_rows)
            return version;
    }
    fail_msg("%s: version %lld with %lld rows after 60 s, expected a version above %lld with %lld rows", dir,
             (long long)version, (long long)rows, (long long)above, (long long)want_rows);
    return 0;
}

/* The published version read back by DuckDB: count, sum of ids and a
 * checksum of every value, as text. */
static char *published_digest(const char *dir, json_int_t version)
{
    duckdb_database db;
    duckdb_connection con;
    assert_int_equal(duckdb_open(NULL, &db), DuckDBSuccess);
    assert_int_equal(duckdb_connect(db, &con), DuckDBSuccess);
    char *digest = tl_duck_scalar(con,
                                  "SELECT count(*) || '/' || sum(id) || '/' || "
                                  "sum(hash(id, status, amount::text)) FROM "
                                  "read_parquet('%s/v%lld/**/*.parquet', hive_partitioning = false)",
                                  dir, (long long)version);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    return digest;
}

static char *source_digest(tl_env *e)
{
    duckdb_database db;
    duckdb_connection con;
    assert_int_equal(duckdb_open(NULL, &db), DuckDBSuccess);
    assert_int_equal(duckdb_connect(db, &con), DuckDBSuccess);
    /* The same expression over PostgreSQL's rows, hashed by DuckDB. */
    PGresult *res =
        PQexec(e->pg, "SELECT string_agg(format('(%s,%L,%s)', id, status, amount), ',') FROM orders");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    char *digest =
        tl_duck_scalar(con,
                       "SELECT count(*) || '/' || sum(id) || '/' || "
                       "sum(hash(id, status, amount::text)) FROM (VALUES %s) AS v(id, status, amount)",
                       PQgetvalue(res, 0, 0));
    PQclear(res);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    return digest;
}

static void stream_versions_follow_changes_and_the_scheduler_runs(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "pub", "  sync_mode: startup\n");
    tl_pg_exec(e.pg, "CREATE TABLE orders (id integer PRIMARY KEY, status text, amount numeric(12,2))");
    tl_pg_exec(e.pg, "INSERT INTO orders SELECT g, 'new', g FROM generate_series(1, 1000) g");
    tl_pg_exec(e.pg, "CREATE TABLE events (id integer, created_at timestamptz)");
    tl_pg_exec(e.pg, "INSERT INTO events SELECT g, now() FROM generate_series(1, 10) g");
    char pub[700];
    snprintf(pub, sizeof pub, "%s/published", e.dir);
    tl_env_source(&e, "orders",
                  "  capture: logical\n  query: SELECT id, status, amount FROM orders\n"
                  "  publish:\n    path: %s\n",
                  pub);
    tl_env_source(&e, "events",
                  "  query: SELECT id, created_at FROM events\n  incremental_column: created_at\n"
                  "  refresh_interval_minutes: 0.01\n");
    duckdb_disconnect(&e.con);
    store_close(e.st);
    e.st = NULL;

    char log_path[700];
    snprintf(log_path, sizeof log_path, "%s/serve.log", e.dir);
    tl_server srv;
    tl_server_start(&srv, e.dir, log_path, NULL);
    json_decref(tl_server_wait_state(&srv, "orders_data", "ready", 60));

    /* The initial load is published. */
    json_int_t v1 = wait_version(pub, 0, 1000);
    char *want = source_digest(&e);
    char *got = published_digest(pub, v1);
    assert_string_equal(got, want);
    free(got);
    free(want);

    /* Changes become a new version within the interval. */
    tl_pg_exec(e.pg, "INSERT INTO orders SELECT g, 'late', g FROM generate_series(1001, 1010) g");
    tl_pg_exec(e.pg, "UPDATE orders SET status = 'paid', amount = amount + 1 WHERE id <= 5");
    tl_pg_exec(e.pg, "DELETE FROM orders WHERE id BETWEEN 6 AND 8");
    json_int_t v2 = wait_version(pub, v1, 1007);
    /* The version may have been cut between two of the statements: wait
     * until one holds all three. */
    want = source_digest(&e);
    for (double t0 = tl_now_ms();; tl_sleep_ms(100)) {
        got = published_digest(pub, v2);
        if (strcmp(got, want) == 0 || tl_now_ms() - t0 > 30000)
            break;
        free(got);
        v2 = manifest_version(pub, NULL);
    }
    assert_string_equal(got, want);
    free(got);
    free(want);

    /* The manifest says up to which commit the version holds: a position
     * PostgreSQL has reached, at or past the stream's start. */
    char path[800];
    snprintf(path, sizeof path, "%s/_duckstore_manifest.json", pub);
    json_error_t jerr;
    json_t *m = json_load_file(path, 0, &jerr);
    assert_non_null(m);
    const char *lsn = json_string_value(json_object_get(json_object_get(m, "capture"), "lsn"));
    assert_non_null(lsn);
    char *reached = tl_pg_scalar(e.pg, "SELECT '%s'::pg_lsn <= pg_current_wal_insert_lsn()", lsn);
    assert_string_equal(reached, "t");
    free(reached);
    assert_non_null(json_string_value(json_object_get(json_object_get(m, "capture"), "last_commit_at")));
    json_decref(m);

    /* The status shows the stream's last version. */
    json_t *doc = tl_server_dataset(&srv, "orders_data");
    json_t *publish = json_object_get(doc, "publish");
    assert_true(json_is_object(publish));
    assert_true(json_integer_value(json_object_get(publish, "version")) >= v2);
    assert_true(json_is_null(json_object_get(publish, "error")));
    json_decref(doc);

    /* Nothing changes: no new version over three intervals, once the
     * versions have settled. A publish notes the stream's change count when
     * it starts and may read changes that arrive just after, so one more
     * version with the same rows can follow (never one short of them). */
    json_int_t quiet = manifest_version(pub, NULL);
    for (double t0 = tl_now_ms(), since = tl_now_ms(); tl_now_ms() - since < 3000 && tl_now_ms() - t0 < 30000;
         tl_sleep_ms(100)) {
        json_int_t now = manifest_version(pub, NULL);
        if (now != quiet) {
            quiet = now;
            since = tl_now_ms();
        }
    }
    tl_sleep_ms(3500);
    assert_int_equal(manifest_version(pub, NULL), quiet);

    /* The periodic source beside the stream kept its schedule. */
    char *metrics = NULL;
    double synced = 0;
    for (double t0 = tl_now_ms(); tl_now_ms() - t0 < 30000; tl_sleep_ms(100)) {
        free(metrics);
        metrics = tl_server_metrics(&srv);
        synced = tl_metric(metrics, "duckstore_syncs_total{source=\"events\",result=\"success\"}");
        if (synced >= 3)
            break;
    }
    free(metrics);
    assert_true(synced >= 3); /* the startup sync and two scheduled ones */

    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(log_path);
    char *log = tl_read_file(log_path);
    assert_int_equal(tl_count(log, "already syncing"), 0); /* the stream is not a sync the scheduler skips */
    free(log);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stream_versions_follow_changes_and_the_scheduler_runs),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
