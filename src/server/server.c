/* `duckstore serve`: opens the store, starts the jobs and the HTTP daemon
 * (http.c) with the API's router (api.c), and runs until a signal. */
#include "server/server.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/sdnotify.h"
#include "common/strbuf.h"
#include "pgwire/listener.h"
#include "server/api.h"
#include "server/axis.h"
#include "server/http.h"
#include "server/query.h"
#include "server/jobs.h"
#include "store/store.h"
#include "sync/sync.h"

#define DEFAULT_LISTEN "127.0.0.1:8500"

struct http_server {
    store *st;
    bool db_path_given; /* --db: duckdb.path is not the file in use */
    jobs jobs;
    bool jobs_ready; /* jobs_init succeeded: jobs_destroy is due */
    struct MHD_Daemon *daemon;
    int listen_fd; /* bound before anything else; the daemon's once it started */
    char *api_token;
    uint16_t port;
    api_ctx api;
    http_router router;
    char *serve_file; /* <file>.serve.json once written; NULL before */
    pgl_listener *pg; /* pg_listen: PostgreSQL's protocol; NULL when off */
};

static bool parse_listen(const char *listen, struct sockaddr_storage *addr, socklen_t *len, ds_error *err)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || colon == listen || colon[1] == '\0')
        return ds_error_set(err, DS_ERR_USAGE, "--listen wants HOST:PORT (e.g. 127.0.0.1:8500), got \"%s\"",
                            listen);
    size_t hlen = (size_t)(colon - listen);
    if (hlen >= sizeof host)
        return ds_error_set(err, DS_ERR_USAGE, "--listen host too long");
    memcpy(host, listen, hlen);
    host[hlen] = '\0';
    if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') { /* [::1]:8500 */
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
        return ds_error_set(err, DS_ERR_USAGE, "--listen port must be 0-65535, got \"%s\"", colon + 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%ld", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0 || res == NULL)
        return ds_error_set(err, DS_ERR_USAGE, "--listen host \"%s\": %s", host, gai_strerror(rc));
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

static uint16_t addr_port(const struct sockaddr_storage *addr)
{
    if (addr->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)addr)->sin6_port);
    return ntohs(((const struct sockaddr_in *)(const void *)addr)->sin_port);
}

/* 127.0.0.0/8, ::1 and ::ffff:127.x: only this host can connect. */
static bool is_loopback(const struct sockaddr_storage *addr)
{
    if (addr->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)(const void *)addr)->sin_addr.s_addr) >> 24) == 127;
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
}

/* Binds and listens on addr before anything else happens (no DuckDB file
 * opened, no sync started), so a taken port fails the start at once.
 * *port: the port bound (the kernel's choice for port 0). */
static bool bind_listener(const struct sockaddr_storage *addr, socklen_t len, const char *listen_text,
                          int *fd, uint16_t *port, ds_error *err)
{
    int s = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return ds_error_set(err, DS_ERR_USAGE, "cannot listen on %s: socket: %s", listen_text,
                            strerror(errno));
    int one = 1;
    /* REUSEADDR: a restart binds while the old server's connections are in
     * TIME_WAIT; V6ONLY: [::] is IPv6 only, as before. */
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addr->ss_family == AF_INET6)
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(s, (const struct sockaddr *)addr, len) != 0 || listen(s, SOMAXCONN) != 0) {
        int e = errno;
        close(s);
        if (e == EADDRINUSE)
            return ds_error_set(err, DS_ERR_USAGE,
                                "cannot listen on %s: port %u in use (another process listens there); stop "
                                "it or choose another --listen",
                                listen_text, addr_port(addr));
        if (e == EADDRNOTAVAIL)
            return ds_error_set(err, DS_ERR_USAGE,
                                "cannot listen on %s: the address is not one of this host's; choose another "
                                "--listen",
                                listen_text);
        if (e == EACCES)
            return ds_error_set(err, DS_ERR_USAGE,
                                "cannot listen on %s: permission denied (ports below 1024 need privileges); "
                                "choose another --listen",
                                listen_text);
        return ds_error_set(err, DS_ERR_USAGE, "cannot listen on %s: %s", listen_text, strerror(e));
    }
    int flags = fcntl(s, F_GETFL);
    if (flags >= 0)
        fcntl(s, F_SETFL, flags | O_NONBLOCK);
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof bound;
    *port = getsockname(s, (struct sockaddr *)&bound, &bound_len) == 0 ? addr_port(&bound) : addr_port(addr);
    *fd = s;
    return true;
}

