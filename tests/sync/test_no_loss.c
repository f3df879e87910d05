/* Incremental syncs that lose nothing (docs/incremental.md): rows committed
 * out of order, updated rows and restarts, against the harness PostgreSQL.
 * DUCKSTORE_SOAK=1 runs the writers longer. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

static const char *g_conninfo;

typedef struct writer {
    pthread_t thread;
    const char *url;
    atomic_bool *stop;
    unsigned seed;
    int id;
    long commits;
} writer;

/* Inserts rows stamped with DEFAULT now() (the transaction's start) in
 * transactions of random length, so they commit out of timestamp order. */
static void *writer_main(void *arg)
{
    writer *w = arg;
    PGconn *pg = tl_pg_connect(w->url);
    while (!atomic_load(w->stop)) {
        PQclear(PQexec(pg, "BEGIN"));
        usleep((useconds_t)(rand_r(&w->seed) % 150000));
        char sql[128];
        snprintf(sql, sizeof sql, "INSERT INTO events (writer, payload) VALUES (%d, 'w%d-%ld')", w->id, w->id,
                 w->commits);
        PGresult *res = PQexec(pg, sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            fprintf(stderr, "writer %d: %s", w->id, PQerrorMessage(pg));
        PQclear(res);
        usleep((useconds_t)(rand_r(&w->seed) % 150000));
        PQclear(PQexec(pg, "COMMIT"));
        w->commits++;
    }
    PQfinish(pg);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A restart between syncs: everything the next sync knows comes from the file. */
static void reopen_store(tl_env *e)
{
    duckdb_disconnect(&e->con);
    store_close(e->st);
    ds_error err;
    if (!store_open(e->store_path, &e->st, &err))
        fail_msg("%s", err.msg);
    e->con = tl_store_connect(e->st);
}

typedef struct outcome {
    int64_t pg_rows, stored, distinct_ids;
    bool checksums_equal;
} outcome;

/* Writers commit out of order while incremental syncs run every ~100 ms;
 * after they stop, one last sync. */
static outcome run_writers(const char *schema, const char *inc_col, const char *source_options)
{
    tl_env e;
    tl_env_open(&e, g_conninfo, schema, "");
    tl_pg_exec(e.pg,
               "CREATE TABLE events (id bigserial PRIMARY KEY, writer int NOT NULL, payload text NOT NULL, "
               "created_at timestamptz NOT NULL DEFAULT now())");
    tl_env_source(&e, "ev",
                  "  query: SELECT id, writer, payload, created_at FROM events\n"
                  "  incremental_column: %s\n%s",
                  inc_col, source_options);
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);

    atomic_bool stop;
    atomic_init(&stop, false);
    writer ws[4];
    for (int i = 0; i < 4; i++) {
        ws[i] = (writer){.url = e.url, .stop = &stop, .seed = 7u * (unsigned)i + 1u, .id = i};
        pthread_create(&ws[i].thread, NULL, writer_main, &ws[i]);
    }
    double seconds = getenv("DUCKSTORE_SOAK") ? 20.0 : 6.0;
    double end = now_s() + seconds;
    int syncs = 0;
    while (now_s() < end) {
        tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
        if (++syncs % 10 == 0)
            reopen_store(&e);
        usleep(100000);
    }
    atomic_store(&stop, true);
    long commits = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(ws[i].thread, NULL);
        commits += ws[i].commits;
    }
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_true(report.incremental);

    outcome o;
    o.pg_rows = tl_pg_int(e.pg, "SELECT count(*) FROM events");
    o.stored = tl_duck_int(e.con, "SELECT count(*) FROM ev_data");
    o.distinct_ids = tl_duck_int(e.con, "SELECT count(DISTINCT id) FROM ev_data");
    char *pg_sum = tl_pg_checksum(e.pg, "events", "id,writer,payload,created_at:ts");
    char *duck_sum = tl_duck_checksum(e.con, "ev_data", "id,writer,payload,created_at:ts");
    o.checksums_equal = strcmp(pg_sum, duck_sum) == 0;
    printf("# %s: %d syncs, %ld commits, PostgreSQL %lld rows, DuckDB %lld rows (%lld distinct)\n", schema,
           syncs, commits, (long long)o.pg_rows, (long long)o.stored, (long long)o.distinct_ids);
    assert_true(o.pg_rows == commits);
    free(pg_sum);
    free(duck_sum);
    tl_env_close(&e);
    return o;
}

