/* The YAML config directory: duckdb.yaml (store settings) plus one file per
 * PostgreSQL source, key `<name>_db:`. Loading validates everything and
 * reports the first problem as "file:line: what is wrong; how to fix it". */
#ifndef DS_CONFIG_CONFIG_H
#define DS_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "common/log.h"
#include "source/querytext.h"

typedef enum cfg_sync_mode { CFG_SYNC_STARTUP, CFG_SYNC_MANUAL } cfg_sync_mode;

/* `duckdb:` in duckdb.yaml. The file is optional; every key has a default. */
/* A list of names (the columns of a unique key, the CORS origins); n == 0
 * when none is configured. */
typedef struct cfg_key {
    char **cols;
    size_t n;
} cfg_key;

/* read_memory_limit's default: about 20 dashboard aggregates over a
 * million-row view at once (each held ~25MB in bench/pg.sh). */
#define CFG_READ_MEMORY_LIMIT_DEFAULT "512MB"

typedef struct cfg_store {
    bool enabled;            /* default true */
    char *path;              /* default "data/store.duckdb", relative to the config directory */
    cfg_sync_mode sync_mode; /* default startup */
    int sync_workers;        /* default 1, 1..64 */
    int sync_chunk_size;     /* rows per insert batch, default 1000000, >= 1 */
    int64_t max_sync_rows;   /* per table, default 2000000, 0 = no cap */
    int query_concurrency;   /* default 8, 1..256; also queries of /api/store/query at once */
    int64_t query_max_rows;  /* rows per /api/store/query answer, default 10000; 0 = no cap (NDJSON, CSV) */
    char *memory_limit;      /* DuckDB memory_limit, default 64MB per sync worker */
    int threads;             /* DuckDB worker threads, default 1; 0 = one per core */
    int read_threads;        /* serve's extra threads for readers; -1: cfg_serve_threads' default */
    int read_concurrency;    /* reader queries run at once in serve; 0: no limit; -1: the default */
    double read_turn_s;      /* the longest one holds its place among them; default 1; 0: no limit */
    /* PostgreSQL connections `serve` keeps between syncs, all sources together. */
    int max_idle_source_connections;         /* default 8; 0 = keep none */
    double idle_source_connection_timeout_s; /* default 600; closed after this long unused */
    /* Origins a browser may call the API from (CORS), read at start; none
     * by default. A cfg_key: a list of strings. */
    cfg_key cors_origins;
    ds_log_format log_format; /* default text; --log-format wins */
    /* A size like memory_limit: the query memory one /api/store/query may
     * see held; NULL = half of memory_limit. */
    char *query_memory_limit;
    /* A size like memory_limit: the readers' budget (protocol sessions and
     * /api/store/query), added to memory_limit for DuckDB while `serve`
     * runs; NULL = CFG_READ_MEMORY_LIMIT_DEFAULT. */
    char *read_memory_limit;
    /* PostgreSQL's wire protocol (docs/pg-protocol.md); off when pg_listen
     * is NULL. */
    char *pg_listen;                /* "HOST:PORT" */
    int pg_max_connections;         /* default 64 */
    double pg_idle_timeout_s;       /* 0 = none (default) */
    double pg_statement_timeout_s;  /* 0 = none (default) */
    char *pg_tls_cert, *pg_tls_key; /* both or neither */
    bool pg_trust;                  /* pg_auth: trust (loopback clients only) */
    /* pg_users: names and their passwords (${VAR} expanded; never logged). */
    cfg_key pg_user_names;
    cfg_key pg_user_passwords;
} cfg_store;

typedef enum cfg_horizon { CFG_HORIZON_AUTO, CFG_HORIZON_ON, CFG_HORIZON_OFF } cfg_horizon;

/* How the <name>_data view of a split source joins the results to the
 * dataset: every result (left, the default) or only those whose dataset
 * row is synced (inner). */
typedef enum cfg_join_type { CFG_JOIN_LEFT, CFG_JOIN_INNER } cfg_join_type;

/* How a source sees changes: re-reading rows past a watermark, or
 * PostgreSQL's logical replication (docs/configuration.md). */
typedef enum cfg_capture { CFG_CAPTURE_WATERMARK, CFG_CAPTURE_LOGICAL } cfg_capture;

/* PostgreSQL's names (slots, publications) hold at most 63 bytes. */
#define CFG_PG_NAME_CAP 64

