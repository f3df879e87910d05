/* duckstore_result(): a table function of a private DuckDB that streams
 * the chunks of a store's result, and that private database's settings. */
#include "store/result_feed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "store/store.h"

void store_result_feed_free(store_result_feed *f)
{
    if (f->first != NULL)
        duckdb_destroy_data_chunk(&f->first);
    free(f->error);
    f->error = NULL;
}

static void feed_bind(duckdb_bind_info info)
{
    store_result_feed *f = duckdb_bind_get_extra_info(info);
    if (f->res == NULL) {
        duckdb_bind_set_error(info, "duckstore_result() has no result to read");
        return;
    }
    for (idx_t i = 0; i < duckdb_column_count(f->res); i++) {
        duckdb_logical_type t = duckdb_column_logical_type(f->res, i);
        duckdb_bind_add_result_column(info, duckdb_column_name(f->res, i), t);
        duckdb_destroy_logical_type(&t);
    }
}

/* One thread: the chunks of a streaming result come one after another. */
static void feed_init(duckdb_init_info info)
{
    duckdb_init_set_max_threads(info, 1);
}

/* The next chunk of the result, up to max_rows; its vectors are
 * referenced, not copied. */
static void feed_chunk(duckdb_function_info info, duckdb_data_chunk out)
{
    store_result_feed *f = duckdb_function_get_extra_info(info);
    duckdb_data_chunk in = f->first;
    f->first = NULL;
    if (in == NULL && !f->ended) {
        in = duckdb_fetch_chunk(*f->res);
        const char *error = duckdb_result_error(f->res);
        if (in == NULL && error != NULL) {
            free(f->error);
            f->error = strdup(error);
            duckdb_function_set_error(info, error);
            return;
        }
    }
    idx_t n = in ? duckdb_data_chunk_get_size(in) : 0;
    if (n > 0 && f->max_rows > 0 && f->rows + (int64_t)n > f->max_rows) {
        f->truncated = true;
        n = (idx_t)(f->max_rows - f->rows);
    }
    if (n == 0 || f->truncated)
        f->ended = true;
    for (idx_t c = 0; n > 0 && c < duckdb_data_chunk_get_column_count(in); c++)
        duckdb_vector_reference_vector(duckdb_data_chunk_get_vector(out, c),
                                       duckdb_data_chunk_get_vector(in, c));
    duckdb_data_chunk_set_size(out, n);
    f->rows += (int64_t)n;
    if (in != NULL)
        duckdb_destroy_data_chunk(&in);
}

/* SET name = ['value'] */
static bool set_list(duckdb_connection con, const char *name, const char *value, ds_error *err)
{
    ds_buf sql = DS_BUF_INIT;
    ds_buf_appendf(&sql, "SET %s = [", name);
    ds_buf_append_literal(&sql, value);
    ds_buf_append(&sql, "]");
    bool ok = sql.failed ? ds_error_set(err, DS_ERR_NOMEM, "out of memory")
                         : store_exec(con, ds_buf_str(&sql), err);
    ds_buf_free(&sql);
    return ok;
}

static bool set_open_files(duckdb_connection con, int files, ds_error *err)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SET partitioned_write_max_open_files = %d", files);
    return store_exec(con, sql, err) && store_exec(con, "SET partitioned_write_flush_threshold = 16384", err);
}

bool store_writer_open(const store_writer_settings *s, store_result_feed *feed, duckdb_database *db,
                       duckdb_connection *con, ds_error *err)
{
    *db = NULL;
    *con = NULL;
    duckdb_config config = NULL;
    char *failure = NULL;
    if (duckdb_create_config(&config) == DuckDBError ||
        (s->memory_limit != NULL &&
         duckdb_set_config(config, "memory_limit", s->memory_limit) == DuckDBError) ||
        duckdb_set_config(config, "threads", "1") == DuckDBError ||
        duckdb_set_config(config, "temp_directory", s->temp_directory) == DuckDBError ||
        duckdb_set_config(config, "autoload_known_extensions", "false") == DuckDBError ||
        duckdb_open_ext(NULL, db, config, &failure) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "cannot start the Parquet writer: %s",
                     failure ? failure : "DuckDB refused its settings");
        duckdb_free(failure);
        duckdb_destroy_config(&config);
        *db = NULL;
        return false;
    }
    duckdb_destroy_config(&config);
    /* Its only file access is the one it writes; then nothing may change
     * that, not even a statement of its own. */
    bool ok = duckdb_connect(*db, con) != DuckDBError ||
              ds_error_set(err, DS_ERR_STORE, "cannot connect to the Parquet writer");
    ok = ok && (s->allowed_path == NULL || set_list(*con, "allowed_paths", s->allowed_path, err)) &&
         (s->allowed_directory == NULL || set_list(*con, "allowed_directories", s->allowed_directory, err)) &&
         store_exec(*con, "SET enable_external_access = false", err) &&
         (!s->utc || store_exec(*con, "SET TimeZone = 'UTC'", err)) &&
         (!s->any_order || store_exec(*con, "SET preserve_insertion_order = false", err)) &&
         (s->max_open_files <= 0 || set_open_files(*con, s->max_open_files, err)) &&
         store_exec(*con, "SET lock_configuration = true", err);
    if (ok && feed != NULL) {
        duckdb_table_function tf = duckdb_create_table_function();
        duckdb_table_function_set_name(tf, "duckstore_result");
        duckdb_table_function_set_extra_info(tf, feed, NULL);
        duckdb_table_function_set_bind(tf, feed_bind);
        duckdb_table_function_set_init(tf, feed_init);
        duckdb_table_function_set_function(tf, feed_chunk);
        ok = duckdb_register_table_function(*con, tf) == DuckDBSuccess ||
             ds_error_set(err, DS_ERR_STORE, "cannot register the Parquet writer's input");
        duckdb_destroy_table_function(&tf);
    }
    return ok;
}

void store_writer_close(duckdb_database *db, duckdb_connection *con)
{
    if (*con != NULL)
        duckdb_disconnect(con);
    if (*db != NULL)
        duckdb_close(db);
}
