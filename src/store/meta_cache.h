/* What the metadata tables (_duckstore.tables, _duckstore.sync_status)
 * hold, as last read, so the rows a quiet sync and a status request read
 * come from memory: each such read is a DuckDB query of about 1 ms, and a
 * quiet sync made seven. Internal to the store.
 *
 * Every write of those tables happens under the store's commit lock
 * (store_commit_lock). A write forgets everything and stops the cache
 * until the lock is released (the write's transaction has then ended,
 * committed or not); a read that overlapped a write is not kept. */
#ifndef DS_STORE_META_CACHE_H
#define DS_STORE_META_CACHE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct meta_cache meta_cache;

typedef enum meta_kind { META_TABLE, META_STATUS } meta_kind;

/* A row as the cache keeps it (no row: every field NULL). */
typedef struct meta_row {
    char *fields[4]; /* META_TABLE: as store_table_meta; META_STATUS: fields[0] */
    bool flag;       /* META_TABLE: watermark_inclusive */
} meta_row;

meta_cache *meta_cache_new(void);
void meta_cache_free(meta_cache *c);

/* A read: true and *row (a copy: meta_row_free) when cached; else false,
 * and *ticket is what meta_cache_put needs to keep the row read. */
bool meta_cache_get(meta_cache *c, meta_kind kind, const char *name, meta_row *row, uint64_t *ticket);
void meta_cache_put(meta_cache *c, meta_kind kind, const char *name, const meta_row *row, uint64_t ticket);

/* A write begins (under the commit lock) / the commit lock is released. */
void meta_cache_writing(meta_cache *c);
void meta_cache_written(meta_cache *c);
/* Everything is forgotten (a reopen). */
void meta_cache_clear(meta_cache *c);

void meta_row_free(meta_row *row);

#endif
