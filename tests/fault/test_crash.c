/* kill -9 of `duckstore serve` at random moments of full syncs, incremental
 * syncs and their commit transactions. Rows reach PostgreSQL in numbered
 * batches, only while no sync reads, so every state a sync can commit is a
 * known prefix of batches. After each kill the DuckDB file is opened
 * read-only (before any repair): both tables hold exactly the same prefix,
 * that prefix is the old or the new one, ids are unique, the view joins
 * every row, watermarks equal max(id) or are null, and the persisted status
 * agrees with the rows. The restarted server drops leftover staging tables,
 * and a sync that is let finish loads every batch exactly once.
 *
 * Which phase a kill lands in is up to the scheduler, so the test keeps
 * killing (bounded by cycles and by time) until a quarter of the kills hit
 * reading and a quarter hit committing, aiming at whichever is short.
 *
 * DUCKSTORE_SOAK=1: 100 kills instead of 24. DUCKSTORE_FAULT_SEED=n replays
 * a run (the seed is printed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"
#include "tl_fault.h"
#include "tl_http.h"

#define TRACES 1000 /* per batch; each trace has 2 results */

typedef enum kill_kind { KILL_FULL, KILL_INCREMENTAL, KILL_COMMIT_FULL, KILL_COMMIT_INCREMENTAL } kill_kind;

static struct {
    char *dir, *conninfo, *config, *db_path, *log;
    PGconn *pg;
    int batches;   /* inserted into PostgreSQL */
    int committed; /* the prefix the DuckDB file holds (as last seen) */
    /* measured on syncs let finish, [0] full, [1] incremental */
    double reading_ms[2], commit_ms[2];
    /* what the kills hit */
    int kills, in_phase[4], old_state, new_state, commit_old, commit_new, commit_missed;
    int staging_left, staging_seen, staging_cleaned, finished;
    double restart_ms, restart_max_ms, inspect_ms;
    int restarts, inspects;
    double started_ms; /* when the program began: the kill loop's time budget */
} g;

/* Checks the server log (no sanitizer report, no password) and empties it:
 * every status poll adds an access line, and reading a growing log after
 * each of hundreds of kills would cost more than the kills. */
static void check_log(void)
{
    tl_assert_clean_log(g.log);
    if (truncate(g.log, 0) != 0)
        fail_msg("cannot empty %s", g.log);
}

/* tl_server_start, timed: from exec to /health answering. */
static void start_server(tl_server *srv)
{
    double t0 = tl_now_ms();
    tl_server_start(srv, g.config, g.log, NULL);
    double ms = tl_now_ms() - t0;
    g.restart_ms += ms;
    g.restart_max_ms = ms > g.restart_max_ms ? ms : g.restart_max_ms;
    g.restarts++;
}

static void add_batch(void)
{
    int b = ++g.batches;
    tl_pg_exec(g.pg,
               "INSERT INTO traces SELECT g, %d, 'trace-' || g FROM generate_series(%d, %d) g;"
               "INSERT INTO results SELECT g, (g + 1) / 2, %d, g / 7.0 FROM generate_series(%d, %d) g",
               b, (b - 1) * TRACES + 1, b * TRACES, b, (b - 1) * 2 * TRACES + 1, b * 2 * TRACES);
}

