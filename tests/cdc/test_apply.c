/* The apply engine of logical capture on a real DuckDB database: batches of
 * hand-built pgoutput changes (binary values, as PostgreSQL 14+ sends them)
 * must leave the cached table exactly as applying them one by one would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/apply.h"
#include "testlib.h"

typedef struct fixture {
    duckdb_database db;
    duckdb_connection duck;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_int_equal(duckdb_open(NULL, &f->db), DuckDBSuccess);
    assert_int_equal(duckdb_connect(f->db, &f->duck), DuckDBSuccess);
    tl_duck_exec(f->duck, "CREATE TABLE orders (id INTEGER, status VARCHAR, note VARCHAR)");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    duckdb_disconnect(&f->duck);
    duckdb_close(&f->db);
    free(f);
    tl_free_kept();
    return 0;
}

/* ---- building changes ---- */

/* Values of one tuple: "i:42" an int4, "s:text" text, "n" NULL, "u"
 * unchanged TOASTed value. Buffers live until the test ends. */
static pgo_tuple tuple(const char *a, const char *b, const char *c)
{
    const char *spec[3] = {a, b, c};
    pgo_tuple t = {.ncols = 3, .values = calloc(3, sizeof(pgo_value))};
    tl_keep((char *)t.values);
    for (int i = 0; i < 3; i++) {
        pgo_value *v = &t.values[i];
        if (spec[i][0] == 'i') {
            unsigned char *p = (unsigned char *)tl_keep(malloc(4));
            uint32_t x = (uint32_t)atoi(spec[i] + 2);
            p[0] = (unsigned char)(x >> 24);
            p[1] = (unsigned char)(x >> 16);
            p[2] = (unsigned char)(x >> 8);
            p[3] = (unsigned char)x;
            *v = (pgo_value){.kind = 'b', .data = (const char *)p, .len = 4};
        } else if (spec[i][0] == 's') {
            *v = (pgo_value){.kind = 'b', .data = spec[i] + 2, .len = (uint32_t)strlen(spec[i] + 2)};
        } else {
            *v = (pgo_value){.kind = spec[i][0]};
        }
    }
    return t;
}

static pgo_message insert(pgo_tuple t)
{
    return (pgo_message){.kind = PGO_INSERT, .new_tuple = t};
}

static pgo_message update(pgo_tuple t)
{
    return (pgo_message){.kind = PGO_UPDATE, .new_tuple = t};
}

static pgo_message update_key(pgo_tuple old, pgo_tuple t)
{
    return (pgo_message){.kind = PGO_UPDATE, .old_kind = 'K', .old_tuple = old, .new_tuple = t};
}

static pgo_message update_full(pgo_tuple old, pgo_tuple t)
{
    return (pgo_message){.kind = PGO_UPDATE, .old_kind = 'O', .old_tuple = old, .new_tuple = t};
}

static pgo_message delete_key(pgo_tuple old)
{
    return (pgo_message){.kind = PGO_DELETE, .old_kind = 'K', .old_tuple = old};
}

static const char *const key_cols[] = {"id"};
static const char *const rel_cols[] = {"id", "status", "note"};

static pgo_relation relation(void)
{
    static pgo_column cols[3] = {{.key = true, .name = "id", .type_oid = 23, .typmod = -1},
                                 {.name = "status", .type_oid = 25, .typmod = -1},
                                 {.name = "note", .type_oid = 25, .typmod = -1}};
    return (pgo_relation){
        .oid = 16384, .nspname = "public", .relname = "orders", .replident = 'd', .ncols = 3, .cols = cols};
}

static cdc_target_spec plain_spec(const char *where)
{
    return (cdc_target_spec){.table = "orders",
                             .select_list = "*",
                             .alias = "orders",
                             .where = where,
                             .key_cols = key_cols,
                             .key_target_cols = key_cols,
                             .nkey = 1,
                             .plain_source = rel_cols,
                             .plain_target = rel_cols,
                             .nplain = 3};
}

