/* ${VAR} / ${VAR:-default} / $$ expansion of config values. Values are
 * expanded once, after YAML parsing, so quoting in YAML never matters. */
#include "config/expand.h"

#include "common/strbuf.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VAR_NAME 255

static bool fail(cfg_expand_error *e, size_t offset, const char *what)
{
    e->offset = offset;
    snprintf(e->what, sizeof e->what, "%s", what);
    return false;
}

/* Expands the reference that starts at s[*i] == '$', s[*i + 1] == '{'. The
 * text inside the braces is never echoed: it may sit inside a password. */
static bool expand_ref(const char *s, size_t len, size_t *i, ds_buf *out, cfg_expand_error *e)
{
    size_t dollar = *i, start = *i + 2, close = start;
    while (close < len && s[close] != '}')
        close++;
    if (close >= len)
        return fail(e, dollar, "\"${\" without a closing \"}\"; close it, or write $$ for a literal $");

    size_t name_end = start;
    while (name_end < close && (isalnum((unsigned char)s[name_end]) || s[name_end] == '_'))
        name_end++;
    size_t name_len = name_end - start;
    bool has_default = close - name_end >= 2 && s[name_end] == ':' && s[name_end + 1] == '-';
    if (name_len == 0 || name_len > MAX_VAR_NAME || isdigit((unsigned char)s[start]) ||
        (name_end != close && !has_default))
        return fail(e, dollar,
                    "invalid variable reference; write ${NAME} or ${NAME:-default} (NAME: letters, digits "
                    "and _, not starting with a digit), or $$ for a literal $");

    char name[MAX_VAR_NAME + 1];
    memcpy(name, s + start, name_len);
    name[name_len] = '\0';
    const char *value = getenv(name);
    if (has_default && (value == NULL || value[0] == '\0')) {
        /* Like the shell's ${VAR:-x}: unset and empty both take the default. */
        ds_buf_appendn(out, s + name_end + 2, close - name_end - 2);
    } else if (value == NULL) {
        snprintf(e->what, sizeof e->what,
                 "environment variable %s is not set; export it, or give a default: ${%s:-value}", name,
                 name);
        e->offset = dollar;
        return false;
    } else {
        ds_buf_append(out, value);
    }
    *i = close + 1;
    return true;
}

char *cfg_expand_env(const char *s, size_t len, cfg_expand_error *e)
{
    e->offset = 0;
    e->what[0] = '\0';
    ds_buf out = DS_BUF_INIT;
    bool ok = true;
    size_t i = 0;
    while (ok && i < len) {
        char next = i + 1 < len ? s[i + 1] : '\0';
        if (s[i] == '$' && next == '$') {
            ds_buf_appendc(&out, '$');
            i += 2;
        } else if (s[i] == '$' && next == '{') {
            ok = expand_ref(s, len, &i, &out, e);
        } else {
            ds_buf_appendc(&out, s[i]);
            i++;
        }
    }
    if (!ok) {
        ds_buf_free(&out);
        return NULL;
    }
    return ds_buf_take(&out); /* NULL with e->what empty: out of memory */
}
