/* sync_workers is a ceiling: a partitioned read chooses how many insert
 * streams to run from what it measures, says so in the log, and loads
 * exactly the source's rows whatever it chose. The rule itself is checked
 * on measures given to it; the syncs check the log line and the rows (no
 * timing is asserted: what the machine measures is not the test's). */
#include "testlib.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sync/partition.h"

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("sync_streams"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

static int added(double wait, double idle, int asked, int running, partition_bound *bound)
{
    partition_measure m = {.wait_share = wait, .idle_cores = idle, .cores = 2};
    return partition_streams_to_add(&m, asked, running, bound);
}

static void test_the_rule(void **state)
{
    (void)state;
    partition_bound b;
    /* Busy streams and no idle core: another would only contend. */
    assert_int_equal(added(0.2, 0.1, 4, 1, &b), 0);
    assert_int_equal(b, PARTITION_DUCKDB_BOUND);
    assert_string_equal(partition_bound_text(b), "DuckDB-bound");
    /* Streams waiting for PostgreSQL 80% of the time: five would keep it
     * busy, four are allowed. */
    assert_int_equal(added(0.8, 1.5, 4, 1, &b), 3);
    assert_int_equal(b, PARTITION_PG_BOUND);
    assert_string_equal(partition_bound_text(b), "PostgreSQL-bound");
    /* Waiting half the time with two running: two more. */
    assert_int_equal(added(0.5, 1.0, 8, 2, &b), 2);
    assert_int_equal(b, PARTITION_PG_BOUND);
    /* Waiting, but the machine has no idle core (PostgreSQL may run on it,
     * short of CPU): more readers would not add to its output... */
    assert_int_equal(added(0.6, 0.1, 4, 1, &b), 0);
    assert_int_equal(b, PARTITION_DUCKDB_BOUND);
    /* ...unless the streams hardly do anything but wait (a remote or
     * sleeping server). */
    assert_int_equal(added(0.9, 0.0, 4, 1, &b), 3);
    assert_int_equal(b, PARTITION_PG_BOUND);
    /* Busy streams and an idle core (the other table finished): one more. */
    assert_int_equal(added(0.1, 1.0, 4, 1, &b), 1);
    assert_int_equal(b, PARTITION_IDLE_CORES);
    assert_string_equal(partition_bound_text(b), "cores idle");
    /* Never past what sync_workers asked. */
    assert_int_equal(added(0.99, 2.0, 4, 4, &b), 0);
    assert_int_equal(added(0.99, 2.0, 4, 3, &b), 1);
}

static bool network(double wait, double idle, double sends)
{
    partition_measure m = {.wait_share = wait, .idle_cores = idle, .cores = 2};
    return partition_network_bound(&m, sends);
}

/* The path is the limit only when the reader and its backend both wait
 * at once: on one machine the one waits while the other works. */
static void test_the_network_rule(void **state)
{
    (void)state;
    /* A server 60 ms away (the bench's simulated network): the reader
     * waited 41-71 % of the time, the backend in 7-10 of 10 samples, with
     * 0.6-0.9 cores idle. */
    assert_true(network(0.41, 0.6, 0.8));
    assert_true(network(0.47, 0.75, 0.8));
    assert_true(network(0.67, 0.9, 0.7));
    /* A reader that only waits, pinned or measured, however busy the
     * cores, and a blocked backend. */
    assert_true(network(1.0, 0.0, 0.6));
    /* A local DuckDB-bound read: the backend waits to send while the
     * reader works, and the two shares add up to about one... */
    assert_false(network(0.35, 1.0, 0.7));
    assert_false(network(0.3, 1.0, 0.8));
    assert_false(network(0.2, 1.0, 1.0));
    /* ...or more on saturated cores, where the reader is woken late (a
     * local read measured 32 % and 10 of 10 with no core idle). */
    assert_false(network(0.32, 0.0, 1.0));
    /* A slow query: the reader waits, the backend computes. */
    assert_false(network(0.95, 1.0, 0.1));
    /* A backend that waits to send in half the samples or fewer. */
    assert_false(network(1.0, 1.0, 0.5));
}

#define ROWS 30000
#define SPEC "id,t,j,n"

static void create_src(PGconn *pg)
{
    tl_pg_exec(pg, "CREATE TABLE src (id bigint PRIMARY KEY, t text, j jsonb, n numeric(10, 2))");
    /* Multibyte text too: it reaches DuckDB unchecked and must be exact. */
    tl_pg_exec(
        pg,
        "INSERT INTO src SELECT i, CASE WHEN i %% 7 = 0 THEN NULL ELSE repeat('é☃' || i, 1 + i %% 40) END, "
        "jsonb_build_object('k', i, 's', 'ü' || i), i / 3.0 FROM generate_series(1, %d) AS i",
        ROWS);
}

/* Runs `duckstore [flags] sync --full` on the env's config into its own
 * file with env_assign in its environment; returns its output (log lines). */
static char *run_sync(tl_env *e, const char *env_assign, const char *flags, const char *source)
{
    char *out = NULL;
    int rc =
        tl_run(&out,
               "rm -f '%s/cli.duckdb' '%s/cli.duckdb.wal'; %s '%s' %s --config-dir '%s' --db '%s/cli.duckdb' "
               "sync %s --full",
               e->dir, e->dir, env_assign, getenv("DUCKSTORE_BIN"), flags, e->dir, e->dir, source);
    if (rc != 0)
        fail_msg("sync: exit %d:\n%s", rc, out);
    return out;
}

/* Opens the file the CLI wrote (read-only) for the checks. */
static void open_cli_file(tl_env *e, duckdb_database *db, duckdb_connection *con)
{
    char path[700];
    snprintf(path, sizeof path, "%s/cli.duckdb", e->dir);
    duckdb_config cfg;
    duckdb_create_config(&cfg);
    duckdb_set_config(cfg, "access_mode", "READ_ONLY");
    char *msg = NULL;
    if (duckdb_open_ext(path, db, cfg, &msg) != DuckDBSuccess)
        fail_msg("cannot open %s: %s", path, msg ? msg : "?");
    duckdb_destroy_config(&cfg);
    if (duckdb_connect(*db, con) != DuckDBSuccess)
        fail_msg("cannot connect to %s", path);
}

/* The insert_streams line: "<source>: <table>: 4 workers asked, N insert
 * stream(s): why"; returns N and the text after it. */
static int logged_streams(const char *out, const char *prefix, const char **why)
{
    const char *line = strstr(out, prefix);
    if (line == NULL)
        fail_msg("no line with \"%s\" in:\n%s", prefix, out);
    char *end;
    long n = strtol(line + strlen(prefix), &end, 10);
    if (strncmp(end, " insert streams: ", 17) == 0)
        end += 17;
    else if (strncmp(end, " insert stream: ", 16) == 0 && n == 1)
        end += 16;
    else
        fail_msg("unexpected line: %.200s", line);
    *why = end;
    return (int)n;
}

/* The rows are exact; returns how many PostgreSQL processes read them
 * (at most max_readers). */
static int assert_rows(tl_env *e, const char *want, int max_readers)
{
    duckdb_database db;
    duckdb_connection con;
    open_cli_file(e, &db, &con);
    char *got = tl_duck_checksum(con, "streams_data", SPEC);
    assert_string_equal(got, want);
    free(got);
    assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM streams_data"), ROWS);
    int64_t readers = tl_duck_int(con, "SELECT count(DISTINCT reader_pid) FROM streams_data");
    if (readers < 1 || readers > max_readers)
        fail_msg("%lld readers for %d streams", (long long)readers, max_readers);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    return (int)readers;
}

/* DUCKSTORE_INSERT_STREAMS pins the choice: 1, 2, 3 and 4 of 4 asked (and
 * more than asked is cut to what was asked); each loads the same rows. */
static void test_pinned_streams_load_exact_rows(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "pinned", "  sync_workers: 4\n");
    create_src(e.pg);
    char *want = tl_pg_checksum(e.pg, "src", SPEC);
    tl_env_source(&e, "streams",
                  "  query: SELECT id, t, j, n, pg_backend_pid() AS reader_pid FROM src\n"
                  "  partition_column: id\n");
    for (int pin = 1; pin <= 5; pin++) {
        char assign[64];
        snprintf(assign, sizeof assign, "DUCKSTORE_INSERT_STREAMS=%d", pin);
        char *out = run_sync(&e, assign, "", "streams");
        const char *why;
        int n = logged_streams(out, "streams: streams_data: 4 workers asked, ", &why);
        assert_int_equal(n, pin > 4 ? 4 : pin);
        if (strncmp(why, "set by DUCKSTORE_INSERT_STREAMS", 31) != 0)
            fail_msg("pinned %d: %.200s", pin, why);
        assert_rows(&e, want, n);
        free(out);
    }
    free(want);
    tl_env_close(&e);
}

