/* libmicrohttpd under the server's endpoints: request contexts, limits,
 * percent-decoding, answers, auth and the access log (see http.h). */
#include "server/http.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/strbuf.h"

#define MAX_URL_BYTES 2048
#define MAX_BODY_BYTES 65536

/* Sent when an answer cannot be built for want of memory: a constant, so
 * sending it needs no allocation of ours. */
static const char oom_body[] = "{\"success\":false,\"error\":\"out of memory\",\"detail\":\"out of memory\"}";

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
 * UTF-8 without line breaks. It is never longer than src, and is cut at
 * cap - 1 bytes. */
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

/* The request line being parsed on this thread: libmicrohttpd hands its
 * raw URI to uri_seen, then decodes each query argument and the path in
 * place, on the same thread, before it reads the next request line. */
static _Thread_local const char *parsing_uri;

static void *uri_seen(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    parsing_uri = uri;
    return NULL;
}

/* Percent-decoding of the path and the query arguments. %00 stays as it
 * is in both: a decoded NUL would cut the text short
 * ("/api/store/sync/x%00/y" is not "/api/store/sync/x", nor "a%00b" "a").
 * In the path %2F stays too: an encoded slash is not a path separator
 * (RFC 3986), so such paths simply match no route. In an argument it is a
 * slash like any other character ("sql=SELECT%20'a%2Fb'"). */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    bool path = s == parsing_uri;
    char *w = s;
    for (const char *r = s; *r;) {
        int hi = r[0] == '%' ? hex_digit(r[1]) : -1, lo = hi >= 0 ? hex_digit(r[2]) : -1;
        int c = hi * 16 + lo;
        if (lo >= 0 && c != 0 && !(path && c == '/')) {
            *w++ = (char)c;
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

void http_add_common_headers(const http_request *req, struct MHD_Response *resp)
{
    if (req->cors_origin != NULL) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", req->cors_origin);
        MHD_add_response_header(resp, "Vary", "Origin");
    }
}

enum MHD_Result http_send_text(http_request *req, unsigned status, const char *type, const char *body)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) {
        ds_log_error("%s %s: no memory for the answer; connection closed", req->method, req->path);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED && req->allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, req->allow);
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    http_add_common_headers(req, resp);
    enum MHD_Result ret = MHD_queue_response(req->conn, status, resp);
    MHD_destroy_response(resp);
    req->status = status;
    return ret;
}

/* AXIS clients read an error's text from "detail": an answer with success
 * false and an error text carries it there too. */
void http_json_add_detail(json_t *doc)
{
    json_t *error = json_object_get(doc, "error");
    if (json_is_false(json_object_get(doc, "success")) && json_is_string(error) &&
        json_object_get(doc, "detail") == NULL)
        json_object_set(doc, "detail", error);
}

enum MHD_Result http_send_json(http_request *req, unsigned status, json_t *doc)
{
    http_json_add_detail(doc);
    char *body = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(doc);
    if (body == NULL) {
        ds_log_error("%s %s: out of memory building the answer", req->method, req->path);
        return http_send_text(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json", oom_body);
    }
    enum MHD_Result ret = http_send_text(req, status, "application/json", body);
    free(body);
    return ret;
}

json_t *http_json_text(const char *msg)
{
    json_t *text = json_string(msg);
    if (text != NULL)
        return text;
    size_t cap = strlen(msg) + 1; /* a printable copy is never longer */
    char *safe = malloc(cap);
    if (safe == NULL)
        return NULL;
    printable_copy(safe, cap, msg);
    text = json_string(safe);
    free(safe);
    return text;
}

static json_t *json_vstringf(const char *fmt, va_list ap)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_vappendf(&b, fmt, ap);
    char *text = ds_buf_take(&b);
    if (text == NULL)
        return NULL;
    json_t *s = http_json_text(text);
    free(text);
    return s;
}

json_t *http_json_stringf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_t *s = json_vstringf(fmt, ap);
    va_end(ap);
    return s;
}

enum MHD_Result http_send_error(http_request *req, unsigned status, const char *msg)
{
    return http_send_json(req, status, json_pack("{s:b,s:o}", "success", 0, "error", http_json_text(msg)));
}

