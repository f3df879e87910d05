/* COPY stream → DuckDB insert: the glue between the decoder and the
 * store's streamed INSERT, with the row budget and live progress. */
#include "sync/pump.h"

#include <stdlib.h>
#include <string.h>

#include "sync/conns.h"

/* The producer behind one INSERT: pulls decoded rows from the PostgreSQL
 * stream, applies the shared row budget, and ends the statement after
 * batch_rows rows so each batch commits on its own. */
typedef struct pump_fill {
    pgsrc_stream stream;
    pgsrc_conn *pg;
    copy_decoder *dec;
    pump_next_copy_fn next; /* the series' next statement, NULL: a single one */
    void *next_ctx;
    _Atomic uint64_t *progress_bytes;
    pump_shared *shared;
    const sync_options *opt;
    uint64_t batch_rows, batch_left;
    uint64_t bytes_seen;      /* stream bytes already counted in the progress */
    bool capped_out;          /* budget exhausted: no more rows, whatever PostgreSQL has */
    const char *memory_limit; /* as configured, for messages */
    uint64_t limit;           /* memory_limit in bytes (0: unknown) */
    uint64_t batch_bytes;     /* a batch also ends past this many bytes of COPY data */
    uint64_t batch_start;     /* stream bytes when the batch began */
    uint64_t vector_rows;     /* rows of the current stretch of DUCKDB_VECTOR_ROWS rows */
    uint64_t vector_bytes;    /* and their bytes */
} pump_fill;

/* DuckDB holds a column's values of this many consecutive rows in memory at
 * once (one vector: its commit, checkpoint and every scan pin them all). */
#define DUCKDB_VECTOR_ROWS 2048
/* The share of memory_limit those values may take (the rest: the rows'
 * other columns, DuckDB's own buffers). */
#define VECTOR_SHARE_NUM 3
#define VECTOR_SHARE_DEN 4

static uint64_t vector_bytes_max(const pump_fill *f)
{
    return f->limit / VECTOR_SHARE_DEN * VECTOR_SHARE_NUM;
}

int64_t pump_copy_limit(pump_shared *shared)
{
    return shared->capped ? atomic_load(&shared->budget) + 1 : -1;
}

/* Takes up to n rows from the budget; returns how many were granted. */
static int64_t take_budget(pump_shared *shared, int64_t n)
{
    if (!shared->capped)
        return n;
    int64_t cur = atomic_load(&shared->budget), take;
    do {
        take = cur < n ? cur : n;
    } while (!atomic_compare_exchange_weak(&shared->budget, &cur, cur - take));
    return take;
}

static void count_progress(pump_fill *f, uint64_t rows)
{
    uint64_t bytes = f->stream.bytes_read - f->bytes_seen;
    f->bytes_seen = f->stream.bytes_read;
    atomic_fetch_add(&f->shared->rows, rows);
    atomic_fetch_add(&f->shared->bytes, bytes);
    sync_progress *pr = f->opt->progress;
    if (pr == NULL)
        return;
    atomic_fetch_add(&pr->rows, rows);
    atomic_fetch_add(&pr->table_rows[f->shared->slot], rows);
    atomic_fetch_add(&pr->table_bytes[f->shared->slot], bytes);
}

void pump_shared_forget(pump_shared *shared, const sync_options *opt)
{
    uint64_t rows = atomic_exchange(&shared->rows, 0);
    uint64_t bytes = atomic_exchange(&shared->bytes, 0);
    shared->wait.done_s = 0;
    if (shared->capped)
        atomic_fetch_add(&shared->budget, (int64_t)rows);
    sync_progress *pr = opt->progress;
    if (pr == NULL)
        return;
    atomic_fetch_sub(&pr->rows, rows);
    atomic_fetch_sub(&pr->bytes, bytes);
    atomic_fetch_sub(&pr->table_rows[shared->slot], rows);
    atomic_fetch_sub(&pr->table_bytes[shared->slot], bytes);
}

