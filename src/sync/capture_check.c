/* The checks a logical source's query and server pass before data moves,
 * from the describe and the catalog; check-config and the sync share them
 * so both say the same. */
#include "sync/capture_check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "source/publication.h"

void capture_table_free(capture_table *t)
{
    free(t->nspname);
    free(t->relname);
    free(t->qualified);
    for (size_t i = 0; t->key_cols != NULL && i < t->nkey; i++)
        free(t->key_cols[i]);
    free(t->key_cols);
    for (size_t i = 0; t->source_col != NULL && i < t->ncols; i++)
        free(t->source_col[i]);
    free(t->source_col);
    memset(t, 0, sizeof *t);
}

/* A refusal of this query: "file:line: label: " and the message. */
static bool refuse(const cfg_source *src, const cfg_query_plan *plan, ds_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool refuse(const cfg_source *src, const cfg_query_plan *plan, ds_error *err, const char *fmt, ...)
{
    char msg[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ds_error_set(err, DS_ERR_CONFIG, "%s", msg);
    cfg_plan_error_prefix(src, plan, -1, err);
    return false;
}

static bool nomem(ds_error *err)
{
    return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
}

/* The table the query's FROM names, resolved as the query resolves it
 * (search_path), with its kind and replica identity. */
static bool lookup_table(pgsrc_conn *c, const cfg_source *src, const cfg_query_plan *plan, capture_table *out,
                         char *relkind, ds_error *err)
{
    const qt_single_table *shape = &plan->shape;
    if (shape->table == NULL)
        return refuse(src, plan, err,
                      "the query's table is unknown (capture: logical needs SELECT ... FROM "
                      "<table>); check the config with duckstore check-config");
    ds_buf name = DS_BUF_INIT;
    if (shape->schema != NULL) {
        pgsrc_append_ident(&name, c, shape->schema, err);
        ds_buf_append(&name, ".");
    }
    pgsrc_append_ident(&name, c, shape->table, err);
    char *name_text = ds_buf_take(&name);
    if (name_text == NULL)
        return nomem(err);
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b,
                  "SELECT c.oid, n.nspname, c.relname, c.relkind, c.relreplident FROM pg_catalog.pg_class c "
                  "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = "
                  "pg_catalog.to_regclass(");
    pgsrc_append_literal(&b, c, name_text, err);
    ds_buf_append(&b, ")");
    char *sql = ds_buf_take(&b);
    PGresult *res = pgsrc_query_rows(c, sql, err);
    free(sql);
    bool ok = res != NULL;
    if (ok && PQntuples(res) == 0)
        ok = refuse(src, plan, err, "table %s is not found on the server; check the query's FROM", name_text);
    free(name_text);
    if (ok) {
        out->relid = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
        out->nspname = strdup(PQgetvalue(res, 0, 1));
        out->relname = strdup(PQgetvalue(res, 0, 2));
        *relkind = PQgetvalue(res, 0, 3)[0];
        out->replident = PQgetvalue(res, 0, 4)[0];
        ok = (out->nspname != NULL && out->relname != NULL) || nomem(err);
    }
    PQclear(res);
    if (!ok)
        return false;
    ds_buf_init(&b);
    pgsrc_append_ident(&b, c, out->nspname, err);
    ds_buf_append(&b, ".");
    pgsrc_append_ident(&b, c, out->relname, err);
    out->qualified = ds_buf_take(&b);
    return out->qualified != NULL || nomem(err);
}

static const char *relkind_name(char relkind)
{
    switch (relkind) {
    case 'v':
        return "a view";
    case 'm':
        return "a materialized view";
    case 'f':
        return "a foreign table";
    default:
        return "not a table";
    }
}

/* Rows of a catalog query on one relation: "<sql> <relid> <tail>". */
static PGresult *rows_for(pgsrc_conn *c, const char *sql, uint32_t relid, const char *tail, ds_error *err)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "%s%u%s", sql, relid, tail);
    char *text = ds_buf_take(&b);
    PGresult *res = pgsrc_query_rows(c, text, err);
    free(text);
    return res;
}

