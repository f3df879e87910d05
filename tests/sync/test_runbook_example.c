/* The runbook's section 1 config, copied as written (only the url points at
 * the harness server), syncs: twice, in full both times since its queries
 * select neither created_at nor id, with warnings saying so. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* custom/config/monitoring_db.yaml from the runbook; %s is host:port/dbname. */
static const char runbook_yaml[] =
    "monitoring_db:\n"
    "  enabled: true\n"
    "  auto_load: true\n"
    "  url: \"postgresql://axis_reader:${DB_PASSWORD}@%s\"\n"
    "\n"
    "  dataset_query: |\n"
    "    SELECT\n"
    "      trace_id AS dataset_id,\n"
    "      timestamp,\n"
    "      prompt AS query,\n"
    "      completion AS actual_output,\n"
    "      deployment_env AS environment,\n"
    "      service_name AS source_name,\n"
    "      component_name AS source_component,\n"
    "      response_time_ms AS latency\n"
    "    FROM llm_traces\n"
    "    ORDER BY timestamp DESC\n"
    "\n"
    "  results_query: |\n"
    "    SELECT\n"
    "      trace_id AS dataset_id,\n"
    "      metric_name,\n"
    "      metric_value AS metric_score,\n"
    "      metric_category,\n"
    "      explanation\n"
    "    FROM llm_metric_results\n"
    "    ORDER BY created_at DESC\n"
    "\n"
    "  # Performance tuning\n"
    "  partition_column: \"id\"            # Enables parallel COPY reads\n"
    "  incremental_column: \"created_at\"  # Enables watermark-based incremental sync\n"
    "  refresh_interval_minutes: 15      # Auto-sync every 15 minutes\n"
    "  query_timeout: 120\n";

/* The runbook's recommended duckdb.yaml lines (section 4). */
static const char runbook_store_yaml[] = "  sync_mode: \"startup\"      # Initial full sync on boot\n"
                                         "  sync_workers: 4            # Parallel COPY readers\n";

/* The view as PostgreSQL computes it from the same queries. */
#define RB_VIEW_RELATION                                                                                     \
    "(SELECT r.*, d.timestamp, d.query, d.actual_output, d.environment, d.source_name, d.source_component, " \
    "d.latency FROM (SELECT trace_id AS dataset_id, metric_name, metric_value AS metric_score, "             \
    "metric_category, "                                                                                      \
    "explanation FROM llm_metric_results) AS r LEFT JOIN (SELECT trace_id AS dataset_id, timestamp, prompt " \
    "AS "                                                                                                    \
    "query, completion AS actual_output, deployment_env AS environment, service_name AS source_name, "       \
    "component_name AS source_component, response_time_ms AS latency FROM llm_traces) AS d "                 \
    "ON r.dataset_id = d.dataset_id) AS v"
#define RB_VIEW_SPEC                                                                                         \
    "dataset_id,metric_name,metric_score,metric_category,explanation,timestamp:ts,query,actual_output,"      \
    "environment,source_name,source_component,latency"

static void test_runbook_config_syncs_twice(void **state)
{
    (void)state;
    const char *conninfo = tl_pg_fresh_db("sync_runbook");
    tl_env e;
    tl_env_open(&e, conninfo, "unused", runbook_store_yaml);
    /* The runbook's read-only role, on tables in the default schema. */
    char password[64];
    snprintf(password, sizeof password, "rb-%d-reader", (int)getpid());
    tl_pg_exec(e.pg, "SET search_path = public");
    tl_pg_exec(
        e.pg, "DO $$ BEGIN CREATE ROLE axis_reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
    tl_pg_exec(e.pg, "ALTER ROLE axis_reader PASSWORD '%s'", password);
    tl_llm_create(e.pg);
    tl_pg_exec(e.pg, "GRANT SELECT ON llm_traces, llm_metric_results TO axis_reader");
    tl_llm_add(e.pg, 1, 400, 3);
    setenv("DB_PASSWORD", password, 1);

    char where[512], path[700];
    snprintf(where, sizeof where, "%s:%s/%s", PQhost(e.pg), PQport(e.pg), PQdb(e.pg));
    snprintf(path, sizeof path, "%s/monitoring_db.yaml", e.dir);
    tl_write_filef(path, runbook_yaml, where);
    tl_env_store(&e, runbook_store_yaml); /* loads the config directory */
    const cfg_source *src = tl_source(&e.cfg, "monitoring");
    assert_true(src->enabled && src->auto_load);
    assert_int_equal(e.cfg.store.sync_workers, 4);
    assert_int_equal(e.cfg.store.sync_mode, CFG_SYNC_STARTUP);

    for (int round = 0; round < 2; round++) {
        int64_t want_rows = 1200 + round * 60;
        sync_report r;
        tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
        assert_false(r.incremental);
        assert_int_equal(r.rows, want_rows);
        assert_int_equal(r.rows_added, round == 0 ? 1200 : 60);
        assert_int_equal(r.tables[0].rows_total, want_rows / 3);
        assert_false(r.truncated);
        /* Neither query selects id or created_at: one warning per query and key. */
        assert_int_equal(r.nwarnings, 4);
        tl_assert_contains(r.warnings[0],
                           "incremental_column \"created_at\" is not a column of dataset_query "
                           "(columns: dataset_id, timestamp, query, actual_output, environment, "
                           "source_name, source_component, latency)");
        tl_assert_contains(r.warnings[1], "partition_column \"id\" is not a column of dataset_query");
        tl_assert_contains(r.warnings[2],
                           "incremental_column \"created_at\" is not a column of results_query "
                           "(columns: dataset_id, metric_name, metric_score, metric_category, "
                           "explanation)");
        tl_assert_contains(r.warnings[3], "partition_column \"id\" is not a column of results_query");

        char *cols =
            tl_duck_scalar(e.con, "SELECT string_agg(column_name, ',') FROM (DESCRIBE monitoring_data)");
        assert_string_equal(cols,
                            "dataset_id,metric_name,metric_score,metric_category,explanation,timestamp,query,"
                            "actual_output,environment,source_name,source_component,latency");
        free(cols);
        char *want = tl_pg_checksum(e.pg, RB_VIEW_RELATION, RB_VIEW_SPEC);
        char *got = tl_duck_checksum(e.con, "monitoring_data", RB_VIEW_SPEC);
        assert_string_equal(got, want);
        free(want);
        free(got);

        json_t *s = tl_sync_status(e.st, &e.cfg, "monitoring");
        assert_string_equal(tl_json_str(s, "state"), "ready");
        assert_string_equal(tl_json_str(s, "sync_type"), "full");
        assert_int_equal(json_integer_value(json_object_get(s, "rows")), want_rows);
        assert_int_equal(json_integer_value(json_object_get(s, "refresh_interval_minutes")), 15);
        assert_string_equal(tl_json_str(s, "incremental_column"), "created_at");
        json_t *wms = json_object_get(s, "watermarks");
        assert_true(json_is_null(json_object_get(wms, "monitoring_dataset")));
        assert_true(json_is_null(json_object_get(wms, "monitoring_results")));
        assert_int_equal(json_array_size(json_object_get(s, "warnings")), 4);
        char *text = json_dumps(s, JSON_COMPACT);
        assert_null(strstr(text, password));
        free(text);
        json_decref(s);

        tl_llm_add(e.pg, 401 + round * 20, 420 + round * 20, 3);
    }
    unsetenv("DB_PASSWORD");
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runbook_config_syncs_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
