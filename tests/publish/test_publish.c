/* Publishing as Parquet (docs/publish.md), against a real PostgreSQL and
 * real DuckDB files: a version read back with DuckDB's read_parquet equals
 * the view row for row and type for type; the manifest lists every file
 * with its rows and bytes and the schema with both type systems; an
 * incremental sync writes only the partitions it touched (the rest are the
 * previous version's files, linked); keep_versions removes old versions
 * after the grace period; a publish killed mid-write leaves the previous
 * manifest valid and the next sync publishes anew; and two instances on
 * one source never sync it at the same time. */
#include "testlib.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "publish/publish.h"
#include "tl_http.h"

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("publish"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unsetenv("DUCKSTORE_PUBLISH_GRACE_SECONDS");
    tl_free_kept();
    return 0;
}

#define EV_SPEC "id,ts:ts,k,v,j,note"
#define EV_COLUMNS "id, ts, k, v, j, note"

/* Events over 12 days (5 hours apart), with NULLs in every nullable type. */
static void create_events(tl_env *e, int from, int to)
{
    tl_pg_exec(e->pg, "CREATE TABLE IF NOT EXISTS ev (id int PRIMARY KEY, ts timestamptz NOT NULL, k text, "
                      "v numeric(10,2), j jsonb, note text)");
    tl_pg_exec(e->pg,
               "INSERT INTO ev SELECT i, timestamptz '2026-01-01 00:00:00+00' + i * interval '5 hours', "
               "'k' || (i %% 3), CASE WHEN i %% 11 = 0 THEN NULL ELSE i / 7.0 END, "
               "CASE WHEN i %% 13 = 0 THEN NULL ELSE jsonb_build_object('i', i, 's', 'x''y') END, "
               "CASE WHEN i %% 5 = 0 THEN NULL ELSE repeat('n', i %% 17) END FROM generate_series(%d, %d) i",
               from, to);
}

static void open_events(tl_env *e, const char *schema, const char *publish_yaml)
{
    tl_env_open(e, g_conninfo, schema, "");
    create_events(e, 1, 57);
    tl_env_source(e, "ev", "  query: SELECT * FROM ev\n  incremental_column: id\n  publish:\n%s",
                  publish_yaml);
}

/* A private in-memory DuckDB: the store's own connections may not read
 * files. */
typedef struct reader {
    duckdb_database db;
    duckdb_connection con;
} reader;

static void reader_open(reader *r)
{
    assert_int_equal(duckdb_open(NULL, &r->db), DuckDBSuccess);
    assert_int_equal(duckdb_connect(r->db, &r->con), DuckDBSuccess);
    tl_duck_exec(r->con, "SET TimeZone = 'UTC'");
}

static void reader_close(reader *r)
{
    duckdb_disconnect(&r->con);
    duckdb_close(&r->db);
}

static char *pub_root(tl_env *e)
{
    return tl_keepf("%s/published/ev", e->dir);
}

static json_t *load_manifest(tl_env *e)
{
    json_error_t jerr;
    json_t *m = json_load_file(tl_keepf("%s/" PUBLISH_MANIFEST, pub_root(e)), 0, &jerr);
    if (m == NULL)
        fail_msg("manifest: %s", jerr.text);
    return m;
}

static char *version_relation(tl_env *e, int64_t version)
{
    return tl_keepf("(SELECT " EV_COLUMNS
                    " FROM read_parquet('%s/v%lld/**/*.parquet', hive_partitioning = true))",
                    pub_root(e), (long long)version);
}

