/* Loads the YAML config directory: duckdb.yaml (store settings) and one
 * `<name>_db:` source per other *.yaml / *.yml file. Here: the files and
 * their structure, the rules that span keys, defaults and the query plans;
 * the keys themselves are in keys.c, the YAML mechanics in yaml_file.c. */
#include "config/config.h"
#include "config/keys.h"
#include "config/yaml_file.h"

#include "common/strbuf.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

const char *cfg_sync_mode_name(cfg_sync_mode mode)
{
    return mode == CFG_SYNC_MANUAL ? "manual" : "startup";
}

const char *cfg_capture_name(cfg_capture capture)
{
    return capture == CFG_CAPTURE_LOGICAL ? "logical" : "watermark";
}

/* FNV-1a: a short, stable fingerprint of a name that had to be cut. */
static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

void cfg_pg_object_name(const char *source_name, char out[CFG_PG_NAME_CAP])
{
    static const char prefix[] = "duckstore_";
    size_t max = CFG_PG_NAME_CAP - 1, n = 0;
    char full[CFG_PG_NAME_CAP];
    bool cut = strlen(prefix) + strlen(source_name) > max;
    /* A cut name keeps room for "_" and 8 hex digits (54 + 9 = 63). */
    size_t keep = cut ? max - 9 : max;
    for (const char *c = prefix; *c && n < keep; c++)
        full[n++] = *c;
    for (const char *c = source_name; *c && n < keep; c++) {
        char ch = *c >= 'A' && *c <= 'Z' ? (char)(*c - 'A' + 'a') : *c;
        full[n++] = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ? ch : '_';
    }
    full[n] = '\0';
    if (cut)
        snprintf(out, CFG_PG_NAME_CAP, "%.54s_%08x", full, (unsigned)name_hash(source_name));
    else
        memcpy(out, full, n + 1);
}

bool cfg_publish_partition(const char *text, char fn[8], char *col, size_t col_cap)
{
    static const char *const fns[] = {"hour", "day", "month", "year"};
    fn[0] = '\0';
    const char *name = text;
    size_t len = strlen(text);
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        size_t n = strlen(fns[i]);
        if (strncmp(text, fns[i], n) == 0 && text[n] == '(' && len > n + 2 && text[len - 1] == ')') {
            strcpy(fn, fns[i]);
            name = text + n + 1;
            len -= n + 2;
            break;
        }
    }
    /* A column name as PostgreSQL prints it unquoted: no quoting to undo. */
    if (len == 0 || len >= col_cap || isdigit((unsigned char)name[0]))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_')
            return false;
    memcpy(col, name, len);
    col[len] = '\0';
    return true;
}

const char *cfg_join_type_name(cfg_join_type type)
{
    return type == CFG_JOIN_INNER ? "inner" : "left";
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool valid_source_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > CFG_SOURCE_NAME_MAX || isdigit((unsigned char)name[0]))
        return false;
    for (const char *c = name; *c; c++)
        if (!(*c >= 'a' && *c <= 'z') && !isdigit((unsigned char)*c) && *c != '_')
            return false;
    return true;
}

/* join: belongs to a split source's view and names each column once
 * (DuckDB compares names without case). */
static bool check_join(const cfg_yfile *f, const cfg_source *src, bool split)
{
    if (src->join_line == 0)
        return true;
    if (!split)
        return CFG_FAIL(f, src->join_line,
                        "join applies to the view of a split source (dataset_query + results_query); a "
                        "single query makes its own join in SQL: remove join");
    const cfg_key *cols = &src->join_columns;
    for (size_t i = 0; i < cols->n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(cols->cols[i], cols->cols[j]) == 0)
                return CFG_FAIL(f, src->join_line,
                                "join.columns names \"%.80s\" twice; list each column once", cols->cols[i]);
    return true;
}

/* capture: logical reads every change from the slot, so the keys of
 * watermark capture have nothing to do; a publication is logical's. */
