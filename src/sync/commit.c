/* The commit transaction of a sync, and the record of a failed one. */
#include "sync/commit.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "sync/incremental.h"
#include "sync/memo.h"
#include "sync/status.h"

/* The commit transaction begins at the sync's first write, so a quiet
 * sync, which writes nothing, costs DuckDB no transaction (its BEGIN and
 * ROLLBACK took ~1 ms of CPU on a sync's new thread, a fifth of a quiet
 * sync's). Reads before it see what the transaction would: every write of
 * the store holds the store's commit lock, which the commit holds. */
typedef struct commit_txn {
    duckdb_connection duck;
    bool open;
} commit_txn;

/* Called before each write of the commit. */
static bool txn_write(commit_txn *txn, ds_error *err)
{
    if (!txn->open)
        txn->open = store_exec(txn->duck, "BEGIN TRANSACTION", err);
    return txn->open;
}

/* *ms = the time since *since, in ms; *since = now. */
static void step_done(double *ms, double *since)
{
    double now = ds_monotonic_s();
    *ms = (now - *since) * 1e3;
    *since = now;
}

/* Whether the store holds every row of the batch already, as the process
 * remembers the table (memo.h): then it stays as it was, and its maximum
 * and count are known without DuckDB. */
static bool batch_stored(table_job *job)
{
    if (job->unchanged)
        return true; /* found by the read, which then stored nothing */
    if (job->kept.max == 0)
        return false;
    job->unchanged =
        memo_table_covers(job->st, job->plan->table, &job->kept, &job->known_max, &job->known_count);
    return job->unchanged;
}

static bool apply_rows(commit_txn *txn, table_job *job, ds_error *err)
{
    if (!job->incremental) {
        job->rows_inserted = job->rows_loaded;
        return txn_write(txn, err) && store_swap_in(txn->duck, job->staging_ref, job->plan->table, err);
    }
    /* An empty batch changes nothing (an upsert deletes only what it
     * replaces), nor does one of rows stored already (a quiet sync
     * re-reads the rows at the watermark). The in-memory staging table is
     * dropped after the commit: one transaction may write to one database
     * only. */
    inc_batch batch = job_batch(job);
    return batch_stored(job) || job->rows_loaded == 0 ||
           (txn_write(txn, err) &&
            inc_apply(txn->duck, &batch, &job->rows_inserted, &job->rows_updated, err));
}

/* The same transactions, by xid and read start, in any order. */
static bool same_pending(const inc_read_state *a, const inc_read_state *b)
{
    if (a->npending != b->npending || a->unlisted != b->unlisted)
        return false;
    if (a->unlisted && (a->unlisted_from == NULL
                            ? b->unlisted_from != NULL
                            : b->unlisted_from == NULL || strcmp(a->unlisted_from, b->unlisted_from) != 0))
        return false;
    if (a->unlisted &&
        strcmp(a->unlisted_vxids ? a->unlisted_vxids : "", b->unlisted_vxids ? b->unlisted_vxids : "") != 0)
        return false;
    for (size_t i = 0; i < a->npending; i++) {
        bool found = false;
        for (size_t j = 0; j < b->npending && !found; j++)
            found = a->pending[i].xid == b->pending[j].xid &&
                    (a->pending[i].from == NULL
                         ? b->pending[j].from == NULL
                         : b->pending[j].from != NULL && strcmp(a->pending[i].from, b->pending[j].from) == 0);
        if (!found)
            return false;
    }
    return true;
}

/* Whether an incremental table's metadata would be written as stored: the
 * watermark and the transactions its next read waits for are unchanged
 * (the read state's xmax, kept for diagnosis, is left at the last write's). */
static bool meta_unchanged(const table_job *job, const char *watermark, bool inclusive)
{
    if (!job->incremental || watermark == NULL || job->old_watermark == NULL ||
        strcmp(watermark, job->old_watermark) != 0 || inclusive != job->old_inclusive)
        return false;
    if (!job->tracks_xacts)
        return !job->prev_state.known;
    return job->prev_state.known && same_pending(&job->prev_state, &job->next_state);
}

/* *wrote: the table's row in _duckstore.tables was written (not when it
 * would say what it says). */
