/* HTTP front of `duckstore serve`: routing, JSON answers, token auth,
 * access log, limits, and the signal-driven main loop. Handlers only read
 * memory or start background work, so every answer is immediate. */
#include "server/server.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "server/jobs.h"
#include "store/store.h"
#include "sync/sync.h"

#define MAX_URL_BYTES 2048
#define MAX_BODY_BYTES 65536

struct http_server {
    cfg_config *cfg;
    store *st;
    jobs jobs;
    struct MHD_Daemon *daemon;
    char *api_token;
    uint16_t port;
};

/* Per-request state: start time for the access log, body accounting. */
typedef struct request_ctx {
    struct timespec started;
    size_t body_bytes;
    unsigned status;
    const char *allow; /* Allow header of a 405 answer */
    char method[16];
    char path[200]; /* printable copy for the access log */
} request_ctx;

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, surrogates or code points past U+10FFFF), 0 if there is none. */
static size_t utf8_sequence(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    size_t n = s[0] >= 0xc2 && s[0] <= 0xdf   ? 2
               : s[0] >= 0xe0 && s[0] <= 0xef ? 3
               : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
                                              : 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0) || (s[0] == 0xf0 && s[1] < 0x90) ||
        (s[0] == 0xf4 && s[1] >= 0x90))
        return 0;
    return n;
}

/* Copies untrusted text (a path, a query parameter) for the log or a JSON
 * message: control bytes and bytes that are not well-formed UTF-8 become
 * '?', and a character is never cut in half, so the copy is always valid
 * UTF-8 without line breaks. */
static void printable_copy(char *dst, size_t cap, const char *src)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0, o = 0;
    while (s[i] && o + 1 < cap) {
        size_t n = utf8_sequence(s + i);
        if (n == 0 || s[i] < 0x20 || s[i] == 0x7f) {
            dst[o++] = '?';
            i++;
        } else if (o + n < cap) {
            memcpy(dst + o, s + i, n);
            o += n;
            i += n;
        } else {
            break;
        }
    }
    dst[o] = '\0';
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decoding of the path and the query parameters, except %00 and
 * %2F, which stay as they are: a decoded NUL would cut the path short
 * ("/api/store/sync/x%00/y" is not "/api/store/sync/x") and an encoded
 * slash is not a path separator (RFC 3986), so both paths simply match no
 * route. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    char *w = s;
    for (const char *r = s; *r;) {
        int hi = r[0] == '%' ? hex_digit(r[1]) : -1, lo = hi >= 0 ? hex_digit(r[2]) : -1;
        int c = hi * 16 + lo;
        if (lo >= 0 && c != 0 && c != '/') {
            *w++ = (char)c;
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

static enum MHD_Result send_text(struct MHD_Connection *conn, request_ctx *rc, unsigned status,
                                 const char *type, const char *body)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED && rc->allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rc->allow);
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    rc->status = status;
    return ret;
}

/* Sends a JSON document and takes ownership of it. */
static enum MHD_Result send_json(struct MHD_Connection *conn, request_ctx *rc, unsigned status, json_t *doc)
{
    char *body = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    json_decref(doc);
    if (body == NULL)
        return MHD_NO;
    enum MHD_Result ret = send_text(conn, rc, status, "application/json", body);
    free(body);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, request_ctx *rc, unsigned status,
                                  const char *msg)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "success", json_false());
    json_t *text = json_string(msg);
    if (text == NULL) { /* not UTF-8: still say what went wrong */
        char safe[1024];
        printable_copy(safe, sizeof safe, msg);
        text = json_string(safe);
    }
    json_object_set_new(doc, "error", text);
    return send_json(conn, rc, status, doc);
}

/* A 405 must name the methods the resource does take (RFC 9110 15.5.6);
 * no resource takes both GET and POST, so each route passes its own. */
static enum MHD_Result send_not_allowed(struct MHD_Connection *conn, request_ctx *rc, const char *allow,
                                        const char *msg)
{
    rc->allow = allow;
    return send_error(conn, rc, MHD_HTTP_METHOD_NOT_ALLOWED, msg);
}

static enum MHD_Result send_message(struct MHD_Connection *conn, request_ctx *rc, unsigned status,
                                    const char *msg)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "success", json_true());
    json_object_set_new(doc, "message", json_string(msg));
    return send_json(conn, rc, status, doc);
}

/* Constant-time comparison, so response timing does not leak the token. */
static bool token_matches(const char *given, const char *expected)
{
    size_t lg = strlen(given), le = strlen(expected);
    unsigned char diff = (unsigned char)(lg != le);
    for (size_t i = 0; i < le; i++)
        diff |= (unsigned char)(expected[i] ^ (i < lg ? given[i] : 0));
    return diff == 0;
}