static int group_setup(void **state)
{
    (void)state;
    g.started_ms = tl_now_ms();
    unsigned seed =
        (unsigned)(getenv("DUCKSTORE_FAULT_SEED") ? atoi(getenv("DUCKSTORE_FAULT_SEED")) : time(NULL));
    printf("# DUCKSTORE_FAULT_SEED=%u\n", seed);
    srand(seed);
    g.conninfo = strdup(tl_pg_fresh_db("fault_crash"));
    g.pg = tl_pg_connect(g.conninfo);
    tl_pg_exec(g.pg,
               "CREATE TABLE traces (id bigint PRIMARY KEY, batch int NOT NULL, payload text NOT NULL);"
               "CREATE TABLE results (id bigint PRIMARY KEY, trace_id bigint NOT NULL, batch int NOT NULL,"
               " score double precision)");
    g.dir = tl_mkdtemp();
    if (asprintf(&g.config, "%s/config", g.dir) < 0 || asprintf(&g.db_path, "%s/crash.duckdb", g.dir) < 0 ||
        asprintf(&g.log, "%s/server.log", g.dir) < 0)
        fail_msg("out of memory");
    char *out = NULL;
    tl_run(&out, "mkdir -p '%s'", g.config);
    free(out);
    char path[600];
    snprintf(path, sizeof path, "%s/duckdb.yaml", g.config);
    tl_write_filef(path, "duckdb:\n  path: %s\n  sync_mode: manual\n  max_sync_rows: 0\n", g.db_path);
    /* The rows of the two newest batches sleep now and then, so a sync
     * takes ~0.3-1 s spread over its COPY streams, whatever the build. */
    snprintf(path, sizeof path, "%s/crash_db.yaml", g.config);
    tl_write_filef(path,
                   "crash_db:\n  url: \"%s\"\n  dataset_query: |\n"
                   "    SELECT id AS dataset_id, id, batch, payload FROM traces\n"
                   "    WHERE (id %% 50 <> 0 OR batch < (SELECT max(batch) - 1 FROM traces)\n"
                   "           OR pg_sleep(0.008) IS NOT NULL)\n"
                   "  results_query: |\n"
                   "    SELECT trace_id AS dataset_id, id, batch, score FROM results\n"
                   "    WHERE (id %% 100 <> 0 OR batch < (SELECT max(batch) - 1 FROM results)\n"
                   "           OR pg_sleep(0.008) IS NOT NULL)\n"
                   "  incremental_column: id\n",
                   g.conninfo);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tl_server_kill_all();
    PQfinish(g.pg);
    tl_rmtree(g.dir);
    free(g.dir);
    free(g.conninfo);
    free(g.config);
    free(g.db_path);
    free(g.log);
    return 0;
}

/* What a look into the file found. */
typedef struct observed {
    int prefix;
    int64_t staging;
} observed;

/* Checks that one table holds exactly batches 1..p of per_batch rows with
 * unique ids, and returns p. */
static int table_prefix(duckdb_connection con, const char *table, int per_batch)
{
    int64_t v[6];
    tl_duck_ints(con, v, 6,
                 "SELECT count(*), count(DISTINCT id), min(id), max(id), max(batch), count(DISTINCT batch) "
                 "FROM %s",
                 table);
    int p = (int)v[4];
    if (v[0] != (int64_t)p * per_batch || v[1] != v[0] || v[2] != (p ? 1 : 0) || v[3] != v[0] || v[5] != p)
        fail_msg("%s is not a prefix of batches: rows %lld, distinct ids %lld, ids %lld..%lld, newest batch "
                 "%d, batches %lld (%d rows per batch)",
                 table, (long long)v[0], (long long)v[1], (long long)v[2], (long long)v[3], p,
                 (long long)v[5], per_batch);
    return p;
}

static void check_watermark(duckdb_connection con, const char *table)
{
    char *wm = tl_duck_scalar(con, "SELECT watermark FROM _duckstore.tables WHERE table_name = '%s'", table);
    char *max = tl_duck_scalar(con, "SELECT max(id)::VARCHAR FROM %s", table);
    if (wm != NULL && (max == NULL || strcmp(wm, max) != 0))
        fail_msg("the watermark of %s is %s but its max(id) is %s", table, wm, max ? max : "NULL");
    free(wm);
    free(max);
}

/* Opens the file as the crash left it (read-only: nothing is repaired) and
 * checks everything the header promises. */
static observed inspect(void)
{
    double t0 = tl_now_ms();
    duckdb_database db;
    duckdb_connection con;
    tl_duck_open_ro(g.db_path, &db, &con);
    observed o = {0};
    o.staging = tl_duck_int(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '%%_staging'");
    int64_t live = tl_duck_int(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name IN "
                                    "('crash_dataset', 'crash_results')");
    if (live == 0) {
        o.prefix = 0;
    } else {
        assert_int_equal(live, 2); /* both tables commit together */
        int pd = table_prefix(con, "crash_dataset", TRACES);
        int pr = table_prefix(con, "crash_results", 2 * TRACES);
        if (pd != pr)
            fail_msg("crash_dataset holds %d batches but crash_results %d: a mix of two syncs", pd, pr);
        o.prefix = pd;
        /* Values intact, and every result row joins its trace in the view. */
        assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM crash_dataset WHERE dataset_id <> id OR "
                                          "payload <> 'trace-' || id"),
                         0);
        assert_int_equal(
            tl_duck_int(con, "SELECT count(*) FROM crash_results WHERE dataset_id <> (id + 1) // 2"), 0);
        assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM crash_data"), (int64_t)pd * 2 * TRACES);
        assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM crash_data WHERE payload IS NULL"), 0);
        check_watermark(con, "crash_dataset");
        check_watermark(con, "crash_results");
        /* The persisted status describes these rows. */
        char *status =
            tl_duck_scalar(con, "SELECT status FROM _duckstore.sync_status WHERE source = 'crash'");
        json_t *doc = status ? json_loads(status, 0, NULL) : NULL;
        if (doc == NULL)
            fail_msg("no readable persisted status next to %d batches: %s", pd, status ? status : "NULL");
        assert_string_equal(json_string_value(json_object_get(doc, "state")), "ready");
        assert_int_equal(json_integer_value(json_object_get(doc, "rows")), (json_int_t)pd * 2 * TRACES);
        json_decref(doc);
        free(status);
    }
    tl_duck_close(&db, &con);
    g.inspect_ms += tl_now_ms() - t0;
    g.inspects++;
    return o;
}

