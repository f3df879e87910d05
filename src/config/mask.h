/* Checks of a source url against the way libpq reads it, so that its
 * errors never show a password. Internal to src/config: the loader turns a
 * finding into a "file:line:" message. */
#ifndef DS_CONFIG_MASK_H
#define DS_CONFIG_MASK_H

#include <stdbool.h>

/* True when a URI's user info holds an unencoded '@' or '/': libpq would
 * then read part of the password as the host, port or database, and show
 * it in its errors. */
bool cfg_url_userinfo_ambiguous(const char *url);

/* Copy of a libpq message about url in which every "quoted" part that the
 * masked url does not show is replaced by "***". Caller frees; NULL when
 * out of memory. */
char *cfg_scrub_message(const char *url, const char *msg);

#endif