char *http_serve_file_path(const char *db_path)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "%s.serve.json", db_path);
    return ds_buf_take(&b);
}

/* The address a client on this host reaches the listener at: a wildcard
 * host is reached through loopback. */
static char *client_url(const char *listen, uint16_t port)
{
    const char *colon = strrchr(listen, ':');
    size_t hlen = colon ? (size_t)(colon - listen) : 0;
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "http://");
    if (hlen == 0 || (hlen == 7 && strncmp(listen, "0.0.0.0", 7) == 0))
        ds_buf_append(&b, "127.0.0.1");
    else if ((hlen == 4 && strncmp(listen, "[::]", 4) == 0) || (hlen == 2 && strncmp(listen, "::", 2) == 0))
        ds_buf_append(&b, "[::1]");
    else
        ds_buf_appendn(&b, listen, hlen);
    ds_buf_appendf(&b, ":%u", port);
    return ds_buf_take(&b);
}

/* <file>.serve.json tells the CLI where this server answers for its file
 * (the file itself is locked while the server runs): PID, URL and whether a
 * token is required, never the token. Written whole (temp + rename), so a
 * reader never sees half of it. A failure is a warning: the server works,
 * only the CLI cannot find it. */
static void write_serve_file(http_server *srv, const char *listen)
{
    errno = 0;
    char *path = http_serve_file_path(store_path(srv->st));
    char *url = client_url(listen, srv->port);
    ds_buf tmp = DS_BUF_INIT;
    ds_buf_appendf(&tmp, "%s.%ld.tmp", path ? path : "", (long)getpid());
    json_t *doc = url ? json_pack("{s:I,s:s,s:s,s:b}", "pid", (json_int_t)getpid(), "url", url, "listen",
                                  listen, "token_required", srv->api_token != NULL)
                      : NULL;
    const char *tmp_path = ds_buf_str(&tmp);
    FILE *f = path && doc && tmp_path ? fopen(tmp_path, "w") : NULL;
    bool ok = f != NULL && json_dumpf(doc, f, JSON_PRESERVE_ORDER) == 0 && fputc('\n', f) != EOF;
    if (f != NULL && fclose(f) != 0)
        ok = false;
    if (ok && rename(tmp_path, path) == 0) {
        srv->serve_file = path;
        path = NULL;
    } else {
        ds_log_warn(
            "cannot write %s (%s): duckstore query, status, sync and reset-watermark cannot find this "
            "server and will report the DuckDB file in use",
            path ? path : "the server file",
            f == NULL && errno ? strerror(errno) : "out of memory or disk full");
        if (tmp_path != NULL)
            unlink(tmp_path);
    }
    json_decref(doc);
    ds_buf_free(&tmp);
    free(url);
    free(path);
}

bool http_serve_file_find(const char *db_path, http_serve_info *out)
{
    memset(out, 0, sizeof *out);
    char *path = http_serve_file_path(db_path);
    json_t *doc = path ? json_load_file(path, 0, NULL) : NULL;
    free(path);
    json_int_t pid = json_integer_value(json_object_get(doc, "pid"));
    const char *url = json_string_value(json_object_get(doc, "url"));
    /* A PID that is gone: a server killed without its shutdown (SIGKILL,
     * a crash) left the file behind. EPERM: alive, another user's. */
    bool alive = pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
    if (alive && url != NULL && (out->url = strdup(url)) != NULL) {
        out->pid = (long)pid;
        out->token_required = json_is_true(json_object_get(doc, "token_required"));
    }
    json_decref(doc);
    return out->url != NULL;
}

