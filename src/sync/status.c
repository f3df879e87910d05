/* The status document of a source, as the runbook's section 3 shows it:
 * the one place that knows its fields, states, defaults and time format.
 * A sync records its result here; the CLI and the server read it here. */
#include "sync/status.h"

#include "cdc/capture.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_text.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "store/store.h"

static const char *const state_names[SYNC_STATE_COUNT] = {"not_synced", "syncing", "ready", "error"};

const char *sync_state_name(sync_state state)
{
    return (unsigned)state < SYNC_STATE_COUNT ? state_names[state] : state_names[0];
}

sync_state sync_status_state(const json_t *doc)
{
    const char *text = json_string_value(json_object_get(doc, "state"));
    for (int i = 0; text != NULL && i < SYNC_STATE_COUNT; i++)
        if (strcmp(text, state_names[i]) == 0)
            return (sync_state)i;
    return SYNC_STATE_NOT_SYNCED;
}

#define ISO_FORMAT "%Y-%m-%dT%H:%M:%S+00:00"

static void format_iso(time_t t, char *out, size_t cap)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, ISO_FORMAT, &tm);
}

void sync_now_iso(char *out, size_t cap)
{
    format_iso(time(NULL), out, cap);
}

bool sync_parse_iso(const char *text, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (text == NULL || strptime(text, "%Y-%m-%dT%H:%M:%S", &tm) == NULL)
        return false;
    *out = timegm(&tm);
    return true;
}

static void set(json_t *doc, const char *key, json_t *value)
{
    json_object_set_new(doc, key, value);
}

static json_t *string_or_null(const char *s)
{
    return s && s[0] ? ds_json_text(s) : json_null();
}

json_t *status_load(store *st, duckdb_connection duck, const char *source)
{
    char *text = NULL;
    json_t *doc = NULL;
    if (store_get_status(st, duck, source, &text, NULL) && text)
        doc = json_loads(text, 0, NULL);
    free(text);
    if (json_is_object(doc))
        return doc;
    json_decref(doc);
    return json_object();
}

bool status_save(store *st, duckdb_connection duck, const char *source, json_t *doc, ds_error *err)
{
    if (doc == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    char *text = json_dumps(doc, JSON_COMPACT);
    bool ok = text ? store_put_status(st, duck, source, text, err)
                   : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    free(text);
    return ok;
}

static json_t *warnings_json(const sync_report *report)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < report->nwarnings; i++)
        json_array_append_new(arr, ds_json_text(report->warnings[i]));
    return arr;
}

static json_t *table_json(const sync_table_report *t)
{
    json_t *doc = json_object();
    set(doc, "rows", json_integer(t->rows_total));
    set(doc, "rows_loaded", json_integer(t->rows_loaded));
    set(doc, "mode", json_string(t->incremental ? "incremental" : "full"));
    set(doc, "truncated", json_boolean(t->truncated));
    set(doc, "apply", json_string(t->upsert ? "upsert" : "append"));
    set(doc, "rows_inserted", json_integer(t->rows_inserted));
    set(doc, "rows_updated", json_integer(t->rows_updated));
    set(doc, "commit_horizon", string_or_null(t->horizon));
    set(doc, "horizon_held_by", string_or_null(t->horizon_holder));
    return doc;
}

void status_record_success(json_t *doc, const sync_report *report, bool split, bool ids_unique)
{
    char now[SYNC_TIME_CAP];
    sync_now_iso(now, sizeof now);
    set(doc, "state", json_string(sync_state_name(SYNC_STATE_READY)));
    set(doc, "rows", json_integer(report->rows));
    if (split)
        set(doc, "dataset_id_unique", json_boolean(ids_unique));
    set(doc, "sync_type", json_string(report->incremental ? "incremental" : "full"));
    /* last_sync: the last successful sync, as AXIS has it; last_attempt:
     * the last sync of either outcome. */
    set(doc, "last_sync", json_string(now));
    set(doc, "last_attempt", json_string(now));
    int64_t inserted = 0, updated = 0;
    json_t *tables = json_object();
    for (size_t i = 0; i < report->ntables; i++) {
        inserted += report->tables[i].rows_inserted;
        updated += report->tables[i].rows_updated;
        set(tables, report->tables[i].table, table_json(&report->tables[i]));
    }
    if (report->incremental) {
        set(doc, "last_incremental", json_string(now));
        set(doc, "incremental_rows", json_integer(report->rows_added));
        set(doc, "incremental_inserted", json_integer(inserted));
        set(doc, "incremental_updated", json_integer(updated));
    } else {
        set(doc, "last_full", json_string(now));
    }
    set(doc, "truncated", json_boolean(report->truncated));
    set(doc, "error", json_null());
    set(doc, "warnings", warnings_json(report));
    set(doc, "duration_seconds", json_real(report->duration_s));
    set(doc, "tables", tables);
}

