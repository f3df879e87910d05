/* The commit horizon query (pg_stat_activity) and the read's snapshot. */
#include "source/horizon.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "source/pgsrc_wait.h"

char *pgsrc_horizon_sql(bool with_time_zone, bool only_now)
{
    /* Other duckstore sessions only read, so they are not counted. For a
     * timestamp without time zone the horizon is in the session's zone, as
     * now() is when it fills such a column. */
    const char *value_expr =
        with_time_zone ? "to_char(h AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
                       : "to_char(h AT TIME ZONE current_setting('TimeZone'), 'YYYY-MM-DD HH24:MI:SS.US')";
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "SELECT %s, ", value_expr);
    /* The function under pg_stat_activity, not the view: the view's joins
     * (pg_database, pg_authid) cost more to plan than the rest of the
     * statement, on every sync of every table. */
    ds_buf_append(
        &b,
        "CASE WHEN o.pid IS NOT NULL THEN format('pid %s (user %s, application %s) in a "
        "transaction open since %s', o.pid, pg_get_userbyid(o.usesysid), "
        "coalesce(nullif(o.application_name, ''), '-'), "
        "to_char(o.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')) END, "
        "current_setting('is_superuser') = 'on' OR pg_has_role(current_user, 'pg_read_all_stats', "
        "'MEMBER'), current_user "
        "FROM (SELECT least(o.xact_start, now()) AS h, o.* FROM (SELECT 1) AS one LEFT JOIN LATERAL "
        "(SELECT a.pid, a.usesysid, a.application_name, a.xact_start FROM pg_stat_get_activity(NULL) AS a "
        "WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND a.pid <> "
        "pg_backend_pid() AND a.backend_type = 'client backend' AND a.xact_start IS NOT NULL AND "
        "a.xact_start < now() AND a.application_name IS DISTINCT FROM 'duckstore'");
    if (only_now)
        ds_buf_append(&b, " AND false");
    ds_buf_append(&b, " ORDER BY a.xact_start LIMIT 1) AS o ON true) AS o");
    return ds_buf_take(&b);
}

void pgsrc_horizon_free(pgsrc_horizon *h)
{
    free(h->value);
    free(h->holder);
    free(h->role);
    memset(h, 0, sizeof *h);
}

static bool parse_horizon(PGresult *res, pgsrc_horizon *out, ds_error *err);

bool pgsrc_take_horizon(pgsrc_conn *conn, bool with_time_zone, bool only_now, pgsrc_horizon *out,
                        ds_error *err)
{
    memset(out, 0, sizeof *out);
    char *sql = pgsrc_horizon_sql(with_time_zone, only_now);
    PGresult *res = pgsrc_query_rows(conn, sql, err);
    free(sql);
    return parse_horizon(res, out, err);
}

