/* Orchestrates one source's sync: each query is described and streamed on
 * its own thread (and, when partitioned, by several workers sharing one
 * snapshot) into a staging table; then one DuckDB transaction swaps or
 * appends, and writes watermarks and status together. */
#include "sync/sync.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "sync/incremental.h"

/* ---- cancellation ---------------------------------------------------- */

void sync_cancel_init(sync_cancel *c)
{
    memset(c, 0, sizeof *c);
    atomic_init(&c->requested, false);
    pthread_mutex_init(&c->lock, NULL);
}

void sync_cancel_destroy(sync_cancel *c)
{
    pthread_mutex_destroy(&c->lock);
}

void sync_cancel_request(sync_cancel *c)
{
    atomic_store(&c->requested, true);
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < SYNC_MAX_CONNS; i++)
        if (c->conns[i])
            pgsrc_cancel(c->conns[i]);
    pthread_mutex_unlock(&c->lock);
}

static void cancel_register(sync_cancel *c, pgsrc_conn *conn, bool add)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < SYNC_MAX_CONNS; i++) {
        if (add && c->conns[i] == NULL) {
            c->conns[i] = conn;
            break;
        }
        if (!add && c->conns[i] == conn) {
            c->conns[i] = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
}

static bool cancelled(const sync_options *opt)
{
    return opt->cancel != NULL && atomic_load(&opt->cancel->requested);
}

/* ---- connections ------------------------------------------------------ */

void sync_conn_cache_init(sync_conn_cache *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
}

void sync_conn_cache_destroy(sync_conn_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        pgsrc_disconnect(&c->idle[i]);
    c->n = 0;
    pthread_mutex_destroy(&c->lock);
}

static bool conn_idle(const pgsrc_conn *conn)
{
    return !conn->hung && !conn->stop_sent && PQstatus(conn->pg) == CONNECTION_OK &&
           PQtransactionStatus(conn->pg) == PQTRANS_IDLE;
}

/* How long checking a kept connection waits for the answer: an idle
 * backend answers at once; one that stays silent (frozen host, dropped
 * path) is given up for a new connection instead of holding the sync up
 * for query_timeout. */
#define KEPT_CHECK_SILENCE_S 5.0

/* A kept connection, registered for cancellation and checked with a round
 * trip (the server may have closed it while idle), or false when none is
 * usable. */
static bool take_kept(const sync_options *opt, pgsrc_conn *conn)
{
    sync_conn_cache *cache = opt->conns;
    for (;;) {
        pthread_mutex_lock(&cache->lock);
        bool any = cache->n > 0;
        if (any)
            *conn = cache->idle[--cache->n];
        pthread_mutex_unlock(&cache->lock);
        if (!any || cancelled(opt)) {
            if (any)
                pgsrc_disconnect(conn);
            return false;
        }
        conn->stop = opt->cancel != NULL ? &opt->cancel->requested : NULL;
        cancel_register(opt->cancel, conn, true);
        double silence = conn->silence_s;
        if (conn->silence_s > KEPT_CHECK_SILENCE_S)
            conn->silence_s = KEPT_CHECK_SILENCE_S;
        ds_error ignored;
        ds_error_set(&ignored, DS_ERR_SOURCE, "closed");
        bool ok = conn_idle(conn) && pgsrc_exec(conn, "SELECT 1", &ignored);
        conn->silence_s = silence;
        if (ok)
            return true;
        cancel_register(opt->cancel, conn, false);
        ds_log_debug("a kept PostgreSQL connection did not answer (%s); connecting anew", ignored.msg);
        pgsrc_disconnect(conn);
    }
}

/* Connects (or reuses a kept connection) and registers it for
 * cancellation. */
static bool source_connect(const cfg_source *src, const sync_options *opt, pgsrc_conn *conn, ds_error *err)
{
    if (cancelled(opt))
        return ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    if (opt->conns != NULL && take_kept(opt, conn))
        return true;
    if (cancelled(opt))
        return ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    if (!pgsrc_connect(src->url, src->query_timeout_s, conn, err))
        return false;
    conn->stop = opt->cancel != NULL ? &opt->cancel->requested : NULL;
    cancel_register(opt->cancel, conn, true);
    return true;
}

/* reusable: the caller's work on the connection succeeded, so it may be
 * kept for the next sync when it is idle and healthy. */
static void source_disconnect(const sync_options *opt, pgsrc_conn *conn, bool reusable)
{
    cancel_register(opt->cancel, conn, false);
    if (reusable && opt->conns != NULL && conn_idle(conn) && !cancelled(opt)) {
        conn->stop = NULL;
        pthread_mutex_lock(&opt->conns->lock);
        bool kept = opt->conns->n < SYNC_IDLE_CONNS;
        if (kept)
            opt->conns->idle[opt->conns->n++] = *conn;
        pthread_mutex_unlock(&opt->conns->lock);
        if (kept)
            return;
    }
    pgsrc_disconnect(conn);
}

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

/* ---- names and small helpers ----------------------------------------- */

size_t sync_table_names(const cfg_source *src, char names[2][160])
{
    if (cfg_source_is_split(src)) {
        snprintf(names[0], 160, "%s_dataset", src->name);
        snprintf(names[1], 160, "%s_results", src->name);
        return 2;
    }
    snprintf(names[0], 160, "%s_data", src->name);
    return 1;
}

void sync_data_name(const cfg_source *src, char *out, size_t cap)
{
    snprintf(out, cap, "%s_data", src->name);
}

void sync_now_iso(char *out, size_t cap)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%S+00:00", &tm);
}

static double monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* `duckstore -v` logs how long each step of a sync took: the first thing
 * to look at when a sync is slower than expected. */
static void trace_step(const char *source, const char *what, double *since)
{
    double now = monotonic_s();
    ds_log_debug("%s: %s in %.1f ms", source, what, (now - *since) * 1e3);
    *since = now;
}