static cdc_applier *new_applier(fixture *f, const cdc_target_spec *spec)
{
    cdc_applier *a = cdc_applier_new(f->duck, spec, 1);
    assert_non_null(a);
    pgo_relation rel = relation();
    pgsrc_type types[3];
    assert_true(pgtypes_map_builtin(23, -1, &types[0]));
    assert_true(pgtypes_map_builtin(25, -1, &types[1]));
    assert_true(pgtypes_map_builtin(25, -1, &types[2]));
    ds_error err = {0};
    assert_true(cdc_applier_relation(a, 0, &rel, types, &err));
    return a;
}

static void apply(cdc_applier *a, pgo_message m)
{
    ds_error err = {0};
    if (!cdc_applier_change(a, 0, &m, &err))
        fail_msg("change: %s", err.msg);
}

static void flush(fixture *f, cdc_applier *a)
{
    ds_error err = {0};
    tl_duck_exec(f->duck, "BEGIN");
    if (!cdc_applier_flush(a, &err))
        fail_msg("flush: %s", err.msg);
    tl_duck_exec(f->duck, "COMMIT");
}

/* The table as one string, rows ordered by id: "1:new:a|2:..." */
static char *contents(fixture *f, const char *table)
{
    return tl_keep(tl_duck_scalar(f->duck,
                                  "SELECT coalesce(string_agg(concat_ws(':', id, coalesce(status, '∅'), "
                                  "coalesce(note, '∅')), '|' ORDER BY id, status, note), '') FROM %s",
                                  table));
}

/* ---- tests ---- */

static void a_mixed_batch_ends_as_its_changes_one_by_one(void **state)
{
    fixture *f = *state;
    tl_duck_exec(f->duck, "INSERT INTO orders VALUES (1, 'new', 'a'), (2, 'new', 'b'), (3, 'new', 'c')");
    cdc_target_spec spec = plain_spec(NULL);
    cdc_applier *a = new_applier(f, &spec);
    apply(a, insert(tuple("i:4", "s:new", "s:d")));
    apply(a, update(tuple("i:1", "s:paid", "s:a")));
    apply(a, delete_key(tuple("i:2", "n", "n")));
    apply(a, update_key(tuple("i:3", "n", "n"), tuple("i:30", "s:moved", "s:c")));
    apply(a, insert(tuple("i:5", "s:new", "n")));
    apply(a, delete_key(tuple("i:5", "n", "n")));
    apply(a, insert(tuple("i:2", "s:again", "s:b2")));
    assert_int_equal(cdc_applier_pending(a), 7);
    flush(f, a);
    assert_int_equal(cdc_applier_pending(a), 0);
    assert_string_equal(contents(f, "orders"), "1:paid:a|2:again:b2|4:new:d|30:moved:c");
    cdc_applier_free(a);
}

/* A batch of inserts alone appends without looking for stored rows to
 * replace; the batches before and after it that do replace rows still do. */
static void insert_only_batches_append_and_later_batches_still_replace(void **state)
{
    fixture *f = *state;
    tl_duck_exec(f->duck, "INSERT INTO orders VALUES (1, 'new', 'a')");
    cdc_target_spec spec = plain_spec(NULL);
    cdc_applier *a = new_applier(f, &spec);
    apply(a, update(tuple("i:1", "s:paid", "s:a")));
    flush(f, a);
    assert_string_equal(contents(f, "orders"), "1:paid:a");
    apply(a, insert(tuple("i:2", "s:new", "s:b")));
    apply(a, insert(tuple("i:3", "s:new", "s:c")));
    flush(f, a);
    assert_string_equal(contents(f, "orders"), "1:paid:a|2:new:b|3:new:c");
    /* A stored key deleted and inserted again, then one updated: replaced. */
    apply(a, delete_key(tuple("i:2", "n", "n")));
    apply(a, insert(tuple("i:2", "s:again", "s:b2")));
    flush(f, a);
    assert_string_equal(contents(f, "orders"), "1:paid:a|2:again:b2|3:new:c");
    apply(a, insert(tuple("i:4", "s:new", "s:d")));
    apply(a, update(tuple("i:3", "s:paid", "s:c")));
    flush(f, a);
    assert_string_equal(contents(f, "orders"), "1:paid:a|2:again:b2|3:paid:c|4:new:d");
    apply(a, insert(tuple("i:5", "s:new", "s:e")));
    flush(f, a);
    assert_string_equal(contents(f, "orders"), "1:paid:a|2:again:b2|3:paid:c|4:new:d|5:new:e");
    assert_int_equal(tl_duck_int(f->duck, "SELECT count(*) FROM orders"), 5);
    cdc_applier_free(a);
}

