/* The metadata document of metadata.h: its SQL (pure builders) and its
 * computation in the caller's read transaction. */
#include "store/metadata.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const store_filter_columns[] = {"environment", "source_name", "source_component",
                                            "source_type", "metric_name", "metric_category",
                                            "kpi_name",    "kpi_category"};
const size_t store_n_filter_columns = sizeof store_filter_columns / sizeof store_filter_columns[0];

/* The latency column of the summary: the first of these present. */
static const char *const latency_columns[] = {"latency", "latency_ms", "response_time", "duration",
                                              "duration_ms"};

/* "c1", "c2", ... */
static void append_idents(ds_buf *b, const char *const *cols, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ds_buf_append(b, i ? ", " : "");
        ds_buf_append_ident(b, cols[i]);
    }
}

char *store_filter_values_sql(const char *relation, const char *const *cols, size_t n, int limit)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT ");
    append_idents(&b, cols, n);
    for (size_t i = 0; i < n; i++) {
        ds_buf_append(&b, ", CAST(");
        ds_buf_append_ident(&b, cols[i]);
        ds_buf_append(&b, " AS VARCHAR)");
    }
    ds_buf_append(&b, " FROM (SELECT GROUPING(");
    append_idents(&b, cols, n);
    ds_buf_append(&b, ") AS _ds_set, ");
    append_idents(&b, cols, n);
    ds_buf_append(&b, " FROM ");
    ds_buf_append_ident(&b, relation);
    ds_buf_append(&b, " GROUP BY GROUPING SETS (");
    for (size_t i = 0; i < n; i++) {
        ds_buf_append(&b, i ? ", (" : "(");
        ds_buf_append_ident(&b, cols[i]);
        ds_buf_append(&b, ")");
    }
    /* Each set's NULL group goes; the other sets' columns are NULL. */
    ds_buf_append(&b, ")) WHERE ");
    for (size_t i = 0; i < n; i++) {
        ds_buf_append(&b, i ? " OR " : "");
        ds_buf_append_ident(&b, cols[i]);
        ds_buf_append(&b, " IS NOT NULL");
    }
    ds_buf_append(&b, " QUALIFY row_number() OVER (PARTITION BY _ds_set ORDER BY ");
    append_idents(&b, cols, n);
    ds_buf_appendf(&b, ") <= %d ORDER BY _ds_set, ", limit);
    append_idents(&b, cols, n);
    return ds_buf_take(&b);
}

/* TRY_CAST("col" AS DOUBLE) */
static void append_double(ds_buf *b, const char *col)
{
    ds_buf_append(b, "TRY_CAST(");
    ds_buf_append_ident(b, col);
    ds_buf_append(b, " AS DOUBLE)");
}

char *store_summary_sql(const char *relation, const char *score, const char *latency, bool exact,
                        bool time_range)
{
    static const char *const quantiles[] = {"0.5", "0.95", "0.99"};
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT count(*)");
    if (score == NULL) {
        ds_buf_append(&b, ", NULL, NULL");
    } else {
        ds_buf_append(&b, ", avg(");
        append_double(&b, score);
        /* pass_rate: percent of the rows with a score that have one >= 0.5 */
        ds_buf_append(&b, "), 100.0 * count(*) FILTER (WHERE ");
        append_double(&b, score);
        ds_buf_append(&b, " >= 0.5) / nullif(count(");
        append_double(&b, score);
        ds_buf_append(&b, "), 0)");
    }
    for (size_t i = 0; i < 3; i++) {
        if (latency == NULL) {
            ds_buf_append(&b, ", NULL");
            continue;
        }
        ds_buf_append(&b, exact ? ", quantile_cont(" : ", approx_quantile(");
        append_double(&b, latency);
        ds_buf_appendf(&b, ", %s)", quantiles[i]);
    }
    if (time_range)
        ds_buf_append(&b, ", CAST(min(\"timestamp\") AS VARCHAR), CAST(max(\"timestamp\") AS VARCHAR)");
    ds_buf_append(&b, " FROM ");
    ds_buf_append_ident(&b, relation);
    return ds_buf_take(&b);
}

