/* Logical capture of one source (see capture.h). */
#include "cdc/capture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "cdc/apply.h"
#include "cdc/spool.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "source/pgoutput.h"
#include "source/publication.h"
#include "source/replication.h"
#include "store/tables.h"
#include "sync/capture_check.h"

/* A batch commits once its first change is this old, or sooner when the
 * stream has nothing more to send; and within a transaction once this much
 * is queued (the DuckDB transaction stays open until its commit). */
#define BATCH_WINDOW_S 0.05
#define BATCH_MAX_CHANGES 100000
#define BATCH_MAX_BYTES (32u << 20)
/* Unprompted standby status updates keep the walsender from timing out. */
#define FEEDBACK_EVERY_S 10.0
/* The longest WAL page header (a segment's first page: SizeOfXLogLongPHD). */
#define WAL_PAGE_HEADER_MAX 40u
#define PG_EPOCH_UNIX_US 946684800000000LL

static int64_t now_unix_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* ---- the state kept in the DuckDB file ---- */

/* _duckstore.capture is created with the store's other tables (store.c). */

typedef struct capture_state {
    bool found;
    char slot[CFG_PG_NAME_CAP];
    uint64_t lsn;
    char *relations; /* the tables' column signature at the load */
} capture_state;

static bool load_state(duckdb_connection duck, const cfg_source *src, capture_state *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    char *lit = ds_quote_literal(src->name);
    if (lit == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    char *row = NULL;
    bool ok = store_query_textf(duck, &row, err,
                                "SELECT slot || chr(10) || lsn || chr(10) || coalesce(relations, '') FROM "
                                "_duckstore.capture WHERE source = %s",
                                lit);
    free(lit);
    if (!ok || row == NULL) {
        free(row);
        return ok;
    }
    char *nl1 = strchr(row, '\n');
    char *nl2 = nl1 ? strchr(nl1 + 1, '\n') : NULL;
    if (nl1 && nl2) {
        *nl1 = *nl2 = '\0';
        snprintf(out->slot, sizeof out->slot, "%s", row);
        out->found = pgo_lsn_parse(nl1 + 1, &out->lsn);
        out->relations = strdup(nl2 + 1);
    }
    free(row);
    return true;
}

static bool save_state(duckdb_connection duck, const cfg_source *src, uint64_t lsn, const char *relations,
                       int64_t last_commit_us, uint64_t server_lsn, ds_error *err)
{
    char lsn_text[24], server_text[24];
    pgo_lsn_format(lsn, lsn_text);
    pgo_lsn_format(server_lsn > lsn ? server_lsn : lsn, server_text);
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "DELETE FROM _duckstore.capture WHERE source = ");
    ds_buf_append_literal(&b, src->name);
    ds_buf_append(&b, "; INSERT INTO _duckstore.capture VALUES (");
    ds_buf_append_literal(&b, src->name);
    ds_buf_append(&b, ", ");
    ds_buf_append_literal(&b, src->slot_name);
    ds_buf_append(&b, ", ");
    ds_buf_append_literal(&b, lsn_text);
    ds_buf_append(&b, ", ");
    if (relations)
        ds_buf_append_literal(&b, relations);
    else
        ds_buf_append(&b, "(SELECT relations FROM _duckstore.capture WHERE false)");
    if (last_commit_us > 0)
        ds_buf_appendf(&b, ", make_timestamptz(%lld::BIGINT), ", (long long)last_commit_us);
    else
        ds_buf_append(&b, ", NULL, ");
    ds_buf_append_literal(&b, server_text);
    ds_buf_append(&b, ", current_timestamp)");
    char *sql = ds_buf_take_or_err(&b, err);
    bool ok = sql != NULL && store_exec(duck, sql, err);
    free(sql);
    return ok;
}

/* The stream's state rows keep their relations signature: only the LSN,
 * times and server position move. */
static bool advance_state(duckdb_connection duck, const cfg_source *src, uint64_t lsn, int64_t last_commit_us,
                          uint64_t server_lsn, ds_error *err)
{
    char lsn_text[24], server_text[24];
    pgo_lsn_format(lsn, lsn_text);
    pgo_lsn_format(server_lsn > lsn ? server_lsn : lsn, server_text);
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "UPDATE _duckstore.capture SET lsn = ");
    ds_buf_append_literal(&b, lsn_text);
    ds_buf_append(&b, ", server_lsn = ");
    ds_buf_append_literal(&b, server_text);
    if (last_commit_us > 0)
        ds_buf_appendf(&b, ", last_commit_at = make_timestamptz(%lld::BIGINT)", (long long)last_commit_us);
    ds_buf_append(&b, ", updated_at = current_timestamp WHERE source = ");
    ds_buf_append_literal(&b, src->name);
    char *sql = ds_buf_take_or_err(&b, err);
    bool ok = sql != NULL && store_exec(duck, sql, err);
    free(sql);
    return ok;
}

bool capture_reset(store *st, const cfg_source *src, ds_error *err)
{
    duckdb_connection duck;
    store_use_begin(st);
    bool ok = store_connect(st, &duck, err);
    if (ok) {
        char *lit = ds_quote_literal(src->name);
        store_commit_lock(st);
        ok = lit != NULL &&
             store_execf(duck, NULL, err, "DELETE FROM _duckstore.capture WHERE source = %s", lit);
        store_commit_unlock(st);
        free(lit);
        duckdb_disconnect(&duck);
    }
    store_use_end(st);
    return ok;
}

/* ---- what the source reads ---- */

typedef struct capture_source {
    const cfg_source *src;
    pgsrc_desc desc[CFG_MAX_QUERIES];
    capture_table tables[CFG_MAX_QUERIES];
    size_t n;
    char *relations; /* each table's columns (name, type, typmod) as the catalog has them now */
    /* apply specs and the arrays they borrow */
    cdc_target_spec specs[CFG_MAX_QUERIES];
    const char **key_target[CFG_MAX_QUERIES];
    const char **plain_source[CFG_MAX_QUERIES];
    const char **plain_target[CFG_MAX_QUERIES];
} capture_source;

