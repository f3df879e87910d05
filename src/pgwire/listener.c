/* The protocol's listener (listener.h): accept loop, startup packets,
 * TLS, cancel keys, the connection limit and the statement watchdog. */
#include "pgwire/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "pgwire/auth.h"
#include "pgwire/message.h"
#include "pgwire/session.h"

/* A client has this long to finish its startup and authentication. */
#define STARTUP_TIMEOUT_MS 60000
#define WATCHDOG_TICK_MS 10

struct pgl_listener {
    store *st;
    int fd;
    int wake[2]; /* written at stop: the accept loop leaves poll() */
    uint16_t port;
    SSL_CTX *tls;
    pga_users users;
    int max_connections;
    pgs_options session;
    pthread_t accept_thread, watchdog_thread;
    bool watchdog_started;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* a thread ended; the watchdog's tick */
    int threads;         /* connection threads alive */
    int sessions;        /* authenticated sessions, against max_connections */
    pgs_slot *slots;     /* sessions, for cancel keys and the watchdog */
    int *fds;            /* sockets of live connection threads, shut down at stop */
    size_t n_fds, cap_fds;
    bool stopping;
};

typedef struct pgl_client {
    pgl_listener *l;
    int fd;
    bool loopback;
} pgl_client;

static bool is_loopback(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_UNIX)
        return true;
    if (a->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)(const void *)a)->sin_addr.s_addr) >> 24) == 127;
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)a)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
}

static bool bind_listen(const char *where, int *fd, uint16_t *port, ds_error *err)
{
    const char *colon = strrchr(where, ':');
    if (colon == NULL || colon == where || colon[1] == '\0')
        return ds_error_set(err, DS_ERR_CONFIG,
                            "duckdb.yaml: pg_listen wants HOST:PORT (e.g. 127.0.0.1:5433), got \"%s\"",
                            where);
    char *host = strndup(where, (size_t)(colon - where));
    if (host == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    size_t hlen = strlen(host);
    if (hlen > 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    free(host);
    if (rc != 0 || res == NULL)
        return ds_error_set(err, DS_ERR_CONFIG, "duckdb.yaml: pg_listen \"%s\": %s", where, gai_strerror(rc));
    int s = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (s >= 0) {
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (res->ai_family == AF_INET6)
            setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (s < 0 || bind(s, res->ai_addr, res->ai_addrlen) != 0 || listen(s, SOMAXCONN) != 0) {
        int e = errno;
        if (s >= 0)
            close(s);
        freeaddrinfo(res);
        return ds_error_set(err, DS_ERR_USAGE, "cannot listen on pg_listen %s: %s%s", where, strerror(e),
                            e == EADDRINUSE ? " (another process listens there; stop it or change pg_listen)"
                                            : "");
    }
    freeaddrinfo(res);
    struct sockaddr_storage bound = {0};
    socklen_t len = sizeof bound;
    getsockname(s, (struct sockaddr *)&bound, &len);
    *port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)(void *)&bound)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)(void *)&bound)->sin_port);
    *fd = s;
    return true;
}

/* A relative path is the config directory's. */
static char *config_path(const char *dir, const char *path)
{
    ds_buf b = DS_BUF_INIT;
    if (path[0] == '/' || dir == NULL)
        ds_buf_append(&b, path);
    else
        ds_buf_appendf(&b, "%s/%s", dir, path);
    return ds_buf_take(&b);
}

