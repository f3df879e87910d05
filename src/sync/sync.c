/* One source's sync from start to end: a table job per query, run
 * concurrently (each may read with several partition workers), then the
 * commit, or the failure record that leaves the previous data readable. */
#include "sync/sync.h"

#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "sync/commit.h"
#include "sync/conns.h"
#include "sync/source_lock.h"
#include "sync/status.h"

const char *sync_phase_name(sync_phase phase)
{
    static const char *const names[] = {"idle", "describing", "reading", "committing"};
    return phase <= SYNC_PHASE_COMMITTING ? names[phase] : "idle";
}

static void set_phase(const sync_options *opt, sync_phase phase)
{
    if (opt->progress)
        atomic_store(&opt->progress->phase, (int)phase);
}

static void reset_progress(sync_progress *progress)
{
    atomic_store(&progress->rows, 0);
    atomic_store(&progress->bytes, 0);
    for (size_t i = 0; i < CFG_MAX_QUERIES; i++) {
        atomic_store(&progress->table_rows[i], 0);
        atomic_store(&progress->table_bytes[i], 0);
    }
}

/* Runs the jobs on threads of their own and waits; the first failure is
 * the sync's error. Their warnings go to the report either way. */
static bool run_jobs(table_job *jobs, size_t njobs, sync_report *report, ds_error *err)
{
    size_t started = 0;
    for (; started < njobs; started++)
        if (pthread_create(&jobs[started].thread, NULL, job_main, &jobs[started]) != 0)
            break;
    bool ok = started == njobs || ds_error_set(err, DS_ERR_NOMEM, "cannot start a sync thread");
    for (size_t i = 0; i < started; i++) {
        pthread_join(jobs[i].thread, NULL);
        for (size_t w = 0; w < jobs[i].warnings.nwarnings; w++)
            sync_report_warning(report, "%s", jobs[i].warnings.warnings[w]);
        if (!jobs[i].ok && ok) {
            ok = false;
            *err = jobs[i].err;
        }
    }
    return ok;
}

/* After a failed commit (or any DuckDB error: a full disk fails the
 * autocommitted inserts of a full sync too) DuckDB's memory may not match
 * the file: the store is reopened (waiting for other syncs to finish with
 * it) before the failure is recorded, so the record and every later sync
 * start from what the file holds. */
static void reopen_after_failed_commit(store *st)
{
    store_mark_suspect(st);
    store_use_end(st);
    ds_error err; /* logged by store_reopen; the record then fails and is kept in memory */
    store_reopen(st, &err);
    store_use_begin(st);
}

/* The path still names the open file (before the reads and again before the
 * commit: a sync can take minutes). */
static bool file_present(store *st, bool *lost, ds_error *err)
{
    *lost = !store_file_check(st, err);
    return !*lost;
}

/* Where the sync's time went, step by step (connect, horizon, read per
 * table; merge, status, commit), in one line at debug level (duckstore -v,
 * the server's log at -v): the first thing to read when a sync is slow. */
typedef struct sync_steps {
    double lock_ms, jobs_ms, unlock_ms;
    commit_steps commit;
    bool committed;
} sync_steps;

static void log_steps(const cfg_source *src, const table_job *jobs, size_t njobs, const sync_steps *steps,
                      double total_ms)
{
    if (!ds_log_enabled(DS_LOG_DEBUG))
        return;
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "%s: sync steps (ms): lock %.1f", src->name, steps->lock_ms);
    for (size_t i = 0; i < njobs; i++) {
        ds_buf_appendf(&b, "; %s:", jobs[i].plan->table);
        for (int k = 0; k < JOB_NSTEPS; k++)
            ds_buf_appendf(&b, "%s %s %.1f", k ? "," : "", job_step_name((job_step)k), jobs[i].step_ms[k]);
    }
    ds_buf_appendf(&b, "; tables %.1f", steps->jobs_ms);
    if (steps->committed) {
        const commit_steps *c = &steps->commit;
        for (size_t i = 0; i < njobs; i++)
            ds_buf_appendf(&b, "; merge %s %.1f", jobs[i].plan->table, c->apply_ms[i]);
        ds_buf_appendf(&b, "; ids %.1f; view and counts %.1f; status %.1f; %s %.1f", c->ids_ms, c->view_ms,
                       c->status_ms, c->quiet ? "nothing written" : "commit", c->commit_ms);
    }
    ds_buf_appendf(&b, "; unlock %.1f; total %.1f", steps->unlock_ms, total_ms);
    if (ds_buf_str(&b) != NULL)
        ds_log_debug("%s", ds_buf_str(&b));
    ds_buf_free(&b);
}