/* The answer of http_send_errorf and http_send_messagef. */
static enum MHD_Result send_formatted(http_request *req, unsigned status, bool success, const char *fmt,
                                      va_list ap)
{
    json_t *doc =
        json_pack("{s:b,s:o}", "success", success, success ? "message" : "error", json_vstringf(fmt, ap));
    return http_send_json(req, status, doc);
}

enum MHD_Result http_send_errorf(http_request *req, unsigned status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result ret = send_formatted(req, status, false, fmt, ap);
    va_end(ap);
    return ret;
}

enum MHD_Result http_send_messagef(http_request *req, unsigned status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result ret = send_formatted(req, status, true, fmt, ap);
    va_end(ap);
    return ret;
}

/* A 405 must name the methods the resource does take (RFC 9110 15.5.6);
 * no resource takes both GET and POST, so each route passes its own. */
enum MHD_Result http_send_not_allowed(http_request *req, const char *allow, const char *msg)
{
    req->allow = allow;
    return http_send_error(req, MHD_HTTP_METHOD_NOT_ALLOWED, msg);
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

bool http_authorized(const http_request *req, const char *token)
{
    if (token == NULL)
        return true;
    const char *auth = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    /* The auth scheme is case-insensitive (RFC 9110 11.1): "bearer" is fine. */
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    return token_matches(auth + 7, token);
}

typedef struct query_check {
    const char *allowed; /* the one accepted key, or NULL */
    bool rejected;
    char bad[101]; /* the first other key, printable, at most 100 bytes */
} query_check;

static enum MHD_Result check_query_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    (void)value;
    query_check *qc = cls;
    if (!qc->rejected && (qc->allowed == NULL || strcmp(key, qc->allowed) != 0)) {
        qc->rejected = true;
        printable_copy(qc->bad, sizeof qc->bad, key);
    }
    return MHD_YES;
}

bool http_query_ok(http_request *req, const char *allowed, enum MHD_Result *ret)
{
    query_check qc = {.allowed = allowed, .rejected = false, .bad = ""};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, check_query_arg, &qc);
    if (!qc.rejected)
        return true;
    *ret = http_send_errorf(req, MHD_HTTP_BAD_REQUEST, "unknown query parameter \"%s\"%s%s", qc.bad,
                            allowed ? "; accepted: " : "", allowed ? allowed : "");
    return false;
}

bool http_router_set_cors(http_router *router, char *const *origins, size_t n)
{
    router->cors_origins = n ? calloc(n, sizeof *router->cors_origins) : NULL;
    if (n && router->cors_origins == NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        if ((router->cors_origins[i] = strdup(origins[i])) == NULL)
            return false;
        router->n_cors_origins = i + 1;
    }
    return true;
}

void http_router_free(http_router *router)
{
    for (size_t i = 0; i < router->n_cors_origins; i++)
        free(router->cors_origins[i]);
    free(router->cors_origins);
    router->cors_origins = NULL;
    router->n_cors_origins = 0;
}

/* The allow-list's copy of the request's Origin, NULL when absent or not
 * listed ("*" in the list allows every origin). */
static const char *allowed_origin(const http_router *router, struct MHD_Connection *conn)
{
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    for (size_t i = 0; origin != NULL && i < router->n_cors_origins; i++)
        if (strcmp(router->cors_origins[i], "*") == 0 || strcmp(router->cors_origins[i], origin) == 0)
            return strcmp(router->cors_origins[i], "*") == 0 ? "*" : router->cors_origins[i];
    return NULL;
}

/* A CORS preflight (OPTIONS with Access-Control-Request-Method): answered
 * here, before the token check, as browsers send it without credentials.
 * An origin not on the allow-list gets a 403 without CORS headers, so the
 * browser refuses the call. */