static bool tls_setup(pgl_listener *l, const cfg_store *cs, const char *dir, ds_error *err)
{
    char *cert = config_path(dir, cs->pg_tls_cert), *key = config_path(dir, cs->pg_tls_key);
    bool ok = false;
    l->tls = SSL_CTX_new(TLS_server_method());
    if (cert == NULL || key == NULL || l->tls == NULL) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory setting up TLS");
    } else if (SSL_CTX_set_min_proto_version(l->tls, TLS1_2_VERSION) != 1 ||
               SSL_CTX_use_certificate_chain_file(l->tls, cert) != 1) {
        ds_error_set(err, DS_ERR_CONFIG,
                     "duckdb.yaml: pg_tls_cert %s cannot be used (%s); give a PEM certificate file", cert,
                     ERR_reason_error_string(ERR_peek_last_error())
                         ? ERR_reason_error_string(ERR_peek_last_error())
                         : "unreadable");
    } else if (SSL_CTX_use_PrivateKey_file(l->tls, key, SSL_FILETYPE_PEM) != 1 ||
               SSL_CTX_check_private_key(l->tls) != 1) {
        ds_error_set(
            err, DS_ERR_CONFIG,
            "duckdb.yaml: pg_tls_key %s cannot be used with pg_tls_cert (%s); give the certificate's "
            "PEM private key",
            key,
            ERR_reason_error_string(ERR_peek_last_error()) ? ERR_reason_error_string(ERR_peek_last_error())
                                                           : "unreadable");
    } else {
        ok = true;
    }
    ERR_clear_error();
    free(cert);
    free(key);
    return ok;
}

static void track_fd(pgl_listener *l, int fd, bool add)
{
    pthread_mutex_lock(&l->lock);
    if (add) {
        if (l->n_fds == l->cap_fds) {
            size_t cap = l->cap_fds ? l->cap_fds * 2 : 16;
            int *p = realloc(l->fds, cap * sizeof *p);
            if (p != NULL) {
                l->fds = p;
                l->cap_fds = cap;
            }
        }
        if (l->n_fds < l->cap_fds)
            l->fds[l->n_fds++] = fd;
    } else {
        for (size_t i = 0; i < l->n_fds; i++)
            if (l->fds[i] == fd) {
                l->fds[i] = l->fds[--l->n_fds];
                break;
            }
    }
    pthread_mutex_unlock(&l->lock);
}

