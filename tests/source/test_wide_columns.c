/* A wide query whose columns the COPY must cast (macaddr[], point, money) and
 * whose names are hostile (quotes, backslashes, 63-byte and non-ASCII
 * names), end to end through the source side: describe, the COPY SQL,
 * binary COPY into a DuckDB table through store_insert_stream, and every
 * value compared with PostgreSQL's own rendering. The COPY SQL of this
 * table once overflowed its buffer. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "source/pgsrc.h"

#define N_MAC_ARRAYS 120
#define N_ROWS 4

static char *g_conninfo;
static PGconn *g_pg;

typedef struct wide_col {
    char name[64];
    const char *pg_type;
} wide_col;

static wide_col g_cols[N_MAC_ARRAYS + 8];
static size_t g_ncols;

static void add_col(const char *name, const char *pg_type)
{
    assert_true(strlen(name) <= 63);
    assert_true(g_ncols < sizeof g_cols / sizeof g_cols[0]);
    snprintf(g_cols[g_ncols].name, sizeof g_cols[g_ncols].name, "%s", name);
    g_cols[g_ncols++].pg_type = pg_type;
}

/* n copies of s. */
static void repeat(char *out, size_t cap, const char *s, int n)
{
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        strncat(out, s, cap - strlen(out) - 1);
}

static void define_columns(void)
{
    char name[64];
    for (int i = 1; i <= N_MAC_ARRAYS; i++) {
        snprintf(name, sizeof name, "c\"%d\"", i);
        add_col(name, "macaddr[]");
    }
    add_col("ci\"d'r\\", "point");
    repeat(name, sizeof name, "\"", 63); /* 63 quotes: 128 bytes once quoted */
    add_col(name, "point");
    add_col("名前\"'\\", "point");
    repeat(name, sizeof name, "m\\\"", 21); /* 63 bytes */
    add_col(name, "money");
    repeat(name, sizeof name, "€", 21); /* 63 bytes, 21 characters */
    add_col(name, "money");
    add_col("prix \"€\" \\n", "money");
    add_col("line\nbreak\ttab", "money");
}

/* A value for column i in row r: varied, with NULLs, NULL elements and
 * empty arrays. */
static void append_value(ds_buf *b, size_t i, int r)
{
    const char *type = g_cols[i].pg_type;
    if ((r == 3 && i % 3 == 0) || (r == 2 && i == g_ncols - 1)) {
        ds_buf_append(b, "NULL");
        return;
    }
    if (strcmp(type, "macaddr[]") == 0) {
        if (r == 3 && i % 3 == 1)
            ds_buf_append(b, "'{}'");
        else if (r == 2)
            ds_buf_appendf(b, "ARRAY[NULL, '08:00:2b:%02zx:00:%02x', 'ff:ff:ff:00:%02x:01']::macaddr[]", i, r,
                           r);
        else
            ds_buf_appendf(
                b,
                "ARRAY['00:00:5e:00:%02zx:%02x', '01:00:5e:7f:%02x:00', '00:%02zx:00:00:00:01']::macaddr[]",
                i, r, r, i + 1);
    } else if (strcmp(type, "point") == 0) {
        ds_buf_appendf(b, "'(%zu.5,-%d)'::point", i % 256, r);
    } else {
        ds_buf_appendf(b, "'%d%zu.%02d'::money", r, i, r * 7);
    }
}

static void create_source_table(void)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "CREATE TABLE wide (id integer");
    for (size_t i = 0; i < g_ncols; i++) {
        ds_buf_append(&b, ", ");
        ds_buf_append_ident(&b, g_cols[i].name);
        ds_buf_appendf(&b, " %s", g_cols[i].pg_type);
    }
    ds_buf_append(&b, ")");
    tl_pg_exec(g_pg, "%s", ds_buf_str(&b));
    for (int r = 1; r <= N_ROWS; r++) {
        ds_buf_reset(&b);
        ds_buf_appendf(&b, "INSERT INTO wide VALUES (%d", r);
        for (size_t i = 0; i < g_ncols; i++) {
            ds_buf_append(&b, ", ");
            append_value(&b, i, r);
        }
        ds_buf_append(&b, ")");
        tl_pg_exec(g_pg, "%s", ds_buf_str(&b));
    }
    ds_buf_free(&b);
}