/* Names derived from a source name fit fixed buffers: a source name is at
 * most CFG_SOURCE_NAME_MAX characters (checked at load), so every table name
 * duckstore derives from it ("<name>_results_staging") fits
 * CFG_TABLE_NAME_CAP bytes with room to spare. */
#define CFG_SOURCE_NAME_MAX 63
#define CFG_TABLE_NAME_CAP (CFG_SOURCE_NAME_MAX + 32)

/* A source reads one query (`query`) or two (`dataset_query` +
 * `results_query`, joined on dataset_id by the <name>_data view). */
#define CFG_MAX_QUERIES 2

/* Where a value's text sits in its YAML file, so that a place inside the
 * text (PostgreSQL's error position in a query) can be shown as a line and
 * column an editor jumps to. */
typedef struct cfg_text_at {
    int line;      /* of the text's first character (a | block: the line after the |) */
    int col;       /* 1-based column of that character (one line values) */
    int indent;    /* | block: the columns of indentation cut from each line */
    bool literal;  /* a | block: its lines are the file's lines */
    bool verbatim; /* the text is the file's, character for character (no
                      ${VAR} expanded, no escape, no line folded) */
} cfg_text_at;

/* One query of a source and the table it fills, built once at load. */
typedef struct cfg_query_plan {
    const char *label;                    /* "dataset_query", "results_query" or "query" */
    const char *sql;                      /* the query text, owned by the source */
    int line;                             /* line of its key */
    const cfg_text_at *at;                /* where its text is */
    const cfg_key *key;                   /* its unique_key (n == 0: none) */
    bool needs_dataset_id;                /* part of a split source: joined on its join columns */
    char table[CFG_TABLE_NAME_CAP];       /* "<name>_dataset", "<name>_results" or "<name>_data" */
    char staging[CFG_TABLE_NAME_CAP + 8]; /* "<table>_staging" */
    /* capture: logical: the one table the query reads, parsed at load
     * (all NULL for a watermark source). */
    qt_single_table shape;
} cfg_query_plan;

/* One `<name>_db:` source. Strings are ${VAR}-expanded and owned by the
 * config; optional ones are NULL when absent. Exactly one of `query` and the
 * pair dataset_query + results_query is set. */
typedef struct cfg_source {
    char *name;          /* "monitoring" for key monitoring_db */
    char *file;          /* path of the YAML file it came from */
    int line;            /* line of the `<name>_db:` key */
    bool enabled;        /* default true */
    bool auto_load;      /* default true */
    char *url;           /* postgresql:// URI or key=value conninfo; required */
    char *dataset_query; /* split source */
    char *results_query;
    char *query; /* single-query source */
    char *partition_column;
    char *incremental_column;
    double refresh_interval_minutes; /* default 0 = no periodic sync; fractions allowed */
    double query_timeout_s;          /* default 600; > 0 */
    /* Incremental sync that loses nothing (docs/incremental.md). */
    cfg_key unique_key_dataset, unique_key_results, unique_key_data; /* upsert keys per sub-table */
    char *lookback;                       /* "5 minutes" (time columns) or a number; NULL = none */
    bool lookback_is_number;              /* lookback is a plain number (numeric columns) */
    double full_refresh_interval_minutes; /* 0 = never */
    cfg_horizon commit_horizon;           /* auto: on for timestamp columns */
    int unique_key_line, lookback_line;
    /* `capture: logical`: the publication and replication slot it reads. */
    cfg_capture capture; /* default watermark */
    char *publication;   /* `publication:` as written (used as is); NULL: duckstore's own */
    char publication_name[CFG_PG_NAME_CAP]; /* the one in use: `publication` or "duckstore_<name>" */
    bool publication_owned;                 /* duckstore creates and maintains it (no `publication:`) */
    char slot_name[CFG_PG_NAME_CAP];        /* "duckstore_<name>" (see cfg_pg_object_name) */
    int capture_line, publication_line;
    int commit_horizon_line, full_refresh_line;
    /* `join:` of a split source's view: its type and the columns both
     * queries are joined on (after load: [dataset_id] when not given). */
    cfg_join_type join_type;
    cfg_key join_columns;
    int join_line; /* 0 = not configured */
    /* Lines of keys, for messages that point at them later (0 = absent). */
    int url_line, dataset_query_line, results_query_line, query_line;
    int partition_column_line, incremental_column_line;
    cfg_text_at dataset_query_at, results_query_at, query_at;
    /* Loaded with CFG_LOAD_NO_PG: the url is kept as written, neither
     * ${VAR}-expanded nor checked, and must not be used to connect. */
    bool url_unexpanded;
    /* The queries in sync order: the dataset query before the results query. */
    cfg_query_plan plans[CFG_MAX_QUERIES];
    size_t n_plans;
    char data_name[CFG_TABLE_NAME_CAP]; /* "<name>_data": the view (split) or table users read */
    /* `publish:` (docs/publish.md): the data written as Hive-partitioned
     * Parquet after a sync. Off when publish_line is 0. */
    int publish_line;
    char *publish_path;           /* directory; absolute after load (relative: to the config directory) */
    char *publish_partition_by;   /* "col" or "day(col)" (hour, day, month, year); NULL = none */
    double publish_every_minutes; /* 0 = after every sync */
    int publish_keep_versions;    /* default 3 */
    bool publish_tables;          /* a split source's two tables too */
    int publish_partition_line;
} cfg_source;

