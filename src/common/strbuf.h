/* A growable string: the one way duckstore builds SQL and other text whose
 * size depends on names or values it does not control. Appends never
 * overflow; a failed allocation makes the buffer "failed" (sticky), every
 * later append a no-op, and ds_buf_take() return NULL, so a builder checks
 * once at the end instead of after every append. */
#ifndef DS_COMMON_STRBUF_H
#define DS_COMMON_STRBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

typedef struct ds_buf {
    char *data; /* NUL-terminated once anything was appended; NULL before */
    size_t len, cap;
    bool failed; /* an allocation failed: the contents are incomplete */
} ds_buf;

#define DS_BUF_INIT                                                                                          \
    {                                                                                                        \
        NULL, 0, 0, false                                                                                    \
    }

void ds_buf_init(ds_buf *b);
void ds_buf_free(ds_buf *b);
/* Empties the buffer, keeping its memory (and clearing a failure). */
void ds_buf_reset(ds_buf *b);

/* Each returns !b->failed after appending. */
bool ds_buf_append(ds_buf *b, const char *s);
bool ds_buf_appendn(ds_buf *b, const char *s, size_t n);
bool ds_buf_appendc(ds_buf *b, char c);
bool ds_buf_appendf(ds_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool ds_buf_vappendf(ds_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* "ident" with every " doubled: an identifier for DuckDB and PostgreSQL
 * alike (PostgreSQL's libpq escaping is in source/ for encoding-aware
 * cases). */
bool ds_buf_append_ident(ds_buf *b, const char *ident);
/* 'value' with every ' doubled: a standard SQL string literal (DuckDB, and
 * PostgreSQL with standard_conforming_strings, where \ is an ordinary
 * character). */
bool ds_buf_append_literal(ds_buf *b, const char *value);

/* The text so far ("" when empty), owned by the buffer; NULL when failed. */
const char *ds_buf_str(const ds_buf *b);

/* Hands the text over (caller frees) and leaves the buffer empty; NULL
 * when an allocation failed (the buffer is freed then). */
char *ds_buf_take(ds_buf *b);

/* ds_buf_take(), or NULL with err set to DS_ERR_NOMEM. */
char *ds_buf_take_or_err(ds_buf *b, ds_error *err);

/* The length of s[0, len) without a UTF-8 sequence cut short at its end:
 * where a fixed buffer truncated a message, cutting there keeps it valid
 * UTF-8 (jansson refuses a string that is not, and the text would vanish
 * from a status document). */
size_t ds_utf8_cut(const char *s, size_t len);
/* Truncates s (NUL-terminated) to ds_utf8_cut(s, strlen(s)). */
void ds_utf8_trim_end(char *s);

/* Freshly allocated "ident" / 'literal' (NULL when out of memory). */
char *ds_quote_ident(const char *ident);
char *ds_quote_literal(const char *value);

#endif