static int phase_index(const char *phase)
{
    return strcmp(phase, "describing") == 0   ? 0
           : strcmp(phase, "reading") == 0    ? 1
           : strcmp(phase, "committing") == 0 ? 2
                                              : 3;
}

/* A server whose sync is let finish: afterwards every batch is there
 * exactly once, and nothing is left in staging. */
static void finish_sync(bool full)
{
    tl_server srv;
    start_server(&srv);
    tl_trigger(&srv, "crash", full);
    /* How long reading and committing last, to spread the kills over them. */
    double tr = 0, tc = 0, deadline = tl_now_ms() + 120000;
    for (;;) {
        if (tl_now_ms() > deadline)
            fail_msg("a sync let finish still runs after 120 s");
        int ph = phase_index(tl_phase(&srv, "crash_data", NULL));
        if (tr == 0 && ph >= 1)
            tr = tl_now_ms();
        if (tc == 0 && ph >= 2)
            tc = tl_now_ms();
        if (ph == 3)
            break;
        tl_sleep_ms(1);
    }
    json_t *ds = tl_server_wait_state(&srv, "crash_data", "ready", 60);
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), (json_int_t)g.batches * 2 * TRACES);
    int kind = strcmp(json_string_value(json_object_get(ds, "sync_type")), "full") == 0 ? 0 : 1;
    if (tr > 0 && tc > 0) {
        g.reading_ms[kind] = tc - tr;
        g.commit_ms[kind] = tl_now_ms() - tc;
    }
    json_decref(ds);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    check_log();
    observed o = inspect();
    assert_int_equal(o.prefix, g.batches);
    assert_int_equal(o.staging, 0);
    g.committed = o.prefix;
    g.finished++;
}

static void crash_cycle(kill_kind kind)
{
    bool full = kind == KILL_FULL || kind == KILL_COMMIT_FULL;
    bool at_commit = kind == KILL_COMMIT_FULL || kind == KILL_COMMIT_INCREMENTAL;
    if (!full || rand() % 2)
        add_batch(); /* an incremental sync always has rows to append */
    tl_server srv;
    start_server(&srv);
    const char *phase = tl_phase(&srv, "crash_data", NULL);
    assert_int_equal(phase_index(phase), 3); /* manual mode: nothing runs after a restart */
    tl_trigger(&srv, "crash", full);
    /* Poll as fast as the server answers until the phase aimed at begins,
     * then kill at a random moment of it (or just after it). */
    int aim = at_commit ? 2 : 1;
    double deadline = tl_now_ms() + 20000;
    do
        phase = tl_phase(&srv, "crash_data", NULL);
    while (phase_index(phase) < aim && tl_now_ms() < deadline);
    if (at_commit && strcmp(phase, "committing") != 0)
        g.commit_missed++;
    double span = at_commit ? g.commit_ms[!full] * 1.2 : g.reading_ms[!full] * 1.1;
    double until = tl_now_ms() + span * (double)rand() / RAND_MAX;
    while (tl_now_ms() < until && phase_index(phase) < 3) {
        tl_sleep_ms(2); /* polling flat out would take the CPU the sync needs */
        phase = tl_phase(&srv, "crash_data", NULL);
    }
    tl_server_kill(&srv);
    int in_phase = phase_index(phase);
    g.in_phase[in_phase]++;
    if (in_phase < 3)
        g.kills++;
    check_log();

    observed o = inspect();
    if (o.prefix != g.committed && o.prefix != g.batches)
        fail_msg("after a kill in %s the file holds %d batches: neither the old state (%d) nor the new (%d)",
                 phase, o.prefix, g.committed, g.batches);
    bool became_new = o.prefix == g.batches && g.committed != g.batches;
    g.new_state += became_new;
    g.old_state += !became_new;
    if (in_phase == 2) {
        g.commit_new += became_new;
        g.commit_old += !became_new;
    }
    g.committed = o.prefix;
    g.staging_left += o.staging > 0;
    if (o.staging > 0 && (g.staging_seen < 3 || tl_soak())) {
        /* The restarted server drops them before it listens (checked the
         * first few times: each check is a restart and a look more). */
        g.staging_seen++;
        start_server(&srv);
        tl_server_kill(&srv);
        observed again = inspect();
        assert_int_equal(again.staging, 0);
        assert_int_equal(again.prefix, o.prefix);
        g.staging_cleaned++;
    }
}

