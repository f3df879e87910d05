/* The PostgreSQL connections of a sync: registered with its cancel request
 * (so another thread can stop every statement in flight), and taken from /
 * given back to the process's pool of kept connections when the caller
 * keeps them between syncs (sync_options.conns). Internal to the sync
 * engine. */
#ifndef DS_SYNC_CONNS_H
#define DS_SYNC_CONNS_H

#include <stdbool.h>

#include "sync/sync.h"

/* The sync was asked to stop. */
bool sync_cancelled(const sync_options *opt);

/* Connects (or reuses a kept connection of the source) and registers it
 * for cancellation. Refused for want of a slot (SQLSTATE 53300), it closes
 * every idle kept connection and tries once more. */
bool sync_connect(const cfg_source *src, const sync_options *opt, pgsrc_conn *conn, ds_error *err);

/* The first statement on a connection of sync_connect_then. */
typedef bool (*sync_first_statement)(pgsrc_conn *conn, void *ctx, ds_error *err);

/* sync_connect, then first(conn, ctx, err), in one round trip less: a kept
 * connection is handed out unchecked, and that statement is its check (it
 * waits for the server at most as long as sync_connect's check). When the
 * connection turns out closed or silent, another is taken (or made) and
 * the statement runs again. False: no connection is left open. */
bool sync_connect_then(const cfg_source *src, const sync_options *opt, pgsrc_conn *conn,
                       sync_first_statement first, void *ctx, ds_error *err);

/* Unregisters; reusable: the caller's work on it succeeded, so it may be
 * kept for the next sync when it is idle and healthy. */
void sync_disconnect(const sync_options *opt, pgsrc_conn *conn, bool reusable);

#endif