static void add_warning(sync_report *report, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_warning(sync_report *report, const char *fmt, ...)
{
    if (report->nwarnings >= SYNC_MAX_WARNINGS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(report->warnings[report->nwarnings], sizeof report->warnings[0], fmt, ap);
    va_end(ap);
    report->nwarnings++;
}

/* The watermark is read back from DuckDB's copy of the column. An
 * unconstrained numeric is a DOUBLE there: its rounded max would make
 * `> watermark` re-read (duplicate) or skip rows, so it cannot serve. */
static bool usable_as_watermark(const pgsrc_type *type)
{
    return pgtypes_is_orderable(type) && type->kind != PGSRC_NUMERIC_DOUBLE;
}

void sync_column_warnings(const cfg_source *src, const char *query_label, const pgsrc_desc *desc,
                          sync_report *report)
{
    struct {
        const char *key, *column, *effect;
        bool (*usable)(const pgsrc_type *);
    } checks[] = {
        {"incremental_column", src->incremental_column, "is read in full on every sync", usable_as_watermark},
        {"partition_column", src->partition_column, "is read in one stream", pgtypes_is_partitionable},
    };
    for (size_t i = 0; i < 2; i++) {
        if (checks[i].column == NULL)
            continue;
        int idx = pgsrc_desc_find(desc, checks[i].column);
        char *cols = pgsrc_desc_column_list(desc);
        if (idx < 0)
            add_warning(report,
                        "%s: %s \"%s\" is not a column of %s (columns: %s); %s %s. Fix: select \"%s\" in "
                        "%s, or change %s",
                        src->name, checks[i].key, checks[i].column, query_label, cols ? cols : "",
                        query_label, checks[i].effect, checks[i].column, query_label, checks[i].key);
        else if (!checks[i].usable(&desc->cols[idx].type)) {
            const char *fix =
                desc->cols[idx].type.kind == PGSRC_NUMERIC_DOUBLE
                    ? ". Fix: give it a precision in the query, e.g. ::numeric(20,0), so DuckDB "
                      "stores it exactly"
                    : "";
            add_warning(report, "%s: %s \"%s\" of %s has type %s, which cannot be used for it; %s %s%s",
                        src->name, checks[i].key, checks[i].column, query_label, desc->cols[idx].pg_type,
                        query_label, checks[i].effect, fix);
        }
        free(cols);
    }
}

static bool column_usable(const pgsrc_desc *desc, const char *column, bool (*usable)(const pgsrc_type *))
{
    if (column == NULL)
        return false;
    int idx = pgsrc_desc_find(desc, column);
    return idx >= 0 && usable(&desc->cols[idx].type);
}

/* "name TYPE\n" per column, and the row cap: equal signatures mean an
 * incremental batch fits the stored table. A changed max_sync_rows rebuilds
 * too: appending would keep rows a lower cap excludes, or never load those a
 * higher cap admits (a capped sync's watermark can be past them). */
static char *schema_signature(const pgsrc_desc *desc, int64_t max_sync_rows)
{
    size_t cap = 48;
    for (size_t i = 0; i < desc->ncols; i++)
        cap += strlen(desc->cols[i].name) + strlen(desc->cols[i].type.ddl) + 2;
    char *sig = malloc(cap);
    if (sig == NULL)
        return NULL;
    size_t used = 0;
    sig[0] = '\0';
    for (size_t i = 0; i < desc->ncols; i++)
        used +=
            (size_t)snprintf(sig + used, cap - used, "%s %s\n", desc->cols[i].name, desc->cols[i].type.ddl);
    snprintf(sig + used, cap - used, "max_sync_rows %lld\n", (long long)max_sync_rows);
    return sig;
}

static char *create_table_sql(const char *table_ref, const pgsrc_desc *desc)
{
    char *qt = strdup(table_ref);
    size_t cap = strlen(qt) + 64;
    for (size_t i = 0; i < desc->ncols; i++)
        cap += 2 * strlen(desc->cols[i].name) + strlen(desc->cols[i].type.ddl) + 8;
    char *sql = malloc(cap);
    size_t used = (size_t)snprintf(sql, cap, "CREATE TABLE %s (", qt);
    for (size_t i = 0; i < desc->ncols; i++) {
        char *qc = store_quote_ident(desc->cols[i].name);
        used +=
            (size_t)snprintf(sql + used, cap - used, "%s%s %s", i ? ", " : "", qc, desc->cols[i].type.ddl);
        free(qc);
    }
    snprintf(sql + used, cap - used, ")");
    free(qt);
    return sql;
}

/* ---- loading: the sink between decoder and appender ----------------- */

typedef struct load_shared {
    _Atomic int64_t budget; /* rows still allowed; only used when capped */
    bool capped;
    atomic_bool truncated;
    _Atomic uint64_t rows;
    int slot; /* the table's place in sync_progress.table_rows */
} load_shared;

/* The producer behind one INSERT: pulls decoded rows from the PostgreSQL
 * stream, applies the shared row budget, and ends the statement after
 * batch_rows rows so each batch commits on its own. */
typedef struct load_fill {
    pgsrc_stream stream;
    load_shared *shared;
    const sync_options *opt;
    uint64_t batch_rows, batch_left;
    uint64_t bytes_seen; /* stream bytes already counted in the progress */
    bool capped_out;     /* budget exhausted: no more rows, whatever PostgreSQL has */
} load_fill;

static bool fill_rows(void *ctx, duckdb_data_chunk out, ds_error *err)
{
    load_fill *f = ctx;
    if (f->capped_out || f->stream.ended || f->batch_left == 0) {
        duckdb_data_chunk_set_size(out, 0);
        return true;
    }
    if (cancelled(f->opt))
        return ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    if (!pgsrc_stream_fill(&f->stream, out, err))
        return false;
    int64_t n = (int64_t)duckdb_data_chunk_get_size(out);
    int64_t take = n;
    if (f->shared->capped) {
        int64_t cur = atomic_load(&f->shared->budget);
        do {
            take = cur < n ? cur : n;
        } while (!atomic_compare_exchange_weak(&f->shared->budget, &cur, cur - take));
        if (take < n) {
            atomic_store(&f->shared->truncated, true);
            f->capped_out = true;
            duckdb_data_chunk_set_size(out, (idx_t)take);
        }
    }
    f->batch_left = (uint64_t)take >= f->batch_left ? 0 : f->batch_left - (uint64_t)take;
    atomic_fetch_add(&f->shared->rows, (uint64_t)take);
    if (f->opt->progress) {
        sync_progress *pr = f->opt->progress;
        atomic_fetch_add(&pr->rows, (uint64_t)take);
        atomic_fetch_add(&pr->table_rows[f->shared->slot], (uint64_t)take);
        atomic_fetch_add(&pr->table_bytes[f->shared->slot], f->stream.bytes_read - f->bytes_seen);
        f->bytes_seen = f->stream.bytes_read;
    }
    return true;
}

/* Streams one COPY statement into a table: INSERT ... SELECT from the
 * decoded stream, one statement per sync_chunk_size rows. */
static bool stream_into(store *st, const cfg_config *cfg, const char *table_ref, pgsrc_conn *conn,
                        const pgsrc_desc *desc, const char *copy_sql, load_shared *shared,
                        const sync_options *opt, ds_error *err)
{
    duckdb_connection con;
    if (!store_connect(st, &con, err))
        return false;
    pgsrc_type *types = malloc(desc->ncols * sizeof *types);
    for (size_t i = 0; i < desc->ncols; i++)
        types[i] = desc->cols[i].type;
    copy_decoder *dec = copy_decoder_new(types, desc->ncols);
    free(types);
    load_fill f = {.shared = shared, .opt = opt, .batch_rows = (uint64_t)cfg->store.sync_chunk_size};
    _Atomic uint64_t *bytes = opt->progress ? &opt->progress->bytes : NULL;
    bool ok = dec != NULL && pgsrc_stream_open(&f.stream, conn, copy_sql, dec, bytes, err);
    if (dec == NULL)
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    while (ok && !f.capped_out && !f.stream.ended) {
        f.batch_left = f.batch_rows;
        ok = store_insert_stream(con, table_ref, fill_rows, &f, err);
    }
    pgsrc_stream_close(&f.stream);
    copy_decoder_free(dec);
    duckdb_disconnect(&con);
    if (!ok && cancelled(opt))
        ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    return ok;
}

/* ---- partitioned reads ------------------------------------------------ */

typedef struct partition_plan {
    char **conditions; /* SQL conditions, one per range, plus IS NULL */
    size_t n;
    _Atomic size_t next;
    char *snapshot;
} partition_plan;

static void partition_plan_free(partition_plan *plan)
{
    for (size_t i = 0; i < plan->n; i++)
        free(plan->conditions[i]);
    free(plan->conditions);
    free(plan->snapshot);
}

/* Splits [MIN, MAX] of the partition column into 4 ranges per worker, so a
 * skewed range does not leave the other workers idle; boundaries are computed
 * by PostgreSQL in the column's own type. */
static bool plan_partitions(pgsrc_conn *conn, const char *query, const pgsrc_column *col, int workers,
                            partition_plan *plan, ds_error *err)
{
    memset(plan, 0, sizeof *plan);
    if (!pgsrc_query_value(conn, "SELECT pg_export_snapshot()", &plan->snapshot, err))
        return false;
    char *trimmed = pgsrc_trim_query(query);
    char *ident = pgsrc_quote_ident(conn, col->name);
    int ranges = workers * 4;
    const char *step;
    /* PostgreSQL cannot subtract ±infinity dates and timestamps: span the
     * finite values only; the open first and last ranges take the rest. */
    bool temporal = false;
    switch (col->type.kind) {
    case PGSRC_DATE:
        step = "lo + ((hi - lo) * i / %d)";
        temporal = true;
        break;
    case PGSRC_TIMESTAMP:
    case PGSRC_TIMESTAMPTZ:
        step = "lo + (hi - lo) * (i::float8 / %d)";
        temporal = true;
        break;
    default:
        step = "(lo::numeric + (hi::numeric - lo::numeric) * i / %d)";
        break;
    }
    char expr[128];
    snprintf(expr, sizeof expr, step, ranges);
    char *sql = NULL;
    int n = asprintf(&sql,
                     "WITH b AS (SELECT min(%s) AS lo, max(%s) AS hi FROM (%s\n) AS _p%s%s%s) "
                     "SELECT bound::text AS bound_text FROM (SELECT DISTINCT (%s)::%s AS bound FROM b, "
                     "generate_series(1, %d) AS i WHERE lo IS NOT NULL) AS bounds ORDER BY bound",
                     ident, ident, trimmed, temporal ? " WHERE isfinite(" : "", temporal ? ident : "",
                     temporal ? ")" : "", expr, col->pg_type, ranges - 1);
    free(trimmed);
    if (n < 0) {
        free(ident);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    PGresult *res = pgsrc_query(conn, sql, err);
    if (res == NULL) {
        free(sql);
        free(ident);
        return false;
    }
    free(sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        /* Classified like every other statement: this query runs the user's
         * query too, so its statement_timeout must read as query_timeout. */
        pgsrc_result_error(conn, res, err);
        ds_error_prefix(err, "cannot split partition_column %s into ranges: ", col->name);
        PQclear(res);
        free(ident);
        return false;
    }
    int nb = PQntuples(res);
    plan->conditions = calloc((size_t)nb + 2, sizeof *plan->conditions);
    char **lits = calloc((size_t)nb + 1, sizeof *lits);
    for (int i = 0; i < nb; i++) {
        char *q = pgsrc_quote_literal(conn, PQgetvalue(res, i, 0));
        n = asprintf(&lits[i], "%s::%s", q, col->pg_type);
        free(q);
    }
    PQclear(res);
    /* Ranges: (-inf, b1), [b1, b2), ..., [bn, +inf), and NULLs. */
    for (int i = 0; i <= nb; i++) {
        char *cond = NULL;
        if (nb == 0)
            n = asprintf(&cond, "%s IS NOT NULL", ident);
        else if (i == 0)
            n = asprintf(&cond, "%s < %s", ident, lits[0]);
        else if (i == nb)
            n = asprintf(&cond, "%s >= %s", ident, lits[nb - 1]);
        else
            n = asprintf(&cond, "%s >= %s AND %s < %s", ident, lits[i - 1], ident, lits[i]);
        plan->conditions[plan->n++] = cond;
    }
    n = asprintf(&plan->conditions[plan->n++], "%s IS NULL", ident);
    (void)n;
    for (int i = 0; i < nb; i++)
        free(lits[i]);
    free(lits);
    free(ident);
    atomic_init(&plan->next, 0);
    return true;
}

typedef struct partition_worker {
    pthread_t thread;
    store *st;
    const cfg_config *cfg;
    const cfg_source *src;
    const sync_options *opt;
    const char *table, *query;
    const pgsrc_desc *desc;
    partition_plan *plan;
    load_shared *shared;
    atomic_bool *failed;
    bool ok;
    ds_error err;
} partition_worker;

static void *partition_worker_main(void *arg)
{
    partition_worker *w = arg;
    pgsrc_conn conn;
    w->ok = false;
    if (!source_connect(w->src, w->opt, &conn, &w->err))
        goto out;
    char *snap = pgsrc_quote_literal(&conn, w->plan->snapshot);
    char sql[256];
    snprintf(sql, sizeof sql, "SET TRANSACTION SNAPSHOT %s", snap);
    free(snap);
    if (!pgsrc_exec(&conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", &w->err) ||
        !pgsrc_exec(&conn, sql, &w->err)) {
        source_disconnect(w->opt, &conn, false);
        goto out;
    }
    w->ok = true;
    int64_t limit = w->shared->capped ? atomic_load(&w->shared->budget) + 1 : -1;
    for (;;) {
        if (atomic_load(w->failed) || atomic_load(&w->shared->truncated))
            break;
        size_t i = atomic_fetch_add(&w->plan->next, 1);
        if (i >= w->plan->n)
            break;
        char *copy = pgsrc_copy_sql(&conn, w->query, w->desc, w->plan->conditions[i], limit);
        w->ok = stream_into(w->st, w->cfg, w->table, &conn, w->desc, copy, w->shared, w->opt, &w->err);
        free(copy);
        if (!w->ok)
            break;
    }
    if (w->ok)
        w->ok = pgsrc_exec(&conn, "COMMIT", &w->err);
    source_disconnect(w->opt, &conn, w->ok);
out:
    if (!w->ok)
        atomic_store(w->failed, true);
    return NULL;
}

static bool load_partitioned(store *st, const cfg_config *cfg, const cfg_source *src, const sync_options *opt,
                             pgsrc_conn *conn, const char *table_ref, const char *query,
                             const pgsrc_desc *desc, const pgsrc_column *col, int workers,
                             load_shared *shared, ds_error *err)
{
    partition_plan plan;
    if (!pgsrc_exec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err))
        return false;
    if (!plan_partitions(conn, query, col, workers, &plan, err)) {
        partition_plan_free(&plan); /* the exported snapshot's name is already set */
        pgsrc_exec(conn, "ROLLBACK", NULL);
        return false;
    }
    ds_log_debug("%s: reading %s in %zu ranges with %d workers", src->name, table_ref, plan.n, workers);
    partition_worker *ws = calloc((size_t)workers, sizeof *ws);
    atomic_bool failed;
    atomic_init(&failed, false);
    for (int i = 0; i < workers; i++) {
        ws[i] = (partition_worker){.st = st,
                                   .cfg = cfg,
                                   .src = src,
                                   .opt = opt,
                                   .table = table_ref,
                                   .query = query,
                                   .desc = desc,
                                   .plan = &plan,
                                   .shared = shared,
                                   .failed = &failed};
        pthread_create(&ws[i].thread, NULL, partition_worker_main, &ws[i]);
    }
    bool ok = true;
    for (int i = 0; i < workers; i++) {
        pthread_join(ws[i].thread, NULL);
        if (!ws[i].ok && ok) {
            ok = false;
            *err = ws[i].err;
        }
    }
    /* The exporting transaction must outlive the workers' SET TRANSACTION SNAPSHOT. */
    pgsrc_exec(conn, "COMMIT", NULL);
    free(ws);
    partition_plan_free(&plan);
    return ok;
}

/* ---- one table: describe, decide, load into staging ------------------ */

typedef struct table_job {
    pthread_t thread;
    store *st;
    const cfg_config *cfg;
    const cfg_source *src;
    const sync_options *opt;
    const char *label; /* dataset_query, results_query or query */
    const char *query;
    bool needs_dataset_id;
    const cfg_key *key; /* unique_key of this sub-table (n == 0: none) */
    int slot;           /* index in sync_table_names() and the progress */
    char table[160], staging[176];
    /* The staging table in SQL: in the file for a full load (it is renamed
     * into place), in the in-memory catalog for an incremental batch (no
     * WAL or fsync for rows that are merged moments later). */
    char staging_ref[400];
    /* results */
    pgsrc_desc desc;
    char *signature;
    bool has_inc_col, incremental;
    int inc_idx; /* incremental column in desc, -1 when absent */
    char *old_watermark;
    bool old_inclusive;
    inc_horizon horizon; /* value NULL when the horizon is off */
    char *read_start;    /* incremental reads: where this one started */
    bool start_inclusive, overlap;
    int64_t rows_inserted, rows_updated;
    int64_t rows_loaded;
    bool truncated;
    /* Dataset table of a split source: the rows this sync loaded keep each
     * dataset_id stored at most once (1), do not (0), not checked (-1). */
    int batch_ids_unique;
    sync_report warnings;
    bool ok;
    ds_error err;
} table_job;

static bool decide_incremental(table_job *job, duckdb_connection con, ds_error *err)
{
    job->incremental = false;
    if (job->opt->force_full || !job->has_inc_col)
        return true;
    bool exists = false;
    if (!store_table_exists(con, job->table, &exists, err))
        return false;
    if (!exists)
        return true;
    store_table_meta meta;
    if (!store_get_table_meta(con, job->table, &meta, err))
        return false;
    if (meta.watermark == NULL || meta.watermark_column == NULL ||
        strcmp(meta.watermark_column, job->src->incremental_column) != 0) {
        store_table_meta_free(&meta);
        return true;
    }
    if (meta.schema_signature == NULL || strcmp(meta.schema_signature, job->signature) != 0) {
        ds_log_warn(
            "%s: the columns of %s (or max_sync_rows) changed since the last sync; rebuilding %s in full",
            job->src->name, job->label, job->table);
        store_table_meta_free(&meta);
        return true;
    }
    job->incremental = true;
    job->old_watermark = meta.watermark;
    job->old_inclusive = meta.watermark_inclusive;
    meta.watermark = NULL;
    store_table_meta_free(&meta);
    return true;
}

/* Whether the ids just loaded keep every dataset_id stored at most once:
 * then the <name>_data view has exactly one row per result and is counted
 * by counting the results table instead of running its join. Runs before
 * the commit, next to the other table's load, on the staging table (full)
 * or on staging plus the stored rows with the same ids (incremental), in
 * slices of the id hash so that each GROUP BY fits the memory_limit (one
 * over 1M uuids did not fit 64 MB). Any failure only means "not known":
 * the view's join is counted then. An upsert batch is not checked (its
 * overlap with stored rows is what it replaces). */
static void check_loaded_ids(table_job *job, duckdb_connection con)
{
    job->batch_ids_unique = -1;
    if (job->incremental && (job->rows_loaded == 0 || job->key->n > 0))
        return;
    char *qt = store_quote_ident(job->table);
    const char *qs = job->staging_ref;
    int64_t slices = job->rows_loaded / 200000 + 1;
    bool ok = true, unique = true;
    for (int64_t i = 0; ok && unique && i < slices; i++) {
        char in_slice[96];
        if (slices == 1)
            snprintf(in_slice, sizeof in_slice, "true");
        else
            snprintf(in_slice, sizeof in_slice, "hash(dataset_id) %% %" PRId64 " = %" PRId64, slices, i);
        char *answer = NULL;
        ds_error ignored;
        ok = job->incremental
                 ? store_query_textf(
                       con, &answer, &ignored,
                       "SELECT count(*) = 0 FROM (SELECT dataset_id FROM (SELECT dataset_id FROM %s "
                       "WHERE %s UNION ALL SELECT dataset_id FROM %s WHERE %s AND dataset_id IN "
                       "(SELECT dataset_id FROM %s WHERE %s)) GROUP BY dataset_id HAVING count(*) > 1)",
                       qs, in_slice, qt, in_slice, qs, in_slice)
                 : store_query_textf(con, &answer, &ignored,
                                     "SELECT count(*) = 0 FROM (SELECT dataset_id FROM %s WHERE %s GROUP BY "
                                     "dataset_id HAVING count(*) > 1)",
                                     qs, in_slice);
        unique = answer != NULL && strcmp(answer, "true") == 0;
        free(answer);
    }
    job->batch_ids_unique = ok ? unique : -1;
    free(qt);
}

/* sync_workers is the source's budget of parallel readers (and DuckDB
 * insert streams): the two queries of a split source share it, the results
 * query (usually the larger) taking the odd one, each at least one. Eight
 * streams for sync_workers 4 were slower than four on two cores and needed
 * twice the memory. */
static int workers_for(const table_job *job)
{
    int total = job->cfg->store.sync_workers;
    if (!job->needs_dataset_id)
        return total;
    int dataset = total / 2, results = total - total / 2;
    int mine = job->slot == 0 ? dataset : results;
    return mine < 1 ? 1 : mine;
}

static bool run_table_job(table_job *job, pgsrc_conn *conn, duckdb_connection con)
{
    ds_error *err = &job->err;
    const cfg_source *src = job->src;
    double t = monotonic_s();
    if (!pgsrc_describe(conn, job->query, &job->desc, err)) {
        ds_error_prefix(err, "%s (%s:%d): ", job->label, src->file, src->line);
        return false;
    }
    if (job->needs_dataset_id && pgsrc_desc_find(&job->desc, "dataset_id") < 0) {
        char *cols = pgsrc_desc_column_list(&job->desc);
        ds_error_set(err, DS_ERR_CONFIG,
                     "%s (%s:%d) has no column named dataset_id (columns: %s); both queries of a split "
                     "source are joined on it: select it or alias one, e.g. trace_id AS dataset_id",
                     job->label, src->file, src->line, cols ? cols : "");
        free(cols);
        return false;
    }
    if (!inc_check_key(src, job->label, job->key, &job->desc, err))
        return false;
    sync_column_warnings(src, job->label, &job->desc, &job->warnings);
    job->has_inc_col = column_usable(&job->desc, src->incremental_column, usable_as_watermark);
    job->inc_idx = job->has_inc_col ? pgsrc_desc_find(&job->desc, src->incremental_column) : -1;
    job->signature = schema_signature(&job->desc, job->cfg->store.max_sync_rows);
    if (!decide_incremental(job, con, err))
        return false;
    trace_step(job->table, "described and decided", &t);

    char *qs = store_quote_ident(job->staging);
    snprintf(job->staging_ref, sizeof job->staging_ref, "%s%s",
             job->incremental ? STORE_SCRATCH_CATALOG ".main." : "", qs);
    free(qs);
    char *create = create_table_sql(job->staging_ref, &job->desc);
    bool ok = store_execf(con, NULL, err, "DROP TABLE IF EXISTS %s", job->staging_ref) &&
              store_exec(con, create, err);
    free(create);
    if (!ok)
        return false;
    trace_step(job->table, "staging table created", &t);

    load_shared shared;
    memset(&shared, 0, sizeof shared);
    shared.slot = job->slot;
    int64_t cap = job->cfg->store.max_sync_rows;
    if (cap > 0) {
        shared.capped = true;
        int64_t budget = cap;
        if (job->incremental) {
            char *qt = store_quote_ident(job->table);
            char sql[256];
            snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", qt);
            free(qt);
            int64_t existing = 0;
            if (!store_query_int(con, sql, &existing, err))
                return false;
            budget = existing >= cap ? 0 : cap - existing;
        }
        atomic_init(&shared.budget, budget);
    }

    /* The horizon is taken before the read's snapshot (see incremental.h). */
    if (job->has_inc_col && inc_horizon_enabled(src, &job->desc.cols[job->inc_idx])) {
        if (!inc_take_horizon(conn, &job->desc.cols[job->inc_idx], &job->horizon, err))
            return false;
        if (!job->horizon.sees_all)
            add_warning(&job->warnings,
                        "%s: the source role cannot see other sessions' transactions, so the commit horizon "
                        "only covers its own; GRANT pg_read_all_stats TO the role in the url",
                        src->name);
    }
    if (job->incremental &&
        !inc_read_start(con, src, job->desc.cols[job->inc_idx].type.ddl, job->old_watermark,
                        job->old_inclusive, &job->read_start, &job->start_inclusive, &job->overlap, err))
        return false;
    trace_step(job->table, "commit horizon and read start", &t);

    set_phase(job->opt, SYNC_PHASE_READING);
    int part_idx = src->partition_column ? pgsrc_desc_find(&job->desc, src->partition_column) : -1;
    int workers = workers_for(job);
    if (!job->incremental && workers > 1 && part_idx >= 0 &&
        pgtypes_is_partitionable(&job->desc.cols[part_idx].type)) {
        ok = load_partitioned(job->st, job->cfg, src, job->opt, conn, job->staging_ref, job->query,
                              &job->desc, &job->desc.cols[part_idx], workers, &shared, err);
    } else {
        char *where = NULL;
        if (job->incremental) {
            char *ident = pgsrc_quote_ident(conn, src->incremental_column);
            char *lit = pgsrc_quote_literal(conn, job->read_start);
            if (asprintf(&where, "%s %s %s::%s", ident, job->start_inclusive ? ">=" : ">", lit,
                         job->desc.cols[job->inc_idx].pg_type) < 0)
                where = NULL;
            free(ident);
            free(lit);
        }
        int64_t limit = shared.capped ? atomic_load(&shared.budget) + 1 : -1;
        char *copy = pgsrc_copy_sql(conn, job->query, &job->desc, where, limit);
        ok = stream_into(job->st, job->cfg, job->staging_ref, conn, &job->desc, copy, &shared, job->opt, err);
        free(copy);
        free(where);
    }
    if (!ok) {
        if (err->code == DS_ERR_TIMEOUT)
            ds_error_set(err, DS_ERR_TIMEOUT,
                         "%s (%s:%d) exceeded query_timeout (%g s); narrow the query or "
                         "raise query_timeout",
                         job->label, src->file, src->line, src->query_timeout_s);
        else
            ds_error_prefix(err, "%s: ", job->label);
        return false;
    }
    job->rows_loaded = (int64_t)atomic_load(&shared.rows);
    job->truncated = atomic_load(&shared.truncated);
    trace_step(job->table, "read", &t);
    if (job->needs_dataset_id && job->slot == 0) {
        check_loaded_ids(job, con);
        trace_step(job->table, "dataset_id uniqueness checked", &t);
    }
    return true;
}

static void *table_job_main(void *arg)
{
    table_job *job = arg;
    pgsrc_conn conn;
    duckdb_connection con = NULL;
    job->ok = false;
    double t = monotonic_s();
    if (!source_connect(job->src, job->opt, &conn, &job->err))
        return NULL;
    trace_step(job->table, "connected to PostgreSQL", &t);
    if (store_connect(job->st, &con, &job->err)) {
        job->ok = run_table_job(job, &conn, con);
        duckdb_disconnect(&con);
    }
    source_disconnect(job->opt, &conn, job->ok);
    return NULL;
}

static void table_job_free(table_job *job)
{
    pgsrc_desc_free(&job->desc);
    free(job->signature);
    free(job->old_watermark);
    free(job->read_start);
    inc_horizon_free(&job->horizon);
}

/* ---- commit ------------------------------------------------------------ */

static char *view_sql(const cfg_source *src, const table_job *dataset, const table_job *results)
{
    char view[160], *qv, *qd, *qr;
    sync_data_name(src, view, sizeof view);
    qv = store_quote_ident(view);
    qd = store_quote_ident(dataset->table);
    qr = store_quote_ident(results->table);
    size_t cap = 256 + strlen(qv) + strlen(qd) + strlen(qr);
    for (size_t i = 0; i < results->desc.ncols; i++)
        cap += 2 * strlen(results->desc.cols[i].name) + 8;
    for (size_t i = 0; i < dataset->desc.ncols; i++)
        cap += 4 * strlen(dataset->desc.cols[i].name) + 32;
    char *sql = malloc(cap);
    size_t used = (size_t)snprintf(sql, cap, "CREATE OR REPLACE VIEW %s AS SELECT ", qv);
    for (size_t i = 0; i < results->desc.ncols; i++) {
        char *qc = store_quote_ident(results->desc.cols[i].name);
        used += (size_t)snprintf(sql + used, cap - used, "%sr.%s", i ? ", " : "", qc);
        free(qc);
    }
    for (size_t i = 0; i < dataset->desc.ncols; i++) {
        const char *name = dataset->desc.cols[i].name;
        if (strcmp(name, "dataset_id") == 0)
            continue;
        char *qc = store_quote_ident(name);
        if (pgsrc_desc_find(&results->desc, name) >= 0) {
            /* Same name in both: the dataset's copy is exposed as dataset_<col>
             * (dataset_dataset_<col> if that is taken too, as for "id"). */
            char alias[300];
            snprintf(alias, sizeof alias, "dataset_%s", name);
            while (pgsrc_desc_find(&results->desc, alias) >= 0 && strlen(alias) + 8 < sizeof alias) {
                memmove(alias + 8, alias, strlen(alias) + 1);
                memcpy(alias, "dataset_", 8);
            }
            char *qa = store_quote_ident(alias);
            used += (size_t)snprintf(sql + used, cap - used, ", d.%s AS %s", qc, qa);
            free(qa);
        } else {
            used += (size_t)snprintf(sql + used, cap - used, ", d.%s", qc);
        }
        free(qc);
    }
    snprintf(sql + used, cap - used, " FROM %s AS r LEFT JOIN %s AS d ON r.\"dataset_id\" = d.\"dataset_id\"",
             qr, qd);
    free(qv);
    free(qd);
    free(qr);
    return sql;
}

static int64_t count_rows(duckdb_connection con, const char *name, ds_error *err, bool *ok)
{
    char *q = store_quote_ident(name);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", q);
    free(q);
    int64_t n = 0;
    if (!store_query_int(con, sql, &n, err))
        *ok = false;
    return n;
}

/* Applies one table's staging data and its metadata, inside the commit
 * transaction. */
static bool apply_table(duckdb_connection con, const cfg_source *src, table_job *job, sync_table_report *tr,
                        ds_error *err)
{
    char *qt = store_quote_ident(job->table), *qs = strdup(job->staging_ref);
    const char *duck_type = job->has_inc_col ? job->desc.cols[job->inc_idx].type.ddl : NULL;
    bool ok;
    if (job->incremental) {
        /* An empty batch changes nothing (an upsert deletes only what it
         * replaces). The in-memory staging table is dropped after the
         * commit: one transaction may write to one database only. */
        ok = job->rows_loaded == 0 ||
             inc_apply(con, job->table, job->staging_ref, job->key, src->incremental_column, duck_type,
                       job->read_start, job->start_inclusive, job->overlap, &job->rows_inserted,
                       &job->rows_updated, err);
    } else {
        ok = store_execf(con, NULL, err, "DROP TABLE IF EXISTS %s", qt) &&
             store_execf(con, NULL, err, "ALTER TABLE %s RENAME TO %s", qs, qt);
        job->rows_inserted = job->rows_loaded;
    }
    char *watermark = NULL;
    bool inclusive = false;
    if (ok && job->has_inc_col)
        ok = inc_next_watermark(con, job->table, src->incremental_column, duck_type,
                                job->incremental ? job->old_watermark : NULL, job->horizon.value, &watermark,
                                &inclusive, err);
    if (ok) {
        store_table_meta meta = {.schema_signature = job->signature,
                                 .watermark_column = job->has_inc_col ? src->incremental_column : NULL,
                                 .watermark = watermark,
                                 .watermark_inclusive = inclusive};
        ok = store_put_table_meta(con, job->table, &meta, err);
    }
    snprintf(tr->table, sizeof tr->table, "%s", job->table);
    tr->incremental = job->incremental;
    tr->rows_loaded = job->rows_loaded;
    tr->rows_inserted = job->rows_inserted;
    tr->rows_updated = job->rows_updated;
    tr->truncated = job->truncated;
    tr->upsert = job->key->n > 0;
    snprintf(tr->horizon, sizeof tr->horizon, "%s", job->horizon.value ? job->horizon.value : "");
    snprintf(tr->horizon_holder, sizeof tr->horizon_holder, "%s",
             job->horizon.holder ? job->horizon.holder : "");
    if (ok)
        tr->rows_total = count_rows(con, job->table, err, &ok);
    free(watermark);
    free(qt);
    free(qs);
    return ok;
}

static json_t *load_status_doc(duckdb_connection con, const char *source)
{
    char *text = NULL;
    json_t *doc = NULL;
    if (store_get_status(con, source, &text, NULL) && text)
        doc = json_loads(text, 0, NULL);
    free(text);
    return doc && json_is_object(doc) ? doc : (json_decref(doc), json_object());
}

static bool save_status_doc(duckdb_connection con, const char *source, json_t *doc, ds_error *err)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    bool ok = text && store_put_status(con, source, text, err);
    free(text);
    return ok;
}

static json_t *warnings_json(const sync_report *report)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < report->nwarnings; i++)
        json_array_append_new(arr, json_string(report->warnings[i]));
    return arr;
}

