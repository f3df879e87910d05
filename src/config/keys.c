/* Every key of duckdb.yaml and of a source, described once in a table: its
 * name, its kind (how the value is read and checked), bounds, the text of
 * its messages, where the value is stored and where its line goes. The same
 * table names the valid keys (for "did you mean") and parses them, so a key
 * is known exactly when it can be parsed, and only as itself. */
#include "config/keys.h"
#include "config/url.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Upper bounds keep later conversions to milliseconds far from overflow. */
#define MAX_REFRESH_MINUTES 525600.0   /* one year */
#define MAX_QUERY_TIMEOUT_S 31536000.0 /* one year */
#define MIN_QUERY_TIMEOUT_S 0.001      /* below 1 ms would round to "no timeout" */
#define MAX_IDLE_TIMEOUT_S 86400.0     /* a day */

#define MAX_TABLE_KEYS 32

typedef struct key_spec key_spec;

/* A kind of value: reads p's value, checks it against k and stores it at
 * k's field of obj (the cfg_store or cfg_source the table fills). */
typedef bool key_parser(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj);

typedef struct key_table {
    const key_spec *keys;
    size_t n;
} key_table;

/* A table row names the key first, then labels what it sets. */
struct key_spec {
    const char *name;
    key_parser *parse;    /* its kind: how the value is read, checked and stored */
    size_t field;         /* offsetof the value in the struct the table fills */
    size_t line;          /* offsetof the int that gets the key's line; 0: none */
    const char *expect;   /* what the value must be: "an integer between 1 and 64" */
    const char *hint;     /* what to write instead of an empty value */
    int64_t min, max;     /* integer kinds */
    double low, high;     /* number kinds */
    size_t flag;          /* lookback: offsetof the bool "is a plain number" */
    size_t at;            /* queries: offsetof the cfg_text_at of the value */
    const key_table *sub; /* the keys of the mapping a section or unique_key holds */
};

/* No line field sits at offset 0, so 0 can mean "none". */
_Static_assert(offsetof(cfg_source, name) == 0, "cfg_source starts with its name");

static bool parse_keys(const cfg_yfile *f, const yaml_node_t *map, const key_table *t, void *obj);

static void *field_at(void *obj, size_t offset)
{
    return (char *)obj + offset;
}

static bool bad_value(const cfg_yfile *f, const cfg_kv *p, const char *expect, const char *text)
{
    return CFG_FAIL(f, p->line, "%s must be %s (got \"%.60s\")", p->key, expect, text);
}

/* Reads a scalar's text into dst as k describes; false when it is not such
 * a value (dst is then untouched). */
typedef bool value_reader(const char *text, const key_spec *k, void *dst);

static bool read_scalar(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj, const char *expect,
                        value_reader *read)
{
    char *s = NULL;
    if (!cfg_yaml_scalar_text(f, p, expect, &s))
        return false;
    bool ok = read(s, k, field_at(obj, k->field)) || bad_value(f, p, expect, s);
    free(s);
    return ok;
}

#define BOOL_EXPECT "true or false (yes/no and on/off work too)"

static bool bool_word(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool read_bool(const char *s, const key_spec *k, void *dst)
{
    (void)k;
    return bool_word(s, dst);
}

static bool read_horizon(const char *s, const key_spec *k, void *dst)
{
    (void)k;
    bool on;
    if (!bool_word(s, &on))
        return false;
    *(cfg_horizon *)dst = on ? CFG_HORIZON_ON : CFG_HORIZON_OFF;
    return true;
}

/* A decimal integer in [k->min, k->max]. */
static bool read_int64(const char *s, const key_spec *k, void *dst)
{
    const char *digits = s + (s[0] == '+' || s[0] == '-');
    char *end = NULL;
    errno = 0;
    long long v = isdigit((unsigned char)*digits) ? strtoll(s, &end, 10) : 0;
    if (end == NULL || *end != '\0' || errno != 0 || v < k->min || v > k->max)
        return false;
    *(int64_t *)dst = v;
    return true;
}

/* An integer into an int field: the table's bounds keep it in range. */
static bool read_int(const char *s, const key_spec *k, void *dst)
{
    int64_t v;
    if (!read_int64(s, k, &v))
        return false;
    *(int *)dst = (int)v;
    return true;
}

/* A finite decimal number in [k->low, k->high]. */
static bool read_number(const char *s, const key_spec *k, void *dst)
{
    /* strtod also takes "inf", "nan" and hex; config numbers are plain decimals. */
    if (s[0] == '\0' || strspn(s, "0123456789.eE+-") != strlen(s))
        return false;
    char *end = NULL;
    double v = strtod(s, &end);
    if (*end != '\0' || !isfinite(v) || v < k->low || v > k->high)
        return false;
    *(double *)dst = v;
    return true;
}

static bool read_sync_mode(const char *s, const key_spec *k, void *dst)
{
    (void)k;
    static const cfg_sync_mode modes[] = {CFG_SYNC_STARTUP, CFG_SYNC_MANUAL};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        if (strcmp(s, cfg_sync_mode_name(modes[i])) == 0) {
            *(cfg_sync_mode *)dst = modes[i];
            return true;
        }
    }
    return false;
}

