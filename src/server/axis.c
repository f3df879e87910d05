/* AXIS's read endpoints (axis.h): the metadata the sync's commit stored,
 * and pages of a dataset's rows read on the store's pooled connections
 * (DuckDB's MVCC: a page sees committed data only). Invalid parameters get
 * a 422 whose "detail" lists them as AXIS (FastAPI) does. */
#include "server/axis.h"

#include <errno.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

#include "common/clock.h"
#include "common/strbuf.h"
#include "store/metadata.h"

#define PAGE_SIZE_MAX 500
#define PAGE_SIZE_DEFAULT 50
#define MAX_PARAMS 16

/* The equality filters and the columns `search` looks in (each where the
 * dataset has it). */
static const char *const eq_filters[] = {"environment", "source_name", "source_component", "source_type",
                                         "metric_name"};
static const char *const search_columns[] = {"query", "trace_id", "actual_output", "dataset_query",
                                             "dataset_actual_output"};

static const char *arg(http_request *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* The source whose dataset is name: its <name>_data or its own name. */
static bool find_source(api_ctx *a, const char *name, char *source, char *relation)
{
    const cfg_config *cfg = jobs_config_acquire(a->jobs);
    bool found = false;
    for (size_t i = 0; !found && i < cfg->n_sources; i++) {
        const cfg_source *src = &cfg->sources[i];
        if (strcmp(src->data_name, name) == 0 || strcmp(src->name, name) == 0) {
            snprintf(source, CFG_TABLE_NAME_CAP, "%s", src->name);
            snprintf(relation, CFG_TABLE_NAME_CAP, "%s", src->data_name);
            found = true;
        }
    }
    jobs_config_release(a->jobs, cfg);
    return found;
}

static enum MHD_Result no_dataset(http_request *req, const char *name)
{
    return http_send_json(
        req, MHD_HTTP_NOT_FOUND,
        json_pack("{s:b,s:o}", "success", 0, "error",
                  http_json_stringf("no dataset named \"%s\"; see /api/store/status", name)));
}

/* The metadata documents computed so far: one per source, with the status
 * row's time it describes (a later sync changes it). */
typedef struct metadata_entry {
    char *key; /* store path, NUL, source */
    size_t key_len;
    char *version;
    char *json;
    bool streaming;     /* a logical source's: its data moves with every applied batch */
    double computed_at; /* ds_monotonic_s() when its computation began */
    double cost_s;      /* what computing it took */
} metadata_entry;

/* A streaming source's data changes with every applied batch (every 50 ms
 * while changes flow), and each document costs scans of the whole dataset
 * (a second at 5M rows). A document is therefore served again, for an
 * older batch, while it is younger than this many times what it cost: a
 * dashboard that asks often costs at most a tenth of a core, not a
 * computation per request beside the capture. It still describes exactly
 * one commit. A watermark source's document lasts until its next sync. */
#define METADATA_STREAMING_REUSE 10.0

bool axis_metadata_reusable(double age_s, double cost_s)
{
    return age_s >= 0 && age_s < METADATA_STREAMING_REUSE * cost_s;
}
#define METADATA_CACHE_MAX 256
static metadata_entry metadata_cache[METADATA_CACHE_MAX];
static pthread_mutex_t metadata_lock = PTHREAD_MUTEX_INITIALIZER;

static char *cache_key(const store *st, const char *source, size_t *len)
{
    size_t a = strlen(store_path(st)), b = strlen(source);
    char *key = malloc(a + b + 2);
    if (key != NULL) {
        memcpy(key, store_path(st), a + 1);
        memcpy(key + a + 1, source, b + 1);
    }
    *len = a + b + 2;
    return key;
}

/* The document kept for key: of this version, or of a streaming
 * source's earlier batch still young enough to serve. */
static char *cache_get(const char *key, size_t len, const char *version, bool streaming)
{
    char *json = NULL;
    double now = ds_monotonic_s();
    pthread_mutex_lock(&metadata_lock);
    for (size_t i = 0; i < METADATA_CACHE_MAX && metadata_cache[i].key != NULL; i++) {
        const metadata_entry *e = &metadata_cache[i];
        if (e->key_len == len && memcmp(e->key, key, len) == 0 &&
            (strcmp(e->version, version) == 0 ||
             (streaming && e->streaming && axis_metadata_reusable(now - e->computed_at, e->cost_s))))
            json = strdup(e->json);
    }
    pthread_mutex_unlock(&metadata_lock);
    return json;
}

static void cache_put(const char *key, size_t len, const char *version, const char *json, bool streaming,
                      double computed_at)
{
    pthread_mutex_lock(&metadata_lock);
    size_t i = 0;
    while (i < METADATA_CACHE_MAX && metadata_cache[i].key != NULL &&
           !(metadata_cache[i].key_len == len && memcmp(metadata_cache[i].key, key, len) == 0))
        i++;
    if (i < METADATA_CACHE_MAX) {
        metadata_entry e = {.key = malloc(len),
                            .key_len = len,
                            .version = strdup(version),
                            .json = strdup(json),
                            .streaming = streaming,
                            .computed_at = computed_at,
                            .cost_s = ds_monotonic_s() - computed_at};
        if (e.key != NULL && e.version != NULL && e.json != NULL) {
            memcpy(e.key, key, len);
            free(metadata_cache[i].key);
            free(metadata_cache[i].version);
            free(metadata_cache[i].json);
            metadata_cache[i] = e;
        } else {
            free(e.key);
            free(e.version);
            free(e.json);
        }
    }
    pthread_mutex_unlock(&metadata_lock);
}

void axis_cache_free(void)
{
    pthread_mutex_lock(&metadata_lock);
    for (size_t i = 0; i < METADATA_CACHE_MAX; i++) {
        free(metadata_cache[i].key);
        free(metadata_cache[i].version);
        free(metadata_cache[i].json);
        metadata_cache[i] = (metadata_entry){0};
    }
    pthread_mutex_unlock(&metadata_lock);
}

/* In one read transaction: the status row's time (the version of the data)
 * and, unless the cache has that version, the document computed from the
 * same snapshot. "{}" when the source was never synced. */
static bool read_metadata(store *st, duckdb_connection con, const char *source, const char *relation,
                          char **json, ds_error *err)
{
    *json = NULL;
    char *version = NULL;
    ds_buf sql = DS_BUF_INIT;
    /* The relation itself (a table, or a split source's view) is only
     * there once a sync succeeded. */
    /* A logical source's data moves with every applied batch: its LSN is
     * part of the version (after " lsn ", which no time holds). */
    ds_buf_append(&sql,
                  "SELECT s.updated_at::VARCHAR || coalesce((SELECT ' lsn ' || lsn FROM _duckstore.capture "
                  "AS c WHERE c.source = s.source), '') FROM _duckstore.sync_status AS s WHERE s.source = ");
    ds_buf_append_literal(&sql, source);
    ds_buf_append(&sql,
                  " AND EXISTS (SELECT 1 FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ");
    ds_buf_append_literal(&sql, relation);
    ds_buf_append(&sql,
                  " UNION ALL SELECT 1 FROM duckdb_views() WHERE schema_name = 'main' AND view_name = ");
    ds_buf_append_literal(&sql, relation);
    ds_buf_append(&sql, ")");
    bool ok = store_exec(con, "BEGIN TRANSACTION READ ONLY", err);
    const char *text = ds_buf_str(&sql);
    ok = ok && (text != NULL ? store_query_text(con, text, &version, err)
                             : ds_error_set(err, DS_ERR_NOMEM, "out of memory"));
    ds_buf_free(&sql);
    if (ok && version == NULL) {
        *json = strdup("{}");
        ok = *json != NULL || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    } else if (ok) {
        size_t len = 0;
        char *key = cache_key(st, source, &len);
        bool streaming = strstr(version, " lsn ") != NULL;
        *json = key ? cache_get(key, len, version, streaming) : NULL;
        json_t *meta = NULL;
        double began = ds_monotonic_s();
        if (*json == NULL && (ok = store_dataset_metadata(con, relation, &meta, err))) {
            *json = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
            json_decref(meta);
            ok = *json != NULL || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
            if (ok && key != NULL)
                cache_put(key, len, version, *json, streaming, began);
        }
        free(key);
    }
    store_exec(con, "ROLLBACK", NULL);
    free(version);
    return ok;
}

static enum MHD_Result handle_metadata(api_ctx *a, http_request *req, const char *name)
{
    char source[CFG_TABLE_NAME_CAP], relation[CFG_TABLE_NAME_CAP];
    if (!find_source(a, name, source, relation))
        return no_dataset(req, name);
    if (a->st == NULL)
        return http_send_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "the DuckDB file is not open");
    duckdb_connection con;
    ds_error err;
    char *text = NULL;
    if (!store_borrow(a->st, &con, &err))
        return http_send_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, err.msg);
    bool ok = read_metadata(a->st, con, source, relation, &text, &err);
    store_release(a->st, &con);
    if (!ok)
        return http_send_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, err.msg);
    json_t *meta = json_loads(text, 0, NULL);
    free(text);
    if (meta == NULL)
        return http_send_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "the metadata is not JSON");
    return http_send_json(
        req, MHD_HTTP_OK,
        json_pack("{s:b,s:o,s:o}", "success", 1, "dataset", http_json_text(name), "metadata", meta));
}

