/* Command implementations for the duckstore CLI: thin wrappers that load
 * the config, open the store and call the sync engine. */
#include "cli/commands.h"

#include "cdc/capture.h"
#include "cli/remote.h"
#include "cli/result.h"

#include <dirent.h>
#include <duckdb.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/version.h"
#include "config/config.h"
#include "server/jobs.h"
#include "publish/publish.h"
#include "server/server.h"
#include "source/publication.h"
#include "store/read_functions.h"
#include "store/store.h"
#include "sync/capture_check.h"
#include "sync/plan.h"
#include "sync/sync.h"

/* Sources one command can name; a config holds fewer. */
#define CLI_MAX_NAMED 256

static bool has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return true;
    return false;
}

/* What a command accepts: the options (NULL-terminated; NULL: none) and
 * from min_pos to max_pos positional arguments (max_pos < 0: any number).
 * usage, when not NULL, is printed after any mistake. */
typedef struct cli_args {
    const char *cmd;
    const char *usage;
    const char *const *options;
    int min_pos, max_pos;
} cli_args;

static bool check_arg(const cli_args *spec, const char *arg, int npos)
{
    if (arg[0] == '-') {
        for (const char *const *o = spec->options; o && *o; o++)
            if (strcmp(arg, *o) == 0)
                return true;
        fprintf(stderr, "duckstore %s: unknown option %s (see duckstore %s --help)\n", spec->cmd, arg,
                spec->cmd);
        return false;
    }
    if (spec->max_pos < 0 || npos < spec->max_pos)
        return true;
    fprintf(stderr, "duckstore %s: unexpected argument %s (see duckstore %s --help)\n", spec->cmd, arg,
            spec->cmd);
    return false;
}

/* Checks the arguments against spec; pos[] receives the positional ones
 * (room for argc), *npos their number. False after saying what is wrong. */
static bool parse_args(const cli_args *spec, int argc, char **argv, const char **pos, int *npos)
{
    bool ok = true;
    *npos = 0;
    for (int i = 0; ok && i < argc; i++) {
        ok = check_arg(spec, argv[i], *npos);
        if (ok && argv[i][0] != '-')
            pos[(*npos)++] = argv[i];
    }
    if (ok && *npos < spec->min_pos) {
        fprintf(stderr, "duckstore %s: missing argument\n", spec->cmd);
        ok = false;
    }
    if (!ok && spec->usage)
        fprintf(stderr, "usage: duckstore %s\n", spec->usage);
    return ok;
}

/* flags: CFG_LOAD_NO_PG for a command that never connects to PostgreSQL. */
static bool load_config_flags(const cli_globals *g, unsigned flags, cfg_config *cfg)
{
    ds_error err;
    ds_error_clear(&err);
    if (g->verbose)
        ds_log_set_level(DS_LOG_DEBUG);
    if (!cfg_load_dir_flags(g->config_dir, flags, cfg, &err)) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        return false;
    }
    ds_log_config_format(cfg->store.log_format);
    return true;
}

static bool load_config(const cli_globals *g, cfg_config *cfg)
{
    return load_config_flags(g, 0, cfg);
}

static void unknown_source(const cfg_config *cfg, const char *config_dir, const char *name)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "no source named \"%s\" in %s; known sources:", name, config_dir);
    for (size_t i = 0; i < cfg->n_sources; i++)
        ds_buf_appendf(&b, " %s (%s)", cfg->sources[i].name, cfg->sources[i].data_name);
    if (cfg->n_sources == 0)
        ds_buf_append(&b, " (none)");
    if (ds_buf_str(&b) != NULL)
        fprintf(stderr, "duckstore: %s\n", ds_buf_str(&b));
    else
        fprintf(stderr, "duckstore: no source named \"%s\" (out of memory listing them)\n", name);
    ds_buf_free(&b);
}

/* A source by its name (monitoring) or its status key (monitoring_data). */
static const cfg_source *find_source(const cfg_config *cfg, const char *name)
{
    const cfg_source *src = cfg_find_source(cfg, name);
    for (size_t i = 0; src == NULL && i < cfg->n_sources; i++)
        if (strcmp(cfg->sources[i].data_name, name) == 0)
            src = &cfg->sources[i];
    return src;
}

/* What a command works on: the config, the sources it names (none: every
 * enabled one) and the store. */
typedef struct cli_session {
    cfg_config cfg;
    const cfg_source *src; /* the first named, NULL when none */
    const cfg_source *srcs[CLI_MAX_NAMED];
    size_t nsrcs;
    store *st;
} cli_session;

/* The DuckDB file a command works on. */
static const char *db_path_of(const cli_globals *g, const cfg_config *cfg)
{
    return g->db_path ? g->db_path : cfg->store.path;
}

/* Loads the config and finds the named sources (each once, in the order
 * given). Returns CLI_EXIT_OK, or the exit code after cleaning up. */
static int session_load(const cli_globals *g, const char *const *names, int nnames, unsigned flags,
                        cli_session *s)
{
    s->src = NULL;
    s->nsrcs = 0;
    s->st = NULL;
    if (!load_config_flags(g, flags, &s->cfg))
        return CLI_EXIT_USAGE;
    for (int i = 0; i < nnames; i++) {
        const cfg_source *src = find_source(&s->cfg, names[i]);
        if (src == NULL) {
            unknown_source(&s->cfg, g->config_dir, names[i]);
            cfg_free(&s->cfg);
            return CLI_EXIT_USAGE;
        }
        bool seen = false;
        for (size_t k = 0; k < s->nsrcs; k++)
            seen |= s->srcs[k] == src;
        if (!seen && s->nsrcs < CLI_MAX_NAMED)
            s->srcs[s->nsrcs++] = src;
    }
    s->src = s->nsrcs > 0 ? s->srcs[0] : NULL;
    return CLI_EXIT_OK;
}

/* Whether a session works on src: a named one, or any enabled one when
 * none is named. */
static bool session_includes(const cli_session *s, const cfg_source *src)
{
    if (s->nsrcs == 0)
        return src->enabled;
    for (size_t i = 0; i < s->nsrcs; i++)
        if (s->srcs[i] == src)
            return true;
    return false;
}

/* Opens the store of a loaded session; on failure frees the config.
 * must_exist: a command that only reads never creates the file. readers:
 * it also reads for others (a publish), so DuckDB gets the readers' budget
 * on top of memory_limit, as under serve: a split source's view joins its
 * two tables, and at 5M rows of 1-2 KB that join does not fit in 64MB. */
static int session_open_store(const cli_globals *g, cli_session *s, bool must_exist, bool readers)
{
    ds_error err;
    const char *path = db_path_of(g, &s->cfg);
    store_settings settings = {.memory_limit = s->cfg.store.memory_limit,
                               .read_memory_limit = !readers ? NULL
                                                    : s->cfg.store.read_memory_limit
                                                        ? s->cfg.store.read_memory_limit
                                                        : CFG_READ_MEMORY_LIMIT_DEFAULT,
                               .threads = s->cfg.store.threads,
                               .must_exist = must_exist};
    if (!store_open_ext(path, &settings, &s->st, &err)) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        cfg_free(&s->cfg);
        return CLI_EXIT_SYNC_ERROR;
    }
    if (!sync_cleanup_staging(s->st, &s->cfg, &err))
        ds_log_warn("could not drop leftover staging tables: %s", err.msg);
    return CLI_EXIT_OK;
}

/* Whether the sources a command works on (every one when none is named)
 * publish after their sync. */
static bool session_publishes(const cli_session *s)
{
    for (size_t i = 0; i < s->nsrcs; i++)
        if (s->srcs[i]->publish_line != 0)
            return true;
    for (size_t i = 0; s->nsrcs == 0 && i < s->cfg.n_sources; i++)
        if (s->cfg.sources[i].publish_line != 0)
            return true;
    return false;
}

static void session_close(cli_session *s)
{
    store_close(s->st);
    cfg_free(&s->cfg);
}

/* ---- sync with a live progress line per table ---------------------- */

typedef struct progress_printer {
    pthread_t thread;
    const cfg_source *src;
    sync_progress *progress;
    atomic_bool done;
} progress_printer;

/* One line per table (rows, MB, rows/s) on stderr, over the n lines drawn
 * before (drawn: whether there are such lines); the same lines whether the
 * sync runs here or in a server. */
static void draw_progress(const char *phase, const cfg_source *src, const uint64_t *rows,
                          const uint64_t *bytes, double elapsed, bool drawn)
{
    size_t n = src->n_plans;
    if (drawn)
        fprintf(stderr, "\033[%zuA", n);
    for (size_t i = 0; i < n && i < CFG_MAX_QUERIES; i++)
        fprintf(stderr, "\r\033[K%s %s: %llu rows, %.1f MB, %.0f rows/s\n", phase, src->plans[i].table,
                (unsigned long long)rows[i], (double)bytes[i] / 1e6,
                elapsed > 0 ? (double)rows[i] / elapsed : 0.0);
}

/* Clears the lines draw_progress drew, for the summary. */
static void clear_progress(const cfg_source *src)
{
    size_t n = src->n_plans;
    fprintf(stderr, "\033[%zuA", n);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "\r\033[K\n");
    fprintf(stderr, "\033[%zuA", n);
}

