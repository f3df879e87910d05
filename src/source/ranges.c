/* Snapshot export/import, partition-column ranges, PostgreSQL's parallel
 * query and a backend's send waits, for partitioned reads. */
#include "source/ranges.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"

bool pgsrc_export_snapshot(pgsrc_conn *conn, char **snapshot, ds_error *err)
{
    *snapshot = NULL;
    return pgsrc_query_value(conn, "SELECT pg_export_snapshot()", snapshot, err);
}

bool pgsrc_import_snapshot(pgsrc_conn *conn, const char *snapshot, ds_error *err)
{
    char *lit = pgsrc_quote_literal(conn, snapshot);
    if (lit == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    ds_buf sql = DS_BUF_INIT;
    ds_buf_appendf(&sql, "SET TRANSACTION SNAPSHOT %s", lit);
    free(lit);
    char *text = ds_buf_take_or_err(&sql, err);
    bool ok = text != NULL && pgsrc_exec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err) &&
              pgsrc_exec(conn, text, err);
    free(text);
    return ok;
}

char *pgsrc_bounds_sql(const char *query, const pgsrc_column *col, int ranges)
{
    /* PostgreSQL cannot subtract ±infinity dates and timestamps: span the
     * finite values only; the open first and last ranges take the rest. */
    bool temporal = false;
    const char *step;
    switch (col->type.kind) {
    case PGSRC_DATE:
        /* The span of two dates can be close to 2^31 days: times i in bigint. */
        step = "lo + ((hi - lo)::int8 * i / %d)::int4";
        temporal = true;
        break;
    case PGSRC_TIMESTAMP:
    case PGSRC_TIMESTAMPTZ:
        step = "lo + (hi - lo) * (i::float8 / %d)";
        temporal = true;
        break;
    default:
        step = "(lo::numeric + (hi::numeric - lo::numeric) * i / %d)";
        break;
    }
    char *trimmed = pgsrc_trim_query(query);
    char *ident = ds_quote_ident(col->name);
    ds_buf b = DS_BUF_INIT;
    if (trimmed == NULL || ident == NULL) {
        free(trimmed);
        free(ident);
        return NULL;
    }
    ds_buf_appendf(&b, "WITH b AS (SELECT min(%s) AS lo, max(%s) AS hi FROM (%s\n) AS _p", ident, ident,
                   trimmed);
    if (temporal)
        ds_buf_appendf(&b, " WHERE isfinite(%s)", ident);
    ds_buf_append(&b, ") SELECT bound::text AS bound_text FROM (SELECT DISTINCT (");
    ds_buf_appendf(&b, step, ranges);
    ds_buf_appendf(
        &b,
        ")::%s AS bound FROM b, generate_series(1, %d) AS i WHERE lo IS NOT NULL) AS bounds ORDER BY "
        "bound",
        col->pg_type, ranges - 1);
    free(trimmed);
    free(ident);
    return ds_buf_take(&b);
}

char *pgsrc_range_sql(const char *col, const char *lo, const char *hi)
{
    ds_buf b = DS_BUF_INIT;
    if (lo == NULL && hi == NULL) {
        ds_buf_append_ident(&b, col);
        ds_buf_append(&b, " IS NOT NULL");
    }
    if (lo != NULL) {
        ds_buf_append_ident(&b, col);
        ds_buf_appendf(&b, " >= %s", lo);
    }
    if (hi != NULL) {
        if (lo != NULL)
            ds_buf_append(&b, " AND ");
        ds_buf_append_ident(&b, col);
        ds_buf_appendf(&b, " < %s", hi);
    }
    return ds_buf_take(&b);
}

char *pgsrc_since_sql(const pgsrc_column *col, const char *literal, bool inclusive)
{
    /* Text compares byte-wise, as DuckDB orders the stored watermark; the
     * column's collation (en_US, say) would order 'B' < 'a' differently
     * and skip or re-read rows. */
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "(");
    ds_buf_append_ident(&b, col->name);
    if (col->type.kind == PGSRC_TEXT)
        ds_buf_append(&b, " COLLATE \"C\"");
    ds_buf_appendf(&b, " %s %s::%s OR ", inclusive ? ">=" : ">", literal, col->pg_type);
    ds_buf_append_ident(&b, col->name);
    ds_buf_append(&b, " IS NULL)");
    return ds_buf_take(&b);
}

void pgsrc_ranges_free(pgsrc_ranges *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->conditions[i]);
    free(r->conditions);
    memset(r, 0, sizeof *r);
}

/* The boundaries of res as typed literals: 'b'::type. */
static char **bound_literals(pgsrc_conn *conn, PGresult *res, const char *pg_type)
{
    int nb = PQntuples(res);
    char **lits = calloc((size_t)nb + 1, sizeof *lits);
    for (int i = 0; lits != NULL && i < nb; i++) {
        char *q = pgsrc_quote_literal(conn, PQgetvalue(res, i, 0));
        ds_buf b = DS_BUF_INIT;
        ds_buf_appendf(&b, "%s::%s", q ? q : "", pg_type);
        lits[i] = q ? ds_buf_take(&b) : (ds_buf_free(&b), NULL);
        free(q);
        if (lits[i] == NULL) {
            for (int j = 0; j < i; j++)
                free(lits[j]);
            free(lits);
            return NULL;
        }
    }
    return lits;
}

