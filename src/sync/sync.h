/* The sync engine: full rebuilds (staging tables + one swap transaction) and
 * watermark-driven incremental syncs of one source, called by the CLI and
 * the server alike. */
#ifndef DS_SYNC_SYNC_H
#define DS_SYNC_SYNC_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "config/config.h"
#include "source/pgsrc.h"
#include "store/store.h"

/* Lets another thread stop a running sync: sets the flag and cancels every
 * PostgreSQL statement the sync has in flight. */
#define SYNC_MAX_CONNS 160
typedef struct sync_cancel {
    atomic_bool requested;
    pthread_mutex_t lock;
    pgsrc_conn *conns[SYNC_MAX_CONNS];
} sync_cancel;

void sync_cancel_init(sync_cancel *c);
void sync_cancel_destroy(sync_cancel *c);
void sync_cancel_request(sync_cancel *c);

/* PostgreSQL connections kept open between the syncs of one source by a
 * long-running process (the server): a periodic incremental sync then skips
 * connecting (TCP, TLS, authentication: 25-50 ms) and the new backend's
 * cold catalog caches. A kept connection is checked with a round trip
 * before reuse; one that fails is replaced by a new connection. */
#define SYNC_IDLE_CONNS 2
typedef struct sync_conn_cache {
    pthread_mutex_t lock;
    pgsrc_conn idle[SYNC_IDLE_CONNS];
    size_t n;
} sync_conn_cache;

void sync_conn_cache_init(sync_conn_cache *c);
/* Closes the kept connections. */
void sync_conn_cache_destroy(sync_conn_cache *c);

typedef enum sync_phase {
    SYNC_PHASE_IDLE,
    SYNC_PHASE_DESCRIBING,
    SYNC_PHASE_READING,
    SYNC_PHASE_COMMITTING
} sync_phase;

/* Live counters of a running sync, readable from any thread. */
typedef struct sync_progress {
    _Atomic uint64_t rows, bytes;
    _Atomic int phase; /* sync_phase */
    /* Per table, in sync_table_names() order. */
    _Atomic uint64_t table_rows[2], table_bytes[2];
} sync_progress;

const char *sync_phase_name(sync_phase phase);

typedef struct sync_options {
    bool force_full;
    sync_cancel *cancel;     /* optional */
    sync_progress *progress; /* optional */
    sync_conn_cache *conns;  /* optional: reuse connections across syncs */
} sync_options;

#define SYNC_MAX_WARNINGS 6

typedef struct sync_table_report {
    char table[160];
    bool incremental;
    bool upsert; /* unique_key configured: incremental batches replace rows by key */
    int64_t rows_loaded, rows_total;
    int64_t rows_inserted, rows_updated; /* of this sync's batch */
    bool truncated;
    char horizon[48];         /* commit horizon taken by this sync, "" when off */
    char horizon_holder[256]; /* the open transaction that held it back, "" when none */
} sync_table_report;

typedef struct sync_report {
    bool incremental; /* sync_type: at least one table appended incrementally */
    int64_t rows;     /* rows of <name>_data after the sync */
    int64_t rows_added;
    bool truncated;
    double duration_s;
    sync_table_report tables[2];
    size_t ntables;
    char warnings[SYNC_MAX_WARNINGS][768];
    size_t nwarnings;
} sync_report;

/* Syncs one source. On failure: the previous data stays, staging tables are
 * dropped, the source's watermarks are cleared (the next sync is full), the
 * persisted status says `error`, and err says why. A sync cancelled through
 * opt->cancel (shutdown) only drops its staging tables: data, watermarks and
 * status still agree and are kept. */
bool sync_source(store *st, const cfg_config *cfg, const cfg_source *src, const sync_options *opt,
                 sync_report *report, ds_error *err);

/* Clears both watermarks of a source: its next sync is a full rebuild. */
bool sync_reset_watermarks(store *st, const cfg_source *src, ds_error *err);

/* Drops staging tables a crashed sync may have left behind. */
bool sync_cleanup_staging(store *st, const cfg_config *cfg, ds_error *err);

/* Warnings about columns the config names but a query lacks, or cannot use,
 * appended to report (also used by check-config). */
void sync_column_warnings(const cfg_source *src, const char *query_label, const pgsrc_desc *desc,
                          sync_report *report);

/* The status document of one source (runbook section 3 plus duckstore's
 * fields), from the persisted status, watermarks and the config. */
json_t *sync_status_json(store *st, const cfg_source *src, ds_error *err);

/* Names of a source's tables: "<name>_dataset"/"<name>_results" or "<name>_data". */
size_t sync_table_names(const cfg_source *src, char names[2][160]);
/* "<name>_data": the view (split) or table (single query) users read. */
void sync_data_name(const cfg_source *src, char *out, size_t cap);

/* Current UTC time as ISO 8601 with offset. */
void sync_now_iso(char *out, size_t cap);

#endif
