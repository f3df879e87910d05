/* Files duckstore writes stay readable by the oldest DuckDB that dashboards
 * may still open them with (DUCKDB_READER_VERSION in scripts/duckdb.pin, the
 * 1.4 LTS line): a store synced from PostgreSQL, with every column type
 * duckstore creates, a split source's view and its own metadata, is opened
 * by that library in a process of its own (bench/duckdb_exec built against
 * it) and must hold exactly the rows this DuckDB sees. So must a file that
 * the older DuckDB created and duckstore then synced into. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("storage_compat"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

static const char *reader_path(void)
{
    const char *reader = getenv("DUCKSTORE_DUCKDB_READER");
    if (reader == NULL || access(reader, X_OK) != 0)
        fail_msg("DUCKSTORE_DUCKDB_READER (the reader built by tests/CMakeLists.txt) is not set or not "
                 "executable; run this test through ctest");
    return reader;
}

/* Runs the reader on the file: argv is { path, sql... }. Returns its exit
 * status; *out receives what it printed (stdout and stderr), malloc'd. */
static int run_reader(char *const *args, size_t n, char **out)
{
    const char *reader = reader_path();
    char **argv = calloc(n + 2, sizeof *argv);
    assert_non_null(argv);
    argv[0] = (char *)reader;
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = args[i];
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(reader, argv);
        _exit(127);
    }
    free(argv);
    close(fds[1]);
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    assert_non_null(buf);
    ssize_t got;
    while ((got = read(fds[0], buf + len, cap - len - 1)) > 0) {
        len += (size_t)got;
        if (cap - len < 1024) {
            cap *= 2;
            char *bigger = realloc(buf, cap);
            assert_non_null(bigger);
            buf = bigger;
        }
    }
    buf[len] = '\0';
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The reader's first line: its library version. */
#define VERSION_SQL "SELECT library_version FROM pragma_version()"

/* One line per relation that both DuckDB versions compute alike from the
 * same rows: the row count and an md5 of the rows' texts, sorted. */
static char *checksum_sql(const char *relation)
{
    char *sql = NULL;
    assert_true(asprintf(&sql,
                         "SELECT '%s ' || count(*) || ' ' || md5(coalesce(string_agg(r, chr(10) ORDER BY r), "
                         "'')) FROM (SELECT CAST(t AS VARCHAR) AS r FROM %s AS t)",
                         relation, relation) > 0);
    return sql;
}

/* Every table and view of the store's catalog, duckstore's metadata
 * included, as schema-qualified names. */
static char **relations_of(duckdb_connection con, size_t *n)
{
    char *list = tl_duck_scalar(con, "SELECT string_agg(name, ',' ORDER BY name) FROM ("
                                     "SELECT schema_name || '.' || table_name AS name FROM duckdb_tables() "
                                     "WHERE database_name = current_database() UNION ALL "
                                     "SELECT schema_name || '.' || view_name FROM duckdb_views() "
                                     "WHERE database_name = current_database() AND NOT internal)");
    assert_non_null(list);
    char **names = calloc(strlen(list) + 1, sizeof *names), *save = NULL;
    assert_non_null(names);
    *n = 0;
    for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save))
        names[(*n)++] = strdup(name);
    free(list);
    return names;
}

/* PostgreSQL rows with every type duckstore maps, NULLs included, over two
 * of duckstore's row groups. */
static void create_every_type(PGconn *pg)
{
    tl_pg_exec(pg, "CREATE TABLE every_type (id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, "
                   "f4 float4, f8 float8, n numeric(12,4), n38 numeric(38,10), nd numeric, t text, "
                   "vc varchar(20), j json, jb jsonb, bin bytea, d date, tm time, ts timestamp, "
                   "tstz timestamptz, iv interval, u uuid, ai int4[], at text[])");
    tl_pg_exec(
        pg, "INSERT INTO every_type SELECT i, i %% 3 = 0, (i %% 30000)::int2, i * 7, i::int8 * 1000003, "
            "i / 7.0, i / 3.0, i / 16.0, i * 12345.6789, i / 9.0, 'text ' || i || ' é', "
            "left(md5(i::text), 20), json_build_object('i', i), jsonb_build_object('k', i %% 10), "
            "decode(md5(i::text), 'hex'), date '2026-01-01' + i %% 400, time '00:00' + i * interval '1 s', "
            "timestamp '2026-01-01' + i * interval '1 min', "
            "timestamptz '2026-01-01 00:00+00' + i * interval '1.5 s', i * interval '1 h 1 s', "
            "md5('u' || i)::uuid, ARRAY[i, i + 1], ARRAY['a' || i, NULL] "
            "FROM generate_series(1, 20000) AS i");
    tl_pg_exec(pg, "INSERT INTO every_type (id) VALUES (0)");
}

