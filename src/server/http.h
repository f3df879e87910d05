/* HTTP plumbing shared by the server's endpoints (internal to src/server):
 * the libmicrohttpd daemon and its per-request context, percent-decoding,
 * JSON and text answers, bearer-token auth, query-parameter checks and the
 * access log. It knows no route: every complete request goes to one
 * router function. */
#ifndef DS_SERVER_HTTP_H
#define DS_SERVER_HTTP_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

/* One request, from its first callback to the access log line. */
typedef struct http_request {
    struct MHD_Connection *conn;
    struct timespec started;
    size_t body_bytes;
    char *body;        /* the request body, NUL-terminated (NULL when none or too large) */
    void *route_state; /* a route's own state across calls of a suspended request */
    unsigned status;   /* of the answer sent, for the access log */
    const char *allow; /* Allow header of a 405 answer */
    /* The request's Origin when the allow-list has it (the router's copy):
     * every answer then carries Access-Control-Allow-Origin. */
    const char *cors_origin;
    char method[16]; /* printable copies for the access log (truncated) */
    char path[200];
} http_request;

/* Answers a complete request (the body was read and is within limits). */
typedef enum MHD_Result (*http_route_fn)(void *cls, http_request *req, const char *url, const char *method);

typedef struct http_router {
    http_route_fn route;
    void *cls;
    /* Origins a browser may call the API from (CORS); none by default. */
    char **cors_origins;
    size_t n_cors_origins;
} http_router;

/* Copies the allow-list of origins into the router; false when out of
 * memory. http_router_free frees the copy. */
bool http_router_set_cors(http_router *router, char *const *origins, size_t n);
void http_router_free(http_router *router);

/* Starts libmicrohttpd on listen_fd, a socket already bound and
 * listening (its thread pool, limits and timeouts); the daemon closes it
 * when it stops. router must outlive the daemon. NULL when it cannot
 * start (listen_fd is then the caller's to close). */
struct MHD_Daemon *http_daemon_start(int listen_fd, bool ipv6, http_router *router);

/* text as a JSON string; text that is not UTF-8 (a message quoting bytes
 * from elsewhere, a file name) is made printable first, so an answer still
 * says what it has to. NULL when out of memory. */
json_t *http_json_text(const char *text);
/* The same for printf-style text. */
json_t *http_json_stringf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The answers. Each records the status for the access log. */
enum MHD_Result http_send_text(http_request *req, unsigned status, const char *type, const char *body);
/* Takes ownership of doc; a NULL doc (a failed allocation while building
 * it) becomes a 500 "out of memory". */
enum MHD_Result http_send_json(http_request *req, unsigned status, json_t *doc);
/* {"success":false,"error":msg,"detail":msg}: "detail" is the field AXIS
 * clients read; http_send_json adds it to every answer with success false
 * and an error text. */
enum MHD_Result http_send_error(http_request *req, unsigned status, const char *msg);
enum MHD_Result http_send_errorf(http_request *req, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* {"success":true,"message":...} */
enum MHD_Result http_send_messagef(http_request *req, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* For an answer built outside these functions (a streamed one): the
 * headers every answer carries (CORS), and "detail" beside "error" in an
 * error document. */
void http_add_common_headers(const http_request *req, struct MHD_Response *resp);
void http_json_add_detail(json_t *doc);

/* A 405 with the Allow header naming the methods the resource takes. */
enum MHD_Result http_send_not_allowed(http_request *req, const char *allow, const char *msg);

/* True when no token is required or the request carries
 * "Authorization: Bearer <token>" (compared in constant time). */
bool http_authorized(const http_request *req, const char *token);

/* Rejects query parameters other than `allowed` (NULL: none): returns
 * false after sending the 400 into *ret. */
bool http_query_ok(http_request *req, const char *allowed, enum MHD_Result *ret);

#endif
