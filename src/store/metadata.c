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

char *store_distinct_sql(const char *relation, const char *col, int limit)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT DISTINCT ");
    ds_buf_append_ident(&b, col);
    ds_buf_append(&b, ", CAST(");
    ds_buf_append_ident(&b, col);
    ds_buf_append(&b, " AS VARCHAR) FROM ");
    ds_buf_append_ident(&b, relation);
    ds_buf_append(&b, " WHERE ");
    ds_buf_append_ident(&b, col);
    ds_buf_appendf(&b, " IS NOT NULL ORDER BY 1 LIMIT %d", limit);
    return ds_buf_take(&b);
}

/* TRY_CAST("col" AS DOUBLE) */
static void append_double(ds_buf *b, const char *col)
{
    ds_buf_append(b, "TRY_CAST(");
    ds_buf_append_ident(b, col);
    ds_buf_append(b, " AS DOUBLE)");
}

char *store_summary_sql(const char *relation, const char *score, const char *latency, bool exact)
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

/* filter_values and filter_values_truncated, into doc. */
static bool filter_values(duckdb_connection con, const char *relation, const json_t *columns, json_t *doc,
                          ds_error *err)
{
    json_t *values = json_object(), *truncated = json_object();
    json_object_set_new(doc, "filter_values", values);
    json_object_set_new(doc, "filter_values_truncated", truncated);
    for (size_t i = 0; i < store_n_filter_columns; i++) {
        const char *col = store_filter_columns[i];
        if (!has_column(columns, col))
            continue;
        duckdb_result res;
        if (!run_owned(con, store_distinct_sql(relation, col, STORE_FILTER_VALUES_MAX + 1), &res, err))
            return false;
        json_t *list = json_array();
        idx_t n = duckdb_row_count(&res);
        /* sorted by the value itself; numbers as numbers, the rest as text */
        idx_t from = store_json_native(duckdb_column_type(&res, 0)) ? 0 : 1;
        for (idx_t r = 0; r < n && r < STORE_FILTER_VALUES_MAX; r++)
            json_array_append_new(list, store_value_json(&res, from, r));
        duckdb_destroy_result(&res);
        json_object_set_new(values, col, list);
        json_object_set_new(truncated, col, json_boolean(n > STORE_FILTER_VALUES_MAX));
    }
    return true;
}

/* {"min","max"} of "timestamp", or null without that column. */
static bool time_range(duckdb_connection con, const char *relation, const json_t *columns, json_t *doc,
                       ds_error *err)
{
    if (!has_column(columns, "timestamp")) {
        json_object_set_new(doc, "time_range", json_null());
        return true;
    }
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b,
                  "SELECT CAST(min(\"timestamp\") AS VARCHAR), CAST(max(\"timestamp\") AS VARCHAR) FROM ");
    ds_buf_append_ident(&b, relation);
    duckdb_result res;
    if (!run_owned(con, ds_buf_take(&b), &res, err))
        return false;
    json_object_set_new(
        doc, "time_range",
        json_pack("{s:o,s:o}", "min", store_value_json(&res, 0, 0), "max", store_value_json(&res, 1, 0)));
    duckdb_destroy_result(&res);
    return true;
}

/* summary_stats, when the relation has metric_score. */
static bool summary_stats(duckdb_connection con, const char *relation, const json_t *columns, int64_t rows,
                          json_t *doc, ds_error *err)
{
    if (!has_column(columns, "metric_score"))
        return true;
    const char *latency = NULL;
    for (size_t i = 0; latency == NULL && i < sizeof latency_columns / sizeof latency_columns[0]; i++)
        if (has_column(columns, latency_columns[i]))
            latency = latency_columns[i];
    if (latency != NULL && !numeric_column(columns, latency))
        latency = NULL;
    const char *score = numeric_column(columns, "metric_score") ? "metric_score" : NULL;
    duckdb_result res;
    bool exact = rows <= STORE_EXACT_PERCENTILES_MAX;
    if (!run_owned(con, store_summary_sql(relation, score, latency, exact), &res, err))
        return false;
    json_object_set_new(doc, "summary_stats",
                        json_pack("{s:o,s:o,s:o,s:o,s:o,s:o}", "total_records", store_value_json(&res, 0, 0),
                                  "avg_score", store_value_json(&res, 1, 0), "pass_rate",
                                  store_value_json(&res, 2, 0), "p50_latency", store_value_json(&res, 3, 0),
                                  "p95_latency", store_value_json(&res, 4, 0), "p99_latency",
                                  store_value_json(&res, 5, 0)));
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
    bool ok = filter_values(con, relation, columns, doc, err) &&
              time_range(con, relation, columns, doc, err) &&
              summary_stats(con, relation, columns, rows, doc, err);
    if (!ok) {
        json_decref(doc);
        return false;
    }
    *out = doc;
    return true;
}
