/* Tests of the YAML config loader: defaults, the runbook's example config,
 * ${VAR} expansion, one test per error message (file, line and hint),
 * password masking and cfg_print. Config directories are real temp dirs. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"

#define UNSET_VAR "DUCKSTORE_TEST_UNSET_VAR"

static int setup_dir(void **state)
{
    *state = tl_mkdtemp();
    return 0;
}

static int teardown_dir(void **state)
{
    tl_rmtree(*state);
    free(*state);
    tl_free_kept();
    return 0;
}

static void put(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    tl_write_file(path, text);
}

static void load_ok(const char *dir, cfg_config *cfg)
{
    ds_error err = {0};
    if (!cfg_load_dir(dir, cfg, &err))
        fail_msg("cfg_load_dir failed: %s", err.msg);
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle) == NULL)
        fail_msg("expected to find\n  %s\nin\n  %s", needle, haystack);
}

static void assert_lacks(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle) != NULL)
        fail_msg("did not expect\n  %s\nin\n  %s", needle, haystack);
}

static const char runbook_source[] =
    "monitoring_db:\n"
    "  enabled: true\n"
    "  auto_load: true\n"
    "  url: \"postgresql://axis_reader:${DB_PASSWORD}@prod-db.internal:5432/observability\"\n"
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

static const char runbook_store[] = "duckdb:\n"
                                    "  sync_mode: \"startup\"      # Initial full sync on boot\n"
                                    "  sync_workers: 4            # Parallel COPY readers\n";

static const char runbook_dataset_query[] = "SELECT\n"
                                            "  trace_id AS dataset_id,\n"
                                            "  timestamp,\n"
                                            "  prompt AS query,\n"
                                            "  completion AS actual_output,\n"
                                            "  deployment_env AS environment,\n"
                                            "  service_name AS source_name,\n"
                                            "  component_name AS source_component,\n"
                                            "  response_time_ms AS latency\n"
                                            "FROM llm_traces\n"
                                            "ORDER BY timestamp DESC\n";

static const char runbook_results_query[] = "SELECT\n"
                                            "  trace_id AS dataset_id,\n"
                                            "  metric_name,\n"
                                            "  metric_value AS metric_score,\n"
                                            "  metric_category,\n"
                                            "  explanation\n"
                                            "FROM llm_metric_results\n"
                                            "ORDER BY created_at DESC\n";

/* Defaults of a config loaded from dir (absolute): the store beside it. */
static void assert_store_defaults(const cfg_store *st, const char *dir)
{
    assert_true(st->enabled);
    assert_string_equal(st->path, tl_keepf("%s/data/store.duckdb", dir));
    assert_int_equal(st->sync_mode, CFG_SYNC_STARTUP);
    assert_int_equal(st->sync_workers, 1);
    assert_int_equal(st->sync_chunk_size, 1000000);
    assert_int_equal(st->max_sync_rows, 2000000);
    assert_int_equal(st->query_concurrency, 8);
    assert_int_equal(st->query_max_rows, 10000);
    assert_string_equal(st->memory_limit, "64MB");
    assert_int_equal(st->threads, 1);
}

/* A directory without any config file is a mistake (a wrong --config-dir),
 * not a config of defaults: the message names it and what it must hold. */
static void test_empty_dir_is_an_error(void **state)
{
    const char *dir = *state;
    put(dir, ".hidden.yaml", "duckdb:\n");
    put(dir, "notes.txt", "not a config\n");
    cfg_config cfg;
    ds_error err = {0};
    assert_false(cfg_load_dir(dir, &cfg, &err));
    assert_int_equal(err.code, DS_ERR_CONFIG);
    assert_string_equal(err.msg, tl_keepf("%s: no config file in this directory; it must hold duckdb.yaml "
                                          "(the store's settings) and one <name>_db.yaml per PostgreSQL "
                                          "source (see docs/configuration.md), or pass the right directory "
                                          "with --config-dir",
                                          dir));
    assert_null(cfg.dir);
    assert_int_equal(cfg.n_sources, 0);
    cfg_free(&cfg); /* freeing what failed to load is harmless */

    /* duckdb.yaml alone loads: its defaults, no source. */
    put(dir, "duckdb.yaml", "duckdb:\n");
    load_ok(dir, &cfg);
    assert_string_equal(cfg.dir, dir);
    assert_store_defaults(&cfg.store, dir);
    assert_int_equal(cfg.n_sources, 0);
    assert_null(cfg.sources);
    assert_null(cfg_find_source(&cfg, "monitoring"));
    cfg_free(&cfg);
    assert_null(cfg.dir);
    cfg_free(&cfg); /* freeing twice is harmless */
}

static void test_empty_duckdb_sections_give_defaults(void **state)
{
    const char *dir = *state;
    cfg_config cfg;
    put(dir, "duckdb.yaml", "duckdb:\n");
    load_ok(dir, &cfg);
    assert_store_defaults(&cfg.store, dir);
    cfg_free(&cfg);

    put(dir, "duckdb.yaml", "# nothing set yet\n");
    load_ok(dir, &cfg);
    assert_store_defaults(&cfg.store, dir);
    cfg_free(&cfg);
}

static void test_source_defaults(void **state)
{
    const char *dir = *state;
    put(dir, "events_db.yaml", "events_db:\n  url: host=db dbname=app\n  query: SELECT * FROM events\n");
    cfg_config cfg;
    load_ok(dir, &cfg);
    assert_int_equal(cfg.n_sources, 1);
    const cfg_source *s = &cfg.sources[0];
    assert_string_equal(s->name, "events");
    assert_int_equal(s->line, 1);
    assert_true(s->enabled);
    assert_true(s->auto_load);
    assert_string_equal(s->url, "host=db dbname=app");
    assert_int_equal(s->url_line, 2);
    assert_string_equal(s->query, "SELECT * FROM events");
    assert_int_equal(s->query_line, 3);
    assert_int_equal(s->n_plans, 1);
    assert_string_equal(s->plans[0].label, "query");
    assert_ptr_equal(s->plans[0].sql, s->query);
    assert_ptr_equal(s->plans[0].key, &s->unique_key_data);
    assert_false(s->plans[0].needs_dataset_id);
    assert_string_equal(s->plans[0].table, "events_data");
    assert_string_equal(s->plans[0].staging, "events_data_staging");
    assert_string_equal(s->data_name, "events_data");
    assert_null(s->dataset_query);
    assert_null(s->results_query);
    assert_null(s->partition_column);
    assert_null(s->incremental_column);
    assert_int_equal(s->dataset_query_line, 0);
    assert_int_equal(s->partition_column_line, 0);
    assert_true(s->refresh_interval_minutes == 0.0);
    assert_true(s->query_timeout_s == 600.0);
    assert_false(cfg_source_is_split(s));
    cfg_free(&cfg);
}