static enum MHD_Result answer_preflight(http_request *req)
{
    if (req->cors_origin == NULL)
        return http_send_error(req, MHD_HTTP_FORBIDDEN,
                               "origin not allowed; list it in duckdb.cors_origins (docs/configuration.md)");
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", req->cors_origin);
    MHD_add_response_header(resp, "Vary", "Origin");
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS");
    MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Authorization, Content-Type");
    MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    enum MHD_Result ret = MHD_queue_response(req->conn, MHD_HTTP_NO_CONTENT, resp);
    MHD_destroy_response(resp);
    req->status = MHD_HTTP_NO_CONTENT;
    return ret;
}

/* The first call of a request: its context. Without memory for one, the
 * request is answered at once (and gets no access line). */
static enum MHD_Result begin_request(const http_router *router, struct MHD_Connection *conn, const char *url,
                                     const char *method, void **con_cls)
{
    http_request *req = calloc(1, sizeof *req);
    if (req == NULL) {
        http_request unlogged = {.conn = conn, .method = "-", .path = "-"};
        ds_log_error("out of memory for a new request; answered 503");
        return http_send_text(&unlogged, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", oom_body);
    }
    req->conn = conn;
    req->cors_origin = allowed_origin(router, conn);
    clock_gettime(CLOCK_MONOTONIC, &req->started);
    printable_copy(req->method, sizeof req->method, method);
    printable_copy(req->path, sizeof req->path, url);
    *con_cls = req;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    http_router *router = cls;
    http_request *req = *con_cls;
    if (req == NULL)
        return begin_request(router, conn, url, method, con_cls);
    if (*upload_data_size > 0) { /* kept up to the limit, counted beyond it */
        size_t n = *upload_data_size;
        char *grown =
            req->body_bytes + n <= MAX_BODY_BYTES ? realloc(req->body, req->body_bytes + n + 1) : NULL;
        if (grown != NULL) {
            memcpy(grown + req->body_bytes, upload_data, n);
            grown[req->body_bytes + n] = '\0';
        } else {
            free(req->body);
        }
        req->body = grown;
        req->body_bytes += n;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->body_bytes > MAX_BODY_BYTES)
        return http_send_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
    if (strlen(url) > MAX_URL_BYTES)
        return http_send_error(req, MHD_HTTP_URI_TOO_LONG, "URL too long");
    if (strcmp(method, "OPTIONS") == 0 &&
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Access-Control-Request-Method") != NULL)
        return answer_preflight(req);
    return router->route(router->cls, req, url, method);
}

/* The access log: one line per request, when it is done. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)toe;
    http_request *req = *con_cls;
    if (req == NULL)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms =
        (double)(now.tv_sec - req->started.tv_sec) * 1e3 + (double)(now.tv_nsec - req->started.tv_nsec) / 1e6;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char addr[INET6_ADDRSTRLEN] = "-";
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, addr, sizeof addr);
    else if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr, addr, sizeof addr);
    ds_log_info("%s %s %s %u %.1fms", addr, req->method, req->path, req->status, ms);
    free(req->body);
    free(req);
    *con_cls = NULL;
}

/* libmicrohttpd's own messages (requests it rejects itself), one line each. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    ds_buf b = DS_BUF_INIT;
    ds_buf_vappendf(&b, fmt, ap);
    char *line = ds_buf_take(&b);
    if (line == NULL) {
        ds_log_warn("http: %s (no memory to format the message)", fmt);
        return;
    }
    line[strcspn(line, "\n")] = '\0';
    ds_log_warn("http: %s", line);
    free(line);
}

/* Each connection's memory (request head, parsed arguments, buffers). Up
 * to 32 KiB libmicrohttpd takes it from malloc; above, it maps and unmaps
 * pages for every connection, and the unmap's TLB shootdown across cores
 * cost ~0.5 ms of CPU per request on a 2-core machine. */
#define HTTP_CONNECTION_MEMORY (32 * 1024)

struct MHD_Daemon *http_daemon_start(int listen_fd, bool ipv6, http_router *router)
{
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    return MHD_start_daemon(flags, 0, NULL, NULL, on_request, router, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
                            NULL, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_fd,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)4, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)30, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)512, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, NULL, MHD_OPTION_URI_LOG_CALLBACK, uri_seen, NULL,
                            MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_END);
}
