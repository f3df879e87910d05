/* Publications, replication slots and the server settings logical capture
 * needs, in SQL built with ds_buf and libpq's quoting. */
#include "source/publication.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"

/* The rows of a statement built in b (freed here), or NULL with err set. */
static PGresult *rows_of(pgsrc_conn *c, ds_buf *b, ds_error *err)
{
    char *sql = ds_buf_take(b);
    PGresult *res = pgsrc_query_rows(c, sql, err);
    free(sql);
    return res;
}

static bool exec_of(pgsrc_conn *c, ds_buf *b, ds_error *err)
{
    char *sql = ds_buf_take(b);
    if (sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    bool ok = pgsrc_exec(c, sql, err);
    free(sql);
    return ok;
}

static void copy_field(char *dst, size_t cap, PGresult *res, int col)
{
    snprintf(dst, cap, "%s", PQgetisnull(res, 0, col) ? "" : PQgetvalue(res, 0, col));
}

bool pub_wal_level(pgsrc_conn *c, char *out, size_t cap, ds_error *err)
{
    char *level = NULL;
    if (!pgsrc_query_value(c, "SELECT pg_catalog.current_setting('wal_level')", &level, err))
        return false;
    snprintf(out, cap, "%s", level ? level : "");
    free(level);
    return true;
}

bool pub_can_replicate(pgsrc_conn *c, bool *ok, ds_error *err)
{
    char *v = NULL;
    if (!pgsrc_query_value(c,
                           "SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = "
                           "current_user",
                           &v, err))
        return false;
    *ok = v != NULL && strcmp(v, "t") == 0;
    free(v);
    return true;
}

bool pub_exists(pgsrc_conn *c, const char *publication, bool *exists, ds_error *err)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = ");
    if (!pgsrc_append_literal(&b, c, publication, err)) {
        ds_buf_free(&b);
        return false;
    }
    PGresult *res = rows_of(c, &b, err);
    if (res == NULL)
        return false;
    *exists = PQntuples(res) > 0;
    PQclear(res);
    return true;
}

/* " t1, t2" after FOR TABLE / SET TABLE. */
static void append_tables(ds_buf *b, const char *const *tables, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ds_buf_append(b, i ? ", " : " ");
        ds_buf_append(b, tables[i]);
    }
}

#define ALL_ACTIONS "insert, update, delete, truncate"

/* duckstore's own publication: created, or set to exactly these tables and
 * every action. */
static bool ensure_owned(pgsrc_conn *c, const char *publication, bool exists, const char *const *tables,
                         size_t n, ds_error *err)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, exists ? "ALTER PUBLICATION " : "CREATE PUBLICATION ");
    if (!pgsrc_append_ident(&b, c, publication, err)) {
        ds_buf_free(&b);
        return false;
    }
    ds_buf_append(&b, exists ? " SET TABLE" : " FOR TABLE");
    append_tables(&b, tables, n);
    /* A partitioned table's changes then come under its own name, the one
     * the query reads, not under each partition's (PostgreSQL 13+). */
    const char *options = PQserverVersion(c->pg) >= 130000 ? "(publish = '" ALL_ACTIONS
                                                             "', publish_via_partition_root = true)"
                                                           : "(publish = '" ALL_ACTIONS "')";
    if (!exists)
        ds_buf_appendf(&b, " WITH %s", options);
    if (!exec_of(c, &b, err))
        return false;
    if (!exists)
        return true;
    ds_buf_append(&b, "ALTER PUBLICATION ");
    if (!pgsrc_append_ident(&b, c, publication, err)) {
        ds_buf_free(&b);
        return false;
    }
    ds_buf_appendf(&b, " SET %s", options);
    return exec_of(c, &b, err);
}

/* What a named publication does to one table's changes that the cache
 * could not follow: a partitioned table published partition by partition
 * (its changes would come under names the query does not read, and be
 * skipped), a row filter or a column list (PostgreSQL 15: changes outside
 * the filter, or columns outside the list, would never arrive, while the
 * initial load copies them). */
