/* The insert stream behind store_insert_stream: a table function fed by a
 * C producer, and the registry of the streams running on one database.
 * Internal to the store. */
#ifndef DS_STORE_STREAM_INSERT_H
#define DS_STORE_STREAM_INSERT_H

#include "store/store.h"

typedef struct stream_registry stream_registry;

/* Registers the table function on con's database with a new registry;
 * the caller holds one reference (stream_registry_release). */
stream_registry *stream_registry_create(duckdb_connection con, ds_error *err);
void stream_registry_release(stream_registry *reg);

bool stream_insert(stream_registry *reg, duckdb_connection con, const char *table_ref, store_fill_fn fill,
                   void *ctx, ds_error *err);

#endif
