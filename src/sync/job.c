/* A table job: describe → decide → staging → horizon → read → check. */
#include "sync/job.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "source/ranges.h"
#include "sync/conns.h"
#include "sync/incremental.h"
#include "sync/memo.h"
#include "sync/partition.h"

void job_init(table_job *job, store *st, const cfg_config *cfg, const cfg_source *src,
              const sync_options *opt, size_t slot)
{
    memset(job, 0, sizeof *job);
    job->st = st;
    job->cfg = cfg;
    job->src = src;
    job->opt = opt;
    job->plan = &src->plans[slot];
    job->slot = (int)slot;
    job->inc_idx = -1;
    job->batch_ids_unique = -1;
}

void job_free(table_job *job)
{
    pgsrc_desc_free(&job->desc);
    free(job->columns);
    free(job->signature);
    free(job->old_watermark);
    free(job->read_start);
    free(job->staging_ref);
    free(job->pending_holder);
    pgsrc_horizon_free(&job->horizon);
    pgsrc_snapshot_free(&job->snap);
    inc_state_free(&job->prev_state);
    inc_state_free(&job->next_state);
    pgsrc_kept_rows_free(&job->kept);
    free(job->known_max);
    free(job->next_max);
}

const char *job_inc_type(const table_job *job)
{
    return job->has_inc_col ? job->desc.cols[job->inc_idx].type.ddl : NULL;
}

inc_batch job_batch(const table_job *job)
{
    return (inc_batch){.table = job->plan->table,
                       .staging_ref = job->staging_ref,
                       .key = job->plan->key,
                       .inc_col = job->src->incremental_column,
                       .duck_type = job_inc_type(job),
                       .start = job->read_start,
                       .start_inclusive = job->start_inclusive,
                       .overlap = job->overlap,
                       .row_bytes = job->rows_loaded > 0 ? job->bytes_loaded / job->rows_loaded : 0};
}

const char *job_step_name(job_step step)
{
    static const char *const names[JOB_NSTEPS] = {"connect", "describe", "staging", "horizon", "read", "ids"};
    return step < JOB_NSTEPS ? names[step] : "?";
}

/* `duckstore -v` logs how long each step of a sync took: the first thing
 * to look at when a sync is slower than expected. The sync's summary line
 * repeats them (sync.c). */
static void trace_step_until(table_job *job, job_step step, const char *what, double *since, double now)
{
    job->step_ms[step] = (now - *since) * 1e3;
    ds_log_debug("%s: %s in %.1f ms", job->plan->table, what, job->step_ms[step]);
    *since = now;
}

static void trace_step(table_job *job, job_step step, const char *what, double *since)
{
    trace_step_until(job, step, what, since, ds_monotonic_s());
}

/* "name TYPE\n" per column, and the row cap: equal signatures mean an
 * incremental batch fits the stored table. A changed max_sync_rows rebuilds
 * too: appending would keep rows a lower cap excludes, or never load those a
 * higher cap admits (a capped sync's watermark can be past them). */
static char *schema_signature(const pgsrc_desc *desc, int64_t max_sync_rows)
{
    ds_buf b = DS_BUF_INIT;
    for (size_t i = 0; i < desc->ncols; i++) {
        const pgsrc_type *t = &desc->cols[i].type;
        ds_buf_appendf(&b, "%s %s", desc->cols[i].name, t->ddl);
        /* inet was once stored as inet::text (10.0.1.1/32): a table from
         * then is rebuilt once, so its rows read as PostgreSQL prints them. */
        if (t->kind == PGSRC_INET || (t->kind == PGSRC_LIST && t->elem_kind == PGSRC_INET))
            ds_buf_append(&b, " inet-as-printed");
        ds_buf_append(&b, "\n");
    }
    ds_buf_appendf(&b, "max_sync_rows %lld\n", (long long)max_sync_rows);
    return ds_buf_take(&b);
}

static store_column *store_columns(const pgsrc_desc *desc)
{
    store_column *cols = calloc(desc->ncols ? desc->ncols : 1, sizeof *cols);
    for (size_t i = 0; cols != NULL && i < desc->ncols; i++)
        cols[i] = (store_column){.name = desc->cols[i].name, .type = desc->cols[i].type.ddl};
    return cols;
}

