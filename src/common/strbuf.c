/* ds_buf: growth, printf-style appends and SQL quoting. */
#include "common/strbuf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ds_buf_init(ds_buf *b)
{
    *b = (ds_buf)DS_BUF_INIT;
}

void ds_buf_free(ds_buf *b)
{
    free(b->data);
    ds_buf_init(b);
}

void ds_buf_reset(ds_buf *b)
{
    b->len = 0;
    b->failed = false;
    if (b->data)
        b->data[0] = '\0';
}

static bool fail(ds_buf *b)
{
    b->failed = true;
    return false;
}

/* Room for extra more bytes plus the terminating NUL. */
static bool reserve(ds_buf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (extra > SIZE_MAX / 2 - b->len - 1)
        return fail(b);
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (data == NULL)
        return fail(b);
    b->data = data;
    b->cap = cap;
    return true;
}

bool ds_buf_appendn(ds_buf *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return false;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

bool ds_buf_append(ds_buf *b, const char *s)
{
    return ds_buf_appendn(b, s, strlen(s));
}

bool ds_buf_appendc(ds_buf *b, char c)
{
    return ds_buf_appendn(b, &c, 1);
}

bool ds_buf_vappendf(ds_buf *b, const char *fmt, va_list ap)
{
    if (!reserve(b, 0))
        return false;
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    if (n < 0) {
        va_end(again);
        return fail(b);
    }
    if ((size_t)n >= b->cap - b->len) {
        if (!reserve(b, (size_t)n)) {
            va_end(again);
            return false;
        }
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, again);
    }
    va_end(again);
    b->len += (size_t)n;
    return true;
}

bool ds_buf_appendf(ds_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool ok = ds_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return ok;
}

static bool append_quoted(ds_buf *b, const char *s, char quote)
{
    ds_buf_appendc(b, quote);
    for (const char *p = s;;) {
        const char *q = strchr(p, quote);
        if (q == NULL) {
            ds_buf_append(b, p);
            break;
        }
        ds_buf_appendn(b, p, (size_t)(q - p) + 1);
        ds_buf_appendc(b, quote);
        p = q + 1;
    }
    return ds_buf_appendc(b, quote);
}

bool ds_buf_append_ident(ds_buf *b, const char *ident)
{
    return append_quoted(b, ident, '"');
}

bool ds_buf_append_literal(ds_buf *b, const char *value)
{
    return append_quoted(b, value, '\'');
}

const char *ds_buf_str(const ds_buf *b)
{
    if (b->failed)
        return NULL;
    return b->data ? b->data : "";
}

char *ds_buf_take(ds_buf *b)
{
    if (b->failed) {
        ds_buf_free(b);
        return NULL;
    }
    char *out = b->data ? b->data : strdup("");
    ds_buf_init(b);
    return out;
}

char *ds_buf_take_or_err(ds_buf *b, ds_error *err)
{
    char *out = ds_buf_take(b);
    if (out == NULL)
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    return out;
}

char *ds_quote_ident(const char *ident)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append_ident(&b, ident);
    return ds_buf_take(&b);
}

char *ds_quote_literal(const char *value)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append_literal(&b, value);
    return ds_buf_take(&b);
}

size_t ds_utf8_cut(const char *s, size_t len)
{
    size_t i = len, cont = 0;
    while (i > 0 && cont < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) {
        i--;
        cont++;
    }
    if (i == 0)
        return len;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = (lead & 0xE0) == 0xC0 ? 1 : (lead & 0xF0) == 0xE0 ? 2 : (lead & 0xF8) == 0xF0 ? 3 : 0;
    /* A lead byte whose sequence ends early: drop it and what follows. */
    return lead >= 0xC0 && cont < need ? i - 1 : len;
}

void ds_utf8_trim_end(char *s)
{
    s[ds_utf8_cut(s, strlen(s))] = '\0';
}
