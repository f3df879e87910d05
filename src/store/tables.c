/* DuckDB table SQL for the sync engine: every statement is built in a
 * ds_buf with quoted identifiers and literals, then run on the caller's
 * connection (and transaction). */
#include "store/tables.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store/metadata.h"
#include "store/store.h"

bool store_append_typed_literal(ds_buf *b, const char *value, const char *type)
{
    ds_buf_append(b, "CAST(");
    ds_buf_append_literal(b, value);
    return ds_buf_appendf(b, " AS %s)", type);
}

char *store_create_table_sql(const char *ref, const store_column *cols, size_t n)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "CREATE TABLE %s (", ref);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            ds_buf_append(&b, ", ");
        ds_buf_append_ident(&b, cols[i].name);
        ds_buf_appendf(&b, " %s", cols[i].type);
    }
    ds_buf_appendc(&b, ')');
    return ds_buf_take(&b);
}

/* Runs a statement built by a builder, which returned NULL when out of memory. */
static bool exec_built(duckdb_connection con, char *sql, int64_t *changed, ds_error *err)
{
    if (sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    bool ok = store_execf(con, changed, err, "%s", sql);
    free(sql);
    return ok;
}

static bool query_built(duckdb_connection con, char *sql, char **out, ds_error *err)
{
    *out = NULL;
    if (sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    bool ok = store_query_text(con, sql, out, err);
    free(sql);
    return ok;
}

bool store_drop_table(duckdb_connection con, const char *ref, ds_error *err)
{
    return store_execf(con, NULL, err, "DROP TABLE IF EXISTS %s", ref);
}

bool store_create_empty(duckdb_connection con, const char *ref, const store_column *cols, size_t n,
                        ds_error *err)
{
    return store_drop_table(con, ref, err) &&
           exec_built(con, store_create_table_sql(ref, cols, n), NULL, err);
}

bool store_is_table(duckdb_connection con, const char *name)
{
    duckdb_table_description desc = NULL;
    bool found = duckdb_table_description_create(con, "main", name, &desc) == DuckDBSuccess;
    duckdb_table_description_destroy(&desc);
    return found;
}

bool store_drop_relation(duckdb_connection con, const char *name, ds_error *err)
{
    char *q = ds_quote_ident(name);
    if (q == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    bool ok = store_is_table(con, name) ? store_drop_table(con, q, err)
                                        : store_execf(con, NULL, err, "DROP VIEW IF EXISTS %s", q);
    free(q);
    return ok;
}

bool store_swap_in(duckdb_connection con, const char *staging_ref, const char *table, ds_error *err)
{
    char *qt = ds_quote_ident(table);
    if (qt == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    bool ok = store_drop_relation(con, table, err) &&
              store_execf(con, NULL, err, "ALTER TABLE %s RENAME TO %s", staging_ref, qt);
    free(qt);
    return ok;
}

bool store_count_rows(duckdb_connection con, const char *name, int64_t *rows, ds_error *err)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT count(*) FROM ");
    ds_buf_append_ident(&b, name);
    char *sql = ds_buf_take_or_err(&b, err);
    bool ok = sql != NULL && store_query_int(con, sql, rows, err);
    free(sql);
    return ok;
}

/* DuckDB compares names without case (ASCII only), so does this. */
static bool has_column(const store_column *cols, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(cols[i].name, name) == 0)
            return true;
    return false;
}

static bool chosen(char *const *aliases, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (aliases[i] != NULL && strcasecmp(aliases[i], name) == 0)
            return true;
    return false;
}

/* The view's name for a dataset column that the results also have:
 * dataset_<name>, prefixed again while that names another column of the
 * view (a results column, a dataset column, or an alias chosen before). */
static char *dataset_alias(const char *name, const store_column *dataset_cols, size_t n_dataset,
                           const store_column *results_cols, size_t n_results, char *const *aliases)
{
    ds_buf alias = DS_BUF_INIT;
    ds_buf_append(&alias, "dataset_");
    ds_buf_append(&alias, name);
    while (!alias.failed &&
           (has_column(results_cols, n_results, alias.data) ||
            has_column(dataset_cols, n_dataset, alias.data) || chosen(aliases, n_dataset, alias.data))) {
        ds_buf again = DS_BUF_INIT;
        ds_buf_append(&again, "dataset_");
        ds_buf_append(&again, alias.data);
        ds_buf_free(&alias);
        alias = again;
    }
    return ds_buf_take(&alias);
}

static void free_aliases(char **aliases, size_t n)
{
    for (size_t i = 0; aliases != NULL && i < n; i++)
        free(aliases[i]);
    free(aliases);
}

/* Whether name is one of the join's columns (without case, as DuckDB). */
static bool is_join_column(const store_join *join, const char *name)
{
    for (size_t i = 0; i < join->n; i++)
        if (strcasecmp(join->cols[i], name) == 0)
            return true;
    return false;
}

char *store_view_sql(const char *view, const char *dataset_table, const store_column *dataset_cols,
                     size_t n_dataset, const char *results_table, const store_column *results_cols,
                     size_t n_results, const store_join *join)
{
    if (join->n == 0)
        return NULL;
    char **aliases = calloc(n_dataset ? n_dataset : 1, sizeof *aliases);
    if (aliases == NULL)
        return NULL;
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "CREATE OR REPLACE VIEW ");
    ds_buf_append_ident(&b, view);
    ds_buf_append(&b, " AS SELECT ");
    for (size_t i = 0; i < n_results; i++) {
        ds_buf_append(&b, i ? ", r." : "r.");
        ds_buf_append_ident(&b, results_cols[i].name);
    }
    bool listed = n_results > 0;
    for (size_t i = 0; i < n_dataset && !b.failed; i++) {
        const char *name = dataset_cols[i].name;
        if (is_join_column(join, name))
            continue;
        ds_buf_append(&b, listed ? ", d." : "d.");
        listed = true;
        ds_buf_append_ident(&b, name);
        if (!has_column(results_cols, n_results, name))
            continue;
        aliases[i] = dataset_alias(name, dataset_cols, n_dataset, results_cols, n_results, aliases);
        if (aliases[i] == NULL)
            b.failed = true;
        ds_buf_append(&b, " AS ");
        ds_buf_append_ident(&b, aliases[i] ? aliases[i] : "");
    }
    free_aliases(aliases, n_dataset);
    ds_buf_append(&b, " FROM ");
    ds_buf_append_ident(&b, results_table);
    ds_buf_append(&b, join->inner ? " AS r INNER JOIN " : " AS r LEFT JOIN ");
    ds_buf_append_ident(&b, dataset_table);
    for (size_t i = 0; i < join->n; i++) {
        ds_buf_append(&b, i ? " AND r." : " AS d ON r.");
        ds_buf_append_ident(&b, join->cols[i]);
        ds_buf_append(&b, " = d.");
        ds_buf_append_ident(&b, join->cols[i]);
    }
    return ds_buf_take(&b);
}

static bool is_number_type(const char *type)
{
    static const char *const numbers[] = {"TINYINT",  "SMALLINT",  "INTEGER",  "BIGINT",  "HUGEINT",
                                          "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
                                          "DECIMAL",  "FLOAT",     "DOUBLE",   "REAL"};
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++)
        if (strncasecmp(type, numbers[i], strlen(numbers[i])) == 0)
            return true;
    return false;
}