static void a_key_updated_twice_in_one_batch_keeps_one_row(void **state)
{
    fixture *f = *state;
    tl_duck_exec(f->duck, "INSERT INTO orders VALUES (1, 'new', 'a')");
    cdc_target_spec spec = plain_spec(NULL);
    cdc_applier *a = new_applier(f, &spec);
    apply(a, update_key(tuple("i:1", "n", "n"), tuple("i:2", "s:x", "s:a")));
    apply(a, update_key(tuple("i:2", "n", "n"), tuple("i:1", "s:y", "s:a")));
    apply(a, update(tuple("i:1", "s:z", "s:a")));
    flush(f, a);
    assert_string_equal(contents(f, "orders"), "1:z:a");
    cdc_applier_free(a);
}

static void unchanged_toast_values_come_from_the_stored_row_or_the_batch(void **state)
{
    fixture *f = *state;
    tl_duck_exec(f->duck, "INSERT INTO orders VALUES (1, 'new', 'big stored value')");
    cdc_target_spec spec = plain_spec(NULL);
    cdc_applier *a = new_applier(f, &spec);
    /* From the stored row, through a key change and a second update. */
    apply(a, update(tuple("i:1", "s:paid", "u")));
    apply(a, update_key(tuple("i:1", "n", "n"), tuple("i:7", "s:shipped", "u")));
    /* From a version inserted in the same batch. */
    apply(a, insert(tuple("i:8", "s:new", "s:fresh value")));
    apply(a, update(tuple("i:8", "s:paid", "u")));
    /* From the whole old row (REPLICA IDENTITY FULL). */
    apply(a, insert(tuple("i:9", "s:new", "s:old row value")));
    flush(f, a);
    apply(a, update_full(tuple("i:9", "s:new", "s:old row value"), tuple("i:9", "s:paid", "u")));
    flush(f, a);
    assert_string_equal(contents(f, "orders"),
                        "7:shipped:big stored value|8:paid:fresh value|9:paid:old row value");
    cdc_applier_free(a);
}

static void an_unchanged_value_the_cache_cannot_know_asks_for_a_reload(void **state)
{
    fixture *f = *state;
    /* The query keeps only paid orders: row 1 is not cached, so its note is
     * nowhere when it becomes paid with the note unchanged. */
    cdc_target_spec spec = plain_spec("status = 'paid'");
    cdc_applier *a = new_applier(f, &spec);
    apply(a, update(tuple("i:1", "s:paid", "u")));
    ds_error err = {0};
    tl_duck_exec(f->duck, "BEGIN");
    assert_false(cdc_applier_flush(a, &err));
    tl_duck_exec(f->duck, "ROLLBACK");
    assert_int_equal(err.code, DS_ERR_RELOAD);
    assert_non_null(strstr(err.msg, "REPLICA IDENTITY FULL"));
    cdc_applier_free(a);
}

static void rows_leave_and_enter_with_the_query_where(void **state)
{
    fixture *f = *state;
    tl_duck_exec(f->duck, "INSERT INTO orders VALUES (1, 'paid', 'a'), (2, 'paid', 'b')");
    cdc_target_spec spec = plain_spec("status <> 'cancelled'");
    cdc_applier *a = new_applier(f, &spec);
    apply(a, update(tuple("i:1", "s:cancelled", "s:a")));
    apply(a, insert(tuple("i:3", "s:cancelled", "s:c")));
    apply(a, insert(tuple("i:4", "s:paid", "s:d")));
    flush(f, a);
    assert_string_equal(contents(f, "orders"), "2:paid:b|4:paid:d");
    cdc_applier_free(a);
}