void status_record_failure(json_t *doc, const char *reason, double duration_s, const sync_report *report)
{
    char now[SYNC_TIME_CAP];
    sync_now_iso(now, sizeof now);
    set(doc, "state", json_string(sync_state_name(SYNC_STATE_ERROR)));
    set(doc, "error", ds_json_text(reason));
    set(doc, "last_error", json_string(now));
    set(doc, "last_attempt", json_string(now));
    set(doc, "duration_seconds", json_real(duration_s));
    set(doc, "warnings", warnings_json(report));
}

/* Records the file does not hold yet, per file and source (a process may
 * have several stores open): a failure it could not save, or a quiet sync
 * (one that changed nothing, docs/incremental.md) whose record waits for
 * the next write. Entries are few: one per source at most, removed by the
 * next saved record. */
typedef struct unsaved_record {
    struct unsaved_record *next;
    char *path, *source;
    json_t *fields;
    bool quiet; /* holds a quiet sync's record: saved at the store's close */
} unsaved_record;

static pthread_mutex_t unsaved_lock = PTHREAD_MUTEX_INITIALIZER;
static unsaved_record *unsaved_list;

/* The fields a failure record sets (status_record_failure). */
static const char *const failure_fields[] = {"state",        "error",    "last_error",
                                             "last_attempt", "warnings", "duration_seconds"};
/* The fields an incremental success sets (status_record_success). */
static const char *const success_fields[] = {"state",
                                             "rows",
                                             "dataset_id_unique",
                                             "sync_type",
                                             "last_sync",
                                             "last_attempt",
                                             "last_incremental",
                                             "incremental_rows",
                                             "incremental_inserted",
                                             "incremental_updated",
                                             "truncated",
                                             "error",
                                             "warnings",
                                             "duration_seconds",
                                             "tables"};

#define NFIELDS(a) (sizeof(a) / sizeof(a)[0])

/* The entry of (st, source) and the link pointing at it; lock held. */
static unsaved_record **unsaved_find(store *st, const char *source)
{
    unsaved_record **p = &unsaved_list;
    for (; *p != NULL; p = &(*p)->next)
        if (strcmp((*p)->path, store_path(st)) == 0 && strcmp((*p)->source, source) == 0)
            break;
    return p;
}

static void unsaved_free(unsaved_record *u)
{
    free(u->path);
    free(u->source);
    json_decref(u->fields);
    free(u);
}

void status_forget_unsaved(store *st, const char *source)
{
    pthread_mutex_lock(&unsaved_lock);
    unsaved_record **p = unsaved_find(st, source);
    unsaved_record *u = *p;
    if (u != NULL)
        *p = u->next;
    pthread_mutex_unlock(&unsaved_lock);
    if (u != NULL)
        unsaved_free(u);
}

/* Lays fields of doc over the entry of (st, source), made when missing:
 * a later record's fields replace an earlier one's. */
static void unsaved_merge(store *st, const char *source, const json_t *doc, const char *const *fields,
                          size_t nfields, const char *why, bool quiet)
{
    json_t *add = json_object();
    if (add == NULL)
        return;
    for (size_t i = 0; i < nfields; i++) {
        json_t *v = json_object_get(doc, fields[i]);
        if (v != NULL)
            json_object_set_new(add, fields[i], json_deep_copy(v));
    }
    pthread_mutex_lock(&unsaved_lock);
    unsaved_record *u = *unsaved_find(st, source);
    if (u == NULL && (u = calloc(1, sizeof *u)) != NULL) {
        u->path = strdup(store_path(st));
        u->source = strdup(source);
        u->fields = json_object();
        if (u->path == NULL || u->source == NULL || u->fields == NULL) {
            unsaved_free(u);
            u = NULL;
        } else {
            u->next = unsaved_list;
            unsaved_list = u;
        }
    }
    if (u != NULL) {
        json_object_update(u->fields, add);
        if (why != NULL)
            set(u->fields, "status_save_error", ds_json_text(why));
        else
            json_object_del(u->fields, "status_save_error");
        u->quiet = quiet;
    }
    pthread_mutex_unlock(&unsaved_lock);
    json_decref(add);
}

