/* pgsrc_copy_sql and the quoting under it as a builder: the exact SQL for
 * small column lists with hostile names (quotes, backslashes, 63-byte and
 * non-ASCII names), refusal of text libpq cannot quote, and, for 1,600
 * such columns, SQL that PostgreSQL runs with every name and cast intact. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "source/pgsrc.h"

#define COPY_SUFFIX ") TO STDOUT (FORMAT binary)"

static char *g_conninfo;
static pgsrc_conn g_conn;

static pgsrc_column col(const char *name, pgsrc_cast cast)
{
    pgsrc_column c = {.name = (char *)name, .cast = cast};
    return c;
}

static void assert_copy_sql(const pgsrc_column *cols, size_t n, const char *query, const char *where,
                            int64_t limit, const char *expected)
{
    pgsrc_desc desc = {.cols = (pgsrc_column *)cols, .ncols = n};
    char *sql = pgsrc_copy_sql(&g_conn, query, &desc, where, limit);
    assert_non_null(sql);
    assert_string_equal(sql, expected);
    free(sql);
}

static void test_exact_sql_with_quotes_and_backslashes(void **state)
{
    (void)state;
    const pgsrc_column cols[] = {
        col("id", PGSRC_CAST_NONE),
        col("a\"b", PGSRC_CAST_TEXT),
        col("x'y\\z", PGSRC_CAST_TEXT_ARRAY),
        col("\"", PGSRC_CAST_NONE),
    };
    assert_copy_sql(cols, 4, "SELECT 1 ;\n ;  ", NULL, -1,
                    "COPY (SELECT \"id\", \"a\"\"b\"::text AS \"a\"\"b\", \"x'y\\z\"::text[] AS \"x'y\\z\", "
                    "\"\"\"\" FROM (SELECT 1\n) AS _ds) TO STDOUT (FORMAT binary)");
}

static void test_exact_sql_with_long_and_unicode_names(void **state)
{
    (void)state;
    char quotes[64], quoted[130];
    memset(quotes, '"', 63);
    quotes[63] = '\0';
    quoted[0] = '"';
    memset(quoted + 1, '"', 126);
    quoted[127] = '"';
    quoted[128] = '\0';
    const pgsrc_column cols[] = {
        col("é\"€", PGSRC_CAST_TEXT),
        col(quotes, PGSRC_CAST_TEXT_ARRAY),
        col("名前", PGSRC_CAST_NONE),
    };
    ds_buf expected = DS_BUF_INIT;
    ds_buf_appendf(
        &expected,
        "COPY (SELECT \"é\"\"€\"::text AS \"é\"\"€\", %s::text[] AS %s, \"名前\" FROM (SELECT * FROM "
        "t -- every row\n) AS _ds WHERE \"é\" > 'x' LIMIT 0) TO STDOUT (FORMAT binary)",
        quoted, quoted);
    assert_copy_sql(cols, 3, "SELECT * FROM t -- every row", "\"é\" > 'x'", 0, ds_buf_str(&expected));
    ds_buf_free(&expected);
}

/* The builder appends to what the buffer holds; quoting goes through libpq
 * (a literal with a backslash becomes E'...'). */