static bool store_watermark(commit_txn *txn, const cfg_source *src, table_job *job, bool *wrote,
                            ds_error *err)
{
    inc_watermark next = {0};
    *wrote = false;
    const char *const *known = job->unchanged ? (const char *const *)&job->known_max : NULL;
    if (job->has_inc_col &&
        !inc_next_watermark(txn->duck, job->plan->table, src->incremental_column, job_inc_type(job),
                            job->incremental ? job->old_watermark : NULL, job->horizon.value, known, &next,
                            err)) {
        free(next.watermark);
        free(next.max);
        return false;
    }
    job->next_max = next.max;
    char *watermark = next.watermark;
    bool inclusive = next.inclusive;
    if (meta_unchanged(job, watermark, inclusive)) {
        free(watermark);
        return true;
    }
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
    bool ok = txn_write(txn, err) && store_put_table_meta(job->st, txn->duck, job->plan->table, &meta, err);
    *wrote = true;
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
    tr->stored_already = job->unchanged;
    tr->upsert = job->plan->key->n > 0;
    snprintf(tr->horizon, sizeof tr->horizon, "%s", job->horizon.value ? job->horizon.value : "");
    const char *holder = job->horizon.holder ? job->horizon.holder : job->pending_holder;
    snprintf(tr->horizon_holder, sizeof tr->horizon_holder, "%s", holder ? holder : "");
    ds_utf8_trim_end(tr->horizon_holder); /* the application name may be cut inside a character */
}

/* One table's staging data and metadata, inside the commit transaction.
 * *wrote: the file changes (rows or metadata). */
static bool apply_table(commit_txn *txn, const cfg_source *src, table_job *job, sync_table_report *tr,
                        bool *wrote, ds_error *err)
{
    bool meta_written = false;
    bool ok = apply_rows(txn, job, err) && store_watermark(txn, src, job, &meta_written, err);
    *wrote = meta_written || !job->incremental || job->rows_inserted > 0 || job->rows_updated > 0;
    report_table(job, tr);
    if (ok && job->unchanged) {
        tr->rows_total = job->known_count;
        return true;
    }
    return ok && store_count_rows(txn->duck, job->plan->table, &tr->rows_total, err);
}

/* After a commit: what the process remembers of the source's tables and
 * view for its next sync (memo.h). A table read incrementally without a
 * key, whose rows were kept, is remembered with them; any other table is
 * forgotten (a full load, an upsert, a capped or large batch). */
static void remember(store *st, const cfg_source *src, const table_job *jobs, const sync_report *report,
                     const char *view_sql)
{
    for (size_t i = 0; i < report->ntables; i++) {
        const table_job *job = &jobs[i];
        if (job->unchanged)
            continue; /* the remembered rows, maximum and count still hold */
        if (job->incremental && job->kept.max > 0 && !job->truncated)
            memo_table_put(st, job->plan->table, &job->kept, job->next_max, report->tables[i].rows_total);
        else
            memo_table_forget(st, job->plan->table);
    }
    if (view_sql != NULL)
        memo_view_put(st, src->name, view_sql);
    else if (report->ntables < 2)
        memo_view_forget(st, src->name);
}

/* The view of a split source; a table of its name (the source had one
 * query before) makes way for it. *changed: the view reads otherwise than
 * before (its join was reconfigured), so its rows must be counted again
 * (unchanged, a quiet sync's rollback undoes the statement). */
static bool create_view(store *st, commit_txn *txn, const cfg_source *src, const table_job *jobs,
                        bool *changed, char **created, ds_error *err)
{
    duckdb_connection duck = txn->duck;
    const table_job *d = &jobs[0], *r = &jobs[1];
    *changed = false;
    *created = NULL;
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
    /* The view this process committed last, over the same tables (a table
     * loaded in full is a new one: DuckDB binds a view's column types when
     * it is created), unchanged: nothing to do. */
    if (d->incremental && r->incremental && memo_view_is(st, src->name, sql)) {
        free(sql);
        return true;
    }
    char *old = NULL, *now = NULL;
    bool ok = txn_write(txn, err) &&
              (!store_is_table(duck, src->data_name) || store_drop_relation(duck, src->data_name, err)) &&
              store_view_definition(duck, src->data_name, &old, err) && store_exec(duck, sql, err) &&
              store_view_definition(duck, src->data_name, &now, err);
    *changed = old == NULL || now == NULL || strcmp(old, now) != 0;
    free(old);
    free(now);
    if (ok)
        *created = sql;
    else
        free(sql);
    return ok;
}

