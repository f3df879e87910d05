/* A source url: the rules it must meet to load (cfg_url_check) and the
 * masking of its password (cfg_mask_url) before it reaches a log, a status
 * page, `duckstore config` or an error message. Both read the url the way
 * libpq does; when it is malformed, masking errs on the side of hiding too
 * much. */
#include "config/config.h"
#include "config/url.h"

#include "common/strbuf.h"

#include <ctype.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MASK "***"

static bool is_password_key(const char *key, size_t len)
{
    return len == 8 && strncasecmp(key, "password", 8) == 0;
}

/* A port list ("5432", "5432,5433"); an empty one is no port. */
static bool all_port_chars(const char *s, const char *end)
{
    if (s == end)
        return false;
    for (; s < end; s++)
        if (!isdigit((unsigned char)*s) && *s != ',')
            return false;
    return true;
}

static int hex_value(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* A URI parameter name that libpq reads as "password" once it has decoded
 * its %XX escapes ("pass%77ord" is one). */
static bool is_password_param(const char *key, size_t len)
{
    char name[9];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = key[i];
        if (c == '%' && i + 2 < len && hex_value(key[i + 1]) >= 0 && hex_value(key[i + 2]) >= 0) {
            c = (char)(hex_value(key[i + 1]) * 16 + hex_value(key[i + 2]));
            i += 2;
        }
        if (n == sizeof name - 1)
            return false;
        name[n++] = c;
    }
    return is_password_key(name, n);
}

/* Copies the rest of a URI after its user info, masking the value of every
 * password=... parameter. A parameter starts after any '?' or '&' (so one
 * is found wherever the query string begins, even after a part hidden as a
 * password), and, as in libpq, its value ends only at '&' ('#' starts no
 * fragment). */
static void mask_uri_tail(ds_buf *out, const char *tail)
{
    const char *p = tail;
    while (*p) {
        const char *end = p + strcspn(p, "&?");
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (eq != NULL && is_password_param(p, (size_t)(eq - p))) {
            ds_buf_appendn(out, p, (size_t)(eq + 1 - p));
            ds_buf_append(out, MASK);
            p = eq + 1 + strcspn(eq + 1, "&");
        } else {
            ds_buf_appendn(out, p, (size_t)(end - p));
            p = end;
        }
        if (*p == '&' || *p == '?')
            ds_buf_appendc(out, *p++);
    }
}

/* scheme://[user[:password]@]host[:port][,...][/db][?params]: the password
 * of the user info as we hide it (NULL when there is none; *end is where it
 * stops) and how many '@' come before the first '/'. libpq ends the user
 * info at the first '@' before any '/' ('?' and '#' included); we hide up
 * to the last such '@', so an unencoded '@' in the password is hidden too. */
static const char *uri_password(const char *rest, const char **end, int *ats)
{
    size_t auth_len = strcspn(rest, "/?");
    const char *at = NULL;
    *ats = 0;
    for (const char *p = rest; *p && *p != '/'; p++) {
        if (*p == '@') {
            at = p;
            (*ats)++;
        }
    }
    if (at != NULL) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        *end = at;
        return colon != NULL ? colon + 1 : NULL;
    }
    if (rest[0] == '[')
        return NULL;
    /* No '@' before the first '/': either there is no user info, or the
     * password holds an unencoded '/'. "user:pa/ss@host" has a non-port
     * after the ':' and an '@' later. */
    const char *colon = memchr(rest, ':', auth_len);
    const char *last_at = strrchr(rest, '@');
    if (colon != NULL && last_at != NULL && !all_port_chars(colon + 1, rest + auth_len)) {
        *end = last_at;
        return colon + 1;
    }
    return NULL;
}

static void mask_uri(ds_buf *out, const char *url, const char *rest)
{
    const char *pw_end = NULL;
    int ats;
    const char *pw_start = uri_password(rest, &pw_end, &ats);
    if (pw_start != NULL) {
        ds_buf_appendn(out, url, (size_t)(pw_start - url));
        ds_buf_append(out, MASK);
        mask_uri_tail(out, pw_end);
    } else {
        ds_buf_appendn(out, url, (size_t)(rest - url));
        mask_uri_tail(out, rest);
    }
}

