/* The metadata tables' rows as last read (meta_cache.h). */
#include "store/meta_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define META_ROWS_MAX 128
#define NFIELDS (sizeof((meta_row *)0)->fields / sizeof((meta_row *)0)->fields[0])

typedef struct cached {
    meta_kind kind;
    char *name;
    meta_row row;
} cached;

struct meta_cache {
    pthread_mutex_t lock;
    /* Counts writes begun and ended: a read keeps its row only when no
     * write began or ended while it ran. */
    uint64_t version;
    bool writing; /* a write has begun and its commit lock is still held */
    cached rows[META_ROWS_MAX];
    size_t nrows;
};

meta_cache *meta_cache_new(void)
{
    meta_cache *c = calloc(1, sizeof *c);
    if (c != NULL && pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        c = NULL;
    }
    return c;
}

void meta_row_free(meta_row *row)
{
    for (size_t i = 0; i < NFIELDS; i++)
        free(row->fields[i]);
    memset(row, 0, sizeof *row);
}

static bool row_copy(const meta_row *from, meta_row *to)
{
    memset(to, 0, sizeof *to);
    to->flag = from->flag;
    for (size_t i = 0; i < NFIELDS; i++) {
        if (from->fields[i] != NULL && (to->fields[i] = strdup(from->fields[i])) == NULL) {
            meta_row_free(to);
            return false;
        }
    }
    return true;
}

/* Called locked. */
static void forget_all(meta_cache *c)
{
    for (size_t i = 0; i < c->nrows; i++) {
        free(c->rows[i].name);
        meta_row_free(&c->rows[i].row);
    }
    c->nrows = 0;
}

void meta_cache_free(meta_cache *c)
{
    if (c == NULL)
        return;
    forget_all(c);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

bool meta_cache_get(meta_cache *c, meta_kind kind, const char *name, meta_row *row, uint64_t *ticket)
{
    *ticket = UINT64_MAX;
    if (c == NULL)
        return false;
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    if (!c->writing) {
        for (size_t i = 0; i < c->nrows && !hit; i++)
            if (c->rows[i].kind == kind && strcmp(c->rows[i].name, name) == 0)
                hit = row_copy(&c->rows[i].row, row);
        *ticket = c->version;
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void meta_cache_put(meta_cache *c, meta_kind kind, const char *name, const meta_row *row, uint64_t ticket)
{
    if (c == NULL || ticket == UINT64_MAX)
        return;
    pthread_mutex_lock(&c->lock);
    if (!c->writing && c->version == ticket && c->nrows < META_ROWS_MAX) {
        cached *e = &c->rows[c->nrows];
        e->kind = kind;
        e->name = strdup(name);
        if (e->name != NULL && row_copy(row, &e->row))
            c->nrows++;
        else
            free(e->name);
    }
    pthread_mutex_unlock(&c->lock);
}

void meta_cache_writing(meta_cache *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->writing = true;
    c->version++;
    forget_all(c);
    pthread_mutex_unlock(&c->lock);
}

void meta_cache_written(meta_cache *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    if (c->writing) {
        c->writing = false;
        c->version++;
        forget_all(c);
    }
    pthread_mutex_unlock(&c->lock);
}

void meta_cache_clear(meta_cache *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->version++;
    forget_all(c);
    pthread_mutex_unlock(&c->lock);
}
