#include "common/json_text.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Bytes of the UTF-8 sequence starting at s[i] when it is whole and well
 * formed, else 0. */
static size_t utf8_sequence(const char *s, size_t i, size_t n)
{
    unsigned char c = (unsigned char)s[i];
    size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; k++)
        ok = ((unsigned char)s[i + k] & 0xC0) == 0x80;
    return ok ? len : 0;
}

json_t *ds_json_text(const char *s)
{
    json_t *j = json_string(s);
    if (j != NULL || s == NULL)
        return j;
    char *copy = strdup(s);
    if (copy == NULL)
        return NULL;
    for (size_t i = 0, n = strlen(copy); i < n;) {
        size_t len = utf8_sequence(copy, i, n);
        if (len == 0)
            copy[i++] = '?';
        else
            i += len;
    }
    j = json_string(copy);
    for (size_t i = 0; j == NULL && copy[i] != '\0'; i++)
        if ((unsigned char)copy[i] >= 0x80)
            copy[i] = '?';
    if (j == NULL)
        j = json_string(copy);
    free(copy);
    return j;
}
