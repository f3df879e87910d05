/* Implementation of the test helpers declared in testlib.h. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/strbuf.h"

static char *vformat(const char *fmt, va_list ap)
{
    char *out = NULL;
    if (vasprintf(&out, fmt, ap) < 0)
        fail_msg("out of memory");
    return out;
}

const char *tl_pg_base_conninfo(void)
{
    const char *conninfo = getenv("DUCKSTORE_TEST_PG");
    if (conninfo == NULL || conninfo[0] == '\0') {
        fprintf(stderr, "DUCKSTORE_TEST_PG is not set: run tests through `make test` "
                        "or scripts/with-test-pg.sh\n");
        exit(1);
    }
    return conninfo;
}

const char *tl_pg_fresh_db(const char *prefix)
{
    static char conninfo[1024];
    static unsigned counter;
    char name[64];
    snprintf(name, sizeof name, "%s_%d_%u_%ld", prefix, (int)getpid(), counter++, (long)time(NULL));
    PGconn *admin = tl_pg_connect(tl_pg_base_conninfo());
    tl_pg_exec(admin, "CREATE DATABASE \"%s\"", name);
    PQfinish(admin);
    snprintf(conninfo, sizeof conninfo, "%s dbname=%s", tl_pg_base_conninfo(), name);
    return conninfo;
}

PGconn *tl_pg_connect(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK)
        fail_msg("cannot connect to the test PostgreSQL: %s", PQerrorMessage(conn));
    return conn;
}

static PGresult *pg_run(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("PostgreSQL error: %s\nSQL: %s", PQerrorMessage(conn), sql);
    return res;
}

void tl_pg_exec(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    PQclear(pg_run(conn, sql));
    free(sql);
}

char *tl_pg_scalar(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    PGresult *res = pg_run(conn, sql);
    char *out = NULL;
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        out = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    free(sql);
    return out;
}

bool tl_rss_checked(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return false;
#else
    return true;
#endif
#else
    return true;
#endif
}

char *tl_mkdtemp(void)
{
    const char *base = getenv("TMPDIR");
    char *path = NULL;
    if (asprintf(&path, "%s/duckstore-test.XXXXXX", base ? base : "/tmp") < 0 || mkdtemp(path) == NULL)
        fail_msg("cannot create a scratch directory");
    return path;
}

void tl_rmtree(const char *path)
{
    char *out = NULL;
    tl_run(&out, "rm -rf '%s'", path);
    free(out);
}

static duckdb_result duck_run(duckdb_connection con, const char *sql)
{
    duckdb_result res;
    if (duckdb_query(con, sql, &res) == DuckDBError) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        fail_msg("DuckDB error: %s\nSQL: %s", msg, sql);
    }
    return res;
}

void tl_duck_exec(duckdb_connection con, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    duckdb_result res = duck_run(con, sql);
    duckdb_destroy_result(&res);
    free(sql);
}

char *tl_duck_scalar(duckdb_connection con, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *inner = vformat(fmt, ap);
    va_end(ap);
    char *sql = NULL;
    if (asprintf(&sql, "SELECT COLUMNS(*)::VARCHAR FROM (%s)", inner) < 0)
        fail_msg("out of memory");
    free(inner);
    duckdb_result res = duck_run(con, sql);
    char *out = NULL;
    if (duckdb_row_count(&res) > 0 && !duckdb_value_is_null(&res, 0, 0)) {
        char *v = duckdb_value_varchar(&res, 0, 0);
        out = strdup(v);
        duckdb_free(v);
    }
    duckdb_destroy_result(&res);
    free(sql);
    return out;
}

int64_t tl_duck_int(duckdb_connection con, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    duckdb_result res = duck_run(con, sql);
    if (duckdb_row_count(&res) < 1)
        fail_msg("no row from: %s", sql);
    int64_t v = duckdb_value_int64(&res, 0, 0);
    duckdb_destroy_result(&res);
    free(sql);
    return v;
}

void tl_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        fail_msg("cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

int tl_run(char **output, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd = vformat(fmt, ap);
    va_end(ap);
    char *full = NULL;
    if (asprintf(&full, "(%s) 2>&1", cmd) < 0)
        fail_msg("out of memory");
    FILE *p = popen(full, "r");
    if (p == NULL)
        fail_msg("cannot run: %s", cmd);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 1024) {
            cap *= 2;
            char *grown = realloc(buf, cap);
            if (grown == NULL)
                fail_msg("out of memory");
            buf = grown;
        }
    }
    buf[len] = '\0';
    int status = pclose(p);
    free(cmd);
    free(full);
    if (output)
        *output = buf;
    else
        free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- sync tests ------------------------------------------------------- */

