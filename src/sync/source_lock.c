/* The source's advisory lock (see source_lock.h), and the backends this
 * process left holding it. A sync that fails on PostgreSQL's side closes
 * the lock's connection without unlocking: the path may hang, and an unlock
 * sent over it would wait another query_timeout. Over a path that hung, the
 * backend notices the closed connection only when TCP gives up (minutes to
 * hours), and until then every later sync of the source would be refused
 * as "busy" by duckstore's own leftover. So such backends are remembered,
 * by PID and start time, and ended when they are found holding the lock. */
#include "sync/source_lock.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "sync/conns.h"

/* Two keys, duckstore's own first: clear of other applications' locks.
 * Keyed by the source's name, not by the DuckDB file: two instances on two
 * machines have two files, and exactly they must not both sync a source. */
#define SYNC_LOCK_CLASS "1146309425" /* "DSK1" */

/* How long a leftover backend, once told to end, is waited for. */
#define LEFTOVER_EXIT_WAIT_S 5.0

typedef struct leftover {
    char source[128];
    int pid;
    char started[64];
} leftover;

#define MAX_LEFTOVERS 32

static pthread_mutex_t g_leftovers_lock = PTHREAD_MUTEX_INITIALIZER;
static leftover g_leftovers[MAX_LEFTOVERS]; /* pid 0: a free slot */

/* One record per source (a source has one lock); when every slot is taken
 * the slots are reused in turn. */
static void remember_leftover(const char *source, int pid, const char *started)
{
    static size_t next_reused;
    pthread_mutex_lock(&g_leftovers_lock);
    leftover *slot = NULL;
    for (size_t i = 0; i < MAX_LEFTOVERS && slot == NULL; i++)
        if (g_leftovers[i].pid != 0 && strcmp(g_leftovers[i].source, source) == 0)
            slot = &g_leftovers[i];
    for (size_t i = 0; i < MAX_LEFTOVERS && slot == NULL; i++)
        if (g_leftovers[i].pid == 0)
            slot = &g_leftovers[i];
    if (slot == NULL)
        slot = &g_leftovers[next_reused++ % MAX_LEFTOVERS];
    snprintf(slot->source, sizeof slot->source, "%s", source);
    slot->pid = pid;
    snprintf(slot->started, sizeof slot->started, "%s", started);
    pthread_mutex_unlock(&g_leftovers_lock);
}

/* Whether pid/started is the source's leftover; forget: drop the record. */
static bool is_leftover(const char *source, int pid, const char *started, bool forget)
{
    bool found = false;
    pthread_mutex_lock(&g_leftovers_lock);
    for (size_t i = 0; i < MAX_LEFTOVERS; i++) {
        leftover *l = &g_leftovers[i];
        if (l->pid == 0 || strcmp(l->source, source) != 0)
            continue;
        found = pid == 0 || (l->pid == pid && strcmp(l->started, started) == 0);
        if (forget)
            memset(l, 0, sizeof *l);
        break;
    }
    pthread_mutex_unlock(&g_leftovers_lock);
    return found;
}

static void append_lock_key(ds_buf *sql, const char *name)
{
    ds_buf_append(sql, SYNC_LOCK_CLASS ", hashtext(");
    ds_buf_append_literal(sql, name);
    ds_buf_append(sql, ")");
}

/* Tries the lock once: *got whether it was taken; the session's PID and
 * start time are kept in lock for source_lock_release. */
static bool try_lock(const cfg_source *src, source_lock *lock, bool *got, ds_error *err)
{
    ds_buf sql = DS_BUF_INIT;
    ds_buf_append(&sql, "SELECT pg_try_advisory_lock(");
    append_lock_key(&sql, src->name);
    ds_buf_append(&sql, "), pg_backend_pid(), (SELECT backend_start::text FROM "
                        "pg_stat_get_activity(pg_backend_pid()))");
    PGresult *res = pgsrc_query_rows(&lock->conn, ds_buf_str(&sql), err);
    ds_buf_free(&sql);
    if (res == NULL)
        return false;
    bool ok = PQntuples(res) == 1 && PQnfields(res) == 3;
    if (ok) {
        *got = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        lock->backend_pid = atoi(PQgetvalue(res, 0, 1));
        snprintf(lock->backend_start, sizeof lock->backend_start, "%s", PQgetvalue(res, 0, 2));
    } else {
        ds_error_set(err, DS_ERR_SOURCE, "the source's lock query returned %d rows", PQntuples(res));
    }
    PQclear(res);
    return ok;
}

typedef struct lock_holder {
    int pid;
    char started[64];
    char described[256]; /* "PID 123 (duckstore from 10.0.0.5)" */
} lock_holder;