static bool read_join_type(const char *s, const key_spec *k, void *dst)
{
    (void)k;
    static const cfg_join_type types[] = {CFG_JOIN_LEFT, CFG_JOIN_INNER};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (strcmp(s, cfg_join_type_name(types[i])) == 0) {
            *(cfg_join_type *)dst = types[i];
            return true;
        }
    }
    return false;
}

static bool read_capture(const char *s, const key_spec *k, void *dst)
{
    (void)k;
    static const cfg_capture modes[] = {CFG_CAPTURE_WATERMARK, CFG_CAPTURE_LOGICAL};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        if (strcmp(s, cfg_capture_name(modes[i])) == 0) {
            *(cfg_capture *)dst = modes[i];
            return true;
        }
    }
    return false;
}

static bool parse_capture(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    return read_scalar(f, p, k, obj, k->expect, read_capture);
}

static bool read_log_format(const char *s, const key_spec *k, void *dst)
{
    (void)k;
    return ds_log_parse_format(s, (ds_log_format *)dst);
}

static bool parse_log_format(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    return read_scalar(f, p, k, obj, k->expect, read_log_format);
}

static bool parse_bool(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    return read_scalar(f, p, k, obj, BOOL_EXPECT, read_bool);
}

/* commit_horizon: true or false; absent means auto. */
static bool parse_horizon(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    return read_scalar(f, p, k, obj, BOOL_EXPECT, read_horizon);
}

static bool parse_int(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    return read_scalar(f, p, k, obj, k->expect, read_int);
}

static bool parse_int64(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    return read_scalar(f, p, k, obj, k->expect, read_int64);
}

static bool parse_number(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    return read_scalar(f, p, k, obj, k->expect, read_number);
}

static bool parse_sync_mode(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    return read_scalar(f, p, k, obj, k->expect, read_sync_mode);
}

static bool parse_join_type(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    return read_scalar(f, p, k, obj, k->expect, read_join_type);
}

static bool is_blank(const char *s)
{
    for (; *s; s++)
        if (!isspace((unsigned char)*s))
            return false;
    return true;
}

/* A non-empty string into *out, replacing what was there; hint says what
 * to write instead of nothing. */
static bool get_string(const cfg_yfile *f, const cfg_kv *p, const char *hint, char **out)
{
    char *s = NULL;
    if (!cfg_yaml_scalar_text(f, p, "a string", &s))
        return false;
    if (is_blank(s)) {
        free(s);
        return CFG_FAIL(f, p->line, "%s is empty; %s", p->key, hint);
    }
    free(*out);
    *out = s;
    return true;
}

static bool parse_string(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    return get_string(f, p, k->hint, field_at(obj, k->field));
}

/* A query, and where its text is: PostgreSQL's error positions in it are
 * shown as the file's line and column. */
static bool parse_query(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    char **sql = field_at(obj, k->field);
    if (!get_string(f, p, k->hint, sql))
        return false;
    cfg_yaml_text_at(f, p->value, *sql, field_at(obj, k->at));
    return true;
}

/* "256MB", "1.5 GB", "512MiB": what DuckDB's memory_limit accepts. */
static bool valid_memory_limit(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0))
        return false;
    while (*end == ' ')
        end++;
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB", NULL};
    for (const char *const *u = units; *u; u++)
        if (strcasecmp(end, *u) == 0)
            return true;
    return false;
}

