/* DuckDB side: the database file, connections, streamed inserts, and duckstore's
 * own metadata (schema _duckstore): per-table watermarks and schema
 * signatures, and the last sync status of each source. */
#ifndef DS_STORE_STORE_H
#define DS_STORE_STORE_H

#include <duckdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "store/read_gate.h"

/* An open DuckDB file; its fields are the store's own (store.c). */
typedef struct store store;

/* Opens (creating parent folders and the file) and prepares the metadata
 * schema. A file held by another process gives DS_ERR_BUSY with its PID. */
bool store_open(const char *path, store **out, ds_error *err);

/* DuckDB settings applied when the file is opened; NULL / 0 keep DuckDB's
 * defaults. */
typedef struct store_settings {
    const char *memory_limit; /* e.g. "256MB" */
    /* Added to memory_limit for DuckDB (`serve`: the readers' budget);
     * NULL adds nothing. Needs memory_limit. */
    const char *read_memory_limit;
    int threads;
    /* Attach the file READ_ONLY (it must exist) and allow no other file:
     * no statement can change it (duckstore query). */
    bool read_only;
    /* Never create the file nor its folder (a command that only reads:
     * duckstore status); implied by read_only. A missing file fails with
     * DS_ERR_STORE saying that the store does not exist yet, and where. */
    bool must_exist;
    /* Reader queries DuckDB runs at once (store_read_gate); 0: no limit. */
    int read_concurrency;
    int read_turn_ms; /* the longest a query holds its slot; 0: no limit */
} store_settings;

bool store_open_ext(const char *path, const store_settings *settings, store **out, ds_error *err);
void store_close(store *st);
/* Called by store_close first, while the file is open: the sync engine
 * saves there what it kept in memory (a quiet sync's status). */
void store_set_close_hook(store *st, void (*hook)(store *st));

/* The readers' turn (read_gate.h), sized by store_settings.read_concurrency. */
read_gate *store_read_gate(store *st);

/* The DuckDB file's path as given to store_open. */
const char *store_path(const store *st);

/* Each sync holds a use of the store while it runs (store_borrow takes one
 * for a pooled read); a reopen waits until no use is held. */
void store_use_begin(store *st);
void store_use_end(store *st);

/* A commit failed: DuckDB may have invalidated the database or kept
 * in-memory state the file does not have, so it is not used again before
 * store_reopen. */
void store_mark_suspect(store *st);
/* Marked suspect, or closed by a reopen that failed. */
bool store_needs_reopen(store *st);
/* When needed: waits until no use is held, closes DuckDB without writing
 * its memory back, opens the file again (its WAL replays every committed
 * change) and reads _duckstore back. Call it holding no use. On failure the
 * store stays closed (store_connect says why) and the next call tries
 * again. */
bool store_reopen(store *st, ds_error *err);

/* False, with a message naming the file and the fix, when the path no
 * longer names the open file (deleted or replaced while it is open: what
 * DuckDB writes then is lost at exit). Logged once. */
bool store_file_check(store *st, ds_error *err);

/* For /health: true and *state "open"; or false, err saying why, *state
 * "lost" (store_file_check) or "closed" (a reopen failed). */
bool store_health(store *st, const char **state, ds_error *err);

/* The store's commit lock: held around the short transactions in which
 * concurrent syncs change the synced tables and duckstore's metadata (a
 * sync's commit, recording a failed sync, clearing watermarks), so they
 * run one at a time. */
void store_commit_lock(store *st);
void store_commit_unlock(store *st);

/* A new connection, TimeZone UTC (watermark text must not depend on the
 * machine's zone). */
bool store_connect(store *st, duckdb_connection *con, ds_error *err);

/* The same, reusing an idle connection a sync gave back; hold a use of
 * the store (store_use_begin) from the connect to the disconnect. clean:
 * the connection is as store_connect made it (no transaction open, no
 * setting changed), so it may be reused; else it is closed. */
#define STORE_KEPT_MAX 8
bool store_connect_kept(store *st, duckdb_connection *con, ds_error *err);
void store_disconnect_kept(store *st, duckdb_connection *con, bool clean);

/* Objects of the in-memory catalog that each DuckDB instance needs once
 * (the readers' functions, the PostgreSQL catalog), made by the first
 * connection that finds them missing while the others wait: unless the
 * query probe runs without error, runs prepare (may be NULL) and then
 * statements (NULL-terminated) in one transaction, the object probe reads
 * last, so a connection that finds it finds everything. what names them in
 * errors. Call outside a transaction. */
