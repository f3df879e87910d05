/* One protocol session after its startup and authentication
 * (docs/pg-protocol.md): simple and extended queries on its own DuckDB
 * connection, read-only, results streamed chunk by chunk. */
#ifndef DS_PGWIRE_SESSION_H
#define DS_PGWIRE_SESSION_H

#include <duckdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "pgwire/message.h"
#include "store/store.h"

/* What the listener and a session share: the cancel key, and the running
 * statement so that a CancelRequest, the statement timeout or shutdown can
 * interrupt it. */
typedef struct pgs_slot {
    pthread_mutex_t lock;
    uint32_t pid, secret;
    duckdb_connection running; /* while a statement runs */
    bool queued;               /* while it waits for its turn (store_read_gate) */
    struct timespec started;   /* of that statement */
    int64_t timeout_ms;        /* its statement_timeout; 0 = none */
    bool cancelled, timed_out, shutting_down;
    struct pgs_slot *next;
} pgs_slot;

typedef struct pgs_options {
    store *st;
    int64_t statement_timeout_ms; /* pg_statement_timeout; 0 = none */
    int idle_timeout_ms;          /* pg_idle_timeout; -1 = none */
} pgs_options;

/* Runs the session until Terminate, the client goes away, the idle
 * timeout or shutdown. Sends BackendKeyData, ParameterStatus and the first
 * ReadyForQuery itself. startup_params: the startup packet's name/value
 * pairs (application_name, options...). */
void pgs_run(pgm_conn *c, pgs_slot *slot, const pgs_options *opt, const char *user, const char *database,
             const char *application_name);

#endif
