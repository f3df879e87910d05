/* PostgreSQL's streaming replication protocol for logical decoding, over
 * libpq (a connection with replication=database): slots, the exported
 * snapshot an initial copy reads, START_REPLICATION of pgoutput, the
 * XLogData / keepalive messages and the standby status updates that
 * confirm what duckstore has stored. Every wait is bounded. */
#ifndef DS_SOURCE_REPLICATION_H
#define DS_SOURCE_REPLICATION_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

typedef struct repl_conn {
    PGconn *pg;
    double silence_s;        /* longest wait for the server in a statement */
    bool streaming;          /* inside START_REPLICATION's CopyBoth */
    char *buf;               /* last message of repl_next (PQfreemem'd on the next call) */
    uint64_t server_wal_end; /* newest WAL end the server reported (XLogData / keepalive) */
} repl_conn;

/* Connects to url with replication=database added (and duckstore's
 * session settings: application_name, client_encoding UTF8, keepalives,
 * connect_timeout). An error never contains the password; a role without
 * the REPLICATION attribute or an hba rule that refuses replication
 * connections gets a message that names the fix (PostgreSQL matches a
 * logical replication connection against its database's pg_hba.conf lines,
 * not the "replication" keyword's). timeout_s becomes silence_s. */
bool repl_connect(const char *url, double timeout_s, repl_conn *out, ds_error *err);
void repl_disconnect(repl_conn *c);

/* CREATE_REPLICATION_SLOT slot LOGICAL pgoutput EXPORT_SNAPSHOT (the
 * spelling PostgreSQL 10 and later read; 15's (SNAPSHOT 'export') is the same):
 * *consistent_lsn is where the stream starts, *snapshot (malloc'd) the
 * snapshot a copy must import (SET TRANSACTION SNAPSHOT) to see exactly the
 * data before it. The snapshot lives until the next command on c, so the
 * caller keeps c idle until every reader imported it. */
bool repl_create_slot(repl_conn *c, const char *slot, uint64_t *consistent_lsn, char **snapshot,
                      ds_error *err);

/* DROP_REPLICATION_SLOT slot (not streaming on c). PostgreSQL refuses
 * while another connection streams from it (SQLSTATE 55006), and a slot
 * that does not exist (42704). */
bool repl_drop_slot(repl_conn *c, const char *slot, ds_error *err);

/* START_REPLICATION SLOT slot LOGICAL start (proto_version, publication_names,
 * binary 'true', streaming 'on' when proto_version >= 2). */
bool repl_start(repl_conn *c, const char *slot, const char *publication, uint64_t start, int proto_version,
                ds_error *err);

typedef enum repl_event {
    REPL_DATA,      /* *payload / *len: one pgoutput message; *wal_start its LSN (0 for Relation and
                     * Type, which PostgreSQL sends without one) */
    REPL_KEEPALIVE, /* the server asked for a status update (reply requested) or reported its WAL end
                     * (*wal_start) */
    REPL_TIMEOUT,   /* nothing within wait_s */
    REPL_END,       /* the server ended the stream (CopyDone / error: err set) */
    REPL_ERROR,
} repl_event;

/* Waits up to wait_s for the next message of the stream. Keepalives are
 * returned as REPL_KEEPALIVE with *reply_requested set as the server asked. */
repl_event repl_next(repl_conn *c, double wait_s, const char **payload, size_t *len, uint64_t *wal_start,
                     bool *reply_requested, ds_error *err);

/* Standby status update: written/flushed/applied LSN = flushed (what
 * duckstore committed; PostgreSQL may recycle WAL before it). */
bool repl_send_feedback(repl_conn *c, uint64_t flushed, bool reply_requested, ds_error *err);

/* Ends the stream (CopyDone) and reads the server's end of it. */
bool repl_stop(repl_conn *c, ds_error *err);

#endif
