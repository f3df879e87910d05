/* store_insert_stream: rows from a C producer enter DuckDB through a table
 * function, `INSERT INTO t SELECT * FROM duckstore_stream(<id>)`. Compared
 * with the appender this skips the appender's own buffer (one copy of every
 * string less) and lets DuckDB's insert pipeline write row groups straight
 * to the file, which keeps memory bounded. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

#define STREAM_FUNCTION "duckstore_stream"

typedef struct stream_entry {
    int64_t id;
    store_fill_fn fill;
    void *ctx;
    duckdb_logical_type *types;
    char **names;
    idx_t ncols;
    bool failed, ended;
    ds_error err;
    struct stream_entry *next;
} stream_entry;

/* Active streams by id: the SQL names a stream by number, never by pointer,
 * so a stray call of the function from a user query cannot touch memory. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static stream_entry *registry;
static int64_t next_id = 1;

static stream_entry *registry_find(int64_t id)
{
    pthread_mutex_lock(&registry_lock);
    stream_entry *e = registry;
    while (e && e->id != id)
        e = e->next;
    pthread_mutex_unlock(&registry_lock);
    return e;
}

static void stream_bind(duckdb_bind_info info)
{
    duckdb_value v = duckdb_bind_get_parameter(info, 0);
    int64_t id = duckdb_get_int64(v);
    duckdb_destroy_value(&v);
    stream_entry *e = registry_find(id);
    if (e == NULL) {
        duckdb_bind_set_error(info, STREAM_FUNCTION " is internal to duckstore syncs");
        return;
    }
    for (idx_t i = 0; i < e->ncols; i++)
        duckdb_bind_add_result_column(info, e->names[i], e->types[i]);
    duckdb_bind_set_bind_data(info, e, NULL);
}

static void stream_init(duckdb_init_info info)
{
    /* One producer, one reader of the PostgreSQL connection. */
    duckdb_init_set_max_threads(info, 1);
}

static void stream_function(duckdb_function_info info, duckdb_data_chunk output)
{
    stream_entry *e = duckdb_function_get_bind_data(info);
    if (e->ended) {
        duckdb_data_chunk_set_size(output, 0);
        return;
    }
    if (!e->fill(e->ctx, output, &e->err)) {
        e->failed = true;
        e->ended = true;
        duckdb_function_set_error(info, e->err.msg);
        return;
    }
    if (duckdb_data_chunk_get_size(output) == 0)
        e->ended = true;
}

bool store_register_stream_function(duckdb_connection con, ds_error *err)
{
    duckdb_table_function tf = duckdb_create_table_function();
    duckdb_table_function_set_name(tf, STREAM_FUNCTION);
    duckdb_logical_type bigint = duckdb_create_logical_type(DUCKDB_TYPE_BIGINT);
    duckdb_table_function_add_parameter(tf, bigint);
    duckdb_destroy_logical_type(&bigint);
    duckdb_table_function_set_bind(tf, stream_bind);
    duckdb_table_function_set_init(tf, stream_init);
    duckdb_table_function_set_function(tf, stream_function);
    bool ok = duckdb_register_table_function(con, tf) == DuckDBSuccess;
    duckdb_destroy_table_function(&tf);
    if (!ok)
        return ds_error_set(err, DS_ERR_STORE, "cannot register the %s table function", STREAM_FUNCTION);
    return true;
}

/* Column names and types of the target table, from an empty result. */
static bool describe_table(duckdb_connection con, const char *qtable, stream_entry *e, ds_error *err)
{
    char *sql = NULL;
    if (asprintf(&sql, "SELECT * FROM %s LIMIT 0", qtable) < 0)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    duckdb_result res;
    bool ok = duckdb_query(con, sql, &res) == DuckDBSuccess;
    free(sql);
    if (!ok) {
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return false;
    }
    e->ncols = duckdb_column_count(&res);
    e->types = calloc(e->ncols, sizeof *e->types);
    e->names = calloc(e->ncols, sizeof *e->names);
    for (idx_t i = 0; i < e->ncols; i++) {
        e->types[i] = duckdb_column_logical_type(&res, i);
        e->names[i] = strdup(duckdb_column_name(&res, i));
    }
    duckdb_destroy_result(&res);
    return true;
}

bool store_insert_stream(duckdb_connection con, const char *table_ref, store_fill_fn fill, void *ctx,
                         ds_error *err)
{
    stream_entry e = {.fill = fill, .ctx = ctx};
    const char *qtable = table_ref;
    bool ok = describe_table(con, qtable, &e, err);
    if (ok) {
        pthread_mutex_lock(&registry_lock);
        e.id = next_id++;
        e.next = registry;
        registry = &e;
        pthread_mutex_unlock(&registry_lock);

        char sql[512];
        snprintf(sql, sizeof sql, "INSERT INTO %s SELECT * FROM " STREAM_FUNCTION "(%" PRId64 ")", qtable,
                 e.id);
        duckdb_result res;
        ok = duckdb_query(con, sql, &res) == DuckDBSuccess;
        if (!ok) {
            if (e.failed)
                *err = e.err;
            else
                ds_error_set(err, DS_ERR_STORE, "DuckDB insert into %s failed: %s", table_ref,
                             duckdb_result_error(&res));
        }
        duckdb_destroy_result(&res);

        pthread_mutex_lock(&registry_lock);
        stream_entry **pp = &registry;
        while (*pp != &e)
            pp = &(*pp)->next;
        *pp = e.next;
        pthread_mutex_unlock(&registry_lock);
    }
    for (idx_t i = 0; i < e.ncols; i++) {
        duckdb_destroy_logical_type(&e.types[i]);
        free(e.names[i]);
    }
    free(e.types);
    free(e.names);
    return ok;
}