static bool check_capture(const cfg_yfile *f, const cfg_source *src)
{
    if (src->capture != CFG_CAPTURE_LOGICAL) {
        if (src->publication_line)
            return CFG_FAIL(f, src->publication_line,
                            "publication is read by logical capture only; add capture: logical or remove "
                            "publication");
        return true;
    }
    const struct {
        const char *key;
        int line;
    } watermark_keys[] = {
        {"incremental_column", src->incremental_column_line},
        {"unique_key", src->unique_key_line},
        {"lookback", src->lookback_line},
        {"commit_horizon", src->commit_horizon_line},
        {"full_refresh_interval_minutes", src->full_refresh_line},
    };
    for (size_t i = 0; i < sizeof watermark_keys / sizeof watermark_keys[0]; i++)
        if (watermark_keys[i].line)
            return CFG_FAIL(
                f, watermark_keys[i].line,
                "%s belongs to watermark capture, but this source has capture: logical (line %d), "
                "which applies every insert, update and delete by the table's replica identity; "
                "remove %s",
                watermark_keys[i].key, src->capture_line, watermark_keys[i].key);
    if (src->publication != NULL && strlen(src->publication) >= CFG_PG_NAME_CAP)
        return CFG_FAIL(f, src->publication_line,
                        "publication \"%.80s\" is longer than PostgreSQL's 63 bytes; name the publication "
                        "as PostgreSQL lists it (SELECT pubname FROM pg_publication)",
                        src->publication);
    return true;
}

/* The rules that span keys: a url, and either query or the split pair. */
static bool check_source(const cfg_yfile *f, const cfg_source *src, const char *key)
{
    if (src->url == NULL)
        return CFG_FAIL(f, src->line,
                        "%s has no url; add url: postgresql://user:${DB_PASSWORD}@host:5432/dbname", key);
    bool split = src->dataset_query != NULL || src->results_query != NULL;
    if (src->query != NULL && split)
        return CFG_FAIL(f, src->query_line,
                        "both query and %s are given; use either a single query or the pair dataset_query + "
                        "results_query",
                        src->dataset_query != NULL ? "dataset_query" : "results_query");
    if (src->query == NULL && !split)
        return CFG_FAIL(f, src->line,
                        "%s has no query; add dataset_query + results_query (split source, joined on "
                        "dataset_id) or a single query",
                        key);
    if (src->dataset_query == NULL && src->results_query != NULL)
        return CFG_FAIL(
            f, src->results_query_line,
            "results_query without dataset_query; add dataset_query (both must select dataset_id), or "
            "use a single query");
    if (src->results_query == NULL && src->dataset_query != NULL)
        return CFG_FAIL(
            f, src->dataset_query_line,
            "dataset_query without results_query; add results_query (both must select dataset_id), or "
            "use a single query");
    if (split && src->unique_key_data.n > 0)
        return CFG_FAIL(f, src->unique_key_line,
                        "a split source needs one unique_key per query: unique_key: {dataset: dataset_id, "
                        "results: [dataset_id, metric_name]}");
    if (!split && (src->unique_key_dataset.n > 0 || src->unique_key_results.n > 0))
        return CFG_FAIL(
            f, src->unique_key_line,
            "a single-query source takes unique_key: <column> or [columns], not dataset/results keys");
    if (!check_capture(f, src))
        return false;
    if (src->publish_line && src->publish_path == NULL)
        return CFG_FAIL(f, src->publish_line,
                        "publish needs path: the directory its versions are written to, e.g. publish: {path: "
                        "published/%s}",
                        src->name);
    if (src->publish_tables && !split)
        return CFG_FAIL(f, src->publish_line,
                        "publish.tables publishes the two tables of a split source (dataset_query + "
                        "results_query); this source has one query: remove tables");
    if ((src->unique_key_line || src->lookback || src->full_refresh_interval_minutes > 0) &&
        src->incremental_column == NULL)
        return CFG_FAIL(f,
                        src->unique_key_line ? src->unique_key_line
                        : src->lookback_line ? src->lookback_line
                                             : src->line,
                        "unique_key, lookback and full_refresh_interval_minutes work with incremental syncs; "
                        "add incremental_column");
    return check_join(f, src, split);
}

static void source_defaults(cfg_source *src)
{
    memset(src, 0, sizeof *src);
    src->enabled = true;
    src->auto_load = true;
    src->refresh_interval_minutes = 0;
    src->query_timeout_s = 600;
    src->publish_keep_versions = 3;
}