/* ---- /api/store/data ---- */

typedef struct page_query {
    long long page, page_size;
    bool desc;
    json_t *errors; /* FastAPI's detail list */
} page_query;

static void invalid(page_query *q, const char *type, const char *key, const char *msg, const char *input)
{
    json_array_append_new(q->errors, json_pack("{s:s,s:[s,s],s:s,s:o}", "type", type, "loc", "query", key,
                                               "msg", msg, "input", http_json_text(input)));
}

/* An integer parameter within [low, high], as FastAPI checks it. */
static long long int_param(http_request *req, page_query *q, const char *key, long long low, long long high,
                           long long fallback)
{
    const char *text = arg(req, key);
    if (text == NULL)
        return fallback;
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || errno != 0) {
        invalid(q, "int_parsing", key,
                "Input should be a valid integer, unable to parse string as an integer", text);
        return fallback;
    }
    char msg[96];
    if (v < low) {
        snprintf(msg, sizeof msg, "Input should be greater than or equal to %lld", low);
        invalid(q, "greater_than_equal", key, msg, text);
    } else if (v > high) {
        snprintf(msg, sizeof msg, "Input should be less than or equal to %lld", high);
        invalid(q, "less_than_equal", key, msg, text);
    }
    return v;
}

/* The relation's columns: names (malloc'd copies) and whether each is a
 * time, for time_start / time_end. */