static void test_runbook_example(void **state)
{
    const char *dir = *state;
    setenv("DB_PASSWORD", "s3cret-pw", 1);
    put(dir, "monitoring_db.yaml", runbook_source);
    put(dir, "duckdb.yaml", runbook_store);
    cfg_config cfg;
    load_ok(dir, &cfg);
    unsetenv("DB_PASSWORD");

    assert_int_equal(cfg.store.sync_mode, CFG_SYNC_STARTUP);
    assert_int_equal(cfg.store.sync_workers, 4);
    assert_string_equal(cfg.store.memory_limit, "88MB"); /* 64 MB + 8 MB per further worker */
    assert_string_equal(cfg.store.path, tl_keepf("%s/data/store.duckdb", dir));
    assert_int_equal(cfg.store.sync_chunk_size, 1000000);

    assert_int_equal(cfg.n_sources, 1);
    const cfg_source *s = cfg_find_source(&cfg, "monitoring");
    assert_non_null(s);
    assert_ptr_equal(s, &cfg.sources[0]);
    char file[1024];
    snprintf(file, sizeof file, "%s/monitoring_db.yaml", dir);
    assert_string_equal(s->file, file);
    assert_int_equal(s->line, 1);
    assert_true(s->enabled);
    assert_true(s->auto_load);
    assert_string_equal(s->url, "postgresql://axis_reader:s3cret-pw@prod-db.internal:5432/observability");
    assert_int_equal(s->url_line, 4);
    assert_true(cfg_source_is_split(s));
    assert_string_equal(s->dataset_query, runbook_dataset_query);
    assert_int_equal(s->dataset_query_line, 6);
    assert_string_equal(s->results_query, runbook_results_query);
    assert_int_equal(s->results_query_line, 19);
    /* The two queries as a plan list, dataset first. */
    assert_int_equal(s->n_plans, 2);
    assert_string_equal(s->plans[0].label, "dataset_query");
    assert_ptr_equal(s->plans[0].sql, s->dataset_query);
    assert_int_equal(s->plans[0].line, 6);
    assert_ptr_equal(s->plans[0].key, &s->unique_key_dataset);
    assert_true(s->plans[0].needs_dataset_id);
    assert_string_equal(s->plans[0].table, "monitoring_dataset");
    assert_string_equal(s->plans[0].staging, "monitoring_dataset_staging");
    assert_string_equal(s->plans[1].label, "results_query");
    assert_ptr_equal(s->plans[1].key, &s->unique_key_results);
    assert_string_equal(s->plans[1].table, "monitoring_results");
    assert_string_equal(s->plans[1].staging, "monitoring_results_staging");
    assert_string_equal(s->data_name, "monitoring_data");
    assert_null(s->query);
    assert_int_equal(s->query_line, 0);
    assert_string_equal(s->partition_column, "id");
    assert_int_equal(s->partition_column_line, 30);
    assert_string_equal(s->incremental_column, "created_at");
    assert_int_equal(s->incremental_column_line, 31);
    assert_true(s->refresh_interval_minutes == 15.0);
    assert_true(s->query_timeout_s == 120.0);
    cfg_free(&cfg);
}

static void test_every_store_key(void **state)
{
    const char *dir = *state;
    put(dir, "duckdb.yml",
        "duckdb:\n"
        "  enabled: off\n"
        "  path: /var/lib/duckstore/cache.duckdb\n"
        "  sync_mode: manual\n"
        "  sync_workers: 64\n"
        "  sync_chunk_size: 5000\n"
        "  max_sync_rows: 0\n"
        "  query_concurrency: 256\n");
    cfg_config cfg;
    load_ok(dir, &cfg);
    assert_false(cfg.store.enabled);
    assert_string_equal(cfg.store.path, "/var/lib/duckstore/cache.duckdb");
    assert_int_equal(cfg.store.sync_mode, CFG_SYNC_MANUAL);
    assert_string_equal(cfg_sync_mode_name(cfg.store.sync_mode), "manual");
    assert_int_equal(cfg.store.sync_workers, 64);
    assert_int_equal(cfg.store.sync_chunk_size, 5000);
    assert_int_equal(cfg.store.max_sync_rows, 0);
    assert_int_equal(cfg.store.query_concurrency, 256);
    cfg_free(&cfg);

    put(dir, "duckdb.yml", "duckdb:\n  max_sync_rows: 9000000000\n  sync_workers: \"2\"\n");
    load_ok(dir, &cfg);
    assert_int_equal(cfg.store.max_sync_rows, 9000000000LL);
    assert_int_equal(cfg.store.sync_workers, 2);
    cfg_free(&cfg);
}

static void test_boolean_spellings(void **state)
{
    static const struct {
        const char *text;
        bool value;
    } cases[] = {{"true", true}, {"True", true}, {"yes", true},    {"YES", true},
                 {"on", true},   {"On", true},   {"false", false}, {"FALSE", false},
                 {"no", false},  {"off", false}, {"Off", false},   {"\"yes\"", true}};
    const char *dir = *state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text,
                 "s_db:\n  url: host=h\n  query: SELECT 1\n  auto_load: %s\n  enabled: %s\n", cases[i].text,
                 cases[i].text);
        put(dir, "s.yaml", text);
        cfg_config cfg;
        load_ok(dir, &cfg);
        if (cfg.sources[0].auto_load != cases[i].value || cfg.sources[0].enabled != cases[i].value)
            fail_msg("%s read as %d", cases[i].text, cfg.sources[0].auto_load);
        cfg_free(&cfg);
    }
}

static void test_env_expansion(void **state)
{
    const char *dir = *state;
    setenv("DS_TEST_PW", "pw", 1);
    setenv("DS_TEST_HOST", "db.example", 1);
    setenv("DS_TEST_EMPTY", "", 1);
    setenv("DS_TEST_REFRESH", "0.5", 1);
    setenv("DS_TEST_SET", "given", 1);
    unsetenv("DS_TEST_PORT");
    put(dir, "duckdb.yaml",
        "duckdb:\n"
        "  sync_workers: ${DS_TEST_WORKERS_UNSET:-3}\n"
        "  path: ${DS_TEST_HOST}.duckdb\n");
    put(dir, "app_db.yaml",
        "app_db:\n"
        "  url: postgresql://u:${DS_TEST_PW}@${DS_TEST_HOST}:${DS_TEST_PORT:-5432}/app\n"
        "  query: |\n"
        "    SELECT '$$' AS dollar, '${DS_TEST_UNSET_X:-fall back}' AS f,\n"
        "           '${DS_TEST_EMPTY:-empty default}' AS e, '${DS_TEST_SET:-unused}' AS s,\n"
        "           $1 AS lone, '$$${DS_TEST_HOST}' AS both, '${DS_TEST_EMPTY}' AS blank\n"
        "  partition_column: 'id${DS_TEST_EMPTY}'\n"
        "  refresh_interval_minutes: ${DS_TEST_REFRESH}\n");
    cfg_config cfg;
    load_ok(dir, &cfg);
    assert_int_equal(cfg.store.sync_workers, 3);
    assert_string_equal(cfg.store.path, tl_keepf("%s/db.example.duckdb", dir));
    const cfg_source *s = cfg_find_source(&cfg, "app");
    assert_non_null(s);
    assert_string_equal(s->url, "postgresql://u:pw@db.example:5432/app");
    assert_string_equal(s->query, "SELECT '$' AS dollar, 'fall back' AS f,\n"
                                  "       'empty default' AS e, 'given' AS s,\n"
                                  "       $1 AS lone, '$db.example' AS both, '' AS blank\n");
    assert_string_equal(s->partition_column, "id");
    assert_true(s->refresh_interval_minutes == 0.5);
    cfg_free(&cfg);
    unsetenv("DS_TEST_PW");
    unsetenv("DS_TEST_HOST");
    unsetenv("DS_TEST_EMPTY");
    unsetenv("DS_TEST_REFRESH");
    unsetenv("DS_TEST_SET");
}