static void test_kill_during_syncs(void **state)
{
    (void)state;
    /* A first full sync, and an incremental one to time both kinds. A poll
     * that came too late to see a phase begin measures nothing: sync again
     * (a few times at most). The pauses in the queries make reading last
     * well over 100 ms on any machine. */
    for (int i = 0; i < 4; i++)
        add_batch();
    for (int kind = 0; kind < 2; kind++)
        for (int attempt = 0; g.reading_ms[kind] <= 100; attempt++) {
            if (attempt == 5)
                fail_msg("the %s sync's reading phase was never seen to last over 100 ms (last %.0f ms)",
                         kind == 0 ? "full" : "incremental", g.reading_ms[kind]);
            if (kind == 1)
                add_batch();
            finish_sync(kind == 0);
        }
    printf("# full sync: reading %.0f ms, committing %.0f ms; incremental: reading %.0f ms, committing %.0f "
           "ms\n",
           g.reading_ms[0], g.commit_ms[0], g.reading_ms[1], g.commit_ms[1]);

    /* Kills that land in a sync, not after it ended, a quarter of them in
     * reading and a quarter in committing. Under the sanitizers every
     * restart and look into the file costs seconds: fewer there (the plain
     * build does the 24). Where a kill lands is up to the scheduler: the
     * loop goes on, aiming at the phase still short of its share, until
     * both have it; it gives up only after many cycles or 420 s of the
     * program (CTest allows 600). */
    int target = tl_soak() ? 100 : tl_sanitized() ? 8 : 24;
    int need = target / 4;
    int max_cycles = 10 * target;
    double budget_end = g.started_ms + 420000;
    int cycle = 0;
    for (; g.kills < target || g.in_phase[1] < need || g.in_phase[2] < need; cycle++) {
        if (cycle == max_cycles || tl_now_ms() > budget_end)
            fail_msg("after %d cycles (%.0f s) only %d kills during syncs (describing %d, reading %d, "
                     "committing %d; %d after the sync ended; commit phase missed %d times): want %d, "
                     "%d of them in reading and %d in committing",
                     cycle, (tl_now_ms() - g.started_ms) / 1000, g.kills, g.in_phase[0], g.in_phase[1],
                     g.in_phase[2], g.in_phase[3], g.commit_missed, target, need, need);
        bool full = cycle % 2 == 0;
        bool at_commit = (cycle / 2) % 2 == 1;
        if (g.in_phase[1] >= need && g.in_phase[2] < need)
            at_commit = true;
        else if (g.in_phase[2] >= need && g.in_phase[1] < need)
            at_commit = false;
        crash_cycle(at_commit ? (full ? KILL_COMMIT_FULL : KILL_COMMIT_INCREMENTAL)
                              : (full ? KILL_FULL : KILL_INCREMENTAL));
        /* Every few kills, a sync that finishes: nothing missing, nothing
         * twice, whatever the kills before it left behind. */
        if (cycle % 8 == 7)
            finish_sync(rand() % 2 == 0);
    }
    finish_sync(false);
    printf(
        "# %d kills during syncs (describing %d, reading %d, committing %d), %d more after the sync ended; "
        "file held the old state %d times, the new %d times (at commit: old %d, new %d, commit phase "
        "missed %d times); staging tables left %d times, dropped by the restart in each of the %d checked; "
        "%d syncs finished in %d cycles\n",
        g.kills, g.in_phase[0], g.in_phase[1], g.in_phase[2], g.in_phase[3], g.old_state, g.new_state,
        g.commit_old, g.commit_new, g.commit_missed, g.staging_left, g.staging_cleaned, g.finished, cycle);
    printf("# restart to /health: %.0f ms on average (%d restarts, longest %.0f ms); a look into the file "
           "%.0f ms\n",
           g.restart_ms / g.restarts, g.restarts, g.restart_max_ms, g.inspect_ms / g.inspects);
    assert_int_equal(g.staging_seen, g.staging_cleaned);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_during_syncs),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