/* Without a pin the read measures: a query whose every row costs
 * PostgreSQL time (pg_sleep) keeps the streams waiting on the socket.
 * Whatever the machine lets it choose, the line names the choice and its
 * reason (never network-bound: the backend sleeps, it does not wait to
 * send): ranges come with more than one stream and a verdict that asked
 * for them, the whole query with one; the rows are exact. */
static void test_measured_choice_is_logged(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "measured", "  sync_workers: 4\n");
    create_src(e.pg);
    char *want = tl_pg_checksum(e.pg, "src", SPEC);
    /* One row in ten sleeps a millisecond in PostgreSQL. */
    tl_env_source(&e, "streams",
                  "  query: SELECT id, t, j, n, pg_backend_pid() AS reader_pid FROM src "
                  "WHERE CASE WHEN id %% 10 = 0 THEN pg_sleep(0.001) IS NOT NULL ELSE true END\n"
                  "  partition_column: id\n");
    char *out = run_sync(&e, "", "", "streams");
    const char *why;
    int n = logged_streams(out, "streams: streams_data: 4 workers asked, ", &why);
    assert_true(n >= 1 && n <= 4);
    print_message("chose %d: %.*s\n", n, (int)strcspn(why, "\n"), why);
    static const char *const reasons[] = {
        "ranges, PostgreSQL-bound on ",
        "ranges, cores idle on ",
        "ranges, network-bound on ",
        "the whole query, 3 PostgreSQL parallel workers, PostgreSQL-bound on ",
        "the whole query, DuckDB-bound on ",
        "the whole query, read before a measure"};
    size_t r = 0;
    while (r < 6 && strncmp(why, reasons[r], strlen(reasons[r])) != 0)
        r++;
    if (r == 6)
        fail_msg("no known reason: %.200s", why);
    /* PostgreSQL's backend sleeps or computes here; its socket is never
     * the one full for long: the sampling must not call this network. */
    if (r == 2)
        fail_msg("a sleeping server taken for a slow network: %.200s", why);
    if (r < 3)
        assert_true(n > 1);
    else
        assert_int_equal(n, 1);
    /* The rest of the line: the measure behind the verdict. */
    if (r < 5 && strstr(why, "% of the time waiting for PostgreSQL, ") == NULL)
        fail_msg("no measure: %.200s", why);
    assert_rows(&e, want, n);
    free(out);
    free(want);
    tl_env_close(&e);
}