static void test_sources_sorted_and_files_filtered(void **state)
{
    const char *dir = *state;
    put(dir, "1.yaml", "zeta_db:\n  url: host=z\n  query: SELECT 'z'\n");
    put(dir, "2.yml",
        "alpha_db:\n  url: host=a\n  dataset_query: SELECT 1 AS dataset_id\n"
        "  results_query: SELECT 1 AS dataset_id, 2 AS m\n  enabled: no\n");
    put(dir, "3.yaml", "mid_db:\n  url: host=m\n  query: SELECT 'm'\n  auto_load: false\n");
    /* Not config: other extensions, hidden files and directories. */
    put(dir, "README.md", "not: [yaml\n");
    put(dir, "notes.yaml.bak", "not: [yaml\n");
    put(dir, ".hidden.yaml", "not: [yaml\n");
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/sub.yaml", dir);
    assert_int_equal(mkdir(sub, 0755), 0);

    cfg_config cfg;
    load_ok(dir, &cfg);
    assert_int_equal(cfg.n_sources, 3);
    assert_string_equal(cfg.sources[0].name, "alpha");
    assert_string_equal(cfg.sources[1].name, "mid");
    assert_string_equal(cfg.sources[2].name, "zeta");
    assert_contains(cfg.sources[0].file, "/2.yml");
    assert_contains(cfg.sources[2].file, "/1.yaml");

    const cfg_source *a = cfg_find_source(&cfg, "alpha");
    assert_ptr_equal(a, &cfg.sources[0]);
    assert_true(cfg_source_is_split(a));
    assert_false(a->enabled);
    assert_string_equal(a->results_query, "SELECT 1 AS dataset_id, 2 AS m");
    const cfg_source *m = cfg_find_source(&cfg, "mid");
    assert_false(cfg_source_is_split(m));
    assert_false(m->auto_load);
    assert_true(m->enabled);
    assert_string_equal(cfg_find_source(&cfg, "zeta")->url, "host=z");
    assert_null(cfg_find_source(&cfg, "zet"));
    assert_null(cfg_find_source(&cfg, "zeta_db"));
    assert_null(cfg_find_source(NULL, "zeta"));
    assert_false(cfg_source_is_split(NULL));
    cfg_free(&cfg);
}

#define SPLIT_SOURCE                                                                                         \
    "monitoring_db:\n  url: postgresql://u@h/db\n  dataset_query: SELECT 1 AS dataset_id\n"                  \
    "  results_query: SELECT 1 AS dataset_id\n"

/* join: its default (left on dataset_id), each type, one column or a list,
 * the flow and block forms; cfg_print writes it back. */
static void test_join_keys(void **state)
{
    const char *dir = *state;
    static const struct {
        const char *yaml;
        cfg_join_type type;
        const char *cols; /* joined by "," */
        bool is_default;
    } cases[] = {
        {"", CFG_JOIN_LEFT, "dataset_id", true},
        {"  join:\n", CFG_JOIN_LEFT, "dataset_id", true},
        {"  join:\n    type: inner\n", CFG_JOIN_INNER, "dataset_id", false},
        {"  join: {type: left, columns: dataset_id}\n", CFG_JOIN_LEFT, "dataset_id", true},
        {"  join: {columns: [dataset_id, \"Run \\\"no\\\"\"]}\n", CFG_JOIN_LEFT, "dataset_id,Run \"no\"",
         false},
        {"  join:\n    type: inner\n    columns:\n      - trace_id\n      - run\n", CFG_JOIN_INNER,
         "trace_id,run", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        put(dir, "monitoring_db.yaml", tl_keepf(SPLIT_SOURCE "%s", cases[i].yaml));
        cfg_config cfg;
        load_ok(dir, &cfg);
        const cfg_source *s = &cfg.sources[0];
        assert_int_equal(s->join_type, cases[i].type);
        char cols[256] = "";
        for (size_t c = 0; c < s->join_columns.n; c++)
            snprintf(cols + strlen(cols), sizeof cols - strlen(cols), "%s%s", c ? "," : "",
                     s->join_columns.cols[c]);
        assert_string_equal(cols, cases[i].cols);
        assert_int_equal(cfg_join_is_default(s), cases[i].is_default);
        assert_int_equal(s->join_line, cases[i].yaml[0] ? 5 : 0);
        /* The printed config reads back with the same join. */
        char *printed = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&printed, &len);
        cfg_print(out, &cfg);
        fclose(out);
        char *dir2 = tl_mkdtemp();
        char *body = strstr(printed, "monitoring_db:");
        assert_non_null(body);
        put(dir2, "monitoring_db.yaml", body);
        cfg_config again;
        load_ok(dir2, &again);
        assert_int_equal(again.sources[0].join_type, s->join_type);
        assert_int_equal(again.sources[0].join_columns.n, s->join_columns.n);
        for (size_t c = 0; c < s->join_columns.n; c++)
            assert_string_equal(again.sources[0].join_columns.cols[c], s->join_columns.cols[c]);
        cfg_free(&again);
        tl_rmtree(dir2);
        free(dir2);
        free(printed);
        cfg_free(&cfg);
    }
}