static void capture_source_free(capture_source *cs)
{
    for (size_t i = 0; i < cs->n; i++) {
        pgsrc_desc_free(&cs->desc[i]);
        capture_table_free(&cs->tables[i]);
        free(cs->key_target[i]);
        free(cs->plain_source[i]);
        free(cs->plain_target[i]);
    }
    free(cs->relations);
    memset(cs, 0, sizeof *cs);
}

/* How the applier keys, fills and evaluates the rows of plan i. */
static bool build_spec(capture_source *cs, size_t i, ds_error *err)
{
    const cfg_query_plan *plan = &cs->src->plans[i];
    const capture_table *t = &cs->tables[i];
    const pgsrc_desc *d = &cs->desc[i];
    cs->key_target[i] = calloc(t->nkey ? t->nkey : 1, sizeof(char *));
    cs->plain_source[i] = calloc(d->ncols ? d->ncols : 1, sizeof(char *));
    cs->plain_target[i] = calloc(d->ncols ? d->ncols : 1, sizeof(char *));
    if (!cs->key_target[i] || !cs->plain_source[i] || !cs->plain_target[i])
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    size_t nplain = 0;
    for (size_t c = 0; c < d->ncols && c < t->ncols; c++) {
        if (t->source_col[c] == NULL)
            continue;
        cs->plain_source[i][nplain] = t->source_col[c];
        cs->plain_target[i][nplain++] = d->cols[c].name;
    }
    for (size_t k = 0; k < t->nkey; k++) {
        for (size_t p = 0; p < nplain && !cs->key_target[i][k]; p++)
            if (strcmp(cs->plain_source[i][p], t->key_cols[k]) == 0)
                cs->key_target[i][k] = cs->plain_target[i][p];
        if (cs->key_target[i][k] == NULL) {
            ds_error_set(err, DS_ERR_CONFIG,
                         "%s.%s has REPLICA IDENTITY FULL and the query does not select its column %s as it "
                         "is: the cache finds changed rows by every column; select them all, or give the "
                         "table a primary key and REPLICA IDENTITY DEFAULT",
                         t->nspname, t->relname, t->key_cols[k]);
            cfg_plan_error_prefix(cs->src, plan, -1, err);
            return false;
        }
    }
    const qt_single_table *shape = &plan->shape;
    cs->specs[i] = (cdc_target_spec){.table = plan->table,
                                     .select_list = shape->select_list,
                                     .alias = shape->alias ? shape->alias : shape->table,
                                     .where = shape->where,
                                     .key_cols = (const char *const *)t->key_cols,
                                     .key_target_cols = cs->key_target[i],
                                     .nkey = t->nkey,
                                     .whole_row = t->replident == 'f',
                                     .plain_source = cs->plain_source[i],
                                     .plain_target = cs->plain_target[i],
                                     .nplain = nplain};
    return true;
}

/* Each table's columns as the stream will describe them, with the
 * columns of its replica identity (every column for FULL) and the
 * identity's kind: a Relation message that says otherwise means the table
 * changed since the load. A changed key matters as much as a changed
 * column: the cache finds rows by the key it was loaded with, and a delete
 * that names another key would find nothing. */
static bool relations_signature(pgsrc_conn *pg, capture_source *cs, ds_error *err)
{
    ds_buf b = DS_BUF_INIT;
    for (size_t i = 0; i < cs->n; i++) {
        char sql[1024];
        snprintf(
            sql, sizeof sql,
            "SELECT coalesce(string_agg(a.attname || ' ' || a.atttypid || ' ' || a.atttypmod || CASE WHEN "
            "c.relreplident = 'f' OR a.attnum = ANY (ix.indkey::int2[]) THEN ' k' ELSE ' -' END, ',' "
            "ORDER BY a.attnum), '') || '/' || (SELECT relreplident::text FROM pg_class WHERE oid = %u) "
            "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid LEFT JOIN pg_index ix ON "
            "ix.indrelid = c.oid AND ((c.relreplident = 'd' AND ix.indisprimary) OR (c.relreplident = 'i' "
            "AND ix.indisreplident)) WHERE c.oid = %u AND a.attnum > 0 AND NOT a.attisdropped AND "
            "a.attgenerated = ''",
            cs->tables[i].relid, cs->tables[i].relid);
        char *cols = NULL;
        if (!pgsrc_query_value(pg, sql, &cols, err)) {
            ds_buf_free(&b);
            return false;
        }
        ds_buf_appendf(&b, "%s%u:%s", i ? ";" : "", cs->tables[i].relid, cols ? cols : "");
        free(cols);
    }
    cs->relations = ds_buf_take_or_err(&b, err);
    return cs->relations != NULL;
}

static bool describe_source(pgsrc_conn *pg, const cfg_source *src, capture_source *cs, ds_error *err)
{
    memset(cs, 0, sizeof *cs);
    cs->src = src;
    for (size_t i = 0; i < src->n_plans; i++) {
        const cfg_query_plan *plan = &src->plans[i];
        if (!pgsrc_describe(pg, plan->sql, &cs->desc[i], err)) {
            if (err->code == DS_ERR_CONFIG)
                cfg_plan_error_prefix(src, plan, cs->desc[i].error_at, err);
            pgsrc_desc_free(&cs->desc[i]);
            return false;
        }
        cs->n = i + 1;
        if (!capture_describe(pg, src, plan, &cs->desc[i], &cs->tables[i], err))
            return false;
        if (!build_spec(cs, i, err))
            return false;
    }
    return relations_signature(pg, cs, err);
}

