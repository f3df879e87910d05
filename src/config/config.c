/* Loads the YAML config directory: duckdb.yaml (store settings) and one
 * `<name>_db:` source per other *.yaml / *.yml file. Every value is
 * ${VAR}-expanded and checked; the first problem becomes a DS_ERR_CONFIG
 * error "file:line: what is wrong; how to fix it". */
#include "config/config.h"
#include "config/expand.h"
#include "config/url.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>

#define MAX_FILE_SIZE (16L * 1024 * 1024)
#define MAX_SOURCE_NAME CFG_SOURCE_NAME_MAX
/* Upper bounds keep later conversions to milliseconds far from overflow. */
#define MAX_REFRESH_MINUTES 525600.0   /* one year */
#define MAX_QUERY_TIMEOUT_S 31536000.0 /* one year */
#define MIN_QUERY_TIMEOUT_S 0.001      /* below 1 ms would round to "no timeout" */

static const char *const store_keys[] = {"enabled",           "path",
                                         "sync_mode",         "sync_workers",
                                         "sync_chunk_size",   "max_sync_rows",
                                         "query_concurrency", "memory_limit",
                                         "threads",           NULL};

static const char *const source_keys[] = {"enabled",
                                          "auto_load",
                                          "url",
                                          "dataset_query",
                                          "results_query",
                                          "query",
                                          "partition_column",
                                          "incremental_column",
                                          "refresh_interval_minutes",
                                          "query_timeout",
                                          "unique_key",
                                          "lookback",
                                          "full_refresh_interval_minutes",
                                          "commit_horizon",
                                          NULL};

static const char *const store_top_keys[] = {"duckdb", NULL};

/* One parsed YAML file. */
typedef struct yfile {
    const char *path;
    const char *text; /* raw bytes, for line numbers of reader errors */
    size_t len;
    yaml_document_t doc;
    ds_error *err;
} yfile;

/* A key of a mapping with its value. */
typedef struct kv {
    const char *key;
    int line;
    const yaml_node_t *value;
} kv;

const char *cfg_sync_mode_name(cfg_sync_mode mode)
{
    return mode == CFG_SYNC_MANUAL ? "manual" : "startup";
}

