/* A lexical scan of query text by PostgreSQL's rules (scan.l): what is
 * inside a string, a quoted identifier, a dollar quote or a comment is
 * skipped, parentheses are counted, words are compared without case. */
#include "source/querytext.h"

#include <stdbool.h>
#include <stddef.h>
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
 * in an E'' string. */
static const unsigned char *skip_quoted(const unsigned char *p, unsigned char quote, bool backslash)
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
    return p;
}

/* Past a comment starting at p: "--" to the end of the line (\n or \r),
 * or a block comment, which nests. */
static const unsigned char *skip_comment(const unsigned char *p)
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
static const unsigned char *skip_dollar_quoted(const unsigned char *p, size_t len)
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
            p = skip_comment(p);
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
                p = skip_quoted(p + 1, '\'', true);
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
            p = skip_quoted(p + 1, *p, false);
        } else if (*p == '$' && (tag = dollar_tag_len(p)) > 0) {
            p = skip_dollar_quoted(p, tag);
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
