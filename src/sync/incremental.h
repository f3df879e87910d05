/* The parts of an incremental sync that keep it from losing or duplicating
 * rows (docs/incremental.md): the commit horizon, lookback read starts, and
 * applying a batch that overlaps stored rows (upsert by unique_key, or
 * whole-row EXCEPT ALL). Internal to the sync engine. */
#ifndef DS_SYNC_INCREMENTAL_H
#define DS_SYNC_INCREMENTAL_H

#include <duckdb.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "config/config.h"
#include "source/pgsrc.h"

typedef struct inc_horizon {
    char *value;   /* literal in the column's type: UTC "...+00" for timestamptz */
    char *holder;  /* the open transaction holding it back, NULL when none */
    bool sees_all; /* the role can see other sessions' transactions */
} inc_horizon;

/* On by default for timestamp/timestamptz columns; commit_horizon: false
 * turns it off (and true cannot turn it on for other types). */
bool inc_horizon_enabled(const cfg_source *src, const pgsrc_column *col);

/* Takes the horizon: the start of the oldest transaction open on the
 * source database (or now). Must run before the snapshot that reads the
 * rows, so that a transaction committing in between is either visible to
 * the read or counted here. */
bool inc_take_horizon(pgsrc_conn *conn, const pgsrc_column *col, inc_horizon *out, ds_error *err);
void inc_horizon_free(inc_horizon *h);

/* Fails with a config error naming the column when a unique_key column is
 * not selected by the query. */
bool inc_check_key(const cfg_source *src, const char *label, const cfg_key *key, const pgsrc_desc *desc,
                   ds_error *err);

/* Where the next read starts: the stored watermark, minus lookback; *start
 * is a literal both PostgreSQL and DuckDB parse. *overlap when the read
 * can meet rows already stored. */
bool inc_read_start(duckdb_connection con, const cfg_source *src, const char *duck_type,
                    const char *watermark, bool watermark_inclusive, char **start, bool *start_inclusive,
                    bool *overlap, ds_error *err);

/* Merges staging_ref (a quoted, possibly qualified name) into table inside
 * the caller's transaction: upsert when a
 * key is given, EXCEPT ALL against stored rows past the read start when the
 * read overlaps, plain append otherwise. */
bool inc_apply(duckdb_connection con, const char *table, const char *staging_ref, const cfg_key *key,
               const char *inc_col, const char *duck_type, const char *start, bool start_inclusive,
               bool overlap, int64_t *inserted, int64_t *updated, ds_error *err);

/* The watermark to store after a sync: max(inc_col) of the table, held at
 * the horizon (then inclusive) when the horizon is lower. floor, the
 * previous watermark (NULL after a full load), narrows the scan. */
bool inc_next_watermark(duckdb_connection con, const char *table, const char *inc_col, const char *duck_type,
                        const char *floor, const char *horizon, char **watermark, bool *inclusive,
                        ds_error *err);

#endif