static void source_free(cfg_source *src)
{
    free(src->name);
    free(src->file);
    free(src->url);
    free(src->dataset_query);
    free(src->results_query);
    free(src->query);
    free(src->partition_column);
    free(src->incremental_column);
    free(src->lookback);
    free(src->publication);
    free(src->publish_path);
    free(src->publish_partition_by);
    for (size_t i = 0; i < src->n_plans; i++)
        qt_single_table_free(&src->plans[i].shape);
    cfg_key_free(&src->unique_key_dataset);
    cfg_key_free(&src->unique_key_results);
    cfg_key_free(&src->unique_key_data);
    cfg_key_free(&src->join_columns);
    memset(src, 0, sizeof *src);
}

/* The view's join when join.columns is not given: on dataset_id, as the
 * runbook joins them. */
static bool default_join(const cfg_yfile *f, cfg_source *src)
{
    if (src->join_columns.n > 0)
        return true;
    src->join_columns.cols = calloc(1, sizeof *src->join_columns.cols);
    if (src->join_columns.cols == NULL || (src->join_columns.cols[0] = strdup("dataset_id")) == NULL)
        return cfg_yaml_nomem(f->err);
    src->join_columns.n = 1;
    return true;
}

/* The top level of a source file: exactly one key, named `<name>_db`. */
static bool check_source_top_level(const cfg_yfile *f, const yaml_node_t *root, const char *shape)
{
    if (!cfg_yaml_check_keys(f, root, NULL, 0))
        return false;
    for (size_t i = 0; i < cfg_yaml_n_pairs(root); i++) {
        cfg_kv p = cfg_yaml_pair(f, root, i);
        if (strcmp(p.key, "duckdb") == 0)
            return CFG_FAIL(f, p.line, "duckdb: belongs in duckdb.yaml, not in a source file; move it there");
        if (!ends_with(p.key, "_db"))
            return CFG_FAIL(f, p.line,
                            "top-level key \"%.80s\" must be named <name>_db (e.g. \"%.80s_db:\"); %s", p.key,
                            p.key, shape);
        if (i > 0)
            return CFG_FAIL(
                f, p.line,
                "second top-level key \"%.80s\"; a source file holds exactly one <name>_db: key, move "
                "\"%.80s\" to a file of its own",
                p.key, p.key);
    }
    return true;
}

/* A source file: a mapping with exactly one `<name>_db:` key. */
static bool load_source_file(const cfg_yfile *f, cfg_source *src)
{
    const char *shape =
        "a source file holds one mapping, e.g. \"monitoring_db:\" with url and queries under it";
    source_defaults(src);
    const yaml_node_t *root = cfg_yaml_root(f);
    if (root == NULL || cfg_yaml_is_null(root))
        return CFG_FAIL(f, 1, "the file is empty; %s", shape);
    if (root->type != YAML_MAPPING_NODE)
        return CFG_FAIL(f, cfg_yaml_line_of(root), "the top level is %s, not a mapping; %s",
                        cfg_yaml_node_kind(root), shape);
    if (cfg_yaml_n_pairs(root) == 0)
        return CFG_FAIL(f, cfg_yaml_line_of(root), "no source defined; %s", shape);
    if (!check_source_top_level(f, root, shape))
        return false;

    cfg_kv p = cfg_yaml_pair(f, root, 0);
    src->line = p.line;
    src->name = strndup(p.key, strlen(p.key) - 3);
    src->file = strdup(f->path);
    if (src->name == NULL || src->file == NULL)
        return cfg_yaml_nomem(f->err);
    if (!valid_source_name(src->name))
        return CFG_FAIL(f, p.line,
                        "source name \"%.80s\" (from %.80s) is not valid; use lowercase letters, digits and "
                        "_, not starting with a digit, at most %d characters",
                        src->name, p.key, CFG_SOURCE_NAME_MAX);
    if (p.value->type != YAML_MAPPING_NODE)
        return CFG_FAIL(f, p.line,
                        "%s must be a mapping of source settings (url, dataset_query, ...), not %s", p.key,
                        cfg_yaml_is_null(p.value) ? "empty" : cfg_yaml_node_kind(p.value));
    return cfg_keys_parse_source(f, p.value, src) && check_source(f, src, p.key) && default_join(f, src);
}

