/* Sync threads and the scheduler for jobs.h. One mutex guards the runtime
 * records; it is never held while PostgreSQL or DuckDB work runs. */
#include "server/jobs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"

/* Reads the persisted status of a source (outside the lock). */
static json_t *load_status(jobs *j, const cfg_source *src)
{
    ds_error err;
    json_t *doc = sync_status_json(j->st, src, &err);
    if (doc == NULL) {
        ds_log_error("%s: cannot read status: %s", src->name, err.msg);
        doc = sync_status_unreadable(&err);
    }
    return doc;
}

bool jobs_init(jobs *j, store *st, const cfg_config *cfg, ds_error *err)
{
    memset(j, 0, sizeof *j);
    j->st = st;
    j->cfg = cfg;
    j->n = cfg->n_sources;
    j->sources = calloc(j->n ? j->n : 1, sizeof *j->sources);
    if (j->sources == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&j->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&j->changed, &attr);
    pthread_condattr_destroy(&attr);
    for (size_t i = 0; i < j->n; i++) {
        source_runtime *r = &j->sources[i];
        r->src = &cfg->sources[i];
        sync_cancel_init(&r->cancel);
        sync_conn_cache_init(&r->conns);
        r->status = load_status(j, r->src);
    }
    return true;
}

void jobs_destroy(jobs *j)
{
    for (size_t i = 0; i < j->n; i++) {
        sync_cancel_destroy(&j->sources[i].cancel);
        sync_conn_cache_destroy(&j->sources[i].conns);
        json_decref(j->sources[i].status);
    }
    free(j->sources);
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->changed);
}

source_runtime *jobs_find(jobs *j, const char *name)
{
    for (size_t i = 0; i < j->n; i++)
        if (strcmp(j->sources[i].src->name, name) == 0)
            return &j->sources[i];
    return NULL;
}

static double interval_s(const source_runtime *r)
{
    return r->src->refresh_interval_minutes * 60.0;
}

typedef struct sync_thread_arg {
    jobs *j;
    source_runtime *r;
    bool full;
} sync_thread_arg;