typedef struct rel_columns {
    char **names;
    duckdb_type *types;
    size_t n;
} rel_columns;

static void rel_columns_free(rel_columns *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->names[i]);
    free(c->names);
    free(c->types);
}

static int column_index(const rel_columns *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->names[i], name) == 0)
            return (int)i;
    return -1;
}

/* false with *missing when the relation does not exist (never synced). */
static bool read_columns(duckdb_connection con, const char *relation, rel_columns *out, bool *missing,
                         ds_error *err)
{
    memset(out, 0, sizeof *out);
    *missing = false;
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b, "SELECT * FROM ");
    ds_buf_append_ident(&b, relation);
    ds_buf_append(&b, " LIMIT 0");
    char *sql = ds_buf_take(&b);
    duckdb_result res;
    bool ok = store_query_result(con, sql, &res, err);
    free(sql);
    if (!ok) {
        *missing = strstr(err->msg, "Catalog Error") != NULL;
        return false;
    }
    size_t n = duckdb_column_count(&res);
    out->names = calloc(n ? n : 1, sizeof *out->names);
    out->types = calloc(n ? n : 1, sizeof *out->types);
    ok = out->names != NULL && out->types != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        out->types[i] = duckdb_column_type(&res, i);
        ok = (out->names[i] = strdup(duckdb_column_name(&res, i))) != NULL;
        out->n = i + 1;
    }
    duckdb_destroy_result(&res);
    if (ok)
        return true;
    rel_columns_free(out);
    memset(out, 0, sizeof *out);
    return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
}

/* The WHERE clause and its parameters (the values are bound, never
 * spliced into the SQL). */
typedef struct where_clause {
    ds_buf sql;
    const char *params[MAX_PARAMS];
    size_t n;
} where_clause;

static void where_and(where_clause *w)
{
    ds_buf_append(&w->sql, w->sql.len == 0 ? " WHERE " : " AND ");
}

static void text_col(ds_buf *b, const char *col)
{
    ds_buf_append(b, "CAST(");
    ds_buf_append_ident(b, col);
    ds_buf_append(b, " AS VARCHAR)");
}

static bool is_time(duckdb_type t)
{
    return t == DUCKDB_TYPE_TIMESTAMP || t == DUCKDB_TYPE_TIMESTAMP_TZ || t == DUCKDB_TYPE_DATE ||
           t == DUCKDB_TYPE_TIMESTAMP_S || t == DUCKDB_TYPE_TIMESTAMP_MS || t == DUCKDB_TYPE_TIMESTAMP_NS;
}