/* Incremental when the table exists with a watermark of the same column
 * and the same schema signature; otherwise a full load. */
static bool decide_incremental(table_job *job, duckdb_connection duck, ds_error *err)
{
    job->incremental = false;
    if (job->opt->force_full || !job->has_inc_col) {
        job->why = job->opt->force_full           ? JOB_FULL_ASKED
                   : job->src->incremental_column ? JOB_FULL_NO_USABLE_COLUMN
                                                  : JOB_FULL_NO_COLUMN;
        return true;
    }
    bool exists = false;
    job->why = JOB_FULL_NO_TABLE;
    if (!store_table_exists(duck, job->plan->table, &exists, err))
        return false;
    store_table_meta meta;
    if (!exists || !store_get_table_meta(job->st, duck, job->plan->table, &meta, err))
        return !exists;
    bool same_column = meta.watermark != NULL && meta.watermark_column != NULL &&
                       strcmp(meta.watermark_column, job->src->incremental_column) == 0;
    job->why = meta.watermark == NULL ? JOB_FULL_NO_WATERMARK : JOB_FULL_OTHER_COLUMN;
    if (same_column &&
        (meta.schema_signature == NULL || strcmp(meta.schema_signature, job->signature) != 0)) {
        ds_log_warn(
            "%s: the columns of %s (or max_sync_rows) changed since the last sync; rebuilding %s in full",
            job->src->name, job->plan->label, job->plan->table);
        same_column = false;
        job->why = JOB_FULL_SCHEMA_CHANGED;
    }
    bool ok = true;
    if (same_column) {
        job->why = JOB_INCREMENTAL;
        job->incremental = true;
        job->old_watermark = meta.watermark;
        job->old_inclusive = meta.watermark_inclusive;
        meta.watermark = NULL;
        ok = inc_state_parse(meta.read_state, &job->prev_state) ||
             ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    store_table_meta_free(&meta);
    return ok;
}

const char *job_decision_text(job_decision why)
{
    static const char *const texts[] = {
        [JOB_INCREMENTAL] = "a watermark is stored and the columns are unchanged",
        [JOB_FULL_ASKED] = "a full sync was asked for (--full)",
        [JOB_FULL_NO_COLUMN] = "no incremental_column is configured",
        [JOB_FULL_NO_USABLE_COLUMN] =
            "incremental_column is missing from the query or cannot serve as a watermark",
        [JOB_FULL_NO_TABLE] = "the table is not in the DuckDB file yet",
        [JOB_FULL_NO_WATERMARK] =
            "no watermark is stored (never synced incrementally, reset, or the last sync failed)",
        [JOB_FULL_OTHER_COLUMN] = "the stored watermark is of another incremental_column",
        [JOB_FULL_SCHEMA_CHANGED] = "the query's columns (or max_sync_rows) changed since the last sync",
    };
    return why <= JOB_FULL_SCHEMA_CHANGED ? texts[why] : "?";
}

/* The query's columns: the first statement on a job's connection
 * (sync_connect_then). */
static bool describe_query(pgsrc_conn *pg, void *ctx, ds_error *err)
{
    table_job *job = ctx;
    job->described_from = ds_monotonic_s();
    pgsrc_desc_free(&job->desc);
    if (pgsrc_describe(pg, job->plan->sql, &job->desc, err))
        return true;
    cfg_plan_error_prefix(job->src, job->plan, job->desc.error_at, err);
    return false;
}

/* What the description says: incremental or full, and how. */
static bool decide(table_job *job, duckdb_connection duck)
{
    ds_error *err = &job->err;
    const cfg_source *src = job->src;
    if (!sync_check_query(src, job->plan, &job->desc, &job->warnings, err))
        return false;
    int idx = src->incremental_column ? pgsrc_desc_find(&job->desc, src->incremental_column) : -1;
    job->has_inc_col = idx >= 0 && inc_usable_as_watermark(&job->desc.cols[idx].type);
    job->inc_idx = job->has_inc_col ? idx : -1;
    job->signature = schema_signature(&job->desc, job->cfg->store.max_sync_rows);
    job->columns = store_columns(&job->desc);
    if (job->signature == NULL || job->columns == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    if (!decide_incremental(job, duck, err))
        return false;
    ds_log_debug("%s: %s: %s sync: %s%s%s", src->name, job->plan->table,
                 job->incremental ? "incremental" : "full", job_decision_text(job->why),
                 job->old_watermark ? "; watermark " : "", job->old_watermark ? job->old_watermark : "");
    return true;
}

bool job_describe_and_decide(table_job *job, pgsrc_conn *pg, duckdb_connection duck)
{
    return describe_query(pg, job, &job->err) && decide(job, duck);
}

/* A full load's staging table is made before the read; an incremental
 * batch's when its first row is to be stored (make_staging): a quiet sync
 * makes none. */
static bool name_staging(table_job *job)
{
    ds_buf ref = DS_BUF_INIT;
    if (job->incremental)
        ds_buf_append(&ref, STORE_SCRATCH_CATALOG ".main.");
    ds_buf_append_ident(&ref, job->plan->staging);
    job->staging_ref = ds_buf_take_or_err(&ref, &job->err);
    return job->staging_ref != NULL;
}

static bool create_staging(table_job *job, duckdb_connection duck, ds_error *err)
{
    job->staging_made = store_create_empty(duck, job->staging_ref, job->columns, job->desc.ncols, err);
    return job->staging_made;
}

static bool make_staging(void *ctx, duckdb_connection duck, ds_error *err)
{
    return create_staging(ctx, duck, err);
}

/* Asked by the read once it has every row of a quiet batch. */
static bool rows_stored_already(void *ctx)
{
    table_job *job = ctx;
    job->unchanged =
        memo_table_covers(job->st, job->plan->table, &job->kept, &job->known_max, &job->known_count);
    return job->unchanged;
}

/* max_sync_rows caps the table: an incremental batch may add what the
 * stored rows leave of it (rows it reads again take their place too, as
 * which of the rows read are new is known only at the merge). */
static bool init_budget(table_job *job, duckdb_connection duck, pump_shared *shared)
{
    memset(shared, 0, sizeof *shared);
    shared->wait = (pgsrc_wait_meter)PGSRC_WAIT_METER_INIT;
    shared->slot = job->slot;
    int64_t cap = job->cfg->store.max_sync_rows;
    if (cap <= 0)
        return true;
    shared->capped = true;
    int64_t existing = 0;
    if (job->incremental && !store_count_rows(duck, job->plan->table, &existing, &job->err))
        return false;
    atomic_init(&shared->budget, existing >= cap ? 0 : cap - existing);
    return true;
}

/* Some warnings would say the same on every sync of a long-running
 * server: the log shows them once per source and process. */
static bool first_time(const char *source, const char *what)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static char *seen[256];
    static size_t nseen;
    ds_buf key = DS_BUF_INIT;
    ds_buf_appendf(&key, "%s\n%s", source, what);
    char *text = ds_buf_take(&key);
    bool first = true;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; text != NULL && first && i < nseen; i++)
        first = strcmp(seen[i], text) != 0;
    if (first && text != NULL && nseen < sizeof seen / sizeof seen[0]) {
        seen[nseen++] = text;
        text = NULL;
    }
    pthread_mutex_unlock(&lock);
    free(text);
    return first;
}

