/* The policy of incremental syncs that keeps them from losing or
 * duplicating rows (docs/incremental.md): when the commit horizon applies,
 * where a read starts (lookback), how a batch is merged (upsert by
 * unique_key, EXCEPT ALL when it overlaps stored rows, else append) and
 * which watermark is stored. The SQL lives in source/ and store/; this
 * decides. Internal to the sync engine. */
#ifndef DS_SYNC_INCREMENTAL_H
#define DS_SYNC_INCREMENTAL_H

#include <duckdb.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "config/config.h"
#include "source/pgsrc.h"

/* The watermark is read back from DuckDB's copy of the column. An
 * unconstrained numeric is a DOUBLE there: its rounded max would make
 * `> watermark` re-read (duplicate) or skip rows, so it cannot serve. */
bool inc_usable_as_watermark(const pgsrc_type *type);

/* On by default for timestamp/timestamptz columns; commit_horizon: false
 * turns it off (and true cannot turn it on for other types). */
bool inc_horizon_enabled(const cfg_source *src, const pgsrc_column *col);

/* Where the next read starts: the stored watermark, minus lookback; *start
 * is a literal both PostgreSQL and DuckDB parse. *overlap when the read
 * can meet rows already stored. */
bool inc_read_start(duckdb_connection duck, const cfg_source *src, const char *duck_type,
                    const char *watermark, bool watermark_inclusive, char **start, bool *start_inclusive,
                    bool *overlap, ds_error *err);

/* Merges staging_ref (quoted, possibly qualified) into table inside the
 * caller's transaction: upsert when key has columns, EXCEPT ALL against
 * stored rows past the read start when the read overlaps, else append. */
typedef struct inc_batch {
    const char *table, *staging_ref;
    const cfg_key *key;
    const char *inc_col, *duck_type;
    const char *start;
    bool start_inclusive, overlap;
} inc_batch;
bool inc_apply(duckdb_connection duck, const inc_batch *batch, int64_t *inserted, int64_t *updated,
               ds_error *err);

/* The watermark to store after a sync: max(inc_col) of the table, held at
 * the horizon (then inclusive) when the horizon is lower. floor, the
 * previous watermark (NULL after a full load), narrows the scan. */
bool inc_next_watermark(duckdb_connection duck, const char *table, const char *inc_col, const char *duck_type,
                        const char *floor, const char *horizon, char **watermark, bool *inclusive,
                        ds_error *err);

#endif