/* A source that had two queries and now has one: its dataset and results
 * tables are no longer part of it. */
static bool drop_split_tables(commit_txn *txn, const cfg_source *src, ds_error *err)
{
    static const char *const suffixes[] = {"dataset", "results"};
    bool ok = true;
    for (size_t i = 0; ok && i < 2; i++) {
        ds_buf name = DS_BUF_INIT;
        ds_buf_appendf(&name, "%s_%s", src->name, suffixes[i]);
        const char *text = ds_buf_str(&name);
        ok = text != NULL ? !store_is_table(txn->duck, text) ||
                                (txn_write(txn, err) && store_drop_relation(txn->duck, text, err))
                          : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        ds_buf_free(&name);
    }
    return ok;
}

/* After the merge of an incremental dataset batch that added rows: every
 * dataset_id was stored once before, so it still is when no stored row of
 * an id the batch holds shares it with another. An upsert is not checked
 * (its overlap with stored rows is what it replaces). */
static void check_merged_ids(duckdb_connection duck, table_job *d)
{
    d->batch_ids_unique = -1;
    if (d->plan->key->n > 0)
        return;
    ds_buf ref = DS_BUF_INIT;
    ds_buf_append(&ref, "(SELECT dataset_id FROM ");
    ds_buf_append_ident(&ref, d->plan->table);
    ds_buf_appendf(&ref, " WHERE dataset_id IN (SELECT dataset_id FROM %s))", d->staging_ref);
    bool unique = false;
    ds_error ignored;
    if (ds_buf_str(&ref) != NULL &&
        store_ids_unique(duck, ds_buf_str(&ref), NULL, d->rows_loaded, &unique, &ignored))
        d->batch_ids_unique = unique;
    ds_buf_free(&ref);
}

/* Each dataset_id stored at most once (split sources): a full load decides
 * alone; an incremental one keeps it when it held before and the rows it
 * added keep it (checked after the merge). */
