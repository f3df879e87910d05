/* check-config runs what a sync runs: the query wrapped as the COPY wraps
 * it, so a query the sync would reject (a missing privilege, DELETE ...
 * RETURNING, a data-modifying WITH, a typo) fails check-config and the
 * sync alike with exit 2, at the line and column of the YAML file, and a
 * trailing "; -- comment" pasted from psql works. `duckstore query` changes
 * nothing in the DuckDB file and needs no PostgreSQL password. Everything
 * runs through the built binary. */
#include "testlib.h"

#include "source/pgsrc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ROLE "ds_check_noread"

static char g_conninfo[1024];
static PGconn *g_pg;

static const char *bin(void)
{
    const char *b = getenv("DUCKSTORE_BIN");
    if (b == NULL || b[0] == '\0')
        fail_msg("DUCKSTORE_BIN is not set (ctest sets it)");
    return b;
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_conninfo, sizeof g_conninfo, "%s", tl_pg_fresh_db("check_runs"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg, "CREATE TABLE t (id int PRIMARY KEY, score int NOT NULL)");
    tl_pg_exec(g_pg, "INSERT INTO t SELECT g, g * 10 FROM generate_series(1, 5) AS g");
    tl_pg_exec(g_pg, "CREATE TABLE secret (id int)");
    tl_pg_exec(g_pg, "DO $$ BEGIN CREATE ROLE " ROLE " LOGIN PASSWORD 'noread-pw'; "
                     "EXCEPTION WHEN duplicate_object THEN NULL; END $$");
    tl_pg_exec(g_pg, "GRANT SELECT ON t TO " ROLE);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tl_pg_exec(g_pg, "REVOKE ALL ON t FROM " ROLE);
    PQfinish(g_pg);
    tl_free_kept();
    return 0;
}

/* A scratch directory with config/ and the DuckDB file's path. */
typedef struct world {
    char *dir;
    char config[600], yaml[700], db[600];
} world;

static void world_open(world *w)
{
    w->dir = tl_mkdtemp();
    snprintf(w->config, sizeof w->config, "%s/config", w->dir);
    snprintf(w->yaml, sizeof w->yaml, "%s/src_db.yaml", w->config);
    snprintf(w->db, sizeof w->db, "%s/store.duckdb", w->dir);
    mkdir(w->config, 0755);
}

static void world_close(world *w)
{
    tl_rmtree(w->dir);
    free(w->dir);
}

/* src_db.yaml: the url (line 2), then body from line 3. */
static void write_source(world *w, const char *url, const char *body)
{
    tl_write_filef(w->yaml, "src_db:\n  url: \"%s\"\n%s", url, body);
}

/* Runs duckstore with args; returns its output (kept), *rc its exit code. */
static const char *run(world *w, int *rc, const char *args)
{
    char *out = NULL;
    *rc = tl_run(&out, "'%s' --config-dir '%s' --db '%s' %s", bin(), w->config, w->db, args);
    return tl_keep(out);
}

static void expect_rc(world *w, const char *args, int want, const char *needle)
{
    int rc;
    const char *out = run(w, &rc, args);
    if (rc != want)
        fail_msg("duckstore %s: exit %d, expected %d:\n%s", args, rc, want, out);
    if (needle != NULL)
        tl_assert_contains(out, needle);
}

/* The rows of src_data, read back through `duckstore query`. */
static void expect_rows(world *w, const char *want)
{
    expect_rc(w, "query \"SELECT count(*) || ':' || sum(score) AS n FROM src_data\"", 0,
              tl_keepf("n\n%s\n", want));
}

/* A query is refused by check-config and by the sync with exit 2 and the
 * message at `where`; the rows synced before stay readable. */
static void expect_refused(world *w, const char *where)
{
    expect_rc(w, "check-config", 2, where);
    expect_rc(w, "sync", 2, where);
    expect_rows(w, "5:150");
}

static void sync_good(world *w, const char *url)
{
    write_source(w, url, "  query: SELECT id, score FROM t\n");
    expect_rc(w, "sync", 0, "src: full sync, 5 rows");
}

