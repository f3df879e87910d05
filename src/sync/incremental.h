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
#include "source/horizon.h"
#include "source/pgsrc.h"

/* The watermark is read back from DuckDB's copy of the column. An
 * unconstrained numeric is a DOUBLE there: its rounded max would make
 * `> watermark` re-read (duplicate) or skip rows, so it cannot serve. */
bool inc_usable_as_watermark(const pgsrc_type *type);

/* Whether the time horizon (the oldest open transaction's start) bounds
 * the column's values: a transaction stamps now() or current_date as of
 * its start, and may write them after a read. */
bool inc_time_horizon_applies(pgsrc_kind kind);

/* On by default for every watermark type (commit_horizon: false turns it
 * off): late commits are tracked through the reads' snapshots, and for
 * timestamp/timestamptz columns the watermark is also held at the time
 * horizon. */
bool inc_horizon_enabled(const cfg_source *src, const pgsrc_column *col);

/* Where the next read starts: the stored watermark, minus lookback; *start
 * is a literal both PostgreSQL and DuckDB parse. Reads start at the
 * watermark itself (>=): rows added later with the watermark's own value (a
 * date, a batch number, a timestamp shared by two commits) are read, and
 * the rows read again are not stored twice. *overlap when the read can
 * meet rows already stored. */
bool inc_read_start(duckdb_connection duck, const cfg_source *src, const char *duck_type,
                    const char *watermark, bool watermark_inclusive, char **start, bool *start_inclusive,
                    bool *overlap, ds_error *err);

/* Transactions a read saw in progress. When one of them commits, its rows
 * may carry values below the watermark (a sequence value taken before a
 * later commit, a row stamped with its transaction's start): the first
 * read that sees it starts at `from`, the watermark stored before it began
 * (NULL: from the beginning, when no earlier read bounds it). */
typedef struct inc_pending {
    uint64_t xid;
    char *from;
} inc_pending;

/* What a table's last read leaves for the next (_duckstore.tables.read_state). */
typedef struct inc_read_state {
    bool known;    /* recorded by a read */
    uint64_t xmax; /* of the last read's snapshot (shown for diagnosis) */
    inc_pending *pending;
    size_t npending;
    /* Writers without a transaction id were seen (pgsrc_snapshot's
     * xidless): they cannot be listed by id, so the next read starts at
     * unlisted_from (NULL: the beginning), and a later one too while any of
     * them (unlisted_vxids, their virtual ids) still runs. */
    bool unlisted;
    char *unlisted_from;
    char *unlisted_vxids;
} inc_read_state;

/* JSON in the store. Text that is not a state (NULL, an older file) gives
 * known = false; false only when out of memory. */
bool inc_state_parse(const char *json, inc_read_state *out);
char *inc_state_format(const inc_read_state *state);
void inc_state_free(inc_read_state *state);

/* Inside the read's transaction, before it reads: settles prev's pending
 * transactions against the read's snapshot. Those now committed lower
 * *start to their `from` (*start NULL then: read from the beginning) and
 * are counted in *late; aborted ones are dropped; the others are carried
 * into next, with every transaction snap shows in progress that prev did
 * not know (from the previous watermark when it began after the previous
 * read, else from the beginning). A full load passes incremental false. */
typedef struct inc_read_plan {
    bool incremental;
    const char *duck_type;
    const inc_read_state *prev;
    const char *prev_watermark;
    const pgsrc_snapshot *snap;
} inc_read_plan;
bool inc_plan_read(duckdb_connection duck, pgsrc_conn *pg, const inc_read_plan *plan, char **start,
                   inc_read_state *next, size_t *late, ds_error *err);

/* Merges staging_ref (quoted, possibly qualified) into table inside the
 * caller's transaction: upsert when key has columns, EXCEPT ALL against
 * stored rows past the read start when the read overlaps, else append. */
typedef struct inc_batch {
    const char *table, *staging_ref;
    const cfg_key *key;
    const char *inc_col, *duck_type;
    const char *start;
    bool start_inclusive, overlap;
    int64_t row_bytes; /* average COPY bytes of a staged row (0: unknown) */
} inc_batch;
bool inc_apply(duckdb_connection duck, const inc_batch *batch, int64_t *inserted, int64_t *updated,
               ds_error *err);

/* The watermark to store after a sync: max(inc_col) of the table, held at
 * the horizon (then inclusive) when the horizon is lower. floor, the
 * previous watermark (NULL after a full load), narrows the scan. known:
 * the maximum when it is known already (*known NULL: the column has no
 * value), NULL to compute it. *max (malloc'd, may be NULL): the maximum. */
typedef struct inc_watermark {
    char *watermark, *max;
    bool inclusive;
} inc_watermark;
bool inc_next_watermark(duckdb_connection duck, const char *table, const char *inc_col, const char *duck_type,
                        const char *floor, const char *horizon, const char *const *known, inc_watermark *out,
                        ds_error *err);

#endif