static bool commit_sync(store *st, const cfg_source *src, table_job *jobs, size_t njobs, sync_report *report,
                        double started, ds_error *err)
{
    duckdb_connection con;
    if (!store_connect(st, &con, err))
        return false;
    pthread_mutex_lock(&st->commit_lock);
    char data_name[160];
    sync_data_name(src, data_name, sizeof data_name);
    bool ok = store_exec(con, "BEGIN TRANSACTION", err);
    /* Counting the view runs its join, the costliest part of a small
     * incremental sync: the previous count comes from the status, and
     * nothing is counted when no row changed. */
    json_t *previous = load_status_doc(con, src->name);
    json_t *previous_rows = json_object_get(previous, "rows");
    /* Each dataset_id stored at most once (split sources): a full load
     * decides alone; an incremental one keeps it when it held before and the
     * loaded ids are new and distinct. */
    bool ids_unique = false;
    if (njobs == 2) {
        bool before = json_is_true(json_object_get(previous, "dataset_id_unique"));
        const table_job *d = &jobs[0];
        ids_unique = !d->incremental       ? d->batch_ids_unique == 1
                     : d->rows_loaded == 0 ? before
                                           : before && d->batch_ids_unique == 1;
    }
    bool existed = false;
    int64_t rows_before = 0;
    if (json_is_integer(previous_rows))
        rows_before = json_integer_value(previous_rows);
    else if (ok && store_table_exists(con, njobs == 2 ? jobs[1].table : jobs[0].table, &existed, err) &&
             existed)
        rows_before = count_rows(con, data_name, err, &ok);
    json_decref(previous);
    bool changed = false;
    double step = monotonic_s();
    for (size_t i = 0; ok && i < njobs; i++) {
        ok = apply_table(con, src, &jobs[i], &report->tables[i], err);
        trace_step(jobs[i].table, "applied", &step);
        changed |= !jobs[i].incremental || jobs[i].rows_inserted > 0 || jobs[i].rows_updated > 0;
    }
    report->ntables = njobs;
    if (ok && njobs == 2) {
        char *sql = view_sql(src, &jobs[0], &jobs[1]);
        ok = store_exec(con, sql, err);
        free(sql);
    }
    report->rows = rows_before;
    if (ok && ids_unique)
        report->rows = report->tables[1].rows_total;
    else if (ok && changed)
        report->rows = count_rows(con, data_name, err, &ok);
    report->rows_added = report->rows - rows_before;
    trace_step(src->name, "view created and counted", &step);
    report->incremental = false;
    report->truncated = false;
    for (size_t i = 0; i < njobs; i++) {
        report->incremental |= jobs[i].incremental;
        report->truncated |= jobs[i].truncated;
    }
    report->duration_s = monotonic_s() - started;
    if (ok) {
        char now[40];
        sync_now_iso(now, sizeof now);
        json_t *doc = load_status_doc(con, src->name);
        json_object_set_new(doc, "state", json_string("ready"));
        json_object_set_new(doc, "rows", json_integer(report->rows));
        if (njobs == 2)
            json_object_set_new(doc, "dataset_id_unique", json_boolean(ids_unique));
        json_object_set_new(doc, "sync_type", json_string(report->incremental ? "incremental" : "full"));
        json_object_set_new(doc, "last_sync", json_string(now));
        int64_t inserted = 0, updated = 0;
        for (size_t i = 0; i < njobs; i++) {
            inserted += report->tables[i].rows_inserted;
            updated += report->tables[i].rows_updated;
        }
        if (report->incremental) {
            json_object_set_new(doc, "last_incremental", json_string(now));
            json_object_set_new(doc, "incremental_rows", json_integer(report->rows_added));
            json_object_set_new(doc, "incremental_inserted", json_integer(inserted));
            json_object_set_new(doc, "incremental_updated", json_integer(updated));
        } else {
            json_object_set_new(doc, "last_full", json_string(now));
        }
        json_object_set_new(doc, "truncated", json_boolean(report->truncated));
        json_object_set_new(doc, "error", json_null());
        json_object_set_new(doc, "warnings", warnings_json(report));
        json_object_set_new(doc, "duration_seconds", json_real(report->duration_s));
        json_t *tables = json_object();
        for (size_t i = 0; i < njobs; i++) {
            json_t *t = json_object();
            json_object_set_new(t, "rows", json_integer(report->tables[i].rows_total));
            json_object_set_new(t, "rows_loaded", json_integer(report->tables[i].rows_loaded));
            json_object_set_new(t, "mode",
                                json_string(report->tables[i].incremental ? "incremental" : "full"));
            json_object_set_new(t, "truncated", json_boolean(report->tables[i].truncated));
            json_object_set_new(t, "apply", json_string(report->tables[i].upsert ? "upsert" : "append"));
            json_object_set_new(t, "rows_inserted", json_integer(report->tables[i].rows_inserted));
            json_object_set_new(t, "rows_updated", json_integer(report->tables[i].rows_updated));
            json_object_set_new(t, "commit_horizon",
                                report->tables[i].horizon[0] ? json_string(report->tables[i].horizon)
                                                             : json_null());
            json_object_set_new(t, "horizon_held_by",
                                report->tables[i].horizon_holder[0]
                                    ? json_string(report->tables[i].horizon_holder)
                                    : json_null());
            json_object_set_new(tables, report->tables[i].table, t);
        }
        json_object_set_new(doc, "tables", tables);
        ok = save_status_doc(con, src->name, doc, err);
        json_decref(doc);
    }
    if (ok)
        ok = store_exec(con, "COMMIT", err);
    trace_step(src->name, "status saved and committed", &step);
    if (!ok)
        store_exec(con, "ROLLBACK", NULL);
    pthread_mutex_unlock(&st->commit_lock);
    for (size_t i = 0; ok && i < njobs; i++)
        if (jobs[i].incremental)
            store_execf(con, NULL, NULL, "DROP TABLE IF EXISTS %s", jobs[i].staging_ref);
    duckdb_disconnect(&con);
    return ok;
}