static double ms_since(double *since)
{
    double now = ds_monotonic_s(), ms = (now - *since) * 1e3;
    *since = now;
    return ms;
}

bool sync_source(store *st, const cfg_config *cfg, const cfg_source *src, const sync_options *opt,
                 sync_report *report, ds_error *err)
{
    sync_steps steps;
    memset(&steps, 0, sizeof steps);
    static const sync_options no_options = {0};
    if (opt == NULL)
        opt = &no_options;
    memset(report, 0, sizeof *report);
    double started = ds_monotonic_s();
    if (opt->progress)
        reset_progress(opt->progress);
    set_phase(opt, SYNC_PHASE_DESCRIBING);

    double step = started;
    source_lock lock;
    bool locked = source_lock_take(src, opt, &lock, err);
    steps.lock_ms = ms_since(&step);
    if (!locked && err->code == DS_ERR_BUSY) {
        /* Nothing was read or stored: the data, watermarks and status stay. */
        ds_log_warn("%s", err->msg);
        ds_error_prefix(err, "%s: ", src->name);
        set_phase(opt, SYNC_PHASE_IDLE);
        report->duration_s = ds_monotonic_s() - started;
        return false;
    }
    table_job jobs[CFG_MAX_QUERIES];
    size_t njobs = src->n_plans;
    for (size_t i = 0; i < njobs; i++)
        job_init(&jobs[i], st, cfg, src, opt, i);
    /* A store left suspect or closed by an earlier failure is reopened
     * first; a file deleted or replaced under it takes no sync (it would be
     * lost at exit). */
    bool usable = locked && (!store_needs_reopen(st) || store_reopen(st, err));
    store_use_begin(st);
    bool file_lost = false;
    bool ok = usable && file_present(st, &file_lost, err) && run_jobs(jobs, njobs, report, err);
    steps.jobs_ms = ms_since(&step);
    if (ok && sync_cancelled(opt))
        ok = ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    bool commit_failed = false;
    if (ok && file_present(st, &file_lost, err)) {
        set_phase(opt, SYNC_PHASE_COMMITTING);
        ok = commit_sync(st, src, jobs, njobs, report, started, &steps.commit, err);
        steps.committed = ok;
        commit_failed = !ok;
    } else {
        ok = false;
    }
    if (!ok) {
        ds_error_prefix(err, "%s: ", src->name);
        if (usable && !file_lost && (commit_failed || err->code == DS_ERR_STORE))
            reopen_after_failed_commit(st);
        commit_record_failure(st, src, jobs, njobs, report, started, err);
    }
    store_use_end(st);
    step = ds_monotonic_s();
    if (locked)
        source_lock_release(src, opt, &lock, ok ? NULL : err);
    steps.unlock_ms = ms_since(&step);
    log_steps(src, jobs, njobs, &steps, (step - started) * 1e3);
    for (size_t i = 0; i < njobs; i++)
        job_free(&jobs[i]);
    set_phase(opt, SYNC_PHASE_IDLE);
    return ok;
}

bool sync_reset_watermarks(store *st, const cfg_source *src, ds_error *err)
{
    const char *tables[CFG_MAX_QUERIES];
    for (size_t i = 0; i < src->n_plans; i++)
        tables[i] = src->plans[i].table;
    duckdb_connection duck;
    store_use_begin(st);
    if (!store_connect(st, &duck, err)) {
        store_use_end(st);
        return false;
    }
    store_commit_lock(st);
    bool ok = store_clear_watermarks(st, duck, tables, src->n_plans, err);
    store_commit_unlock(st);
    duckdb_disconnect(&duck);
    store_use_end(st);
    return ok;
}

bool sync_cleanup_staging(store *st, const cfg_config *cfg, ds_error *err)
{
    duckdb_connection duck;
    store_use_begin(st);
    if (!store_connect(st, &duck, err)) {
        store_use_end(st);
        return false;
    }
    bool ok = true;
    for (size_t s = 0; ok && s < cfg->n_sources; s++) {
        const cfg_source *src = &cfg->sources[s];
        for (size_t i = 0; ok && i < src->n_plans; i++) {
            char *ref = ds_quote_ident(src->plans[i].staging);
            ok = ref != NULL ? store_drop_table(duck, ref, err)
                             : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
            free(ref);
        }
    }
    duckdb_disconnect(&duck);
    store_use_end(st);
    return ok;
}
