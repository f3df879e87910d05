/* Cancellation of a running sync and the PostgreSQL connections a server
 * keeps between syncs (one pool for every source, under one cap). */
#include "sync/conns.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"

void sync_cancel_init(sync_cancel *c)
{
    memset(c, 0, sizeof *c);
    atomic_init(&c->requested, false);
    pthread_mutex_init(&c->lock, NULL);
}

void sync_cancel_destroy(sync_cancel *c)
{
    pthread_mutex_destroy(&c->lock);
}

void sync_cancel_request(sync_cancel *c)
{
    atomic_store(&c->requested, true);
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < SYNC_MAX_CONNS; i++)
        if (c->conns[i])
            pgsrc_cancel(c->conns[i]);
    pthread_mutex_unlock(&c->lock);
}

static void cancel_register(sync_cancel *c, pgsrc_conn *conn, bool add)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < SYNC_MAX_CONNS; i++) {
        if (add && c->conns[i] == NULL) {
            c->conns[i] = conn;
            break;
        }
        if (!add && c->conns[i] == conn) {
            c->conns[i] = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
}

bool sync_cancelled(const sync_options *opt)
{
    return opt->cancel != NULL && atomic_load(&opt->cancel->requested);
}

static bool conn_idle(const pgsrc_conn *conn)
{
    return !conn->hung && !conn->stop_sent && PQstatus(conn->pg) == CONNECTION_OK &&
           PQtransactionStatus(conn->pg) == PQTRANS_IDLE;
}

/* How long checking a kept connection waits for the answer: an idle
 * backend answers at once; one that stays silent (frozen host, dropped
 * path) is given up for a new connection instead of holding the sync up
 * for query_timeout. */
#define KEPT_CHECK_SILENCE_S 5.0

static void attach(const sync_options *opt, pgsrc_conn *conn)
{
    conn->stop = opt->cancel != NULL ? &opt->cancel->requested : NULL;
    cancel_register(opt->cancel, conn, true);
}

/* How long closing a kept connection waits for its backend to exit. */
#define CLOSE_WAIT_S 2.0

/* Closes a connection and waits (at most CLOSE_WAIT_S) until the server
 * closes its end: a backend leaves its socket open until the process dies
 * (PostgreSQL's "synchronous close"), after it has left the process array,
 * so a connection attempt that follows finds its slot free
 * (max_connections, a role's or database's CONNECTION LIMIT) and
 * pg_stat_activity no longer shows it. */
static void close_and_wait(pgsrc_conn *conn)
{
    int fd = conn->pg != NULL && PQsocket(conn->pg) >= 0 ? fcntl(PQsocket(conn->pg), F_DUPFD_CLOEXEC, 0) : -1;
    pgsrc_disconnect(conn);
    if (fd < 0)
        return;
    double deadline = ds_monotonic_s() + CLOSE_WAIT_S;
    char buf[512];
    for (;;) {
        double left = deadline - ds_monotonic_s();
        if (left <= 0)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int rc = poll(&p, 1, (int)(left * 1000.0) + 1);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            break;
        ssize_t got = recv(fd, buf, sizeof buf, 0);
        if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
            break; /* closed by the server (or reset): the backend is gone */
    }
    close(fd);
}

void sync_conn_pool_init(sync_conn_pool *p, size_t max_idle, double idle_timeout_s)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    p->max_idle = max_idle;
    p->idle_timeout_s = idle_timeout_s;
}

/* Takes the i-th idle entry out of the list (order kept). Lock held. */
static sync_kept_conn take_entry(sync_conn_pool *p, size_t i)
{
    sync_kept_conn e = p->idle[i];
    memmove(&p->idle[i], &p->idle[i + 1], (p->n - i - 1) * sizeof *p->idle);
    p->n--;
    return e;
}

static void close_entry(sync_kept_conn *e)
{
    close_and_wait(&e->conn);
    free(e->key);
}

/* Closes the oldest idle connections until at most keep are left. */
static size_t trim_to(sync_conn_pool *p, size_t keep)
{
    size_t closed = 0;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        bool over = p->n > keep;
        sync_kept_conn e;
        if (over)
            e = take_entry(p, 0);
        pthread_mutex_unlock(&p->lock);
        if (!over)
            return closed;
        close_entry(&e);
        closed++;
    }
}

void sync_conn_pool_configure(sync_conn_pool *p, size_t max_idle, double idle_timeout_s)
{
    pthread_mutex_lock(&p->lock);
    p->max_idle = max_idle;
    p->idle_timeout_s = idle_timeout_s;
    pthread_mutex_unlock(&p->lock);
    trim_to(p, max_idle);
}