/* One live line per table, redrawn in place. */
static void *progress_main(void *arg)
{
    progress_printer *p = arg;
    size_t n = p->src->n_plans;
    double start = ds_monotonic_s();
    bool drawn = false;
    while (!atomic_load(&p->done)) {
        struct timespec delay = {0, 250 * 1000 * 1000};
        nanosleep(&delay, NULL);
        uint64_t rows[CFG_MAX_QUERIES] = {0}, bytes[CFG_MAX_QUERIES] = {0};
        for (size_t i = 0; i < n && i < CFG_MAX_QUERIES; i++) {
            rows[i] = atomic_load(&p->progress->table_rows[i]);
            bytes[i] = atomic_load(&p->progress->table_bytes[i]);
        }
        draw_progress(sync_phase_name((sync_phase)atomic_load(&p->progress->phase)), p->src, rows, bytes,
                      ds_monotonic_s() - start, drawn);
        drawn = true;
    }
    if (drawn)
        clear_progress(p->src);
    return NULL;
}

static const char *rows_word(long long n)
{
    return n == 1 ? "row" : "rows";
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

/* ---- Ctrl-C and SIGTERM during a sync ------------------------------- */

/* The signals are blocked in every thread and taken by one thread of
 * their own, which cancels the running sync (its PostgreSQL statements
 * included): the sync then drops its staging tables and leaves the file's
 * data, watermarks and status as they were. */
static struct {
    pthread_t thread;
    bool running;
    sigset_t set;
    atomic_int signo; /* the first signal received, 0 when none */
    pthread_mutex_t lock;
    sync_cancel *cancel; /* the local sync running now, NULL when none */
} interrupts = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void *interrupt_main(void *arg)
{
    (void)arg;
    for (;;) {
        int sig = 0;
        if (sigwait(&interrupts.set, &sig) != 0 || sig == SIGUSR2)
            return NULL;
        int none = 0;
        atomic_compare_exchange_strong(&interrupts.signo, &none, sig);
        pthread_mutex_lock(&interrupts.lock);
        if (interrupts.cancel != NULL)
            sync_cancel_request(interrupts.cancel);
        pthread_mutex_unlock(&interrupts.lock);
    }
}

/* Before any other thread starts (they inherit the blocked signals). */
static void interrupts_start(void)
{
    sigemptyset(&interrupts.set);
    sigaddset(&interrupts.set, SIGINT);
    sigaddset(&interrupts.set, SIGTERM);
    sigaddset(&interrupts.set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &interrupts.set, NULL);
    interrupts.running = pthread_create(&interrupts.thread, NULL, interrupt_main, NULL) == 0;
    if (!interrupts.running) {
        ds_log_warn("Ctrl-C cannot cancel this sync cleanly: no thread for it");
        pthread_sigmask(SIG_UNBLOCK, &interrupts.set, NULL);
    }
}

static void interrupts_stop(void)
{
    if (!interrupts.running)
        return;
    pthread_kill(interrupts.thread, SIGUSR2);
    pthread_join(interrupts.thread, NULL);
    interrupts.running = false;
}

static int interrupted(void)
{
    return atomic_load(&interrupts.signo);
}

static void set_running_cancel(sync_cancel *cancel)
{
    pthread_mutex_lock(&interrupts.lock);
    interrupts.cancel = cancel;
    pthread_mutex_unlock(&interrupts.lock);
    /* A signal taken before the sync registered its cancel. */
    if (cancel != NULL && interrupted())
        sync_cancel_request(cancel);
}

static const char *signal_label(int sig)
{
    return sig == SIGINT ? "Ctrl-C" : "SIGTERM";
}

/* What a cancelled sync left: nothing changed (the same words whether it
 * ran here or in a server). */
static void say_cancelled(const cfg_source *src, bool full)
{
    ds_buf tables = DS_BUF_INIT;
    for (size_t i = 0; i < src->n_plans; i++)
        ds_buf_appendf(&tables, "%s%s", i ? ", " : "", src->plans[i].table);
    fprintf(stderr,
            "duckstore: %s: the %s of %s was cancelled before its commit (tables %s); the DuckDB "
            "file is unchanged: %s keeps its previous data, watermarks and status\n",
            signal_label(interrupted()), full ? "full sync" : "sync", src->name,
            ds_buf_str(&tables) ? ds_buf_str(&tables) : "its tables", src->data_name);
    ds_buf_free(&tables);
}

static int run_one_sync(store *st, const cfg_config *cfg, const cfg_source *src, bool full)
{
    sync_progress progress;
    memset(&progress, 0, sizeof progress);
    sync_cancel cancel;
    sync_cancel_init(&cancel);
    sync_options opt = {.force_full = full, .progress = &progress, .cancel = &cancel};
    progress_printer printer = {.src = src, .progress = &progress};
    atomic_init(&printer.done, false);
    bool live = isatty(STDERR_FILENO);
    int thread_rc = live ? pthread_create(&printer.thread, NULL, progress_main, &printer) : 0;
    if (thread_rc != 0) {
        ds_log_warn("no live progress: cannot start its thread: %s", strerror(thread_rc));
        live = false;
    }
    sync_report report;
    ds_error err;
    ds_error_clear(&err);
    set_running_cancel(&cancel);
    /* With JSON logs, the events the server's syncs log (sync_start,
     * sync_table, sync_end): a log shipper sees a sync run by the CLI as
     * one run by the server. As text they would repeat the lines the CLI
     * prints (the summary, the error), so only warnings are logged. */
    bool events = ds_log_get_format() == DS_LOG_FORMAT_JSON;
    if (events)
        jobs_log_sync_start(src, JOBS_TRIGGER_MANUAL, full);
    double t0 = ds_monotonic_s();
    bool ok;
    if (src->capture == CFG_CAPTURE_LOGICAL) {
        /* Applies the changes up to where PostgreSQL's WAL is now. */
        capture_options co = {.force_full = full, .cancel = &cancel, .progress = &progress};
        ok = capture_run(st, cfg, src, &co, &report, &err);
    } else {
        ok = sync_source(st, cfg, src, &opt, &report, &err);
    }
    set_running_cancel(NULL);
    sync_cancel_destroy(&cancel);
    if (live) {
        atomic_store(&printer.done, true);
        pthread_join(printer.thread, NULL);
    }
    if (events)
        jobs_log_sync_end(src, JOBS_TRIGGER_MANUAL, ok, &report, &progress, &err, ds_monotonic_s() - t0);
    for (size_t i = 0; !events && i < report.nwarnings; i++)
        ds_log_warn("%s", report.warnings[i]);
    if (!ok && err.code == DS_ERR_CANCELLED) {
        say_cancelled(src, full);
        return CLI_EXIT_SIGNAL + interrupted();
    }
    if (!ok) {
        fprintf(stderr, "duckstore: sync failed: %s\n", err.msg);
        return failure_code(&err);
    }
    if (src->capture == CFG_CAPTURE_LOGICAL && report.ntables == 0) {
        printf("%s: logical capture, %lld change(s) applied, %lld %s in %s, %.2f s\n", src->name,
               (long long)report.rows_added, (long long)report.rows, rows_word(report.rows), src->data_name,
               report.duration_s);
        fflush(stdout);
        publish_after_sync(st, src, report.rows_added != 0);
        return CLI_EXIT_OK;
    }
    printf("%s: %s sync, %lld %s in %s (%+lld), %.2f s%s\n", src->name,
           report.incremental ? "incremental" : "full", (long long)report.rows, rows_word(report.rows),
           src->data_name, (long long)report.rows_added, report.duration_s,
           report.truncated ? ", truncated at max_sync_rows" : "");
    for (size_t i = 0; i < report.ntables; i++)
        printf("  %-32s %-11s %lld %s read, %lld %s total%s\n", report.tables[i].table,
               report.tables[i].incremental ? "incremental" : "full", (long long)report.tables[i].rows_loaded,
               rows_word(report.tables[i].rows_loaded), (long long)report.tables[i].rows_total,
               rows_word(report.tables[i].rows_total), report.tables[i].truncated ? " (truncated)" : "");
    fflush(stdout);
    publish_after_sync(st, src, report.data_changed);
    return CLI_EXIT_OK;
}

/* ---- through a running server ---------------------------------------- */

static const char *json_text(json_t *obj, const char *key, const char *fallback)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : fallback;
}

/* Poll period of a sync's status: a person waits on it, the server answers
 * status from memory. */
#define REMOTE_POLL_NS (200L * 1000 * 1000)
/* Time for an answer that the server gives from memory. */
#define REMOTE_TIMEOUT_S 60L

/* Exit code of a request that got no usable answer: 2 when the token is
 * missing or wrong (the user's setup), else 1. */
static int remote_failure_code(const ds_error *err)
{
    return err->code == DS_ERR_USAGE ? CLI_EXIT_USAGE : CLI_EXIT_SYNC_ERROR;
}

static void remote_pause(void)
{
    struct timespec delay = {0, REMOTE_POLL_NS};
    nanosleep(&delay, NULL);
}

/* The server's status document of one dataset (a new reference), NULL
 * with err set. */
