/* SQL over HTTP (query.h): request parsing, the read-only checks, the
 * query thread with its watchdog (time and memory), value formatting, the
 * Parquet writer and the streamed answer.
 *
 * A query is refused unless it is one statement whose prepared type is a
 * read, and it runs in a READ ONLY transaction (EXPLAIN ANALYZE of a write
 * fails there). The store turns DuckDB's external access off once the file
 * is attached (store.c), so table functions reading files or URLs, COPY,
 * ATTACH and extension loading all fail while preparing. */
#include "server/query.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "store/read_functions.h"
#include "store/result_feed.h"

#define DEFAULT_TIMEOUT_MS 30000
#define MAX_TIMEOUT_MS 3600000
/* A JSON answer is one document clients parse whole: it keeps this cap
 * even when query_max_rows is 0. */
#define JSON_ROW_CAP 10000
/* Formatted output waiting for the client; the query thread waits above it. */
#define PENDING_BYTES (1u << 20)
#define RESPONSE_BLOCK 65536
/* How often the watchdog reads the store's query memory. */
#define MEMORY_POLL_MS 20

typedef enum out_format { FMT_JSON, FMT_NDJSON, FMT_CSV, FMT_PARQUET } out_format;

static const char *const content_types[] = {"application/json", "application/x-ndjson",
                                            "text/csv; charset=utf-8; header=present",
                                            "application/vnd.apache.parquet"};

/* How one column (or a nested element) is printed, built once per result. */
typedef struct colfmt {
    duckdb_type id;
    duckdb_type internal; /* DECIMAL and ENUM storage */
    uint8_t width, scale;
    idx_t array_size;
    size_t n_children;
    struct colfmt *children;
    char **names;      /* STRUCT member names */
    char **enum_words; /* ENUM dictionary */
    uint32_t n_enum;
    char *alias;   /* e.g. JSON */
    bool raw_json; /* a JSON column: its text is sent as JSON, not as a string */
} colfmt;

typedef struct qjob {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* room in out, the query finished, a cancel */
    int refs;            /* the query thread, the watchdog, the HTTP side */
    struct MHD_Connection *conn;
    struct MHD_Response *resp;
    bool suspended;
    store *st;
    char *sql;
    json_t *params; /* array */
    out_format fmt;
    int64_t max_rows; /* 0: no cap */
    int64_t timeout_ms;
    struct timespec started;
    /* The answer's head: set once, then the HTTP side is resumed. */
    bool head_ready;
    unsigned status;
    json_t *head_doc; /* the error document when status != 200 */
    /* The body so far, not yet sent. */
    ds_buf out;
    size_t out_pos;
    bool eof, broken; /* broken: ended early by an error after the head */
    int64_t rows_sent;
    bool truncated;
    bool finished;  /* the query thread left DuckDB */
    bool cancelled; /* the client went away, or shutdown */
    bool timed_out;
    bool over_memory;             /* past query_memory_limit */
    bool probing;                 /* the watchdog is using probe */
    duckdb_connection con;        /* while the query runs, for duckdb_interrupt */
    duckdb_connection writer_con; /* a Parquet answer's writer, while it runs */
    char *writer_memory;          /* its memory_limit: query_memory_limit */
    int64_t memory_cap;           /* query_memory_limit in bytes */
    char *memory_cap_text;        /* as configured, for messages */
    /* The watchdog's reading of the store's query memory (its own
     * connection), while the query runs. */
    duckdb_prepared_statement probe;
    struct qjob *next; /* registry of running queries */
} qjob;

/* Running queries: counted against query_concurrency and interrupted at
 * shutdown. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t registry_empty = PTHREAD_COND_INITIALIZER;
static qjob *registry;
static int running; /* queries holding a slot */
static int threads; /* query threads not yet ended (shutdown waits for 0) */
static bool stopping;