static void test_append_helpers(void **state)
{
    (void)state;
    ds_error err = {0};
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT ");
    assert_true(pgsrc_append_literal(&b, &g_conn, "it's", &err));
    ds_buf_append(&b, ",");
    assert_true(pgsrc_append_literal(&b, &g_conn, "a\\b", &err));
    ds_buf_append(&b, " AS ");
    assert_true(pgsrc_append_ident(&b, &g_conn, "Mixed \"Case\"", &err));
    assert_string_equal(ds_buf_str(&b), "SELECT 'it''s', E'a\\\\b' AS \"Mixed \"\"Case\"\"\"");
    ds_buf_reset(&b);

    ds_buf_append(&b, "-- head\n");
    const pgsrc_column cols[] = {col("v", PGSRC_CAST_TEXT)};
    const pgsrc_desc desc = {.cols = (pgsrc_column *)cols, .ncols = 1};
    assert_true(pgsrc_append_copy_sql(&b, &g_conn, "SELECT v FROM t", &desc, NULL, 5, &err));
    assert_string_equal(ds_buf_str(&b),
                        "-- head\nCOPY (SELECT \"v\"::text AS \"v\" FROM (SELECT v FROM t\n) AS "
                        "_ds LIMIT 5) TO STDOUT (FORMAT binary)");
    ds_buf_free(&b);

    char *q = pgsrc_quote_ident(&g_conn, "a\"b");
    assert_string_equal(q, "\"a\"\"b\"");
    free(q);
    q = pgsrc_quote_literal(&g_conn, "O'Brien");
    assert_string_equal(q, "'O''Brien'");
    free(q);

    const pgsrc_column two[] = {col("a\"b", PGSRC_CAST_NONE), col("x'y\\z", PGSRC_CAST_NONE)};
    const pgsrc_desc desc2 = {.cols = (pgsrc_column *)two, .ncols = 2};
    char *list = pgsrc_desc_column_list(&desc2);
    assert_string_equal(list, "a\"b, x'y\\z");
    free(list);
}

/* A name that is not valid UTF-8 (a cut multibyte character) cannot be
 * quoted: the builder fails with libpq's reason instead of writing a
 * placeholder, and a stream refuses the missing SQL. */
static void test_unquotable_name_fails(void **state)
{
    (void)state;
    ds_error err = {0};
    ds_buf b = DS_BUF_INIT;
    const pgsrc_column cols[] = {col("ok", PGSRC_CAST_NONE), col("cut \xe2\x82", PGSRC_CAST_TEXT)};
    const pgsrc_desc desc = {.cols = (pgsrc_column *)cols, .ncols = 2};
    assert_false(pgsrc_append_copy_sql(&b, &g_conn, "SELECT 1", &desc, NULL, -1, &err));
    assert_int_equal(err.code, DS_ERR_SOURCE);
    tl_assert_contains(err.msg, "cannot quote the name");
    assert_true(b.failed);
    assert_null(ds_buf_take(&b));
    assert_null(pgsrc_copy_sql(&g_conn, "SELECT 1", &desc, NULL, -1));

    pgsrc_stream stream;
    memset(&err, 0, sizeof err);
    assert_false(pgsrc_stream_open(&stream, &g_conn, NULL, NULL, NULL, &err));
    assert_int_equal(err.code, DS_ERR_NOMEM);
    pgsrc_stream_close(&stream);
    /* The connection is still usable. */
    assert_true(pgsrc_exec(&g_conn, "SELECT 1", &err));
}

/* ---- 1,600 columns ------------------------------------------------------ */

#define WIDE_COLS 1600
#define WIDE_ROWS 3

/* Column i's name: hostile in one of five ways, unique by its number, at
 * most 63 bytes (PostgreSQL's limit) and valid UTF-8. */
static void wide_name(int i, char out[64])
{
    switch (i % 5) {
    case 0:
        snprintf(out, 64, "c\"%d\"", i);
        break;
    case 1:
        snprintf(out, 64, "%d'q\\\"", i);
        break;
    case 2:
        snprintf(out, 64, "ü€\"%d", i);
        break;
    case 3: /* quotes up to 63 bytes */
        snprintf(out, 64, "%d", i);
        memset(out + strlen(out), '"', 63 - strlen(out));
        out[63] = '\0';
        break;
    default: /* euros up to 63 bytes, then quotes */
        snprintf(out, 64, "%d_", i);
        while (strlen(out) + 3 <= 63)
            strcat(out, "€");
        memset(out + strlen(out), '"', 63 - strlen(out));
        out[63] = '\0';
        break;
    }
}

/* Column i's type cycles through macaddr[], point, money (all cast by the
 * COPY) and int4 (read as it is). */