static bool parse_memory_limit(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    char **limit = field_at(obj, k->field);
    return get_string(f, p, k->hint, limit) &&
           (valid_memory_limit(*limit) || bad_value(f, p, k->expect, *limit));
}

/* The url rules live in url.c; here they get the url's line. */
static bool parse_url(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    char **url = field_at(obj, k->field);
    if (f->no_pg) {
        /* Never connected with: its ${VAR} (a password) need not be set. */
        ((cfg_source *)obj)->url_unexpanded = true;
        free(*url);
        return cfg_yaml_scalar_verbatim(f, p, "a string", url);
    }
    if (!get_string(f, p, k->hint, url))
        return false;
    ds_error e = {0};
    if (cfg_url_check(*url, &e))
        return true;
    if (e.code != DS_ERR_CONFIG) {
        *f->err = e;
        return false;
    }
    return CFG_FAIL(f, p->line, "%s", e.msg);
}

/* "<number> <unit>[s] ...", e.g. "1 hour 30 minutes". */
static bool valid_interval(const char *q)
{
    static const char *const units[] = {"microsecond", "millisecond", "second", "minute",
                                        "hour",        "day",         "week",   NULL};
    while (*q) {
        char *end;
        double v = strtod(q, &end);
        if (end == q || !(v >= 0))
            return false;
        while (*end == ' ')
            end++;
        bool unit_ok = false;
        for (const char *const *u = units; *u && !unit_ok; u++) {
            size_t ul = strlen(*u);
            if (strncasecmp(end, *u, ul) == 0) {
                end += ul;
                if (*end == 's' || *end == 'S')
                    end++;
                unit_ok = *end == '\0' || *end == ' ';
            }
        }
        if (!unit_ok)
            return false;
        while (*end == ' ')
            end++;
        q = end;
    }
    return true;
}

/* "5 minutes", "1 hour 30 minutes", "90 seconds" or a plain number (for a
 * numeric incremental_column). */
static bool valid_lookback(const char *text, bool *is_number)
{
    char *end;
    double v = strtod(text, &end);
    while (*end == ' ')
        end++;
    bool ok = end != text && isfinite(v) && v >= 0;
    *is_number = ok && *end == '\0';
    return ok && (*is_number || valid_interval(text));
}

static bool parse_lookback(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    char **text = field_at(obj, k->field);
    return get_string(f, p, k->hint, text) && (valid_lookback(*text, field_at(obj, k->flag)) ||
                                               CFG_FAIL(f, p->line, "%s must be %s", p->key, k->expect));
}

void cfg_key_free(cfg_key *key)
{
    for (size_t i = 0; i < key->n; i++)
        free(key->cols[i]);
    free(key->cols);
    key->cols = NULL;
    key->n = 0;
}

/* A column name or a list of them. */
static bool parse_columns(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    cfg_key *out = field_at(obj, k->field);
    cfg_key_free(out);
    bool list = p->value->type == YAML_SEQUENCE_NODE;
    size_t n = list ? cfg_yaml_n_items(p->value) : 1;
    if (n == 0)
        return CFG_FAIL(f, p->line, "%s is an empty list; %s", p->key, k->hint);
    out->cols = calloc(n, sizeof *out->cols);
    if (out->cols == NULL)
        return cfg_yaml_nomem(f->err);
    for (size_t i = 0; i < n; i++) {
        cfg_kv item = list ? cfg_yaml_item(f, p, i) : *p;
        if (!get_string(f, &item, k->hint, &out->cols[i]))
            return false;
        out->n = i + 1;
    }
    return true;
}

/* unique_key: a column or list (single-query source) or a mapping with a
 * key per table (k->sub). */
static bool parse_unique_key(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    if (p->value->type == YAML_MAPPING_NODE)
        return parse_keys(f, p->value, k->sub, obj);
    return parse_columns(f, p, k, obj);
}

/* A mapping of settings (k->sub); empty (`duckdb:` alone) keeps the
 * defaults. */
static bool parse_section(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    if (cfg_yaml_is_null(p->value))
        return true;
    if (p->value->type != YAML_MAPPING_NODE)
        return CFG_FAIL(f, p->line, "%s must be %s, not %s", p->key, k->expect, cfg_yaml_node_kind(p->value));
    return parse_keys(f, p->value, k->sub, field_at(obj, k->field));
}