static void report(const yfile *f, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Sets a "file:line: ..." error and evaluates to false, for `return
 * FAIL(...)`. A macro so that analyzers see the false through the varargs. */
#define FAIL(f, line, ...) (report((f), (line), __VA_ARGS__), false)

/* Length of the line break at text[i] (0 when there is none), counted the
 * way libyaml counts them, so that our line numbers and its marks agree:
 * CR LF, CR, LF, and in UTF-8 NEL, LS and PS. */
static size_t break_at(const char *text, size_t len, size_t i)
{
    const unsigned char *t = (const unsigned char *)text;
    if (t[i] == '\r')
        return i + 1 < len && t[i + 1] == '\n' ? 2 : 1;
    if (t[i] == '\n')
        return 1;
    if (t[i] == 0xc2 && i + 1 < len && t[i + 1] == 0x85)
        return 2;
    if (t[i] == 0xe2 && i + 2 < len && t[i + 1] == 0x80 && (t[i + 2] == 0xa8 || t[i + 2] == 0xa9))
        return 3;
    return 0;
}

/* Line of the byte at offset (1-based). */
static int line_at_offset(const yfile *f, size_t offset)
{
    int line = 1;
    for (size_t i = 0; i < offset && i < f->len;) {
        size_t n = break_at(f->text, f->len, i);
        line += n > 0;
        i += n > 0 ? n : 1;
    }
    return line;
}

/* The last line that exists in the file. libyaml puts the end of the
 * stream one line below a last line without a break, and errors found
 * there would otherwise name a line no editor shows. */
static int last_line(const yfile *f)
{
    if (f->text == NULL || f->len == 0)
        return 1;
    int line = line_at_offset(f, f->len);
    size_t i = f->len - 1;
    bool ends_with_break = break_at(f->text, f->len, i) > 0 ||
                           (i >= 1 && break_at(f->text, f->len, i - 1) == 2) ||
                           (i >= 2 && break_at(f->text, f->len, i - 2) == 3);
    return ends_with_break && line > 1 ? line - 1 : line;
}

static void report(const yfile *f, int line, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int last = last_line(f);
    ds_error_set(f->err, DS_ERR_CONFIG, "%s:%d: %s", f->path, line < 1 ? 1 : line > last ? last : line, msg);
}

static bool nomem(ds_error *err)
{
    ds_error_set(err, DS_ERR_NOMEM, "out of memory while loading the config");
    return false;
}

static int line_of(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

static const char *node_kind(const yaml_node_t *n)
{
    return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a value";
}

/* `key:` with nothing after it, `~` or `null`. */
static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return n->data.scalar.length == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

static bool is_blank(const char *s)
{
    for (; *s; s++)
        if (!isspace((unsigned char)*s))
            return false;
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Optimal string alignment distance: edits plus adjacent swaps, so "paht"
 * is one step from "path". */
static size_t edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > 64 || m > 64)
        return (size_t)-1;
    size_t d[65][65];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[n][m];
}

static bool unknown_key(const yfile *f, const kv *p, const char *const *valid)
{
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (const char *const *k = valid; *k; k++) {
        size_t d = edit_distance(p->key, *k);
        if (d < best_d) {
            best_d = d;
            best = *k;
        }
    }
    size_t len = strlen(p->key);
    size_t limit = len <= 4 ? 1 : len <= 8 ? 2 : 3;
    if (best != NULL && best_d <= limit)
        return FAIL(f, p->line, "unknown key \"%.80s\"; did you mean \"%s\"?", p->key, best);

    char list[400] = "";
    for (const char *const *k = valid; *k; k++) {
        strncat(list, k == valid ? "" : ", ", sizeof list - strlen(list) - 1);
        strncat(list, *k, sizeof list - strlen(list) - 1);
    }
    return FAIL(f, p->line, "unknown key \"%.80s\"; valid keys: %s", p->key, list);
}

static kv pair_at(const yfile *f, const yaml_node_pair_t *pair)
{
    /* yaml_document_get_node() takes a non-const document, but only reads it. */
    yaml_document_t *doc = (yaml_document_t *)&f->doc;
    const yaml_node_t *k = yaml_document_get_node(doc, pair->key);
    kv p = {"", line_of(k), yaml_document_get_node(doc, pair->value)};
    if (k->type == YAML_SCALAR_NODE)
        p.key = (const char *)k->data.scalar.value;
    return p;
}

static size_t n_pairs(const yaml_node_t *map)
{
    return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

/* Every key is a plain name, known (when valid is given) and not repeated. */
static bool check_keys(const yfile *f, const yaml_node_t *map, const char *const *valid)
{
    const yaml_node_pair_t *start = map->data.mapping.pairs.start;
    for (const yaml_node_pair_t *pair = start; pair < map->data.mapping.pairs.top; pair++) {
        kv p = pair_at(f, pair);
        const yaml_node_t *k = yaml_document_get_node((yaml_document_t *)&f->doc, pair->key);
        if (k->type != YAML_SCALAR_NODE || k->data.scalar.length == 0 ||
            memchr(p.key, '\0', k->data.scalar.length) != NULL)
            return FAIL(f, p.line, "keys must be plain names, not %s; check the indentation", node_kind(k));
        if (valid != NULL) {
            bool known = false;
            for (const char *const *v = valid; *v && !known; v++)
                known = strcmp(p.key, *v) == 0;
            if (!known)
                return unknown_key(f, &p, valid);
        }
        for (const yaml_node_pair_t *prev = start; prev < pair; prev++) {
            kv q = pair_at(f, prev);
            if (strcmp(p.key, q.key) == 0)
                return FAIL(f, p.line, "duplicate key \"%.80s\" (first given on line %d); keep one", p.key,
                            q.line);
        }
    }
    return true;
}

/* Line of the byte at offset of a scalar: exact for `|` block scalars, whose
 * text starts on the line after the indicator and keeps its line breaks. */
static int value_line(const yaml_node_t *v, size_t offset)
{
    int line = line_of(v);
    if (v->data.scalar.style != YAML_LITERAL_SCALAR_STYLE)
        return line;
    line++;
    for (size_t i = 0; i < offset; i++)
        if (v->data.scalar.value[i] == '\n')
            line++;
    return line;
}

/* The ${VAR}-expanded text of a scalar value (malloc'd; "" for null). A
 * mapping or list where a value belongs is a type error. */
static bool scalar_text(const yfile *f, const kv *p, const char *expect, char **out)
{
    const yaml_node_t *v = p->value;
    if (v->type != YAML_SCALAR_NODE)
        return FAIL(f, p->line, "%s must be %s, not %s", p->key, expect, node_kind(v));
    const char *s = (const char *)v->data.scalar.value;
    size_t len = v->data.scalar.length;
    if (memchr(s, '\0', len) != NULL)
        return FAIL(f, line_of(v), "%s contains a NUL character; remove it", p->key);
    if (is_null(v))
        len = 0;
    cfg_expand_error e;
    *out = cfg_expand_env(s, len, &e);
    if (*out != NULL)
        return true;
    if (e.what[0] == '\0')
        return nomem(f->err);
    return FAIL(f, value_line(v, e.offset), "%s: %s", p->key, e.what);
}

/* A non-empty string; hint says what to write instead of nothing. */
static bool get_string(const yfile *f, const kv *p, const char *hint, char **out)
{
    char *s = NULL;
    if (!scalar_text(f, p, "a string", &s))
        return false;
    if (is_blank(s)) {
        free(s);
        return FAIL(f, p->line, "%s is empty; %s", p->key, hint);
    }
    free(*out);
    *out = s;
    return true;
}

static bool get_bool(const yfile *f, const kv *p, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    const char *expect = "true or false (yes/no and on/off work too)";
    char *s = NULL;
    if (!scalar_text(f, p, expect, &s))
        return false;
    bool ok = false;
    for (size_t i = 0; i < 3 && !ok; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            ok = true;
        } else if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            ok = true;
        }
    }
    if (!ok)
        report(f, p->line, "%s must be %s (got \"%.60s\")", p->key, expect, s);
    free(s);
    return ok;
}