/* duckdb.yaml: `duckdb:` with store settings; empty means defaults. */
static bool load_store_file(const cfg_yfile *f, cfg_store *st)
{
    const yaml_node_t *root = cfg_yaml_root(f);
    if (root == NULL || cfg_yaml_is_null(root))
        return true;
    if (root->type != YAML_MAPPING_NODE)
        return CFG_FAIL(f, cfg_yaml_line_of(root),
                        "the top level is %s, not a mapping; start the file with \"duckdb:\"",
                        cfg_yaml_node_kind(root));
    for (size_t i = 0; i < cfg_yaml_n_pairs(root); i++) {
        cfg_kv p = cfg_yaml_pair(f, root, i);
        if (ends_with(p.key, "_db"))
            return CFG_FAIL(f, p.line,
                            "source \"%.80s\" does not belong in duckdb.yaml; move it to a file of its "
                            "own, e.g. %.80s.yaml",
                            p.key, p.key);
    }
    return cfg_keys_parse_store(f, root, st);
}

static bool is_store_file(const char *name)
{
    return strcmp(name, "duckdb.yaml") == 0 || strcmp(name, "duckdb.yml") == 0;
}

/* dir/name, without a second '/' when dir ends with one: the path shows in
 * messages. NULL when out of memory. */
static char *join_path(const char *dir, const char *name)
{
    ds_buf path = DS_BUF_INIT;
    ds_buf_appendf(&path, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    return ds_buf_take(&path);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Appends a copy of name to the growing list *names. */
static bool add_name(char ***names, size_t *n, size_t *cap, const char *name)
{
    if (*n == *cap) {
        size_t grown_cap = *cap ? *cap * 2 : 16;
        char **grown = realloc(*names, grown_cap * sizeof *grown);
        if (grown == NULL)
            return false;
        *names = grown;
        *cap = grown_cap;
    }
    if (((*names)[*n] = strdup(name)) == NULL)
        return false;
    (*n)++;
    return true;
}

/* *.yaml and *.yml regular files (symlinks followed), sorted; hidden files
 * such as editor backups are skipped. */
static bool list_yaml_files(const char *dir, char ***names, size_t *n, ds_error *err)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return ds_error_set(err, DS_ERR_CONFIG,
                            "%s: cannot open the config directory: %s; create it or pass the right "
                            "one with --config-dir",
                            dir, strerror(errno));
    size_t cap = 0;
    bool ok = true;
    const struct dirent *ent;
    while (ok && (ent = readdir(d)) != NULL) {
        const char *name = ent->d_name;
        if (name[0] == '.' || !(ends_with(name, ".yaml") || ends_with(name, ".yml")))
            continue;
        char *path = join_path(dir, name);
        struct stat st;
        bool regular = path != NULL && stat(path, &st) == 0 && S_ISREG(st.st_mode);
        ok = path != NULL && (!regular || add_name(names, n, &cap, name));
        free(path);
    }
    closedir(d);
    if (!ok) {
        free_names(*names, *n);
        *names = NULL;
        *n = 0;
        return cfg_yaml_nomem(err);
    }
    if (*n > 0)
        qsort(*names, *n, sizeof **names, compare_names);
    return true;
}

static void plan_query(cfg_source *src, const char *label, const char *sql, int line, const cfg_text_at *at,
                       const cfg_key *key, const char *suffix)
{
    cfg_query_plan *plan = &src->plans[src->n_plans++];
    plan->label = label;
    plan->sql = sql;
    plan->line = line;
    plan->at = at;
    plan->key = key;
    plan->needs_dataset_id = src->query == NULL;
    snprintf(plan->table, sizeof plan->table, "%s_%s", src->name, suffix);
    snprintf(plan->staging, sizeof plan->staging, "%s_%s_staging", src->name, suffix);
}

/* The source's queries as a list, built once: the sync, the status and the
 * server walk it instead of knowing that a source has one or two. */
static void build_query_plans(cfg_source *src)
{
    src->n_plans = 0;
    if (src->query != NULL) {
        plan_query(src, "query", src->query, src->query_line, &src->query_at, &src->unique_key_data, "data");
    } else {
        plan_query(src, "dataset_query", src->dataset_query, src->dataset_query_line, &src->dataset_query_at,
                   &src->unique_key_dataset, "dataset");
        plan_query(src, "results_query", src->results_query, src->results_query_line, &src->results_query_at,
                   &src->unique_key_results, "results");
    }
    snprintf(src->data_name, sizeof src->data_name, "%s_data", src->name);
    cfg_pg_object_name(src->name, src->slot_name);
    src->publication_owned = src->publication == NULL;
    snprintf(src->publication_name, sizeof src->publication_name, "%s",
             src->publication ? src->publication : src->slot_name);
}

/* capture: logical decodes one table's rows and applies each change to
 * the cached row: every query must read one table, nothing the change of
 * one row cannot say (a join, an aggregate, a LIMIT). */
static bool parse_capture_shapes(cfg_source *src, ds_error *err)
{
    if (src->capture != CFG_CAPTURE_LOGICAL)
        return true;
    for (size_t i = 0; i < src->n_plans; i++) {
        cfg_query_plan *plan = &src->plans[i];
        char why[256];
        if (qt_parse_single_table(plan->sql, &plan->shape, why, sizeof why))
            continue;
        if (strcmp(why, "out of memory") == 0)
            return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        return ds_error_set(err, DS_ERR_CONFIG,
                            "%s:%d: %s: %s; capture: logical (line %d) reads each query as one table's rows: "
                            "SELECT <columns or expressions of the row> FROM <table> [WHERE <condition on "
                            "the row>]. Fix: read the table alone (join and aggregate in DuckDB over the "
                            "cached tables), or remove capture: logical",
                            src->file, plan->line, plan->label, why, src->capture_line);
    }
    return true;
}

static bool add_source(const cfg_yfile *f, cfg_config *cfg)
{
    cfg_source *grown = realloc(cfg->sources, (cfg->n_sources + 1) * sizeof *grown);
    if (grown == NULL)
        return cfg_yaml_nomem(f->err);
    cfg->sources = grown;
    cfg_source *src = &cfg->sources[cfg->n_sources];
    if (!load_source_file(f, src)) {
        source_free(src);
        return false;
    }
    cfg->n_sources++;
    return true;
}

static bool load_file(const char *path, bool store, unsigned flags, cfg_config *cfg, ds_error *err)
{
    cfg_yfile f;
    if (!cfg_yaml_open(&f, path, err))
        return false;
    f.no_pg = (flags & CFG_LOAD_NO_PG) != 0;
    bool ok = store ? load_store_file(&f, &cfg->store) : add_source(&f, cfg);
    cfg_yaml_close(&f);
    return ok;
}

/* Every YAML file of dir, in name order; one of duckdb.yaml and duckdb.yml
 * at most. */
static bool load_files(const char *dir, unsigned flags, cfg_config *cfg, ds_error *err)
{
    char **names = NULL;
    size_t n = 0;
    bool ok = list_yaml_files(dir, &names, &n, err);
    if (ok && n == 0)
        ok = ds_error_set(err, DS_ERR_CONFIG,
                          "%s: no config file in this directory; it must hold duckdb.yaml (the store's "
                          "settings) and one <name>_db.yaml per PostgreSQL source (see "
                          "docs/configuration.md), or pass the right directory with --config-dir",
                          dir);
    const char *store_file = NULL;
    for (size_t i = 0; ok && i < n; i++) {
        char *path = join_path(dir, names[i]);
        bool store = is_store_file(names[i]);
        if (path == NULL)
            ok = cfg_yaml_nomem(err);
        else if (store && store_file != NULL)
            ok = ds_error_set(err, DS_ERR_CONFIG, "%s:1: both %s and %s exist; keep only one of them", path,
                              store_file, names[i]);
        else
            ok = load_file(path, store, flags, cfg, err);
        if (store)
            store_file = names[i];
        free(path);
    }
    free_names(names, n);
    return ok;
}

static int compare_sources(const void *a, const void *b)
{
    const cfg_source *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->file, y->file);
}