static void computed_and_renamed_columns_are_recomputed(void **state)
{
    fixture *f = *state;
    tl_duck_exec(f->duck, "CREATE TABLE shouting (order_id INTEGER, loud VARCHAR)");
    tl_duck_exec(f->duck, "INSERT INTO shouting VALUES (1, 'NEW')");
    static const char *const target_keys[] = {"order_id"};
    static const char *const src[] = {"id"};
    cdc_target_spec spec = {.table = "shouting",
                            .select_list = "o.id AS order_id, upper(o.status) AS loud",
                            .alias = "o",
                            .key_cols = key_cols,
                            .key_target_cols = target_keys,
                            .nkey = 1,
                            .plain_source = src,
                            .plain_target = target_keys,
                            .nplain = 1};
    cdc_applier *a = new_applier(f, &spec);
    apply(a, update(tuple("i:1", "s:paid", "n")));
    apply(a, insert(tuple("i:2", "s:new", "n")));
    flush(f, a);
    assert_string_equal(
        tl_keep(tl_duck_scalar(f->duck, "SELECT string_agg(order_id || '=' || loud, ',' ORDER BY "
                                        "order_id) FROM shouting")),
        "1=PAID,2=NEW");
    cdc_applier_free(a);
}

static void truncate_empties_after_what_came_before(void **state)
{
    fixture *f = *state;
    tl_duck_exec(f->duck, "INSERT INTO orders VALUES (1, 'new', 'a')");
    cdc_target_spec spec = plain_spec(NULL);
    cdc_applier *a = new_applier(f, &spec);
    apply(a, insert(tuple("i:2", "s:new", "s:b")));
    ds_error err = {0};
    tl_duck_exec(f->duck, "BEGIN");
    assert_true(cdc_applier_truncate(a, 0, &err));
    apply(a, insert(tuple("i:3", "s:after", "s:c")));
    assert_true(cdc_applier_flush(a, &err));
    tl_duck_exec(f->duck, "COMMIT");
    assert_string_equal(contents(f, "orders"), "3:after:c");
    cdc_applier_free(a);
}

static void batches_larger_than_a_chunk_are_exact(void **state)
{
    fixture *f = *state;
    cdc_target_spec spec = plain_spec(NULL);
    cdc_applier *a = new_applier(f, &spec);
    char id[32], id2[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "i:%d", i);
        apply(a, insert(tuple(tl_keep(strdup(id)), "s:new", "s:x")));
    }
    for (int i = 0; i < 10000; i += 3) {
        snprintf(id, sizeof id, "i:%d", i);
        apply(a, delete_key(tuple(tl_keep(strdup(id)), "n", "n")));
    }
    for (int i = 1; i < 10000; i += 3) {
        snprintf(id, sizeof id, "i:%d", i);
        snprintf(id2, sizeof id2, "i:%d", i + 100000);
        apply(a,
              update_key(tuple(tl_keep(strdup(id)), "n", "n"), tuple(tl_keep(strdup(id2)), "s:moved", "u")));
    }
    flush(f, a);
    assert_int_equal(tl_duck_int(f->duck, "SELECT count(*) FROM orders"), 10000 - 3334);
    assert_int_equal(tl_duck_int(f->duck, "SELECT count(*) FROM orders WHERE status = 'moved' AND note = 'x' "
                                          "AND id > 100000"),
                     3333);
    assert_int_equal(tl_duck_int(f->duck, "SELECT count(*) FROM orders WHERE id %% 3 = 0 AND id < 100000"),
                     0);
    cdc_applier_free(a);
}

