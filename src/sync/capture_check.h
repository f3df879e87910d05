/* What a logical source's query reads, checked against the server before
 * any data moves: the one table behind its columns, that table's replica
 * identity, and which output column copies which table column. Shared by
 * check-config and the sync (the apply engine works from the result). */
#ifndef DS_SYNC_CAPTURE_CHECK_H
#define DS_SYNC_CAPTURE_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "config/config.h"
#include "source/pgsrc.h"

typedef struct capture_table {
    uint32_t relid;
    char *nspname, *relname; /* the table, as the catalog names it */
    char *qualified;         /* "schema"."table", quoted for SQL */
    char replident;          /* 'd' default, 'n' nothing, 'f' full, 'i' index */
    char **key_cols;         /* the replica identity's columns (relation column names); FULL: every column */
    size_t nkey;
    char **source_col; /* per described output column: the table column it copies as is, NULL when computed */
    size_t ncols;
} capture_table;

/* Resolves the table plan->shape names and checks, from desc (the query's
 * pgsrc_describe) and the catalog, that changes of that table can be
 * applied to the cached rows. Refusals are DS_ERR_CONFIG, prefixed with the
 * query's file:line (cfg_plan_error_prefix), each naming the fix: a column
 * of another table or of a view, a table without usable replica identity, a
 * replica identity column not selected as a plain column, a column type
 * with no binary decoding. out is freed on failure. */
bool capture_describe(pgsrc_conn *c, const cfg_source *src, const cfg_query_plan *plan,
                      const pgsrc_desc *desc, capture_table *out, ds_error *err);
void capture_table_free(capture_table *t);

/* The server side of a logical source, for check-config: wal_level is
 * logical and the role may replicate. The first problem, DS_ERR_CONFIG,
 * names the fix. */
bool capture_check_server(pgsrc_conn *c, const cfg_source *src, ds_error *err);

/* A publication the user named publishes the source's tables (a no-op
 * for duckstore's own, which the sync creates): see pub_ensure. */
bool capture_check_publication(pgsrc_conn *c, const cfg_source *src, const capture_table *tables, size_t n,
                               ds_error *err);

#endif
