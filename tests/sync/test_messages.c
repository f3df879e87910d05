/* Messages that fill their buffers: a long error or warning cut inside a
 * UTF-8 character must still reach the status document (jansson refuses
 * invalid UTF-8, and the text used to vanish: `state: error, error: null`). */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("sync_messages"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

/* A results query whose 80 columns are named with three-byte characters:
 * the "no column named dataset_id (columns: …)" error lists them all and
 * runs past the 1,024 bytes of an error, at every possible cut. */
static void test_long_error_cut_inside_a_character(void **state)
{
    (void)state;
    /* Thirteen alignments: the cut falls on every byte of a column's text. */
    for (int pad = 0; pad < 13; pad++) {
        tl_env e;
        char schema[32];
        snprintf(schema, sizeof schema, "long_error_%d", pad);
        tl_env_open(&e, g_conninfo, schema, "");
        tl_llm_create(e.pg);
        tl_llm_add(e.pg, 1, 3, 1);
        ds_buf cols = DS_BUF_INIT;
        for (int i = 0; i < 80; i++)
            ds_buf_appendf(&cols, ", 1 AS \"%.*s€€€%02d\"", pad, "xxxxxxxxxxxxx", i); /* € is 3 bytes */
        tl_env_source(&e, "monitoring",
                      "  dataset_query: SELECT trace_id AS dataset_id, prompt FROM llm_traces\n"
                      "  results_query: SELECT trace_id%s FROM llm_metric_results\n",
                      ds_buf_str(&cols));
        ds_buf_free(&cols);
        sync_report r;
        ds_error err;
        assert_false(sync_source(e.st, &e.cfg, tl_source(&e.cfg, "monitoring"), NULL, &r, &err));
        assert_int_equal(err.code, DS_ERR_CONFIG);
        assert_true(strlen(err.msg) >= sizeof err.msg - 4);
        /* The message is valid UTF-8 to its last byte: jansson takes it. */
        json_t *direct = json_string(err.msg);
        assert_non_null(direct);
        json_decref(direct);
        json_t *s = tl_sync_status(e.st, &e.cfg, "monitoring");
        assert_string_equal(tl_json_str(s, "state"), "error");
        assert_non_null(tl_json_str(s, "error"));
        assert_string_equal(tl_json_str(s, "error"), err.msg);
        tl_assert_contains(tl_json_str(s, "error"), "has no column named dataset_id (columns: trace_id, ");
        json_decref(s);
        tl_env_close(&e);
    }
}

/* A warning (768 bytes) cut the same way stays in the status's warnings. */
static void test_long_warning_cut_inside_a_character(void **state)
{
    (void)state;
    for (int pad = 0; pad < 3; pad++) {
        tl_env e;
        char schema[32];
        snprintf(schema, sizeof schema, "long_warning_%d", pad);
        tl_env_open(&e, g_conninfo, schema, "");
        tl_llm_create(e.pg);
        tl_llm_add(e.pg, 1, 3, 1);
        ds_buf cols = DS_BUF_INIT;
        for (int i = 0; i < 60; i++)
            ds_buf_appendf(&cols, ", 1 AS \"%.*s€€€%02d\"", pad, "xx", i);
        tl_env_source(&e, "events",
                      "  query: SELECT trace_id%s FROM llm_traces\n"
                      "  incremental_column: created_at\n",
                      ds_buf_str(&cols));
        ds_buf_free(&cols);
        sync_report r;
        tl_sync_ok(e.st, &e.cfg, "events", false, &r);
        assert_int_equal(r.nwarnings, 1);
        tl_assert_contains(r.warnings[0], "incremental_column \"created_at\" is not a column of query");
        json_t *s = tl_sync_status(e.st, &e.cfg, "events");
        json_t *warnings = json_object_get(s, "warnings");
        assert_int_equal(json_array_size(warnings), 1);
        assert_string_equal(json_string_value(json_array_get(warnings, 0)), r.warnings[0]);
        json_decref(s);
        tl_env_close(&e);
    }
}

/* The server's NOTICE and WARNING lines (a RAISE in a function the query
 * calls) come out as duckstore log lines naming the source, not as libpq's
 * raw "NOTICE:  ..." on stderr. */
static void test_postgresql_notices_go_through_the_log(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "notices", "");
    tl_pg_exec(e.pg,
               "CREATE FUNCTION noisy(i int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
               "RAISE NOTICE 'row %% seen', i; IF i = 2 THEN RAISE WARNING 'careful with %%', i; END IF; "
               "RETURN i; END $$");
    tl_env_source(&e, "loud", "  query: SELECT noisy(g) AS n FROM generate_series(1, 3) AS g\n");
    char *out = NULL;
    int rc = tl_run(&out, "'%s' --config-dir '%s' --db '%s/cli.duckdb' sync", getenv("DUCKSTORE_BIN"), e.dir,
                    e.dir);
    if (rc != 0)
        fail_msg("sync: exit %d:\n%s", rc, out);
    static const char *const expected[] = {
        "Z INFO  loud: PostgreSQL NOTICE: row 1 seen",
        "Z INFO  loud: PostgreSQL NOTICE: row 2 seen",
        "Z WARN  loud: PostgreSQL WARNING: careful with 2",
        "Z INFO  loud: PostgreSQL NOTICE: row 3 seen",
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        tl_assert_contains(out, expected[i]);
    /* Nothing of them reaches stderr any other way. */
    if (strstr(out, "NOTICE:  ") != NULL || strstr(out, "WARNING:  ") != NULL)
        fail_msg("a raw libpq notice in the output:\n%s", out);
    free(out);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_long_error_cut_inside_a_character),
        cmocka_unit_test(test_long_warning_cut_inside_a_character),
        cmocka_unit_test(test_postgresql_notices_go_through_the_log),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