/* time_start / time_end must read as a timestamp when the column is a time. */
static void check_time(duckdb_connection con, page_query *q, const char *key, const char *value)
{
    const char *params[] = {value};
    duckdb_prepared_statement stmt;
    duckdb_result res;
    bool valid = true;
    if (duckdb_prepare(con, "SELECT TRY_CAST(CAST(? AS VARCHAR) AS TIMESTAMPTZ) IS NOT NULL", &stmt) !=
        DuckDBError) {
        duckdb_bind_varchar(stmt, 1, params[0]);
        if (duckdb_execute_prepared(stmt, &res) != DuckDBError) {
            valid = duckdb_value_boolean(&res, 0, 0);
            duckdb_destroy_result(&res);
        }
    }
    duckdb_destroy_prepare(&stmt);
    if (!valid)
        invalid(q, "datetime_parsing", key, "Input should be a valid datetime", value);
}

static void build_where(http_request *req, duckdb_connection con, const rel_columns *cols, page_query *q,
                        where_clause *w)
{
    for (size_t i = 0; i < sizeof eq_filters / sizeof eq_filters[0]; i++) {
        const char *v = arg(req, eq_filters[i]);
        if (v == NULL || v[0] == '\0' || column_index(cols, eq_filters[i]) < 0)
            continue;
        where_and(w);
        text_col(&w->sql, eq_filters[i]);
        ds_buf_append(&w->sql, " = ?");
        w->params[w->n++] = v;
    }
    const char *cat = arg(req, "metric_category");
    if (cat != NULL && cat[0] != '\0' && column_index(cols, "metric_category") >= 0) {
        where_and(w);
        ds_buf_append(&w->sql, "(lower(");
        text_col(&w->sql, "metric_category");
        ds_buf_append(&w->sql, ") = lower(?)");
        /* AXIS stores a score metric's category as NULL as often as SCORE */
        if (strcasecmp(cat, "SCORE") == 0)
            ds_buf_append(&w->sql, " OR \"metric_category\" IS NULL");
        ds_buf_append(&w->sql, ")");
        w->params[w->n++] = cat;
    }
    static const char *const bounds[] = {"time_start", "time_end"};
    for (size_t i = 0; i < 2; i++) {
        const char *v = arg(req, bounds[i]);
        int idx = column_index(cols, "timestamp");
        if (v == NULL || v[0] == '\0')
            continue;
        if (idx >= 0 && is_time(cols->types[idx]))
            check_time(con, q, bounds[i], v);
        if (idx < 0)
            continue;
        where_and(w);
        ds_buf_append(&w->sql, i == 0 ? "\"timestamp\" >= ?" : "\"timestamp\" <= ?");
        w->params[w->n++] = v;
    }
    const char *search = arg(req, "search");
    bool any = false;
    for (size_t i = 0;
         search != NULL && search[0] != '\0' && i < sizeof search_columns / sizeof search_columns[0]; i++) {
        if (column_index(cols, search_columns[i]) < 0)
            continue;
        /* A substring in any case, as ILIKE '%text%' with the text's % and
         * _ escaped, but without a pattern: DuckDB runs contains() on the
         * lowered text 3-4x faster than ILIKE ... ESCAPE. */
        if (!any)
            where_and(w);
        ds_buf_append(&w->sql, any ? " OR contains(lower(" : "(contains(lower(");
        text_col(&w->sql, search_columns[i]);
        ds_buf_append(&w->sql, "), lower(?))");
        w->params[w->n++] = search;
        any = true;
    }
    if (any)
        ds_buf_append(&w->sql, ")");
}

/* The ORDER BY: sort_by first when it names a column, then every column
 * as the tie-breaker, so rows equal on sort_by keep one order across
 * pages. */
static void append_order(ds_buf *b, const rel_columns *cols, const char *sort_by, bool desc)
{
    ds_buf_append(b, " ORDER BY ");
    if (sort_by != NULL && column_index(cols, sort_by) >= 0) {
        ds_buf_append_ident(b, sort_by);
        ds_buf_append(b, desc ? " DESC NULLS LAST, " : " ASC NULLS LAST, ");
    }
    for (size_t i = 0; i < cols->n; i++) {
        ds_buf_append(b, i ? ", " : "");
        ds_buf_append_ident(b, cols->names[i]);
        ds_buf_append(b, " ASC NULLS LAST");
    }
}

