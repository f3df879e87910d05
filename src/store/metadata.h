/* A dataset's metadata as AXIS's dashboards read it (docs/api.md,
 * "GET /api/store/metadata/NAME"): columns, row count, the distinct values
 * of the filter columns, the time range and the score summary. The server
 * computes it in one read transaction, so it never disagrees with the data
 * it describes, and keeps it until the source's next sync (three scans of
 * the dataset: not in the sync's commit, whose lock every sync waits on). */
#ifndef DS_STORE_METADATA_H
#define DS_STORE_METADATA_H

#include <duckdb.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/strbuf.h"

/* The columns AXIS offers as filters, and how many distinct values of each
 * the metadata lists. */
extern const char *const store_filter_columns[];
extern const size_t store_n_filter_columns;
#define STORE_FILTER_VALUES_MAX 200

/* The first `limit` distinct non-NULL values of each of cols[0..n), in
 * one scan of the relation (GROUPING SETS, one set per column): a row per
 * value, in which only its column (and its text, CAST AS VARCHAR, in
 * column n + i) is not NULL, ordered by column, then value. NULL when out
 * of memory. */
char *store_filter_values_sql(const char *relation, const char *const *cols, size_t n, int limit);

/* Exact latency percentiles hold every value in memory at once (8 bytes a
 * row, outside what memory_limit bounds): past this many rows they are
 * approximated (t-digest, bounded memory), so a commit's memory stays
 * bounded whatever the table's size. */
#define STORE_EXACT_PERCENTILES_MAX 1000000

/* The summary statistics of a relation: count(*), then the mean score,
 * pass rate and latency percentiles of the score and latency columns
 * (NULL: no such column, those values are NULL), exact or approximated;
 * with time_range, the least and greatest "timestamp" as text after them
 * (the same scan). NULL when out of memory. */
char *store_summary_sql(const char *relation, const char *score, const char *latency, bool exact,
                        bool time_range);

/* The metadata document of relation (a table or view), computed on con in
 * its current transaction. */
bool store_dataset_metadata(duckdb_connection con, const char *relation, json_t **out, ds_error *err);

/* Types store_value_json reads directly: numbers, booleans and text.
 * Select any other type CAST to VARCHAR (the C API's text of a value does
 * not cover every type, e.g. TIMESTAMPTZ). */
bool store_json_native(duckdb_type type);

/* The value at (col, row) of res as JSON: numbers as numbers (NaN and
 * infinities as null), booleans as booleans, NULL as null, text as text.
 * NULL when out of memory. */
json_t *store_value_json(duckdb_result *res, idx_t col, idx_t row);

/* Runs sql: false with err set (DuckDB's message) on failure. */
bool store_query_result(duckdb_connection con, const char *sql, duckdb_result *res, ds_error *err);

#endif
