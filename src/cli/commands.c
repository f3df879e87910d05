/* Command implementations for the duckstore CLI: thin wrappers that load
 * the config, open the store and call the sync engine. */
#include "cli/commands.h"

#include <duckdb.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/version.h"
#include "config/config.h"
#include "server/server.h"
#include "store/store.h"
#include "sync/sync.h"

static bool has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return true;
    return false;
}

/* Rejects options other than the allowed ones; returns the number of
 * positional arguments (their indexes in pos). */
static int parse_args(const char *cmd, int argc, char **argv, const char *const *allowed, int *pos,
                      int max_pos)
{
    int npos = 0;
    for (int i = 0; i < argc; i++) {
        if (argv[i][0] == '-') {
            bool ok = false;
            for (const char *const *a = allowed; *a; a++)
                ok |= strcmp(argv[i], *a) == 0;
            if (!ok) {
                fprintf(stderr, "duckstore %s: unknown option %s (see duckstore --help)\n", cmd, argv[i]);
                return -1;
            }
        } else {
            if (npos == max_pos) {
                fprintf(stderr, "duckstore %s: unexpected argument %s (see duckstore --help)\n", cmd,
                        argv[i]);
                return -1;
            }
            pos[npos++] = i;
        }
    }
    return npos;
}

static bool load_config(const cli_globals *g, cfg_config *cfg)
{
    ds_error err;
    ds_error_clear(&err);
    if (g->verbose)
        ds_log_set_level(DS_LOG_DEBUG);
    if (!cfg_load_dir(g->config_dir, cfg, &err)) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        return false;
    }
    return true;
}

static bool open_store(const cli_globals *g, const cfg_config *cfg, store **st)
{
    ds_error err;
    const char *path = g->db_path ? g->db_path : cfg->store.path;
    store_settings settings = {.memory_limit = cfg->store.memory_limit, .threads = cfg->store.threads};
    if (!store_open_ext(path, &settings, st, &err)) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        return false;
    }
    if (!sync_cleanup_staging(*st, cfg, &err))
        ds_log_warn("could not drop leftover staging tables: %s", err.msg);
    return true;
}

static void unknown_source(const cfg_config *cfg, const char *name)
{
    fprintf(stderr, "duckstore: no source named \"%s\" in the config; known sources:", name);
    for (size_t i = 0; i < cfg->n_sources; i++)
        fprintf(stderr, " %s", cfg->sources[i].name);
    fprintf(stderr, "%s\n", cfg->n_sources ? "" : " (none)");
}

/* Loads the config, finds the named source (when name is not NULL) and
 * opens the store. Returns CLI_EXIT_OK, or the exit code after cleaning up. */
static int open_session(const cli_globals *g, const char *name, cfg_config *cfg, const cfg_source **src,
                        store **st)
{
    if (!load_config(g, cfg))
        return CLI_EXIT_USAGE;
    if (name != NULL && (*src = cfg_find_source(cfg, name)) == NULL) {
        unknown_source(cfg, name);
        cfg_free(cfg);
        return CLI_EXIT_USAGE;
    }
    if (!open_store(g, cfg, st)) {
        cfg_free(cfg);
        return CLI_EXIT_SYNC_ERROR;
    }
    return CLI_EXIT_OK;
}

/* ---- sync with a live progress line per table ---------------------- */

typedef struct progress_printer {
    pthread_t thread;
    const cfg_source *src;
    sync_progress *progress;
    atomic_bool done;
} progress_printer;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One live line per table (rows, MB, rows/s), redrawn in place. */
static void *progress_main(void *arg)
{
    progress_printer *p = arg;
    size_t n = p->src->n_plans;
    double start = now_s();
    bool drawn = false;
    while (!atomic_load(&p->done)) {
        struct timespec delay = {0, 250 * 1000 * 1000};
        nanosleep(&delay, NULL);
        double elapsed = now_s() - start;
        if (drawn)
            fprintf(stderr, "\033[%zuA", n);
        const char *phase = sync_phase_name((sync_phase)atomic_load(&p->progress->phase));
        for (size_t i = 0; i < n; i++) {
            uint64_t rows = atomic_load(&p->progress->table_rows[i]);
            uint64_t bytes = atomic_load(&p->progress->table_bytes[i]);
            fprintf(stderr, "\r\033[K%s %s: %llu rows, %.1f MB, %.0f rows/s\n", phase, p->src->plans[i].table,
                    (unsigned long long)rows, (double)bytes / 1e6,
                    elapsed > 0 ? (double)rows / elapsed : 0.0);
        }
        drawn = true;
    }
    if (drawn) { /* clear the lines for the summary */
        fprintf(stderr, "\033[%zuA", n);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "\r\033[K\n");
        fprintf(stderr, "\033[%zuA", n);
    }
    return NULL;
}