/* The time horizon, then the read's snapshot (see source/horizon.h), in
 * one round trip; with commit_horizon off the horizon is the source's
 * clock alone, so a row dated in the future cannot carry the watermark
 * past every row written after it. */
static bool horizon_and_snapshot(table_job *job, pgsrc_conn *pg)
{
    const pgsrc_column *col = job->has_inc_col ? &job->desc.cols[job->inc_idx] : NULL;
    bool is_time = col != NULL && inc_time_horizon_applies(col->type.kind);
    bool enabled = col != NULL && inc_horizon_enabled(job->src, col);
    bool tz = is_time && col->type.kind == PGSRC_TIMESTAMPTZ;
    job->tracks_xacts = enabled;
    bool ok;
    if (job->opt->snapshot != NULL)
        ok = (!is_time || pgsrc_take_horizon(pg, tz, !enabled, &job->horizon, &job->err)) &&
             pgsrc_import_snapshot(pg, job->opt->snapshot, &job->err);
    else if (is_time)
        ok = pgsrc_begin_read_after_horizon(pg, job->plan->sql, tz, !enabled, &job->horizon, &job->snap,
                                            &job->err);
    else
        ok = pgsrc_begin_read(pg, job->plan->sql, &job->snap, &job->err);
    /* A date column: the horizon's day in the session's zone, which is
     * what current_date gives a transaction that began then. */
    if (ok && col != NULL && col->type.kind == PGSRC_DATE && job->horizon.value != NULL &&
        strlen(job->horizon.value) > 10)
        job->horizon.value[10] = '\0';
    return ok;
}