#define STORE(member) offsetof(cfg_store, member)

static bool read_pg_auth(const char *s, const key_spec *k, void *dst)
{
    (void)k;
    bool trust = strcmp(s, "trust") == 0;
    if (!trust && strcmp(s, "scram-sha-256") != 0)
        return false;
    *(bool *)dst = trust;
    return true;
}

static bool parse_pg_auth(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    return read_scalar(f, p, k, obj, k->expect, read_pg_auth);
}

/* pg_users: a mapping of user name to password; the values are secrets, so
 * no message quotes them. */
static bool parse_pg_users(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    (void)k;
    cfg_store *st = obj;
    if (p->value->type != YAML_MAPPING_NODE)
        return CFG_FAIL(f, p->line,
                        "%s must be a mapping of user name to password, e.g. {reader: "
                        "\"${READER_PASSWORD}\"}, not %s",
                        p->key, cfg_yaml_node_kind(p->value));
    size_t n = cfg_yaml_n_pairs(p->value);
    cfg_key_free(&st->pg_user_names);
    cfg_key_free(&st->pg_user_passwords);
    st->pg_user_names.cols = calloc(n ? n : 1, sizeof(char *));
    st->pg_user_passwords.cols = calloc(n ? n : 1, sizeof(char *));
    if (st->pg_user_names.cols == NULL || st->pg_user_passwords.cols == NULL)
        return cfg_yaml_nomem(f->err);
    for (size_t i = 0; i < n; i++) {
        cfg_kv u = cfg_yaml_pair(f, p->value, i);
        char *pw = NULL;
        if (!cfg_yaml_scalar_text(f, &u, "a password (a string, e.g. \"${READER_PASSWORD}\")", &pw))
            return false;
        if (pw[0] == '\0') {
            free(pw);
            return CFG_FAIL(f, u.line,
                            "pg_users: the password of \"%.80s\" is empty; set it (e.g. "
                            "\"${READER_PASSWORD}\" with that variable in the environment)",
                            u.key);
        }
        char *name = strdup(u.key);
        if (name == NULL) {
            free(pw);
            return cfg_yaml_nomem(f->err);
        }
        st->pg_user_names.cols[i] = name;
        st->pg_user_passwords.cols[i] = pw;
        st->pg_user_names.n = st->pg_user_passwords.n = i + 1;
    }
    return true;
}
#define SOURCE(member) offsetof(cfg_source, member)

/* publish.every: "sync" (after each sync) or a number of minutes. */
static bool read_every(const char *s, const key_spec *k, void *dst)
{
    if (strcmp(s, "sync") == 0) {
        *(double *)dst = 0;
        return true;
    }
    return read_number(s, k, dst) && *(double *)dst > 0;
}

static bool parse_every(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    return read_scalar(f, p, k, obj, k->expect, read_every);
}

static bool parse_partition_by(const cfg_yfile *f, const cfg_kv *p, const key_spec *k, void *obj)
{
    char **text = field_at(obj, k->field);
    char fn[8], col[CFG_TABLE_NAME_CAP * 2];
    return get_string(f, p, k->hint, text) &&
           (cfg_publish_partition(*text, fn, col, sizeof col) || bad_value(f, p, k->expect, *text));
}
#define N_KEYS(keys) (sizeof(keys) / sizeof((keys)[0]))