/* Each wrong join: the exact message, at the file and line to fix. */
static void test_join_errors(void **state)
{
    const char *dir = *state;
    static const struct {
        const char *yaml;
        const char *msg; /* after "<dir>/monitoring_db.yaml:" */
    } cases[] = {
        {"  join:\n    type: outer\n",
         "6: type must be \"left\" (every result) or \"inner\" (only results whose dataset row is synced) "
         "(got \"outer\")"},
        {"  join: inner\n",
         "5: join must be a mapping such as {type: inner, columns: [dataset_id]}, not a value"},
        {"  join:\n    columns: []\n",
         "6: columns is an empty list; name the columns both queries are joined on, e.g. [dataset_id] or "
         "[dataset_id, run_id]"},
        {"  join:\n    columns: [dataset_id, \"\"]\n",
         "6: columns is empty; name the columns both queries are joined on, e.g. [dataset_id] or "
         "[dataset_id, run_id]"},
        {"  join:\n    columns: [run, dataset_id, RUN]\n",
         "5: join.columns names \"RUN\" twice; list each column once"},
        {"  join:\n    kind: inner\n", "6: unknown key \"kind\"; valid keys: type, columns"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        put(dir, "monitoring_db.yaml", tl_keepf(SPLIT_SOURCE "%s", cases[i].yaml));
        cfg_config cfg;
        ds_error err = {0};
        assert_false(cfg_load_dir(dir, &cfg, &err));
        assert_int_equal(err.code, DS_ERR_CONFIG);
        assert_string_equal(err.msg, tl_keepf("%s/monitoring_db.yaml:%s", dir, cases[i].msg));
    }
    /* join belongs to the view of a split source only. */
    put(dir, "monitoring_db.yaml",
        "monitoring_db:\n  url: postgresql://u@h/db\n  query: SELECT 1 AS x\n  join: {type: inner}\n");
    cfg_config cfg;
    ds_error err = {0};
    assert_false(cfg_load_dir(dir, &cfg, &err));
    assert_string_equal(err.msg,
                        tl_keepf("%s/monitoring_db.yaml:4: join applies to the view of a split source "
                                 "(dataset_query + results_query); a single query makes its own join "
                                 "in SQL: remove join",
                                 dir));
}

/* A relative duckdb.path is the config directory's, wherever duckstore
 * runs; an absolute one is kept; a relative config directory is made
 * absolute against the working directory. */
static void test_store_path_resolved(void **state)
{
    const char *dir = *state;
    put(dir, "duckdb.yaml", "duckdb:\n  path: ./data/./shop.duckdb\n");
    cfg_config cfg;
    load_ok(dir, &cfg);
    assert_string_equal(cfg.store.path, tl_keepf("%s/data/./shop.duckdb", dir));
    cfg_free(&cfg);
    put(dir, "duckdb.yaml", "duckdb:\n  path: /var/lib/duckstore/shop.duckdb\n");
    load_ok(dir, &cfg);
    assert_string_equal(cfg.store.path, "/var/lib/duckstore/shop.duckdb");
    cfg_free(&cfg);

    /* From the config directory's parent and from inside it. */
    put(dir, "duckdb.yaml", "duckdb:\n  path: shop.duckdb\n");
    char *cwd = getcwd(NULL, 0);
    char *parent = tl_keepf("%s", dir);
    char *base = strrchr(parent, '/');
    *base++ = '\0';
    assert_int_equal(chdir(parent), 0);
    load_ok(base, &cfg);
    assert_string_equal(cfg.dir, base);
    assert_string_equal(cfg.store.path, tl_keepf("%s/shop.duckdb", dir));
    cfg_free(&cfg);
    load_ok(tl_keepf("./%s/", base), &cfg);
    assert_string_equal(cfg.store.path, tl_keepf("%s/shop.duckdb", dir));
    cfg_free(&cfg);
    assert_int_equal(chdir(dir), 0);
    load_ok(".", &cfg);
    assert_string_equal(cfg.store.path, tl_keepf("%s/shop.duckdb", dir));
    cfg_free(&cfg);
    assert_int_equal(chdir(cwd), 0);
    free(cwd);
}

static void test_missing_dir(void **state)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/does-not-exist", (const char *)*state);
    cfg_config cfg;
    ds_error err = {0};
    assert_false(cfg_load_dir(path, &cfg, &err));
    assert_int_equal(err.code, DS_ERR_CONFIG);
    assert_contains(err.msg, path);
    assert_contains(err.msg, "cannot open the config directory");
    assert_int_equal(cfg.n_sources, 0);
    assert_null(cfg.dir);
}

static void test_mask_uri(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"postgresql://user:secret@host:5432/db", "postgresql://user:***@host:5432/db"},
        {"postgres://user:secret@host/db", "postgres://user:***@host/db"},
        {"POSTGRESQL://user:secret@host/db", "POSTGRESQL://user:***@host/db"},
        {"postgresql://user:s%40cr%2Fet@host/db", "postgresql://user:***@host/db"},
        {"postgresql://user:sec@ret@host/db", "postgresql://user:***@host/db"},
        {"postgresql://user:sec/ret?x@host/db", "postgresql://user:***@host/db"},
        {"postgresql://:secret@host/db", "postgresql://:***@host/db"},
        {"postgresql://admin@server:secret@host.example.com/db",
         "postgresql://admin@server:***@host.example.com/db"},
        {"postgresql://user:secret@h1:5432,h2:5433/db?sslmode=require",
         "postgresql://user:***@h1:5432,h2:5433/db?sslmode=require"},
        {"postgresql://host/db?user=me&password=secret&sslmode=require",
         "postgresql://host/db?user=me&password=***&sslmode=require"},
        {"postgresql://u:secret@host/db?password=secret#frag", "postgresql://u:***@host/db?password=***"},
        {"postgresql://u@host/db?a=b#c&password=secret", "postgresql://u@host/db?a=b#c&password=***"},
        {"postgresql://host/db?pass%77ord=secret", "postgresql://host/db?pass%77ord=***"},
        {"postgresql://even#x:secret@host/db", "postgresql://even#x:***@host/db"},
        {"postgresql://u:sec?ret@host/db", "postgresql://u:***@host/db"},
        {"postgres://host:/x:secret@h/db", "postgres://host:***@h/db"},
        {"postgresql://h:/p?a=1@x&password=secret", "postgresql://h:***@x&password=***"},
        {"postgresql://u:p?x=1@h/db?password=secret", "postgresql://u:***@h/db?password=***"},
        {"postgresql://host/db?password=sec?ret&a=1", "postgresql://host/db?password=***&a=1"},
        {"postgresql://user@host/db", "postgresql://user@host/db"},
        {"postgresql://host:5432/db?sslmode=require", "postgresql://host:5432/db?sslmode=require"},
        {"postgresql://[::1]:5432/db", "postgresql://[::1]:5432/db"},
        {"postgresql:///db", "postgresql:///db"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *masked = cfg_mask_url(cases[i][0]);
        assert_non_null(masked);
        if (strcmp(masked, cases[i][1]) != 0)
            fail_msg("mask(%s) = %s, expected %s", cases[i][0], masked, cases[i][1]);
        assert_lacks(masked, "secret");
        assert_lacks(masked, "sec");
        free(masked);
    }
    assert_null(cfg_mask_url(NULL));
}

static void test_mask_conninfo(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"host=db user=app password=secret dbname=x", "host=db user=app password=*** dbname=x"},
        {"host=db password = 'quoted secret' dbname=x", "host=db password = *** dbname=x"},
        {"password='it\\'s a secret' host=db", "password=*** host=db"},
        {"password=sec\\ ret host=db", "password=*** host=db"},
        {"password='sec'ret host=db", "password=*** host=db"},
        {"host=db password=my secret dbname=x", "host=db password=***  dbname=x"},
        {"PASSWORD=secret", "PASSWORD=***"},
        {"  host=db   password=secret  ", "  host=db   password=***  "},
        {"dbname='postgresql://u:secret@h/db' host=x", "dbname='postgresql://u:***@h/db' host=x"},
        {"dbname='host=h password=secret'", "dbname='host=h password=***'"},
        {"host=db dbname=x user=app", "host=db dbname=x user=app"},
        {"host=db application_name='my app'", "host=db application_name='my app'"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *masked = cfg_mask_url(cases[i][0]);
        assert_non_null(masked);
        if (strcmp(masked, cases[i][1]) != 0)
            fail_msg("mask(%s) = %s, expected %s", cases[i][0], masked, cases[i][1]);
        assert_lacks(masked, "secret");
        free(masked);
    }
}

static char *print_to_string(const cfg_config *cfg)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    assert_non_null(out);
    cfg_print(out, cfg);
    assert_int_equal(fclose(out), 0);
    return buf;
}

