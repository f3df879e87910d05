/* The hot path of a sync: rows decoded from PostgreSQL's binary COPY are
 * written straight into the chunks of a DuckDB INSERT, under a row budget
 * shared by every stream of a table (max_sync_rows). Internal. */
#ifndef DS_SYNC_PUMP_H
#define DS_SYNC_PUMP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "sync/sync.h"

/* What the streams loading one table share. */
typedef struct pump_shared {
    _Atomic int64_t budget; /* rows still allowed; only used when capped */
    bool capped;
    atomic_bool truncated;
    _Atomic uint64_t rows;
    _Atomic uint64_t bytes; /* of COPY data, for those rows */
    pgsrc_wait_meter wait;  /* the streams' time waiting for PostgreSQL's data, summed */
    /* Set to end every stream's read with DS_ERR_RESTART: a partitioned
     * read drops what its first reader read and starts again in ranges. */
    atomic_bool abandon;
    int slot;              /* the table's place in sync_progress.table_rows */
    pgsrc_kept_rows *keep; /* a one-stream read's rows are kept there too (NULL: not) */
    /* Optional, for a one-stream read. stored_already: asked once the rows
     * read ahead (up to keep's cap) turn out to be all the rows; true: the
     * store holds them already, nothing goes to DuckDB and `skipped` is
     * set. before_insert: runs once before the first row goes to DuckDB
     * (an incremental batch's staging table is made then). */
    bool (*stored_already)(void *ctx);
    bool (*before_insert)(void *ctx, duckdb_connection duck, ds_error *err);
    void *ctx;
    bool skipped;
} pump_shared;

/* Forgets the rows the streams have read (their counts, the progress, the
 * row budget they took) once what they stored has been dropped, so a read
 * can start again. No stream may be running. */
void pump_shared_forget(pump_shared *shared, const sync_options *opt);

/* The row limit to put on a COPY: one past the budget (so a cut is seen),
 * or -1 when uncapped. */
int64_t pump_copy_limit(pump_shared *shared);

/* Streams one COPY statement into table_ref (quoted, possibly qualified):
 * INSERT ... SELECT from the decoded stream, one statement per
 * sync_chunk_size rows, on a connection of its own. */
bool pump_copy_into(store *st, const cfg_config *cfg, const char *table_ref, pgsrc_conn *pg,
                    const pgsrc_desc *desc, const char *copy_sql, pump_shared *shared,
                    const sync_options *opt, ds_error *err);

/* The next COPY statement of a series on pg (malloc'd), or NULL when there
 * is none left (*nomem tells an allocation failure apart). */
typedef char *(*pump_next_copy_fn)(void *ctx, pgsrc_conn *pg, bool *nomem);

/* Streams a series of COPY statements (ranges of one query) one after the
 * other into the same INSERT statements, as one stream: a range's end does
 * not end a batch, so small ranges still fill whole row groups. */
bool pump_copy_series(store *st, const cfg_config *cfg, const char *table_ref, pgsrc_conn *pg,
                      const pgsrc_desc *desc, pump_next_copy_fn next, void *next_ctx, pump_shared *shared,
                      const sync_options *opt, ds_error *err);

#endif