static void test_commit_horizon_alone(void **state)
{
    (void)state;
    outcome o = run_writers("horizon", "created_at", "");
    assert_int_equal(o.stored, o.pg_rows);
    assert_int_equal(o.distinct_ids, o.pg_rows);
    assert_true(o.checksums_equal);
}

/* The same writers, synced on the bigserial id: sequence values taken by
 * transactions that commit out of order (the read snapshots catch them). */
static void test_sequence_id_alone(void **state)
{
    (void)state;
    outcome o = run_writers("sequence", "id", "");
    assert_int_equal(o.stored, o.pg_rows);
    assert_int_equal(o.distinct_ids, o.pg_rows);
    assert_true(o.checksums_equal);
}

static void test_lookback_and_key(void **state)
{
    (void)state;
    outcome o = run_writers("lookback", "created_at",
                            "  commit_horizon: false\n  lookback: 1 second\n  unique_key: id\n");
    assert_int_equal(o.stored, o.pg_rows);
    assert_int_equal(o.distinct_ids, o.pg_rows);
    assert_true(o.checksums_equal);
}

/* The runbook's plain mode: measured, not asserted: it shows why the
 * guards exist (docs/incremental.md quotes this line). */
static void test_plain_mode_loses_rows(void **state)
{
    (void)state;
    outcome o = run_writers("plain", "created_at", "  commit_horizon: false\n");
    printf("# plain runbook mode lost %lld of %lld rows (%.1f%%)\n", (long long)(o.pg_rows - o.distinct_ids),
           (long long)o.pg_rows,
           o.pg_rows ? 100.0 * (double)(o.pg_rows - o.distinct_ids) / (double)o.pg_rows : 0);
    assert_int_equal(o.stored, o.distinct_ids); /* it may lose rows, but never duplicates them */
}

/* Rows updated again and again (updated_at bumped) end as one current row
 * each, across restarts. */
static void test_updates_replace_rows(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "updates", "");
    tl_pg_exec(e.pg, "CREATE TABLE items (id int PRIMARY KEY, value int NOT NULL, label text, "
                     "updated_at timestamptz NOT NULL DEFAULT now())");
    tl_pg_exec(
        e.pg,
        "INSERT INTO items (id, value, label) SELECT g, 0, 'item ' || g FROM generate_series(1, 300) g");
    tl_env_source(&e, "it",
                  "  query: SELECT id, value, label, updated_at FROM items\n"
                  "  incremental_column: updated_at\n  unique_key: id\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "it", false, &report);
    assert_false(report.incremental);
    int64_t last_updated = 0;
    for (int round = 1; round <= 6; round++) {
        int64_t expected_updates = tl_pg_int(e.pg, "SELECT count(*) FROM items WHERE id %% %d = 0", round);
        tl_pg_exec(e.pg,
                   "UPDATE items SET value = value + %d, updated_at = clock_timestamp() WHERE id %% %d = 0",
                   round, round);
        tl_pg_exec(e.pg, "INSERT INTO items (id, value, label) VALUES (%d, %d, 'new')", 1000 + round, round);
        tl_sync_ok(e.st, &e.cfg, "it", false, &report);
        assert_true(report.incremental);
        assert_int_equal(report.tables[0].rows_inserted, 1);
        assert_int_equal(report.tables[0].rows_updated, expected_updates);
        last_updated = expected_updates;
        if (round == 3)
            reopen_store(&e);
    }
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM it_data"), 306);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(DISTINCT id) FROM it_data"), 306);
    assert_int_equal(tl_duck_int(e.con, "SELECT sum(value) FROM it_data"),
                     tl_pg_int(e.pg, "SELECT sum(value) FROM items"));
    char *pg_sum = tl_pg_checksum(e.pg, "items", "id,value,label,updated_at:ts");
    char *duck_sum = tl_duck_checksum(e.con, "it_data", "id,value,label,updated_at:ts");
    assert_string_equal(pg_sum, duck_sum);
    free(pg_sum);
    free(duck_sum);

    json_t *status = tl_sync_status(e.st, &e.cfg, "it");
    assert_string_equal(tl_json_str(status, "mode"), "upsert");
    assert_int_equal(json_integer_value(json_object_get(status, "incremental_updated")), last_updated);
    assert_int_equal(json_integer_value(json_object_get(status, "incremental_inserted")), 1);
    json_decref(status);
    tl_env_close(&e);
}

