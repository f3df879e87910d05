/* What PostgreSQL clients read from pg_catalog that DuckDB's own partial
 * pg_catalog lacks: psql's \dt, \d and \l, SQLAlchemy's inspector, pgJDBC's
 * DatabaseMetaData and node-postgres: macros and views in the store's
 * in-memory catalog, created once per DuckDB instance, so nothing is
 * written to the store's file. */
#ifndef DS_PGWIRE_CATALOG_H
#define DS_PGWIRE_CATALOG_H

#include <stdbool.h>

#include <duckdb.h>

#include "common/error.h"

/* Makes con (a store connection, store_connect) look enough like
 * PostgreSQL's catalog for psql, JDBC, SQLAlchemy and node-postgres:
 * creates the catalog when this DuckDB instance lacks it (the first session,
 * and the first after a store reopen) and puts it on con's search path. Run
 * once per session connection, before the session's first statement. */
bool pgc_install(duckdb_connection con, ds_error *err);

/* The query text as DuckDB must read it for the catalog above: a
 * pg_catalog. qualifier is dropped (DuckDB looks such names up in its own
 * system catalog only, so the session's additions would be missed; in
 * PostgreSQL pg_catalog comes first in the search path anyway), and so is
 * COLLATE pg_catalog.default. Only names are touched, never string
 * literals, quoted text or comments, and each dropped character becomes a
 * space: the text keeps its length, so an error position DuckDB reports
 * points at the same place in the client's text. Caller frees; NULL with
 * err set when out of memory. */
char *pgc_rewrite(const char *sql, ds_error *err);

#endif