/* The published version equals ev_data row for row and type for type. */
static void assert_version_equals_view(tl_env *e, int64_t version)
{
    reader r;
    reader_open(&r);
    char *published = tl_duck_checksum(r.con, version_relation(e, version), EV_SPEC);
    char *view = tl_duck_checksum(e->con, "ev_data", EV_SPEC);
    assert_string_equal(published, view);
    char *pg = tl_pg_checksum(e->pg, "ev", EV_SPEC);
    assert_string_equal(published, pg);
    free(published);
    free(view);
    free(pg);
    char *pub_types = tl_duck_scalar(
        r.con, "SELECT string_agg(column_name || ' ' || column_type, ', ') FROM (DESCRIBE SELECT * FROM %s)",
        version_relation(e, version));
    char *view_types = tl_duck_scalar(
        e->con, "SELECT string_agg(column_name || ' ' || column_type, ', ') FROM (DESCRIBE SELECT " EV_COLUMNS
                " FROM ev_data)");
    assert_string_equal(pub_types, view_types);
    assert_string_equal(
        pub_types,
        "id INTEGER, ts TIMESTAMP WITH TIME ZONE, k VARCHAR, v DECIMAL(10,2), j JSON, note VARCHAR");
    free(pub_types);
    free(view_types);
    reader_close(&r);
}

static void publish_ok(tl_env *e, publish_result *res)
{
    ds_error err;
    if (!publish_source(e->st, tl_source(&e->cfg, "ev"), res, &err))
        fail_msg("%s", err.msg);
}

static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static ino_t inode_of(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        fail_msg("%s is missing", path);
    return sb.st_ino;
}

static void test_roundtrip_and_manifest(void **state)
{
    (void)state;
    tl_env e;
    open_events(&e, "roundtrip", "    path: published/ev\n    partition_by: day(ts)\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    publish_after_sync(e.st, tl_source(&e.cfg, "ev"), true);
    assert_version_equals_view(&e, 1);

    json_t *m = load_manifest(&e);
    assert_int_equal(json_integer_value(json_object_get(m, "version")), 1);
    assert_string_equal(tl_json_str(m, "source"), "ev");
    assert_string_equal(tl_json_str(m, "dir"), "v1");
    assert_string_equal(tl_json_str(m, "partition_by"), "day(ts)");
    assert_string_equal(tl_json_str(m, "partition_column"), "ts_day");
    assert_int_equal(json_integer_value(json_object_get(m, "rows")), 57);
    assert_non_null(tl_json_str(m, "created_at"));
    assert_non_null(tl_json_str(m, "synced_at"));
    assert_string_equal(json_string_value(json_object_get(json_object_get(m, "watermarks"), "ev_data")),
                        "57");
    /* 57 events 5 hours apart from 2026-01-01 05:00: 12 days. */
    json_t *files = json_object_get(m, "files");
    assert_int_equal(json_array_size(files), 12);
    reader r;
    reader_open(&r);
    int64_t rows = 0;
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f)
    {
        const char *rel = tl_json_str(f, "path");
        char *full = tl_keepf("%s/%s", pub_root(&e), rel);
        struct stat sb;
        assert_int_equal(stat(full, &sb), 0);
        assert_int_equal(json_integer_value(json_object_get(f, "bytes")), sb.st_size);
        int64_t in_file = tl_duck_int(r.con, "SELECT num_rows FROM parquet_file_metadata('%s')", full);
        assert_int_equal(json_integer_value(json_object_get(f, "rows")), in_file);
        /* The file sits in its partition's directory. */
        tl_assert_contains(rel, tl_keepf("v1/ts_day=%s/", tl_json_str(f, "partition")));
        int64_t other_day = tl_duck_int(
            r.con, "SELECT count(*) FROM read_parquet('%s') WHERE strftime(ts, '%%Y-%%m-%%d') <> '%s'", full,
            tl_json_str(f, "partition"));
        assert_int_equal(other_day, 0);
        rows += in_file;
    }
    assert_int_equal(rows, 57);
    reader_close(&r);

    /* The schema in both type systems. */
    json_t *schema = json_object_get(m, "schema");
    assert_int_equal(json_array_size(schema), 6);
    static const char *const expect[][4] = {
        {"id", "INTEGER", "integer", "INT32"},
        {"ts", "TIMESTAMP WITH TIME ZONE", "timestamp with time zone", "INT64"},
        {"k", "VARCHAR", "text", "BYTE_ARRAY"},
        {"v", "DECIMAL(10,2)", "numeric(10,2)", "INT64"},
        {"j", "JSON", "jsonb", "BYTE_ARRAY"},
        {"note", "VARCHAR", "text", "BYTE_ARRAY"},
    };
    for (size_t c = 0; c < 6; c++) {
        json_t *col = json_array_get(schema, c);
        assert_string_equal(tl_json_str(col, "name"), expect[c][0]);
        assert_string_equal(tl_json_str(col, "duckdb_type"), expect[c][1]);
        assert_string_equal(tl_json_str(col, "postgresql_type"), expect[c][2]);
        assert_string_equal(tl_json_str(col, "parquet_type"), expect[c][3]);
    }
    json_decref(m);

    /* The status document and its publish object. */
    json_t *status = tl_sync_status(e.st, &e.cfg, "ev");
    json_t *pub = json_object_get(status, "publish");
    assert_int_equal(json_integer_value(json_object_get(pub, "version")), 1);
    assert_true(json_is_null(json_object_get(pub, "error")));
    assert_non_null(tl_json_str(pub, "at"));
    json_decref(status);
    tl_env_close(&e);
}

