/* Cancellation of a running sync and the PostgreSQL connections a server
 * keeps between the syncs of a source. */
#include "sync/conns.h"

#include <string.h>

#include "common/log.h"

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

void sync_conn_cache_init(sync_conn_cache *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
}

void sync_conn_cache_destroy(sync_conn_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        pgsrc_disconnect(&c->idle[i]);
    c->n = 0;
    pthread_mutex_destroy(&c->lock);
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

/* A kept connection, registered for cancellation and checked with a round
 * trip (the server may have closed it while idle), or false when none is
 * usable. */
static bool take_kept(const sync_options *opt, pgsrc_conn *conn)
{
    sync_conn_cache *cache = opt->conns;
    for (;;) {
        pthread_mutex_lock(&cache->lock);
        bool any = cache->n > 0;
        if (any)
            *conn = cache->idle[--cache->n];
        pthread_mutex_unlock(&cache->lock);
        if (!any || sync_cancelled(opt)) {
            if (any)
                pgsrc_disconnect(conn);
            return false;
        }
        attach(opt, conn);
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

bool sync_connect(const cfg_source *src, const sync_options *opt, pgsrc_conn *conn, ds_error *err)
{
    if (sync_cancelled(opt))
        return ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    if (opt->conns != NULL && take_kept(opt, conn))
        return true;
    if (sync_cancelled(opt))
        return ds_error_set(err, DS_ERR_CANCELLED, "sync cancelled");
    if (!pgsrc_connect(src->url, src->query_timeout_s, conn, err))
        return false;
    pgsrc_set_log_name(conn, src->name);
    attach(opt, conn);
    return true;
}

void sync_disconnect(const sync_options *opt, pgsrc_conn *conn, bool reusable)
{
    cancel_register(opt->cancel, conn, false);
    if (reusable && opt->conns != NULL && conn_idle(conn) && !sync_cancelled(opt)) {
        conn->stop = NULL;
        pthread_mutex_lock(&opt->conns->lock);
        bool kept = opt->conns->n < SYNC_IDLE_CONNS;
        if (kept)
            opt->conns->idle[opt->conns->n++] = *conn;
        pthread_mutex_unlock(&opt->conns->lock);
        if (kept)
            return;
    }
    pgsrc_disconnect(conn);
}
