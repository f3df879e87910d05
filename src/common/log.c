/* stderr logger shared by the CLI and the server; thread-safe because each
 * line is written with a single fprintf on an unbuffered stream. The JSON
 * format is built with jansson, so every string is escaped as JSON wants. */
#include "common/log.h"
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

/* A JSON string of text that may not be valid UTF-8 (a PostgreSQL message
 * in another encoding, a value cut short): jansson refuses such text, and
 * the line must not lose it, so invalid bytes become '?'. */
static json_t *text_json(const char *s)
{
    if (s == NULL)
        return json_null();
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    char *copy = strdup(s);
    if (copy == NULL)
        return NULL;
    for (size_t i = 0, n = strlen(copy); i < n;) {
        unsigned char c = (unsigned char)copy[i];
        size_t len = c < 0x80             ? 1
                     : (c & 0xE0) == 0xC0 ? 2
                     : (c & 0xF0) == 0xE0 ? 3
                     : (c & 0xF8) == 0xF0 ? 4
                                          : 0;
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            ok = ((unsigned char)copy[i + k] & 0xC0) == 0x80;
        if (ok) {
            i += len;
            continue;
        }
        copy[i++] = '?';
    }
    j = json_string(copy);
    for (size_t i = 0; j == NULL && copy[i] != '\0'; i++) /* jansson's stricter checks (overlongs) */
        if ((unsigned char)copy[i] >= 0x80)
            copy[i] = '?';
    if (j == NULL)
        j = json_string(copy);
    free(copy);
    return j;
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
