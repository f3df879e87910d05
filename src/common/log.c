/* stderr logger shared by the CLI and the server; thread-safe because each
 * line is written with a single fprintf on an unbuffered stream. The JSON
 * format is built with jansson, so every string is escaped as JSON wants. */
#include "common/log.h"
#include "common/json_text.h"
#include "common/strbuf.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static ds_log_level min_level = DS_LOG_INFO;
static _Atomic int format = DS_LOG_FORMAT_TEXT;
static _Atomic bool format_given; /* --log-format: the config's key does not override it */

void ds_log_set_level(ds_log_level level)
{
    min_level = level;
}

bool ds_log_enabled(ds_log_level level)
{
    return level >= min_level;
}

void ds_log_set_format(ds_log_format f)
{
    atomic_store(&format, (int)f);
    atomic_store(&format_given, true);
}

void ds_log_config_format(ds_log_format f)
{
    if (!atomic_load(&format_given))
        atomic_store(&format, (int)f);
}

ds_log_format ds_log_get_format(void)
{
    return (ds_log_format)atomic_load(&format);
}

const char *ds_log_format_name(ds_log_format f)
{
    return f == DS_LOG_FORMAT_JSON ? "json" : "text";
}

bool ds_log_parse_format(const char *text, ds_log_format *out)
{
    static const ds_log_format all[] = {DS_LOG_FORMAT_TEXT, DS_LOG_FORMAT_JSON};
    for (size_t i = 0; text != NULL && i < sizeof all / sizeof all[0]; i++)
        if (strcmp(text, ds_log_format_name(all[i])) == 0) {
            *out = all[i];
            return true;
        }
    return false;
}

/* "2026-11-30T13:20:47.123Z": UTC with milliseconds, both formats. */
static void now_stamp(char *out, size_t cap)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char secs[32];
    strftime(secs, sizeof secs, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03ldZ", secs, (long)(tv.tv_usec / 1000));
}

/* Text that may be NULL (no source, no table) or not valid UTF-8. */
static json_t *text_json(const char *s)
{
    return s == NULL ? json_null() : ds_json_text(s);
}

static json_t *field_json(const ds_log_field *f)
{
    switch (f->kind) {
    case DS_LOG_STR:
        return text_json(f->s);
    case DS_LOG_INT:
        return json_integer((json_int_t)f->i);
    case DS_LOG_REAL:
        return json_real(f->d);
    case DS_LOG_BOOL:
        return json_boolean(f->i != 0);
    }
    return json_null();
}

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
static const char *const level_json[] = {"debug", "info", "warn", "error"};

/* The JSON line of an event, or NULL when out of memory. */
static char *json_line(const char *stamp, ds_log_level level, const ds_log_about *about,
                       const ds_log_field *fields, size_t nfields, const char *message)
{
    json_t *doc = json_object(), *obj = json_object();
    bool ok = doc != NULL && obj != NULL;
    ok = ok && json_object_set_new(doc, "time", json_string(stamp)) == 0;
    ok = ok && json_object_set_new(doc, "level", json_string(level_json[level])) == 0;
    ok = ok && json_object_set_new(doc, "source", text_json(about ? about->source : NULL)) == 0;
    ok = ok && json_object_set_new(doc, "table", text_json(about ? about->table : NULL)) == 0;
    ok = ok && json_object_set_new(doc, "event", text_json(about ? about->event : NULL)) == 0;
    ok = ok && json_object_set_new(doc, "message", text_json(message)) == 0;
    for (size_t i = 0; ok && i < nfields; i++)
        if (fields[i].kind != DS_LOG_STR || fields[i].s != NULL)
            ok = json_object_set_new(obj, fields[i].key, field_json(&fields[i])) == 0;
    ok = ok && json_object_set(doc, "fields", obj) == 0;
    char *text = ok ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(obj);
    json_decref(doc);
    return text;
}

static void vlog(ds_log_level level, const ds_log_about *about, const ds_log_field *fields, size_t nfields,
                 const char *fmt, va_list ap)
{
    if (level < min_level || (unsigned)level > DS_LOG_ERROR)
        return;
    char stamp[64];
    now_stamp(stamp, sizeof stamp);
    ds_buf msg = DS_BUF_INIT;
    ds_buf_vappendf(&msg, fmt, ap);
    /* Out of memory: the format string still says what happened. */
    const char *text = ds_buf_str(&msg) != NULL ? ds_buf_str(&msg) : fmt;
    char *line = NULL;
    if (atomic_load(&format) == DS_LOG_FORMAT_JSON &&
        (line = json_line(stamp, level, about, fields, nfields, text)) != NULL)
        fprintf(stderr, "%s\n", line);
    else
        fprintf(stderr, "%s %-5s %s\n", stamp, level_names[level], text);
    free(line);
    ds_buf_free(&msg);
}

void ds_log(ds_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, NULL, 0, fmt, ap);
    va_end(ap);
}

void ds_log_event(ds_log_level level, const ds_log_about *about, const ds_log_field *fields, size_t nfields,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, about, fields, nfields, fmt, ap);
    va_end(ap);
}