/* A dbname that libpq would read as a whole connection string. */
static bool holds_conninfo(const char *dbname)
{
    return strstr(dbname, "://") != NULL || strchr(dbname, '=') != NULL;
}

/* Reads a conninfo value the way libpq does (single quotes, backslash
 * escapes) into a malloc'd string; advances *pp past it. */
static char *read_conninfo_value(const char **pp)
{
    const char *p = *pp;
    char *val = malloc(strlen(p) + 1);
    if (val == NULL)
        return NULL;
    size_t n = 0;
    if (*p == '\'') {
        p++;
        while (*p && *p != '\'') {
            if (*p == '\\' && p[1])
                p++;
            val[n++] = *p++;
        }
        if (*p == '\'')
            p++;
    } else {
        while (*p && !isspace((unsigned char)*p)) {
            if (*p == '\\' && p[1])
                p++;
            val[n++] = *p++;
        }
    }
    val[n] = '\0';
    *pp = p;
    return val;
}

static void write_quoted_conninfo_value(ds_buf *out, const char *v)
{
    ds_buf_appendc(out, '\'');
    for (; *v; v++) {
        if (*v == '\'' || *v == '\\')
            ds_buf_appendc(out, '\\');
        ds_buf_appendc(out, *v);
    }
    ds_buf_appendc(out, '\'');
}

/* key = value pairs separated by spaces. libpq lets dbname hold a whole
 * connection string, so such a dbname is masked as well. */
static bool mask_conninfo(ds_buf *out, const char *s)
{
    const char *p = s;
    bool after_password = false;
    while (*p) {
        if (isspace((unsigned char)*p)) {
            ds_buf_appendc(out, *p++);
            continue;
        }
        const char *key = p;
        while (*p && *p != '=' && !isspace((unsigned char)*p))
            p++;
        size_t key_len = (size_t)(p - key);
        bool password = is_password_key(key, key_len);
        const char *eq = p + strspn(p, " \t\n\v\f\r");
        if (*eq != '=' && !password) {
            /* Malformed; libpq will say so. A bare word after a password is
             * most likely the rest of it (an unquoted space): hide it. */
            if (!after_password)
                ds_buf_appendn(out, key, key_len);
            continue;
        }
        after_password = password;
        ds_buf_appendn(out, key, key_len);
        while (isspace((unsigned char)*p))
            ds_buf_appendc(out, *p++);
        if (*p == '=') {
            ds_buf_appendc(out, *p++);
            while (isspace((unsigned char)*p))
                ds_buf_appendc(out, *p++);
        }
        const char *raw = p;
        char *val = read_conninfo_value(&p);
        if (val == NULL)
            return false;
        if (password) {
            /* Text glued to a closing quote ('pw'x) is malformed for libpq;
             * hide it with the value rather than show it as a new key. */
            while (*p && !isspace((unsigned char)*p))
                p++;
            ds_buf_append(out, MASK);
        } else if (key_len == 6 && strncmp(key, "dbname", 6) == 0 && holds_conninfo(val)) {
            char *masked = cfg_mask_url(val);
            if (masked == NULL) {
                free(val);
                return false;
            }
            write_quoted_conninfo_value(out, masked);
            free(masked);
        } else {
            ds_buf_appendn(out, raw, (size_t)(p - raw));
        }
        free(val);
    }
    return true;
}

/* A URI scheme: letters, digits, '+', '-', '.', starting with a letter. */
static const char *uri_rest(const char *url)
{
    const char *sep = strstr(url, "://");
    if (sep == NULL || sep == url || !isalpha((unsigned char)url[0]))
        return NULL;
    for (const char *p = url; p < sep; p++)
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' && *p != '.')
            return NULL;
    return sep + 3;
}

