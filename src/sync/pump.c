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
    pump_shared *shared;
    const sync_options *opt;
    uint64_t batch_rows, batch_left;
    uint64_t bytes_seen; /* stream bytes already counted in the progress */
    bool capped_out;     /* budget exhausted: no more rows, whatever PostgreSQL has */
} pump_fill;

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
    atomic_fetch_add(&f->shared->rows, rows);
    sync_progress *pr = f->opt->progress;
    if (pr == NULL)
        return;
    atomic_fetch_add(&pr->rows, rows);
    atomic_fetch_add(&pr->table_rows[f->shared->slot], rows);
    atomic_fetch_add(&pr->table_bytes[f->shared->slot], f->stream.bytes_read - f->bytes_seen);
    f->bytes_seen = f->stream.bytes_read;
}

static bool fill_rows(void *ctx, duckdb_data_chunk out, ds_error *err)
{
    pump_fill *f = ctx;
    if (f->capped_out || f->stream.ended || f->batch_left == 0) {
        duckdb_data_chunk_set_size(out, 0);
        return true;
    }
    if (sync_cancelled(f->opt))
        return ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    if (!pgsrc_stream_fill(&f->stream, out, err))
        return false;
    int64_t n = (int64_t)duckdb_data_chunk_get_size(out);
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

bool pump_copy_into(store *st, const cfg_config *cfg, const char *table_ref, pgsrc_conn *pg,
                    const pgsrc_desc *desc, const char *copy_sql, pump_shared *shared,
                    const sync_options *opt, ds_error *err)
{
    if (copy_sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    duckdb_connection duck;
    if (!store_connect(st, &duck, err))
        return false;
    copy_decoder *dec = decoder_for(desc);
    pump_fill f = {.shared = shared, .opt = opt, .batch_rows = (uint64_t)cfg->store.sync_chunk_size};
    _Atomic uint64_t *bytes = opt->progress ? &opt->progress->bytes : NULL;
    bool ok = dec != NULL ? pgsrc_stream_open(&f.stream, pg, copy_sql, dec, bytes, err)
                          : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    while (ok && !f.capped_out && !f.stream.ended) {
        f.batch_left = f.batch_rows;
        ok = store_insert_stream(st, duck, table_ref, fill_rows, &f, err);
    }
    pgsrc_stream_close(&f.stream);
    copy_decoder_free(dec);
    duckdb_disconnect(&duck);
    if (!ok && sync_cancelled(opt))
        ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    return ok;
}