/* CREATE TABLE t with the DuckDB types of the described columns. */
static void create_duck_table(duckdb_connection con, const pgsrc_desc *desc)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "CREATE TABLE t (");
    for (size_t i = 0; i < desc->ncols; i++) {
        ds_buf_append(&b, i ? ", " : "");
        ds_buf_append_ident(&b, desc->cols[i].name);
        ds_buf_appendf(&b, " %s", desc->cols[i].type.ddl);
    }
    ds_buf_append(&b, ")");
    tl_duck_exec(con, "%s", ds_buf_str(&b));
    ds_buf_free(&b);
}

static bool fill_from_stream(void *ctx, duckdb_data_chunk out, ds_error *err)
{
    return pgsrc_stream_fill(ctx, out, err);
}

/* "SELECT id, <each column as text> FROM rel ORDER BY id", with arrays as
 * "<length>:" and their elements joined by '|' (NULL elements as <null>;
 * DuckDB joins an empty list to NULL, PostgreSQL to ''), spelled for
 * PostgreSQL or for DuckDB. The values are PostgreSQL's ::text. */
static char *text_query(bool duck, const char *rel)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT id");
    for (size_t i = 0; i < g_ncols; i++) {
        ds_buf q = DS_BUF_INIT;
        ds_buf_append_ident(&q, g_cols[i].name);
        const char *col = ds_buf_str(&q);
        if (strcmp(g_cols[i].pg_type, "macaddr[]") != 0)
            ds_buf_appendf(&b, ", %s::%s", col, duck ? "VARCHAR" : "text");
        else if (duck)
            ds_buf_appendf(&b,
                           ", len(%s) || ':' || coalesce(array_to_string(list_transform(%s, lambda x: "
                           "coalesce(x, '<null>')), '|'), '')",
                           col, col);
        else
            ds_buf_appendf(&b, ", cardinality(%s) || ':' || array_to_string(%s::text[], '|', '<null>')", col,
                           col);
        ds_buf_free(&q);
    }
    ds_buf_appendf(&b, " FROM %s ORDER BY id", rel);
    char *sql = ds_buf_take(&b);
    assert_non_null(sql);
    return sql;
}

static void assert_same_values(duckdb_connection con)
{
    char *pg_sql = text_query(false, "wide"), *duck_sql = text_query(true, "t");
    PGresult *pr = PQexec(g_pg, pg_sql);
    if (PQresultStatus(pr) != PGRES_TUPLES_OK)
        fail_msg("PostgreSQL: %s", PQerrorMessage(g_pg));
    duckdb_result dr;
    if (duckdb_query(con, duck_sql, &dr) == DuckDBError)
        fail_msg("DuckDB: %s", duckdb_result_error(&dr));
    assert_int_equal(PQntuples(pr), N_ROWS);
    assert_int_equal(duckdb_row_count(&dr), N_ROWS);
    assert_int_equal(duckdb_column_count(&dr), g_ncols + 1);
    size_t non_null = 0;
    for (int r = 0; r < N_ROWS; r++) {
        for (size_t c = 0; c <= g_ncols; c++) {
            const char *pv = PQgetisnull(pr, r, (int)c) ? NULL : PQgetvalue(pr, r, (int)c);
            char *dv = duckdb_value_is_null(&dr, c, (idx_t)r) ? NULL : duckdb_value_varchar(&dr, c, (idx_t)r);
            if ((pv == NULL) != (dv == NULL) || (pv && strcmp(pv, dv) != 0))
                fail_msg("row %d, column %s: PostgreSQL %s, DuckDB %s", r + 1, c ? g_cols[c - 1].name : "id",
                         pv ? pv : "NULL", dv ? dv : "NULL");
            non_null += pv != NULL;
            duckdb_free(dv);
        }
    }
    /* The comparison saw real values, not only NULLs on both sides. */
    assert_true(non_null > (size_t)N_ROWS * g_ncols / 2);
    PQclear(pr);
    duckdb_destroy_result(&dr);
    free(pg_sql);
    free(duck_sql);
}