/* Called holding registry_lock. */
static void unregister(qjob *j)
{
    for (qjob **p = &registry; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    running--;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

static void colfmt_free(colfmt *c)
{
    for (size_t i = 0; i < c->n_children; i++) {
        colfmt_free(&c->children[i]);
        if (c->names)
            duckdb_free(c->names[i]);
    }
    free(c->children);
    free(c->names);
    for (uint32_t i = 0; i < c->n_enum; i++)
        duckdb_free(c->enum_words[i]);
    free(c->enum_words);
    duckdb_free(c->alias);
}

static void job_release(qjob *j)
{
    pthread_mutex_lock(&j->lock);
    bool last = --j->refs == 0;
    pthread_mutex_unlock(&j->lock);
    if (!last)
        return;
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->cond);
    free(j->sql);
    free(j->writer_memory);
    free(j->memory_cap_text);
    json_decref(j->params);
    json_decref(j->head_doc);
    ds_buf_free(&j->out);
    free(j);
}

/* Called holding j->lock: stops what runs in DuckDB for the query. */
static void interrupt_job(qjob *j)
{
    if (j->con != NULL)
        duckdb_interrupt(j->con);
    if (j->writer_con != NULL)
        duckdb_interrupt(j->writer_con);
}

/* Called holding j->lock: the HTTP side has something to do. */
static void wake_http(qjob *j)
{
    if (j->suspended) {
        j->suspended = false;
        MHD_resume_connection(j->conn);
    }
}

static void set_head(qjob *j, unsigned status, json_t *doc)
{
    pthread_mutex_lock(&j->lock);
    if (!j->head_ready) {
        j->head_ready = true;
        j->status = status;
        j->head_doc = doc;
        doc = NULL;
    }
    /* A refusal is answered once the query's slot is free again
     * (query_thread), so a client never sees a 429 caused by itself. */
    if (j->status == MHD_HTTP_OK)
        wake_http(j);
    pthread_mutex_unlock(&j->lock);
    json_decref(doc);
}

static void refuse(qjob *j, unsigned status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refuse(qjob *j, unsigned status, const char *fmt, ...)
{
    ds_buf b = DS_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    ds_buf_vappendf(&b, fmt, ap);
    va_end(ap);
    json_t *doc = json_pack("{s:b,s:o}", "success", 0, "error",
                            http_json_text(b.failed ? "out of memory" : ds_buf_str(&b)));
    ds_buf_free(&b);
    set_head(j, doc ? status : MHD_HTTP_INTERNAL_SERVER_ERROR, doc);
}

/* A DuckDB error after the statement was accepted: the watchdog's
 * interrupt, a refused file or network access, or the query's own. */
static void refuse_failed(qjob *j, const char *what, const char *msg)
{
    pthread_mutex_lock(&j->lock);
    bool timed_out = j->timed_out, over_memory = j->over_memory;
    pthread_mutex_unlock(&j->lock);
    if (over_memory)
        refuse(
            j, MHD_HTTP_UNPROCESSABLE_CONTENT,
            "the query held more memory than duckdb.query_memory_limit (%s) and was stopped; make it "
            "cheaper (filter or aggregate earlier, fewer columns) or raise query_memory_limit in duckdb.yaml",
            j->memory_cap_text);
    else if (msg != NULL && strstr(msg, "Out of Memory Error") != NULL)
        refuse(j, MHD_HTTP_UNPROCESSABLE_CONTENT,
               "the query ran out of the store's memory (duckdb.memory_limit, shared with the syncs) and was "
               "stopped; make it cheaper, or raise memory_limit in duckdb.yaml (%s)",
               msg);
    else if (timed_out)
        refuse(j, MHD_HTTP_GATEWAY_TIMEOUT,
               "the query ran longer than its timeout_ms (%" PRId64
               " ms) and was stopped; make it cheaper or give a larger timeout_ms",
               j->timeout_ms);
    else if (msg != NULL && strstr(msg, "Permission Error") != NULL)
        refuse(j, MHD_HTTP_BAD_REQUEST,
               "the query reaches outside the cache: files, URLs, extensions and other databases cannot be "
               "read through the API (%s)",
               msg);
    else
        refuse(j, MHD_HTTP_BAD_REQUEST, "%s: %s", what, msg ? msg : "unknown DuckDB error");
}

static const char *statement_kind(duckdb_statement_type t)
{
    static const char *const names[] = {
        [DUCKDB_STATEMENT_TYPE_INSERT] = "INSERT",
        [DUCKDB_STATEMENT_TYPE_UPDATE] = "UPDATE",
        [DUCKDB_STATEMENT_TYPE_DELETE] = "DELETE",
        [DUCKDB_STATEMENT_TYPE_PREPARE] = "PREPARE",
        [DUCKDB_STATEMENT_TYPE_CREATE] = "CREATE",
        [DUCKDB_STATEMENT_TYPE_EXECUTE] = "EXECUTE",
        [DUCKDB_STATEMENT_TYPE_ALTER] = "ALTER",
        [DUCKDB_STATEMENT_TYPE_TRANSACTION] = "transaction",
        [DUCKDB_STATEMENT_TYPE_COPY] = "COPY",
        [DUCKDB_STATEMENT_TYPE_ANALYZE] = "ANALYZE",
        [DUCKDB_STATEMENT_TYPE_VARIABLE_SET] = "SET VARIABLE",
        [DUCKDB_STATEMENT_TYPE_CREATE_FUNC] = "CREATE FUNCTION",
        [DUCKDB_STATEMENT_TYPE_DROP] = "DROP",
        [DUCKDB_STATEMENT_TYPE_EXPORT] = "EXPORT",
        [DUCKDB_STATEMENT_TYPE_PRAGMA] = "PRAGMA",
        [DUCKDB_STATEMENT_TYPE_VACUUM] = "VACUUM",
        [DUCKDB_STATEMENT_TYPE_CALL] = "CALL",
        [DUCKDB_STATEMENT_TYPE_SET] = "SET (or RESET, USE, a PRAGMA that sets)",
        [DUCKDB_STATEMENT_TYPE_LOAD] = "LOAD or INSTALL",
        [DUCKDB_STATEMENT_TYPE_RELATION] = "relation",
        [DUCKDB_STATEMENT_TYPE_EXTENSION] = "extension",
        [DUCKDB_STATEMENT_TYPE_LOGICAL_PLAN] = "logical plan",
        [DUCKDB_STATEMENT_TYPE_ATTACH] = "ATTACH",
        [DUCKDB_STATEMENT_TYPE_DETACH] = "DETACH",
        [DUCKDB_STATEMENT_TYPE_MULTI] = "multi-statement",
    };
    if ((size_t)t < sizeof names / sizeof names[0] && names[t] != NULL)
        return names[t];
    return "unknown";
}

const char *query_refused_kind(duckdb_prepared_statement ps)
{
    duckdb_statement_type t = duckdb_prepared_statement_type(ps);
    return t == DUCKDB_STATEMENT_TYPE_SELECT || t == DUCKDB_STATEMENT_TYPE_EXPLAIN ? NULL : statement_kind(t);
}

/* ---- value formatting ---- */

static bool colfmt_build(duckdb_logical_type t, colfmt *c, ds_buf *unsupported)
{
    memset(c, 0, sizeof *c);
    c->id = duckdb_get_type_id(t);
    c->alias = duckdb_logical_type_get_alias(t);
    c->raw_json = c->id == DUCKDB_TYPE_VARCHAR && c->alias != NULL && strcmp(c->alias, "JSON") == 0;
    bool ok = true;
    switch (c->id) {
    case DUCKDB_TYPE_BOOLEAN:
    case DUCKDB_TYPE_TINYINT:
    case DUCKDB_TYPE_SMALLINT:
    case DUCKDB_TYPE_INTEGER:
    case DUCKDB_TYPE_BIGINT:
    case DUCKDB_TYPE_UTINYINT:
    case DUCKDB_TYPE_USMALLINT:
    case DUCKDB_TYPE_UINTEGER:
    case DUCKDB_TYPE_UBIGINT:
    case DUCKDB_TYPE_HUGEINT:
    case DUCKDB_TYPE_UHUGEINT:
    case DUCKDB_TYPE_FLOAT:
    case DUCKDB_TYPE_DOUBLE:
    case DUCKDB_TYPE_VARCHAR:
    case DUCKDB_TYPE_BLOB:
    case DUCKDB_TYPE_DATE:
    case DUCKDB_TYPE_TIME:
    case DUCKDB_TYPE_TIMESTAMP:
    case DUCKDB_TYPE_TIMESTAMP_S:
    case DUCKDB_TYPE_TIMESTAMP_MS:
    case DUCKDB_TYPE_TIMESTAMP_NS:
    case DUCKDB_TYPE_TIMESTAMP_TZ:
    case DUCKDB_TYPE_INTERVAL:
    case DUCKDB_TYPE_UUID:
    case DUCKDB_TYPE_SQLNULL:
        break;
    case DUCKDB_TYPE_DECIMAL:
        c->width = duckdb_decimal_width(t);
        c->scale = duckdb_decimal_scale(t);
        c->internal = duckdb_decimal_internal_type(t);
        break;
    case DUCKDB_TYPE_ENUM:
        c->internal = duckdb_enum_internal_type(t);
        c->n_enum = duckdb_enum_dictionary_size(t);
        c->enum_words = calloc(c->n_enum ? c->n_enum : 1, sizeof *c->enum_words);
        for (uint32_t i = 0; c->enum_words && i < c->n_enum; i++)
            c->enum_words[i] = duckdb_enum_dictionary_value(t, i);
        ok = c->enum_words != NULL;
        break;
    case DUCKDB_TYPE_LIST:
    case DUCKDB_TYPE_ARRAY:
    case DUCKDB_TYPE_MAP: {
        duckdb_logical_type child =
            c->id == DUCKDB_TYPE_ARRAY ? duckdb_array_type_child_type(t) : duckdb_list_type_child_type(t);
        if (c->id == DUCKDB_TYPE_ARRAY)
            c->array_size = duckdb_array_type_array_size(t);
        c->children = calloc(1, sizeof *c->children);
        c->n_children = c->children ? 1 : 0;
        ok = c->children && colfmt_build(child, &c->children[0], unsupported);
        duckdb_destroy_logical_type(&child);
        break;
    }
    case DUCKDB_TYPE_STRUCT: {
        size_t n = duckdb_struct_type_child_count(t);
        c->children = calloc(n ? n : 1, sizeof *c->children);
        c->names = calloc(n ? n : 1, sizeof *c->names);
        if (c->children == NULL || c->names == NULL)
            return false;
        for (size_t i = 0; ok && i < n; i++) {
            duckdb_logical_type child = duckdb_struct_type_child_type(t, i);
            c->names[i] = duckdb_struct_type_child_name(t, i);
            c->n_children = i + 1;
            ok = colfmt_build(child, &c->children[i], unsupported);
            duckdb_destroy_logical_type(&child);
        }
        break;
    }
    default:
        if (unsupported->len == 0)
            ds_buf_append(unsupported, c->id == DUCKDB_TYPE_BIT       ? "BIT"
                                       : c->id == DUCKDB_TYPE_UNION   ? "UNION"
                                       : c->id == DUCKDB_TYPE_TIME_TZ ? "TIME WITH TIME ZONE"
                                       : c->id == DUCKDB_TYPE_BIGNUM  ? "BIGNUM"
                                                                      : "an unknown type");
        ok = false;
    }
    return ok;
}

static void type_name(ds_buf *b, const colfmt *c)
{
    static const char *const names[] = {
        [DUCKDB_TYPE_BOOLEAN] = "BOOLEAN",
        [DUCKDB_TYPE_TINYINT] = "TINYINT",
        [DUCKDB_TYPE_SMALLINT] = "SMALLINT",
        [DUCKDB_TYPE_INTEGER] = "INTEGER",
        [DUCKDB_TYPE_BIGINT] = "BIGINT",
        [DUCKDB_TYPE_UTINYINT] = "UTINYINT",
        [DUCKDB_TYPE_USMALLINT] = "USMALLINT",
        [DUCKDB_TYPE_UINTEGER] = "UINTEGER",
        [DUCKDB_TYPE_UBIGINT] = "UBIGINT",
        [DUCKDB_TYPE_HUGEINT] = "HUGEINT",
        [DUCKDB_TYPE_UHUGEINT] = "UHUGEINT",
        [DUCKDB_TYPE_FLOAT] = "FLOAT",
        [DUCKDB_TYPE_DOUBLE] = "DOUBLE",
        [DUCKDB_TYPE_VARCHAR] = "VARCHAR",
        [DUCKDB_TYPE_BLOB] = "BLOB",
        [DUCKDB_TYPE_DATE] = "DATE",
        [DUCKDB_TYPE_TIME] = "TIME",
        [DUCKDB_TYPE_TIMESTAMP] = "TIMESTAMP",
        [DUCKDB_TYPE_TIMESTAMP_S] = "TIMESTAMP_S",
        [DUCKDB_TYPE_TIMESTAMP_MS] = "TIMESTAMP_MS",
        [DUCKDB_TYPE_TIMESTAMP_NS] = "TIMESTAMP_NS",
        [DUCKDB_TYPE_TIMESTAMP_TZ] = "TIMESTAMP WITH TIME ZONE",
        [DUCKDB_TYPE_INTERVAL] = "INTERVAL",
        [DUCKDB_TYPE_UUID] = "UUID",
        [DUCKDB_TYPE_ENUM] = "ENUM",
        [DUCKDB_TYPE_SQLNULL] = "NULL",
    };
    if (c->alias != NULL && c->alias[0] != '\0') {
        ds_buf_append(b, c->alias);
        return;
    }
    switch (c->id) {
    case DUCKDB_TYPE_DECIMAL:
        ds_buf_appendf(b, "DECIMAL(%u,%u)", c->width, c->scale);
        return;
    case DUCKDB_TYPE_LIST:
        type_name(b, &c->children[0]);
        ds_buf_append(b, "[]");
        return;
    case DUCKDB_TYPE_ARRAY:
        type_name(b, &c->children[0]);
        ds_buf_appendf(b, "[%llu]", (unsigned long long)c->array_size);
        return;
    case DUCKDB_TYPE_MAP:
        ds_buf_append(b, "MAP(");
        type_name(b, &c->children[0].children[0]);
        ds_buf_append(b, ", ");
        type_name(b, &c->children[0].children[1]);
        ds_buf_append(b, ")");
        return;
    case DUCKDB_TYPE_STRUCT:
        ds_buf_append(b, "STRUCT(");
        for (size_t i = 0; i < c->n_children; i++) {
            ds_buf_append(b, i ? ", " : "");
            ds_buf_append_ident(b, c->names[i]);
            ds_buf_append(b, " ");
            type_name(b, &c->children[i]);
        }
        ds_buf_append(b, ")");
        return;
    default:
        ds_buf_append(b, (size_t)c->id < sizeof names / sizeof names[0] && names[c->id] ? names[c->id] : "?");
    }
}

static void json_string_body(ds_buf *b, const char *s, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        ds_buf_appendn(b, s + run, i - run);
        run = i + 1;
        switch (ch) {
        case '"':
            ds_buf_append(b, "\\\"");
            break;
        case '\\':
            ds_buf_append(b, "\\\\");
            break;
        case '\n':
            ds_buf_append(b, "\\n");
            break;
        case '\r':
            ds_buf_append(b, "\\r");
            break;
        case '\t':
            ds_buf_append(b, "\\t");
            break;
        default:
            ds_buf_appendf(b, "\\u%04x", ch);
        }
    }
    ds_buf_appendn(b, s + run, n - run);
}

static void put_json_string(ds_buf *b, const char *s, size_t n)
{
    ds_buf_appendc(b, '"');
    json_string_body(b, s, n);
    ds_buf_appendc(b, '"');
}

/* The shortest of %.15g..%.17g that reads back as the same double. */
static void put_double(ds_buf *b, double v, int min_digits, int max_digits)
{
    char tmp[40];
    for (int p = min_digits; p <= max_digits; p++) {
        snprintf(tmp, sizeof tmp, "%.*g", p, v);
        if (p == max_digits ||
            (max_digits == 9 ? (float)strtod(tmp, NULL) == (float)v : strtod(tmp, NULL) == v))
            break;
    }
    ds_buf_append(b, tmp);
}

static void put_u128(ds_buf *b, unsigned __int128 v, bool negative, int scale)
{
    char digits[48];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v != 0);
    while (n <= scale)
        digits[n++] = '0';
    if (negative)
        ds_buf_appendc(b, '-');
    for (int i = n - 1; i >= 0; i--) {
        ds_buf_appendc(b, digits[i]);
        if (scale > 0 && i == scale)
            ds_buf_appendc(b, '.');
    }
}