/* The error for rows DuckDB cannot hold within memory_limit: their size and
 * duckstore's key (DuckDB's own message advises its SET statement). */
static bool too_large(const pump_fill *f, uint64_t rows, uint64_t bytes, ds_error *err)
{
    uint64_t need_mb = bytes / VECTOR_SHARE_NUM * VECTOR_SHARE_DEN / 1000000 + 1;
    if (rows <= 1)
        return ds_error_set(err, DS_ERR_NOMEM,
                            "a row of %.1f MB does not fit DuckDB's memory_limit %s: raise memory_limit "
                            "in duckdb.yaml to at least %lluMB",
                            (double)bytes / 1e6, f->memory_limit, (unsigned long long)need_mb);
    return ds_error_set(err, DS_ERR_NOMEM,
                        "memory_limit %s is too small for these rows: %llu rows read in a stretch of %d "
                        "hold %.1f MB (the largest row %.1f MB), and DuckDB keeps the values of %d "
                        "consecutive rows of a column in memory at once; raise memory_limit in duckdb.yaml "
                        "to more than %d/%d of what %d such rows hold",
                        f->memory_limit, (unsigned long long)rows, DUCKDB_VECTOR_ROWS, (double)bytes / 1e6,
                        (double)f->stream.largest_row / 1e6, DUCKDB_VECTOR_ROWS, VECTOR_SHARE_DEN,
                        VECTOR_SHARE_NUM, DUCKDB_VECTOR_ROWS);
}

/* Counts a chunk into the current stretch of DUCKDB_VECTOR_ROWS rows and
 * refuses it when that stretch's values would take more than
 * vector_bytes_max: DuckDB would fail on them anyway, at the commit or in a
 * later checkpoint (which invalidates the open database). */
static bool check_vector_bytes(pump_fill *f, uint64_t rows, uint64_t bytes, ds_error *err)
{
    if (f->limit == 0 || rows == 0)
        return true;
    f->vector_rows += rows;
    f->vector_bytes += bytes;
    if (f->vector_bytes > vector_bytes_max(f))
        return too_large(f, f->vector_rows, f->vector_bytes, err);
    if (f->vector_rows >= DUCKDB_VECTOR_ROWS) {
        /* Chunks need not line up with DuckDB's vectors: carry the share
         * of this chunk past the boundary. */
        uint64_t over = f->vector_rows - DUCKDB_VECTOR_ROWS;
        f->vector_rows = over;
        f->vector_bytes = (uint64_t)((double)bytes * (double)over / (double)rows);
    }
    return true;
}

/* Rows per DuckDB row group (STORE_ROW_GROUP_SIZE in src/store/store.c). */
#define ROW_GROUP_ROWS 16384

/* A batch ends by bytes only while it is smaller than a row group and its
 * rows are so large that a row group of them would pass memory_limit:
 * DuckDB writes whole row groups of a batch to the file as they fill, and
 * commits a smaller batch through its WAL in one buffer. Ordinary rows
 * never end a batch early (each commit costs a checkpoint). */
static bool batch_full(const pump_fill *f)
{
    uint64_t bytes = f->stream.bytes_read - f->batch_start;
    uint64_t rows = f->batch_rows - f->batch_left;
    if (bytes < f->batch_bytes || rows == 0 || rows >= ROW_GROUP_ROWS)
        return false;
    return (double)bytes / (double)rows * ROW_GROUP_ROWS > (double)f->limit;
}

/* Opens the series' next COPY once the current one has ended; the stream
 * stays ended when none is left. Its byte and wait counts carry on, so
 * batches and progress see one stream. */
