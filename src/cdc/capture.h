/* Logical capture of one source (`capture: logical`): the replication slot
 * and publication, the initial load on the slot's exported snapshot, and
 * the stream of changes applied to the cached tables, exactly once: each
 * batch of whole transactions commits in one DuckDB transaction together
 * with the LSN it reached, and PostgreSQL is told that LSN (and may recycle
 * the WAL before it) only after that commit. docs/incremental.md compares
 * it with watermark capture. */
#ifndef DS_CDC_CAPTURE_H
#define DS_CDC_CAPTURE_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "store/store.h"
#include "sync/sync.h"

/* What a running capture publishes for status and metrics; any thread
 * reads it. LSNs are PostgreSQL's 64-bit WAL positions. */
typedef struct capture_live {
    _Atomic bool streaming;
    _Atomic uint64_t confirmed_lsn; /* last LSN committed to DuckDB and confirmed to PostgreSQL */
    _Atomic uint64_t server_lsn;    /* newest WAL end the server reported */
    _Atomic int64_t last_commit_us; /* PostgreSQL commit time of the last applied transaction (Unix µs) */
    _Atomic int64_t idle_since_us;  /* when the stream last had nothing to send (Unix µs), 0 while busy */
    _Atomic uint64_t changes;       /* changes applied since the process started */
    _Atomic uint64_t transactions;
    _Atomic bool reload_requested; /* set by another thread: drop the slot and load again */
    _Atomic int64_t rows;          /* rows of <name>_data after the last batch, -1 unknown */
} capture_live;

typedef struct capture_options {
    bool force_full; /* drop the slot, load again (reset-watermark, ?full=true) */
    /* Keep streaming until cancelled (the server); otherwise catch up with
     * the WAL position at the start and return (duckstore sync). */
    bool follow;
    sync_cancel *cancel;     /* optional */
    sync_progress *progress; /* optional: the initial load's */
    capture_live *live;      /* optional */
    /* Optional: called after an initial load committed (the server then
     * reads the new status while the stream goes on). */
    void (*loaded)(void *ctx);
    void *loaded_ctx;
} capture_options;

/* Runs the source's capture. report is the initial load's when one ran,
 * else the stream's (rows = rows of <name>_data, rows_added = changes
 * applied). A slot PostgreSQL invalidated or lost, a changed table and a
 * value the stream cannot resolve make it load the source again (logged). */
bool capture_run(store *st, const cfg_config *cfg, const cfg_source *src, const capture_options *opt,
                 sync_report *report, ds_error *err);

/* Forgets the capture's position: the next run drops the slot and loads
 * the source again. */
bool capture_reset(store *st, const cfg_source *src, ds_error *err);

/* Adds capture, slot, confirmed_lsn, lag_bytes and lag_seconds to a status
 * document, from live (the capture running in this process; no DuckDB
 * access) or, live NULL, the stored state. */
void capture_status_add(store *st, const cfg_source *src, const capture_live *live, json_t *doc);

/* Where a catch-up that began at insert_lsn (pg_current_wal_insert_lsn)
 * ends: that position, or the start of its WAL page (page_size bytes,
 * wal_block_size) when it lies in the page's header, which no record fills
 * and the stream never reaches. */
uint64_t capture_stream_target(uint64_t insert_lsn, uint64_t page_size);

#endif
