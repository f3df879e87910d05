/* Config keys of the loss-free incremental modes: unique_key (per
 * sub-table, a column or a list), lookback, commit_horizon and
 * full_refresh_interval_minutes, and their errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "testlib.h"

static char *write_source(const char *body)
{
    char *dir = tl_mkdtemp();
    char path[600];
    snprintf(path, sizeof path, "%s/monitoring_db.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "monitoring_db:\n  url: postgresql://u@h/db\n%s", body);
    fclose(f);
    return dir;
}

static void load_ok(const char *body, cfg_config *cfg, char **dir)
{
    *dir = write_source(body);
    ds_error err;
    memset(&err, 0, sizeof err);
    if (!cfg_load_dir(*dir, cfg, &err))
        fail_msg("unexpected config error: %s", err.msg);
}

static void load_fails(const char *body, int line, const char *fragment)
{
    char *dir = write_source(body);
    cfg_config cfg;
    ds_error err;
    memset(&err, 0, sizeof err);
    assert_false(cfg_load_dir(dir, &cfg, &err));
    assert_int_equal(err.code, DS_ERR_CONFIG);
    char where[64];
    snprintf(where, sizeof where, "monitoring_db.yaml:%d:", line);
    tl_assert_contains(err.msg, where);
    tl_assert_contains(err.msg, fragment);
    tl_rmtree(dir);
    free(dir);
}

static void test_issue_example(void **state)
{
    (void)state;
    cfg_config cfg;
    char *dir;
    load_ok("  dataset_query: SELECT 1 AS dataset_id\n  results_query: SELECT 1 AS dataset_id\n"
            "  incremental_column: updated_at\n"
            "  unique_key:\n    dataset: dataset_id\n    results: [dataset_id, metric_name]\n"
            "  lookback: \"5 minutes\"\n  full_refresh_interval_minutes: 1440\n",
            &cfg, &dir);
    const cfg_source *src = &cfg.sources[0];
    assert_int_equal(src->unique_key_dataset.n, 1);
    assert_string_equal(src->unique_key_dataset.cols[0], "dataset_id");
    assert_int_equal(src->unique_key_results.n, 2);
    assert_string_equal(src->unique_key_results.cols[1], "metric_name");
    assert_int_equal(src->unique_key_data.n, 0);
    assert_string_equal(src->lookback, "5 minutes");
    assert_false(src->lookback_is_number);
    assert_true(src->full_refresh_interval_minutes == 1440.0);
    assert_int_equal(src->commit_horizon, CFG_HORIZON_AUTO);

    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    cfg_print(mem, &cfg);
    fclose(mem);
    tl_assert_contains(
        out,
        "  unique_key:\n    dataset: [\"dataset_id\"]\n    results: [\"dataset_id\", \"metric_name\"]\n");
    tl_assert_contains(out, "  lookback: \"5 minutes\"\n");
    free(out);
    cfg_free(&cfg);
    tl_rmtree(dir);
    free(dir);
}

static void test_single_query_key_and_numbers(void **state)
{
    (void)state;
    cfg_config cfg;
    char *dir;
    load_ok("  query: SELECT 1\n  incremental_column: id\n  unique_key: id\n  lookback: 1000\n"
            "  commit_horizon: false\n",
            &cfg, &dir);
    const cfg_source *src = &cfg.sources[0];
    assert_int_equal(src->unique_key_data.n, 1);
    assert_string_equal(src->unique_key_data.cols[0], "id");
    assert_true(src->lookback_is_number);
    assert_int_equal(src->commit_horizon, CFG_HORIZON_OFF);
    cfg_free(&cfg);
    tl_rmtree(dir);
    free(dir);
}

static void test_errors(void **state)
{
    (void)state;
    load_fails(
        "  dataset_query: SELECT 1\n  results_query: SELECT 1\n  incremental_column: c\n  unique_key: id\n",
        6, "a split source needs one unique_key per query");
    load_fails("  query: SELECT 1\n  incremental_column: c\n  unique_key:\n    results: id\n", 5,
               "a single-query source takes unique_key");
    load_fails("  query: SELECT 1\n  incremental_column: c\n  unique_key:\n    dataset: id\n    extra: x\n",
               7, "unknown key \"extra\"");
    load_fails("  query: SELECT 1\n  incremental_column: c\n  unique_key: []\n", 5,
               "unique_key is an empty list");
    load_fails("  query: SELECT 1\n  incremental_column: c\n  lookback: soon\n", 5,
               "lookback must be an interval such as \"5 minutes\"");
    load_fails("  query: SELECT 1\n  incremental_column: c\n  lookback: 5 fortnights\n", 5,
               "lookback must be");
    load_fails("  query: SELECT 1\n  incremental_column: c\n  commit_horizon: maybe\n", 5,
               "commit_horizon must be");
    load_fails("  query: SELECT 1\n  incremental_column: c\n  full_refresh_interval_minutes: -1\n", 5,
               "full_refresh_interval_minutes must be");
    load_fails("  query: SELECT 1\n  unique_key: id\n", 4, "add incremental_column");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_example),
        cmocka_unit_test(test_single_query_key_and_numbers),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
