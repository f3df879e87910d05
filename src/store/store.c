/* DuckDB plumbing for store.h. */
#include "store/store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/log.h"
#include "common/strbuf.h"
#include "store/meta_cache.h"
#include "store/stream_insert.h"

struct store {
    duckdb_database db; /* in memory; the file is attached as catalog `alias`; NULL after a failed reopen */
    char *path, *alias;
    /* The settings it was opened with, for a reopen. */
    char *memory_limit, *read_memory_limit;
    int threads;
    bool read_only; /* attached READ_ONLY (duckstore query): no metadata setup */
    bool locks_ready;
    /* Shared by each sync and pool read while it uses db; exclusive around a
     * reopen, which replaces db. */
    pthread_rwlock_t use_lock;
    /* A commit failed: DuckDB's in-memory state may not match the file. */
    atomic_bool suspect;
    char reopen_error[sizeof((ds_error *)0)->msg]; /* why the last reopen failed ("" when open) */
    /* The open file's identity, to notice the path no longer naming it. */
    dev_t dev;
    ino_t ino;
    atomic_bool loss_logged;
    /* Serialises the short commit transactions of concurrent syncs. */
    pthread_mutex_t commit_lock;
    /* Read connections for API requests (query_concurrency); empty in the CLI. */
    pthread_mutex_t pool_lock;
    pthread_cond_t pool_free;
    duckdb_connection *pool;
    size_t pool_size, pool_available;
    /* Idle connections the sync engine reuses (store_connect_kept), under
     * pool_lock: a new one costs a USE and a SET, about 1 ms of a quiet
     * sync's few. */
    duckdb_connection kept[STORE_KEPT_MAX];
    size_t nkept;
    meta_cache *meta;         /* the metadata tables' rows as last read */
    read_gate *readers;       /* the readers' turn */
    stream_registry *streams; /* the insert streams running on db */
    _Atomic(void (*)(store *)) close_hook;
    _Atomic uint64_t generation; /* of db: unique in the process, new at each (re)open */
};

/* Closes the kept connections (the instance is going, or nobody uses it). */
static void drop_kept(store *st)
{
    for (size_t i = 0; i < st->nkept; i++)
        duckdb_disconnect(&st->kept[i]);
    st->nkept = 0;
}

/* Numbers DuckDB instances across every store of the process. */
static _Atomic uint64_t instances;

static const char *const metadata_ddl[] = {
    "CREATE SCHEMA IF NOT EXISTS _duckstore",
    "CREATE TABLE IF NOT EXISTS _duckstore.tables (table_name VARCHAR NOT NULL, schema_signature VARCHAR, "
    "watermark_column VARCHAR, watermark VARCHAR, updated_at TIMESTAMPTZ, watermark_inclusive BOOLEAN)",
    "CREATE TABLE IF NOT EXISTS _duckstore.sync_status (source VARCHAR NOT NULL, status VARCHAR NOT NULL, "
    "updated_at TIMESTAMPTZ)",
    "ALTER TABLE _duckstore.tables ADD COLUMN IF NOT EXISTS read_state VARCHAR",
    /* capture: logical (src/cdc/capture.c): the LSN each source's cache
     * holds, written in the same transaction as the changes. */
    "CREATE TABLE IF NOT EXISTS _duckstore.capture (source VARCHAR NOT NULL, slot VARCHAR NOT NULL, "
    "lsn VARCHAR NOT NULL, relations VARCHAR, last_commit_at TIMESTAMPTZ, server_lsn VARCHAR, "
    "updated_at TIMESTAMPTZ)",
};

static bool make_parent_dirs(const char *path, ds_error *err)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
            ds_error_set(err, DS_ERR_STORE, "cannot create folder %s for the DuckDB file: %s", copy,
                         strerror(errno));
            free(copy);
            return false;
        }
        *p = '/';
    }
    free(copy);
    return true;
}

/* The store's mutexes and condition variable, all or none (locks_ready). */
static bool init_locks(store *st, ds_error *err)
{
    int rc = pthread_mutex_init(&st->commit_lock, NULL);
    if (rc == 0 && (rc = pthread_mutex_init(&st->pool_lock, NULL)) != 0)
        pthread_mutex_destroy(&st->commit_lock);
    if (rc == 0 && (rc = pthread_cond_init(&st->pool_free, NULL)) != 0) {
        pthread_mutex_destroy(&st->commit_lock);
        pthread_mutex_destroy(&st->pool_lock);
    }
    if (rc == 0 && (rc = pthread_rwlock_init(&st->use_lock, NULL)) != 0) {
        pthread_mutex_destroy(&st->commit_lock);
        pthread_mutex_destroy(&st->pool_lock);
        pthread_cond_destroy(&st->pool_free);
    }
    if (rc != 0)
        return ds_error_set(err, rc == ENOMEM ? DS_ERR_NOMEM : DS_ERR_STORE,
                            "cannot create the store's locks: %s", strerror(rc));
    st->locks_ready = true;
    return true;
}