/* A decimal integer in [min, max]; expect reads "an integer between 1 and 64". */
static bool get_int(const yfile *f, const kv *p, int64_t min, int64_t max, const char *expect, int64_t *out)
{
    char *s = NULL;
    if (!scalar_text(f, p, expect, &s))
        return false;
    const char *digits = s + (s[0] == '+' || s[0] == '-');
    char *end = NULL;
    errno = 0;
    long long v = isdigit((unsigned char)*digits) ? strtoll(s, &end, 10) : 0;
    bool ok = end != NULL && *end == '\0' && errno == 0 && v >= min && v <= max;
    if (ok)
        *out = v;
    else
        report(f, p->line, "%s must be %s (got \"%.60s\")", p->key, expect, s);
    free(s);
    return ok;
}

/* A finite decimal number in [min, max]. */
static bool get_number(const yfile *f, const kv *p, double min, double max, const char *expect, double *out)
{
    char *s = NULL;
    if (!scalar_text(f, p, expect, &s))
        return false;
    /* strtod also takes "inf", "nan" and hex; config numbers are plain decimals. */
    bool ok = s[0] != '\0' && strspn(s, "0123456789.eE+-") == strlen(s);
    char *end = NULL;
    double v = ok ? strtod(s, &end) : 0;
    ok = ok && *end == '\0' && isfinite(v) && v >= min && v <= max;
    if (ok)
        *out = v;
    else
        report(f, p->line, "%s must be %s (got \"%.60s\")", p->key, expect, s);
    free(s);
    return ok;
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

static bool parse_store(const yfile *f, const yaml_node_t *map, cfg_store *st)
{
    if (!check_keys(f, map, store_keys))
        return false;
    for (const yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        kv p = pair_at(f, pair);
        int64_t n = 0;
        bool ok;
        if (strcmp(p.key, "enabled") == 0) {
            ok = get_bool(f, &p, &st->enabled);
        } else if (strcmp(p.key, "path") == 0) {
            ok = get_string(f, &p, "give the DuckDB file, e.g. data/store.duckdb", &st->path);
        } else if (strcmp(p.key, "sync_mode") == 0) {
            char *mode = NULL;
            ok = scalar_text(f, &p, "\"startup\" or \"manual\"", &mode);
            if (ok && strcmp(mode, "startup") == 0)
                st->sync_mode = CFG_SYNC_STARTUP;
            else if (ok && strcmp(mode, "manual") == 0)
                st->sync_mode = CFG_SYNC_MANUAL;
            else if (ok)
                ok = FAIL(f, p.line, "sync_mode must be \"startup\" or \"manual\" (got \"%.60s\")", mode);
            free(mode);
        } else if (strcmp(p.key, "sync_workers") == 0) {
            ok = get_int(f, &p, 1, 64, "an integer between 1 and 64", &n);
            st->sync_workers = (int)n;
        } else if (strcmp(p.key, "sync_chunk_size") == 0) {
            ok = get_int(f, &p, 1, 2147483647, "an integer between 1 and 2147483647 (rows per insert batch)",
                         &n);
            st->sync_chunk_size = (int)n;
        } else if (strcmp(p.key, "max_sync_rows") == 0) {
            ok = get_int(f, &p, 0, INT64_MAX, "an integer >= 0 (0 = no cap)", &st->max_sync_rows);
        } else if (strcmp(p.key, "memory_limit") == 0) {
            char *limit = NULL;
            ok = get_string(f, &p, "give a size such as 256MB or 2GB", &limit);
            if (ok && !valid_memory_limit(limit))
                ok =
                    FAIL(f, p.line,
                         "memory_limit must be a size such as 256MB, 1.5GB or 512MiB (got \"%.60s\")", limit);
            if (ok) {
                free(st->memory_limit);
                st->memory_limit = limit;
            } else {
                free(limit);
            }
        } else if (strcmp(p.key, "threads") == 0) {
            ok = get_int(f, &p, 0, 256, "an integer between 0 and 256 (0 = one per core)", &n);
            st->threads = (int)n;
        } else {
            ok = get_int(f, &p, 1, 256, "an integer between 1 and 256", &n);
            st->query_concurrency = (int)n;
        }
        if (!ok)
            return false;
    }
    return true;
}

static bool valid_source_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > MAX_SOURCE_NAME || isdigit((unsigned char)name[0]))
        return false;
    for (const char *c = name; *c; c++)
        if (!(*c >= 'a' && *c <= 'z') && !isdigit((unsigned char)*c) && *c != '_')
            return false;
    return true;
}

