/* The sync engine's memory of the store between syncs (memo.h). */
#include "sync/memo.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef enum memo_kind { MEMO_TABLE, MEMO_VIEW } memo_kind;

typedef struct memo_entry {
    struct memo_entry *next;
    store *st;
    uint64_t generation; /* the store's DuckDB instance it holds for */
    memo_kind kind;
    char *name;
    char *blob; /* kept rows (MEMO_TABLE) or the view's SQL (MEMO_VIEW) */
    size_t len;
    char *max;
    int64_t count;
} memo_entry;

static pthread_mutex_t memo_lock = PTHREAD_MUTEX_INITIALIZER;
static memo_entry *memo_list;

static void entry_free(memo_entry *e)
{
    free(e->name);
    free(e->blob);
    free(e->max);
    free(e);
}

/* Drops the entries of earlier DuckDB instances of st. Called locked. */
static void purge_stale(store *st, uint64_t now)
{
    for (memo_entry **p = &memo_list; *p != NULL;) {
        memo_entry *e = *p;
        if (e->st == st && e->generation != now) {
            *p = e->next;
            entry_free(e);
        } else {
            p = &e->next;
        }
    }
}

/* Where the entry of (st, kind, name) is linked (*where NULL: none), the
 * stale ones dropped first. Called locked. */
static memo_entry **find(store *st, memo_kind kind, const char *name)
{
    purge_stale(st, store_generation(st));
    memo_entry **p = &memo_list;
    while (*p != NULL && !((*p)->st == st && (*p)->kind == kind && strcmp((*p)->name, name) == 0))
        p = &(*p)->next;
    return p;
}

/* Unlinks and returns the entry of (st, kind, name), or NULL. Called locked. */
static memo_entry *take(store *st, memo_kind kind, const char *name)
{
    memo_entry **p = find(st, kind, name), *e = *p;
    if (e != NULL)
        *p = e->next;
    return e;
}

static void put(store *st, memo_kind kind, const char *name, const char *blob, size_t len, const char *max,
                int64_t count)
{
    memo_entry *e = calloc(1, sizeof *e);
    if (e != NULL) {
        e->st = st;
        e->generation = store_generation(st);
        e->kind = kind;
        e->name = strdup(name);
        e->blob = malloc(len + 1);
        e->len = len;
        e->max = max ? strdup(max) : NULL;
        e->count = count;
        if (e->blob != NULL)
            memcpy(e->blob, blob, len), e->blob[len] = '\0';
    }
    bool ok = e != NULL && e->name != NULL && e->blob != NULL && (max == NULL || e->max != NULL);
    pthread_mutex_lock(&memo_lock);
    memo_entry *old = take(st, kind, name);
    if (ok) {
        e->next = memo_list;
        memo_list = e;
    }
    pthread_mutex_unlock(&memo_lock);
    if (old != NULL)
        entry_free(old);
    if (!ok && e != NULL)
        entry_free(e); /* out of memory: nothing is remembered, which is always safe */
}

static void forget(store *st, memo_kind kind, const char *name)
{
    pthread_mutex_lock(&memo_lock);
    memo_entry *old = take(st, kind, name);
    pthread_mutex_unlock(&memo_lock);
    if (old != NULL)
        entry_free(old);
}

void memo_table_put(store *st, const char *table, const pgsrc_kept_rows *rows, const char *max, int64_t count)
{
    /* Every row of the batch when they fit, else those at its largest
     * value (and without one), which is what the next read meets again. */
    const ds_buf *b =
        !rows->over && !rows->buf.failed ? &rows->buf
        : rows->track_top && !rows->top_over && !rows->nulls_over && !rows->top.failed && rows->nulls.len == 0
            ? &rows->top
            : NULL;
    if (b == NULL)
        memo_table_forget(st, table);
    else
        put(st, MEMO_TABLE, table, b->data ? b->data : "", b->len, max, count);
}

void memo_table_forget(store *st, const char *table)
{
    forget(st, MEMO_TABLE, table);
}

/* The rows of a kept buffer: each a 4-byte big-endian length, then its
 * bytes. Returns how many (at most cap; -1 when the buffer is malformed). */
static long split_rows(const char *buf, size_t len, const char **row, size_t *row_len, size_t cap)
{
    size_t at = 0, n = 0;
    while (at < len) {
        if (len - at < 4 || n == cap)
            return -1;
        const unsigned char *p = (const unsigned char *)buf + at;
        size_t l = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        at += 4;
        if (l > len - at)
            return -1;
        row[n] = buf + at;
        row_len[n++] = l;
        at += l;
    }
    return (long)n;
}

/* Each row of a matched to a row of b not matched before: a multiset
 * inclusion, by bytes. Both hold few rows (kept rows are capped). */
static bool rows_within(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t cap = blen / 4 + 1;
    const char **arow = malloc(cap * sizeof *arow), **brow = malloc(cap * sizeof *brow);
    size_t *alens = malloc(cap * sizeof *alens), *blens = malloc(cap * sizeof *blens);
    bool *used = calloc(cap, sizeof *used);
    bool ok = arow && brow && alens && blens && used;
    long na = ok ? split_rows(a, alen, arow, alens, cap) : -1;
    long nb = ok ? split_rows(b, blen, brow, blens, cap) : -1;
    ok = na >= 0 && nb >= 0;
    for (long i = 0; ok && i < na; i++) {
        bool found = false;
        for (long j = 0; !found && j < nb; j++) {
            found = !used[j] && blens[j] == alens[i] && memcmp(brow[j], arow[i], alens[i]) == 0;
            if (found)
                used[j] = true;
        }
        ok = found;
    }
    free(arow);
    free(brow);
    free(alens);
    free(blens);
    free(used);
    return ok;
}

bool memo_table_covers(store *st, const char *table, const pgsrc_kept_rows *rows, char **max, int64_t *count)
{
    *max = NULL;
    *count = 0;
    if (rows->over || rows->buf.failed)
        return false;
    bool covered = false, nomem = false;
    pthread_mutex_lock(&memo_lock);
    const memo_entry *e = *find(st, MEMO_TABLE, table);
    if (e != NULL) {
        covered = rows_within(rows->buf.data ? rows->buf.data : "", rows->buf.len, e->blob, e->len);
        if (covered && e->max != NULL && (*max = strdup(e->max)) == NULL)
            nomem = true;
        *count = e->count;
    }
    pthread_mutex_unlock(&memo_lock);
    return covered && !nomem;
}

void memo_view_put(store *st, const char *source, const char *sql)
{
    put(st, MEMO_VIEW, source, sql, strlen(sql), NULL, 0);
}

void memo_view_forget(store *st, const char *source)
{
    forget(st, MEMO_VIEW, source);
}

bool memo_view_is(store *st, const char *source, const char *sql)
{
    pthread_mutex_lock(&memo_lock);
    const memo_entry *e = *find(st, MEMO_VIEW, source);
    bool same = e != NULL && strcmp(e->blob, sql) == 0;
    pthread_mutex_unlock(&memo_lock);
    return same;
}
