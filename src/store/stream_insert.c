/* store_insert_stream: rows from a C producer enter DuckDB through a table
 * function, `INSERT INTO t SELECT * FROM duckstore_stream()`. Compared
 * with the appender this skips the appender's own buffer (one copy of every
 * string less) and lets DuckDB's insert pipeline write row groups straight
 * to the file, which keeps memory bounded. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "store/stream_insert.h"
#include "store/tables.h"

#define STREAM_FUNCTION "duckstore_stream"
/* Called through the system catalog, where it is registered, so that a
 * macro of the same name in the user's file cannot stand in. */
#define SYSTEM_SCHEMA "system.main."

typedef struct stream_entry {
    idx_t connection; /* id of the connection that runs the INSERT */
    store_fill_fn fill;
    void *ctx;
    duckdb_logical_type *types;
    char **names;
    idx_t ncols;
    bool failed, ended;
    ds_error err;
    struct stream_entry *next;
} stream_entry;

/* The streams running on one database, one per connection at most. It
 * belongs to the database, not to the process: the table function holds it
 * as its extra info (freed by DuckDB when the database closes) and the
 * store that opened the database holds the other reference. The stream
 * function takes no argument and finds its producer by the id of the
 * connection whose query calls it, so a stray call from a user's query
 * finds nothing, and no address ever reaches SQL. */
typedef struct stream_registry {
    pthread_mutex_t lock;
    stream_entry *active;
    atomic_int refs; /* functions holding it */
} stream_registry;