/* The signature of one table from a Relation message, as
 * relations_signature writes it. */
static char *relation_signature(const pgo_relation *rel)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "%u:", rel->oid);
    for (size_t c = 0; c < rel->ncols; c++)
        ds_buf_appendf(&b, "%s%s %u %d %s", c ? "," : "", rel->cols[c].name, rel->cols[c].type_oid,
                       rel->cols[c].typmod, rel->cols[c].key ? "k" : "-");
    ds_buf_appendf(&b, "/%c", rel->replident);
    return ds_buf_take(&b);
}

static bool signature_known(const char *all, const char *one)
{
    size_t n = strlen(one);
    for (const char *p = all; p && *p;) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, one, n) == 0)
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

/* ---- the stream ---- */

typedef struct stream {
    store *st;
    const cfg_source *src;
    const capture_options *opt;
    capture_source *cs;
    pgsrc_conn *pg; /* catalog lookups */
    repl_conn *repl;
    duckdb_connection duck;
    cdc_applier *applier;
    pgo_parser parser;
    uint32_t relid_of[CFG_MAX_QUERIES];
    bool relation_seen[CFG_MAX_QUERIES];
    uint64_t applied_lsn; /* end of the last transaction committed to DuckDB */
    uint64_t pending_lsn; /* end of the last transaction applied to the open DuckDB transaction */
    int64_t pending_commit_us;
    bool in_xact, skip_xact, duck_open;
    double batch_started;
    size_t batch_xacts;
    uint64_t server_lsn;
    double last_feedback;
    double tables_checked; /* when the tables were last found still there */
    uint64_t changes;
    /* Protocol 2: the transaction whose changes a Stream Start ...
     * Stream Stop block carries (0 outside one), and what is kept of
     * every streamed transaction until it commits. */
    uint32_t stream_xid;
    cdc_spool *spool;
    double rows_counted;      /* when live->rows was last counted */
    const char *memory_limit; /* as configured, for messages */
    double marks_budget;      /* bytes of deletion marks before a checkpoint (0: no limit known) */
    uint64_t table_rows;      /* rows of the cached tables */
    double table_rows_at;     /* when table_rows was counted (0: never) */
    bool marks_told;          /* the log said marks may pass the budget */
} stream;

static int target_of(const stream *s, uint32_t relid)
{
    for (size_t i = 0; i < s->cs->n; i++)
        if (s->cs->tables[i].relid == relid)
            return (int)i;
    return -1;
}

/* The read plan of a column type the stream sends in binary: built-in
 * types as the COPY decoder reads them, enums as their label, domains as
 * their base type; anything else is kept as its bytes (it cannot be a
 * selected column: capture_describe refused that). */
static bool stream_column_type(stream *s, uint32_t oid, int32_t typmod, pgsrc_type *out, ds_error *err)
{
    if (pgtypes_map_builtin(oid, typmod, out))
        return true;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT typtype::text || ' ' || typbasetype || ' ' || typtypmod FROM pg_type WHERE oid = %u",
             oid);
    char *row = NULL;
    if (!pgsrc_query_value(s->pg, sql, &row, err))
        return false;
    char kind = 0;
    unsigned base = 0;
    int base_mod = -1;
    if (row != NULL)
        sscanf(row, "%c %u %d", &kind, &base, &base_mod);
    free(row);
    if (kind == 'e') {
        pgtypes_text_type(out);
        return true;
    }
    if (kind == 'd' && pgtypes_map_builtin(base, base_mod, out))
        return true;
    return pgtypes_map_builtin(17 /* bytea */, -1, out);
}

