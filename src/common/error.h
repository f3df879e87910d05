/* One error type for all of duckstore: a code and a message that names the
 * thing that failed and, where there is one, the fix. Passed down explicitly;
 * modules fill it and return false instead of printing. */
#ifndef DS_COMMON_ERROR_H
#define DS_COMMON_ERROR_H

#include <stdbool.h>

typedef enum ds_error_code {
    DS_OK = 0,
    DS_ERR_USAGE,     /* bad command line */
    DS_ERR_CONFIG,    /* bad configuration file */
    DS_ERR_SOURCE,    /* PostgreSQL: connection, query, protocol */
    DS_ERR_TIMEOUT,   /* query_timeout hit */
    DS_ERR_STORE,     /* DuckDB */
    DS_ERR_DECODE,    /* malformed binary COPY data */
    DS_ERR_SCHEMA,    /* source columns no longer match the stored table */
    DS_ERR_CANCELLED, /* stopped on request (shutdown) */
    DS_ERR_BUSY,      /* resource held elsewhere (file lock, sync running) */
    DS_ERR_NOMEM,
    DS_ERR_RESTART, /* a read ended on purpose, to start again another way (not a failure) */
    DS_ERR_RELOAD, /* logical capture cannot go on from where it is: load the source again */
} ds_error_code;

typedef struct ds_error {
    ds_error_code code;
    char msg[1024];
} ds_error;

/* Sets err (when not NULL) and returns false, so callers can write
 * `return ds_error_set(err, ...);`. */
bool ds_error_set(ds_error *err, ds_error_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends context ("monitoring: ") to an existing message. */
void ds_error_prefix(ds_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void ds_error_clear(ds_error *err);

#endif