static const char *type_of(const store_column *cols, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(cols[i].name, name) == 0)
            return cols[i].type;
    return NULL;
}

const char *store_join_mismatch(const store_column *dcols, size_t nd, const store_column *rcols, size_t nr,
                                const store_join *join, const char **dtype, const char **rtype)
{
    for (size_t i = 0; i < join->n; i++) {
        const char *d = type_of(dcols, nd, join->cols[i]), *r = type_of(rcols, nr, join->cols[i]);
        if (d == NULL || r == NULL || strcasecmp(d, r) == 0 || (is_number_type(d) && is_number_type(r)))
            continue;
        *dtype = d;
        *rtype = r;
        return join->cols[i];
    }
    return NULL;
}

bool store_view_definition(duckdb_connection con, const char *view, char **sql, ds_error *err)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT sql FROM duckdb_views() WHERE database_name = current_database() AND "
                      "schema_name = 'main' AND view_name = ");
    ds_buf_append_literal(&b, view);
    return query_built(con, ds_buf_take(&b), sql, err);
}

/* `"a", "b"` or `t."a" IS NOT DISTINCT FROM s."a" AND ...`. */
static void append_key(ds_buf *b, char *const *key, size_t nkey, bool match)
{
    for (size_t i = 0; i < nkey; i++) {
        if (i > 0)
            ds_buf_append(b, match ? " AND " : ", ");
        if (match) {
            ds_buf_append(b, "t.");
            ds_buf_append_ident(b, key[i]);
            ds_buf_append(b, " IS NOT DISTINCT FROM s.");
        }
        ds_buf_append_ident(b, key[i]);
    }
}

