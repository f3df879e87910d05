/* One YAML file of the config directory: read, parsed by libyaml, walked
 * node by node, and every problem reported as "file:line: what; fix".
 * Internal to src/config. */
#ifndef DS_CONFIG_YAML_FILE_H
#define DS_CONFIG_YAML_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <yaml.h>

#include "common/error.h"
#include "config/config.h"

typedef struct cfg_yfile {
    const char *path;
    char *text; /* raw bytes, for line numbers of reader errors */
    size_t len;
    yaml_document_t doc;
    ds_error *err; /* where problems go */
    bool no_pg;    /* CFG_LOAD_NO_PG: the url is kept as written */
} cfg_yfile;

/* A key of a mapping with its value. */
typedef struct cfg_kv {
    const char *key;
    int line;
    const yaml_node_t *value;
} cfg_kv;

/* Reads and parses path into f (a file of one YAML document, at most
 * 16 MiB). False with err set; cfg_yaml_close() only after success. */
bool cfg_yaml_open(cfg_yfile *f, const char *path, ds_error *err);
void cfg_yaml_close(cfg_yfile *f);

/* Sets f->err to "path:line: <message>", the line kept inside the file. */
void cfg_yaml_report(const cfg_yfile *f, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* cfg_yaml_report() that evaluates to false, for `return CFG_FAIL(...)`. A
 * macro so that analyzers see the false through the varargs. */
#define CFG_FAIL(f, line, ...) (cfg_yaml_report((f), (line), __VA_ARGS__), false)

/* Sets err to DS_ERR_NOMEM and returns false. */
bool cfg_yaml_nomem(ds_error *err);

/* The root node; NULL for an empty document. */
const yaml_node_t *cfg_yaml_root(const cfg_yfile *f);
int cfg_yaml_line_of(const yaml_node_t *n);
/* "a mapping", "a list" or "a value", for messages. */
const char *cfg_yaml_node_kind(const yaml_node_t *n);
/* `key:` with nothing after it, `~` or `null`. */
bool cfg_yaml_is_null(const yaml_node_t *n);

size_t cfg_yaml_n_pairs(const yaml_node_t *map);
/* Pair i of a mapping; key is "" when it is not a scalar. */
cfg_kv cfg_yaml_pair(const cfg_yfile *f, const yaml_node_t *map, size_t i);
size_t cfg_yaml_n_items(const yaml_node_t *list);
/* Item i of the list under p, named after p's key, at the item's line. */
cfg_kv cfg_yaml_item(const cfg_yfile *f, const cfg_kv *p, size_t i);

/* Every key of map is a plain name, one of known[0..n_known) (any name
 * when known is NULL), and not repeated. An unknown key is reported with
 * the closest known name when one is near ("did you mean"), else with the
 * list of them. */
bool cfg_yaml_check_keys(const cfg_yfile *f, const yaml_node_t *map, const char *const *known,
                         size_t n_known);

/* The ${VAR}-expanded text of p's scalar value (malloc'd; "" for null).
 * A mapping or list where a value belongs is reported as "<key> must be
 * <expect>, not a list". */
bool cfg_yaml_scalar_text(const cfg_yfile *f, const cfg_kv *p, const char *expect, char **out);

/* p's scalar value exactly as written (malloc'd), for a value that is not
 * ${VAR}-expanded; same checks and messages as cfg_yaml_scalar_text. */
bool cfg_yaml_scalar_verbatim(const cfg_yfile *f, const cfg_kv *p, const char *expect, char **out);

/* Where the text of scalar v (its value after expansion: text) is in the
 * file. */
void cfg_yaml_text_at(const cfg_yfile *f, const yaml_node_t *v, const char *text, cfg_text_at *at);

#endif
