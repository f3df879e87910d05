/* Background syncs of the server: one runtime record per source (is it
 * syncing, live progress, cached status document, metrics), sync threads,
 * and the periodic scheduler (runbook section 4). */
#ifndef DS_SERVER_JOBS_H
#define DS_SERVER_JOBS_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "store/store.h"
#include "sync/sync.h"

typedef struct source_runtime {
    const cfg_source *src;
    bool syncing;
    bool resetting;      /* reset-watermark in progress: no sync may start */
    bool sync_full;      /* the running sync was asked to be full */
    double started_mono; /* monotonic start of the running sync */
    char started_iso[SYNC_TIME_CAP];
    double next_due_mono; /* scheduler: when the next periodic sync is due (0 = never) */
    int consecutive_failures;
    sync_progress progress;
    sync_cancel cancel;
    sync_conn_cache conns; /* PostgreSQL connections kept between syncs */
    json_t *status;        /* last persisted status document */
    /* metrics */
    uint64_t syncs_ok, syncs_failed, rows_synced;
    double last_success_unix, last_duration_s;
} source_runtime;

typedef struct jobs {
    store *st;
    const cfg_config *cfg;
    source_runtime *sources;
    size_t n;
    pthread_mutex_t lock; /* guards every source_runtime field above */
    pthread_cond_t changed;
    int active; /* running sync threads */
    bool stopping;
    bool scheduler_started;
    pthread_t scheduler;
} jobs;

bool jobs_init(jobs *j, store *st, const cfg_config *cfg, ds_error *err);
void jobs_destroy(jobs *j);

/* JOBS_FAILED: err says why (no memory or no thread for a sync, DuckDB
 * failed a reset). */
typedef enum jobs_start_result {
    JOBS_STARTED,
    JOBS_BUSY,
    JOBS_UNKNOWN,
    JOBS_STOPPING,
    JOBS_FAILED
} jobs_start_result;

/* Starts a background sync of one source (by name). Never blocks. */
jobs_start_result jobs_start_sync(jobs *j, const char *name, bool full, ds_error *err);

/* Boot: syncs every enabled auto_load source (sync_mode startup), then
 * starts the scheduler once those syncs are done. False when the scheduler
 * thread cannot be started (the startup syncs may be running: shut down). */
bool jobs_start_background(jobs *j, bool startup_sync, ds_error *err);

/* Clears a source's watermarks; JOBS_BUSY while it syncs. */
jobs_start_result jobs_reset_watermark(jobs *j, const char *name, ds_error *err);

/* Stops the scheduler, cancels running syncs and waits for them. */
void jobs_shutdown(jobs *j);

/* The status document of every source ({"<name>_data": {...}}), from
 * memory; NULL when out of memory. */
json_t *jobs_status_json(jobs *j);

/* Prometheus text exposition of the per-source metrics. Caller frees; NULL
 * when out of memory. */
char *jobs_metrics_text(jobs *j);

source_runtime *jobs_find(jobs *j, const char *name);

#endif