/* Where the read starts: after the stored watermark (less lookback); with
 * the commit horizon on, low enough to meet the rows of the transactions
 * the last read saw in progress that have committed since
 * (docs/incremental.md, "Late commits"). */
static bool plan_read(table_job *job, pgsrc_conn *pg, duckdb_connection duck)
{
    if (job->incremental &&
        !inc_read_start(duck, job->src, job_inc_type(job), job->old_watermark, job->old_inclusive,
                        &job->read_start, &job->start_inclusive, &job->overlap, &job->err))
        return false;
    if (job->opt->snapshot != NULL || !job->tracks_xacts)
        return true;
    if (first_time(job->src->name, "commit horizon")) {
        pgsrc_session_facts facts = {.standby = job->snap.standby, .sees_all = true};
        if (job->horizon.role != NULL) {
            facts.sees_all = job->horizon.sees_all;
            snprintf(facts.role, sizeof facts.role, "%s", job->horizon.role);
        }
        sync_check_horizon(job->src, &job->desc, &facts, &job->warnings);
    }
    inc_read_plan plan = {.incremental = job->incremental,
                          .duck_type = job_inc_type(job),
                          .prev = &job->prev_state,
                          .prev_watermark = job->old_watermark,
                          .snap = &job->snap};
    if (!inc_plan_read(duck, pg, &plan, &job->read_start, &job->next_state, &job->late_commits, &job->err))
        return false;
    if (job->late_commits > 0)
        ds_log_info("%s: %zu transaction(s) in progress at the last read of %s have committed; this read "
                    "starts at %s to meet their rows",
                    job->src->name, job->late_commits, job->plan->table,
                    job->read_start ? job->read_start : "the beginning");
    if (job->next_state.unlisted && !job->prev_state.unlisted)
        ds_log_info(
            "%s: a transaction holds a write lock on a table that %s's query reads but has no transaction id "
            "yet (a COPY filling its first buffer, an INSERT in a slow trigger), so its rows may come below "
            "this read's: the next read starts at %s again",
            job->src->name, job->plan->table,
            job->next_state.unlisted_from ? job->next_state.unlisted_from : "the beginning");
    return true;
}

bool job_open_read(table_job *job, pgsrc_conn *pg, duckdb_connection duck, pump_shared *shared)
{
    if (!horizon_and_snapshot(job, pg) || !plan_read(job, pg, duck) || !init_budget(job, duck, shared)) {
        pgsrc_exec(pg, "ROLLBACK", NULL);
        return false;
    }
    if (job->horizon.value != NULL)
        ds_log_debug("%s: %s: commit horizon %s%s%s", job->src->name, job->plan->table, job->horizon.value,
                     job->horizon.holder ? ", held back by " : "",
                     job->horizon.holder ? job->horizon.holder : "");
    if (job->incremental)
        ds_log_debug("%s: %s: the read starts at %s (%s)", job->src->name, job->plan->table,
                     job->read_start ? job->read_start : "the beginning",
                     job->start_inclusive ? "inclusive" : "exclusive");
    return true;
}

/* The oldest transaction a later read waits for, named in the status
 * when the time horizon names none. */
static void describe_pending(table_job *job, pgsrc_conn *pg)
{
    if (job->horizon.holder != NULL || job->next_state.npending == 0)
        return;
    uint64_t oldest = job->next_state.pending[0].xid;
    for (size_t i = 1; i < job->next_state.npending; i++)
        if (job->next_state.pending[i].xid < oldest)
            oldest = job->next_state.pending[i].xid;
    job->pending_holder = pgsrc_describe_xact(pg, oldest);
}

/* The WHERE of an incremental read, NULL for a full one, or one from the
 * beginning (or out of memory). */