/* The stored rows a read from batch->start can meet again, as a relation:
 * those at or past it and those without a value (read every time); all of
 * them when the read started at the beginning (start NULL). Two scans, not
 * one `>= OR IS NULL` filter, which DuckDB cannot prune by row group: at 4M
 * stored rows that filter cost 6 ms, the two 0.6 ms. The one place that says
 * which rows a re-read covers, unmeasured (a measured merge splits them:
 * append_measured_new_rows). */
static void append_overlap_rows(ds_buf *b, const store_batch *batch)
{
    if (batch->start == NULL) {
        ds_buf_append_ident(b, batch->table);
        return;
    }
    ds_buf_append(b, "(SELECT * FROM ");
    ds_buf_append_ident(b, batch->table);
    ds_buf_append(b, " WHERE ");
    ds_buf_append_ident(b, batch->order_col);
    ds_buf_append(b, batch->start_inclusive ? " >= " : " > ");
    store_append_typed_literal(b, batch->start, batch->type);
    ds_buf_append(b, " UNION ALL SELECT * FROM ");
    ds_buf_append_ident(b, batch->table);
    ds_buf_append(b, " WHERE ");
    ds_buf_append_ident(b, batch->order_col);
    ds_buf_append(b, " IS NULL) AS _overlap");
}

/* `hash(cols) % slices = slice`: the rows of one slice. Equal rows hash
 * alike, so an upsert sliced by its key, or an EXCEPT ALL sliced by the
 * incremental column, gives the same result slice by slice as at once. */
static void append_slice(ds_buf *b, const store_batch *batch, int64_t slices, int64_t slice)
{
    ds_buf_append(b, "hash(");
    if (batch->nkey > 0)
        append_key(b, batch->key, batch->nkey, false);
    else
        ds_buf_append_ident(b, batch->order_col);
    ds_buf_appendf(b, ") %% %" PRId64 " = %" PRId64, slices, slice);
}

/* The stored rows with a value that the read met again: `col >= start`
 * (`>` when exclusive), or `col IS NOT NULL` after a read from the
 * beginning. */
static void append_past_start(ds_buf *b, const store_batch *batch)
{
    ds_buf_append_ident(b, batch->order_col);
    if (batch->start == NULL) {
        ds_buf_append(b, " IS NOT NULL");
        return;
    }
    ds_buf_append(b, batch->start_inclusive ? " >= " : " > ");
    store_append_typed_literal(b, batch->start, batch->type);
}

/* Their maximum, as measured: a literal, not a subquery, as an upsert
 * deletes stored rows before it inserts (and a slice inserts before the
 * next), so the maximum must not be computed again. */
static void append_stored_max(ds_buf *b, const store_batch *batch)
{
    store_append_typed_literal(b, batch->shape->stored_max, batch->type);
}

/* Which rows of the staging or the stored table a part of a measured
 * merge takes. */
typedef enum merge_rows {
    ROWS_ABOVE_STORED_MAX,
    ROWS_AT_OR_BELOW_STORED_MAX,
    ROWS_WITH_VALUE,
    ROWS_PAST_START,
    ROWS_WITHOUT_VALUE,
} merge_rows;

static void append_part(ds_buf *b, const store_batch *batch, bool stored, merge_rows rows, int64_t slices,
                        int64_t slice)
{
    ds_buf_append(b, "SELECT * FROM ");
    if (stored)
        ds_buf_append_ident(b, batch->table);
    else
        ds_buf_append(b, batch->staging_ref);
    ds_buf_append(b, " WHERE ");
    if (rows == ROWS_PAST_START) {
        append_past_start(b, batch);
    } else {
        ds_buf_append_ident(b, batch->order_col);
        static const char *const ops[] = {
            [ROWS_ABOVE_STORED_MAX] = " > ",
            [ROWS_AT_OR_BELOW_STORED_MAX] = " <= ",
            [ROWS_WITH_VALUE] = " IS NOT NULL",
            [ROWS_WITHOUT_VALUE] = " IS NULL",
        };
        ds_buf_append(b, ops[rows]);
        if (rows == ROWS_ABOVE_STORED_MAX || rows == ROWS_AT_OR_BELOW_STORED_MAX)
            append_stored_max(b, batch);
    }
    if (slices > 1) {
        ds_buf_append(b, " AND ");
        append_slice(b, batch, slices, slice);
    }
}

