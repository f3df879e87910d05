/* The metadata tables' rows read from memory (src/store/meta_cache.h): a
 * read after a committed write sees it, a rolled-back write leaves the old
 * row, a read that overlapped a write is not kept, a reopen forgets. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/store.h"
#include "testlib.h"

typedef struct fixture {
    char *dir;
    store *st;
    duckdb_connection writer, reader;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char path[600];
    f->dir = tl_mkdtemp();
    snprintf(path, sizeof path, "%s/s.duckdb", f->dir);
    ds_error err = {0};
    if (!store_open(path, &f->st, &err))
        fail_msg("%s", err.msg);
    f->writer = tl_store_connect(f->st);
    f->reader = tl_store_connect(f->st);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    duckdb_disconnect(&f->writer);
    duckdb_disconnect(&f->reader);
    store_close(f->st);
    tl_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Writes the table's watermark as a sync's commit does; commit false
 * rolls the write back. */
static void write_watermark(fixture *f, const char *watermark, bool commit)
{
    ds_error err = {0};
    store_table_meta meta = {
        .schema_signature = "id BIGINT\n", .watermark_column = "id", .watermark = (char *)watermark};
    store_commit_lock(f->st);
    assert_true(store_exec(f->writer, "BEGIN TRANSACTION", &err));
    if (!store_put_table_meta(f->st, f->writer, "t", &meta, &err))
        fail_msg("%s", err.msg);
    assert_true(store_exec(f->writer, commit ? "COMMIT" : "ROLLBACK", &err));
    store_commit_unlock(f->st);
}

/* The watermark as the store reads it (NULL: no row or no watermark). */
static char *read_watermark(fixture *f)
{
    ds_error err = {0};
    store_table_meta meta;
    if (!store_get_table_meta(f->st, f->reader, "t", &meta, &err))
        fail_msg("%s", err.msg);
    char *w = meta.watermark ? strdup(meta.watermark) : NULL;
    store_table_meta_free(&meta);
    return w;
}

static void assert_watermark(fixture *f, const char *expected)
{
    char *w = read_watermark(f);
    if (expected == NULL)
        assert_null(w);
    else
        assert_string_equal(w, expected);
    free(w);
}

/* Changes the row behind the store's back: a read that still returns the
 * old value came from memory. (duckstore itself never writes so.) */
static void change_behind_the_back(fixture *f, const char *watermark)
{
    ds_error err = {0};
    if (!store_execf(f->writer, NULL, &err,
                     "UPDATE _duckstore.tables SET watermark = '%s' WHERE table_name = 't'", watermark))
        fail_msg("%s", err.msg);
}

static void test_reads_come_from_memory_until_a_write(void **state)
{
    fixture *f = *state;
    assert_watermark(f, NULL);
    write_watermark(f, "10", true);
    assert_watermark(f, "10");
    change_behind_the_back(f, "99");
    assert_watermark(f, "10"); /* from memory: proves the cache is used */
    write_watermark(f, "20", true);
    assert_watermark(f, "20");
}

static void test_a_rolled_back_write_leaves_the_old_row(void **state)
{
    fixture *f = *state;
    write_watermark(f, "10", true);
    assert_watermark(f, "10");
    write_watermark(f, "20", false);
    assert_watermark(f, "10");
}

static void test_a_read_during_a_write_is_not_kept(void **state)
{
    fixture *f = *state;
    write_watermark(f, "10", true);
    ds_error err = {0};
    store_table_meta meta = {.watermark_column = "id", .watermark = "20"};
    store_commit_lock(f->st);
    assert_true(store_exec(f->writer, "BEGIN TRANSACTION", &err));
    assert_true(store_put_table_meta(f->st, f->writer, "t", &meta, &err));
    assert_watermark(f, "10"); /* DuckDB's committed row, read while the write is open */
    assert_true(store_exec(f->writer, "COMMIT", &err));
    store_commit_unlock(f->st);
    assert_watermark(f, "20");
}

static void test_cleared_watermarks_and_status(void **state)
{
    fixture *f = *state;
    ds_error err = {0};
    write_watermark(f, "10", true);
    assert_watermark(f, "10");
    const char *tables[] = {"t"};
    store_commit_lock(f->st);
    assert_true(store_clear_watermarks(f->st, f->writer, tables, 1, &err));
    store_commit_unlock(f->st);
    assert_watermark(f, NULL);

    char *json = NULL;
    assert_true(store_get_status(f->st, f->reader, "src", &json, &err));
    assert_null(json); /* none yet, and "none" is remembered too */
    store_commit_lock(f->st);
    assert_true(store_put_status(f->st, f->writer, "src", "{\"state\": \"ready\"}", &err));
    store_commit_unlock(f->st);
    assert_true(store_get_status(f->st, f->reader, "src", &json, &err));
    assert_string_equal(json, "{\"state\": \"ready\"}");
    free(json);
    assert_true(store_exec(f->writer, "UPDATE _duckstore.sync_status SET status = '{}'", &err));
    assert_true(store_get_status(f->st, f->reader, "src", &json, &err));
    assert_string_equal(json, "{\"state\": \"ready\"}");
    free(json);
    /* A reader that must see its own snapshot passes no store. */
    assert_true(store_get_status(NULL, f->reader, "src", &json, &err));
    assert_string_equal(json, "{}");
    free(json);
}

static void test_a_reopen_forgets(void **state)
{
    fixture *f = *state;
    ds_error err = {0};
    write_watermark(f, "10", true);
    assert_watermark(f, "10");
    change_behind_the_back(f, "99");
    duckdb_disconnect(&f->writer);
    duckdb_disconnect(&f->reader);
    store_mark_suspect(f->st);
    if (!store_reopen(f->st, &err))
        fail_msg("%s", err.msg);
    f->writer = tl_store_connect(f->st);
    f->reader = tl_store_connect(f->st);
    assert_watermark(f, "99");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reads_come_from_memory_until_a_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_rolled_back_write_leaves_the_old_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_read_during_a_write_is_not_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cleared_watermarks_and_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_reopen_forgets, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