static char *read_condition(table_job *job, pgsrc_conn *pg)
{
    if (!job->incremental || job->read_start == NULL)
        return NULL;
    char *lit = pgsrc_quote_literal(pg, job->read_start);
    char *where = lit ? pgsrc_since_sql(&job->desc.cols[job->inc_idx], lit, job->start_inclusive) : NULL;
    free(lit);
    return where;
}

static int workers_for(const table_job *job);

/* A batch too large to keep whole still leaves the rows at its largest
 * value of the incremental column (and those without one): the next
 * read starts there and meets exactly those again, so it can be found
 * stored too. For the types binary COPY sends as a signed integer. */
static void track_top_rows(table_job *job)
{
    static const struct {
        pgsrc_kind kind;
        int width;
    } integers[] = {{PGSRC_INT2, 2}, {PGSRC_INT4, 4},      {PGSRC_INT8, 8},
                    {PGSRC_DATE, 4}, {PGSRC_TIMESTAMP, 8}, {PGSRC_TIMESTAMPTZ, 8}};
    if (!job->has_inc_col)
        return;
    const pgsrc_type *t = &job->desc.cols[job->inc_idx].type;
    for (size_t i = 0; i < sizeof integers / sizeof integers[0]; i++) {
        if (t->kind == integers[i].kind) {
            job->kept.track_top = true;
            job->kept.top_col = job->inc_idx;
            job->kept.top_width = integers[i].width;
        }
    }
}

/* The bytes of rows an incremental read keeps: a few rows at the
 * watermark, not a large batch. */
#define KEPT_ROWS_MAX (64 * 1024)

/* A partitioned read that drops its first read (to read again in
 * parallel or in ranges) empties its staging table first. */
typedef struct staging_again {
    table_job *job;
    duckdb_connection duck;
} staging_again;

static bool empty_staging(void *ctx, ds_error *err)
{
    staging_again *again = ctx;
    return create_staging(again->job, again->duck, err);
}

static bool read_rows(table_job *job, pgsrc_conn *pg, duckdb_connection duck, pump_shared *shared)
{
    const cfg_source *src = job->src;
    int workers = job_partitions(job);
    if (workers > 1) {
        staging_again again = {.job = job, .duck = duck};
        int part_idx = pgsrc_desc_find(&job->desc, src->partition_column);
        partition_read read = {.st = job->st,
                               .cfg = job->cfg,
                               .src = src,
                               .opt = job->opt,
                               .table_ref = job->staging_ref,
                               .query = job->plan->sql,
                               .desc = &job->desc,
                               .col = &job->desc.cols[part_idx],
                               .workers = workers,
                               .shared = shared,
                               .restart = empty_staging,
                               .restart_ctx = &again};
        return partition_load(&read, pg, &job->err);
    }
    /* A quiet sync re-reads the rows at the watermark: kept, they are
     * compared with the last batch's instead of stored and merged
     * (src/sync/memo.h). */
    shared->ctx = job;
    if (job->incremental)
        shared->before_insert = make_staging;
    if (job->incremental && job->plan->key->n == 0) {
        job->kept.max = KEPT_ROWS_MAX;
        track_top_rows(job);
        shared->keep = &job->kept;
        shared->stored_already = rows_stored_already;
    }
    char *copy = job_copy_sql(job, pg, shared);
    if (copy == NULL)
        return ds_error_set(&job->err, DS_ERR_NOMEM, "out of memory");
    bool ok = pump_copy_into(job->st, job->cfg, job->staging_ref, pg, &job->desc, copy, shared, job->opt,
                             &job->err);
    free(copy);
    if (shared->keep != NULL)
        pgsrc_kept_rows_finish(shared->keep);
    return ok;
}

char *job_copy_sql(table_job *job, pgsrc_conn *pg, pump_shared *shared)
{
    char *where = read_condition(job, pg);
    if (job->incremental && job->read_start != NULL && where == NULL)
        return NULL;
    char *copy = pgsrc_copy_sql(pg, job->plan->sql, &job->desc, where, pump_copy_limit(shared));
    free(where);
    return copy;
}

