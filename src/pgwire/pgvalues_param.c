/* Bind parameters: the text or binary form of a value of the OID a driver
 * sends (int2/4/8, float4/8, numeric, text types, bool, date, time,
 * timestamp(tz), interval, uuid, bytea, json/jsonb), parsed as PostgreSQL's
 * input functions parse it, into the DuckDB value bound in its place; and
 * the OID a statement's parameter is described as. A malformed value is
 * refused with PostgreSQL's wording, naming the type and the value. */
#include "pgwire/pgvalues.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pgwire/pgvalues_internal.h"

#define PG_EPOCH_DAYS 10957
#define USECS_PER_SEC INT64_C(1000000)
#define USECS_PER_DAY (INT64_C(86400) * USECS_PER_SEC)
#define PG_EPOCH_USECS (INT64_C(10957) * USECS_PER_DAY)
#define OID_NAME 19
#define OID_OID 26

/* A value shown in a message: at most 100 bytes, cut on a character. */
#define SHOWN(s, n) (int)ds_utf8_cut((s), (n) > 100 ? 100 : (n)), (s)

static duckdb_value refuse(ds_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static duckdb_value refuse(ds_error *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = DS_ERR_USAGE;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

static duckdb_value made(duckdb_value v, ds_error *err)
{
    return v ? v : refuse(err, "out of memory");
}

static duckdb_value syntax(ds_error *err, const char *type, const char *s, size_t n)
{
    return refuse(err, "invalid input syntax for type %s: \"%.*s\"", type, SHOWN(s, n));
}

/* ---- text ----------------------------------------------------------- */

/* Whether s is valid UTF-8 without NUL; else *bad is the offending byte's
 * offset. */
static bool valid_utf8(const unsigned char *s, size_t n, size_t *bad)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t len = c < 0x80             ? 1
                     : (c & 0xe0) == 0xc0 ? 2
                     : (c & 0xf0) == 0xe0 ? 3
                     : (c & 0xf8) == 0xf0 ? 4
                                          : 0;
        if (c == 0 || len == 0 || (len == 2 && c < 0xc2) || (len == 4 && c > 0xf4) || i + len > n) {
            *bad = i;
            return false;
        }
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xc0) != 0x80) {
                *bad = i;
                return false;
            }
        if ((len == 3 && c == 0xe0 && s[i + 1] < 0xa0) || (len == 3 && c == 0xed && s[i + 1] >= 0xa0) ||
            (len == 4 && c == 0xf0 && s[i + 1] < 0x90) || (len == 4 && c == 0xf4 && s[i + 1] >= 0x90)) {
            *bad = i;
            return false;
        }
        i += len;
    }
    return true;
}

static duckdb_value text_value(const char *s, size_t n, ds_error *err)
{
    size_t bad;
    if (!valid_utf8((const unsigned char *)s, n, &bad))
        return refuse(err, "invalid byte sequence for encoding \"UTF8\": 0x%02x", (unsigned char)s[bad]);
    return made(duckdb_create_varchar_length(s, (idx_t)n), err);
}

/* s without the white space around it (PostgreSQL's input functions
 * allow it). */
