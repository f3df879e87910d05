/* Batches of replicated changes -> the cached tables (see apply.h). */
#include "cdc/apply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "source/copy_decoder.h"
#include "store/store.h"

/* A growable byte arena; versions and keys are offsets into it. */
typedef struct arena {
    char *data;
    size_t len, cap;
} arena;

static bool arena_reserve(arena *a, size_t more)
{
    if (a->len + more <= a->cap)
        return true;
    size_t cap = a->cap ? a->cap : 4096;
    while (cap < a->len + more)
        cap *= 2;
    char *p = realloc(a->data, cap);
    if (p == NULL)
        return false;
    a->data = p;
    a->cap = cap;
    return true;
}

static bool arena_put(arena *a, const void *p, size_t n)
{
    if (!arena_reserve(a, n))
        return false;
    if (n > 0)
        memcpy(a->data + a->len, p, n);
    a->len += n;
    return true;
}

static bool arena_put32(arena *a, int32_t v)
{
    unsigned char b[4] = {(unsigned char)((uint32_t)v >> 24), (unsigned char)((uint32_t)v >> 16),
                          (unsigned char)((uint32_t)v >> 8), (unsigned char)v};
    return arena_put(a, b, 4);
}

static int32_t get32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (int32_t)((uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3]);
}

#define NO_OFF ((size_t)-1)

/* The last version of one key in the batch. Rows and keys are sequences
 * of binary COPY fields (int32 length, -1 for NULL, then the bytes). */
typedef struct entry {
    uint64_t hash;
    size_t key_off, key_len;
    bool live;                 /* false: the key ends deleted */
    int64_t copies;            /* whole-row keys: copies the batch adds (negative: takes away) */
    size_t row_off, row_len;   /* all relation columns */
    size_t base_off, base_len; /* key of the stored row unresolved values come from */
    size_t unres_off;          /* ncols flags, NO_OFF when every value is known */
} entry;

typedef struct target_state {
    const cdc_target_spec *spec;
    bool has_rel;
    size_t ncols;
    char **names;
    pgsrc_type *types;
    size_t *key_idx;    /* relation column of each key column */
    const char **plain; /* per relation column: the cached column storing it as is, or NULL */
    entry *entries;
    size_t nentries, cap_entries;
    size_t *slots; /* open addressing: index + 1 into entries, 0 empty */
    size_t nslots;
    arena mem;
    size_t bytes;
    bool any_unresolved;
    /* Every change of the batch is an insert: no stored row has its key
     * (the initial load and the stream meet without overlap, and a commit
     * is applied once), so nothing stored is replaced. */
    bool only_inserts;
    bool temp_ready; /* temp tables created for the current relation */
    char final_name[48], keys_name[48];
} target_state;

struct cdc_applier {
    duckdb_connection duck;
    target_state *t;
    size_t n;
    size_t pending;
    uint64_t applied;
    uint64_t removed;          /* stored rows the batches deleted since forgotten */
    uint64_t pending_removals; /* updates and deletes queued */
    arena scratch;             /* one synthesized COPY tuple */
};

/* An empty batch. */
static void clear_batch(target_state *t)
{
    t->nentries = 0;
    if (t->slots)
        memset(t->slots, 0, t->nslots * sizeof *t->slots);
    t->mem.len = 0;
    t->bytes = 0;
    t->any_unresolved = false;
    t->only_inserts = true;
}

cdc_applier *cdc_applier_new(duckdb_connection duck, const cdc_target_spec *targets, size_t ntargets)
{
    cdc_applier *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->t = calloc(ntargets ? ntargets : 1, sizeof *a->t);
    if (a->t == NULL) {
        free(a);
        return NULL;
    }
    a->duck = duck;
    a->n = ntargets;
    for (size_t i = 0; i < ntargets; i++) {
        a->t[i].spec = &targets[i];
        clear_batch(&a->t[i]);
        snprintf(a->t[i].final_name, sizeof a->t[i].final_name, "_duckstore_cdc_rows_%zu", i);
        snprintf(a->t[i].keys_name, sizeof a->t[i].keys_name, "_duckstore_cdc_keys_%zu", i);
    }
    return a;
}

static void free_relation(target_state *t)
{
    for (size_t i = 0; i < t->ncols; i++)
        free(t->names[i]);
    free(t->names);
    free(t->types);
    free(t->key_idx);
    free(t->plain);
    t->names = NULL;
    t->types = NULL;
    t->key_idx = NULL;
    t->plain = NULL;
    t->ncols = 0;
    t->has_rel = false;
    t->temp_ready = false;
}

void cdc_applier_free(cdc_applier *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->n; i++) {
        free_relation(&a->t[i]);
        free(a->t[i].entries);
        free(a->t[i].slots);
        free(a->t[i].mem.data);
    }
    free(a->t);
    free(a->scratch.data);
    free(a);
}