void http_serve_info_free(http_serve_info *info)
{
    free(info->url);
    info->url = NULL;
}

/* Frees what http_server_start set up; the jobs are shut down already. */
static void server_free(http_server *srv)
{
    if (srv->jobs_ready)
        jobs_destroy(&srv->jobs);
    if (srv->daemon == NULL && srv->listen_fd >= 0)
        close(srv->listen_fd);
    pgl_stop(srv->pg);
    if (srv->st)
        store_close(srv->st);
    free(srv->api_token);
    free(srv->serve_file);
    http_router_free(&srv->router);
    axis_cache_free();
    free(srv);
}

/* A start that failed half way: stops what was started, frees the rest. */
static bool abandon(http_server *srv)
{
    if (srv->jobs_ready)
        jobs_shutdown(&srv->jobs);
    server_free(srv);
    return false;
}

/* The store, its read pool and the jobs' records (which take cfg over). */
static bool open_store(http_server *srv, cfg_config *cfg, const http_options *opt, ds_error *err)
{
    store_settings settings = {.memory_limit = cfg->store.memory_limit,
                               .read_memory_limit = cfg->store.read_memory_limit
                                                        ? cfg->store.read_memory_limit
                                                        : CFG_READ_MEMORY_LIMIT_DEFAULT,
                               .threads = cfg_serve_threads(&cfg->store),
                               .read_concurrency = cfg_read_concurrency(&cfg->store),
                               .read_turn_ms = (int)(cfg->store.read_turn_s * 1000)};
    if (!store_open_ext(opt->db_path ? opt->db_path : cfg->store.path, &settings, &srv->st, err))
        return false;
    if (settings.threads > cfg->store.threads)
        ds_log_info("DuckDB threads %d: threads %d for syncs plus read_threads %d for readers",
                    settings.threads, cfg->store.threads, settings.threads - cfg->store.threads);
    if (!sync_cleanup_staging(srv->st, cfg, err))
        ds_log_warn("could not drop leftover staging tables: %s", err->msg);
    /* API reads of DuckDB (status documents) share query_concurrency connections. */
    if (!store_pool_open(srv->st, (size_t)cfg->store.query_concurrency, err) ||
        !pgl_start(srv->st, &cfg->store, cfg->dir, &srv->pg, err) ||
        !jobs_init(&srv->jobs, srv->st, cfg, err))
        return false;
    srv->jobs_ready = true;
    return true;
}

bool http_server_start(cfg_config *cfg, const http_options *opt, http_server **out, ds_error *err)
{
    *out = NULL;
    const char *listen = opt->listen ? opt->listen : DEFAULT_LISTEN;
    struct sockaddr_storage addr;
    socklen_t addr_len = 0;
    if (!parse_listen(listen, &addr, &addr_len, err))
        return false;
    http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    srv->listen_fd = -1;
    if (!bind_listener(&addr, addr_len, listen, &srv->listen_fd, &srv->port, err))
        return abandon(srv);
    bool has_token = opt->api_token && opt->api_token[0];
    if (!has_token && !is_loopback(&addr)) {
        ds_log_about about = {.event = "listen_without_token"};
        ds_log_field fields[] = {DS_LOG_FIELD_STR("listen", listen)};
        ds_log_event(DS_LOG_WARN, &about, fields, 1,
                     "--listen %s reaches beyond loopback and DUCKSTORE_API_TOKEN is not set: anyone who can "
                     "reach this address can read the data, run queries and start syncs; set "
                     "DUCKSTORE_API_TOKEN (or listen on 127.0.0.1 behind a proxy that authenticates)",
                     listen);
    }
    srv->db_path_given = opt->db_path != NULL;
    bool startup_sync = cfg->store.enabled && cfg->store.sync_mode == CFG_SYNC_STARTUP;
    if (has_token && (srv->api_token = strdup(opt->api_token)) == NULL) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        return abandon(srv);
    }
    /* Copied before the jobs take cfg over; a reload keeps them. */
    if (!http_router_set_cors(&srv->router, cfg->store.cors_origins.cols, cfg->store.cors_origins.n)) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        return abandon(srv);
    }
    if (!open_store(srv, cfg, opt, err))
        return abandon(srv);
    srv->api = (api_ctx){.st = srv->st, .jobs = &srv->jobs, .api_token = srv->api_token};
    srv->router.route = api_route;
    srv->router.cls = &srv->api;
    /* Startup syncs begin before the first request is accepted, so the very
     * first status answer already shows them as syncing, not not_synced. */
    if (!jobs_start_background(&srv->jobs, startup_sync, err))
        return abandon(srv);
    srv->daemon = http_daemon_start(srv->listen_fd, addr.ss_family == AF_INET6, &srv->router);
    if (srv->daemon == NULL) {
        ds_error_set(err, DS_ERR_STORE, "cannot start the HTTP server on %s (out of memory or threads)",
                     listen);
        return abandon(srv);
    }
    write_serve_file(srv, listen);
    ds_log_about about = {.event = "listening"};
    ds_log_field fields[] = {DS_LOG_FIELD_STR("listen", listen), DS_LOG_FIELD_INT("port", srv->port),
                             DS_LOG_FIELD_BOOL("token_required", srv->api_token != NULL)};
    ds_log_event(DS_LOG_INFO, &about, fields, sizeof fields / sizeof fields[0], "listening on %s (port %u)%s",
                 listen, srv->port, srv->api_token ? ", bearer token required for /api/ and /metrics" : "");
    *out = srv;
    return true;
}

