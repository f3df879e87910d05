/* Readers on their own DuckDB connections while full syncs swap the tables:
 * every read sees the complete old data or the complete new data, never an
 * empty or missing table, and the tables and the view of a split source
 * change together. Each reader has read once before the first sync and reads
 * twice more after the last, so it saw at least two states whatever the
 * scheduler did meanwhile. */
#include "testlib.h"
#include "tl_http.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("sync_readers"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

#define MAX_COLS 3
#define MAX_SEEN 64
#define SYNCS 5

typedef struct counts {
    int64_t v[MAX_COLS];
} counts;

/* What one reader thread saw: each change of the counts, in order. */
typedef struct reader {
    pthread_t thread;
    store *st;
    const char *sql; /* one row of ncols counts */
    size_t ncols;
    atomic_bool stop;
    _Atomic uint64_t reads, attempts; /* successful reads; queries run */
    uint64_t errors;
    char first_error[1024];
    counts seen[MAX_SEEN];
    size_t nseen;
    bool overflow;
} reader;

static void *reader_main(void *arg)
{
    reader *rd = arg;
    duckdb_connection con;
    ds_error err;
    if (!store_connect(rd->st, &con, &err)) {
        rd->errors++;
        snprintf(rd->first_error, sizeof rd->first_error, "%s", err.msg);
        return NULL;
    }
    while (!atomic_load(&rd->stop)) {
        duckdb_result res;
        duckdb_state qs = duckdb_query(con, rd->sql, &res);
        atomic_fetch_add(&rd->attempts, 1);
        if (qs == DuckDBError) {
            if (rd->errors++ == 0)
                snprintf(rd->first_error, sizeof rd->first_error, "%s", duckdb_result_error(&res));
            duckdb_destroy_result(&res);
            continue;
        }
        counts c = {{0}};
        for (size_t i = 0; i < rd->ncols; i++)
            c.v[i] = duckdb_value_int64(&res, i, 0);
        duckdb_destroy_result(&res);
        if (rd->nseen == 0 || memcmp(&rd->seen[rd->nseen - 1], &c, sizeof c) != 0) {
            if (rd->nseen < MAX_SEEN)
                rd->seen[rd->nseen++] = c;
            else
                rd->overflow = true;
        }
        atomic_fetch_add(&rd->reads, 1);
    }
    duckdb_disconnect(&con);
    return NULL;
}

/* Waits until the reader has run at least n queries (bounded). */
static void reader_wait(reader *rd, uint64_t n)
{
    double deadline = tl_now_ms() + 120000;
    while (atomic_load(&rd->attempts) < n) {
        if (tl_now_ms() > deadline)
            fail_msg("the reader ran %llu queries in 120 s, not %llu",
                     (unsigned long long)atomic_load(&rd->attempts), (unsigned long long)n);
        tl_sleep_ms(1);
    }
}

static void reader_start(reader *rd, store *st, const char *sql, size_t ncols)
{
    memset(rd, 0, sizeof *rd);
    rd->st = st;
    rd->sql = sql;
    rd->ncols = ncols;
    atomic_init(&rd->stop, false);
    atomic_init(&rd->reads, 0);
    atomic_init(&rd->attempts, 0);
    assert_int_equal(pthread_create(&rd->thread, NULL, reader_main, rd), 0);
    reader_wait(rd, 1);
}

/* Stops the reader and checks that everything it saw is one of the synced
 * states, in sync order. */
static void reader_check(reader *rd, const counts *states, size_t nstates)
{
    uint64_t n = atomic_load(&rd->attempts) + 2;
    reader_wait(rd, n > 20 ? n : 20);
    atomic_store(&rd->stop, true);
    pthread_join(rd->thread, NULL);
    if (rd->errors > 0)
        fail_msg("%llu of the reader's queries failed, first: %s", (unsigned long long)rd->errors,
                 rd->first_error);
    assert_false(rd->overflow);
    assert_true(atomic_load(&rd->reads) >= 20);
    size_t last = 0;
    for (size_t i = 0; i < rd->nseen; i++) {
        size_t match = nstates;
        for (size_t s = 0; s < nstates; s++)
            if (memcmp(&rd->seen[i], &states[s], sizeof(counts)) == 0)
                match = s;
        if (match == nstates)
            fail_msg("the reader saw counts (%lld, %lld, %lld), which no sync produced",
                     (long long)rd->seen[i].v[0], (long long)rd->seen[i].v[1], (long long)rd->seen[i].v[2]);
        if (match < last)
            fail_msg("the reader saw the state of sync %zu after that of sync %zu", match, last);
        last = match;
    }
    /* It read while the data changed: it saw more than one state. */
    assert_true(rd->nseen >= 2);
    printf("reader: %llu reads, %zu states seen of %zu\n", (unsigned long long)atomic_load(&rd->reads),
           rd->nseen, nstates);
}

