/* The end of a sync: one DuckDB transaction that swaps in or merges every
 * table, rebuilds the view, stores watermarks and the status together; or,
 * after a failure, the cleanup that leaves the previous data readable.
 * Internal to the sync engine. */
#ifndef DS_SYNC_COMMIT_H
#define DS_SYNC_COMMIT_H

#include "sync/job.h"

/* Where a commit's time went (duckstore -v): merging each table and its
 * metadata, the view and counts, the status, and the COMMIT (or, quiet:
 * a sync that changed nothing, which begins no transaction, or rolls back
 * one that a statement writing nothing began). */
typedef struct commit_steps {
    double apply_ms[CFG_MAX_QUERIES];
    double ids_ms; /* dataset_id uniqueness of the rows a batch added */
    double view_ms, status_ms, commit_ms;
    bool quiet;
} commit_steps;

bool commit_sync(store *st, const cfg_source *src, table_job *jobs, size_t njobs, sync_report *report,
                 double started, commit_steps *steps, ds_error *err);

/* No staging table left, watermarks cleared (runbook auto-recovery), status
 * `error` with the reason; the data stays. A cancelled sync (shutdown) only
 * drops its staging tables. */
void commit_record_failure(store *st, const cfg_source *src, table_job *jobs, size_t njobs,
                           const sync_report *report, double started, const ds_error *cause);

#endif