/* Exit code of a failed sync or check: 2 when the config is at fault (a
 * query PostgreSQL rejects as written, a missing dataset_id), else 1. */
static int failure_code(const ds_error *err)
{
    return err->code == DS_ERR_CONFIG ? CLI_EXIT_USAGE : CLI_EXIT_SYNC_ERROR;
}

/* Of several sources' results, a config error (2) outranks a failure (1). */
static int worse(int a, int b)
{
    return a > b ? a : b;
}

static int run_one_sync(store *st, const cfg_config *cfg, const cfg_source *src, bool full)
{
    sync_progress progress;
    memset(&progress, 0, sizeof progress);
    sync_options opt = {.force_full = full, .progress = &progress};
    progress_printer printer = {.src = src, .progress = &progress};
    atomic_init(&printer.done, false);
    bool live = isatty(STDERR_FILENO);
    if (live)
        pthread_create(&printer.thread, NULL, progress_main, &printer);
    sync_report report;
    ds_error err;
    ds_error_clear(&err);
    bool ok = sync_source(st, cfg, src, &opt, &report, &err);
    if (live) {
        atomic_store(&printer.done, true);
        pthread_join(printer.thread, NULL);
    }
    for (size_t i = 0; i < report.nwarnings; i++)
        ds_log_warn("%s", report.warnings[i]);
    if (!ok) {
        fprintf(stderr, "duckstore: sync failed: %s\n", err.msg);
        return failure_code(&err);
    }
    printf("%s: %s sync, %lld rows in %s (%+lld), %.2f s%s\n", src->name,
           report.incremental ? "incremental" : "full", (long long)report.rows, src->data_name,
           (long long)report.rows_added, report.duration_s,
           report.truncated ? ", truncated at max_sync_rows" : "");
    for (size_t i = 0; i < report.ntables; i++)
        printf("  %-32s %-11s %lld rows read, %lld rows total%s\n", report.tables[i].table,
               report.tables[i].incremental ? "incremental" : "full", (long long)report.tables[i].rows_loaded,
               (long long)report.tables[i].rows_total, report.tables[i].truncated ? " (truncated)" : "");
    return CLI_EXIT_OK;
}

int cli_cmd_sync(const cli_globals *g, int argc, char **argv)
{
    static const char *const allowed[] = {"--full", NULL};
    int pos[1];
    int npos = parse_args("sync", argc, argv, allowed, pos, 1);
    if (npos < 0)
        return CLI_EXIT_USAGE;
    cfg_config cfg;
    if (!load_config(g, &cfg))
        return CLI_EXIT_USAGE;
    const cfg_source *only = NULL;
    if (npos == 1 && (only = cfg_find_source(&cfg, argv[pos[0]])) == NULL) {
        unknown_source(&cfg, argv[pos[0]]);
        cfg_free(&cfg);
        return CLI_EXIT_USAGE;
    }
    if (!cfg.store.enabled) {
        fprintf(stderr, "duckstore: duckdb.enabled is false in %s/duckdb.yaml; nothing synced\n",
                g->config_dir);
        cfg_free(&cfg);
        return CLI_EXIT_OK;
    }
    store *st;
    if (!open_store(g, &cfg, &st)) {
        cfg_free(&cfg);
        return CLI_EXIT_SYNC_ERROR;
    }
    bool full = has_flag(argc, argv, "--full");
    int rc = CLI_EXIT_OK;
    size_t synced = 0;
    for (size_t i = 0; i < cfg.n_sources; i++) {
        const cfg_source *src = &cfg.sources[i];
        if (only ? src != only : !src->enabled)
            continue;
        synced++;
        rc = worse(rc, run_one_sync(st, &cfg, src, full));
    }
    if (synced == 0)
        fprintf(stderr, "duckstore: no enabled source in %s\n", g->config_dir);
    store_close(st);
    cfg_free(&cfg);
    return rc;
}

/* ---- status ------------------------------------------------------------ */

static json_t *status_document(store *st, const cfg_config *cfg, ds_error *err)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "success", json_true());
    json_object_set_new(doc, "enabled", json_boolean(cfg->store.enabled));
    json_t *datasets = json_object();
    for (size_t i = 0; i < cfg->n_sources; i++) {
        json_t *s = sync_status_json(st, &cfg->sources[i], err);
        if (s == NULL) {
            json_decref(datasets);
            json_decref(doc);
            return NULL;
        }
        json_object_set_new(datasets, cfg->sources[i].data_name, s);
    }
    json_object_set_new(doc, "datasets", datasets);
    return doc;
}