/* DuckDB's allocator (the jemalloc built into libduckdb) hands freed memory
 * back to the kernel within about a second, so each sync, capture batch or
 * dashboard query that follows touches fresh pages, and every first touch
 * is a page fault: with 10,000 new rows per sync that was over half of a
 * serve incremental sync's merge and commit, and 15 % of a full sync's
 * CPU (docs/architecture.md, "Memory the allocator keeps"). Freed pages are
 * now kept for 30 s and reused by the next burst; an idle process still
 * returns them. jemalloc reads this setting of the program's when it
 * starts, before main(), and it overrides DuckDB's own (tested in
 * tests/store/test_store_file.c). */
const char *duckdb_je_malloc_conf_2_conf_harder = "dirty_decay_ms:30000,muzzy_decay_ms:30000";

bool store_open(const char *path, store **out, ds_error *err)
{
    return store_open_ext(path, NULL, out, err);
}

/* Rows per DuckDB row group (DuckDB's default is 122,880). Each insert
 * stream holds its unfinished row group in memory, strings included; with
 * trace rows of 1-2 KB that alone was ~180 MB per stream. 16,384 rows
 * halved a sync's peak memory and made it no slower (bench/run.sh). */
#define STORE_ROW_GROUP_SIZE 16384

double store_size_bytes(const char *s)
{
    if (s == NULL)
        return -1;
    char *end;
    double v = strtod(s, &end);
    while (*end == ' ')
        end++;
    static const struct {
        const char *unit;
        double bytes;
    } units[] = {{"B", 1},           {"KB", 1e3},           {"MB", 1e6},
                 {"GB", 1e9},        {"TB", 1e12},          {"KiB", 1024.0},
                 {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcasecmp(end, units[i].unit) == 0)
            return v * units[i].bytes;
    return -1;
}

/* DuckDB's memory_limit: memory_limit, plus read_memory_limit when given
 * (whole megabytes when it comes out so, else bytes). */
static bool memory_limit_text(const char *limit, const char *read_limit, ds_buf *out)
{
    double a = store_size_bytes(limit), b = read_limit ? store_size_bytes(read_limit) : 0;
    if (read_limit == NULL || a < 0 || b < 0)
        return ds_buf_append(out, limit);
    double sum = a + b;
    if (sum / 1e6 == (double)(int64_t)(sum / 1e6))
        return ds_buf_appendf(out, "%.0fMB", sum / 1e6);
    return ds_buf_appendf(out, "%.0fB", sum);
}

/* A duckdb_config carrying the settings. Spilled data goes where DuckDB
 * puts it for a file it opens itself (<file>.tmp): the database itself is
 * in memory, the file is attached. */
static bool make_config(const char *path, const store_settings *settings, duckdb_config *config,
                        ds_error *err)
{
    *config = NULL;
    if (duckdb_create_config(config) == DuckDBError)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    char threads[16];
    snprintf(threads, sizeof threads, "%d", settings ? settings->threads : 0);
    ds_buf temp = DS_BUF_INIT;
    if (!ds_buf_appendf(&temp, "%s.tmp", path)) {
        ds_buf_free(&temp);
        duckdb_destroy_config(config);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    if (duckdb_set_config(*config, "temp_directory", ds_buf_str(&temp)) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "DuckDB rejected temp_directory %s", ds_buf_str(&temp));
        ds_buf_free(&temp);
        duckdb_destroy_config(config);
        return false;
    }
    ds_buf_free(&temp);
    ds_buf limit = DS_BUF_INIT;
    if (settings != NULL && settings->memory_limit != NULL &&
        !memory_limit_text(settings->memory_limit, settings->read_memory_limit, &limit)) {
        ds_buf_free(&limit);
        duckdb_destroy_config(config);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    if (settings != NULL &&
        ((settings->memory_limit &&
          duckdb_set_config(*config, "memory_limit", ds_buf_str(&limit)) == DuckDBError) ||
         (settings->threads > 0 && duckdb_set_config(*config, "threads", threads) == DuckDBError))) {
        ds_error_set(err, DS_ERR_CONFIG, "DuckDB rejected memory_limit \"%s\" or threads %d",
                     settings->memory_limit ? ds_buf_str(&limit) : "", settings->threads);
        ds_buf_free(&limit);
        duckdb_destroy_config(config);
        return false;
    }
    ds_buf_free(&limit);
    return true;
}

/* The catalog name of the file: its name without the extension, as when
 * DuckDB opens it directly (so views and qualified names read the same in
 * dashboards that open the file), unless that names a built-in catalog. */
static char *catalog_alias(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *alias = strdup(base);
    if (alias == NULL)
        return NULL;
    char *dot = strrchr(alias, '.');
    if (dot != NULL && dot != alias)
        *dot = '\0';
    static const char *const builtin[] = {"memory", "system", "temp", "main", ""};
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
        if (strcasecmp(alias, builtin[i]) == 0) {
            free(alias);
            return strdup("duckstore");
        }
    }
    return alias;
}

static bool open_error(const char *path, const char *msg, ds_error *err)
{
    if (strstr(msg, "lock") != NULL) {
        const char *pid = strstr(msg, "PID ");
        char holder[32] = "";
        if (pid != NULL)
            snprintf(holder, sizeof holder, " (PID %d)", atoi(pid + 4));
        return ds_error_set(err, DS_ERR_BUSY,
                            "the DuckDB file %s is in use by another process%s; stop that duckstore "
                            "or point --db at another file",
                            path, holder);
    }
    return ds_error_set(err, DS_ERR_STORE, "cannot open DuckDB file %s: %s", path, msg);
}

/* Attaches the file with duckstore's row group size; every connection then
 * USEs it (store_connect). */
static bool attach_file(store *st, const char *path, bool read_only, ds_error *err)
{
    duckdb_connection con;
    if (duckdb_connect(st->db, &con) == DuckDBError)
        return ds_error_set(err, DS_ERR_STORE, "cannot open a DuckDB connection to %s", path);
    ds_buf sql = DS_BUF_INIT;
    ds_buf_append(&sql, "ATTACH ");
    ds_buf_append_literal(&sql, path);
    ds_buf_append(&sql, " AS ");
    ds_buf_append_ident(&sql, st->alias);
    bool ok = read_only ? ds_buf_append(&sql, " (READ_ONLY)")
                        : ds_buf_appendf(&sql, " (ROW_GROUP_SIZE %d)", STORE_ROW_GROUP_SIZE);
    duckdb_result res;
    if (!ok) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    } else if (duckdb_query(con, ds_buf_str(&sql), &res) == DuckDBError) {
        ok = open_error(path, duckdb_result_error(&res), err);
        duckdb_destroy_result(&res);
    } else {
        duckdb_destroy_result(&res);
        /* No file but this one (and its WAL and temp directory, which
         * DuckDB allows itself) and no network: queries of the HTTP API
         * cannot read the server's files, and a read-only store cannot
         * ATTACH the file again writable or COPY out of it. DuckDB refuses
         * to turn this back on while it runs; a reopen sets it again. */
        ok = store_exec(con, "SET enable_external_access = false", err);
    }
    ds_buf_free(&sql);
    duckdb_disconnect(&con);
    return ok;
}