static void full_identity_keys_match_nulls(void **state)
{
    fixture *f = *state;
    tl_duck_exec(f->duck, "INSERT INTO orders VALUES (1, NULL, 'a'), (2, 'x', NULL)");
    cdc_target_spec spec = plain_spec(NULL);
    spec.key_cols = rel_cols;
    spec.key_target_cols = rel_cols;
    spec.nkey = 3;
    spec.whole_row = true;
    cdc_applier *a = new_applier(f, &spec);
    apply(a, (pgo_message){.kind = PGO_DELETE, .old_kind = 'O', .old_tuple = tuple("i:1", "n", "s:a")});
    apply(a, update_full(tuple("i:2", "s:x", "n"), tuple("i:2", "s:y", "n")));
    flush(f, a);
    assert_string_equal(contents(f, "orders"), "2:y:∅");
    cdc_applier_free(a);
}

/* Identical rows of a whole-row table: each change adds or takes one copy,
 * whether the copies are stored or arrive in the same batch. */
static void whole_row_tables_count_identical_rows(void **state)
{
    fixture *f = *state;
    tl_duck_exec(f->duck, "INSERT INTO orders VALUES (1, 'a', NULL), (1, 'a', NULL), (1, 'a', NULL), "
                          "(2, 'b', 'x'), (2, 'b', 'x')");
    cdc_target_spec spec = plain_spec("status <> 'void'");
    spec.key_cols = rel_cols;
    spec.key_target_cols = rel_cols;
    spec.nkey = 3;
    spec.whole_row = true;
    cdc_applier *a = new_applier(f, &spec);
    pgo_message del1 = {.kind = PGO_DELETE, .old_kind = 'O', .old_tuple = tuple("i:1", "s:a", "n")};
    apply(a, del1);
    /* One copy of 2 is updated, its note unchanged ('u'). */
    apply(a, update_full(tuple("i:2", "s:b", "s:x"), tuple("i:2", "s:c", "u")));
    /* Two copies arrive, one leaves again, one more arrives. */
    apply(a, insert(tuple("i:3", "s:d", "n")));
    apply(a, insert(tuple("i:3", "s:d", "n")));
    apply(a, (pgo_message){.kind = PGO_DELETE, .old_kind = 'O', .old_tuple = tuple("i:3", "s:d", "n")});
    apply(a, insert(tuple("i:3", "s:d", "n")));
    /* A copy the query's WHERE does not keep, and one that leaves it. */
    apply(a, insert(tuple("i:4", "s:void", "n")));
    apply(a, update_full(tuple("i:1", "s:a", "n"), tuple("i:1", "s:void", "n")));
    flush(f, a);
    assert_string_equal(contents(f, "orders"), "1:a:∅|2:b:x|2:c:x|3:d:∅|3:d:∅");
    /* Taking away more copies than are stored takes what there is. */
    apply(a, del1);
    apply(a, del1);
    flush(f, a);
    assert_string_equal(contents(f, "orders"), "2:b:x|2:c:x|3:d:∅|3:d:∅");
    cdc_applier_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_mixed_batch_ends_as_its_changes_one_by_one, setup, teardown),
        cmocka_unit_test_setup_teardown(insert_only_batches_append_and_later_batches_still_replace, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_key_updated_twice_in_one_batch_keeps_one_row, setup, teardown),
        cmocka_unit_test_setup_teardown(unchanged_toast_values_come_from_the_stored_row_or_the_batch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(an_unchanged_value_the_cache_cannot_know_asks_for_a_reload, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rows_leave_and_enter_with_the_query_where, setup, teardown),
        cmocka_unit_test_setup_teardown(computed_and_renamed_columns_are_recomputed, setup, teardown),
        cmocka_unit_test_setup_teardown(truncate_empties_after_what_came_before, setup, teardown),
        cmocka_unit_test_setup_teardown(batches_larger_than_a_chunk_are_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(full_identity_keys_match_nulls, setup, teardown),
        cmocka_unit_test_setup_teardown(whole_row_tables_count_identical_rows, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