static bool on_relation(stream *s, const pgo_message *m, ds_error *err)
{
    int t = target_of(s, m->rel.oid);
    if (t < 0)
        return true; /* another table of a shared publication */
    char *sig = relation_signature(&m->rel);
    if (sig == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    bool known = signature_known(s->cs->relations, sig);
    free(sig);
    if (!known)
        return ds_error_set(err, DS_ERR_RELOAD, "the columns or the replica identity of %s.%s changed",
                            m->rel.nspname, m->rel.relname);
    pgsrc_type *types = calloc(m->rel.ncols ? m->rel.ncols : 1, sizeof *types);
    if (types == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    bool ok = true;
    for (size_t c = 0; ok && c < m->rel.ncols; c++)
        ok = stream_column_type(s, m->rel.cols[c].type_oid, m->rel.cols[c].typmod, &types[c], err);
    ok = ok && cdc_applier_relation(s->applier, (size_t)t, &m->rel, types, err);
    free(types);
    s->relation_seen[t] = ok;
    return ok;
}

static bool begin_duck(stream *s, ds_error *err)
{
    if (s->duck_open)
        return true;
    if (!store_exec(s->duck, "BEGIN TRANSACTION", err))
        return false;
    s->duck_open = true;
    s->batch_started = ds_monotonic_s();
    s->batch_xacts = 0;
    return true;
}

static bool send_feedback(stream *s, uint64_t lsn, bool reply, ds_error *err)
{
    s->last_feedback = ds_monotonic_s();
    return repl_send_feedback(s->repl, lsn, reply, err);
}

/* ---- deletion marks ----
 * DuckDB keeps the marks of deleted stored rows in memory until its next
 * checkpoint, allocated per row group in buffers of 256 KB: measured on
 * DuckDB 1.5 with 3.4M rows, one delete in each of 20 row groups held 5.4
 * MB, and deletes in every vector 53 MB (16 bytes a stored row, with
 * duckstore's row groups of 16,384 rows); a CHECKPOINT freed them. DuckDB
 * checkpoints by the WAL's size, which deletes hardly grow, so scattered
 * updates and deletes filled memory_limit with marks: at 64MB a catch-up
 * on a 3.4M-row table ran out of memory in its second batch. The stream
 * keeps the marks under three quarters of DuckDB's limit (the rest is the
 * batch's own work): a batch ends (between transactions) before they could
 * pass it, and a checkpoint follows. */
#define MARK_BYTES_PER_DELETE (272u << 10)
#define MARK_BYTES_PER_ROW 16u
#define MARKS_SHARE 0.75
#define ROWS_RECOUNT_S 10.0

/* Three quarters of DuckDB's memory limit as it is set (memory_limit,
 * plus read_memory_limit in serve). */
static void set_marks_budget(stream *s)
{
    char *limit = NULL;
    ds_error ignored;
    if (store_query_text(s->duck, "SELECT current_setting('memory_limit')", &limit, &ignored)) {
        double bytes = store_size_bytes(limit);
        s->marks_budget = bytes > 0 ? bytes * MARKS_SHARE : 0;
    }
    free(limit);
}

static void count_table_rows(stream *s)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b,
                  "SELECT coalesce(sum(estimated_size), 0)::BIGINT FROM duckdb_tables() "
                  "WHERE database_name = current_database() AND schema_name = 'main' AND table_name IN (");
    for (size_t i = 0; i < s->cs->n; i++) {
        ds_buf_append(&b, i ? ", " : "");
        ds_buf_append_literal(&b, s->cs->specs[i].table);
    }
    ds_buf_append(&b, ")");
    ds_error ignored;
    char *sql = ds_buf_take_or_err(&b, &ignored);
    int64_t rows = 0;
    if (sql != NULL && store_query_int(s->duck, sql, &rows, &ignored) && rows >= 0)
        s->table_rows = (uint64_t)rows;
    free(sql);
    s->table_rows_at = ds_monotonic_s();
    double all_marks = (double)s->table_rows * MARK_BYTES_PER_ROW;
    if (!s->marks_told && all_marks > s->marks_budget) {
        s->marks_told = true;
        /* Room for the table to grow by half, in whole 64MB steps. */
        double advice = ceil(all_marks * 1.5 / MARKS_SHARE / 64e6) * 64;
        ds_log_info("%s: updates and deletes across its %llu stored rows can hold up to %.0f MB of DuckDB's "
                    "deletion marks until a checkpoint, more than DuckDB's memory limit leaves them: batches "
                    "are kept smaller and checkpointed, which is slower; a memory_limit of %.0fMB in "
                    "duckdb.yaml applies them at full speed",
                    s->src->name, (unsigned long long)s->table_rows, all_marks / 1e6, advice);
    }
}

/* Whether the marks DuckDB may hold pass the budget: a row group's buffer
 * per deleted row at most, and at most every stored row's mark (when the
 * rows could be counted). */
static bool marks_over_budget(stream *s)
{
    double marks = (double)cdc_applier_removed(s->applier) * MARK_BYTES_PER_DELETE;
    if (s->marks_budget <= 0 || marks <= s->marks_budget)
        return false;
    if (s->table_rows_at == 0 || ds_monotonic_s() - s->table_rows_at >= ROWS_RECOUNT_S)
        count_table_rows(s);
    double all_marks = (double)s->table_rows * MARK_BYTES_PER_ROW;
    return (s->table_rows > 0 && all_marks < marks ? all_marks : marks) > s->marks_budget;
}

/* A checkpoint writes the marks to the file and frees them. One that
 * cannot run now is tried again after the next batch. */
static void checkpoint_marks(stream *s)
{
    double t0 = ds_monotonic_s();
    ds_error e = {0};
    if (store_exec(s->duck, "CHECKPOINT", &e)) {
        ds_log_debug("%s: checkpointed the deletion marks of %llu row(s) in %.1f ms", s->src->name,
                     (unsigned long long)cdc_applier_removed(s->applier), (ds_monotonic_s() - t0) * 1e3);
        cdc_applier_forget_removed(s->applier);
    } else {
        ds_log_debug("%s: no checkpoint of the deletion marks now: %s", s->src->name, e.msg);
    }
}

/* Commits the batch (whole transactions only) with the LSN it reached,
 * then confirms that LSN to PostgreSQL. */
static bool commit_batch(stream *s, ds_error *err)
{
    if (!s->duck_open)
        return true;
    double t0 = ds_monotonic_s();
    bool ok = cdc_applier_flush(s->applier, err);
    store_commit_lock(s->st);
    ok = ok && advance_state(s->duck, s->src, s->pending_lsn, s->pending_commit_us, s->server_lsn, err) &&
         store_exec(s->duck, "COMMIT", err);
    store_commit_unlock(s->st);
    if (!ok) {
        store_exec(s->duck, "ROLLBACK", NULL);
        s->duck_open = false;
        return false;
    }
    s->duck_open = false;
    s->applied_lsn = s->pending_lsn;
    if (marks_over_budget(s))
        checkpoint_marks(s);
    capture_live *live = s->opt->live;
    if (live) {
        atomic_store(&live->confirmed_lsn, s->applied_lsn);
        atomic_store(&live->last_commit_us, s->pending_commit_us);
        atomic_store(&live->changes, atomic_load(&live->changes) + s->changes);
        atomic_store(&live->transactions, atomic_load(&live->transactions) + s->batch_xacts);
    }
    /* The status's row count, at most once a second (a count of a view
     * that joins two tables is not free). */
    if (live && s->changes > 0 && ds_monotonic_s() - s->rows_counted >= 1.0) {
        int64_t rows = -1;
        ds_error ignored;
        if (store_count_rows(s->duck, s->src->data_name, &rows, &ignored))
            atomic_store(&live->rows, rows);
        s->rows_counted = ds_monotonic_s();
    }
    ds_log_debug("%s: applied %zu transaction(s), %llu change(s) up to %llX in %.1f ms", s->src->name,
                 s->batch_xacts, (unsigned long long)s->changes, (unsigned long long)s->applied_lsn,
                 (ds_monotonic_s() - t0) * 1e3);
    s->changes = 0;
    return send_feedback(s, s->applied_lsn, false, err);
}