static bool check_named_table(pgsrc_conn *c, const char *publication, const char *quoted, const char *table,
                              bool via_root, bool has_filters, ds_error *err)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT c.relkind = 'p', ");
    if (has_filters) {
        ds_buf_append(&b,
                      "coalesce(f.rows, false), coalesce(f.cols, false) FROM pg_catalog.pg_class c LEFT "
                      "JOIN LATERAL (SELECT bool_or(r.prqual IS NOT NULL) AS rows, bool_or(r.prattrs IS "
                      "NOT NULL) AS cols FROM pg_catalog.pg_publication_rel r JOIN pg_catalog.pg_publication "
                      "p ON p.oid = r.prpubid WHERE r.prrelid = c.oid AND p.pubname = ");
        pgsrc_append_literal(&b, c, publication, err);
        ds_buf_append(&b, ") AS f ON true");
    } else {
        ds_buf_append(&b, "false, false FROM pg_catalog.pg_class c");
    }
    ds_buf_append(&b, " WHERE c.oid = ");
    pgsrc_append_literal(&b, c, table, err);
    ds_buf_append(&b, "::regclass");
    PGresult *res = rows_of(c, &b, err);
    bool ok = res != NULL;
    if (ok && PQntuples(res) == 1) {
        if (strcmp(PQgetvalue(res, 0, 0), "t") == 0 && !via_root)
            ok = ds_error_set(err, DS_ERR_CONFIG,
                              "publication %s sends the changes of the partitioned table %s under each "
                              "partition's name, which the cache would skip; ALTER PUBLICATION %s SET "
                              "(publish_via_partition_root = true), or remove the publication key so that "
                              "duckstore creates its own",
                              quoted, table, quoted);
        else if (strcmp(PQgetvalue(res, 0, 1), "t") == 0)
            ok =
                ds_error_set(err, DS_ERR_CONFIG,
                             "publication %s filters the rows of %s (a WHERE), so changes outside the filter "
                             "would never reach the cache while the load copies every row; put the "
                             "condition in the query instead, or remove the publication key so that "
                             "duckstore creates its own",
                             quoted, table);
        else if (strcmp(PQgetvalue(res, 0, 2), "t") == 0)
            ok = ds_error_set(err, DS_ERR_CONFIG,
                              "publication %s sends only some columns of %s (a column list); publish the "
                              "whole table, or remove the publication key so that duckstore creates its own",
                              quoted, table);
    }
    PQclear(res);
    return ok;
}

/* A publication the user named: it must publish every action and table;
 * nothing is changed. */
static bool check_named(pgsrc_conn *c, const char *publication, const char *const *tables, size_t n,
                        ds_error *err)
{
    char *quoted = pgsrc_quote_ident(c, publication);
    if (quoted == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    ds_buf b = DS_BUF_INIT;
    bool has_via_root = PQserverVersion(c->pg) >= 130000, has_filters = PQserverVersion(c->pg) >= 150000;
    ds_buf_appendf(&b,
                   "SELECT puballtables, pubinsert AND pubupdate AND pubdelete AND pubtruncate, %s "
                   "FROM pg_catalog.pg_publication WHERE pubname = ",
                   has_via_root ? "pubviaroot" : "false");
    PGresult *res = pgsrc_append_literal(&b, c, publication, err) ? rows_of(c, &b, err) : NULL;
    ds_buf_free(&b);
    bool ok = res != NULL;
    if (ok && PQntuples(res) == 0) {
        ds_buf fix = DS_BUF_INIT;
        append_tables(&fix, tables, n);
        ok = ds_error_set(err, DS_ERR_CONFIG,
                          "publication %s does not exist in this database; create it (CREATE PUBLICATION %s "
                          "FOR TABLE%s), or remove the publication key so that duckstore creates its own",
                          quoted, quoted, ds_buf_str(&fix) ? ds_buf_str(&fix) : " ...");
        ds_buf_free(&fix);
    } else if (ok && strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
        ok = ds_error_set(err, DS_ERR_CONFIG,
                          "publication %s does not publish every insert, update, delete and truncate, so the "
                          "cache would miss changes; ALTER PUBLICATION %s SET (publish = '" ALL_ACTIONS "')",
                          quoted, quoted);
    }
    bool all_tables = ok && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    bool via_root = ok && strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    PQclear(res);
    /* First: a partitioned table sent partition by partition is not
     * listed as published either, and adding it would not help. */
    for (size_t i = 0; ok && i < n; i++)
        ok = check_named_table(c, publication, quoted, tables[i], via_root, has_filters, err);
    /* pg_publication_tables also lists a schema's tables (FOR TABLES IN
     * SCHEMA) and the partitions of a published table. */
    for (size_t i = 0; ok && !all_tables && i < n; i++) {
        ds_buf_append(&b, "SELECT 1 FROM pg_catalog.pg_publication_tables WHERE pubname = ");
        pgsrc_append_literal(&b, c, publication, err);
        ds_buf_append(&b, " AND pg_catalog.format('%I.%I', schemaname, tablename)::regclass = ");
        pgsrc_append_literal(&b, c, tables[i], err);
        ds_buf_append(&b, "::regclass");
        res = rows_of(c, &b, err);
        ok = res != NULL;
        if (ok && PQntuples(res) == 0)
            ok = ds_error_set(err, DS_ERR_CONFIG,
                              "publication %s does not publish %s, so its changes would never reach the "
                              "cache; ALTER PUBLICATION %s ADD TABLE %s",
                              quoted, tables[i], quoted, tables[i]);
        PQclear(res);
    }
    free(quoted);
    return ok;
}

bool pub_ensure(pgsrc_conn *c, const char *publication, bool owned, const char *const *qualified_tables,
                size_t n, ds_error *err)
{
    if (!owned)
        return check_named(c, publication, qualified_tables, n, err);
    bool exists;
    return pub_exists(c, publication, &exists, err) &&
           ensure_owned(c, publication, exists, qualified_tables, n, err);
}

bool pub_slot_info(pgsrc_conn *c, const char *slot, pub_slot *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    out->lag_bytes = -1;
    bool has_wal_status = PQserverVersion(c->pg) >= 130000;
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b,
                   "SELECT plugin, confirmed_flush_lsn, restart_lsn, %s, active, active_pid, "
                   "CASE WHEN pg_catalog.pg_is_in_recovery() OR confirmed_flush_lsn IS NULL THEN NULL "
                   "ELSE pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn) "
                   "END::bigint FROM pg_catalog.pg_replication_slots WHERE slot_name = ",
                   has_wal_status ? "wal_status" : "NULL::text");
    if (!pgsrc_append_literal(&b, c, slot, err)) {
        ds_buf_free(&b);
        return false;
    }
    PGresult *res = rows_of(c, &b, err);
    if (res == NULL)
        return false;
    if (PQntuples(res) > 0) {
        out->exists = true;
        copy_field(out->plugin, sizeof out->plugin, res, 0);
        copy_field(out->confirmed_lsn, sizeof out->confirmed_lsn, res, 1);
        copy_field(out->restart_lsn, sizeof out->restart_lsn, res, 2);
        copy_field(out->wal_status, sizeof out->wal_status, res, 3);
        out->active = strcmp(PQgetvalue(res, 0, 4), "t") == 0;
        out->active_pid = PQgetisnull(res, 0, 5) ? 0 : atoi(PQgetvalue(res, 0, 5));
        out->lag_bytes = PQgetisnull(res, 0, 6) ? -1 : strtoll(PQgetvalue(res, 0, 6), NULL, 10);
    }
    PQclear(res);
    return true;
}