static bool ids_unique_after(duckdb_connection duck, table_job *jobs, size_t njobs, const json_t *previous)
{
    if (njobs < 2)
        return false;
    bool before = json_is_true(json_object_get(previous, "dataset_id_unique"));
    table_job *d = &jobs[0];
    if (!d->incremental)
        return d->batch_ids_unique == 1;
    if (d->rows_inserted == 0 && d->rows_updated == 0)
        return before;
    if (!before)
        return false;
    check_merged_ids(duck, d);
    return d->batch_ids_unique == 1;
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

/* Everything of the commit up to its COMMIT. *doc: the status recorded;
 * steps->quiet: nothing was written (the caller rolls back the
 * transaction, if a statement that wrote nothing began one). */
static bool commit_body(store *st, commit_txn *txn, const cfg_source *src, table_job *jobs, size_t njobs,
                        sync_report *report, double started, commit_steps *steps, json_t **doc,
                        char **view_sql, ds_error *err)
{
    duckdb_connection duck = txn->duck;
    json_t *saved = status_load(st, duck, src->name);
    json_t *previous = status_load_current(st, duck, src->name);
    int64_t before = 0;
    bool ok = rows_before(duck, src, previous, &before, err);
    bool changed = false, wrote = false;
    double step = ds_monotonic_s();
    for (size_t i = 0; ok && i < njobs; i++) {
        bool table_wrote = false;
        ok = apply_table(txn, src, &jobs[i], &report->tables[i], &table_wrote, err);
        wrote |= table_wrote;
        changed |= !jobs[i].incremental || jobs[i].rows_inserted > 0 || jobs[i].rows_updated > 0;
        step_done(&steps->apply_ms[i], &step);
        ds_log_debug("%s: applied in %.1f ms", jobs[i].plan->table, steps->apply_ms[i]);
    }
    bool ids_unique = ok && ids_unique_after(duck, jobs, njobs, previous);
    step_done(&steps->ids_ms, &step);
    if (ok && njobs == 2) {
        bool view_changed = false;
        ok = create_view(st, txn, src, jobs, &view_changed, view_sql, err);
        changed |= view_changed;
        wrote |= view_changed;
    } else if (ok && !jobs[0].incremental) {
        ok = drop_split_tables(txn, src, err);
    }
    /* Nothing is counted when no row changed; the results table is the view's
     * count while dataset_id is unique and the view left-joins on it alone. */
    report->rows = before;
    if (ok && ids_unique && cfg_join_is_default(src))
        report->rows = report->tables[njobs - 1].rows_total;
    else if (ok && changed)
        ok = store_count_rows(duck, src->data_name, &report->rows, err);
    report->rows_added = report->rows - before;
    report->data_changed = changed;
    summarize(report, jobs, njobs, started);
    step_done(&steps->view_ms, &step);
    const sync_options *opt = jobs[0].opt;
    if (ok && opt->commit_hook != NULL) {
        ok = txn_write(txn, err) && opt->commit_hook(duck, opt->commit_ctx, err);
        wrote = true;
    }
    steps->quiet = ok && !wrote && !status_save_due(saved);
    json_decref(saved);
    if (!ok) {
        json_decref(previous);
        return false;
    }
    status_record_success(previous, report, njobs == 2, ids_unique);
    *doc = previous;
    ok = steps->quiet || (txn_write(txn, err) && status_save(st, duck, src->name, previous, err));
    step_done(&steps->status_ms, &step);
    return ok;
}

bool commit_sync(store *st, const cfg_source *src, table_job *jobs, size_t njobs, sync_report *report,
                 double started, commit_steps *steps, ds_error *err)
{
    memset(steps, 0, sizeof *steps);
    duckdb_connection duck;
    if (!store_connect_kept(st, &duck, err))
        return false;
    store_commit_lock(st);
    json_t *doc = NULL;
    char *view_sql = NULL;
    commit_txn txn = {.duck = duck};
    bool ok = commit_body(st, &txn, src, jobs, njobs, report, started, steps, &doc, &view_sql, err);
    double t = ds_monotonic_s();
    /* A quiet sync ends without a write: a rollback undoes only merges
     * that added nothing (docs/incremental.md, "Quiet syncs"). */
    if (ok && txn.open)
        ok = store_exec(duck, steps->quiet ? "ROLLBACK" : "COMMIT", err);
    step_done(&steps->commit_ms, &t);
    if (!ok && txn.open)
        store_exec(duck, "ROLLBACK", NULL);
    else if (steps->quiet)
        status_keep_quiet(st, src->name, doc);
    else
        status_forget_unsaved(st, src->name);
    if (ok)
        remember(st, src, jobs, report, view_sql);
    store_commit_unlock(st);
    free(view_sql);
    json_decref(doc);
    for (size_t i = 0; ok && i < njobs; i++)
        if (jobs[i].incremental && jobs[i].staging_made)
            store_drop_table(duck, jobs[i].staging_ref, NULL);
    store_disconnect_kept(st, &duck, ok);
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
    /* What was remembered of these tables may no longer hold (a failed
     * commit, a reopen). */
    for (size_t i = 0; i < njobs; i++)
        memo_table_forget(st, jobs[i].plan->table);
    memo_view_forget(st, src->name);
    /* A stop on request (shutdown) is not a failure of the source: the
     * stored data, watermarks and status still agree, so keep them. */
    if (cause->code != DS_ERR_CANCELLED) {
        const char *tables[CFG_MAX_QUERIES];
        for (size_t i = 0; i < njobs; i++)
            tables[i] = jobs[i].plan->table;
        json_t *doc = connected ? status_load_current(st, duck, src->name) : json_object();
        status_record_failure(doc, cause->msg, ds_monotonic_s() - started, report);
        /* A configuration error is found before anything is stored, and
         * fixing it must not cost a full rebuild (nor may each failed sync
         * turn the next into one); nor is a sync that ran out of
         * memory_limit a reason for a full one: its commit was rolled back,
         * the watermarks still hold, and a full sync in between made the
         * source alternate full / failed. The watermarks stay. */
        bool keep = cause->code == DS_ERR_CONFIG || cause->code == DS_ERR_NOMEM;
        bool ok = connected && store_exec(duck, "BEGIN TRANSACTION", &err) &&
                  (keep || store_clear_watermarks(st, duck, tables, njobs, &err)) &&
                  status_save(st, duck, src->name, doc, &err) && store_exec(duck, "COMMIT", &err);
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
