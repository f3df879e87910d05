/* Sync threads and the scheduler for jobs.h. One mutex guards the runtime
 * records; it is never held while PostgreSQL or DuckDB work runs. */
#include "server/jobs.h"

#include "source/pgoutput.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "publish/publish.h"

struct jobs_config {
    cfg_config cfg; /* first: a const cfg_config * of jobs_config_acquire leads back here */
    int refs;       /* under the jobs lock */
};

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

/* Called with the lock held. */
static jobs_config *config_pin(jobs *j)
{
    j->current->refs++;
    return j->current;
}

/* Called with the lock held; the last user frees the config. */
static void config_unpin(jobs_config *c)
{
    if (--c->refs > 0)
        return;
    cfg_free(&c->cfg);
    free(c);
}

const cfg_config *jobs_config_acquire(jobs *j)
{
    pthread_mutex_lock(&j->lock);
    jobs_config *c = config_pin(j);
    pthread_mutex_unlock(&j->lock);
    return &c->cfg;
}

void jobs_config_release(jobs *j, const cfg_config *cfg)
{
    pthread_mutex_lock(&j->lock);
    config_unpin((jobs_config *)(void *)cfg);
    pthread_mutex_unlock(&j->lock);
}

/* A config taken over from the caller, in use by no one yet. */
static jobs_config *config_adopt(cfg_config *cfg)
{
    jobs_config *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->cfg = *cfg;
    c->refs = 1;
    memset(cfg, 0, sizeof *cfg);
    return c;
}

/* Any record of that name, also of a removed source. Lock held. */
static source_runtime *find_record(jobs *j, const char *name)
{
    for (size_t i = 0; i < j->n; i++) {
        source_runtime *r = j->sources[i];
        if (strcmp(r->name, name) == 0)
            return r;
    }
    return NULL;
}

/* A new record appended to the list; NULL when out of memory. Lock held. */
static source_runtime *add_record(jobs *j, const char *name)
{
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 16;
        source_runtime **grown = realloc(j->sources, cap * sizeof(source_runtime *));
        if (grown == NULL)
            return NULL;
        j->sources = grown;
        j->cap = cap;
    }
    source_runtime *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    snprintf(r->name, sizeof r->name, "%s", name);
    sync_cancel_init(&r->cancel);
    j->sources[j->n++] = r;
    return r;
}

static void pool_settings(const cfg_config *cfg, size_t *max_idle, double *timeout_s)
{
    *max_idle = (size_t)cfg->store.max_idle_source_connections;
    *timeout_s = cfg->store.idle_source_connection_timeout_s;
}

bool jobs_init(jobs *j, store *st, cfg_config *cfg, ds_error *err)
{
    memset(j, 0, sizeof *j);
    j->st = st;
    size_t max_idle;
    double timeout_s;
    pool_settings(cfg, &max_idle, &timeout_s);
    sync_conn_pool_init(&j->conns, max_idle, timeout_s);
    pthread_mutex_init(&j->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&j->changed, &attr);
    pthread_condattr_destroy(&attr);
    bool ok = (j->current = config_adopt(cfg)) != NULL;
    const cfg_config *c = ok ? &j->current->cfg : NULL;
    for (size_t i = 0; ok && i < c->n_sources; i++) {
        source_runtime *r = add_record(j, c->sources[i].name);
        if ((ok = r != NULL)) {
            r->src = &c->sources[i];
            r->status = load_status(j, r->src);
        }
    }
    if (!ok) {
        jobs_destroy(j);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    return true;
}

void jobs_destroy(jobs *j)
{
    for (size_t i = 0; i < j->n; i++) {
        sync_cancel_destroy(&j->sources[i]->cancel);
        json_decref(j->sources[i]->status);
        free(j->sources[i]);
    }
    free(j->sources);
    sync_conn_pool_destroy(&j->conns);
    if (j->current)
        config_unpin(j->current);
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->changed);
}

source_runtime *jobs_find(jobs *j, const char *name)
{
    source_runtime *r = find_record(j, name);
    return r != NULL && r->src != NULL ? r : NULL;
}

/* A logical source streams without end; the scheduler only starts it
 * again when it stopped (a failure), after this long. */
#define CAPTURE_RETRY_S 5.0

static bool is_logical(const cfg_source *src)
{
    return src != NULL && src->capture == CFG_CAPTURE_LOGICAL;
}

static double interval_s(const source_runtime *r)
{
    if (is_logical(r->src))
        return CAPTURE_RETRY_S;
    return r->src != NULL ? r->src->refresh_interval_minutes * 60.0 : 0;
}

/* Caches the persisted status of r's source, read with the config in
 * force: when a reload comes in between, it is read again with the new
 * one, so the cached document never describes a config no longer in
 * force. if_unchanged: only when no one else changed it since version
 * `seen` (the other one is newer). */
static void refresh_status(jobs *j, source_runtime *r, bool if_unchanged, uint64_t seen)
{
    for (;;) {
        pthread_mutex_lock(&j->lock);
        jobs_config *c = config_pin(j);
        const cfg_source *src = r->src;
        pthread_mutex_unlock(&j->lock);
        json_t *doc = src != NULL ? load_status(j, src) : NULL;
        pthread_mutex_lock(&j->lock);
        bool current = j->current == c;
        if (current && doc != NULL && !(if_unchanged && r->status_version != seen)) {
            json_decref(r->status);
            r->status = doc;
            r->status_version++;
            doc = NULL;
        }
        config_unpin(c);
        pthread_mutex_unlock(&j->lock);
        json_decref(doc);
        if (current)
            return;
    }
}

void jobs_refresh_source(jobs *j, const char *name)
{
    pthread_mutex_lock(&j->lock);
    source_runtime *r = find_record(j, name);
    pthread_mutex_unlock(&j->lock);
    if (r != NULL)
        refresh_status(j, r, false, 0);
}

const char *jobs_trigger_name(jobs_trigger trigger)
{
    static const char *const names[] = {"manual", "scheduled", "startup"};
    return (unsigned)trigger < sizeof names / sizeof names[0] ? names[trigger] : names[0];
}