static void find_holder(pgsrc_conn *conn, const char *name, lock_holder *out)
{
    ds_buf sql = DS_BUF_INIT;
    ds_buf_append(&sql,
                  "SELECT a.pid, a.backend_start::text, format('PID %s (%s from %s)', a.pid, "
                  "a.application_name, coalesce(host(a.client_addr), 'a local socket')) FROM pg_locks l "
                  "JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND l.granted AND "
                  "l.objsubid = 2 AND l.classid = " SYNC_LOCK_CLASS " AND l.objid::int8 = (hashtext(");
    ds_buf_append_literal(&sql, name);
    ds_buf_append(&sql, ")::int8 & 4294967295) LIMIT 1");
    memset(out, 0, sizeof *out);
    snprintf(out->described, sizeof out->described, "another session");
    ds_error err;
    PGresult *res = pgsrc_query_rows(conn, ds_buf_str(&sql), &err);
    ds_buf_free(&sql);
    if (res != NULL && PQntuples(res) == 1 && PQnfields(res) == 3) {
        out->pid = atoi(PQgetvalue(res, 0, 0));
        snprintf(out->started, sizeof out->started, "%s", PQgetvalue(res, 0, 1));
        snprintf(out->described, sizeof out->described, "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
}

/* Ends the leftover backend and takes the lock once it is gone. */
static bool end_leftover(const cfg_source *src, source_lock *lock, const lock_holder *holder, bool *got,
                         ds_error *err)
{
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", holder->pid);
    char *ended = NULL;
    if (!pgsrc_query_value(&lock->conn, sql, &ended, err))
        return false;
    bool signalled = ended != NULL && strcmp(ended, "t") == 0;
    free(ended);
    if (signalled)
        ds_log_info("%s: ended PostgreSQL backend %s, which still held the source's sync lock after this "
                    "server gave its connection up",
                    src->name, holder->described);
    double until = ds_monotonic_s() + LEFTOVER_EXIT_WAIT_S;
    for (;;) {
        if (!try_lock(src, lock, got, err))
            return false;
        if (*got || !signalled || ds_monotonic_s() > until)
            return true;
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

typedef struct lock_try {
    const cfg_source *src;
    source_lock *lock;
    bool got;
} lock_try;

static bool first_try(pgsrc_conn *conn, void *ctx, ds_error *err)
{
    lock_try *t = ctx;
    (void)conn; /* t->lock->conn */
    return try_lock(t->src, t->lock, &t->got, err);
}

bool source_lock_take(const cfg_source *src, const sync_options *opt, source_lock *lock, ds_error *err)
{
    memset(lock, 0, sizeof *lock);
    lock_try first = {.src = src, .lock = lock};
    if (!sync_connect_then(src, opt, &lock->conn, first_try, &first, err))
        return false;
    bool got = first.got;
    bool ok = true;
    if (!got) {
        lock_holder holder;
        find_holder(&lock->conn, src->name, &holder);
        if (holder.pid != 0 && is_leftover(src->name, holder.pid, holder.started, true))
            ok = end_leftover(src, lock, &holder, &got, err);
        if (ok && !got)
            ok = ds_error_set(err, DS_ERR_BUSY,
                              "sync skipped: another duckstore instance is syncing %s (PostgreSQL advisory "
                              "lock held by %s); one instance syncs a source at a time, so the data stays as "
                              "it was; remove the source from one instance's config",
                              src->name, holder.described);
    } else {
        is_leftover(src->name, 0, "", true); /* gone by itself */
    }
    if (!ok)
        sync_disconnect(opt, &lock->conn, err->code == DS_ERR_BUSY);
    return ok;
}

/* After a failure that is not PostgreSQL's (DuckDB's, a configuration
 * error) the lock is released over the connection: it answers, and a
 * closed connection's backend releases the lock only when it exits. */
static bool unlock_first(const ds_error *failure)
{
    return failure == NULL || (failure->code != DS_ERR_SOURCE && failure->code != DS_ERR_TIMEOUT);
}

void source_lock_release(const cfg_source *src, const sync_options *opt, source_lock *lock,
                         const ds_error *failure)
{
    bool released = false;
    if (unlock_first(failure)) {
        ds_buf sql = DS_BUF_INIT;
        ds_buf_append(&sql, "SELECT pg_advisory_unlock(");
        append_lock_key(&sql, src->name);
        ds_buf_append(&sql, ")");
        char *answer = NULL;
        ds_error err;
        released = ds_buf_str(&sql) && pgsrc_query_value(&lock->conn, ds_buf_str(&sql), &answer, &err) &&
                   answer && strcmp(answer, "t") == 0;
        free(answer);
        ds_buf_free(&sql);
    }
    if (!released && lock->backend_pid != 0)
        remember_leftover(src->name, lock->backend_pid, lock->backend_start);
    /* A connection whose unlock failed or was not tried is closed: that
     * releases the lock too, once its backend notices. */
    sync_disconnect(opt, &lock->conn, released);
}