bool pgsrc_plan_ranges(pgsrc_conn *conn, const char *query, const pgsrc_column *col, int ranges,
                       pgsrc_ranges *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    /* Classified like every other statement: this query runs the user's
     * query too, so its statement_timeout must read as query_timeout. */
    char *sql = pgsrc_bounds_sql(query, col, ranges);
    PGresult *res = pgsrc_query_rows(conn, sql, err);
    free(sql);
    if (res == NULL) {
        ds_error_prefix(err, "cannot split partition_column %s into ranges: ", col->name);
        return false;
    }
    int nb = PQntuples(res);
    char **lits = bound_literals(conn, res, col->pg_type);
    PQclear(res);
    out->conditions = calloc((size_t)nb + 2, sizeof *out->conditions);
    bool ok = lits != NULL && out->conditions != NULL;
    for (int i = 0; ok && i <= nb; i++) {
        const char *lo = i > 0 ? lits[i - 1] : NULL, *hi = i < nb ? lits[i] : NULL;
        ok = (out->conditions[out->n++] = pgsrc_range_sql(col->name, lo, hi)) != NULL;
    }
    if (ok) {
        ds_buf b = DS_BUF_INIT;
        ds_buf_append_ident(&b, col->name);
        ds_buf_append(&b, " IS NULL");
        ok = (out->conditions[out->n++] = ds_buf_take(&b)) != NULL;
    }
    for (int i = 0; lits != NULL && i < nb; i++)
        free(lits[i]);
    free(lits);
    if (!ok) {
        pgsrc_ranges_free(out);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    return true;
}

/* The settings that let PostgreSQL's planner run the whole query with
 * parallel workers wherever it can (see ranges.h). */
static const char *const parallel_settings[] = {"parallel_setup_cost", "parallel_tuple_cost",
                                                "min_parallel_table_scan_size"};

/* The settings as one round trip of SET LOCAL statements (a remote
 * server's round trip is tens of milliseconds): on with `workers`, or back
 * to the defaults. Caller frees; NULL when out of memory. */
static char *parallel_sql(int workers, bool on)
{
    ds_buf sql = DS_BUF_INIT;
    if (on) /* a server (or role) whose setting is 0 has said no: it stays 0 */
        ds_buf_appendf(&sql,
                       "SELECT set_config('max_parallel_workers_per_gather', CASE current_setting("
                       "'max_parallel_workers_per_gather') WHEN '0' THEN '0' ELSE '%d' END, true)",
                       workers);
    else
        ds_buf_append(&sql, "SET LOCAL max_parallel_workers_per_gather = DEFAULT");
    for (size_t i = 0; i < sizeof parallel_settings / sizeof parallel_settings[0]; i++)
        ds_buf_appendf(&sql, "; SET LOCAL %s = %s", parallel_settings[i], on ? "0" : "DEFAULT");
    return ds_buf_take(&sql);
}

bool pgsrc_parallel_off(pgsrc_conn *pg, ds_error *err)
{
    char *sql = parallel_sql(0, false);
    bool ok = sql != NULL ? pgsrc_exec(pg, sql, err) : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    free(sql);
    return ok;
}

bool pgsrc_plans_parallel(pgsrc_conn *pg, const char *query, int workers, bool *parallel, ds_error *err)
{
    *parallel = false;
    /* The settings and the EXPLAIN in one round trip: its result is the
     * last statement's. */
    char *settings = parallel_sql(workers, true);
    char *trimmed = pgsrc_trim_query(query);
    ds_buf sql = DS_BUF_INIT;
    bool built = settings != NULL && trimmed != NULL;
    if (built)
        ds_buf_appendf(&sql, "%s; EXPLAIN (FORMAT JSON) %s\n", settings, trimmed);
    free(settings);
    free(trimmed);
    char *text = built ? ds_buf_take_or_err(&sql, err) : NULL;
    if (!built)
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    char *plan = NULL;
    bool ok = text != NULL && pgsrc_query_value(pg, text, &plan, err);
    free(text);
    *parallel = ok && plan != NULL && strstr(plan, "\"Node Type\": \"Gather") != NULL;
    free(plan);
    return ok && (*parallel || pgsrc_parallel_off(pg, err));
}

bool pgsrc_sample_send_waits(pgsrc_conn *conn, int pid, int samples, double interval_s, int *waiting,
                             ds_error *err)
{
    /* The server takes the samples in one statement, one round trip
     * however far it is: each clears the statement's snapshot of the
     * backends' activity, and the pid depends on the row so that the
     * function runs again for each. */
    char sql[400];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FILTER (WHERE w = 'ClientWrite') FROM (SELECT (SELECT a.wait_event "
             "FROM pg_stat_get_activity(%d + 0 * g) AS a WHERE pg_stat_clear_snapshot() IS NOT NULL "
             "AND pg_sleep(%g) IS NOT NULL) AS w FROM generate_series(1, %d) AS g) AS samples",
             pid, interval_s, samples);
    char *count = NULL;
    *waiting = 0;
    if (!pgsrc_query_value(conn, sql, &count, err))
        return false;
    *waiting = count != NULL ? atoi(count) : 0;
    free(count);
    return true;
}