/* An Insert, Update, Delete or Truncate of a committed transaction. */
static bool on_change(stream *s, const pgo_message *m, ds_error *err)
{
    int t;
    bool ok = true;
    if (m->kind == PGO_TRUNCATE) {
        for (uint32_t r = 0; ok && r < m->nrelids; r++)
            if ((t = target_of(s, m->relids[r])) >= 0) {
                ok = cdc_applier_truncate(s->applier, (size_t)t, err);
                s->changes++;
            }
        return ok;
    }
    if ((t = target_of(s, m->relid)) < 0)
        return true; /* another table of a shared publication */
    ok = cdc_applier_change(s->applier, (size_t)t, m, err);
    s->changes++;
    if (ok && (cdc_applier_pending(s->applier) >= BATCH_MAX_CHANGES ||
               cdc_applier_pending_bytes(s->applier) >= BATCH_MAX_BYTES))
        ok = cdc_applier_flush(s->applier, err);
    return ok;
}

/* One kept message of a streamed transaction, at its commit. */
static bool replay_change(void *ctx, const char *msg, size_t len, ds_error *err)
{
    stream *s = ctx;
    pgo_parser p = {.in_stream = true};
    pgo_message m;
    if (!pgo_parse(&p, msg, len, &m, err))
        return false;
    bool ok = on_change(s, &m, err);
    pgo_message_clear(&m);
    return ok;
}

/* DuckDB's words for memory_limit reached, in a statement or at a commit
 * ("TransactionContext Error: Failed to commit: failed to pin block"). */
static bool out_of_memory(const ds_error *err)
{
    return strstr(err->msg, "Out of Memory Error") != NULL ||
           strstr(err->msg, "failed to pin block") != NULL ||
           strstr(err->msg, "could not allocate block") != NULL;
}

/* A transaction is applied whole, in one DuckDB transaction, and DuckDB
 * holds its changes until the commit: a large one can need more than
 * memory_limit (a 2 GB transaction of 13M changes: at 512MB, not 64MB). The
 * way out is the user's, and nothing is lost on the way: PostgreSQL sends
 * the transaction again from its start. */
static void explain_large_transaction(const stream *s, uint64_t kept, ds_error *err)
{
    if (!out_of_memory(err))
        return;
    char duckdb_says[256];
    snprintf(duckdb_says, sizeof duckdb_says, "%.*s", (int)strcspn(err->msg, "\n"), err->msg);
    ds_error_set(
        err, err->code,
        "a transaction of about %llu changes, which PostgreSQL streamed before its commit, does not fit "
        "memory_limit %s: duckstore applies a transaction whole, in one DuckDB transaction that holds "
        "its changes until its commit; raise memory_limit in duckdb.yaml (a 2 GB transaction of 13M "
        "changes was applied at 512MB, not at 64MB) and sync again: PostgreSQL sends the transaction again "
        "from its start, nothing is lost (%s)",
        (unsigned long long)kept, s->memory_limit ? s->memory_limit : "(DuckDB's default)", duckdb_says);
}

/* Any other batch DuckDB could not hold: DuckDB's own advice (SET
 * memory_limit) does not apply to duckstore, whose setting is in
 * duckdb.yaml. */
static void explain_out_of_memory(const stream *s, ds_error *err)
{
    if (!out_of_memory(err) || strstr(err->msg, "duckdb.yaml") != NULL)
        return;
    char duckdb_says[256];
    snprintf(duckdb_says, sizeof duckdb_says, "%.*s", (int)strcspn(err->msg, "\n"), err->msg);
    ds_error_set(err, err->code,
                 "DuckDB ran out of memory_limit %s applying a batch of changes; raise memory_limit in "
                 "duckdb.yaml and sync again: PostgreSQL sends the changes after the last applied commit "
                 "again, nothing is lost (%s)",
                 s->memory_limit ? s->memory_limit : "(DuckDB's default)", duckdb_says);
}

static void commit_seen(stream *s, const pgo_message *m)
{
    s->pending_lsn = m->end_lsn;
    s->pending_commit_us = m->time_us + PG_EPOCH_UNIX_US;
    s->batch_xacts++;
}

static bool on_message(stream *s, const char *payload, size_t len, ds_error *err)
{
    pgo_message m;
    if (!pgo_parse(&s->parser, payload, len, &m, err))
        return false;
    bool ok = true;
    switch (m.kind) {
    case PGO_BEGIN:
        s->in_xact = true;
        /* Transactions at or before the stored position were applied
         * already (a crash after the DuckDB commit, before the feedback). */
        s->skip_xact = m.final_lsn < s->applied_lsn;
        if (!s->skip_xact)
            ok = begin_duck(s, err);
        break;
    case PGO_COMMIT:
        s->in_xact = false;
        if (!s->skip_xact)
            commit_seen(s, &m);
        s->skip_xact = false;
        break;
    case PGO_RELATION:
        ok = on_relation(s, &m, err); /* also in a skipped transaction: it is sent once */
        break;
    case PGO_INSERT:
    case PGO_UPDATE:
    case PGO_DELETE:
    case PGO_TRUNCATE:
        if (s->stream_xid != 0)
            ok = cdc_spool_add(s->spool, s->stream_xid, m.xid ? m.xid : s->stream_xid, payload, len, err);
        else if (!s->skip_xact)
            ok = on_change(s, &m, err);
        break;
    case PGO_STREAM_START:
        s->stream_xid = m.xid;
        break;
    case PGO_STREAM_STOP:
        s->stream_xid = 0;
        break;
    case PGO_STREAM_ABORT:
        ok = cdc_spool_abort(s->spool, m.xid, m.subxid, err);
        break;
    case PGO_STREAM_COMMIT:
        /* The transaction commits here, in commit order: its kept changes
         * go into the batch (or away, when applied before a crash). */
        if (m.commit_lsn < s->applied_lsn) {
            ok = cdc_spool_abort(s->spool, m.xid, m.xid, err);
            break;
        }
        uint64_t kept = cdc_spool_count(s->spool);
        ok = begin_duck(s, err) && cdc_spool_replay(s->spool, m.xid, replay_change, s, err);
        if (ok)
            commit_seen(s, &m);
        else
            explain_large_transaction(s, kept, err);
        break;
    default:
        break; /* Origin, Type, Message */
    }
    pgo_message_clear(&m);
    return ok;
}

