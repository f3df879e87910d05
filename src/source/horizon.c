/* The commit horizon query, read from pg_stat_activity. */
#include "source/horizon.h"

#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"

char *pgsrc_horizon_sql(bool with_time_zone)
{
    /* Other duckstore sessions only read, so they are not counted. For a
     * timestamp without time zone the horizon is in the session's zone, as
     * now() is when it fills such a column. */
    const char *value_expr =
        with_time_zone ? "to_char(h AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
                       : "to_char(h AT TIME ZONE current_setting('TimeZone'), 'YYYY-MM-DD HH24:MI:SS.US')";
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "SELECT %s, ", value_expr);
    ds_buf_append(
        &b, "CASE WHEN o.pid IS NOT NULL THEN format('pid %s (user %s, application %s) in a "
            "transaction open since %s', o.pid, o.usename, coalesce(nullif(o.application_name, ''), '-'), "
            "to_char(o.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')) END, "
            "(SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') FROM pg_roles "
            "WHERE rolname = current_user) "
            "FROM (SELECT least(o.xact_start, now()) AS h, o.* FROM (SELECT 1) AS one LEFT JOIN LATERAL "
            "(SELECT pid, usename, application_name, xact_start FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client "
            "backend' AND xact_start IS NOT NULL AND xact_start < now() "
            "AND application_name IS DISTINCT FROM 'duckstore' ORDER BY xact_start LIMIT 1) AS o ON "
            "true) AS o");
    return ds_buf_take(&b);
}

void pgsrc_horizon_free(pgsrc_horizon *h)
{
    free(h->value);
    free(h->holder);
    memset(h, 0, sizeof *h);
}

bool pgsrc_take_horizon(pgsrc_conn *conn, bool with_time_zone, pgsrc_horizon *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    char *sql = pgsrc_horizon_sql(with_time_zone);
    PGresult *res = pgsrc_query_rows(conn, sql, err);
    free(sql);
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
    bool ok = out->value != NULL && (PQgetisnull(res, 0, 1) || out->holder != NULL);
    PQclear(res);
    if (!ok) {
        pgsrc_horizon_free(out);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    return true;
}