/* One column of the select list; a type the C API cannot print is read
 * as DuckDB's text of it. */
static void append_column(ds_buf *b, const rel_columns *cols, size_t i, bool first)
{
    ds_buf_append(b, first ? "" : ", ");
    if (store_json_native(cols->types[i])) {
        ds_buf_append_ident(b, cols->names[i]);
        return;
    }
    ds_buf_append(b, "CAST(");
    ds_buf_append_ident(b, cols->names[i]);
    ds_buf_append(b, " AS VARCHAR) AS ");
    ds_buf_append_ident(b, cols->names[i]);
}

/* The select list: the requested columns the relation has, in the order
 * asked (each once), or every column. */
static void append_select(ds_buf *b, const rel_columns *cols, const char *wanted)
{
    bool *taken = calloc(cols->n ? cols->n : 1, sizeof *taken);
    bool listed = false;
    ds_buf_append(b, "SELECT ");
    for (const char *p = wanted; taken != NULL && p != NULL && *p;) {
        size_t len = strcspn(p, ",");
        const char *s = p, *e = p + len;
        while (s < e && *s == ' ')
            s++;
        while (e > s && e[-1] == ' ')
            e--;
        for (size_t i = 0; i < cols->n; i++)
            if (!taken[i] && strlen(cols->names[i]) == (size_t)(e - s) &&
                strncmp(cols->names[i], s, (size_t)(e - s)) == 0) {
                taken[i] = true;
                append_column(b, cols, i, !listed);
                listed = true;
            }
        p += len + (p[len] == ',');
    }
    if (taken == NULL)
        b->failed = true;
    free(taken);
    for (size_t i = 0; !listed && i < cols->n; i++)
        append_column(b, cols, i, i == 0);
}