static void wide_expr(ds_buf *b, int i)
{
    static const char *const exprs[] = {"'{08:00:2b:01:02:03,ff:ff:ff:ff:ff:ff}'::macaddr[]",
                                        "'(1.5,-2)'::point", "'12.34'::money"};
    if (i % 4 < 3)
        ds_buf_append(b, exprs[i % 4]);
    else
        ds_buf_appendf(b, "(g * 10000 + %d)::int4", i);
}

static char *wide_query(void)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT ");
    for (int i = 0; i < WIDE_COLS; i++) {
        char name[64];
        wide_name(i, name);
        ds_buf_append(&b, i ? ", " : "");
        wide_expr(&b, i);
        ds_buf_append(&b, " AS ");
        ds_buf_append_ident(&b, name);
    }
    ds_buf_appendf(&b, " FROM generate_series(1, %d) AS g ORDER BY g;", WIDE_ROWS);
    char *sql = ds_buf_take(&b);
    assert_non_null(sql);
    return sql;
}

static const char *chunk_string(duckdb_vector v, idx_t row, uint32_t *len)
{
    duckdb_string_t *s = (duckdb_string_t *)duckdb_vector_get_data(v) + row;
    *len = duckdb_string_t_length(*s);
    return duckdb_string_t_data(s);
}

static void assert_chunk_string(duckdb_vector v, idx_t row, const char *expected)
{
    uint32_t len;
    const char *s = chunk_string(v, row, &len);
    if (len != strlen(expected) || memcmp(s, expected, len) != 0)
        fail_msg("row %llu: %.*s, expected %s", (unsigned long long)row, (int)len, s, expected);
}

/* Runs copy_sql through pgsrc_stream into one DuckDB chunk and checks the
 * values of the first `rows` rows (the query's g = 1, 2, ...). */
static void assert_wide_stream(const pgsrc_desc *desc, const char *copy_sql, idx_t rows)
{
    duckdb_logical_type *types = calloc(desc->ncols, sizeof *types);
    pgsrc_type *plans = calloc(desc->ncols, sizeof *plans);
    assert_non_null(types);
    assert_non_null(plans);
    for (size_t i = 0; i < desc->ncols; i++) {
        plans[i] = desc->cols[i].type;
        duckdb_logical_type t = duckdb_create_logical_type(plans[i].kind == PGSRC_INT4 ? DUCKDB_TYPE_INTEGER
                                                                                       : DUCKDB_TYPE_VARCHAR);
        if (plans[i].kind == PGSRC_LIST) {
            types[i] = duckdb_create_list_type(t);
            duckdb_destroy_logical_type(&t);
        } else {
            types[i] = t;
        }
    }
    duckdb_data_chunk chunk = duckdb_create_data_chunk(types, desc->ncols);
    copy_decoder *dec = copy_decoder_new(plans, desc->ncols);
    assert_non_null(dec);
    ds_error err = {0};
    pgsrc_stream stream;
    if (!pgsrc_stream_open(&stream, &g_conn, copy_sql, dec, NULL, &err))
        fail_msg("%s", err.msg);
    if (!pgsrc_stream_fill(&stream, chunk, &err))
        fail_msg("%s", err.msg);
    assert_true(stream.ended);
    pgsrc_stream_close(&stream);
    assert_int_equal(duckdb_data_chunk_get_size(chunk), rows);

    for (size_t i = 0; i < desc->ncols; i++) {
        duckdb_vector v = duckdb_data_chunk_get_vector(chunk, i);
        for (idx_t r = 0; r < rows; r++) {
            switch (i % 4) {
            case 0: {
                duckdb_list_entry e = ((duckdb_list_entry *)duckdb_vector_get_data(v))[r];
                assert_int_equal(e.length, 2);
                duckdb_vector child = duckdb_list_vector_get_child(v);
                assert_chunk_string(child, e.offset, "08:00:2b:01:02:03");
                assert_chunk_string(child, e.offset + 1, "ff:ff:ff:ff:ff:ff");
                break;
            }
            case 1:
                assert_chunk_string(v, r, "(1.5,-2)");
                break;
            case 2:
                assert_chunk_string(v, r, "$12.34");
                break;
            default:
                assert_int_equal(((int32_t *)duckdb_vector_get_data(v))[r], (r + 1) * 10000 + i);
            }
        }
    }
    copy_decoder_free(dec);
    duckdb_destroy_data_chunk(&chunk);
    for (size_t i = 0; i < desc->ncols; i++)
        duckdb_destroy_logical_type(&types[i]);
    free(types);
    free(plans);
}