void tl_write_filef(const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = vformat(fmt, ap);
    va_end(ap);
    tl_write_file(path, text);
    free(text);
}

void tl_cfg_load(const char *dir, cfg_config *cfg)
{
    ds_error err;
    memset(&err, 0, sizeof err);
    if (!cfg_load_dir(dir, cfg, &err))
        fail_msg("cannot load the config in %s: %s", dir, err.msg);
}

void tl_assert_contains_at(const char *haystack, const char *needle, const char *file, int line)
{
    if (haystack == NULL || strstr(haystack, needle) == NULL)
        fail_msg("%s:%d: \"%s\" does not contain \"%s\"", file, line, haystack ? haystack : "(null)", needle);
}

const cfg_source *tl_source(const cfg_config *cfg, const char *source)
{
    const cfg_source *src = cfg_find_source(cfg, source);
    if (src == NULL)
        fail_msg("no source %s in the config", source);
    return src;
}

void tl_sync_ok(store *st, const cfg_config *cfg, const char *source, bool force_full, sync_report *report)
{
    sync_options opt = {.force_full = force_full};
    ds_error err;
    memset(&err, 0, sizeof err);
    if (!sync_source(st, cfg, tl_source(cfg, source), &opt, report, &err))
        fail_msg("sync of %s failed: %s", source, err.msg);
}

json_t *tl_sync_status(store *st, const cfg_config *cfg, const char *source)
{
    ds_error err;
    memset(&err, 0, sizeof err);
    json_t *doc = sync_status_json(st, tl_source(cfg, source), &err);
    if (doc == NULL)
        fail_msg("no status for %s: %s", source, err.msg);
    return doc;
}

const char *tl_json_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

duckdb_connection tl_store_connect(store *st)
{
    duckdb_connection con;
    ds_error err;
    if (!store_connect(st, &con, &err))
        fail_msg("%s", err.msg);
    return con;
}

/* The row-text expression of a checksum spec for one engine: the columns'
 * canonical texts joined by '|', NULL as '∅'. */
static char *row_text_expr(const char *spec, bool pg)
{
    char *copy = strdup(spec), *save = NULL, *out = strdup("''");
    for (char *col = strtok_r(copy, ",", &save); col; col = strtok_r(NULL, ",", &save)) {
        char *kind = strchr(col, ':');
        if (kind)
            *kind++ = '\0';
        char *value = NULL, *joined = NULL;
        int n;
        if (kind && strcmp(kind, "ts") == 0)
            n = asprintf(&value,
                         pg ? "((extract(epoch FROM \"%s\") * 1000000)::bigint)::text"
                            : "epoch_us(\"%s\")::VARCHAR",
                         col);
        else if (kind && strcmp(kind, "date") == 0)
            n = asprintf(&value,
                         pg ? "(\"%s\" - date '1970-01-01')::text" : "(\"%s\" - DATE '1970-01-01')::VARCHAR",
                         col);
        else
            n = asprintf(&value, pg ? "\"%s\"::text" : "\"%s\"::VARCHAR", col);
        if (n < 0 || asprintf(&joined, "%s || '|' || coalesce(%s, '∅')", out, value) < 0)
            fail_msg("out of memory");
        free(value);
        free(out);
        out = joined;
    }
    free(copy);
    return out;
}