static json_t *remote_dataset(const cli_remote *r, const char *data_name, ds_error *err)
{
    long status;
    json_t *doc = cli_remote_json(r, "GET", "/api/store/status", NULL, REMOTE_TIMEOUT_S, &status, err);
    if (doc == NULL)
        return NULL;
    json_t *ds = json_object_get(json_object_get(doc, "datasets"), data_name);
    if (status != 200 || ds == NULL)
        ds_error_set(err, DS_ERR_STORE, "the server's status (HTTP %ld) has no dataset %s: %s", status,
                     data_name, status != 200 ? cli_remote_error_text(doc) : "is its config another one?");
    else
        json_incref(ds);
    json_decref(doc);
    return status == 200 ? ds : NULL;
}

static const char *dataset_state(json_t *ds)
{
    const char *state = json_string_value(json_object_get(ds, "state"));
    return state ? state : "?";
}

/* Draws the server's progress of a running sync, one line per table as a
 * local sync draws it. */
static void draw_remote_progress(const cfg_source *src, json_t *progress, double elapsed, bool drawn)
{
    uint64_t rows[CFG_MAX_QUERIES] = {0}, bytes[CFG_MAX_QUERIES] = {0};
    json_t *tables = json_object_get(progress, "tables");
    for (size_t i = 0; i < src->n_plans && i < CFG_MAX_QUERIES; i++) {
        json_t *t = json_object_get(tables, src->plans[i].table);
        rows[i] = (uint64_t)json_integer_value(json_object_get(t, "rows_read"));
        bytes[i] = (uint64_t)json_integer_value(json_object_get(t, "bytes_read"));
    }
    draw_progress(json_text(progress, "phase", "syncing"), src, rows, bytes, elapsed, drawn);
}

/* Waits until the dataset is no longer syncing; its document, or NULL
 * with err set (DS_ERR_CANCELLED after a signal, when stop_on_signal).
 * *sync_id, when not NULL: the server's id of the sync seen running (0 when
 * none was). */
static json_t *remote_wait_done(const cli_remote *r, const cfg_source *src, bool stop_on_signal,
                                uint64_t *sync_id, ds_error *err)
{
    bool live = isatty(STDERR_FILENO), drawn = false;
    double start = ds_monotonic_s();
    if (sync_id != NULL)
        *sync_id = 0;
    for (;;) {
        json_t *ds = remote_dataset(r, src->data_name, err);
        if (ds == NULL || strcmp(dataset_state(ds), "syncing") != 0) {
            if (drawn)
                clear_progress(src);
            return ds;
        }
        json_t *progress = json_object_get(ds, "progress");
        json_t *id = json_object_get(progress, "sync_id");
        if (sync_id != NULL && *sync_id == 0 && json_is_integer(id))
            *sync_id = (uint64_t)json_integer_value(id);
        if (live && progress != NULL) {
            draw_remote_progress(src, progress, ds_monotonic_s() - start, drawn);
            drawn = true;
        }
        json_decref(ds);
        remote_pause();
        if (stop_on_signal && interrupted()) {
            if (drawn)
                clear_progress(src);
            ds_error_set(err, DS_ERR_CANCELLED, "interrupted");
            return NULL;
        }
    }
}

/* Prints a finished sync as run_one_sync does, from the status document. */
static int print_remote_sync(const cfg_source *src, json_t *ds, long long rows_before)
{
    if (strcmp(dataset_state(ds), "ready") != 0) {
        fprintf(stderr, "duckstore: sync failed: %s\n", json_text(ds, "error", dataset_state(ds)));
        return CLI_EXIT_SYNC_ERROR;
    }
    long long rows = (long long)json_integer_value(json_object_get(ds, "rows"));
    printf("%s: %s sync, %lld %s in %s (%+lld), %.2f s%s\n", src->name, json_text(ds, "sync_type", "full"),
           rows, rows_word(rows), src->data_name, rows - rows_before,
           json_number_value(json_object_get(ds, "duration_seconds")),
           json_is_true(json_object_get(ds, "truncated")) ? ", truncated at max_sync_rows" : "");
    const char *table;
    json_t *t;
    json_object_foreach(json_object_get(ds, "tables"), table, t)
        printf("  %-32s %-11s %lld %s read, %lld %s total%s\n", table, json_text(t, "mode", "full"),
               (long long)json_integer_value(json_object_get(t, "rows_loaded")),
               rows_word(json_integer_value(json_object_get(t, "rows_loaded"))),
               (long long)json_integer_value(json_object_get(t, "rows")),
               rows_word(json_integer_value(json_object_get(t, "rows"))),
               json_is_true(json_object_get(t, "truncated")) ? " (truncated)" : "");
    return CLI_EXIT_OK;
}

/* Ctrl-C while the server runs the sync this command started: cancels
 * that sync (by its id: never another one that started since) and says
 * how it ended, as a local sync would. */
static int remote_cancel(const cli_remote *r, const cfg_source *src, bool full, uint64_t sync_id,
                         long long rows_before)
{
    int rc = CLI_EXIT_SIGNAL + interrupted();
    const char *label = signal_label(interrupted());
    ds_buf path = DS_BUF_INIT;
    ds_buf_appendf(&path, "/api/store/sync/%s/cancel", src->name);
    if (sync_id != 0)
        ds_buf_appendf(&path, "?sync_id=%llu", (unsigned long long)sync_id);
    long status = 0;
    ds_error err;
    json_t *ans = ds_buf_str(&path)
                      ? cli_remote_json(r, "POST", ds_buf_str(&path), NULL, REMOTE_TIMEOUT_S, &status, &err)
                      : NULL;
    if (ds_buf_str(&path) == NULL)
        ds_error_set(&err, DS_ERR_NOMEM, "out of memory");
    ds_buf_free(&path);
    const char *result = json_text(ans, "result", "");
    if (ans == NULL) {
        fprintf(
            stderr,
            "duckstore: %s: stopped waiting; the sync of %s could not be cancelled (%s): it may run on in "
            "duckstore serve (duckstore status shows its result)\n",
            label, src->name, err.msg);
    } else if (status == 200 && strcmp(result, "cancelled") == 0) {
        say_cancelled(src, full);
    } else if (status == 202) {
        fprintf(stderr,
                "duckstore: %s: the sync of %s was asked to cancel and is still ending in duckstore serve; "
                "a sync is cancelled only before its commit (duckstore status shows its result)\n",
                label, src->name);
    } else if (status == 200 || (status == 409 && json_object_get(ans, "trigger") == NULL)) {
        /* Its commit had begun (200), or it ended before the request came
         * (409, nothing runs): its result stands, printed as a local sync's. */
        json_t *ds = remote_dataset(r, src->data_name, &err);
        if (ds != NULL)
            print_remote_sync(src, ds, rows_before);
        else
            fprintf(stderr, "duckstore: %s\n", err.msg);
        json_decref(ds);
    } else {
        fprintf(stderr, "duckstore: %s: the sync of %s was not cancelled (HTTP %ld): %s\n", label, src->name,
                status, cli_remote_error_text(ans));
    }
    json_decref(ans);
    return rc;
}

/* Starts the sync in the server and waits for its result. A sync of the
 * source already running there (scheduled, or asked by someone else) is
 * waited for first, then this one starts. */
static int remote_sync(const cli_remote *r, const cfg_source *src, bool full)
{
    ds_buf path = DS_BUF_INIT;
    ds_buf_appendf(&path, "/api/store/sync/%s%s", src->name, full ? "?full=true" : "");
    if (ds_buf_str(&path) == NULL) {
        fprintf(stderr, "duckstore: out of memory\n");
        return CLI_EXIT_SYNC_ERROR;
    }
    int rc = CLI_EXIT_SYNC_ERROR;
    bool said_busy = false;
    ds_error err;
    for (;;) {
        json_t *now = said_busy ? NULL : remote_dataset(r, src->data_name, &err);
        if (now != NULL && strcmp(dataset_state(now), "syncing") == 0) {
            fprintf(stderr, "duckstore: %s is syncing in the server; waiting for that sync to end\n",
                    src->name);
            said_busy = true;
        }
        json_decref(now);
        json_t *before = remote_wait_done(r, src, true, NULL, &err);
        if (before == NULL && err.code == DS_ERR_CANCELLED) {
            fprintf(stderr,
                    "duckstore: %s: the sync of %s was not started (the server's own sync of it was still "
                    "running); this command changed nothing\n",
                    signal_label(interrupted()), src->name);
            rc = CLI_EXIT_SIGNAL + interrupted();
            break;
        }
        if (before == NULL) {
            fprintf(stderr, "duckstore: %s\n", err.msg);
            rc = remote_failure_code(&err);
            break;
        }
        long long rows_before = (long long)json_integer_value(json_object_get(before, "rows"));
        json_decref(before);
        long status;
        json_t *ans = cli_remote_json(r, "POST", ds_buf_str(&path), NULL, REMOTE_TIMEOUT_S, &status, &err);
        if (ans == NULL) {
            fprintf(stderr, "duckstore: %s\n", err.msg);
            rc = remote_failure_code(&err);
            break;
        }
        const char *why = cli_remote_error_text(ans);
        if (status == 409 && strstr(why, "already syncing") != NULL) {
            if (!said_busy)
                fprintf(stderr, "duckstore: %s is syncing in the server; waiting for that sync to end\n",
                        src->name);
            said_busy = true;
            json_decref(ans);
            remote_pause();
            continue;
        }
        if (status == 200) {
            /* A streaming logical source: nothing to start, its changes
             * apply as they commit. */
            const char *msg = json_string_value(json_object_get(ans, "message"));
            printf("%s\n", msg ? msg : src->name);
            json_decref(ans);
            rc = CLI_EXIT_OK;
            break;
        }
        if (status != 202) {
            fprintf(stderr, "duckstore: the server refused the sync of %s (HTTP %ld): %s\n", src->name,
                    status, why);
            json_decref(ans);
            break;
        }
        json_decref(ans);
        /* The state is syncing from the 202 on: the first state that is not
         * is this sync's result, and the first sync seen running is this
         * one. */
        uint64_t sync_id = 0;
        json_t *after = remote_wait_done(r, src, true, &sync_id, &err);
        if (after != NULL) {
            rc = print_remote_sync(src, after, rows_before);
        } else if (err.code == DS_ERR_CANCELLED) {
            rc = remote_cancel(r, src, full, sync_id, rows_before);
        } else {
            fprintf(stderr, "duckstore: %s\n", err.msg);
        }
        json_decref(after);
        break;
    }
    ds_buf_free(&path);
    return rc;
}