static void test_print_runbook(void **state)
{
    const char *dir = *state;
    setenv("DB_PASSWORD", "s3cret-pw", 1);
    put(dir, "monitoring_db.yaml", runbook_source);
    put(dir, "duckdb.yaml", runbook_store);
    put(dir, "events_db.yaml", "events_db:\n  url: host=h password='s3cret-pw'\n  query: SELECT 1\n");
    cfg_config cfg;
    load_ok(dir, &cfg);
    unsetenv("DB_PASSWORD");
    char *text = print_to_string(&cfg);
    cfg_free(&cfg);

    assert_lacks(text, "s3cret");
    /* The store's path resolved against the config directory. */
    assert_contains(text, tl_keepf("duckdb:\n"
                                   "  enabled: true\n"
                                   "  path: \"%s/data/store.duckdb\"\n",
                                   dir));
    assert_contains(text, "  sync_mode: startup\n"
                          "  sync_workers: 4\n"
                          "  sync_chunk_size: 1000000\n"
                          "  max_sync_rows: 2000000\n"
                          "  query_concurrency: 8\n"
                          "  query_max_rows: 10000\n"
                          "  memory_limit: \"88MB\"\n"
                          "  read_memory_limit: \"512MB\"\n"
                          "  threads: 1\n");
    assert_contains(text, "events_db:\n"
                          "  enabled: true\n"
                          "  auto_load: true\n"
                          "  url: \"host=h password=***\"\n"
                          "  query: |-\n"
                          "    SELECT 1\n"
                          "  refresh_interval_minutes: 0\n"
                          "  query_timeout: 600\n");
    assert_contains(text, "monitoring_db:\n"
                          "  enabled: true\n"
                          "  auto_load: true\n"
                          "  url: \"postgresql://axis_reader:***@prod-db.internal:5432/observability\"\n"
                          "  dataset_query: |\n"
                          "    SELECT\n"
                          "      trace_id AS dataset_id,\n");
    assert_contains(text, "    ORDER BY created_at DESC\n"
                          "  partition_column: \"id\"\n"
                          "  incremental_column: \"created_at\"\n"
                          "  refresh_interval_minutes: 15\n"
                          "  query_timeout: 120\n"
                          "  join:\n"
                          "    type: left\n"
                          "    columns: [\"dataset_id\"]\n");
    /* events sorts before monitoring */
    assert_true(strstr(text, "events_db:") < strstr(text, "monitoring_db:"));
    free(text);
}

/* Saves each section printed by cfg_print to a file of its own. */
static void split_printed(const char *text, const char *dir)
{
    const char *section = text;
    int n = 0;
    while (section != NULL) {
        const char *next = strstr(section, "\n\n# ");
        size_t len = next ? (size_t)(next - section) + 1 : strlen(section);
        char *part = strndup(section, len);
        char name[32];
        snprintf(name, sizeof name, n == 0 ? "duckdb.yaml" : "s%d.yaml", n);
        put(dir, name, part);
        free(part);
        section = next ? next + 2 : NULL;
        n++;
    }
}

static void assert_same_string(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

/* serve's DuckDB threads: the syncs' plus the readers'. */
static void test_serve_threads(void **state)
{
    (void)state;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cfg_serve_threads(&(cfg_store){.threads = 1, .read_threads = 3}), 4);
    assert_int_equal(cfg_serve_threads(&(cfg_store){.threads = 2, .read_threads = 0}), 2);
    assert_int_equal(cfg_serve_threads(&(cfg_store){.threads = 0, .read_threads = 3}), 0);
    assert_int_equal(cfg_serve_threads(&(cfg_store){.threads = 1, .read_threads = -1}),
                     1 + (cores > 1 ? cores - 1 : 1));
    assert_int_equal(cfg_serve_threads(&(cfg_store){.threads = 64, .read_threads = -1}),
                     64 + (cores > 64 ? cores - 64 : 1));
}

/* The readers' turns: as configured (0: no limit), else the cores, at
 * least 2. */
static void test_read_concurrency(void **state)
{
    (void)state;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cfg_read_concurrency(&(cfg_store){.read_concurrency = 3}), 3);
    assert_int_equal(cfg_read_concurrency(&(cfg_store){.read_concurrency = 0}), 0);
    assert_int_equal(cfg_read_concurrency(&(cfg_store){.read_concurrency = -1}), cores > 2 ? cores : 2);
}

static void test_print_reads_back(void **state)
{
    const char *dir = *state;
    put(dir, "duckdb.yaml",
        "duckdb:\n  enabled: no\n  path: \"odd \\\"path\\\"\\tx.duckdb\"\n  sync_mode: manual\n"
        "  sync_workers: 3\n  sync_chunk_size: 77\n  max_sync_rows: 0\n  query_concurrency: 2\n"
        "  cors_origins: [\"https://a.example\", \"http://b.example:3000\"]\n");
    put(dir, "a.yaml",
        "a_db:\n  url: \"postgresql://u@h/db\"\n"
        "  dataset_query: \"  leading spaces\\n\\tand a tab\\n\\n\\n\"\n"
        "  results_query: \"no newline at the end: $$$$ and $${X} and $$1\"\n"
        "  refresh_interval_minutes: 0.1\n  query_timeout: 2.5\n  incremental_column: \"ts\"\n");
    put(dir, "b.yaml",
        "b_db:\n  url: host=h\n  query: \"\\nstarts with a blank line\\n  # not a comment\\n\\r\\n\"\n"
        "  partition_column: id\n  enabled: false\n  auto_load: false\n");
    cfg_config before;
    load_ok(dir, &before);
    char *text = print_to_string(&before);

    char *dir2 = tl_mkdtemp();
    split_printed(text, dir2);
    cfg_config after;
    load_ok(dir2, &after);

    assert_int_equal(after.store.enabled, before.store.enabled);
    assert_string_equal(after.store.path, before.store.path);
    assert_int_equal(after.store.sync_mode, before.store.sync_mode);
    assert_int_equal(after.store.sync_workers, 3);
    assert_int_equal(after.store.sync_chunk_size, 77);
    assert_int_equal(after.store.max_sync_rows, 0);
    assert_int_equal(after.store.query_concurrency, 2);
    assert_int_equal(after.store.cors_origins.n, 2);
    assert_string_equal(after.store.cors_origins.cols[0], "https://a.example");
    assert_string_equal(after.store.cors_origins.cols[1], "http://b.example:3000");
    assert_int_equal(after.n_sources, 2);
    for (size_t i = 0; i < 2; i++) {
        const cfg_source *x = &before.sources[i], *y = &after.sources[i];
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->enabled, y->enabled);
        assert_int_equal(x->auto_load, y->auto_load);
        assert_string_equal(x->url, y->url); /* these urls hold no password */
        assert_same_string(x->dataset_query, y->dataset_query);
        assert_same_string(x->results_query, y->results_query);
        assert_same_string(x->query, y->query);
        assert_same_string(x->partition_column, y->partition_column);
        assert_same_string(x->incremental_column, y->incremental_column);
        assert_true(x->refresh_interval_minutes == y->refresh_interval_minutes);
        assert_true(x->query_timeout_s == y->query_timeout_s);
    }
    assert_string_equal(after.sources[0].results_query, "no newline at the end: $$ and ${X} and $1");
    assert_string_equal(after.sources[0].dataset_query, "  leading spaces\n\tand a tab\n\n\n");
    cfg_free(&before);
    cfg_free(&after);
    free(text);
    tl_rmtree(dir2);
    free(dir2);
}

