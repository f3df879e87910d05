/* Implementation of the test helpers declared in testlib.h. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char *vformat(const char *fmt, va_list ap)
{
    char *out = NULL;
    if (vasprintf(&out, fmt, ap) < 0)
        fail_msg("out of memory");
    return out;
}

const char *tl_pg_base_conninfo(void)
{
    const char *conninfo = getenv("DUCKSTORE_TEST_PG");
    if (conninfo == NULL || conninfo[0] == '\0') {
        fprintf(stderr, "DUCKSTORE_TEST_PG is not set: run tests through `make test` "
                        "or scripts/with-test-pg.sh\n");
        exit(1);
    }
    return conninfo;
}

const char *tl_pg_fresh_db(const char *prefix)
{
    static char conninfo[1024];
    static unsigned counter;
    char name[64];
    snprintf(name, sizeof name, "%s_%d_%u_%ld", prefix, (int)getpid(), counter++, (long)time(NULL));
    PGconn *admin = tl_pg_connect(tl_pg_base_conninfo());
    tl_pg_exec(admin, "CREATE DATABASE \"%s\"", name);
    PQfinish(admin);
    snprintf(conninfo, sizeof conninfo, "%s dbname=%s", tl_pg_base_conninfo(), name);
    return conninfo;
}

PGconn *tl_pg_connect(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK)
        fail_msg("cannot connect to the test PostgreSQL: %s", PQerrorMessage(conn));
    return conn;
}

static PGresult *pg_run(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("PostgreSQL error: %s\nSQL: %s", PQerrorMessage(conn), sql);
    return res;
}

void tl_pg_exec(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    PQclear(pg_run(conn, sql));
    free(sql);
}

char *tl_pg_scalar(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    PGresult *res = pg_run(conn, sql);
    char *out = NULL;
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        out = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    free(sql);
    return out;
}

char *tl_mkdtemp(void)
{
    const char *base = getenv("TMPDIR");
    char *path = NULL;
    if (asprintf(&path, "%s/duckstore-test.XXXXXX", base ? base : "/tmp") < 0 || mkdtemp(path) == NULL)
        fail_msg("cannot create a scratch directory");
    return path;
}

void tl_rmtree(const char *path)
{
    char *out = NULL;
    tl_run(&out, "rm -rf '%s'", path);
    free(out);
}

static duckdb_result duck_run(duckdb_connection con, const char *sql)
{
    duckdb_result res;
    if (duckdb_query(con, sql, &res) == DuckDBError) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        fail_msg("DuckDB error: %s\nSQL: %s", msg, sql);
    }
    return res;
}

void tl_duck_exec(duckdb_connection con, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    duckdb_result res = duck_run(con, sql);
    duckdb_destroy_result(&res);
    free(sql);
}

char *tl_duck_scalar(duckdb_connection con, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *inner = vformat(fmt, ap);
    va_end(ap);
    char *sql = NULL;
    if (asprintf(&sql, "SELECT COLUMNS(*)::VARCHAR FROM (%s)", inner) < 0)
        fail_msg("out of memory");
    free(inner);
    duckdb_result res = duck_run(con, sql);
    char *out = NULL;
    if (duckdb_row_count(&res) > 0 && !duckdb_value_is_null(&res, 0, 0)) {
        char *v = duckdb_value_varchar(&res, 0, 0);
        out = strdup(v);
        duckdb_free(v);
    }
    duckdb_destroy_result(&res);
    free(sql);
    return out;
}

int64_t tl_duck_int(duckdb_connection con, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    duckdb_result res = duck_run(con, sql);
    if (duckdb_row_count(&res) < 1)
        fail_msg("no row from: %s", sql);
    int64_t v = duckdb_value_int64(&res, 0, 0);
    duckdb_destroy_result(&res);
    free(sql);
    return v;
}

void tl_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        fail_msg("cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

int tl_run(char **output, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd = vformat(fmt, ap);
    va_end(ap);
    char *full = NULL;
    if (asprintf(&full, "(%s) 2>&1", cmd) < 0)
        fail_msg("out of memory");
    FILE *p = popen(full, "r");
    if (p == NULL)
        fail_msg("cannot run: %s", cmd);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 1024) {
            cap *= 2;
            char *grown = realloc(buf, cap);
            if (grown == NULL)
                fail_msg("out of memory");
            buf = grown;
        }
    }
    buf[len] = '\0';
    int status = pclose(p);
    free(cmd);
    free(full);
    if (output)
        *output = buf;
    else
        free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
