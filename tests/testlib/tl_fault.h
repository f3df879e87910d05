/* Helpers for the fault-injection tests (tests/fault/): fast or soak sizes,
 * a PostgreSQL instance of the test's own that it may stop and start, a
 * SIGKILL of a server child, and read-only looks into a DuckDB file between
 * two server runs. (tl_server_kill, a crash of a server child, is in
 * tl_http.h.) */
#ifndef DS_TESTLIB_TL_FAULT_H
#define DS_TESTLIB_TL_FAULT_H

#include <duckdb.h>
#include <stdbool.h>
#include <stdint.h>

#include "tl_http.h"

/* DUCKSTORE_SOAK set (and not "0"): `make soak` runs the long variants. */
bool tl_soak(void);
/* fast, or soak under DUCKSTORE_SOAK. */
int tl_scale(int fast, int soak);
/* Built with AddressSanitizer (make build-asan): everything is slower. */
bool tl_sanitized(void);

/* A throwaway PostgreSQL server of one test program: initdb into a scratch
 * directory, a free loopback port, trust authentication, run as the
 * `postgres` user when the test runs as root. Other test programs share the
 * harness server (DUCKSTORE_TEST_PG); this one can be stopped without
 * disturbing them. */
typedef struct tl_pg_instance {
    char dir[256];
    char bin[256];
    char options[512]; /* postgres -o options: the same on every start */
    uint16_t port;
    char conninfo[320]; /* of database postgres */
    bool running;
} tl_pg_instance;

/* initdb + start; fails the test with the log on error. */
void tl_pg_instance_init(tl_pg_instance *pg);
/* pg_ctl stop -m mode ("fast": backends get "terminating connection due to
 * administrator command"; "immediate": no goodbye at all). */
void tl_pg_instance_stop(tl_pg_instance *pg, const char *mode);
/* Starts it again on the same port with the same options. */
void tl_pg_instance_start(tl_pg_instance *pg);
/* Stops (immediate) and deletes it. Also done at exit for every instance
 * still running. */
void tl_pg_instance_destroy(tl_pg_instance *pg);

/* Opens a DuckDB file read-only in this process (the server must not be
 * running), so a crash's leftovers are looked at without being repaired. */
void tl_duck_open_ro(const char *path, duckdb_database *db, duckdb_connection *con);
void tl_duck_close(duckdb_database *db, duckdb_connection *con);

/* Runs a SELECT and returns its first row's values as int64 (NULL -> 0) in
 * out[0..n-1]; fails the test on error. */
void tl_duck_ints(duckdb_connection con, int64_t *out, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A config directory parent/name holding duckdb.yaml with the given body
 * (lines under `duckdb:`, each "  key: value\n"). Caller frees. */
char *tl_conf_dir(const char *parent, const char *name, const char *duckdb_lines);
/* Writes dir/<source>_db.yaml: `<source>_db:` then the body (lines indented
 * by two spaces). */
void tl_conf_source(const char *dir, const char *source, const char *body_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* POST /api/store/sync/<source>[?full=true], asserting 202 (after waiting
 * out a 409 while another sync of it runs, up to 60 s). */
void tl_trigger(const tl_server *srv, const char *source, bool full);
/* The state of a dataset, or its progress phase while it syncs
 * ("describing", "reading", "committing"); static storage. rows_read, when
 * not NULL, gets progress.rows_read (0 when idle). */
const char *tl_phase(const tl_server *srv, const char *dataset, int64_t *rows_read);

/* A loopback TCP listener on a free port run by a thread: in TL_PROXY_HANG
 * it accepts connections and never answers (a server that hangs); in
 * TL_PROXY_FORWARD it relays each new connection to target_port; in
 * TL_PROXY_FREEZE the relays stop moving bytes both ways (a peer that went
 * silent in the middle of a statement). */
typedef enum tl_proxy_mode { TL_PROXY_HANG, TL_PROXY_FORWARD, TL_PROXY_FREEZE } tl_proxy_mode;
typedef struct tl_proxy tl_proxy;
tl_proxy *tl_proxy_start(uint16_t target_port, tl_proxy_mode mode);
uint16_t tl_proxy_port(const tl_proxy *p);
/* Takes effect before it returns: no byte is relayed afterwards unless the
 * new mode is TL_PROXY_FORWARD. */
void tl_proxy_set_mode(tl_proxy *p, tl_proxy_mode mode);
/* TL_PROXY_FORWARD for new connections only: those relayed so far stay
 * frozen for good (a path that went dead while a new one works). */
void tl_proxy_strand_existing(tl_proxy *p);
/* Connections accepted so far. */
int tl_proxy_accepted(tl_proxy *p);
/* Closes the listener and every connection, and joins the thread. */
void tl_proxy_stop(tl_proxy *p);

#endif
