/* Background syncs of the server: one runtime record per source (is it
 * syncing, live progress, cached status document, metrics), sync threads,
 * and the periodic scheduler (runbook section 4). */
#ifndef DS_SERVER_JOBS_H
#define DS_SERVER_JOBS_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cdc/capture.h"
#include "config/config.h"
#include "store/store.h"
#include "sync/sync.h"

/* What started a sync, named in its log lines and in the status of a
 * running sync: an API request (also the CLI through the server), the
 * scheduler, or the server's start (and a source a reload added). */
typedef enum jobs_trigger { JOBS_TRIGGER_MANUAL, JOBS_TRIGGER_SCHEDULED, JOBS_TRIGGER_STARTUP } jobs_trigger;
const char *jobs_trigger_name(jobs_trigger trigger);

/* The events every sync logs, the server's and the CLI's alike:
 * sync_start; then sync_warning per warning, sync_table per table and
 * sync_end (result success, error or cancelled). progress: the sync's
 * counters (bytes read per table). */
void jobs_log_sync_start(const cfg_source *src, jobs_trigger trigger, bool full);
void jobs_log_sync_end(const cfg_source *src, jobs_trigger trigger, bool ok, const sync_report *report,
                       const sync_progress *progress, const ds_error *err, double elapsed_s);

/* The kind of a sync's error in logs and answers: config, postgresql,
 * timeout, duckdb, ... */
const char *jobs_error_kind(ds_error_code code);

/* How a sync of the server ended, for a client that asked to cancel it. */
typedef enum jobs_result {
    JOBS_RESULT_NONE,
    JOBS_RESULT_SUCCESS,
    JOBS_RESULT_ERROR,
    JOBS_RESULT_CANCELLED
} jobs_result;
const char *jobs_result_name(jobs_result result);

/* One table's metrics beside the status: bytes read from PostgreSQL since
 * the server started, and the time of its newest stored data, kept when a
 * failed sync clears the watermark (the data it describes stays). */
typedef struct table_stats {
    char table[CFG_TABLE_NAME_CAP]; /* "" = unused */
    uint64_t bytes;
    double newest_unix; /* the watermark's time; 0 = none */
} table_stats;

typedef struct source_runtime {
    char name[CFG_SOURCE_NAME_MAX + 1];
    const cfg_source *src; /* in the config in force; NULL once a reload removed the source */
    bool syncing;
    bool resetting;       /* reset-watermark in progress: no sync may start */
    bool cancelling;      /* a cancel request is being sent: no sync may start, lest it get it */
    bool sync_full;       /* the running sync was asked to be full */
    jobs_trigger trigger; /* of the running sync */
    double started_mono;  /* monotonic start of the running sync */
    char started_iso[SYNC_TIME_CAP];
    double next_due_mono; /* scheduler: when the next periodic sync is due (0 = never) */
    int consecutive_failures;
    sync_progress progress;
    const cfg_source *running_src; /* of the running sync, in the config it pinned */
    sync_cancel cancel;
    uint64_t sync_id;        /* of the running sync, else of the last one (0: none yet) */
    jobs_result last_result; /* of the last finished sync, whose id is sync_id when not syncing */
    json_t *status;          /* last persisted status document */
    uint64_t status_version; /* counts the changes of status */
    /* metrics */
    uint64_t syncs_ok, syncs_failed, rows_synced;
    double last_success_unix, last_duration_s;
    table_stats tables[2 * CFG_MAX_QUERIES]; /* room for the tables before and after a reload */
    capture_live live;                       /* capture: logical: the running stream's position and lag */
    /* capture: logical with publish: the stream's versions (the scheduler
     * starts them; docs/publish.md). */
    bool publishing;            /* a publish thread runs */
    bool publish_requested;     /* publish at the next tick: an initial load committed */
    double next_publish_mono;   /* when the next version of the stream is due */
    uint64_t changes_published; /* live.changes when the last version started */
} source_runtime;

