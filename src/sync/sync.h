/* The sync engine: full rebuilds (staging tables + one swap transaction) and
 * watermark-driven incremental syncs of one source, called by the CLI and
 * the server alike; the describe-only check check-config shares with it;
 * the status document of a source. */
#ifndef DS_SYNC_SYNC_H
#define DS_SYNC_SYNC_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common/error.h"
#include "config/config.h"
#include "source/horizon.h"
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

/* PostgreSQL connections kept open between syncs by a long-running process
 * (the server): a periodic incremental sync then skips connecting (TCP,
 * TLS, authentication: 25-50 ms) and the new backend's cold catalog caches.
 * One pool per process, shared by every source: at most max_idle idle
 * connections in all (the longest idle one is closed to make room), at
 * most SYNC_IDLE_CONNS of one source (one per query and the sync lock's:
 * with two, every sync of a split source connected once anew), each
 * closed after idle_timeout_s unused. A kept connection is checked with a round trip before reuse; one
 * that fails is replaced by a new connection. When PostgreSQL refuses a
 * connection for want of slots (SQLSTATE 53300), every idle one is closed
 * and the connection tried once more. */
#define SYNC_IDLE_CONNS (CFG_MAX_QUERIES + 1)
typedef struct sync_kept_conn {
    char *key; /* what makes two connections interchangeable: source, url, timeout */
    pgsrc_conn conn;
    double idle_since; /* monotonic */
} sync_kept_conn;

typedef struct sync_lent_conn {
    PGconn *pg;
    char *key;
} sync_lent_conn;

typedef struct sync_conn_pool {
    pthread_mutex_t lock;
    size_t max_idle;
    double idle_timeout_s;
    sync_kept_conn *idle; /* oldest first */
    size_t n, cap;
    sync_lent_conn *lent; /* connections of running syncs, with their keys */
    size_t n_lent, cap_lent;
} sync_conn_pool;

void sync_conn_pool_init(sync_conn_pool *p, size_t max_idle, double idle_timeout_s);
/* New limits (a config reload): closes idle connections above the cap. */
void sync_conn_pool_configure(sync_conn_pool *p, size_t max_idle, double idle_timeout_s);
/* Closes the connections idle for idle_timeout_s or longer; returns the
 * monotonic time the next one is due to close, 0 when none is kept. */
double sync_conn_pool_expire(sync_conn_pool *p);
/* Closes every idle connection and returns how many were closed. */
size_t sync_conn_pool_release(sync_conn_pool *p);
size_t sync_conn_pool_idle(sync_conn_pool *p);
/* Closes the kept connections; no sync may be running. */
void sync_conn_pool_destroy(sync_conn_pool *p);

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
    /* Per table, in the order of the source's query plans. */
    _Atomic uint64_t table_rows[CFG_MAX_QUERIES], table_bytes[CFG_MAX_QUERIES];
} sync_progress;

const char *sync_phase_name(sync_phase phase);

typedef struct sync_options {
    bool force_full;
    sync_cancel *cancel;     /* optional */
    sync_progress *progress; /* optional */
    sync_conn_pool *conns;   /* optional: reuse connections across syncs */
    /* Logical capture's initial load: every read imports this exported
     * snapshot (a replication slot's), so the copy ends exactly where the
     * slot's stream begins; and commit_hook writes the capture's state in
     * the sync's commit transaction. Both optional. */
    const char *snapshot;
    bool (*commit_hook)(duckdb_connection duck, void *ctx, ds_error *err);
    void *commit_ctx;
} sync_options;

#define SYNC_MAX_WARNINGS 6

typedef struct sync_table_report {
    char table[CFG_TABLE_NAME_CAP];
    bool incremental;
    bool upsert; /* unique_key configured: incremental batches replace rows by key */
    int64_t rows_loaded, rows_total;
    int64_t rows_inserted, rows_updated; /* of this sync's batch */
    bool truncated;
    bool stored_already; /* every row read again was known stored (src/sync/memo.h): nothing was merged */
    char horizon[48];    /* commit horizon taken by this sync, "" when off */
    char horizon_holder[256]; /* the open transaction that held it back, "" when none */
} sync_table_report;

typedef struct sync_report {
    bool incremental; /* sync_type: at least one table appended incrementally */
    int64_t rows;     /* rows of <name>_data after the sync */
    int64_t rows_added;
    /* Rows were added, replaced or rebuilt: a publish after it has
     * something new (an incremental sync with nothing new has not). */
    bool data_changed;
    bool truncated;
    double duration_s;
    sync_table_report tables[CFG_MAX_QUERIES];
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

/* Adds a warning to the report (the first SYNC_MAX_WARNINGS are kept). */
void sync_report_warning(sync_report *report, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The checks a query must pass before it is read, on its description only
 * (no row read), shared by a sync and check-config: dataset_id in both
 * queries of a split source, the unique_key columns, an incremental_column
 * stored as text that PostgreSQL orders otherwise and a lookback of the
 * wrong kind for it (a DS_ERR_CONFIG error naming the file and line), and
 * warnings about incremental_column, partition_column and a top-level
 * LIMIT in an incremental query (appended to warnings). */
bool sync_check_query(const cfg_source *src, const cfg_query_plan *plan, const pgsrc_desc *desc,
                      sync_report *warnings, ds_error *err);
/* What the commit horizon cannot see from this session (a role without
 * pg_read_all_stats, a hot standby), as warnings naming the fix. */
void sync_check_horizon(const cfg_source *src, const pgsrc_desc *desc, const pgsrc_session_facts *facts,
                        sync_report *warnings);

/* ---- the status document (sync/status.c owns every field) ---- */

typedef enum sync_state {
    SYNC_STATE_NOT_SYNCED,
    SYNC_STATE_SYNCING,
    SYNC_STATE_READY,
    SYNC_STATE_ERROR
} sync_state;
#define SYNC_STATE_COUNT 4

const char *sync_state_name(sync_state state);
/* The state a status document records (not_synced when it has none). */
sync_state sync_status_state(const json_t *doc);

/* The status document of one source (runbook section 3 plus duckstore's
 * fields), from the persisted status, watermarks and the config. */
json_t *sync_status_json(store *st, const cfg_source *src, ds_error *err);

/* The document to show when the persisted status cannot be read. */
json_t *sync_status_unreadable(const ds_error *err);

/* Marks a copy of a status document as syncing, with the live progress,
 * also per table of src (the config the sync runs with). */
void sync_status_overlay_syncing(json_t *doc, const cfg_source *src, const sync_progress *progress,
                                 const char *started_at, bool full);

/* Current UTC time as ISO 8601 with offset, the format of every time in a
 * status document; and back (false when text is not such a time). */
#define SYNC_TIME_CAP 40
void sync_now_iso(char *out, size_t cap);
bool sync_parse_iso(const char *text, time_t *out);

#endif
