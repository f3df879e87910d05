/* The rules a source url must meet, checked against the way libpq reads it
 * so that no error ever shows a password. Internal to src/config: the
 * loader turns a finding into a "file:line:" message. (cfg_mask_url, the
 * other half of url.c, is public: config.h.) */
#ifndef DS_CONFIG_URL_H
#define DS_CONFIG_URL_H

#include <stdbool.h>

#include "common/error.h"

/* A postgresql:// URI or key=value conninfo that libpq parses, and nothing
 * of its password where libpq would show it in an error (a password read
 * as the host or port, a dbname holding a whole connection string). On
 * failure err is DS_ERR_CONFIG with a message starting "url" (no file or
 * line; the caller knows them) that never echoes the password, or
 * DS_ERR_NOMEM. */
bool cfg_url_check(const char *url, ds_error *err);

#endif