/* The url rules (url.c), reported at the url's line. */
static bool check_url(const yfile *f, const kv *p, const char *url)
{
    ds_error e = {0};
    if (cfg_url_check(url, &e))
        return true;
    if (e.code != DS_ERR_CONFIG) {
        *f->err = e;
        return false;
    }
    return FAIL(f, p->line, "%s", e.msg);
}

static bool source_query_key(const yfile *f, const kv *p, char **dst, int *dst_line)
{
    *dst_line = p->line;
    return get_string(f, p, "write the SQL SELECT (a `|` block keeps it readable), or remove the key", dst);
}

static void key_free(cfg_key *key)
{
    for (size_t i = 0; i < key->n; i++)
        free(key->cols[i]);
    free(key->cols);
    key->cols = NULL;
    key->n = 0;
}

/* A column name or a list of them. */
static bool get_key(const yfile *f, const kv *p, cfg_key *out)
{
    key_free(out);
    const char *hint = "name a column of the query, or a list of them: [dataset_id, metric_name]";
    if (p->value->type != YAML_SEQUENCE_NODE) {
        char *col = NULL;
        if (!get_string(f, p, hint, &col))
            return false;
        out->cols = malloc(sizeof *out->cols);
        if (out->cols == NULL) {
            free(col);
            return nomem(f->err);
        }
        out->cols[0] = col;
        out->n = 1;
        return true;
    }
    const yaml_node_item_t *start = p->value->data.sequence.items.start;
    size_t n = (size_t)(p->value->data.sequence.items.top - start);
    if (n == 0)
        return FAIL(f, p->line, "%s is an empty list; %s", p->key, hint);
    out->cols = calloc(n, sizeof *out->cols);
    if (out->cols == NULL)
        return nomem(f->err);
    for (size_t i = 0; i < n; i++) {
        kv item = {p->key, p->line, yaml_document_get_node((yaml_document_t *)&f->doc, start[i])};
        item.line = line_of(item.value);
        if (!get_string(f, &item, hint, &out->cols[i]))
            return false;
        out->n = i + 1;
    }
    return true;
}

/* unique_key: a column/list (single-query source) or a mapping per sub-table. */
static bool get_unique_key(const yfile *f, const kv *p, cfg_source *src)
{
    src->unique_key_line = p->line;
    if (p->value->type != YAML_MAPPING_NODE)
        return get_key(f, p, &src->unique_key_data);
    static const char *const sub_keys[] = {"dataset", "results", "data", NULL};
    if (!check_keys(f, p->value, sub_keys))
        return false;
    for (const yaml_node_pair_t *pair = p->value->data.mapping.pairs.start;
         pair < p->value->data.mapping.pairs.top; pair++) {
        kv sub = pair_at(f, pair);
        cfg_key *key = strcmp(sub.key, "dataset") == 0   ? &src->unique_key_dataset
                       : strcmp(sub.key, "results") == 0 ? &src->unique_key_results
                                                         : &src->unique_key_data;
        if (!get_key(f, &sub, key))
            return false;
    }
    return true;
}

/* "5 minutes", "1 hour 30 minutes", "90 seconds" or a plain number. */
static bool get_lookback(const yfile *f, const kv *p, cfg_source *src)
{
    src->lookback_line = p->line;
    char *text = NULL;
    if (!get_string(f, p, "give an interval such as \"5 minutes\" or a number", &text))
        return false;
    char *end;
    double v = strtod(text, &end);
    while (*end == ' ')
        end++;
    bool ok = end != text && isfinite(v) && v >= 0;
    src->lookback_is_number = ok && *end == '\0';
    static const char *const units[] = {"microsecond", "millisecond", "second", "minute",
                                        "hour",        "day",         "week",   NULL};
    const char *q = text;
    while (ok && !src->lookback_is_number && *q) { /* <number> <unit>[s] ... */
        v = strtod(q, &end);
        if (end == q || !(v >= 0)) {
            ok = false;
            break;
        }
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
        ok = unit_ok;
        while (*end == ' ')
            end++;
        q = end;
    }
    if (!ok) {
        free(text);
        return FAIL(f, p->line,
                    "lookback must be an interval such as \"5 minutes\" or \"1 hour\" (time columns) or a "
                    "number (numeric columns)");
    }
    free(src->lookback);
    src->lookback = text;
    return true;
}

