/* Functions readers' queries call by their usual names, computed faster
 * than DuckDB's own where the result is provably the same. They live in a
 * schema of the store's in-memory catalog (STORE_READ_SCHEMA), created once
 * per DuckDB instance; a reader's search path puts that schema after the
 * store's tables and before DuckDB's system catalog, so an unqualified call
 * finds them first. Nothing is written to the file. */
#ifndef DS_STORE_READ_FUNCTIONS_H
#define DS_STORE_READ_FUNCTIONS_H

#include <duckdb.h>
#include <stdbool.h>

#include "common/error.h"
#include "store/store.h"

#define STORE_READ_SCHEMA STORE_SCRATCH_CATALOG ".duckstore_read"

/* Creates the functions in con's DuckDB instance unless they exist; call
 * outside a transaction. The caller then puts STORE_READ_SCHEMA on the
 * connection's search path (store_read_functions_use does both). */
bool store_read_functions_install(duckdb_connection con, ds_error *err);

/* Installs them and sets con's search path to the store's tables, then the
 * functions: for readers with no schemas of their own (the HTTP query API,
 * the CLI). */
bool store_read_functions_use(duckdb_connection con, ds_error *err);

#endif