/* The open file's device and inode (store_file_check). */
static bool remember_identity(store *st, ds_error *err)
{
    struct stat sb;
    if (stat(st->path, &sb) != 0)
        return ds_error_set(err, DS_ERR_STORE, "cannot stat the DuckDB file %s: %s", st->path,
                            strerror(errno));
    st->dev = sb.st_dev;
    st->ino = sb.st_ino;
    return true;
}

/* Starts DuckDB, attaches the file and prepares the metadata schema; on
 * failure nothing is left open (st->db NULL). */
static bool start_database(store *st, ds_error *err)
{
    store_settings settings = {.memory_limit = st->memory_limit,
                               .read_memory_limit = st->read_memory_limit,
                               .threads = st->threads,
                               .read_only = st->read_only};
    duckdb_config config;
    if (!make_config(st->path, &settings, &config, err))
        return false;
    char *failure = NULL;
    duckdb_state opened = duckdb_open_ext(NULL, &st->db, config, &failure);
    duckdb_destroy_config(&config);
    atomic_store(&st->generation, atomic_fetch_add(&instances, 1) + 1);
    if (opened == DuckDBError) {
        st->db = NULL;
        ds_error_set(err, DS_ERR_STORE, "cannot start DuckDB: %s", failure ? failure : "unknown error");
        duckdb_free(failure);
        return false;
    }
    duckdb_connection con = NULL;
    bool ok = attach_file(st, st->path, st->read_only, err) && remember_identity(st, err) &&
              store_connect(st, &con, err);
    if (ok)
        st->streams = stream_registry_create(con, err);
    ok = ok && st->streams != NULL;
    for (size_t i = 0; ok && !st->read_only && i < sizeof metadata_ddl / sizeof metadata_ddl[0]; i++)
        ok = store_exec(con, metadata_ddl[i], err);
    if (con != NULL)
        duckdb_disconnect(&con);
    if (!ok) {
        duckdb_close(&st->db);
        stream_registry_release(st->streams);
        st->streams = NULL;
    }
    return ok;
}

/* For a command that only reads: a store that is not there is said to be
 * missing (DuckDB would create it, or fail with its own words). */
