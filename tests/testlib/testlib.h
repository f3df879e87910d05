/* Shared helpers for duckstore's cmocka tests: a fresh PostgreSQL database
 * on the harness server per test program, SQL helpers for both sides, and
 * scratch directories. Everything is real: no mocks. */
#ifndef DS_TESTLIB_H
#define DS_TESTLIB_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <duckdb.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "config/config.h"
#include "store/store.h"
#include "sync/sync.h"

/* Conninfo of the harness server (DUCKSTORE_TEST_PG); fails the test run
 * with a hint when it is not set. */
const char *tl_pg_base_conninfo(void);

/* Creates a new, empty database on the harness server and returns its
 * conninfo (static storage, valid until the next call). */
const char *tl_pg_fresh_db(const char *prefix);

PGconn *tl_pg_connect(const char *conninfo);

/* Runs SQL on PostgreSQL; fails the test on error. */
void tl_pg_exec(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* First column of the first row as a malloc'd string (NULL for SQL NULL). */
char *tl_pg_scalar(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* First column of the first row as an integer; fails the test on NULL. */
int64_t tl_pg_int(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A new scratch directory under $TMPDIR; the caller removes it with
 * tl_rmtree(). */
char *tl_mkdtemp(void);
void tl_rmtree(const char *path);

/* Whether an RSS bound can hold: a sanitizer build keeps shadow memory and
 * a quarantine of freed memory (DuckDB's too), so it cannot. */
bool tl_rss_checked(void);

/* Runs SQL on DuckDB; fails the test on error. */
void tl_duck_exec(duckdb_connection con, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* First value of the first row, cast to VARCHAR, malloc'd (NULL for NULL). */
char *tl_duck_scalar(duckdb_connection con, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int64_t tl_duck_int(duckdb_connection con, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Rows of table whose col equals its maximum: what the next incremental
 * read, which starts at the watermark itself, reads again (DEFAULT
 * clock_timestamp() can give two rows the same microsecond). */
int64_t tl_duck_at_max(duckdb_connection con, const char *table, const char *col);

/* Strings a test allocates and reads until it ends: tl_keep() takes one
 * (failing the test on NULL, a builder out of memory), tl_free_kept()
 * frees them all (call it from a teardown). */
char *tl_keep(char *s);
char *tl_keepf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "name" quoted as an identifier, kept. */
char *tl_keep_ident(const char *name);
void tl_free_kept(void);

/* Writes text to a file (for configs). */
void tl_write_file(const char *path, const char *text);

/* Runs a shell command, captures stdout+stderr into *output (malloc'd) and
 * returns the exit status. */
int tl_run(char **output, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- sync tests: configs, syncs and checksums ------------------------ */

/* Writes printf-formatted text to a file. */
void tl_write_filef(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Loads a config directory; fails the test with the loader's message. */
void tl_cfg_load(const char *dir, cfg_config *cfg);

/* Runs sync_source for the named source; fails the test with err's message
 * when it does not succeed. */
void tl_sync_ok(store *st, const cfg_config *cfg, const char *source, bool force_full, sync_report *report);

/* sync_status_json of the named source; fails the test on error. */
json_t *tl_sync_status(store *st, const cfg_config *cfg, const char *source);

/* The string value of key in a JSON object, or NULL when absent or not a
 * string (for assert_string_equal / assert_null). */
const char *tl_json_str(const json_t *obj, const char *key);

/* A new DuckDB connection to an open store; fails the test on error. */
duckdb_connection tl_store_connect(store *st);

/* Order-independent checksums of a relation that PostgreSQL and DuckDB
 * compute alike: "rows=N md5=<md5 of the sorted row texts>". spec lists the
 * columns, comma-separated; a ":ts" suffix marks a timestamp(tz) column
 * (compared as epoch microseconds), ":date" a date column (days since
 * 1970-01-01); anything else is compared through its text form. Caller frees. */
char *tl_pg_checksum(PGconn *conn, const char *relation, const char *spec);
char *tl_duck_checksum(duckdb_connection con, const char *relation, const char *spec);

/* Fails the test, showing both, when needle does not occur in haystack. */
#define tl_assert_contains(haystack, needle) tl_assert_contains_at((haystack), (needle), __FILE__, __LINE__)
void tl_assert_contains_at(const char *haystack, const char *needle, const char *file, int line);

/* A const cfg_source of the loaded config; fails the test when absent. */
const cfg_source *tl_source(const cfg_config *cfg, const char *name);

/* One sync test's world: a scratch directory holding the config
 * (duckdb.yaml + <name>_db.yaml) and the DuckDB file, a PostgreSQL schema of
 * its own (the source url and pg both have it as search_path), the loaded
 * config and the open store with a connection for assertions. */
typedef struct tl_env {
    char *dir;
    char url[1536];
    char store_path[600];
    PGconn *pg;
    cfg_config cfg;
    bool cfg_loaded;
    store *st;
    duckdb_connection con;
} tl_env;

/* conninfo: a database from tl_pg_fresh_db; schema is created. store_yaml:
 * extra lines under duckdb: (each "  key: value\n"), or "". */
void tl_env_open(tl_env *e, const char *conninfo, const char *schema, const char *store_yaml);
/* Rewrites duckdb.yaml with other extra lines and reloads the config. */
void tl_env_store(tl_env *e, const char *store_yaml);
/* Writes <name>_db.yaml (url first, then body: lines indented by two
 * spaces) and reloads the config. */
void tl_env_source(tl_env *e, const char *name, const char *body_fmt, ...)
    __attribute__((format(printf, 3, 4)));
void tl_env_close(tl_env *e);

/* The runbook's tables: llm_traces and llm_metric_results with uuid,
 * timestamptz, text, jsonb and numeric columns, created_at DEFAULT
 * clock_timestamp(). */
void tl_llm_create(PGconn *conn);
/* Adds traces number from..to (deterministic values), each with `metrics`
 * metric results. */
void tl_llm_add(PGconn *conn, int from, int to, int metrics);

/* Split queries over those tables, in the runbook's shape plus id and
 * created_at; the view then has dataset_dataset_id and dataset_created_at. */
#define TL_LLM_DATASET_QUERY                                                                                 \
    "SELECT trace_id AS dataset_id, id, timestamp, prompt AS query, completion AS actual_output, "           \
    "deployment_env AS environment, response_time_ms AS latency, metadata, created_at FROM llm_traces "      \
    "ORDER BY timestamp DESC"
#define TL_LLM_RESULTS_QUERY                                                                                 \
    "SELECT trace_id AS dataset_id, id, metric_name, metric_value AS metric_score, metric_category, "        \
    "explanation, details, created_at FROM llm_metric_results ORDER BY created_at DESC"
/* YAML lines for them, incremental on created_at. */
#define TL_LLM_SOURCE_YAML                                                                                   \
    "  dataset_query: |\n    " TL_LLM_DATASET_QUERY "\n  results_query: |\n    " TL_LLM_RESULTS_QUERY        \
    "\n  incremental_column: created_at\n"
/* Checksum specs (see tl_pg_checksum) of the two tables and the view. */
#define TL_LLM_DATASET_SPEC                                                                                  \
    "dataset_id,id,timestamp:ts,query,actual_output,environment,latency,metadata,created_at:ts"
#define TL_LLM_RESULTS_SPEC                                                                                  \
    "dataset_id,id,metric_name,metric_score,metric_category,explanation,details,created_at:ts"
#define TL_LLM_VIEW_SPEC                                                                                     \
    TL_LLM_RESULTS_SPEC ",dataset_dataset_id,timestamp:ts,query,actual_output,environment,latency,metadata," \
                        "dataset_created_at:ts"
/* The view computed by PostgreSQL, as a relation for tl_pg_checksum. */
#define TL_LLM_VIEW_RELATION                                                                                 \
    "(SELECT r.*, d.id AS dataset_dataset_id, d.timestamp, d.query, d.actual_output, d.environment, "        \
    "d.latency, d.metadata, d.created_at AS dataset_created_at FROM (" TL_LLM_RESULTS_QUERY ") AS r "        \
    "LEFT JOIN (" TL_LLM_DATASET_QUERY ") AS d ON r.dataset_id = d.dataset_id) AS v"

/* Asserts that <name>_dataset, <name>_results and <name>_data hold exactly
 * what the TL_LLM queries return in PostgreSQL now. */
void tl_llm_assert_synced(tl_env *e, const char *name);

#endif
