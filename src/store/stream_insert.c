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
#include "store/store.h"

#define STREAM_FUNCTION "duckstore_stream"
#define REGISTRY_FUNCTION "duckstore_stream_registry"
/* Both are called through the system catalog, where they are registered,
 * so that a macro of the same name in the user's file cannot stand in. */
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
 * belongs to the database, not to the process: both functions hold it as
 * their extra info, and DuckDB frees it with them when the database closes.
 *
 * store_insert_stream is given a connection only, and DuckDB's C API has no
 * way from a connection to its database (nor to anything attached to it),
 * so it asks the database: REGISTRY_FUNCTION() returns the address of the
 * registry it holds. Addresses only ever travel from DuckDB to duckstore,
 * never from SQL into memory: the stream function takes no argument and
 * finds its producer by the id of the connection whose query calls it, so
 * a stray call from a user's query finds nothing. */
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

static void registry_address(duckdb_function_info info, duckdb_data_chunk input, duckdb_vector output)
{
    uint64_t address = (uint64_t)(uintptr_t)duckdb_scalar_function_get_extra_info(info);
    uint64_t *out = duckdb_vector_get_data(output);
    for (idx_t i = 0, n = duckdb_data_chunk_get_size(input); i < n; i++)
        out[i] = address;
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

static bool register_registry_function(duckdb_connection con, stream_registry *reg)
{
    duckdb_scalar_function sf = duckdb_create_scalar_function();
    if (sf == NULL) {
        registry_unref(reg);
        return false;
    }
    duckdb_scalar_function_set_extra_info(sf, reg, registry_unref);
    duckdb_scalar_function_set_name(sf, REGISTRY_FUNCTION);
    duckdb_logical_type ubigint = duckdb_create_logical_type(DUCKDB_TYPE_UBIGINT);
    duckdb_scalar_function_set_return_type(sf, ubigint);
    duckdb_destroy_logical_type(&ubigint);
    duckdb_scalar_function_set_function(sf, registry_address);
    bool ok = duckdb_register_scalar_function(con, sf) == DuckDBSuccess;
    duckdb_destroy_scalar_function(&sf);
    return ok;
}

bool store_register_stream_function(duckdb_connection con, ds_error *err)
{
    stream_registry *reg = calloc(1, sizeof *reg);
    if (reg == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    int rc = pthread_mutex_init(&reg->lock, NULL);
    if (rc != 0) {
        free(reg);
        return ds_error_set(err, rc == ENOMEM ? DS_ERR_NOMEM : DS_ERR_STORE,
                            "cannot create the insert stream registry: %s", strerror(rc));
    }
    /* Each function gets a reference, released by DuckDB (or on failure). */
    atomic_init(&reg->refs, 2);
    bool ok = register_table_function(con, reg);
    ok = register_registry_function(con, reg) && ok;
    if (!ok)
        return ds_error_set(err, DS_ERR_STORE, "cannot register the %s table function", STREAM_FUNCTION);
    return true;
}

/* The registry of con's database (see stream_registry). */
static stream_registry *find_registry(duckdb_connection con, ds_error *err)
{
    duckdb_result res;
    if (duckdb_query(con, "SELECT " SYSTEM_SCHEMA REGISTRY_FUNCTION "()", &res) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s (store_register_stream_function was not called?)",
                     duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return NULL;
    }
    stream_registry *reg = (stream_registry *)(uintptr_t)duckdb_value_uint64(&res, 0, 0);
    duckdb_destroy_result(&res);
    if (reg == NULL)
        ds_error_set(err, DS_ERR_STORE, "DuckDB returned no insert stream registry");
    return reg;
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

bool store_insert_stream(duckdb_connection con, const char *table_ref, store_fill_fn fill, void *ctx,
                         ds_error *err)
{
    stream_entry e = {.fill = fill, .ctx = ctx};
    stream_registry *reg = find_registry(con, err);
    bool ok =
        reg != NULL && connection_id(con, &e.connection, err) && describe_table(con, table_ref, &e, err);
    ds_buf sql = DS_BUF_INIT;
    if (ok &&
        !ds_buf_appendf(&sql, "INSERT INTO %s SELECT * FROM " SYSTEM_SCHEMA STREAM_FUNCTION "()", table_ref))
        ok = ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    if (ok && registry_add(reg, &e, err)) {
        duckdb_result res;
        ok = duckdb_query(con, ds_buf_str(&sql), &res) == DuckDBSuccess;
        if (!ok) {
            if (e.failed)
                *err = e.err;
            else
                ds_error_set(err, DS_ERR_STORE, "DuckDB insert into %s failed: %s", table_ref,
                             duckdb_result_error(&res));
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