static bool check_exists(const char *path, ds_error *err)
{
    struct stat sb;
    if (stat(path, &sb) == 0)
        return true;
    if (errno == ENOENT)
        return ds_error_set(err, DS_ERR_STORE,
                            "the DuckDB file %s does not exist yet: nothing has been synced into it; run "
                            "duckstore sync to create it, or point duckdb.path (or --db) at the store",
                            path);
    return ds_error_set(err, DS_ERR_STORE, "cannot read the DuckDB file %s: %s", path, strerror(errno));
}

bool store_open_ext(const char *path, const store_settings *settings, store **out, ds_error *err)
{
    *out = NULL;
    bool read_only = settings != NULL && settings->read_only;
    bool must_exist = read_only || (settings != NULL && settings->must_exist);
    if (must_exist ? !check_exists(path, err) : !make_parent_dirs(path, err))
        return false;
    store *st = calloc(1, sizeof *st);
    if (st == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    st->path = strdup(path);
    st->alias = catalog_alias(path);
    st->threads = settings ? settings->threads : 0;
    if (settings != NULL && settings->memory_limit != NULL)
        st->memory_limit = strdup(settings->memory_limit);
    if (settings != NULL && settings->memory_limit != NULL && settings->read_memory_limit != NULL)
        st->read_memory_limit = strdup(settings->read_memory_limit);
    if (st->path == NULL || st->alias == NULL ||
        (settings != NULL && settings->memory_limit != NULL && st->memory_limit == NULL) ||
        (st->memory_limit != NULL && settings->read_memory_limit != NULL && st->read_memory_limit == NULL)) {
        store_close(st);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    st->read_only = read_only;
    st->meta = meta_cache_new();
    st->readers =
        read_gate_new(settings ? settings->read_concurrency : 0, settings ? settings->read_turn_ms : 0);
    if (st->meta == NULL || st->readers == NULL) {
        store_close(st);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    if (!init_locks(st, err) || !start_database(st, err)) {
        store_close(st);
        return false;
    }
    if (st->read_memory_limit != NULL) {
        ds_buf limit = DS_BUF_INIT;
        if (memory_limit_text(st->memory_limit, st->read_memory_limit, &limit))
            ds_log_info(
                "DuckDB memory_limit %s: memory_limit %s for syncs plus read_memory_limit %s for readers",
                ds_buf_str(&limit), st->memory_limit, st->read_memory_limit);
        ds_buf_free(&limit);
    }
    *out = st;
    return true;
}

read_gate *store_read_gate(store *st)
{
    return st->readers;
}

void store_set_close_hook(store *st, void (*hook)(store *st))
{
    atomic_store(&st->close_hook, hook);
}

void store_close(store *st)
{
    if (st == NULL)
        return;
    void (*hook)(store *) = atomic_load(&st->close_hook);
    if (hook != NULL && st->db != NULL && !st->read_only)
        hook(st);
    for (size_t i = 0; i < st->pool_available; i++)
        duckdb_disconnect(&st->pool[i]);
    free(st->pool);
    drop_kept(st);
    meta_cache_free(st->meta);
    read_gate_free(st->readers);
    if (st->db != NULL)
        duckdb_close(&st->db);
    stream_registry_release(st->streams);
    if (st->locks_ready) {
        pthread_mutex_destroy(&st->commit_lock);
        pthread_mutex_destroy(&st->pool_lock);
        pthread_cond_destroy(&st->pool_free);
        pthread_rwlock_destroy(&st->use_lock);
    }
    free(st->path);
    free(st->alias);
    free(st->memory_limit);
    free(st->read_memory_limit);
    free(st);
}

void store_use_begin(store *st)
{
    pthread_rwlock_rdlock(&st->use_lock);
}

void store_use_end(store *st)
{
    pthread_rwlock_unlock(&st->use_lock);
}

void store_mark_suspect(store *st)
{
    atomic_store(&st->suspect, true);
}

static bool needs_reopen(const store *st)
{
    return atomic_load(&st->suspect) || st->db == NULL;
}

bool store_needs_reopen(store *st)
{
    pthread_rwlock_rdlock(&st->use_lock);
    bool needed = needs_reopen(st);
    pthread_rwlock_unlock(&st->use_lock);
    return needed;
}

/* _duckstore readable: every metadata row and status document can be read. */
static bool verify_metadata(store *st, ds_error *err)
{
    duckdb_connection con;
    if (!store_connect(st, &con, err))
        return false;
    int64_t n = 0;
    bool ok = store_query_int(con,
                              "SELECT count(*) FROM (SELECT table_name, schema_signature, watermark_column, "
                              "watermark, updated_at, watermark_inclusive FROM _duckstore.tables)",
                              &n, err) &&
              store_query_int(con, "SELECT count(*) FROM (SELECT source, status FROM _duckstore.sync_status)",
                              &n, err);
    duckdb_disconnect(&con);
    return ok;
}

bool store_reopen(store *st, ds_error *err)
{
    pthread_rwlock_wrlock(&st->use_lock);
    bool ok = true;
    /* Opening the path of a deleted file would create an empty one. */
    if (needs_reopen(st) && !store_file_check(st, err)) {
        ok = false;
    } else if (needs_reopen(st)) {
        /* Nobody uses the database now: every connection of the old
         * instance goes, so the file is attached by one instance only. */
        pthread_mutex_lock(&st->pool_lock);
        for (size_t i = 0; i < st->pool_available; i++)
            duckdb_disconnect(&st->pool[i]);
        st->pool_available = 0;
        drop_kept(st);
        meta_cache_clear(st->meta);
        /* What the old instance holds in memory is not written back: the
         * file and its WAL hold every committed change. */
        duckdb_connection con;
        if (st->db != NULL && duckdb_connect(st->db, &con) == DuckDBSuccess) {
            store_exec(con, "PRAGMA disable_checkpoint_on_shutdown", NULL);
            duckdb_disconnect(&con);
        }
        if (st->db != NULL)
            duckdb_close(&st->db);
        st->db = NULL;
        stream_registry_release(st->streams);
        st->streams = NULL;
        ok = start_database(st, err) && verify_metadata(st, err);
        for (size_t i = 0; ok && i < st->pool_size; i++) {
            ok = store_connect(st, &st->pool[i], err);
            st->pool_available = ok ? i + 1 : i;
        }
        pthread_mutex_unlock(&st->pool_lock);
        if (ok) {
            atomic_store(&st->suspect, false);
            st->reopen_error[0] = '\0';
            ds_log_info("reopened the DuckDB file %s after a DuckDB failure; _duckstore is readable",
                        st->path);
        } else {
            /* Half-open is closed: the next use tries again. */
            for (size_t i = 0; i < st->pool_available; i++)
                duckdb_disconnect(&st->pool[i]);
            st->pool_available = 0;
            if (st->db != NULL)
                duckdb_close(&st->db);
            st->db = NULL;
            stream_registry_release(st->streams);
            st->streams = NULL;
            snprintf(st->reopen_error, sizeof st->reopen_error, "%s", err->msg);
            ds_log_error("cannot reopen the DuckDB file %s after a DuckDB failure: %s", st->path, err->msg);
        }
    }
    pthread_rwlock_unlock(&st->use_lock);
    return ok;
}

bool store_health(store *st, const char **state, ds_error *err)
{
    if (!store_file_check(st, err)) {
        *state = "lost";
        return false;
    }
    pthread_rwlock_rdlock(&st->use_lock);
    bool open = st->db != NULL;
    if (!open)
        ds_error_set(err, DS_ERR_STORE,
                     "the DuckDB file %s is not open (reopening it failed: %s); check the "
                     "disk and the file, then restart duckstore",
                     st->path, st->reopen_error);
    pthread_rwlock_unlock(&st->use_lock);
    *state = open ? "open" : "closed";
    return open;
}

bool store_file_check(store *st, ds_error *err)
{
    struct stat sb;
    const char *what = NULL;
    if (stat(st->path, &sb) != 0)
        what = errno == ENOENT ? "was deleted" : "cannot be checked";
    else if (sb.st_dev != st->dev || sb.st_ino != st->ino)
        what = "was replaced by another file";
    if (what == NULL)
        return true;
    ds_error_set(err, DS_ERR_STORE,
                 "the DuckDB file %s %s while duckstore runs; what is synced now would be lost at exit, so "
                 "syncs are refused: restart duckstore to recreate the file (a full sync then rebuilds it)",
                 st->path, what);
    if (!atomic_exchange(&st->loss_logged, true))
        ds_log_error("%s", err->msg);
    return false;
}

const char *store_path(const store *st)
{
    return st->path;
}

void store_commit_lock(store *st)
{
    pthread_mutex_lock(&st->commit_lock);
}

void store_commit_unlock(store *st)
{
    meta_cache_written(st->meta);
    pthread_mutex_unlock(&st->commit_lock);
}

bool store_connect(store *st, duckdb_connection *con, ds_error *err)
{
    *con = NULL;
    if (st->db == NULL)
        return ds_error_set(err, DS_ERR_STORE, "the DuckDB file %s is not open (reopening it failed: %s)",
                            st->path, st->reopen_error);
    if (duckdb_connect(st->db, con) == DuckDBError)
        return ds_error_set(err, DS_ERR_STORE, "cannot open a DuckDB connection to %s", st->path);
    ds_buf use = DS_BUF_INIT;
    ds_buf_append(&use, "USE ");
    bool ok = ds_buf_append_ident(&use, st->alias) || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    ok = ok && store_exec(*con, ds_buf_str(&use), err) && store_exec(*con, "SET TimeZone = 'UTC'", err);
    ds_buf_free(&use);
    if (!ok)
        duckdb_disconnect(con);
    return ok;
}

bool store_connect_kept(store *st, duckdb_connection *con, ds_error *err)
{
    pthread_mutex_lock(&st->pool_lock);
    *con = st->nkept > 0 ? st->kept[--st->nkept] : NULL;
    pthread_mutex_unlock(&st->pool_lock);
    return *con != NULL || store_connect(st, con, err);
}

void store_disconnect_kept(store *st, duckdb_connection *con, bool clean)
{
    if (*con == NULL)
        return;
    pthread_mutex_lock(&st->pool_lock);
    if (clean && st->nkept < STORE_KEPT_MAX) {
        st->kept[st->nkept++] = *con;
        *con = NULL;
    }
    pthread_mutex_unlock(&st->pool_lock);
    if (*con != NULL)
        duckdb_disconnect(con);
}

bool store_pool_open(store *st, size_t n, ds_error *err)
{
    st->pool = calloc(n ? n : 1, sizeof *st->pool);
    if (st->pool == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!store_connect(st, &st->pool[i], err))
            return false;
        st->pool_available = i + 1;
    }
    st->pool_size = n;
    return true;
}

bool store_borrow(store *st, duckdb_connection *con, ds_error *err)
{
    store_use_begin(st);
    if (st->pool_size == 0 || st->db == NULL) {
        bool ok = store_connect(st, con, err);
        if (!ok)
            store_use_end(st);
        return ok;
    }
    pthread_mutex_lock(&st->pool_lock);
    while (st->pool_available == 0)
        pthread_cond_wait(&st->pool_free, &st->pool_lock);
    *con = st->pool[--st->pool_available];
    pthread_mutex_unlock(&st->pool_lock);
    return true;
}

void store_release(store *st, duckdb_connection *con)
{
    if (st->pool_size == 0) {
        duckdb_disconnect(con);
    } else {
        pthread_mutex_lock(&st->pool_lock);
        st->pool[st->pool_available++] = *con;
        pthread_cond_signal(&st->pool_free);
        pthread_mutex_unlock(&st->pool_lock);
    }
    *con = NULL;
    store_use_end(st);
}

bool store_exec(duckdb_connection con, const char *sql, ds_error *err)
{
    duckdb_result res;
    if (duckdb_query(con, sql, &res) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return false;
    }
    duckdb_destroy_result(&res);
    return true;
}

/* The value at (column col, row 0) of res as text, malloc'd. */
static bool copy_value(duckdb_result *res, idx_t col, char **out, ds_error *err)
{
    char *v = duckdb_value_varchar(res, col, 0);
    *out = v ? strdup(v) : NULL;
    duckdb_free(v);
    return *out != NULL || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
}

bool store_query_text(duckdb_connection con, const char *sql, char **out, ds_error *err)
{
    *out = NULL;
    duckdb_result res;
    if (duckdb_query(con, sql, &res) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return false;
    }
    bool ok = true;
    if (duckdb_row_count(&res) > 0 && duckdb_column_count(&res) > 0 && !duckdb_value_is_null(&res, 0, 0))
        ok = copy_value(&res, 0, out, err);
    duckdb_destroy_result(&res);
    return ok;
}

bool store_execf(duckdb_connection con, int64_t *changed, ds_error *err, const char *fmt, ...)
{
    ds_buf sql = DS_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    bool ok = ds_buf_vappendf(&sql, fmt, ap);
    va_end(ap);
    if (!ok) {
        ds_buf_free(&sql);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    duckdb_result res;
    ok = duckdb_query(con, ds_buf_str(&sql), &res) == DuckDBSuccess;
    if (ok && changed)
        *changed = (int64_t)duckdb_rows_changed(&res);
    if (!ok)
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s", duckdb_result_error(&res));
    duckdb_destroy_result(&res);
    ds_buf_free(&sql);
    return ok;
}

bool store_query_textf(duckdb_connection con, char **out, ds_error *err, const char *fmt, ...)
{
    *out = NULL;
    ds_buf sql = DS_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    bool ok = ds_buf_vappendf(&sql, fmt, ap);
    va_end(ap);
    ok = ok ? store_query_text(con, ds_buf_str(&sql), out, err)
            : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    ds_buf_free(&sql);
    return ok;
}

bool store_query_int(duckdb_connection con, const char *sql, int64_t *out, ds_error *err)
{
    *out = 0;
    duckdb_result res;
    if (duckdb_query(con, sql, &res) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return false;
    }
    if (duckdb_row_count(&res) > 0 && duckdb_column_count(&res) > 0)
        *out = duckdb_value_int64(&res, 0, 0);
    duckdb_destroy_result(&res);
    return true;
}

char *store_quote_ident(const char *ident)
{
    return ds_quote_ident(ident);
}

char *store_quote_literal(const char *value)
{
    return ds_quote_literal(value);
}

/* head followed by value as a literal, in b; NULL when out of memory. */
static const char *sql_with_literal(ds_buf *b, const char *head, const char *value)
{
    ds_buf_append(b, head);
    ds_buf_append_literal(b, value);
    return ds_buf_str(b);
}

bool store_table_exists(duckdb_connection con, const char *table, bool *exists, ds_error *err)
{
    /* A table description only binds the catalog entry; duckdb_tables()
     * also loads every table's storage metadata (15-30 ms on a cold file,
     * once per sync and table). Its failure may mean "no such table" or a
     * real error, so the catalog query decides then. */
    duckdb_table_description desc = NULL;
    bool found = duckdb_table_description_create(con, "main", table, &desc) == DuckDBSuccess;
    duckdb_table_description_destroy(&desc);
    if (found) {
        *exists = true;
        return true;
    }
    ds_buf sql = DS_BUF_INIT;
    const char *q = sql_with_literal(
        &sql, "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ", table);
    int64_t n = 0;
    bool ok = q ? store_query_int(con, q, &n, err) : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    ds_buf_free(&sql);
    *exists = n > 0;
    return ok;
}

static bool read_table_meta(duckdb_connection con, const char *table, store_table_meta *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    ds_buf sql = DS_BUF_INIT;
    const char *q =
        sql_with_literal(&sql,
                         "SELECT schema_signature, watermark_column, watermark, "
                         "coalesce(watermark_inclusive, false), read_state FROM _duckstore.tables WHERE "
                         "table_name = ",
                         table);
    if (q == NULL) {
        ds_buf_free(&sql);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    duckdb_result res;
    bool ok = duckdb_query(con, q, &res) == DuckDBSuccess;
    ds_buf_free(&sql);
    if (!ok) {
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return false;
    }
    if (duckdb_row_count(&res) > 0) {
        char **fields[] = {&out->schema_signature, &out->watermark_column, &out->watermark};
        for (idx_t c = 0; c < 3 && ok; c++)
            if (!duckdb_value_is_null(&res, c, 0))
                ok = copy_value(&res, c, fields[c], err);
        out->watermark_inclusive = duckdb_value_boolean(&res, 3, 0);
        if (ok && !duckdb_value_is_null(&res, 4, 0))
            ok = copy_value(&res, 4, &out->read_state, err);
    }
    duckdb_destroy_result(&res);
    if (!ok)
        store_table_meta_free(out);
    return ok;
}

/* A table's metadata as the cache keeps it: the row moves between the two
 * (the source's strings are taken, not copied). */
static void meta_to_row(store_table_meta *meta, meta_row *row)
{
    *row = (meta_row){
        .fields = {meta->schema_signature, meta->watermark_column, meta->watermark, meta->read_state},
        .flag = meta->watermark_inclusive};
    memset(meta, 0, sizeof *meta);
}

static void row_to_meta(meta_row *row, store_table_meta *meta)
{
    *meta = (store_table_meta){.schema_signature = row->fields[0],
                               .watermark_column = row->fields[1],
                               .watermark = row->fields[2],
                               .read_state = row->fields[3],
                               .watermark_inclusive = row->flag};
    memset(row, 0, sizeof *row);
}

bool store_get_table_meta(store *st, duckdb_connection con, const char *table, store_table_meta *out,
                          ds_error *err)
{
    meta_row row;
    uint64_t ticket;
    if (meta_cache_get(st ? st->meta : NULL, META_TABLE, table, &row, &ticket)) {
        row_to_meta(&row, out);
        return true;
    }
    if (!read_table_meta(con, table, out, err))
        return false;
    if (st != NULL) {
        meta_to_row(out, &row);
        meta_cache_put(st->meta, META_TABLE, table, &row, ticket);
        row_to_meta(&row, out);
    }
    return true;
}

void store_table_meta_free(store_table_meta *meta)
{
    free(meta->schema_signature);
    free(meta->watermark_column);
    free(meta->watermark);
    free(meta->read_state);
    memset(meta, 0, sizeof *meta);
}

/* Runs a statement with VARCHAR parameters (NULL → SQL NULL). */
static bool exec_params(duckdb_connection con, const char *sql, const char *const *params, size_t n,
                        ds_error *err)
{
    duckdb_prepared_statement stmt;
    if (duckdb_prepare(con, sql, &stmt) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s", duckdb_prepare_error(stmt));
        duckdb_destroy_prepare(&stmt);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (params[i])
            duckdb_bind_varchar(stmt, i + 1, params[i]);
        else
            duckdb_bind_null(stmt, i + 1);
    }
    duckdb_result res;
    bool ok = duckdb_execute_prepared(stmt, &res) == DuckDBSuccess;
    if (!ok)
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s", duckdb_result_error(&res));
    duckdb_destroy_result(&res);
    duckdb_destroy_prepare(&stmt);
    return ok;
}

void store_forget_metadata(store *st)
{
    meta_cache_clear(st->meta);
}

bool store_put_table_meta(store *st, duckdb_connection con, const char *table, const store_table_meta *meta,
                          ds_error *err)
{
    meta_cache_writing(st->meta);
    const char *del[] = {table};
    const char *ins[] = {table,
                         meta->schema_signature,
                         meta->watermark_column,
                         meta->watermark,
                         meta->watermark_inclusive ? "true" : "false",
                         meta->read_state};
    return exec_params(con, "DELETE FROM _duckstore.tables WHERE table_name = ?", del, 1, err) &&
           exec_params(
               con,
               "INSERT INTO _duckstore.tables (table_name, schema_signature, watermark_column, watermark, "
               "watermark_inclusive, read_state, updated_at) VALUES (?, ?, ?, ?, ?::BOOLEAN, ?, "
               "current_timestamp)",
               ins, 6, err);
}

bool store_clear_watermarks(store *st, duckdb_connection con, const char *const *tables, size_t n,
                            ds_error *err)
{
    meta_cache_writing(st->meta);
    for (size_t i = 0; i < n; i++) {
        const char *p[] = {tables[i]};
        if (!exec_params(con,
                         "UPDATE _duckstore.tables SET watermark = NULL, updated_at = current_timestamp "
                         "WHERE table_name = ?",
                         p, 1, err))
            return false;
    }
    return true;
}

bool store_get_status(store *st, duckdb_connection con, const char *source, char **json, ds_error *err)
{
    *json = NULL;
    meta_row row;
    uint64_t ticket;
    if (meta_cache_get(st ? st->meta : NULL, META_STATUS, source, &row, &ticket)) {
        *json = row.fields[0];
        return true;
    }
    ds_buf sql = DS_BUF_INIT;
    const char *q =
        sql_with_literal(&sql, "SELECT status FROM _duckstore.sync_status WHERE source = ", source);
    bool ok = q ? store_query_text(con, q, json, err) : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    ds_buf_free(&sql);
    if (ok) {
        row = (meta_row){.fields = {*json}};
        meta_cache_put(st ? st->meta : NULL, META_STATUS, source, &row, ticket);
    }
    return ok;
}

bool store_put_status(store *st, duckdb_connection con, const char *source, const char *json, ds_error *err)
{
    meta_cache_writing(st->meta);
    const char *del[] = {source};
    const char *ins[] = {source, json};
    return exec_params(con, "DELETE FROM _duckstore.sync_status WHERE source = ?", del, 1, err) &&
           exec_params(con, "INSERT INTO _duckstore.sync_status VALUES (?, ?, current_timestamp)", ins, 2,
                       err);
}

bool store_insert_stream(store *st, duckdb_connection con, const char *table_ref, store_fill_fn fill,
                         void *ctx, ds_error *err)
{
    return stream_insert(st->streams, con, table_ref, fill, ctx, err);
}

uint64_t store_generation(store *st)
{
    return atomic_load(&st->generation);
}

static bool probe_runs(duckdb_connection con, const char *probe)
{
    duckdb_result res;
    bool ok = duckdb_query(con, probe, &res) == DuckDBSuccess;
    duckdb_destroy_result(&res);
    return ok;
}

static bool exec_install(duckdb_connection con, const char *what, const char *sql, ds_error *err)
{
    duckdb_result res;
    if (duckdb_query(con, sql, &res) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "%s: %s (in: %.200s)", what, duckdb_result_error(&res), sql);
        duckdb_destroy_result(&res);
        return false;
    }
    duckdb_destroy_result(&res);
    return true;
}

bool store_install_once(duckdb_connection con, const char *what, const char *probe,
                        store_install_prepare_fn prepare, const char *const *statements, ds_error *err)
{
    if (probe_runs(con, probe))
        return true;
    /* A store reopen starts a new, empty instance: its first connection
     * installs again. */
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    bool ok = true;
    if (!probe_runs(con, probe)) {
        bool began =
            (prepare == NULL || prepare(con, err)) && exec_install(con, what, "BEGIN TRANSACTION", err);
        ok = began;
        for (size_t i = 0; ok && statements[i] != NULL; i++)
            ok = exec_install(con, what, statements[i], err);
        if (ok)
            ok = exec_install(con, what, "COMMIT", err);
        else if (began)
            exec_install(con, what, "ROLLBACK", NULL);
    }
    pthread_mutex_unlock(&lock);
    return ok;
}
