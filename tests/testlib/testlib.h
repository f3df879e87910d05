/* Shared helpers for duckstore's cmocka tests: a fresh PostgreSQL database
 * on the harness server per test program, SQL helpers for both sides, and
 * scratch directories. Everything is real: no mocks. */
#ifndef DS_TESTLIB_H
#define DS_TESTLIB_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <duckdb.h>
#include <libpq-fe.h>

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

/* A new scratch directory under $TMPDIR; the caller removes it with
 * tl_rmtree(). */
char *tl_mkdtemp(void);
void tl_rmtree(const char *path);

/* Runs SQL on DuckDB; fails the test on error. */
void tl_duck_exec(duckdb_connection con, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* First value of the first row, cast to VARCHAR, malloc'd (NULL for NULL). */
char *tl_duck_scalar(duckdb_connection con, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int64_t tl_duck_int(duckdb_connection con, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes text to a file (for configs). */
void tl_write_file(const char *path, const char *text);

/* Runs a shell command, captures stdout+stderr into *output (malloc'd) and
 * returns the exit status. */
int tl_run(char **output, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