static bool authorized(http_server *srv, struct MHD_Connection *conn)
{
    if (srv->api_token == NULL)
        return true;
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    /* The auth scheme is case-insensitive (RFC 9110 11.1): "bearer" is fine. */
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    return token_matches(auth + 7, srv->api_token);
}

typedef struct query_check {
    const char *allowed; /* the one accepted key, or NULL */
    bool rejected;
    char bad[128]; /* the first other key, printable */
} query_check;

static enum MHD_Result check_query_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    (void)value;
    query_check *qc = cls;
    if (!qc->rejected && (qc->allowed == NULL || strcmp(key, qc->allowed) != 0)) {
        qc->rejected = true;
        printable_copy(qc->bad, 101, key);
    }
    return MHD_YES;
}

/* Rejects query parameters other than `allowed`; returns false and sends 400. */
static bool query_ok(struct MHD_Connection *conn, request_ctx *rc, const char *allowed, enum MHD_Result *ret)
{
    query_check qc = {.allowed = allowed, .rejected = false, .bad = ""};
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, check_query_arg, &qc);
    if (!qc.rejected)
        return true;
    char msg[256];
    snprintf(msg, sizeof msg, "unknown query parameter \"%s\"%s%s", qc.bad, allowed ? "; accepted: " : "",
             allowed ? allowed : "");
    *ret = send_error(conn, rc, MHD_HTTP_BAD_REQUEST, msg);
    return false;
}

static bool valid_source_name(const char *name, size_t len)
{
    if (len == 0 || len > 63)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

static enum MHD_Result unknown_source(http_server *srv, struct MHD_Connection *conn, request_ctx *rc,
                                      const char *name)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "success", json_false());
    char msg[256];
    snprintf(msg, sizeof msg, "no source named \"%.100s\"", name);
    json_object_set_new(doc, "error", json_string(msg));
    json_t *known = json_array();
    for (size_t i = 0; i < srv->cfg->n_sources; i++)
        json_array_append_new(known, json_string(srv->cfg->sources[i].name));
    json_object_set_new(doc, "sources", known);
    return send_json(conn, rc, MHD_HTTP_NOT_FOUND, doc);
}

static enum MHD_Result handle_sync_one(http_server *srv, struct MHD_Connection *conn, request_ctx *rc,
                                       const char *name)
{
    enum MHD_Result ret;
    if (!query_ok(conn, rc, "full", &ret))
        return ret;
    const char *full_arg = NULL;
    /* "?full" alone has a NULL value: an error, not the default false. */
    bool given =
        MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, "full", 4, &full_arg, NULL) == MHD_YES;
    bool full = false;
    if (given && full_arg == NULL)
        return send_error(conn, rc, MHD_HTTP_BAD_REQUEST, "full must be true or false");
    if (full_arg != NULL) {
        if (strcmp(full_arg, "true") == 0 || strcmp(full_arg, "1") == 0)
            full = true;
        else if (strcmp(full_arg, "false") != 0 && strcmp(full_arg, "0") != 0)
            return send_error(conn, rc, MHD_HTTP_BAD_REQUEST, "full must be true or false");
    }
    if (!srv->cfg->store.enabled)
        return send_error(conn, rc, MHD_HTTP_CONFLICT, "syncing is disabled (duckdb.enabled: false)");
    char msg[256];
    switch (jobs_start_sync(&srv->jobs, name, full)) {
    case JOBS_STARTED:
        snprintf(msg, sizeof msg, "%s sync of %s started", full ? "full" : "sync", name);
        if (!full)
            snprintf(msg, sizeof msg, "sync of %s started", name);
        return send_message(conn, rc, MHD_HTTP_ACCEPTED, msg);
    case JOBS_BUSY:
        snprintf(msg, sizeof msg, "%s is already syncing", name);
        return send_error(conn, rc, MHD_HTTP_CONFLICT, msg);
    case JOBS_STOPPING:
        return send_error(conn, rc, MHD_HTTP_SERVICE_UNAVAILABLE, "the server is shutting down");
    case JOBS_UNKNOWN:
        break;
    }
    return unknown_source(srv, conn, rc, name);
}

static enum MHD_Result handle_sync_all(http_server *srv, struct MHD_Connection *conn, request_ctx *rc)
{
    enum MHD_Result ret;
    if (!query_ok(conn, rc, NULL, &ret))
        return ret;
    if (!srv->cfg->store.enabled)
        return send_error(conn, rc, MHD_HTTP_CONFLICT, "syncing is disabled (duckdb.enabled: false)");
    json_t *started = json_array(), *busy = json_array();
    for (size_t i = 0; i < srv->cfg->n_sources; i++) {
        const cfg_source *src = &srv->cfg->sources[i];
        if (!src->enabled)
            continue;
        jobs_start_result r = jobs_start_sync(&srv->jobs, src->name, false);
        json_array_append_new(r == JOBS_STARTED ? started : busy, json_string(src->name));
    }
    json_t *doc = json_object();
    json_object_set_new(doc, "success", json_true());
    char msg[128];
    snprintf(msg, sizeof msg, "sync started for %zu source(s)", json_array_size(started));
    json_object_set_new(doc, "message", json_string(msg));
    json_object_set_new(doc, "started", started);
    json_object_set_new(doc, "already_syncing", busy);
    return send_json(conn, rc, MHD_HTTP_ACCEPTED, doc);
}

