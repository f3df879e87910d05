/* Values that try to escape into SQL: column names and a text watermark
 * holding quotes, semicolons, comments and backslashes travel through
 * every statement a sync builds (PostgreSQL COPY and its WHERE, partition
 * bounds, DuckDB CREATE TABLE, the split source's view, the watermark
 * bookkeeping). They must come out as data: full and incremental syncs give
 * exactly PostgreSQL's rows, the watermark is stored and compared as the
 * text it is, and a sentinel table on each side keeps its rows. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *g_conninfo;

/* Hostile column names, as SQL identifiers (quotes doubled) and as the
 * names PostgreSQL and DuckDB report. */
#define COL_QUOTE "\"a\"\"b\""
#define COL_STATEMENT "\"x; DROP TABLE keep_me; --\""
#define COL_LITERAL "\"'); DROP TABLE keep_me; --\""
#define COL_COMMENT "\"/* c */ d\""
#define COL_UNICODE "\"ünï ✓\""
#define COL_INC "\"k\"\"; DROP TABLE keep_me; --\""
#define INC_NAME "k\"; DROP TABLE keep_me; --"

/* tl_pg_checksum / tl_duck_checksum spec of the table above: each name is
 * put in double quotes there, so its own quotes are doubled here. */
#define EVIL_SPEC                                                                                            \
    "a\"\"b,x; DROP TABLE keep_me; --,'); DROP TABLE keep_me; --,/* c */ d,ünï ✓,k\"\"; DROP TABLE "     \
    "keep_me; --"

/* A text watermark whose every value is an attempt: a quote that would end
 * a literal, a statement, comments, a backslash (E'' strings) and a dollar
 * quote. The leading number keeps them in insertion order. */
#define EVIL_VALUE(n_sql)                                                                                    \
    "lpad((" n_sql ")::text, 6, '0') || $v$'); DROP TABLE keep_me; -- \\' \" $$ /* */$v$"

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("sync_injection"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

/* keep_me on both sides, 3 rows each; asserted intact after every sync. */
static void create_sentinels(tl_env *e)
{
    tl_pg_exec(e->pg, "CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (1), (2), (3)");
    tl_duck_exec(e->con, "CREATE TABLE keep_me (id INTEGER); INSERT INTO keep_me VALUES (1), (2), (3)");
}

static void assert_sentinels(tl_env *e, int pg_tables)
{
    assert_int_equal(tl_pg_int(e->pg, "SELECT count(*) FROM keep_me"), 3);
    assert_int_equal(tl_duck_int(e->con, "SELECT count(*) FROM keep_me"), 3);
    assert_int_equal(tl_pg_int(e->pg, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"),
                     pg_tables);
}

static void add_evil_rows(tl_env *e, int from, int to)
{
    tl_pg_exec(
        e->pg,
        "INSERT INTO evil SELECT g, 'x' || g || ';--', $$'$$ || g, '/*' || g || '*/', 'ü' || g, " EVIL_VALUE(
            "g") " FROM generate_series(%d, %d) AS g",
        from, to);
}

static void assert_evil_synced(tl_env *e)
{
    char *want = tl_pg_checksum(e->pg, "evil", EVIL_SPEC);
    char *got = tl_duck_checksum(e->con, "evil_data", EVIL_SPEC);
    assert_string_equal(got, want);
    free(want);
    free(got);
}

static const char *watermark_of(const json_t *status, const char *table)
{
    const char *wm = tl_json_str(json_object_get(status, "watermarks"), table);
    if (wm == NULL)
        fail_msg("no watermark for %s", table);
    return wm;
}

/* A text incremental column named like a statement, with values that are
 * statements: full, then incremental, then full again, rows exact. */
static void test_hostile_names_and_text_watermark(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "names_watermark", "");
    create_sentinels(&e);
    tl_pg_exec(e.pg, "CREATE TABLE evil (" COL_QUOTE " int, " COL_STATEMENT " text, " COL_LITERAL
                     " text, " COL_COMMENT " text, " COL_UNICODE " text, " COL_INC " text)");
    add_evil_rows(&e, 1, 100);
    tl_env_source(&e, "evil", "  query: SELECT * FROM evil\n  incremental_column: '%s'\n", INC_NAME);

    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "evil", false, &r);
    assert_false(r.incremental);
    assert_int_equal(r.rows, 100);
    assert_int_equal(r.nwarnings, 0);
    assert_evil_synced(&e);
    assert_sentinels(&e, 2);
    char *cols = tl_duck_scalar(e.con, "SELECT string_agg(column_name, '|' ORDER BY ordinal_position) FROM "
                                       "information_schema.columns WHERE table_name = 'evil_data'");
    assert_string_equal(
        cols, "a\"b|x; DROP TABLE keep_me; --|'); DROP TABLE keep_me; --|/* c */ d|ünï ✓|" INC_NAME);
    free(cols);

    /* The watermark is the largest value, byte for byte, in the status and
     * in the bookkeeping table. */
    char *max = tl_pg_scalar(e.pg, "SELECT max(" COL_INC ") FROM evil");
    assert_string_equal(max, "000100'); DROP TABLE keep_me; -- \\' \" $$ /* */");
    json_t *st = tl_sync_status(e.st, &e.cfg, "evil");
    assert_string_equal(watermark_of(st, "evil_data"), max);
    json_decref(st);
    char *stored =
        tl_duck_scalar(e.con, "SELECT watermark FROM _duckstore.tables WHERE table_name = 'evil_data'");
    assert_string_equal(stored, max);
    free(stored);
    free(max);

    /* Incremental: only the rows past that watermark, compared as text. */
    add_evil_rows(&e, 101, 150);
    tl_sync_ok(e.st, &e.cfg, "evil", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.tables[0].rows_loaded, 51); /* and the row at the watermark, read again */
    assert_int_equal(r.rows, 150);
    assert_evil_synced(&e);
    assert_sentinels(&e, 2);
    st = tl_sync_status(e.st, &e.cfg, "evil");
    assert_string_equal(watermark_of(st, "evil_data"), "000150'); DROP TABLE keep_me; -- \\' \" $$ /* */");
    json_decref(st);

    /* Nothing new: the watermark compares equal to the newest row, which
     * alone is read again and not stored twice. */
    tl_sync_ok(e.st, &e.cfg, "evil", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.tables[0].rows_loaded, 1);
    assert_int_equal(r.rows_added, 0);
    assert_int_equal(r.rows, 150);

    tl_sync_ok(e.st, &e.cfg, "evil", true, &r);
    assert_false(r.incremental);
    assert_int_equal(r.rows, 150);
    assert_evil_synced(&e);
    assert_sentinels(&e, 2);
    tl_env_close(&e);
}