/* Whether a server holds the file: 1 (r filled, free it), 0 (none: open
 * the file), -1 (printed why; exit code CLI_EXIT_USAGE). */
static int find_server(const cli_globals *g, const cfg_config *cfg, cli_remote *r)
{
    switch (cli_remote_find(db_path_of(g, cfg), r)) {
    case CLI_REMOTE_SERVER:
        return 1;
    case CLI_REMOTE_FAILED:
        return -1;
    case CLI_REMOTE_NONE:
        break;
    }
    return 0;
}

/* The sources a session works on, in the order named (config order when
 * none is named); their number. */
static size_t session_targets(const cli_session *s, const cfg_source **out)
{
    size_t n = 0;
    if (s->nsrcs > 0) {
        for (size_t i = 0; i < s->nsrcs; i++)
            out[i] = s->srcs[i];
        return s->nsrcs;
    }
    for (size_t i = 0; i < s->cfg.n_sources && n < CLI_MAX_NAMED; i++)
        if (session_includes(s, &s->cfg.sources[i]))
            out[n++] = &s->cfg.sources[i];
    return n;
}

/* ---- plan ----------------------------------------------------------------- */

/* Plans one source: prints it, returns the exit code. */
static int plan_one(store *st, const cfg_config *cfg, const cfg_source *src, bool full)
{
    ds_buf text = DS_BUF_INIT;
    ds_error err;
    bool ok = sync_plan_text(st, cfg, src, full, &text, &err);
    if (ds_buf_str(&text) != NULL)
        fputs(ds_buf_str(&text), stdout);
    ds_buf_free(&text);
    if (!ok) {
        fprintf(stderr, "duckstore: plan failed: %s\n", err.msg);
        return failure_code(&err);
    }
    return CLI_EXIT_OK;
}

/* Plans one source through the server (GET /api/store/plan/NAME): the
 * same lines, made by the same function on the server's store. */
static int remote_plan_one(const cli_remote *r, const cfg_source *src, bool full)
{
    ds_buf path = DS_BUF_INIT;
    ds_buf_appendf(&path, "/api/store/plan/%s%s", src->name, full ? "?full=true" : "");
    long status = 0;
    ds_error err;
    /* Planning connects to PostgreSQL and asks for an EXPLAIN: bounded by
     * the source's timeouts, not by an answer from memory. */
    json_t *doc =
        ds_buf_str(&path) ? cli_remote_json(r, "GET", ds_buf_str(&path), NULL, 3700L, &status, &err) : NULL;
    if (ds_buf_str(&path) == NULL)
        ds_error_set(&err, DS_ERR_NOMEM, "out of memory");
    ds_buf_free(&path);
    if (doc == NULL) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        return remote_failure_code(&err);
    }
    json_t *lines = json_object_get(doc, "lines");
    size_t i;
    json_t *line;
    json_array_foreach(lines, i, line) printf("%s\n", json_string_value(line) ? json_string_value(line) : "");
    int rc = CLI_EXIT_OK;
    if (status != 200 || !json_is_true(json_object_get(doc, "success"))) {
        if (status == 200)
            fprintf(stderr, "duckstore: plan failed: %s\n", cli_remote_error_text(doc));
        else
            fprintf(stderr, "duckstore: the server did not plan %s (HTTP %ld): %s\n", src->name, status,
                    cli_remote_error_text(doc));
        rc = strcmp(json_text(doc, "error_kind", ""), "config") == 0 ? CLI_EXIT_USAGE : CLI_EXIT_SYNC_ERROR;
    }
    json_decref(doc);
    return rc;
}

static int plan_targets(const cli_globals *g, cli_session *s, const cli_remote *r, bool full);

/* plan and sync --dry-run: the DuckDB file read-only, nothing changed. */
static int run_plan(const cli_globals *g, cli_session *s, bool full)
{
    cli_remote r;
    int server = find_server(g, &s->cfg, &r);
    if (server < 0) {
        cfg_free(&s->cfg);
        return CLI_EXIT_USAGE;
    }
    if (server > 0) { /* the server plans on its own store, read-only as well */
        int rc = plan_targets(g, s, &r, full);
        cli_remote_free(&r);
        return rc;
    }
    const char *path = db_path_of(g, &s->cfg);
    bool exists = access(path, F_OK) == 0;
    /* No file yet: an empty scratch file stands for it (every table is
     * then new), so the plan does not create the file either. */
    char *dir = NULL, *scratch = NULL;
    if (!exists) {
        const char *tmp = getenv("TMPDIR");
        ds_buf b = DS_BUF_INIT;
        ds_buf_appendf(&b, "%s/duckstore-plan-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        dir = ds_buf_take(&b);
        ds_buf_appendf(&b, "%s/empty.duckdb", dir && mkdtemp(dir) ? dir : "");
        scratch = ds_buf_take(&b);
        if (scratch == NULL || scratch[0] != '/') {
            fprintf(stderr, "duckstore: cannot make a scratch directory for the plan: %s\n", strerror(errno));
            free(dir);
            free(scratch);
            cfg_free(&s->cfg);
            return CLI_EXIT_SYNC_ERROR;
        }
    }
    store_settings settings = {
        .memory_limit = s->cfg.store.memory_limit, .threads = s->cfg.store.threads, .read_only = exists};
    ds_error err;
    int rc = CLI_EXIT_OK;
    if (!store_open_ext(exists ? path : scratch, &settings, &s->st, &err)) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        cfg_free(&s->cfg);
        rc = CLI_EXIT_SYNC_ERROR;
    } else {
        if (!exists)
            printf("# %s does not exist yet: the first sync creates it\n", path);
        rc = plan_targets(g, s, NULL, full);
    }
    if (scratch != NULL) { /* the scratch file, its WAL, its directory */
        unlink(scratch);
        ds_buf wal = DS_BUF_INIT;
        ds_buf_appendf(&wal, "%s.wal", scratch);
        if (ds_buf_str(&wal))
            unlink(ds_buf_str(&wal));
        ds_buf_free(&wal);
        if (dir != NULL)
            rmdir(dir);
    }
    free(dir);
    free(scratch);
    return rc;
}

/* r: through a running server, else the session's store. */
static int plan_targets(const cli_globals *g, cli_session *s, const cli_remote *r, bool full)
{
    const cfg_source *targets[CLI_MAX_NAMED];
    size_t n = session_targets(s, targets);
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; i < n; i++)
        rc = worse(rc, r ? remote_plan_one(r, targets[i], full) : plan_one(s->st, &s->cfg, targets[i], full));
    if (n == 0)
        fprintf(stderr, "duckstore: no enabled source in %s\n", g->config_dir);
    printf("# nothing was changed: the DuckDB file was read only, PostgreSQL read in a read-only "
           "transaction\n");
    session_close(s);
    return rc;
}

int cli_cmd_plan(const cli_globals *g, int argc, char **argv)
{
    static const char *const options[] = {"--full", NULL};
    static const cli_args spec = {"plan", "plan [NAME...] [--full]", options, 0, -1};
    const char **names = calloc((size_t)argc + 1, sizeof *names);
    int nnames = 0;
    if (names == NULL || !parse_args(&spec, argc, argv, names, &nnames)) {
        free(names);
        return CLI_EXIT_USAGE;
    }
    cli_session s;
    int rc = session_load(g, names, nnames, 0, &s);
    free(names);
    return rc != CLI_EXIT_OK ? rc : run_plan(g, &s, has_flag(argc, argv, "--full"));
}

/* ---- sync ------------------------------------------------------------------ */

/* Syncs the session's sources one after the other; Ctrl-C stops at the
 * running one and starts no other. */