/* A mapping the loader reads, and how to set one of its keys. */
typedef struct key_set {
    const char *file;
    const char *unknown;  /* the mapping with a key it does not take */
    const char *template; /* the mapping with key %s set to a list of lists */
    int line;             /* of that key */
    size_t n;             /* how many keys the mapping takes */
} key_set;

/* cfg_load_dir's message for dir, which must not load. */
static void load_fails(const char *dir, ds_error *err)
{
    cfg_config cfg;
    if (cfg_load_dir(dir, &cfg, err)) {
        cfg_free(&cfg);
        fail_msg("loaded without error");
    }
    assert_int_equal(err->code, DS_ERR_CONFIG);
}

/* Every key the loader lists as valid for a mapping is parsed as itself: a
 * value no kind takes (a list of lists) is reported under that key's own
 * name and line, never as another key's. */
static void test_every_listed_key_parses_as_itself(void **state)
{
    (void)state;
    static const key_set sets[] = {
        {"duckdb.yaml", "zzzzzzzzzzzz: 1\n", "%s: [[1]]\n", 1, 1},
        {"duckdb.yaml", "duckdb:\n  zzzzzzzzzzzz: 1\n", "duckdb:\n  %s: [[1]]\n", 2, 27},
        {"s.yaml", "s_db:\n  zzzzzzzzzzzz: 1\n", "s_db:\n  %s: [[1]]\n", 2, 18},
        {"s.yaml", "s_db:\n  join: {zzzzzzzzzzzz: x}\n", "s_db:\n  join:\n    %s: [[1]]\n", 3, 2},
        {"s.yaml", "s_db:\n  unique_key: {zzzzzzzzzzzz: x}\n", "s_db:\n  unique_key:\n    %s: [[1]]\n", 3, 3},
        {"s.yaml", "s_db:\n  publish: {zzzzzzzzzzzz: x}\n", "s_db:\n  publish:\n    %s: [[1]]\n", 3, 5},
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        const key_set *set = &sets[i];
        char *dir = tl_mkdtemp();
        put(dir, set->file, set->unknown);
        ds_error listed = {0};
        load_fails(dir, &listed);
        char *list = strstr(listed.msg, "; valid keys: ");
        if (list == NULL)
            fail_msg("no list of valid keys in: %s", listed.msg);
        size_t n = 0;
        char *save = NULL;
        for (char *key = strtok_r(list + 14, ", ", &save); key; key = strtok_r(NULL, ", ", &save), n++) {
            char text[256], want[1400];
            snprintf(text, sizeof text, set->template, key);
            put(dir, set->file, text);
            ds_error err = {0};
            load_fails(dir, &err);
            snprintf(want, sizeof want, "%s/%s:%d: %s must be ", dir, set->file, set->line, key);
            if (strncmp(err.msg, want, strlen(want)) != 0)
                fail_msg("expected\n  %s...\ngot\n  %s", want, err.msg);
        }
        assert_int_equal(n, set->n);
        tl_rmtree(dir);
        free(dir);
    }
}

/* One error case: files to write, where the message must point and what
 * it must say. */
typedef struct error_case {
    const char *title;
    struct {
        const char *name, *text;
    } files[3];
    const char *where; /* "file:line:", right after the directory */
    const char *says[3];
} error_case;

#define URL "  url: postgresql://u@h/db\n"
#define QUERY "  query: SELECT 1\n"
#define LONG_NAME "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl" /* 64 */