/* A split source whose queries share hostile column names: the view's
 * dataset_ aliases are built from them and must quote every one. */
static void test_hostile_names_in_split_view(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "split_view", "");
    create_sentinels(&e);
    tl_pg_exec(e.pg, "CREATE TABLE ds (id int PRIMARY KEY, " COL_QUOTE " text, " COL_STATEMENT
                     " text, created_at timestamptz NOT NULL DEFAULT clock_timestamp())");
    tl_pg_exec(e.pg, "CREATE TABLE rs (ds_id int, " COL_QUOTE " text, \"dataset_a\"\"b\" text, " COL_COMMENT
                     " text, created_at timestamptz NOT NULL DEFAULT clock_timestamp())");
    tl_pg_exec(e.pg, "INSERT INTO ds (id, " COL_QUOTE ", " COL_STATEMENT
                     ") SELECT g, 'd\"' || g, $$';--$$ || g FROM generate_series(1, 30) AS g");
    tl_pg_exec(e.pg,
               "INSERT INTO rs (ds_id, " COL_QUOTE ", \"dataset_a\"\"b\", " COL_COMMENT
               ") SELECT g %% 30 + 1, 'r\"' || g, 'rd' || g, '*/' || g FROM generate_series(1, 60) AS g");
    tl_env_source(&e, "mon",
                  "  dataset_query: |\n    SELECT id AS dataset_id, " COL_QUOTE ", " COL_STATEMENT
                  ", created_at FROM ds\n"
                  "  results_query: |\n    SELECT ds_id AS dataset_id, " COL_QUOTE
                  ", \"dataset_a\"\"b\", " COL_COMMENT ", created_at FROM rs\n"
                  "  incremental_column: created_at\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "mon", false, &r);
    assert_int_equal(r.rows, 60);
    char *cols = tl_duck_scalar(e.con, "SELECT string_agg(column_name, '|' ORDER BY ordinal_position) FROM "
                                       "information_schema.columns WHERE table_name = 'mon_data'");
    assert_string_equal(cols,
                        "dataset_id|a\"b|dataset_a\"b|/* c */ d|created_at|dataset_dataset_a\"b|x; DROP "
                        "TABLE keep_me; --|dataset_created_at");
    free(cols);

    static const char view_spec[] =
        "dataset_id,a\"\"b,dataset_a\"\"b,/* c */ d,created_at:ts,dataset_dataset_a\"\"b,"
        "x; DROP TABLE keep_me; --,dataset_created_at:ts";
    static const char pg_view[] =
        "(SELECT r.ds_id AS dataset_id, r." COL_QUOTE ", r.\"dataset_a\"\"b\", r." COL_COMMENT
        ", r.created_at, d." COL_QUOTE " AS \"dataset_dataset_a\"\"b\", d." COL_STATEMENT
        ", d.created_at AS dataset_created_at FROM rs AS r LEFT JOIN ds AS d ON r.ds_id = d.id) AS v";
    char *want = tl_pg_checksum(e.pg, pg_view, view_spec);
    char *got = tl_duck_checksum(e.con, "mon_data", view_spec);
    assert_string_equal(got, want);
    free(want);
    free(got);

    tl_pg_exec(e.pg, "INSERT INTO ds (id, " COL_QUOTE ", " COL_STATEMENT ") VALUES (31, $$\"; --$$, $$'$$)");
    tl_pg_exec(e.pg, "INSERT INTO rs (ds_id, " COL_QUOTE ", \"dataset_a\"\"b\", " COL_COMMENT
                     ") VALUES (31, $$a\"b$$, $$'; DROP TABLE keep_me; --$$, '*/')");
    int64_t again_d = tl_duck_at_max(e.con, "mon_dataset", "created_at");
    int64_t again_r = tl_duck_at_max(e.con, "mon_results", "created_at");
    tl_sync_ok(e.st, &e.cfg, "mon", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows, 61);
    /* The new row and those at each watermark, read again. */
    assert_int_equal(r.tables[0].rows_loaded, 1 + again_d);
    assert_int_equal(r.tables[1].rows_loaded, 1 + again_r);
    want = tl_pg_checksum(e.pg, pg_view, view_spec);
    got = tl_duck_checksum(e.con, "mon_data", view_spec);
    assert_string_equal(got, want);
    free(want);
    free(got);
    assert_sentinels(&e, 3);
    tl_env_close(&e);
}

