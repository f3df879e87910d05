/* The CLI's way through a running `duckstore serve`: while the server holds
 * the DuckDB file, query, status, sync and reset-watermark ask its HTTP API
 * (found through the server file beside the DuckDB file) with libcurl. */
#ifndef DS_CLI_REMOTE_H
#define DS_CLI_REMOTE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "server/server.h"

typedef struct cli_remote {
    http_serve_info info;
    const char *token; /* DUCKSTORE_API_TOKEN, NULL when the server needs none */
    char *db_path;
    bool curl_ready; /* curl_global_init done: cli_remote_free cleans up */
} cli_remote;

/* What cli_remote_find found. */
typedef enum cli_remote_found {
    CLI_REMOTE_NONE,   /* no live server: open the file directly */
    CLI_REMOTE_SERVER, /* a server of the file answers: go through it */
    CLI_REMOTE_FAILED, /* a server answers but cannot be used; said why */
} cli_remote_found;

/* Looks for a live server of db_path: its server file names a live PID and
 * /health answers there. A stale file (the PID gone, nothing listening) is
 * ignored. CLI_REMOTE_FAILED: the server needs a token and
 * DUCKSTORE_API_TOKEN is not set (printed). r is to be freed after
 * CLI_REMOTE_SERVER only. */
cli_remote_found cli_remote_find(const char *db_path, cli_remote *r);
void cli_remote_free(cli_remote *r);

typedef struct cli_answer {
    long status; /* HTTP status; 0 when no answer came */
    char *body;  /* NUL-terminated, malloc'd */
    size_t len;
} cli_answer;

/* One request to the server (path: "/api/store/status"); body, when not
 * NULL, is sent as JSON. timeout_s: the whole exchange. False, with a
 * message naming the server, when no answer came (the server went away,
 * the timeout passed). */
bool cli_remote_request(const cli_remote *r, const char *method, const char *path, const char *body,
                        long timeout_s, cli_answer *out, ds_error *err);
void cli_answer_free(cli_answer *a);

/* A request whose answer is a JSON document (caller decrefs); NULL with
 * err set when no answer came or it is not JSON. *status: the HTTP status.
 * A 401 is turned into a message about DUCKSTORE_API_TOKEN. */
json_t *cli_remote_json(const cli_remote *r, const char *method, const char *path, const char *body,
                        long timeout_s, long *status, ds_error *err);

/* The "error" of an API error document, or a stand-in. */
const char *cli_remote_error_text(json_t *doc);

#endif
