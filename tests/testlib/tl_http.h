/* Helpers for the HTTP server tests: `duckstore serve` as a child process on
 * a free loopback port, a minimal HTTP/1.1 client (one request per
 * connection, timed), and small readers for JSON answers, Prometheus text
 * and log files. */
#ifndef DS_TESTLIB_TL_HTTP_H
#define DS_TESTLIB_TL_HTTP_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tl_http_response {
    int status;             /* 0 when the server could not be reached */
    char content_type[128]; /* "" when absent */
    char *headers;          /* raw header block (malloc'd) */
    char *body;             /* NUL-terminated (malloc'd) */
    size_t body_len;
    double ms; /* from connect to the complete answer */
} tl_http_response;

/* One request to 127.0.0.1:port with "Connection: close". extra_headers:
 * lines each ending in "\r\n", or NULL. Returns false (status 0) when the
 * connection fails. Every answer is appended to the transcript file, if one
 * is set. */
bool tl_http_request(uint16_t port, const char *method, const char *target, const char *extra_headers,
                     const char *body, size_t body_len, tl_http_response *out);
void tl_http_response_free(tl_http_response *resp);

/* The body of a chunked answer (malloc'd); *trailers (malloc'd, when not
 * NULL) the trailer block. */
char *tl_http_dechunk(const char *raw, char **trailers);

/* Value of a response header (case-insensitive name) copied into buf, or
 * NULL when absent. */
const char *tl_http_header(const tl_http_response *resp, const char *name, char *buf, size_t cap);

/* Sends len raw bytes (anything, not necessarily HTTP) to 127.0.0.1:port
 * and reads the answer until the server closes or timeout_s has passed.
 * pause_ms > 0 sends one byte at a time with that pause after each (a slow
 * client); half_close shuts the write side after the last byte. Returns
 * false (status 0) when no answer came; the answer is parsed and recorded
 * like tl_http_request's. */
bool tl_http_raw(uint16_t port, const char *data, size_t len, int pause_ms, bool half_close, double timeout_s,
                 tl_http_response *out);

/* Appends every later answer (status line, headers, body) to path; NULL
 * stops recording. Used to prove secrets never appear in any answer. */
void tl_http_set_transcript(const char *path);

/* Request with an optional bearer token; asserts the status code and
 * Content-Type application/json, and returns the parsed body (caller
 * decrefs). The raw body is copied to *raw when raw is not NULL. */
json_t *tl_http_json(uint16_t port, const char *method, const char *target, const char *token,
                     int expect_status, char **raw);

/* A loopback TCP port nobody listens on right now. */
uint16_t tl_free_port(void);

typedef struct tl_server {
    pid_t pid; /* 0 when not running */
    uint16_t port;
    char config_dir[512];
    char log_path[512];
    char token[128]; /* "" = no DUCKSTORE_API_TOKEN */
} tl_server;

/* Starts `$DUCKSTORE_BIN --config-dir DIR serve --listen 127.0.0.1:PORT` on a
 * free port with stderr appended to log_path and DUCKSTORE_API_TOKEN set to
 * token (unset when token is NULL), then waits until /health answers. Fails
 * the test, showing the log, when the server does not come up in 30 s. */
void tl_server_start(tl_server *srv, const char *config_dir, const char *log_path, const char *token);

/* Sends SIGTERM and waits up to timeout_s for the exit. Returns the exit
 * code (128 + signal when killed by one), or -1 after a timeout (the server
 * is then killed with SIGKILL). *elapsed_s, when not NULL, is the time from
 * the signal to the exit. */
int tl_server_stop(tl_server *srv, double timeout_s, double *elapsed_s);

/* SIGKILLs the server (a crash: no shutdown code runs) and reaps it. */
void tl_server_kill(tl_server *srv);

/* SIGKILLs every server still running (test teardown; also runs at exit). */
void tl_server_kill_all(void);

/* GET /api/store/status of a running server (its token, if any): the
 * document of one dataset ("<name>_data"), caller decrefs. */
json_t *tl_server_dataset(const tl_server *srv, const char *dataset);

/* Polls the dataset's status every 50 ms until its state is `state`;
 * fails the test after timeout_s, showing the last document. */
json_t *tl_server_wait_state(const tl_server *srv, const char *dataset, const char *state, double timeout_s);

/* A server that readers reach through the PostgreSQL protocol: makes dir,
 * writes its duckdb.yaml (the store in dir, pg_listen on a free loopback
 * port with pg_auth trust, then duckdb_extra: more indented duckdb: keys)
 * and <source_file> holding source_yaml, starts `duckstore serve` logging
 * to dir/serve.log and waits up to timeout_s for `dataset` to be ready.
 * Returns the protocol's port. */
uint16_t tl_serve_for_readers(tl_server *srv, const char *dir, const char *duckdb_extra,
                              const char *source_file, const char *source_yaml, const char *dataset,
                              double timeout_s);

/* A libpq connection as user reader to such a server's protocol port
 * (database cache); fails the test when it does not open. */
PGconn *tl_reader_connect(uint16_t port);

/* count(*) of `table WHERE where` through the server's SQL API (no
 * token); -1 when the query failed. */
long long tl_server_count(const tl_server *srv, const char *table, const char *where);

/* GET /metrics of a running server; caller frees. */
char *tl_server_metrics(const tl_server *srv);

/* The value of the Prometheus sample whose name and labels are exactly
 * `series` (e.g. duckstore_syncs_total{source="a",result="success"});
 * fails the test when absent. */
double tl_metric(const char *metrics_text, const char *series);

/* Whole file as a malloc'd string, NULL when it cannot be read. */
char *tl_read_file(const char *path);

/* Number of (non-overlapping) occurrences of needle in haystack. */
size_t tl_count(const char *haystack, const char *needle);

/* Fails the test when the server log holds an AddressSanitizer,
 * LeakSanitizer or UndefinedBehaviorSanitizer report, or the harness
 * PostgreSQL password (DUCKSTORE_TEST_PG_PASSWORD). */
void tl_assert_clean_log(const char *log_path);

/* Monotonic clock in milliseconds, and a sleep. */
double tl_now_ms(void);
void tl_sleep_ms(int ms);

#endif