static bool parse_source_keys(const yfile *f, const yaml_node_t *map, cfg_source *src)
{
    const char *column_hint = "name a column of the query, or remove the key";
    if (!check_keys(f, map, source_keys))
        return false;
    for (const yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        kv p = pair_at(f, pair);
        bool ok;
        if (strcmp(p.key, "enabled") == 0) {
            ok = get_bool(f, &p, &src->enabled);
        } else if (strcmp(p.key, "auto_load") == 0) {
            ok = get_bool(f, &p, &src->auto_load);
        } else if (strcmp(p.key, "url") == 0) {
            src->url_line = p.line;
            ok = get_string(f, &p, "set a postgresql://user:${DB_PASSWORD}@host:5432/dbname URI", &src->url);
            ok = ok && check_url(f, &p, src->url);
        } else if (strcmp(p.key, "dataset_query") == 0) {
            ok = source_query_key(f, &p, &src->dataset_query, &src->dataset_query_line);
        } else if (strcmp(p.key, "results_query") == 0) {
            ok = source_query_key(f, &p, &src->results_query, &src->results_query_line);
        } else if (strcmp(p.key, "query") == 0) {
            ok = source_query_key(f, &p, &src->query, &src->query_line);
        } else if (strcmp(p.key, "partition_column") == 0) {
            src->partition_column_line = p.line;
            ok = get_string(f, &p, column_hint, &src->partition_column);
        } else if (strcmp(p.key, "incremental_column") == 0) {
            src->incremental_column_line = p.line;
            ok = get_string(f, &p, column_hint, &src->incremental_column);
        } else if (strcmp(p.key, "refresh_interval_minutes") == 0) {
            ok = get_number(f, &p, 0, MAX_REFRESH_MINUTES,
                            "a number of minutes between 0 and 525600 (0 = no periodic sync)",
                            &src->refresh_interval_minutes);
        } else if (strcmp(p.key, "full_refresh_interval_minutes") == 0) {
            ok = get_number(f, &p, 0, MAX_REFRESH_MINUTES,
                            "a number of minutes between 0 and 525600 (0 = never)",
                            &src->full_refresh_interval_minutes);
        } else if (strcmp(p.key, "unique_key") == 0) {
            ok = get_unique_key(f, &p, src);
        } else if (strcmp(p.key, "lookback") == 0) {
            ok = get_lookback(f, &p, src);
        } else if (strcmp(p.key, "commit_horizon") == 0) {
            bool on = true;
            ok = get_bool(f, &p, &on);
            src->commit_horizon = on ? CFG_HORIZON_ON : CFG_HORIZON_OFF;
        } else {
            ok = get_number(f, &p, MIN_QUERY_TIMEOUT_S, MAX_QUERY_TIMEOUT_S,
                            "a number of seconds > 0 (at least 0.001, at most 31536000), e.g. 600",
                            &src->query_timeout_s);
        }
        if (!ok)
            return false;
    }
    return true;
}

/* The rules that span keys: a url, and either query or the split pair. */
static bool check_source(const yfile *f, const cfg_source *src, const char *key)
{
    if (src->url == NULL)
        return FAIL(f, src->line, "%s has no url; add url: postgresql://user:${DB_PASSWORD}@host:5432/dbname",
                    key);
    bool split = src->dataset_query != NULL || src->results_query != NULL;
    if (src->query != NULL && split)
        return FAIL(f, src->query_line,
                    "both query and %s are given; use either a single query or the pair dataset_query + "
                    "results_query",
                    src->dataset_query != NULL ? "dataset_query" : "results_query");
    if (src->query == NULL && !split)
        return FAIL(f, src->line,
                    "%s has no query; add dataset_query + results_query (split source, joined on dataset_id) "
                    "or a single query",
                    key);
    if (src->dataset_query == NULL && src->results_query != NULL)
        return FAIL(
            f, src->results_query_line,
            "results_query without dataset_query; add dataset_query (both must select dataset_id), or "
            "use a single query");
    if (src->results_query == NULL && src->dataset_query != NULL)
        return FAIL(
            f, src->dataset_query_line,
            "dataset_query without results_query; add results_query (both must select dataset_id), or "
            "use a single query");
    if (split && src->unique_key_data.n > 0)
        return FAIL(f, src->unique_key_line,
                    "a split source needs one unique_key per query: unique_key: {dataset: dataset_id, "
                    "results: [dataset_id, metric_name]}");
    if (!split && (src->unique_key_dataset.n > 0 || src->unique_key_results.n > 0))
        return FAIL(
            f, src->unique_key_line,
            "a single-query source takes unique_key: <column> or [columns], not dataset/results keys");
    if ((src->unique_key_line || src->lookback || src->full_refresh_interval_minutes > 0) &&
        src->incremental_column == NULL)
        return FAIL(f,
                    src->unique_key_line ? src->unique_key_line
                    : src->lookback_line ? src->lookback_line
                                         : src->line,
                    "unique_key, lookback and full_refresh_interval_minutes work with incremental syncs; add "
                    "incremental_column");
    return true;
}

static void source_defaults(cfg_source *src)
{
    memset(src, 0, sizeof *src);
    src->enabled = true;
    src->auto_load = true;
    src->refresh_interval_minutes = 0;
    src->query_timeout_s = 600;
}