/* The split view's columns each keep a name of their own when the two
 * queries' names differ only by case ("Score" and score: one name to
 * DuckDB) or an alias would repeat a dataset column's name. */
static void test_split_view_names_equal_but_for_case(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "split_case", "");
    tl_pg_exec(e.pg, "CREATE TABLE ds (id int PRIMARY KEY, \"Score\" int, \"dataset_SCORE\" int)");
    tl_pg_exec(e.pg, "CREATE TABLE rs (ds_id int, score int)");
    tl_pg_exec(e.pg, "INSERT INTO ds SELECT g, 10 * g, 100 * g FROM generate_series(1, 4) AS g");
    tl_pg_exec(e.pg, "INSERT INTO rs SELECT g, g FROM generate_series(1, 4) AS g");
    tl_env_source(&e, "cased",
                  "  dataset_query: SELECT id AS dataset_id, \"Score\", \"dataset_SCORE\" FROM ds\n"
                  "  results_query: SELECT ds_id AS dataset_id, score FROM rs\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "cased", false, &r);
    assert_int_equal(r.rows, 4);
    char *cols = tl_duck_scalar(e.con, "SELECT string_agg(column_name, '|' ORDER BY ordinal_position) FROM "
                                       "information_schema.columns WHERE table_name = 'cased_data'");
    assert_string_equal(cols, "dataset_id|score|dataset_dataset_Score|dataset_SCORE");
    free(cols);
    assert_int_equal(tl_duck_int(e.con, "SELECT sum(score) FROM cased_data"), 10);
    assert_int_equal(tl_duck_int(e.con, "SELECT sum(dataset_dataset_Score) FROM cased_data"), 100);
    assert_int_equal(tl_duck_int(e.con, "SELECT sum(\"dataset_SCORE\") FROM cased_data"), 1000);
    tl_env_close(&e);
}

/* Parallel reads split the table on a partition column named like a
 * statement; the bounds are literals built from its values. */
static void test_hostile_partition_column(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "partition", "  sync_workers: 4\n");
    create_sentinels(&e);
    tl_pg_exec(e.pg, "CREATE TABLE parts (\"p\"\"; DROP TABLE keep_me; --\" bigint, v text)");
    tl_pg_exec(e.pg, "INSERT INTO parts SELECT g, $$'$$ || g FROM generate_series(1, 5000) AS g");
    tl_pg_exec(e.pg, "INSERT INTO parts VALUES (NULL, 'null key')");
    tl_env_source(&e, "parts",
                  "  query: SELECT * FROM parts\n  partition_column: 'p\"; DROP TABLE keep_me; --'\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "parts", false, &r);
    assert_int_equal(r.rows, 5001);
    assert_int_equal(r.nwarnings, 0);
    static const char spec[] = "p\"\"; DROP TABLE keep_me; --,v";
    char *want = tl_pg_checksum(e.pg, "parts", spec);
    char *got = tl_duck_checksum(e.con, "parts_data", spec);
    assert_string_equal(got, want);
    free(want);
    free(got);
    assert_sentinels(&e, 2);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_names_and_text_watermark),
        cmocka_unit_test(test_hostile_names_in_split_view),
        cmocka_unit_test(test_hostile_partition_column),
        cmocka_unit_test(test_split_view_names_equal_but_for_case),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
