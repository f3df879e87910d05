/* What a sync of one source would do, found by the very steps the sync
 * runs (sync/job.c) up to the read, which it does not run: full or
 * incremental and why, the stored watermark, the read start, the commit
 * horizon, the COPY statement and PostgreSQL's row estimate. Nothing is
 * written: the DuckDB file may be open read-only, and PostgreSQL is read in
 * a read-only transaction that is rolled back. */
#ifndef DS_SYNC_PLAN_H
#define DS_SYNC_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"
#include "sync/sync.h"

typedef struct sync_table_plan {
    const cfg_query_plan *plan;
    bool incremental;
    const char *why;      /* static text */
    char *watermark;      /* stored watermark, NULL when none serves */
    char *read_start;     /* incremental: where the read starts, NULL: the beginning */
    bool start_inclusive; /* the read includes read_start */
    size_t late_commits;  /* transactions seen in progress last time that have committed since */
    size_t pending;       /* transactions in progress a later read waits for */
    bool tracks_xacts;    /* the commit horizon is on for this table */
    char *horizon;        /* time horizon (a time column), NULL when none */
    char *horizon_holder; /* the open transaction holding it back, NULL when none */
    char *copy_sql;       /* the statement sent to PostgreSQL */
    int partitions;       /* > 1: a full read by up to that many workers, in 4 ranges each */
    double row_estimate;  /* PostgreSQL's (EXPLAIN), < 0 when unknown */
    int64_t row_limit;    /* max_sync_rows' LIMIT on the read, < 0 when none */
} sync_table_plan;

typedef struct sync_plan {
    sync_table_plan tables[CFG_MAX_QUERIES];
    size_t ntables;
    sync_report warnings; /* only warnings[] and nwarnings are used */
} sync_plan;

/* st: the store; opened read-only is enough. */
bool sync_plan_source(store *st, const cfg_config *cfg, const cfg_source *src, bool force_full,
                      sync_plan *out, ds_error *err);
void sync_plan_free(sync_plan *p);

/* The plan of one source as text, one line per "\n", the way `duckstore
 * plan` prints it whether it opens the file itself or asks a running
 * server (GET /api/store/plan): where the source is configured, the
 * periodic full refresh, each table's plan and the warnings. False with
 * err set when planning failed; out then holds the lines written before
 * (out of memory: out's own error). */
bool sync_plan_text(store *st, const cfg_config *cfg, const cfg_source *src, bool force_full, ds_buf *out,
                    ds_error *err);

#endif