static void test_readers_see_old_or_new_split_source(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "split_readers", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 12500, 4);
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    counts states[SYNCS + 1];
    memset(states, 0, sizeof states);
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    states[0] = (counts){{12500, 50000, 50000}};
    assert_int_equal(r.rows, 50000);

    reader rd;
    reader_start(&rd, e.st,
                 "SELECT (SELECT count(*) FROM monitoring_dataset), (SELECT count(*) FROM "
                 "monitoring_results), (SELECT count(*) FROM monitoring_data)",
                 3);
    int next = 12501;
    for (int i = 1; i <= SYNCS; i++) {
        tl_llm_add(e.pg, next, next + 100 * i - 1, 4);
        next += 100 * i;
        tl_sync_ok(e.st, &e.cfg, "monitoring", true, &r);
        assert_false(r.incremental);
        states[i] = (counts){{r.tables[0].rows_total, r.tables[1].rows_total, r.rows}};
        assert_int_equal(states[i].v[0], next - 1);
        assert_int_equal(states[i].v[1], 4 * (next - 1));
        assert_int_equal(states[i].v[2], 4 * (next - 1));
    }
    reader_check(&rd, states, SYNCS + 1);
    tl_llm_assert_synced(&e, "monitoring");
    tl_env_close(&e);
}

static void test_readers_see_old_or_new_single_table(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "table_readers", "  sync_workers: 2\n");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 12500, 4);
    tl_env_source(&e, "flat", "  query: SELECT * FROM llm_metric_results\n  partition_column: id\n");
    counts states[SYNCS + 1];
    memset(states, 0, sizeof states);
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "flat", false, &r);
    states[0].v[0] = r.rows;
    assert_int_equal(r.rows, 50000);

    reader rd;
    reader_start(&rd, e.st, "SELECT count(*) FROM flat_data", 1);
    int next = 12501;
    for (int i = 1; i <= SYNCS; i++) {
        tl_llm_add(e.pg, next, next + 49, 4);
        next += 50;
        tl_sync_ok(e.st, &e.cfg, "flat", true, &r);
        states[i].v[0] = r.rows;
        assert_int_equal(r.rows, 50000 + 200 * i);
    }
    reader_check(&rd, states, SYNCS + 1);
    tl_env_close(&e);
}

/* A reader inside a transaction keeps its snapshot across a full sync, and
 * its open transaction does not make the sync fail. */
static void test_open_read_transaction_across_sync(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "snapshot_reader", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 1000, 2);
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);

    duckdb_connection other = tl_store_connect(e.st);
    tl_duck_exec(other, "BEGIN TRANSACTION");
    assert_int_equal(tl_duck_int(other, "SELECT count(*) FROM monitoring_data"), 2000);
    tl_llm_add(e.pg, 1001, 1100, 2);
    tl_sync_ok(e.st, &e.cfg, "monitoring", true, &r);
    assert_int_equal(r.rows, 2200);
    assert_int_equal(tl_duck_int(other, "SELECT count(*) FROM monitoring_data"), 2000);
    assert_int_equal(tl_duck_int(other, "SELECT count(*) FROM monitoring_dataset"), 1000);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM monitoring_data"), 2200);
    tl_duck_exec(other, "COMMIT");
    assert_int_equal(tl_duck_int(other, "SELECT count(*) FROM monitoring_data"), 2200);
    duckdb_disconnect(&other);
    tl_llm_assert_synced(&e, "monitoring");
    tl_env_close(&e);
}

typedef struct sync_thread {
    pthread_t thread;
    tl_env *e;
    const char *source;
    int ok;
    char error[1024];
} sync_thread;

static void *sync_thread_main(void *arg)
{
    sync_thread *t = arg;
    for (int i = 0; i < 4; i++) {
        sync_options opt = {.force_full = true};
        sync_report r;
        ds_error err;
        if (sync_source(t->e->st, &t->e->cfg, cfg_find_source(&t->e->cfg, t->source), &opt, &r, &err))
            t->ok++;
        else if (t->error[0] == '\0')
            snprintf(t->error, sizeof t->error, "%s", err.msg);
    }
    return NULL;
}

/* The scheduler syncs due sources concurrently: their staging, appends and
 * commits interleave on one DuckDB database without conflicts. */
static void test_sources_sync_concurrently(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "concurrent_sources", "  sync_workers: 2\n");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 4000, 3);
    tl_env_source(&e, "alpha", TL_LLM_SOURCE_YAML "  partition_column: id\n");
    tl_env_source(&e, "beta", TL_LLM_SOURCE_YAML);
    tl_env_source(&e, "gamma", "  query: SELECT * FROM llm_metric_results\n  partition_column: created_at\n");
    sync_thread threads[] = {
        {.e = &e, .source = "alpha"}, {.e = &e, .source = "beta"}, {.e = &e, .source = "gamma"}};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&threads[i].thread, NULL, sync_thread_main, &threads[i]), 0);
    for (size_t i = 0; i < 3; i++) {
        pthread_join(threads[i].thread, NULL);
        if (threads[i].ok != 4)
            fail_msg("%s: %d of 4 syncs succeeded; first error: %s", threads[i].source, threads[i].ok,
                     threads[i].error);
    }
    tl_llm_assert_synced(&e, "alpha");
    tl_llm_assert_synced(&e, "beta");
    char *want = tl_pg_checksum(e.pg, "(" TL_LLM_RESULTS_QUERY ") AS q", TL_LLM_RESULTS_SPEC);
    char *got =
        tl_duck_checksum(e.con,
                         "(SELECT trace_id AS dataset_id, id, metric_name, metric_value AS metric_score, "
                         "metric_category, explanation, details, created_at FROM gamma_data) AS g",
                         TL_LLM_RESULTS_SPEC);
    assert_string_equal(got, want);
    free(want);
    free(got);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readers_see_old_or_new_split_source),
        cmocka_unit_test(test_readers_see_old_or_new_single_table),
        cmocka_unit_test(test_open_read_transaction_across_sync),
        cmocka_unit_test(test_sources_sync_concurrently),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
