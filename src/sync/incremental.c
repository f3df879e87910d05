/* Incremental-sync policy: horizon, read start, merge choice, watermark. */
#include "sync/incremental.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/tables.h"

bool inc_usable_as_watermark(const pgsrc_type *type)
{
    return pgtypes_is_orderable(type) && type->kind != PGSRC_NUMERIC_DOUBLE;
}

bool inc_time_horizon_applies(pgsrc_kind kind)
{
    return kind == PGSRC_DATE || kind == PGSRC_TIMESTAMP || kind == PGSRC_TIMESTAMPTZ;
}

bool inc_horizon_enabled(const cfg_source *src, const pgsrc_column *col)
{
    (void)col; /* the snapshot part applies to every type, the time part to time columns */
    return src->commit_horizon != CFG_HORIZON_OFF;
}

bool inc_read_start(duckdb_connection duck, const cfg_source *src, const char *duck_type,
                    const char *watermark, bool watermark_inclusive, char **start, bool *start_inclusive,
                    bool *overlap, ds_error *err)
{
    (void)watermark_inclusive; /* every read is inclusive now; older files said when */
    *start_inclusive = true;
    *overlap = true;
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

static store_batch store_batch_of(const inc_batch *batch)
{
    return (store_batch){.table = batch->table,
                         .staging_ref = batch->staging_ref,
                         .order_col = batch->inc_col,
                         .type = batch->duck_type,
                         .key = batch->key->cols,
                         .nkey = batch->key->n,
                         .overlap = batch->overlap,
                         .start = batch->start,
                         .start_inclusive = batch->start_inclusive,
                         .row_bytes = batch->row_bytes};
}

bool inc_apply(duckdb_connection duck, const inc_batch *batch, int64_t *inserted, int64_t *updated,
               ds_error *err)
{
    store_batch b = store_batch_of(batch);
    return store_merge(duck, &b, inserted, updated, err);
}

bool inc_next_watermark(duckdb_connection duck, const char *table, const char *inc_col, const char *duck_type,
                        const char *floor, const char *horizon, const char *const *known, inc_watermark *out,
                        ds_error *err)
{
    memset(out, 0, sizeof *out);
    if (known != NULL) {
        if (*known != NULL && (out->max = strdup(*known)) == NULL)
            return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    } else if (!store_max_value(duck, table, inc_col, duck_type, floor, &out->max, err)) {
        return false;
    }
    if (horizon != NULL && out->max != NULL) {
        /* Held at the horizon when rows reach it: a transaction still open
         * there may commit more rows at or past it. */
        if (!store_value_at_least(duck, out->max, horizon, duck_type, &out->inclusive, err))
            return false;
        if (out->inclusive)
            return store_canonical_value(duck, horizon, duck_type, &out->watermark, err);
    }
    if (out->max != NULL && (out->watermark = strdup(out->max)) == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    return true;
}

void inc_state_free(inc_read_state *state)
{
    for (size_t i = 0; i < state->npending; i++)
        free(state->pending[i].from);
    free(state->pending);
    free(state->unlisted_from);
    free(state->unlisted_vxids);
    memset(state, 0, sizeof *state);
}

static bool parse_u64(const json_t *v, uint64_t *out)
{
    const char *text = json_string_value(v);
    char *end;
    if (text == NULL || *text < '0' || *text > '9')
        return false;
    unsigned long long n = strtoull(text, &end, 10);
    *out = n;
    return *end == '\0';
}

bool inc_state_parse(const char *text, inc_read_state *out)
{
    memset(out, 0, sizeof *out);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    json_t *pending = json_object_get(doc, "pending");
    if (doc == NULL || !parse_u64(json_object_get(doc, "xmax"), &out->xmax) || !json_is_array(pending)) {
        json_decref(doc);
        return true;
    }
    size_t n = json_array_size(pending);
    out->pending = calloc(n ? n : 1, sizeof *out->pending);
    bool ok = out->pending != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *e = json_array_get(pending, i);
        const char *from = json_string_value(json_object_get(e, "from"));
        inc_pending *p = &out->pending[out->npending];
        if (!parse_u64(json_object_get(e, "xid"), &p->xid))
            continue; /* not written by duckstore: that entry only */
        if (from != NULL && (p->from = strdup(from)) == NULL)
            ok = false;
        out->npending++;
    }
    json_t *unlisted = json_object_get(doc, "unlisted");
    if (ok && json_is_object(unlisted)) {
        const char *from = json_string_value(json_object_get(unlisted, "from"));
        const char *vxids = json_string_value(json_object_get(unlisted, "vxids"));
        out->unlisted = true;
        ok = (from == NULL || (out->unlisted_from = strdup(from)) != NULL) &&
             (out->unlisted_vxids = strdup(vxids ? vxids : "")) != NULL;
    }
    json_decref(doc);
    out->known = ok;
    if (!ok)
        inc_state_free(out);
    return ok;
}

static json_t *u64_json(uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return json_string(buf);
}

char *inc_state_format(const inc_read_state *state)
{
    json_t *doc = json_object(), *pending = json_array();
    bool ok = doc != NULL && pending != NULL && json_object_set_new(doc, "xmax", u64_json(state->xmax)) == 0;
    for (size_t i = 0; ok && i < state->npending; i++) {
        const inc_pending *p = &state->pending[i];
        json_t *e = json_object();
        ok = e != NULL && json_object_set_new(e, "xid", u64_json(p->xid)) == 0 &&
             json_object_set_new(e, "from", p->from ? json_string(p->from) : json_null()) == 0 &&
             json_array_append_new(pending, e) == 0;
    }
    ok = ok && json_object_set(doc, "pending", pending) == 0;
    if (ok && state->unlisted) {
        json_t *u = json_pack("{s:o, s:s}", "from",
                              state->unlisted_from ? json_string(state->unlisted_from) : json_null(), "vxids",
                              state->unlisted_vxids ? state->unlisted_vxids : "");
        ok = u != NULL && json_object_set_new(doc, "unlisted", u) == 0;
    }
    char *text = ok ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(pending);
    json_decref(doc);
    return text;
}

static bool add_pending(inc_read_state *next, uint64_t xid, const char *from)
{
    inc_pending *p = &next->pending[next->npending];
    p->xid = xid;
    p->from = NULL;
    if (from != NULL && (p->from = strdup(from)) == NULL)
        return false;
    next->npending++;
    return true;
}

static bool was_pending(const inc_read_state *prev, uint64_t xid)
{
    for (size_t i = 0; i < prev->npending; i++)
        if (prev->pending[i].xid == xid)
            return true;
    return false;
}

/* *start = the lower of *start and from (NULL: the beginning). */
static bool lower_start(duckdb_connection duck, const char *type, char **start, const char *from,
                        ds_error *err)
{
    if (*start == NULL)
        return true;
    bool higher = false;
    if (from != NULL && !store_value_at_least(duck, from, *start, type, &higher, err))
        return false;
    if (from != NULL && higher)
        return true;
    free(*start);
    *start = from ? strdup(from) : NULL;
    return from == NULL || *start != NULL || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
}

/* Whether the comma-separated lists a and b share an item. */
static bool any_shared(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return false;
    for (const char *p = a; *p != '\0';) {
        size_t n = strcspn(p, ",");
        for (const char *q = b; *q != '\0';) {
            size_t m = strcspn(q, ",");
            if (n > 0 && n == m && memcmp(p, q, n) == 0)
                return true;
            q += m + (q[m] == ',');
        }
        p += n + (p[n] == ',');
    }
    return false;
}

bool inc_plan_read(duckdb_connection duck, pgsrc_conn *pg, const inc_read_plan *plan, char **start,
                   inc_read_state *next, size_t *late, ds_error *err)
{
    static const inc_read_state none = {0};
    const inc_read_state *prev = plan->incremental && plan->prev->known ? plan->prev : &none;
    memset(next, 0, sizeof *next);
    *late = 0;
    next->known = true;
    next->xmax = plan->snap->xmax;
    next->pending = calloc(prev->npending + plan->snap->nxip + 1, sizeof *next->pending);
    pgsrc_xact_outcome *outcomes = calloc(prev->npending + 1, sizeof *outcomes);
    bool ok = (next->pending != NULL && outcomes != NULL) || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    uint64_t *xids = ok ? calloc(prev->npending + 1, sizeof *xids) : NULL;
    ok = ok && (xids != NULL || ds_error_set(err, DS_ERR_NOMEM, "out of memory"));
    for (size_t i = 0; ok && i < prev->npending; i++)
        xids[i] = prev->pending[i].xid;
    ok = ok && pgsrc_xact_outcomes(pg, plan->snap, xids, prev->npending, outcomes, err);
    for (size_t i = 0; ok && i < prev->npending; i++) {
        const inc_pending *p = &prev->pending[i];
        if (outcomes[i] == PGSRC_XACT_COMMITTED) {
            (*late)++;
            ok = lower_start(duck, plan->duck_type, start, p->from, err);
        } else if (outcomes[i] == PGSRC_XACT_IN_PROGRESS) {
            ok = add_pending(next, p->xid, p->from) || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        }
    }
    /* prev lists every transaction that was in progress at the previous
     * read and had written to what it read: one it does not list began
     * after it, or wrote after it, and takes every value it writes after
     * that read's rows (a sequence's next value; a time column is bounded
     * by the time horizon): the previous watermark bounds them. Without a
     * previous read (a full load), only the beginning does. A writer the
     * previous read saw without a transaction id (a COPY filling its first
     * buffer has taken sequence values, but has no id until it writes)
     * could not be listed by id: see unlisted below. */
    const char *base = prev->known ? plan->prev_watermark : NULL;
    /* Whether a writer the previous read could not list still runs: with
     * an id now (it may be among the new transactions below), or still
     * without one. Only then does its start carry on; writers the previous
     * read did not see began after it, like any other. */
    bool persists = false, persists_unlisted = false;
    if (ok && prev->unlisted) {
        ok = lower_start(duck, plan->duck_type, start, prev->unlisted_from, err);
        persists_unlisted = any_shared(prev->unlisted_vxids, plan->snap->xidless);
        persists = persists_unlisted || any_shared(prev->unlisted_vxids, plan->snap->running_vxids);
    }
    const char *from = persists ? prev->unlisted_from : base;
    for (size_t i = 0; ok && i < plan->snap->nxip; i++) {
        uint64_t x = plan->snap->xip[i];
        if (was_pending(prev, x) || was_pending(next, x))
            continue;
        ok = add_pending(next, x, from) || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    /* Such writers now: the next read starts here (or where an earlier
     * one still running had to). */
    if (ok && plan->snap->xidless != NULL && plan->snap->xidless[0] != '\0') {
        const char *unlisted_from = persists_unlisted ? prev->unlisted_from : base;
        next->unlisted = true;
        ok = ((next->unlisted_vxids = strdup(plan->snap->xidless)) != NULL &&
              (unlisted_from == NULL || (next->unlisted_from = strdup(unlisted_from)) != NULL)) ||
             ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    free(xids);
    free(outcomes);
    if (!ok)
        inc_state_free(next);
    return ok;
}