char *tl_pg_checksum(PGconn *conn, const char *relation, const char *spec)
{
    char *expr = row_text_expr(spec, true);
    char *out =
        tl_pg_scalar(conn,
                     "SELECT 'rows=' || count(*) || ' md5=' || md5(coalesce(string_agg(h, '' ORDER BY h "
                     "COLLATE \"C\"), '')) FROM (SELECT md5(%s) AS h FROM %s) AS _c",
                     expr, relation);
    free(expr);
    return out;
}

char *tl_duck_checksum(duckdb_connection con, const char *relation, const char *spec)
{
    char *expr = row_text_expr(spec, false);
    char *out =
        tl_duck_scalar(con,
                       "SELECT 'rows=' || count(*) || ' md5=' || md5(coalesce(string_agg(h, '' ORDER BY h), "
                       "'')) FROM (SELECT md5(%s) AS h FROM %s) AS _c",
                       expr, relation);
    free(expr);
    return out;
}

static void env_write_store(tl_env *e, const char *store_yaml)
{
    char path[700];
    snprintf(path, sizeof path, "%s/duckdb.yaml", e->dir);
    tl_write_filef(path, "duckdb:\n  path: %s\n%s", e->store_path, store_yaml);
}

static void env_reload(tl_env *e)
{
    if (e->cfg_loaded)
        cfg_free(&e->cfg);
    tl_cfg_load(e->dir, &e->cfg);
    e->cfg_loaded = true;
}

void tl_env_open(tl_env *e, const char *conninfo, const char *schema, const char *store_yaml)
{
    memset(e, 0, sizeof *e);
    e->dir = tl_mkdtemp();
    snprintf(e->store_path, sizeof e->store_path, "%s/store.duckdb", e->dir);
    PGconn *admin = tl_pg_connect(conninfo);
    tl_pg_exec(admin, "CREATE SCHEMA \"%s\"", schema);
    PQfinish(admin);
    snprintf(e->url, sizeof e->url, "%s options='-c search_path=%s'", conninfo, schema);
    e->pg = tl_pg_connect(e->url);
    env_write_store(e, store_yaml);
    ds_error err;
    if (!store_open(e->store_path, &e->st, &err))
        fail_msg("%s", err.msg);
    e->con = tl_store_connect(e->st);
}

void tl_env_store(tl_env *e, const char *store_yaml)
{
    env_write_store(e, store_yaml);
    env_reload(e);
}

void tl_env_source(tl_env *e, const char *name, const char *body_fmt, ...)
{
    va_list ap;
    va_start(ap, body_fmt);
    char *body = vformat(body_fmt, ap);
    va_end(ap);
    char path[700];
    snprintf(path, sizeof path, "%s/%s_db.yaml", e->dir, name);
    tl_write_filef(path, "%s_db:\n  url: \"%s\"\n%s", name, e->url, body);
    free(body);
    env_reload(e);
}

void tl_env_close(tl_env *e)
{
    if (e->con)
        duckdb_disconnect(&e->con);
    store_close(e->st);
    if (e->cfg_loaded)
        cfg_free(&e->cfg);
    PQfinish(e->pg);
    tl_rmtree(e->dir);
    free(e->dir);
    memset(e, 0, sizeof *e);
}

void tl_llm_create(PGconn *conn)
{
    tl_pg_exec(conn,
               "CREATE TABLE llm_traces (id bigserial PRIMARY KEY, trace_id uuid NOT NULL, "
               "\"timestamp\" timestamptz NOT NULL, prompt text, completion text, deployment_env text, "
               "service_name text, component_name text, response_time_ms numeric(10,3), metadata jsonb, "
               "created_at timestamptz NOT NULL DEFAULT clock_timestamp())");
    tl_pg_exec(
        conn, "CREATE TABLE llm_metric_results (id bigserial PRIMARY KEY, trace_id uuid NOT NULL, "
              "metric_name text NOT NULL, metric_value numeric(6,4), metric_category text, explanation text, "
              "details jsonb, created_at timestamptz NOT NULL DEFAULT clock_timestamp())");
}

