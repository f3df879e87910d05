/* `duckstore serve`: the runbook's HTTP API (libmicrohttpd, JSON through
 * jansson), background syncs, the periodic scheduler, startup syncs and
 * graceful shutdown. HTTP threads never wait for a sync or for PostgreSQL:
 * status is served from memory. */
#ifndef DS_SERVER_SERVER_H
#define DS_SERVER_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "config/config.h"

typedef struct http_server http_server;

typedef struct http_options {
    const char *listen;    /* "HOST:PORT", default 127.0.0.1:8500 */
    const char *db_path;   /* NULL: duckdb.path */
    const char *api_token; /* NULL: no auth (DUCKSTORE_API_TOKEN) */
} http_options;

/* Opens the store, loads the persisted status of each source, starts the
 * HTTP daemon, the startup syncs (sync_mode: startup) and the scheduler.
 * The server takes cfg over (once the store is open cfg is left empty:
 * cfg_free on it does nothing); a reload replaces it. */
bool http_server_start(cfg_config *cfg, const http_options *opt, http_server **out, ds_error *err);

/* The port actually bound (useful with port 0). */
uint16_t http_server_port(const http_server *srv);

/* Stops accepting, stops the scheduler, cancels in-flight syncs (their
 * staging tables are dropped), closes DuckDB. */
void http_server_stop(http_server *srv);

/* Loads the config directory again and puts it in force (see jobs_reload):
 * added sources appear, removed ones are no longer scheduled, running syncs
 * finish with the config they started with; settings read only at start
 * keep their value (logged: "needs a restart"). A config that does not
 * load is logged with its file:line and the one in force stays: false. */
bool http_server_reload(http_server *srv);

/* Where a running server announces itself beside its DuckDB file:
 * "<db_path>.serve.json" (caller frees; NULL when out of memory). */
char *http_serve_file_path(const char *db_path);

typedef struct http_serve_info {
    long pid;
    char *url; /* "http://127.0.0.1:8500" */
    bool token_required;
} http_serve_info;

/* Reads the server file of db_path: true when it names a live process
 * (caller frees with http_serve_info_free); false when there is none, it
 * cannot be read, or its process is gone (a stale file). Whether the
 * server still answers is for the caller to find out. */
bool http_serve_file_find(const char *db_path, http_serve_info *out);
void http_serve_info_free(http_serve_info *info);

/* Runs a server until SIGTERM or SIGINT, reloading the config on SIGHUP;
 * returns the exit code. */
int http_serve_until_signal(cfg_config *cfg, const http_options *opt);

#endif
