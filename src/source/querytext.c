/* A lexical scan of query text by PostgreSQL's rules (scan.l): what is
 * inside a string, a quoted identifier, a dollar quote or a comment is
 * skipped, parentheses are counted, words are compared without case. */
#include "source/querytext.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static bool ident_char(unsigned char c)
{
    return ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

/* Past the closing quote of a run whose opening quote is just before p; a
 * doubled quote stays inside, and so does a backslash-escaped character
 * in an E'' string. One never closed runs to the end and sets *open (when
 * not NULL), as do the two skips below. */
static const unsigned char *skip_quoted(const unsigned char *p, unsigned char quote, bool backslash,
                                        bool *open)
{
    while (*p) {
        if (backslash && *p == '\\' && p[1] != '\0') {
            p += 2;
        } else if (*p == quote) {
            if (p[1] != quote)
                return p + 1;
            p += 2;
        } else {
            p++;
        }
    }
    if (open != NULL)
        *open = true;
    return p;
}

/* Past a comment starting at p: "--" to the end of the line (\n or \r),
 * or a block comment, which nests. */
static const unsigned char *skip_comment(const unsigned char *p, bool *open)
{
    if (p[0] == '-') {
        while (*p && *p != '\n' && *p != '\r')
            p++;
        return p;
    }
    int depth = 0;
    while (*p) {
        if (p[0] == '/' && p[1] == '*') {
            depth++;
            p += 2;
        } else if (p[0] == '*' && p[1] == '/') {
            p += 2;
            if (--depth == 0)
                return p;
        } else {
            p++;
        }
    }
    if (open != NULL)
        *open = true;
    return p;
}

/* Length of the opening delimiter of a dollar quote at p ($$ or $tag$,
 * the tag an identifier without $), 0 when p starts none (a parameter $1). */
static size_t dollar_tag_len(const unsigned char *p)
{
    size_t n = 1;
    if (ident_start(p[n]))
        while (ident_char(p[n]) && p[n] != '$')
            n++;
    return p[n] == '$' ? n + 1 : 0;
}

/* Past the dollar quote whose opening delimiter of len bytes is at p. */
static const unsigned char *skip_dollar_quoted(const unsigned char *p, size_t len, bool *open)
{
    for (const unsigned char *q = p + len; *q; q++) {
        size_t i = 0;
        while (i < len && q[i] == p[i])
            i++;
        if (i == len)
            return q + len;
    }
    while (*p)
        p++;
    if (open != NULL)
        *open = true;
    return p;
}

static bool is_word(const unsigned char *w, size_t len, const char *word)
{
    size_t n = 0;
    while (word[n])
        n++;
    return len == n && strncasecmp((const char *)w, word, n) == 0;
}

const char *pgsrc_top_level_limit(const char *query)
{
    const unsigned char *p = (const unsigned char *)query;
    int depth = 0;
    /* What the previous token was: a word read as a name follows AS or a
     * dot; FIRST / NEXT make a FETCH a clause; ALL makes a LIMIT none. */
    bool name_next = false, after_fetch = false, after_limit = false;
    while (*p) {
        if (*p == ' ' || (*p >= '\t' && *p <= '\r')) {
            p++;
            continue;
        }
        if ((p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*')) {
            p = skip_comment(p, NULL);
            continue;
        }
        bool as_name = name_next, fetch = after_fetch, limit = after_limit;
        name_next = after_fetch = after_limit = false;
        const unsigned char *word = p;
        size_t len = 0;
        if (ident_start(*p)) {
            while (ident_char(*p))
                p++;
            len = (size_t)(p - word);
        }
        if (limit && !is_word(word, len, "ALL"))
            return "LIMIT";
        if (len > 0) {
            if (len == 1 && (*word == 'e' || *word == 'E') && *p == '\'') {
                p = skip_quoted(p + 1, '\'', true, NULL);
            } else if (depth == 0 && !as_name) {
                if (fetch && (is_word(word, len, "FIRST") || is_word(word, len, "NEXT")))
                    return "FETCH";
                if (is_word(word, len, "OFFSET"))
                    return "OFFSET";
                after_limit = is_word(word, len, "LIMIT");
                after_fetch = is_word(word, len, "FETCH");
                name_next = is_word(word, len, "AS");
            }
            continue;
        }
        size_t tag;
        if (*p == '\'' || *p == '"') {
            p = skip_quoted(p + 1, *p, false, NULL);
        } else if (*p == '$' && (tag = dollar_tag_len(p)) > 0) {
            p = skip_dollar_quoted(p, tag, NULL);
        } else if (*p >= '0' && *p <= '9') {
            while (ident_char(*p) || *p == '.')
                p++;
        } else {
            depth += *p == '(' ? 1 : *p == ')' ? -1 : 0;
            name_next = *p == '.';
            p++;
        }
    }
    return after_limit ? "LIMIT" : NULL;
}

/* ---- one table: SELECT <list> FROM <table> [[AS] alias] [WHERE <cond>] ---- */

typedef enum tk_kind { TK_WORD, TK_QIDENT, TK_UIDENT, TK_STRING, TK_NUMBER, TK_PARAM, TK_OP } tk_kind;

/* A token of the query: where its text is, and how deep in parentheses
 * it stands (a parenthesis itself counts as outside). */
typedef struct token {
    tk_kind kind;
    const char *start;
    size_t len;
    int depth;
} token;

typedef struct tokens {
    token *t;
    size_t n, cap;
    bool open; /* a quote, dollar quote or comment runs to the end */
} tokens;

static bool push_token(tokens *ts, tk_kind kind, const unsigned char *start, const unsigned char *end,
                       int depth)
{
    if (ts->n == ts->cap) {
        size_t cap = ts->cap ? ts->cap * 2 : 64;
        token *grown = realloc(ts->t, cap * sizeof *grown);
        if (grown == NULL)
            return false;
        ts->t = grown;
        ts->cap = cap;
    }
    ts->t[ts->n++] = (token){kind, (const char *)start, (size_t)(end - start), depth};
    return true;
}

static bool is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Splits query into tokens by the scanner's rules; comments are dropped.
 * False only when out of memory. */
static bool tokenize(const char *query, tokens *ts)
{
    const unsigned char *p = (const unsigned char *)query;
    int depth = 0;
    while (*p) {
        if (is_space(*p)) {
            p++;
            continue;
        }
        if ((p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*')) {
            p = skip_comment(p, &ts->open);
            continue;
        }
        const unsigned char *start = p;
        tk_kind kind = TK_OP;
        size_t tag;
        if ((p[0] == 'u' || p[0] == 'U') && p[1] == '&' && (p[2] == '\'' || p[2] == '"')) {
            kind = p[2] == '"' ? TK_UIDENT : TK_STRING;
            p = skip_quoted(p + 3, p[2], false, &ts->open);
        } else if (ident_start(*p)) {
            while (ident_char(*p))
                p++;
            /* E'...', B'...', X'...', N'...': a string with a prefix. */
            if (p - start == 1 && *p == '\'' && strchr("eEbBxXnN", *start) != NULL) {
                p = skip_quoted(p + 1, '\'', *start == 'e' || *start == 'E', &ts->open);
                kind = TK_STRING;
            } else {
                kind = TK_WORD;
            }
        } else if (*p == '\'' || *p == '"') {
            kind = *p == '"' ? TK_QIDENT : TK_STRING;
            p = skip_quoted(p + 1, *p, false, &ts->open);
        } else if (*p == '$' && (tag = dollar_tag_len(p)) > 0) {
            kind = TK_STRING;
            p = skip_dollar_quoted(p, tag, &ts->open);
        } else if (*p == '$' && p[1] >= '0' && p[1] <= '9') {
            kind = TK_PARAM;
            for (p++; *p >= '0' && *p <= '9'; p++) {
            }
        } else if ((*p >= '0' && *p <= '9') || (*p == '.' && p[1] >= '0' && p[1] <= '9')) {
            kind = TK_NUMBER;
            while (ident_char(*p) || *p == '.')
                p++;
        } else {
            if (*p == ')')
                depth--;
            p++;
        }
        if (!push_token(ts, kind, start, p, depth))
            return false;
        if (*start == '(' && kind == TK_OP)
            depth++;
    }
    return true;
}

static bool tk_is(const token *t, const char *word)
{
    return t != NULL && t->kind == TK_WORD && is_word((const unsigned char *)t->start, t->len, word);
}

static bool tk_op(const token *t, char c)
{
    return t != NULL && t->kind == TK_OP && t->len == 1 && t->start[0] == c;
}

/* Words that end a FROM item or start a clause: never a bare alias. */
static bool clause_word(const token *t)
{
    static const char *const words[] = {"WHERE",   "GROUP", "HAVING",  "WINDOW",      "ORDER",     "LIMIT",
                                        "OFFSET",  "FETCH", "UNION",   "EXCEPT",      "INTERSECT", "FOR",
                                        "JOIN",    "INNER", "LEFT",    "RIGHT",       "FULL",      "CROSS",
                                        "NATURAL", "ON",    "USING",   "TABLESAMPLE", "SELECT",    "FROM",
                                        "INTO",    "AS",    "LATERAL", "ONLY",        "RETURNING", NULL};
    for (const char *const *w = words; *w; w++)
        if (tk_is(t, *w))
            return true;
    return false;
}

/* Aggregates fold many rows into one: a row's change could not be applied. */
static bool aggregate_word(const token *t)
{
    static const char *const words[] = {"count",
                                        "sum",
                                        "avg",
                                        "min",
                                        "max",
                                        "array_agg",
                                        "string_agg",
                                        "json_agg",
                                        "jsonb_agg",
                                        "json_object_agg",
                                        "jsonb_object_agg",
                                        "bool_and",
                                        "bool_or",
                                        "every",
                                        "bit_and",
                                        "bit_or",
                                        "bit_xor",
                                        "xmlagg",
                                        "stddev",
                                        "stddev_pop",
                                        "stddev_samp",
                                        "variance",
                                        "var_pop",
                                        "var_samp",
                                        "mode",
                                        "percentile_cont",
                                        "percentile_disc",
                                        "range_agg",
                                        "range_intersect_agg",
                                        NULL};
    for (const char *const *w = words; *w; w++)
        if (tk_is(t, *w))
            return true;
    return false;
}

/* The clause a top-level word starts after the table, named for a message;
 * NULL when it starts none. */
static const char *clause_name(const token *t)
{
    static const char *const names[][2] = {{"GROUP", "GROUP BY"},
                                           {"HAVING", "HAVING"},
                                           {"WINDOW", "WINDOW"},
                                           {"ORDER", "ORDER BY"},
                                           {"LIMIT", "LIMIT"},
                                           {"OFFSET", "OFFSET"},
                                           {"FETCH", "FETCH"},
                                           {"UNION", "UNION"},
                                           {"EXCEPT", "EXCEPT"},
                                           {"INTERSECT", "INTERSECT"},
                                           {"FOR", "FOR UPDATE/SHARE"},
                                           {"RETURNING", "RETURNING"},
                                           {"INTO", "INTO"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (tk_is(t, names[i][0]))
            return names[i][1];
    return NULL;
}

static bool join_word(const token *t)
{
    static const char *const words[] = {"JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "NATURAL", NULL};
    for (const char *const *w = words; *w; w++)
        if (tk_is(t, *w))
            return true;
    return false;
}

static bool say(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static bool say(char *why, size_t cap, const char *fmt, ...)
{
    if (cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return false;
}

/* A name token's value: a quoted one without its quotes ("" is one "), a
 * bare one in lowercase (ASCII letters only, as PostgreSQL folds). */
static char *ident_value(const token *t)
{
    if (t->kind == TK_WORD) {
        char *s = strndup(t->start, t->len);
        for (char *c = s; c && *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        return s;
    }
    size_t inner = t->len >= 2 && t->start[t->len - 1] == '"' ? t->len - 2 : t->len - 1;
    char *s = malloc(inner + 1);
    if (s == NULL)
        return NULL;
    size_t n = 0;
    for (size_t i = 1; i <= inner; i++) {
        s[n++] = t->start[i];
        if (t->start[i] == '"' && i + 1 <= inner && t->start[i + 1] == '"')
            i++;
    }
    s[n] = '\0';
    return s;
}

static bool name_token(const token *t)
{
    return t != NULL && (t->kind == TK_QIDENT || (t->kind == TK_WORD && !clause_word(t)));
}

/* The text from token a to token b (inclusive), as written. */
static char *text_between(const token *a, const token *b)
{
    return strndup(a->start, (size_t)(b->start + b->len - a->start));
}

/* Refuses what makes a select list or a condition more than a function of
 * one row: a subquery, an aggregate, a window function. `part` names where. */
static bool row_expression(const token *t, size_t from, size_t to, const char *part, char *why, size_t cap)
{
    for (size_t i = from; i < to; i++) {
        if (tk_is(&t[i], "SELECT") || (tk_is(&t[i], "VALUES") && i > from && tk_op(&t[i - 1], '(')))
            return say(why, cap, "a subquery in %s is not allowed", part);
        if (tk_is(&t[i], "OVER"))
            return say(why, cap, "a window function (OVER) in %s is not allowed", part);
        if (aggregate_word(&t[i]) && i + 1 < to && tk_op(&t[i + 1], '(') &&
            !(i > from && tk_op(&t[i - 1], '.')))
            return say(why, cap, "an aggregate (%.*s) in %s is not allowed", (int)t[i].len, t[i].start, part);
    }
    return true;
}

/* Parses the tokens; fills out's strings (freed by the caller on failure). */
static bool parse_single(const token *t, size_t n, qt_single_table *out, char *why, size_t cap)
{
    if (n == 0)
        return say(why, cap, "the query is empty");
    for (size_t i = 0; i < n; i++)
        if (tk_op(&t[i], ';'))
            return say(why, cap, "several statements are not allowed");
    if (tk_is(&t[0], "WITH"))
        return say(why, cap, "a WITH query is not allowed");
    if (!tk_is(&t[0], "SELECT"))
        return say(why, cap, "only a SELECT is allowed (the query starts with %.*s)", (int)t[0].len,
                   t[0].start);
    if (n > 1 && tk_is(&t[1], "DISTINCT"))
        return say(why, cap, "DISTINCT is not allowed");
    /* The select list runs to the top-level FROM (a word after AS or a dot
     * is a name). */
    size_t from = 1;
    for (; from < n; from++) {
        const token *w = &t[from];
        bool as_name = tk_is(&t[from - 1], "AS") || tk_op(&t[from - 1], '.');
        if (w->depth > 0 || as_name)
            continue;
        if (tk_is(w, "FROM") && !tk_is(&t[from - 1], "DISTINCT")) /* not a IS DISTINCT FROM b */
            break;
        const char *clause = clause_name(w);
        if (clause != NULL)
            return say(why, cap, "%s is not allowed", clause);
    }
    if (!row_expression(t, 1, from, "the select list", why, cap))
        return false;
    if (from == n)
        return say(why, cap, "the query reads no table (no FROM)");
    out->select_list = from > 1 ? text_between(&t[1], &t[from - 1]) : strdup("");
    if (out->select_list == NULL)
        return say(why, cap, "out of memory");

    size_t i = from + 1;
    const token *first = i < n ? &t[i] : NULL;
    if (first == NULL)
        return say(why, cap, "FROM names no table");
    if (tk_op(first, '('))
        return say(why, cap, "a subquery in FROM is not allowed");
    if (tk_is(first, "LATERAL"))
        return say(why, cap, "a subquery in FROM (LATERAL) is not allowed");
    if (tk_is(first, "ROWS"))
        return say(why, cap, "a set-returning FROM (ROWS FROM) is not allowed");
    if (tk_is(first, "ONLY"))
        return say(why, cap, "FROM ONLY is not allowed; name the table alone");
    if (first->kind == TK_UIDENT)
        return say(why, cap, "a U&\"...\" table name is not allowed; write it as a plain quoted name");
    if (!name_token(first))
        return say(why, cap, "FROM names no table");
    size_t name_end = i; /* last token of the (qualified) name */
    if (i + 2 < n && tk_op(&t[i + 1], '.')) {
        if (!name_token(&t[i + 2]))
            return say(why, cap, "FROM names no table");
        name_end = i + 2;
        if (i + 4 < n && tk_op(&t[i + 3], '.'))
            return say(why, cap, "a three-part table name is not allowed; write schema.table");
    }
    if (name_end + 1 < n && tk_op(&t[name_end + 1], '('))
        return say(why, cap, "a set-returning FROM (%.*s(...)) is not allowed",
                   (int)(t[name_end].start + t[name_end].len - first->start), first->start);
    if (name_end == i + 2) {
        out->schema = ident_value(&t[i]);
        out->table = ident_value(&t[i + 2]);
    } else {
        out->table = ident_value(&t[i]);
    }
    if (out->table == NULL || (name_end == i + 2 && out->schema == NULL))
        return say(why, cap, "out of memory");
    i = name_end + 1;

    bool as = i < n && tk_is(&t[i], "AS");
    if (as && !(i + 1 < n && (t[i + 1].kind == TK_WORD || t[i + 1].kind == TK_QIDENT)))
        return say(why, cap, "AS after the table names no alias");
    if (as || (i < n && name_token(&t[i]))) {
        i += as;
        if ((out->alias = ident_value(&t[i])) == NULL)
            return say(why, cap, "out of memory");
        i++;
        if (i < n && tk_op(&t[i], '('))
            return say(why, cap, "a column list after the alias is not allowed");
    }
    if (i == n)
        return true;
    if (tk_op(&t[i], ','))
        return say(why, cap, "several tables (FROM a, b) are not allowed");
    if (join_word(&t[i]))
        return say(why, cap, "a join (%.*s) is not allowed", (int)t[i].len, t[i].start);
    if (tk_is(&t[i], "TABLESAMPLE"))
        return say(why, cap, "TABLESAMPLE is not allowed");
    const char *clause = clause_name(&t[i]);
    if (clause != NULL)
        return say(why, cap, "%s is not allowed", clause);
    if (!tk_is(&t[i], "WHERE"))
        return say(why, cap, "unexpected %.*s after the table", (int)(t[i].len > 40 ? 40 : t[i].len),
                   t[i].start);

    size_t cond = i + 1, end = cond;
    for (; end < n; end++) {
        bool as_name = tk_is(&t[end - 1], "AS") || tk_op(&t[end - 1], '.');
        if (t[end].depth > 0 || as_name)
            continue;
        clause = clause_name(&t[end]);
        if (clause != NULL)
            return say(why, cap, "%s is not allowed", clause);
    }
    if (cond == n)
        return say(why, cap, "WHERE has no condition");
    if (!row_expression(t, cond, n, "WHERE", why, cap))
        return false;
    out->where = text_between(&t[cond], &t[n - 1]);
    return out->where != NULL || say(why, cap, "out of memory");
}

bool qt_parse_single_table(const char *query, qt_single_table *out, char *why, size_t why_cap)
{
    memset(out, 0, sizeof *out);
    if (why_cap > 0)
        why[0] = '\0';
    tokens ts = {0};
    bool ok = tokenize(query, &ts);
    if (!ok) {
        say(why, why_cap, "out of memory");
    } else {
        /* Semicolons that end the query (as pasted from psql) are not part of it. */
        while (ts.n > 0 && tk_op(&ts.t[ts.n - 1], ';'))
            ts.n--;
        ok = ts.open ? say(why, why_cap, "a quote, dollar quote or comment is not closed")
                     : parse_single(ts.t, ts.n, out, why, why_cap);
    }
    free(ts.t);
    if (!ok)
        qt_single_table_free(out);
    return ok;
}

void qt_single_table_free(qt_single_table *t)
{
    free(t->select_list);
    free(t->schema);
    free(t->table);
    free(t->alias);
    free(t->where);
    memset(t, 0, sizeof *t);
}