static int sync_targets(cli_session *s, const cli_remote *r, bool full)
{
    const cfg_source *targets[CLI_MAX_NAMED];
    size_t n = session_targets(s, targets);
    int rc = CLI_EXIT_OK;
    size_t done = 0;
    for (; done < n && !interrupted(); done++)
        rc = worse(rc, r ? remote_sync(r, targets[done], full)
                         : run_one_sync(s->st, &s->cfg, targets[done], full));
    if (interrupted() && done < n) {
        ds_buf rest = DS_BUF_INIT;
        for (size_t i = done; i < n; i++)
            ds_buf_appendf(&rest, "%s%s", i > done ? ", " : "", targets[i]->name);
        fprintf(stderr, "duckstore: %s: not synced: %s (unchanged)\n", signal_label(interrupted()),
                ds_buf_str(&rest) ? ds_buf_str(&rest) : "the other sources");
        ds_buf_free(&rest);
    }
    if (interrupted())
        rc = CLI_EXIT_SIGNAL + interrupted();
    if (n == 0)
        fprintf(stderr, "duckstore: no enabled source in the config\n");
    return rc;
}

int cli_cmd_sync(const cli_globals *g, int argc, char **argv)
{
    static const char *const options[] = {"--full", "--dry-run", NULL};
    static const cli_args spec = {"sync", "sync [NAME...] [--full] [--dry-run]", options, 0, -1};
    const char **names = calloc((size_t)argc + 1, sizeof *names);
    int nnames = 0;
    if (names == NULL || !parse_args(&spec, argc, argv, names, &nnames)) {
        free(names);
        return CLI_EXIT_USAGE;
    }
    cli_session s;
    int rc = session_load(g, names, nnames, 0, &s);
    free(names);
    if (rc != CLI_EXIT_OK)
        return rc;
    bool full = has_flag(argc, argv, "--full");
    if (has_flag(argc, argv, "--dry-run"))
        return run_plan(g, &s, full);
    if (!s.cfg.store.enabled) {
        fprintf(stderr, "duckstore: duckdb.enabled is false in %s/duckdb.yaml; nothing synced\n",
                g->config_dir);
        cfg_free(&s.cfg);
        return CLI_EXIT_OK;
    }
    interrupts_start();
    cli_remote r;
    int server = find_server(g, &s.cfg, &r);
    if (server < 0) {
        interrupts_stop();
        cfg_free(&s.cfg);
        return CLI_EXIT_USAGE;
    }
    if (server == 0 && (rc = session_open_store(g, &s, false, session_publishes(&s))) != CLI_EXIT_OK) {
        interrupts_stop();
        return rc;
    }
    rc = sync_targets(&s, server ? &r : NULL, full);
    interrupts_stop();
    if (server)
        cli_remote_free(&r);
    session_close(&s);
    return rc;
}

/* ---- status ------------------------------------------------------------ */

static json_t *status_document(store *st, const cfg_config *cfg, ds_error *err)
{
    json_t *datasets = json_object();
    for (size_t i = 0; datasets != NULL && i < cfg->n_sources; i++) {
        json_t *s = sync_status_json(st, &cfg->sources[i], err);
        if (s == NULL) {
            json_decref(datasets);
            return NULL;
        }
        if (json_object_set_new(datasets, cfg->sources[i].data_name, s) != 0) {
            json_decref(datasets);
            datasets = NULL;
        }
    }
    json_t *doc =
        json_pack("{s:b,s:b,s:o}", "success", 1, "enabled", cfg->store.enabled, "datasets", datasets);
    if (doc == NULL)
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    return doc;
}

/* A few lines per source: state, rows, last sync, watermarks, problems. */
static void print_status_text(json_t *doc)
{
    const char *key;
    json_t *s;
    json_object_foreach(json_object_get(doc, "datasets"), key, s)
    {
        long long rows = (long long)json_integer_value(json_object_get(s, "rows"));
        printf("%s: %s, %lld %s, last sync %s (%s)%s\n", key, json_text(s, "state", "?"), rows,
               rows_word(rows), json_text(s, "last_sync", "never"), json_text(s, "sync_type", "-"),
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

/* The server's status document: the same document status_document
 * builds, kept in the server's memory. */
static json_t *remote_status(const cli_remote *r, ds_error *err)
{
    long status;
    json_t *doc = cli_remote_json(r, "GET", "/api/store/status", NULL, REMOTE_TIMEOUT_S, &status, err);
    if (doc != NULL && status != 200) {
        ds_error_set(err, DS_ERR_STORE, "the server's status failed (HTTP %ld): %s", status,
                     cli_remote_error_text(doc));
        json_decref(doc);
        doc = NULL;
    }
    return doc;
}

int cli_cmd_status(const cli_globals *g, int argc, char **argv)
{
    static const char *const options[] = {"--json", NULL};
    static const cli_args spec = {"status", "status [--json]", options, 0, 0};
    cli_session s;
    const char *none[1];
    int nnone;
    if (!parse_args(&spec, argc, argv, none, &nnone))
        return CLI_EXIT_USAGE;
    /* Reads the DuckDB file only: the url's password need not be set. */
    int rc = session_load(g, NULL, 0, CFG_LOAD_NO_PG, &s);
    if (rc != CLI_EXIT_OK)
        return rc;
    cli_remote r;
    int server = find_server(g, &s.cfg, &r);
    if (server < 0) {
        cfg_free(&s.cfg);
        return CLI_EXIT_USAGE;
    }
    if (server == 0 && (rc = session_open_store(g, &s, true, false)) != CLI_EXIT_OK)
        return rc;
    ds_error err;
    json_t *doc = server ? remote_status(&r, &err) : status_document(s.st, &s.cfg, &err);
    if (server)
        cli_remote_free(&r);
    session_close(&s);
    if (doc == NULL) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        return server ? remote_failure_code(&err) : CLI_EXIT_SYNC_ERROR;
    }
    if (!has_flag(argc, argv, "--json")) {
        print_status_text(doc);
    } else if (json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12)) == 0) {
        printf("\n");
    } else {
        fprintf(stderr, "duckstore: cannot write the status document (out of memory or output closed)\n");
        rc = CLI_EXIT_SYNC_ERROR;
    }
    json_decref(doc);
    return rc;
}

static int remote_reset(const cli_remote *r, const cfg_source *src)
{
    ds_buf path = DS_BUF_INIT;
    ds_buf_appendf(&path, "/api/store/sync/%s/reset-watermark", src->name);
    long status = 0;
    ds_error err;
    json_t *ans = ds_buf_str(&path)
                      ? cli_remote_json(r, "POST", ds_buf_str(&path), NULL, REMOTE_TIMEOUT_S, &status, &err)
                      : NULL;
    if (ds_buf_str(&path) == NULL)
        ds_error_set(&err, DS_ERR_NOMEM, "out of memory");
    ds_buf_free(&path);
    if (ans == NULL)
        fprintf(stderr, "duckstore: %s\n", err.msg);
    else if (status == 200)
        printf("%s: watermarks cleared; the next sync is a full rebuild\n", src->name);
    else
        fprintf(stderr, "duckstore: the server did not reset the watermarks of %s (HTTP %ld): %s\n",
                src->name, status, cli_remote_error_text(ans));
    json_decref(ans);
    if (ans == NULL)
        return remote_failure_code(&err);
    return status == 200 ? CLI_EXIT_OK : CLI_EXIT_SYNC_ERROR;
}

int cli_cmd_reset_watermark(const cli_globals *g, int argc, char **argv)
{
    static const cli_args spec = {"reset-watermark", "reset-watermark NAME", NULL, 1, 1};
    cli_session s;
    const char *name[1];
    int nname;
    if (!parse_args(&spec, argc, argv, name, &nname))
        return CLI_EXIT_USAGE;
    int rc = session_load(g, name, nname, 0, &s);
    if (rc != CLI_EXIT_OK)
        return rc;
    cli_remote r;
    int server = find_server(g, &s.cfg, &r);
    if (server < 0) {
        cfg_free(&s.cfg);
        return CLI_EXIT_USAGE;
    }
    if (server) {
        rc = remote_reset(&r, s.src);
        cli_remote_free(&r);
        cfg_free(&s.cfg);
        return rc;
    }
    if ((rc = session_open_store(g, &s, false, false)) != CLI_EXIT_OK)
        return rc;
    ds_error err;
    bool logical = s.src->capture == CFG_CAPTURE_LOGICAL;
    bool ok = logical ? capture_reset(s.st, s.src, &err) : sync_reset_watermarks(s.st, s.src, &err);
    if (ok && logical)
        printf("%s: capture position cleared; the next sync drops the slot %s and loads in full\n",
               s.src->name, s.src->slot_name);
    else if (ok)
        printf("%s: watermarks cleared; the next sync is a full rebuild\n", s.src->name);
    else
        fprintf(stderr, "duckstore: %s\n", err.msg);
    session_close(&s);
    return ok ? CLI_EXIT_OK : CLI_EXIT_SYNC_ERROR;
}

/* ---- publish -------------------------------------------------------------- */

static void print_published(const char *name, const char *path, const publish_result *r)
{
    printf("%s: published version %lld to %s: %lld rows, %lld files (%lld written, %lld bytes), %.2f s\n",
           name, (long long)r->version, path, (long long)r->rows, (long long)r->files,
           (long long)r->files_written, (long long)r->bytes_written, r->duration_s);
}