static const error_case error_cases[] = {
    {"unknown source key suggests the nearest",
     {{"monitoring_db.yaml", "monitoring_db:\n" URL QUERY "  incremental_colum: created_at\n"}},
     "monitoring_db.yaml:4:",
     {"unknown key \"incremental_colum\"; did you mean \"incremental_column\"?"}},
    {"unknown store key suggests the nearest",
     {{"duckdb.yaml", "duckdb:\n  sync_worker: 4\n"}},
     "duckdb.yaml:2:",
     {"unknown key \"sync_worker\"; did you mean \"sync_workers\"?"}},
    {"swapped letters still find the key",
     {{"duckdb.yaml", "duckdb:\n  paht: x.duckdb\n"}},
     "duckdb.yaml:2:",
     {"did you mean \"path\"?"}},
    {"unknown key far from any lists the valid keys",
     {{"duckdb.yaml", "duckdb:\n  colour: blue\n"}},
     "duckdb.yaml:2:",
     {"unknown key \"colour\"; valid keys: enabled, path, sync_mode, sync_workers"}},
    {"unknown top-level key in duckdb.yaml",
     {{"duckdb.yaml", "duckbd:\n  path: x\n"}},
     "duckdb.yaml:1:",
     {"did you mean \"duckdb\"?"}},
    {"sync_workers must be a number",
     {{"duckdb.yaml", "duckdb:\n  sync_mode: manual\n  sync_workers: four\n"}},
     "duckdb.yaml:3:",
     {"sync_workers must be an integer between 1 and 64", "\"four\""}},
    {"sync_workers above 64",
     {{"duckdb.yaml", "duckdb:\n  sync_workers: 65\n"}},
     "duckdb.yaml:2:",
     {"sync_workers must be an integer between 1 and 64"}},
    {"sync_workers is not fractional",
     {{"duckdb.yaml", "duckdb:\n  sync_workers: 2.5\n"}},
     "duckdb.yaml:2:",
     {"sync_workers must be an integer between 1 and 64"}},
    {"sync_chunk_size at least 1",
     {{"duckdb.yaml", "duckdb:\n  sync_chunk_size: 0\n"}},
     "duckdb.yaml:2:",
     {"sync_chunk_size must be an integer between 1 and", "rows per insert batch"}},
    {"memory_limit must be a size",
     {{"duckdb.yaml", "duckdb:\n  memory_limit: lots\n"}},
     "duckdb.yaml:2:",
     {"memory_limit must be a size such as 256MB"}},
    {"threads at most 256",
     {{"duckdb.yaml", "duckdb:\n  threads: 1000\n"}},
     "duckdb.yaml:2:",
     {"threads must be an integer between 0 and 256"}},
    {"read_threads not negative",
     {{"duckdb.yaml", "duckdb:\n  read_threads: -2\n"}},
     "duckdb.yaml:2:",
     {"read_threads must be an integer between 0 and 256"}},
    {"read_concurrency not negative",
     {{"duckdb.yaml", "duckdb:\n  read_concurrency: -1\n"}},
     "duckdb.yaml:2:",
     {"read_concurrency must be an integer between 0 and 4096", "0 = no limit"}},
    {"read_turn_seconds at most an hour",
     {{"duckdb.yaml", "duckdb:\n  enabled: true\n  read_turn_seconds: 7200\n"}},
     "duckdb.yaml:3:",
     {"read_turn_seconds must be a number of seconds between 0 and 3600"}},
    {"max_sync_rows not negative",
     {{"duckdb.yaml", "duckdb:\n  max_sync_rows: -1\n"}},
     "duckdb.yaml:2:",
     {"max_sync_rows must be an integer >= 0 (0 = no cap)"}},
    {"max_sync_rows beyond int64",
     {{"duckdb.yaml", "duckdb:\n  max_sync_rows: 99999999999999999999\n"}},
     "duckdb.yaml:2:",
     {"max_sync_rows must be an integer >= 0"}},
    {"query_concurrency at most 256",
     {{"duckdb.yaml", "duckdb:\n  query_concurrency: 300\n"}},
     "duckdb.yaml:2:",
     {"query_concurrency must be an integer between 1 and 256"}},
    {"sync_mode startup or manual",
     {{"duckdb.yaml", "duckdb:\n  sync_mode: sometimes\n"}},
     "duckdb.yaml:2:",
     {"sync_mode must be \"startup\" or \"manual\"", "\"sometimes\""}},
    {"store enabled is a boolean",
     {{"duckdb.yaml", "duckdb:\n  enabled: maybe\n"}},
     "duckdb.yaml:2:",
     {"enabled must be true or false", "yes/no", "\"maybe\""}},
    {"auto_load is a boolean",
     {{"s.yaml", "s_db:\n" URL QUERY "  auto_load: 1\n"}},
     "s.yaml:4:",
     {"auto_load must be true or false"}},
    {"a mapping where a string belongs",
     {{"duckdb.yaml", "duckdb:\n  path:\n    file: x.duckdb\n"}},
     "duckdb.yaml:2:",
     {"path must be a string, not a mapping"}},
    {"a list where a string belongs",
     {{"s.yaml", "s_db:\n  url: [a, b]\n" QUERY}},
     "s.yaml:2:",
     {"url must be a string, not a list"}},
    {"a list where a number belongs",
     {{"duckdb.yaml", "duckdb:\n  sync_workers:\n    - 1\n"}},
     "duckdb.yaml:2:",
     {"sync_workers must be an integer between 1 and 64, not a list"}},
    {"duckdb section is a mapping",
     {{"duckdb.yaml", "duckdb:\n  - path\n"}},
     "duckdb.yaml:1:",
     {"duckdb must be a mapping"}},
    {"no query at all",
     {{"s.yaml", "s_db:\n" URL "  incremental_column: ts\n"}},
     "s.yaml:1:",
     {"s_db has no query", "add dataset_query + results_query", "or a single query"}},
    {"dataset_query without results_query",
     {{"s.yaml", "s_db:\n" URL "  dataset_query: SELECT 1 AS dataset_id\n"}},
     "s.yaml:3:",
     {"dataset_query without results_query; add results_query"}},
    {"results_query without dataset_query",
     {{"s.yaml", "s_db:\n" URL "  results_query: SELECT 1 AS dataset_id\n"}},
     "s.yaml:3:",
     {"results_query without dataset_query; add dataset_query"}},
    {"query and split queries together",
     {{"s.yaml", "s_db:\n" URL "  dataset_query: SELECT 1\n  results_query: SELECT 2\n" QUERY}},
     "s.yaml:5:",
     {"both query and dataset_query are given", "either a single query or the pair"}},
    {"empty query string",
     {{"s.yaml", "s_db:\n" URL "  query: \"\"\n"}},
     "s.yaml:3:",
     {"query is empty", "write the SQL SELECT"}},
    {"blank dataset_query",
     {{"s.yaml", "s_db:\n" URL "  dataset_query: \"   \"\n  results_query: SELECT 1\n"}},
     "s.yaml:3:",
     {"dataset_query is empty"}},
    {"query key with no value", {{"s.yaml", "s_db:\n" URL "  query:\n"}}, "s.yaml:3:", {"query is empty"}},
    {"source name in upper case",
     {{"s.yaml", "Monitoring_db:\n" URL QUERY}},
     "s.yaml:1:",
     {"source name \"Monitoring\" (from Monitoring_db) is not valid", "lowercase letters, digits and _"}},
    {"source name starting with a digit",
     {{"s.yaml", "9lives_db:\n" URL QUERY}},
     "s.yaml:1:",
     {"source name \"9lives\"", "not starting with a digit"}},
    {"source name with a dash",
     {{"s.yaml", "my-src_db:\n" URL QUERY}},
     "s.yaml:1:",
     {"source name \"my-src\""}},
    {"source name longer than 63",
     {{"s.yaml", LONG_NAME "_db:\n" URL QUERY}},
     "s.yaml:1:",
     {"source name \"" LONG_NAME "\"", "at most 63 characters"}},
    {"empty source name",
     {{"s.yaml", "_db:\n" URL QUERY}},
     "s.yaml:1:",
     {"source name \"\" (from _db) is not valid"}},
    {"missing url",
     {{"s.yaml", "\n# comment\ns_db:\n" QUERY}},
     "s.yaml:3:",
     {"s_db has no url; add url: postgresql://"}},
    {"empty url", {{"s.yaml", "s_db:\n  url: \"\"\n" QUERY}}, "s.yaml:2:", {"url is empty"}},
    {"url of another database",
     {{"s.yaml", "s_db:\n  url: mysql://u:pw@h/db\n" QUERY}},
     "s.yaml:2:",
     {"url must be a postgresql://", "key=value conninfo"}},
    {"YAML syntax error",
     {{"s.yaml", "s_db:\n" URL "  query: 'SELECT 1\n"}},
     "s.yaml:3:", /* the last line, not the end of the stream below it */
     {"YAML syntax error: found unexpected end of stream", "check the indentation and quoting"}},
    {"YAML tab indentation",
     {{"s.yaml", "s_db:\n" URL "\tquery: SELECT 1\n"}},
     "s.yaml:3:",
     {"YAML syntax error: found a tab character"}},
    {"bad UTF-8",
     {{"duckdb.yaml", "duckdb:\n  path: \"\xc3\x28\"\n"}},
     "duckdb.yaml:2:",
     {"cannot read the YAML text", "UTF-8"}},
    {"NUL character in a value",
     {{"duckdb.yaml", "duckdb:\n  path: \"a\\0b\"\n"}},
     "duckdb.yaml:2:",
     {"path contains a NUL character"}},
    {"source file top level is a list",
     {{"s.yaml", "# sources\n- s_db\n- t_db\n"}},
     "s.yaml:2:",
     {"the top level is a list, not a mapping", "monitoring_db:"}},
    {"duckdb.yaml top level is text",
     {{"duckdb.yaml", "just some text\n"}},
     "duckdb.yaml:1:",
     {"the top level is a value, not a mapping", "start the file with \"duckdb:\""}},
    {"empty source file", {{"s.yaml", ""}}, "s.yaml:1:", {"the file is empty"}},
    {"source file with an empty mapping", {{"s.yml", "{}\n"}}, "s.yml:1:", {"no source defined"}},
    {"two sources in one file",
     {{"s.yaml", "s_db:\n" URL QUERY "t_db:\n" URL QUERY}},
     "s.yaml:4:",
     {"second top-level key \"t_db\"", "exactly one <name>_db: key", "file of its own"}},
    {"top-level key without _db",
     {{"s.yaml", "monitoring:\n" URL QUERY}},
     "s.yaml:1:",
     {"top-level key \"monitoring\" must be named <name>_db", "\"monitoring_db:\""}},
    {"duckdb section in a source file",
     {{"store.yaml", "duckdb:\n  sync_workers: 2\n"}},
     "store.yaml:1:",
     {"duckdb: belongs in duckdb.yaml"}},
    {"duckdb section after a source",
     {{"s.yaml", "s_db:\n" URL QUERY "duckdb:\n  sync_workers: 2\n"}},
     "s.yaml:4:",
     {"duckdb: belongs in duckdb.yaml"}},
    {"source in duckdb.yaml",
     {{"duckdb.yaml", "duckdb:\n  sync_workers: 2\nmonitoring_db:\n" URL QUERY}},
     "duckdb.yaml:3:",
     {"source \"monitoring_db\" does not belong in duckdb.yaml", "monitoring_db.yaml"}},
    {"source value is not a mapping",
     {{"s.yaml", "s_db: postgresql://u@h/db\n"}},
     "s.yaml:1:",
     {"s_db must be a mapping of source settings", "not a value"}},
    {"source value is empty",
     {{"s.yaml", "s_db:\n"}},
     "s.yaml:1:",
     {"s_db must be a mapping of source settings", "not empty"}},
    {"same source name in two files",
     {{"a.yaml", "monitoring_db:\n" URL QUERY}, {"b.yaml", "# again\nmonitoring_db:\n" URL QUERY}},
     "b.yaml:2:",
     {"source \"monitoring\" is defined twice", "/a.yaml:1", "rename one"}},
    {"duckdb.yaml and duckdb.yml",
     {{"duckdb.yaml", "duckdb:\n"}, {"duckdb.yml", "duckdb:\n"}},
     "duckdb.yml:1:",
     {"both duckdb.yaml and duckdb.yml exist"}},
    {"duplicate key",
     {{"s.yaml", "s_db:\n" URL "  query: SELECT 1\n  query: SELECT 2\n"}},
     "s.yaml:4:",
     {"duplicate key \"query\" (first given on line 3)"}},
    {"a mapping as a key",
     {{"duckdb.yaml", "? [a, b]\n: c\n"}},
     "duckdb.yaml:1:",
     {"keys must be plain names"}},
    {"unset variable",
     {{"s.yaml", "s_db:\n  url: postgresql://u:${" UNSET_VAR "}@h/db\n" QUERY}},
     "s.yaml:2:",
     {"url: environment variable " UNSET_VAR " is not set", "${" UNSET_VAR ":-value}"}},
    {"unset variable inside a block query",
     {{"s.yaml", "s_db:\n" URL "  query: |\n    SELECT *\n    FROM t\n    WHERE k = '${" UNSET_VAR "}'\n"}},
     "s.yaml:6:",
     {"query: environment variable " UNSET_VAR " is not set"}},
    {"unset variable in a number",
     {{"duckdb.yaml", "duckdb:\n  sync_workers: ${" UNSET_VAR "}\n"}},
     "duckdb.yaml:2:",
     {"sync_workers: environment variable " UNSET_VAR " is not set"}},
    {"unterminated variable",
     {{"s.yaml", "s_db:\n" URL "  query: SELECT '${HOME'\n"}},
     "s.yaml:3:",
     {"\"${\" without a closing \"}\"", "$$ for a literal $"}},
    {"invalid variable name",
     {{"s.yaml", "s_db:\n" URL "  query: SELECT '${1X}'\n"}},
     "s.yaml:3:",
     {"invalid variable reference", "${NAME:-default}"}},
    {"refresh_interval_minutes not negative",
     {{"s.yaml", "s_db:\n" URL QUERY "  refresh_interval_minutes: -5\n"}},
     "s.yaml:4:",
     {"refresh_interval_minutes must be a number of minutes between 0 and", "0 = no periodic sync"}},
    {"refresh_interval_minutes is a number",
     {{"s.yaml", "s_db:\n" URL QUERY "  refresh_interval_minutes: soon\n"}},
     "s.yaml:4:",
     {"refresh_interval_minutes must be a number of minutes", "\"soon\""}},
    {"query_timeout above zero",
     {{"s.yaml", "s_db:\n" URL QUERY "  query_timeout: 0\n"}},
     "s.yaml:4:",
     {"query_timeout must be a number of seconds > 0"}},
    {"query_timeout not infinite",
     {{"s.yaml", "s_db:\n" URL QUERY "  query_timeout: .inf\n"}},
     "s.yaml:4:",
     {"query_timeout must be a number of seconds > 0"}},
    {"two YAML documents",
     {{"s.yaml", "s_db:\n" URL QUERY "---\nt_db:\n" URL QUERY}},
     "s.yaml:4:",
     {"a second YAML document", "one document per file"}},
};