/* The staged rows of `rows` less the stored ones of `stored_rows` (EXCEPT
 * ALL), or all of them when no stored row can equal one. */
static void append_compared_part(ds_buf *b, const store_batch *batch, merge_rows rows, merge_rows stored_rows,
                                 bool compare, int64_t slices, int64_t slice)
{
    if (!compare) {
        append_part(b, batch, false, rows, slices, slice);
        return;
    }
    ds_buf_append(b, "(");
    append_part(b, batch, false, rows, slices, slice);
    ds_buf_append(b, " EXCEPT ALL ");
    append_part(b, batch, true, stored_rows, slices, slice);
    ds_buf_append(b, ")");
}

/* The new rows of a measured merge: a staged row with a value above the
 * stored maximum equals no stored row the read met, a row with a value
 * only stored rows with a value, a row without one only rows without one.
 * So only the staged rows at or below the maximum and those without a
 * value are compared, each with its own stored rows; the others are taken
 * as they are. The same rows as the unmeasured form, found faster. */
static void append_measured_new_rows(ds_buf *b, const store_batch *batch, int64_t slices, int64_t slice)
{
    const store_overlap *shape = batch->shape;
    bool bounded = shape->stored_rows > 0;
    ds_buf_append(b, "(");
    append_part(b, batch, false, bounded ? ROWS_ABOVE_STORED_MAX : ROWS_WITH_VALUE, slices, slice);
    if (bounded && shape->staged_below > 0) {
        ds_buf_append(b, " UNION ALL ");
        append_compared_part(b, batch, ROWS_AT_OR_BELOW_STORED_MAX, ROWS_PAST_START, true, slices, slice);
    }
    if (shape->staged_nulls > 0) {
        ds_buf_append(b, " UNION ALL ");
        append_compared_part(b, batch, ROWS_WITHOUT_VALUE, ROWS_WITHOUT_VALUE, shape->stored_nulls > 0,
                             slices, slice);
    }
    ds_buf_append(b, ") AS _new_rows");
}

/* The rows of one slice of the batch that are not stored already, as a
 * relation for FROM: the staging rows minus the stored rows the read met
 * again (EXCEPT ALL), or the staging table itself when it meets none. */
static void append_new_rows(ds_buf *b, const store_batch *batch, int64_t slices, int64_t slice)
{
    bool sliced = slices > 1;
    if (!batch->overlap && !sliced) {
        ds_buf_append(b, batch->staging_ref);
        return;
    }
    if (batch->overlap && batch->shape != NULL && store_overlap_usable(batch->shape)) {
        append_measured_new_rows(b, batch, slices, slice);
        return;
    }
    ds_buf_appendf(b, "(SELECT * FROM %s", batch->staging_ref);
    if (sliced) {
        ds_buf_append(b, " WHERE ");
        append_slice(b, batch, slices, slice);
    }
    if (batch->overlap) {
        ds_buf_append(b, " EXCEPT ALL SELECT * FROM ");
        append_overlap_rows(b, batch);
        if (sliced) {
            ds_buf_append(b, " WHERE ");
            append_slice(b, batch, slices, slice);
        }
    }
    ds_buf_append(b, ") AS _new_rows");
}

char *store_batch_new_rows_sql(const store_batch *batch)
{
    ds_buf b = DS_BUF_INIT;
    append_new_rows(&b, batch, 1, 0);
    return ds_buf_take(&b);
}

size_t store_merge_slice_sql(const store_batch *batch, int64_t slices, int64_t slice, char *sql[2])
{
    ds_buf b = DS_BUF_INIT, rows = DS_BUF_INIT;
    size_t n = 0;
    sql[0] = sql[1] = NULL;
    /* Rows read again unchanged are left alone (an upsert does not count
     * them as updates): both kinds of merge take the new rows only. */
    append_new_rows(&rows, batch, slices, slice);
    const char *from = ds_buf_str(&rows);
    if (from == NULL) {
        ds_buf_free(&rows);
        return 0;
    }
    if (batch->nkey > 0) {
        /* Upsert: the newest version of each key replaces what is stored. */
        ds_buf_append(&b, "DELETE FROM ");
        ds_buf_append_ident(&b, batch->table);
        ds_buf_append(&b, " AS t USING (SELECT DISTINCT ");
        append_key(&b, batch->key, batch->nkey, false);
        ds_buf_appendf(&b, " FROM %s) AS s WHERE ", from);
        append_key(&b, batch->key, batch->nkey, true);
        sql[n++] = ds_buf_take(&b);
        ds_buf_append(&b, "INSERT INTO ");
        ds_buf_append_ident(&b, batch->table);
        ds_buf_appendf(&b, " SELECT * FROM %s QUALIFY row_number() OVER (PARTITION BY ", from);
        append_key(&b, batch->key, batch->nkey, false);
        ds_buf_append(&b, " ORDER BY ");
        ds_buf_append_ident(&b, batch->order_col);
        ds_buf_append(&b, " DESC NULLS LAST) = 1");
    } else {
        /* Exact for append-only tables: a row read again is not stored twice. */
        ds_buf_append(&b, "INSERT INTO ");
        ds_buf_append_ident(&b, batch->table);
        ds_buf_appendf(&b, " SELECT * FROM %s", from);
    }
    ds_buf_free(&rows);
    sql[n++] = ds_buf_take(&b);
    for (size_t i = 0; i < n; i++)
        if (sql[i] == NULL) {
            for (size_t j = 0; j < n; j++)
                free(sql[j]);
            sql[0] = sql[1] = NULL;
            return 0;
        }
    return n;
}

