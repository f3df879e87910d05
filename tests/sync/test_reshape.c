/* A source changes shape: from one query to two (the <name>_data table
 * becomes a view over <name>_dataset and <name>_results) and back. Each
 * change rebuilds on the next sync, incremental config included, without
 * anyone dropping an object by hand. */
#include "testlib.h"

#include <stdlib.h>
#include <string.h>

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("sync_reshape"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

static int64_t relations(tl_env *e, const char *kind, const char *name)
{
    return tl_duck_int(e->con,
                       "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND "
                       "table_name = '%s' AND table_type = '%s'",
                       name, kind);
}

#define SINGLE_YAML                                                                                          \
    "  query: SELECT trace_id, metric_name, created_at FROM llm_metric_results\n"                            \
    "  incremental_column: created_at\n"

static void test_single_to_split_and_back(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "reshape", "");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 20, 3);
    sync_report r;

    tl_env_source(&e, "monitoring", SINGLE_YAML);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_int_equal(r.rows, 60);
    assert_int_equal(relations(&e, "BASE TABLE", "monitoring_data"), 1);

    /* Two queries now: the table makes way for the view, in one commit. */
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML);
    for (int round = 0; round < 2; round++) {
        tl_llm_add(e.pg, 21 + round, 21 + round, 3);
        tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
        assert_int_equal(r.incremental, round > 0);
        assert_int_equal(r.rows, 63 + 3 * round);
        tl_llm_assert_synced(&e, "monitoring");
    }
    assert_int_equal(relations(&e, "VIEW", "monitoring_data"), 1);
    assert_int_equal(relations(&e, "BASE TABLE", "monitoring_data"), 0);

    /* And back to one query: the view makes way for the table, and the
     * two tables of the split source are gone. */
    tl_env_source(&e, "monitoring", SINGLE_YAML);
    for (int round = 0; round < 2; round++) {
        tl_llm_add(e.pg, 23 + round, 23 + round, 3);
        tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
        assert_int_equal(r.incremental, round > 0);
        assert_int_equal(r.rows, 69 + 3 * round);
        assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM monitoring_data"), 69 + 3 * round);
    }
    assert_int_equal(relations(&e, "BASE TABLE", "monitoring_data"), 1);
    assert_int_equal(relations(&e, "VIEW", "monitoring_data"), 0);
    assert_int_equal(relations(&e, "BASE TABLE", "monitoring_dataset"), 0);
    assert_int_equal(relations(&e, "BASE TABLE", "monitoring_results"), 0);
    json_t *s = tl_sync_status(e.st, &e.cfg, "monitoring");
    assert_string_equal(tl_json_str(s, "state"), "ready");
    assert_int_equal(json_integer_value(json_object_get(s, "rows")), 72);
    json_decref(s);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_to_split_and_back),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
