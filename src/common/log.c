/* stderr logger shared by the CLI and the server; thread-safe because each
 * line is written with a single fprintf on an unbuffered stream. */
#include "common/log.h"
#include "common/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

static ds_log_level min_level = DS_LOG_INFO;

void ds_log_set_level(ds_log_level level)
{
    min_level = level;
}

void ds_log(ds_log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < min_level)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);

    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ds_utf8_trim_end(line);
    fprintf(stderr, "%s.%03ldZ %-5s %s\n", stamp, (long)(tv.tv_usec / 1000), names[level], line);
}