/* After a failure: no staging table left, watermarks cleared (runbook
 * auto-recovery), status `error` with the reason; the data stays. */
static void record_failure(store *st, const cfg_source *src, table_job *jobs, size_t njobs,
                           const sync_report *report, double started, const ds_error *cause)
{
    duckdb_connection con;
    ds_error err;
    if (!store_connect(st, &con, &err)) {
        ds_log_error("%s: cannot record the failed sync: %s", src->name, err.msg);
        return;
    }
    pthread_mutex_lock(&st->commit_lock);
    const char *tables[2];
    for (size_t i = 0; i < njobs; i++) {
        char *qs = store_quote_ident(jobs[i].staging);
        store_execf(con, NULL, NULL, "DROP TABLE IF EXISTS %s", qs);
        free(qs);
        if (jobs[i].staging_ref[0] != '\0')
            store_execf(con, NULL, NULL, "DROP TABLE IF EXISTS %s", jobs[i].staging_ref);
        tables[i] = jobs[i].table;
    }
    if (cause->code == DS_ERR_CANCELLED) {
        /* A stop on request (shutdown) is not a failure of the source: the
         * stored data, watermarks and status still agree, so keep them. */
        pthread_mutex_unlock(&st->commit_lock);
        duckdb_disconnect(&con);
        return;
    }
    char now[40];
    sync_now_iso(now, sizeof now);
    json_t *doc = load_status_doc(con, src->name);
    json_object_set_new(doc, "state", json_string("error"));
    json_object_set_new(doc, "error", json_string(cause->msg));
    json_object_set_new(doc, "last_error", json_string(now));
    json_object_set_new(doc, "last_sync", json_string(now));
    json_object_set_new(doc, "duration_seconds", json_real(monotonic_s() - started));
    json_object_set_new(doc, "warnings", warnings_json(report));
    bool ok = store_exec(con, "BEGIN TRANSACTION", &err) &&
              store_clear_watermarks(con, tables, njobs, &err) &&
              save_status_doc(con, src->name, doc, &err) && store_exec(con, "COMMIT", &err);
    if (!ok) {
        store_exec(con, "ROLLBACK", NULL);
        ds_log_error("%s: cannot record the failed sync: %s", src->name, err.msg);
    }
    json_decref(doc);
    pthread_mutex_unlock(&st->commit_lock);
    duckdb_disconnect(&con);
}