static void test_trailing_semicolon_and_comment(void **state)
{
    (void)state;
    world w;
    world_open(&w);
    write_source(&w, g_conninfo,
                 "  query: |\n"
                 "    SELECT id, score\n"
                 "    FROM t; -- every row, as pasted from psql\n");
    expect_rc(&w, "check-config", 0, tl_keepf("# config directory %s: OK", w.config));
    expect_rc(&w, "sync", 0, "src: full sync, 5 rows");
    expect_rows(&w, "5:150");
    /* One line, a block comment and blanks after the semicolon; a
     * semicolon inside a string is text. */
    write_source(&w, g_conninfo, "  query: SELECT id, score FROM t WHERE ';' <> ' ; ' ;; /* all */  \n");
    expect_rc(&w, "check-config", 0, tl_keepf("# config directory %s: OK", w.config));
    expect_rc(&w, "sync --full", 0, "src: full sync, 5 rows");
    expect_rows(&w, "5:150");
    world_close(&w);
}

static void test_typo_at_line_and_column(void **state)
{
    (void)state;
    world w;
    world_open(&w);
    sync_good(&w, g_conninfo);
    write_source(&w, g_conninfo,
                 "  query: |\n"
                 "    SELECT id,\n"
                 "           scroe\n"
                 "    FROM t\n");
    expect_refused(
        &w, tl_keepf("%s:5:12: query: column \"scroe\" does not exist (SQLSTATE 42703; HINT: ", w.yaml));
    /* A one-line value: the column is exact too. */
    write_source(&w, g_conninfo, "  query: SELECT id, scroe FROM t\n");
    expect_refused(&w, tl_keepf("%s:3:21: query: column \"scroe\"", w.yaml));
    /* Columns count characters, in PostgreSQL's position and the file. */
    write_source(&w, g_conninfo, "  query: SELECT 'é€' AS e, scroe FROM t\n");
    expect_refused(&w, tl_keepf("%s:3:28: query: column \"scroe\"", w.yaml));
    /* A quoted value with an escape: the line only. */
    write_source(&w, g_conninfo, "  query: 'SELECT id, scroe FROM t WHERE ''a'' <> ''b'''\n");
    expect_refused(&w, tl_keepf("%s:3: query: column \"scroe\"", w.yaml));
    world_close(&w);
}

static void expect_trim(const char *query, const char *want)
{
    char *got = tl_keep(pgsrc_trim_query(query));
    if (strcmp(got, want) != 0)
        fail_msg("pgsrc_trim_query(\"%s\"): \"%s\", expected \"%s\"", query, got, want);
}

/* What is cut: semicolons at the end, and blanks and comments after them;
 * never text inside quotes, dollar quotes or comments, never an unclosed
 * one (PostgreSQL reports it). */
static void test_trim_query(void **state)
{
    (void)state;
    expect_trim("SELECT 1", "SELECT 1");
    expect_trim("SELECT 1 ;; \n", "SELECT 1");
    expect_trim("SELECT 1; -- all\n", "SELECT 1");
    expect_trim("SELECT 1; /* a /* nested */ comment */ -- and more", "SELECT 1");
    expect_trim("SELECT 1 -- no semicolon before it", "SELECT 1 -- no semicolon before it");
    expect_trim("SELECT 1 -- a comment;", "SELECT 1 -- a comment;");
    expect_trim("SELECT ';' AS s", "SELECT ';' AS s");
    expect_trim("SELECT 'it''s;' AS s;", "SELECT 'it''s;' AS s");
    expect_trim("SELECT E'\\';' AS s;", "SELECT E'\\';' AS s");
    expect_trim("SELECT \";\" FROM t;", "SELECT \";\" FROM t");
    expect_trim("SELECT $$;$$ AS a, $x$ ; $$ $x$ AS b ; ", "SELECT $$;$$ AS a, $x$ ; $$ $x$ AS b");
    expect_trim("SELECT 1; SELECT 2;", "SELECT 1; SELECT 2");
    expect_trim("SELECT 1; /* unclosed", "SELECT 1; /* unclosed");
    expect_trim("SELECT 'unclosed;", "SELECT 'unclosed;");
    expect_trim("SELECT id FROM t WHERE id > $1;", "SELECT id FROM t WHERE id > $1");
}

