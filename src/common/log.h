/* Logging to stderr: one line per event, ISO 8601 UTC timestamp and level,
 * as text (the default) or as one JSON object per line for log shippers
 * (--log-format json, log_format: json). Callers never pass secrets;
 * connection strings go through cfg_mask_url() first. */
#ifndef DS_COMMON_LOG_H
#define DS_COMMON_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum ds_log_level { DS_LOG_DEBUG, DS_LOG_INFO, DS_LOG_WARN, DS_LOG_ERROR } ds_log_level;
typedef enum ds_log_format { DS_LOG_FORMAT_TEXT, DS_LOG_FORMAT_JSON } ds_log_format;

void ds_log_set_level(ds_log_level level);
/* Whether a line of this level is written: skip building one that is not. */
bool ds_log_enabled(ds_log_level level);

/* --log-format: set once at start, before any thread logs; it wins over
 * the config's log_format, which ds_log_config_format applies otherwise. */
void ds_log_set_format(ds_log_format format);
void ds_log_config_format(ds_log_format format);
ds_log_format ds_log_get_format(void);
/* "text" or "json"; false for anything else. */
bool ds_log_parse_format(const char *text, ds_log_format *out);
const char *ds_log_format_name(ds_log_format format);

/* A line without structure: in JSON its source, table and event are
 * null and "message" holds the text. */
void ds_log(ds_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define ds_log_debug(...) ds_log(DS_LOG_DEBUG, __VA_ARGS__)
#define ds_log_info(...) ds_log(DS_LOG_INFO, __VA_ARGS__)
#define ds_log_warn(...) ds_log(DS_LOG_WARN, __VA_ARGS__)
#define ds_log_error(...) ds_log(DS_LOG_ERROR, __VA_ARGS__)

/* One value of an event's "fields" (JSON only: the text format shows the
 * message alone). A string field whose value is NULL is left out. */
typedef enum ds_log_field_kind { DS_LOG_STR, DS_LOG_INT, DS_LOG_REAL, DS_LOG_BOOL } ds_log_field_kind;
typedef struct ds_log_field {
    const char *key;
    ds_log_field_kind kind;
    const char *s;
    long long i;
    double d;
} ds_log_field;

#define DS_LOG_FIELD_STR(k, v) ((ds_log_field){.key = (k), .kind = DS_LOG_STR, .s = (v)})
#define DS_LOG_FIELD_INT(k, v) ((ds_log_field){.key = (k), .kind = DS_LOG_INT, .i = (long long)(v)})
#define DS_LOG_FIELD_REAL(k, v) ((ds_log_field){.key = (k), .kind = DS_LOG_REAL, .d = (double)(v)})
#define DS_LOG_FIELD_BOOL(k, v) ((ds_log_field){.key = (k), .kind = DS_LOG_BOOL, .i = (v) ? 1 : 0})

/* What an event is about: source and table name it (NULL: none), event is
 * its stable name ("sync_start", "sync_end", ...) that log queries match. */
typedef struct ds_log_about {
    const char *source, *table, *event;
} ds_log_about;

/* A structured line: the text format prints the message as ds_log does;
 * the JSON format adds source, table, event and the fields. */
void ds_log_event(ds_log_level level, const ds_log_about *about, const ds_log_field *fields, size_t nfields,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