/* A loaded config and the number of its users: the jobs while it is in
 * force, and every sync that started under it (a reload swaps in another;
 * running syncs finish with the one they started with). */
typedef struct jobs_config jobs_config;

typedef struct jobs {
    store *st;
    jobs_config *current;
    /* One record per source name ever configured, never freed before
     * jobs_destroy (sync threads hold them); removed sources have src NULL. */
    source_runtime **sources;
    size_t n, cap;
    sync_conn_pool conns; /* PostgreSQL connections kept between syncs, all sources */
    pthread_mutex_t lock; /* guards every source_runtime field above, current and the list */
    pthread_cond_t changed;
    int active;            /* running sync threads */
    uint64_t last_sync_id; /* every sync of the server gets the next one */
    bool stopping;
    bool scheduler_started;
    pthread_t scheduler;
} jobs;

/* Takes cfg over (it is left empty: cfg_free on it does nothing). */
bool jobs_init(jobs *j, store *st, cfg_config *cfg, ds_error *err);
void jobs_destroy(jobs *j);

/* The config in force, kept alive until jobs_config_release even if a
 * reload replaces it meanwhile. */
const cfg_config *jobs_config_acquire(jobs *j);
void jobs_config_release(jobs *j, const cfg_config *cfg);

/* Puts a new, validated config in force, taking it over: added sources
 * appear (and sync at once under sync_mode: startup when enabled and
 * auto_load), removed ones are no longer scheduled nor shown (their data
 * stays), changed refresh intervals apply to the next periodic sync. A
 * running sync finishes with the config it started with. The caller keeps
 * settings that need a restart at their old values. Called from the thread
 * that calls jobs_shutdown. */
void jobs_reload(jobs *j, cfg_config *cfg);

/* JOBS_FAILED: err says why (no memory or no thread for a sync, DuckDB
 * failed a reset). */
typedef enum jobs_start_result {
    JOBS_STARTED,
    JOBS_BUSY,
    JOBS_STREAMING, /* a logical source streaming already: nothing to start */
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

/* What jobs_cancel_sync did. JOBS_CANCEL_ENDED: the sync ended within
 * the wait (result says how: cancelled, or it had begun its commit and
 * finished); JOBS_CANCEL_ENDING: asked, still ending after the wait;
 * JOBS_CANCEL_IDLE: no sync of the source runs (result: how the sync
 * sync_id ended, when it was the last one); JOBS_CANCEL_OTHER: the running
 * sync is not sync_id. */
typedef enum jobs_cancel_outcome {
    JOBS_CANCEL_ENDED,
    JOBS_CANCEL_ENDING,
    JOBS_CANCEL_IDLE,
    JOBS_CANCEL_OTHER,
    JOBS_CANCEL_UNKNOWN
} jobs_cancel_outcome;

typedef struct jobs_cancel_answer {
    jobs_cancel_outcome outcome;
    uint64_t sync_id; /* the sync cancelled, or running (OTHER), or the last one (IDLE) */
    jobs_trigger trigger;
    jobs_result result;
} jobs_cancel_answer;

/* Cancels the running sync of a source (only when its id is sync_id; 0:
 * whichever runs) and waits up to wait_s for it to end. The sync ends as
 * one cancelled at shutdown: before its commit, changing nothing; one
 * whose commit has begun completes. */
void jobs_cancel_sync(jobs *j, const char *name, uint64_t sync_id, double wait_s, jobs_cancel_answer *out);

/* Stops the scheduler, cancels running syncs and waits for them. */
void jobs_shutdown(jobs *j);

/* The status document of every source ({"<name>_data": {...}}), from
 * memory; NULL when out of memory. */
json_t *jobs_status_json(jobs *j);

/* Prometheus text exposition of the per-source metrics. Caller frees; NULL
 * when out of memory. */
char *jobs_metrics_text(jobs *j);

source_runtime *jobs_find(jobs *j, const char *name);

/* Reads the source's persisted status into memory again (after a publish
 * recorded its outcome there). */
void jobs_refresh_source(jobs *j, const char *name);

#endif
