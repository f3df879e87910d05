/* ${VAR} expansion of config values from the environment. Internal to
 * src/config: the loader turns a failure into a "file:line:" message. */
#ifndef DS_CONFIG_EXPAND_H
#define DS_CONFIG_EXPAND_H

#include <stddef.h>

typedef struct cfg_expand_error {
    size_t offset;  /* of the offending `$` in the input */
    char what[640]; /* problem and fix; empty when out of memory */
} cfg_expand_error;

/* Returns a malloc'd copy of s[0..len) with ${VAR} and ${VAR:-default}
 * replaced from the environment and $$ by a literal $. A lone $ before any
 * other character is kept. NULL on error, with e filled in. */
char *cfg_expand_env(const char *s, size_t len, cfg_expand_error *e);

#endif