size_t store_merge_sql(const store_batch *batch, char *sql[2])
{
    return store_merge_slice_sql(batch, 1, 0, sql);
}

char *store_overlap_stored_sql(const store_batch *batch)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT count(*), max(");
    ds_buf_append_ident(&b, batch->order_col);
    /* TRY_CAST: a statement that fails ends DuckDB's transaction. */
    ds_buf_append(&b, ")::VARCHAR, TRY_CAST(max(");
    ds_buf_append_ident(&b, batch->order_col);
    ds_buf_appendf(&b, ")::VARCHAR AS %s) = max(", batch->type);
    ds_buf_append_ident(&b, batch->order_col);
    ds_buf_append(&b, "), (SELECT count(*) FROM ");
    ds_buf_append_ident(&b, batch->table);
    ds_buf_append(&b, " WHERE ");
    ds_buf_append_ident(&b, batch->order_col);
    ds_buf_append(&b, " IS NULL), current_setting('memory_limit') FROM ");
    ds_buf_append_ident(&b, batch->table);
    ds_buf_append(&b, " WHERE ");
    append_past_start(&b, batch);
    return ds_buf_take(&b);
}

char *store_overlap_staged_sql(const store_batch *batch, const char *stored_max)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT count(*), count(*) FILTER (WHERE ");
    if (stored_max != NULL) {
        ds_buf_append_ident(&b, batch->order_col);
        ds_buf_append(&b, " <= ");
        store_append_typed_literal(&b, stored_max, batch->type);
    } else {
        ds_buf_append(&b, "false");
    }
    ds_buf_append(&b, "), count(*) FILTER (WHERE ");
    ds_buf_append_ident(&b, batch->order_col);
    ds_buf_appendf(&b, " IS NULL) FROM %s", batch->staging_ref);
    return ds_buf_take(&b);
}

/* DuckDB's own text of a size ("61.0 MiB", "1.5 GiB", "512 bytes") in bytes. */
static int64_t parse_size(const char *text)
{
    char *end;
    double v = strtod(text, &end);
    while (*end == ' ')
        end++;
    static const struct {
        const char *unit;
        double scale;
    } units[] = {{"bytes", 1},          {"B", 1},
                 {"KiB", 1024.0},       {"MiB", 1048576.0},
                 {"GiB", 1073741824.0}, {"TiB", 1099511627776.0},
                 {"KB", 1e3},           {"MB", 1e6},
                 {"GB", 1e9},           {"TB", 1e12}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcasecmp(end, units[i].unit) == 0)
            return v > 0 ? (int64_t)(v * units[i].scale) : 0;
    return 0;
}

/* Rows a slice of the merge may take, in bytes of their text: half of
 * memory_limit (DuckDB's rows are more compact than their text; an eighth
 * made 36 slices of a 130k-row batch and an 8x slower merge, since each
 * slice scans both tables whole). */
#define MERGE_SLICE_SHARE 2
#define MERGE_MAX_SLICES 4096

int64_t store_merge_slices(int64_t rows, int64_t row_bytes, int64_t memory_limit)
{
    if (rows <= 0 || row_bytes <= 0 || memory_limit <= 0)
        return 1;
    double budget = (double)memory_limit / MERGE_SLICE_SHARE;
    double slices = (double)rows * (double)row_bytes / budget;
    if (slices <= 1)
        return 1;
    return slices >= MERGE_MAX_SLICES ? MERGE_MAX_SLICES : (int64_t)ceil(slices);
}