static int remote_publish(const cli_remote *r, const cfg_source *src)
{
    ds_buf path = DS_BUF_INIT;
    ds_buf_appendf(&path, "/api/store/publish/%s", src->name);
    long status = 0;
    ds_error err;
    /* A publish of a large source takes as long as its Parquet takes. */
    json_t *ans = ds_buf_str(&path)
                      ? cli_remote_json(r, "POST", ds_buf_str(&path), NULL, 24 * 3600.0, &status, &err)
                      : NULL;
    if (ds_buf_str(&path) == NULL)
        ds_error_set(&err, DS_ERR_NOMEM, "out of memory");
    ds_buf_free(&path);
    if (ans == NULL)
        fprintf(stderr, "duckstore: %s\n", err.msg);
    else if (status == 200) {
        json_t *p = json_object_get(ans, "publish");
        publish_result res = {.version = json_integer_value(json_object_get(p, "version")),
                              .rows = json_integer_value(json_object_get(p, "rows")),
                              .files = json_integer_value(json_object_get(p, "files")),
                              .files_written = json_integer_value(json_object_get(p, "files_written")),
                              .bytes_written = json_integer_value(json_object_get(p, "bytes_written")),
                              .duration_s = json_number_value(json_object_get(p, "duration_seconds"))};
        print_published(src->name, json_text(p, "path", src->publish_path), &res);
    } else
        fprintf(stderr, "duckstore: the server did not publish %s (HTTP %ld): %s\n", src->name, status,
                cli_remote_error_text(ans));
    json_decref(ans);
    if (ans == NULL)
        return remote_failure_code(&err);
    /* 400: the source's publish: does not fit its data, as a local run says with 2. */
    return status == 200 ? CLI_EXIT_OK : status == 400 ? CLI_EXIT_USAGE : CLI_EXIT_SYNC_ERROR;
}

int cli_cmd_publish(const cli_globals *g, int argc, char **argv)
{
    static const cli_args spec = {"publish", "publish NAME", NULL, 1, 1};
    cli_session s;
    const char *name[1];
    int nname;
    if (!parse_args(&spec, argc, argv, name, &nname))
        return CLI_EXIT_USAGE;
    int rc = session_load(g, name, nname, 0, &s);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (s.src->publish_line == 0) {
        fprintf(stderr, "duckstore: %s:%d: %s has no publish: section; add publish: {path: published/%s}\n",
                s.src->file, s.src->line, s.src->name, s.src->name);
        cfg_free(&s.cfg);
        return CLI_EXIT_USAGE;
    }
    cli_remote r;
    int server = find_server(g, &s.cfg, &r);
    if (server < 0) {
        cfg_free(&s.cfg);
        return CLI_EXIT_USAGE;
    }
    if (server) {
        rc = remote_publish(&r, s.src);
        cli_remote_free(&r);
        cfg_free(&s.cfg);
        return rc;
    }
    if ((rc = session_open_store(g, &s, false, true)) != CLI_EXIT_OK)
        return rc;
    publish_result res;
    ds_error err;
    bool ok = publish_source(s.st, s.src, &res, &err);
    if (ok)
        print_published(s.src->name, s.src->publish_path, &res);
    else
        fprintf(stderr, "duckstore: %s\n", err.msg);
    session_close(&s);
    return ok ? CLI_EXIT_OK : err.code == DS_ERR_CONFIG ? CLI_EXIT_USAGE : CLI_EXIT_SYNC_ERROR;
}

/* ---- check-config -------------------------------------------------------- */

static void print_columns(const cfg_source *src, const cfg_query_plan *plan, const pgsrc_desc *desc)
{
    printf("# %s: %s returns %zu column%s:\n", src->name, plan->label, desc->ncols,
           desc->ncols == 1 ? "" : "s");
    for (size_t c = 0; c < desc->ncols; c++)
        printf("#   %-28s %-28s -> %s%s\n", desc->cols[c].name, desc->cols[c].pg_type, desc->cols[c].type.ddl,
               desc->cols[c].cast == PGSRC_CAST_NONE ? "" : " (read as text)");
}

/* ---- logical capture: slots and the checks before data moves ---------- */

/* The configured logical source whose slot is `slot`, or NULL. */
static const cfg_source *slot_user(const cfg_config *cfg, const char *slot)
{
    for (size_t i = 0; i < cfg->n_sources; i++)
        if (cfg->sources[i].capture == CFG_CAPTURE_LOGICAL && strcmp(cfg->sources[i].slot_name, slot) == 0)
            return &cfg->sources[i];
    return NULL;
}

/* check-config: duckstore's slots on this server that no configured source
 * reads keep WAL forever. *seen holds the names already reported
 * (each as "\nname\n"), so a server that several sources read says each once. */
static void list_orphan_slots(pgsrc_conn *conn, const cfg_config *cfg, ds_buf *seen)
{
    char **names = NULL, **dbs = NULL;
    size_t n = 0;
    ds_error err;
    if (!pub_list_slots_db(conn, &names, &dbs, &n, &err)) {
        printf("# warning: cannot list replication slots: %s\n", err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        ds_buf key = DS_BUF_INIT;
        ds_buf_appendf(&key, "\n%s\n", names[i]);
        bool reported = ds_buf_str(seen) && ds_buf_str(&key) && strstr(ds_buf_str(seen), ds_buf_str(&key));
        if (!reported && slot_user(cfg, names[i]) == NULL) {
            printf("# warning: replication slot \"%s\"%s%s%s is used by no configured source, and the "
                   "server keeps WAL for it; drop it with: duckstore drop-slot %s\n",
                   names[i], dbs[i][0] ? " (database \"" : "", dbs[i], dbs[i][0] ? "\")" : "", names[i]);
            ds_buf_append(seen, ds_buf_str(&key) ? ds_buf_str(&key) : "");
        }
        ds_buf_free(&key);
    }
    pub_free_names(names, n);
    pub_free_names(dbs, n);
}

/* The checks of a logical source beyond sync_check_query: the server, each
 * query's table, the publication the user named. */
typedef struct capture_tables {
    capture_table t[CFG_MAX_QUERIES];
    size_t n;
} capture_tables;

static int check_capture_query(pgsrc_conn *conn, const cfg_source *src, const cfg_query_plan *plan,
                               const pgsrc_desc *desc, capture_tables *tables)
{
    ds_error err;
    if (src->capture != CFG_CAPTURE_LOGICAL)
        return CLI_EXIT_OK;
    capture_table *t = &tables->t[tables->n];
    if (!capture_describe(conn, src, plan, desc, t, &err)) {
        printf("# %s: %s\n", src->name, err.msg);
        return failure_code(&err);
    }
    tables->n++;
    printf("# %s: %s reads table %s, whose changes are applied by its %s", src->name, plan->label,
           t->qualified,
           t->replident == 'f'   ? "whole row (REPLICA IDENTITY FULL)"
           : t->replident == 'i' ? "replica identity index"
                                 : "primary key");
    for (size_t k = 0; t->replident != 'f' && k < t->nkey; k++)
        printf("%s%s", k ? ", " : " (", t->key_cols[k]);
    printf("%s\n", t->replident != 'f' && t->nkey > 0 ? ")" : "");
    return CLI_EXIT_OK;
}

static int check_capture_source(pgsrc_conn *conn, const cfg_source *src, capture_tables *tables)
{
    ds_error err;
    int rc = CLI_EXIT_OK;
    if (src->capture == CFG_CAPTURE_LOGICAL && tables->n == src->n_plans &&
        !capture_check_publication(conn, src, tables->t, tables->n, &err)) {
        printf("# %s: %s\n", src->name, err.msg);
        rc = failure_code(&err);
    }
    for (size_t i = 0; i < tables->n; i++)
        capture_table_free(&tables->t[i]);
    tables->n = 0;
    return rc;
}

/* Describes each query of src (no row is read) and runs the checks a sync
 * runs before reading; returns CLI_EXIT_OK, or the exit code of the worst
 * problem found. */
static int describe_source(const cfg_config *cfg, const cfg_source *src, ds_buf *seen_slots)
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
    pgsrc_session_facts facts;
    if (!pgsrc_read_session_facts(&conn, &facts, &err)) {
        printf("# %s: %s\n", src->name, err.msg);
        pgsrc_disconnect(&conn);
        return CLI_EXIT_SYNC_ERROR;
    }
    if (src->capture == CFG_CAPTURE_LOGICAL && !capture_check_server(&conn, src, &err)) {
        printf("# %s: %s\n", src->name, err.msg);
        rc = failure_code(&err);
    }
    capture_tables tables = {.n = 0};
    for (size_t q = 0; q < src->n_plans; q++) {
        const cfg_query_plan *plan = &src->plans[q];
        pgsrc_desc desc;
        if (!pgsrc_describe(&conn, plan->sql, &desc, &err)) {
            cfg_plan_error_prefix(src, plan, desc.error_at, &err);
            printf("# %s: %s\n", src->name, err.msg);
            rc = worse(rc, failure_code(&err));
            continue;
        }
        print_columns(src, plan, &desc);
        if (!sync_check_query(src, plan, &desc, &warnings, &err)) {
            printf("# %s: %s\n", src->name, err.msg);
            rc = worse(rc, failure_code(&err));
        }
        sync_check_horizon(src, &desc, &facts, &warnings);
        rc = worse(rc, check_capture_query(&conn, src, plan, &desc, &tables));
        pgsrc_desc_free(&desc);
    }
    rc = worse(rc, check_capture_source(&conn, src, &tables));
    for (size_t w = 0; w < warnings.nwarnings; w++)
        printf("# warning: %s\n", warnings.warnings[w]);
    list_orphan_slots(&conn, cfg, seen_slots);
    pgsrc_disconnect(&conn);
    return rc;
}