/* The SELECT inside the COPY, described by PostgreSQL: every name as the
 * query returned it, each cast column as text / text[]. */
static void assert_inner_select(const pgsrc_desc *desc, const char *copy_sql)
{
    size_t len = strlen(copy_sql);
    assert_true(strncmp(copy_sql, "COPY (", 6) == 0);
    assert_true(len > 6 + strlen(COPY_SUFFIX) &&
                strcmp(copy_sql + len - strlen(COPY_SUFFIX), COPY_SUFFIX) == 0);
    char *inner = strndup(copy_sql + 6, len - 6 - strlen(COPY_SUFFIX));
    assert_non_null(inner);
    ds_error err = {0};
    pgsrc_desc out;
    if (!pgsrc_describe(&g_conn, inner, &out, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(out.ncols, desc->ncols);
    for (size_t i = 0; i < desc->ncols; i++) {
        assert_string_equal(out.cols[i].name, desc->cols[i].name);
        static const uint32_t oids[] = {1009, 25, 25, 23}; /* text[], text, text, int4 */
        assert_int_equal(out.cols[i].oid, oids[i % 4]);
    }
    pgsrc_desc_free(&out);
    free(inner);
}

static void test_1600_hostile_columns(void **state)
{
    (void)state;
    char *query = wide_query();
    ds_error err = {0};
    pgsrc_desc desc;
    if (!pgsrc_describe(&g_conn, query, &desc, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(desc.ncols, WIDE_COLS);
    for (int i = 0; i < WIDE_COLS; i++) {
        char name[64];
        wide_name(i, name);
        assert_string_equal(desc.cols[i].name, name);
        assert_int_equal(desc.cols[i].cast, i % 4 == 0   ? PGSRC_CAST_TEXT_ARRAY
                                            : i % 4 == 3 ? PGSRC_CAST_NONE
                                                         : PGSRC_CAST_TEXT);
    }

    char *copy_sql = pgsrc_copy_sql(&g_conn, query, &desc, NULL, -1);
    assert_non_null(copy_sql);
    assert_inner_select(&desc, copy_sql);
    assert_wide_stream(&desc, copy_sql, WIDE_ROWS);
    free(copy_sql);

    /* With a WHERE on a hostile name and a LIMIT. */
    ds_buf where = DS_BUF_INIT;
    assert_true(pgsrc_append_ident(&where, &g_conn, desc.cols[3].name, &err));
    ds_buf_append(&where, " < 30000");
    copy_sql = pgsrc_copy_sql(&g_conn, query, &desc, ds_buf_str(&where), 1);
    assert_non_null(copy_sql);
    assert_wide_stream(&desc, copy_sql, 1);
    free(copy_sql);
    ds_buf_free(&where);

    pgsrc_desc_free(&desc);
    free(query);
}

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("copysql"));
    ds_error err = {0};
    /* money's text depends on lc_monetary. */
    if (!pgsrc_connect(g_conninfo, 120, &g_conn, &err) || !pgsrc_exec(&g_conn, "SET lc_monetary = 'C'", &err))
        fail_msg("%s", err.msg);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pgsrc_disconnect(&g_conn);
    free(g_conninfo);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_sql_with_quotes_and_backslashes),
        cmocka_unit_test(test_exact_sql_with_long_and_unicode_names),
        cmocka_unit_test(test_append_helpers),
        cmocka_unit_test(test_unquotable_name_fails),
        cmocka_unit_test(test_1600_hostile_columns),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