bool pub_drop_slot(pgsrc_conn *c, const char *slot, ds_error *err)
{
    pub_slot info;
    if (!pub_slot_info(c, slot, &info, err))
        return false;
    if (!info.exists)
        return ds_error_set(err, DS_ERR_CONFIG, "no replication slot named \"%s\" on this server", slot);
    if (info.active)
        return ds_error_set(
            err, DS_ERR_SOURCE,
            "replication slot \"%s\" is in use: the process with PID %d streams from it; stop "
            "that process (the duckstore that reads this source) and try again",
            slot, info.active_pid);
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT pg_catalog.pg_drop_replication_slot(");
    pgsrc_append_literal(&b, c, slot, err);
    ds_buf_append(&b, ")");
    PGresult *res = rows_of(c, &b, err);
    PQclear(res);
    return res != NULL;
}

bool pub_drop_publication(pgsrc_conn *c, const char *publication, ds_error *err)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "DROP PUBLICATION IF EXISTS ");
    if (!pgsrc_append_ident(&b, c, publication, err)) {
        ds_buf_free(&b);
        return false;
    }
    return exec_of(c, &b, err);
}

void pub_free_names(char **names, size_t n)
{
    for (size_t i = 0; names != NULL && i < n; i++)
        free(names[i]);
    free(names);
}

bool pub_list_slots_db(pgsrc_conn *c, char ***names, char ***dbs, size_t *n, ds_error *err)
{
    *names = NULL;
    if (dbs != NULL)
        *dbs = NULL;
    *n = 0;
    PGresult *res = pgsrc_query_rows(c,
                                     "SELECT slot_name, coalesce(database, '') FROM "
                                     "pg_catalog.pg_replication_slots WHERE slot_name LIKE 'duckstore\\_%' "
                                     "ORDER BY slot_name",
                                     err);
    if (res == NULL)
        return false;
    size_t rows = (size_t)PQntuples(res);
    char **list = calloc(rows ? rows : 1, sizeof *list);
    char **db_list = dbs != NULL ? calloc(rows ? rows : 1, sizeof *db_list) : NULL;
    bool ok = list != NULL && (dbs == NULL || db_list != NULL);
    for (size_t i = 0; ok && i < rows; i++) {
        ok = (list[i] = strdup(PQgetvalue(res, (int)i, 0))) != NULL &&
             (dbs == NULL || (db_list[i] = strdup(PQgetvalue(res, (int)i, 1))) != NULL);
    }
    PQclear(res);
    if (!ok) {
        pub_free_names(list, rows);
        pub_free_names(db_list, rows);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    *names = list;
    if (dbs != NULL)
        *dbs = db_list;
    *n = rows;
    return true;
}

bool pub_list_slots(pgsrc_conn *c, char ***names, size_t *n, ds_error *err)
{
    return pub_list_slots_db(c, names, NULL, n, err);
}