/* partition_by a plain column keeps its type in the files. */
static void test_partition_by_column(void **state)
{
    (void)state;
    tl_env e;
    open_events(&e, "bycolumn", "    path: published/ev\n    partition_by: k\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    publish_after_sync(e.st, tl_source(&e.cfg, "ev"), true);
    assert_version_equals_view(&e, 1);
    assert_true(exists(tl_keepf("%s/v1/k=k0", pub_root(&e))));
    tl_env_close(&e);
}

/* A sync that found nothing new makes no version: the current one holds
 * its data already. The next one with new rows does. */
static void test_unchanged_sync_publishes_nothing(void **state)
{
    (void)state;
    tl_env e;
    open_events(&e, "unchanged", "    path: published/ev\n    partition_by: day(ts)\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_true(report.data_changed);
    publish_after_sync(e.st, tl_source(&e.cfg, "ev"), report.data_changed);
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_true(report.incremental);
    assert_false(report.data_changed);
    publish_after_sync(e.st, tl_source(&e.cfg, "ev"), report.data_changed);
    json_t *m = load_manifest(&e);
    assert_int_equal(json_integer_value(json_object_get(m, "version")), 1);
    json_decref(m);
    assert_false(exists(tl_keepf("%s/v2", pub_root(&e))));

    create_events(&e, 58, 58);
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_true(report.data_changed);
    publish_after_sync(e.st, tl_source(&e.cfg, "ev"), report.data_changed);
    assert_version_equals_view(&e, 2);
    tl_env_close(&e);
}

static void test_incremental_adds_only_new_files(void **state)
{
    (void)state;
    tl_env e;
    open_events(&e, "incremental", "    path: published/ev\n    partition_by: day(ts)\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    publish_after_sync(e.st, tl_source(&e.cfg, "ev"), true);
    /* Three new rows on a new day (2026-01-13) and one on an old one. */
    create_events(&e, 58, 60);
    tl_pg_exec(e.pg, "INSERT INTO ev VALUES (61, '2026-01-05 12:34:56+00', 'k9', 1.5, NULL, 'late')");
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    assert_true(report.incremental);
    publish_after_sync(e.st, tl_source(&e.cfg, "ev"), true);
    assert_version_equals_view(&e, 2);

    json_t *m = load_manifest(&e);
    assert_int_equal(json_integer_value(json_object_get(m, "version")), 2);
    assert_int_equal(json_integer_value(json_object_get(m, "previous_version")), 1);
    size_t i;
    json_t *f;
    int written = 0;
    json_array_foreach(json_object_get(m, "files"), i, f)
    {
        const char *part = tl_json_str(f, "partition");
        const char *rel = tl_json_str(f, "path");
        ino_t now = inode_of(tl_keepf("%s/%s", pub_root(&e), rel));
        bool touched = strcmp(part, "2026-01-05") == 0 || strcmp(part, "2026-01-13") == 0;
        assert_int_equal(json_integer_value(json_object_get(f, "written_in")), touched ? 2 : 1);
        if (touched) {
            written++;
        } else {
            /* The very file of version 1, not a copy. */
            ino_t before = inode_of(tl_keepf("%s/v1/%s", pub_root(&e), strchr(rel, '/') + 1));
            assert_true(now == before);
        }
    }
    assert_int_equal(written, 2);
    assert_int_equal(json_array_size(json_object_get(m, "files")), 13);
    json_decref(m);

    /* Nothing changed: a new version without a byte of Parquet written. */
    publish_result res;
    publish_ok(&e, &res);
    assert_int_equal(res.version, 3);
    assert_int_equal(res.files_written, 0);
    assert_int_equal(res.files, 13);
    assert_version_equals_view(&e, 3);
    tl_env_close(&e);
}

static void test_keep_versions_after_grace(void **state)
{
    (void)state;
    tl_env e;
    open_events(&e, "keep", "    path: published/ev\n    keep_versions: 2\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    /* Within the grace period nothing is removed... */
    setenv("DUCKSTORE_PUBLISH_GRACE_SECONDS", "3600", 1);
    publish_result res;
    for (int i = 0; i < 3; i++)
        publish_ok(&e, &res);
    assert_int_equal(res.version, 3);
    for (int v = 1; v <= 3; v++)
        assert_true(exists(tl_keepf("%s/v%d", pub_root(&e), v)));
    /* ...after it, the versions beyond keep_versions go. */
    setenv("DUCKSTORE_PUBLISH_GRACE_SECONDS", "0", 1);
    publish_ok(&e, &res);
    assert_int_equal(res.version, 4);
    assert_false(exists(tl_keepf("%s/v1", pub_root(&e))));
    assert_false(exists(tl_keepf("%s/v2", pub_root(&e))));
    assert_true(exists(tl_keepf("%s/v3", pub_root(&e))));
    assert_version_equals_view(&e, 3);
    assert_version_equals_view(&e, 4);
    tl_env_close(&e);
}

/* tables: true publishes a split source's two tables beside the view,
 * partitioned where they have the column. */
static void test_split_tables(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "split", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 20, 3);
    tl_env_source(&e, "llm",
                  TL_LLM_SOURCE_YAML "  publish:\n    path: published/llm\n    partition_by: day(timestamp)\n"
                                     "    tables: true\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "llm", false, &report);
    publish_after_sync(e.st, tl_source(&e.cfg, "llm"), true);
    json_t *m = json_load_file(tl_keepf("%s/published/llm/" PUBLISH_MANIFEST, e.dir), 0, NULL);
    assert_non_null(m);
    assert_int_equal(json_integer_value(json_object_get(m, "rows")), 60);
    json_t *tables = json_object_get(m, "tables");
    assert_int_equal(json_array_size(tables), 2);
    json_t *dataset = json_array_get(tables, 0), *results = json_array_get(tables, 1);
    assert_string_equal(tl_json_str(dataset, "name"), "llm_dataset");
    assert_string_equal(tl_json_str(dataset, "dir"), "v1_llm_dataset");
    assert_string_equal(tl_json_str(dataset, "partition_column"), "timestamp_day");
    assert_int_equal(json_integer_value(json_object_get(dataset, "rows")), 20);
    assert_string_equal(tl_json_str(results, "name"), "llm_results");
    assert_true(json_is_null(json_object_get(results, "partition_column"))); /* no timestamp column */
    assert_int_equal(json_integer_value(json_object_get(results, "rows")), 60);
    reader r;
    reader_open(&r);
    char *pub = tl_duck_checksum(r.con,
                                 tl_keepf("(SELECT * EXCLUDE (timestamp_day) FROM "
                                          "read_parquet('%s/published/llm/v1_llm_dataset/**/*.parquet', "
                                          "hive_partitioning = true))",
                                          e.dir),
                                 TL_LLM_DATASET_SPEC);
    char *stored = tl_duck_checksum(e.con, "llm_dataset", TL_LLM_DATASET_SPEC);
    assert_string_equal(pub, stored);
    free(pub);
    free(stored);
    pub =
        tl_duck_checksum(r.con, tl_keepf("read_parquet('%s/published/llm/v1_llm_results/*.parquet')", e.dir),
                         TL_LLM_RESULTS_SPEC);
    stored = tl_duck_checksum(e.con, "llm_results", TL_LLM_RESULTS_SPEC);
    assert_string_equal(pub, stored);
    free(pub);
    free(stored);
    reader_close(&r);
    json_decref(m);
    tl_env_close(&e);
}

/* publish: keys are checked at load, with the file, the line and the fix. */
static void test_config_errors(void **state)
{
    (void)state;
    static const struct {
        const char *body, *says;
    } cases[] = {
        {"  publish:\n    partition_by: day(ts)\n", "ev_db.yaml:4: publish needs path"},
        {"  publish:\n    path: p\n    partition_by: week(ts)\n",
         "ev_db.yaml:6: partition_by must be a column of the data, or day(col), month(col), year(col) or "
         "hour(col)"},
        {"  publish:\n    path: p\n    every: hourly\n",
         "ev_db.yaml:6: every must be \"sync\" (after each sync)"},
        {"  publish:\n    path: p\n    keep_versions: 0\n",
         "ev_db.yaml:6: keep_versions must be an integer between 1"},
        {"  publish:\n    path: p\n    tables: true\n",
         "publish.tables publishes the two tables of a split source"},
        {"  publish:\n    path: p\n    pathh: q\n", "did you mean \"path\"?"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir = tl_mkdtemp();
        tl_write_filef(tl_keepf("%s/ev_db.yaml", dir),
                       "ev_db:\n  url: postgresql://u@h/db\n  query: SELECT 1\n%s", cases[i].body);
        cfg_config cfg;
        ds_error err = {0};
        if (cfg_load_dir(dir, &cfg, &err))
            fail_msg("loaded: %s", cases[i].body);
        tl_assert_contains(err.msg, cases[i].says);
        tl_rmtree(dir);
        free(dir);
    }
    /* A relative path is the config directory's, and the config prints it. */
    char *dir = tl_mkdtemp();
    tl_write_filef(tl_keepf("%s/ev_db.yaml", dir),
                   "ev_db:\n  url: postgresql://u@h/db\n  query: SELECT 1\n  publish:\n    path: ./out/ev\n"
                   "    every: 90\n");
    cfg_config cfg;
    tl_cfg_load(dir, &cfg);
    const cfg_source *src = tl_source(&cfg, "ev");
    assert_string_equal(src->publish_path, tl_keepf("%s/out/ev", dir));
    assert_true(src->publish_every_minutes == 90);
    assert_int_equal(src->publish_keep_versions, 3);
    cfg_free(&cfg);
    tl_rmtree(dir);
    free(dir);
}

/* ---- processes ---- */

static pid_t spawn(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static pid_t spawn(const char *log, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char cmd[4096];
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (freopen(log, "w", stdout) == NULL || dup2(fileno(stdout), 2) < 0)
            _exit(127);
        execl("/bin/sh", "sh", "-c", tl_keepf("exec %s", cmd), (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid)
{
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static const char *bin(void)
{
    const char *b = getenv("DUCKSTORE_BIN");
    if (b == NULL)
        fail_msg("DUCKSTORE_BIN is not set (ctest sets it)");
    return b;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return tl_keep(strdup(""));
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return tl_keep(buf);
}

/* A parquet file under <root>/.tmp-v<version>: that publish is writing. */
static bool writing(const char *root, int version)
{
    char *out = NULL;
    int rc = tl_run(&out, "find '%s/.tmp-v%d' -name '*.parquet' 2>/dev/null | head -1", root, version);
    bool found = rc == 0 && out != NULL && out[0] != '\0';
    free(out);
    return found;
}

static void test_kill_during_publish(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "killed", "");
    /* Large enough that writing it takes seconds. */
    tl_pg_exec(
        e.pg,
        "CREATE TABLE ev (id int PRIMARY KEY, ts timestamptz NOT NULL, k text, v numeric(10,2), j jsonb, "
        "note text)");
    tl_pg_exec(e.pg,
               "INSERT INTO ev SELECT i, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second', "
               "'k' || (i %% 3), i / 7.0, NULL, md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text) "
               "FROM generate_series(1, 1500000) i");
    tl_env_source(&e, "ev",
                  "  query: SELECT * FROM ev\n  incremental_column: id\n  publish:\n    path: published/ev\n"
                  "    partition_by: day(ts)\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "ev", false, &report);
    publish_after_sync(e.st, tl_source(&e.cfg, "ev"), true);
    json_t *before = load_manifest(&e);
    assert_int_equal(json_integer_value(json_object_get(before, "version")), 1);
    /* The CLI opens the DuckDB file itself. */
    duckdb_disconnect(&e.con);
    store_close(e.st);
    e.st = NULL;
    e.con = NULL;
    /* Every partition changed: the sync's publish writes the whole table
     * again, and is killed while it does. */
    tl_pg_exec(e.pg, "UPDATE ev SET k = k || '!'");
    char *log = tl_keepf("%s/sync.log", e.dir);
    char *root = pub_root(&e);
    char *out = NULL;
    pid_t pid = spawn(log, "%s --config-dir %s sync ev --full", bin(), e.dir);
    double deadline = ds_monotonic_s() + 300;
    while (!writing(root, 2) && ds_monotonic_s() < deadline) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            fail_msg("the sync ended before its publish could be killed: %s", read_text(log));
        usleep(2000);
    }
    assert_true(writing(root, 2));
    kill(pid, SIGKILL);
    assert_int_equal(wait_exit(pid), 128 + SIGKILL);
    tl_assert_contains(read_text(log), "ev: full sync, 1500000 rows");

    /* The manifest is the previous version's, whole, and its files read. */
    json_t *after = load_manifest(&e);
    assert_int_equal(json_integer_value(json_object_get(after, "version")), 1);
    assert_false(exists(tl_keepf("%s/v2", root)));
    reader r;
    reader_open(&r);
    size_t i;
    json_t *f;
    int64_t rows = 0;
    json_array_foreach(json_object_get(after, "files"), i, f)
    {
        rows +=
            tl_duck_int(r.con, "SELECT count(*) FROM read_parquet('%s/%s')", root, tl_json_str(f, "path"));
    }
    assert_int_equal(rows, 1500000);
    assert_int_equal(
        tl_duck_int(r.con, "SELECT count(*) FROM read_parquet('%s/v1/**/*.parquet') WHERE k NOT LIKE '%%!'",
                    root),
        1500000);
    reader_close(&r);

    /* The next sync publishes a new, complete version; the killed one's
     * leftovers go once the grace period has passed. */
    tl_pg_exec(e.pg, "INSERT INTO ev VALUES (1500001, '2026-02-01', 'new', 1, NULL, 'n')");
    assert_int_equal(
        tl_run(&out, "DUCKSTORE_PUBLISH_GRACE_SECONDS=0 %s --config-dir %s sync ev", bin(), e.dir), 0);
    tl_assert_contains(out, "incremental sync");
    free(out);
    json_t *repaired = load_manifest(&e);
    assert_int_equal(json_integer_value(json_object_get(repaired, "version")), 3);
    assert_int_equal(json_integer_value(json_object_get(repaired, "rows")), 1500001);
    assert_false(exists(tl_keepf("%s/.tmp-v2", root)));
    reader_open(&r);
    assert_int_equal(tl_duck_int(r.con,
                                 "SELECT count(*) FROM read_parquet('%s/v3/**/*.parquet') WHERE k LIKE '%%!'",
                                 root),
                     1500000);
    assert_int_equal(tl_duck_int(r.con, "SELECT count(*) FROM read_parquet('%s/v3/**/*.parquet')", root),
                     1500001);
    reader_close(&r);
    json_decref(before);
    json_decref(after);
    json_decref(repaired);
    tl_env_close(&e);
}

/* The advisory lock of a source, as pg_locks shows it while held. */
static int64_t lock_holders(PGconn *pg)
{
    return tl_pg_int(pg, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                         "classid = 1146309425 AND objid::int8 = (hashtext('ev')::int8 & 4294967295)");
}

static void test_two_instances_one_source(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "two", "");
    create_events(&e, 1, 57);
    tl_env_source(&e, "ev", "  query: SELECT * FROM ev\n  incremental_column: id\n");
    duckdb_disconnect(&e.con);
    store_close(e.st);
    e.st = NULL;
    e.con = NULL;
    /* Instance A holds the source's lock while it waits for the table. */
    PGconn *blocker = tl_pg_connect(e.url);
    tl_pg_exec(blocker, "BEGIN");
    tl_pg_exec(blocker, "LOCK TABLE ev IN ACCESS EXCLUSIVE MODE");
    char *log_a = tl_keepf("%s/a.log", e.dir);
    pid_t a = spawn(log_a, "%s --config-dir %s --db %s/a.duckdb sync ev", bin(), e.dir, e.dir);
    double deadline = ds_monotonic_s() + 60;
    while (lock_holders(e.pg) == 0 && ds_monotonic_s() < deadline)
        usleep(10000);
    assert_int_equal(lock_holders(e.pg), 1);

    /* Instance B, another DuckDB file: skips, and says who syncs. */
    char *out = NULL;
    int rc = tl_run(&out, "%s --config-dir %s --db %s/b.duckdb sync ev", bin(), e.dir, e.dir);
    assert_int_equal(rc, 1);
    tl_assert_contains(out, "sync skipped: another duckstore instance is syncing ev");
    tl_assert_contains(out, "PostgreSQL advisory lock held by PID");
    free(out);
    tl_pg_exec(blocker, "COMMIT");
    PQfinish(blocker);
    assert_int_equal(wait_exit(a), 0);
    tl_assert_contains(read_text(log_a), "ev: full sync, 57 rows");
    assert_int_equal(lock_holders(e.pg), 0);

    /* B skipped without a trace in its file; with A done, B syncs. */
    rc = tl_run(&out, "%s --config-dir %s --db %s/b.duckdb status --json", bin(), e.dir, e.dir);
    tl_assert_contains(out, "not_synced");
    free(out);
    rc = tl_run(&out, "%s --config-dir %s --db %s/b.duckdb sync ev", bin(), e.dir, e.dir);
    assert_int_equal(rc, 0);
    tl_assert_contains(out, "ev: full sync, 57 rows");
    free(out);
    tl_env_close(&e);
}

/* The status's publish object, polled until its version is `version`. */
static json_t *wait_published(const tl_server *srv, const char *dataset, int64_t version)
{
    double deadline = ds_monotonic_s() + 120;
    for (;;) {
        json_t *doc = tl_server_dataset(srv, dataset);
        json_t *pub = json_object_get(doc, "publish");
        /* version 0: a publish that failed (an absent version reads 0 too). */
        bool done = version == 0 ? json_is_string(json_object_get(pub, "error"))
                                 : json_integer_value(json_object_get(pub, "version")) == version;
        if (done) {
            json_incref(pub);
            json_decref(doc);
            return pub;
        }
        if (ds_monotonic_s() > deadline) {
            char *text = json_dumps(doc, JSON_COMPACT);
            fail_msg("no publish %lld of %s: %s", (long long)version, dataset, text);
        }
        json_decref(doc);
        usleep(50000);
    }
}

/* The server publishes after its syncs, by POST /api/store/publish/NAME and
 * for the CLI; a failing publish leaves the sync ready; /metrics counts. */
static void test_server(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "server", "");
    create_events(&e, 1, 57);
    tl_env_source(&e, "ev",
                  "  query: SELECT * FROM ev\n  incremental_column: id\n  publish:\n"
                  "    path: published/ev\n    partition_by: day(ts)\n");
    tl_env_source(&e, "bad",
                  "  query: SELECT * FROM ev\n  publish:\n    path: published/bad\n"
                  "    partition_by: day(k)\n");
    duckdb_disconnect(&e.con);
    store_close(e.st);
    e.st = NULL;
    e.con = NULL;
    tl_server srv;
    tl_server_start(&srv, e.dir, tl_keepf("%s/server.log", e.dir), NULL);
    /* The startup sync publishes version 1. */
    json_t *pub = wait_published(&srv, "ev_data", 1);
    assert_true(json_is_null(json_object_get(pub, "error")));
    assert_int_equal(json_integer_value(json_object_get(pub, "rows")), 57);
    json_decref(pub);
    /* A publish that cannot work fails alone: the sync stays ready. */
    pub = wait_published(&srv, "bad_data", 0);
    tl_assert_contains(json_string_value(json_object_get(pub, "error")),
                       "publish.partition_by: day() needs a timestamp or date column, but \"k\" is VARCHAR");
    json_decref(pub);
    json_t *bad = tl_server_dataset(&srv, "bad_data");
    assert_string_equal(tl_json_str(bad, "state"), "ready");
    json_decref(bad);

    json_t *ans = tl_http_json(srv.port, "POST", "/api/store/publish/ev", NULL, 200, NULL);
    json_t *p = json_object_get(ans, "publish");
    assert_int_equal(json_integer_value(json_object_get(p, "version")), 2);
    assert_int_equal(json_integer_value(json_object_get(p, "files_written")), 0);
    assert_int_equal(json_integer_value(json_object_get(p, "files")), 12);
    json_decref(ans);
    json_decref(tl_http_json(srv.port, "POST", "/api/store/publish/nope", NULL, 404, NULL));
    json_decref(tl_http_json(srv.port, "GET", "/api/store/publish/ev", NULL, 405, NULL));

    /* The CLI goes through the server that holds the file. */
    char *out = NULL;
    assert_int_equal(tl_run(&out, "%s --config-dir %s publish ev", bin(), e.dir), 0);
    tl_assert_contains(out, "ev: published version 3 to ");
    free(out);
    assert_int_equal(tl_run(&out, "%s --config-dir %s publish bad", bin(), e.dir), 2);
    tl_assert_contains(out, "publish.partition_by");
    free(out);

    char *metrics = tl_server_metrics(&srv);
    tl_assert_contains(metrics, "duckstore_publish_total{source=\"ev\",result=\"success\"} 3\n");
    tl_assert_contains(metrics, "duckstore_publish_total{source=\"bad\",result=\"error\"} 2\n");
    tl_assert_contains(metrics, "duckstore_publish_version{source=\"ev\"} 3.000\n");
    free(metrics);
    assert_int_equal(tl_server_stop(&srv, 60, NULL), 0);
    e.st = NULL;
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_roundtrip_and_manifest, teardown),
        cmocka_unit_test_teardown(test_partition_by_column, teardown),
        cmocka_unit_test_teardown(test_incremental_adds_only_new_files, teardown),
        cmocka_unit_test_teardown(test_unchanged_sync_publishes_nothing, teardown),
        cmocka_unit_test_teardown(test_keep_versions_after_grace, teardown),
        cmocka_unit_test_teardown(test_config_errors, teardown),
        cmocka_unit_test_teardown(test_split_tables, teardown),
        cmocka_unit_test_teardown(test_two_instances_one_source, teardown),
        cmocka_unit_test_teardown(test_server, teardown),
        cmocka_unit_test_teardown(test_kill_during_publish, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
