/* Readers on their own DuckDB connections during 50 back-to-back syncs of
 * a split source, alternating full (partitioned, two workers) and
 * incremental. Rows arrive in numbered batches of known size between
 * syncs, so every read must see both tables and the view at one committed
 * batch count: never a missing table, never a partial count, never a
 * duplicate id, never a result row without its trace, never going back.
 * Each reader must see a fifth of the states: on a machine that starves
 * them, more syncs follow (up to four times as many).
 * DUCKSTORE_SOAK=1: 300 syncs. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "tl_fault.h"

#define TRACES 200 /* per batch; 2 results per trace */
#define READERS 2

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("fault_readers"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

typedef struct reader {
    pthread_t thread;
    store *st;
    atomic_bool stop, done;
    atomic_int batches_now; /* the count the last committed sync holds */
    _Atomic uint64_t reads;
    atomic_int states; /* batch counts seen, one per change */
    int last_batches;
    char failure[1536];
} reader;

/* One statement, so one snapshot: counts of both tables and of the view. */
static const char *const read_sql =
    "SELECT (SELECT count(*) FROM rd_dataset), (SELECT count(DISTINCT id) FROM rd_dataset), "
    "(SELECT coalesce(max(batch), 0) FROM rd_dataset), (SELECT count(*) FROM rd_results), "
    "(SELECT count(DISTINCT id) FROM rd_results), (SELECT coalesce(max(batch), 0) FROM rd_results), "
    "(SELECT count(*) FROM rd_data), (SELECT count(*) FROM rd_data WHERE payload IS NULL)";

static void *reader_main(void *arg)
{
    reader *rd = arg;
    duckdb_connection con;
    ds_error err;
    if (!store_connect(rd->st, &con, &err)) {
        snprintf(rd->failure, sizeof rd->failure, "%s", err.msg);
        atomic_store(&rd->done, true);
        return NULL;
    }
    while (!atomic_load(&rd->stop) && rd->failure[0] == '\0') {
        duckdb_result res;
        if (duckdb_query(con, read_sql, &res) == DuckDBError) {
            snprintf(rd->failure, sizeof rd->failure, "read %llu failed: %s",
                     (unsigned long long)atomic_load(&rd->reads), duckdb_result_error(&res));
            duckdb_destroy_result(&res);
            break;
        }
        int64_t v[8];
        for (idx_t i = 0; i < 8; i++)
            v[i] = duckdb_value_int64(&res, i, 0);
        duckdb_destroy_result(&res);
        atomic_fetch_add(&rd->reads, 1);
        int p = (int)v[2];
        if (v[0] != (int64_t)p * TRACES || v[1] != v[0] || v[5] != p || v[3] != 2 * v[0] || v[4] != v[3] ||
            v[6] != v[3] || v[7] != 0)
            snprintf(rd->failure, sizeof rd->failure,
                     "read %llu saw dataset %lld rows (%lld distinct, newest batch %d), results %lld rows "
                     "(%lld distinct, newest batch %lld), view %lld rows (%lld without their trace): not one "
                     "committed state of %d traces per batch",
                     (unsigned long long)atomic_load(&rd->reads), (long long)v[0], (long long)v[1], p,
                     (long long)v[3], (long long)v[4], (long long)v[5], (long long)v[6], (long long)v[7],
                     TRACES);
        else if (p < rd->last_batches)
            snprintf(rd->failure, sizeof rd->failure, "read %llu went back from %d batches to %d",
                     (unsigned long long)atomic_load(&rd->reads), rd->last_batches, p);
        else if (p > atomic_load(&rd->batches_now))
            snprintf(rd->failure, sizeof rd->failure, "read %llu saw %d batches before a sync committed them",
                     (unsigned long long)atomic_load(&rd->reads), p);
        if (p != rd->last_batches)
            atomic_fetch_add(&rd->states, 1);
        rd->last_batches = p;
    }
    duckdb_disconnect(&con);
    atomic_store(&rd->done, true);
    return NULL;
}

static bool seen_enough(reader *rds, int need)
{
    for (size_t k = 0; k < READERS; k++)
        if (atomic_load(&rds[k].states) < need)
            return false;
    return true;
}

static void test_readers_during_back_to_back_syncs(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "readers", "  sync_workers: 2\n  max_sync_rows: 0\n");
    tl_pg_exec(e.pg,
               "CREATE TABLE traces (id bigint PRIMARY KEY, batch int NOT NULL, payload text NOT NULL);"
               "CREATE TABLE results (id bigint PRIMARY KEY, trace_id bigint NOT NULL, batch int NOT NULL,"
               " score double precision)");
    tl_env_source(&e, "rd",
                  "  dataset_query: SELECT id AS dataset_id, id, batch, payload FROM traces\n"
                  "  results_query: SELECT trace_id AS dataset_id, id, batch, score FROM results\n"
                  "  incremental_column: id\n  partition_column: id\n");
    int batches = 0;
    sync_report r;
    reader rds[READERS];
    memset(rds, 0, sizeof rds);
    int syncs = tl_scale(50, 300), need = syncs / 5, i = 0;
    double t0 = tl_now_ms();
    for (; i <= syncs || (i <= 4 * syncs && !seen_enough(rds, need)); i++) {
        batches++;
        tl_pg_exec(e.pg,
                   "INSERT INTO traces SELECT g, %d, 'trace-' || g FROM generate_series(%d, %d) g;"
                   "INSERT INTO results SELECT g, (g + 1) / 2, %d, g / 7.0 FROM generate_series(%d, %d) g",
                   batches, (batches - 1) * TRACES + 1, batches * TRACES, batches,
                   (batches - 1) * 2 * TRACES + 1, batches * 2 * TRACES);
        bool full = i % 2 == 0;
        tl_sync_ok(e.st, &e.cfg, "rd", full, &r);
        assert_int_equal(r.incremental, !full);
        assert_int_equal(r.rows, (int64_t)batches * 2 * TRACES);
        if (i == 0) {
            /* The tables exist from here on: start reading. */
            for (size_t k = 0; k < READERS; k++) {
                rds[k].st = e.st;
                atomic_init(&rds[k].stop, false);
                atomic_init(&rds[k].done, false);
                atomic_init(&rds[k].batches_now, batches);
                atomic_init(&rds[k].states, 0);
                assert_int_equal(pthread_create(&rds[k].thread, NULL, reader_main, &rds[k]), 0);
            }
            t0 = tl_now_ms();
        }
        for (size_t k = 0; k < READERS; k++)
            atomic_store(&rds[k].batches_now, batches + 1); /* the next sync may commit from now on */
    }
    int done = i - 1; /* syncs after the first */
    double elapsed = (tl_now_ms() - t0) / 1000;
    uint64_t reads = 0;
    for (size_t k = 0; k < READERS; k++) {
        /* Two more reads, so the last one began after the last commit. */
        uint64_t seen = atomic_load(&rds[k].reads);
        double deadline = tl_now_ms() + 120000;
        while (atomic_load(&rds[k].reads) < seen + 2 && !atomic_load(&rds[k].done)) {
            if (tl_now_ms() > deadline)
                fail_msg("reader %zu made no read in 120 s", k);
            tl_sleep_ms(1);
        }
        atomic_store(&rds[k].stop, true);
        pthread_join(rds[k].thread, NULL);
        if (rds[k].failure[0])
            fail_msg("reader %zu: %s", k, rds[k].failure);
        reads += rds[k].reads;
        /* It read while the data changed: it saw many of the states. */
        assert_true(atomic_load(&rds[k].states) >= need);
        assert_int_equal(rds[k].last_batches, batches);
    }
    printf("# %d syncs (%d full, %d incremental) in %.1f s; %d readers made %llu reads, each saw %d and "
           "%d of "
           "the %d states; no missing table, partial count or duplicate\n",
           done, (done + 1) / 2, done / 2, elapsed, READERS, (unsigned long long)reads,
           atomic_load(&rds[0].states), atomic_load(&rds[1].states), done + 1);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readers_during_back_to_back_syncs),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