static void trim(const char **s, size_t *n)
{
    while (*n && isspace((unsigned char)**s))
        (*s)++, (*n)--;
    while (*n && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

static const char *int_type_name(uint32_t oid)
{
    return oid == PGV_OID_INT2   ? "smallint"
           : oid == PGV_OID_INT4 ? "integer"
           : oid == OID_OID      ? "oid"
                                 : "bigint";
}

static duckdb_value int_text(uint32_t oid, const char *s0, size_t n0, ds_error *err)
{
    const char *s = s0;
    size_t n = n0;
    trim(&s, &n);
    const char *name = int_type_name(oid);
    size_t i = 0;
    bool negative = false;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        negative = s[i++] == '-';
    if (i == n)
        return syntax(err, name, s0, n0);
    uint64_t v = 0;
    bool overflow = false;
    for (; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return syntax(err, name, s0, n0);
        if (v > (UINT64_MAX - 9) / 10)
            overflow = true;
        else
            v = v * 10 + (uint64_t)(s[i] - '0');
    }
    uint64_t limit = oid == PGV_OID_INT2   ? (negative ? 32768u : 32767u)
                     : oid == PGV_OID_INT4 ? (negative ? UINT64_C(2147483648) : UINT64_C(2147483647))
                     : oid == OID_OID
                         ? (negative ? UINT64_C(2147483648) : UINT64_C(4294967295))
                         : (negative ? UINT64_C(9223372036854775808) : UINT64_C(9223372036854775807));
    if (overflow || v > limit)
        return refuse(err, "value \"%.*s\" is out of range for type %s", SHOWN(s0, n0), name);
    int64_t x = negative ? (int64_t)(0 - v) : (int64_t)v;
    if (oid == OID_OID && x < 0)
        x += INT64_C(4294967296); /* oid accepts -1 as 4294967295 */
    switch (oid) {
    case PGV_OID_INT2:
        return made(duckdb_create_int16((int16_t)x), err);
    case PGV_OID_INT4:
        return made(duckdb_create_int32((int32_t)x), err);
    default:
        return made(duckdb_create_int64(x), err);
    }
}

static duckdb_value float_text(bool float4, const char *s0, size_t n0, ds_error *err)
{
    const char *name = float4 ? "real" : "double precision";
    const char *s = s0;
    size_t n = n0;
    trim(&s, &n);
    char buf[128];
    if (n == 0 || n >= sizeof buf)
        return n == 0 ? syntax(err, name, s0, n0)
                      : refuse(err, "\"%.*s\" is out of range for type %s", SHOWN(s0, n0), name);
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    double d = float4 ? (double)strtof(buf, &end) : strtod(buf, &end);
    if (end == buf || *end != '\0' || (strncasecmp(buf, "nan(", 4) == 0))
        return syntax(err, name, s0, n0);
    if (errno == ERANGE && (d == 0 || isinf(d)))
        return refuse(err, "\"%.*s\" is out of range for type %s", SHOWN(s0, n0), name);
    return made(float4 ? duckdb_create_float((float)d) : duckdb_create_double(d), err);
}

/* numeric: a DECIMAL of the digits and scale written (PostgreSQL keeps the
 * scale: 12.3400 stays 12.3400); beyond DuckDB's 38 digits, or NaN and
 * the infinities, a DOUBLE, as duckstore stores such numerics. */
static duckdb_value numeric_text(const char *s0, size_t n0, ds_error *err)
{
    const char *s = s0;
    size_t n = n0;
    trim(&s, &n);
    char buf[1200];
    if (n >= sizeof buf)
        return refuse(err, "value \"%.*s\" is too long for type numeric", SHOWN(s0, n0));
    memcpy(buf, s, n);
    buf[n] = '\0';
    const char *p = buf;
    bool negative = false;
    if (*p == '+' || *p == '-')
        negative = *p++ == '-';
    if (strcasecmp(p, "NaN") == 0 && p == buf)
        return made(duckdb_create_double(NAN), err);
    if (strcasecmp(p, "Infinity") == 0 || strcasecmp(p, "inf") == 0)
        return made(duckdb_create_double(negative ? -INFINITY : INFINITY), err);
    char digits[1200];
    size_t nd = 0;
    long frac = 0;
    bool point = false, any = false;
    for (; *p && *p != 'e' && *p != 'E'; p++) {
        if (*p == '.' && !point) {
            point = true;
        } else if (isdigit((unsigned char)*p)) {
            any = true;
            if (nd > 0 || *p != '0')
                digits[nd++] = *p;
            if (point)
                frac++;
        } else {
            return syntax(err, "numeric", s0, n0);
        }
    }
    if (!any)
        return syntax(err, "numeric", s0, n0);
    long exp10 = 0;
    if (*p) {
        char *end;
        errno = 0;
        exp10 = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || errno || exp10 > 1000 || exp10 < -1000)
            return syntax(err, "numeric", s0, n0);
    }
    long scale = frac - exp10;
    /* digits holds the significant digits (no leading zeros); the value is
     * digits * 10^-scale */
    if (scale < 0) {
        if (nd + (size_t)-scale > 38)
            goto as_double;
        for (long i = 0; i < -scale && nd > 0; i++)
            digits[nd++] = '0';
        scale = 0;
    }
    long width = (long)nd > scale ? (long)nd : scale;
    if (width < 1)
        width = 1;
    if (width > 38)
        goto as_double;
    unsigned __int128 m = 0;
    for (size_t i = 0; i < nd; i++)
        m = m * 10 + (unsigned)(digits[i] - '0');
    __int128 v = negative ? -(__int128)m : (__int128)m;
    duckdb_decimal dec;
    dec.width = (uint8_t)width;
    dec.scale = (uint8_t)scale;
    dec.value.lower = (uint64_t)(unsigned __int128)v;
    dec.value.upper = (int64_t)((unsigned __int128)v >> 64);
    return made(duckdb_create_decimal(dec), err);
as_double:
    errno = 0;
    double d = strtod(buf, NULL);
    if (errno == ERANGE && isinf(d))
        return refuse(err, "value \"%.*s\" overflows DuckDB's numeric types", SHOWN(s0, n0));
    return made(duckdb_create_double(d), err);
}

/* boolin: t/true/y/yes/on/1 and f/false/n/no/off/0, any case, or any
 * unambiguous prefix of those words. */
static duckdb_value bool_text(const char *s0, size_t n0, ds_error *err)
{
    const char *s = s0;
    size_t n = n0;
    trim(&s, &n);
    static const struct {
        const char *word;
        size_t min;
        bool value;
    } words[] = {{"true", 1, true}, {"false", 1, false}, {"yes", 1, true}, {"no", 1, false},
                 {"on", 2, true},   {"off", 2, false},   {"1", 1, true},   {"0", 1, false}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (n >= words[i].min && n <= strlen(words[i].word) && strncasecmp(s, words[i].word, n) == 0)
            return made(duckdb_create_bool(words[i].value), err);
    return syntax(err, "boolean", s0, n0);
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int month_days(int64_t y, int m)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return mdays[m - 1] + (m == 2 && leap);
}

typedef enum dt_result { DT_OK, DT_SYNTAX, DT_RANGE, DT_INFINITY, DT_NINFINITY } dt_result;

static bool digits_at(const char **p, const char *end, int max_digits, int64_t *v)
{
    const char *start = *p;
    int64_t x = 0;
    while (*p < end && isdigit((unsigned char)**p) && *p - start < max_digits)
        x = x * 10 + (**p - '0'), (*p)++;
    *v = x;
    return *p > start && !(*p < end && isdigit((unsigned char)**p));
}

/* HH:MM[:SS[.ffffff]] as microseconds (24:00:00 allowed, as PostgreSQL). */
static dt_result time_at(const char **p, const char *end, int64_t *usecs)
{
    int64_t h, m, sec = 0, frac = 0;
    if (!digits_at(p, end, 2, &h) || *p >= end || **p != ':')
        return DT_SYNTAX;
    (*p)++;
    if (!digits_at(p, end, 2, &m))
        return DT_SYNTAX;
    if (*p < end && **p == ':') {
        (*p)++;
        if (!digits_at(p, end, 2, &sec))
            return DT_SYNTAX;
        if (*p < end && **p == '.') {
            (*p)++;
            int k = 0;
            bool round_up = false;
            while (*p < end && isdigit((unsigned char)**p)) {
                if (k < 6)
                    frac = frac * 10 + (**p - '0');
                else if (k == 6)
                    round_up = **p >= '5';
                k++, (*p)++;
            }
            if (k == 0)
                return DT_SYNTAX;
            for (; k < 6; k++)
                frac *= 10;
            frac += round_up;
        }
    }
    if (h > 24 || m > 59 || sec > 59 || (h == 24 && (m || sec || frac)))
        return DT_RANGE;
    *usecs = ((h * 60 + m) * 60 + sec) * USECS_PER_SEC + frac;
    return DT_OK;
}

/* PostgreSQL's ISO input: [+-]infinity, or Y-MM-DD, then [ |T]HH:MM[:SS[.f]]
 * (not for a date), a zone (Z or +-HH[[:]MM[[:]SS]]) and BC/AD. *days is
 * the date (days since 1970), *usecs the time of day, *east the zone's
 * offset when *has_zone. */
static dt_result datetime_text(const char *s, size_t n, int64_t *days, int64_t *usecs, bool *has_zone,
                               int32_t *east)
{
    trim(&s, &n);
    const char *p = s, *end = s + n;
    if ((n == 8 && strncasecmp(s, "infinity", 8) == 0) || (n == 9 && strncasecmp(s, "+infinity", 9) == 0))
        return DT_INFINITY;
    if (n == 9 && strncasecmp(s, "-infinity", 9) == 0)
        return DT_NINFINITY;
    int64_t y, m, d;
    if (!digits_at(&p, end, 9, &y) || p >= end || *p != '-')
        return DT_SYNTAX;
    p++;
    if (!digits_at(&p, end, 2, &m) || p >= end || *p != '-')
        return DT_SYNTAX;
    p++;
    if (!digits_at(&p, end, 2, &d))
        return DT_SYNTAX;
    *usecs = 0;
    *has_zone = false;
    *east = 0;
    if (p < end && (*p == 'T' || *p == 't' || *p == ' ')) {
        const char *q = p + 1;
        while (q < end && *q == ' ')
            q++;
        if (q < end && isdigit((unsigned char)*q)) {
            dt_result r = time_at(&q, end, usecs);
            if (r != DT_OK)
                return r;
            p = q;
        }
    }
    while (p < end && *p == ' ')
        p++;
    if (p < end && (*p == 'Z' || *p == 'z')) {
        *has_zone = true;
        p++;
    } else if (p + 3 <= end && strncasecmp(p, "UTC", 3) == 0) {
        *has_zone = true;
        p += 3;
    } else if (p < end && (*p == '+' || *p == '-')) {
        int sign = *p++ == '-' ? -1 : 1;
        int64_t zh, zm = 0, zs = 0;
        if (!digits_at(&p, end, 2, &zh))
            return DT_SYNTAX;
        if (p < end && *p == ':')
            p++;
        if (p < end && isdigit((unsigned char)*p)) {
            if (!digits_at(&p, end, 2, &zm))
                return DT_SYNTAX;
            if (p < end && *p == ':')
                p++;
            if (p < end && isdigit((unsigned char)*p) && !digits_at(&p, end, 2, &zs))
                return DT_SYNTAX;
        }
        if (zh > 15 || zm > 59 || zs > 59)
            return DT_RANGE;
        *has_zone = true;
        *east = (int32_t)(sign * (zh * 3600 + zm * 60 + zs));
    }
    while (p < end && *p == ' ')
        p++;
    bool bc = false;
    if (p + 2 <= end && strncasecmp(p, "BC", 2) == 0) {
        bc = true;
        p += 2;
    } else if (p + 2 <= end && strncasecmp(p, "AD", 2) == 0) {
        p += 2;
    }
    if (p != end)
        return DT_SYNTAX;
    if (y == 0 && bc)
        return DT_RANGE;
    if (bc)
        y = 1 - y;
    if (m < 1 || m > 12 || d < 1 || d > month_days(y, (int)m))
        return DT_RANGE;
    *days = days_from_civil(y, (int)m, (int)d);
    return DT_OK;
}

/* DuckDB's timestamp range (294247 AD) is narrower than int64 microseconds. */
#define MAX_TS_DAYS INT64_C(106000000)

static duckdb_value datetime_value(uint32_t oid, const char *s, size_t n, ds_error *err)
{
    const char *name = oid == PGV_OID_DATE        ? "date"
                       : oid == PGV_OID_TIMESTAMP ? "timestamp"
                                                  : "timestamp with time zone";
    int64_t days = 0, usecs = 0;
    bool has_zone;
    int32_t east;
    dt_result r = datetime_text(s, n, &days, &usecs, &has_zone, &east);
    if (r == DT_SYNTAX)
        return syntax(err, name, s, n);
    if (r == DT_RANGE)
        return refuse(err, "date/time field value out of range: \"%.*s\"", SHOWN(s, n));
    if (oid == PGV_OID_DATE) {
        duckdb_date d;
        if (r == DT_OK && (days > INT32_MAX - 1 || days < -(INT32_MAX - 1)))
            return refuse(err, "date out of range: \"%.*s\"", SHOWN(s, n));
        d.days = r == DT_INFINITY ? INT32_MAX : r == DT_NINFINITY ? -INT32_MAX : (int32_t)days;
        return made(duckdb_create_date(d), err);
    }
    duckdb_timestamp ts;
    if (r == DT_OK) {
        if (days > MAX_TS_DAYS || days < -MAX_TS_DAYS)
            return refuse(err, "timestamp out of range: \"%.*s\"", SHOWN(s, n));
        /* a timestamp without zone ignores one written, as PostgreSQL; a
         * timestamptz without one is taken as UTC */
        ts.micros =
            days * USECS_PER_DAY + usecs - (oid == PGV_OID_TIMESTAMPTZ ? (int64_t)east * USECS_PER_SEC : 0);
    } else {
        ts.micros = r == DT_INFINITY ? INT64_MAX : -INT64_MAX;
    }
    return made(oid == PGV_OID_TIMESTAMPTZ ? duckdb_create_timestamp_tz(ts) : duckdb_create_timestamp(ts),
                err);
}

static duckdb_value time_value(const char *s0, size_t n0, ds_error *err)
{
    const char *s = s0;
    size_t n = n0;
    trim(&s, &n);
    const char *p = s;
    duckdb_time t;
    dt_result r = time_at(&p, s + n, &t.micros);
    if (r == DT_OK && p != s + n)
        r = DT_SYNTAX;
    if (r == DT_SYNTAX)
        return syntax(err, "time without time zone", s0, n0);
    if (r != DT_OK)
        return refuse(err, "date/time field value out of range: \"%.*s\"", SHOWN(s0, n0));
    return made(duckdb_create_time(t), err);
}

/* interval_in for what drivers send: "1 year 2 mons 3 days 04:05:06.789"
 * (PostgreSQL's own output), "-1 days +02:00:00", the verbose units
 * ("2 hours 3 mins 4.5 secs", "1 week", "... ago"). false when the text is
 * in another form (ISO 8601, SQL standard): DuckDB then casts it. */
static bool interval_text(const char *s, size_t n, duckdb_interval *out)
{
    static const struct {
        const char *unit;
        int kind; /* 0 months, 1 days, 2 microseconds */
        double factor;
    } units[] = {
        {"years", 0, 12},
        {"year", 0, 12},
        {"yrs", 0, 12},
        {"yr", 0, 12},
        {"y", 0, 12},
        {"months", 0, 1},
        {"month", 0, 1},
        {"mons", 0, 1},
        {"mon", 0, 1},
        {"weeks", 1, 7},
        {"week", 1, 7},
        {"w", 1, 7},
        {"days", 1, 1},
        {"day", 1, 1},
        {"d", 1, 1},
        {"hours", 2, 3600e6},
        {"hour", 2, 3600e6},
        {"hrs", 2, 3600e6},
        {"hr", 2, 3600e6},
        {"h", 2, 3600e6},
        {"minutes", 2, 60e6},
        {"minute", 2, 60e6},
        {"mins", 2, 60e6},
        {"min", 2, 60e6},
        {"m", 2, 60e6},
        {"seconds", 2, 1e6},
        {"second", 2, 1e6},
        {"secs", 2, 1e6},
        {"sec", 2, 1e6},
        {"s", 2, 1e6},
        {"milliseconds", 2, 1e3},
        {"millisecond", 2, 1e3},
        {"msecs", 2, 1e3},
        {"msec", 2, 1e3},
        {"ms", 2, 1e3},
        {"microseconds", 2, 1},
        {"microsecond", 2, 1},
        {"usecs", 2, 1},
        {"usec", 2, 1},
        {"us", 2, 1},
    };
    trim(&s, &n);
    const char *p = s, *end = s + n;
    double months = 0, days = 0, micros = 0;
    bool any = false;
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        if (p == end)
            break;
        if (end - p == 3 && strncasecmp(p, "ago", 3) == 0 && any) {
            months = -months, days = -days, micros = -micros;
            p = end;
            break;
        }
        const char *q = p;
        int sign = 1;
        if (q < end && (*q == '+' || *q == '-'))
            sign = *q++ == '-' ? -1 : 1;
        /* a time: [+-]HH:MM[:SS[.f]] (hours beyond 24 allowed) */
        const char *colon = q;
        while (colon < end && isdigit((unsigned char)*colon))
            colon++;
        if (colon > q && colon < end && *colon == ':') {
            int64_t h = 0, usecs = 0;
            for (const char *d = q; d < colon; d++) {
                h = h * 10 + (*d - '0');
                if (h > 2562047788)
                    return false;
            }
            char tm[40];
            const char *t = colon + 1, *tend = t;
            while (tend < end && *tend != ' ')
                tend++;
            if (tend - t >= (ptrdiff_t)sizeof tm - 4)
                return false;
            snprintf(tm, sizeof tm, "00:%.*s", (int)(tend - t), t);
            const char *tp = tm;
            if (time_at(&tp, tm + strlen(tm), &usecs) != DT_OK || *tp)
                return false;
            micros += sign * ((double)h * 3600e6 + (double)usecs);
            p = tend;
            any = true;
            continue;
        }
        char *num_end;
        char num[64];
        size_t nl = 0;
        while (p + nl < end && p[nl] != ' ' && !isalpha((unsigned char)p[nl]) && nl < sizeof num - 1)
            nl++;
        memcpy(num, p, nl);
        num[nl] = '\0';
        double v = strtod(num, &num_end);
        if (nl == 0 || *num_end || !isfinite(v))
            return false;
        p += nl;
        while (p < end && *p == ' ')
            p++;
        size_t ul = 0;
        while (p + ul < end && isalpha((unsigned char)p[ul]))
            ul++;
        size_t i = 0;
        for (; i < sizeof units / sizeof units[0]; i++)
            if (strlen(units[i].unit) == ul && strncasecmp(p, units[i].unit, ul) == 0)
                break;
        if (ul == 0 || i == sizeof units / sizeof units[0])
            return false;
        p += ul;
        double x = v * units[i].factor;
        if (units[i].kind == 0) {
            double whole = trunc(x);
            months += whole;
            days += (x - whole) * 30; /* PostgreSQL: a fraction of a month is 30 days */
        } else if (units[i].kind == 1) {
            double whole = trunc(x);
            days += whole;
            micros += (x - whole) * 86400e6;
        } else {
            micros += x;
        }
        any = true;
    }
    double whole_days = trunc(days);
    micros += (days - whole_days) * 86400e6;
    if (!any || fabs(months) > INT32_MAX || fabs(whole_days) > INT32_MAX || fabs(micros) > 9.2e18)
        return false;
    out->months = (int32_t)months;
    out->days = (int32_t)whole_days;
    out->micros = (int64_t)llround(micros);
    return true;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static duckdb_value uuid_bytes_value(const uint8_t u[16], ds_error *err)
{
    duckdb_uhugeint h = {0, 0};
    for (int i = 0; i < 8; i++) {
        h.upper = h.upper << 8 | u[i];
        h.lower = h.lower << 8 | u[8 + i];
    }
    return made(duckdb_create_uuid(h), err);
}

/* uuid_in: 32 hex digits, in braces or not, a hyphen allowed after any
 * group of four. */
static duckdb_value uuid_text(const char *s, size_t n, ds_error *err)
{
    size_t i = 0, end = n;
    if (n >= 2 && s[0] == '{' && s[n - 1] == '}')
        i = 1, end = n - 1;
    uint8_t u[16];
    int nd = 0;
    for (; i < end; i++) {
        int v = hex_value(s[i]);
        if (v < 0) {
            if (s[i] == '-' && nd > 0 && nd % 4 == 0 && nd < 32 && i + 1 < end && s[i + 1] != '-')
                continue;
            return syntax(err, "uuid", s, n);
        }
        if (nd >= 32)
            return syntax(err, "uuid", s, n);
        if (nd % 2 == 0)
            u[nd / 2] = (uint8_t)(v << 4);
        else
            u[nd / 2] |= (uint8_t)v;
        nd++;
    }
    if (nd != 32)
        return syntax(err, "uuid", s, n);
    return uuid_bytes_value(u, err);
}

/* byteain: \x and hex digits (white space between pairs), or the escape
 * format: \\ for a backslash, \ooo for any byte, other bytes as they are. */
static duckdb_value bytea_text(const char *s, size_t n, ds_error *err)
{
    ds_buf b = DS_BUF_INIT;
    duckdb_value v = NULL;
    ds_buf_append(&b, ""); /* an empty bytea is a value too */
    if (n >= 2 && s[0] == '\\' && s[1] == 'x') {
        for (size_t i = 2; i < n;) {
            if (isspace((unsigned char)s[i])) {
                i++;
                continue;
            }
            int hi = hex_value(s[i]);
            if (hi < 0) {
                refuse(err, "invalid hexadecimal digit: \"%c\"", s[i]);
                goto done;
            }
            if (i + 1 >= n) {
                refuse(err, "invalid hexadecimal data: odd number of digits");
                goto done;
            }
            int lo = hex_value(s[i + 1]);
            if (lo < 0) {
                refuse(err, "invalid hexadecimal digit: \"%c\"", s[i + 1]);
                goto done;
            }
            ds_buf_appendc(&b, (char)(hi << 4 | lo));
            i += 2;
        }
    } else {
        for (size_t i = 0; i < n;) {
            if (s[i] != '\\') {
                ds_buf_appendc(&b, s[i++]);
            } else if (i + 1 < n && s[i + 1] == '\\') {
                ds_buf_appendc(&b, '\\');
                i += 2;
            } else if (i + 3 < n && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
                       s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
                ds_buf_appendc(&b, (char)((s[i + 1] - '0') << 6 | (s[i + 2] - '0') << 3 | (s[i + 3] - '0')));
                i += 4;
            } else {
                syntax(err, "bytea", s, n);
                goto done;
            }
        }
    }
    if (b.failed)
        refuse(err, "out of memory");
    else
        v = made(duckdb_create_blob((const uint8_t *)b.data, (idx_t)b.len), err);
done:
    ds_buf_free(&b);
    return v;
}

static duckdb_value param_text(uint32_t oid, const char *s, size_t n, ds_error *err)
{
    switch (oid) {
    case PGV_OID_INT2:
    case PGV_OID_INT4:
    case PGV_OID_INT8:
    case OID_OID:
        return int_text(oid, s, n, err);
    case PGV_OID_FLOAT4:
    case PGV_OID_FLOAT8:
        return float_text(oid == PGV_OID_FLOAT4, s, n, err);
    case PGV_OID_NUMERIC:
        return numeric_text(s, n, err);
    case PGV_OID_BOOL:
        return bool_text(s, n, err);
    case PGV_OID_DATE:
    case PGV_OID_TIMESTAMP:
    case PGV_OID_TIMESTAMPTZ:
        return datetime_value(oid, s, n, err);
    case PGV_OID_TIME:
        return time_value(s, n, err);
    case PGV_OID_INTERVAL: {
        duckdb_interval iv;
        if (interval_text(s, n, &iv))
            return made(duckdb_create_interval(iv), err);
        return text_value(s, n, err);
    }
    case PGV_OID_UUID:
        return uuid_text(s, n, err);
    case PGV_OID_BYTEA:
        return bytea_text(s, n, err);
    default:
        /* text, varchar, json, unspecified (0), and the others: text, which
         * DuckDB casts to the type the statement needs */
        return text_value(s, n, err);
    }
}

/* ---- binary --------------------------------------------------------- */

static uint64_t get_be(const char *s, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | (uint8_t)s[i];
    return v;
}

/* The fixed size of a type's binary form, checked against the data. */
static bool sized(const char *type, int32_t len, int32_t want, ds_error *err)
{
    if (len < want)
        return ds_error_set(
            err, DS_ERR_USAGE,
            "insufficient data left in message (a binary %s is %d bytes, the parameter has %d)", type, want,
            len);
    if (len > want)
        return ds_error_set(err, DS_ERR_USAGE,
                            "incorrect binary data format in bind parameter (a binary %s is %d bytes, the "
                            "parameter has %d)",
                            type, want, len);
    return true;
}

/* numeric_recv: base-10000 digits, weight, sign and display scale, read
 * back into the decimal text numeric_text() parses. */
static duckdb_value numeric_binary(const char *s, int32_t len, ds_error *err)
{
    if (len < 8)
        return refuse(err, "insufficient data left in message (a binary numeric has an 8-byte header)");
    int ndigits = (int16_t)get_be(s, 2), weight = (int16_t)get_be(s + 2, 2);
    unsigned sign = (unsigned)get_be(s + 4, 2);
    int dscale = (int16_t)get_be(s + 6, 2);
    if (ndigits < 0 || len < 8 + 2 * ndigits)
        return refuse(err, "insufficient data left in message (a binary numeric of %d digits)", ndigits);
    if (sign == 0xC000)
        return made(duckdb_create_double(NAN), err);
    if (sign == 0xD000 || sign == 0xF000)
        return made(duckdb_create_double(sign == 0xD000 ? INFINITY : -INFINITY), err);
    if ((sign != 0 && sign != 0x4000) || dscale < 0 || dscale > 1000 || weight > 1000 || weight < -1000)
        return refuse(err, "invalid sign or scale in external \"numeric\" value");
    ds_buf b = DS_BUF_INIT;
    if (sign == 0x4000)
        ds_buf_appendc(&b, '-');
    /* the integer part: groups 0..weight; then dscale fraction digits */
    if (weight < 0)
        ds_buf_appendc(&b, '0');
    for (int g = 0; g <= weight; g++) {
        int d = g < ndigits ? (int)get_be(s + 8 + 2 * g, 2) : 0;
        if (d > 9999) {
            ds_buf_free(&b);
            return refuse(err, "invalid digit in external \"numeric\" value");
        }
        ds_buf_appendf(&b, g == 0 ? "%d" : "%04d", d);
    }
    if (dscale > 0) {
        ds_buf_appendc(&b, '.');
        int written = 0;
        for (int g = weight + 1; written < dscale; g++) {
            int d = g >= 0 && g < ndigits ? (int)get_be(s + 8 + 2 * g, 2) : 0;
            char four[8];
            snprintf(four, sizeof four, "%04d", d % 10000);
            for (int k = 0; k < 4 && written < dscale; k++, written++)
                ds_buf_appendc(&b, four[k]);
        }
    }
    duckdb_value v = b.failed ? refuse(err, "out of memory") : numeric_text(b.data, b.len, err);
    ds_buf_free(&b);
    return v;
}

static duckdb_value param_binary(uint32_t oid, const char *s, int32_t len, ds_error *err)
{
    switch (oid) {
    case PGV_OID_BOOL:
        return sized("boolean", len, 1, err) ? made(duckdb_create_bool(s[0] != 0), err) : NULL;
    case PGV_OID_INT2:
        return sized("smallint", len, 2, err) ? made(duckdb_create_int16((int16_t)get_be(s, 2)), err) : NULL;
    case PGV_OID_INT4:
        return sized("integer", len, 4, err) ? made(duckdb_create_int32((int32_t)get_be(s, 4)), err) : NULL;
    case OID_OID:
        return sized("oid", len, 4, err) ? made(duckdb_create_int64((int64_t)get_be(s, 4)), err) : NULL;
    case PGV_OID_INT8:
        return sized("bigint", len, 8, err) ? made(duckdb_create_int64((int64_t)get_be(s, 8)), err) : NULL;
    case PGV_OID_FLOAT4: {
        if (!sized("real", len, 4, err))
            return NULL;
        uint32_t bits = (uint32_t)get_be(s, 4);
        float f;
        memcpy(&f, &bits, sizeof f);
        return made(duckdb_create_float(f), err);
    }
    case PGV_OID_FLOAT8: {
        if (!sized("double precision", len, 8, err))
            return NULL;
        uint64_t bits = get_be(s, 8);
        double d;
        memcpy(&d, &bits, sizeof d);
        return made(duckdb_create_double(d), err);
    }
    case PGV_OID_NUMERIC:
        return numeric_binary(s, len, err);
    case PGV_OID_DATE: {
        if (!sized("date", len, 4, err))
            return NULL;
        int32_t pg = (int32_t)get_be(s, 4);
        duckdb_date d;
        if (pg == INT32_MAX || pg == INT32_MIN)
            d.days = pg == INT32_MAX ? INT32_MAX : -INT32_MAX;
        else if (pg > INT32_MAX - 1 - PG_EPOCH_DAYS)
            return refuse(err, "date out of range");
        else
            d.days = pg + PG_EPOCH_DAYS;
        return made(duckdb_create_date(d), err);
    }
    case PGV_OID_TIMESTAMP:
    case PGV_OID_TIMESTAMPTZ: {
        if (!sized("timestamp", len, 8, err))
            return NULL;
        int64_t pg = (int64_t)get_be(s, 8);
        duckdb_timestamp ts;
        if (pg == INT64_MAX || pg == INT64_MIN)
            ts.micros = pg == INT64_MAX ? INT64_MAX : -INT64_MAX;
        else if (pg > INT64_MAX - 1 - PG_EPOCH_USECS)
            return refuse(err, "timestamp out of range");
        else
            ts.micros = pg + PG_EPOCH_USECS;
        return made(oid == PGV_OID_TIMESTAMPTZ ? duckdb_create_timestamp_tz(ts) : duckdb_create_timestamp(ts),
                    err);
    }
    case PGV_OID_TIME: {
        if (!sized("time", len, 8, err))
            return NULL;
        duckdb_time t = {(int64_t)get_be(s, 8)};
        if (t.micros < 0 || t.micros > USECS_PER_DAY)
            return refuse(err, "time out of range");
        return made(duckdb_create_time(t), err);
    }
    case PGV_OID_INTERVAL: {
        if (!sized("interval", len, 16, err))
            return NULL;
        duckdb_interval iv;
        iv.micros = (int64_t)get_be(s, 8);
        iv.days = (int32_t)get_be(s + 8, 4);
        iv.months = (int32_t)get_be(s + 12, 4);
        return made(duckdb_create_interval(iv), err);
    }
    case PGV_OID_UUID:
        return sized("uuid", len, 16, err) ? uuid_bytes_value((const uint8_t *)s, err) : NULL;
    case PGV_OID_BYTEA:
        return made(duckdb_create_blob((const uint8_t *)s, (idx_t)len), err);
    case PGV_OID_JSONB:
        if (len < 1 || s[0] != 1)
            return refuse(err, "unsupported jsonb version number %d", len < 1 ? -1 : s[0]);
        return text_value(s + 1, (size_t)len - 1, err);
    case PGV_OID_TEXT:
    case PGV_OID_VARCHAR:
    case PGV_OID_BPCHAR:
    case PGV_OID_JSON:
    case OID_NAME:
    case PGV_OID_UNKNOWN:
        return text_value(s, (size_t)len, err);
    default:
        return refuse(
            err,
            "binary format of type OID %u is not supported for parameters; send the parameter in text "
            "format",
            oid);
    }
}

duckdb_value pgv_param_value(uint32_t oid, int format, const char *data, int32_t len, ds_error *err)
{
    if (len < 0)
        return made(duckdb_create_null_value(), err);
    if (format == 0)
        return param_text(oid, data, (size_t)len, err);
    if (format == 1)
        return param_binary(oid, data, len, err);
    return refuse(err, "unsupported format code %d for a parameter (0 is text, 1 binary)", format);
}

uint32_t pgv_param_oid(duckdb_type t)
{
    switch (t) {
    case DUCKDB_TYPE_BOOLEAN:
        return PGV_OID_BOOL;
    case DUCKDB_TYPE_TINYINT:
    case DUCKDB_TYPE_SMALLINT:
    case DUCKDB_TYPE_UTINYINT:
        return PGV_OID_INT2;
    case DUCKDB_TYPE_INTEGER:
    case DUCKDB_TYPE_USMALLINT:
        return PGV_OID_INT4;
    case DUCKDB_TYPE_BIGINT:
    case DUCKDB_TYPE_UINTEGER:
        return PGV_OID_INT8;
    case DUCKDB_TYPE_UBIGINT:
    case DUCKDB_TYPE_HUGEINT:
    case DUCKDB_TYPE_UHUGEINT:
    case DUCKDB_TYPE_DECIMAL:
        return PGV_OID_NUMERIC;
    case DUCKDB_TYPE_FLOAT:
        return PGV_OID_FLOAT4;
    case DUCKDB_TYPE_DOUBLE:
        return PGV_OID_FLOAT8;
    case DUCKDB_TYPE_BLOB:
        return PGV_OID_BYTEA;
    case DUCKDB_TYPE_DATE:
        return PGV_OID_DATE;
    case DUCKDB_TYPE_TIME:
    case DUCKDB_TYPE_TIME_NS:
        return PGV_OID_TIME;
    case DUCKDB_TYPE_TIMESTAMP:
    case DUCKDB_TYPE_TIMESTAMP_S:
    case DUCKDB_TYPE_TIMESTAMP_MS:
    case DUCKDB_TYPE_TIMESTAMP_NS:
        return PGV_OID_TIMESTAMP;
    case DUCKDB_TYPE_TIMESTAMP_TZ:
        return PGV_OID_TIMESTAMPTZ;
    case DUCKDB_TYPE_INTERVAL:
        return PGV_OID_INTERVAL;
    case DUCKDB_TYPE_UUID:
        return PGV_OID_UUID;
    default:
        /* VARCHAR, and a parameter whose type DuckDB left open: text, as
         * PostgreSQL resolves an unknown parameter */
        return PGV_OID_TEXT;
    }
}