static const char *json_text(json_t *obj, const char *key, const char *fallback)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : fallback;
}

int cli_cmd_status(const cli_globals *g, int argc, char **argv)
{
    static const char *const allowed[] = {"--json", NULL};
    int pos[1];
    if (parse_args("status", argc, argv, allowed, pos, 0) < 0)
        return CLI_EXIT_USAGE;
    cfg_config cfg;
    store *st;
    int rc = open_session(g, NULL, &cfg, NULL, &st);
    if (rc != CLI_EXIT_OK)
        return rc;
    ds_error err;
    json_t *doc = status_document(st, &cfg, &err);
    store_close(st);
    cfg_free(&cfg);
    if (doc == NULL) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        return CLI_EXIT_SYNC_ERROR;
    }
    if (has_flag(argc, argv, "--json")) {
        json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
        printf("\n");
    } else {
        const char *key;
        json_t *s;
        json_object_foreach(json_object_get(doc, "datasets"), key, s)
        {
            printf("%s: %s, %lld rows, last sync %s (%s)%s\n", key, json_text(s, "state", "?"),
                   (long long)json_integer_value(json_object_get(s, "rows")),
                   json_text(s, "last_sync", "never"), json_text(s, "sync_type", "-"),
                   json_is_true(json_object_get(s, "truncated")) ? ", truncated" : "");
            const char *wkey;
            json_t *wm;
            json_object_foreach(json_object_get(s, "watermarks"), wkey, wm)
                printf("  watermark %-28s %s\n", wkey, json_is_string(wm) ? json_string_value(wm) : "(none)");
            if (json_is_string(json_object_get(s, "error")))
                printf("  error: %s\n", json_text(s, "error", ""));
            size_t i;
            json_t *w;
            json_array_foreach(json_object_get(s, "warnings"), i, w)
                printf("  warning: %s\n", json_string_value(w));
        }
    }
    json_decref(doc);
    return CLI_EXIT_OK;
}

int cli_cmd_reset_watermark(const cli_globals *g, int argc, char **argv)
{
    static const char *const allowed[] = {NULL};
    int pos[1];
    if (parse_args("reset-watermark", argc, argv, allowed, pos, 1) != 1) {
        fprintf(stderr, "usage: duckstore reset-watermark NAME\n");
        return CLI_EXIT_USAGE;
    }
    cfg_config cfg;
    const cfg_source *src = NULL;
    store *st;
    int rc = open_session(g, argv[pos[0]], &cfg, &src, &st);
    if (rc != CLI_EXIT_OK)
        return rc;
    ds_error err;
    bool ok = sync_reset_watermarks(st, src, &err);
    if (ok)
        printf("%s: watermarks cleared; the next sync is a full rebuild\n", src->name);
    else
        fprintf(stderr, "duckstore: %s\n", err.msg);
    store_close(st);
    cfg_free(&cfg);
    return ok ? CLI_EXIT_OK : CLI_EXIT_SYNC_ERROR;
}

/* ---- check-config -------------------------------------------------------- */

static void print_columns(const cfg_source *src, const cfg_query_plan *plan, const pgsrc_desc *desc)
{
    printf("# %s: %s returns %zu columns:\n", src->name, plan->label, desc->ncols);
    for (size_t c = 0; c < desc->ncols; c++)
        printf("#   %-28s %-28s -> %s%s\n", desc->cols[c].name, desc->cols[c].pg_type, desc->cols[c].type.ddl,
               desc->cols[c].cast == PGSRC_CAST_NONE ? "" : " (read as text)");
}

/* Describes each query of src (no row is read) and runs the checks a sync
 * runs before reading; returns CLI_EXIT_OK, or the exit code of the worst
 * problem found. */
static int describe_source(const cfg_source *src)
{
    pgsrc_conn conn;
    ds_error err;
    if (!pgsrc_connect(src->url, src->query_timeout_s, &conn, &err)) {
        printf("# %s: %s\n", src->name, err.msg);
        return CLI_EXIT_SYNC_ERROR;
    }
    int rc = CLI_EXIT_OK;
    sync_report warnings;
    memset(&warnings, 0, sizeof warnings);
    for (size_t q = 0; q < src->n_plans; q++) {
        const cfg_query_plan *plan = &src->plans[q];
        pgsrc_desc desc;
        if (!pgsrc_describe(&conn, plan->sql, &desc, &err)) {
            printf("# %s: %s (%s:%d): %s\n", src->name, plan->label, src->file, src->line, err.msg);
            rc = worse(rc, failure_code(&err));
            continue;
        }
        print_columns(src, plan, &desc);
        if (!sync_check_query(src, plan, &desc, &warnings, &err)) {
            printf("# %s: %s\n", src->name, err.msg);
            rc = worse(rc, failure_code(&err));
        }
        pgsrc_desc_free(&desc);
    }
    for (size_t w = 0; w < warnings.nwarnings; w++)
        printf("# warning: %s\n", warnings.warnings[w]);
    pgsrc_disconnect(&conn);
    return rc;
}