/* Sorts the sources by name; two of the same name are an error. */
static bool sort_sources(cfg_config *cfg, ds_error *err)
{
    if (cfg->n_sources > 1)
        qsort(cfg->sources, cfg->n_sources, sizeof *cfg->sources, compare_sources);
    for (size_t i = 1; i < cfg->n_sources; i++) {
        const cfg_source *a = &cfg->sources[i - 1], *b = &cfg->sources[i];
        if (strcmp(a->name, b->name) == 0)
            return ds_error_set(err, DS_ERR_CONFIG,
                                "%s:%d: source \"%s\" is defined twice: also in %s:%d; rename one of the "
                                "%s_db keys",
                                b->file, b->line, b->name, a->file, a->line, b->name);
    }
    return true;
}

static bool config_defaults(cfg_config *cfg, const char *dir, ds_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->store.enabled = true;
    cfg->store.sync_mode = CFG_SYNC_STARTUP;
    cfg->store.sync_workers = 1;
    cfg->store.sync_chunk_size = 1000000;
    cfg->store.max_sync_rows = 2000000;
    cfg->store.query_concurrency = 8;
    cfg->store.query_max_rows = 10000;
    cfg->store.threads = 1;
    cfg->store.read_threads = -1;
    cfg->store.read_concurrency = -1;
    cfg->store.read_turn_s = 1;
    cfg->store.max_idle_source_connections = 8;
    cfg->store.idle_source_connection_timeout_s = 600;
    cfg->store.pg_max_connections = 64;
    cfg->dir = strdup(dir);
    cfg->store.path = strdup("data/store.duckdb");
    return (cfg->dir != NULL && cfg->store.path != NULL) || cfg_yaml_nomem(err);
}