static void put_i128(ds_buf *b, __int128 v, int scale)
{
    bool neg = v < 0;
    put_u128(b, neg ? (unsigned __int128)0 - (unsigned __int128)v : (unsigned __int128)v, neg, scale);
}

static void put_frac(ds_buf *b, int64_t frac, int digits)
{
    if (frac == 0)
        return;
    char tmp[16];
    snprintf(tmp, sizeof tmp, "%0*" PRId64, digits, frac);
    size_t n = strlen(tmp);
    while (n > 0 && tmp[n - 1] == '0')
        n--;
    ds_buf_appendc(b, '.');
    ds_buf_appendn(b, tmp, n);
}

static void put_date(ds_buf *b, int32_t days)
{
    if (days == INT32_MAX || days == -INT32_MAX) {
        ds_buf_append(b, days > 0 ? "infinity" : "-infinity");
        return;
    }
    duckdb_date_struct d = duckdb_from_date((duckdb_date){days});
    ds_buf_appendf(b, d.year < 0 ? "%05d-%02d-%02d" : "%04d-%02d-%02d", d.year, d.month, d.day);
}

static void put_time_of_day(ds_buf *b, int64_t micros)
{
    ds_buf_appendf(b, "%02d:%02d:%02d", (int)(micros / 3600000000LL), (int)(micros / 60000000LL % 60),
                   (int)(micros / 1000000 % 60));
    put_frac(b, micros % 1000000, 6);
}

/* ISO 8601: 2024-01-02T03:04:05.123456, with Z for TIMESTAMPTZ (the
 * connection's TimeZone is UTC). sub: extra digits below microseconds
 * (TIMESTAMP_NS). */
static void put_timestamp(ds_buf *b, int64_t micros, int nanos, bool tz)
{
    if (micros == INT64_MAX || micros == -INT64_MAX) {
        ds_buf_append(b, micros > 0 ? "infinity" : "-infinity");
        return;
    }
    int64_t days = micros / 86400000000LL, rest = micros % 86400000000LL;
    if (rest < 0) {
        rest += 86400000000LL;
        days--;
    }
    put_date(b, (int32_t)days);
    ds_buf_appendc(b, 'T');
    ds_buf_appendf(b, "%02d:%02d:%02d", (int)(rest / 3600000000LL), (int)(rest / 60000000LL % 60),
                   (int)(rest / 1000000 % 60));
    if (nanos > 0)
        put_frac(b, (rest % 1000000) * 1000 + nanos, 9);
    else
        put_frac(b, rest % 1000000, 6);
    if (tz)
        ds_buf_appendc(b, 'Z');
}

/* ISO 8601 duration: P1Y2M3DT4H5M6.5S; PT0S when zero. */
static void put_interval(ds_buf *b, duckdb_interval iv)
{
    ds_buf_appendc(b, 'P');
    if (iv.months / 12)
        ds_buf_appendf(b, "%dY", iv.months / 12);
    if (iv.months % 12)
        ds_buf_appendf(b, "%dM", iv.months % 12);
    if (iv.days)
        ds_buf_appendf(b, "%dD", iv.days);
    if (iv.micros != 0 || (iv.months == 0 && iv.days == 0)) {
        int64_t m = iv.micros;
        ds_buf_appendc(b, 'T');
        if ((int64_t)(m / 3600000000LL))
            ds_buf_appendf(b, "%" PRId64 "H", (int64_t)(m / 3600000000LL));
        if ((int64_t)(m / 60000000LL % 60))
            ds_buf_appendf(b, "%" PRId64 "M", (int64_t)(m / 60000000LL % 60));
        if (m % 60000000LL || m == 0) {
            int64_t us = m % 60000000LL;
            if (us < 0) {
                ds_buf_appendc(b, '-');
                us = -us;
            }
            ds_buf_appendf(b, "%" PRId64, us / 1000000);
            put_frac(b, us % 1000000, 6);
            ds_buf_appendc(b, 'S');
        }
    }
}

static void put_uuid(ds_buf *b, duckdb_hugeint h)
{
    uint64_t hi = (uint64_t)h.upper ^ (UINT64_C(1) << 63), lo = h.lower;
    ds_buf_appendf(b, "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64, hi >> 32,
                   (hi >> 16) & 0xffff, hi & 0xffff, lo >> 48, lo & UINT64_C(0xffffffffffff));
}

static void put_blob(ds_buf *b, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\' && s[i] != '"' && s[i] != '\'')
            ds_buf_appendc(b, (char)s[i]);
        else
            ds_buf_appendf(b, "\\x%02X", s[i]);
    }
}

static uint64_t enum_index(const colfmt *c, const void *data, idx_t row)
{
    switch (c->internal) {
    case DUCKDB_TYPE_UTINYINT:
        return ((const uint8_t *)data)[row];
    case DUCKDB_TYPE_USMALLINT:
        return ((const uint16_t *)data)[row];
    default:
        return ((const uint32_t *)data)[row];
    }
}

static __int128 decimal_value(const colfmt *c, const void *data, idx_t row)
{
    switch (c->internal) {
    case DUCKDB_TYPE_SMALLINT:
        return ((const int16_t *)data)[row];
    case DUCKDB_TYPE_INTEGER:
        return ((const int32_t *)data)[row];
    case DUCKDB_TYPE_BIGINT:
        return ((const int64_t *)data)[row];
    default: {
        duckdb_hugeint h = ((const duckdb_hugeint *)data)[row];
        return (__int128)(((unsigned __int128)(uint64_t)h.upper << 64) | h.lower);
    }
    }
}

#define JSON_SAFE_INT (INT64_C(1) << 53)

static void put_value(ds_buf *b, const colfmt *c, duckdb_vector vec, idx_t row, bool json);

/* Lists and arrays as JSON arrays, structs as objects, maps as arrays of
 * {"key","value"} objects: JSON in every format. */
static void put_nested(ds_buf *b, const colfmt *c, duckdb_vector vec, void *data, idx_t row)
{
    if (c->id == DUCKDB_TYPE_STRUCT) {
        ds_buf_appendc(b, '{');
        for (size_t i = 0; i < c->n_children; i++) {
            ds_buf_append(b, i ? "," : "");
            put_json_string(b, c->names[i], strlen(c->names[i]));
            ds_buf_appendc(b, ':');
            put_value(b, &c->children[i], duckdb_struct_vector_get_child(vec, i), row, true);
        }
        ds_buf_appendc(b, '}');
        return;
    }
    idx_t first, n;
    duckdb_vector child;
    if (c->id == DUCKDB_TYPE_ARRAY) {
        first = row * c->array_size;
        n = c->array_size;
        child = duckdb_array_vector_get_child(vec);
    } else {
        duckdb_list_entry e = ((const duckdb_list_entry *)data)[row];
        first = e.offset;
        n = e.length;
        child = duckdb_list_vector_get_child(vec);
    }
    ds_buf_appendc(b, '[');
    for (idx_t i = 0; i < n; i++) {
        ds_buf_append(b, i ? "," : "");
        put_value(b, &c->children[0], child, first + i, true);
    }
    ds_buf_appendc(b, ']');
}

/* One value. json: JSON text (NaN and infinities null, big integers and
 * decimals as strings); else the plain text a CSV field holds (nested
 * values as JSON, NaN and infinities as DuckDB prints them). */