/* A row filter that sleeps a millisecond on one row in four past the
 * first 4,096, so the whole query's first read lasts past its measure,
 * after batches of it were committed. plpgsql, so PostgreSQL does not
 * inline it; its parallel safety is the test's choice. reader_pid() is
 * the process that computes the row: a parallel worker's own when
 * declared safe. */
static void create_slow_functions(PGconn *pg, const char *safety)
{
    tl_pg_exec(pg,
               "CREATE OR REPLACE FUNCTION slow_row(i bigint) RETURNS boolean LANGUAGE plpgsql %s AS $$ "
               "BEGIN IF i > 4096 AND i %% 4 = 0 THEN PERFORM pg_sleep(0.001); END IF; RETURN true; END $$",
               safety);
    tl_pg_exec(pg,
               "CREATE OR REPLACE FUNCTION reader_pid(i bigint) RETURNS integer LANGUAGE plpgsql %s AS $$ "
               "BEGIN RETURN pg_backend_pid(); END $$",
               safety);
}

#define SLOW_QUERY                                                                                           \
    "  query: SELECT id, t, j, n, reader_pid(id) AS reader_pid FROM src WHERE slow_row(id)\n"                \
    "  partition_column: id\n"

/* Syncs SLOW_QUERY (sync_workers 4, batches of 1,000 rows) with the
 * functions declared `safety` and the first measure's verdict pinned to
 * PostgreSQL-bound (what the sleeps measure on an idle machine; a loaded
 * one may see its own work instead): the output, the rows expected, and
 * the insert streams logged with their reason. */
