/* One sync of a source at a time across duckstore instances: a session
 * advisory lock on the source's PostgreSQL, taken on a connection of its
 * own for the whole sync. Internal to the sync engine. */
#ifndef DS_SYNC_SOURCE_LOCK_H
#define DS_SYNC_SOURCE_LOCK_H

#include <stdbool.h>

#include "source/pgsrc.h"
#include "sync/sync.h"

typedef struct source_lock {
    pgsrc_conn conn;
    /* The backend that holds it: a PID alone may be a later backend's. */
    int backend_pid;
    char backend_start[64];
} source_lock;

/* Connects and takes the source's lock. Held by another session:
 * DS_ERR_BUSY naming the holder, unless the holder is a backend this
 * process left holding it (source_lock_release after a failure on a path
 * that may hang): that one is ended and the lock taken. */
bool source_lock_take(const cfg_source *src, const sync_options *opt, source_lock *lock, ds_error *err);

/* Releases the lock and gives its connection back; failure: the sync's
 * error, NULL after a success. */
void source_lock_release(const cfg_source *src, const sync_options *opt, source_lock *lock,
                         const ds_error *failure);

#endif