/* A table dropped (and perhaps created again under its name) sends nothing
 * more: its changes, and the new table's, would never arrive while the
 * stream runs on (a run that starts anew describes the table again and
 * loads it). So a running stream looks for its tables by id now and then. */
#define TABLES_CHECK_S 5.0

static bool tables_still_there(stream *s, ds_error *err)
{
    s->tables_checked = ds_monotonic_s();
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b,
                  "SELECT coalesce(string_agg(oid::text, ','), '') FROM pg_catalog.pg_class WHERE oid IN (");
    for (size_t i = 0; i < s->cs->n; i++)
        ds_buf_appendf(&b, "%s%u", i ? ", " : "", s->cs->tables[i].relid);
    ds_buf_append(&b, ")");
    char *sql = ds_buf_take_or_err(&b, err);
    char *found = NULL;
    bool ok = sql != NULL && pgsrc_query_value(s->pg, sql, &found, err);
    free(sql);
    /* ",id,id," so that each id is looked for whole. */
    ds_buf ids = DS_BUF_INIT;
    ds_buf_appendf(&ids, ",%s,", found ? found : "");
    for (size_t i = 0; ok && i < s->cs->n; i++) {
        char needle[24];
        snprintf(needle, sizeof needle, ",%u,", s->cs->tables[i].relid);
        if (ds_buf_str(&ids) == NULL)
            ok = ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        else if (strstr(ds_buf_str(&ids), needle) == NULL)
            ok = ds_error_set(err, DS_ERR_RELOAD, "table %s was dropped (or dropped and created again)",
                              s->cs->tables[i].qualified);
    }
    ds_buf_free(&ids);
    free(found);
    return ok;
}

static bool cancelled(const stream *s)
{
    return s->opt->cancel != NULL && atomic_load(&s->opt->cancel->requested);
}

/* Reads and applies the stream until cancelled (follow) or until it has
 * caught up with target (the WAL position when the run started). */
static bool stream_changes(stream *s, uint64_t start, uint64_t target, ds_error *err)
{
    if (!repl_start(s->repl, s->src->slot_name, s->src->publication_name, start, 2, err))
        return false;
    capture_live *live = s->opt->live;
    if (live)
        atomic_store(&live->streaming, true);
    bool ok = true;
    s->last_feedback = ds_monotonic_s();
    bool asked = false;
    while (ok) {
        if (cancelled(s)) {
            if (!s->in_xact)
                ok = commit_batch(s, err);
            break;
        }
        if (live && atomic_exchange(&live->reload_requested, false)) {
            ok = ds_error_set(err, DS_ERR_RELOAD, "a full load was asked for");
            break;
        }
        if (!s->in_xact && ds_monotonic_s() - s->tables_checked >= TABLES_CHECK_S &&
            !tables_still_there(s, err)) {
            ok = false;
            break;
        }
        bool caught_up = !s->in_xact && (s->applied_lsn >= target || s->server_lsn >= target);
        if (!s->opt->follow && caught_up && !s->duck_open)
            break;
        double wait = 0.5;
        if (s->duck_open && !s->in_xact) {
            wait = BATCH_WINDOW_S - (ds_monotonic_s() - s->batch_started);
            /* A batch also ends before its deletion marks could pass the
             * budget (a transaction is never cut). */
            if (wait <= 0 || marks_over_budget(s)) {
                ok = commit_batch(s, err);
                continue;
            }
        }
        const char *payload = NULL;
        size_t len = 0;
        uint64_t wal_start = 0;
        bool reply = false;
        repl_event ev = repl_next(s->repl, wait, &payload, &len, &wal_start, &reply, err);
        if (s->repl->server_wal_end > s->server_lsn)
            s->server_lsn = s->repl->server_wal_end;
        if (live)
            atomic_store(&live->server_lsn, s->server_lsn);
        switch (ev) {
        case REPL_DATA:
            if (live)
                atomic_store(&live->idle_since_us, 0);
            ok = on_message(s, payload, len, err);
            break;
        case REPL_KEEPALIVE:
        case REPL_TIMEOUT:
            /* Nothing in flight: everything up to the server's position is
             * applied or of no concern, so the slot may move there and
             * PostgreSQL need not keep that WAL for duckstore. */
            if (!s->in_xact && !s->duck_open && s->stream_xid == 0) {
                if (live && atomic_load(&live->idle_since_us) == 0)
                    atomic_store(&live->idle_since_us, now_unix_us());
                if (s->server_lsn > s->applied_lsn && ev == REPL_KEEPALIVE) {
                    s->applied_lsn = s->server_lsn;
                    s->pending_lsn = s->server_lsn;
                    if (live)
                        atomic_store(&live->confirmed_lsn, s->applied_lsn);
                    /* Confirmed at once: the server then reports its next
                     * position as soon as it has one. */
                    reply = true;
                }
            }
            if (s->duck_open && !s->in_xact && ev == REPL_TIMEOUT) {
                ok = commit_batch(s, err);
                break;
            }
            /* Catching up: ask for the server's position when idle. */
            if (ev == REPL_TIMEOUT && !s->opt->follow && !asked) {
                ok = send_feedback(s, s->applied_lsn, true, err);
                asked = true;
            } else if (reply || ds_monotonic_s() - s->last_feedback >= FEEDBACK_EVERY_S) {
                ok = send_feedback(s, s->applied_lsn, false, err);
            }
            if (ev == REPL_KEEPALIVE)
                asked = false;
            break;
        case REPL_END:
        case REPL_ERROR:
            ok = false;
            break;
        }
    }
    if (s->duck_open) {
        store_exec(s->duck, "ROLLBACK", NULL);
        s->duck_open = false;
    }
    if (!ok)
        explain_out_of_memory(s, err);
    if (live)
        atomic_store(&live->streaming, false);
    /* The position the stored state says, so a restart meets it. */
    if (ok && s->applied_lsn > start) {
        store_commit_lock(s->st);
        ds_error ignored;
        store_exec(s->duck, "BEGIN TRANSACTION", &ignored);
        bool saved = advance_state(s->duck, s->src, s->applied_lsn, 0, s->server_lsn, &ignored) &&
                     store_exec(s->duck, "COMMIT", &ignored);
        if (!saved)
            store_exec(s->duck, "ROLLBACK", NULL);
        store_commit_unlock(s->st);
    }
    ds_error ignored;
    repl_stop(s->repl, &ignored);
    return ok;
}