char *cfg_mask_url(const char *url)
{
    if (url == NULL)
        return NULL;
    ds_buf out = DS_BUF_INIT;
    const char *rest = uri_rest(url);
    bool ok = true;
    if (rest != NULL)
        mask_uri(&out, url, rest);
    else
        ok = mask_conninfo(&out, url);
    if (!ok) {
        ds_buf_free(&out);
        return NULL;
    }
    return ds_buf_take(&out);
}

/* True when a URI's user info holds an unencoded '@' or '/': libpq would
 * then read part of the password as the host, port or database, and show
 * it in its errors. */
static bool userinfo_ambiguous(const char *url)
{
    const char *rest = uri_rest(url);
    if (rest == NULL)
        return false;
    const char *end;
    int ats;
    const char *pw = uri_password(rest, &end, &ats);
    return ats > 1 || (ats == 0 && pw != NULL);
}

/* Copy of a libpq message about url in which every "quoted" part that the
 * masked url does not show is replaced by "***". NULL when out of memory. */
static char *scrub_message(const char *url, const char *msg)
{
    char *masked = cfg_mask_url(url);
    if (masked == NULL)
        return NULL;
    ds_buf out = DS_BUF_INIT;
    const char *p = msg;
    while (*p) {
        const char *close = *p == '"' ? strchr(p + 1, '"') : NULL;
        if (close == NULL) {
            ds_buf_appendc(&out, *p++);
            continue;
        }
        size_t len = (size_t)(close - p - 1);
        char *inner = strndup(p + 1, len);
        bool shown = inner != NULL && (len == 0 || strstr(masked, inner) != NULL);
        ds_buf_appendc(&out, '"');
        if (shown)
            ds_buf_appendn(&out, p + 1, len);
        else
            ds_buf_append(&out, MASK);
        ds_buf_appendc(&out, '"');
        free(inner);
        p = close + 1;
    }
    free(masked);
    return ds_buf_take(&out);
}

static bool nomem(ds_error *err)
{
    return ds_error_set(err, DS_ERR_NOMEM, "out of memory while checking a url");
}

/* Enough to catch a URL pasted into the wrong key or a MySQL URI; libpq
 * checks the rest when the source connects. */
static bool looks_like_pg_url(const char *url)
{
    return strncasecmp(url, "postgresql://", 13) == 0 || strncasecmp(url, "postgres://", 11) == 0 ||
           (strstr(url, "://") == NULL && strchr(url, '=') != NULL);
}

/* libpq's parse error, without any part of a password it quotes. */
static bool unreadable(const char *url, char *errmsg, ds_error *err)
{
    if (errmsg == NULL)
        return nomem(err);
    errmsg[strcspn(errmsg, "\n")] = '\0';
    char *safe = scrub_message(url, errmsg);
    PQfreemem(errmsg);
    if (safe == NULL)
        return nomem(err);
    ds_error_set(err, DS_ERR_CONFIG,
                 "url is not a connection string libpq can read: %s; quote a value that holds spaces "
                 "(password='a b') and percent-encode special characters in a URI",
                 safe);
    free(safe);
    return false;
}

bool cfg_url_check(const char *url, ds_error *err)
{
    if (!looks_like_pg_url(url))
        return ds_error_set(err, DS_ERR_CONFIG,
                            "url must be a postgresql://user:password@host:port/dbname URI or a key=value "
                            "conninfo (host=... dbname=...)");
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &errmsg);
    if (opts == NULL)
        return unreadable(url, errmsg, err);
    bool nested = false;
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val && holds_conninfo(o->val))
            nested = true;
    PQconninfoFree(opts);
    if (nested)
        return ds_error_set(err, DS_ERR_CONFIG,
                            "url: its dbname holds a connection string, which libpq does not read here; "
                            "write those settings into url itself");
    if (userinfo_ambiguous(url))
        return ds_error_set(
            err, DS_ERR_CONFIG,
            "url: the user name or password holds an unencoded '@' or '/', so libpq would read part of "
            "it as the host, port or database; percent-encode them ('@' as %%40, '/' as %%2F)");
    return true;
}