static void run_error_case(void **state)
{
    const error_case *c = *state;
    char *dir = tl_mkdtemp();
    for (size_t i = 0; i < 3 && c->files[i].name; i++)
        put(dir, c->files[i].name, c->files[i].text);
    char where[1200];
    snprintf(where, sizeof where, "%s/%s", dir, c->where);

    cfg_config cfg;
    ds_error err = {0};
    bool ok = cfg_load_dir(dir, &cfg, &err);
    tl_rmtree(dir);
    free(dir);
    if (ok) {
        cfg_free(&cfg);
        fail_msg("loaded without error");
    }
    assert_int_equal(err.code, DS_ERR_CONFIG);
    if (strncmp(err.msg, where, strlen(where)) != 0)
        fail_msg("expected the message to start with\n  %s\ngot\n  %s", where, err.msg);
    for (size_t i = 0; i < 3 && c->says[i]; i++)
        assert_contains(err.msg, c->says[i]);
    assert_lacks(err.msg, "pw@"); /* urls are never echoed */
    assert_null(cfg.dir);
    assert_null(cfg.sources);
    assert_int_equal(cfg.n_sources, 0);
}

int main(void)
{
    unsetenv(UNSET_VAR);
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test_setup_teardown(test_empty_dir_is_an_error, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_empty_duckdb_sections_give_defaults, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_source_defaults, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_runbook_example, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_every_store_key, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_boolean_spellings, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_env_expansion, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_sources_sorted_and_files_filtered, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_join_keys, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_join_errors, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_store_path_resolved, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_missing_dir, setup_dir, teardown_dir),
        cmocka_unit_test(test_mask_uri),
        cmocka_unit_test(test_mask_conninfo),
        cmocka_unit_test_setup_teardown(test_print_runbook, setup_dir, teardown_dir),
        cmocka_unit_test(test_serve_threads),
        cmocka_unit_test(test_read_concurrency),
        cmocka_unit_test_setup_teardown(test_print_reads_back, setup_dir, teardown_dir),
        cmocka_unit_test(test_every_listed_key_parses_as_itself),
    };
    size_t n_fixed = sizeof fixed / sizeof fixed[0];
    size_t n_errors = sizeof error_cases / sizeof error_cases[0];
    /* One named test per error case, so a failure says which message broke. */
    struct CMUnitTest *tests = calloc(n_fixed + n_errors, sizeof *tests);
    assert_non_null(tests);
    memcpy(tests, fixed, sizeof fixed);
    for (size_t i = 0; i < n_errors; i++) {
        tests[n_fixed + i].name = error_cases[i].title;
        tests[n_fixed + i].test_func = run_error_case;
        tests[n_fixed + i].initial_state = (void *)&error_cases[i];
    }
    int failed = _cmocka_run_group_tests("config", tests, n_fixed + n_errors, NULL, NULL);
    free(tests);
    return failed;
}
