/* Time zones for pgvalues: the UTC offset of an instant in an IANA zone,
 * read from the system's compiled tz database (TZif files, as PostgreSQL
 * built with the system tzdata reads them), without touching the process's
 * TZ: every session has its own zone. */
#ifndef DS_PGWIRE_PGVALUES_TZ_H
#define DS_PGWIRE_PGVALUES_TZ_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

typedef struct pgv_tz pgv_tz;

/* The zone of that name (an IANA name such as "Europe/Paris" or "UTC", or
 * a POSIX TZ string such as "EST5EDT"); loaded once, then shared and kept
 * for the life of the process. NULL with err set when unknown. */
const pgv_tz *pgv_tz_get(const char *name, ds_error *err);

/* Seconds east of UTC in force at the instant utc_seconds (Unix time). */
int32_t pgv_tz_offset(const pgv_tz *tz, int64_t utc_seconds);

#endif