static char *sync_slow(tl_env *e, const char *name, const char *safety, char **want, const char **why,
                       int *streams)
{
    tl_env_open(e, g_conninfo, name, "  sync_workers: 4\n  sync_chunk_size: 1000\n");
    create_src(e->pg);
    create_slow_functions(e->pg, safety);
    *want = tl_pg_checksum(e->pg, "src", SPEC);
    tl_env_source(e, "streams", SLOW_QUERY);
    char *out = run_sync(e, "DUCKSTORE_READ_BOUND=postgresql", "-v", "streams");
    *streams = logged_streams(out, "streams: streams_data: 4 workers asked, ", why);
    return out;
}

/* PostgreSQL-bound, a query its planner cannot run in parallel (the
 * functions are PARALLEL UNSAFE) drops what the whole query's reader
 * stored (its first rows, committed in batches of 1,000) and starts again
 * in ranges with every stream asked for: each row is stored once, none by
 * the dropped reader. */
static void test_waiting_read_starts_again_in_ranges(void **state)
{
    (void)state;
    tl_env e;
    char *want;
    const char *why;
    int n;
    char *out = sync_slow(&e, "split", "PARALLEL UNSAFE", &want, &why, &n);
    static const char expect[] = "ranges, PostgreSQL-bound (set by DUCKSTORE_READ_BOUND) on ";
    if (strncmp(why, expect, strlen(expect)) != 0)
        fail_msg("expected \"%s\": %.200s", expect, why);
    assert_int_equal(n, 4);
    if (strstr(out, "streams_data: the whole query's first read is dropped after 0.5 s") == NULL)
        fail_msg("no line on the dropped read in:\n%s", out);
    assert_rows(&e, want, n);
    free(out);
    free(want);
    tl_env_close(&e);
}

/* PostgreSQL-bound, a query PostgreSQL can run in parallel reads the whole
 * query again with its parallel workers (sync_workers 4: the leader and 3
 * workers), into one insert stream: rows computed by several processes,
 * each stored once. */
static void test_waiting_read_uses_parallel_query(void **state)
{
    (void)state;
    tl_env e;
    char *want;
    const char *why;
    int n;
    char *out = sync_slow(&e, "parallel", "PARALLEL SAFE", &want, &why, &n);
    static const char expect[] =
        "the whole query, 3 PostgreSQL parallel workers, PostgreSQL-bound (set by DUCKSTORE_READ_BOUND) on ";
    if (strncmp(why, expect, strlen(expect)) != 0)
        fail_msg("expected \"%s\": %.200s\nin:\n%s", expect, why, out);
    assert_int_equal(n, 1);
    int processes = assert_rows(&e, want, 4);
    if (processes < 2)
        fail_msg("the rows were computed by %d process(es), not by parallel workers", processes);
    free(out);
    free(want);
    tl_env_close(&e);
}

/* bench/netsim between the sync and PostgreSQL: 5 ms each way and a
 * 32 KB window per connection (3.2 MB/s for each, as one TCP stream over a
 * long path); returns its pid and listening port. */
