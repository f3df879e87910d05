/* The DuckDB file as duckstore opens it: attached with small row groups
 * (bounded memory per insert stream), readable by any DuckDB that opens it
 * directly (same catalog name, views intact), and held by one process at a
 * time with an error that names the holder; and DuckDB's allocator as
 * duckstore sets it up. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void fill(store *st)
{
    duckdb_connection con = tl_store_connect(st);
    tl_duck_exec(con, "CREATE TABLE t AS SELECT range AS i, repeat('x', 100) AS s FROM range(40000)");
    tl_duck_exec(con, "CREATE VIEW v AS SELECT count(*) AS n, max(i) AS top FROM t");
    duckdb_disconnect(&con);
}

/* Opens DIR/NAME through duckstore (path receives the file's path). */
static store *open_at(const char *dir, const char *name, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, name);
    store *st;
    ds_error err;
    if (!store_open(path, &st, &err))
        fail_msg("%s: %s", name, err.msg);
    return st;
}

static void test_small_row_groups_and_direct_open(void **state)
{
    (void)state;
    char *dir = tl_mkdtemp();
    char path[512];
    store *st = open_at(dir, "cache.duckdb", path, sizeof path);
    fill(st);
    duckdb_connection con = tl_store_connect(st);
    /* 40,000 rows: 16,384 + 16,384 + 7,232. */
    assert_int_equal(tl_duck_int(con, "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('t')"),
                     3);
    char *catalog = tl_duck_scalar(con, "SELECT current_database()");
    assert_string_equal(catalog, "cache");
    free(catalog);
    duckdb_disconnect(&con);
    store_close(st);

    /* A dashboard opening the file itself sees the same catalog, table and view. */
    duckdb_database db;
    assert_int_equal(duckdb_open(path, &db), DuckDBSuccess);
    assert_int_equal(duckdb_connect(db, &con), DuckDBSuccess);
    catalog = tl_duck_scalar(con, "SELECT current_database()");
    assert_string_equal(catalog, "cache");
    free(catalog);
    char *view = tl_duck_scalar(con, "SELECT n || '/' || top FROM cache.main.v");
    assert_string_equal(view, "40000/39999");
    free(view);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    tl_rmtree(dir);
    free(dir);
}

/* A file named like a built-in catalog still opens (under another name). */
static void test_file_named_like_a_builtin_catalog(void **state)
{
    (void)state;
    char *dir = tl_mkdtemp();
    static const char *const names[] = {"memory.duckdb", "system.db", "temp", "main.duckdb"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[512];
        store *st = open_at(dir, names[i], path, sizeof path);
        fill(st);
        store_close(st);
        st = open_at(dir, names[i], path, sizeof path);
        duckdb_connection con = tl_store_connect(st);
        assert_int_equal(tl_duck_int(con, "SELECT n FROM v"), 40000);
        duckdb_disconnect(&con);
        store_close(st);
    }
    tl_rmtree(dir);
    free(dir);
}

/* A second process gets DS_ERR_BUSY naming this process; the data stays. */
static void test_second_process_is_refused(void **state)
{
    (void)state;
    char *dir = tl_mkdtemp();
    char path[512];
    store *st = open_at(dir, "busy.duckdb", path, sizeof path);
    fill(st);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(fds[0]);
        store *other;
        ds_error child_err;
        char line[1200];
        if (store_open(path, &other, &child_err))
            snprintf(line, sizeof line, "opened");
        else
            snprintf(line, sizeof line, "%d %s", (int)child_err.code, child_err.msg);
        ssize_t n = write(fds[1], line, strlen(line));
        _exit(n > 0 ? 0 : 1);
    }
    close(fds[1]);
    char got[1200] = "";
    ssize_t n = read(fds[0], got, sizeof got - 1);
    got[n > 0 ? n : 0] = '\0';
    close(fds[0]);
    int status;
    waitpid(child, &status, 0);
    char want[700];
    snprintf(want, sizeof want, "%d the DuckDB file %s is in use by another process (PID %d); ",
             (int)DS_ERR_BUSY, path, (int)getpid());
    if (strncmp(got, want, strlen(want)) != 0)
        fail_msg("second open: \"%s\", expected it to start with \"%s\"", got, want);
    duckdb_connection con = tl_store_connect(st);
    assert_int_equal(tl_duck_int(con, "SELECT n FROM v"), 40000);
    duckdb_disconnect(&con);
    store_close(st);
    tl_rmtree(dir);
    free(dir);
}

/* libduckdb's jemalloc control, exported beside its C API. */
extern int duckdb_je_mallctl(const char *name, void *old, size_t *old_len, void *new_value, size_t new_len);

/* DuckDB's allocator keeps freed pages for 30 s (src/store/store.c): read
 * back from jemalloc itself, so a libduckdb that stops reading the setting
 * fails here rather than making every sync slower unseen. */
static void test_the_allocator_keeps_freed_memory(void **state)
{
    (void)state;
    static const char *const settings[] = {"opt.dirty_decay_ms", "opt.muzzy_decay_ms",
                                           "arenas.dirty_decay_ms", "arenas.muzzy_decay_ms"};
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        ssize_t ms = -2;
        size_t len = sizeof ms;
        if (duckdb_je_mallctl(settings[i], &ms, &len, NULL, 0) != 0)
            fail_msg("jemalloc does not answer %s", settings[i]);
        if (ms != 30000)
            fail_msg("%s is %zd ms, expected 30000", settings[i], ms);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_row_groups_and_direct_open),
        cmocka_unit_test(test_file_named_like_a_builtin_catalog),
        cmocka_unit_test(test_second_process_is_refused),
        cmocka_unit_test(test_the_allocator_keeps_freed_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
