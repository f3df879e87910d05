/* Streamed transactions kept until they commit (see spool.h). */
#include "cdc/spool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"

struct cdc_spool {
    duckdb_connection duck;
    duckdb_appender app; /* NULL when closed */
    int64_t seq;
    uint64_t count;
};

static const char spool_table[] = "_duckstore_cdc_spool";

cdc_spool *cdc_spool_new(store *st, ds_error *err)
{
    cdc_spool *sp = calloc(1, sizeof *sp);
    if (sp == NULL) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (!store_connect(st, &sp->duck, err)) {
        free(sp);
        return NULL;
    }
    if (!store_exec(sp->duck,
                    "CREATE OR REPLACE TEMP TABLE _duckstore_cdc_spool (xid UINTEGER, subxid UINTEGER, seq "
                    "BIGINT, msg BLOB)",
                    err)) {
        duckdb_disconnect(&sp->duck);
        free(sp);
        return NULL;
    }
    return sp;
}

static bool close_appender(cdc_spool *sp, ds_error *err)
{
    if (sp->app == NULL)
        return true;
    bool ok = duckdb_appender_close(sp->app) != DuckDBError ||
              ds_error_set(err, DS_ERR_STORE, "cannot keep a streamed transaction: %s",
                           duckdb_appender_error(sp->app));
    duckdb_appender_destroy(&sp->app);
    sp->app = NULL;
    return ok;
}

void cdc_spool_free(cdc_spool *sp)
{
    if (sp == NULL)
        return;
    close_appender(sp, NULL);
    duckdb_disconnect(&sp->duck);
    free(sp);
}

uint64_t cdc_spool_count(const cdc_spool *sp)
{
    return sp->count;
}

bool cdc_spool_add(cdc_spool *sp, uint32_t xid, uint32_t subxid, const char *msg, size_t len, ds_error *err)
{
    if (sp->app == NULL &&
        duckdb_appender_create_ext(sp->duck, "temp", "main", spool_table, &sp->app) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "cannot keep a streamed transaction: %s",
                     sp->app ? duckdb_appender_error(sp->app) : "no appender");
        duckdb_appender_destroy(&sp->app);
        sp->app = NULL;
        return false;
    }
    bool ok = duckdb_append_uint32(sp->app, xid) != DuckDBError &&
              duckdb_append_uint32(sp->app, subxid) != DuckDBError &&
              duckdb_append_int64(sp->app, sp->seq++) != DuckDBError &&
              duckdb_append_blob(sp->app, msg, len) != DuckDBError &&
              duckdb_appender_end_row(sp->app) != DuckDBError;
    if (!ok)
        return ds_error_set(err, DS_ERR_STORE, "cannot keep a streamed transaction: %s",
                            duckdb_appender_error(sp->app));
    sp->count++;
    return true;
}

static bool delete_rows(cdc_spool *sp, uint32_t xid, uint32_t subxid, bool all, ds_error *err)
{
    int64_t gone = 0;
    bool ok = all ? store_execf(sp->duck, &gone, err, "DELETE FROM %s WHERE xid = %u", spool_table, xid)
                  : store_execf(sp->duck, &gone, err, "DELETE FROM %s WHERE xid = %u AND subxid = %u",
                                spool_table, xid, subxid);
    if (ok)
        sp->count -= (uint64_t)gone <= sp->count ? (uint64_t)gone : sp->count;
    return ok;
}

bool cdc_spool_abort(cdc_spool *sp, uint32_t xid, uint32_t subxid, ds_error *err)
{
    return close_appender(sp, err) && delete_rows(sp, xid, subxid, subxid == xid, err);
}

/* A transaction is read back a window of seq at a time: one query over a
 * whole 2 GB transaction held its result and its sort at once and failed
 * past memory_limit. seq grows with every message kept, so a window's rows
 * lie in one or two row groups, and zonemaps skip the others. */
#define REPLAY_WINDOW 8192

static bool replay_window(cdc_spool *sp, uint32_t xid, int64_t from, cdc_spool_fn fn, void *ctx,
                          ds_error *err)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT msg FROM %s WHERE xid = %u AND seq >= %lld AND seq < %lld ORDER BY seq",
             spool_table, xid, (long long)from, (long long)(from + REPLAY_WINDOW));
    duckdb_result res;
    if (duckdb_query(sp->duck, sql, &res) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "cannot read a streamed transaction back: %s",
                     duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return false;
    }
    bool ok = true;
    duckdb_data_chunk chunk;
    while (ok && (chunk = duckdb_fetch_chunk(res)) != NULL) {
        idx_t n = duckdb_data_chunk_get_size(chunk);
        duckdb_vector vec = duckdb_data_chunk_get_vector(chunk, 0);
        duckdb_string_t *blobs = (duckdb_string_t *)duckdb_vector_get_data(vec);
        for (idx_t i = 0; ok && i < n; i++)
            ok = fn(ctx, duckdb_string_t_data(&blobs[i]), duckdb_string_t_length(blobs[i]), err);
        duckdb_destroy_data_chunk(&chunk);
    }
    duckdb_destroy_result(&res);
    return ok;
}

bool cdc_spool_replay(cdc_spool *sp, uint32_t xid, cdc_spool_fn fn, void *ctx, ds_error *err)
{
    if (!close_appender(sp, err))
        return false;
    char sql[160];
    int64_t first = -1, last = -1;
    snprintf(sql, sizeof sql, "SELECT coalesce(min(seq), -1) FROM %s WHERE xid = %u", spool_table, xid);
    bool ok = store_query_int(sp->duck, sql, &first, err);
    snprintf(sql, sizeof sql, "SELECT coalesce(max(seq), -1) FROM %s WHERE xid = %u", spool_table, xid);
    ok = ok && store_query_int(sp->duck, sql, &last, err);
    if (!ok) {
        ds_error_prefix(err, "cannot read a streamed transaction back: ");
        return false;
    }
    for (int64_t from = first; ok && first >= 0 && from <= last; from += REPLAY_WINDOW)
        ok = replay_window(sp, xid, from, fn, ctx, err);
    return ok && delete_rows(sp, xid, xid, true, err);
}