int job_partitions(const table_job *job)
{
    const cfg_source *src = job->src;
    int part_idx = src->partition_column ? pgsrc_desc_find(&job->desc, src->partition_column) : -1;
    int workers = workers_for(job);
    bool split = !job->incremental && workers > 1 && part_idx >= 0 &&
                 pgtypes_is_partitionable(&job->desc.cols[part_idx].type);
    return split ? workers : 1;
}

/* sync_workers is the source's budget of parallel readers (and DuckDB
 * insert streams): the queries of a split source share it, the results
 * query (usually the larger) taking the odd one, each at least one. Eight
 * streams for sync_workers 4 were slower than four on two cores and needed
 * twice the memory. */
static int workers_for(const table_job *job)
{
    int total = job->cfg->store.sync_workers;
    size_t n = job->src->n_plans;
    int mine = total / (int)n + (job->slot == (int)n - 1 ? total % (int)n : 0);
    return mine < 1 ? 1 : mine;
}

/* Whether the ids just loaded by a full load are each stored once: then
 * the <name>_data view has exactly one row per result and is counted by
 * counting the results table instead of running its join. Any failure only
 * means "not known": the view's join is counted then. An incremental batch
 * is checked after its merge (commit.c), once it is known to add rows. */
static void check_loaded_ids(table_job *job, duckdb_connection duck)
{
    job->batch_ids_unique = -1;
    if (job->incremental)
        return;
    bool unique = false;
    ds_error ignored;
    if (store_ids_unique(duck, job->staging_ref, NULL, job->rows_loaded, &unique, &ignored))
        job->batch_ids_unique = unique;
}

/* After the connection and the query's description (job_main). */
static bool run_job(table_job *job, pgsrc_conn *pg, duckdb_connection duck)
{
    double t = job->described_from;
    if (!decide(job, duck))
        return false;
    trace_step(job, JOB_STEP_DESCRIBE, "described and decided", &t);
    if (!name_staging(job) || (!job->incremental && !create_staging(job, duck, &job->err)))
        return false;
    trace_step(job, JOB_STEP_STAGING, "staging table created", &t);
    pump_shared shared;
    if (!job_open_read(job, pg, duck, &shared))
        return false;
    trace_step(job, JOB_STEP_HORIZON, "commit horizon, snapshot and read start", &t);
    if (job->opt->progress)
        atomic_store(&job->opt->progress->phase, (int)SYNC_PHASE_READING);
    bool read = read_rows(job, pg, duck, &shared);
    if (read)
        read = pgsrc_exec(pg, "COMMIT", &job->err);
    else
        pgsrc_exec(pg, "ROLLBACK", NULL);
    if (read)
        describe_pending(job, pg);
    if (!read) {
        const cfg_source *src = job->src;
        if (job->err.code == DS_ERR_TIMEOUT)
            ds_error_set(&job->err, DS_ERR_TIMEOUT,
                         "%s (%s:%d) exceeded query_timeout (%g s); narrow the query or raise query_timeout",
                         job->plan->label, src->file, src->line, src->query_timeout_s);
        else
            ds_error_prefix(&job->err, "%s: ", job->plan->label);
        return false;
    }
    job->rows_loaded = (int64_t)atomic_load(&shared.rows);
    job->bytes_loaded = (int64_t)atomic_load(&shared.bytes);
    job->truncated = atomic_load(&shared.truncated);
    trace_step(job, JOB_STEP_READ, "read", &t);
    if (job->plan->needs_dataset_id && job->slot == 0 && !job->incremental) {
        check_loaded_ids(job, duck);
        trace_step(job, JOB_STEP_IDS, "dataset_id uniqueness checked", &t);
    }
    return true;
}

void *job_main(void *arg)
{
    table_job *job = arg;
    pgsrc_conn pg;
    duckdb_connection duck = NULL;
    job->ok = false;
    double t = ds_monotonic_s();
    if (!sync_connect_then(job->src, job->opt, &pg, describe_query, job, &job->err))
        return NULL;
    trace_step_until(job, JOB_STEP_CONNECT, "connected to PostgreSQL", &t, job->described_from);
    if (store_connect_kept(job->st, &duck, &job->err)) {
        job->ok = run_job(job, &pg, duck);
        store_disconnect_kept(job->st, &duck, job->ok);
    }
    sync_disconnect(job->opt, &pg, job->ok);
    return NULL;
}
