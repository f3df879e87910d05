/* ds_error helpers: formatting into the fixed message buffer. */
#include "common/error.h"
#include "common/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

bool ds_error_set(ds_error *err, ds_error_code code, const char *fmt, ...)
{
    if (err == NULL)
        return false;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    ds_utf8_trim_end(err->msg);
    return false;
}

void ds_error_prefix(ds_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    ds_utf8_trim_end(prefix);
    size_t plen = strlen(prefix);
    if (plen >= sizeof err->msg)
        plen = sizeof err->msg - 1;
    size_t mlen = strnlen(err->msg, sizeof err->msg - 1);
    if (plen + mlen >= sizeof err->msg)
        mlen = sizeof err->msg - 1 - plen;
    memmove(err->msg + plen, err->msg, mlen);
    memcpy(err->msg, prefix, plen);
    err->msg[plen + mlen] = '\0';
    ds_utf8_trim_end(err->msg);
}

void ds_error_clear(ds_error *err)
{
    if (err == NULL)
        return;
    err->code = DS_OK;
    err->msg[0] = '\0';
}