static void test_delete_returning(void **state)
{
    (void)state;
    world w;
    world_open(&w);
    sync_good(&w, g_conninfo);
    write_source(&w, g_conninfo, "  query: DELETE FROM t WHERE id = 1 RETURNING id, score\n");
    expect_refused(&w, tl_keepf("%s:3:", w.yaml));
    expect_rc(&w, "check-config", 2, "it must be a single SELECT that changes nothing");
    assert_int_equal(tl_pg_int(g_pg, "SELECT count(*) FROM t"), 5);
    world_close(&w);
}

static void test_data_modifying_with(void **state)
{
    (void)state;
    world w;
    world_open(&w);
    sync_good(&w, g_conninfo);
    write_source(&w, g_conninfo,
                 "  query: |\n"
                 "    WITH gone AS (DELETE FROM t WHERE id = 1 RETURNING id, score)\n"
                 "    SELECT id, score FROM gone\n");
    expect_refused(&w, tl_keepf("%s:4:10: query: WITH clause containing a data-modifying statement must be "
                                "at the top level (SQLSTATE 0A000)",
                                w.yaml));
    assert_int_equal(tl_pg_int(g_pg, "SELECT count(*) FROM t"), 5);
    world_close(&w);
}

static void test_table_the_role_may_not_read(void **state)
{
    (void)state;
    world w;
    world_open(&w);
    /* Later conninfo keywords win. */
    const char *url = tl_keepf("%s user=" ROLE " password=noread-pw", g_conninfo);
    sync_good(&w, url);
    write_source(&w, url, "  query: SELECT id, 0 AS score FROM secret\n");
    expect_refused(&w, tl_keepf("%s:3: query: permission denied for table secret (SQLSTATE 42501)", w.yaml));
    world_close(&w);
}

static char *file_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, out);
    fclose(f);
    fclose(out);
    *len = size;
    return buf;
}

static void test_query_is_read_only(void **state)
{
    (void)state;
    world w;
    world_open(&w);
    sync_good(&w, g_conninfo);
    size_t before_len, after_len;
    char *before = file_bytes(w.db, &before_len);
    expect_rc(&w, "query 'DELETE FROM src_data WHERE id = 1'", 2, "duckstore query is read-only");
    expect_rc(&w, "query \"UPDATE _duckstore.tables SET watermark = 'x'\"", 2,
              "duckstore query is read-only");
    expect_rc(&w, "query 'CREATE TABLE src_copy AS SELECT * FROM src_data'", 2,
              "duckstore query is read-only");
    /* Not by attaching the file again either. */
    expect_rc(&w, tl_keepf("query \"DETACH store; ATTACH '%s' AS w; DELETE FROM w.src_data\"", w.db), 2,
              "duckstore query is read-only");
    expect_rows(&w, "5:150");
    expect_rc(&w, "query \"SELECT count(*) AS changed FROM _duckstore.tables WHERE watermark = 'x'\"", 0,
              "changed\n0\n");
    char *after = file_bytes(w.db, &after_len);
    assert_true(before_len == after_len && memcmp(before, after, before_len) == 0);
    free(before);
    free(after);
    world_close(&w);
}

static void test_query_and_status_need_no_password(void **state)
{
    (void)state;
    world w;
    world_open(&w);
    sync_good(&w, g_conninfo);
    unsetenv("DS_CHECK_UNSET_PASSWORD");
    write_source(&w, "postgresql://reader:${DS_CHECK_UNSET_PASSWORD}@127.0.0.1:1/nowhere",
                 "  query: SELECT id, score FROM t\n");
    expect_rows(&w, "5:150");
    expect_rc(&w, "status", 0, "src_data: ready, 5 rows");
    /* Commands that connect still say what is missing. */
    const char *unset =
        tl_keepf("%s:2: url: environment variable DS_CHECK_UNSET_PASSWORD is not set", w.yaml);
    expect_rc(&w, "sync", 2, unset);
    expect_rc(&w, "check-config", 2, unset);
    expect_rc(&w, "check-config --offline", 2, unset);
    world_close(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trim_query),
        cmocka_unit_test(test_trailing_semicolon_and_comment),
        cmocka_unit_test(test_typo_at_line_and_column),
        cmocka_unit_test(test_delete_returning),
        cmocka_unit_test(test_data_modifying_with),
        cmocka_unit_test(test_table_the_role_may_not_read),
        cmocka_unit_test(test_query_is_read_only),
        cmocka_unit_test(test_query_and_status_need_no_password),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