const char *jobs_result_name(jobs_result result)
{
    static const char *const names[] = {"none", "success", "error", "cancelled"};
    return (unsigned)result < sizeof names / sizeof names[0] ? names[result] : names[0];
}

typedef struct sync_thread_arg {
    jobs *j;
    source_runtime *r;
    jobs_config *cfg; /* pinned: the config the sync started with */
    const cfg_source *src;
    bool full;
    jobs_trigger trigger;
} sync_thread_arg;

/* Why a sync was asked to be full, for its start line. */
static const char *full_reason(jobs_trigger trigger)
{
    return trigger == JOBS_TRIGGER_SCHEDULED ? "full_refresh_interval_minutes reached" : "full requested";
}

void jobs_log_sync_start(const cfg_source *src, jobs_trigger trigger, bool full)
{
    const char *kind = jobs_trigger_name(trigger);
    ds_log_about about = {.source = src->name, .event = "sync_start"};
    ds_log_field fields[] = {DS_LOG_FIELD_STR("trigger", kind), DS_LOG_FIELD_BOOL("full", full),
                             DS_LOG_FIELD_STR("full_reason", full ? full_reason(trigger) : NULL)};
    ds_log_event(DS_LOG_INFO, &about, fields, sizeof fields / sizeof fields[0], "%s: sync started (%s%s%s)",
                 src->name, kind, full ? ", full: " : "", full ? full_reason(trigger) : "");
}

/* The SQLSTATE a PostgreSQL error message carries ("... (SQLSTATE 42703"),
 * into out; false when it has none. */