double sync_conn_pool_expire(sync_conn_pool *p)
{
    for (;;) {
        pthread_mutex_lock(&p->lock);
        double now = ds_monotonic_s(), next = 0;
        bool expired = p->n > 0 && now - p->idle[0].idle_since >= p->idle_timeout_s;
        sync_kept_conn e;
        if (expired)
            e = take_entry(p, 0);
        else if (p->n > 0)
            next = p->idle[0].idle_since + p->idle_timeout_s;
        pthread_mutex_unlock(&p->lock);
        if (!expired)
            return next;
        ds_log_debug("closing a PostgreSQL connection idle for %.0f s", now - e.idle_since);
        close_entry(&e);
    }
}

size_t sync_conn_pool_release(sync_conn_pool *p)
{
    return trim_to(p, 0);
}

size_t sync_conn_pool_idle(sync_conn_pool *p)
{
    pthread_mutex_lock(&p->lock);
    size_t n = p->n;
    pthread_mutex_unlock(&p->lock);
    return n;
}

void sync_conn_pool_destroy(sync_conn_pool *p)
{
    for (size_t i = 0; i < p->n; i++) {
        pgsrc_disconnect(&p->idle[i].conn);
        free(p->idle[i].key);
    }
    for (size_t i = 0; i < p->n_lent; i++)
        free(p->lent[i].key);
    free(p->idle);
    free(p->lent);
    pthread_mutex_destroy(&p->lock);
}

/* The key of a source's connections: two are interchangeable when the
 * source, its url (server, role, options) and its query_timeout (the
 * session's statement_timeout) are the same. NULL when out of memory. */
static char *conn_key(const cfg_source *src)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "%s\n%s\n%.17g", src->name, src->url, src->query_timeout_s);
    return ds_buf_take(&b);
}

/* A kept connection of this key, registered for cancellation, or false
 * when none is usable. check: with a round trip (the server may have
 * closed it while idle); else the caller's first statement is the check
 * (sync_connect_then). */
static bool take_kept(const sync_options *opt, const char *key, bool check, pgsrc_conn *conn)
{
    sync_conn_pool *pool = opt->conns;
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        bool any = false;
        for (size_t i = pool->n; i-- > 0 && !any;) {
            if (strcmp(pool->idle[i].key, key) == 0) {
                sync_kept_conn e = take_entry(pool, i);
                free(e.key);
                *conn = e.conn;
                any = true;
            }
        }
        pthread_mutex_unlock(&pool->lock);
        if (!any || sync_cancelled(opt)) {
            if (any)
                pgsrc_disconnect(conn);
            return false;
        }
        attach(opt, conn);
        if (!check && conn_idle(conn))
            return true;
        double silence = conn->silence_s;
        if (conn->silence_s > KEPT_CHECK_SILENCE_S)
            conn->silence_s = KEPT_CHECK_SILENCE_S;
        ds_error ignored;
        ds_error_set(&ignored, DS_ERR_SOURCE, "closed");
        bool ok = conn_idle(conn) && pgsrc_exec(conn, "SELECT 1", &ignored);
        conn->silence_s = silence;
        if (ok)
            return true;
        cancel_register(opt->cancel, conn, false);
        ds_log_debug("a kept PostgreSQL connection did not answer (%s); connecting anew", ignored.msg);
        pgsrc_disconnect(conn);
    }
}

/* Remembers the key of a connection a sync has taken, until it gives it
 * back. False when out of memory (the connection is then not kept). */
static bool lend(sync_conn_pool *pool, const pgsrc_conn *conn, char *key)
{
    pthread_mutex_lock(&pool->lock);
    bool ok = pool->n_lent < pool->cap_lent;
    if (!ok) {
        size_t cap = pool->cap_lent ? pool->cap_lent * 2 : 16;
        sync_lent_conn *grown = realloc(pool->lent, cap * sizeof *grown);
        if (grown != NULL) {
            pool->lent = grown;
            pool->cap_lent = cap;
            ok = true;
        }
    }
    if (ok)
        pool->lent[pool->n_lent++] = (sync_lent_conn){.pg = conn->pg, .key = key};
    pthread_mutex_unlock(&pool->lock);
    if (!ok)
        free(key);
    return ok;
}

/* The key lent with a connection (the caller frees it), NULL when it was
 * not lent. Lock held. */
static char *unlend(sync_conn_pool *pool, const pgsrc_conn *conn)
{
    for (size_t i = 0; i < pool->n_lent; i++) {
        if (pool->lent[i].pg == conn->pg) {
            char *key = pool->lent[i].key;
            pool->lent[i] = pool->lent[--pool->n_lent];
            return key;
        }
    }
    return NULL;
}

/* PostgreSQL refused the connection for want of a slot: SQLSTATE 53300
 * (max_connections, or a role's or database's CONNECTION LIMIT). libpq
 * gives a failed connection's error as text only, so its messages are
 * matched, as the server words them. */
