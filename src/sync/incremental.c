/* Commit horizon, lookback and overlap-safe merges for incremental syncs. */
#include "sync/incremental.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

bool inc_horizon_enabled(const cfg_source *src, const pgsrc_column *col)
{
    bool is_time = col->type.kind == PGSRC_TIMESTAMP || col->type.kind == PGSRC_TIMESTAMPTZ;
    return is_time && src->commit_horizon != CFG_HORIZON_OFF;
}

void inc_horizon_free(inc_horizon *h)
{
    free(h->value);
    free(h->holder);
    memset(h, 0, sizeof *h);
}

bool inc_take_horizon(pgsrc_conn *conn, const pgsrc_column *col, inc_horizon *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    /* Other duckstore sessions only read, so they are not counted. For a
     * timestamp without time zone the horizon is in the session's zone, as
     * now() is when it fills such a column. */
    const char *value_expr =
        col->type.kind == PGSRC_TIMESTAMPTZ
            ? "to_char(h AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
            : "to_char(h AT TIME ZONE current_setting('TimeZone'), 'YYYY-MM-DD HH24:MI:SS.US')";
    char *sql = NULL;
    if (asprintf(
            &sql,
            "SELECT %s, CASE WHEN o.pid IS NOT NULL THEN format('pid %%s (user %%s, application %%s) in a "
            "transaction open since %%s', o.pid, o.usename, coalesce(nullif(o.application_name, ''), '-'), "
            "to_char(o.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')) END, "
            "(SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') FROM pg_roles "
            "WHERE rolname = current_user) "
            "FROM (SELECT least(o.xact_start, now()) AS h, o.* FROM (SELECT 1) AS one LEFT JOIN LATERAL "
            "(SELECT pid, usename, application_name, xact_start FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client "
            "backend' AND xact_start IS NOT NULL AND xact_start < now() "
            "AND application_name IS DISTINCT FROM 'duckstore' ORDER BY xact_start LIMIT 1) AS o ON true) AS "
            "o",
            value_expr) < 0)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    PGresult *res = pgsrc_query(conn, sql, err);
    if (res == NULL) {
        free(sql);
        return false;
    }
    free(sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        pgsrc_result_error(conn, res, err);
        ds_error_prefix(err, "cannot take the commit horizon: ");
        PQclear(res);
        return false;
    }
    out->value = strdup(PQgetvalue(res, 0, 0));
    if (!PQgetisnull(res, 0, 1))
        out->holder = strdup(PQgetvalue(res, 0, 1));
    out->sees_all = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    PQclear(res);
    return true;
}

bool inc_check_key(const cfg_source *src, const char *label, const cfg_key *key, const pgsrc_desc *desc,
                   ds_error *err)
{
    for (size_t i = 0; i < key->n; i++) {
        if (pgsrc_desc_find(desc, key->cols[i]) >= 0)
            continue;
        char *cols = pgsrc_desc_column_list(desc);
        ds_error_set(err, DS_ERR_CONFIG,
                     "%s:%d: unique_key column \"%s\" is not a column of %s (columns: %s); select it or fix "
                     "unique_key",
                     src->file, src->unique_key_line, key->cols[i], label, cols ? cols : "");
        free(cols);
        return false;
    }
    return true;
}