static void registry_unref(void *p)
{
    stream_registry *reg = p;
    if (atomic_fetch_sub(&reg->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

static stream_entry *registry_find(stream_registry *reg, idx_t connection)
{
    pthread_mutex_lock(&reg->lock);
    stream_entry *e = reg->active;
    while (e && e->connection != connection)
        e = e->next;
    pthread_mutex_unlock(&reg->lock);
    return e;
}

static bool registry_add(stream_registry *reg, stream_entry *e, ds_error *err)
{
    pthread_mutex_lock(&reg->lock);
    stream_entry *other = reg->active;
    while (other && other->connection != e->connection)
        other = other->next;
    if (other == NULL) {
        e->next = reg->active;
        reg->active = e;
    }
    pthread_mutex_unlock(&reg->lock);
    if (other != NULL)
        return ds_error_set(err, DS_ERR_STORE,
                            "an insert stream is already running on this DuckDB connection");
    return true;
}

static void registry_remove(stream_registry *reg, stream_entry *e)
{
    pthread_mutex_lock(&reg->lock);
    stream_entry **pp = &reg->active;
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    pthread_mutex_unlock(&reg->lock);
}

/* The id DuckDB gives the connection behind a client context. */
static bool context_connection(duckdb_client_context ctx, idx_t *id)
{
    if (ctx == NULL)
        return false;
    *id = duckdb_client_context_get_connection_id(ctx);
    return true;
}

static void stream_bind(duckdb_bind_info info)
{
    stream_registry *reg = duckdb_bind_get_extra_info(info);
    duckdb_client_context ctx = NULL;
    duckdb_table_function_get_client_context(info, &ctx);
    idx_t connection;
    bool known = context_connection(ctx, &connection);
    duckdb_destroy_client_context(&ctx);
    stream_entry *e = known ? registry_find(reg, connection) : NULL;
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

static bool register_table_function(duckdb_connection con, stream_registry *reg)
{
    duckdb_table_function tf = duckdb_create_table_function();
    if (tf == NULL) {
        registry_unref(reg);
        return false;
    }
    duckdb_table_function_set_extra_info(tf, reg, registry_unref);
    duckdb_table_function_set_name(tf, STREAM_FUNCTION);
    duckdb_table_function_set_bind(tf, stream_bind);
    duckdb_table_function_set_init(tf, stream_init);
    duckdb_table_function_set_function(tf, stream_function);
    bool ok = duckdb_register_table_function(con, tf) == DuckDBSuccess;
    duckdb_destroy_table_function(&tf);
    return ok;
}

stream_registry *stream_registry_create(duckdb_connection con, ds_error *err)
{
    stream_registry *reg = calloc(1, sizeof *reg);
    if (reg == NULL) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    int rc = pthread_mutex_init(&reg->lock, NULL);
    if (rc != 0) {
        free(reg);
        ds_error_set(err, rc == ENOMEM ? DS_ERR_NOMEM : DS_ERR_STORE,
                     "cannot create the insert stream registry: %s", strerror(rc));
        return NULL;
    }
    /* One reference for the table function (released by DuckDB, or by
     * register_table_function on failure), one for the caller. */
    atomic_init(&reg->refs, 2);
    if (!register_table_function(con, reg)) {
        registry_unref(reg);
        ds_error_set(err, DS_ERR_STORE, "cannot register the %s table function", STREAM_FUNCTION);
        return NULL;
    }
    return reg;
}

void stream_registry_release(stream_registry *reg)
{
    if (reg != NULL)
        registry_unref(reg);
}

static bool connection_id(duckdb_connection con, idx_t *id, ds_error *err)
{
    duckdb_client_context ctx = NULL;
    duckdb_connection_get_client_context(con, &ctx);
    bool ok = context_connection(ctx, id);
    duckdb_destroy_client_context(&ctx);
    return ok || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
}

/* Column names and types of the target table, from an empty result. */
static bool describe_table(duckdb_connection con, const char *table_ref, stream_entry *e, ds_error *err)
{
    ds_buf sql = DS_BUF_INIT;
    if (!ds_buf_appendf(&sql, "SELECT * FROM %s LIMIT 0", table_ref)) {
        ds_buf_free(&sql);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    duckdb_result res;
    bool ok = duckdb_query(con, ds_buf_str(&sql), &res) == DuckDBSuccess;
    ds_buf_free(&sql);
    if (!ok) {
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return false;
    }
    idx_t n = duckdb_column_count(&res);
    e->types = calloc(n ? n : 1, sizeof *e->types);
    e->names = calloc(n ? n : 1, sizeof *e->names);
    ok = e->types != NULL && e->names != NULL;
    for (idx_t i = 0; ok && i < n; i++) {
        e->names[i] = strdup(duckdb_column_name(&res, i));
        e->types[i] = duckdb_column_logical_type(&res, i);
        e->ncols = i + 1;
        ok = e->names[i] != NULL && e->types[i] != NULL;
    }
    duckdb_destroy_result(&res);
    return ok || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
}

static void entry_free(stream_entry *e)
{
    for (idx_t i = 0; i < e->ncols; i++) {
        if (e->types[i] != NULL)
            duckdb_destroy_logical_type(&e->types[i]);
        free(e->names[i]);
    }
    free(e->types);
    free(e->names);
}

bool stream_insert(stream_registry *reg, duckdb_connection con, const char *table_ref, store_fill_fn fill,
                   void *ctx, ds_error *err)
{
    stream_entry e = {.fill = fill, .ctx = ctx};
    bool ok = connection_id(con, &e.connection, err) && describe_table(con, table_ref, &e, err);
    ds_buf sql = DS_BUF_INIT;
    if (ok &&
        !ds_buf_appendf(&sql, "INSERT INTO %s SELECT * FROM " SYSTEM_SCHEMA STREAM_FUNCTION "()", table_ref))
        ok = ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    if (ok && registry_add(reg, &e, err)) {
        duckdb_result res;
        ok = duckdb_query(con, ds_buf_str(&sql), &res) == DuckDBSuccess;
        if (!ok) {
            if (e.failed) {
                *err = e.err;
            } else {
                ds_error_set(err, DS_ERR_STORE, "DuckDB insert into %s failed: %s", table_ref,
                             duckdb_result_error(&res));
                store_explain_out_of_memory(err, "the insert");
            }
        }
        duckdb_destroy_result(&res);
        registry_remove(reg, &e);
    } else {
        ok = false;
    }
    ds_buf_free(&sql);
    entry_free(&e);
    return ok;
}