/* Default memory_limit: 64 MB, plus 8 MB per further partition worker
 * (each inserts on its own, holding its unfinished row group). With
 * 16,384-row row groups a 5M-row sync stays near 150 MB of RSS with one
 * worker. Four insert streams of 1M traces of 1-2 KB took the same time
 * at 64, 76, 88 and 112 MB (10.3-10.6 s) and peaked at 209, 226, 242-252
 * and 277 MB of RSS; so did 4 workers reading from a server 60 ms away
 * (31-34 s; 238-247 MB at 88 MB, 258-282 MB at 112 MB, above the 256 MB
 * a 5M-row sync is held to). The limit, not the table size, bounds the
 * rest (DuckDB spills beyond it). */
static bool default_memory_limit(cfg_store *st, ds_error *err)
{
    ds_buf limit = DS_BUF_INIT;
    ds_buf_appendf(&limit, "%dMB", 64 + 8 * (st->sync_workers - 1));
    st->memory_limit = ds_buf_take(&limit);
    return st->memory_limit != NULL || cfg_yaml_nomem(err);
}

/* A relative duckdb.path (or publish.path) names a place beside the
 * config, wherever the command runs: it is made absolute against the config
 * directory, once, at load. A relative config directory is resolved first
 * (realpath: no "../" left in the path shown); an absolute one is kept as
 * written. */
static bool resolve_path(const char *dir, const char *key, char **pathp, ds_error *err)
{
    if ((*pathp)[0] == '/')
        return true;
    char *real = dir[0] == '/' ? NULL : realpath(dir, NULL);
    if (dir[0] != '/' && real == NULL)
        return ds_error_set(err, DS_ERR_CONFIG,
                            "%s: cannot resolve %s \"%s\" against the config directory (%s); give "
                            "an absolute path",
                            dir, key, *pathp, strerror(errno));
    const char *base = real != NULL ? real : dir;
    const char *rel = *pathp;
    while (rel[0] == '.' && rel[1] == '/')
        rel += 2;
    ds_buf path = DS_BUF_INIT;
    ds_buf_appendf(&path, "%s%s%s", base, base[strlen(base) - 1] == '/' ? "" : "/", rel);
    free(real);
    char *resolved = ds_buf_take(&path);
    if (resolved == NULL)
        return cfg_yaml_nomem(err);
    free(*pathp);
    *pathp = resolved;
    return true;
}

static bool resolve_store_path(cfg_config *cfg, ds_error *err)
{
    bool ok = resolve_path(cfg->dir, "duckdb.path", &cfg->store.path, err);
    for (size_t i = 0; ok && i < cfg->n_sources; i++)
        if (cfg->sources[i].publish_path != NULL)
            ok = resolve_path(cfg->dir, "publish.path", &cfg->sources[i].publish_path, err);
    return ok;
}

/* The rules between the pg_ keys of duckdb.yaml. */
static bool check_pg_keys(const cfg_store *st, ds_error *err)
{
    if ((st->pg_tls_cert == NULL) != (st->pg_tls_key == NULL))
        return ds_error_set(err, DS_ERR_CONFIG,
                            "duckdb.yaml: pg_tls_cert and pg_tls_key go together; set both (PEM files) or "
                            "neither");
    if (st->pg_listen != NULL && !st->pg_trust && st->pg_user_names.n == 0)
        return ds_error_set(
            err, DS_ERR_CONFIG,
            "duckdb.yaml: pg_listen is set but pg_users names no user, so no client could log "
            "in; add pg_users: {reader: \"${READER_PASSWORD}\"} (or pg_auth: trust for "
            "loopback clients)");
    return true;
}

