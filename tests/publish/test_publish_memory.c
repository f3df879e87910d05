/* A publish's memory is bounded whatever the data: `duckstore publish` of
 * 400 MB of 2 KB rows spread over 12 day partitions that arrive
 * interleaved (more partitions than the writer keeps open) peaks within a
 * fixed bound (its peak RSS from wait4), and the version it writes, with
 * several files for a partition, reads back equal to the view. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "publish/publish.h"

#define MB 1024LL
/* The writer holds 128 MB, the store 64 MB (memory_limit's default) plus
 * the readers' 64 MB (read_memory_limit, set below) and DuckDB keeps some
 * outside them; before the bound, this publish took
 * over 1 GB (every open partition's 524,288-row group uncompressed). */
#define PUBLISH_RSS_BOUND_KB (520 * MB)

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("pubmem"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

/* Runs `duckstore --config-dir DIR publish NAME`: its exit status, output
 * (kept) and peak RSS. */
static int run_publish(const char *dir, const char *name, char **out, long long *rss_kb)
{
    const char *bin = getenv("DUCKSTORE_BIN");
    if (bin == NULL)
        fail_msg("DUCKSTORE_BIN is not set (ctest sets it; by hand: DUCKSTORE_BIN=build/duckstore)");
    char log[700];
    snprintf(log, sizeof log, "%s/publish.log", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (freopen(log, "w", stdout) == NULL || dup2(fileno(stdout), 2) < 0)
            _exit(127);
        execl(bin, bin, "--config-dir", dir, "publish", name, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid)
        fail_msg("wait4 failed");
    *rss_kb = ru.ru_maxrss;
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    *out = tl_keep(strdup(buf));
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void wide_rows_interleaved_partitions(void **state)
{
    (void)state;
    tl_env e;
    /* A publish reads with the readers' budget too: a small one here, so
     * the bound is the writer's. */
    tl_env_open(&e, g_conninfo, "wide", "  read_memory_limit: 64MB\n");
    tl_pg_exec(e.pg, "CREATE TABLE wide (id int PRIMARY KEY, ts timestamptz NOT NULL, payload text)");
    /* Day i % 12: every run of twelve rows touches every partition. */
    tl_pg_exec(
        e.pg,
        "INSERT INTO wide SELECT i, timestamptz '2026-01-01 00:00:00+00' + (i %% 12) * interval "
        "'1 day' + (i %% 1000) * interval '1 second', repeat(md5(i::text), 64) FROM generate_series(1, 200000) i");
    char *root = tl_keepf("%s/published", e.dir);
    tl_env_source(
        &e, "wide",
        "  query: SELECT id, ts, payload FROM wide\n  publish:\n    path: %s\n    partition_by: day(ts)\n",
        root);
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "wide", true, &report);
    char *view = tl_duck_scalar(e.con, "SELECT count(*) || '/' || sum(hash(id, ts, payload)) FROM wide_data");
    duckdb_disconnect(&e.con);
    store_close(e.st);
    e.st = NULL;

    char *out = NULL;
    long long rss_kb = 0;
    int rc = run_publish(e.dir, "wide", &out, &rss_kb);
    if (rc != 0)
        fail_msg("duckstore publish exited %d: %s", rc, out);
    print_message("publish of 200000 rows of 2 KB in 12 interleaved partitions: peak RSS %lld MB\n",
                  rss_kb / 1024);
    if (tl_rss_checked() && rss_kb > PUBLISH_RSS_BOUND_KB)
        fail_msg("peak RSS %lld MB, bound %lld MB", rss_kb / 1024, PUBLISH_RSS_BOUND_KB / 1024);

    /* The version is whole: every row, 12 partitions, some split into
     * several files (the writer closes files beyond 8 open ones). */
    json_error_t jerr;
    json_t *m = json_load_file(tl_keepf("%s/" PUBLISH_MANIFEST, root), 0, &jerr);
    if (m == NULL)
        fail_msg("manifest: %s", jerr.text);
    assert_int_equal(json_integer_value(json_object_get(m, "rows")), 200000);
    assert_int_equal(json_array_size(json_object_get(m, "partitions")), 12);
    assert_true(json_array_size(json_object_get(m, "files")) >= 12);
    json_int_t version = json_integer_value(json_object_get(m, "version"));
    json_decref(m);
    duckdb_database db;
    duckdb_connection con;
    assert_int_equal(duckdb_open(NULL, &db), DuckDBSuccess);
    assert_int_equal(duckdb_connect(db, &con), DuckDBSuccess);
    char *published = tl_duck_scalar(con,
                                     "SELECT count(*) || '/' || sum(hash(id, ts, payload)) FROM "
                                     "read_parquet('%s/v%lld/**/*.parquet', hive_partitioning = true)",
                                     root, (long long)version);
    assert_string_equal(published, view);
    free(published);
    free(view);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    tl_env_close(&e);
    tl_free_kept();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wide_rows_interleaved_partitions),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
