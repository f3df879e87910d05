/* A result of one DuckDB streamed into a query of another: a private
 * in-memory DuckDB (one thread, its settings locked, no file access but
 * the one path or directory it writes) where `FROM duckstore_result()`
 * reads the chunks of a result of the store, referenced, not copied. The
 * store's own database keeps external access off; what it cannot write
 * (Parquet to a pipe or a publish directory) that database writes. */
#ifndef DS_STORE_RESULT_FEED_H
#define DS_STORE_RESULT_FEED_H

#include <duckdb.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

/* The rows fed to duckstore_result(); the caller owns res and sets res,
 * first and max_rows, the rest is the feed's. */
typedef struct store_result_feed {
    duckdb_result *res;      /* a streaming result */
    duckdb_data_chunk first; /* fetched already (e.g. to see an error early): given first */
    int64_t max_rows;        /* stop after this many rows; 0: all */
    bool ended;              /* set it too when first is NULL for a result without rows */
    bool truncated;          /* max_rows cut the result */
    int64_t rows;            /* rows given so far */
    char *error;             /* the result's own error, when fetching failed */
} store_result_feed;

/* Frees first and error (not res). */
void store_result_feed_free(store_result_feed *f);

typedef struct store_writer_settings {
    const char *memory_limit;      /* NULL: DuckDB's default */
    const char *temp_directory;    /* where it spills; "": nowhere */
    const char *allowed_path;      /* the one file it may open, or NULL */
    const char *allowed_directory; /* the one directory it may use, or NULL */
    bool utc;                      /* TimeZone = 'UTC' (dates cut in UTC) */
    /* Bounded Parquet writes: rows may be written in any order (what
     * ROW_GROUP_SIZE_BYTES needs), and a PARTITION_BY write keeps at most
     * this many files open (0: DuckDB's default of 100), each flushed
     * after 16,384 buffered rows. */
    bool any_order;
    int max_open_files;
} store_writer_settings;

/* Opens the private database; feed NULL: without duckstore_result() (a
 * reader of the files written). On failure *db and *con are NULL or
 * closed by store_writer_close. */
bool store_writer_open(const store_writer_settings *s, store_result_feed *feed, duckdb_database *db,
                       duckdb_connection *con, ds_error *err);
void store_writer_close(duckdb_database *db, duckdb_connection *con);

#endif