/* The table column each output column copies as is (PQftablecol). */
static bool map_source_columns(pgsrc_conn *c, const pgsrc_desc *desc, capture_table *out, ds_error *err)
{
    out->source_col = calloc(desc->ncols ? desc->ncols : 1, sizeof *out->source_col);
    if (out->source_col == NULL)
        return nomem(err);
    out->ncols = desc->ncols;
    PGresult *res = rows_for(c,
                             "SELECT attnum, attname FROM pg_catalog.pg_attribute WHERE attnum > 0 AND NOT "
                             "attisdropped AND attrelid = ",
                             out->relid, "", err);
    if (res == NULL)
        return false;
    bool ok = true;
    for (size_t i = 0; ok && i < desc->ncols; i++) {
        const pgsrc_column *col = &desc->cols[i];
        if (col->table_oid != out->relid || col->table_col <= 0)
            continue;
        for (int r = 0; r < PQntuples(res); r++)
            if (atoi(PQgetvalue(res, r, 0)) == col->table_col)
                ok = (out->source_col[i] = strdup(PQgetvalue(res, r, 1))) != NULL || nomem(err);
    }
    PQclear(res);
    return ok;
}

/* The replica identity's columns: the primary key's (DEFAULT), the
 * index's (USING INDEX), every column (FULL); none for NOTHING or a
 * DEFAULT without primary key. */
static bool replica_identity_columns(pgsrc_conn *c, capture_table *out, ds_error *err)
{
    PGresult *res;
    if (out->replident == 'f')
        res =
            rows_for(c,
                     "SELECT attname FROM pg_catalog.pg_attribute WHERE attnum > 0 AND NOT attisdropped AND "
                     "attrelid = ",
                     out->relid, " ORDER BY attnum", err);
    else if (out->replident == 'd' || out->replident == 'i')
        res = rows_for(c,
                       "SELECT a.attname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON "
                       "a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) WHERE i.indrelid = ",
                       out->relid,
                       out->replident == 'd' ? " AND i.indisprimary ORDER BY pg_catalog.array_position("
                                               "i.indkey::int2[], a.attnum)"
                                             : " AND i.indisreplident ORDER BY pg_catalog.array_position("
                                               "i.indkey::int2[], a.attnum)",
                       err);
    else
        return true;
    if (res == NULL)
        return false;
    size_t n = (size_t)PQntuples(res);
    out->key_cols = calloc(n ? n : 1, sizeof *out->key_cols);
    if (out->key_cols == NULL) {
        PQclear(res);
        return nomem(err);
    }
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        ok = (out->key_cols[i] = strdup(PQgetvalue(res, (int)i, 0))) != NULL || nomem(err);
        out->nkey = ok ? i + 1 : i;
    }
    PQclear(res);
    return ok;
}

/* The name of another relation, for a message ("schema"."table" as
 * regclass prints it). */
static char *relation_name(pgsrc_conn *c, uint32_t oid)
{
    char *name = NULL;
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "SELECT %u::pg_catalog.regclass::text", oid);
    char *sql = ds_buf_take(&b);
    if (sql == NULL || !pgsrc_query_value(c, sql, &name, NULL))
        name = NULL;
    free(sql);
    return name;
}

static bool check_columns(pgsrc_conn *c, const cfg_source *src, const cfg_query_plan *plan,
                          const pgsrc_desc *desc, const capture_table *t, char relkind, ds_error *err)
{
    if (relkind != 'r' && relkind != 'p')
        return refuse(src, plan, err,
                      "%s is %s; logical replication publishes the changes of tables only. Fix: read the "
                      "table behind it directly (SELECT ... FROM <table> WHERE ...), or use capture: "
                      "watermark",
                      t->qualified, relkind_name(relkind));
    for (size_t i = 0; i < desc->ncols; i++) {
        const pgsrc_column *col = &desc->cols[i];
        if (col->table_oid == 0 || col->table_oid == t->relid)
            continue;
        char *other = relation_name(c, col->table_oid);
        refuse(src, plan, err,
               "column \"%s\" comes from %s, not from %s; logical capture reads one table per query. Fix: "
               "read %s in a source of its own",
               col->name, other ? other : "another relation", t->qualified, other ? other : "it");
        free(other);
        return false;
    }
    return true;
}