/* Syncs both sources in full, then incrementally after new rows. */
static void sync_sources(tl_env *e)
{
    sync_report r;
    tl_sync_ok(e->st, &e->cfg, "llm", false, &r);
    assert_false(r.incremental);
    tl_sync_ok(e->st, &e->cfg, "types", false, &r);
    tl_llm_add(e->pg, 301, 400, 3);
    tl_sync_ok(e->st, &e->cfg, "llm", false, &r);
    assert_true(r.incremental);
    tl_llm_assert_synced(e, "llm");
}

/* Closes the store and checks the reader sees what this DuckDB saw. */
static void assert_reader_sees_same_rows(tl_env *e)
{
    size_t n;
    char **relations = relations_of(e->con, &n);
    /* _duckstore.capture, _duckstore.sync_status, _duckstore.tables,
     * llm_data (the view), llm_dataset, llm_results, types_data */
    assert_int_equal(n, 7);
    char **args = calloc(n + 2, sizeof *args), *want = strdup("");
    assert_non_null(args);
    args[0] = e->store_path;
    args[1] = VERSION_SQL;
    for (size_t i = 0; i < n; i++) {
        args[i + 2] = checksum_sql(relations[i]);
        char *line = tl_duck_scalar(e->con, "%s", args[i + 2]), *joined = NULL;
        assert_true(asprintf(&joined, "%s%s\n", want, line) > 0);
        free(line);
        free(want);
        want = joined;
    }
    duckdb_disconnect(&e->con);
    store_close(e->st);
    e->st = NULL;

    char *out = NULL;
    int rc = run_reader(args, n + 2, &out);
    char *expected = NULL;
    assert_true(asprintf(&expected, "v%s\n%s", getenv("DUCKSTORE_DUCKDB_READER_VERSION"), want) > 0);
    if (rc != 0 || strcmp(out, expected) != 0)
        fail_msg("DuckDB v%s read the file differently (exit %d):\n%s\nexpected:\n%s",
                 getenv("DUCKSTORE_DUCKDB_READER_VERSION"), rc, out, expected);
    free(expected);
    free(out);
    free(want);
    for (size_t i = 0; i < n; i++) {
        free(args[i + 2]);
        free(relations[i]);
    }
    free(args);
    free(relations);
}

static void open_sources(tl_env *e, const char *schema)
{
    tl_env_open(e, g_conninfo, schema, "");
    tl_llm_create(e->pg);
    tl_llm_add(e->pg, 1, 300, 3);
    create_every_type(e->pg);
    tl_env_source(e, "llm", TL_LLM_SOURCE_YAML);
    tl_env_source(e, "types", "  query: SELECT * FROM every_type\n");
}

static void test_new_file_reads_in_older_duckdb(void **state)
{
    (void)state;
    tl_env e;
    open_sources(&e, "new_file");
    sync_sources(&e);
    assert_reader_sees_same_rows(&e);
    tl_env_close(&e);
}

/* A file from a duckstore that ran the older DuckDB keeps its format when
 * this one writes to it. */
static void test_older_file_stays_readable_after_syncs(void **state)
{
    (void)state;
    tl_env e;
    open_sources(&e, "older_file");
    duckdb_disconnect(&e.con);
    store_close(e.st);
    assert_int_equal(unlink(e.store_path), 0);
    char *out = NULL;
    char *create[] = {e.store_path, VERSION_SQL};
    int rc = run_reader(create, 2, &out);
    if (rc != 0)
        fail_msg("the older DuckDB could not create %s (exit %d): %s", e.store_path, rc, out);
    free(out);
    ds_error err;
    if (!store_open(e.store_path, &e.st, &err))
        fail_msg("%s", err.msg);
    e.con = tl_store_connect(e.st);
    sync_sources(&e);
    assert_reader_sees_same_rows(&e);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_file_reads_in_older_duckdb),
        cmocka_unit_test(test_older_file_stays_readable_after_syncs),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