int cli_cmd_check_config(const cli_globals *g, int argc, char **argv)
{
    static const char *const options[] = {"--offline", NULL};
    static const cli_args spec = {"check-config", "check-config [--offline]", options, 0, 0};
    const char *none[1];
    int nnone;
    if (!parse_args(&spec, argc, argv, none, &nnone))
        return CLI_EXIT_USAGE;
    cfg_config cfg;
    if (!load_config(g, &cfg))
        return CLI_EXIT_USAGE;
    if (cfg.n_sources == 0) {
        fprintf(stderr,
                "duckstore: %s: no source defined; add one <name>_db.yaml per PostgreSQL source (e.g. "
                "monitoring_db.yaml holding monitoring_db: with url and queries)\n",
                g->config_dir);
        cfg_free(&cfg);
        return CLI_EXIT_USAGE;
    }
    cfg_print(stdout, &cfg);
    int rc = CLI_EXIT_OK;
    ds_buf seen_slots = DS_BUF_INIT;
    if (!has_flag(argc, argv, "--offline"))
        for (size_t i = 0; i < cfg.n_sources; i++)
            rc = worse(rc, describe_source(&cfg, &cfg.sources[i], &seen_slots));
    ds_buf_free(&seen_slots);
    printf("# config directory %s: %s\n", g->config_dir, rc == CLI_EXIT_OK ? "OK" : "errors above");
    cfg_free(&cfg);
    return rc;
}

/* ---- drop-slot ------------------------------------------------------------ */

/* Where a slot is: the server of conn, under its name there. */
typedef struct slot_place {
    pgsrc_conn conn;
    char slot[CFG_PG_NAME_CAP];
    char db[CFG_PG_NAME_CAP * 2]; /* the slot's database ("" physical) */
} slot_place;

/* Looks for `name`, else `derived` (the slot of a source of that name), on
 * the server of url; 1 found (place->conn open), 0 not there, -1 a failure
 * said on stderr. */
static int find_slot_at(const char *url, double timeout_s, const char *name, const char *derived,
                        slot_place *place)
{
    ds_error err;
    if (!pgsrc_connect(url, timeout_s, &place->conn, &err)) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        return -1;
    }
    char **names = NULL, **dbs = NULL;
    size_t n = 0;
    if (!pub_list_slots_db(&place->conn, &names, &dbs, &n, &err)) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        pgsrc_disconnect(&place->conn);
        return -1;
    }
    int found = 0;
    const char *wanted[] = {name, derived};
    for (size_t w = 0; !found && w < 2; w++)
        for (size_t i = 0; !found && i < n; i++)
            if (strcmp(names[i], wanted[w]) == 0) {
                snprintf(place->slot, sizeof place->slot, "%s", names[i]);
                snprintf(place->db, sizeof place->db, "%s", dbs[i]);
                found = 1;
            }
    pub_free_names(names, n);
    pub_free_names(dbs, n);
    if (!found)
        pgsrc_disconnect(&place->conn);
    return found;
}

/* Drops duckstore's own publication that went with the slot (same name),
 * unless a configured source still publishes through it. */
static void drop_own_publication(slot_place *place, const cfg_config *cfg)
{
    for (size_t i = 0; i < cfg->n_sources; i++) {
        const cfg_source *src = &cfg->sources[i];
        if (src->capture == CFG_CAPTURE_LOGICAL && strcmp(src->publication_name, place->slot) == 0) {
            printf("kept publication \"%s\": source %s uses it\n", place->slot, src->name);
            return;
        }
    }
    ds_error err;
    char *current = NULL;
    bool exists = false;
    if (!pgsrc_query_value(&place->conn, "SELECT current_database()", &current, &err) ||
        !pub_exists(&place->conn, place->slot, &exists, &err)) {
        free(current);
        fprintf(stderr, "duckstore: publication \"%s\" not dropped: %s\n", place->slot, err.msg);
        return;
    }
    if (!exists && place->db[0] && current != NULL && strcmp(current, place->db) != 0)
        printf("publication \"%s\", if any, is in database \"%s\": DROP PUBLICATION \"%s\" there\n",
               place->slot, place->db, place->slot);
    else if (exists && pub_drop_publication(&place->conn, place->slot, &err))
        printf("dropped publication \"%s\"\n", place->slot);
    else if (exists)
        fprintf(stderr, "duckstore: publication \"%s\" not dropped: %s\n", place->slot, err.msg);
    free(current);
}

int cli_cmd_drop_slot(const cli_globals *g, int argc, char **argv)
{
    static const char usage[] = "usage: duckstore drop-slot NAME [--url URL]\n";
    const char *name = NULL, *url = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--url") == 0 && i + 1 < argc && url == NULL) {
            url = argv[++i];
        } else if (argv[i][0] == '-' || name != NULL) {
            fprintf(stderr, "duckstore drop-slot: %s %s\n%s",
                    argv[i][0] == '-' ? "unknown option or missing value:" : "unexpected argument", argv[i],
                    usage);
            return CLI_EXIT_USAGE;
        } else {
            name = argv[i];
        }
    }
    if (name == NULL) {
        fprintf(stderr, "duckstore drop-slot: missing argument\n%s", usage);
        return CLI_EXIT_USAGE;
    }
    cfg_config cfg;
    if (!load_config(g, &cfg))
        return CLI_EXIT_USAGE;
    char derived[CFG_PG_NAME_CAP];
    cfg_pg_object_name(name, derived);
    const cfg_source *named = cfg_find_source(&cfg, name);
    slot_place place;
    int found = 0;
    if (url != NULL)
        found = find_slot_at(url, 600, name, derived, &place);
    else if (named != NULL)
        found = find_slot_at(named->url, named->query_timeout_s, named->slot_name, named->slot_name, &place);
    /* A source removed from the config: its slot is on one of the servers
     * the others read. */
    bool unreachable = false; /* a server that could not be searched, said on stderr */
    for (size_t i = 0; url == NULL && named == NULL && found <= 0 && i < cfg.n_sources; i++) {
        found = find_slot_at(cfg.sources[i].url, cfg.sources[i].query_timeout_s, name, derived, &place);
        unreachable |= found < 0;
    }
    if (found == 0 && unreachable)
        found = -1;
    if (found <= 0) {
        if (found == 0)
            fprintf(stderr,
                    "duckstore: no replication slot named \"%s\"%s%s%s on %s; duckstore check-config "
                    "lists the slots no source uses\n",
                    name, strcmp(name, derived) ? " or \"" : "", strcmp(name, derived) ? derived : "",
                    strcmp(name, derived) ? "\"" : "",
                    url     ? "that server"
                    : named ? "the server of that source"
                            : "the servers of the configured sources");
        cfg_free(&cfg);
        return found == 0 ? CLI_EXIT_USAGE : CLI_EXIT_SYNC_ERROR;
    }
    ds_error err;
    int rc = CLI_EXIT_OK;
    if (pub_drop_slot(&place.conn, place.slot, &err)) {
        printf("dropped replication slot \"%s\"\n", place.slot);
        drop_own_publication(&place, &cfg);
    } else {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        rc = failure_code(&err);
    }
    pgsrc_disconnect(&place.conn);
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

/* The result as text; false after saying why. */
static bool take_result(duckdb_result *res, cli_result *out)
{
    idx_t ncols = duckdb_column_count(res);
    bool ok = cli_result_init(out, ncols);
    for (idx_t c = 0; ok && c < ncols; c++)
        ok = cli_result_set_name(out, c, duckdb_column_name(res, c));
    for (idx_t r = 0; ok && r < duckdb_row_count(res); r++) {
        ok = cli_result_add_row(out);
        for (idx_t c = 0; ok && c < ncols; c++) {
            bool null = duckdb_value_is_null(res, c, r);
            char *v = null ? NULL : duckdb_value_varchar(res, c, r);
            ok = (null || v != NULL) && cli_result_set(out, c, v);
            duckdb_free(v);
        }
    }
    if (!ok)
        fprintf(stderr, "duckstore: out of memory reading the result\n");
    return ok;
}

/* Every value as text, the way DuckDB casts it to VARCHAR (the row-wise
 * result API prints VARCHAR only, and the server answers VARCHAR as the
 * very text): both ways of running a query print the same. A statement
 * that cannot be wrapped so runs as it is. */
static char *as_text_sql(const char *sql)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "SELECT COLUMNS(*)::VARCHAR FROM (%s)", sql);
    char *as_text = ds_buf_take(&b);
    if (as_text == NULL)
        fprintf(stderr, "duckstore: out of memory\n");
    return as_text;
}

static int print_query_result(const cli_result *res, cli_format format)
{
    if (cli_result_print(res, format, stdout))
        return CLI_EXIT_OK;
    fprintf(stderr, "duckstore: cannot write the result (output closed or full)\n");
    return CLI_EXIT_SYNC_ERROR;
}