uint16_t http_server_port(const http_server *srv)
{
    return srv->port;
}

void http_server_stop(http_server *srv)
{
    if (srv == NULL)
        return;
    /* Stop accepting first, then the scheduler and the syncs. */
    MHD_socket fd = MHD_quiesce_daemon(srv->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    /* The CLI stops coming here, and opens the file itself once it is free. */
    if (srv->serve_file != NULL)
        unlink(srv->serve_file);
    pgl_stop(srv->pg);
    srv->pg = NULL;
    query_shutdown();
    jobs_shutdown(&srv->jobs);
    MHD_stop_daemon(srv->daemon);
    server_free(srv);
}

static bool same_text(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The protocol's listener copied its settings at start. */
static bool pg_settings_equal(const cfg_store *a, const cfg_store *b)
{
    bool same = same_text(a->pg_listen, b->pg_listen) && a->pg_max_connections == b->pg_max_connections &&
                a->pg_idle_timeout_s == b->pg_idle_timeout_s &&
                a->pg_statement_timeout_s == b->pg_statement_timeout_s &&
                same_text(a->pg_tls_cert, b->pg_tls_cert) && same_text(a->pg_tls_key, b->pg_tls_key) &&
                a->pg_trust == b->pg_trust && a->pg_user_names.n == b->pg_user_names.n;
    for (size_t i = 0; same && i < a->pg_user_names.n; i++)
        same = strcmp(a->pg_user_names.cols[i], b->pg_user_names.cols[i]) == 0 &&
               strcmp(a->pg_user_passwords.cols[i], b->pg_user_passwords.cols[i]) == 0;
    return same;
}

/* A memory limit read at start (NULL: its default, shown as fallback):
 * a new value is logged and the one in force kept. */
static void keep_limit(const char *key, const char *was, char **now, const char *fallback, const char *why)
{
    const char *a = was != NULL ? was : fallback, *b = *now != NULL ? *now : fallback;
    if ((a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0))
        ds_log_warn("config reload: duckdb.%s changed from %s to %s; %s", key, a ? a : "(none)",
                    b ? b : "(none)", why);
    char *keep = was != NULL ? strdup(was) : NULL;
    if (was == NULL || keep != NULL) {
        free(*now);
        *now = keep;
    }
}

/* Settings read once, at start (the DuckDB file and how it is opened, the
 * API's read pool, duckdb.enabled): a new value is logged and the one in
 * force is kept until a restart. */
static void keep_restart_settings(const http_server *srv, const cfg_store *was, cfg_store *now)
{
    static const char why[] = "needs a restart; keeping the value in force until then";
    if (strcmp(was->path, now->path) != 0) {
        if (!srv->db_path_given)
            ds_log_warn("config reload: duckdb.path changed from \"%s\" to \"%s\"; %s", was->path, now->path,
                        why);
        char *keep = strdup(was->path);
        if (keep != NULL) {
            free(now->path);
            now->path = keep;
        }
    }
    keep_limit("memory_limit", was->memory_limit, &now->memory_limit, NULL, why);
    /* DuckDB's limit holds it from the start; the query API's per-query
     * cap follows it too, so a new value would not match DuckDB's. */
    keep_limit("read_memory_limit", was->read_memory_limit, &now->read_memory_limit,
               CFG_READ_MEMORY_LIMIT_DEFAULT, why);
    if (was->threads != now->threads)
        ds_log_warn("config reload: duckdb.threads changed from %d to %d; %s", was->threads, now->threads,
                    why);
    if (was->read_threads != now->read_threads)
        ds_log_warn("config reload: duckdb.read_threads changed; %s", why);
    if (was->read_concurrency != now->read_concurrency || was->read_turn_s != now->read_turn_s)
        ds_log_warn("config reload: duckdb.read_concurrency or read_turn_seconds changed; %s", why);
    if (was->query_concurrency != now->query_concurrency)
        ds_log_warn("config reload: duckdb.query_concurrency changed from %d to %d; %s",
                    was->query_concurrency, now->query_concurrency, why);
    if (was->log_format != now->log_format)
        ds_log_warn("config reload: duckdb.log_format changed from %s to %s; %s",
                    ds_log_format_name(was->log_format), ds_log_format_name(now->log_format), why);
    now->log_format = was->log_format;
    if (was->enabled != now->enabled)
        ds_log_warn("config reload: duckdb.enabled changed from %s to %s; %s",
                    was->enabled ? "true" : "false", now->enabled ? "true" : "false", why);
    if (!pg_settings_equal(was, now))
        ds_log_warn("config reload: the pg_ settings (PostgreSQL protocol) changed; %s", why);
    now->threads = was->threads;
    now->read_threads = was->read_threads;
    now->read_concurrency = was->read_concurrency;
    now->read_turn_s = was->read_turn_s;
    now->query_concurrency = was->query_concurrency;
    now->enabled = was->enabled;
}

bool http_server_reload(http_server *srv)
{
    const cfg_config *was = jobs_config_acquire(&srv->jobs);
    cfg_config now;
    ds_error err;
    ds_error_clear(&err);
    bool ok = cfg_load_dir(was->dir, &now, &err);
    if (ok)
        keep_restart_settings(srv, &was->store, &now.store);
    else
        ds_log_error("config reload failed: %s; the config in force stays", err.msg);
    jobs_config_release(&srv->jobs, was);
    if (ok)
        jobs_reload(&srv->jobs, &now);
    return ok;
}

int http_serve_until_signal(cfg_config *cfg, const http_options *opt)
{
    /* Block the signals in every thread; this one waits for them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    http_server *srv;
    ds_error err;
    if (!http_server_start(cfg, opt, &srv, &err) || srv == NULL) {
        ds_log_about about = {.event = "start_failed"};
        ds_log_field fields[] = {DS_LOG_FIELD_INT("exit_code", err.code == DS_ERR_USAGE ? 2 : 1)};
        ds_log_event(DS_LOG_ERROR, &about, fields, 1, "%s", err.msg);
        return err.code == DS_ERR_USAGE ? 2 : 1;
    }
    ds_sdnotify_ready();
    int sig = 0;
    for (;;) {
        if (sigwait(&set, &sig) != 0 || sig != SIGHUP)
            break;
        ds_log_info("SIGHUP received: reloading the config");
        ds_sdnotify_reloading();
        http_server_reload(srv);
        ds_sdnotify_ready();
    }
    ds_log_info("%s received: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    ds_sdnotify_stopping();
    http_server_stop(srv);
    ds_log_info("stopped");
    return 0;
}
