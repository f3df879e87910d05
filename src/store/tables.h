/* DuckDB statements on the tables duckstore fills: staging tables and the
 * swap, merging an incremental batch (append, upsert, EXCEPT ALL), the view
 * that joins a split source, counts and the values a watermark is made of.
 * The builders (`*_sql`) are pure: they return the statement text, or NULL
 * when out of memory, so tests and fuzzers can check them alone. */
#ifndef DS_STORE_TABLES_H
#define DS_STORE_TABLES_H

#include <duckdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/strbuf.h"

/* A column as the store sees it: its name and DuckDB type ("DECIMAL(12,4)"). */
typedef struct store_column {
    const char *name;
    const char *type;
} store_column;

/* CAST('value' AS type): a value given as text in a column's type. */
bool store_append_typed_literal(ds_buf *b, const char *value, const char *type);

/* CREATE TABLE ref (...), ref a quoted, possibly qualified name. */
char *store_create_table_sql(const char *ref, const store_column *cols, size_t n);
/* Drops ref when it exists and creates it empty with cols. */
bool store_create_empty(duckdb_connection con, const char *ref, const store_column *cols, size_t n,
                        ds_error *err);
/* DROP TABLE IF EXISTS ref (quoted, possibly qualified). */
bool store_drop_table(duckdb_connection con, const char *ref, ds_error *err);
/* Replaces table (a plain name) by the staging table ref, in the caller's
 * transaction. */
bool store_swap_in(duckdb_connection con, const char *staging_ref, const char *table, ds_error *err);
/* Whether name is a table of the store's main schema (a catalog lookup
 * only: no storage metadata is read). */
bool store_is_table(duckdb_connection con, const char *name);
/* Makes room for a table or view called name, whichever kind is there now
 * (a source changed from one query to two, or back): DROP TABLE or DROP VIEW. */
bool store_drop_relation(duckdb_connection con, const char *name, ds_error *err);

/* count(*) of a table or view (plain name). */
bool store_count_rows(duckdb_connection con, const char *name, int64_t *rows, ds_error *err);

/* How the view joins the results to the dataset: a LEFT JOIN (every
 * result) or an INNER JOIN (results whose dataset row is there), on the
 * equality of each listed column (plain names, in both tables). */
typedef struct store_join {
    bool inner;
    char *const *cols;
    size_t n;
} store_join;

/* CREATE OR REPLACE VIEW view: every results column, then every dataset
 * column but the join's, joined as join says. A dataset column whose name
 * the results already use is exposed as dataset_<col>, prefixed again while
 * that names another column of the view (a results column, a dataset
 * column or an earlier alias), so every column of the view has its own
 * name. */
char *store_view_sql(const char *view, const char *dataset_table, const store_column *dataset_cols,
                     size_t n_dataset, const char *results_table, const store_column *results_cols,
                     size_t n_results, const store_join *join);

/* The first join column whose types in the dataset (dcols) and the results
 * (rcols) DuckDB would compare through a cast that can fail on a value
 * (not one type, nor both numbers), with its two types; NULL when every
 * join column compares as it is. */
const char *store_join_mismatch(const store_column *dcols, size_t nd, const store_column *rcols, size_t nr,
                                const store_join *join, const char **dtype, const char **rtype);

/* The view's definition as DuckDB keeps it (normalised SQL), malloc'd;
 * *sql NULL when there is no such view in the store's main schema. Two
 * readings compare equal exactly when the view reads the same. */
bool store_view_definition(duckdb_connection con, const char *view, char **sql, ds_error *err);

/* An incremental batch in a staging table, merged into its table. */
typedef struct store_batch {
    const char *table;       /* plain name */
    const char *staging_ref; /* quoted, possibly qualified */
    const char *order_col;   /* the incremental column */
    const char *type;        /* its DuckDB type */
    char *const *key;        /* unique key columns: upsert when nkey > 0 */
    size_t nkey;
    /* overlap: the read met stored rows again, those past start (>= when
     * start_inclusive; every row when start is NULL) or without a value in
     * order_col; rows equal to one of them are not stored again. */
    bool overlap;
    const char *start;
    bool start_inclusive;
    /* How the stored rows the read met look (NULL: not measured, every
     * staged row is compared with them). */
    const struct store_overlap *shape;
    /* Average bytes of a staged row as read (0: unknown, then sampled). */
    int64_t row_bytes;
} store_batch;

