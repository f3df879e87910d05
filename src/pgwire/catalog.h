/* What PostgreSQL clients read from pg_catalog that DuckDB's own partial
 * pg_catalog lacks: psql's \dt, \d and \l, SQLAlchemy's inspector, pgJDBC's
 * DatabaseMetaData and node-postgres. Installed as TEMP macros and views on
 * each session's connection, so nothing is written to the store. */
#ifndef DS_PGWIRE_CATALOG_H
#define DS_PGWIRE_CATALOG_H

#include <stdbool.h>

#include <duckdb.h>

#include "common/error.h"

/* Makes con look enough like PostgreSQL's catalog for psql, JDBC, SQLAlchemy
 * and node-postgres: TEMP macros and views; run once per session
 * connection, before the session's first statement. */
bool pgc_install(duckdb_connection con, ds_error *err);

#endif