static void cancel_request(pgl_listener *l, uint32_t pid, uint32_t secret)
{
    pthread_mutex_lock(&l->lock);
    for (pgs_slot *s = l->slots; s != NULL; s = s->next) {
        if (s->pid != pid)
            continue;
        pthread_mutex_lock(&s->lock);
        /* A wrong secret is ignored without a word, as PostgreSQL does. */
        if (CRYPTO_memcmp(&s->secret, &secret, sizeof secret) == 0 && (s->running != NULL || s->queued)) {
            s->cancelled = true;
            if (s->running != NULL)
                duckdb_interrupt(s->running);
        }
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_unlock(&l->lock);
}

static void refuse_startup(pgm_conn *c, const char *sqlstate, const char *msg)
{
    ds_error ignored;
    pgm_error(c, 'E', "FATAL", sqlstate, msg, 0);
    pgm_flush(c, &ignored);
}

/* The startup phase: SSL and GSSENC negotiation, a cancel, or the startup
 * packet; then the limit, authentication and the session. */
static void serve_client(pgl_client *cl)
{
    pgl_listener *l = cl->l;
    pgm_conn c = {.fd = cl->fd, .out = DS_BUF_INIT};
    /* The whole startup and login, TLS handshake included, must finish in
     * STARTUP_TIMEOUT_MS: a client that stalls half way is dropped. */
    struct timeval limit = {.tv_sec = STARTUP_TIMEOUT_MS / 1000};
    setsockopt(cl->fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    ds_buf body = DS_BUF_INIT;
    ds_error err;
    ds_error_clear(&err);
    bool timed_out, tls_tried = false;
    pgm_startup su;
    for (;;) {
        if (!pgm_read_startup(&c, &body, STARTUP_TIMEOUT_MS, &timed_out, &err) ||
            !pgm_parse_startup(body.data, body.len, &su, &err)) {
            if (err.code == DS_ERR_DECODE)
                refuse_startup(&c, "08P01", err.msg);
            goto done;
        }
        if (su.code == PGM_SSL_CODE && !tls_tried && c.ssl == NULL) {
            tls_tried = true;
            char answer = l->tls ? 'S' : 'N';
            /* Bytes sent after the request but before the answer would be
             * read as plaintext (CVE-2021-23214): refused. */
            if (c.rpos != c.rlen || !pgm_write_raw(&c, &answer, 1, &err))
                goto done;
            if (l->tls) {
                c.ssl = SSL_new(l->tls);
                if (c.ssl == NULL || SSL_set_fd(c.ssl, c.fd) != 1 || SSL_accept(c.ssl) != 1) {
                    ds_log_warn("pg: TLS handshake failed: %s",
                                ERR_reason_error_string(ERR_peek_last_error())
                                    ? ERR_reason_error_string(ERR_peek_last_error())
                                    : "client went away");
                    ERR_clear_error();
                    goto done;
                }
            }
            continue;
        }
        if (su.code == PGM_GSSENC_CODE && c.ssl == NULL) {
            /* No GSSAPI encryption: 'N', and the client goes on. */
            if (c.rpos != c.rlen || !pgm_write_raw(&c, "N", 1, &err))
                goto done;
            continue;
        }
        break;
    }
    if (su.code == PGM_CANCEL_CODE) {
        cancel_request(l, su.cancel_pid, su.cancel_secret);
        goto done;
    }
    if (su.code != PGM_PROTOCOL_3) {
        ds_buf m = DS_BUF_INIT;
        ds_buf_appendf(&m, "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0", su.code >> 16,
                       su.code & 0xffff);
        refuse_startup(&c, "0A000", ds_buf_str(&m) ? ds_buf_str(&m) : "unsupported protocol");
        ds_buf_free(&m);
        goto done;
    }
    const char *user = pgm_startup_param(&su, "user");
    if (user == NULL || user[0] == '\0') {
        refuse_startup(&c, "28000", "no PostgreSQL user name specified in startup packet");
        goto done;
    }
    const char *database = pgm_startup_param(&su, "database");
    const char *app = pgm_startup_param(&su, "application_name");
    pthread_mutex_lock(&l->lock);
    bool full = l->sessions >= l->max_connections;
    if (!full)
        l->sessions++;
    pthread_mutex_unlock(&l->lock);
    if (full) {
        refuse_startup(&c, "53300", "sorry, too many clients already (pg_max_connections in duckdb.yaml)");
        ds_log_warn("pg: refused a connection of user \"%s\": pg_max_connections (%d) sessions are open",
                    user, l->max_connections);
        goto done;
    }
    if (!pga_authenticate(&c, &l->users, user, cl->loopback, &err)) {
        if (err.code != DS_OK)
            ds_log_warn("pg: %s", err.msg);
    } else {
        struct timeval none = {0};
        setsockopt(cl->fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
        pgs_slot slot = {.next = NULL};
        pthread_mutex_init(&slot.lock, NULL);
        pthread_mutex_lock(&l->lock);
        /* Keys unique among live sessions. */
        for (bool unique = false; !unique;) {
            RAND_bytes((unsigned char *)&slot.pid, sizeof slot.pid);
            RAND_bytes((unsigned char *)&slot.secret, sizeof slot.secret);
            slot.pid &= 0x7fffffff;
            unique = slot.pid != 0;
            for (pgs_slot *s = l->slots; s != NULL && unique; s = s->next)
                unique = s->pid != slot.pid;
        }
        slot.shutting_down = l->stopping;
        slot.next = l->slots;
        l->slots = &slot;
        pthread_mutex_unlock(&l->lock);
        pgs_run(&c, &slot, &l->session, user, database ? database : user, app);
        pthread_mutex_lock(&l->lock);
        for (pgs_slot **p = &l->slots; *p != NULL; p = &(*p)->next)
            if (*p == &slot) {
                *p = slot.next;
                break;
            }
        pthread_mutex_unlock(&l->lock);
        pthread_mutex_destroy(&slot.lock);
    }
    pthread_mutex_lock(&l->lock);
    l->sessions--;
    pthread_mutex_unlock(&l->lock);
done:
    if (c.ssl != NULL) {
        SSL_shutdown(c.ssl);
        SSL_free(c.ssl);
        ERR_clear_error();
    }
    ds_buf_free(&body);
    ds_buf_free(&c.out);
}

static void *client_thread(void *arg)
{
    pgl_client *cl = arg;
    pgl_listener *l = cl->l;
    serve_client(cl);
    track_fd(l, cl->fd, false);
    close(cl->fd);
    free(cl);
    pthread_mutex_lock(&l->lock);
    l->threads--;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

static void *accept_thread(void *arg)
{
    pgl_listener *l = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = l->fd, .events = POLLIN}, {.fd = l->wake[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents != 0)
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        struct sockaddr_storage peer = {0};
        socklen_t len = sizeof peer;
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        pthread_mutex_lock(&l->lock);
        /* Connections still in their startup hold a thread each but no
         * session yet: bounded too, beyond the sessions' own limit. */
        bool too_many = l->threads >= 2 * l->max_connections + 16;
        pthread_mutex_unlock(&l->lock);
        if (too_many) {
            close(fd);
            continue;
        }
        pgl_client *cl = malloc(sizeof *cl);
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_mutex_lock(&l->lock);
        l->threads++;
        pthread_mutex_unlock(&l->lock);
        if (cl != NULL) {
            *cl = (pgl_client){.l = l, .fd = fd, .loopback = is_loopback(&peer)};
            track_fd(l, fd, true);
        }
        if (cl == NULL || pthread_create(&t, &attr, client_thread, cl) != 0) {
            if (cl != NULL)
                track_fd(l, fd, false);
            close(fd);
            free(cl);
            pthread_mutex_lock(&l->lock);
            l->threads--;
            pthread_mutex_unlock(&l->lock);
            ds_log_warn("pg: cannot start a session thread (out of memory or threads)");
        }
        pthread_attr_destroy(&attr);
    }
    return NULL;
}

static int64_t ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Interrupts statements past their statement_timeout. */
static void *watchdog_thread(void *arg)
{
    pgl_listener *l = arg;
    pthread_mutex_lock(&l->lock);
    while (!l->stopping) {
        struct timespec until = ds_timespec_in(CLOCK_REALTIME, WATCHDOG_TICK_MS);
        pthread_cond_timedwait(&l->cond, &l->lock, &until);
        for (pgs_slot *s = l->slots; s != NULL; s = s->next) {
            pthread_mutex_lock(&s->lock);
            if ((s->running != NULL || s->queued) && s->timeout_ms > 0 && !s->timed_out &&
                ms_since(&s->started) >= s->timeout_ms) {
                s->timed_out = true;
                if (s->running != NULL)
                    duckdb_interrupt(s->running);
            }
            pthread_mutex_unlock(&s->lock);
        }
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

bool pgl_start(store *st, const cfg_store *cs, const char *config_dir, pgl_listener **out, ds_error *err)
{
    *out = NULL;
    if (cs->pg_listen == NULL)
        return true;
    pgl_listener *l = calloc(1, sizeof *l);
    if (l == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    l->st = st;
    l->fd = -1;
    l->wake[0] = l->wake[1] = -1;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->cond, NULL);
    l->max_connections = cs->pg_max_connections;
    l->session = (pgs_options){.st = st,
                               .statement_timeout_ms = (int64_t)(cs->pg_statement_timeout_s * 1000),
                               .idle_timeout_ms =
                                   cs->pg_idle_timeout_s > 0 ? (int)(cs->pg_idle_timeout_s * 1000) : -1};
    l->users.trust = cs->pg_trust;
    l->users.n = cs->pg_user_names.n;
    l->users.names = calloc(l->users.n + 1, sizeof(char *));
    l->users.passwords = calloc(l->users.n + 1, sizeof(char *));
    bool ok = l->users.names != NULL && l->users.passwords != NULL;
    for (size_t i = 0; ok && i < l->users.n; i++) {
        l->users.names[i] = strdup(cs->pg_user_names.cols[i]);
        l->users.passwords[i] = strdup(cs->pg_user_passwords.cols[i]);
        ok = l->users.names[i] != NULL && l->users.passwords[i] != NULL;
    }
    if (!ok) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        pgl_stop(l);
        return false;
    }
    if ((cs->pg_tls_cert != NULL && !tls_setup(l, cs, config_dir, err)) ||
        !bind_listen(cs->pg_listen, &l->fd, &l->port, err)) {
        pgl_stop(l);
        return false;
    }
    if (pipe2(l->wake, O_CLOEXEC) != 0 ||
        pthread_create(&l->watchdog_thread, NULL, watchdog_thread, l) != 0) {
        ds_error_set(err, DS_ERR_NOMEM, "cannot start the PostgreSQL protocol listener: %s", strerror(errno));
        pgl_stop(l);
        return false;
    }
    l->watchdog_started = true;
    if (pthread_create(&l->accept_thread, NULL, accept_thread, l) != 0) {
        ds_error_set(err, DS_ERR_NOMEM, "cannot start the PostgreSQL protocol listener (out of threads)");
        pgl_stop(l);
        return false;
    }
    ds_log_about about = {.event = "pg_listening"};
    ds_log_field fields[] = {DS_LOG_FIELD_STR("pg_listen", cs->pg_listen), DS_LOG_FIELD_INT("port", l->port),
                             DS_LOG_FIELD_BOOL("tls", l->tls != NULL)};
    ds_log_event(DS_LOG_INFO, &about, fields, sizeof fields / sizeof fields[0],
                 "PostgreSQL protocol on %s (port %u)%s, %s", cs->pg_listen, l->port,
                 l->tls ? ", TLS available" : "",
                 cs->pg_trust ? "trust for loopback clients" : "SCRAM-SHA-256 against pg_users");
    *out = l;
    return true;
}

uint16_t pgl_port(const pgl_listener *l)
{
    return l ? l->port : 0;
}

void pgl_stop(pgl_listener *l)
{
    if (l == NULL)
        return;
    bool accepting = l->wake[1] >= 0 && l->watchdog_started;
    if (l->wake[1] >= 0 && write(l->wake[1], "x", 1) < 0) {
        /* the accept loop also ends when the socket closes */
    }
    if (accepting && l->fd >= 0) {
        pthread_join(l->accept_thread, NULL);
    }
    pthread_mutex_lock(&l->lock);
    l->stopping = true;
    for (pgs_slot *s = l->slots; s != NULL; s = s->next) {
        pthread_mutex_lock(&s->lock);
        s->shutting_down = true;
        if (s->running != NULL)
            duckdb_interrupt(s->running);
        pthread_mutex_unlock(&s->lock);
    }
    /* Sessions blocked reading from their client wake up and end. */
    for (size_t i = 0; i < l->n_fds; i++)
        shutdown(l->fds[i], SHUT_RDWR);
    pthread_cond_broadcast(&l->cond);
    while (l->threads > 0)
        pthread_cond_wait(&l->cond, &l->lock);
    pthread_mutex_unlock(&l->lock);
    if (l->watchdog_started)
        pthread_join(l->watchdog_thread, NULL);
    if (l->fd >= 0)
        close(l->fd);
    for (int i = 0; i < 2; i++)
        if (l->wake[i] >= 0)
            close(l->wake[i]);
    for (size_t i = 0; i < l->users.n; i++) {
        free(l->users.names ? l->users.names[i] : NULL);
        if (l->users.passwords && l->users.passwords[i]) {
            OPENSSL_cleanse(l->users.passwords[i], strlen(l->users.passwords[i]));
            free(l->users.passwords[i]);
        }
    }
    free(l->users.names);
    free(l->users.passwords);
    SSL_CTX_free(l->tls);
    free(l->fds);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->cond);
    free(l);
}
