/* The YAML side of the config loader: reading a file, parsing it with
 * libyaml, walking mappings and lists, and turning a problem into a
 * "file:line:" message whose line an editor shows. */
#include "config/yaml_file.h"
#include "config/expand.h"

#include "common/strbuf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_SIZE ((size_t)16 * 1024 * 1024)

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
static int line_at_offset(const cfg_yfile *f, size_t offset)
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
static int last_line(const cfg_yfile *f)
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

void cfg_yaml_report(const cfg_yfile *f, int line, const char *fmt, ...)
{
    ds_buf msg = DS_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    ds_buf_vappendf(&msg, fmt, ap);
    va_end(ap);
    int last = last_line(f);
    if (ds_buf_str(&msg) == NULL)
        cfg_yaml_nomem(f->err);
    else
        ds_error_set(f->err, DS_ERR_CONFIG, "%s:%d: %s", f->path,
                     line < 1      ? 1
                     : line > last ? last
                                   : line,
                     ds_buf_str(&msg));
    ds_buf_free(&msg);
}

bool cfg_yaml_nomem(ds_error *err)
{
    return ds_error_set(err, DS_ERR_NOMEM, "out of memory while loading the config");
}

const yaml_node_t *cfg_yaml_root(const cfg_yfile *f)
{
    /* libyaml's getters take a non-const document, but only read it. */
    return yaml_document_get_root_node((yaml_document_t *)&f->doc);
}