bool store_query_result(duckdb_connection con, const char *sql, duckdb_result *res, ds_error *err)
{
    if (sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    if (duckdb_query(con, sql, res) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s", duckdb_result_error(res));
        duckdb_destroy_result(res);
        return false;
    }
    return true;
}

/* Runs sql (malloc'd, freed here). */
static bool run_owned(duckdb_connection con, char *sql, duckdb_result *res, ds_error *err)
{
    bool ok = store_query_result(con, sql, res, err);
    free(sql);
    return ok;
}

static json_t *text_value(duckdb_result *res, idx_t col, idx_t row)
{
    char *v = duckdb_value_varchar(res, col, row);
    if (v == NULL)
        return NULL;
    json_t *j = json_string(v);
    if (j == NULL) /* DuckDB text is UTF-8; never expected */
        j = json_string("?");
    duckdb_free(v);
    return j;
}

bool store_json_native(duckdb_type type)
{
    switch (type) {
    case DUCKDB_TYPE_BOOLEAN:
    case DUCKDB_TYPE_TINYINT:
    case DUCKDB_TYPE_SMALLINT:
    case DUCKDB_TYPE_INTEGER:
    case DUCKDB_TYPE_BIGINT:
    case DUCKDB_TYPE_UTINYINT:
    case DUCKDB_TYPE_USMALLINT:
    case DUCKDB_TYPE_UINTEGER:
    case DUCKDB_TYPE_UBIGINT:
    case DUCKDB_TYPE_HUGEINT:
    case DUCKDB_TYPE_UHUGEINT:
    case DUCKDB_TYPE_FLOAT:
    case DUCKDB_TYPE_DOUBLE:
    case DUCKDB_TYPE_DECIMAL:
    case DUCKDB_TYPE_VARCHAR:
        return true;
    default:
        return false;
    }
}

json_t *store_value_json(duckdb_result *res, idx_t col, idx_t row)
{
    if (duckdb_value_is_null(res, col, row))
        return json_null();
    switch (duckdb_column_type(res, col)) {
    case DUCKDB_TYPE_BOOLEAN:
        return json_boolean(duckdb_value_boolean(res, col, row));
    case DUCKDB_TYPE_TINYINT:
    case DUCKDB_TYPE_SMALLINT:
    case DUCKDB_TYPE_INTEGER:
    case DUCKDB_TYPE_BIGINT:
    case DUCKDB_TYPE_UTINYINT:
    case DUCKDB_TYPE_USMALLINT:
    case DUCKDB_TYPE_UINTEGER:
        return json_integer((json_int_t)duckdb_value_int64(res, col, row));
    case DUCKDB_TYPE_UBIGINT:
    case DUCKDB_TYPE_HUGEINT:
    case DUCKDB_TYPE_UHUGEINT: {
        /* A number while it fits JSON's integers here, else its text. */
        char *v = duckdb_value_varchar(res, col, row);
        if (v == NULL)
            return NULL;
        errno = 0;
        char *end;
        long long n = strtoll(v, &end, 10);
        json_t *j = errno == 0 && *end == '\0' ? json_integer(n) : json_string(v);
        duckdb_free(v);
        return j;
    }
    case DUCKDB_TYPE_FLOAT:
    case DUCKDB_TYPE_DOUBLE:
    case DUCKDB_TYPE_DECIMAL: {
        double d = duckdb_value_double(res, col, row);
        return isfinite(d) ? json_real(d) : json_null();
    }
    default:
        return text_value(res, col, row);
    }
}

/* The column's DuckDB type, NULL when the relation has no such column. */
static const char *column_type(const json_t *columns, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(columns, i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "column_name")), name) == 0)
            return json_string_value(json_object_get(c, "column_type"));
    }
    return NULL;
}

static bool has_column(const json_t *columns, const char *name)
{
    return column_type(columns, name) != NULL;
}

/* A column that reads as a number. Only these are cast: a statement that
 * fails inside the commit's transaction fails the sync, so no cast of an
 * unusual type (a STRUCT, a UNION) is tried there. Other types count as
 * NULL. */
static bool numeric_column(const json_t *columns, const char *name)
{
    static const char *const types[] = {"TINYINT",  "SMALLINT",  "INTEGER",  "BIGINT",  "HUGEINT",
                                        "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
                                        "FLOAT",    "DOUBLE",    "VARCHAR"};
    const char *type = column_type(columns, name);
    if (type == NULL)
        return false;
    if (strncmp(type, "DECIMAL", 7) == 0)
        return true;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(type, types[i]) == 0)
            return true;
    return false;
}

/* [{"column_name","column_type"}] of the relation. */
static json_t *columns_json(duckdb_connection con, const char *relation, ds_error *err)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "DESCRIBE ");
    ds_buf_append_ident(&b, relation);
    duckdb_result res;
    if (!run_owned(con, ds_buf_take(&b), &res, err))
        return NULL;
    json_t *cols = json_array();
    for (idx_t r = 0; cols != NULL && r < duckdb_row_count(&res); r++)
        json_array_append_new(cols, json_pack("{s:o,s:o}", "column_name", text_value(&res, 0, r),
                                              "column_type", text_value(&res, 1, r)));
    duckdb_destroy_result(&res);
    return cols != NULL ? cols : (ds_error_set(err, DS_ERR_NOMEM, "out of memory"), NULL);
}

/* filter_values and filter_values_truncated, into doc: the filter
 * columns the relation has, in AXIS's order, read in one scan. */