/* Under `duckdb:` in duckdb.yaml. */
static const key_spec store_keys[] = {
    {"enabled", .parse = parse_bool, .field = STORE(enabled)},
    {"path", .parse = parse_string, .field = STORE(path),
     .hint = "give the DuckDB file, e.g. data/store.duckdb"},
    {"sync_mode", .parse = parse_sync_mode, .field = STORE(sync_mode), .expect = "\"startup\" or \"manual\""},
    {"sync_workers", .parse = parse_int, .field = STORE(sync_workers), .min = 1, .max = 64,
     .expect = "an integer between 1 and 64"},
    {"sync_chunk_size", .parse = parse_int, .field = STORE(sync_chunk_size), .min = 1, .max = INT_MAX,
     .expect = "an integer between 1 and 2147483647 (rows per insert batch)"},
    {"max_sync_rows", .parse = parse_int64, .field = STORE(max_sync_rows), .min = 0, .max = INT64_MAX,
     .expect = "an integer >= 0 (0 = no cap)"},
    {"query_concurrency", .parse = parse_int, .field = STORE(query_concurrency), .min = 1, .max = 256,
     .expect = "an integer between 1 and 256"},
    {"query_max_rows", .parse = parse_int64, .field = STORE(query_max_rows), .min = 0, .max = INT64_MAX,
     .expect = "an integer >= 0 (rows per /api/store/query answer; 0 = no cap for NDJSON and CSV)"},
    {"memory_limit", .parse = parse_memory_limit, .field = STORE(memory_limit),
     .expect = "a size such as 256MB, 1.5GB or 512MiB", .hint = "give a size such as 256MB or 2GB"},
    {"query_memory_limit", .parse = parse_memory_limit, .field = STORE(query_memory_limit),
     .expect = "a size such as 32MB or 1GB", .hint = "give a size such as 32MB or 1GB"},
    {"read_memory_limit", .parse = parse_memory_limit, .field = STORE(read_memory_limit),
     .expect = "a size such as 512MB or 2GB", .hint = "give a size such as 512MB or 2GB"},
    {"threads", .parse = parse_int, .field = STORE(threads), .min = 0, .max = 256,
     .expect = "an integer between 0 and 256 (0 = one per core)"},
    {"read_threads", .parse = parse_int, .field = STORE(read_threads), .min = 0, .max = 256,
     .expect = "an integer between 0 and 256"},
    {"read_concurrency", .parse = parse_int, .field = STORE(read_concurrency), .min = 0, .max = 4096,
     .expect = "an integer between 0 and 4096 (reader queries DuckDB runs at once; 0 = no limit)"},
    {"read_turn_seconds", .parse = parse_number, .field = STORE(read_turn_s), .low = 0, .high = 3600,
     .expect =
         "a number of seconds between 0 and 3600, e.g. 1 (0 = a query keeps its turn until its first rows)"},
    {"max_idle_source_connections", .parse = parse_int, .field = STORE(max_idle_source_connections), .min = 0,
     .max = 1024, .expect = "an integer between 0 and 1024 (0 = keep no idle connection)"},
    {"idle_source_connection_timeout", .parse = parse_number,
     .field = STORE(idle_source_connection_timeout_s), .low = 1, .high = MAX_IDLE_TIMEOUT_S,
     .expect = "a number of seconds between 1 and 86400, e.g. 600"},
    {"cors_origins", .parse = parse_columns, .field = STORE(cors_origins),
     .hint = "list the origins a browser may call the API from, e.g. [\"https://axis.example.com\"]"},
    {"log_format", .parse = parse_log_format, .field = STORE(log_format), .expect = "\"text\" or \"json\""},
    {"pg_listen", .parse = parse_string, .field = STORE(pg_listen),
     .hint = "give HOST:PORT, e.g. \"127.0.0.1:5433\", or remove the key"},
    {"pg_max_connections", .parse = parse_int, .field = STORE(pg_max_connections), .min = 1, .max = 4096,
     .expect = "an integer between 1 and 4096"},
    {"pg_idle_timeout", .parse = parse_number, .field = STORE(pg_idle_timeout_s), .low = 0,
     .high = MAX_QUERY_TIMEOUT_S, .expect = "a number of seconds >= 0 (0 = none), e.g. 3600"},
    {"pg_statement_timeout", .parse = parse_number, .field = STORE(pg_statement_timeout_s), .low = 0,
     .high = MAX_QUERY_TIMEOUT_S, .expect = "a number of seconds >= 0 (0 = none), e.g. 300"},
    {"pg_tls_cert", .parse = parse_string, .field = STORE(pg_tls_cert),
     .hint = "give the PEM certificate file, or remove the key"},
    {"pg_tls_key", .parse = parse_string, .field = STORE(pg_tls_key),
     .hint = "give the PEM private key file, or remove the key"},
    {"pg_auth", .parse = parse_pg_auth, .field = STORE(pg_trust),
     .expect = "\"scram-sha-256\" or \"trust\" (loopback clients only)"},
    {"pg_users", .parse = parse_pg_users, .field = 0},
};
static const key_table store_table = {store_keys, N_KEYS(store_keys)};