bool inc_read_start(duckdb_connection con, const cfg_source *src, const char *duck_type,
                    const char *watermark, bool watermark_inclusive, char **start, bool *start_inclusive,
                    bool *overlap, ds_error *err)
{
    *start_inclusive = watermark_inclusive;
    *overlap = watermark_inclusive;
    if (src->lookback == NULL) {
        *start = strdup(watermark);
        return *start != NULL || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    *overlap = true;
    char *wm = store_quote_literal(watermark);
    char *lb = store_quote_literal(src->lookback);
    bool ok =
        src->lookback_is_number
            ? store_query_textf(con, start, err, "SELECT (CAST(%s AS %s) - CAST(%s AS DOUBLE))::%s::VARCHAR",
                                wm, duck_type, lb, duck_type)
            : store_query_textf(con, start, err, "SELECT (CAST(%s AS %s) - CAST(%s AS INTERVAL))::VARCHAR",
                                wm, duck_type, lb);
    free(wm);
    free(lb);
    if (ok && *start == NULL)
        ok = ds_error_set(err, DS_ERR_CONFIG, "%s:%d: lookback \"%s\" does not apply to the watermark %s",
                          src->file, src->lookback_line, src->lookback, watermark);
    return ok;
}

/* "a", "b" → `"a", "b"` and `t."a" IS NOT DISTINCT FROM s."a" AND ...`. */
static void key_sql(const cfg_key *key, char **list, char **match)
{
    size_t cap = 16;
    for (size_t i = 0; i < key->n; i++)
        cap += 6 * strlen(key->cols[i]) + 64;
    *list = calloc(1, cap);
    *match = calloc(1, cap);
    size_t ul = 0, um = 0;
    for (size_t i = 0; i < key->n; i++) {
        char *q = store_quote_ident(key->cols[i]);
        ul += (size_t)snprintf(*list + ul, cap - ul, "%s%s", i ? ", " : "", q);
        um += (size_t)snprintf(*match + um, cap - um, "%st.%s IS NOT DISTINCT FROM s.%s", i ? " AND " : "", q,
                               q);
        free(q);
    }
}

bool inc_apply(duckdb_connection con, const char *table, const char *staging_ref, const cfg_key *key,
               const char *inc_col, const char *duck_type, const char *start, bool start_inclusive,
               bool overlap, int64_t *inserted, int64_t *updated, ds_error *err)
{
    char *qt = store_quote_ident(table), *qs = strdup(staging_ref), *qi = store_quote_ident(inc_col);
    int64_t added = 0, removed = 0;
    bool ok;
    if (key != NULL && key->n > 0) {
        /* Upsert: the newest version of each key replaces what is stored. */
        char *list, *match;
        key_sql(key, &list, &match);
        ok = store_execf(con, &removed, err,
                         "DELETE FROM %s AS t USING (SELECT DISTINCT %s FROM %s) AS s WHERE %s", qt, list, qs,
                         match) &&
             store_execf(
                 con, &added, err,
                 "INSERT INTO %s SELECT * FROM %s QUALIFY row_number() OVER (PARTITION BY %s ORDER BY %s "
                 "DESC NULLS LAST) = 1",
                 qt, qs, list, qi);
        free(list);
        free(match);
    } else if (overlap) {
        /* No key: rows already stored past the read start are not stored
         * again (exact for append-only tables). */
        char *lit = store_quote_literal(start);
        ok = store_execf(
            con, &added, err,
            "INSERT INTO %s SELECT * FROM %s EXCEPT ALL SELECT * FROM %s WHERE %s %s CAST(%s AS %s)", qt, qs,
            qt, qi, start_inclusive ? ">=" : ">", lit, duck_type);
        free(lit);
    } else {
        ok = store_execf(con, &added, err, "INSERT INTO %s SELECT * FROM %s", qt, qs);
    }
    *updated = removed < added ? removed : added;
    *inserted = added - *updated;
    free(qt);
    free(qs);
    free(qi);
    return ok;
}

/* max(inc_col) of the table. The previous watermark is normally a floor
 * for it (the rows that set it are still stored), so the scan is filtered
 * to col >= floor: DuckDB's row-group min/max then skips all but the
 * newest row groups, and any maximum found there is the table's. Nothing
 * at or past the floor (an upsert replaced those rows) means a full scan. */
static bool table_max(duckdb_connection con, const char *qt, const char *qi, const char *duck_type,
                      const char *floor, char **max, ds_error *err)
{
    *max = NULL;
    if (floor != NULL) {
        char *lit = store_quote_literal(floor);
        bool ok =
            store_query_textf(con, max, err, "SELECT max(%s)::VARCHAR FROM %s WHERE %s >= CAST(%s AS %s)", qi,
                              qt, qi, lit, duck_type);
        free(lit);
        if (!ok || *max != NULL)
            return ok;
    }
    return store_query_textf(con, max, err, "SELECT max(%s)::VARCHAR FROM %s", qi, qt);
}

bool inc_next_watermark(duckdb_connection con, const char *table, const char *inc_col, const char *duck_type,
                        const char *floor, const char *horizon, char **watermark, bool *inclusive,
                        ds_error *err)
{
    *watermark = NULL;
    *inclusive = false;
    char *qt = store_quote_ident(table), *qi = store_quote_ident(inc_col);
    char *max = NULL;
    bool ok = table_max(con, qt, qi, duck_type, floor, &max, err);
    free(qt);
    free(qi);
    if (ok && horizon != NULL && max != NULL) {
        /* Held at the horizon when rows reach it: a transaction still open
         * there may commit more rows at or past it. */
        char *h = store_quote_literal(horizon), *m = store_quote_literal(max);
        char *held = NULL;
        ok = store_query_textf(con, &held, err, "SELECT CAST(%s AS %s) >= CAST(%s AS %s)", m, duck_type, h,
                               duck_type);
        *inclusive = ok && held != NULL && strcmp(held, "true") == 0;
        if (*inclusive) {
            free(max);
            max = NULL;
            ok = store_query_textf(con, &max, err, "SELECT CAST(%s AS %s)::VARCHAR", h, duck_type);
        }
        free(held);
        free(h);
        free(m);
    }
    if (ok)
        *watermark = max;
    else
        free(max);
    return ok;
}