static void *sync_thread(void *arg)
{
    sync_thread_arg *a = arg;
    jobs *j = a->j;
    source_runtime *r = a->r;
    sync_options opt = {
        .force_full = a->full, .cancel = &r->cancel, .progress = &r->progress, .conns = &r->conns};
    free(a);
    sync_report report;
    ds_error err;
    ds_error_clear(&err);
    ds_log_info("%s: sync started%s", r->src->name, opt.force_full ? " (full)" : "");
    bool ok = sync_source(j->st, j->cfg, r->src, &opt, &report, &err);
    for (size_t i = 0; i < report.nwarnings; i++)
        ds_log_warn("%s", report.warnings[i]);
    if (ok)
        ds_log_info("%s: %s sync done, %lld rows (%+lld) in %.2f s%s", r->src->name,
                    report.incremental ? "incremental" : "full", (long long)report.rows,
                    (long long)report.rows_added, report.duration_s, report.truncated ? ", truncated" : "");
    else if (err.code == DS_ERR_CANCELLED) /* a shutdown, not a failure: no ERROR line to alert on */
        ds_log_info("%s: sync cancelled; the previous data, watermarks and status stay", r->src->name);
    else
        ds_log_error("%s: sync failed: %s", r->src->name, err.msg);
    json_t *status = load_status(j, r->src);

    pthread_mutex_lock(&j->lock);
    double now = ds_monotonic_s();
    json_decref(r->status);
    r->status = status;
    r->syncing = false;
    r->last_duration_s = now - r->started_mono;
    if (ok) {
        r->syncs_ok++;
        r->consecutive_failures = 0;
        r->last_success_unix = ds_unix_s();
        for (size_t i = 0; i < report.ntables; i++)
            r->rows_synced += (uint64_t)report.tables[i].rows_loaded;
    } else if (err.code != DS_ERR_CANCELLED) {
        r->syncs_failed++;
        r->consecutive_failures++;
    }
    if (interval_s(r) > 0) {
        /* After a failure, retry sooner (30 s doubling) but never later than
         * the refresh interval. */
        double wait = interval_s(r);
        if (!ok && r->consecutive_failures > 0) {
            double backoff = 30.0 * pow(2.0, r->consecutive_failures - 1);
            wait = backoff < wait ? backoff : wait;
        }
        r->next_due_mono = now + wait;
    }
    j->active--;
    pthread_cond_broadcast(&j->changed);
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

/* Called with the lock held. */
static jobs_start_result start_locked(jobs *j, source_runtime *r, bool full, ds_error *err)
{
    if (j->stopping)
        return JOBS_STOPPING;
    if (r->syncing || r->resetting)
        return JOBS_BUSY;
    sync_thread_arg *a = malloc(sizeof *a);
    if (a == NULL) {
        ds_error_set(err, DS_ERR_NOMEM, "%s: cannot start a sync: out of memory", r->src->name);
        return JOBS_FAILED;
    }
    *a = (sync_thread_arg){.j = j, .r = r, .full = full};
    atomic_store(&r->cancel.requested, false);
    atomic_store(&r->progress.rows, 0);
    atomic_store(&r->progress.bytes, 0);
    atomic_store(&r->progress.phase, SYNC_PHASE_DESCRIBING);
    r->syncing = true;
    r->sync_full = full;
    r->started_mono = ds_monotonic_s();
    sync_now_iso(r->started_iso, sizeof r->started_iso);
    pthread_t t;
    int rc = pthread_create(&t, NULL, sync_thread, a);
    if (rc != 0) {
        free(a);
        r->syncing = false;
        ds_error_set(err, DS_ERR_NOMEM, "%s: cannot start a sync thread: %s", r->src->name, strerror(rc));
        return JOBS_FAILED;
    }
    pthread_detach(t); /* the thread ends alone; shutdown waits on j->active */
    j->active++;
    return JOBS_STARTED;
}

jobs_start_result jobs_start_sync(jobs *j, const char *name, bool full, ds_error *err)
{
    pthread_mutex_lock(&j->lock);
    source_runtime *r = jobs_find(j, name);
    jobs_start_result res = r ? start_locked(j, r, full, err) : JOBS_UNKNOWN;
    pthread_mutex_unlock(&j->lock);
    return res;
}

jobs_start_result jobs_reset_watermark(jobs *j, const char *name, ds_error *err)
{
    /* `resetting` keeps a sync from starting between the busy check and the
     * reset: such a sync read the old watermark and, on commit, wrote a new
     * one over the reset, so the "next sync is full" promise was lost. */
    pthread_mutex_lock(&j->lock);
    source_runtime *r = jobs_find(j, name);
    bool busy = r && (r->syncing || r->resetting);
    if (r && !busy)
        r->resetting = true;
    pthread_mutex_unlock(&j->lock);
    if (r == NULL)
        return JOBS_UNKNOWN;
    if (busy)
        return JOBS_BUSY;
    bool ok = sync_reset_watermarks(j->st, r->src, err);
    json_t *status = ok ? load_status(j, r->src) : NULL;
    pthread_mutex_lock(&j->lock);
    if (status) {
        json_decref(r->status);
        r->status = status;
    }
    r->resetting = false;
    pthread_mutex_unlock(&j->lock);
    return ok ? JOBS_STARTED : JOBS_FAILED;
}

/* full_refresh_interval_minutes: a scheduled sync becomes a full rebuild
 * once that long has passed since the last full one, so deletes in the
 * source reach the cache. Called with the lock held. */
static bool full_refresh_due(const source_runtime *r)
{
    double interval = r->src->full_refresh_interval_minutes * 60.0;
    if (interval <= 0)
        return false;
    time_t last_full;
    if (!sync_parse_iso(json_string_value(json_object_get(r->status, "last_full")), &last_full))
        return true;
    return ds_unix_s() - (double)last_full >= interval;
}

/* Starts a scheduled sync; one that cannot start now is tried again an
 * interval later. Called with the lock held. */
static void start_due(jobs *j, source_runtime *r, double now)
{
    ds_error err;
    jobs_start_result res = start_locked(j, r, full_refresh_due(r), &err);
    if (res == JOBS_BUSY)
        ds_log_info("%s: already syncing; skipped by the scheduler this time", r->src->name);
    else if (res == JOBS_FAILED)
        ds_log_error("%s; the scheduler tries again in %.0f s", err.msg, interval_s(r));
    if (res != JOBS_STARTED)
        r->next_due_mono = now + interval_s(r);
}

/* The scheduler: sleeps until the next source is due, starts every due
 * source (each on its own thread, so they run concurrently; incremental
 * whenever possible), and repeats until shutdown. A source already syncing
 * is skipped for that tick. */
static void *scheduler_main(void *arg)
{
    jobs *j = arg;
    pthread_mutex_lock(&j->lock);
    /* The scheduler starts after the startup syncs complete. */
    while (!j->stopping && j->active > 0)
        pthread_cond_wait(&j->changed, &j->lock);
    double now = ds_monotonic_s();
    for (size_t i = 0; i < j->n; i++) {
        source_runtime *r = &j->sources[i];
        if (r->src->enabled && interval_s(r) > 0 && r->next_due_mono == 0)
            r->next_due_mono = now + interval_s(r);
    }
    ds_log_info("scheduler started");
    while (!j->stopping) {
        now = ds_monotonic_s();
        double next = 0;
        for (size_t i = 0; i < j->n; i++) {
            source_runtime *r = &j->sources[i];
            if (!r->src->enabled || interval_s(r) <= 0 || r->next_due_mono == 0)
                continue;
            if (r->next_due_mono <= now) {
                start_due(j, r, now);
                if (r->syncing)
                    continue; /* next_due is set when this sync ends */
            }
            if (next == 0 || r->next_due_mono < next)
                next = r->next_due_mono;
        }
        if (next == 0) {
            pthread_cond_wait(&j->changed, &j->lock);
        } else {
            struct timespec until;
            until.tv_sec = (time_t)next;
            until.tv_nsec = (long)((next - (double)until.tv_sec) * 1e9);
            pthread_cond_timedwait(&j->changed, &j->lock, &until);
        }
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

bool jobs_start_background(jobs *j, bool startup_sync, ds_error *err)
{
    pthread_mutex_lock(&j->lock);
    for (size_t i = 0; startup_sync && i < j->n; i++) {
        source_runtime *r = &j->sources[i];
        ds_error start_err;
        if (r->src->enabled && r->src->auto_load && start_locked(j, r, false, &start_err) == JOBS_FAILED)
            ds_log_error("%s; startup sync skipped", start_err.msg);
    }
    /* duckdb.enabled: false turns syncing off: the periodic syncs too, not
     * only the ones the API is asked for. */
    int rc = 0;
    if (j->cfg->store.enabled) {
        rc = pthread_create(&j->scheduler, NULL, scheduler_main, j);
        j->scheduler_started = rc == 0;
    } else {
        ds_log_info("syncing is disabled (duckdb.enabled: false): no scheduler");
    }
    pthread_mutex_unlock(&j->lock);
    if (rc != 0)
        return ds_error_set(err, DS_ERR_NOMEM, "cannot start the scheduler thread: %s", strerror(rc));
    return true;
}

void jobs_shutdown(jobs *j)
{
    /* The cancel requests are sent outside the lock: PQcancel waits for the
     * server's answer with no time limit of its own, and status requests
     * need the lock meanwhile. Once stopping is set no sync starts, so every
     * source is asked to stop: an idle one has no statement to cancel. */
    pthread_mutex_lock(&j->lock);
    j->stopping = true;
    pthread_cond_broadcast(&j->changed);
    pthread_mutex_unlock(&j->lock);
    for (size_t i = 0; i < j->n; i++)
        sync_cancel_request(&j->sources[i].cancel);
    if (j->scheduler_started)
        pthread_join(j->scheduler, NULL);
    j->scheduler_started = false;
    pthread_mutex_lock(&j->lock);
    while (j->active > 0)
        pthread_cond_wait(&j->changed, &j->lock);
    pthread_mutex_unlock(&j->lock);
}

json_t *jobs_status_json(jobs *j)
{
    json_t *datasets = json_object();
    bool ok = datasets != NULL;
    pthread_mutex_lock(&j->lock);
    for (size_t i = 0; ok && i < j->n; i++) {
        source_runtime *r = &j->sources[i];
        json_t *doc = json_deep_copy(r->status);
        if (doc != NULL && r->syncing)
            sync_status_overlay_syncing(doc, &r->progress, r->started_iso, r->sync_full);
        ok = json_object_set_new(datasets, r->src->data_name, doc) == 0;
    }
    pthread_mutex_unlock(&j->lock);
    if (!ok) {
        json_decref(datasets);
        return NULL;
    }
    return datasets;
}

/* One metric family: its help and type lines, then a sample per source. */
static void metric_header(ds_buf *b, const char *name, const char *type, const char *help)
{
    ds_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *jobs_metrics_text(jobs *j)
{
    ds_buf b = DS_BUF_INIT;
    pthread_mutex_lock(&j->lock);
    metric_header(&b, "duckstore_syncs_total", "counter", "Completed syncs by result.");
    for (size_t i = 0; i < j->n; i++) {
        source_runtime *r = &j->sources[i];
        ds_buf_appendf(&b, "duckstore_syncs_total{source=\"%s\",result=\"success\"} %llu\n", r->src->name,
                       (unsigned long long)r->syncs_ok);
        ds_buf_appendf(&b, "duckstore_syncs_total{source=\"%s\",result=\"error\"} %llu\n", r->src->name,
                       (unsigned long long)r->syncs_failed);
    }
    metric_header(&b, "duckstore_rows_synced_total", "counter", "Rows read from PostgreSQL and stored.");
    for (size_t i = 0; i < j->n; i++)
        ds_buf_appendf(&b, "duckstore_rows_synced_total{source=\"%s\"} %llu\n", j->sources[i].src->name,
                       (unsigned long long)j->sources[i].rows_synced);
    metric_header(&b, "duckstore_last_success_timestamp_seconds", "gauge",
                  "Unix time of the last successful sync.");
    for (size_t i = 0; i < j->n; i++)
        ds_buf_appendf(&b, "duckstore_last_success_timestamp_seconds{source=\"%s\"} %.3f\n",
                       j->sources[i].src->name, j->sources[i].last_success_unix);
    metric_header(&b, "duckstore_last_sync_duration_seconds", "gauge", "Duration of the last sync.");
    for (size_t i = 0; i < j->n; i++)
        ds_buf_appendf(&b, "duckstore_last_sync_duration_seconds{source=\"%s\"} %.3f\n",
                       j->sources[i].src->name, j->sources[i].last_duration_s);
    metric_header(&b, "duckstore_source_state", "gauge", "Current state of each source (1 = in that state).");
    for (size_t i = 0; i < j->n; i++) {
        source_runtime *r = &j->sources[i];
        sync_state state = r->syncing ? SYNC_STATE_SYNCING : sync_status_state(r->status);
        for (int s = 0; s < SYNC_STATE_COUNT; s++)
            ds_buf_appendf(&b, "duckstore_source_state{source=\"%s\",state=\"%s\"} %d\n", r->src->name,
                           sync_state_name((sync_state)s), state == (sync_state)s);
    }
    pthread_mutex_unlock(&j->lock);
    return ds_buf_take(&b);
}
