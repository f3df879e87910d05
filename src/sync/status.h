/* Reading, recording and saving a source's persisted status document
 * inside the sync's own DuckDB transaction. Internal to the sync engine;
 * the public half (states, the served document, times) is in sync.h. */
#ifndef DS_SYNC_STATUS_H
#define DS_SYNC_STATUS_H

#include "sync/sync.h"

/* The persisted document, or an empty object. Never NULL but when out of memory. */
json_t *status_load(store *st, duckdb_connection duck, const char *source);
bool status_save(store *st, duckdb_connection duck, const char *source, json_t *doc, ds_error *err);

/* A successful sync: state ready, counts, times, tables. dataset_id_unique
 * is recorded for split sources only (split true). */
void status_record_success(json_t *doc, const sync_report *report, bool split, bool ids_unique);

/* A failed sync: state error with the reason; the rest is kept. */
void status_record_failure(json_t *doc, const char *reason, double duration_s, const sync_report *report);

/* The persisted document with the record the file does not hold yet (a
 * quiet sync's, an unsaved failure's) laid over it: what a sync records
 * onto, so that its save carries the earlier record too. */
json_t *status_load_current(store *st, duckdb_connection duck, const char *source);

/* A quiet sync (incremental, nothing changed) writes nothing to the file:
 * its record is kept in memory (served like a saved one) and saved by the
 * next write of the source, at the latest STATUS_QUIET_SAVE_S after the
 * last saved attempt, or when the store is closed (status_save_quiet, the
 * store's close hook). */
#define STATUS_QUIET_SAVE_S 600
void status_keep_quiet(store *st, const char *source, const json_t *doc);
/* Whether a quiet sync writes its record anyway (saved: the persisted
 * document): it does not say ready (a failure kept the watermarks), or its
 * last saved attempt is STATUS_QUIET_SAVE_S old. */
bool status_save_due(const json_t *saved);
void status_save_quiet(store *st);

/* A failure record the DuckDB file could not save (why: the store's error):
 * kept in memory for this file and source, and laid over the persisted
 * document by sync_status_json, so the status and the metrics never say
 * ready after it. status_forget_unsaved: a record was saved. */
void status_keep_unsaved(store *st, const char *source, const json_t *doc, const char *why);
void status_forget_unsaved(store *st, const char *source);

#endif