static enum MHD_Result handle_reset(http_server *srv, struct MHD_Connection *conn, request_ctx *rc,
                                    const char *name)
{
    enum MHD_Result ret;
    if (!query_ok(conn, rc, NULL, &ret))
        return ret;
    ds_error err;
    char msg[256];
    switch (jobs_reset_watermark(&srv->jobs, name, &err)) {
    case JOBS_STARTED:
        snprintf(msg, sizeof msg, "watermarks of %s cleared; the next sync is a full rebuild", name);
        return send_message(conn, rc, MHD_HTTP_OK, msg);
    case JOBS_BUSY:
        snprintf(msg, sizeof msg, "%s is syncing; reset its watermarks when the sync is done", name);
        return send_error(conn, rc, MHD_HTTP_CONFLICT, msg);
    case JOBS_STOPPING:
        return send_error(conn, rc, MHD_HTTP_INTERNAL_SERVER_ERROR, err.msg);
    case JOBS_UNKNOWN:
        break;
    }
    return unknown_source(srv, conn, rc, name);
}

static enum MHD_Result handle_status(http_server *srv, struct MHD_Connection *conn, request_ctx *rc)
{
    enum MHD_Result ret;
    if (!query_ok(conn, rc, NULL, &ret))
        return ret;
    json_t *doc = json_object();
    json_object_set_new(doc, "success", json_true());
    json_object_set_new(doc, "enabled", json_boolean(srv->cfg->store.enabled));
    json_object_set_new(doc, "datasets", jobs_status_json(&srv->jobs));
    return send_json(conn, rc, MHD_HTTP_OK, doc);
}

static enum MHD_Result handle_health(http_server *srv, struct MHD_Connection *conn, request_ctx *rc)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "status", json_string("ok"));
    json_object_set_new(doc, "store", json_string(srv->st ? "open" : "closed"));
    json_object_set_new(doc, "path", json_string(srv->st ? srv->st->path : ""));
    return send_json(conn, rc, MHD_HTTP_OK, doc);
}

static enum MHD_Result handle_metrics(http_server *srv, struct MHD_Connection *conn, request_ctx *rc)
{
    char *text = jobs_metrics_text(&srv->jobs);
    if (text == NULL)
        return send_error(conn, rc, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    enum MHD_Result ret = send_text(conn, rc, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text);
    free(text);
    return ret;
}

/* Routes a complete request. */
static enum MHD_Result route(http_server *srv, struct MHD_Connection *conn, request_ctx *rc, const char *url,
                             const char *method)
{
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    if (strcmp(url, "/health") == 0)
        return get ? handle_health(srv, conn, rc)
                   : send_not_allowed(conn, rc, "GET, HEAD", "use GET for /health");
    bool api = strncmp(url, "/api/", 5) == 0;
    if (!api && strcmp(url, "/metrics") != 0)
        return send_error(conn, rc, MHD_HTTP_NOT_FOUND, "no such endpoint; see docs/api.md");
    if (!authorized(srv, conn))
        return send_error(conn, rc, MHD_HTTP_UNAUTHORIZED, "missing or wrong bearer token");
    if (strcmp(url, "/metrics") == 0)
        return get ? handle_metrics(srv, conn, rc)
                   : send_not_allowed(conn, rc, "GET, HEAD", "use GET for /metrics");
    if (strcmp(url, "/api/store/status") == 0)
        return get ? handle_status(srv, conn, rc)
                   : send_not_allowed(conn, rc, "GET, HEAD", "use GET for /api/store/status");
    if (strcmp(url, "/api/store/sync") == 0)
        return post ? handle_sync_all(srv, conn, rc)
                    : send_not_allowed(conn, rc, "POST", "use POST for /api/store/sync");
    static const char prefix[] = "/api/store/sync/";
    if (strncmp(url, prefix, sizeof prefix - 1) == 0) {
        const char *name = url + sizeof prefix - 1;
        const char *slash = strchr(name, '/');
        size_t len = slash ? (size_t)(slash - name) : strlen(name);
        bool reset = slash && strcmp(slash, "/reset-watermark") == 0;
        if ((slash && !reset) || !valid_source_name(name, len))
            return send_error(conn, rc, MHD_HTTP_NOT_FOUND, "no such endpoint; see docs/api.md");
        if (!post)
            return send_not_allowed(conn, rc, "POST", "use POST");
        char source[64];
        memcpy(source, name, len);
        source[len] = '\0';
        return reset ? handle_reset(srv, conn, rc, source) : handle_sync_one(srv, conn, rc, source);
    }
    return send_error(conn, rc, MHD_HTTP_NOT_FOUND, "no such endpoint; see docs/api.md");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    http_server *srv = cls;
    request_ctx *rc = *con_cls;
    if (rc == NULL) {
        rc = calloc(1, sizeof *rc);
        if (rc == NULL)
            return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &rc->started);
        printable_copy(rc->method, sizeof rc->method, method);
        printable_copy(rc->path, sizeof rc->path, url);
        *con_cls = rc;
        return MHD_YES;
    }
    if (*upload_data_size > 0) { /* bodies are not used; count them to enforce the limit */
        (void)upload_data;
        rc->body_bytes += *upload_data_size;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (rc->body_bytes > MAX_BODY_BYTES)
        return send_error(conn, rc, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
    if (strlen(url) > MAX_URL_BYTES)
        return send_error(conn, rc, MHD_HTTP_URI_TOO_LONG, "URL too long");
    return route(srv, conn, rc, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)toe;
    request_ctx *rc = *con_cls;
    if (rc == NULL)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms =
        (double)(now.tv_sec - rc->started.tv_sec) * 1e3 + (double)(now.tv_nsec - rc->started.tv_nsec) / 1e6;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char addr[64] = "-";
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, addr, sizeof addr);
    else if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr, addr, sizeof addr);
    ds_log_info("%s %s %s %u %.1fms", addr, rc->method, rc->path, rc->status, ms);
    free(rc);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    ds_log_warn("http: %s", line);
}

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