/* Takes (and clears) the horizon query's result. */
static bool parse_horizon(PGresult *res, pgsrc_horizon *out, ds_error *err)
{
    if (res != NULL && PQntuples(res) != 1) {
        ds_error_set(err, DS_ERR_SOURCE, "%d rows", PQntuples(res));
        PQclear(res);
        res = NULL;
    }
    if (res == NULL) {
        ds_error_prefix(err, "cannot take the commit horizon: ");
        return false;
    }
    out->value = strdup(PQgetvalue(res, 0, 0));
    if (!PQgetisnull(res, 0, 1))
        out->holder = strdup(PQgetvalue(res, 0, 1));
    out->sees_all = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    out->role = strdup(PQgetvalue(res, 0, 3));
    bool ok = out->value != NULL && out->role != NULL && (PQgetisnull(res, 0, 1) || out->holder != NULL);
    PQclear(res);
    if (!ok) {
        pgsrc_horizon_free(out);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    return true;
}

bool pgsrc_read_session_facts(pgsrc_conn *conn, pgsrc_session_facts *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    PGresult *res =
        pgsrc_query_rows(conn,
                         "SELECT pg_is_in_recovery(), (SELECT rolsuper OR pg_has_role(current_user, "
                         "'pg_read_all_stats', 'MEMBER') FROM pg_roles WHERE rolname = current_user), "
                         "current_user",
                         err);
    if (res == NULL)
        return false;
    bool ok = PQntuples(res) == 1 || ds_error_set(err, DS_ERR_SOURCE, "%d rows", PQntuples(res));
    if (ok) {
        out->standby = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        out->sees_all = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
        snprintf(out->role, sizeof out->role, "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    return ok;
}

static bool parse_xid(const char **p, char stop, uint64_t *out)
{
    if (**p < '0' || **p > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(*p, &end, 10);
    if (errno != 0 || *end != stop)
        return false;
    *out = v;
    *p = end;
    return true;
}

bool pgsrc_parse_snapshot(const char *text, pgsrc_snapshot *out)
{
    memset(out, 0, sizeof *out);
    const char *p = text;
    if (!parse_xid(&p, ':', &out->xmin))
        return false;
    p++;
    if (!parse_xid(&p, ':', &out->xmax) || out->xmin > out->xmax)
        return false;
    p++;
    size_t cap = 1;
    for (const char *c = p; *c; c++)
        cap += *c == ',';
    if (*p != '\0' && (out->xip = calloc(cap, sizeof *out->xip)) == NULL)
        return false;
    while (*p != '\0') {
        const char *next = strchr(p, ',');
        if (!parse_xid(&p, next ? ',' : '\0', &out->xip[out->nxip])) {
            pgsrc_snapshot_free(out);
            return false;
        }
        out->nxip++;
        if (next)
            p++;
    }
    return true;
}

void pgsrc_snapshot_free(pgsrc_snapshot *s)
{
    free(s->xip);
    free(s->xidless);
    free(s->running_vxids);
    memset(s, 0, sizeof *s);
}

/* pg_snapshot and its functions arrived in PostgreSQL 13; txid_* before. */
static bool has_pg_snapshot(const pgsrc_conn *conn)
{
    return PQserverVersion(conn->pg) >= 130000;
}

/* The first statement of the read's transaction, in one piece so that the
 * lock table is copied as close to the snapshot as can be: it fixes the
 * snapshot, locks every relation the query reads (planning the probe locks
 * them; no row is read) and copies the lock table once. Columns: the
 * snapshot, whether the server is a standby, the running transactions
 * (each holds an exclusive lock on its own 32-bit id: pg_locks shows them
 * to any role, the snapshot lists only those below its xmax), and those of
 * them that hold a write lock on a relation the query reads (the relation
 * locks of one transaction share its virtualtransaction, a prepared
 * one's too), the holders of such a lock that have no id yet and the
 * running transactions, by virtual transaction id. */
static char *read_start_sql(const char *query, bool modern)
{
    char *trimmed = pgsrc_trim_query(query);
    if (trimmed == NULL)
        return NULL;
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(
        &b,
        "WITH probe AS MATERIALIZED (SELECT 1 FROM (%s\n) AS _q LIMIT 0), locks AS MATERIALIZED (SELECT "
        "locktype, database, relation, transactionid, virtualtransaction, mode, granted, pid FROM pg_locks), "
        "running AS (SELECT transactionid::text::int8 AS x, virtualtransaction FROM locks WHERE locktype = "
        "'transactionid' AND mode = 'ExclusiveLock' AND granted), mine AS (SELECT relation FROM locks WHERE "
        "pid "
        "= pg_backend_pid() AND locktype = 'relation' AND relation IS NOT NULL), writers AS (SELECT DISTINCT "
        "t.x "
        "FROM running t JOIN locks r USING (virtualtransaction) WHERE r.locktype = 'relation' AND r.database "
        "= "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) AND r.relation IN (SELECT relation "
        "FROM mine) AND r.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', "
        "'AccessExclusiveLock')), xidless AS (SELECT DISTINCT r.virtualtransaction FROM locks r WHERE "
        "r.locktype = 'relation' AND r.granted AND r.pid IS DISTINCT FROM pg_backend_pid() AND r.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) AND r.relation IN (SELECT relation "
        "FROM mine) AND r.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', "
        "'AccessExclusiveLock') AND r.virtualtransaction NOT IN (SELECT virtualtransaction FROM running)) "
        "SELECT %s::text, pg_is_in_recovery(), (SELECT coalesce(string_agg(x::text, "
        "','), '') FROM running), (SELECT coalesce(string_agg(x::text, ','), '') FROM writers), (SELECT "
        "count(*) FROM probe), (SELECT coalesce(string_agg(virtualtransaction, ','), '') FROM xidless), "
        "(SELECT coalesce(string_agg(virtualtransaction, ','), '') FROM running)",
        trimmed, modern ? "pg_current_snapshot()" : "txid_current_snapshot()");
    free(trimmed);
    return ds_buf_take(&b);
}

static bool among(const char *list, uint64_t low)
{
    const char *p = list;
    while (*p != '\0') {
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p)
            return false; /* not a list of numbers: cannot happen */
        if (v == low)
            return true;
        p = *end == ',' ? end + 1 : end;
    }
    return false;
}

/* Adds the running transactions past xmax, then keeps those a later read
 * must wait for; *ended counts those that ended between the snapshot and
 * the copy of the lock table (they cannot be told apart from writers). */
static bool settle_running(pgsrc_snapshot *snap, const char *running, const char *writers, size_t *ended,
                           ds_error *err)
{
    size_t n = 1;
    for (const char *c = running; *c; c++)
        n += *c == ',';
    uint64_t *xip = realloc(snap->xip, (snap->nxip + n + 1) * sizeof *xip);
    if (xip == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    snap->xip = xip;
    size_t listed = snap->nxip;
    for (const char *p = running; *p != '\0';) {
        char *end;
        uint64_t low = strtoull(p, &end, 10) & 0xffffffffu;
        p = *end == ',' ? end + 1 : end;
        uint64_t x = (snap->xmax & ~(uint64_t)0xffffffffu) | low;
        if (x < snap->xmax)
            x += (uint64_t)1 << 32; /* the epoch turned after xmax */
        if (x - snap->xmax < ((uint64_t)1 << 31))
            snap->xip[snap->nxip++] = x;
    }
    size_t kept = 0;
    *ended = 0;
    for (size_t i = 0; i < snap->nxip; i++) {
        uint64_t low = snap->xip[i] & 0xffffffffu;
        bool is_running = i >= listed || among(running, low);
        *ended += !is_running;
        if (!is_running || among(writers, low))
            snap->xip[kept++] = snap->xip[i];
    }
    snap->nxip = kept;
    return true;
}

/* The next result of a pipeline: a statement's or a PGRES_PIPELINE_SYNC
 * (the NULL that ends each statement's results is skipped); NULL with err
 * set when the server went silent or the connection broke. */
static PGresult *next_pipeline_result(pgsrc_conn *conn, ds_error *err)
{
    for (int nulls = 0; nulls < 2; nulls++) {
        while (PQisBusy(conn->pg) && PQstatus(conn->pg) != CONNECTION_BAD)
            if (!pgsrc_await_input(conn, err))
                return NULL;
        PGresult *res = PQgetResult(conn->pg);
        if (res != NULL)
            return res;
    }
    ds_error_set(err, DS_ERR_SOURCE, "PostgreSQL ended the read's first statements: %s",
                 PQerrorMessage(conn->pg));
    err->msg[strcspn(err->msg, "\n")] = '\0';
    return NULL;
}

/* The horizon query in a transaction of its own, then BEGIN and the
 * snapshot's statement, in one round trip (libpq's pipeline: a Sync after
 * the horizon, as the isolation level must be set before the read's first
 * statement). The horizon and snapshot statements are prepared once per
 * session (pgsrc_pipeline_send): planning them was half of PostgreSQL's
 * time in a quiet sync. *horizon and the returned snapshot result are both
 * set, or both NULL with err set (a transaction may have begun: the caller
 * rolls back). */
static PGresult *horizon_then_snapshot(pgsrc_conn *conn, const char *horizon_sql, const char *snapshot_sql,
                                       PGresult **horizon, ds_error *err)
{
    *horizon = NULL;
    if (!PQenterPipelineMode(conn->pg)) {
        ds_error_set(err, DS_ERR_SOURCE, "cannot start a pipeline: %s", PQerrorMessage(conn->pg));
        return NULL;
    }
    int parse_h = -1, parse_s = -1;
    bool ok = pgsrc_pipeline_send(conn, horizon_sql, &parse_h) && PQpipelineSync(conn->pg) &&
              PQsendQueryParams(conn->pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL,
                                NULL, NULL, 0) &&
              pgsrc_pipeline_send(conn, snapshot_sql, &parse_s) && PQpipelineSync(conn->pg);
    if (!ok)
        ds_error_set(err, DS_ERR_SOURCE, "cannot send the read's first statements: %s",
                     PQerrorMessage(conn->pg));
    /* In order: [the horizon's Parse], the horizon, BEGIN, [the snapshot's
     * Parse], the snapshot. */
    enum { PARSE_H, HORIZON, BEGIN, PARSE_S, SNAPSHOT, NSTEPS };
    static const ExecStatusType want[NSTEPS] = {PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_COMMAND_OK,
                                                PGRES_COMMAND_OK, PGRES_TUPLES_OK};
    bool sent[NSTEPS] = {parse_h >= 0, true, true, parse_s >= 0, true};
    PGresult *got[NSTEPS] = {NULL};
    /* Every result is read, so the connection leaves the pipeline clean. */
    size_t step = 0, n = 0;
    for (int syncs = 0; ok && syncs < 2;) {
        PGresult *res = next_pipeline_result(conn, err);
        if (res == NULL) {
            ok = false;
            continue;
        }
        if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            syncs++;
            PQclear(res);
            continue;
        }
        while (step < NSTEPS && !sent[step])
            step++;
        if (step < NSTEPS)
            got[step++] = res, n++;
        else
            PQclear(res);
    }
    PQexitPipelineMode(conn->pg); /* fails only with results left, on a connection given up already */
    pgsrc_prepared_answered(conn, parse_h, horizon_sql,
                            got[PARSE_H] && PQresultStatus(got[PARSE_H]) == PGRES_COMMAND_OK);
    pgsrc_prepared_answered(conn, parse_s, snapshot_sql,
                            got[PARSE_S] && PQresultStatus(got[PARSE_S]) == PGRES_COMMAND_OK);
    for (size_t i = 0; ok && i < NSTEPS; i++) {
        if (!sent[i] || (got[i] != NULL && PQresultStatus(got[i]) == want[i]))
            continue;
        if (got[i] != NULL)
            pgsrc_result_error(conn, got[i], err);
        if (got[i] != NULL && (i == PARSE_H || i == HORIZON))
            ds_error_prefix(err, "cannot take the commit horizon: ");
        else if (got[i] == NULL)
            ds_error_set(err, DS_ERR_SOURCE, "PostgreSQL answered %zu of the read's first statements", n);
        ok = false;
    }
    if (!ok)
        pgsrc_prepared_forget(conn); /* a statement the session lost is prepared anew */
    PQclear(got[PARSE_H]);
    PQclear(got[BEGIN]);
    PQclear(got[PARSE_S]);
    if (!ok) {
        PQclear(got[HORIZON]);
        PQclear(got[SNAPSHOT]);
        return NULL;
    }
    *horizon = got[HORIZON];
    return got[SNAPSHOT];
}

static bool begin_read_once(pgsrc_conn *conn, const char *query, const char *horizon_sql, PGresult **horizon,
                            pgsrc_snapshot *out, size_t *ended, ds_error *err)
{
    memset(out, 0, sizeof *out);
    *ended = 0;
    char *sql = read_start_sql(query, has_pg_snapshot(conn));
    if (sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    PGresult *res = NULL;
    if (horizon_sql != NULL) {
        res = horizon_then_snapshot(conn, horizon_sql, sql, horizon, err);
    } else {
        /* BEGIN and the first statement in one message: one round trip. */
        ds_buf both = DS_BUF_INIT;
        ds_buf_appendf(&both, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; %s", sql);
        res = pgsrc_query_rows(conn, ds_buf_str(&both), err);
        ds_buf_free(&both);
    }
    free(sql);
    bool ok = res != NULL;
    if (ok && (PQntuples(res) != 1 || !pgsrc_parse_snapshot(PQgetvalue(res, 0, 0), out)))
        ok = ds_error_set(err, DS_ERR_SOURCE, "cannot read the snapshot of the read: \"%s\"",
                          PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "");
    bool standby = ok && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    if (ok && !standby) {
        ok = settle_running(out, PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3), ended, err);
        if (ok && ((out->xidless = strdup(PQgetvalue(res, 0, 5))) == NULL ||
                   (out->running_vxids = strdup(PQgetvalue(res, 0, 6))) == NULL))
            ok = ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    PQclear(res);
    if (ok && standby) {
        out->standby = true;
        free(out->xip);
        out->xip = NULL;
        out->nxip = 0;
        if (out->xmin < out->xmax) {
            out->xip = malloc(sizeof *out->xip);
            ok = out->xip != NULL || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
            if (ok)
                out->xip[out->nxip++] = out->xmax - 1;
        }
    }
    if (!ok) {
        pgsrc_snapshot_free(out);
        pgsrc_exec(conn, "ROLLBACK", NULL);
    }
    return ok;
}

/* horizon_sql (may be NULL) goes with the first attempt; *horizon_res
 * then holds its result (or NULL). */
static bool begin_read(pgsrc_conn *conn, const char *query, const char *horizon_sql, PGresult **horizon_res,
                       pgsrc_snapshot *out, ds_error *err)
{
    /* A transaction that ended between the snapshot and the copy of the
     * lock table cannot be told apart from a writer; a new snapshot sees
     * it ended. After a few tries (a busy server) it stays listed, which is
     * safe. */
    for (int attempt = 0;; attempt++) {
        size_t ended = 0;
        if (!begin_read_once(conn, query, attempt == 0 ? horizon_sql : NULL, horizon_res, out, &ended, err))
            return false;
        if (ended == 0 || attempt == 9)
            return true;
        pgsrc_snapshot_free(out);
        if (!pgsrc_exec(conn, "ROLLBACK", err))
            return false;
    }
}

bool pgsrc_begin_read(pgsrc_conn *conn, const char *query, pgsrc_snapshot *out, ds_error *err)
{
    return begin_read(conn, query, NULL, NULL, out, err);
}

bool pgsrc_begin_read_after_horizon(pgsrc_conn *conn, const char *query, bool with_time_zone, bool only_now,
                                    pgsrc_horizon *horizon, pgsrc_snapshot *out, ds_error *err)
{
    memset(horizon, 0, sizeof *horizon);
    char *sql = pgsrc_horizon_sql(with_time_zone, only_now);
    if (sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    PGresult *res = NULL;
    bool prepared_before = conn->nprepared > 0;
    bool begun = begin_read(conn, query, sql, &res, out, err);
    if (!begun && prepared_before && PQstatus(conn->pg) == CONNECTION_OK) {
        /* The session may have lost what it prepared (DEALLOCATE, a
         * pooler): once more, preparing anew. */
        PQclear(res);
        res = NULL;
        begun = begin_read(conn, query, sql, &res, out, err);
    }
    free(sql);
    if (!begun) {
        PQclear(res);
        return false;
    }
    if (!parse_horizon(res, horizon, err)) {
        pgsrc_snapshot_free(out);
        pgsrc_exec(conn, "ROLLBACK", NULL);
        return false;
    }
    return true;
}

bool pgsrc_xact_outcomes(pgsrc_conn *conn, const pgsrc_snapshot *snap, const uint64_t *xids, size_t n,
                         pgsrc_xact_outcome *out, ds_error *err)
{
    if (snap->standby) {
        /* Whether each ended is not known here, only that all below xmin did. */
        for (size_t i = 0; i < n; i++)
            out[i] = xids[i] < snap->xmin ? PGSRC_XACT_COMMITTED : PGSRC_XACT_IN_PROGRESS;
        return true;
    }
    if (n == 0)
        return true;
    bool modern = has_pg_snapshot(conn);
    ds_buf sql = DS_BUF_INIT;
    ds_buf_appendf(&sql, "SELECT %s FROM unnest('{",
                   modern ? "pg_visible_in_snapshot(x, pg_current_snapshot()), pg_xact_status(x)"
                          : "txid_visible_in_snapshot(x, txid_current_snapshot()), txid_status(x)");
    for (size_t i = 0; i < n; i++)
        ds_buf_appendf(&sql, "%s%" PRIu64, i ? "," : "", xids[i]);
    ds_buf_appendf(&sql, "}'::%s[]) WITH ORDINALITY AS u(x, i) ORDER BY i", modern ? "xid8" : "int8");
    char *text = ds_buf_take_or_err(&sql, err);
    PGresult *res = text ? pgsrc_query_rows(conn, text, err) : NULL;
    free(text);
    if (res == NULL)
        return false;
    bool ok = (size_t)PQntuples(res) == n ||
              ds_error_set(err, DS_ERR_SOURCE, "transaction status: %d rows for %zu ids", PQntuples(res), n);
    for (size_t i = 0; ok && i < n; i++) {
        bool visible = strcmp(PQgetvalue(res, (int)i, 0), "t") == 0;
        const char *status = PQgetvalue(res, (int)i, 1);
        out[i] = !visible                         ? PGSRC_XACT_IN_PROGRESS
                 : strcmp(status, "aborted") == 0 ? PGSRC_XACT_ABORTED
                                                  : PGSRC_XACT_COMMITTED;
    }
    PQclear(res);
    return ok;
}

char *pgsrc_describe_xact(pgsrc_conn *conn, uint64_t xid)
{
    /* pg_prepared_xacts and pg_stat_activity show 32-bit ids. */
    unsigned long long full = (unsigned long long)xid, low = (unsigned long long)(xid & 0xffffffffu);
    ds_buf sql = DS_BUF_INIT;
    ds_buf_appendf(
        &sql,
        "SELECT coalesce((SELECT format('prepared transaction %%L (owner %%s, prepared at %%s)', gid, owner, "
        "to_char(prepared AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')) FROM pg_prepared_xacts "
        "WHERE transaction::text = '%llu' LIMIT 1), (SELECT format('pid %%s (user %%s, application %%s) in a "
        "transaction open since %%s', pid, usename, coalesce(nullif(application_name, ''), '-'), "
        "to_char(xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')) FROM "
        "pg_stat_activity "
        "WHERE backend_xid::text = '%llu' LIMIT 1), format('transaction %llu%%s', CASE WHEN "
        "pg_is_in_recovery() THEN ' or later ones, on the primary' ELSE ' (another database, or a session "
        "this "
        "role cannot see)' END))",
        low, low, full);
    char *text = ds_buf_take(&sql), *out = NULL;
    ds_error ignored;
    if (text != NULL && !pgsrc_query_value(conn, text, &out, &ignored))
        out = NULL;
    free(text);
    return out;
}