static void source_free(cfg_source *src)
{
    free(src->name);
    free(src->file);
    free(src->url);
    free(src->dataset_query);
    free(src->results_query);
    free(src->query);
    free(src->partition_column);
    free(src->incremental_column);
    free(src->lookback);
    key_free(&src->unique_key_dataset);
    key_free(&src->unique_key_results);
    key_free(&src->unique_key_data);
    memset(src, 0, sizeof *src);
}

/* A source file: a mapping with exactly one `<name>_db:` key. */
static bool load_source_file(const yfile *f, cfg_source *src)
{
    const char *shape =
        "a source file holds one mapping, e.g. \"monitoring_db:\" with url and queries under it";
    source_defaults(src);
    const yaml_node_t *root = yaml_document_get_root_node((yaml_document_t *)&f->doc);
    if (root == NULL || is_null(root))
        return FAIL(f, 1, "the file is empty; %s", shape);
    if (root->type != YAML_MAPPING_NODE)
        return FAIL(f, line_of(root), "the top level is %s, not a mapping; %s", node_kind(root), shape);
    if (n_pairs(root) == 0)
        return FAIL(f, line_of(root), "no source defined; %s", shape);
    if (!check_keys(f, root, NULL))
        return false;

    const yaml_node_pair_t *start = root->data.mapping.pairs.start;
    for (const yaml_node_pair_t *pair = start; pair < root->data.mapping.pairs.top; pair++) {
        kv p = pair_at(f, pair);
        if (strcmp(p.key, "duckdb") == 0)
            return FAIL(f, p.line, "duckdb: belongs in duckdb.yaml, not in a source file; move it there");
        if (!ends_with(p.key, "_db"))
            return FAIL(f, p.line, "top-level key \"%.80s\" must be named <name>_db (e.g. \"%.80s_db:\"); %s",
                        p.key, p.key, shape);
        if (pair != start)
            return FAIL(
                f, p.line,
                "second top-level key \"%.80s\"; a source file holds exactly one <name>_db: key, move "
                "\"%.80s\" to a file of its own",
                p.key, p.key);
    }

    kv p = pair_at(f, start);
    size_t name_len = strlen(p.key) - 3;
    src->line = p.line;
    src->name = strndup(p.key, name_len);
    src->file = strdup(f->path);
    if (src->name == NULL || src->file == NULL)
        return nomem(f->err);
    if (!valid_source_name(src->name))
        return FAIL(f, p.line,
                    "source name \"%.80s\" (from %.80s) is not valid; use lowercase letters, digits and _, "
                    "not starting with a digit, at most %d characters",
                    src->name, p.key, MAX_SOURCE_NAME);
    if (p.value->type != YAML_MAPPING_NODE)
        return FAIL(f, p.line, "%s must be a mapping of source settings (url, dataset_query, ...), not %s",
                    p.key, is_null(p.value) ? "empty" : node_kind(p.value));
    return parse_source_keys(f, p.value, src) && check_source(f, src, p.key);
}

/* duckdb.yaml: `duckdb:` with store settings; empty means defaults. */
static bool load_store_file(const yfile *f, cfg_store *st)
{
    const yaml_node_t *root = yaml_document_get_root_node((yaml_document_t *)&f->doc);
    if (root == NULL || is_null(root))
        return true;
    if (root->type != YAML_MAPPING_NODE)
        return FAIL(f, line_of(root), "the top level is %s, not a mapping; start the file with \"duckdb:\"",
                    node_kind(root));
    for (const yaml_node_pair_t *pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top;
         pair++) {
        kv p = pair_at(f, pair);
        if (ends_with(p.key, "_db"))
            return FAIL(f, p.line,
                        "source \"%.80s\" does not belong in duckdb.yaml; move it to a file of its "
                        "own, e.g. %.80s.yaml",
                        p.key, p.key);
    }
    if (!check_keys(f, root, store_top_keys))
        return false;
    for (const yaml_node_pair_t *pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top;
         pair++) {
        kv p = pair_at(f, pair);
        if (is_null(p.value))
            continue;
        if (p.value->type != YAML_MAPPING_NODE)
            return FAIL(f, p.line,
                        "duckdb must be a mapping of store settings (path, sync_mode, ...), not %s",
                        node_kind(p.value));
        if (!parse_store(f, p.value, st))
            return false;
    }
    return true;
}

static bool read_file(const char *path, char **text, size_t *len, ds_error *err)
{
    FILE *in = fopen(path, "rb");
    if (in == NULL)
        return ds_error_set(err, DS_ERR_CONFIG, "%s:0: cannot open: %s; check its permissions", path,
                            strerror(errno));
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    bool ok = out != NULL;
    char chunk[8192];
    size_t n;
    while (ok && (n = fread(chunk, 1, sizeof chunk, in)) > 0)
        ok = fwrite(chunk, 1, n, out) == n && ftell(out) <= MAX_FILE_SIZE;
    bool read_error = ferror(in) != 0;
    fclose(in);
    if (out != NULL && fclose(out) != 0)
        ok = false;
    if (!ok || read_error) {
        free(buf);
        if (read_error)
            return ds_error_set(err, DS_ERR_CONFIG, "%s:0: cannot read the file; check it", path);
        if (size > (size_t)MAX_FILE_SIZE)
            return ds_error_set(err, DS_ERR_CONFIG, "%s:0: larger than 16 MiB; is this a config file?", path);
        return nomem(err);
    }
    *text = buf;
    *len = size;
    return true;
}