static bool filter_values(duckdb_connection con, const char *relation, const json_t *columns, json_t *doc,
                          ds_error *err)
{
    json_t *values = json_object(), *truncated = json_object();
    json_object_set_new(doc, "filter_values", values);
    json_object_set_new(doc, "filter_values_truncated", truncated);
    const char *cols[sizeof store_filter_columns / sizeof store_filter_columns[0]];
    size_t n = 0;
    for (size_t i = 0; i < store_n_filter_columns; i++)
        if (has_column(columns, store_filter_columns[i]))
            cols[n++] = store_filter_columns[i];
    if (n == 0)
        return true;
    duckdb_result res;
    if (!run_owned(con, store_filter_values_sql(relation, cols, n, STORE_FILTER_VALUES_MAX + 1), &res, err))
        return false;
    json_t *lists[sizeof cols / sizeof cols[0]];
    size_t counts[sizeof cols / sizeof cols[0]] = {0};
    for (size_t c = 0; c < n; c++) {
        lists[c] = json_array();
        json_object_set_new(values, cols[c], lists[c]);
    }
    idx_t rows = duckdb_row_count(&res);
    for (idx_t r = 0; r < rows; r++) {
        size_t c = 0;
        while (c < n && duckdb_value_is_null(&res, c, r))
            c++;
        if (c == n || ++counts[c] > STORE_FILTER_VALUES_MAX)
            continue;
        /* numbers as numbers, the rest as text */
        idx_t from = store_json_native(duckdb_column_type(&res, c)) ? c : n + c;
        json_array_append_new(lists[c], store_value_json(&res, from, r));
    }
    duckdb_destroy_result(&res);
    for (size_t c = 0; c < n; c++)
        json_object_set_new(truncated, cols[c], json_boolean(counts[c] > STORE_FILTER_VALUES_MAX));
    return true;
}

/* time_range ({"min","max"} of "timestamp", or null without that column)
 * and, when the relation has metric_score, summary_stats: one scan. */
static bool totals(duckdb_connection con, const char *relation, const json_t *columns, int64_t rows,
                   json_t *doc, ds_error *err)
{
    bool has_time = has_column(columns, "timestamp"), has_score = has_column(columns, "metric_score");
    if (!has_time)
        json_object_set_new(doc, "time_range", json_null());
    if (!has_time && !has_score)
        return true;
    const char *latency = NULL;
    for (size_t i = 0; has_score && latency == NULL && i < sizeof latency_columns / sizeof latency_columns[0];
         i++)
        if (has_column(columns, latency_columns[i]))
            latency = latency_columns[i];
    if (latency != NULL && !numeric_column(columns, latency))
        latency = NULL;
    const char *score = has_score && numeric_column(columns, "metric_score") ? "metric_score" : NULL;
    duckdb_result res;
    bool exact = rows <= STORE_EXACT_PERCENTILES_MAX;
    if (!run_owned(con, store_summary_sql(relation, score, latency, exact, has_time), &res, err))
        return false;
    if (has_time)
        json_object_set_new(
            doc, "time_range",
            json_pack("{s:o,s:o}", "min", store_value_json(&res, 6, 0), "max", store_value_json(&res, 7, 0)));
    if (has_score)
        json_object_set_new(
            doc, "summary_stats",
            json_pack("{s:o,s:o,s:o,s:o,s:o,s:o}", "total_records", store_value_json(&res, 0, 0), "avg_score",
                      store_value_json(&res, 1, 0), "pass_rate", store_value_json(&res, 2, 0), "p50_latency",
                      store_value_json(&res, 3, 0), "p95_latency", store_value_json(&res, 4, 0),
                      "p99_latency", store_value_json(&res, 5, 0)));
    duckdb_destroy_result(&res);
    return true;
}

bool store_dataset_metadata(duckdb_connection con, const char *relation, json_t **out, ds_error *err)
{
    *out = NULL;
    json_t *columns = columns_json(con, relation, err);
    if (columns == NULL)
        return false;
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT count(*) FROM ");
    ds_buf_append_ident(&b, relation);
    duckdb_result res;
    if (!run_owned(con, ds_buf_take(&b), &res, err)) {
        json_decref(columns);
        return false;
    }
    json_t *doc = json_object();
    int64_t rows = duckdb_value_int64(&res, 0, 0);
    json_object_set_new(doc, "row_count", store_value_json(&res, 0, 0));
    duckdb_destroy_result(&res);
    json_object_set_new(doc, "columns", columns);
    bool ok =
        filter_values(con, relation, columns, doc, err) && totals(con, relation, columns, rows, doc, err);
    if (!ok) {
        json_decref(doc);
        return false;
    }
    *out = doc;
    return true;
}