static bool next_copy(pump_fill *f, ds_error *err)
{
    if (!f->stream.ended || f->next == NULL)
        return true;
    bool nomem = false;
    char *sql = f->next(f->next_ctx, f->pg, &nomem);
    if (sql == NULL)
        return !nomem || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    pgsrc_stream prev = f->stream;
    pgsrc_stream_close(&f->stream);
    copy_decoder_restart(f->dec);
    bool ok = pgsrc_stream_open(&f->stream, f->pg, sql, f->dec, f->progress_bytes, err);
    free(sql);
    f->stream.bytes_read = prev.bytes_read;
    f->stream.largest_row = prev.largest_row;
    f->stream.wait = prev.wait;
    f->stream.chunk_bytes = prev.chunk_bytes;
    f->stream.row_bytes_max = prev.row_bytes_max;
    f->stream.keep = prev.keep;
    return ok;
}

/* A read that failed on a row past the size DuckDB could take says so
 * with duckstore's key. Returns false. */
static bool stream_failed(const pump_fill *f, ds_error *err)
{
    if (f->stream.row_bytes_max > 0 && f->stream.largest_row > f->stream.row_bytes_max)
        too_large(f, 1, f->stream.largest_row, err);
    return false;
}

static bool fill_rows(void *ctx, duckdb_data_chunk out, ds_error *err)
{
    pump_fill *f = ctx;
    if (!next_copy(f, err))
        return false;
    if (f->capped_out || f->stream.ended || f->batch_left == 0 || batch_full(f)) {
        duckdb_data_chunk_set_size(out, 0);
        return true;
    }
    if (sync_cancelled(f->opt))
        return ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    if (atomic_load_explicit(&f->shared->abandon, memory_order_relaxed))
        return ds_error_set(err, DS_ERR_RESTART, "the read starts again in ranges");
    uint64_t before = f->stream.bytes_read;
    bool filled = pgsrc_stream_fill(&f->stream, out, err);
    /* A COPY that ended on a chunk boundary leaves it empty: the next one
     * of a series fills it (an empty chunk would end the INSERT). */
    while (filled && duckdb_data_chunk_get_size(out) == 0 && f->stream.ended && f->next != NULL) {
        if (!next_copy(f, err))
            return false;
        if (f->stream.ended)
            break;
        filled = pgsrc_stream_fill(&f->stream, out, err);
    }
    if (!filled)
        return stream_failed(f, err);
    int64_t n = (int64_t)duckdb_data_chunk_get_size(out);
    if (!check_vector_bytes(f, (uint64_t)n, f->stream.bytes_read - before, err))
        return false;
    int64_t take = take_budget(f->shared, n);
    if (take < n) {
        atomic_store(&f->shared->truncated, true);
        f->capped_out = true;
        duckdb_data_chunk_set_size(out, (idx_t)take);
    }
    f->batch_left = (uint64_t)take >= f->batch_left ? 0 : f->batch_left - (uint64_t)take;
    count_progress(f, (uint64_t)take);
    return true;
}

/* A chunk's values live outside DuckDB's memory_limit until they are
 * stored: a chunk takes a sixteenth of it in COPY data (one row at least,
 * however large). A batch's commit serializes its rows for the WAL, in a
 * buffer outside the limit too, unless the batch fills whole row groups
 * (DuckDB then writes them to the file as they fill): a quarter of the
 * limit per batch keeps that buffer small. */
#define CHUNK_SHARE 16
#define BATCH_SHARE 4
#define DEFAULT_CHUNK_BYTES (4u << 20)

static copy_decoder *decoder_for(const pgsrc_desc *desc)
{
    pgsrc_type *types = malloc((desc->ncols ? desc->ncols : 1) * sizeof *types);
    if (types == NULL)
        return NULL;
    for (size_t i = 0; i < desc->ncols; i++)
        types[i] = desc->cols[i].type;
    copy_decoder *dec = copy_decoder_new(types, desc->ncols);
    free(types);
    return dec;
}

/* A series of one statement. */
typedef struct one_copy {
    char *sql;
} one_copy;

static char *take_one(void *ctx, pgsrc_conn *pg, bool *nomem)
{
    (void)pg;
    (void)nomem;
    one_copy *one = ctx;
    char *sql = one->sql;
    one->sql = NULL;
    return sql;
}

