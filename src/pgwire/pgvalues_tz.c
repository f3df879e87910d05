/* IANA time zones from TZif files (RFC 8536): the transitions, and beyond
 * the last one the footer's POSIX TZ rule, as PostgreSQL's own copy of the
 * tz code reads the system tzdata. Zones are loaded once and shared. */
#include "pgwire/pgvalues_tz.h"

#include <ctype.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TZ_MAX_FILE (1 << 20)
#define TZ_MAX_NAME 255

/* A POSIX TZ rule's date: Jn (1..365, no February 29), n (0..365) or
 * Mm.w.d (day d of week w of month m, w 5 the last). */
typedef struct tz_date {
    char kind; /* 'J', 'n' or 'M' */
    int n, month, week, wday;
    int32_t secs; /* local time of day of the change */
} tz_date;

typedef struct tz_rule {
    int32_t std_east, dst_east;
    bool has_dst;
    tz_date start, end;
} tz_rule;

struct pgv_tz {
    char *name;
    int64_t *times; /* transitions (Unix seconds), ascending */
    uint8_t *types; /* the local time type of each */
    int32_t *offsets;
    int ntimes, ntypes;
    int first_type; /* in force before the first transition */
    bool has_rule;
    tz_rule rule;
    struct pgv_tz *next;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pgv_tz *cache;

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* ---- POSIX TZ strings ----------------------------------------------- */

static const char *parse_name(const char *p)
{
    if (*p == '<') {
        const char *end = strchr(p, '>');
        return end && end > p + 1 ? end + 1 : NULL;
    }
    const char *start = p;
    while (isalpha((unsigned char)*p))
        p++;
    return p - start >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] (hours up to 167, as TZif version 3 allows). */
static const char *parse_hms(const char *p, int32_t *secs)
{
    int sign = 1;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    if (!isdigit((unsigned char)*p))
        return NULL;
    int32_t v[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        if (i > 0) {
            if (*p != ':')
                break;
            p++;
        }
        if (!isdigit((unsigned char)*p))
            return NULL;
        int x = 0, digits = 0;
        while (isdigit((unsigned char)*p) && digits < 3)
            x = x * 10 + (*p++ - '0'), digits++;
        v[i] = x;
    }
    if (v[0] > 167 || v[1] > 59 || v[2] > 59)
        return NULL;
    *secs = sign * (v[0] * 3600 + v[1] * 60 + v[2]);
    return p;
}

static const char *parse_int(const char *p, int *out, int max)
{
    if (!isdigit((unsigned char)*p))
        return NULL;
    int v = 0;
    while (isdigit((unsigned char)*p)) {
        v = v * 10 + (*p++ - '0');
        if (v > max)
            return NULL;
    }
    *out = v;
    return p;
}

static const char *parse_date(const char *p, tz_date *d)
{
    d->secs = 7200;
    if (*p == 'J') {
        d->kind = 'J';
        p = parse_int(p + 1, &d->n, 365);
        if (p && d->n < 1)
            return NULL;
    } else if (*p == 'M') {
        d->kind = 'M';
        p = parse_int(p + 1, &d->month, 12);
        if (p && *p == '.')
            p = parse_int(p + 1, &d->week, 5);
        else
            p = NULL;
        if (p && *p == '.')
            p = parse_int(p + 1, &d->wday, 6);
        else
            p = NULL;
        if (p && (d->month < 1 || d->week < 1))
            return NULL;
    } else {
        d->kind = 'n';
        p = parse_int(p, &d->n, 365);
    }
    if (p && *p == '/')
        p = parse_hms(p + 1, &d->secs);
    return p;
}

static bool parse_rule(const char *p, tz_rule *r)
{
    int32_t west;
    p = parse_name(p);
    if (!p || !(p = parse_hms(p, &west)))
        return false;
    r->std_east = -west;
    r->has_dst = false;
    if (!*p)
        return true;
    p = parse_name(p);
    if (!p)
        return false;
    r->has_dst = true;
    r->dst_east = r->std_east + 3600;
    if (*p && *p != ',') {
        if (!(p = parse_hms(p, &west)))
            return false;
        r->dst_east = -west;
    }
    if (!*p) {
        /* no rule: the US rules POSIX takes by default */
        tz_date start = {'M', 0, 3, 2, 0, 7200}, end = {'M', 0, 11, 1, 0, 7200};
        r->start = start;
        r->end = end;
        return true;
    }
    if (*p != ',' || !(p = parse_date(p + 1, &r->start)) || *p != ',' || !(p = parse_date(p + 1, &r->end)))
        return false;
    return *p == '\0';
}

/* Seconds from the start of year y (local time) to the rule's change. */
static int64_t rule_secs(const tz_date *d, int64_t y)
{
    int64_t day; /* 0-based day of the year */
    if (d->kind == 'J')
        day = d->n - 1 + (is_leap(y) && d->n >= 60);
    else if (d->kind == 'n')
        day = d->n;
    else {
        int64_t first = days_from_civil(y, d->month, 1);
        int wday_first = (int)((first % 7 + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
        int64_t mday = 1 + (d->wday - wday_first + 7) % 7 + (d->week - 1) * 7;
        static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int len = mdays[d->month - 1] + (d->month == 2 && is_leap(y));
        while (mday > len)
            mday -= 7;
        day = first + mday - 1 - days_from_civil(y, 1, 1);
    }
    return day * 86400 + d->secs;
}

static int32_t rule_offset(const tz_rule *r, int64_t t)
{
    if (!r->has_dst)
        return r->std_east;
    /* the year of the instant in standard time */
    int64_t days = floor_div(t + r->std_east, 86400) + 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t y = yoe + era * 400 + ((5 * doy + 2) / 153 >= 10);
    int64_t year_start = days_from_civil(y, 1, 1) * 86400;
    int64_t start = year_start + rule_secs(&r->start, y) - r->std_east;
    int64_t end = year_start + rule_secs(&r->end, y) - r->dst_east;
    bool dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);
    return dst ? r->dst_east : r->std_east;
}

/* ---- TZif files ----------------------------------------------------- */

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t get_be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)get_be32(p) << 32 | get_be32(p + 4));
}