static bool message_sqlstate(const char *msg, char out[6])
{
    for (const char *p = strstr(msg, "SQLSTATE "); p != NULL; p = strstr(p + 1, "SQLSTATE ")) {
        const char *code = p + 9;
        size_t n = strspn(code, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ");
        if (n == 5) {
            memcpy(out, code, 5);
            out[5] = '\0';
            return true;
        }
    }
    return false;
}

const char *jobs_error_kind(ds_error_code code)
{
    switch (code) {
    case DS_ERR_USAGE:
    case DS_ERR_CONFIG:
        return "config";
    case DS_ERR_SOURCE:
        return "postgresql";
    case DS_ERR_TIMEOUT:
        return "timeout";
    case DS_ERR_STORE:
        return "duckdb";
    case DS_ERR_DECODE:
        return "decode";
    case DS_ERR_SCHEMA:
        return "schema";
    case DS_ERR_CANCELLED:
        return "cancelled";
    case DS_ERR_BUSY:
        return "busy";
    case DS_ERR_NOMEM:
        return "out_of_memory";
    case DS_ERR_RELOAD:
        return "reload";
    case DS_ERR_RESTART:
        return "restart";
    case DS_OK:
        break;
    }
    return "other";
}

/* The end of a sync: one line per table and the source's summary on
 * success, the error (with its SQLSTATE when PostgreSQL gave one)
 * otherwise. */
void jobs_log_sync_end(const cfg_source *src, jobs_trigger trigger, bool ok, const sync_report *report,
                       const sync_progress *progress, const ds_error *err, double elapsed_s)
{
    const char *kind = jobs_trigger_name(trigger);
    for (size_t i = 0; i < report->nwarnings; i++) {
        ds_log_about about = {.source = src->name, .event = "sync_warning"};
        ds_log_field fields[] = {DS_LOG_FIELD_STR("trigger", kind)};
        ds_log_event(DS_LOG_WARN, &about, fields, 1, "%s", report->warnings[i]);
    }
    if (ok) {
        for (size_t i = 0; i < report->ntables; i++) {
            const sync_table_report *t = &report->tables[i];
            ds_log_about about = {.source = src->name, .table = t->table, .event = "sync_table"};
            uint64_t bytes = i < CFG_MAX_QUERIES ? atomic_load(&progress->table_bytes[i]) : 0;
            ds_log_field fields[] = {DS_LOG_FIELD_STR("trigger", kind),
                                     DS_LOG_FIELD_STR("sync_type", t->incremental ? "incremental" : "full"),
                                     DS_LOG_FIELD_INT("rows_read", t->rows_loaded),
                                     DS_LOG_FIELD_INT("rows", t->rows_total),
                                     DS_LOG_FIELD_INT("bytes_read", bytes),
                                     DS_LOG_FIELD_BOOL("truncated", t->truncated)};
            ds_log_event(DS_LOG_INFO, &about, fields, sizeof fields / sizeof fields[0],
                         "%s: %s: %s, %lld rows read, %lld rows in the table%s", src->name, t->table,
                         t->incremental ? "incremental" : "full", (long long)t->rows_loaded,
                         (long long)t->rows_total, t->truncated ? ", truncated" : "");
        }
        ds_log_about about = {.source = src->name, .event = "sync_end"};
        ds_log_field fields[] = {DS_LOG_FIELD_STR("trigger", kind),
                                 DS_LOG_FIELD_STR("result", "success"),
                                 DS_LOG_FIELD_STR("sync_type", report->incremental ? "incremental" : "full"),
                                 DS_LOG_FIELD_INT("rows", report->rows),
                                 DS_LOG_FIELD_INT("rows_added", report->rows_added),
                                 DS_LOG_FIELD_REAL("duration_s", report->duration_s),
                                 DS_LOG_FIELD_BOOL("truncated", report->truncated)};
        ds_log_event(DS_LOG_INFO, &about, fields, sizeof fields / sizeof fields[0],
                     "%s: %s sync done, %lld rows (%+lld) in %.2f s%s (%s)", src->name,
                     report->incremental ? "incremental" : "full", (long long)report->rows,
                     (long long)report->rows_added, report->duration_s,
                     report->truncated ? ", truncated" : "", kind);
        return;
    }
    bool cancelled = err->code == DS_ERR_CANCELLED;
    char sqlstate[6];
    ds_log_about about = {.source = src->name, .event = "sync_end"};
    ds_log_field fields[] = {
        DS_LOG_FIELD_STR("trigger", kind), DS_LOG_FIELD_STR("result", cancelled ? "cancelled" : "error"),
        DS_LOG_FIELD_STR("error_kind", cancelled ? NULL : jobs_error_kind(err->code)),
        DS_LOG_FIELD_STR("sqlstate", message_sqlstate(err->msg, sqlstate) ? sqlstate : NULL),
        DS_LOG_FIELD_REAL("duration_s", elapsed_s)};
    size_t n = sizeof fields / sizeof fields[0];
    if (cancelled) /* a shutdown or a cancel request, not a failure: no ERROR line to alert on */
        ds_log_event(DS_LOG_INFO, &about, fields, n,
                     "%s: sync cancelled; the previous data, watermarks and status stay", src->name);
    else
        ds_log_event(DS_LOG_ERROR, &about, fields, n, "%s: sync failed: %s", src->name, err->msg);
}

/* The time a watermark stands for, as Unix seconds: DuckDB's text of a
 * timestamp ("2026-02-13 10:00:00.123456+00", without offset for a
 * timestamp without time zone, read as UTC). False for other watermarks
 * (integers, dates, text). */
static bool watermark_unix(const char *text, double *out)
{
    int y, mo, d, h, mi, sec, used = 0;
    if (text == NULL || sscanf(text, "%4d-%2d-%2d %2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &used) != 6 ||
        used != 19)
        return false;
    const char *p = text + used;
    double frac = 0;
    if (*p == '.') {
        double scale = 0.1;
        for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
            frac += (*p - '0') * scale;
    }
    int offset_s = 0;
    if (*p == '+' || *p == '-') {
        int oh = 0, om = 0, n = 0;
        if (sscanf(p + 1, "%2d%n", &oh, &n) != 1 || n != 2)
            return false;
        const char *q = p + 1 + n;
        if (*q == ':' && sscanf(q + 1, "%2d%n", &om, &n) == 1 && n == 2)
            q += 1 + n;
        offset_s = (*p == '-' ? -1 : 1) * (oh * 3600 + om * 60);
        p = q;
    }
    if (*p != '\0')
        return false;
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = sec};
    *out = (double)timegm(&tm) - offset_s + frac;
    return true;
}

/* The stats slot of a table; a slot of a table the source no longer has
 * is reused. NULL only when every slot is taken (never with the slots
 * jobs.h gives). Lock held. */
static table_stats *stats_slot(source_runtime *r, const cfg_source *src, const char *table)
{
    size_t cap = sizeof r->tables / sizeof r->tables[0];
    for (size_t k = 0; k < cap; k++)
        if (strcmp(r->tables[k].table, table) == 0)
            return &r->tables[k];
    for (size_t k = 0; k < cap; k++) {
        bool in_use = false;
        for (size_t p = 0; p < src->n_plans; p++)
            in_use |= strcmp(r->tables[k].table, src->plans[p].table) == 0;
        if (!in_use) {
            memset(&r->tables[k], 0, sizeof r->tables[k]);
            snprintf(r->tables[k].table, sizeof r->tables[k].table, "%s", table);
            return &r->tables[k];
        }
    }
    return NULL;
}

/* After a sync: the bytes each table read, and the time of its newest
 * data. A success sets it from the new watermark (none: no age); a failure
 * clears the watermarks but not the data, so the last time known stays.
 * Lock held. */
static void count_table_stats(source_runtime *r, const cfg_source *src, const sync_progress *progress,
                              bool ok)
{
    json_t *marks = json_object_get(r->status, "watermarks");
    for (size_t i = 0; i < src->n_plans && i < CFG_MAX_QUERIES; i++) {
        table_stats *slot = stats_slot(r, src, src->plans[i].table);
        if (slot == NULL)
            continue;
        slot->bytes += atomic_load(&progress->table_bytes[i]);
        double t;
        if (watermark_unix(json_string_value(json_object_get(marks, src->plans[i].table)), &t))
            slot->newest_unix = t;
        else if (ok)
            slot->newest_unix = 0;
    }
}

typedef struct loaded_ctx {
    jobs *j;
    source_runtime *r;
} loaded_ctx;

static void capture_loaded(void *arg)
{
    loaded_ctx *ctx = arg;
    refresh_status(ctx->j, ctx->r, false, 0);
    pthread_mutex_lock(&ctx->j->lock);
    ctx->r->publish_requested = true; /* the load is this stream's "sync" */
    pthread_cond_broadcast(&ctx->j->changed);
    pthread_mutex_unlock(&ctx->j->lock);
}

static void *sync_thread(void *arg)
{
    sync_thread_arg *a = arg;
    jobs *j = a->j;
    source_runtime *r = a->r;
    jobs_config *cfg = a->cfg;
    const cfg_source *src = a->src;
    jobs_trigger trigger = a->trigger;
    sync_options opt = {
        .force_full = a->full, .cancel = &r->cancel, .progress = &r->progress, .conns = &j->conns};
    free(a);
    sync_report report;
    ds_error err;
    ds_error_clear(&err);
    jobs_log_sync_start(src, trigger, opt.force_full);
    double t0 = ds_monotonic_s();
    bool ok;
    if (is_logical(src)) {
        /* Streams until shutdown, a reload of the config or a failure. */
        loaded_ctx loaded = {.j = j, .r = r};
        atomic_store(&r->live.rows, -1);
        capture_options co = {.force_full = opt.force_full,
                              .follow = true,
                              .cancel = opt.cancel,
                              .progress = opt.progress,
                              .live = &r->live,
                              .loaded = capture_loaded,
                              .loaded_ctx = &loaded};
        ok = capture_run(j->st, &cfg->cfg, src, &co, &report, &err);
    } else {
        ok = sync_source(j->st, &cfg->cfg, src, &opt, &report, &err);
    }
    jobs_log_sync_end(src, trigger, ok, &report, &r->progress, &err, ds_monotonic_s() - t0);
    refresh_status(j, r, false, 0);

    pthread_mutex_lock(&j->lock);
    count_table_stats(r, src, &r->progress, ok);
    double now = ds_monotonic_s();
    r->syncing = false;
    r->last_result = ok                             ? JOBS_RESULT_SUCCESS
                     : err.code == DS_ERR_CANCELLED ? JOBS_RESULT_CANCELLED
                                                    : JOBS_RESULT_ERROR;
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
    /* After the sync's result is out; the config stays pinned and the
     * store open (shutdown waits for active syncs). */
    pthread_mutex_unlock(&j->lock);
    if (ok && !is_logical(src) && src->publish_line != 0) {
        publish_after_sync(j->st, src, report.data_changed);
        refresh_status(j, r, false, 0);
    }
    pthread_mutex_lock(&j->lock);
    config_unpin(cfg);
    j->active--;
    pthread_cond_broadcast(&j->changed);
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

/* Called with the lock held. */
static jobs_start_result start_locked(jobs *j, source_runtime *r, bool full, jobs_trigger trigger,
                                      ds_error *err)
{
    if (j->stopping)
        return JOBS_STOPPING;
    if (r->syncing || r->resetting || r->cancelling)
        return JOBS_BUSY;
    sync_thread_arg *a = malloc(sizeof *a);
    if (a == NULL) {
        ds_error_set(err, DS_ERR_NOMEM, "%s: cannot start a sync: out of memory", r->name);
        return JOBS_FAILED;
    }
    *a = (sync_thread_arg){
        .j = j, .r = r, .cfg = config_pin(j), .src = r->src, .full = full, .trigger = trigger};
    atomic_store(&r->cancel.requested, false);
    atomic_store(&r->progress.rows, 0);
    atomic_store(&r->progress.bytes, 0);
    atomic_store(&r->progress.phase, SYNC_PHASE_DESCRIBING);
    for (size_t i = 0; i < CFG_MAX_QUERIES; i++) {
        atomic_store(&r->progress.table_rows[i], 0);
        atomic_store(&r->progress.table_bytes[i], 0);
    }
    r->syncing = true;
    r->running_src = r->src;
    r->publish_requested = is_logical(r->src); /* a stream resumed: the last version may be due */
    r->sync_id = ++j->last_sync_id;
    r->last_result = JOBS_RESULT_NONE;
    r->sync_full = full;
    r->trigger = trigger;
    r->started_mono = ds_monotonic_s();
    sync_now_iso(r->started_iso, sizeof r->started_iso);
    pthread_t t;
    int rc = pthread_create(&t, NULL, sync_thread, a);
    if (rc != 0) {
        config_unpin(a->cfg);
        free(a);
        r->syncing = false;
        ds_error_set(err, DS_ERR_NOMEM, "%s: cannot start a sync thread: %s", r->name, strerror(rc));
        return JOBS_FAILED;
    }
    pthread_detach(t); /* the thread ends alone; shutdown waits on j->active */
    j->active++;
    return JOBS_STARTED;
}

/* A logical source whose running sync streams its changes. Lock held. */
static bool streaming_now(source_runtime *r)
{
    return r->syncing && is_logical(r->running_src) && atomic_load(&r->live.streaming);
}

/* A logical source that streams already: a full sync asked for makes it
 * drop its slot and load again. Lock held. */
static bool capture_reload_requested(source_runtime *r, bool full)
{
    if (!full || !streaming_now(r))
        return false;
    atomic_store(&r->live.reload_requested, true);
    return true;
}

jobs_start_result jobs_start_sync(jobs *j, const char *name, bool full, ds_error *err)
{
    pthread_mutex_lock(&j->lock);
    source_runtime *r = jobs_find(j, name);
    jobs_start_result res = r == NULL ? JOBS_UNKNOWN
                            : capture_reload_requested(r, full)
                                ? JOBS_STARTED
                                : start_locked(j, r, full, JOBS_TRIGGER_MANUAL, err);
    if (res == JOBS_BUSY && streaming_now(r))
        res = JOBS_STREAMING;
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
    if (r != NULL && capture_reload_requested(r, true)) {
        pthread_mutex_unlock(&j->lock);
        return JOBS_STARTED;
    }
    bool busy = r && (r->syncing || r->resetting);
    jobs_config *cfg = NULL;
    const cfg_source *src = NULL;
    if (r && !busy) {
        r->resetting = true;
        cfg = config_pin(j);
        src = r->src;
    }
    pthread_mutex_unlock(&j->lock);
    if (r == NULL)
        return JOBS_UNKNOWN;
    if (busy)
        return JOBS_BUSY;
    bool ok = is_logical(src) ? capture_reset(j->st, src, err) : sync_reset_watermarks(j->st, src, err);
    if (ok)
        refresh_status(j, r, false, 0);
    pthread_mutex_lock(&j->lock);
    r->resetting = false;
    config_unpin(cfg);
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
    jobs_start_result res = start_locked(j, r, full_refresh_due(r), JOBS_TRIGGER_SCHEDULED, &err);
    ds_log_about about = {.source = r->name, .event = "sync_skipped"};
    ds_log_field fields[] = {DS_LOG_FIELD_STR("trigger", jobs_trigger_name(JOBS_TRIGGER_SCHEDULED))};
    if (res == JOBS_BUSY)
        ds_log_event(DS_LOG_INFO, &about, fields, 1,
                     "%s: already syncing; skipped by the scheduler this time", r->name);
    else if (res == JOBS_FAILED)
        ds_log_error("%s; the scheduler tries again in %.0f s", err.msg, interval_s(r));
    if (res != JOBS_STARTED)
        r->next_due_mono = now + interval_s(r);
}

/* A source the scheduler runs. Lock held. */
static bool scheduled(const source_runtime *r)
{
    return r->src != NULL && r->src->enabled && interval_s(r) > 0;
}

/* Startup syncs still running; a logical source's stream never ends, so
 * only its wait for the first load would hold the scheduler up: it does
 * not count. Lock held. */
static bool startup_syncs_running(const jobs *j)
{
    for (size_t i = 0; i < j->n; i++) {
        const source_runtime *r = j->sources[i];
        if (r->syncing && r->trigger == JOBS_TRIGGER_STARTUP && !is_logical(r->running_src))
            return true;
    }
    return false;
}

/* A stream has no syncs between its loads: its versions are published
 * every `every` minutes, with `every: sync` once a minute
 * (DUCKSTORE_PUBLISH_STREAM_SECONDS), when changes were applied since the
 * last one. */
static double stream_publish_interval_s(const cfg_source *src)
{
    if (src->publish_every_minutes > 0)
        return src->publish_every_minutes * 60.0;
    const char *env = getenv("DUCKSTORE_PUBLISH_STREAM_SECONDS");
    char *end = NULL;
    double seconds = env != NULL ? strtod(env, &end) : 0;
    return env != NULL && end != env && *end == '\0' && seconds > 0 ? seconds : 60.0;
}

typedef struct publish_thread_arg {
    jobs *j;
    source_runtime *r;
    jobs_config *cfg; /* pinned */
    const cfg_source *src;
    bool after_load; /* a load or a resumed stream: publish when due, as after a sync */
} publish_thread_arg;

static void *publish_thread(void *arg)
{
    publish_thread_arg *a = arg;
    jobs *j = a->j;
    source_runtime *r = a->r;
    bool ok = true;
    if (a->after_load) {
        publish_after_sync(j->st, a->src, true);
    } else {
        publish_result res;
        ds_error err;
        ds_error_clear(&err);
        ok = publish_source(j->st, a->src, &res, &err); /* logs and records its outcome */
    }
    refresh_status(j, r, false, 0);
    pthread_mutex_lock(&j->lock);
    r->publishing = false;
    r->next_publish_mono = ds_monotonic_s() + stream_publish_interval_s(a->src);
    if (!ok)
        r->changes_published = UINT64_MAX; /* retried at the next interval, changes or not */
    config_unpin(a->cfg);
    j->active--;
    pthread_cond_broadcast(&j->changed);
    pthread_mutex_unlock(&j->lock);
    free(a);
    return NULL;
}

/* Starts a publish of a streaming logical source when one is due; returns
 * when the next is due (monotonic, 0 = nothing to wait for). Lock held. */
static double stream_publish_tick(jobs *j, source_runtime *r, double now)
{
    /* The config in force: a reload restarts the stream under it, and the
     * publish thread pins it. */
    const cfg_source *src = r->src;
    if (src == NULL || src->publish_line == 0 || j->stopping)
        return 0;
    if (r->publishing || !atomic_load(&r->live.streaming))
        return r->publishing ? 0 : now + 0.5; /* the stream starts after its load */
    uint64_t changes = atomic_load(&r->live.changes);
    bool after_load = r->publish_requested;
    if (!after_load && (now < r->next_publish_mono || changes == r->changes_published))
        return r->next_publish_mono > now ? r->next_publish_mono : now + stream_publish_interval_s(src);
    publish_thread_arg *a = malloc(sizeof *a);
    if (a == NULL)
        return now + stream_publish_interval_s(src);
    *a = (publish_thread_arg){.j = j, .r = r, .cfg = config_pin(j), .src = src, .after_load = after_load};
    pthread_t t;
    int rc = pthread_create(&t, NULL, publish_thread, a);
    if (rc != 0) {
        config_unpin(a->cfg);
        free(a);
        ds_log_warn("%s: cannot start a publish thread: %s; tried again in %.0f s", r->name, strerror(rc),
                    stream_publish_interval_s(src));
        r->next_publish_mono = now + stream_publish_interval_s(src);
        return r->next_publish_mono;
    }
    pthread_detach(t); /* shutdown waits on j->active */
    j->active++;
    r->publishing = true;
    r->publish_requested = false;
    r->changes_published = changes;
    return 0;
}

/* The scheduler: sleeps until the next source is due (or the next kept
 * PostgreSQL connection has been idle too long), starts every due source
 * (each on its own thread, so they run concurrently; incremental whenever
 * possible), and repeats until shutdown. A source already syncing is
 * skipped for that tick. */
static void *scheduler_main(void *arg)
{
    jobs *j = arg;
    pthread_mutex_lock(&j->lock);
    /* The scheduler starts after the startup syncs complete. */
    while (!j->stopping && startup_syncs_running(j))
        pthread_cond_wait(&j->changed, &j->lock);
    double now = ds_monotonic_s();
    for (size_t i = 0; i < j->n; i++) {
        source_runtime *r = j->sources[i];
        if (scheduled(r) && r->next_due_mono == 0)
            r->next_due_mono = now + interval_s(r);
    }
    ds_log_info("scheduler started");
    while (!j->stopping) {
        /* Closing connections waits for their backends: not under the lock. */
        pthread_mutex_unlock(&j->lock);
        double next = sync_conn_pool_expire(&j->conns);
        pthread_mutex_lock(&j->lock);
        if (j->stopping)
            break;
        now = ds_monotonic_s();
        for (size_t i = 0; i < j->n; i++) {
            source_runtime *r = j->sources[i];
            if (is_logical(r->src) && r->syncing) {
                /* A stream runs until it fails: nothing to start, only
                 * its versions to publish. */
                double publish_at = stream_publish_tick(j, r, now);
                if (publish_at > 0 && (next == 0 || publish_at < next))
                    next = publish_at;
                continue;
            }
            if (!scheduled(r) || r->next_due_mono == 0)
                continue;
            /* The scheduler's own sync still runs: it sets the next due
             * time when it ends (a wake-up meanwhile is not a skip). */
            if (r->syncing && r->trigger == JOBS_TRIGGER_SCHEDULED)
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

/* sync_mode: startup syncs a source when it appears: at boot, or added by
 * a reload. Lock held. */
static void start_if_startup(jobs *j, source_runtime *r, const char *when)
{
    const cfg_config *cfg = &j->current->cfg;
    ds_error err;
    if (cfg->store.enabled && cfg->store.sync_mode == CFG_SYNC_STARTUP && r->src->enabled &&
        r->src->auto_load && start_locked(j, r, false, JOBS_TRIGGER_STARTUP, &err) == JOBS_FAILED)
        ds_log_error("%s; %s sync skipped", err.msg, when);
}

bool jobs_start_background(jobs *j, bool startup_sync, ds_error *err)
{
    pthread_mutex_lock(&j->lock);
    for (size_t i = 0; startup_sync && i < j->n; i++)
        start_if_startup(j, j->sources[i], "startup");
    /* duckdb.enabled: false turns syncing off: the periodic syncs too, not
     * only the ones the API is asked for. */
    int rc = 0;
    if (j->current->cfg.store.enabled) {
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

/* A changed refresh interval counts from the end of the source's last
 * sync, as if it had always been in force (a past due time is due now);
 * a source that had none is first due one interval from now. Lock held. */
static void reschedule(source_runtime *r, double before_s, double now)
{
    double after_s = interval_s(r);
    if (r->syncing || after_s == before_s)
        return; /* a running sync sets the next due time when it ends */
    if (after_s <= 0)
        r->next_due_mono = 0;
    else if (before_s > 0 && r->next_due_mono > 0)
        r->next_due_mono += after_s - before_s;
    else
        r->next_due_mono = now + after_s;
}

/* Appends name to a list for the reload's log line. */
static void list_name(ds_buf *b, const char *name)
{
    ds_buf_appendf(b, "%s%s", b->len ? ", " : "", name);
}

static const char *names_or_none(const ds_buf *b)
{
    const char *s = ds_buf_str(b);
    return s != NULL && s[0] ? s : "none";
}

void jobs_reload(jobs *j, cfg_config *cfg)
{
    jobs_config *next = config_adopt(cfg);
    size_t n = next ? next->cfg.n_sources : 0;
    json_t **docs = calloc(n ? n : 1, sizeof(json_t *));
    if (next == NULL || docs == NULL) {
        ds_log_error("config reload: out of memory; keeping the config in force");
        if (next != NULL)
            config_unpin(next);
        cfg_free(cfg);
        free(docs);
        return;
    }
    /* Sources new to the server get their status before they show. */
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&j->lock);
        bool known = jobs_find(j, next->cfg.sources[i].name) != NULL;
        pthread_mutex_unlock(&j->lock);
        if (!known)
            docs[i] = load_status(j, &next->cfg.sources[i]);
    }
    ds_buf added = DS_BUF_INIT, removed = DS_BUF_INIT;
    pthread_mutex_lock(&j->lock);
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++)
        ok = find_record(j, next->cfg.sources[i].name) != NULL || add_record(j, next->cfg.sources[i].name);
    uint64_t *seen = ok ? calloc(j->n ? j->n : 1, sizeof *seen) : NULL;
    double *before = ok && seen ? calloc(j->n ? j->n : 1, sizeof *before) : NULL;
    if (!ok || before == NULL) {
        pthread_mutex_unlock(&j->lock);
        ds_log_error("config reload: out of memory; keeping the config in force");
        free(seen);
        for (size_t i = 0; i < n; i++)
            json_decref(docs[i]);
        free(docs);
        pthread_mutex_lock(&j->lock);
        config_unpin(next);
        pthread_mutex_unlock(&j->lock);
        return;
    }
    jobs_config *old = j->current;
    j->current = next;
    for (size_t i = 0; i < j->n; i++) {
        source_runtime *r = j->sources[i];
        before[i] = r->src ? interval_s(r) : -1;
        r->src = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        source_runtime *r = find_record(j, next->cfg.sources[i].name);
        r->src = &next->cfg.sources[i];
        if (docs[i] != NULL) {
            json_decref(r->status);
            r->status = docs[i];
            r->status_version++;
        }
    }
    double now = ds_monotonic_s();
    for (size_t i = 0; i < j->n; i++) {
        source_runtime *r = j->sources[i];
        /* A logical source streams with the config it started with: it
         * stops, and the scheduler starts it again with the new one (or
         * not at all, once removed or no longer logical). */
        if (r->syncing && is_logical(r->running_src))
            atomic_store(&r->cancel.requested, true);
        seen[i] = r->status_version;
        if (r->src == NULL && before[i] >= 0) {
            list_name(&removed, r->name);
        } else if (r->src != NULL && before[i] < 0) {
            list_name(&added, r->name);
            r->next_due_mono = 0;
            reschedule(r, 0, now);
            start_if_startup(j, r, "reload");
        } else if (r->src != NULL) {
            reschedule(r, before[i], now);
        }
    }
    config_unpin(old);
    size_t n_records = j->n;
    pthread_cond_broadcast(&j->changed);
    pthread_mutex_unlock(&j->lock);
    free(docs);

    ds_log_info("config reloaded from %s: %zu source%s; added: %s; removed: %s", next->cfg.dir, n,
                n == 1 ? "" : "s", names_or_none(&added), names_or_none(&removed));
    ds_buf_free(&added);
    ds_buf_free(&removed);
    /* Kept connections belong to the old urls and timeouts; the new limits
     * apply at once. */
    size_t max_idle;
    double timeout_s;
    pool_settings(&next->cfg, &max_idle, &timeout_s);
    sync_conn_pool_configure(&j->conns, max_idle, timeout_s);
    sync_conn_pool_release(&j->conns);
    /* The status documents of the other sources show config values
     * (intervals, columns): read them again with the new config. */
    for (size_t i = 0; i < n_records; i++) {
        pthread_mutex_lock(&j->lock);
        source_runtime *r = j->sources[i];
        bool stale = r->src != NULL && r->status_version == seen[i];
        pthread_mutex_unlock(&j->lock);
        if (stale)
            refresh_status(j, r, true, seen[i]);
    }
    free(seen);
    free(before);
}

/* Reads the answer of jobs_cancel_sync from r. Lock held. */
static void cancel_answer(const source_runtime *r, jobs_cancel_outcome outcome, jobs_cancel_answer *out)
{
    out->outcome = outcome;
    out->sync_id = r->sync_id;
    out->trigger = r->trigger;
    out->result = r->syncing ? JOBS_RESULT_NONE : r->last_result;
}

void jobs_cancel_sync(jobs *j, const char *name, uint64_t sync_id, double wait_s, jobs_cancel_answer *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&j->lock);
    source_runtime *r = jobs_find(j, name);
    if (r == NULL) {
        out->outcome = JOBS_CANCEL_UNKNOWN;
        pthread_mutex_unlock(&j->lock);
        return;
    }
    if (!r->syncing || (sync_id != 0 && r->sync_id != sync_id)) {
        cancel_answer(r, r->syncing ? JOBS_CANCEL_OTHER : JOBS_CANCEL_IDLE, out);
        /* Another sync ran since: how sync_id ended is no longer known. */
        if (sync_id != 0 && r->sync_id != sync_id)
            out->result = JOBS_RESULT_NONE;
        pthread_mutex_unlock(&j->lock);
        return;
    }
    uint64_t id = r->sync_id;
    r->cancelling = true;
    pthread_mutex_unlock(&j->lock);
    /* Outside the lock, as at shutdown: PQcancel waits for PostgreSQL.
     * `cancelling` keeps the next sync from starting meanwhile; a sync
     * that ended meanwhile left the flag set for nothing, and the next one
     * clears it when it starts (start_locked). */
    ds_log_about about = {.source = name, .event = "sync_cancel"};
    ds_log_field fields[] = {DS_LOG_FIELD_INT("sync_id", id)};
    ds_log_event(DS_LOG_INFO, &about, fields, 1, "%s: cancel of the running sync requested", name);
    sync_cancel_request(&r->cancel);
    pthread_mutex_lock(&j->lock);
    r->cancelling = false;
    pthread_mutex_unlock(&j->lock);
    struct timespec until;
    double end = ds_monotonic_s() + wait_s;
    until.tv_sec = (time_t)end;
    until.tv_nsec = (long)((end - (double)until.tv_sec) * 1e9);
    pthread_mutex_lock(&j->lock);
    while (r->syncing && r->sync_id == id && pthread_cond_timedwait(&j->changed, &j->lock, &until) == 0) {
    }
    bool ended = !(r->syncing && r->sync_id == id);
    cancel_answer(r, ended ? JOBS_CANCEL_ENDED : JOBS_CANCEL_ENDING, out);
    out->sync_id = id;
    if (ended && r->sync_id != id) /* the next sync already started */
        out->result = JOBS_RESULT_NONE;
    pthread_mutex_unlock(&j->lock);
}

void jobs_shutdown(jobs *j)
{
    /* The cancel requests are sent outside the lock: PQcancel waits for the
     * server's answer with no time limit of its own, and status requests
     * need the lock meanwhile. Once stopping is set no sync starts, so every
     * source is asked to stop: an idle one has no statement to cancel. The
     * list only grows in jobs_reload, on this thread. */
    pthread_mutex_lock(&j->lock);
    j->stopping = true;
    pthread_cond_broadcast(&j->changed);
    size_t n = j->n;
    pthread_mutex_unlock(&j->lock);
    for (size_t i = 0; i < n; i++)
        sync_cancel_request(&j->sources[i]->cancel);
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
        source_runtime *r = j->sources[i];
        if (r->src == NULL)
            continue;
        json_t *doc = json_deep_copy(r->status);
        bool streaming = is_logical(r->src) && atomic_load(&r->live.streaming);
        if (doc != NULL && streaming)
            capture_status_add(j->st, r->src, &r->live, doc);
        if (doc != NULL && r->syncing && !streaming) {
            sync_status_overlay_syncing(doc, r->running_src, &r->progress, r->started_iso, r->sync_full);
            json_t *progress = json_object_get(doc, "progress");
            json_object_set_new(progress, "trigger", json_string(jobs_trigger_name(r->trigger)));
            json_object_set_new(progress, "sync_id", json_integer((json_int_t)r->sync_id));
        }
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

static const table_stats *find_stats(const source_runtime *r, const char *table)
{
    for (size_t k = 0; k < sizeof r->tables / sizeof r->tables[0]; k++)
        if (strcmp(r->tables[k].table, table) == 0)
            return &r->tables[k];
    return NULL;
}

/* Per table of each source in force: rows after the last success (from
 * the status), bytes read since start, and the age of the newest data
 * (now - the watermark's time). Lock held. */
static void table_metrics(ds_buf *b, source_runtime **rs, size_t n)
{
    metric_header(b, "duckstore_table_rows", "gauge",
                  "Rows of each DuckDB table after its last successful sync.");
    for (size_t i = 0; i < n; i++) {
        const cfg_source *src = rs[i]->src;
        json_t *tables = json_object_get(rs[i]->status, "tables");
        for (size_t p = 0; src != NULL && p < src->n_plans; p++) {
            json_t *rows = json_object_get(json_object_get(tables, src->plans[p].table), "rows");
            if (json_is_integer(rows))
                ds_buf_appendf(b, "duckstore_table_rows{source=\"%s\",table=\"%s\"} %lld\n", rs[i]->name,
                               src->plans[p].table, (long long)json_integer_value(rows));
        }
    }
    metric_header(b, "duckstore_bytes_read_total", "counter",
                  "Bytes of binary COPY data read from PostgreSQL per table, by every sync since start.");
    for (size_t i = 0; i < n; i++) {
        const cfg_source *src = rs[i]->src;
        for (size_t p = 0; src != NULL && p < src->n_plans; p++) {
            const table_stats *st = find_stats(rs[i], src->plans[p].table);
            uint64_t bytes = st ? st->bytes : 0;
            ds_buf_appendf(b, "duckstore_bytes_read_total{source=\"%s\",table=\"%s\"} %llu\n", rs[i]->name,
                           src->plans[p].table, (unsigned long long)bytes);
        }
    }
    metric_header(b, "duckstore_data_age_seconds", "gauge",
                  "Now minus the time of the table's watermark (its newest stored data), for timestamp "
                  "watermarks.");
    double now = ds_unix_s();
    for (size_t i = 0; i < n; i++) {
        const cfg_source *src = rs[i]->src;
        json_t *marks = json_object_get(rs[i]->status, "watermarks");
        for (size_t p = 0; src != NULL && p < src->n_plans; p++) {
            /* The status's watermark (also read at start), else the last one
             * a failed sync cleared. */
            double t;
            const table_stats *st = find_stats(rs[i], src->plans[p].table);
            if (!watermark_unix(json_string_value(json_object_get(marks, src->plans[p].table)), &t))
                t = st ? st->newest_unix : 0;
            if (t > 0)
                ds_buf_appendf(b, "duckstore_data_age_seconds{source=\"%s\",table=\"%s\"} %.3f\n",
                               rs[i]->name, src->plans[p].table, now - t);
        }
    }
}

/* Logical sources: the stream's position, lag and changes applied. */
static void capture_metrics(ds_buf *b, store *st, source_runtime **rs, size_t n)
{
    static const struct {
        const char *name, *type, *help, *field;
    } families[] = {
        {"duckstore_capture_confirmed_lsn", "gauge",
         "WAL position (LSN as a number) applied to DuckDB and confirmed to PostgreSQL.", "confirmed_lsn"},
        {"duckstore_capture_lag_bytes", "gauge", "WAL the server has that is not applied yet.", "lag_bytes"},
        {"duckstore_capture_lag_seconds", "gauge",
         "Age of the last applied change while changes wait, else 0.", "lag_seconds"},
    };
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        bool header = false;
        for (size_t i = 0; i < n; i++) {
            if (!is_logical(rs[i]->src))
                continue;
            if (!header)
                metric_header(b, families[f].name, families[f].type, families[f].help);
            header = true;
            json_t *doc = json_object();
            capture_status_add(st, rs[i]->src, &rs[i]->live, doc);
            json_t *v = json_object_get(doc, families[f].field);
            uint64_t lsn = 0;
            if (json_is_string(v) && pgo_lsn_parse(json_string_value(v), &lsn))
                ds_buf_appendf(b, "%s{source=\"%s\"} %llu\n", families[f].name, rs[i]->name,
                               (unsigned long long)lsn);
            else if (json_is_number(v))
                ds_buf_appendf(b, "%s{source=\"%s\"} %g\n", families[f].name, rs[i]->name,
                               json_number_value(v));
            json_decref(doc);
        }
    }
    bool header = false;
    for (size_t i = 0; i < n; i++) {
        if (!is_logical(rs[i]->src))
            continue;
        if (!header)
            metric_header(b, "duckstore_capture_changes_total", "counter",
                          "Inserts, updates, deletes and truncates applied since the server started.");
        header = true;
        ds_buf_appendf(b, "duckstore_capture_changes_total{source=\"%s\"} %llu\n", rs[i]->name,
                       (unsigned long long)atomic_load(&rs[i]->live.changes));
    }
}

char *jobs_metrics_text(jobs *j)
{
    ds_buf b = DS_BUF_INIT;
    size_t idle = sync_conn_pool_idle(&j->conns);
    pthread_mutex_lock(&j->lock);
    /* Removed sources are not shown. */
    source_runtime **rs = j->sources;
    size_t n = j->n;
    metric_header(&b, "duckstore_syncs_total", "counter", "Completed syncs by result.");
    for (size_t i = 0; i < n; i++) {
        if (rs[i]->src == NULL)
            continue;
        ds_buf_appendf(&b, "duckstore_syncs_total{source=\"%s\",result=\"success\"} %llu\n", rs[i]->name,
                       (unsigned long long)rs[i]->syncs_ok);
        ds_buf_appendf(&b, "duckstore_syncs_total{source=\"%s\",result=\"error\"} %llu\n", rs[i]->name,
                       (unsigned long long)rs[i]->syncs_failed);
    }
    metric_header(&b, "duckstore_rows_synced_total", "counter", "Rows read from PostgreSQL and stored.");
    for (size_t i = 0; i < n; i++)
        if (rs[i]->src != NULL)
            ds_buf_appendf(&b, "duckstore_rows_synced_total{source=\"%s\"} %llu\n", rs[i]->name,
                           (unsigned long long)rs[i]->rows_synced);
    metric_header(&b, "duckstore_last_success_timestamp_seconds", "gauge",
                  "Unix time of the last successful sync.");
    for (size_t i = 0; i < n; i++)
        if (rs[i]->src != NULL)
            ds_buf_appendf(&b, "duckstore_last_success_timestamp_seconds{source=\"%s\"} %.3f\n", rs[i]->name,
                           rs[i]->last_success_unix);
    metric_header(&b, "duckstore_last_sync_duration_seconds", "gauge", "Duration of the last sync.");
    for (size_t i = 0; i < n; i++)
        if (rs[i]->src != NULL)
            ds_buf_appendf(&b, "duckstore_last_sync_duration_seconds{source=\"%s\"} %.3f\n", rs[i]->name,
                           rs[i]->last_duration_s);
    metric_header(&b, "duckstore_source_state", "gauge", "Current state of each source (1 = in that state).");
    for (size_t i = 0; i < n; i++) {
        source_runtime *r = rs[i];
        if (r->src == NULL)
            continue;
        bool streaming = is_logical(r->src) && atomic_load(&r->live.streaming);
        sync_state state = r->syncing && !streaming ? SYNC_STATE_SYNCING : sync_status_state(r->status);
        for (int s = 0; s < SYNC_STATE_COUNT; s++)
            ds_buf_appendf(&b, "duckstore_source_state{source=\"%s\",state=\"%s\"} %d\n", r->name,
                           sync_state_name((sync_state)s), state == (sync_state)s);
    }
    metric_header(&b, "duckstore_consecutive_failures", "gauge",
                  "Failed syncs of each source in a row, since its last success or the server's start.");
    for (size_t i = 0; i < n; i++)
        if (rs[i]->src != NULL)
            ds_buf_appendf(&b, "duckstore_consecutive_failures{source=\"%s\"} %d\n", rs[i]->name,
                           rs[i]->consecutive_failures);
    table_metrics(&b, rs, n);
    capture_metrics(&b, j->st, rs, n);
    pthread_mutex_unlock(&j->lock);
    publish_metrics_text(&b);
    metric_header(&b, "duckstore_idle_source_connections", "gauge",
                  "PostgreSQL connections kept open between syncs, all sources.");
    ds_buf_appendf(&b, "duckstore_idle_source_connections %zu\n", idle);
    read_gate_counts readers = read_gate_read(store_read_gate(j->st));
    metric_header(&b, "duckstore_read_queries_running", "gauge",
                  "Reader queries (PostgreSQL protocol, /api/store/query) DuckDB works on now.");
    ds_buf_appendf(&b, "duckstore_read_queries_running %d\n", readers.running);
    metric_header(&b, "duckstore_read_queries_waiting", "gauge",
                  "Reader queries waiting for their turn (duckdb.read_concurrency).");
    ds_buf_appendf(&b, "duckstore_read_queries_waiting %d\n", readers.waiting);
    metric_header(&b, "duckstore_read_queries_waited_total", "counter",
                  "Reader queries that had to wait for their turn, since the start.");
    ds_buf_appendf(&b, "duckstore_read_queries_waited_total %llu\n", readers.waited_total);
    return ds_buf_take(&b);
}