typedef struct cfg_config {
    char *dir;
    cfg_store store;
    cfg_source *sources; /* sorted by name */
    size_t n_sources;
} cfg_config;

/* Loads every *.yaml / *.yml file of dir. On failure returns false with
 * err->code DS_ERR_CONFIG and a message "file:line: problem; fix". */
bool cfg_load_dir(const char *dir, cfg_config *out, ds_error *err);

/* For commands that never connect to PostgreSQL (query, status): a url is
 * kept as written (url_unexpanded), so the variables that hold its
 * password need not be set; every other key is loaded and checked as by
 * cfg_load_dir. */
#define CFG_LOAD_NO_PG 1u
bool cfg_load_dir_flags(const char *dir, unsigned flags, cfg_config *out, ds_error *err);

/* Prefixes err with where the query's text at byte offset `at` is in its
 * file: "file:line:col: label: " (a | block, or a one-line value that is
 * the file's text), "file:line: label: " with the query's first line when
 * the column cannot be known, or with its key's line when at < 0. */
void cfg_plan_error_prefix(const cfg_source *src, const cfg_query_plan *plan, long at, ds_error *err);
void cfg_free(cfg_config *cfg);

const cfg_source *cfg_find_source(const cfg_config *cfg, const char *name);

/* True for a split source (dataset_query + results_query). */
bool cfg_source_is_split(const cfg_source *src);

/* "left" / "inner", as written in a source's join.type. */
const char *cfg_join_type_name(cfg_join_type type);

/* True when the view is the default one: a left join on dataset_id alone
 * (one row per result while dataset_id is unique in the dataset). */
bool cfg_join_is_default(const cfg_source *src);

/* DuckDB's worker threads while `duckstore serve` runs: threads for the
 * syncs plus read_threads for readers, by default the cores threads leaves
 * (at least 1), so a dashboard's query uses the machine; 0 when threads
 * is 0 (one per core already). Other commands use threads alone. */
int cfg_serve_threads(const cfg_store *st);

/* The reader queries (PostgreSQL protocol, /api/store/query) DuckDB runs
 * at once in serve, the others waiting their turn (store/read_gate.h): as
 * configured, by default the cores, at least 2 (a short query need not
 * wait behind one long one); 0: no limit. */
int cfg_read_concurrency(const cfg_store *st);

/* Copy of a postgresql:// URI or key=value conninfo with the password
 * replaced by "***". Caller frees. */
char *cfg_mask_url(const char *url);

/* "watermark" / "logical", as written in a source's capture. */
const char *cfg_capture_name(cfg_capture capture);

/* The name of a PostgreSQL object duckstore owns for a source:
 * "duckstore_<name>", lowercase [a-z0-9_] only (any other byte becomes _),
 * at most 63 bytes: a longer one keeps a prefix and ends in "_" and 8 hex
 * digits of a hash of the whole name, so two sources never share one. */
void cfg_pg_object_name(const char *source_name, char out[CFG_PG_NAME_CAP]);

/* Splits a valid publish.partition_by: the column, and the function of it
 * ("day", "month", "year", "hour") or "" for the column itself. False when
 * text is not such a value. */
bool cfg_publish_partition(const char *text, char fn[8], char *col, size_t col_cap);

/* "startup" / "manual", as written in duckdb.yaml. */
const char *cfg_sync_mode_name(cfg_sync_mode mode);

/* Writes the resolved config as YAML, passwords masked. */
void cfg_print(FILE *out, const cfg_config *cfg);

#endif
