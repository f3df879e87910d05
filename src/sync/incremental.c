/* Incremental-sync policy: horizon, read start, merge choice, watermark. */
#include "sync/incremental.h"

#include <stdlib.h>
#include <string.h>

#include "store/tables.h"

bool inc_usable_as_watermark(const pgsrc_type *type)
{
    return pgtypes_is_orderable(type) && type->kind != PGSRC_NUMERIC_DOUBLE;
}

bool inc_horizon_enabled(const cfg_source *src, const pgsrc_column *col)
{
    bool is_time = col->type.kind == PGSRC_TIMESTAMP || col->type.kind == PGSRC_TIMESTAMPTZ;
    return is_time && src->commit_horizon != CFG_HORIZON_OFF;
}

bool inc_read_start(duckdb_connection duck, const cfg_source *src, const char *duck_type,
                    const char *watermark, bool watermark_inclusive, char **start, bool *start_inclusive,
                    bool *overlap, ds_error *err)
{
    *start_inclusive = watermark_inclusive;
    *overlap = watermark_inclusive;
    if (src->lookback == NULL) {
        *start = strdup(watermark);
        return *start != NULL || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    *overlap = true;
    bool ok =
        store_value_minus(duck, watermark, duck_type, src->lookback, src->lookback_is_number, start, err);
    if (ok && *start == NULL)
        ok = ds_error_set(err, DS_ERR_CONFIG, "%s:%d: lookback \"%s\" does not apply to the watermark %s",
                          src->file, src->lookback_line, src->lookback, watermark);
    return ok;
}

bool inc_apply(duckdb_connection duck, const inc_batch *batch, int64_t *inserted, int64_t *updated,
               ds_error *err)
{
    store_batch b = {.table = batch->table,
                     .staging_ref = batch->staging_ref,
                     .order_col = batch->inc_col,
                     .type = batch->duck_type,
                     .key = batch->key->cols,
                     .nkey = batch->key->n,
                     .overlap = batch->overlap,
                     .start = batch->start,
                     .start_inclusive = batch->start_inclusive};
    return store_merge(duck, &b, inserted, updated, err);
}

bool inc_next_watermark(duckdb_connection duck, const char *table, const char *inc_col, const char *duck_type,
                        const char *floor, const char *horizon, char **watermark, bool *inclusive,
                        ds_error *err)
{
    *watermark = NULL;
    *inclusive = false;
    char *max = NULL;
    if (!store_max_value(duck, table, inc_col, duck_type, floor, &max, err))
        return false;
    if (horizon != NULL && max != NULL) {
        /* Held at the horizon when rows reach it: a transaction still open
         * there may commit more rows at or past it. */
        if (!store_value_at_least(duck, max, horizon, duck_type, inclusive, err)) {
            free(max);
            return false;
        }
        if (*inclusive) {
            free(max);
            if (!store_canonical_value(duck, horizon, duck_type, &max, err))
                return false;
        }
    }
    *watermark = max;
    return true;
}