/* Runs a built SELECT (freed here). */
static bool query_row(duckdb_connection con, char *sql, duckdb_result *res, ds_error *err)
{
    bool ok = store_query_result(con, sql, res, err);
    free(sql);
    return ok;
}

/* Two statements: one that filters in both tables at once took 8 ms at 1M
 * stored rows, these two 1.5 ms together. */
bool store_measure_overlap(duckdb_connection con, const store_batch *batch, store_overlap *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    duckdb_result res;
    if (!query_row(con, store_overlap_stored_sql(batch), &res, err))
        return false;
    bool ok = true;
    out->stored_rows = duckdb_value_int64(&res, 0, 0);
    char *max = duckdb_value_varchar(&res, 1, 0);
    if (max != NULL && duckdb_value_boolean(&res, 2, 0) && (out->stored_max = strdup(max)) == NULL)
        ok = ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    duckdb_free(max);
    out->stored_nulls = duckdb_value_int64(&res, 3, 0);
    char *limit = duckdb_value_varchar(&res, 4, 0);
    out->memory_limit = limit ? parse_size(limit) : 0;
    duckdb_free(limit);
    duckdb_destroy_result(&res);
    /* Without an exact maximum none is counted below it: the merge is then
     * unmeasured and compares every staged row. */
    if (ok && !query_row(con, store_overlap_staged_sql(batch, out->stored_max), &res, err))
        ok = false;
    else if (ok) {
        out->staged_rows = duckdb_value_int64(&res, 0, 0);
        out->staged_below = duckdb_value_int64(&res, 1, 0);
        out->staged_nulls = duckdb_value_int64(&res, 2, 0);
        duckdb_destroy_result(&res);
    }
    if (!ok)
        store_overlap_free(out);
    return ok;
}

void store_overlap_free(store_overlap *shape)
{
    free(shape->stored_max);
    shape->stored_max = NULL;
}

bool store_overlap_usable(const store_overlap *shape)
{
    return shape->stored_rows == 0 || shape->stored_max != NULL;
}

/* The average width of a staged row as text, from a sample. */
static bool sample_row_bytes(duckdb_connection con, const store_batch *batch, int64_t *bytes, ds_error *err)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b,
                   "SELECT coalesce(avg(strlen(CAST(s AS VARCHAR))), 0)::BIGINT::VARCHAR FROM %s AS s "
                   "USING SAMPLE 1000 ROWS",
                   batch->staging_ref);
    char *text = NULL;
    if (!query_built(con, ds_buf_take(&b), &text, err))
        return false;
    *bytes = text ? strtoll(text, NULL, 10) : 0;
    free(text);
    return true;
}

/* EXCEPT ALL does not spill beyond memory_limit: the rows it compares (the
 * staged ones that may be stored already, with the stored rows they may
 * equal; every staged row when the merge cannot use the shape) are split
 * into slices that fit (an upsert's join and row_number() spill on their
 * own). */
static bool merge_slices(duckdb_connection con, const store_batch *batch, const store_overlap *shape,
                         int64_t *slices, ds_error *err)
{
    *slices = 1;
    int64_t compared = 0;
    if (batch->shape == NULL) {
        compared = shape->staged_rows + shape->stored_rows + shape->stored_nulls;
    } else {
        if (shape->stored_rows > 0 && shape->staged_below > 0)
            compared += shape->staged_below + shape->stored_rows;
        if (shape->stored_nulls > 0 && shape->staged_nulls > 0)
            compared += shape->staged_nulls + shape->stored_nulls;
    }
    if (compared == 0)
        return true;
    int64_t row_bytes = batch->row_bytes;
    if (row_bytes <= 0 && !sample_row_bytes(con, batch, &row_bytes, err))
        return false;
    *slices = store_merge_slices(compared, row_bytes, shape->memory_limit);
    return true;
}

void store_explain_out_of_memory(ds_error *err, const char *what)
{
    static const char *const marks[] = {"Out of Memory Error", "failed to pin block",
                                        "could not allocate block", "failed to allocate data"};
    bool oom = false;
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++)
        oom |= strstr(err->msg, marks[i]) != NULL;
    if (!oom)
        return;
    /* DuckDB's first line only: its advice names its own SET statement. */
    char duck[sizeof err->msg];
    snprintf(duck, sizeof duck, "%s", err->msg);
    duck[strcspn(duck, "\n")] = '\0';
    ds_error_set(err, DS_ERR_NOMEM,
                 "%s ran out of DuckDB's memory_limit: raise memory_limit in duckdb.yaml (%s)", what, duck);
}

