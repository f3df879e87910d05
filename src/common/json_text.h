/* Text as a JSON string when it may not be valid UTF-8 (a PostgreSQL
 * message in another encoding, a value cut short): jansson refuses such
 * text, and a log line or status field must not lose it. */
#ifndef DS_COMMON_JSON_TEXT_H
#define DS_COMMON_JSON_TEXT_H

#include <jansson.h>

/* s as a JSON string, its invalid UTF-8 bytes as '?' (every non-ASCII byte
 * when jansson's stricter checks, such as overlong forms, still refuse it).
 * NULL for s NULL or no memory. */
json_t *ds_json_text(const char *s);

#endif