bool sync_source(store *st, const cfg_config *cfg, const cfg_source *src, const sync_options *opt,
                 sync_report *report, ds_error *err)
{
    static const sync_options no_options = {0};
    if (opt == NULL)
        opt = &no_options;
    memset(report, 0, sizeof *report);
    double started = monotonic_s();
    if (opt->progress) {
        atomic_store(&opt->progress->rows, 0);
        atomic_store(&opt->progress->bytes, 0);
        for (size_t i = 0; i < 2; i++) {
            atomic_store(&opt->progress->table_rows[i], 0);
            atomic_store(&opt->progress->table_bytes[i], 0);
        }
    }
    set_phase(opt, SYNC_PHASE_DESCRIBING);

    char names[2][160];
    size_t njobs = sync_table_names(src, names);
    table_job jobs[2];
    memset(jobs, 0, sizeof jobs);
    const char *labels[2] = {"dataset_query", "results_query"};
    const char *queries[2] = {src->dataset_query, src->results_query};
    for (size_t i = 0; i < njobs; i++) {
        table_job *job = &jobs[i];
        job->st = st;
        job->cfg = cfg;
        job->src = src;
        job->opt = opt;
        job->label = njobs == 2 ? labels[i] : "query";
        job->query = njobs == 2 ? queries[i] : src->query;
        job->needs_dataset_id = njobs == 2;
        job->slot = (int)i;
        job->key = njobs == 2 ? (i == 0 ? &src->unique_key_dataset : &src->unique_key_results)
                              : &src->unique_key_data;
        job->inc_idx = -1;
        snprintf(job->table, sizeof job->table, "%s", names[i]);
        snprintf(job->staging, sizeof job->staging, "%.159s_staging", names[i]);
    }
    /* The queries of a split source run concurrently, each on its own
     * connection. */
    for (size_t i = 0; i < njobs; i++)
        pthread_create(&jobs[i].thread, NULL, table_job_main, &jobs[i]);
    bool ok = true;
    for (size_t i = 0; i < njobs; i++) {
        pthread_join(jobs[i].thread, NULL);
        for (size_t w = 0; w < jobs[i].warnings.nwarnings; w++)
            add_warning(report, "%s", jobs[i].warnings.warnings[w]);
        if (!jobs[i].ok && ok) {
            ok = false;
            *err = jobs[i].err;
        }
    }
    if (ok && cancelled(opt))
        ok = ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    if (ok) {
        set_phase(opt, SYNC_PHASE_COMMITTING);
        ok = commit_sync(st, src, jobs, njobs, report, started, err);
    }
    if (!ok) {
        ds_error_prefix(err, "%s: ", src->name);
        record_failure(st, src, jobs, njobs, report, started, err);
    }
    for (size_t i = 0; i < njobs; i++)
        table_job_free(&jobs[i]);
    set_phase(opt, SYNC_PHASE_IDLE);
    return ok;
}

bool sync_reset_watermarks(store *st, const cfg_source *src, ds_error *err)
{
    char names[2][160];
    size_t n = sync_table_names(src, names);
    const char *tables[2] = {names[0], names[1]};
    duckdb_connection con;
    if (!store_connect(st, &con, err))
        return false;
    pthread_mutex_lock(&st->commit_lock);
    bool ok = store_clear_watermarks(con, tables, n, err);
    pthread_mutex_unlock(&st->commit_lock);
    duckdb_disconnect(&con);
    return ok;
}

bool sync_cleanup_staging(store *st, const cfg_config *cfg, ds_error *err)
{
    duckdb_connection con;
    if (!store_connect(st, &con, err))
        return false;
    bool ok = true;
    for (size_t s = 0; ok && s < cfg->n_sources; s++) {
        char names[2][160];
        size_t n = sync_table_names(&cfg->sources[s], names);
        for (size_t i = 0; ok && i < n; i++) {
            char staging[176];
            snprintf(staging, sizeof staging, "%.159s_staging", names[i]);
            char *q = store_quote_ident(staging);
            ok = store_execf(con, NULL, err, "DROP TABLE IF EXISTS %s", q);
            free(q);
        }
    }
    duckdb_disconnect(&con);
    return ok;
}