bool cfg_load_dir(const char *dir, cfg_config *out, ds_error *err)
{
    return cfg_load_dir_flags(dir, 0, out, err);
}

bool cfg_load_dir_flags(const char *dir, unsigned flags, cfg_config *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    if (dir == NULL || dir[0] == '\0')
        return ds_error_set(err, DS_ERR_CONFIG, "no config directory given; pass --config-dir DIR");

    cfg_config cfg;
    bool ok = config_defaults(&cfg, dir, err) && load_files(dir, flags, &cfg, err) && sort_sources(&cfg, err);
    /* After sorting: a plan points at its source's unique_key. */
    for (size_t i = 0; ok && i < cfg.n_sources; i++) {
        build_query_plans(&cfg.sources[i]);
        ok = parse_capture_shapes(&cfg.sources[i], err);
    }
    if (ok && cfg.store.memory_limit == NULL)
        ok = default_memory_limit(&cfg.store, err);
    ok = ok && resolve_store_path(&cfg, err) && check_pg_keys(&cfg.store, err);
    if (!ok) {
        cfg_free(&cfg);
        return false;
    }
    *out = cfg;
    return true;
}

void cfg_free(cfg_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n_sources; i++)
        source_free(&cfg->sources[i]);
    free(cfg->sources);
    free(cfg->dir);
    free(cfg->store.path);
    free(cfg->store.memory_limit);
    free(cfg->store.query_memory_limit);
    free(cfg->store.read_memory_limit);
    cfg_key_free(&cfg->store.cors_origins);
    free(cfg->store.pg_listen);
    free(cfg->store.pg_tls_cert);
    free(cfg->store.pg_tls_key);
    for (size_t i = 0; i < cfg->store.pg_user_passwords.n; i++) /* secrets: not left in freed memory */
        explicit_bzero(cfg->store.pg_user_passwords.cols[i], strlen(cfg->store.pg_user_passwords.cols[i]));
    cfg_key_free(&cfg->store.pg_user_names);
    cfg_key_free(&cfg->store.pg_user_passwords);
    memset(cfg, 0, sizeof *cfg);
}

const cfg_source *cfg_find_source(const cfg_config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n_sources; i++)
        if (strcmp(cfg->sources[i].name, name) == 0)
            return &cfg->sources[i];
    return NULL;
}

bool cfg_source_is_split(const cfg_source *src)
{
    return src != NULL && src->dataset_query != NULL && src->results_query != NULL;
}

int cfg_serve_threads(const cfg_store *st)
{
    if (st->threads <= 0)
        return 0;
    int readers = st->read_threads;
    if (readers < 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        readers = cores > st->threads ? (int)cores - st->threads : 1;
    }
    return st->threads + readers;
}

int cfg_read_concurrency(const cfg_store *st)
{
    if (st->read_concurrency >= 0)
        return st->read_concurrency;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores > 2 ? (int)cores : 2;
}

bool cfg_join_is_default(const cfg_source *src)
{
    return src->join_type == CFG_JOIN_LEFT && src->join_columns.n == 1 &&
           strcmp(src->join_columns.cols[0], "dataset_id") == 0;
}

void cfg_plan_error_prefix(const cfg_source *src, const cfg_query_plan *plan, long at, ds_error *err)
{
    const cfg_text_at *where = plan->at;
    if (at < 0 || where == NULL || where->line < 1) {
        ds_error_prefix(err, "%s:%d: %s: ", src->file, plan->line, plan->label);
        return;
    }
    if (!where->verbatim || (size_t)at > strlen(plan->sql)) {
        ds_error_prefix(err, "%s:%d: %s: ", src->file, where->line, plan->label);
        return;
    }
    /* Lines of a | block are the file's lines, less the indentation; a
     * one-line value is the file's text from its column on. Columns count
     * characters, as editors do. */
    int line = where->line, col = where->col;
    for (long i = 0; i < at; i++) {
        unsigned char c = (unsigned char)plan->sql[i];
        if (c == '\n' && where->literal) {
            line++;
            col = where->indent + 1;
        } else if ((c & 0xc0) != 0x80) {
            col++;
        }
    }
    ds_error_prefix(err, "%s:%d:%d: %s: ", src->file, line, col, plan->label);
}