/* A long-open transaction holds the horizon back; status names it, and its
 * row, committed later with an old timestamp, still arrives. */
static void test_open_transaction_holds_horizon(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "held", "");
    tl_pg_exec(e.pg, "CREATE TABLE events (id bigserial PRIMARY KEY, payload text, "
                     "created_at timestamptz NOT NULL DEFAULT now())");
    tl_pg_exec(e.pg, "INSERT INTO events (payload) VALUES ('first')");
    tl_env_source(&e, "ev",
                  "  query: SELECT id, payload, created_at FROM events\n  incremental_column: created_at\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);

    PGconn *slow = tl_pg_connect(e.url);
    tl_pg_exec(slow, "SET application_name = 'slow-writer'");
    tl_pg_exec(slow, "BEGIN");
    tl_pg_exec(slow, "INSERT INTO events (payload) VALUES ('late')"); /* stamped now, committed later */
    usleep(50000);
    tl_pg_exec(e.pg, "INSERT INTO events (payload) VALUES ('second')");
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM ev_data"), 2);
    tl_assert_contains(report.tables[0].horizon_holder, "application slow-writer");
    json_t *status = tl_sync_status(e.st, &e.cfg, "ev");
    json_t *table = json_object_get(json_object_get(status, "tables"), "ev_data");
    tl_assert_contains(tl_json_str(table, "horizon_held_by"), "slow-writer");
    json_decref(status);

    tl_pg_exec(slow, "COMMIT");
    PQfinish(slow);
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM ev_data"), 3);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM ev_data WHERE payload = 'late'"), 1);
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM ev_data"), 3);
    tl_env_close(&e);
}

static void test_unique_key_must_be_selected(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "badkey", "");
    tl_pg_exec(e.pg, "CREATE TABLE t (id int, updated_at timestamptz DEFAULT now())");
    tl_env_source(&e, "k",
                  "  query: SELECT id, updated_at FROM t\n  incremental_column: updated_at\n"
                  "  unique_key: [id, version]\n");
    sync_report report;
    ds_error err;
    memset(&err, 0, sizeof err);
    assert_false(sync_source(e.st, &e.cfg, &e.cfg.sources[0], NULL, &report, &err));
    assert_int_equal(err.code, DS_ERR_CONFIG);
    tl_assert_contains(err.msg,
                       "unique_key column \"version\" is not a column of query (columns: id, updated_at)");
    tl_assert_contains(err.msg, "k_db.yaml:5:");
    tl_env_close(&e);
}

int main(void)
{
    g_conninfo = tl_pg_fresh_db("noloss");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_horizon_alone),
        cmocka_unit_test(test_sequence_id_alone),
        cmocka_unit_test(test_lookback_and_key),
        cmocka_unit_test(test_plain_mode_loses_rows),
        cmocka_unit_test(test_updates_replace_rows),
        cmocka_unit_test(test_open_transaction_holds_horizon),
        cmocka_unit_test(test_unique_key_must_be_selected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