bool http_server_start(cfg_config *cfg, const http_options *opt, http_server **out, ds_error *err)
{
    *out = NULL;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    if (!parse_listen(opt->listen ? opt->listen : "127.0.0.1:8500", &addr, &addr_len, err))
        return false;
    http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    srv->cfg = cfg;
    if (opt->api_token && opt->api_token[0])
        srv->api_token = strdup(opt->api_token);
    store_settings settings = {.memory_limit = cfg->store.memory_limit, .threads = cfg->store.threads};
    if (!store_open_ext(opt->db_path ? opt->db_path : cfg->store.path, &settings, &srv->st, err)) {
        free(srv->api_token);
        free(srv);
        return false;
    }
    if (!sync_cleanup_staging(srv->st, cfg, err))
        ds_log_warn("could not drop leftover staging tables: %s", err->msg);
    /* API reads of DuckDB (status documents) share query_concurrency connections. */
    if (!store_pool_open(srv->st, (size_t)cfg->store.query_concurrency, err) ||
        !jobs_init(&srv->jobs, srv->st, cfg, err)) {
        store_close(srv->st);
        free(srv->api_token);
        free(srv);
        return false;
    }
    /* Startup syncs begin before the first request is accepted, so the very
     * first status answer already shows them as syncing, not not_synced. */
    jobs_start_background(&srv->jobs, cfg->store.enabled && cfg->store.sync_mode == CFG_SYNC_STARTUP);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, srv, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)4, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)30, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)512, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_UNESCAPE_CALLBACK, unescape,
        NULL, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        ds_error_set(err, DS_ERR_USAGE, "cannot listen on %s (address in use or not local?)",
                     opt->listen ? opt->listen : "127.0.0.1:8500");
        jobs_shutdown(&srv->jobs);
        jobs_destroy(&srv->jobs);
        store_close(srv->st);
        free(srv->api_token);
        free(srv);
        return false;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : 0;
    ds_log_info("listening on %s (port %u)%s", opt->listen ? opt->listen : "127.0.0.1:8500", srv->port,
                srv->api_token ? ", bearer token required for /api/ and /metrics" : "");
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
    jobs_shutdown(&srv->jobs);
    MHD_stop_daemon(srv->daemon);
    jobs_destroy(&srv->jobs);
    store_close(srv->st);
    free(srv->api_token);
    free(srv);
}

int http_serve_until_signal(cfg_config *cfg, const http_options *opt)
{
    /* Block the signals in every thread; this one waits for them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    http_server *srv;
    ds_error err;
    if (!http_server_start(cfg, opt, &srv, &err)) {
        ds_log_error("%s", err.msg);
        return err.code == DS_ERR_USAGE ? 2 : 1;
    }
    int sig = 0;
    sigwait(&set, &sig);
    ds_log_info("%s received: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    http_server_stop(srv);
    ds_log_info("stopped");
    return 0;
}
