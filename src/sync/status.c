/* The status document of a source, as the runbook's section 3 shows it:
 * the persisted result of the last sync, the watermarks and the config. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sync/sync.h"

static void set_default(json_t *doc, const char *key, json_t *value)
{
    if (json_object_get(doc, key) == NULL)
        json_object_set_new(doc, key, value);
    else
        json_decref(value);
}

/* How incremental batches are applied, and when the next full refresh is
 * due (docs/incremental.md). */
static void add_incremental_settings(json_t *doc, const cfg_source *src)
{
    bool upsert =
        src->unique_key_dataset.n > 0 || src->unique_key_results.n > 0 || src->unique_key_data.n > 0;
    json_object_set_new(doc, "mode", json_string(upsert ? "upsert" : "append"));
    json_object_set_new(doc, "lookback", src->lookback ? json_string(src->lookback) : json_null());
    /* Applies to timestamp columns only; the tables' commit_horizon says
     * whether a sync took one. */
    json_object_set_new(
        doc, "commit_horizon",
        json_boolean(src->incremental_column != NULL && src->commit_horizon != CFG_HORIZON_OFF));
    json_object_set_new(doc, "full_refresh_interval_minutes",
                        src->full_refresh_interval_minutes > 0 ? json_real(src->full_refresh_interval_minutes)
                                                               : json_null());
    json_t *last_full = json_object_get(doc, "last_full");
    json_t *next = json_null();
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (src->full_refresh_interval_minutes > 0 && json_is_string(last_full) &&
        strptime(json_string_value(last_full), "%Y-%m-%dT%H:%M:%S", &tm) != NULL) {
        time_t due = timegm(&tm) + (time_t)(src->full_refresh_interval_minutes * 60.0);
        struct tm due_tm;
        gmtime_r(&due, &due_tm);
        char text[40];
        strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S+00:00", &due_tm);
        next = json_string(text);
    }
    json_object_set_new(doc, "next_full_refresh", next);
}

json_t *sync_status_json(store *st, const cfg_source *src, ds_error *err)
{
    duckdb_connection con;
    if (!store_borrow(st, &con, err))
        return NULL;
    char *text = NULL;
    if (!store_get_status(con, src->name, &text, err)) {
        store_release(st, &con);
        return NULL;
    }
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    if (!json_is_object(doc)) {
        json_decref(doc);
        doc = json_object();
        json_object_set_new(doc, "state", json_string("not_synced"));
    }
    set_default(doc, "rows", json_integer(0));
    set_default(doc, "sync_type", json_null());
    set_default(doc, "last_incremental", json_null());
    set_default(doc, "incremental_rows", json_integer(0));
    set_default(doc, "truncated", json_false());
    set_default(doc, "error", json_null());
    set_default(doc, "warnings", json_array());
    set_default(doc, "last_sync", json_null());
    set_default(doc, "duration_seconds", json_null());

    json_t *watermarks = json_object();
    char names[2][160];
    size_t n = sync_table_names(src, names);
    for (size_t i = 0; i < n; i++) {
        store_table_meta meta;
        if (!store_get_table_meta(con, names[i], &meta, err)) {
            json_decref(watermarks);
            json_decref(doc);
            store_release(st, &con);
            return NULL;
        }
        json_object_set_new(watermarks, names[i], meta.watermark ? json_string(meta.watermark) : json_null());
        store_table_meta_free(&meta);
    }
    store_release(st, &con);
    json_object_set_new(doc, "watermarks", watermarks);
    double interval = src->refresh_interval_minutes;
    json_object_set_new(doc, "refresh_interval_minutes",
                        interval == (double)(long long)interval ? json_integer((json_int_t)interval)
                                                                : json_real(interval));
    json_object_set_new(doc, "incremental_column",
                        src->incremental_column ? json_string(src->incremental_column) : json_null());
    add_incremental_settings(doc, src);
    return doc;
}