int cli_cmd_check_config(const cli_globals *g, int argc, char **argv)
{
    static const char *const allowed[] = {"--offline", NULL};
    int pos[1];
    if (parse_args("check-config", argc, argv, allowed, pos, 0) < 0)
        return CLI_EXIT_USAGE;
    cfg_config cfg;
    if (!load_config(g, &cfg))
        return CLI_EXIT_USAGE;
    cfg_print(stdout, &cfg);
    int rc = CLI_EXIT_OK;
    if (!has_flag(argc, argv, "--offline"))
        for (size_t i = 0; i < cfg.n_sources; i++)
            rc = worse(rc, describe_source(&cfg.sources[i]));
    printf("# config %s: %s\n", g->config_dir, rc == CLI_EXIT_OK ? "OK" : "errors above");
    cfg_free(&cfg);
    return rc;
}

int cli_cmd_serve(const cli_globals *g, int argc, char **argv)
{
    http_options opt = {
        .listen = "127.0.0.1:8500", .db_path = g->db_path, .api_token = getenv("DUCKSTORE_API_TOKEN")};
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            opt.listen = argv[++i];
        } else {
            fprintf(stderr, "usage: duckstore serve [--listen HOST:PORT]\n");
            return CLI_EXIT_USAGE;
        }
    }
    cfg_config cfg;
    if (!load_config(g, &cfg))
        return CLI_EXIT_USAGE;
    int rc = http_serve_until_signal(&cfg, &opt);
    cfg_free(&cfg);
    return rc;
}

int cli_cmd_query(const cli_globals *g, int argc, char **argv)
{
    static const char *const allowed[] = {NULL};
    int pos[1];
    if (parse_args("query", argc, argv, allowed, pos, 1) != 1) {
        fprintf(stderr, "usage: duckstore query SQL\n");
        return CLI_EXIT_USAGE;
    }
    cfg_config cfg;
    store *st;
    int rc = open_session(g, NULL, &cfg, NULL, &st);
    if (rc != CLI_EXIT_OK)
        return rc;
    duckdb_connection con;
    ds_error err;
    if (!store_connect(st, &con, &err)) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        rc = CLI_EXIT_SYNC_ERROR;
    } else {
        /* Every value as text: the row-wise result API prints VARCHAR only. */
        char *sql = NULL;
        if (asprintf(&sql, "SELECT COLUMNS(*)::VARCHAR FROM (%s)", argv[pos[0]]) < 0)
            sql = NULL;
        duckdb_result res;
        if (sql == NULL || duckdb_query(con, sql, &res) == DuckDBError) {
            duckdb_destroy_result(&res);
            duckdb_query(con, argv[pos[0]], &res);
        }
        free(sql);
        if (duckdb_result_error(&res) != NULL) {
            fprintf(stderr, "duckstore: %s\n", duckdb_result_error(&res));
            rc = CLI_EXIT_SYNC_ERROR;
        } else {
            idx_t ncols = duckdb_column_count(&res);
            for (idx_t c = 0; c < ncols; c++)
                printf("%s%s", c ? "\t" : "", duckdb_column_name(&res, c));
            printf("\n");
            for (idx_t r = 0; r < duckdb_row_count(&res); r++) {
                for (idx_t c = 0; c < ncols; c++) {
                    char *v = duckdb_value_is_null(&res, c, r) ? NULL : duckdb_value_varchar(&res, c, r);
                    printf("%s%s", c ? "\t" : "", v ? v : "NULL");
                    duckdb_free(v);
                }
                printf("\n");
            }
        }
        duckdb_destroy_result(&res);
        duckdb_disconnect(&con);
    }
    store_close(st);
    cfg_free(&cfg);
    return rc;
}

int cli_cmd_version(const cli_globals *g, int argc, char **argv)
{
    (void)g, (void)argc, (void)argv;
    printf("duckstore %s (DuckDB %s)\n", DS_VERSION, duckdb_library_version());
    return CLI_EXIT_OK;
}