/* The stored rows a batch meets again, measured in the merge's transaction
 * (store_measure_overlap). A staged row with a value above the stored
 * maximum past the start cannot be stored already: it is inserted as it
 * is, and only the rest are compared with the stored rows (EXCEPT ALL,
 * whose cost grows with every column of every row it compares). */
typedef struct store_overlap {
    int64_t stored_rows;  /* stored rows past the start with a value */
    int64_t stored_nulls; /* stored rows without a value */
    char *stored_max;     /* the maximum of those values as text; NULL when none, or when the text
                             does not cast back to the same value (the batch is then merged unmeasured) */
    int64_t staged_rows;
    int64_t staged_below; /* staged rows with a value at or below that maximum */
    int64_t staged_nulls; /* staged rows without a value */
    int64_t memory_limit; /* DuckDB's, in bytes (0: unknown) */
} store_overlap;
/* The two SELECTs that measure it: stored_rows, the maximum as text,
 * whether that text casts back to it, stored_nulls and memory_limit; then
 * staged_rows, staged_below (none without a maximum) and staged_nulls. */
char *store_overlap_stored_sql(const store_batch *batch);
char *store_overlap_staged_sql(const store_batch *batch, const char *stored_max);
bool store_measure_overlap(duckdb_connection con, const store_batch *batch, store_overlap *out,
                           ds_error *err);
void store_overlap_free(store_overlap *shape);
/* Whether a merge can use the shape: a maximum, when there is one, that
 * stands for the value itself. */
bool store_overlap_usable(const store_overlap *shape);

/* The statements that merge a batch, in order: an upsert's DELETE then its
 * INSERT, or one INSERT. Returns how many (0 when out of memory); the caller
 * frees each. An overlapping batch without a shape compares every staged
 * row (the same rows, found slower). */
size_t store_merge_sql(const store_batch *batch, char *sql[2]);
/* The same for one slice of the batch (slice of slices, by the hash of the
 * key, or of the incremental column without a key); slices 1 is the whole. */
size_t store_merge_slice_sql(const store_batch *batch, int64_t slices, int64_t slice, char *sql[2]);
/* The rows of a batch that are not stored already, as a relation for FROM
 * (the staging table itself when nothing overlaps): what a merge applies. */
char *store_batch_new_rows_sql(const store_batch *batch);
/* Slices so that each one's rows (as text) take half of memory_limit (bytes). */
int64_t store_merge_slices(int64_t rows, int64_t row_bytes, int64_t memory_limit);
/* Runs them in the caller's transaction, the overlap measured first
 * (batch->shape is not read), in as many slices as memory_limit needs: rows
 * inserted, and of those the ones that replaced a stored row (updated). */
bool store_merge(duckdb_connection con, const store_batch *batch, int64_t *inserted, int64_t *updated,
                 ds_error *err);

/* When err is DuckDB running out of memory: a message that says what ran
 * out and names duckstore's key (memory_limit in duckdb.yaml) instead of
 * DuckDB's SET advice. */
void store_explain_out_of_memory(ds_error *err, const char *what);

/* SELECT max(col)::VARCHAR FROM table [WHERE col >= CAST(floor AS type)]. */
char *store_max_sql(const char *table, const char *col, const char *type, const char *floor);
/* max(col) as text (*out NULL when the table holds no value), scanning only
 * values >= floor when one is given and any exist there. */
bool store_max_value(duckdb_connection con, const char *table, const char *col, const char *type,
                     const char *floor, char **out, ds_error *err);
/* Whether a >= b, both text in type. */
bool store_value_at_least(duckdb_connection con, const char *a, const char *b, const char *type, bool *out,
                          ds_error *err);
/* value in type's canonical text (how max()::VARCHAR would print it). */
bool store_canonical_value(duckdb_connection con, const char *value, const char *type, char **out,
                           ds_error *err);
/* value minus lookback ("5 minutes" or, numeric, "100") in type, as text;
 * *out NULL when that is NULL. */
char *store_minus_sql(const char *value, const char *type, const char *lookback, bool lookback_is_number);
bool store_value_minus(duckdb_connection con, const char *value, const char *type, const char *lookback,
                       bool lookback_is_number, char **out, ds_error *err);

/* Whether the dataset_ids of the staging table (plus, when table is not NULL,
 * the stored rows with the same ids) are each present once; counted in
 * slices of the id hash so each GROUP BY fits memory_limit. */
char *store_duplicate_ids_sql(const char *staging_ref, const char *table, int64_t slices, int64_t slice);
bool store_ids_unique(duckdb_connection con, const char *staging_ref, const char *table, int64_t rows,
                      bool *unique, ds_error *err);

#endif