int cfg_yaml_line_of(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

const char *cfg_yaml_node_kind(const yaml_node_t *n)
{
    return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a value";
}

bool cfg_yaml_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return n->data.scalar.length == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

size_t cfg_yaml_n_pairs(const yaml_node_t *map)
{
    return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

static const yaml_node_t *node(const cfg_yfile *f, int id)
{
    return yaml_document_get_node((yaml_document_t *)&f->doc, id);
}

cfg_kv cfg_yaml_pair(const cfg_yfile *f, const yaml_node_t *map, size_t i)
{
    const yaml_node_pair_t *pair = &map->data.mapping.pairs.start[i];
    const yaml_node_t *k = node(f, pair->key);
    cfg_kv p = {"", cfg_yaml_line_of(k), node(f, pair->value)};
    if (k->type == YAML_SCALAR_NODE)
        p.key = (const char *)k->data.scalar.value;
    return p;
}

size_t cfg_yaml_n_items(const yaml_node_t *list)
{
    return (size_t)(list->data.sequence.items.top - list->data.sequence.items.start);
}

cfg_kv cfg_yaml_item(const cfg_yfile *f, const cfg_kv *p, size_t i)
{
    const yaml_node_t *item = node(f, p->value->data.sequence.items.start[i]);
    return (cfg_kv){p->key, cfg_yaml_line_of(item), item};
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

/* The closer a typo is to a known name, the more likely it is meant: up to
 * one edit for short keys, three for long ones. */
static bool unknown_key(const cfg_yfile *f, const cfg_kv *p, const char *const *known, size_t n_known)
{
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (size_t i = 0; i < n_known; i++) {
        size_t d = edit_distance(p->key, known[i]);
        if (d < best_d) {
            best_d = d;
            best = known[i];
        }
    }
    size_t len = strlen(p->key);
    size_t limit = len <= 4 ? 1 : len <= 8 ? 2 : 3;
    if (best != NULL && best_d <= limit)
        return CFG_FAIL(f, p->line, "unknown key \"%.80s\"; did you mean \"%s\"?", p->key, best);

    ds_buf list = DS_BUF_INIT;
    for (size_t i = 0; i < n_known; i++)
        ds_buf_appendf(&list, "%s%s", i == 0 ? "" : ", ", known[i]);
    if (ds_buf_str(&list) == NULL)
        cfg_yaml_nomem(f->err);
    else
        cfg_yaml_report(f, p->line, "unknown key \"%.80s\"; valid keys: %s", p->key, ds_buf_str(&list));
    ds_buf_free(&list);
    return false;
}

static bool is_known(const char *key, const char *const *known, size_t n_known)
{
    for (size_t i = 0; i < n_known; i++)
        if (strcmp(key, known[i]) == 0)
            return true;
    return false;
}

bool cfg_yaml_check_keys(const cfg_yfile *f, const yaml_node_t *map, const char *const *known, size_t n_known)
{
    const yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
    for (size_t i = 0; i < cfg_yaml_n_pairs(map); i++) {
        cfg_kv p = cfg_yaml_pair(f, map, i);
        const yaml_node_t *k = node(f, pairs[i].key);
        if (k->type != YAML_SCALAR_NODE || k->data.scalar.length == 0 ||
            memchr(p.key, '\0', k->data.scalar.length) != NULL)
            return CFG_FAIL(f, p.line, "keys must be plain names, not %s; check the indentation",
                            cfg_yaml_node_kind(k));
        if (known != NULL && !is_known(p.key, known, n_known))
            return unknown_key(f, &p, known, n_known);
        for (size_t j = 0; j < i; j++) {
            cfg_kv q = cfg_yaml_pair(f, map, j);
            if (strcmp(p.key, q.key) == 0)
                return CFG_FAIL(f, p.line, "duplicate key \"%.80s\" (first given on line %d); keep one",
                                p.key, q.line);
        }
    }
    return true;
}

/* Line of the byte at offset of a scalar: exact for `|` block scalars, whose
 * text starts on the line after the indicator and keeps its line breaks. */
static int value_line(const yaml_node_t *v, size_t offset)
{
    int line = cfg_yaml_line_of(v);
    if (v->data.scalar.style != YAML_LITERAL_SCALAR_STYLE)
        return line;
    line++;
    for (size_t i = 0; i < offset; i++)
        if (v->data.scalar.value[i] == '\n')
            line++;
    return line;
}

/* The checks both readers of a scalar make; *len: its length ("" for null). */
static bool scalar_checks(const cfg_yfile *f, const cfg_kv *p, const char *expect, size_t *len)
{
    const yaml_node_t *v = p->value;
    if (v->type != YAML_SCALAR_NODE)
        return CFG_FAIL(f, p->line, "%s must be %s, not %s", p->key, expect, cfg_yaml_node_kind(v));
    const char *s = (const char *)v->data.scalar.value;
    *len = v->data.scalar.length;
    if (memchr(s, '\0', *len) != NULL)
        return CFG_FAIL(f, cfg_yaml_line_of(v), "%s contains a NUL character; remove it", p->key);
    if (cfg_yaml_is_null(v))
        *len = 0;
    return true;
}

bool cfg_yaml_scalar_text(const cfg_yfile *f, const cfg_kv *p, const char *expect, char **out)
{
    size_t len;
    if (!scalar_checks(f, p, expect, &len))
        return false;
    const yaml_node_t *v = p->value;
    cfg_expand_error e;
    *out = cfg_expand_env((const char *)v->data.scalar.value, len, &e);
    if (*out != NULL)
        return true;
    if (e.what[0] == '\0')
        return cfg_yaml_nomem(f->err);
    return CFG_FAIL(f, value_line(v, e.offset), "%s: %s", p->key, e.what);
}

bool cfg_yaml_scalar_verbatim(const cfg_yfile *f, const cfg_kv *p, const char *expect, char **out)
{
    size_t len;
    if (!scalar_checks(f, p, expect, &len))
        return false;
    *out = strndup((const char *)p->value->data.scalar.value, len);
    return *out != NULL || cfg_yaml_nomem(f->err);
}

static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

/* The indentation of a | block: that of its first line holding more than
 * spaces, from the file's text (libyaml keeps only the text). */
static int block_indent(const cfg_yfile *f, const yaml_node_t *v)
{
    size_t off = 0; /* to the line after the | */
    int line = 0;
    while (off < f->len && line < (int)v->start_mark.line + 1) {
        size_t n = break_at(f->text, f->len, off);
        line += n > 0;
        off += n > 0 ? n : 1;
    }
    while (off < f->len) {
        int indent = 0;
        while (off < f->len && f->text[off] == ' ') {
            indent++;
            off++;
        }
        size_t n = off < f->len ? break_at(f->text, f->len, off) : 0;
        if (off < f->len && n == 0)
            return indent;
        off += n > 0 ? n : 1;
    }
    return 0;
}

void cfg_yaml_text_at(const cfg_yfile *f, const yaml_node_t *v, const char *text, cfg_text_at *at)
{
    memset(at, 0, sizeof *at);
    at->line = cfg_yaml_line_of(v);
    const char *raw = (const char *)v->data.scalar.value;
    size_t raw_len = v->data.scalar.length;
    bool unexpanded = strlen(text) == raw_len && memcmp(text, raw, raw_len) == 0;
    yaml_scalar_style_t style = v->data.scalar.style;
    if (style == YAML_LITERAL_SCALAR_STYLE) {
        at->line++;
        at->literal = true;
        at->indent = block_indent(f, v);
        at->col = at->indent + 1;
        at->verbatim = unexpanded;
        return;
    }
    size_t span = v->end_mark.index - v->start_mark.index;
    size_t quotes = style == YAML_PLAIN_SCALAR_STYLE ? 0 : 2;
    at->col = (int)v->start_mark.column + 1 + (quotes ? 1 : 0);
    at->verbatim = unexpanded && style != YAML_FOLDED_SCALAR_STYLE &&
                   v->start_mark.line == v->end_mark.line && span == utf8_chars(raw, raw_len) + quotes;
}

static bool read_file(cfg_yfile *f)
{
    FILE *in = fopen(f->path, "rb");
    if (in == NULL)
        return ds_error_set(f->err, DS_ERR_CONFIG, "%s:0: cannot open: %s; check its permissions", f->path,
                            strerror(errno));
    ds_buf text = DS_BUF_INIT;
    char chunk[8192];
    size_t n;
    while (!text.failed && text.len <= MAX_FILE_SIZE && (n = fread(chunk, 1, sizeof chunk, in)) > 0)
        ds_buf_appendn(&text, chunk, n);
    bool read_error = ferror(in) != 0;
    fclose(in);
    bool too_large = text.len > MAX_FILE_SIZE;
    f->len = text.len;
    f->text = ds_buf_take(&text);
    if (read_error || too_large || f->text == NULL) {
        free(f->text);
        f->text = NULL;
        if (read_error)
            return ds_error_set(f->err, DS_ERR_CONFIG, "%s:0: cannot read the file; check it", f->path);
        if (too_large)
            return ds_error_set(f->err, DS_ERR_CONFIG, "%s:0: larger than 16 MiB; is this a config file?",
                                f->path);
        return cfg_yaml_nomem(f->err);
    }
    return true;
}

static bool parse_error(const cfg_yfile *f, const yaml_parser_t *parser)
{
    if (parser->error == YAML_MEMORY_ERROR)
        return cfg_yaml_nomem(f->err);
    if (parser->error == YAML_READER_ERROR)
        return CFG_FAIL(f, line_at_offset(f, parser->problem_offset),
                        "cannot read the YAML text: %s; save the file as UTF-8",
                        parser->problem ? parser->problem : "unknown error");
    const char *fix = parser->error == YAML_COMPOSER_ERROR
                          ? "define each &anchor before the *alias that uses it"
                          : "check the indentation and quoting";
    return CFG_FAIL(f, (int)parser->problem_mark.line + 1, "YAML syntax error: %s%s%s; %s",
                    parser->problem ? parser->problem : "unknown error", parser->context ? " " : "",
                    parser->context ? parser->context : "", fix);
}

/* Parses f->text into f->doc; a second document in the file is an error. */
static bool parse_yaml(cfg_yfile *f)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return cfg_yaml_nomem(f->err);
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
            ok = CFG_FAIL(f, (int)extra.start_mark.line + 1,
                          "a second YAML document (after \"---\"); keep one document per file");
        yaml_document_delete(&extra);
    }
    yaml_parser_delete(&parser);
    if (!ok)
        yaml_document_delete(&f->doc);
    return ok;
}

bool cfg_yaml_open(cfg_yfile *f, const char *path, ds_error *err)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    f->err = err;
    if (!read_file(f))
        return false;
    if (parse_yaml(f))
        return true;
    free(f->text);
    f->text = NULL;
    return false;
}

void cfg_yaml_close(cfg_yfile *f)
{
    yaml_document_delete(&f->doc);
    free(f->text);
    f->text = NULL;
}