typedef bool (*store_install_prepare_fn)(duckdb_connection con, ds_error *err);
bool store_install_once(duckdb_connection con, const char *what, const char *probe,
                        store_install_prepare_fn prepare, const char *const *statements, ds_error *err);

/* Which DuckDB instance st holds now: a number unique in the process, new
 * at each open and reopen (what was learnt of an earlier instance's data
 * no longer holds: src/sync/memo.h). */
uint64_t store_generation(store *st);

/* Opens a pool of n read connections. */
bool store_pool_open(store *st, size_t n, ds_error *err);

/* A connection for a short read: from the pool when there is one (waiting
 * for a free one), else a new connection; it holds a use of the store
 * until store_release. */
bool store_borrow(store *st, duckdb_connection *con, ds_error *err);
void store_release(store *st, duckdb_connection *con);

/* Bytes of a size as DuckDB's memory_limit reads it ("64MB" is 64e6,
 * "1GiB" 2^30, "61.0 MiB" as current_setting() prints it); -1 when it is
 * not one. */
double store_size_bytes(const char *s);

bool store_exec(duckdb_connection con, const char *sql, ds_error *err);
/* First column of the first row as text, malloc'd; *out NULL for NULL / no row. */
bool store_query_text(duckdb_connection con, const char *sql, char **out, ds_error *err);
/* The same with the SQL built from a printf format; store_execf also
 * reports the rows the statement changed when changed is not NULL. */
bool store_execf(duckdb_connection con, int64_t *changed, ds_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool store_query_textf(duckdb_connection con, char **out, ds_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool store_query_int(duckdb_connection con, const char *sql, int64_t *out, ds_error *err);

/* "ident" with quotes doubled / 'literal' with quotes doubled. Caller frees. */
char *store_quote_ident(const char *ident);
char *store_quote_literal(const char *value);

bool store_table_exists(duckdb_connection con, const char *table, bool *exists, ds_error *err);

/* Per-table metadata, NULL fields when unknown. */
typedef struct store_table_meta {
    char *schema_signature;
    char *watermark_column;
    char *watermark;
    /* The next read starts at the watermark itself (>=) rather than after
     * it: set when the commit horizon held the watermark back. */
    bool watermark_inclusive;
    /* What the table's last read leaves for the next (the sync's JSON,
     * sync/incremental.h): the transactions it saw in progress. */
    char *read_state;
} store_table_meta;

/* The metadata reads come from memory while nothing has written the
 * metadata since they were last read (src/store/meta_cache.h); con reads
 * them otherwise, and always when st is NULL (a read that must see con's
 * own snapshot). The writes happen under store_commit_lock (which ends
 * what they start), on con, a connection of st. */
bool store_get_table_meta(store *st, duckdb_connection con, const char *table, store_table_meta *out,
                          ds_error *err);
void store_table_meta_free(store_table_meta *meta);
/* Replaces the table's metadata row (inside the caller's transaction). */
bool store_put_table_meta(store *st, duckdb_connection con, const char *table, const store_table_meta *meta,
                          ds_error *err);
/* Sets the watermark of each listed table to NULL. */
bool store_clear_watermarks(store *st, duckdb_connection con, const char *const *tables, size_t n,
                            ds_error *err);

/* Forgets the metadata rows held in memory: for a write of the metadata
 * tables by other means than these functions (tests that make a file look
 * older); duckstore itself always writes through them. */
void store_forget_metadata(store *st);

/* The persisted status document (JSON text) of a source. */
bool store_get_status(store *st, duckdb_connection con, const char *source, char **json, ds_error *err);
bool store_put_status(store *st, duckdb_connection con, const char *source, const char *json, ds_error *err);

/* Fills out (capacity duckdb_vector_size(), columns typed like the target
 * table) with the next rows and sets its size; size 0 ends the stream.
 * Returns false on error (err set). */
typedef bool (*store_fill_fn)(void *ctx, duckdb_data_chunk out, ds_error *err);

/* The in-memory catalog beside the attached file (store_open_ext): for
 * data that needs no durability, such as an incremental batch before it is
 * merged. Writing there costs no WAL and no fsync. */
#define STORE_SCRATCH_CATALOG "memory"

/* INSERT INTO table_ref (a quoted, possibly qualified name) SELECT * FROM <rows produced by fill>: the
 * producer writes straight into the vectors DuckDB's insert pipeline reads, with no appender buffer between
 * them. Runs on con, in its current transaction (autocommit when none); one stream per connection at a
 * time, any number on other connections and databases. On failure err carries the producer's own error
 * when it had one. */
bool store_insert_stream(store *st, duckdb_connection con, const char *table_ref, store_fill_fn fill,
                         void *ctx, ds_error *err);

#endif
