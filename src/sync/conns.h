/* The PostgreSQL connections of a sync: registered with its cancel request
 * (so another thread can stop every statement in flight), and taken from /
 * given back to the source's kept connections when the caller keeps them
 * between syncs. Internal to the sync engine. */
#ifndef DS_SYNC_CONNS_H
#define DS_SYNC_CONNS_H

#include <stdbool.h>

#include "sync/sync.h"

/* The sync was asked to stop. */
bool sync_cancelled(const sync_options *opt);

/* Connects (or reuses a kept connection) and registers it for cancellation. */
bool sync_connect(const cfg_source *src, const sync_options *opt, pgsrc_conn *conn, ds_error *err);

/* Unregisters; reusable: the caller's work on it succeeded, so it may be
 * kept for the next sync when it is idle and healthy. */
void sync_disconnect(const sync_options *opt, pgsrc_conn *conn, bool reusable);

#endif