/* The top level of duckdb.yaml; the settings go into the cfg_store itself. */
static const key_spec store_file_keys[] = {
    {"duckdb", .parse = parse_section, .field = 0,
     .expect = "a mapping of store settings (path, sync_mode, ...)", .sub = &store_table},
};
static const key_table store_file_table = {store_file_keys, N_KEYS(store_file_keys)};

#define KEY_HINT "name a column of the query, or a list of them: [dataset_id, metric_name]"
#define QUERY_HINT "write the SQL SELECT (a `|` block keeps it readable), or remove the key"
#define COLUMN_HINT "name a column of the query, or remove the key"

/* unique_key as a mapping: one key per table of the source. */
static const key_spec unique_key_keys[] = {
    {"dataset", .parse = parse_columns, .field = SOURCE(unique_key_dataset), .hint = KEY_HINT},
    {"results", .parse = parse_columns, .field = SOURCE(unique_key_results), .hint = KEY_HINT},
    {"data", .parse = parse_columns, .field = SOURCE(unique_key_data), .hint = KEY_HINT},
};
static const key_table unique_key_table = {unique_key_keys, N_KEYS(unique_key_keys)};

/* join: of a split source's view. */
static const key_spec join_keys[] = {
    {"type", .parse = parse_join_type, .field = SOURCE(join_type),
     .expect = "\"left\" (every result) or \"inner\" (only results whose dataset row is synced)"},
    {"columns", .parse = parse_columns, .field = SOURCE(join_columns),
     .hint = "name the columns both queries are joined on, e.g. [dataset_id] or [dataset_id, run_id]"},
};
static const key_table join_table = {join_keys, N_KEYS(join_keys)};

/* publish: of a source (docs/publish.md). */
static const key_spec publish_keys[] = {
    {"path", .parse = parse_string, .field = SOURCE(publish_path),
     .hint = "give the directory the versions are written to, e.g. published/monitoring"},
    {"partition_by", .parse = parse_partition_by, .field = SOURCE(publish_partition_by),
     .line = SOURCE(publish_partition_line),
     .expect = "a column of the data, or day(col), month(col), year(col) or hour(col) of a timestamp column",
     .hint = "name a column, e.g. day(timestamp), or remove the key"},
    {"every", .parse = parse_every, .field = SOURCE(publish_every_minutes), .low = 0,
     .high = MAX_REFRESH_MINUTES,
     .expect = "\"sync\" (after each sync) or a number of minutes between 0 and 525600, e.g. 60"},
    {"keep_versions", .parse = parse_int, .field = SOURCE(publish_keep_versions), .min = 1, .max = 1000,
     .expect = "an integer between 1 and 1000"},
    {"tables", .parse = parse_bool, .field = SOURCE(publish_tables)},
};
static const key_table publish_table = {publish_keys, N_KEYS(publish_keys)};