static void put_value(ds_buf *b, const colfmt *c, duckdb_vector vec, idx_t row, bool json)
{
    uint64_t *valid = duckdb_vector_get_validity(vec);
    if (valid != NULL && !duckdb_validity_row_is_valid(valid, row)) {
        if (json)
            ds_buf_append(b, "null");
        return;
    }
    void *data = duckdb_vector_get_data(vec);
    const char *q = json ? "\"" : "";
    switch (c->id) {
    case DUCKDB_TYPE_SQLNULL:
        if (json)
            ds_buf_append(b, "null");
        return;
    case DUCKDB_TYPE_BOOLEAN:
        ds_buf_append(b, ((const bool *)data)[row] ? "true" : "false");
        return;
    case DUCKDB_TYPE_TINYINT:
        ds_buf_appendf(b, "%d", ((const int8_t *)data)[row]);
        return;
    case DUCKDB_TYPE_SMALLINT:
        ds_buf_appendf(b, "%d", ((const int16_t *)data)[row]);
        return;
    case DUCKDB_TYPE_INTEGER:
        ds_buf_appendf(b, "%" PRId32, ((const int32_t *)data)[row]);
        return;
    case DUCKDB_TYPE_UTINYINT:
        ds_buf_appendf(b, "%u", ((const uint8_t *)data)[row]);
        return;
    case DUCKDB_TYPE_USMALLINT:
        ds_buf_appendf(b, "%u", ((const uint16_t *)data)[row]);
        return;
    case DUCKDB_TYPE_UINTEGER:
        ds_buf_appendf(b, "%" PRIu32, ((const uint32_t *)data)[row]);
        return;
    case DUCKDB_TYPE_BIGINT: {
        int64_t v = ((const int64_t *)data)[row];
        bool big = json && (v > JSON_SAFE_INT || v < -JSON_SAFE_INT);
        ds_buf_appendf(b, big ? "\"%" PRId64 "\"" : "%" PRId64, v);
        return;
    }
    case DUCKDB_TYPE_UBIGINT: {
        uint64_t v = ((const uint64_t *)data)[row];
        ds_buf_appendf(b, json && v > (uint64_t)JSON_SAFE_INT ? "\"%" PRIu64 "\"" : "%" PRIu64, v);
        return;
    }
    case DUCKDB_TYPE_HUGEINT: {
        duckdb_hugeint h = ((const duckdb_hugeint *)data)[row];
        ds_buf_append(b, q);
        put_i128(b, (__int128)(((unsigned __int128)(uint64_t)h.upper << 64) | h.lower), 0);
        ds_buf_append(b, q);
        return;
    }
    case DUCKDB_TYPE_UHUGEINT: {
        duckdb_uhugeint h = ((const duckdb_uhugeint *)data)[row];
        ds_buf_append(b, q);
        put_u128(b, ((unsigned __int128)h.upper << 64) | h.lower, false, 0);
        ds_buf_append(b, q);
        return;
    }
    case DUCKDB_TYPE_DECIMAL:
        ds_buf_append(b, q);
        put_i128(b, decimal_value(c, data, row), c->scale);
        ds_buf_append(b, q);
        return;
    case DUCKDB_TYPE_FLOAT:
    case DUCKDB_TYPE_DOUBLE: {
        double v = c->id == DUCKDB_TYPE_FLOAT ? ((const float *)data)[row] : ((const double *)data)[row];
        if (isnan(v) || isinf(v))
            ds_buf_append(b, json ? "null" : isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
        else if (c->id == DUCKDB_TYPE_FLOAT)
            put_double(b, v, 6, 9);
        else
            put_double(b, v, 15, 17);
        return;
    }
    case DUCKDB_TYPE_VARCHAR:
    case DUCKDB_TYPE_BLOB: {
        duckdb_string_t *s = &((duckdb_string_t *)data)[row];
        const char *p = duckdb_string_t_data(s);
        uint32_t n = duckdb_string_t_length(*s);
        if (c->id == DUCKDB_TYPE_BLOB && json) {
            /* DuckDB's text of a blob (\xAA escapes), as a JSON string. */
            ds_buf text = DS_BUF_INIT;
            put_blob(&text, (const unsigned char *)p, n);
            put_json_string(b, text.data ? text.data : "", text.len);
            b->failed |= text.failed;
            ds_buf_free(&text);
        } else if (c->id == DUCKDB_TYPE_BLOB) {
            put_blob(b, (const unsigned char *)p, n);
        } else if (json && c->raw_json && n > 0) {
            ds_buf_appendn(b, p, n);
        } else if (json) {
            put_json_string(b, p, n);
        } else {
            ds_buf_appendn(b, p, n);
        }
        return;
    }
    case DUCKDB_TYPE_LIST:
    case DUCKDB_TYPE_MAP:
    case DUCKDB_TYPE_ARRAY:
    case DUCKDB_TYPE_STRUCT:
        put_nested(b, c, vec, data, row);
        return;
    case DUCKDB_TYPE_ENUM: {
        uint64_t i = enum_index(c, data, row);
        const char *w = i < c->n_enum ? c->enum_words[i] : "";
        if (json)
            put_json_string(b, w, strlen(w));
        else
            ds_buf_append(b, w);
        return;
    }
    default:
        break;
    }
    ds_buf_append(b, q);
    switch (c->id) {
    case DUCKDB_TYPE_DATE:
        put_date(b, ((const int32_t *)data)[row]);
        break;
    case DUCKDB_TYPE_TIME:
        put_time_of_day(b, ((const int64_t *)data)[row]);
        break;
    case DUCKDB_TYPE_TIMESTAMP:
    case DUCKDB_TYPE_TIMESTAMP_TZ:
        put_timestamp(b, ((const int64_t *)data)[row], 0, c->id == DUCKDB_TYPE_TIMESTAMP_TZ);
        break;
    case DUCKDB_TYPE_TIMESTAMP_S: {
        int64_t v = ((const int64_t *)data)[row];
        put_timestamp(b, v == INT64_MAX || v == -INT64_MAX ? v : v * 1000000, 0, false);
        break;
    }
    case DUCKDB_TYPE_TIMESTAMP_MS: {
        int64_t v = ((const int64_t *)data)[row];
        put_timestamp(b, v == INT64_MAX || v == -INT64_MAX ? v : v * 1000, 0, false);
        break;
    }
    case DUCKDB_TYPE_TIMESTAMP_NS: {
        int64_t v = ((const int64_t *)data)[row], us = v / 1000;
        int ns = (int)(v % 1000);
        if (ns < 0) {
            ns += 1000;
            us--;
        }
        put_timestamp(b, v == INT64_MAX || v == -INT64_MAX ? v : us, ns, false);
        break;
    }
    case DUCKDB_TYPE_INTERVAL:
        put_interval(b, ((const duckdb_interval *)data)[row]);
        break;
    case DUCKDB_TYPE_UUID:
        put_uuid(b, ((const duckdb_hugeint *)data)[row]);
        break;
    default:
        break;
    }
    ds_buf_append(b, q);
}

/* A CSV field (RFC 4180): quoted when it holds a comma, quote, CR or LF,
 * or is an empty string (an empty field is NULL). */
static void put_csv_field(ds_buf *b, ds_buf *tmp, const colfmt *c, duckdb_vector vec, idx_t row)
{
    uint64_t *valid = duckdb_vector_get_validity(vec);
    if (valid != NULL && !duckdb_validity_row_is_valid(valid, row))
        return;
    ds_buf_reset(tmp);
    put_value(tmp, c, vec, row, false);
    const char *s = tmp->data ? tmp->data : "";
    if (tmp->len > 0 && strpbrk(s, ",\"\r\n") == NULL && strlen(s) == tmp->len) {
        ds_buf_appendn(b, s, tmp->len);
        return;
    }
    ds_buf_appendc(b, '"');
    for (size_t i = 0; i < tmp->len; i++) {
        if (s[i] == '"')
            ds_buf_appendc(b, '"');
        ds_buf_appendc(b, s[i]);
    }
    ds_buf_appendc(b, '"');
}

static void put_csv_text(ds_buf *b, const char *s)
{
    if (s[0] != '\0' && strpbrk(s, ",\"\r\n") == NULL) {
        ds_buf_append(b, s);
        return;
    }
    ds_buf_appendc(b, '"');
    for (; *s; s++) {
        if (*s == '"')
            ds_buf_appendc(b, '"');
        ds_buf_appendc(b, *s);
    }
    ds_buf_appendc(b, '"');
}

/* ---- the query thread ---- */

typedef struct result_shape {
    idx_t n;
    colfmt *cols;
    const char **names;
} result_shape;

/* Moves text into the job's output, waiting while the client has more
 * than PENDING_BYTES unread. False when the client is gone. */
static bool push_output(qjob *j, ds_buf *text)
{
    pthread_mutex_lock(&j->lock);
    while (j->out.len - j->out_pos > PENDING_BYTES && !j->cancelled)
        pthread_cond_wait(&j->cond, &j->lock);
    bool ok = !j->cancelled;
    if (ok && j->out_pos > 0) {
        memmove(j->out.data, j->out.data + j->out_pos, j->out.len - j->out_pos);
        j->out.len -= j->out_pos;
        j->out.data[j->out.len] = '\0';
        j->out_pos = 0;
    }
    if (ok && text->len > 0)
        ok = ds_buf_appendn(&j->out, text->data, text->len);
    wake_http(j);
    pthread_mutex_unlock(&j->lock);
    ds_buf_reset(text);
    return ok;
}

static void put_head(ds_buf *b, const qjob *j, const result_shape *sh)
{
    if (j->fmt == FMT_JSON) {
        ds_buf_append(b, "{\"columns\":[");
        for (idx_t i = 0; i < sh->n; i++) {
            ds_buf_append(b, i ? ",{\"name\":" : "{\"name\":");
            put_json_string(b, sh->names[i], strlen(sh->names[i]));
            ds_buf_append(b, ",\"type\":\"");
            ds_buf tn = DS_BUF_INIT;
            type_name(&tn, &sh->cols[i]);
            json_string_body(b, tn.data ? tn.data : "", tn.len);
            ds_buf_free(&tn);
            ds_buf_append(b, "\"}");
        }
        ds_buf_append(b, "],\"rows\":[");
    } else if (j->fmt == FMT_CSV) {
        for (idx_t i = 0; i < sh->n; i++) {
            ds_buf_append(b, i ? "," : "");
            put_csv_text(b, sh->names[i]);
        }
        ds_buf_append(b, "\r\n");
    }
}

static void put_row(ds_buf *b, ds_buf *tmp, const qjob *j, const result_shape *sh, duckdb_data_chunk chunk,
                    idx_t row, bool first)
{
    if (j->fmt == FMT_JSON)
        ds_buf_append(b, first ? "[" : ",[");
    else if (j->fmt == FMT_NDJSON)
        ds_buf_appendc(b, '{');
    for (idx_t c = 0; c < sh->n; c++) {
        duckdb_vector vec = duckdb_data_chunk_get_vector(chunk, c);
        if (c > 0)
            ds_buf_appendc(b, ',');
        if (j->fmt == FMT_CSV) {
            put_csv_field(b, tmp, &sh->cols[c], vec, row);
            continue;
        }
        if (j->fmt == FMT_NDJSON) {
            put_json_string(b, sh->names[c], strlen(sh->names[c]));
            ds_buf_appendc(b, ':');
        }
        put_value(b, &sh->cols[c], vec, row, true);
    }
    ds_buf_append(b, j->fmt == FMT_JSON ? "]" : j->fmt == FMT_NDJSON ? "}\n" : "\r\n");
}

/* Fetches and formats every chunk (up to the row cap). The head is
 * answered once the first chunk is there, so errors that come with it
 * still get their own status; a later error breaks the stream off. */
static void stream_result(qjob *j, duckdb_result *res, const result_shape *sh)
{
    ds_buf text = DS_BUF_INIT, tmp = DS_BUF_INIT;
    put_head(&text, j, sh);
    bool head_sent = false, ok = true, first = true;
    int64_t rows = 0;
    for (;;) {
        duckdb_data_chunk chunk = duckdb_fetch_chunk(*res);
        const char *error = duckdb_result_error(res);
        if (chunk == NULL && error != NULL) {
            if (!head_sent)
                refuse_failed(j, "the query failed", error);
            ok = false;
            break;
        }
        idx_t n = chunk ? duckdb_data_chunk_get_size(chunk) : 0;
        if (n == 0) {
            duckdb_destroy_data_chunk(&chunk);
            break;
        }
        if (j->max_rows > 0 && rows >= j->max_rows) {
            j->truncated = true;
            duckdb_destroy_data_chunk(&chunk);
            break;
        }
        idx_t r = 0;
        for (; r < n && !(j->max_rows > 0 && rows >= j->max_rows); r++, rows++) {
            put_row(&text, &tmp, j, sh, chunk, r, first);
            first = false;
        }
        if (r < n)
            j->truncated = true;
        duckdb_destroy_data_chunk(&chunk);
        if (text.failed) {
            if (!head_sent)
                refuse(j, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory formatting the result");
            ok = false;
            break;
        }
        if (!head_sent) {
            set_head(j, MHD_HTTP_OK, NULL);
            head_sent = true;
        }
        if (!push_output(j, &text)) {
            ok = false;
            break;
        }
        if (j->truncated)
            break;
    }
    if (ok && j->fmt == FMT_JSON) {
        ds_buf_appendf(&text, "],\"row_count\":%" PRId64 ",\"truncated\":%s,\"elapsed_ms\":%.1f}", rows,
                       j->truncated ? "true" : "false", ms_since(&j->started));
    }
    if (ok && !head_sent)
        set_head(j, MHD_HTTP_OK, NULL);
    pthread_mutex_lock(&j->lock);
    j->rows_sent = rows;
    pthread_mutex_unlock(&j->lock);
    if (ok)
        ok = push_output(j, &text);
    pthread_mutex_lock(&j->lock);
    if (!ok && j->head_ready && j->status == MHD_HTTP_OK)
        j->broken = true;
    pthread_mutex_unlock(&j->lock);
    ds_buf_free(&text);
    ds_buf_free(&tmp);
}

/* ---- Parquet ----
 *
 * DuckDB writes Parquet only to a path. The user's query runs as for every
 * format, on the store's database, whose external access stays off. Its
 * chunks feed a table function of a private in-memory DuckDB (one per
 * answer) that runs a fixed COPY ... TO '/proc/self/fd/N' (FORMAT parquet),
 * where N is the write end of a pipe the query thread reads and streams.
 * The private database may open that one path and nothing else; no user
 * text reaches it, and the pipe has no name any query could list or read. */

/* Rows per row group: what the writer holds in memory before it writes. */
#define PARQUET_ROW_GROUP 16384

typedef struct pq_writer {
    duckdb_connection con;
    int fd; /* the pipe's write end, closed when the COPY is done */
    const char *sql;
    char *error;
} pq_writer;

static void *writer_thread(void *arg)
{
    pq_writer *w = arg;
    duckdb_result res;
    if (duckdb_query(w->con, w->sql, &res) == DuckDBError) {
        const char *e = duckdb_result_error(&res);
        w->error = strdup(e ? e : "unknown DuckDB error");
    }
    duckdb_destroy_result(&res);
    close(w->fd);
    return NULL;
}

/* The private database that writes the answer: it may open the pipe's
 * path only and has no temp directory (the data never goes to a file). */
static bool open_writer(qjob *j, store_result_feed *f, const char *path, duckdb_database *db,
                        duckdb_connection *con, ds_buf *why)
{
    store_writer_settings s = {.memory_limit = j->writer_memory, .temp_directory = "", .allowed_path = path};
    ds_error err;
    if (store_writer_open(&s, f, db, con, &err))
        return true;
    ds_buf_append(why, err.msg);
    return false;
}

/* A type DuckDB's Parquet writer would not keep exactly, or NULL. */
static const char *parquet_lossy(const colfmt *c)
{
    if (c->id == DUCKDB_TYPE_HUGEINT || c->id == DUCKDB_TYPE_UHUGEINT)
        return c->id == DUCKDB_TYPE_HUGEINT ? "HUGEINT" : "UHUGEINT";
    for (size_t i = 0; i < c->n_children; i++) {
        const char *t = parquet_lossy(&c->children[i]);
        if (t != NULL)
            return t;
    }
    return NULL;
}

/* Reads the writer's pipe into the answer. The head waits until the file
 * is whole or PENDING_BYTES of it are written, so a failure early in the
 * COPY still gets its own status. After the client left, the rest is read
 * and dropped until the interrupted writer closes the pipe. */
static void pump_parquet(qjob *j, int fd, bool *head_sent, ds_buf *held)
{
    char block[RESPONSE_BLOCK];
    bool client = true;
    for (;;) {
        ssize_t n = read(fd, block, sizeof block);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (!client)
            continue;
        ds_buf_appendn(held, block, (size_t)n);
        if (!*head_sent && held->len < PENDING_BYTES && !held->failed)
            continue;
        if (!*head_sent) {
            set_head(j, MHD_HTTP_OK, NULL);
            *head_sent = true;
        }
        if (!push_output(j, held)) {
            client = false;
            pthread_mutex_lock(&j->lock);
            interrupt_job(j);
            pthread_mutex_unlock(&j->lock);
        }
    }
}

static void stream_parquet(qjob *j, duckdb_result *res, const result_shape *sh)
{
    for (idx_t i = 0; i < sh->n; i++) {
        const char *lossy = parquet_lossy(&sh->cols[i]);
        if (lossy != NULL) {
            refuse(j, MHD_HTTP_BAD_REQUEST,
                   "column \"%s\" holds %s values, which Parquet cannot store exactly; cast it in the query, "
                   "e.g. CAST(x AS DECIMAL(38,0)) or CAST(x AS VARCHAR)",
                   sh->names[i], lossy);
            return;
        }
    }
    store_result_feed f = {.res = res, .max_rows = j->max_rows};
    f.first = duckdb_fetch_chunk(*res);
    const char *error = duckdb_result_error(res);
    if (f.first == NULL && error != NULL) {
        refuse_failed(j, "the query failed", error);
        return;
    }
    f.ended = f.first == NULL; /* no row: fetching again would fail */
    int fds[2] = {-1, -1};
    duckdb_database db = NULL;
    duckdb_connection con = NULL;
    ds_buf path = DS_BUF_INIT, sql = DS_BUF_INIT, why = DS_BUF_INIT, held = DS_BUF_INIT;
    pq_writer w = {.fd = -1};
    pthread_t writer;
    bool started = false;
    if (pipe2(fds, O_CLOEXEC) != 0) {
        ds_buf_appendf(&why, "cannot make a pipe for the Parquet writer: %s", strerror(errno));
    } else {
        ds_buf_appendf(&path, "/proc/self/fd/%d", fds[1]);
        ds_buf_append(&sql, "COPY (FROM duckstore_result()) TO ");
        ds_buf_append_literal(&sql, ds_buf_str(&path));
        ds_buf_appendf(&sql, " (FORMAT parquet, USE_TMP_FILE false, ROW_GROUP_SIZE %d)", PARQUET_ROW_GROUP);
        if (path.failed || sql.failed)
            ds_buf_append(&why, "out of memory");
        else if (open_writer(j, &f, ds_buf_str(&path), &db, &con, &why)) {
            w = (pq_writer){.con = con, .fd = fds[1], .sql = ds_buf_str(&sql)};
            pthread_mutex_lock(&j->lock);
            j->writer_con = con;
            bool go = !j->cancelled;
            pthread_mutex_unlock(&j->lock);
            started = go && pthread_create(&writer, NULL, writer_thread, &w) == 0;
            if (!started)
                ds_buf_append(&why,
                              go ? "cannot start the Parquet writer's thread" : "the query was stopped");
        }
    }
    if (started) {
        fds[1] = -1; /* the writer closes it */
        bool head_sent = false;
        pump_parquet(j, fds[0], &head_sent, &held);
        pthread_join(writer, NULL);
        pthread_mutex_lock(&j->lock);
        j->writer_con = NULL;
        j->rows_sent = f.rows;
        j->truncated = f.truncated;
        pthread_mutex_unlock(&j->lock);
        bool ok = w.error == NULL && !held.failed;
        if (!ok && !head_sent) {
            if (f.error != NULL)
                refuse_failed(j, "the query failed", f.error);
            else if (w.error != NULL && strstr(w.error, "Out of Memory Error") != NULL)
                refuse(j, MHD_HTTP_UNPROCESSABLE_CONTENT,
                       "a row group of %d rows does not fit the Parquet writer's memory, "
                       "duckdb.query_memory_limit (%s); select fewer or narrower columns or raise "
                       "query_memory_limit in duckdb.yaml",
                       PARQUET_ROW_GROUP, j->memory_cap_text);
            else
                refuse_failed(j, "the Parquet file cannot be written",
                              held.failed ? "out of memory" : w.error);
        }
        if (ok && !head_sent)
            set_head(j, MHD_HTTP_OK, NULL);
        if (ok)
            ok = push_output(j, &held);
        pthread_mutex_lock(&j->lock);
        if (!ok && j->head_ready && j->status == MHD_HTTP_OK)
            j->broken = true;
        pthread_mutex_unlock(&j->lock);
    } else {
        refuse(j, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s", why.data ? why.data : "out of memory");
    }
    if (con != NULL)
        duckdb_disconnect(&con);
    if (db != NULL)
        duckdb_close(&db);
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    store_result_feed_free(&f);
    free(w.error);
    ds_buf_free(&path);
    ds_buf_free(&sql);
    ds_buf_free(&why);
    ds_buf_free(&held);
}

/* JSON values bound by type: null, boolean, integer, real, string. */
static bool bind_params(qjob *j, duckdb_prepared_statement ps)
{
    idx_t want = duckdb_nparams(ps);
    size_t given = json_array_size(j->params);
    if (want != given) {
        refuse(j, MHD_HTTP_BAD_REQUEST, "the statement takes %llu parameter(s); %zu given",
               (unsigned long long)want, given);
        return false;
    }
    for (size_t i = 0; i < given; i++) {
        json_t *v = json_array_get(j->params, i);
        idx_t at = i + 1;
        duckdb_state rc;
        if (json_is_null(v))
            rc = duckdb_bind_null(ps, at);
        else if (json_is_boolean(v))
            rc = duckdb_bind_boolean(ps, at, json_is_true(v));
        else if (json_is_integer(v))
            rc = duckdb_bind_int64(ps, at, json_integer_value(v));
        else if (json_is_real(v))
            rc = duckdb_bind_double(ps, at, json_real_value(v));
        else if (json_is_string(v))
            rc = duckdb_bind_varchar_length(ps, at, json_string_value(v), json_string_length(v));
        else {
            refuse(j, MHD_HTTP_BAD_REQUEST,
                   "parameter %zu is an array or object; parameters are null, booleans, numbers or strings",
                   i + 1);
            return false;
        }
        if (rc == DuckDBError) {
            refuse(j, MHD_HTTP_BAD_REQUEST, "parameter %zu cannot be bound: %s", i + 1,
                   duckdb_prepare_error(ps) ? duckdb_prepare_error(ps) : "wrong type");
            return false;
        }
    }
    return true;
}

static bool describe_result(qjob *j, duckdb_result *res, result_shape *sh)
{
    sh->n = duckdb_column_count(res);
    sh->cols = calloc(sh->n ? sh->n : 1, sizeof *sh->cols);
    sh->names = calloc(sh->n ? sh->n : 1, sizeof *sh->names);
    if (sh->cols == NULL || sh->names == NULL) {
        refuse(j, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
        return false;
    }
    for (idx_t i = 0; i < sh->n; i++) {
        sh->names[i] = duckdb_column_name(res, i);
        duckdb_logical_type t = duckdb_column_logical_type(res, i);
        ds_buf why = DS_BUF_INIT;
        bool ok = colfmt_build(t, &sh->cols[i], &why);
        duckdb_destroy_logical_type(&t);
        if (!ok) {
            refuse(j, MHD_HTTP_BAD_REQUEST,
                   "column \"%s\" has a type the API cannot send (%s); cast it in the query, e.g. "
                   "CAST(x AS VARCHAR)",
                   sh->names[i], why.data ? why.data : "out of memory");
            ds_buf_free(&why);
            return false;
        }
        ds_buf_free(&why);
    }
    return true;
}

static void shape_free(result_shape *sh)
{
    for (idx_t i = 0; sh->cols && i < sh->n; i++)
        colfmt_free(&sh->cols[i]);
    free(sh->cols);
    free(sh->names);
}

/* A wait for the readers' turn ends with the query: its timeout, its
 * client gone, shutdown. */
static bool stop_waiting(void *arg)
{
    qjob *j = arg;
    pthread_mutex_lock(&j->lock);
    bool stop = j->cancelled;
    pthread_mutex_unlock(&j->lock);
    return stop;
}

/* The readers' turn (store/read_gate.h), shared with the PostgreSQL
 * protocol's sessions; false: the query was stopped while it waited. */
static bool take_turn(qjob *j, read_turn *turn)
{
    return read_gate_enter(store_read_gate(j->st), turn, stop_waiting, j);
}

static void run_statement(qjob *j, duckdb_connection con)
{
    duckdb_extracted_statements ex = NULL;
    idx_t n = duckdb_extract_statements(con, j->sql, &ex);
    duckdb_prepared_statement ps = NULL;
    if (n == 0) {
        const char *why = duckdb_extract_statements_error(ex);
        refuse(j, MHD_HTTP_BAD_REQUEST, "%s%s", why ? "the SQL does not parse: " : "no statement to run",
               why ? why : "");
    } else if (n > 1) {
        refuse(j, MHD_HTTP_BAD_REQUEST,
               "exactly one statement is allowed; the text holds %llu (no multi-statement strings)",
               (unsigned long long)n);
    } else if (duckdb_prepare_extracted_statement(con, ex, 0, &ps) == DuckDBError) {
        refuse_failed(j, "the statement cannot be prepared", duckdb_prepare_error(ps));
    } else {
        const char *refused = query_refused_kind(ps);
        if (refused != NULL) {
            refuse(j, MHD_HTTP_BAD_REQUEST,
                   "only reads are allowed (SELECT, FROM, VALUES, WITH, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE, "
                   "PRAGMA that reads); the statement is of kind %s",
                   refused);
        } else if (bind_params(j, ps)) {
            duckdb_pending_result pending = NULL;
            duckdb_result res;
            bool failed = true;
            read_turn turn;
            if (duckdb_pending_prepared_streaming(ps, &pending) == DuckDBError) {
                refuse_failed(j, "the query failed", duckdb_pending_error(pending));
            } else if (!take_turn(j, &turn)) {
                refuse_failed(j, "the query failed", "INTERRUPT Error: Interrupted!");
            } else {
                failed = duckdb_execute_pending(pending, &res) == DuckDBError;
                read_gate_leave(store_read_gate(j->st), &turn);
                if (failed) {
                    refuse_failed(j, "the query failed", duckdb_result_error(&res));
                    duckdb_destroy_result(&res);
                }
            }
            if (!failed) {
                result_shape sh = {0};
                if (describe_result(j, &res, &sh)) {
                    if (j->fmt == FMT_PARQUET)
                        stream_parquet(j, &res, &sh);
                    else
                        stream_result(j, &res, &sh);
                }
                shape_free(&sh);
                duckdb_destroy_result(&res);
            }
            duckdb_destroy_pending(&pending);
        }
    }
    duckdb_destroy_prepare(&ps);
    duckdb_destroy_extracted(&ex);
}

/* Bytes held by query operators in the whole store, in DuckDB's buffer
 * pool: hash tables, sorts, windows, buffered results. DuckDB counts
 * memory per kind for the database, not per query. Prepared once per
 * query, as the watchdog runs it every MEMORY_POLL_MS. */
static const char operator_memory_sql[] =
    "SELECT coalesce(sum(memory_usage_bytes), 0)::BIGINT FROM duckdb_memory() WHERE tag IN "
    "('HASH_TABLE', 'ORDER_BY', 'WINDOW', 'COLUMN_DATA')";

/* -1 when it cannot be read. */
static int64_t operator_memory(duckdb_prepared_statement probe)
{
    duckdb_result res;
    int64_t bytes = -1;
    if (duckdb_execute_prepared(probe, &res) == DuckDBSuccess && duckdb_row_count(&res) > 0)
        bytes = duckdb_value_int64(&res, 0, 0);
    duckdb_destroy_result(&res);
    return bytes;
}

static void *query_thread(void *arg)
{
    qjob *j = arg;
    ds_error err;
    store_use_begin(j->st);
    duckdb_connection con = NULL, probe_con = NULL;
    duckdb_prepared_statement probe = NULL;
    if (!store_connect(j->st, &con, &err)) {
        refuse(j, MHD_HTTP_SERVICE_UNAVAILABLE, "%s", err.msg);
    } else if (!store_read_functions_use(con, &err) ||
               !store_exec(con, "BEGIN TRANSACTION READ ONLY", &err)) {
        refuse(j, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s", err.msg);
    } else if (!store_connect(j->st, &probe_con, &err)) {
        refuse(j, MHD_HTTP_SERVICE_UNAVAILABLE, "%s", err.msg);
    } else if (duckdb_prepare(probe_con, operator_memory_sql, &probe) == DuckDBError) {
        refuse(j, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot read DuckDB's memory use: %s",
               duckdb_prepare_error(probe));
    } else {
        pthread_mutex_lock(&j->lock);
        j->con = con;
        j->probe = probe;
        bool go = !j->cancelled && !j->timed_out;
        pthread_mutex_unlock(&j->lock);
        if (go)
            run_statement(j, con);
        else
            refuse_failed(j, "the query was stopped", "the server is shutting down");
        pthread_mutex_lock(&j->lock);
        j->con = NULL;
        while (j->probing)
            pthread_cond_wait(&j->cond, &j->lock);
        j->probe = NULL;
        pthread_mutex_unlock(&j->lock);
        store_exec(con, "ROLLBACK", NULL);
    }
    duckdb_destroy_prepare(&probe);
    if (probe_con != NULL)
        duckdb_disconnect(&probe_con);
    if (con != NULL)
        duckdb_disconnect(&con);
    store_use_end(j->st);

    /* The slot is free before the client sees the end of the answer. */
    pthread_mutex_lock(&registry_lock);
    unregister(j);
    pthread_mutex_unlock(&registry_lock);

    pthread_mutex_lock(&j->lock);
    if (!j->head_ready) { /* cancelled before any answer */
        j->head_ready = true;
        j->status = MHD_HTTP_SERVICE_UNAVAILABLE;
        j->head_doc = json_pack("{s:b,s:s}", "success", 0, "error", "the query was stopped");
    }
    j->finished = j->eof = true;
    pthread_cond_broadcast(&j->cond);
    wake_http(j);
    pthread_mutex_unlock(&j->lock);
    job_release(j);

    pthread_mutex_lock(&registry_lock);
    threads--;
    pthread_cond_broadcast(&registry_empty);
    pthread_mutex_unlock(&registry_lock);
    return NULL;
}

/* Interrupts the query when its timeout_ms has passed, or when the store's
 * query memory passes query_memory_limit while it runs (read every
 * MEMORY_POLL_MS). */
static void *watchdog_thread(void *arg)
{
    qjob *j = arg;
    struct timespec deadline = j->started;
    ds_timespec_add_ms(&deadline, j->timeout_ms);
    /* The condition is signalled for every block sent: memory is read at
     * most every MEMORY_POLL_MS, not at each wake. */
    struct timespec next_poll = j->started;
    pthread_mutex_lock(&j->lock);
    while (!j->finished && !j->over_memory) {
        bool poll_first = next_poll.tv_sec < deadline.tv_sec ||
                          (next_poll.tv_sec == deadline.tv_sec && next_poll.tv_nsec < deadline.tv_nsec);
        pthread_cond_timedwait(&j->cond, &j->lock, poll_first ? &next_poll : &deadline);
        if (j->finished)
            break;
        if (ms_since(&deadline) >= 0) {
            j->timed_out = true;
            break;
        }
        if (ms_since(&next_poll) < 0)
            continue;
        clock_gettime(CLOCK_MONOTONIC, &next_poll);
        ds_timespec_add_ms(&next_poll, MEMORY_POLL_MS);
        if (j->probe == NULL || j->probing)
            continue;
        duckdb_prepared_statement probe = j->probe;
        j->probing = true;
        pthread_mutex_unlock(&j->lock);
        int64_t used = operator_memory(probe);
        pthread_mutex_lock(&j->lock);
        j->probing = false;
        pthread_cond_broadcast(&j->cond);
        if (!j->finished && used > j->memory_cap)
            j->over_memory = true;
    }
    if (!j->finished) {
        interrupt_job(j);
        /* Unblock a query thread waiting for the client to read. */
        j->cancelled = true;
        pthread_cond_broadcast(&j->cond);
    }
    pthread_mutex_unlock(&j->lock);
    job_release(j);
    return NULL;
}

/* ---- the HTTP side ---- */

static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    qjob *j = cls;
    pthread_mutex_lock(&j->lock);
    size_t avail = j->out.len - j->out_pos;
    ssize_t ret;
    if (avail > 0) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, j->out.data + j->out_pos, n);
        j->out_pos += n;
        pthread_cond_broadcast(&j->cond);
        ret = (ssize_t)n;
    } else if (j->eof) {
        if (j->fmt != FMT_JSON && !j->broken) {
            char n[32];
            snprintf(n, sizeof n, "%" PRId64, j->rows_sent);
            MHD_add_response_footer(j->resp, "X-Duckstore-Row-Count", n);
            MHD_add_response_footer(j->resp, "X-Duckstore-Truncated", j->truncated ? "true" : "false");
        }
        ret = j->broken ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        j->suspended = true;
        MHD_suspend_connection(j->conn);
        ret = 0;
    }
    pthread_mutex_unlock(&j->lock);
    return ret;
}

/* The response is gone (sent, or the client left): a query still running
 * is stopped. */
static void free_body(void *cls)
{
    qjob *j = cls;
    pthread_mutex_lock(&j->lock);
    if (!j->finished) {
        j->cancelled = true;
        interrupt_job(j);
        pthread_cond_broadcast(&j->cond);
    }
    pthread_mutex_unlock(&j->lock);
    job_release(j);
}

static enum MHD_Result send_with_headers(http_request *req, unsigned status, json_t *doc,
                                         const char *retry_after)
{
    http_json_add_detail(doc);
    char *body = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    if (body == NULL)
        return http_send_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (retry_after)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
    http_add_common_headers(req, resp);
    enum MHD_Result ret = MHD_queue_response(req->conn, status, resp);
    MHD_destroy_response(resp);
    req->status = status;
    return ret;
}

/* Queues the answer of a query whose head is ready. */
static enum MHD_Result answer(http_request *req, qjob *j)
{
    req->route_state = NULL;
    pthread_mutex_lock(&j->lock);
    unsigned status = j->status;
    json_t *doc = j->head_doc;
    j->head_doc = NULL;
    pthread_mutex_unlock(&j->lock);
    if (status != MHD_HTTP_OK) {
        job_release(j);
        return send_with_headers(req, status, doc, NULL);
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, RESPONSE_BLOCK, read_body, j, free_body);
    if (resp == NULL) {
        free_body(j);
        return MHD_NO;
    }
    pthread_mutex_lock(&j->lock);
    j->resp = resp;
    pthread_mutex_unlock(&j->lock);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_types[j->fmt]);
    http_add_common_headers(req, resp);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    char cap[32];
    snprintf(cap, sizeof cap, "%" PRId64, j->max_rows);
    MHD_add_response_header(resp, "X-Duckstore-Max-Rows", cap);
    if (j->fmt != FMT_JSON)
        MHD_add_response_header(resp, "Trailer", "X-Duckstore-Row-Count, X-Duckstore-Truncated");
    enum MHD_Result ret = MHD_queue_response(req->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    req->status = MHD_HTTP_OK;
    return ret;
}

typedef struct request_args {
    const char *sql, *format, *max_rows, *timeout_ms;
    json_t *params;
    char bad[160];
    bool dup;
} request_args;

/* The one value of a key given at most once. */
static void take_once(request_args *a, const char **field, const char *value)
{
    if (*field != NULL)
        a->dup = true;
    else
        *field = value ? value : "";
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    request_args *a = cls;
    if (strcmp(key, "param") == 0) {
        json_t *v = value ? json_string(value) : json_null();
        if (json_array_append_new(a->params, v) != 0 && a->bad[0] == '\0')
            snprintf(a->bad, sizeof a->bad, "a param is not UTF-8 text");
    } else if (strcmp(key, "sql") == 0) {
        take_once(a, &a->sql, value);
    } else if (strcmp(key, "format") == 0) {
        take_once(a, &a->format, value);
    } else if (strcmp(key, "max_rows") == 0) {
        take_once(a, &a->max_rows, value);
    } else if (strcmp(key, "timeout_ms") == 0) {
        take_once(a, &a->timeout_ms, value);
    } else if (a->bad[0] == '\0') {
        snprintf(a->bad, sizeof a->bad,
                 "unknown query parameter \"%.40s\"; accepted: sql, param, format, max_rows, timeout_ms",
                 key);
    }
    return MHD_YES;
}

static bool parse_count(const char *text, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static const char *const format_names[] = {"json", "ndjson", "csv", "parquet"};

/* ?format= wins over Accept. */
static bool pick_format(http_request *req, const char *given, out_format *fmt)
{
    if (given != NULL) {
        for (int i = 0; i < 4; i++)
            if (strcasecmp(given, format_names[i]) == 0) {
                *fmt = (out_format)i;
                return true;
            }
        return false;
    }
    const char *accept = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    *fmt = FMT_JSON;
    if (accept != NULL && (strcasestr(accept, "ndjson") != NULL || strcasestr(accept, "jsonlines") != NULL))
        *fmt = FMT_NDJSON;
    else if (accept != NULL && strcasestr(accept, "text/csv") != NULL)
        *fmt = FMT_CSV;
    else if (accept != NULL && (strcasestr(accept, "application/vnd.apache.parquet") != NULL ||
                                strcasestr(accept, "application/x-parquet") != NULL))
        *fmt = FMT_PARQUET;
    return true;
}

/* Bytes of a size the config accepted ("256MB", "1.5 GB", "512MiB"; KB
 * is 1000 bytes and KiB 1024, as for DuckDB); -1 when unreadable. */
static int64_t size_bytes(const char *text)
{
    static const struct {
        const char *unit;
        double bytes;
    } units[] = {{"B", 1},           {"KB", 1e3},           {"MB", 1e6},
                 {"GB", 1e9},        {"TB", 1e12},          {"KiB", 1024.0},
                 {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
    char *end;
    double v = strtod(text, &end);
    while (*end == ' ')
        end++;
    for (size_t i = 0; end != text && v > 0 && i < sizeof units / sizeof units[0]; i++)
        if (strcasecmp(end, units[i].unit) == 0)
            return v * units[i].bytes < 9e18 ? (int64_t)(v * units[i].bytes) : INT64_MAX;
    return -1;
}

/* The query's memory cap (query_memory_limit, else the readers' budget,
 * read_memory_limit: what serve adds to DuckDB's limit for readers, so the
 * syncs keep memory_limit) and the same as the memory_limit of a Parquet
 * answer's writer. */
static bool memory_cap(qjob *j, const cfg_store *st)
{
    ds_buf text = DS_BUF_INIT, writer = DS_BUF_INIT;
    if (st->query_memory_limit != NULL) {
        j->memory_cap = size_bytes(st->query_memory_limit);
        ds_buf_append(&text, st->query_memory_limit);
    } else {
        const char *readers = st->read_memory_limit ? st->read_memory_limit : CFG_READ_MEMORY_LIMIT_DEFAULT;
        j->memory_cap = size_bytes(readers);
        ds_buf_appendf(&text, "%s, the readers' budget read_memory_limit", readers);
    }
    if (j->memory_cap <= 0)
        j->memory_cap = INT64_MAX;
    ds_buf_appendf(&writer, "%" PRId64 "KiB", j->memory_cap / 1024 > 1024 ? j->memory_cap / 1024 : 1024);
    j->memory_cap_text = ds_buf_take(&text);
    j->writer_memory = ds_buf_take(&writer);
    return j->memory_cap_text != NULL && j->writer_memory != NULL;
}

/* The request's SQL, parameters and limits into j; false after answering
 * a 400 into *ret. */
static bool parse_request(api_ctx *a, http_request *req, bool post, qjob *j, enum MHD_Result *ret)
{
    request_args args = {.params = json_array()};
    if (args.params == NULL) {
        *ret = http_send_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
        return false;
    }
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, collect_arg, &args);
    const char *problem = args.bad[0] ? args.bad
                          : args.dup  ? "sql, format, max_rows and timeout_ms may each be given once"
                                      : NULL;
    json_t *body = NULL;
    if (problem == NULL && post) {
        json_error_t jerr;
        if (args.sql || json_array_size(args.params) > 0)
            problem = "a POST carries sql and params in its JSON body, not in the URL";
        else if (req->body == NULL)
            problem = req->body_bytes > 0
                          ? "the request body is too large"
                          : "POST needs a JSON body: {\"sql\": \"SELECT ...\", \"params\": [...]}";
        else if ((body = json_loads(req->body, 0, &jerr)) == NULL || !json_is_object(body))
            problem = "the body is not a JSON object: {\"sql\": \"SELECT ...\", \"params\": [...]}";
        const char *key;
        json_t *v;
        json_object_foreach(problem ? NULL : body, key, v)
        {
            if (strcmp(key, "sql") == 0 && json_is_string(v))
                args.sql = json_string_value(v);
            else if (strcmp(key, "params") == 0 && json_is_array(v))
                json_array_extend(args.params, v);
            else if (strcmp(key, "format") == 0 && json_is_string(v))
                args.format = args.format ? args.format : json_string_value(v); /* ?format= wins */
            else if ((strcmp(key, "max_rows") != 0 && strcmp(key, "timeout_ms") != 0) || !json_is_integer(v))
                problem = "the body's keys are sql (string), params (array), max_rows and timeout_ms "
                          "(integers), format (string)";
        }
    }
    int64_t given_rows = -1, timeout = DEFAULT_TIMEOUT_MS;
    if (problem == NULL && post) {
        json_t *mr = json_object_get(body, "max_rows"), *to = json_object_get(body, "timeout_ms");
        if (mr != NULL && (given_rows = json_integer_value(mr)) < 0)
            problem = "max_rows must be an integer >= 0";
        if (to != NULL && ((timeout = json_integer_value(to)) < 1 || timeout > MAX_TIMEOUT_MS))
            problem = "timeout_ms must be an integer between 1 and 3600000";
    } else if (problem == NULL) {
        if (args.max_rows && !parse_count(args.max_rows, 0, INT64_MAX, &given_rows))
            problem = "max_rows must be an integer >= 0";
        if (args.timeout_ms && !parse_count(args.timeout_ms, 1, MAX_TIMEOUT_MS, &timeout))
            problem = "timeout_ms must be an integer between 1 and 3600000";
    }
    if (problem == NULL && (args.sql == NULL || args.sql[0] == '\0'))
        problem = post ? "the body has no \"sql\"" : "give the statement as ?sql=...";
    if (problem == NULL && !pick_format(req, args.format, &j->fmt))
        problem = "format must be json, ndjson, csv or parquet";
    if (problem == NULL && (j->sql = strdup(args.sql)) == NULL)
        problem = "out of memory";
    if (problem != NULL) {
        *ret = http_send_error(req, MHD_HTTP_BAD_REQUEST, problem);
        json_decref(args.params);
        json_decref(body);
        return false;
    }
    j->params = args.params;
    j->timeout_ms = timeout;
    /* The configured cap bounds what a request may ask. */
    const cfg_config *cfg = jobs_config_acquire(a->jobs);
    int64_t cap = cfg->store.query_max_rows;
    bool ok = memory_cap(j, &cfg->store);
    jobs_config_release(a->jobs, cfg);
    if (!ok) {
        *ret = http_send_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
        json_decref(body);
        return false;
    }
    if (j->fmt == FMT_JSON && cap == 0)
        cap = JSON_ROW_CAP;
    j->max_rows = given_rows < 0                        ? cap
                  : cap == 0                            ? given_rows
                  : given_rows == 0 || given_rows > cap ? cap
                                                        : given_rows;
    json_decref(body);
    return true;
}

static int concurrency_limit(api_ctx *a)
{
    const cfg_config *cfg = jobs_config_acquire(a->jobs);
    int n = cfg->store.query_concurrency;
    jobs_config_release(a->jobs, cfg);
    return n;
}

/* Starts the query's two threads, each holding a reference; called
 * holding j->lock. False when the query thread cannot start. */
static bool start_threads(qjob *j)
{
    pthread_t t;
    if (pthread_create(&t, NULL, watchdog_thread, j) != 0)
        return false;
    pthread_detach(t);
    j->refs++;
    if (pthread_create(&t, NULL, query_thread, j) != 0) {
        j->finished = true; /* the watchdog ends at once */
        pthread_cond_broadcast(&j->cond);
        return false;
    }
    j->refs++;
    pthread_detach(t);
    return true;
}

static qjob *job_new(store *st, struct MHD_Connection *conn)
{
    qjob *j = calloc(1, sizeof *j);
    if (j == NULL)
        return NULL;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&j->lock, NULL) != 0 || pthread_cond_init(&j->cond, &attr) != 0) {
        pthread_condattr_destroy(&attr);
        free(j);
        return NULL;
    }
    pthread_condattr_destroy(&attr);
    j->st = st;
    j->conn = conn;
    j->refs = 1;
    clock_gettime(CLOCK_MONOTONIC, &j->started);
    return j;
}

static enum MHD_Result start_query(api_ctx *a, http_request *req, bool post)
{
    if (a->st == NULL)
        return http_send_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "the DuckDB file is not open");
    qjob *j = job_new(a->st, req->conn);
    if (j == NULL)
        return http_send_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    enum MHD_Result ret;
    if (!parse_request(a, req, post, j, &ret)) {
        job_release(j);
        return ret;
    }
    int limit = concurrency_limit(a);
    pthread_mutex_lock(&registry_lock);
    bool full = running >= limit, closing = stopping;
    if (!full && !closing) {
        running++;
        threads++;
        j->next = registry;
        registry = j;
    }
    pthread_mutex_unlock(&registry_lock);
    if (closing) {
        job_release(j);
        return http_send_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "the server is shutting down");
    }
    if (full) {
        job_release(j);
        return send_with_headers(req, MHD_HTTP_TOO_MANY_REQUESTS,
                                 json_pack("{s:b,s:o}", "success", 0, "error",
                                           http_json_stringf("%d queries are running, the most "
                                                             "duckdb.query_concurrency allows; retry later",
                                                             limit)),
                                 "1");
    }
    pthread_mutex_lock(&j->lock); /* the query thread resumes us only once we are suspended */
    if (!start_threads(j)) {
        pthread_mutex_unlock(&j->lock);
        pthread_mutex_lock(&registry_lock);
        unregister(j);
        threads--;
        pthread_mutex_unlock(&registry_lock);
        job_release(j);
        return http_send_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot start a thread for the query");
    }
    req->route_state = j;
    if (!j->head_ready) {
        j->suspended = true;
        MHD_suspend_connection(req->conn);
        pthread_mutex_unlock(&j->lock);
        return MHD_YES;
    }
    pthread_mutex_unlock(&j->lock);
    return answer(req, j);
}

enum MHD_Result query_route(api_ctx *a, http_request *req, const char *method)
{
    qjob *j = req->route_state;
    if (j != NULL) { /* resumed: the head is ready */
        return answer(req, j);
    }
    bool post = strcmp(method, "POST") == 0;
    if (!post && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return http_send_not_allowed(req, "GET, HEAD, POST",
                                     "use POST (or GET with ?sql=) for /api/store/query");
    return start_query(a, req, post);
}

void query_shutdown(void)
{
    pthread_mutex_lock(&registry_lock);
    stopping = true;
    for (qjob *j = registry; j; j = j->next) {
        pthread_mutex_lock(&j->lock);
        j->cancelled = true;
        interrupt_job(j);
        pthread_cond_broadcast(&j->cond);
        pthread_mutex_unlock(&j->lock);
    }
    while (threads > 0)
        pthread_cond_wait(&registry_empty, &registry_lock);
    pthread_mutex_unlock(&registry_lock);
}
