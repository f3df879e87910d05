/* The keys of duckdb.yaml and of a source, parsed from their YAML mappings
 * by one table per mapping (keys.c). Internal to src/config: the loader
 * checks the file around them and the rules that span keys. */
#ifndef DS_CONFIG_KEYS_H
#define DS_CONFIG_KEYS_H

#include "config/config.h"
#include "config/yaml_file.h"

/* The top-level mapping of duckdb.yaml (`duckdb:` and its settings) into
 * st, over st's defaults. */
bool cfg_keys_parse_store(const cfg_yfile *f, const yaml_node_t *root, cfg_store *st);

/* The settings mapping under a `<name>_db:` key into src, over src's
 * defaults; the lines of the keys it finds go into src's *_line fields. */
bool cfg_keys_parse_source(const cfg_yfile *f, const yaml_node_t *map, cfg_source *src);

/* Frees a unique_key's columns and empties it. */
void cfg_key_free(cfg_key *key);

#endif