/* Parses a TZif file's data (its version 2+ block when there is one). */
static bool parse_tzif(const unsigned char *data, size_t len, struct pgv_tz *tz)
{
    if (len < 44 || memcmp(data, "TZif", 4) != 0)
        return false;
    int version = data[4] ? data[4] - '0' : 1;
    const unsigned char *p = data;
    size_t left = len;
    int time_size = 4;
    for (int pass = 0; pass < 2; pass++) {
        if (left < 44 || memcmp(p, "TZif", 4) != 0)
            return false;
        uint32_t isutcnt = get_be32(p + 20), isstdcnt = get_be32(p + 24), leapcnt = get_be32(p + 28),
                 timecnt = get_be32(p + 32), typecnt = get_be32(p + 36), charcnt = get_be32(p + 40);
        if (timecnt > 100000 || typecnt == 0 || typecnt > 256 || charcnt > 100000 || leapcnt > 100000 ||
            isutcnt > 256 || isstdcnt > 256)
            return false;
        size_t block = (size_t)timecnt * (size_t)time_size + timecnt + (size_t)typecnt * 6 + charcnt +
                       (size_t)leapcnt * (size_t)(time_size + 4) + isstdcnt + isutcnt;
        if (left - 44 < block)
            return false;
        if (pass == 0 && version >= 2) {
            p += 44 + block;
            left -= 44 + block;
            time_size = 8;
            continue;
        }
        const unsigned char *q = p + 44;
        tz->times = calloc(timecnt ? timecnt : 1, sizeof *tz->times);
        tz->types = calloc(timecnt ? timecnt : 1, 1);
        tz->offsets = calloc(typecnt, sizeof *tz->offsets);
        if (!tz->times || !tz->types || !tz->offsets)
            return false;
        for (uint32_t i = 0; i < timecnt; i++, q += time_size)
            tz->times[i] = time_size == 8 ? get_be64(q) : (int32_t)get_be32(q);
        for (uint32_t i = 0; i < timecnt; i++, q++) {
            if (*q >= typecnt)
                return false;
            tz->types[i] = *q;
        }
        for (uint32_t i = 0; i < typecnt; i++, q += 6)
            tz->offsets[i] = (int32_t)get_be32(q);
        /* RFC 8536: type 0 is the one in force before the first transition */
        tz->first_type = 0;
        tz->ntimes = (int)timecnt;
        tz->ntypes = (int)typecnt;
        p += 44 + block;
        left -= 44 + block;
        break;
    }
    /* The footer, "\n<POSIX TZ>\n", rules the times after the last transition. */
    if (time_size == 8 && left >= 2 && p[0] == '\n') {
        const unsigned char *end = memchr(p + 1, '\n', left - 1);
        if (end && end > p + 1 && (size_t)(end - p) < 128) {
            char rule[128];
            memcpy(rule, p + 1, (size_t)(end - p - 1));
            rule[end - p - 1] = '\0';
            tz->has_rule = parse_rule(rule, &tz->rule);
        }
    }
    return true;
}