bool store_merge(duckdb_connection con, const store_batch *batch, int64_t *inserted, int64_t *updated,
                 ds_error *err)
{
    int64_t removed = 0, added = 0, slices = 1;
    store_overlap shape = {0};
    store_batch measured = *batch;
    measured.shape = NULL;
    bool ok = true;
    if (batch->overlap) {
        ok = store_measure_overlap(con, batch, &shape, err);
        if (store_overlap_usable(&shape))
            measured.shape = &shape;
        ok = ok && merge_slices(con, &measured, &shape, &slices, err);
    }
    for (int64_t k = 0; ok && k < slices; k++) {
        char *sql[2];
        size_t n = store_merge_slice_sql(&measured, slices, k, sql);
        if (n == 0) {
            ok = ds_error_set(err, DS_ERR_NOMEM, "out of memory");
            break;
        }
        int64_t r = 0, a = 0;
        if (n == 2)
            ok = exec_built(con, sql[0], &r, err);
        if (ok)
            ok = exec_built(con, sql[n - 1], &a, err);
        else if (n == 2)
            free(sql[1]);
        removed += r;
        added += a;
    }
    store_overlap_free(&shape);
    *updated = removed < added ? removed : added;
    *inserted = added - *updated;
    if (!ok) {
        char what[300];
        snprintf(what, sizeof what, "merging the batch into %s", batch->table);
        store_explain_out_of_memory(err, what);
    }
    return ok;
}

char *store_max_sql(const char *table, const char *col, const char *type, const char *floor)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT max(");
    ds_buf_append_ident(&b, col);
    ds_buf_append(&b, ")::VARCHAR FROM ");
    ds_buf_append_ident(&b, table);
    if (floor != NULL) {
        ds_buf_append(&b, " WHERE ");
        ds_buf_append_ident(&b, col);
        ds_buf_append(&b, " >= ");
        store_append_typed_literal(&b, floor, type);
    }
    return ds_buf_take(&b);
}

/* The previous watermark is normally a floor for the maximum (the rows that
 * set it are still stored), so the scan is filtered to col >= floor:
 * DuckDB's row-group min/max then skips all but the newest row groups.
 * Nothing at or past the floor (an upsert replaced those rows) means a full
 * scan. */
bool store_max_value(duckdb_connection con, const char *table, const char *col, const char *type,
                     const char *floor, char **out, ds_error *err)
{
    *out = NULL;
    if (floor != NULL) {
        if (!query_built(con, store_max_sql(table, col, type, floor), out, err))
            return false;
        if (*out != NULL)
            return true;
    }
    return query_built(con, store_max_sql(table, col, type, NULL), out, err);
}

/* Reads n digits. */
static bool digits(const char **p, int n, int64_t *out)
{
    int64_t v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return false;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return true;
}

/* "YYYY-MM-DD HH:MM:SS[.ffffff]" and the suffix (how DuckDB prints a
 * TIMESTAMP, or with "+00" a TIMESTAMPTZ in UTC, and how the commit
 * horizon is written) as a number that orders like the time; false for
 * any other text (years past 9999, BC, infinity), which DuckDB compares. */
static bool time_key(const char *s, const char *suffix, int64_t *out)
{
    int64_t y, mo, d, h, mi, sec, frac = 0;
    const char *p = s;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' || !digits(&p, 2, &d) ||
        *p++ != ' ' || !digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
        !digits(&p, 2, &sec))
        return false;
    if (*p == '.') {
        p++;
        int n = 0;
        for (; n < 6 && *p >= '0' && *p <= '9'; n++, p++)
            frac = frac * 10 + (*p - '0');
        if (n == 0)
            return false;
        for (; n < 6; n++)
            frac *= 10;
    }
    if (strcmp(p, suffix) != 0)
        return false;
    *out = ((((((y * 13 + mo) * 32 + d) * 24 + h) * 60 + mi) * 61 + sec) * 1000000) + frac;
    return true;
}