static bool too_many_connections(const ds_error *err)
{
    static const char *const texts[] = {"53300", "too many clients already", "too many connections for",
                                        "remaining connection slots are reserved"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        if (strstr(err->msg, texts[i]) != NULL)
            return true;
    return false;
}

static bool connect_new(const cfg_source *src, const sync_options *opt, pgsrc_conn *conn, ds_error *err)
{
    if (pgsrc_connect(src->url, src->query_timeout_s, conn, err))
        return true;
    if (opt->conns == NULL || !too_many_connections(err) || sync_cancelled(opt))
        return false;
    size_t closed = sync_conn_pool_release(opt->conns);
    ds_log_warn("%s: PostgreSQL has no connection slot left (%s); closed %zu idle kept connection%s, "
                "connecting once more",
                src->name, err->msg, closed, closed == 1 ? "" : "s");
    return pgsrc_connect(src->url, src->query_timeout_s, conn, err);
}

/* *kept: the connection is a kept one (else new). */
static bool connect_any(const cfg_source *src, const sync_options *opt, bool check_kept, pgsrc_conn *conn,
                        bool *kept, ds_error *err)
{
    *kept = false;
    if (sync_cancelled(opt))
        return ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    char *key = NULL;
    if (opt->conns != NULL && (key = conn_key(src)) != NULL && take_kept(opt, key, check_kept, conn)) {
        lend(opt->conns, conn, key);
        *kept = true;
        return true;
    }
    if (sync_cancelled(opt)) {
        free(key);
        return ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    }
    if (!connect_new(src, opt, conn, err)) {
        free(key);
        return false;
    }
    pgsrc_set_log_name(conn, src->name);
    attach(opt, conn);
    if (key != NULL)
        lend(opt->conns, conn, key);
    return true;
}

bool sync_connect(const cfg_source *src, const sync_options *opt, pgsrc_conn *conn, ds_error *err)
{
    bool kept = false;
    return connect_any(src, opt, true, conn, &kept, err);
}

/* A statement failed for a reason of the connection's own: the server
 * closed it, it was reset, or it stayed silent. */
static bool conn_gone(const pgsrc_conn *conn)
{
    return conn->hung || PQstatus(conn->pg) != CONNECTION_OK;
}

bool sync_connect_then(const cfg_source *src, const sync_options *opt, pgsrc_conn *conn,
                       sync_first_statement first, void *ctx, ds_error *err)
{
    for (;;) {
        bool kept = false;
        if (!connect_any(src, opt, false, conn, &kept, err))
            return false;
        double silence = conn->silence_s;
        if (kept && conn->silence_s > KEPT_CHECK_SILENCE_S)
            conn->silence_s = KEPT_CHECK_SILENCE_S;
        bool ok = first(conn, ctx, err);
        conn->silence_s = silence;
        if (ok)
            return true;
        bool again = kept && conn_gone(conn) && !sync_cancelled(opt);
        if (again)
            ds_log_debug("a kept PostgreSQL connection did not answer (%s); connecting anew", err->msg);
        sync_disconnect(opt, conn, false);
        if (!again)
            return false;
    }
}

/* Keeps a connection given back: while the pool is full its oldest idle
 * connection is closed first, so the server never sees more than max_idle
 * idle ones (besides those of running syncs). False when it is not kept. */
static bool keep(sync_conn_pool *pool, pgsrc_conn *conn, char *key)
{
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        size_t same = 0;
        for (size_t i = 0; i < pool->n; i++)
            same += strcmp(pool->idle[i].key, key) == 0;
        if (pool->max_idle == 0 || same >= SYNC_IDLE_CONNS) {
            pthread_mutex_unlock(&pool->lock);
            return false;
        }
        if (pool->n >= pool->max_idle) {
            sync_kept_conn oldest = take_entry(pool, 0);
            pthread_mutex_unlock(&pool->lock);
            close_entry(&oldest);
            continue;
        }
        bool ok = pool->n < pool->cap;
        if (!ok) {
            size_t cap = pool->cap ? pool->cap * 2 : 8;
            sync_kept_conn *grown = realloc(pool->idle, cap * sizeof *grown);
            if (grown != NULL) {
                pool->idle = grown;
                pool->cap = cap;
                ok = true;
            }
        }
        if (ok)
            pool->idle[pool->n++] =
                (sync_kept_conn){.key = key, .conn = *conn, .idle_since = ds_monotonic_s()};
        pthread_mutex_unlock(&pool->lock);
        return ok;
    }
}

void sync_disconnect(const sync_options *opt, pgsrc_conn *conn, bool reusable)
{
    cancel_register(opt->cancel, conn, false);
    char *key = NULL;
    if (opt->conns != NULL) {
        pthread_mutex_lock(&opt->conns->lock);
        key = unlend(opt->conns, conn);
        pthread_mutex_unlock(&opt->conns->lock);
    }
    if (key != NULL && reusable && conn_idle(conn) && !sync_cancelled(opt)) {
        conn->stop = NULL;
        if (keep(opt->conns, conn, key))
            return;
    }
    free(key);
    pgsrc_disconnect(conn);
}