static void tz_free(struct pgv_tz *tz)
{
    if (!tz)
        return;
    free(tz->name);
    free(tz->times);
    free(tz->types);
    free(tz->offsets);
    free(tz);
}

/* A name that stays inside the zoneinfo directory. */
static bool safe_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > TZ_MAX_NAME || name[0] == '/' || strstr(name, ".."))
        return false;
    for (const char *p = name; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("/_+-", *p)))
            return false;
    return true;
}

static bool read_file(const char *path, unsigned char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    unsigned char *buf = malloc(TZ_MAX_FILE);
    size_t n = buf ? fread(buf, 1, TZ_MAX_FILE, f) : 0;
    fclose(f);
    if (!buf || n == 0 || n == TZ_MAX_FILE) {
        free(buf);
        return false;
    }
    *data = buf;
    *len = n;
    return true;
}

/* dir/name with each component of name matched without case where the
 * exact one is missing ("europe/paris" is Europe/Paris, as PostgreSQL and
 * DuckDB take it). */
static bool find_file(const char *dir, const char *name, char *path, size_t size)
{
    if ((size_t)snprintf(path, size, "%s/%s", dir, name) >= size)
        return false;
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        return true;
    }
    snprintf(path, size, "%s", dir);
    const char *p = name;
    while (*p) {
        size_t n = strcspn(p, "/");
        DIR *d = opendir(path);
        if (!d)
            return false;
        struct dirent *e;
        bool found = false;
        while ((e = readdir(d)) != NULL) {
            if (strlen(e->d_name) == n && strncasecmp(e->d_name, p, n) == 0) {
                size_t len = strlen(path);
                found = (size_t)snprintf(path + len, size - len, "/%s", e->d_name) < size - len;
                break;
            }
        }
        closedir(d);
        if (!found)
            return false;
        p += n;
        if (*p == '/')
            p++;
    }
    return true;
}

static struct pgv_tz *load(const char *name)
{
    struct pgv_tz *tz = calloc(1, sizeof *tz);
    if (!tz || !(tz->name = strdup(name))) {
        tz_free(tz);
        return NULL;
    }
    if (safe_name(name)) {
        const char *dir = getenv("TZDIR");
        char path[TZ_MAX_NAME + 512];
        unsigned char *data;
        size_t len;
        if (find_file(dir && *dir ? dir : "/usr/share/zoneinfo", name, path, sizeof path) &&
            read_file(path, &data, &len)) {
            bool ok = parse_tzif(data, len, tz);
            free(data);
            if (ok)
                return tz;
        }
        free(tz->times);
        free(tz->types);
        free(tz->offsets);
        tz->times = NULL;
        tz->types = NULL;
        tz->offsets = NULL;
        tz->ntimes = tz->ntypes = 0;
    }
    /* Not a file: a POSIX TZ string ("EST5EDT,M3.2.0,M11.1.0"), or UTC
     * where the tz database is missing. */
    if (parse_rule(name, &tz->rule)) {
        tz->has_rule = true;
        return tz;
    }
    if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0 || strcmp(name, "GMT") == 0) {
        memset(&tz->rule, 0, sizeof tz->rule);
        tz->has_rule = true;
        return tz;
    }
    tz_free(tz);
    return NULL;
}

const pgv_tz *pgv_tz_get(const char *name, ds_error *err)
{
    pthread_mutex_lock(&cache_lock);
    struct pgv_tz *tz = cache;
    while (tz && strcmp(tz->name, name) != 0)
        tz = tz->next;
    if (!tz) {
        tz = load(name);
        if (tz) {
            tz->next = cache;
            cache = tz;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    if (!tz)
        ds_error_set(err, DS_ERR_CONFIG,
                     "time zone \"%.*s\" is not known: use a name of the tz database such as \"UTC\" or "
                     "\"Europe/Paris\"",
                     TZ_MAX_NAME, name);
    return tz;
}

int32_t pgv_tz_offset(const pgv_tz *tz, int64_t t)
{
    if (tz->ntimes == 0 && tz->has_rule)
        return rule_offset(&tz->rule, t);
    if (tz->ntimes == 0 || t < tz->times[0]) {
        if (tz->ntypes > 0)
            return tz->offsets[tz->first_type];
        return tz->has_rule ? rule_offset(&tz->rule, t) : 0;
    }
    if (t >= tz->times[tz->ntimes - 1] && tz->has_rule)
        return rule_offset(&tz->rule, t);
    int lo = 0, hi = tz->ntimes - 1; /* times[lo] <= t */
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (tz->times[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return tz->offsets[tz->types[lo]];
}