static void assert_names_and_types(duckdb_connection con, const pgsrc_desc *desc)
{
    assert_int_equal(desc->ncols, g_ncols + 1);
    duckdb_result dr;
    if (duckdb_query(con, "SELECT * FROM t LIMIT 0", &dr) == DuckDBError)
        fail_msg("DuckDB: %s", duckdb_result_error(&dr));
    assert_int_equal(duckdb_column_count(&dr), g_ncols + 1);
    for (size_t i = 0; i < g_ncols; i++) {
        const pgsrc_column *c = &desc->cols[i + 1];
        assert_string_equal(c->name, g_cols[i].name);
        assert_string_equal(duckdb_column_name(&dr, i + 1), g_cols[i].name);
        bool array = strcmp(g_cols[i].pg_type, "macaddr[]") == 0;
        assert_int_equal(c->cast, array ? PGSRC_CAST_TEXT_ARRAY : PGSRC_CAST_TEXT);
        assert_string_equal(c->type.ddl, array ? "VARCHAR[]" : "VARCHAR");
    }
    duckdb_destroy_result(&dr);
}

static void test_wide_cast_columns_with_hostile_names(void **state)
{
    (void)state;
    ds_error err = {0};
    pgsrc_conn conn;
    if (!pgsrc_connect(g_conninfo, 60, &conn, &err))
        fail_msg("%s", err.msg);
    pgsrc_desc desc;
    if (!pgsrc_describe(&conn, "SELECT * FROM wide ORDER BY id;", &desc, &err))
        fail_msg("%s", err.msg);
    char *copy_sql = pgsrc_copy_sql(&conn, "SELECT * FROM wide ORDER BY id;", &desc, NULL, -1);
    assert_non_null(copy_sql);

    char *dir = tl_mkdtemp(), *path = NULL;
    assert_true(asprintf(&path, "%s/wide.duckdb", dir) > 0);
    store *st;
    if (!store_open(path, &st, &err))
        fail_msg("%s", err.msg);
    duckdb_connection con = tl_store_connect(st);
    create_duck_table(con, &desc);

    pgsrc_type *types = calloc(desc.ncols, sizeof *types);
    assert_non_null(types);
    for (size_t i = 0; i < desc.ncols; i++)
        types[i] = desc.cols[i].type;
    copy_decoder *dec = copy_decoder_new(types, desc.ncols);
    assert_non_null(dec);
    pgsrc_stream stream;
    if (!pgsrc_stream_open(&stream, &conn, copy_sql, dec, NULL, &err))
        fail_msg("%s", err.msg);
    if (!store_insert_stream(st, con, "t", fill_from_stream, &stream, &err))
        fail_msg("%s", err.msg);
    assert_true(stream.ended);
    assert_int_equal(copy_decoder_rows(dec), N_ROWS);
    pgsrc_stream_close(&stream);

    assert_names_and_types(con, &desc);
    assert_same_values(con);

    copy_decoder_free(dec);
    free(types);
    free(copy_sql);
    pgsrc_desc_free(&desc);
    pgsrc_disconnect(&conn);
    duckdb_disconnect(&con);
    store_close(st);
    tl_rmtree(dir);
    free(dir);
    free(path);
}

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("wide"));
    g_pg = tl_pg_connect(g_conninfo);
    define_columns();
    create_source_table();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    PQfinish(g_pg);
    free(g_conninfo);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wide_cast_columns_with_hostile_names),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