static bool run_params(duckdb_connection con, const char *sql, const where_clause *w, duckdb_result *res,
                       ds_error *err)
{
    if (sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    duckdb_prepared_statement stmt;
    if (duckdb_prepare(con, sql, &stmt) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s", duckdb_prepare_error(stmt));
        duckdb_destroy_prepare(&stmt);
        return false;
    }
    for (size_t i = 0; i < w->n; i++)
        duckdb_bind_varchar(stmt, (idx_t)(i + 1), w->params[i]);
    bool ok = duckdb_execute_prepared(stmt, res) != DuckDBError;
    if (!ok) {
        ds_error_set(err, DS_ERR_STORE, "DuckDB: %s", duckdb_result_error(res));
        duckdb_destroy_result(res);
    }
    duckdb_destroy_prepare(&stmt);
    return ok;
}

/* The page's rows as objects, and the total. */
static bool read_page(http_request *req, duckdb_connection con, const char *relation, const rel_columns *cols,
                      const page_query *q, const where_clause *w, json_t *data, int64_t *total, ds_error *err)
{
    ds_buf count = DS_BUF_INIT;
    ds_buf_append(&count, "SELECT count(*) FROM ");
    ds_buf_append_ident(&count, relation);
    ds_buf_append(&count, ds_buf_str(&w->sql) ? ds_buf_str(&w->sql) : "");
    char *sql = ds_buf_take(&count);
    duckdb_result res;
    bool ok = run_params(con, sql, w, &res, err);
    free(sql);
    if (!ok)
        return false;
    *total = duckdb_value_int64(&res, 0, 0);
    duckdb_destroy_result(&res);

    ds_buf b = DS_BUF_INIT;
    append_select(&b, cols, arg(req, "columns"));
    ds_buf_append(&b, " FROM ");
    ds_buf_append_ident(&b, relation);
    ds_buf_append(&b, ds_buf_str(&w->sql) ? ds_buf_str(&w->sql) : "");
    append_order(&b, cols, arg(req, "sort_by"), q->desc);
    ds_buf_appendf(&b, " LIMIT %lld OFFSET %lld", q->page_size, (q->page - 1) * q->page_size);
    sql = ds_buf_take(&b);
    ok = run_params(con, sql, w, &res, err);
    free(sql);
    if (!ok)
        return false;
    idx_t ncols = duckdb_column_count(&res);
    for (idx_t r = 0; r < duckdb_row_count(&res); r++) {
        json_t *row = json_object();
        for (idx_t c = 0; row != NULL && c < ncols; c++)
            json_object_set_new(row, duckdb_column_name(&res, c), store_value_json(&res, c, r));
        json_array_append_new(data, row);
    }
    duckdb_destroy_result(&res);
    return true;
}

static enum MHD_Result send_invalid(http_request *req, page_query *q)
{
    json_t *first = json_array_get(q->errors, 0);
    json_t *doc = json_pack(
        "{s:b,s:o,s:O}", "success", 0, "error",
        http_json_stringf("%s: %s", json_string_value(json_array_get(json_object_get(first, "loc"), 1)),
                          json_string_value(json_object_get(first, "msg"))),
        "detail", q->errors);
    return http_send_json(req, MHD_HTTP_UNPROCESSABLE_CONTENT, doc);
}

static enum MHD_Result handle_data(api_ctx *a, http_request *req, const char *name)
{
    char source[CFG_TABLE_NAME_CAP], relation[CFG_TABLE_NAME_CAP];
    if (!find_source(a, name, source, relation))
        return no_dataset(req, name);
    page_query q = {.errors = json_array(), .desc = true};
    if (q.errors == NULL)
        return http_send_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    q.page = int_param(req, &q, "page", 1, INT32_MAX, 1);
    q.page_size = int_param(req, &q, "page_size", 1, PAGE_SIZE_MAX, PAGE_SIZE_DEFAULT);
    const char *dir = arg(req, "sort_dir");
    if (dir != NULL && strcmp(dir, "asc") != 0 && strcmp(dir, "desc") != 0)
        invalid(&q, "string_pattern_mismatch", "sort_dir", "String should match pattern '^(asc|desc)$'", dir);
    q.desc = dir == NULL || strcmp(dir, "desc") == 0;
    enum MHD_Result ret;
    if (a->st == NULL) {
        json_decref(q.errors);
        return http_send_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "the DuckDB file is not open");
    }
    duckdb_connection con;
    ds_error err;
    if (!store_borrow(a->st, &con, &err)) {
        json_decref(q.errors);
        return http_send_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, err.msg);
    }
    /* The count and the page from one snapshot. */
    bool ok = store_exec(con, "BEGIN TRANSACTION", &err);
    rel_columns cols;
    bool missing = false;
    ok = ok && read_columns(con, relation, &cols, &missing, &err);
    where_clause w = {.sql = DS_BUF_INIT};
    json_t *data = json_array();
    int64_t total = 0;
    if (ok) {
        build_where(req, con, &cols, &q, &w);
        if (json_array_size(q.errors) == 0)
            ok = read_page(req, con, relation, &cols, &q, &w, data, &total, &err);
        rel_columns_free(&cols);
    }
    store_exec(con, "ROLLBACK", NULL);
    store_release(a->st, &con);
    ds_buf_free(&w.sql);
    if (json_array_size(q.errors) > 0) {
        json_decref(data);
        ret = send_invalid(req, &q);
    } else if (missing) {
        json_decref(data);
        ret = http_send_errorf(req, MHD_HTTP_NOT_FOUND, "%s has not been synced yet", name);
    } else if (!ok) {
        json_decref(data);
        ret = http_send_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, err.msg);
    } else {
        ret = http_send_json(req, MHD_HTTP_OK,
                             json_pack("{s:b,s:o,s:I,s:I,s:I}", "success", 1, "data", data, "total",
                                       (json_int_t)total, "page", (json_int_t)q.page, "page_size",
                                       (json_int_t)q.page_size));
    }
    json_decref(q.errors);
    return ret;
}

bool axis_route(api_ctx *a, http_request *req, const char *url, bool get, enum MHD_Result *ret)
{
    static const char meta[] = "/api/store/metadata/", data[] = "/api/store/data/";
    bool is_meta = strncmp(url, meta, sizeof meta - 1) == 0;
    if (!is_meta && strncmp(url, data, sizeof data - 1) != 0)
        return false;
    const char *name = url + (is_meta ? sizeof meta : sizeof data) - 1;
    size_t len = strlen(name);
    if (len == 0 || len >= CFG_TABLE_NAME_CAP || strchr(name, '/') != NULL)
        *ret = http_send_error(req, MHD_HTTP_NOT_FOUND, "no such endpoint; see docs/api.md");
    else if (!get)
        *ret = http_send_not_allowed(
            req, "GET, HEAD", is_meta ? "use GET for /api/store/metadata" : "use GET for /api/store/data");
    else
        *ret = is_meta ? handle_metadata(a, req, name) : handle_data(a, req, name);
    return true;
}