bool pump_copy_into(store *st, const cfg_config *cfg, const char *table_ref, pgsrc_conn *pg,
                    const pgsrc_desc *desc, const char *copy_sql, pump_shared *shared,
                    const sync_options *opt, ds_error *err)
{
    if (copy_sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    one_copy one = {.sql = strdup(copy_sql)};
    if (one.sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    bool ok = pump_copy_series(st, cfg, table_ref, pg, desc, take_one, &one, shared, opt, err);
    free(one.sql);
    return ok;
}

/* A quiet incremental read of one statement: the COPY's rows, read ahead
 * up to the kept rows' cap, are all its rows and all stored already (or
 * none). Then the stream is
 * ended and counted without DuckDB: no connection, staging table or
 * insert (a quiet sync's largest cost after the round trips). */
static bool skip_stored(pump_fill *f, bool *skipped, ds_error *err)
{
    pump_shared *shared = f->shared;
    pgsrc_kept_rows *keep = f->stream.keep;
    *skipped = false;
    if (shared->stored_already == NULL || keep == NULL || shared->capped)
        return true;
    if (!pgsrc_stream_prefetch(&f->stream, keep->max + 1, err))
        return stream_failed(f, err);
    if (!pgsrc_stream_prefetched_all(&f->stream) || keep->over)
        return true;
    uint64_t rows = pgsrc_kept_rows_count(keep);
    if (rows > 0 && !shared->stored_already(shared->ctx))
        return true;
    if (!pgsrc_stream_skip(&f->stream, err))
        return false;
    count_progress(f, rows);
    *skipped = shared->skipped = true;
    return true;
}

bool pump_copy_series(store *st, const cfg_config *cfg, const char *table_ref, pgsrc_conn *pg,
                      const pgsrc_desc *desc, pump_next_copy_fn next, void *next_ctx, pump_shared *shared,
                      const sync_options *opt, ds_error *err)
{
    duckdb_connection duck = NULL;
    copy_decoder *dec = decoder_for(desc);
    double limit = store_size_bytes(cfg->store.memory_limit);
    pump_fill f = {.shared = shared,
                   .opt = opt,
                   .batch_rows = (uint64_t)cfg->store.sync_chunk_size,
                   .memory_limit = cfg->store.memory_limit ? cfg->store.memory_limit : "",
                   .limit = limit > 0 ? (uint64_t)limit : 0};
    f.pg = pg;
    f.dec = dec;
    f.next = next;
    f.next_ctx = next_ctx;
    f.progress_bytes = opt->progress ? &opt->progress->bytes : NULL;
    /* The first statement opens as the next of a stream that has ended. */
    f.stream.ended = true;
    f.stream.chunk_bytes = f.limit > 0 ? f.limit / CHUNK_SHARE : DEFAULT_CHUNK_BYTES;
    f.stream.row_bytes_max = vector_bytes_max(&f);
    f.stream.keep = shared->keep;
    f.stream.wait = &shared->wait;
    f.batch_bytes = f.limit > 0 ? f.limit / BATCH_SHARE : UINT64_MAX;
    bool ok = dec != NULL || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    /* One INSERT per batch; a COPY that ended with a batch leaves the
     * series' next one to open. */
    bool first = true, skipped = false;
    while (ok && !f.capped_out && (ok = next_copy(&f, err)) && !f.stream.ended) {
        if (first) {
            first = false;
            if (!(ok = skip_stored(&f, &skipped, err)) || skipped)
                break;
            ok = store_connect_kept(st, &duck, err) &&
                 (shared->before_insert == NULL || shared->before_insert(shared->ctx, duck, err));
            if (!ok)
                break;
        }
        f.batch_left = f.batch_rows;
        f.batch_start = f.stream.bytes_read;
        ok = store_insert_stream(st, duck, table_ref, fill_rows, &f, err);
    }
    pgsrc_stream_close(&f.stream);
    copy_decoder_free(dec);
    if (duck != NULL)
        store_disconnect_kept(st, &duck, ok);
    if (!ok && sync_cancelled(opt))
        ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    return ok;
}