void status_keep_unsaved(store *st, const char *source, const json_t *doc, const char *why)
{
    unsaved_merge(st, source, doc, failure_fields, NFIELDS(failure_fields), why, false);
}

void status_keep_quiet(store *st, const char *source, const json_t *doc)
{
    unsaved_merge(st, source, doc, success_fields, NFIELDS(success_fields), NULL, true);
    store_set_close_hook(st, status_save_quiet);
}

/* Lays the record the file does not hold over its persisted document;
 * with_error: with status_save_error (the served document). */
static void overlay_unsaved(store *st, const char *source, json_t *doc, bool with_error)
{
    pthread_mutex_lock(&unsaved_lock);
    unsaved_record *u = *unsaved_find(st, source);
    if (u != NULL)
        json_object_update(doc, u->fields);
    pthread_mutex_unlock(&unsaved_lock);
    if (!with_error)
        json_object_del(doc, "status_save_error");
}

json_t *status_load_current(store *st, duckdb_connection duck, const char *source)
{
    json_t *doc = status_load(st, duck, source);
    overlay_unsaved(st, source, doc, false);
    return doc;
}

bool status_save_due(const json_t *saved)
{
    time_t at;
    const char *text = json_string_value(json_object_get(saved, "last_attempt"));
    return sync_status_state(saved) != SYNC_STATE_READY || !sync_parse_iso(text, &at) ||
           time(NULL) - at >= STATUS_QUIET_SAVE_S;
}

/* The next quiet source of st's file, copied out (lock released), or NULL. */
static char *next_quiet(store *st, char **seen, size_t nseen)
{
    char *name = NULL;
    pthread_mutex_lock(&unsaved_lock);
    for (unsaved_record *u = unsaved_list; u != NULL && name == NULL; u = u->next) {
        bool done = false;
        for (size_t i = 0; i < nseen; i++)
            done |= strcmp(seen[i], u->source) == 0;
        if (u->quiet && !done && strcmp(u->path, store_path(st)) == 0)
            name = strdup(u->source);
    }
    pthread_mutex_unlock(&unsaved_lock);
    return name;
}

void status_save_quiet(store *st)
{
    duckdb_connection duck;
    ds_error err;
    if (!store_connect(st, &duck, &err)) {
        ds_log_warn("the status of quiet syncs is not saved: %s", err.msg);
        return;
    }
    char *seen[64];
    size_t nseen = 0;
    char *source;
    while (nseen < sizeof seen / sizeof seen[0] && (source = next_quiet(st, seen, nseen)) != NULL) {
        seen[nseen++] = source;
        store_commit_lock(st);
        json_t *doc = status_load_current(st, duck, source);
        bool ok = store_exec(duck, "BEGIN TRANSACTION", &err) && status_save(st, duck, source, doc, &err) &&
                  store_exec(duck, "COMMIT", &err);
        if (ok) {
            status_forget_unsaved(st, source);
        } else {
            store_exec(duck, "ROLLBACK", NULL);
            ds_log_warn("%s: the status of its last sync is not saved: %s", source, err.msg);
        }
        store_commit_unlock(st);
        json_decref(doc);
    }
    for (size_t i = 0; i < nseen; i++)
        free(seen[i]);
    duckdb_disconnect(&duck);
}

json_t *sync_status_unreadable(const ds_error *err)
{
    json_t *doc = json_object();
    set(doc, "state", json_string(sync_state_name(SYNC_STATE_ERROR)));
    set(doc, "error", ds_json_text(err->msg));
    return doc;
}

void sync_status_overlay_syncing(json_t *doc, const cfg_source *src, const sync_progress *progress,
                                 const char *started_at, bool full)
{
    set(doc, "state", json_string(sync_state_name(SYNC_STATE_SYNCING)));
    json_t *p = json_object();
    set(p, "phase", json_string(sync_phase_name((sync_phase)atomic_load(&progress->phase))));
    set(p, "rows_read", json_integer((json_int_t)atomic_load(&progress->rows)));
    set(p, "bytes_read", json_integer((json_int_t)atomic_load(&progress->bytes)));
    set(p, "started_at", json_string(started_at));
    set(p, "full", json_boolean(full));
    /* In the order of the source's queries, as a sync reads them. */
    json_t *tables = json_object();
    for (size_t i = 0; src != NULL && i < src->n_plans && i < CFG_MAX_QUERIES; i++) {
        json_t *t = json_object();
        set(t, "rows_read", json_integer((json_int_t)atomic_load(&progress->table_rows[i])));
        set(t, "bytes_read", json_integer((json_int_t)atomic_load(&progress->table_bytes[i])));
        set(tables, src->plans[i].table, t);
    }
    set(p, "tables", tables);
    set(doc, "progress", p);
}