static bool parse_error(yfile *f, const yaml_parser_t *parser)
{
    if (parser->error == YAML_MEMORY_ERROR)
        return nomem(f->err);
    if (parser->error == YAML_READER_ERROR)
        return FAIL(f, line_at_offset(f, parser->problem_offset),
                    "cannot read the YAML text: %s; save the file as UTF-8",
                    parser->problem ? parser->problem : "unknown error");
    const char *fix = parser->error == YAML_COMPOSER_ERROR
                          ? "define each &anchor before the *alias that uses it"
                          : "check the indentation and quoting";
    return FAIL(f, (int)parser->problem_mark.line + 1, "YAML syntax error: %s%s%s; %s",
                parser->problem ? parser->problem : "unknown error", parser->context ? " " : "",
                parser->context ? parser->context : "", fix);
}

/* Parses f->text into f->doc; a second document in the file is an error. */
static bool parse_yaml(yfile *f)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return nomem(f->err);
    yaml_parser_set_input_string(&parser, (const unsigned char *)f->text, f->len);
    bool ok = yaml_parser_load(&parser, &f->doc) != 0;
    if (!ok) {
        parse_error(f, &parser);
        yaml_parser_delete(&parser);
        return false;
    }
    yaml_document_t extra;
    if (!yaml_parser_load(&parser, &extra)) {
        ok = parse_error(f, &parser);
    } else {
        if (yaml_document_get_root_node(&extra) != NULL)
            ok = FAIL(f, (int)extra.start_mark.line + 1,
                      "a second YAML document (after \"---\"); keep one document per file");
        yaml_document_delete(&extra);
    }
    yaml_parser_delete(&parser);
    if (!ok)
        yaml_document_delete(&f->doc);
    return ok;
}

static bool is_store_file(const char *name)
{
    return strcmp(name, "duckdb.yaml") == 0 || strcmp(name, "duckdb.yml") == 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* *.yaml and *.yml regular files (symlinks followed), sorted; hidden files
 * such as editor backups are skipped. */
static bool list_yaml_files(const char *dir, char ***names, size_t *n, ds_error *err)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return ds_error_set(err, DS_ERR_CONFIG,
                            "%s: cannot open the config directory: %s; create it or pass the right "
                            "one with --config-dir",
                            dir, strerror(errno));
    size_t cap = 0;
    bool ok = true;
    const struct dirent *ent;
    while (ok && (ent = readdir(d)) != NULL) {
        const char *name = ent->d_name;
        if (name[0] == '.' || !(ends_with(name, ".yaml") || ends_with(name, ".yml")))
            continue;
        char *path = NULL;
        struct stat st;
        if (asprintf(&path, "%s/%s", dir, name) < 0) {
            ok = nomem(err);
            break;
        }
        bool regular = stat(path, &st) == 0 && S_ISREG(st.st_mode);
        free(path);
        if (!regular)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(*names, cap * sizeof *grown);
            if (grown == NULL) {
                ok = nomem(err);
                break;
            }
            *names = grown;
        }
        if (((*names)[*n] = strdup(name)) == NULL)
            ok = nomem(err);
        else
            (*n)++;
    }
    closedir(d);
    if (!ok) {
        free_names(*names, *n);
        *names = NULL;
        *n = 0;
        return false;
    }
    if (*n > 0)
        qsort(*names, *n, sizeof **names, compare_names);
    return true;
}

static void plan_query(cfg_source *src, const char *label, const char *sql, int line, const cfg_key *key,
                       const char *suffix)
{
    cfg_query_plan *plan = &src->plans[src->n_plans++];
    plan->label = label;
    plan->sql = sql;
    plan->line = line;
    plan->key = key;
    plan->needs_dataset_id = src->query == NULL;
    snprintf(plan->table, sizeof plan->table, "%s_%s", src->name, suffix);
    snprintf(plan->staging, sizeof plan->staging, "%s_%s_staging", src->name, suffix);
}

/* The source's queries as a list, built once: the sync, the status and the
 * server walk it instead of knowing that a source has one or two. */
static void build_query_plans(cfg_source *src)
{
    src->n_plans = 0;
    if (src->query != NULL) {
        plan_query(src, "query", src->query, src->query_line, &src->unique_key_data, "data");
    } else {
        plan_query(src, "dataset_query", src->dataset_query, src->dataset_query_line,
                   &src->unique_key_dataset, "dataset");
        plan_query(src, "results_query", src->results_query, src->results_query_line,
                   &src->unique_key_results, "results");
    }
    snprintf(src->data_name, sizeof src->data_name, "%s_data", src->name);
}

