/* What a process remembers of the store between two syncs, so that a sync
 * that finds nothing new skips DuckDB's work (docs/incremental.md, "Quiet
 * syncs"). An entry holds only while the store's DuckDB instance is the
 * one it was taken in (store_generation); the sync engine forgets a table's
 * entry whenever it writes the table otherwise, and a failed sync forgets
 * its tables'. Internal to the sync engine. */
#ifndef DS_SYNC_MEMO_H
#define DS_SYNC_MEMO_H

#include <stdbool.h>
#include <stdint.h>

#include "source/pgsrc.h"
#include "store/store.h"

/* An append-only table (no unique_key) after a committed sync: rows of its
 * last batch (as kept by pgsrc_kept_rows: every one of them is stored; all
 * of them, or when they did not fit those at the batch's largest value of
 * the incremental column and those without one, after
 * pgsrc_kept_rows_finish), the
 * maximum of its incremental column as the commit computed it, and its row
 * count. */
void memo_table_put(store *st, const char *table, const pgsrc_kept_rows *rows, const char *max,
                    int64_t count);
void memo_table_forget(store *st, const char *table);

/* Whether every row of `rows` (a multiset) is among the remembered rows of
 * table, so merging them adds nothing; then *max (malloc'd, NULL when the
 * column had no value) and *count are the table's, unchanged since. */
bool memo_table_covers(store *st, const char *table, const pgsrc_kept_rows *rows, char **max, int64_t *count);

/* The view of a split source as last committed (its CREATE VIEW text). */
void memo_view_put(store *st, const char *source, const char *sql);
void memo_view_forget(store *st, const char *source);
bool memo_view_is(store *st, const char *source, const char *sql);

#endif