bool store_value_at_least(duckdb_connection con, const char *a, const char *b, const char *type, bool *out,
                          ds_error *err)
{
    /* A quiet sync compares each table's maximum with the horizon: in C
     * when both are plain times (a DuckDB query costs ~0.3 ms). */
    int64_t ka, kb;
    const char *suffix = strcmp(type, "TIMESTAMPTZ") == 0 ? "+00"
                         : strcmp(type, "TIMESTAMP") == 0 ? ""
                                                          : NULL;
    if (suffix != NULL && time_key(a, suffix, &ka) && time_key(b, suffix, &kb)) {
        *out = ka >= kb;
        return true;
    }
    ds_buf sql = DS_BUF_INIT;
    ds_buf_append(&sql, "SELECT ");
    store_append_typed_literal(&sql, a, type);
    ds_buf_append(&sql, " >= ");
    store_append_typed_literal(&sql, b, type);
    char *answer = NULL;
    bool ok = query_built(con, ds_buf_take(&sql), &answer, err);
    *out = ok && answer != NULL && strcmp(answer, "true") == 0;
    free(answer);
    return ok;
}

bool store_canonical_value(duckdb_connection con, const char *value, const char *type, char **out,
                           ds_error *err)
{
    ds_buf sql = DS_BUF_INIT;
    ds_buf_append(&sql, "SELECT ");
    store_append_typed_literal(&sql, value, type);
    ds_buf_append(&sql, "::VARCHAR");
    return query_built(con, ds_buf_take(&sql), out, err);
}

/* The start never passes the value: a numeric lookback is subtracted
 * exactly (DECIMAL) unless the type is floating point, and a time of day
 * that would wrap to the evening before stays at the value. */
char *store_minus_sql(const char *value, const char *type, const char *lookback, bool lookback_is_number)
{
    bool floating = strcmp(type, "DOUBLE") == 0 || strcmp(type, "FLOAT") == 0;
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT least(");
    store_append_typed_literal(&b, value, type);
    ds_buf_append(&b, ", (");
    store_append_typed_literal(&b, value, type);
    ds_buf_append(&b, " - ");
    store_append_typed_literal(&b, lookback,
                               !lookback_is_number ? "INTERVAL"
                               : floating          ? "DOUBLE"
                                                   : "DECIMAL(38,10)");
    if (lookback_is_number)
        ds_buf_appendf(&b, ")::%s)::VARCHAR", type);
    else
        ds_buf_append(&b, "))::VARCHAR");
    return ds_buf_take(&b);
}

bool store_value_minus(duckdb_connection con, const char *value, const char *type, const char *lookback,
                       bool lookback_is_number, char **out, ds_error *err)
{
    return query_built(con, store_minus_sql(value, type, lookback, lookback_is_number), out, err);
}

char *store_duplicate_ids_sql(const char *staging_ref, const char *table, int64_t slices, int64_t slice)
{
    ds_buf in_slice = DS_BUF_INIT, b = DS_BUF_INIT;
    if (slices <= 1)
        ds_buf_append(&in_slice, "true");
    else
        ds_buf_appendf(&in_slice, "hash(dataset_id) %% %" PRId64 " = %" PRId64, slices, slice);
    const char *cond = ds_buf_str(&in_slice);
    if (cond == NULL) {
        ds_buf_free(&in_slice);
        return NULL;
    }
    ds_buf_append(&b, "SELECT count(*) = 0 FROM (SELECT dataset_id FROM ");
    if (table == NULL) {
        ds_buf_appendf(&b, "%s WHERE %s", staging_ref, cond);
    } else {
        ds_buf_appendf(&b, "(SELECT dataset_id FROM %s WHERE %s UNION ALL SELECT dataset_id FROM ",
                       staging_ref, cond);
        ds_buf_append_ident(&b, table);
        ds_buf_appendf(&b, " WHERE %s AND dataset_id IN (SELECT dataset_id FROM %s WHERE %s))", cond,
                       staging_ref, cond);
    }
    ds_buf_append(&b, " GROUP BY dataset_id HAVING count(*) > 1)");
    ds_buf_free(&in_slice);
    return ds_buf_take(&b);
}

/* One GROUP BY over 1M uuids did not fit 64 MB: about 200k ids a slice. */
#define IDS_PER_SLICE 200000

bool store_ids_unique(duckdb_connection con, const char *staging_ref, const char *table, int64_t rows,
                      bool *unique, ds_error *err)
{
    int64_t slices = rows / IDS_PER_SLICE + 1;
    *unique = true;
    for (int64_t i = 0; *unique && i < slices; i++) {
        char *answer = NULL;
        if (!query_built(con, store_duplicate_ids_sql(staging_ref, table, slices, i), &answer, err))
            return false;
        *unique = answer != NULL && strcmp(answer, "true") == 0;
        free(answer);
    }
    return true;
}