static pid_t netsim_start(uint16_t target_port, uint16_t *port)
{
    const char *bin = getenv("DUCKSTORE_NETSIM");
    if (bin == NULL)
        fail_msg("DUCKSTORE_NETSIM is not set (ctest sets it; by hand: DUCKSTORE_NETSIM=build/netsim)");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no relay behind */
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        char target[16];
        snprintf(target, sizeof target, "%u", target_port);
        execl(bin, bin, "0", target, "5", "0", "32", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    unsigned p = 0;
    if (f == NULL || fscanf(f, "%u", &p) != 1 || p == 0 || p > 65535)
        fail_msg("netsim (%s) did not say its port", bin);
    fclose(f);
    *port = (uint16_t)p;
    return pid;
}

/* A server whose rows are ready but whose one connection carries them
 * slowly (bench/netsim: a window per connection over a path with delay):
 * the reader waits on PostgreSQL, whose backend waits to send. Not a case
 * for PostgreSQL's parallel query (its workers send through the same one
 * connection) but for ranges, each on a connection of its own: the line
 * says network-bound, several processes read, and the rows are exact. The
 * query could run in parallel, so the verdict, not the planner, chose
 * ranges. The first measure is pinned to PostgreSQL-bound (the reader
 * waits 85-95% of the time here, but a sanitized build on a loaded machine
 * may measure its own work instead): what is tested is the backend's
 * send waits telling the path from the server. */
static void test_slow_path_reads_in_ranges(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "remote", "  sync_workers: 4\n");
    tl_pg_exec(e.pg, "CREATE TABLE wide (id bigint PRIMARY KEY, t text)");
    tl_pg_exec(e.pg,
               "INSERT INTO wide SELECT i, repeat(md5(i::text), 7) FROM generate_series(1, 120000) AS i");
    tl_pg_exec(e.pg, "ANALYZE wide");
    char *want = tl_pg_checksum(e.pg, "wide", "id,t");
    uint16_t port;
    pid_t netsim = netsim_start((uint16_t)atoi(PQport(e.pg)), &port);
    size_t len = strlen(e.url);
    snprintf(e.url + len, sizeof e.url - len, " port=%u", port);
    tl_env_source(&e, "remote",
                  "  query: SELECT id, t, pg_backend_pid() AS reader_pid FROM wide\n"
                  "  partition_column: id\n");
    char *out = run_sync(&e, "DUCKSTORE_READ_BOUND=postgresql", "-v", "remote");
    kill(netsim, SIGTERM);
    waitpid(netsim, NULL, 0);
    const char *why;
    int n = logged_streams(out, "remote: remote_data: 4 workers asked, ", &why);
    static const char expect[] = "ranges, network-bound (PostgreSQL-bound set by DUCKSTORE_READ_BOUND, its "
                                 "backend waiting to send) on ";
    if (strncmp(why, expect, strlen(expect)) != 0)
        fail_msg("expected \"%s\": %.200s\nin:\n%s", expect, why, out);
    assert_true(n > 1);
    const char *read_in = strstr(out, "remote_data: read in ");
    print_message("%d streams: %.*s; %.*s\n", n, (int)strcspn(why, "\n"), why,
                  read_in ? (int)strcspn(read_in, "\n") : 0, read_in ? read_in : "");
    duckdb_database db;
    duckdb_connection con;
    open_cli_file(&e, &db, &con);
    char *got = tl_duck_checksum(con, "remote_data", "id,t");
    assert_string_equal(got, want);
    free(got);
    assert_int_equal(tl_duck_int(con, "SELECT count(*) FROM remote_data"), 120000);
    int64_t readers = tl_duck_int(con, "SELECT count(DISTINCT reader_pid) FROM remote_data");
    if (readers < 2)
        fail_msg("%lld reader(s) for %d streams", (long long)readers, n);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    free(out);
    free(want);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_rule),
        cmocka_unit_test(test_the_network_rule),
        cmocka_unit_test(test_pinned_streams_load_exact_rows),
        cmocka_unit_test(test_measured_choice_is_logged),
        cmocka_unit_test(test_waiting_read_starts_again_in_ranges),
        cmocka_unit_test(test_waiting_read_uses_parallel_query),
        cmocka_unit_test(test_slow_path_reads_in_ranges),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