static int compare_sources(const void *a, const void *b)
{
    const cfg_source *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->file, y->file);
}

static bool load_file(const char *path, bool store, cfg_config *cfg, ds_error *err)
{
    yfile f = {.path = path, .err = err};
    char *text = NULL;
    if (!read_file(path, &text, &f.len, err))
        return false;
    f.text = text;
    bool parsed = parse_yaml(&f);
    bool ok = parsed;
    if (ok && store) {
        ok = load_store_file(&f, &cfg->store);
    } else if (ok) {
        cfg_source *grown = realloc(cfg->sources, (cfg->n_sources + 1) * sizeof *grown);
        if (grown == NULL) {
            ok = nomem(err);
        } else {
            cfg->sources = grown;
            cfg_source *src = &cfg->sources[cfg->n_sources];
            ok = load_source_file(&f, src);
            if (ok)
                cfg->n_sources++;
            else
                source_free(src);
        }
    }
    if (parsed)
        yaml_document_delete(&f.doc);
    free(text);
    return ok;
}

bool cfg_load_dir(const char *dir, cfg_config *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    if (dir == NULL || dir[0] == '\0')
        return ds_error_set(err, DS_ERR_CONFIG, "no config directory given; pass --config-dir DIR");

    cfg_config cfg = {0};
    cfg.store.enabled = true;
    cfg.store.sync_mode = CFG_SYNC_STARTUP;
    cfg.store.sync_workers = 1;
    cfg.store.sync_chunk_size = 1000000;
    cfg.store.max_sync_rows = 2000000;
    cfg.store.query_concurrency = 8;
    cfg.dir = strdup(dir);
    cfg.store.path = strdup("data/store.duckdb");
    cfg.store.threads = 1;
    if (cfg.dir == NULL || cfg.store.path == NULL) {
        cfg_free(&cfg);
        return nomem(err);
    }

    char **names = NULL;
    size_t n = 0;
    bool ok = list_yaml_files(dir, &names, &n, err);
    const char *sep = dir[strlen(dir) - 1] == '/' ? "" : "/";
    const char *store_file = NULL;
    for (size_t i = 0; ok && i < n; i++) {
        char *path = NULL;
        if (asprintf(&path, "%s%s%s", dir, sep, names[i]) < 0) {
            ok = nomem(err);
            break;
        }
        bool store = is_store_file(names[i]);
        if (store && store_file != NULL)
            ok = ds_error_set(err, DS_ERR_CONFIG, "%s:1: both %s and %s exist; keep only one of them", path,
                              store_file, names[i]);
        else
            ok = load_file(path, store, &cfg, err);
        if (store)
            store_file = names[i];
        free(path);
    }

    if (ok && cfg.n_sources > 1) {
        qsort(cfg.sources, cfg.n_sources, sizeof *cfg.sources, compare_sources);
        for (size_t i = 1; ok && i < cfg.n_sources; i++) {
            const cfg_source *a = &cfg.sources[i - 1], *b = &cfg.sources[i];
            if (strcmp(a->name, b->name) == 0)
                ok = ds_error_set(err, DS_ERR_CONFIG,
                                  "%s:%d: source \"%s\" is defined twice: also in %s:%d; rename one of the "
                                  "%s_db keys",
                                  b->file, b->line, b->name, a->file, a->line, b->name);
        }
    }
    free_names(names, n);
    /* After sorting: a plan points at its source's unique_key. */
    for (size_t i = 0; ok && i < cfg.n_sources; i++)
        build_query_plans(&cfg.sources[i]);
    /* Default memory_limit: 64 MB, plus 16 MB per further partition worker
     * (each inserts on its own, holding its unfinished row group). With
     * 16,384-row row groups a 5M-row sync stays near 150 MB of RSS with one
     * worker; 4 workers ran out of memory at 64 MB and peaked at 264 MB of
     * RSS at 112 MB. The limit, not the table size, bounds the rest (DuckDB
     * spills beyond it). */
    if (ok && cfg.store.memory_limit == NULL &&
        asprintf(&cfg.store.memory_limit, "%dMB", 64 + 16 * (cfg.store.sync_workers - 1)) < 0)
        ok = nomem(err);
    if (!ok) {
        cfg_free(&cfg);
        return false;
    }
    *out = cfg;
    return true;
}

void cfg_free(cfg_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n_sources; i++)
        source_free(&cfg->sources[i]);
    free(cfg->sources);
    free(cfg->dir);
    free(cfg->store.path);
    free(cfg->store.memory_limit);
    memset(cfg, 0, sizeof *cfg);
}

const cfg_source *cfg_find_source(const cfg_config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n_sources; i++)
        if (strcmp(cfg->sources[i].name, name) == 0)
            return &cfg->sources[i];
    return NULL;
}

bool cfg_source_is_split(const cfg_source *src)
{
    return src != NULL && src->dataset_query != NULL && src->results_query != NULL;
}