/* Under `<name>_db:` in a source file. */
static const key_spec source_keys[] = {
    {"enabled", .parse = parse_bool, .field = SOURCE(enabled)},
    {"auto_load", .parse = parse_bool, .field = SOURCE(auto_load)},
    {"url", .parse = parse_url, .field = SOURCE(url), .line = SOURCE(url_line),
     .hint = "set a postgresql://user:${DB_PASSWORD}@host:5432/dbname URI"},
    {"dataset_query", .parse = parse_query, .field = SOURCE(dataset_query),
     .line = SOURCE(dataset_query_line), .hint = QUERY_HINT, .at = SOURCE(dataset_query_at)},
    {"results_query", .parse = parse_query, .field = SOURCE(results_query),
     .line = SOURCE(results_query_line), .hint = QUERY_HINT, .at = SOURCE(results_query_at)},
    {"query", .parse = parse_query, .field = SOURCE(query), .line = SOURCE(query_line), .hint = QUERY_HINT,
     .at = SOURCE(query_at)},
    {"partition_column", .parse = parse_string, .field = SOURCE(partition_column),
     .line = SOURCE(partition_column_line), .hint = COLUMN_HINT},
    {"incremental_column", .parse = parse_string, .field = SOURCE(incremental_column),
     .line = SOURCE(incremental_column_line), .hint = COLUMN_HINT},
    {"refresh_interval_minutes", .parse = parse_number, .field = SOURCE(refresh_interval_minutes), .low = 0,
     .high = MAX_REFRESH_MINUTES,
     .expect = "a number of minutes between 0 and 525600 (0 = no periodic sync)"},
    {"query_timeout", .parse = parse_number, .field = SOURCE(query_timeout_s), .low = MIN_QUERY_TIMEOUT_S,
     .high = MAX_QUERY_TIMEOUT_S,
     .expect = "a number of seconds > 0 (at least 0.001, at most 31536000), e.g. 600"},
    {"unique_key", .parse = parse_unique_key, .field = SOURCE(unique_key_data),
     .line = SOURCE(unique_key_line), .hint = KEY_HINT, .sub = &unique_key_table},
    {"lookback", .parse = parse_lookback, .field = SOURCE(lookback), .line = SOURCE(lookback_line),
     .flag = SOURCE(lookback_is_number),
     .expect = "an interval such as \"5 minutes\" or \"1 hour\" (time columns) or a number (numeric columns)",
     .hint = "give an interval such as \"5 minutes\" or a number"},
    {"full_refresh_interval_minutes", .parse = parse_number, .field = SOURCE(full_refresh_interval_minutes),
     .line = SOURCE(full_refresh_line), .low = 0, .high = MAX_REFRESH_MINUTES,
     .expect = "a number of minutes between 0 and 525600 (0 = never)"},
    {"commit_horizon", .parse = parse_horizon, .field = SOURCE(commit_horizon),
     .line = SOURCE(commit_horizon_line)},
    {"capture", .parse = parse_capture, .field = SOURCE(capture), .line = SOURCE(capture_line),
     .expect = "\"watermark\" (re-read rows past incremental_column) or \"logical\" (PostgreSQL's logical "
               "replication)"},
    {"publication", .parse = parse_string, .field = SOURCE(publication), .line = SOURCE(publication_line),
     .hint = "name an existing publication that publishes the source's tables, or remove the key (duckstore "
             "then creates its own)"},
    {"join", .parse = parse_section, .field = 0, .line = SOURCE(join_line),
     .expect = "a mapping such as {type: inner, columns: [dataset_id]}", .sub = &join_table},
    {"publish", .parse = parse_section, .field = 0, .line = SOURCE(publish_line),
     .expect = "a mapping such as {path: published/monitoring, partition_by: day(timestamp)}",
     .sub = &publish_table},
};
static const key_table source_table = {source_keys, N_KEYS(source_keys)};

_Static_assert(N_KEYS(store_keys) <= MAX_TABLE_KEYS, "raise MAX_TABLE_KEYS");
_Static_assert(N_KEYS(source_keys) <= MAX_TABLE_KEYS, "raise MAX_TABLE_KEYS");

static const key_spec *find_key(const key_table *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->keys[i].name, name) == 0)
            return &t->keys[i];
    return NULL;
}

/* Checks every key of map against t before any value is parsed (a wrong
 * key is reported before a wrong value), then parses each into obj. */
static bool parse_keys(const cfg_yfile *f, const yaml_node_t *map, const key_table *t, void *obj)
{
    const char *names[MAX_TABLE_KEYS];
    for (size_t i = 0; i < t->n; i++)
        names[i] = t->keys[i].name;
    if (!cfg_yaml_check_keys(f, map, names, t->n))
        return false;
    for (size_t i = 0; i < cfg_yaml_n_pairs(map); i++) {
        cfg_kv p = cfg_yaml_pair(f, map, i);
        const key_spec *k = find_key(t, p.key);
        if (k == NULL) /* cannot happen after cfg_yaml_check_keys() */
            return CFG_FAIL(f, p.line, "unknown key \"%.80s\"", p.key);
        if (k->line != 0)
            *(int *)field_at(obj, k->line) = p.line;
        if (!k->parse(f, &p, k, obj))
            return false;
    }
    return true;
}

bool cfg_keys_parse_store(const cfg_yfile *f, const yaml_node_t *root, cfg_store *st)
{
    return parse_keys(f, root, &store_file_table, st);
}

bool cfg_keys_parse_source(const cfg_yfile *f, const yaml_node_t *map, cfg_source *src)
{
    return parse_keys(f, map, &source_table, src);
}