/* Runs sql and prints its result. */
static int run_query(duckdb_connection con, const char *sql, cli_format format)
{
    char *as_text = as_text_sql(sql);
    if (as_text == NULL)
        return CLI_EXIT_SYNC_ERROR;
    duckdb_result res;
    if (duckdb_query(con, as_text, &res) == DuckDBError) {
        duckdb_destroy_result(&res);
        duckdb_query(con, sql, &res);
    }
    free(as_text);
    int rc = CLI_EXIT_SYNC_ERROR;
    cli_result text;
    memset(&text, 0, sizeof text);
    if (duckdb_result_error(&res) != NULL)
        fprintf(stderr, "duckstore: %s\n", duckdb_result_error(&res));
    else if (take_result(&res, &text))
        rc = print_query_result(&text, format);
    cli_result_free(&text);
    duckdb_destroy_result(&res);
    return rc;
}

/* A value of the server's JSON answer as text: VARCHAR (all of them when
 * the query could be wrapped) as it is, anything else as its JSON. */
static bool remote_cell(cli_result *res, size_t col, json_t *v)
{
    if (json_is_null(v) || json_is_string(v))
        return cli_result_set(res, col, json_string_value(v));
    char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    bool ok = text != NULL && cli_result_set(res, col, text);
    free(text);
    return ok;
}

static bool remote_result(json_t *doc, cli_result *res)
{
    json_t *cols = json_object_get(doc, "columns"), *rows = json_object_get(doc, "rows");
    bool ok = cli_result_init(res, json_array_size(cols));
    for (size_t c = 0; ok && c < res->ncols; c++) {
        const char *name = json_string_value(json_object_get(json_array_get(cols, c), "name"));
        ok = cli_result_set_name(res, c, name ? name : "?");
    }
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        ok = ok && cli_result_add_row(res);
        for (size_t c = 0; ok && c < res->ncols; c++)
            ok = remote_cell(res, c, json_array_get(row, c));
    }
    if (!ok)
        fprintf(stderr, "duckstore: out of memory reading the result\n");
    return ok;
}

/* POST /api/store/query with sql; 429 (the server's queries are all busy)
 * is retried. NULL with err set. */
static json_t *remote_query_once(const cli_remote *r, const char *sql, long *status, ds_error *err)
{
    json_t *body = json_pack("{s:s,s:s}", "sql", sql, "format", "json");
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    *status = 0;
    if (text == NULL) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory (or the SQL is not UTF-8)");
        return NULL;
    }
    json_t *doc = NULL;
    /* The server stops a query at its timeout_ms (30 s by default); this is a bound above that. */
    for (int tries = 0; tries < 60; tries++) {
        doc = cli_remote_json(r, "POST", "/api/store/query", text, 3700L, status, err);
        if (doc == NULL || *status != 429)
            break;
        json_decref(doc);
        doc = NULL;
        sleep(1);
    }
    free(text);
    if (doc == NULL && *status == 429)
        ds_error_set(err, DS_ERR_BUSY,
                     "the server stayed busy with other queries for a minute (429); retry later");
    return doc;
}

/* The query through the server: its answer is read as JSON and printed by
 * the same code as a result read from DuckDB. */
static int remote_query(const cli_remote *r, const char *sql, cli_format format)
{
    char *as_text = as_text_sql(sql);
    if (as_text == NULL)
        return CLI_EXIT_SYNC_ERROR;
    long status;
    ds_error err;
    json_t *doc = remote_query_once(r, as_text, &status, &err);
    free(as_text);
    if (doc != NULL && status == 400) {
        json_decref(doc);
        doc = remote_query_once(r, sql, &status, &err);
    }
    if (doc == NULL) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        return remote_failure_code(&err);
    }
    int rc = CLI_EXIT_SYNC_ERROR;
    cli_result res;
    memset(&res, 0, sizeof res);
    if (status != 200) {
        const char *why = cli_remote_error_text(doc);
        fprintf(stderr, "duckstore: %s\n", why);
        /* A refused write is a usage error, as when the file is read directly. */
        if (status == 400 && (strncmp(why, "only reads", 10) == 0 || strncmp(why, "exactly one", 11) == 0 ||
                              strstr(why, "reaches outside") != NULL))
            rc = CLI_EXIT_USAGE;
    } else if (remote_result(doc, &res)) {
        rc = print_query_result(&res, format);
        if (rc == CLI_EXIT_OK && json_is_true(json_object_get(doc, "truncated")))
            fprintf(stderr,
                    "duckstore: the result was cut at %zu rows by the server (duckdb.query_max_rows); "
                    "add a LIMIT or an aggregate, or stop duckstore serve to read every row\n",
                    res.nrows);
    }
    cli_result_free(&res);
    json_decref(doc);
    return rc;
}

/* Kinds of statement that read: every other is refused before it runs
 * (the file is attached read-only as well, so none could change it). */
static bool reading_kind(duckdb_statement_type type)
{
    switch (type) {
    case DUCKDB_STATEMENT_TYPE_SELECT:
    case DUCKDB_STATEMENT_TYPE_EXPLAIN:
    case DUCKDB_STATEMENT_TYPE_PRAGMA:
    case DUCKDB_STATEMENT_TYPE_CALL:
    case DUCKDB_STATEMENT_TYPE_SET:
    case DUCKDB_STATEMENT_TYPE_VARIABLE_SET:
    case DUCKDB_STATEMENT_TYPE_TRANSACTION:
        return true;
    default:
        return false;
    }
}

/* False (after saying so) when a statement of sql would write: its kind,
 * or DuckDB's refusal of it for the read-only file. Statements DuckDB
 * cannot prepare for other reasons are left to run_query to report. */
static bool only_reads(duckdb_connection con, const char *sql)
{
    duckdb_extracted_statements stmts = NULL;
    idx_t n = duckdb_extract_statements(con, sql, &stmts);
    bool ok = true;
    for (idx_t i = 0; ok && i < n; i++) {
        duckdb_prepared_statement prep = NULL;
        duckdb_state st = duckdb_prepare_extracted_statement(con, stmts, i, &prep);
        const char *failure = st == DuckDBError ? duckdb_prepare_error(prep) : NULL;
        if (st == DuckDBSuccess)
            ok = reading_kind(duckdb_prepared_statement_type(prep));
        else
            ok = failure == NULL ||
                 (strstr(failure, "read-only") == NULL && strstr(failure, "read only") == NULL);
        duckdb_destroy_prepare(&prep);
    }
    duckdb_destroy_extracted(&stmts);
    if (!ok)
        fprintf(stderr, "duckstore: duckstore query is read-only: it runs statements that read (SELECT, "
                        "DESCRIBE, EXPLAIN, PRAGMA ...); the DuckDB file is changed only by syncs "
                        "(duckstore sync, reset-watermark)\n");
    return ok;
}

int cli_cmd_query(const cli_globals *g, int argc, char **argv)
{
    static const char usage[] = "query [--format table|tsv|csv|json] SQL";
    /* A table for a person at a terminal; tab-separated for a pipe. */
    cli_format format = isatty(STDOUT_FILENO) ? CLI_FORMAT_TABLE : CLI_FORMAT_TSV;
    const char *sql = NULL;
    for (int i = 0; i < argc; i++) {
        bool format_arg = strcmp(argv[i], "--format") == 0 && i + 1 < argc;
        if (format_arg && !cli_format_parse(argv[i + 1], &format)) {
            fprintf(stderr, "duckstore query: --format takes table, tsv, csv or json, not \"%s\"\n",
                    argv[i + 1]);
            return CLI_EXIT_USAGE;
        }
        if (format_arg) {
            i++;
        } else if (argv[i][0] == '-' || sql != NULL) {
            fprintf(stderr, "duckstore query: %s %s (see duckstore --help)\nusage: duckstore %s\n",
                    argv[i][0] == '-' ? "unknown option" : "unexpected argument", argv[i], usage);
            return CLI_EXIT_USAGE;
        } else {
            sql = argv[i];
        }
    }
    if (sql == NULL) {
        fprintf(stderr, "usage: duckstore %s\n", usage);
        return CLI_EXIT_USAGE;
    }
    /* Never connects to PostgreSQL: the url's password need not be set.
     * The file is attached read-only, and left as it is. */
    cfg_config cfg;
    if (!load_config_flags(g, CFG_LOAD_NO_PG, &cfg))
        return CLI_EXIT_USAGE;
    cli_remote r;
    int server = find_server(g, &cfg, &r);
    if (server != 0) {
        int rc = server > 0 ? remote_query(&r, sql, format) : CLI_EXIT_USAGE;
        if (server > 0)
            cli_remote_free(&r);
        cfg_free(&cfg);
        return rc;
    }
    store_settings settings = {
        .memory_limit = cfg.store.memory_limit, .threads = cfg.store.threads, .read_only = true};
    store *st = NULL;
    ds_error err;
    duckdb_connection con;
    int rc = CLI_EXIT_SYNC_ERROR;
    if (!store_open_ext(db_path_of(g, &cfg), &settings, &st, &err) || !store_connect(st, &con, &err)) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
    } else if (!store_read_functions_use(con, &err)) {
        fprintf(stderr, "duckstore: %s\n", err.msg);
        duckdb_disconnect(&con);
    } else {
        rc = only_reads(con, sql) ? run_query(con, sql, format) : CLI_EXIT_USAGE;
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