size_t cdc_applier_pending(const cdc_applier *a)
{
    return a->pending;
}

size_t cdc_applier_pending_bytes(const cdc_applier *a)
{
    size_t bytes = 0;
    for (size_t i = 0; i < a->n; i++)
        bytes += a->t[i].bytes;
    return bytes;
}

uint64_t cdc_applier_applied(const cdc_applier *a)
{
    return a->applied;
}

/* ---- the key map ---- */

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static bool grow_slots(target_state *t)
{
    size_t n = t->nslots ? t->nslots * 2 : 1024;
    size_t *slots = calloc(n, sizeof *slots);
    if (slots == NULL)
        return false;
    for (size_t e = 0; e < t->nentries; e++) {
        size_t s = t->entries[e].hash & (n - 1);
        while (slots[s] != 0)
            s = (s + 1) & (n - 1);
        slots[s] = e + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = n;
    return true;
}

/* The entry of a key, or NULL. */
static entry *find_entry(target_state *t, const char *key, size_t len, uint64_t h)
{
    if (t->nslots == 0)
        return NULL;
    for (size_t s = h & (t->nslots - 1);; s = (s + 1) & (t->nslots - 1)) {
        size_t e = t->slots[s];
        if (e == 0)
            return NULL;
        entry *en = &t->entries[e - 1];
        if (en->hash == h && en->key_len == len && memcmp(t->mem.data + en->key_off, key, len) == 0)
            return en;
    }
}

/* The entry of the key at mem[key_off], added when missing. */
static entry *upsert_entry(target_state *t, size_t key_off, size_t key_len)
{
    uint64_t h = hash_bytes(t->mem.data + key_off, key_len);
    entry *en = find_entry(t, t->mem.data + key_off, key_len, h);
    if (en != NULL)
        return en;
    if ((t->nentries + 1) * 2 > t->nslots && !grow_slots(t))
        return NULL;
    if (t->nentries == t->cap_entries) {
        size_t cap = t->cap_entries ? t->cap_entries * 2 : 256;
        entry *p = realloc(t->entries, cap * sizeof *p);
        if (p == NULL)
            return NULL;
        t->entries = p;
        t->cap_entries = cap;
    }
    en = &t->entries[t->nentries++];
    memset(en, 0, sizeof *en);
    en->hash = h;
    en->key_off = key_off;
    en->key_len = key_len;
    en->unres_off = NO_OFF;
    size_t s = h & (t->nslots - 1);
    while (t->slots[s] != 0)
        s = (s + 1) & (t->nslots - 1);
    t->slots[s] = t->nentries;
    return en;
}

/* ---- relations ---- */

bool cdc_applier_relation(cdc_applier *a, size_t target, const pgo_relation *rel, const pgsrc_type *types,
                          ds_error *err)
{
    if (!cdc_applier_flush(a, err))
        return false;
    target_state *t = &a->t[target];
    const cdc_target_spec *spec = t->spec;
    free_relation(t);
    t->names = calloc(rel->ncols ? rel->ncols : 1, sizeof *t->names);
    t->types = calloc(rel->ncols ? rel->ncols : 1, sizeof *t->types);
    t->plain = calloc(rel->ncols ? rel->ncols : 1, sizeof *t->plain);
    t->key_idx = calloc(spec->nkey ? spec->nkey : 1, sizeof *t->key_idx);
    if (t->names == NULL || t->types == NULL || t->plain == NULL || t->key_idx == NULL) {
        free_relation(t);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    t->ncols = rel->ncols;
    for (size_t i = 0; i < rel->ncols; i++) {
        t->names[i] = strdup(rel->cols[i].name);
        if (t->names[i] == NULL) {
            free_relation(t);
            return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        }
        t->types[i] = types[i];
        for (size_t p = 0; p < spec->nplain; p++)
            if (strcmp(spec->plain_source[p], rel->cols[i].name) == 0)
                t->plain[i] = spec->plain_target[p];
    }
    for (size_t k = 0; k < spec->nkey; k++) {
        size_t i = 0;
        while (i < rel->ncols && strcmp(rel->cols[i].name, spec->key_cols[k]) != 0)
            i++;
        if (i == rel->ncols) {
            const char *missing = spec->key_cols[k];
            free_relation(t);
            return ds_error_set(err, DS_ERR_RELOAD, "the key column %s of %s.%s is no longer replicated",
                                missing, rel->nspname, rel->relname);
        }
        t->key_idx[k] = i;
    }
    t->has_rel = true;
    return true;
}

/* ---- queuing changes ---- */

/* Appends a tuple's values as COPY fields (unchanged and NULL values as
 * NULL) and marks the unchanged ones in unres (ncols bytes) when given. */
static bool put_row(target_state *t, const pgo_tuple *tup, bool *unres, ds_error *err)
{
    for (size_t i = 0; i < t->ncols; i++) {
        const pgo_value *v = &tup->values[i];
        if (unres)
            unres[i] = v->kind == 'u';
        bool ok;
        if (v->kind == 'b')
            ok = arena_put32(&t->mem, (int32_t)v->len) && arena_put(&t->mem, v->data, v->len);
        else if (v->kind == 'n' || v->kind == 'u')
            ok = arena_put32(&t->mem, -1);
        else
            return ds_error_set(
                err, DS_ERR_SOURCE,
                "column %s of %s arrived as text; the stream must be binary (PostgreSQL 14 or "
                "newer)",
                t->names[i], t->spec->table);
        if (!ok)
            return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    return true;
}

/* Offset of column i's field in the row at off. */
static size_t field_at(const target_state *t, size_t off, size_t i)
{
    for (size_t c = 0; c < i; c++) {
        int32_t len = get32(t->mem.data + off);
        off += 4 + (len > 0 ? (size_t)len : 0);
    }
    return off;
}

static size_t field_size(const target_state *t, size_t off)
{
    int32_t len = get32(t->mem.data + off);
    return 4 + (len > 0 ? (size_t)len : 0);
}

/* Appends the key fields of a tuple; false when a key value is missing
 * (unchanged or absent from a 'K' tuple that should carry it). */
static bool put_key(target_state *t, const pgo_tuple *tup, ds_error *err)
{
    for (size_t k = 0; k < t->spec->nkey; k++) {
        const pgo_value *v = &tup->values[t->key_idx[k]];
        bool ok;
        if (v->kind == 'b')
            ok = arena_put32(&t->mem, (int32_t)v->len) && arena_put(&t->mem, v->data, v->len);
        else if (v->kind == 'n')
            ok = arena_put32(&t->mem, -1);
        else
            return ds_error_set(err, DS_ERR_SOURCE, "key column %s of %s arrived without its value",
                                t->spec->key_cols[k], t->spec->table);
        if (!ok)
            return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    return true;
}

/* The row of the new version, with its unchanged values resolved from the
 * whole old row, the key's previous version in the batch, or (left
 * unresolved) the stored row of the lineage's first key. */
static bool put_new_version(target_state *t, const pgo_message *m, const entry *prev, size_t old_key_off,
                            size_t old_key_len, entry *out, ds_error *err)
{
    bool *unres = calloc(t->ncols ? t->ncols : 1, sizeof *unres);
    if (unres == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    size_t row_off = t->mem.len;
    if (!put_row(t, &m->new_tuple, unres, err)) {
        free(unres);
        return false;
    }
    bool any = false;
    for (size_t i = 0; i < t->ncols; i++)
        any |= unres[i];
    size_t row_len = t->mem.len - row_off;
    out->base_off = 0;
    out->base_len = 0;
    out->unres_off = NO_OFF;
    if (any) {
        /* Rebuild the row with the resolved values in place. */
        size_t new_off = t->mem.len;
        bool left = false;
        for (size_t i = 0; i < t->ncols; i++) {
            size_t src_off = field_at(t, row_off, i);
            bool from_old = unres[i] && m->old_kind == 'O' && m->old_tuple.values[i].kind != 'u';
            bool from_prev = unres[i] && !from_old && prev != NULL && prev->live;
            if (from_old) {
                const pgo_value *v = &m->old_tuple.values[i];
                bool ok = v->kind == 'b'
                              ? arena_put32(&t->mem, (int32_t)v->len) && arena_put(&t->mem, v->data, v->len)
                              : arena_put32(&t->mem, -1);
                if (!ok)
                    goto nomem;
                unres[i] = false;
                continue;
            }
            if (from_prev) {
                src_off = field_at(t, prev->row_off, i);
                unres[i] = prev->unres_off != NO_OFF && t->mem.data[prev->unres_off + i];
            }
            left |= unres[i];
            size_t n = field_size(t, src_off);
            if (!arena_reserve(&t->mem, n))
                goto nomem;
            memcpy(t->mem.data + t->mem.len, t->mem.data + src_off, n);
            t->mem.len += n;
        }
        row_off = new_off;
        row_len = t->mem.len - new_off;
        if (left) {
            out->unres_off = t->mem.len;
            for (size_t i = 0; i < t->ncols; i++)
                if (!arena_put(&t->mem, &(char){unres[i] ? 1 : 0}, 1))
                    goto nomem;
            if (prev != NULL && prev->live && prev->base_len > 0) {
                out->base_off = prev->base_off;
                out->base_len = prev->base_len;
            } else {
                out->base_off = old_key_off;
                out->base_len = old_key_len;
            }
            t->any_unresolved = true;
        }
    }
    free(unres);
    out->row_off = row_off;
    out->row_len = row_len;
    return true;
nomem:
    free(unres);
    return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
}

/* Appends the key fields of the row at row_off (resolved values). */
static bool put_key_of_row(target_state *t, size_t row_off)
{
    for (size_t k = 0; k < t->spec->nkey; k++) {
        size_t off = field_at(t, row_off, t->key_idx[k]);
        size_t n = field_size(t, off);
        if (!arena_reserve(&t->mem, n))
            return false;
        memcpy(t->mem.data + t->mem.len, t->mem.data + off, n);
        t->mem.len += n;
    }
    return true;
}

/* Counts a copy more or less of the key just appended at key_off. A key
 * the batch knows already gives its bytes back; a row it knows already
 * too (from `row_start` on). */
static bool count_copy(target_state *t, size_t key_off, int64_t delta, const entry *version, size_t row_start)
{
    entry *en = upsert_entry(t, key_off, t->mem.len - key_off);
    if (en == NULL)
        return false;
    bool known = en->key_off != key_off;
    if (known)
        t->mem.len = version != NULL && en->row_len > 0 ? row_start : key_off;
    if (version != NULL && en->row_len == 0) {
        en->row_off = version->row_off;
        en->row_len = version->row_len;
    }
    en->copies += delta;
    return true;
}

/* A change of a table identified by the whole row: the old row loses a
 * copy, the new one gains one (its unchanged TOASTed values come from the
 * old row, which REPLICA IDENTITY FULL sends whole). */
static bool count_whole_row_change(target_state *t, const pgo_message *m, ds_error *err)
{
    if (m->kind != PGO_INSERT) {
        if (m->old_kind != 'O')
            return ds_error_set(
                err, DS_ERR_SOURCE,
                "a change of %s arrived without its old row, which REPLICA IDENTITY FULL sends",
                t->spec->table);
        size_t key_off = t->mem.len;
        if (!put_key(t, &m->old_tuple, err))
            return false;
        if (!count_copy(t, key_off, -1, NULL, 0))
            return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    if (m->kind == PGO_DELETE)
        return true;
    size_t row_start = t->mem.len;
    entry version = {0};
    if (!put_new_version(t, m, NULL, 0, 0, &version, err))
        return false;
    if (version.unres_off != NO_OFF)
        return ds_error_set(err, DS_ERR_RELOAD,
                            "an update of %s kept a large value unchanged that its old row does not carry",
                            t->spec->table);
    size_t key_off = t->mem.len;
    if (!put_key_of_row(t, version.row_off) || !count_copy(t, key_off, 1, &version, row_start))
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    return true;
}

bool cdc_applier_change(cdc_applier *a, size_t target, const pgo_message *m, ds_error *err)
{
    target_state *t = &a->t[target];
    if (!t->has_rel)
        return ds_error_set(err, DS_ERR_SOURCE, "a change of %s arrived before its relation", t->spec->table);
    const pgo_tuple *nt = m->kind == PGO_DELETE ? NULL : &m->new_tuple;
    const pgo_tuple *ot = m->old_kind ? &m->old_tuple : NULL;
    if ((nt && nt->ncols != t->ncols) || (ot && ot->ncols != t->ncols))
        return ds_error_set(err, DS_ERR_RELOAD, "a change of %s has %u columns, its relation %zu",
                            t->spec->table, (unsigned)(nt ? nt->ncols : ot->ncols), t->ncols);
    if (m->kind == PGO_DELETE && ot == NULL)
        return ds_error_set(err, DS_ERR_SOURCE, "a delete of %s arrived without its key", t->spec->table);
    if (m->kind != PGO_INSERT) {
        t->only_inserts = false;
        a->pending_removals++;
    }
    size_t before = t->mem.len;
    if (t->spec->whole_row) {
        if (!count_whole_row_change(t, m, err))
            return false;
        t->bytes += t->mem.len - before;
        a->pending++;
        a->applied++;
        return true;
    }
    /* The key the change leaves (old) and the one it writes (new). */
    size_t old_off = t->mem.len;
    if (!put_key(t, ot ? ot : nt, err))
        return false;
    size_t old_len = t->mem.len - old_off;
    entry *old = upsert_entry(t, old_off, old_len);
    if (old == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    if (m->kind == PGO_DELETE) {
        old->live = false;
    } else {
        size_t new_off = t->mem.len;
        if (!put_key(t, nt, err))
            return false;
        size_t new_len = t->mem.len - new_off;
        bool same = new_len == old_len && memcmp(t->mem.data + new_off, t->mem.data + old_off, old_len) == 0;
        if (same) {
            t->mem.len = new_off; /* one key: the entry found above */
            new_off = old->key_off;
        }
        /* The previous version of this row: the old key's (an insert has
         * none but a re-insert after a delete in the batch). */
        entry prev = *old;
        entry version = {0};
        if (!put_new_version(t, m, m->kind == PGO_UPDATE ? &prev : NULL, old->key_off, old_len, &version,
                             err))
            return false;
        if (!same)
            old->live = false;
        entry *en = same ? old : upsert_entry(t, new_off, new_len);
        if (en == NULL)
            return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        en->live = true;
        en->row_off = version.row_off;
        en->row_len = version.row_len;
        en->base_off = version.base_off;
        en->base_len = version.base_len;
        en->unres_off = version.unres_off;
    }
    t->bytes += t->mem.len - before;
    a->pending++;
    a->applied++;
    return true;
}

/* ---- applying a batch ---- */

static bool exec_buf(duckdb_connection duck, ds_buf *b, ds_error *err)
{
    char *sql = ds_buf_take_or_err(b, err);
    if (sql == NULL)
        return false;
    bool ok = store_exec(duck, sql, err);
    free(sql);
    return ok;
}

/* A DELETE of stored rows, counted: DuckDB keeps each deleted row's mark
 * in memory until the next checkpoint (see cdc_applier_removed). */
static bool exec_delete(cdc_applier *a, ds_buf *b, ds_error *err)
{
    char *sql = ds_buf_take_or_err(b, err);
    if (sql == NULL)
        return false;
    int64_t deleted = 0;
    bool ok = store_execf(a->duck, &deleted, err, "%s", sql);
    free(sql);
    if (ok && deleted > 0)
        a->removed += (uint64_t)deleted;
    return ok;
}

static void append_key_equality(ds_buf *b, const target_state *t, const char *left, const char *right,
                                bool right_is_key_table)
{
    for (size_t k = 0; k < t->spec->nkey; k++) {
        ds_buf_append(b, k ? " AND " : "");
        ds_buf_appendf(b, "%s.", left);
        ds_buf_append_ident(b, t->spec->key_target_cols[k]);
        ds_buf_append(b, t->spec->whole_row ? " IS NOT DISTINCT FROM " : " = ");
        ds_buf_appendf(b, "%s.", right);
        if (right_is_key_table) {
            ds_buf_appendf(b, "\"k%zu\"", k);
        } else {
            ds_buf_appendf(b, "\"_ds_bk_%zu\"", k);
        }
    }
}

/* The batch's temp tables for the current relation: the rows to insert
 * (relation columns, the key of the stored row unresolved values come
 * from, a flag per unresolved column) and every key the batch touched
 * (whole-row keys: those losing copies, with an id and how many). */
static bool ensure_temp_tables(cdc_applier *a, target_state *t, ds_error *err)
{
    if (t->temp_ready)
        return true;
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "CREATE OR REPLACE TEMP TABLE ");
    ds_buf_append_ident(&b, t->final_name);
    ds_buf_append(&b, " (");
    for (size_t i = 0; i < t->ncols; i++) {
        ds_buf_append(&b, i ? ", " : "");
        ds_buf_append_ident(&b, t->names[i]);
        ds_buf_appendf(&b, " %s", t->types[i].ddl);
    }
    for (size_t k = 0; k < t->spec->nkey; k++)
        ds_buf_appendf(&b, ", \"_ds_bk_%zu\" %s", k, t->types[t->key_idx[k]].ddl);
    for (size_t i = 0; i < t->ncols; i++)
        ds_buf_appendf(&b, ", \"_ds_u_%zu\" BOOLEAN", i);
    ds_buf_append(&b, "); CREATE OR REPLACE TEMP TABLE ");
    ds_buf_append_ident(&b, t->keys_name);
    ds_buf_append(&b, " (");
    for (size_t k = 0; k < t->spec->nkey; k++)
        ds_buf_appendf(&b, "%s\"k%zu\" %s", k ? ", " : "", k, t->types[t->key_idx[k]].ddl);
    if (t->spec->whole_row)
        ds_buf_append(&b, ", \"_ds_id\" BIGINT, \"_ds_n\" BIGINT");
    ds_buf_append(&b, ")");
    if (!exec_buf(a->duck, &b, err))
        return false;
    t->temp_ready = true;
    return true;
}

/* Appends rows given as COPY tuples through the binary COPY decoder. */
typedef struct tuple_sink {
    duckdb_appender app;
    copy_decoder *dec;
    duckdb_data_chunk chunk;
    idx_t rows;
} tuple_sink;

static bool sink_open(cdc_applier *a, tuple_sink *s, const char *table, const pgsrc_type *types, size_t n,
                      ds_error *err)
{
    memset(s, 0, sizeof *s);
    if (duckdb_appender_create_ext(a->duck, "temp", "main", table, &s->app) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "cannot append to %s: %s", table,
                     s->app ? duckdb_appender_error(s->app) : "no appender");
        duckdb_appender_destroy(&s->app);
        return false;
    }
    duckdb_logical_type lt[n > 0 ? n : 1];
    for (size_t i = 0; i < n; i++)
        lt[i] = duckdb_appender_column_type(s->app, i);
    s->chunk = duckdb_create_data_chunk(lt, n);
    for (size_t i = 0; i < n; i++)
        duckdb_destroy_logical_type(&lt[i]);
    s->dec = copy_decoder_new(types, n);
    if (s->dec == NULL || s->chunk == NULL) {
        duckdb_appender_destroy(&s->app);
        copy_decoder_free(s->dec);
        if (s->chunk)
            duckdb_destroy_data_chunk(&s->chunk);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    static const char header[19] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};
    size_t used;
    copy_decoder_feed(s->dec, header, sizeof header, &used, err);
    copy_decoder_start_chunk(s->dec, s->chunk);
    return true;
}

static bool sink_flush_chunk(tuple_sink *s, ds_error *err)
{
    if (copy_decoder_finish_chunk(s->dec) == 0)
        return true;
    if (duckdb_append_data_chunk(s->app, s->chunk) == DuckDBError)
        return ds_error_set(err, DS_ERR_STORE, "cannot append changes: %s", duckdb_appender_error(s->app));
    duckdb_data_chunk_reset(s->chunk);
    copy_decoder_start_chunk(s->dec, s->chunk);
    s->rows = 0;
    return true;
}

static bool sink_row(tuple_sink *s, const char *tuple, size_t len, ds_error *err)
{
    if (s->rows == duckdb_vector_size() && !sink_flush_chunk(s, err))
        return false;
    size_t used;
    copy_status st = copy_decoder_feed(s->dec, tuple, len, &used, err);
    if (st == COPY_ERROR)
        return false;
    s->rows++;
    return true;
}

static bool sink_close(tuple_sink *s, bool ok, ds_error *err)
{
    if (ok)
        ok = sink_flush_chunk(s, err);
    if (ok && duckdb_appender_close(s->app) == DuckDBError)
        ok = ds_error_set(err, DS_ERR_STORE, "cannot append changes: %s", duckdb_appender_error(s->app));
    duckdb_appender_destroy(&s->app);
    duckdb_destroy_data_chunk(&s->chunk);
    copy_decoder_free(s->dec);
    return ok;
}

static bool put16(arena *a, uint16_t v)
{
    unsigned char b[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    return arena_put(a, b, 2);
}

/* Appends a bigint as a COPY field. */
static bool put_int8_field(arena *a, int64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)v >> (56 - 8 * i));
    return arena_put32(a, 8) && arena_put(a, b, 8);
}

/* Whether the batch writes this key into the keys table: every key it
 * touched, or for whole-row keys those that lose copies. */
static bool key_leaves(const target_state *t, const entry *en)
{
    return !t->spec->whole_row || en->copies < 0;
}

/* Copies of the entry's row the batch inserts. */
static int64_t copies_to_insert(const target_state *t, const entry *en)
{
    if (t->spec->whole_row)
        return en->copies > 0 ? en->copies : 0;
    return en->live ? 1 : 0;
}

static bool fill_temp_tables(cdc_applier *a, target_state *t, size_t *live, size_t *leaving, ds_error *err)
{
    size_t nkey = t->spec->nkey;
    size_t nfinal = t->ncols + nkey + t->ncols;
    size_t nkeycols = nkey + (t->spec->whole_row ? 2 : 0);
    pgsrc_type *ftypes = calloc(nfinal, sizeof *ftypes);
    pgsrc_type *ktypes = calloc(nkeycols ? nkeycols : 1, sizeof *ktypes);
    if (ftypes == NULL || ktypes == NULL) {
        free(ftypes);
        free(ktypes);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    pgsrc_type boolean;
    pgtypes_map_builtin(16, -1, &boolean);
    for (size_t i = 0; i < t->ncols; i++) {
        ftypes[i] = t->types[i];
        ftypes[t->ncols + nkey + i] = boolean;
    }
    for (size_t k = 0; k < nkey; k++)
        ftypes[t->ncols + k] = ktypes[k] = t->types[t->key_idx[k]];
    if (t->spec->whole_row) {
        pgtypes_map_builtin(20, -1, &ktypes[nkey]);
        ktypes[nkey + 1] = ktypes[nkey];
    }

    tuple_sink keys, rows;
    *leaving = 0;
    bool ok = sink_open(a, &keys, t->keys_name, ktypes, nkeycols, err);
    if (ok) {
        for (size_t e = 0; ok && e < t->nentries; e++) {
            const entry *en = &t->entries[e];
            if (!key_leaves(t, en))
                continue;
            (*leaving)++;
            a->scratch.len = 0;
            ok = put16(&a->scratch, (uint16_t)nkeycols) &&
                 arena_put(&a->scratch, t->mem.data + en->key_off, en->key_len);
            if (t->spec->whole_row)
                ok =
                    ok && put_int8_field(&a->scratch, (int64_t)e) && put_int8_field(&a->scratch, -en->copies);
            ok = ok ? sink_row(&keys, a->scratch.data, a->scratch.len, err)
                    : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        }
        ok = sink_close(&keys, ok, err);
    }
    *live = 0;
    if (ok && (ok = sink_open(a, &rows, t->final_name, ftypes, nfinal, err))) {
        static const char f_true[5] = {0, 0, 0, 1, 1}, f_false[5] = {0, 0, 0, 1, 0};
        for (size_t e = 0; ok && e < t->nentries; e++) {
            const entry *en = &t->entries[e];
            int64_t n = copies_to_insert(t, en);
            if (n == 0)
                continue;
            *live += (size_t)n;
            a->scratch.len = 0;
            ok = put16(&a->scratch, (uint16_t)nfinal) &&
                 arena_put(&a->scratch, t->mem.data + en->row_off, en->row_len);
            if (en->base_len > 0)
                ok = ok && arena_put(&a->scratch, t->mem.data + en->base_off, en->base_len);
            else
                for (size_t k = 0; ok && k < nkey; k++)
                    ok = arena_put32(&a->scratch, -1);
            for (size_t i = 0; ok && i < t->ncols; i++) {
                bool u = en->unres_off != NO_OFF && t->mem.data[en->unres_off + i];
                ok = arena_put(&a->scratch, u ? f_true : f_false, 5);
            }
            if (!ok)
                ok = ds_error_set(err, DS_ERR_NOMEM, "out of memory");
            for (int64_t c = 0; ok && c < n; c++)
                ok = sink_row(&rows, a->scratch.data, a->scratch.len, err);
        }
        ok = sink_close(&rows, ok, err);
    }
    free(ftypes);
    free(ktypes);
    return ok;
}

/* Unchanged TOASTed values the batch could not resolve come from the
 * stored row; a value the cache does not store, or a row it does not
 * hold, cannot be known: the source must be loaded again. */
static bool fill_unresolved(cdc_applier *a, target_state *t, ds_error *err)
{
    ds_buf b = DS_BUF_INIT;
    char *target = ds_quote_ident(t->spec->table);
    char *rows = ds_quote_ident(t->final_name);
    if (target == NULL || rows == NULL) {
        free(target);
        free(rows);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    bool ok = true;
    for (size_t i = 0; ok && i < t->ncols; i++) {
        if (t->plain[i] == NULL)
            continue;
        ds_buf_reset(&b);
        ds_buf_appendf(&b, "UPDATE %s AS r SET ", rows);
        ds_buf_append_ident(&b, t->names[i]);
        ds_buf_append(&b, " = s.");
        ds_buf_append_ident(&b, t->plain[i]);
        ds_buf_appendf(&b, ", \"_ds_u_%zu\" = false FROM %s AS s WHERE r.\"_ds_u_%zu\" AND ", i, target, i);
        append_key_equality(&b, t, "s", "r", false);
        ok = exec_buf(a->duck, &b, err);
    }
    if (ok) {
        ds_buf_reset(&b);
        ds_buf_appendf(&b, "SELECT count(*) FROM %s WHERE false", rows);
        for (size_t i = 0; i < t->ncols; i++)
            ds_buf_appendf(&b, " OR \"_ds_u_%zu\"", i);
        char *sql = ds_buf_take_or_err(&b, err);
        int64_t left = 0;
        ok = sql != NULL && store_query_int(a->duck, sql, &left, err);
        free(sql);
        if (ok && left > 0)
            ok =
                ds_error_set(err, DS_ERR_RELOAD,
                             "%lld updated row(s) of %s kept a large value unchanged that the cache does not "
                             "store (set REPLICA IDENTITY FULL on the table, or select the column as it is)",
                             (long long)left, t->spec->table);
    }
    ds_buf_free(&b);
    free(target);
    free(rows);
    return ok;
}

static bool apply_target(cdc_applier *a, target_state *t, ds_error *err)
{
    if (t->nentries == 0)
        return true;
    size_t live = 0, leaving = 0;
    if (!ensure_temp_tables(a, t, err) || !fill_temp_tables(a, t, &live, &leaving, err))
        return false;
    if (t->any_unresolved && !fill_unresolved(a, t, err))
        return false;
    ds_buf b = DS_BUF_INIT;
    /* The rows the batch replaces or deletes: a join over the whole
     * table, which inserts alone need not pay (an insert-only stream, the
     * common one for events and traces, appends). */
    if (t->spec->whole_row && leaving > 0) {
        /* As many of the identical stored rows as the batch takes away.
         * The batch tells rows apart by PostgreSQL's bytes; rows DuckDB
         * holds as equal (numeric 1.0 and 1.00 as one DOUBLE) are counted
         * together first, or each would pick the same stored row. */
        ds_buf_append(&b, "DELETE FROM ");
        ds_buf_append_ident(&b, t->spec->table);
        ds_buf_append(&b, " WHERE rowid IN (SELECT r FROM (SELECT t.rowid AS r, k.\"_ds_n\" AS n, "
                          "row_number() OVER (PARTITION BY k.\"_ds_id\") AS c FROM ");
        ds_buf_append_ident(&b, t->spec->table);
        ds_buf_append(&b, " AS t JOIN (SELECT ");
        for (size_t k = 0; k < t->spec->nkey; k++)
            ds_buf_appendf(&b, "\"k%zu\", ", k);
        ds_buf_append(&b, "min(\"_ds_id\") AS \"_ds_id\", sum(\"_ds_n\") AS \"_ds_n\" FROM ");
        ds_buf_append_ident(&b, t->keys_name);
        ds_buf_append(&b, " GROUP BY ");
        for (size_t k = 0; k < t->spec->nkey; k++)
            ds_buf_appendf(&b, "%s\"k%zu\"", k ? ", " : "", k);
        ds_buf_append(&b, ") AS k ON ");
        append_key_equality(&b, t, "t", "k", true);
        ds_buf_append(&b, ") WHERE c <= n)");
        if (!exec_delete(a, &b, err))
            return false;
    } else if (!t->spec->whole_row && !t->only_inserts) {
        ds_buf_append(&b, "DELETE FROM ");
        ds_buf_append_ident(&b, t->spec->table);
        ds_buf_append(&b, " AS t USING ");
        ds_buf_append_ident(&b, t->keys_name);
        ds_buf_append(&b, " AS k WHERE ");
        append_key_equality(&b, t, "t", "k", true);
        if (!exec_delete(a, &b, err))
            return false;
    }
    if (live > 0) {
        ds_buf_append(&b, "INSERT INTO ");
        ds_buf_append_ident(&b, t->spec->table);
        ds_buf_appendf(&b, " SELECT %s FROM (SELECT ", t->spec->select_list);
        for (size_t i = 0; i < t->ncols; i++) {
            ds_buf_append(&b, i ? ", " : "");
            ds_buf_append_ident(&b, t->names[i]);
        }
        ds_buf_append(&b, " FROM ");
        ds_buf_append_ident(&b, t->final_name);
        ds_buf_append(&b, ") AS ");
        ds_buf_append_ident(&b, t->spec->alias);
        if (t->spec->where)
            ds_buf_appendf(&b, " WHERE (%s\n)", t->spec->where);
        if (!exec_buf(a->duck, &b, err)) {
            ds_error_prefix(err,
                            "DuckDB cannot evaluate the query's select list or WHERE on the changed rows "
                            "(logical capture evaluates them in DuckDB; use expressions both databases "
                            "read alike): ");
            return false;
        }
    }
    ds_buf_append(&b, "DELETE FROM ");
    ds_buf_append_ident(&b, t->final_name);
    ds_buf_append(&b, "; DELETE FROM ");
    ds_buf_append_ident(&b, t->keys_name);
    return exec_buf(a->duck, &b, err);
}

bool cdc_applier_flush(cdc_applier *a, ds_error *err)
{
    for (size_t i = 0; i < a->n; i++) {
        target_state *t = &a->t[i];
        if (!apply_target(a, t, err)) {
            ds_error_prefix(err, "%s: ", t->spec->table);
            return false;
        }
        clear_batch(t);
    }
    a->pending = 0;
    a->pending_removals = 0;
    return true;
}

bool cdc_applier_truncate(cdc_applier *a, size_t target, ds_error *err)
{
    if (!cdc_applier_flush(a, err))
        return false;
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "DELETE FROM ");
    ds_buf_append_ident(&b, a->t[target].spec->table);
    a->applied++;
    return exec_delete(a, &b, err);
}

uint64_t cdc_applier_removed(const cdc_applier *a)
{
    return a->removed + a->pending_removals;
}

void cdc_applier_forget_removed(cdc_applier *a)
{
    a->removed = 0;
}