static void set_default(json_t *doc, const char *key, json_t *value)
{
    if (json_object_get(doc, key) == NULL)
        set(doc, key, value);
    else
        json_decref(value);
}

static void add_defaults(json_t *doc)
{
    set_default(doc, "rows", json_integer(0));
    set_default(doc, "sync_type", json_null());
    set_default(doc, "last_incremental", json_null());
    set_default(doc, "incremental_rows", json_integer(0));
    set_default(doc, "truncated", json_false());
    set_default(doc, "error", json_null());
    set_default(doc, "warnings", json_array());
    set_default(doc, "last_sync", json_null());
    set_default(doc, "last_attempt", json_null());
    set_default(doc, "duration_seconds", json_null());
}

/* How incremental batches are applied, and when the next full refresh is
 * due (docs/incremental.md). */
static void add_incremental_settings(json_t *doc, const cfg_source *src)
{
    bool upsert = false;
    for (size_t i = 0; i < src->n_plans; i++)
        upsert |= src->plans[i].key->n > 0;
    set(doc, "mode", json_string(upsert ? "upsert" : "append"));
    set(doc, "lookback", src->lookback ? json_string(src->lookback) : json_null());
    /* Applies to timestamp columns only; the tables' commit_horizon says
     * whether a sync took one. */
    set(doc, "commit_horizon",
        json_boolean(src->incremental_column != NULL && src->commit_horizon != CFG_HORIZON_OFF));
    double every = src->full_refresh_interval_minutes;
    set(doc, "full_refresh_interval_minutes", every > 0 ? json_real(every) : json_null());
    time_t last_full;
    json_t *next = json_null();
    if (every > 0 && sync_parse_iso(json_string_value(json_object_get(doc, "last_full")), &last_full)) {
        char text[SYNC_TIME_CAP];
        format_iso(last_full + (time_t)(every * 60.0), text, sizeof text);
        next = json_string(text);
    }
    set(doc, "next_full_refresh", next);
}

/* {"<table>": watermark or null} for each table of the source. */
static json_t *watermarks_json(store *st, duckdb_connection duck, const cfg_source *src, ds_error *err)
{
    json_t *watermarks = json_object();
    for (size_t i = 0; i < src->n_plans; i++) {
        store_table_meta meta;
        if (!store_get_table_meta(st, duck, src->plans[i].table, &meta, err)) {
            json_decref(watermarks);
            return NULL;
        }
        set(watermarks, src->plans[i].table, meta.watermark ? json_string(meta.watermark) : json_null());
        store_table_meta_free(&meta);
    }
    return watermarks;
}

json_t *sync_status_json(store *st, const cfg_source *src, ds_error *err)
{
    duckdb_connection duck;
    if (!store_borrow(st, &duck, err))
        return NULL;
    char *text = NULL;
    json_t *doc = NULL, *watermarks = NULL;
    if (store_get_status(st, duck, src->name, &text, err)) {
        doc = text ? json_loads(text, 0, NULL) : NULL;
        if (!json_is_object(doc)) {
            json_decref(doc);
            doc = json_object();
            set(doc, "state", json_string(sync_state_name(SYNC_STATE_NOT_SYNCED)));
        }
        watermarks = watermarks_json(st, duck, src, err);
    }
    free(text);
    store_release(st, &duck);
    if (watermarks == NULL) {
        json_decref(doc);
        return NULL;
    }
    overlay_unsaved(st, src->name, doc, true);
    add_defaults(doc);
    set(doc, "watermarks", watermarks);
    double interval = src->refresh_interval_minutes;
    set(doc, "refresh_interval_minutes",
        interval == (double)(long long)interval ? json_integer((json_int_t)interval) : json_real(interval));
    set(doc, "incremental_column",
        src->incremental_column ? json_string(src->incremental_column) : json_null());
    add_incremental_settings(doc, src);
    if (src->capture == CFG_CAPTURE_LOGICAL)
        capture_status_add(st, src, NULL, doc);
    return doc;
}