/* ---- the run ---- */

uint64_t capture_stream_target(uint64_t insert_lsn, uint64_t page_size)
{
    uint64_t offset = page_size > 0 ? insert_lsn % page_size : 0;
    return offset <= WAL_PAGE_HEADER_MAX ? insert_lsn - offset : insert_lsn;
}

typedef struct load_ctx {
    const cfg_source *src;
    uint64_t lsn;
    const char *relations;
} load_ctx;

static bool write_load_state(duckdb_connection duck, void *arg, ds_error *err)
{
    load_ctx *ctx = arg;
    return save_state(duck, ctx->src, ctx->lsn, ctx->relations, 0, 0, err);
}

/* Drops the slot and creates it again with an exported snapshot, then
 * loads every table on that snapshot and stores the slot's start in the
 * load's commit. */
static bool load(store *st, const cfg_config *cfg, const cfg_source *src, const capture_options *opt,
                 pgsrc_conn *pg, repl_conn *repl, capture_source *cs, uint64_t *start, sync_report *report,
                 ds_error *err)
{
    pub_slot slot;
    if (!pub_slot_info(pg, src->slot_name, &slot, err))
        return false;
    if (slot.exists && !pub_drop_slot(pg, src->slot_name, err))
        return false;
    char *snapshot = NULL;
    if (!repl_create_slot(repl, src->slot_name, start, &snapshot, err))
        return false;
    load_ctx ctx = {.src = src, .lsn = *start, .relations = cs->relations};
    sync_options so = {.force_full = true,
                       .cancel = opt->cancel,
                       .progress = opt->progress,
                       .snapshot = snapshot,
                       .commit_hook = write_load_state,
                       .commit_ctx = &ctx};
    bool ok = sync_source(st, cfg, src, &so, report, err);
    free(snapshot);
    if (ok && opt->loaded != NULL)
        opt->loaded(opt->loaded_ctx);
    if (!ok) {
        /* A slot nothing reads from would keep WAL: the next run makes a new one. */
        ds_error ignored;
        pgsrc_exec(pg, "SELECT 1", &ignored);
        pub_drop_slot(pg, src->slot_name, &ignored);
    }
    return ok;
}

static bool reload_reason(const pub_slot *slot, const capture_state *state, const capture_source *cs,
                          const capture_options *opt, const char **why)
{
    *why = NULL;
    if (opt->force_full)
        *why = "a full load was asked for";
    else if (!state->found)
        *why = "nothing was loaded from its slot yet";
    else if (!slot->exists)
        *why = "its replication slot is gone (dropped, or lost in a failover)";
    else if (strcmp(slot->wal_status, "lost") == 0)
        *why = "PostgreSQL invalidated its replication slot (max_slot_wal_keep_size)";
    else if (state->relations == NULL || strcmp(state->relations, cs->relations) != 0)
        *why = "the columns or the replica identity of its tables changed";
    return *why != NULL;
}

