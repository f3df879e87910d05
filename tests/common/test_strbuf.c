/* ds_buf: growth past any initial size, printf appends, SQL quoting of
 * hostile names, and the sticky failure that builders check once. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"

static void test_grows_and_formats(void **state)
{
    (void)state;
    ds_buf b = DS_BUF_INIT;
    assert_string_equal(ds_buf_str(&b), "");
    for (int i = 0; i < 5000; i++)
        assert_true(ds_buf_appendf(&b, "%s%d", i ? "," : "", i));
    assert_int_equal(b.len, strlen(b.data));
    assert_memory_equal(b.data, "0,1,2,3", 7);
    assert_non_null(strstr(b.data, ",4999"));
    char *text = ds_buf_take(&b);
    assert_null(b.data);
    assert_int_equal(strlen(text), 23889);
    free(text);
}

static void test_quotes_hostile_names(void **state)
{
    (void)state;
    char *q = ds_quote_ident("c\"1\"");
    assert_string_equal(q, "\"c\"\"1\"\"\"");
    free(q);
    q = ds_quote_literal("it's \\ 'x'");
    assert_string_equal(q, "'it''s \\ ''x'''");
    free(q);
    q = ds_quote_ident("");
    assert_string_equal(q, "\"\"");
    free(q);
    /* A name made only of quotes doubles to twice its length plus two. */
    char quotes[4001];
    memset(quotes, '"', 4000);
    quotes[4000] = '\0';
    q = ds_quote_ident(quotes);
    assert_int_equal(strlen(q), 8002);
    free(q);
}

static void test_failure_is_sticky(void **state)
{
    (void)state;
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT ");
    b.failed = true; /* as after a failed realloc */
    assert_false(ds_buf_append_ident(&b, "x"));
    assert_null(ds_buf_str(&b));
    ds_error err;
    ds_error_clear(&err);
    assert_null(ds_buf_take_or_err(&b, &err));
    assert_int_equal(err.code, DS_ERR_NOMEM);
    assert_null(b.data);
    /* An impossible size fails instead of wrapping around. */
    ds_buf_append(&b, "x");
    assert_false(ds_buf_appendn(&b, "", (size_t)-1 / 2));
    assert_true(b.failed);
    ds_buf_free(&b);
}

/* Cutting a truncated message at a character boundary. */
static void test_utf8_cut(void **state)
{
    (void)state;
    const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"; /* a é € 😀 */
    size_t expect[] = {0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10};
    for (size_t len = 0; len <= 10; len++)
        assert_int_equal(ds_utf8_cut(s, len), expect[len]);
    char buf[] = "ab\xe2\x82\xac\xe2"; /* cut after one byte of a second € */
    ds_utf8_trim_end(buf);
    assert_string_equal(buf, "ab\xe2\x82\xac");
    /* Error messages are cut so, also after a prefix. */
    ds_error err;
    char long_text[3000];
    for (size_t i = 0; i + 3 < sizeof long_text; i += 3)
        memcpy(long_text + i, "\xe2\x82\xac", 3);
    long_text[2997] = '\0';
    for (int pad = 0; pad < 3; pad++) {
        ds_error_set(&err, DS_ERR_CONFIG, "%.*s%s", pad, "xx", long_text);
        assert_int_equal(ds_utf8_cut(err.msg, strlen(err.msg)), strlen(err.msg));
        assert_true(strlen(err.msg) >= sizeof err.msg - 3);
        ds_error_prefix(&err, "%.*s: ", pad + 1, "yyy");
        assert_int_equal(ds_utf8_cut(err.msg, strlen(err.msg)), strlen(err.msg));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grows_and_formats),
        cmocka_unit_test(test_quotes_hostile_names),
        cmocka_unit_test(test_failure_is_sticky),
        cmocka_unit_test(test_utf8_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
