/* The commit transaction of a sync, and the record of a failed one. */
#include "sync/commit.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "sync/incremental.h"
#include "sync/status.h"

static bool apply_rows(duckdb_connection duck, table_job *job, ds_error *err)
{
    if (!job->incremental) {
        job->rows_inserted = job->rows_loaded;
        return store_swap_in(duck, job->staging_ref, job->plan->table, err);
    }
    /* An empty batch changes nothing (an upsert deletes only what it
     * replaces). The in-memory staging table is dropped after the commit:
     * one transaction may write to one database only. */
    inc_batch batch = job_batch(job);
    return job->rows_loaded == 0 || inc_apply(duck, &batch, &job->rows_inserted, &job->rows_updated, err);
}

static bool store_watermark(duckdb_connection duck, const cfg_source *src, table_job *job, ds_error *err)
{
    char *watermark = NULL;
    bool inclusive = false;
    if (job->has_inc_col &&
        !inc_next_watermark(duck, job->plan->table, src->incremental_column, job_inc_type(job),
                            job->incremental ? job->old_watermark : NULL, job->horizon.value, &watermark,
                            &inclusive, err))
        return false;
    char *read_state = NULL;
    if (job->has_inc_col && job->tracks_xacts && (read_state = inc_state_format(&job->next_state)) == NULL) {
        free(watermark);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    store_table_meta meta = {.schema_signature = job->signature,
                             .watermark_column = job->has_inc_col ? src->incremental_column : NULL,
                             .watermark = watermark,
                             .watermark_inclusive = inclusive,
                             .read_state = read_state};
    bool ok = store_put_table_meta(duck, job->plan->table, &meta, err);
    free(watermark);
    free(read_state);
    return ok;
}

static void report_table(const table_job *job, sync_table_report *tr)
{
    snprintf(tr->table, sizeof tr->table, "%s", job->plan->table);
    tr->incremental = job->incremental;
    tr->rows_loaded = job->rows_loaded;
    tr->rows_inserted = job->rows_inserted;
    tr->rows_updated = job->rows_updated;
    tr->truncated = job->truncated;
    tr->upsert = job->plan->key->n > 0;
    snprintf(tr->horizon, sizeof tr->horizon, "%s", job->horizon.value ? job->horizon.value : "");
    const char *holder = job->horizon.holder ? job->horizon.holder : job->pending_holder;
    snprintf(tr->horizon_holder, sizeof tr->horizon_holder, "%s", holder ? holder : "");
    ds_utf8_trim_end(tr->horizon_holder); /* the application name may be cut inside a character */
}

/* One table's staging data and metadata, inside the commit transaction. */
static bool apply_table(duckdb_connection duck, const cfg_source *src, table_job *job, sync_table_report *tr,
                        ds_error *err)
{
    bool ok = apply_rows(duck, job, err) && store_watermark(duck, src, job, err);
    report_table(job, tr);
    return ok && store_count_rows(duck, job->plan->table, &tr->rows_total, err);
}

/* The view of a split source; a table of its name (the source had one
 * query before) makes way for it. *changed: the view reads otherwise than
 * before (its join was reconfigured), so its rows must be counted again. */
static bool create_view(duckdb_connection duck, const cfg_source *src, const table_job *jobs, bool *changed,
                        ds_error *err)
{
    const table_job *d = &jobs[0], *r = &jobs[1];
    if (store_is_table(duck, src->data_name) && !store_drop_relation(duck, src->data_name, err))
        return false;
    store_join join = {
        .inner = src->join_type == CFG_JOIN_INNER, .cols = src->join_columns.cols, .n = src->join_columns.n};
    /* DuckDB would cast one side, and a value that does not convert would
     * fail every read of the view. */
    const char *dtype = NULL, *rtype = NULL;
    const char *bad =
        store_join_mismatch(d->columns, d->desc.ncols, r->columns, r->desc.ncols, &join, &dtype, &rtype);
    if (bad != NULL)
        return ds_error_set(err, DS_ERR_CONFIG,
                            "%s:%d: join column \"%s\" is %s in dataset_query but %s in results_query; the "
                            "view joins on it: cast it in one query so both return the same type",
                            src->file, src->join_line ? src->join_line : src->line, bad, dtype, rtype);
    char *sql = store_view_sql(src->data_name, d->plan->table, d->columns, d->desc.ncols, r->plan->table,
                               r->columns, r->desc.ncols, &join);
    if (sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    char *old = NULL, *now = NULL;
    bool ok = store_view_definition(duck, src->data_name, &old, err) && store_exec(duck, sql, err) &&
              store_view_definition(duck, src->data_name, &now, err);
    *changed = old == NULL || now == NULL || strcmp(old, now) != 0;
    free(old);
    free(now);
    free(sql);
    return ok;
}

/* A source that had two queries and now has one: its dataset and results
 * tables are no longer part of it. */
static bool drop_split_tables(duckdb_connection duck, const cfg_source *src, ds_error *err)
{
    static const char *const suffixes[] = {"dataset", "results"};
    bool ok = true;
    for (size_t i = 0; ok && i < 2; i++) {
        ds_buf name = DS_BUF_INIT;
        ds_buf_appendf(&name, "%s_%s", src->name, suffixes[i]);
        const char *text = ds_buf_str(&name);
        ok = text != NULL ? !store_is_table(duck, text) || store_drop_relation(duck, text, err)
                          : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        ds_buf_free(&name);
    }
    return ok;
}

/* Each dataset_id stored at most once (split sources): a full load decides
 * alone; an incremental one keeps it when it held before and the loaded ids
 * are new and distinct. */
static bool ids_unique_after(const table_job *jobs, size_t njobs, const json_t *previous)
{
    if (njobs < 2)
        return false;
    bool before = json_is_true(json_object_get(previous, "dataset_id_unique"));
    const table_job *d = &jobs[0];
    return !d->incremental       ? d->batch_ids_unique == 1
           : d->rows_loaded == 0 ? before
                                 : before && d->batch_ids_unique == 1;
}

/* Rows of <name>_data before this sync: from the status when it has them
 * (counting the view runs its join), else counted. */
static bool rows_before(duckdb_connection duck, const cfg_source *src, const json_t *previous, int64_t *rows,
                        ds_error *err)
{
    *rows = 0;
    json_t *known = json_object_get(previous, "rows");
    if (json_is_integer(known)) {
        *rows = json_integer_value(known);
        return true;
    }
    bool exists = false;
    return store_table_exists(duck, src->plans[src->n_plans - 1].table, &exists, err) &&
           (!exists || store_count_rows(duck, src->data_name, rows, err));
}

/* A table cut at max_sync_rows is data the user never sees unless told:
 * a warning (logged, in the status, printed by the CLI) names the table,
 * the cap and the fix. */
static void summarize(sync_report *report, const table_job *jobs, size_t njobs, double started)
{
    report->ntables = njobs;
    report->incremental = false;
    report->truncated = false;
    for (size_t i = 0; i < njobs; i++) {
        report->incremental |= jobs[i].incremental;
        report->truncated |= jobs[i].truncated;
        if (jobs[i].truncated)
            sync_report_warning(
                report,
                "%s: %s was truncated at max_sync_rows (%lld rows); rows past the cap were "
                "not stored: narrow the query with a WHERE clause, or raise duckdb.max_sync_rows "
                "(0 = no cap)",
                jobs[i].src->name, jobs[i].plan->table, (long long)jobs[i].cfg->store.max_sync_rows);
    }
    report->duration_s = ds_monotonic_s() - started;
}

/* Everything of the commit between BEGIN and COMMIT. */
static bool commit_body(duckdb_connection duck, const cfg_source *src, table_job *jobs, size_t njobs,
                        sync_report *report, double started, ds_error *err)
{
    json_t *previous = status_load(duck, src->name);
    bool ids_unique = ids_unique_after(jobs, njobs, previous);
    int64_t before = 0;
    bool ok = rows_before(duck, src, previous, &before, err);
    json_decref(previous);
    bool changed = false;
    double step = ds_monotonic_s();
    for (size_t i = 0; ok && i < njobs; i++) {
        ok = apply_table(duck, src, &jobs[i], &report->tables[i], err);
        ds_log_debug("%s: applied in %.1f ms", jobs[i].plan->table, (ds_monotonic_s() - step) * 1e3);
        changed |= !jobs[i].incremental || jobs[i].rows_inserted > 0 || jobs[i].rows_updated > 0;
    }
    if (ok && njobs == 2) {
        bool view_changed = false;
        ok = create_view(duck, src, jobs, &view_changed, err);
        changed |= view_changed;
    } else if (ok && !jobs[0].incremental) {
        ok = drop_split_tables(duck, src, err);
    }
    /* Nothing is counted when no row changed; the results table is the view's
     * count while dataset_id is unique and the view left-joins on it alone. */
    report->rows = before;
    if (ok && ids_unique && cfg_join_is_default(src))
        report->rows = report->tables[njobs - 1].rows_total;
    else if (ok && changed)
        ok = store_count_rows(duck, src->data_name, &report->rows, err);
    report->rows_added = report->rows - before;
    summarize(report, jobs, njobs, started);
    if (!ok)
        return false;
    const sync_options *opt = jobs[0].opt;
    if (opt->commit_hook != NULL && !opt->commit_hook(duck, opt->commit_ctx, err))
        return false;
    json_t *doc = status_load(duck, src->name);
    status_record_success(doc, report, njobs == 2, ids_unique);
    ok = status_save(duck, src->name, doc, err);
    json_decref(doc);
    return ok;
}

bool commit_sync(store *st, const cfg_source *src, table_job *jobs, size_t njobs, sync_report *report,
                 double started, ds_error *err)
{
    duckdb_connection duck;
    if (!store_connect(st, &duck, err))
        return false;
    store_commit_lock(st);
    double t = ds_monotonic_s();
    bool ok = store_exec(duck, "BEGIN TRANSACTION", err) &&
              commit_body(duck, src, jobs, njobs, report, started, err) && store_exec(duck, "COMMIT", err);
    ds_log_debug("%s: committed in %.1f ms", src->name, (ds_monotonic_s() - t) * 1e3);
    if (!ok)
        store_exec(duck, "ROLLBACK", NULL);
    store_commit_unlock(st);
    for (size_t i = 0; ok && i < njobs; i++)
        if (jobs[i].incremental)
            store_drop_table(duck, jobs[i].staging_ref, NULL);
    duckdb_disconnect(&duck);
    return ok;
}

static void drop_staging(duckdb_connection duck, const table_job *jobs, size_t njobs)
{
    for (size_t i = 0; i < njobs; i++) {
        char *file_staging = ds_quote_ident(jobs[i].plan->staging);
        if (file_staging != NULL)
            store_drop_table(duck, file_staging, NULL);
        free(file_staging);
        if (jobs[i].staging_ref != NULL)
            store_drop_table(duck, jobs[i].staging_ref, NULL);
    }
}

void commit_record_failure(store *st, const cfg_source *src, table_job *jobs, size_t njobs,
                           const sync_report *report, double started, const ds_error *cause)
{
    duckdb_connection duck;
    ds_error err;
    bool connected = store_connect(st, &duck, &err);
    if (connected) {
        store_commit_lock(st);
        drop_staging(duck, jobs, njobs);
    }
    /* A stop on request (shutdown) is not a failure of the source: the
     * stored data, watermarks and status still agree, so keep them. */
    if (cause->code != DS_ERR_CANCELLED) {
        const char *tables[CFG_MAX_QUERIES];
        for (size_t i = 0; i < njobs; i++)
            tables[i] = jobs[i].plan->table;
        json_t *doc = connected ? status_load(duck, src->name) : json_object();
        status_record_failure(doc, cause->msg, ds_monotonic_s() - started, report);
        /* A configuration error is found before anything is stored, and
         * fixing it must not cost a full rebuild (nor may each failed sync
         * turn the next into one); nor is a sync that ran out of
         * memory_limit a reason for a full one: its commit was rolled back,
         * the watermarks still hold, and a full sync in between made the
         * source alternate full / failed. The watermarks stay. */
        bool keep = cause->code == DS_ERR_CONFIG || cause->code == DS_ERR_NOMEM;
        bool ok = connected && store_exec(duck, "BEGIN TRANSACTION", &err) &&
                  (keep || store_clear_watermarks(duck, tables, njobs, &err)) &&
                  status_save(duck, src->name, doc, &err) && store_exec(duck, "COMMIT", &err);
        if (ok) {
            status_forget_unsaved(st, src->name);
        } else {
            if (connected) {
                store_exec(duck, "ROLLBACK", NULL);
                store_mark_suspect(st); /* a failed commit, like the sync's own */
            }
            /* The file still says what it said before (the data and
             * watermarks of the last commit agree); the failure is shown
             * from memory until a record is saved. */
            ds_log_error("%s: cannot record the failed sync: %s; the status shows the failure from memory "
                         "until a sync can be saved",
                         src->name, err.msg);
            status_keep_unsaved(st, src->name, doc, err.msg);
        }
        json_decref(doc);
    }
    if (connected) {
        store_commit_unlock(st);
        duckdb_disconnect(&duck);
    }
}
