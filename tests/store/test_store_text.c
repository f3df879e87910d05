/* The store's SQL built from names and values it does not control: quoting,
 * printf-style statements far longer than any fixed buffer, and the
 * metadata and status of tables and sources with long hostile names. Also
 * the accessors that stand in for the store's fields. */
#include "testlib.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/strbuf.h"

/* A name of about len bytes mixing quotes, backslashes, spaces and
 * non-ASCII characters. */
static char *hostile_name(size_t len)
{
    static const char *const parts[] = {"\"", "'", "\\", " ", "é", "名", "x"};
    ds_buf b = DS_BUF_INIT;
    for (size_t i = 0; b.len < len; i++)
        ds_buf_append(&b, parts[i % (sizeof parts / sizeof parts[0])]);
    char *s = ds_buf_take(&b);
    assert_non_null(s);
    return s;
}

static void test_quoting(void **state)
{
    (void)state;
    char *q = store_quote_ident("a\"b\\c");
    assert_string_equal(q, "\"a\"\"b\\c\"");
    free(q);
    q = store_quote_literal("it's \\ 'x'");
    assert_string_equal(q, "'it''s \\ ''x'''");
    free(q);
    q = store_quote_ident("");
    assert_string_equal(q, "\"\"");
    free(q);
}

static void test_long_statements_and_hostile_names(void **state)
{
    (void)state;
    char *dir = tl_mkdtemp(), path[600];
    snprintf(path, sizeof path, "%s/s.duckdb", dir);
    store *st;
    ds_error err = {0};
    if (!store_open(path, &st, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(store_path(st), path);
    duckdb_connection con = tl_store_connect(st);

    /* A 2,000-byte table name: CREATE through store_execf, then the
     * lookups that once built their SQL in 512 bytes. */
    char *name = hostile_name(2000), *qname = store_quote_ident(name);
    assert_non_null(qname);
    int64_t changed = -1;
    if (!store_execf(con, NULL, &err, "CREATE TABLE %s (v VARCHAR)", qname))
        fail_msg("%s", err.msg);
    bool exists = false;
    assert_true(store_table_exists(con, name, &exists, &err));
    assert_true(exists);
    ds_buf longer = DS_BUF_INIT;
    ds_buf_append(&longer, name);
    ds_buf_appendc(&longer, 'x');
    assert_true(store_table_exists(con, ds_buf_str(&longer), &exists, &err));
    assert_false(exists);
    ds_buf_free(&longer);

    /* 300 KB of SQL, with the row count it changed; the value read back
     * through store_query_textf. */
    char *value = hostile_name(150000), *lit = store_quote_literal(value);
    assert_non_null(lit);
    if (!store_execf(con, &changed, &err, "INSERT INTO %s VALUES (%s), (%s)", qname, lit, lit))
        fail_msg("%s", err.msg);
    assert_int_equal(changed, 2);
    char *back = NULL;
    if (!store_query_textf(con, &back, &err, "SELECT min(v) FROM %s WHERE v = %s", qname, lit))
        fail_msg("%s", err.msg);
    assert_non_null(back);
    assert_string_equal(back, value);
    free(back);

    /* Metadata of that table, and the status of a source named alike. */
    store_table_meta meta = {.schema_signature = value, .watermark_column = name, .watermark = "2024-01-01"};
    assert_true(store_put_table_meta(st, con, name, &meta, &err));
    store_table_meta got;
    assert_true(store_get_table_meta(st, con, name, &got, &err));
    assert_string_equal(got.schema_signature, value);
    assert_string_equal(got.watermark_column, name);
    assert_string_equal(got.watermark, "2024-01-01");
    assert_false(got.watermark_inclusive);
    store_table_meta_free(&got);
    const char *tables[] = {name};
    assert_true(store_clear_watermarks(st, con, tables, 1, &err));
    assert_true(store_get_table_meta(st, con, name, &got, &err));
    assert_null(got.watermark);
    assert_string_equal(got.watermark_column, name);
    store_table_meta_free(&got);

    char *json = NULL;
    assert_true(store_put_status(st, con, name, "{\"state\": \"ok\"}", &err));
    assert_true(store_get_status(st, con, name, &json, &err));
    assert_string_equal(json, "{\"state\": \"ok\"}");
    free(json);
    assert_true(store_get_status(st, con, value, &json, &err));
    assert_null(json);

    free(lit);
    free(value);
    free(qname);
    free(name);
    duckdb_disconnect(&con);
    store_close(st);
    tl_rmtree(dir);
    free(dir);
}

/* A DuckDB error in a printf-style statement comes back as DS_ERR_STORE
 * with DuckDB's message. */
static void test_statement_errors(void **state)
{
    (void)state;
    char *dir = tl_mkdtemp(), path[600];
    snprintf(path, sizeof path, "%s/s.duckdb", dir);
    store *st;
    ds_error err = {0};
    if (!store_open(path, &st, &err))
        fail_msg("%s", err.msg);
    duckdb_connection con = tl_store_connect(st);
    assert_false(store_execf(con, NULL, &err, "SELECT * FROM %s", "\"no such table\""));
    assert_int_equal(err.code, DS_ERR_STORE);
    tl_assert_contains(err.msg, "no such table");
    char *out = (char *)"unchanged";
    assert_false(store_query_textf(con, &out, &err, "SELECT %d +", 1));
    assert_null(out);
    assert_int_equal(err.code, DS_ERR_STORE);
    duckdb_disconnect(&con);
    store_close(st);
    tl_rmtree(dir);
    free(dir);
}

typedef struct locker {
    store *st;
    _Atomic bool locked;
} locker;

static void *take_commit_lock(void *arg)
{
    locker *l = arg;
    store_commit_lock(l->st);
    atomic_store(&l->locked, true);
    store_commit_unlock(l->st);
    return NULL;
}

/* While one thread holds the commit lock, another waits for it. */
static void test_commit_lock(void **state)
{
    (void)state;
    char *dir = tl_mkdtemp(), path[600];
    snprintf(path, sizeof path, "%s/s.duckdb", dir);
    locker l = {0};
    ds_error err;
    if (!store_open(path, &l.st, &err))
        fail_msg("%s", err.msg);
    store_commit_lock(l.st);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, take_commit_lock, &l), 0);
    usleep(100 * 1000);
    assert_false(atomic_load(&l.locked));
    store_commit_unlock(l.st);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(atomic_load(&l.locked));
    store_close(l.st);
    tl_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quoting),
        cmocka_unit_test(test_long_statements_and_hostile_names),
        cmocka_unit_test(test_statement_errors),
        cmocka_unit_test(test_commit_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