static bool check_identity(const cfg_source *src, const cfg_query_plan *plan, const capture_table *t,
                           ds_error *err)
{
    if (t->replident == 'n')
        return refuse(
            src, plan, err,
            "table %s has REPLICA IDENTITY NOTHING, so its updates and deletes do not say which row "
            "they change. Fix: ALTER TABLE %s REPLICA IDENTITY FULL or add a primary key (with "
            "REPLICA IDENTITY DEFAULT)",
            t->qualified, t->qualified);
    if (t->nkey == 0)
        return refuse(src, plan, err,
                      "table %s has %s, so its updates and deletes do not say which row they change. Fix: "
                      "ALTER TABLE %s REPLICA IDENTITY FULL or add a primary key",
                      t->qualified,
                      t->replident == 'i' ? "REPLICA IDENTITY USING INDEX on an index that is gone"
                                          : "no primary key and REPLICA IDENTITY DEFAULT",
                      t->qualified);
    if (t->replident == 'f')
        return true;
    for (size_t k = 0; k < t->nkey; k++) {
        bool selected = false;
        for (size_t i = 0; !selected && i < t->ncols; i++)
            selected = t->source_col[i] != NULL && strcmp(t->source_col[i], t->key_cols[k]) == 0;
        if (!selected)
            return refuse(src, plan, err,
                          "column \"%s\" of %s (its %s) is not selected as a plain column; the cache "
                          "updates and deletes rows by it. Fix: add %s to the select list",
                          t->key_cols[k], t->qualified,
                          t->replident == 'd' ? "primary key" : "replica identity", t->key_cols[k]);
    }
    return true;
}

/* pgoutput sends each value in its type's binary form: a type duckstore
 * reads only as text (cast in the COPY) could not be decoded from it.
 * Enums are fine: their binary form is the label. */
static bool check_types(const cfg_source *src, const cfg_query_plan *plan, const pgsrc_desc *desc,
                        ds_error *err)
{
    for (size_t i = 0; i < desc->ncols; i++) {
        const pgsrc_column *col = &desc->cols[i];
        if (col->cast == PGSRC_CAST_NONE)
            continue;
        return refuse(src, plan, err,
                      "column \"%s\" has type %s, which duckstore reads only as text (no binary decoding), "
                      "but logical capture decodes every change in binary. Fix: cast it in the query, e.g. "
                      "%s::text AS %s, or leave it out",
                      col->name, col->pg_type ? col->pg_type : "(unknown)", col->name, col->name);
    }
    return true;
}

bool capture_describe(pgsrc_conn *c, const cfg_source *src, const cfg_query_plan *plan,
                      const pgsrc_desc *desc, capture_table *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    char relkind = 'r';
    bool ok = lookup_table(c, src, plan, out, &relkind, err) &&
              check_columns(c, src, plan, desc, out, relkind, err) && map_source_columns(c, desc, out, err) &&
              replica_identity_columns(c, out, err) && check_identity(src, plan, out, err) &&
              check_types(src, plan, desc, err);
    if (!ok)
        capture_table_free(out);
    return ok;
}

bool capture_check_server(pgsrc_conn *c, const cfg_source *src, ds_error *err)
{
    char level[32];
    if (!pub_wal_level(c, level, sizeof level, err))
        return false;
    if (strcmp(level, "logical") != 0)
        return ds_error_set(
            err, DS_ERR_CONFIG,
            "%s:%d: capture: logical needs wal_level = logical, but the server has wal_level = "
            "%s. Fix: ALTER SYSTEM SET wal_level = logical on the server, then restart "
            "PostgreSQL",
            src->file, src->capture_line, level);
    bool can = false;
    if (!pub_can_replicate(c, &can, err))
        return false;
    if (!can) {
        char *role = NULL;
        pgsrc_query_value(c, "SELECT current_user", &role, NULL);
        char *quoted = role ? pgsrc_quote_ident(c, role) : NULL;
        ds_error_set(
            err, DS_ERR_CONFIG,
            "%s:%d: capture: logical streams changes through a replication slot, but the role %s has "
            "neither REPLICATION nor superuser. Fix: ALTER ROLE %s REPLICATION",
            src->file, src->capture_line, quoted ? quoted : "of the url", quoted ? quoted : "<role>");
        free(quoted);
        free(role);
        return false;
    }
    return true;
}

bool capture_check_publication(pgsrc_conn *c, const cfg_source *src, const capture_table *tables, size_t n,
                               ds_error *err)
{
    if (src->publication_owned || n == 0)
        return true;
    const char **names = calloc(n, sizeof *names);
    if (names == NULL)
        return nomem(err);
    for (size_t i = 0; i < n; i++)
        names[i] = tables[i].qualified;
    bool ok = pub_ensure(c, src->publication_name, false, names, n, err);
    free(names);
    if (!ok && err->code == DS_ERR_CONFIG)
        ds_error_prefix(err, "%s:%d: ", src->file, src->publication_line);
    return ok;
}