void tl_llm_add(PGconn *conn, int from, int to, int metrics)
{
    tl_pg_exec(
        conn,
        "INSERT INTO llm_traces (trace_id, \"timestamp\", prompt, completion, deployment_env, service_name, "
        "component_name, response_time_ms, metadata) "
        "SELECT md5('trace' || i)::uuid, timestamptz '2026-02-13 10:00:00+00' + i * interval '1.5 s', "
        "'prompt ' || i, CASE WHEN i %% 7 = 0 THEN NULL ELSE 'answer ' || i || ' – café ☕' END, "
        "(ARRAY['prod', 'staging'])[1 + i %% 2], 'svc-' || (i %% 3), 'retriever', "
        "round(i * 1.7 %% 5000, 3), jsonb_build_object('i', i, 'tags', jsonb_build_array('t' || i %% 4, "
        "i %% 2 = 0), 'score', i / 8.0) FROM generate_series(%d, %d) AS i",
        from, to);
    tl_pg_exec(
        conn,
        "INSERT INTO llm_metric_results (trace_id, metric_name, metric_value, metric_category, explanation, "
        "details) SELECT md5('trace' || i)::uuid, 'metric_' || m, round(((i * 37 + m * 11) %% 10000) / "
        "10000.0, 4), (ARRAY['quality', 'safety'])[1 + m %% 2], 'because ' || i || '/' || m, "
        "CASE WHEN (i + m) %% 5 = 0 THEN NULL ELSE jsonb_build_object('m', m, 'ok', (i + m) %% 3 = 0) END "
        "FROM generate_series(%d, %d) AS i, generate_series(1, %d) AS m ORDER BY i, m",
        from, to, metrics);
}

void tl_llm_assert_synced(tl_env *e, const char *name)
{
    static const struct {
        const char *suffix, *relation, *spec;
    } parts[] = {
        {"dataset", "(" TL_LLM_DATASET_QUERY ") AS q", TL_LLM_DATASET_SPEC},
        {"results", "(" TL_LLM_RESULTS_QUERY ") AS q", TL_LLM_RESULTS_SPEC},
        {"data", TL_LLM_VIEW_RELATION, TL_LLM_VIEW_SPEC},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        char table[200];
        snprintf(table, sizeof table, "%s_%s", name, parts[i].suffix);
        char *want = tl_pg_checksum(e->pg, parts[i].relation, parts[i].spec);
        char *got = tl_duck_checksum(e->con, table, parts[i].spec);
        if (strcmp(want, got) != 0)
            fail_msg("%s differs from PostgreSQL: DuckDB %s, PostgreSQL %s", table, got, want);
        free(want);
        free(got);
    }
}

int64_t tl_pg_int(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    char *text = tl_pg_scalar(conn, "%s", sql);
    if (text == NULL)
        fail_msg("NULL from: %s", sql);
    int64_t v = strtoll(text, NULL, 10);
    free(text);
    free(sql);
    return v;
}

static char **kept;
static size_t nkept, kept_cap;

char *tl_keep(char *s)
{
    assert_non_null(s);
    if (nkept == kept_cap) {
        kept_cap = kept_cap ? 2 * kept_cap : 256;
        kept = realloc(kept, kept_cap * sizeof *kept);
        assert_non_null(kept);
    }
    return kept[nkept++] = s;
}

char *tl_keepf(const char *fmt, ...)
{
    ds_buf b = DS_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    ds_buf_vappendf(&b, fmt, ap);
    va_end(ap);
    return tl_keep(ds_buf_take(&b));
}

char *tl_keep_ident(const char *name)
{
    return tl_keep(ds_quote_ident(name));
}

void tl_free_kept(void)
{
    for (size_t i = 0; i < nkept; i++)
        free(kept[i]);
    free(kept);
    kept = NULL;
    nkept = kept_cap = 0;
}

int64_t tl_duck_at_max(duckdb_connection con, const char *table, const char *col)
{
    char *t = tl_keep_ident(table), *c = tl_keep_ident(col);
    return tl_duck_int(con, "SELECT count(*) FROM %s WHERE %s = (SELECT max(%s) FROM %s)", t, c, c, t);
}