static bool run_once(store *st, const cfg_config *cfg, const cfg_source *src, const capture_options *opt,
                     bool force, sync_report *report, ds_error *err)
{
    capture_options o = *opt;
    o.force_full = force;
    pgsrc_conn pg;
    if (!pgsrc_connect(src->url, src->query_timeout_s, &pg, err))
        return false;
    pgsrc_set_log_name(&pg, src->name);
    capture_source cs;
    bool ok = describe_source(&pg, src, &cs, err);
    const char *tables[CFG_MAX_QUERIES];
    for (size_t i = 0; i < cs.n; i++)
        tables[i] = cs.tables[i].qualified;
    ok = ok && pub_ensure(&pg, src->publication_name, src->publication_owned, tables, cs.n, err);
    duckdb_connection duck = NULL;
    capture_state state = {0};
    pub_slot slot = {0};
    store_use_begin(st);
    ok = ok && store_connect(st, &duck, err) && load_state(duck, src, &state, err) &&
         pub_slot_info(&pg, src->slot_name, &slot, err);
    repl_conn repl = {0};
    ok = ok && repl_connect(src->url, src->query_timeout_s, &repl, err);
    uint64_t start = state.lsn;
    const char *why = NULL;
    if (ok && reload_reason(&slot, &state, &cs, &o, &why)) {
        ds_log_info("%s: loading in full from a new replication slot %s: %s", src->name, src->slot_name, why);
        ok = load(st, cfg, src, &o, &pg, &repl, &cs, &start, report, err);
    }
    char *target_text = NULL;
    uint64_t target = 0;
    /* The insert position: with synchronous_commit off a commit can be
     * past the written one (pg_current_wal_lsn) for a moment. When the last
     * record ended at a page's end (after a WAL switch, say), that position
     * is past the next page's header, which no record fills and the stream
     * never reaches: a sync waited there for unrelated WAL (seconds on an
     * idle server). So the target is that page's start. */
    ok =
        ok && pgsrc_query_value(
                  &pg, "SELECT pg_current_wal_insert_lsn()::text || ' ' || current_setting('wal_block_size')",
                  &target_text, err);
    char *space = ok && target_text != NULL ? strchr(target_text, ' ') : NULL;
    if (space != NULL)
        *space = '\0';
    ok = ok && space != NULL && pgo_lsn_parse(target_text, &target);
    if (ok)
        target = capture_stream_target(target, strtoull(space + 1, NULL, 10));
    free(target_text);
    if (ok) {
        stream s = {.st = st,
                    .src = src,
                    .opt = &o,
                    .cs = &cs,
                    .pg = &pg,
                    .repl = &repl,
                    .duck = duck,
                    .applied_lsn = start,
                    .pending_lsn = start,
                    .memory_limit = cfg->store.memory_limit};
        set_marks_budget(&s);
        s.applier = cdc_applier_new(duck, cs.specs, cs.n);
        ok = s.applier != NULL || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        ok = ok && (s.spool = cdc_spool_new(st, err)) != NULL;
        if (o.live)
            atomic_store(&o.live->confirmed_lsn, start);
        if (ok) {
            ok = stream_changes(&s, start, target, err);
            report->rows_added += (int64_t)cdc_applier_applied(s.applier);
        }
        cdc_applier_free(s.applier);
        cdc_spool_free(s.spool);
        /* A failed batch may leave the file ahead of what DuckDB holds. */
        if (!ok && err->code == DS_ERR_STORE)
            store_mark_suspect(st);
    }
    if (ok)
        store_count_rows(duck, src->data_name, &report->rows, NULL);
    repl_disconnect(&repl);
    if (duck)
        duckdb_disconnect(&duck);
    store_use_end(st);
    free(state.relations);
    capture_source_free(&cs);
    pgsrc_disconnect(&pg);
    return ok;
}

bool capture_run(store *st, const cfg_config *cfg, const cfg_source *src, const capture_options *opt,
                 sync_report *report, ds_error *err)
{
    memset(report, 0, sizeof *report);
    double started = ds_monotonic_s();
    bool ok = run_once(st, cfg, src, opt, opt->force_full, report, err);
    if (!ok && err->code == DS_ERR_RELOAD) {
        ds_log_warn("%s: loading in full from a new replication slot: %s", src->name, err->msg);
        ds_error_clear(err);
        ok = run_once(st, cfg, src, opt, true, report, err);
    }
    if (!ok)
        ds_error_prefix(err, "%s: ", src->name);
    report->duration_s = ds_monotonic_s() - started;
    return ok;
}

/* ---- status ---- */

void capture_status_add(store *st, const cfg_source *src, const capture_live *live, json_t *doc)
{
    json_object_set_new(doc, "capture", json_string(cfg_capture_name(src->capture)));
    json_object_set_new(doc, "slot", json_string(src->slot_name));
    uint64_t confirmed = 0, server = 0;
    int64_t last_commit_us = 0, idle_since_us = 0;
    bool known = false;
    if (live != NULL) {
        /* The running stream's (no DuckDB access: callers may hold locks). */
        confirmed = atomic_load(&live->confirmed_lsn);
        server = atomic_load(&live->server_lsn);
        last_commit_us = atomic_load(&live->last_commit_us);
        idle_since_us = atomic_load(&live->idle_since_us);
        known = confirmed != 0;
    } else {
        duckdb_connection duck;
        ds_error err;
        if (store_borrow(st, &duck, &err)) {
            char *lit = ds_quote_literal(src->name);
            char *row = NULL;
            if (lit &&
                store_query_textf(duck, &row, &err,
                                  "SELECT lsn || ' ' || coalesce(server_lsn, lsn) || ' ' || "
                                  "coalesce(epoch_us(last_commit_at), 0) FROM _duckstore.capture "
                                  "WHERE source = %s",
                                  lit) &&
                row != NULL) {
                char a[32] = "", b[32] = "";
                long long c = 0;
                if (sscanf(row, "%31s %31s %lld", a, b, &c) == 3 && pgo_lsn_parse(a, &confirmed) &&
                    pgo_lsn_parse(b, &server)) {
                    last_commit_us = c;
                    known = true;
                }
            }
            free(row);
            free(lit);
            store_release(st, &duck);
        }
    }
    if (!known) {
        json_object_set_new(doc, "confirmed_lsn", json_null());
        json_object_set_new(doc, "lag_bytes", json_null());
        json_object_set_new(doc, "lag_seconds", json_null());
        return;
    }
    char text[24];
    pgo_lsn_format(confirmed, text);
    json_object_set_new(doc, "confirmed_lsn", json_string(text));
    if (live != NULL && atomic_load(&live->rows) >= 0 && json_object_get(doc, "rows") != NULL)
        json_object_set_new(doc, "rows", json_integer(atomic_load(&live->rows)));
    int64_t lag = server > confirmed ? (int64_t)(server - confirmed) : 0;
    json_object_set_new(doc, "lag_bytes", json_integer(lag));
    /* Caught up: no lag. Behind: the age of the last change applied (the
     * changes waiting are at least that much newer). */
    double seconds = 0;
    if (lag > 0 && idle_since_us == 0 && last_commit_us > 0)
        seconds = (double)(now_unix_us() - last_commit_us) / 1e6;
    json_object_set_new(doc, "lag_seconds", json_real(seconds < 0 ? 0 : seconds));
}
