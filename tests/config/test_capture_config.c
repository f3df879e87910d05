/* capture: logical at load: the one-table query shape (qt_parse_single_table)
 * on many shapes, quotes, comments and hostile text; the capture and
 * publication keys, the watermark keys they refuse, the slot and
 * publication names, and cfg_print. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "source/querytext.h"

/* ---- the query shape ---------------------------------------------------- */

typedef struct shape_ok {
    const char *query;
    const char *select_list, *schema, *table, *alias, *where;
} shape_ok;

static void assert_str_or_null(const char *got, const char *want, const char *what, const char *query)
{
    if (want == NULL && got == NULL)
        return;
    if (want == NULL || got == NULL || strcmp(got, want) != 0)
        fail_msg("%s of [%s]: expected [%s], got [%s]", what, query, want ? want : "NULL",
                 got ? got : "NULL");
}

static void test_shapes_accepted(void **state)
{
    (void)state;
    static const shape_ok cases[] = {
        {"SELECT id, name FROM items", "id, name", NULL, "items", NULL, NULL},
        {"select * from items", "*", NULL, "items", NULL, NULL},
        {"SELECT id FROM Public.Items", "id", "public", "items", NULL, NULL},
        {"SELECT id FROM \"Sales\".\"Order \"\"X\"\"\"", "id", "Sales", "Order \"X\"", NULL, NULL},
        {"SELECT id FROM \"Sales\" . items", "id", "Sales", "items", NULL, NULL},
        {"SELECT i.id FROM items i WHERE i.kind = 'a'", "i.id", NULL, "items", "i", "i.kind = 'a'"},
        {"SELECT i.id FROM items AS \"I\" WHERE true", "i.id", NULL, "items", "I", "true"},
        {"SELECT id, price * 2 AS double_price, lower(name) AS name FROM items WHERE price > 0;",
         "id, price * 2 AS double_price, lower(name) AS name", NULL, "items", NULL, "price > 0"},
        {"SELECT id FROM items;;  -- trailing\n", "id", NULL, "items", NULL, NULL},
        {"SELECT id FROM items WHERE kind = 'x' -- a comment\n", "id", NULL, "items", NULL, "kind = 'x'"},
        {"  SELECT /* FROM other JOIN */ id\n  FROM items\n  WHERE /* LIMIT */ a = 1 /* tail */ ;\n", "id",
         NULL, "items", NULL, "a = 1"},
        {"SELECT 'a FROM b' AS s, \"from\" FROM items", "'a FROM b' AS s, \"from\"", NULL, "items", NULL,
         NULL},
        {"SELECT $$ JOIN x; GROUP BY $$ AS t, $q$ ' $q$ AS u FROM items",
         "$$ JOIN x; GROUP BY $$ AS t, $q$ ' $q$ AS u", NULL, "items", NULL, NULL},
        {"SELECT E'it\\'s FROM' AS s FROM items", "E'it\\'s FROM' AS s", NULL, "items", NULL, NULL},
        {"SELECT extract(year FROM ts) AS y, substring(s FROM 1 FOR 2) AS p FROM items",
         "extract(year FROM ts) AS y, substring(s FROM 1 FOR 2) AS p", NULL, "items", NULL, NULL},
        {"SELECT a IS DISTINCT FROM b AS changed FROM items", "a IS DISTINCT FROM b AS changed", NULL,
         "items", NULL, NULL},
        {"SELECT 1 AS from FROM items", "1 AS from", NULL, "items", NULL, NULL},
        {"SELECT id FROM items WHERE t.order = 1 AND x IN (1, 2)", "id", NULL, "items", NULL,
         "t.order = 1 AND x IN (1, 2)"},
        {"SELECT ALL id FROM items", "ALL id", NULL, "items", NULL, NULL},
        {"SELECT id FROM tëst", "id", NULL, "tëst", NULL, NULL},
        {"SELECT id FROM items WHERE count > 3", "id", NULL, "items", NULL, "count > 3"},
        {"SELECT FROM items", "", NULL, "items", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const shape_ok *c = &cases[i];
        qt_single_table t;
        char why[256];
        if (!qt_parse_single_table(c->query, &t, why, sizeof why))
            fail_msg("refused [%s]: %s", c->query, why);
        assert_str_or_null(t.select_list, c->select_list, "select_list", c->query);
        assert_str_or_null(t.schema, c->schema, "schema", c->query);
        assert_str_or_null(t.table, c->table, "table", c->query);
        assert_str_or_null(t.alias, c->alias, "alias", c->query);
        assert_str_or_null(t.where, c->where, "where", c->query);
        qt_single_table_free(&t);
    }
}

typedef struct shape_refused {
    const char *query;
    const char *why;
} shape_refused;

static void test_shapes_refused(void **state)
{
    (void)state;
    static const shape_refused cases[] = {
        {"SELECT a.id FROM a JOIN b ON a.id = b.id", "a join (JOIN) is not allowed"},
        {"SELECT a.id FROM a LEFT JOIN b USING (id)", "a join (LEFT) is not allowed"},
        {"SELECT a.id FROM a x NATURAL JOIN b", "a join (NATURAL) is not allowed"},
        {"SELECT id FROM a, b", "several tables (FROM a, b) are not allowed"},
        {"SELECT kind, count(*) FROM items GROUP BY kind",
         "an aggregate (count) in the select list is not allowed"},
        {"SELECT kind FROM items GROUP BY kind", "GROUP BY is not allowed"},
        {"SELECT kind FROM items WHERE a = 1 GROUP BY kind", "GROUP BY is not allowed"},
        {"SELECT DISTINCT kind FROM items", "DISTINCT is not allowed"},
        {"select distinct on (kind) kind FROM items", "DISTINCT is not allowed"},
        {"SELECT id FROM (SELECT id FROM items) s", "a subquery in FROM is not allowed"},
        {"SELECT id FROM LATERAL (SELECT 1) s", "a subquery in FROM (LATERAL) is not allowed"},
        {"SELECT id FROM a UNION SELECT id FROM b", "UNION is not allowed"},
        {"SELECT id FROM a WHERE x = 1 UNION ALL SELECT id FROM b", "UNION is not allowed"},
        {"SELECT id FROM a EXCEPT SELECT id FROM b", "EXCEPT is not allowed"},
        {"SELECT id FROM items LIMIT 10", "LIMIT is not allowed"},
        {"SELECT id FROM items WHERE a > 1 OFFSET 5", "OFFSET is not allowed"},
        {"SELECT id FROM items FETCH FIRST 3 ROWS ONLY", "FETCH is not allowed"},
        {"SELECT id FROM items ORDER BY id", "ORDER BY is not allowed"},
        {"SELECT id FROM items WHERE a = 1 ORDER BY id DESC", "ORDER BY is not allowed"},
        {"SELECT * FROM generate_series(1, 10) g",
         "a set-returning FROM (generate_series(...)) is not allowed"},
        {"SELECT * FROM pg_catalog.generate_series(1, 10)",
         "a set-returning FROM (pg_catalog.generate_series(...)) is not allowed"},
        {"SELECT * FROM ROWS FROM (f())", "a set-returning FROM (ROWS FROM) is not allowed"},
        {"WITH x AS (SELECT 1) SELECT * FROM x", "a WITH query is not allowed"},
        {"VALUES (1)", "only a SELECT is allowed (the query starts with VALUES)"},
        {"SELECT 1", "the query reads no table (no FROM)"},
        {"SELECT id FROM", "FROM names no table"},
        {"SELECT id FROM items WHERE", "WHERE has no condition"},
        {"SELECT id FROM items WHERE id IN (SELECT id FROM other)", "a subquery in WHERE is not allowed"},
        {"SELECT id, (SELECT max(x) FROM other) AS m FROM items",
         "a subquery in the select list is not allowed"},
        {"SELECT id, row_number() OVER () FROM items",
         "a window function (OVER) in the select list is not allowed"},
        {"SELECT id FROM items FOR UPDATE", "FOR UPDATE/SHARE is not allowed"},
        {"SELECT id INTO copy FROM items", "INTO is not allowed"},
        {"SELECT id FROM items; DELETE FROM items", "several statements are not allowed"},
        {"SELECT id FROM a.b.c", "a three-part table name is not allowed; write schema.table"},
        {"SELECT id FROM ONLY items", "FROM ONLY is not allowed; name the table alone"},
        {"SELECT id FROM items TABLESAMPLE SYSTEM (10)", "TABLESAMPLE is not allowed"},
        {"SELECT id FROM items AS x (a, b)", "a column list after the alias is not allowed"},
        {"SELECT id FROM U&\"d\\0061t\"",
         "a U&\"...\" table name is not allowed; write it as a plain quoted name"},
        {"", "the query is empty"},
        {"-- only a comment", "the query is empty"},
        {"SELECT id FROM items HAVING true", "HAVING is not allowed"},
        /* Hostile text: unclosed quotes and comments run to the end. */
        {"SELECT 'unclosed FROM items", "a quote, dollar quote or comment is not closed"},
        {"SELECT id FROM \"unclosed", "a quote, dollar quote or comment is not closed"},
        {"SELECT id FROM items /* unclosed JOIN b", "a quote, dollar quote or comment is not closed"},
        {"SELECT id FROM items WHERE a = $x$ unclosed", "a quote, dollar quote or comment is not closed"},
        {"SELECT ((((( FROM items", "the query reads no table (no FROM)"},
        {"SELECT id FROM items WHERE a = $1", NULL},
        {")))) SELECT", "only a SELECT is allowed (the query starts with ))"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const shape_refused *c = &cases[i];
        qt_single_table t;
        char why[256];
        bool ok = qt_parse_single_table(c->query, &t, why, sizeof why);
        if (c->why == NULL) { /* accepted: PostgreSQL has the last word on its text */
            if (!ok)
                fail_msg("refused [%s]: %s", c->query, why);
            qt_single_table_free(&t);
            continue;
        }
        if (ok)
            fail_msg("accepted [%s] (table %s), expected: %s", c->query, t.table, c->why);
        if (strcmp(why, c->why) != 0)
            fail_msg("[%s]: expected\n  %s\ngot\n  %s", c->query, c->why, why);
        assert_null(t.select_list);
        assert_null(t.table);
    }
}

/* Every prefix of a few queries, and bytes of every value: never a crash,
 * always an answer with a reason when refused. */
static void test_hostile_text(void **state)
{
    (void)state;
    static const char *const queries[] = {
        "SELECT \"a\"\"b\", E'\\\\'' , $t$x$t$ FROM \"s\".\"t\" AS \"u\" WHERE /* /* nested */ */ a = 'b' -- "
        "c",
        "SELECT x FROM t WHERE y = U&'\\0041' AND z = B'101' AND w = X'ff'",
    };
    for (size_t q = 0; q < sizeof queries / sizeof queries[0]; q++) {
        size_t len = strlen(queries[q]);
        for (size_t n = 0; n <= len; n++) {
            char *prefix = strndup(queries[q], n);
            qt_single_table t;
            char why[256] = "unset";
            if (qt_parse_single_table(prefix, &t, why, sizeof why))
                qt_single_table_free(&t);
            else
                assert_true(why[0] != '\0' && strcmp(why, "unset") != 0);
            free(prefix);
        }
    }
    char bytes[64];
    for (int b = 1; b < 256; b++) {
        snprintf(bytes, sizeof bytes, "SELECT %c FROM t%c WHERE %c", b, b, b);
        qt_single_table t;
        char why[256];
        if (qt_parse_single_table(bytes, &t, why, sizeof why))
            qt_single_table_free(&t);
    }
    /* A reason never overruns a small buffer. */
    char tiny[8];
    qt_single_table t;
    assert_false(qt_parse_single_table("SELECT id FROM a JOIN b ON true", &t, tiny, sizeof tiny));
    assert_string_equal(tiny, "a join ");
}

/* ---- the config keys ------------------------------------------------------ */

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
    tl_write_file(tl_keepf("%s/%s", dir, name), text);
}

static char *print_to_string(const cfg_config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cfg_print(f, cfg);
    fclose(f);
    return tl_keep(text);
}

#define URL "  url: postgresql://u@h/db\n"

static void test_logical_source(void **state)
{
    const char *dir = *state;
    put(dir, "shop_db.yaml",
        "shop_db:\n" URL "  capture: logical\n"
        "  query: SELECT o.id, o.total * 100 AS cents FROM Sales.\"Orders\" o WHERE o.total > 0\n"
        "  partition_column: id\n");
    put(dir, "mirror_db.yaml",
        "mirror_db:\n" URL "  capture: logical\n  publication: Existing_Pub\n"
        "  dataset_query: SELECT dataset_id, a FROM d\n  results_query: SELECT dataset_id, b FROM r\n");
    put(dir, "plain_db.yaml", "plain_db:\n" URL "  query: SELECT a FROM t ORDER BY a LIMIT 3\n");
    cfg_config cfg;
    tl_cfg_load(dir, &cfg);
    const cfg_source *shop = tl_source(&cfg, "shop");
    assert_int_equal(shop->capture, CFG_CAPTURE_LOGICAL);
    assert_int_equal(shop->capture_line, 3);
    assert_null(shop->publication);
    assert_true(shop->publication_owned);
    assert_string_equal(shop->publication_name, "duckstore_shop");
    assert_string_equal(shop->slot_name, "duckstore_shop");
    const qt_single_table *shape = &shop->plans[0].shape;
    assert_string_equal(shape->select_list, "o.id, o.total * 100 AS cents");
    assert_string_equal(shape->schema, "sales");
    assert_string_equal(shape->table, "Orders");
    assert_string_equal(shape->alias, "o");
    assert_string_equal(shape->where, "o.total > 0");
    assert_string_equal(shop->partition_column, "id");

    const cfg_source *mirror = tl_source(&cfg, "mirror");
    assert_string_equal(mirror->publication, "Existing_Pub");
    assert_string_equal(mirror->publication_name, "Existing_Pub");
    assert_false(mirror->publication_owned);
    assert_int_equal(mirror->publication_line, 4);
    assert_string_equal(mirror->plans[0].shape.table, "d");
    assert_string_equal(mirror->plans[1].shape.table, "r");

    /* A watermark source keeps any query, and no shape. */
    const cfg_source *plain = tl_source(&cfg, "plain");
    assert_int_equal(plain->capture, CFG_CAPTURE_WATERMARK);
    assert_null(plain->plans[0].shape.table);
    assert_string_equal(cfg_capture_name(plain->capture), "watermark");

    char *text = print_to_string(&cfg);
    tl_assert_contains(text, "shop_db:\n");
    tl_assert_contains(text, "  partition_column: \"id\"\n");
    tl_assert_contains(text, "  capture: logical\n"
                             "  # publication: duckstore_shop (created by duckstore)\n"
                             "  # replication slot: duckstore_shop\n");
    tl_assert_contains(text, "  capture: logical\n"
                             "  publication: \"Existing_Pub\"\n"
                             "  # replication slot: duckstore_mirror\n");
    tl_assert_contains(text, "  query_timeout: 600\n  capture: watermark\n");
    cfg_free(&cfg);

    /* What cfg_print wrote loads back as the same sources. */
    char *again = tl_mkdtemp();
    put(again, "shop_db.yaml", strstr(text, "shop_db:\n"));
    cfg_config back;
    ds_error err = {0};
    if (!cfg_load_dir(again, &back, &err))
        fail_msg("printed config does not load: %s", err.msg);
    assert_int_equal(tl_source(&back, "shop")->capture, CFG_CAPTURE_LOGICAL);
    assert_true(tl_source(&back, "shop")->publication_owned);
    cfg_free(&back);
    tl_rmtree(again);
    free(again);
}

static void test_object_names(void **state)
{
    (void)state;
    char name[CFG_PG_NAME_CAP];
    cfg_pg_object_name("monitoring", name);
    assert_string_equal(name, "duckstore_monitoring");
    cfg_pg_object_name("Mixed-Case.Name", name);
    assert_string_equal(name, "duckstore_mixed_case_name");
    /* 10 + 53 = 63 bytes: kept whole. */
    char exact[54];
    memset(exact, 'a', 53);
    exact[53] = '\0';
    cfg_pg_object_name(exact, name);
    assert_int_equal(strlen(name), 63);
    assert_string_equal(name + 10, exact);
    /* Longer: a prefix and a hash, 63 bytes, different for names that
     * share the prefix. */
    char a[64], b[64], na[CFG_PG_NAME_CAP], nb[CFG_PG_NAME_CAP];
    memset(a, 'x', 63);
    a[63] = '\0';
    memcpy(b, a, sizeof a);
    b[62] = 'y';
    cfg_pg_object_name(a, na);
    cfg_pg_object_name(b, nb);
    assert_int_equal(strlen(na), 63);
    assert_int_equal(strlen(nb), 63);
    assert_memory_equal(na, "duckstore_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx_", 55);
    assert_string_not_equal(na, nb);
    for (const char *c = na; *c; c++)
        assert_true((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_');
    /* The same name always gives the same slot. */
    char again[CFG_PG_NAME_CAP];
    cfg_pg_object_name(a, again);
    assert_string_equal(na, again);
}

/* One refused config: the source file's text and the message expected
 * after "<dir>/s.yaml:". */
typedef struct bad_case {
    const char *text;
    const char *message;
} bad_case;

#define Q "  query: SELECT id FROM t\n"
#define LOGICAL "s_db:\n" URL "  capture: logical\n"

static void test_refusals(void **state)
{
    const char *dir = *state;
    static const bad_case cases[] = {
        {"s_db:\n" URL "  capture: trigger\n" Q, "3: capture must be \"watermark\" (re-read rows past "
                                                 "incremental_column) or \"logical\" (PostgreSQL's "
                                                 "logical replication) (got \"trigger\")"},
        {"s_db:\n" URL "  publication: p\n" Q,
         "3: publication is read by logical capture only; add capture: logical or remove publication"},
        {"s_db:\n" URL "  capture: watermark\n  publication: p\n" Q,
         "4: publication is read by logical capture only; add capture: logical or remove publication"},
        {LOGICAL Q "  incremental_column: id\n",
         "5: incremental_column belongs to watermark capture, but this source has capture: logical (line 3), "
         "which applies every insert, update and delete by the table's replica identity; remove "
         "incremental_column"},
        {LOGICAL Q "  unique_key: id\n", "5: unique_key belongs to watermark capture, but this source has "
                                         "capture: logical (line 3), which applies every insert, update and "
                                         "delete by the table's replica identity; remove unique_key"},
        {LOGICAL Q "  lookback: 5 minutes\n", "5: lookback belongs to watermark capture"},
        {LOGICAL Q "  commit_horizon: true\n", "5: commit_horizon belongs to watermark capture"},
        {LOGICAL Q "  full_refresh_interval_minutes: 60\n",
         "5: full_refresh_interval_minutes belongs to watermark capture"},
        {LOGICAL "  publication: \"\"\n" Q, "4: publication is empty; name an existing publication"},
        {LOGICAL "  publication: "
                 "p234567890123456789012345678901234567890123456789012345678901234\n" Q,
         "4: publication \"p234567890123456789012345678901234567890123456789012345678901234\" is longer than "
         "PostgreSQL's 63 bytes"},
        {LOGICAL "  query: SELECT a.id FROM a JOIN b ON a.id = b.id\n",
         "4: query: a join (JOIN) is not allowed; capture: logical (line 3) reads each query as one table's "
         "rows: SELECT <columns or expressions of the row> FROM <table> [WHERE <condition on the row>]. Fix: "
         "read the table alone (join and aggregate in DuckDB over the cached tables), or remove capture: "
         "logical"},
        {LOGICAL "  query: SELECT kind FROM t GROUP BY kind\n", "4: query: GROUP BY is not allowed; "},
        {LOGICAL "  query: SELECT DISTINCT kind FROM t\n", "4: query: DISTINCT is not allowed; "},
        {LOGICAL "  query: SELECT id FROM (SELECT id FROM t) s\n",
         "4: query: a subquery in FROM is not allowed; "},
        {LOGICAL "  query: SELECT id FROM t UNION SELECT id FROM u\n", "4: query: UNION is not allowed; "},
        {LOGICAL "  query: SELECT id FROM t LIMIT 5\n", "4: query: LIMIT is not allowed; "},
        {LOGICAL "  query: SELECT id FROM t ORDER BY id\n", "4: query: ORDER BY is not allowed; "},
        {LOGICAL "  query: SELECT * FROM generate_series(1, 3)\n",
         "4: query: a set-returning FROM (generate_series(...)) is not allowed; "},
        {LOGICAL "  query: SELECT id FROM t, u\n", "4: query: several tables (FROM a, b) are not allowed; "},
        {LOGICAL "  dataset_query: SELECT dataset_id FROM d\n"
                 "  results_query: |\n    SELECT dataset_id\n    FROM r\n    ORDER BY 1\n",
         "5: results_query: ORDER BY is not allowed; capture: logical (line 3)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        put(dir, "s.yaml", cases[i].text);
        cfg_config cfg;
        ds_error err = {0};
        if (cfg_load_dir(dir, &cfg, &err)) {
            cfg_free(&cfg);
            fail_msg("loaded:\n%s", cases[i].text);
        }
        assert_int_equal(err.code, DS_ERR_CONFIG);
        char *want = tl_keepf("%s/s.yaml:%s", dir, cases[i].message);
        if (strncmp(err.msg, want, strlen(want)) != 0)
            fail_msg("expected\n  %s\ngot\n  %s", want, err.msg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes_accepted),
        cmocka_unit_test(test_shapes_refused),
        cmocka_unit_test(test_hostile_text),
        cmocka_unit_test(test_object_names),
        cmocka_unit_test_setup_teardown(test_logical_source, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_refusals, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests_name("config/capture", tests, NULL, NULL);
}
