/* A protocol session (session.h): the message loop, the simple and the
 * extended query protocols, session settings and transactions, COPY TO
 * STDOUT and errors. Every statement DuckDB runs is a read in a READ ONLY
 * transaction; the check is /api/store/query's (query_refused_kind). */
#include "pgwire/session.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/strbuf.h"
#include "common/version.h"
#include "pgwire/catalog.h"
#include "pgwire/pgvalues.h"
#include "server/query.h"

/* Output beyond this is sent while a result streams. */
#define FLUSH_BYTES 65536

typedef enum stmt_kind {
    K_EMPTY,
    K_DUCK, /* DuckDB runs it */
    K_SET,
    K_RESET,
    K_SHOW,
    K_BEGIN,
    K_COMMIT,
    K_ROLLBACK,
    K_DISCARD,
    K_COPY,
    K_COPY_IN, /* COPY ... FROM: a write */
    K_NOOP,    /* accepted and ignored: LISTEN, UNLISTEN, DEALLOCATE ALL... */
} stmt_kind;

/* A statement, classified once (simple query) or kept (Parse). */
typedef struct pstmt {
    char *name; /* "" for the unnamed one */
    char *sql;
    stmt_kind kind;
    char *tag;   /* CommandComplete of the kinds duckstore answers itself */
    char *param; /* SET/RESET/SHOW: the setting's name; COPY: the query */
    char *value; /* SET: the value; NULL for DEFAULT */
    bool copy_csv, copy_header;
    duckdb_prepared_statement ps;
    uint32_t *param_oids;
    int n_param_oids;
    struct pstmt *next;
} pstmt;

typedef struct portal {
    char *name;
    pstmt *stmt;
    duckdb_pending_result pending;
    duckdb_result res;
    bool started, done, has_result;
    duckdb_data_chunk chunk;
    idx_t chunk_row, chunk_size;
    pgv_column **cols;
    duckdb_vector *vecs; /* the chunk's column vectors, looked up once per chunk */
    idx_t n_cols;
    int16_t *formats; /* result formats per column */
    int64_t rows;
    struct portal *next;
} portal;

typedef struct setting {
    char *name, *value;
    struct setting *next;
} setting;

typedef struct session {
    pgm_conn *c;
    pgs_slot *slot;
    const pgs_options *opt;
    duckdb_connection con;
    /* BEGIN TRANSACTION READ ONLY and ROLLBACK, prepared once: parsing
     * them for every statement cost more than a small query itself. */
    duckdb_prepared_statement begin_ro, rollback;
    setting *settings;
    pstmt *stmts;
    portal *portals;
    bool in_block; /* BEGIN ... COMMIT */
    bool failed;   /* an error inside the block */
    bool in_tx;    /* DuckDB's transaction is open */
    bool skip_to_sync;
    bool terminate;
    bool errored; /* an ErrorResponse went out for the current message */
    char timezone[128];
    int extra_float_digits;
    ds_buf tmp;
} session;

/* Settings a client may read back (SHOW, current_setting) and their
 * startup values; SET of any other name is kept as given. */
static const char *const defaults[][2] = {
    {"application_name", ""},
    {"client_encoding", "UTF8"},
    {"datestyle", "ISO, MDY"},
    {"default_transaction_read_only", "on"},
    {"extra_float_digits", "1"},
    {"in_hot_standby", "off"},
    {"integer_datetimes", "on"},
    {"intervalstyle", "postgres"},
    {"is_superuser", "off"},
    {"max_identifier_length", "63"},
    {"search_path", "\"$user\", public"},
    {"server_encoding", "UTF8"},
    {"server_version", "15.0 (duckstore " DS_VERSION ")"},
    {"server_version_num", "150000"},
    {"standard_conforming_strings", "on"},
    {"statement_timeout", "0"},
    {"timezone", "UTC"},
    {"transaction_isolation", "repeatable read"},
    {"transaction_read_only", "on"},
};

/* The names PostgreSQL reports in ParameterStatus, spelt as it does. */
static const char *const reported[] = {"application_name",
                                       "client_encoding",
                                       "DateStyle",
                                       "default_transaction_read_only",
                                       "in_hot_standby",
                                       "integer_datetimes",
                                       "IntervalStyle",
                                       "is_superuser",
                                       "server_encoding",
                                       "server_version",
                                       "session_authorization",
                                       "standard_conforming_strings",
                                       "TimeZone"};

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static setting *find_setting(session *s, const char *name)
{
    for (setting *p = s->settings; p != NULL; p = p->next)
        if (strcasecmp(p->name, name) == 0)
            return p;
    return NULL;
}

static const char *get_setting(session *s, const char *name)
{
    setting *p = find_setting(s, name);
    if (p != NULL)
        return p->value;
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (strcasecmp(defaults[i][0], name) == 0)
            return defaults[i][1];
    return NULL;
}

static bool put_setting(session *s, const char *name, const char *value)
{
    setting *p = find_setting(s, name);
    char *v = strdup(value);
    if (v == NULL)
        return false;
    if (p == NULL) {
        p = calloc(1, sizeof *p);
        if (p == NULL || (p->name = strdup(name)) == NULL) {
            free(p);
            free(v);
            return false;
        }
        lower(p->name);
        p->next = s->settings;
        s->settings = p;
    } else {
        free(p->value);
    }
    p->value = v;
    return true;
}

static void parameter_status(session *s, const char *name, const char *value)
{
    pgm_begin(s->c, 'S');
    pgm_put_str(&s->c->out, name);
    pgm_put_str(&s->c->out, value);
    pgm_end(s->c);
}

/* ---- errors ---- */

static void send_error(session *s, const char *sqlstate, const char *msg, int position)
{
    pgm_error(s->c, 'E', "ERROR", sqlstate, msg, position);
    s->errored = true;
    if (s->in_block)
        s->failed = true;
}

static void send_errorf(session *s, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_errorf(session *s, const char *sqlstate, const char *fmt, ...)
{
    ds_buf m = DS_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    ds_buf_vappendf(&m, fmt, ap);
    va_end(ap);
    send_error(s, sqlstate, ds_buf_str(&m) ? ds_buf_str(&m) : "out of memory", 0);
    ds_buf_free(&m);
}

/* Characters (not bytes) before byte offset at of text: PostgreSQL's
 * positions count characters from 1. */
static int char_position(const char *text, size_t at)
{
    int n = 1;
    for (size_t i = 0; i < at && text[i]; i++)
        if (((unsigned char)text[i] & 0xC0) != 0x80)
            n++;
    return n;
}

/* A DuckDB error (errors_as_json is on) as an ErrorResponse: the SQLSTATE
 * from its exception type, its message, and its position in the statement
 * (offset: the statement's place in the client's text). */
static void duck_error(session *s, const char *raw, const char *text, size_t offset)
{
    pgs_slot *sl = s->slot;
    pthread_mutex_lock(&sl->lock);
    bool cancelled = sl->cancelled, timed_out = sl->timed_out, down = sl->shutting_down;
    pthread_mutex_unlock(&sl->lock);
    if (raw == NULL)
        raw = "unknown DuckDB error";
    const char *brace = strchr(raw, '{');
    json_t *doc = brace ? json_loads(brace, 0, NULL) : NULL;
    const char *type = doc ? json_string_value(json_object_get(doc, "exception_type")) : NULL;
    const char *msg = doc ? json_string_value(json_object_get(doc, "exception_message")) : NULL;
    const char *subtype = doc ? json_string_value(json_object_get(doc, "error_subtype")) : NULL;
    const char *pos = doc ? json_string_value(json_object_get(doc, "position")) : NULL;
    const char *what = doc ? json_string_value(json_object_get(doc, "type")) : NULL;
    if (type == NULL)
        type = "";
    if (msg == NULL)
        msg = raw;
    const char *state = "XX000";
    if (strcasecmp(type, "Interrupt") == 0 || strstr(msg, "Interrupted") != NULL) {
        if (down) {
            pgm_error(s->c, 'E', "FATAL", "57P01", "terminating connection due to administrator command", 0);
            s->terminate = true;
            json_decref(doc);
            return;
        }
        state = "57014";
        msg = timed_out   ? "canceling statement due to statement timeout"
              : cancelled ? "canceling statement due to user request"
                          : "canceling statement";
    } else if (strcmp(type, "Parser") == 0 || strcmp(type, "Syntax") == 0) {
        state = "42601";
    } else if (strcmp(type, "Catalog") == 0) {
        if (what != NULL && strcmp(what, "Table") == 0)
            state = "42P01";
        else if (what != NULL && strstr(what, "Function") != NULL)
            state = "42883";
        else if (what != NULL && strcmp(what, "Schema") == 0)
            state = "3F000";
        else
            state = "42704";
    } else if (strcmp(type, "Binder") == 0) {
        state = subtype != NULL && strcmp(subtype, "COLUMN_NOT_FOUND") == 0 ? "42703" : "42803";
        if (strstr(msg, "Referenced column") != NULL)
            state = "42703";
        else if (strstr(msg, "No function matches") != NULL)
            state = "42883";
    } else if (strcmp(type, "Conversion") == 0) {
        state = strstr(msg, "out of range") != NULL ? "22003" : "22P02";
    } else if (strcmp(type, "Out of Range") == 0) {
        state = "22003";
    } else if (strcmp(type, "Invalid Input") == 0) {
        state = "22023";
    } else if (strcmp(type, "Division By Zero") == 0 || strstr(msg, "ivision by zero") != NULL) {
        state = "22012";
    } else if (strcmp(type, "Out of Memory") == 0) {
        state = "53200";
        /* DuckDB's text advises a SET that a session cannot make: name
         * duckstore's key instead. */
        msg = "the query ran out of the store's memory (memory_limit plus read_memory_limit in duckdb.yaml, "
              "shared by the syncs and every reader) and was stopped; make it cheaper (filter or aggregate "
              "earlier, fewer columns) or raise read_memory_limit";
    } else if (strcmp(type, "Permission") == 0) {
        state = "42501";
    } else if (strcmp(type, "Not implemented") == 0) {
        state = "0A000";
    } else if (strcmp(type, "Constraint") == 0) {
        state = "23000";
    } else if (strcmp(type, "Transaction") == 0 || strcmp(type, "TransactionContext") == 0) {
        state = "25000";
    }
    int position = 0;
    if (pos != NULL && text != NULL) {
        long at = strtol(pos, NULL, 10);
        if (at >= 0 && (size_t)at <= strlen(text + offset))
            position = char_position(text, offset + (size_t)at);
    }
    send_error(s, state, msg, position);
    json_decref(doc);
}

/* ---- transactions ---- */

/* Every statement runs in a READ ONLY transaction of DuckDB: one per
 * statement, or the client's BEGIN block. */
static bool tx_open(session *s)
{
    if (s->in_tx)
        return true;
    duckdb_result r;
    bool ok = duckdb_execute_prepared(s->begin_ro, &r) == DuckDBSuccess;
    if (!ok)
        duck_error(s, duckdb_result_error(&r), NULL, 0);
    duckdb_destroy_result(&r);
    if (!ok)
        return false;
    s->in_tx = true;
    return true;
}

static void portals_close(session *s, bool unnamed_only);

static void tx_close(session *s)
{
    if (!s->in_tx)
        return;
    portals_close(s, false);
    duckdb_result r;
    duckdb_execute_prepared(s->rollback, &r); /* a read-only transaction has nothing to commit */
    duckdb_destroy_result(&r);
    s->in_tx = false;
}

/* ---- statement text ---- */

static const char *skip_space(const char *p)
{
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            int depth = 1;
            p += 2;
            while (*p && depth > 0) {
                if (p[0] == '/' && p[1] == '*') {
                    depth++;
                    p += 2;
                } else if (p[0] == '*' && p[1] == '/') {
                    depth--;
                    p += 2;
                } else {
                    p++;
                }
            }
        } else {
            return p;
        }
    }
}

/* The end of the quoted or commented piece starting at p (p itself when
 * none starts there). */
static const char *skip_quoted(const char *text, const char *p)
{
    if (*p == '\'' || *p == '"') {
        char q = *p;
        bool backslash = q == '\'' && p > text && (p[-1] == 'E' || p[-1] == 'e');
        for (p++; *p; p++) {
            if (backslash && *p == '\\' && p[1]) {
                p++;
            } else if (*p == q) {
                if (p[1] == q)
                    p++;
                else
                    return p + 1;
            }
        }
        return p;
    }
    if (*p == '$') {
        const char *t = p + 1;
        while (isalnum((unsigned char)*t) || *t == '_')
            t++;
        if (*t != '$' || isdigit((unsigned char)p[1]))
            return p;
        size_t tag = (size_t)(t - p) + 1;
        const char *end;
        for (end = t + 1; *end; end++)
            if (strncmp(end, p, tag) == 0)
                return end + tag;
        return end;
    }
    if ((p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*'))
        return skip_space(p);
    return p;
}

/* The first word at p (letters and _), lower-cased into w; p after it. */
static const char *word(const char *p, char *w, size_t cap)
{
    p = skip_space(p);
    size_t n = 0;
    while ((isalnum((unsigned char)*p) || *p == '_' || *p == '.') && n + 1 < cap)
        w[n++] = (char)tolower((unsigned char)*p++);
    w[n] = '\0';
    return p;
}

static char *trimmed(const char *p, const char *end)
{
    p = skip_space(p);
    while (end > p && (isspace((unsigned char)end[-1]) || end[-1] == ';'))
        end--;
    return strndup(p, (size_t)(end - p));
}

/* A SET value: 'quoted' unquoted, a list kept as written. */
static char *set_value(const char *p)
{
    p = skip_space(p);
    char *v = trimmed(p, p + strlen(p));
    if (v == NULL)
        return NULL;
    size_t n = strlen(v);
    if (n >= 2 && v[0] == '\'' && v[n - 1] == '\'' && strchr(v + 1, '\'') == v + n - 1) {
        memmove(v, v + 1, n - 2);
        v[n - 2] = '\0';
    }
    return v;
}

/* COPY (query) TO STDOUT [WITH] [(FORMAT csv, HEADER ...)] | [CSV [HEADER]];
 * COPY table [(cols)] TO STDOUT ... reads the table. */
static bool classify_copy(pstmt *st, const char *p)
{
    p = skip_space(p);
    ds_buf q = DS_BUF_INIT;
    const char *after;
    if (*p == '(') {
        int depth = 0;
        const char *start = p + 1;
        for (after = p; *after; after++) {
            const char *e = skip_quoted(st->sql, after);
            if (e != after) {
                after = e - 1;
                continue;
            }
            if (*after == '(')
                depth++;
            else if (*after == ')' && --depth == 0)
                break;
        }
        if (*after != ')')
            return false;
        ds_buf_appendn(&q, start, (size_t)(after - start));
        after++;
    } else {
        const char *start = p;
        for (after = p; *after && !isspace((unsigned char)*after) && *after != '('; after++) {
            const char *e = skip_quoted(st->sql, after);
            if (e != after)
                after = e - 1;
        }
        ds_buf tname = DS_BUF_INIT;
        ds_buf_appendn(&tname, start, (size_t)(after - start));
        const char *cols = "*";
        char *colbuf = NULL;
        const char *r = skip_space(after);
        if (*r == '(') {
            const char *close = strchr(r, ')');
            if (close == NULL) {
                ds_buf_free(&tname);
                return false;
            }
            colbuf = strndup(r + 1, (size_t)(close - r - 1));
            cols = colbuf ? colbuf : "*";
            after = close + 1;
        }
        ds_buf_appendf(&q, "SELECT %s FROM %s", cols, ds_buf_str(&tname) ? ds_buf_str(&tname) : "");
        free(colbuf);
        ds_buf_free(&tname);
    }
    char w[32];
    const char *r = word(after, w, sizeof w);
    if (strcmp(w, "from") == 0) {
        st->kind = K_COPY_IN;
        ds_buf_free(&q);
        return true;
    }
    char w2[32];
    r = word(r, w2, sizeof w2);
    if (strcmp(w, "to") != 0 || strcmp(w2, "stdout") != 0) {
        ds_buf_free(&q);
        return false;
    }
    /* Options: only CSV, HEADER and FORMAT text|csv change anything. */
    for (;;) {
        r = skip_space(r);
        if (*r == '\0' || *r == ';')
            break;
        if (!isalpha((unsigned char)*r)) {
            r++;
            continue;
        }
        r = word(r, w, sizeof w);
        if (strcmp(w, "csv") == 0) {
            st->copy_csv = true;
        } else if (strcmp(w, "binary") == 0) {
            ds_buf_free(&q);
            return false;
        } else if (strcmp(w, "header") == 0) {
            const char *save = r;
            r = word(r, w2, sizeof w2);
            st->copy_header = !(strcmp(w2, "false") == 0 || strcmp(w2, "off") == 0 || strcmp(w2, "0") == 0);
            if (w2[0] == '\0' || st->copy_header)
                r = save;
        }
    }
    st->param = ds_buf_take(&q);
    st->kind = K_COPY;
    return st->param != NULL;
}

/* Sorts a statement into what duckstore answers itself and what DuckDB
 * runs. */
static void classify(pstmt *st)
{
    char w[64], w2[64];
    const char *p = word(st->sql, w, sizeof w);
    st->kind = K_DUCK;
    if (*skip_space(st->sql) == '\0') {
        st->kind = K_EMPTY;
    } else if (strcmp(w, "set") == 0) {
        p = word(p, w2, sizeof w2);
        if (strcmp(w2, "session") == 0 || strcmp(w2, "local") == 0)
            p = word(p, w2, sizeof w2);
        if (strcmp(w2, "characteristics") == 0 || strcmp(w2, "transaction") == 0) {
            st->kind = K_NOOP; /* read only already */
            st->tag = strdup("SET");
            return;
        }
        bool ours = true;
        if (strcmp(w2, "time") == 0) {
            p = word(p, w2, sizeof w2); /* zone */
            st->param = strdup("timezone");
        } else {
            st->param = strdup(w2);
            p = skip_space(p);
            if (strncasecmp(p, "to", 2) == 0 && !isalnum((unsigned char)p[2]))
                p += 2;
            else if (*p == '=')
                p++;
            else
                ours = false; /* DuckDB's SET VARIABLE and the like: refused as writes */
        }
        if (!ours) {
            free(st->param);
            st->param = NULL;
            return;
        }
        st->kind = K_SET;
        st->value = set_value(p);
        if (st->value != NULL && strcasecmp(st->value, "default") == 0) {
            free(st->value);
            st->value = NULL;
        }
        st->tag = strdup("SET");
    } else if (strcmp(w, "reset") == 0) {
        word(p, w2, sizeof w2);
        st->kind = K_RESET;
        st->param = strdup(w2);
        st->tag = strdup("RESET");
    } else if (strcmp(w, "show") == 0) {
        const char *rest = word(p, w2, sizeof w2);
        if (strcmp(w2, "time") == 0) {
            word(rest, w2, sizeof w2);
            strcpy(w2, "timezone");
        } else if (strcmp(w2, "transaction") == 0) { /* SHOW TRANSACTION ISOLATION LEVEL */
            strcpy(w2, "transaction_isolation");
        }
        st->kind = K_SHOW;
        st->param = strdup(w2);
        st->tag = strdup("SHOW");
    } else if (strcmp(w, "begin") == 0 || strcmp(w, "start") == 0) {
        st->kind = K_BEGIN;
        st->tag = strdup("BEGIN");
    } else if (strcmp(w, "commit") == 0 || strcmp(w, "end") == 0) {
        st->kind = K_COMMIT;
        st->tag = strdup("COMMIT");
    } else if (strcmp(w, "rollback") == 0 || strcmp(w, "abort") == 0) {
        st->kind = K_ROLLBACK;
        st->tag = strdup("ROLLBACK");
    } else if (strcmp(w, "discard") == 0) {
        word(p, w2, sizeof w2);
        st->kind = K_DISCARD;
        ds_buf t = DS_BUF_INIT;
        ds_buf_appendf(&t, "DISCARD %s", w2);
        for (char *c = t.data; c && *c; c++)
            *c = (char)toupper((unsigned char)*c);
        st->tag = ds_buf_take(&t);
    } else if (strcmp(w, "listen") == 0 || strcmp(w, "unlisten") == 0) {
        st->kind = K_NOOP;
        st->tag = strdup(w[0] == 'l' ? "LISTEN" : "UNLISTEN");
    } else if (strcmp(w, "copy") == 0) {
        if (!classify_copy(st, p))
            st->kind = K_DUCK; /* DuckDB refuses it: files are not reachable */
    }
}

static void pstmt_free(pstmt *st)
{
    if (st == NULL)
        return;
    duckdb_destroy_prepare(&st->ps);
    free(st->name);
    free(st->sql);
    free(st->tag);
    free(st->param);
    free(st->value);
    free(st->param_oids);
    free(st);
}

static pstmt *pstmt_new(const char *name, const char *sql, size_t len)
{
    pstmt *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    st->name = strdup(name);
    char *given = strndup(sql, len);
    st->sql = given != NULL ? pgc_rewrite(given, NULL) : NULL; /* pg_catalog names as DuckDB reads them */
    free(given);
    if (st->name == NULL || st->sql == NULL) {
        pstmt_free(st);
        return NULL;
    }
    classify(st);
    return st;
}

/* ---- results ---- */

static void cols_free(portal *p)
{
    for (idx_t i = 0; p->cols != NULL && i < p->n_cols; i++)
        pgv_column_free(p->cols[i]);
    free(p->cols);
    free(p->vecs);
    p->cols = NULL;
    p->vecs = NULL;
    p->n_cols = 0;
}

static void portal_free(portal *p)
{
    if (p == NULL)
        return;
    if (p->chunk != NULL)
        duckdb_destroy_data_chunk(&p->chunk);
    if (p->has_result)
        duckdb_destroy_result(&p->res);
    duckdb_destroy_pending(&p->pending);
    cols_free(p);
    free(p->formats);
    free(p->name);
    free(p);
}

static void portals_close(session *s, bool unnamed_only)
{
    for (portal **pp = &s->portals; *pp != NULL;) {
        portal *p = *pp;
        if (!unnamed_only || p->name[0] == '\0') {
            *pp = p->next;
            portal_free(p);
        } else {
            pp = &p->next;
        }
    }
}

static int16_t format_of(const int16_t *formats, int n, idx_t col)
{
    if (n == 0)
        return 0;
    if (n == 1)
        return formats[0];
    return (idx_t)n > col ? formats[col] : 0;
}

static const char *ps_name(void *ctx, idx_t i);

static void row_description_types(session *s, idx_t n, duckdb_logical_type (*type_at)(void *, idx_t),
                                  const char *(*name_at)(void *, idx_t), void *ctx, const int16_t *formats,
                                  int n_formats)
{
    pgm_begin(s->c, 'T');
    pgm_put_i16(&s->c->out, (int16_t)n);
    for (idx_t i = 0; i < n; i++) {
        duckdb_logical_type t = type_at(ctx, i);
        pgv_type pt = pgv_type_of(t);
        duckdb_destroy_logical_type(&t);
        const char *name = name_at(ctx, i);
        pgm_put_str(&s->c->out, name ? name : "?column?");
        if (name_at == ps_name) /* duckdb_prepared_statement_column_name's text is the caller's */
            duckdb_free((void *)name);
        pgm_put_i32(&s->c->out, 0);
        pgm_put_i16(&s->c->out, 0);
        pgm_put_i32(&s->c->out, (int32_t)pt.oid);
        pgm_put_i16(&s->c->out, pt.typlen);
        pgm_put_i32(&s->c->out, pt.typmod);
        pgm_put_i16(&s->c->out, format_of(formats, n_formats, i));
    }
    pgm_end(s->c);
}

static duckdb_logical_type res_type(void *ctx, idx_t i)
{
    return duckdb_column_logical_type(ctx, i);
}

static const char *res_name(void *ctx, idx_t i)
{
    return duckdb_column_name(ctx, i);
}

static duckdb_logical_type ps_type(void *ctx, idx_t i)
{
    return duckdb_prepared_statement_column_logical_type(ctx, i);
}

static const char *ps_name(void *ctx, idx_t i)
{
    return duckdb_prepared_statement_column_name(ctx, i);
}

/* A statement (or an Execute) begins: its cancel and timeout state. */
static void stmt_begin(session *s)
{
    const char *t = get_setting(s, "statement_timeout");
    char *end = NULL;
    double v = t ? strtod(t, &end) : 0;
    /* PostgreSQL's units: ms by default, or s, min, h. */
    if (end != NULL && (strncmp(end, "s", 1) == 0 || strncmp(end, " s", 2) == 0))
        v *= 1000;
    else if (end != NULL && strstr(end, "min") != NULL)
        v *= 60000;
    else if (end != NULL && strstr(end, "h") != NULL)
        v *= 3600000;
    pthread_mutex_lock(&s->slot->lock);
    s->slot->cancelled = s->slot->timed_out = false;
    clock_gettime(CLOCK_MONOTONIC, &s->slot->started);
    s->slot->timeout_ms = v > 0 ? (int64_t)v : s->opt->statement_timeout_ms;
    pthread_mutex_unlock(&s->slot->lock);
}

/* DuckDB works for the session: a cancel, the timeout or shutdown may
 * interrupt it. */
static void running(session *s, bool on)
{
    pthread_mutex_lock(&s->slot->lock);
    s->slot->running = on ? s->con : NULL;
    pthread_mutex_unlock(&s->slot->lock);
}

/* A wait for the readers' turn ends: cancelled, timed out, shut down. */
static bool stop_waiting(void *arg)
{
    pgs_slot *sl = arg;
    pthread_mutex_lock(&sl->lock);
    bool stop = sl->cancelled || sl->timed_out || sl->shutting_down;
    pthread_mutex_unlock(&sl->lock);
    return stop;
}

/* Waits for the readers' turn; false: stopped while waiting (reported as
 * DuckDB's own interrupt would be). */
static bool take_turn(session *s, read_turn *turn, size_t offset, const char *text)
{
    pthread_mutex_lock(&s->slot->lock);
    s->slot->queued = true;
    pthread_mutex_unlock(&s->slot->lock);
    bool ok = read_gate_enter(store_read_gate(s->opt->st), turn, stop_waiting, s->slot);
    pthread_mutex_lock(&s->slot->lock);
    s->slot->queued = false;
    pthread_mutex_unlock(&s->slot->lock);
    if (!ok)
        duck_error(s, "INTERRUPT Error: Interrupted!", text, offset);
    return ok;
}

/* Starts a portal's result: execution (in the readers' turn: what DuckDB
 * does before the first rows), the result columns' writers. */
static bool portal_start(session *s, portal *p, size_t offset, const char *text)
{
    read_turn turn;
    if (!take_turn(s, &turn, offset, text))
        return false; /* not started: a later Execute may try again */
    running(s, true);
    bool ok = duckdb_execute_pending(p->pending, &p->res) == DuckDBSuccess;
    running(s, false);
    read_gate_leave(store_read_gate(s->opt->st), &turn);
    p->has_result = true;
    p->started = true;
    if (!ok) {
        duck_error(s, duckdb_result_error(&p->res), text, offset);
        return false;
    }
    p->n_cols = duckdb_column_count(&p->res);
    p->cols = calloc(p->n_cols ? p->n_cols : 1, sizeof(pgv_column *));
    p->vecs = calloc(p->n_cols ? p->n_cols : 1, sizeof(duckdb_vector));
    if (p->cols == NULL || p->vecs == NULL) {
        send_error(s, "53200", "out of memory", 0);
        return false;
    }
    pgv_session ps = {.timezone = s->timezone, .extra_float_digits = s->extra_float_digits};
    for (idx_t i = 0; i < p->n_cols; i++) {
        ds_error err;
        ds_error_clear(&err);
        duckdb_logical_type t = duckdb_column_logical_type(&p->res, i);
        p->cols[i] =
            pgv_column_new(t, &ps, format_of(p->formats, p->formats ? (int)p->n_cols : 0, i) == 1, &err);
        duckdb_destroy_logical_type(&t);
        if (p->cols[i] == NULL) {
            send_error(s, "22023", err.msg, 0);
            return false;
        }
    }
    return true;
}

/* The next row of a portal's result: its chunk and row; false at the end
 * (p->done) or on an error (sent). */
static bool next_row(session *s, portal *p, bool *error)
{
    *error = false;
    while (p->chunk == NULL || p->chunk_row >= p->chunk_size) {
        if (p->chunk != NULL)
            duckdb_destroy_data_chunk(&p->chunk);
        running(s, true);
        p->chunk = duckdb_fetch_chunk(p->res);
        running(s, false);
        if (p->chunk == NULL) {
            p->done = true;
            const char *e = duckdb_result_error(&p->res);
            if (e != NULL) {
                duck_error(s, e, NULL, 0);
                *error = true;
            }
            return false;
        }
        p->chunk_row = 0;
        p->chunk_size = duckdb_data_chunk_get_size(p->chunk);
        for (idx_t i = 0; i < p->n_cols; i++)
            p->vecs[i] = duckdb_data_chunk_get_vector(p->chunk, i);
    }
    return true;
}

static bool put_row_fields(session *s, portal *p, ds_buf *out)
{
    ds_error err;
    ds_error_clear(&err);
    for (idx_t i = 0; i < p->n_cols; i++) {
        if (!pgv_put(p->cols[i], p->vecs[i], p->chunk_row, out, &err)) {
            send_error(s, "22000", err.msg, 0);
            return false;
        }
    }
    return true;
}

/* Sends up to max_rows rows (0: all): CommandComplete at the end, else
 * PortalSuspended. */
static bool portal_run(session *s, portal *p, int64_t max_rows)
{
    int64_t sent = 0;
    bool error = false;
    while (max_rows <= 0 || sent < max_rows) {
        if (!next_row(s, p, &error))
            break;
        pgm_begin(s->c, 'D');
        pgm_put_i16(&s->c->out, (int16_t)p->n_cols);
        if (!put_row_fields(s, p, &s->c->out)) {
            ds_buf_reset(&s->c->out);
            return false;
        }
        pgm_end(s->c);
        p->chunk_row++;
        sent++;
        p->rows++;
        ds_error err;
        if (s->c->out.len >= FLUSH_BYTES && !pgm_flush(s->c, &err)) {
            s->terminate = true;
            return false;
        }
    }
    if (error)
        return false;
    if (!p->done && max_rows > 0) {
        /* More rows may follow: peek so the last batch ends with its
         * CommandComplete, as PostgreSQL does. */
        if (!next_row(s, p, &error) && !error) {
            /* fall through to completion */
        } else if (error) {
            return false;
        } else {
            pgm_begin(s->c, 's');
            pgm_end(s->c);
            return true;
        }
    }
    pgm_begin(s->c, 'C');
    ds_buf tag = DS_BUF_INIT;
    duckdb_statement_type t = duckdb_prepared_statement_type(p->stmt->ps);
    if (t == DUCKDB_STATEMENT_TYPE_EXPLAIN)
        ds_buf_append(&tag, "EXPLAIN");
    else
        ds_buf_appendf(&tag, "SELECT %lld", (long long)p->rows);
    pgm_put_str(&s->c->out, ds_buf_str(&tag) ? ds_buf_str(&tag) : "SELECT");
    ds_buf_free(&tag);
    pgm_end(s->c);
    return true;
}

/* Prepares a statement DuckDB runs and applies the read-only rule. */
static bool duck_prepare(session *s, pstmt *st, size_t offset, const char *text)
{
    if (st->ps != NULL)
        return true;
    if (!tx_open(s))
        return false;
    stmt_begin(s);
    running(s, true);
    bool ok = duckdb_prepare(s->con, st->sql, &st->ps) == DuckDBSuccess;
    running(s, false);
    if (!ok) {
        duck_error(s, duckdb_prepare_error(st->ps), text, offset);
        duckdb_destroy_prepare(&st->ps);
        return false;
    }
    const char *kind = query_refused_kind(st->ps);
    if (kind != NULL) {
        send_errorf(s, "25006",
                    "cannot execute %s in a read-only transaction: duckstore serves a read-only copy of the "
                    "data (write to the source PostgreSQL; duckstore syncs it)",
                    kind);
        duckdb_destroy_prepare(&st->ps);
        return false;
    }
    return true;
}

/* ---- the statements duckstore answers itself ---- */

static void command_complete(session *s, const char *tag)
{
    pgm_begin(s->c, 'C');
    pgm_put_str(&s->c->out, tag);
    pgm_end(s->c);
}

static void show_description(session *s, const char *name)
{
    pgm_begin(s->c, 'T');
    pgm_put_i16(&s->c->out, 1);
    pgm_put_str(&s->c->out, name);
    pgm_put_i32(&s->c->out, 0);
    pgm_put_i16(&s->c->out, 0);
    pgm_put_i32(&s->c->out, 25);
    pgm_put_i16(&s->c->out, -1);
    pgm_put_i32(&s->c->out, -1);
    pgm_put_i16(&s->c->out, 0);
    pgm_end(s->c);
}

static bool apply_setting(session *s, const char *name, const char *value)
{
    if (strcmp(name, "timezone") == 0) {
        ds_buf sql = DS_BUF_INIT;
        ds_buf_append(&sql, "SET TimeZone = ");
        ds_buf_append_literal(&sql, value);
        duckdb_result r;
        bool ok = ds_buf_str(&sql) != NULL && duckdb_query(s->con, ds_buf_str(&sql), &r) == DuckDBSuccess;
        if (ds_buf_str(&sql) != NULL)
            duckdb_destroy_result(&r);
        ds_buf_free(&sql);
        if (!ok || strlen(value) >= sizeof s->timezone) {
            send_errorf(s, "22023", "invalid value for parameter \"TimeZone\": \"%s\"", value);
            return false;
        }
        snprintf(s->timezone, sizeof s->timezone, "%s", value);
    } else if (strcmp(name, "extra_float_digits") == 0) {
        char *end;
        long v = strtol(value, &end, 10);
        if (*end != '\0' || v < -15 || v > 3) {
            send_errorf(s, "22023", "invalid value for parameter \"extra_float_digits\": \"%s\"", value);
            return false;
        }
        s->extra_float_digits = (int)v;
    } else if (strcmp(name, "client_encoding") == 0 || strcmp(name, "server_encoding") == 0) {
        if (strcasecmp(value, "UTF8") != 0 && strcasecmp(value, "UTF-8") != 0 &&
            strcasecmp(value, "unicode") != 0) {
            send_errorf(s, "0A000", "client_encoding \"%s\" is not supported; duckstore speaks UTF8 only",
                        value);
            return false;
        }
        value = "UTF8";
    } else if (strcmp(name, "transaction_read_only") == 0 ||
               strcmp(name, "default_transaction_read_only") == 0) {
        if (strcasecmp(value, "on") != 0 && strcasecmp(value, "true") != 0 && strcmp(value, "1") != 0) {
            send_error(s, "25006",
                       "cannot set transaction read-write mode: duckstore serves a read-only copy", 0);
            return false;
        }
        return true;
    }
    if (!put_setting(s, name, value)) {
        send_error(s, "53200", "out of memory", 0);
        return false;
    }
    static const char *const report[][2] = {{"application_name", "application_name"},
                                            {"datestyle", "DateStyle"},
                                            {"timezone", "TimeZone"},
                                            {"intervalstyle", "IntervalStyle"},
                                            {"client_encoding", "client_encoding"}};
    for (size_t i = 0; i < sizeof report / sizeof report[0]; i++)
        if (strcmp(name, report[i][0]) == 0)
            parameter_status(s, report[i][1], value);
    return true;
}

static const char *default_of(const char *name)
{
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (strcmp(defaults[i][0], name) == 0)
            return defaults[i][1];
    return "";
}

/* A COPY's rows as CopyData: text (tab-separated, \N) or CSV. */
static void copy_field(ds_buf *b, const char *v, int32_t n, bool csv)
{
    if (n < 0) {
        if (!csv)
            ds_buf_append(b, "\\N");
        return;
    }
    if (csv) {
        bool quote = n == 0 || memchr(v, ',', (size_t)n) || memchr(v, '"', (size_t)n) ||
                     memchr(v, '\n', (size_t)n) || memchr(v, '\r', (size_t)n) ||
                     (n == 2 && memcmp(v, "\\.", 2) == 0);
        if (!quote) {
            ds_buf_appendn(b, v, (size_t)n);
            return;
        }
        ds_buf_appendc(b, '"');
        for (int32_t i = 0; i < n; i++) {
            if (v[i] == '"')
                ds_buf_appendc(b, '"');
            ds_buf_appendc(b, v[i]);
        }
        ds_buf_appendc(b, '"');
        return;
    }
    for (int32_t i = 0; i < n; i++) {
        switch (v[i]) {
        case '\\':
            ds_buf_append(b, "\\\\");
            break;
        case '\t':
            ds_buf_append(b, "\\t");
            break;
        case '\n':
            ds_buf_append(b, "\\n");
            break;
        case '\r':
            ds_buf_append(b, "\\r");
            break;
        default:
            ds_buf_appendc(b, v[i]);
        }
    }
}

static void run_copy(session *s, pstmt *st)
{
    pstmt *inner = pstmt_new("", st->param, strlen(st->param));
    if (inner == NULL) {
        send_error(s, "53200", "out of memory", 0);
        return;
    }
    portal p = {.name = NULL, .stmt = inner};
    if (inner->kind != K_DUCK) {
        send_error(s, "0A000", "COPY (query) TO STDOUT takes a query (SELECT, WITH, VALUES, TABLE)", 0);
        pstmt_free(inner);
        return;
    }
    if (!duck_prepare(s, inner, 0, NULL) ||
        duckdb_pending_prepared_streaming(inner->ps, &p.pending) == DuckDBError) {
        if (inner->ps != NULL)
            duck_error(s, duckdb_pending_error(p.pending), NULL, 0);
        duckdb_destroy_pending(&p.pending);
        pstmt_free(inner);
        return;
    }
    if (portal_start(s, &p, 0, NULL)) {
        pgm_begin(s->c, 'H');
        ds_buf_appendc(&s->c->out, 0);
        pgm_put_i16(&s->c->out, (int16_t)p.n_cols);
        for (idx_t i = 0; i < p.n_cols; i++)
            pgm_put_i16(&s->c->out, 0);
        pgm_end(s->c);
        if (st->copy_header) {
            pgm_begin(s->c, 'd');
            for (idx_t i = 0; i < p.n_cols; i++) {
                if (i > 0)
                    ds_buf_appendc(&s->c->out, st->copy_csv ? ',' : '\t');
                const char *name = duckdb_column_name(&p.res, i);
                copy_field(&s->c->out, name, (int32_t)strlen(name), st->copy_csv);
            }
            ds_buf_appendc(&s->c->out, '\n');
            pgm_end(s->c);
        }
        bool error = false, ok = true;
        while (ok && next_row(s, &p, &error)) {
            pgm_begin(s->c, 'd');
            for (idx_t i = 0; ok && i < p.n_cols; i++) {
                ds_buf_reset(&s->tmp);
                ds_error err;
                ds_error_clear(&err);
                if (!pgv_put(p.cols[i], duckdb_data_chunk_get_vector(p.chunk, i), p.chunk_row, &s->tmp,
                             &err) ||
                    s->tmp.failed || s->tmp.len < 4) {
                    send_error(s, "22000", err.msg[0] ? err.msg : "out of memory", 0);
                    ok = false;
                    break;
                }
                const unsigned char *h = (const unsigned char *)s->tmp.data;
                int32_t n =
                    (int32_t)((uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3]);
                if (i > 0)
                    ds_buf_appendc(&s->c->out, st->copy_csv ? ',' : '\t');
                copy_field(&s->c->out, s->tmp.data + 4, n, st->copy_csv);
            }
            if (!ok)
                break;
            ds_buf_appendc(&s->c->out, '\n');
            pgm_end(s->c);
            p.chunk_row++;
            p.rows++;
            ds_error err;
            if (s->c->out.len >= FLUSH_BYTES && !pgm_flush(s->c, &err)) {
                s->terminate = true;
                ok = false;
            }
        }
        if (ok && !error) {
            pgm_begin(s->c, 'c');
            pgm_end(s->c);
            ds_buf tag = DS_BUF_INIT;
            ds_buf_appendf(&tag, "COPY %lld", (long long)p.rows);
            command_complete(s, ds_buf_str(&tag) ? ds_buf_str(&tag) : "COPY");
            ds_buf_free(&tag);
        } else if (!error && !s->terminate) {
            /* the ErrorResponse above ends the copy */
        }
    }
    p.name = NULL;
    if (p.chunk != NULL)
        duckdb_destroy_data_chunk(&p.chunk);
    if (p.has_result)
        duckdb_destroy_result(&p.res);
    duckdb_destroy_pending(&p.pending);
    cols_free(&p);
    pstmt_free(inner);
}

static void discard_all(session *s);

/* Runs what duckstore answers itself; describe: send a SHOW's
 * RowDescription (simple query). */
static void run_own(session *s, pstmt *st, bool describe)
{
    switch (st->kind) {
    case K_EMPTY:
        pgm_begin(s->c, 'I');
        pgm_end(s->c);
        return;
    case K_SET:
        if (apply_setting(s, st->param, st->value ? st->value : default_of(st->param)))
            command_complete(s, st->tag);
        return;
    case K_RESET:
        if (strcmp(st->param, "all") == 0) {
            while (s->settings != NULL) {
                setting *n = s->settings->next;
                free(s->settings->name);
                free(s->settings->value);
                free(s->settings);
                s->settings = n;
            }
            apply_setting(s, "timezone", "UTC");
            s->extra_float_digits = 1;
            command_complete(s, st->tag);
        } else if (apply_setting(s, st->param, default_of(st->param))) {
            command_complete(s, st->tag);
        }
        return;
    case K_SHOW: {
        const char *v = get_setting(s, st->param);
        if (v == NULL) {
            send_errorf(s, "42704", "unrecognized configuration parameter \"%s\"", st->param);
            return;
        }
        if (describe)
            show_description(s, st->param);
        pgm_begin(s->c, 'D');
        pgm_put_i16(&s->c->out, 1);
        pgm_put_i32(&s->c->out, (int32_t)strlen(v));
        ds_buf_append(&s->c->out, v);
        pgm_end(s->c);
        command_complete(s, "SHOW");
        return;
    }
    case K_BEGIN:
        if (s->in_block) {
            pgm_error(s->c, 'N', "WARNING", "25001", "there is already a transaction in progress", 0);
        } else {
            tx_close(s);
            if (!tx_open(s))
                return;
            s->in_block = true;
        }
        command_complete(s, "BEGIN");
        return;
    case K_COMMIT:
    case K_ROLLBACK: {
        if (!s->in_block)
            pgm_error(s->c, 'N', "WARNING", "25P01", "there is no transaction in progress", 0);
        bool was_failed = s->failed;
        s->in_block = s->failed = false;
        tx_close(s);
        command_complete(s, st->kind == K_COMMIT && !was_failed ? "COMMIT" : "ROLLBACK");
        return;
    }
    case K_DISCARD:
        discard_all(s);
        command_complete(s, st->tag);
        return;
    case K_NOOP:
        command_complete(s, st->tag);
        return;
    case K_COPY:
        run_copy(s, st);
        return;
    case K_COPY_IN:
        send_error(
            s, "25006",
            "cannot execute COPY FROM in a read-only transaction: duckstore serves a read-only copy of the "
            "data (write to the source PostgreSQL; duckstore syncs it)",
            0);
        return;
    case K_DUCK:
        return;
    }
}

static void discard_all(session *s)
{
    tx_close(s);
    s->in_block = s->failed = false;
    while (s->stmts != NULL) {
        pstmt *n = s->stmts->next;
        pstmt_free(s->stmts);
        s->stmts = n;
    }
    while (s->settings != NULL) {
        setting *n = s->settings->next;
        free(s->settings->name);
        free(s->settings->value);
        free(s->settings);
        s->settings = n;
    }
    duckdb_result r;
    duckdb_query(s->con, "SET TimeZone = 'UTC'", &r);
    duckdb_destroy_result(&r);
    snprintf(s->timezone, sizeof s->timezone, "UTC");
    s->extra_float_digits = 1;
}

/* An aborted block refuses everything but its end. */
static bool refused_in_failed_block(session *s, const pstmt *st)
{
    if (!s->failed || st->kind == K_COMMIT || st->kind == K_ROLLBACK)
        return false;
    pgm_error(s->c, 'E', "ERROR", "25P02",
              "current transaction is aborted, commands ignored until end of transaction block", 0);
    return true;
}

/* ---- simple query ---- */

/* Splits the text at semicolons outside quotes, comments and
 * dollar-quoting, and runs each statement; the first error ends it. */
static void simple_query(session *s, const char *text)
{
    const char *start = text, *p = text;
    bool any = false;
    for (;;) {
        const char *e = skip_quoted(text, p);
        if (e != p) {
            p = e;
            continue;
        }
        if (*p != ';' && *p != '\0') {
            p++;
            continue;
        }
        const char *stmt_start = skip_space(start);
        bool last = *p == '\0';
        if (stmt_start < p || (last && !any)) {
            any = true;
            pstmt *st = pstmt_new("", stmt_start, (size_t)(p - stmt_start));
            if (st == NULL) {
                send_error(s, "53200", "out of memory", 0);
                break;
            }
            bool ok = true;
            if (st->kind == K_SHOW && get_setting(s, st->param) == NULL)
                st->kind = K_DUCK; /* not a setting: DuckDB's SHOW (SHOW TABLES, SHOW t) */
            if (refused_in_failed_block(s, st)) {
                ok = false;
            } else if (st->kind != K_DUCK) {
                run_own(s, st, true);
                ok = !s->c->out.failed;
            } else {
                size_t offset = (size_t)(stmt_start - text);
                portal pt = {.stmt = st};
                if (!duck_prepare(s, st, offset, text)) {
                    ok = false;
                } else if (duckdb_pending_prepared_streaming(st->ps, &pt.pending) == DuckDBError) {
                    duck_error(s, duckdb_pending_error(pt.pending), text, offset);
                    ok = false;
                } else if (!portal_start(s, &pt, offset, text)) {
                    ok = false;
                } else {
                    row_description_types(s, pt.n_cols, res_type, res_name, &pt.res, NULL, 0);
                    ok = portal_run(s, &pt, 0);
                }
                if (pt.chunk != NULL)
                    duckdb_destroy_data_chunk(&pt.chunk);
                if (pt.has_result)
                    duckdb_destroy_result(&pt.res);
                duckdb_destroy_pending(&pt.pending);
                cols_free(&pt);
                if (!s->in_block)
                    tx_close(s);
            }
            /* s->failed is set by the error inside a block */
            bool failed_now = !ok;
            pstmt_free(st);
            if (failed_now || s->terminate)
                break;
        }
        if (last)
            break;
        start = ++p;
    }
    if (!s->in_block)
        tx_close(s);
}

/* ---- extended protocol ---- */

static pstmt **find_stmt(session *s, const char *name)
{
    pstmt **pp = &s->stmts;
    while (*pp != NULL && strcmp((*pp)->name, name) != 0)
        pp = &(*pp)->next;
    return pp;
}

static portal **find_portal(session *s, const char *name)
{
    portal **pp = &s->portals;
    while (*pp != NULL && strcmp((*pp)->name, name) != 0)
        pp = &(*pp)->next;
    return pp;
}

static void ext_error(session *s)
{
    s->skip_to_sync = true;
}

/* Unlinks the statement at *pp and frees it with its portals (Close, or
 * the unnamed statement replaced by a new Parse). */
static void drop_stmt(session *s, pstmt **pp)
{
    pstmt *st = *pp;
    *pp = st->next;
    for (portal **q = &s->portals; *q != NULL;) {
        if ((*q)->stmt == st) {
            portal *dead = *q;
            *q = dead->next;
            portal_free(dead);
        } else {
            q = &(*q)->next;
        }
    }
    pstmt_free(st);
}
static void on_parse(session *s, pgm_reader *r)
{
    const char *name = pgm_get_str(r);
    const char *sql = pgm_get_str(r);
    int16_t n = pgm_get_i16(r);
    if (r->bad || n < 0) {
        send_error(s, "08P01", "malformed Parse message", 0);
        return ext_error(s);
    }
    pstmt **pp = find_stmt(s, name);
    if (*pp != NULL && name[0] != '\0') {
        send_errorf(s, "42P05", "prepared statement \"%s\" already exists", name);
        return ext_error(s);
    }
    pstmt *st = pstmt_new(name, sql, strlen(sql));
    if (st == NULL) {
        send_error(s, "53200", "out of memory", 0);
        return ext_error(s);
    }
    st->n_param_oids = n;
    st->param_oids = calloc((size_t)n + 1, sizeof *st->param_oids);
    for (int i = 0; st->param_oids && i < n; i++)
        st->param_oids[i] = (uint32_t)pgm_get_i32(r);
    if (r->bad || st->param_oids == NULL) {
        pstmt_free(st);
        send_error(s, "08P01", "malformed Parse message", 0);
        return ext_error(s);
    }
    if (st->kind == K_SHOW && get_setting(s, st->param) == NULL)
        st->kind = K_DUCK;
    if (refused_in_failed_block(s, st) || (st->kind == K_DUCK && !duck_prepare(s, st, 0, st->sql))) {
        pstmt_free(st);
        if (!s->in_block)
            tx_close(s);
        return ext_error(s);
    }
    if (*pp != NULL) /* the unnamed statement is replaced */
        drop_stmt(s, pp);
    st->next = s->stmts;
    s->stmts = st;
    pgm_begin(s->c, '1');
    pgm_end(s->c);
}

static void on_bind(session *s, pgm_reader *r)
{
    const char *pname = pgm_get_str(r);
    const char *sname = pgm_get_str(r);
    pstmt *st = *find_stmt(s, sname);
    if (st == NULL) {
        send_errorf(s, "26000", "prepared statement \"%s\" does not exist", sname);
        return ext_error(s);
    }
    if (refused_in_failed_block(s, st))
        return ext_error(s);
    int16_t nf = pgm_get_i16(r);
    int16_t pf[1024];
    if (nf < 0 || nf > 1024) {
        send_error(s, "08P01", "malformed Bind message", 0);
        return ext_error(s);
    }
    for (int i = 0; i < nf; i++)
        pf[i] = pgm_get_i16(r);
    int16_t np = pgm_get_i16(r);
    idx_t expected = st->ps ? duckdb_nparams(st->ps) : 0;
    if (r->bad || np < 0 || (idx_t)np != expected) {
        send_errorf(s, "08P01",
                    "bind message supplies %d parameters, but prepared statement \"%s\" requires %llu", np,
                    sname, (unsigned long long)expected);
        return ext_error(s);
    }
    if (st->kind == K_DUCK)
        duckdb_clear_bindings(st->ps);
    for (int i = 0; i < np; i++) {
        int32_t len = pgm_get_i32(r);
        const char *data = len > 0 ? pgm_get_bytes(r, (size_t)len) : "";
        if (r->bad || data == NULL) {
            send_error(s, "08P01", "malformed Bind message", 0);
            return ext_error(s);
        }
        int fmt = format_of(pf, nf, (idx_t)i);
        uint32_t oid = i < st->n_param_oids ? st->param_oids[i] : 0;
        ds_error err;
        ds_error_clear(&err);
        duckdb_value v = pgv_param_value(oid, fmt, data, len, &err);
        if (v == NULL) {
            send_errorf(s, "22P02", "parameter $%d: %s", i + 1, err.msg);
            return ext_error(s);
        }
        bool ok = duckdb_bind_value(st->ps, (idx_t)i + 1, v) == DuckDBSuccess;
        duckdb_destroy_value(&v);
        if (!ok) {
            send_errorf(s, "22P02", "parameter $%d cannot be bound to the statement", i + 1);
            return ext_error(s);
        }
    }
    int16_t nr = pgm_get_i16(r);
    if (nr < 0 || r->bad) {
        send_error(s, "08P01", "malformed Bind message", 0);
        return ext_error(s);
    }
    portal **pp = find_portal(s, pname);
    if (*pp != NULL) {
        if (pname[0] != '\0') {
            send_errorf(s, "42P03", "portal \"%s\" already exists", pname);
            return ext_error(s);
        }
        portal *old = *pp;
        *pp = old->next;
        portal_free(old);
    }
    portal *p = calloc(1, sizeof *p);
    if (p == NULL || (p->name = strdup(pname)) == NULL) {
        free(p);
        send_error(s, "53200", "out of memory", 0);
        return ext_error(s);
    }
    p->stmt = st;
    idx_t ncols = st->ps ? duckdb_prepared_statement_column_count(st->ps) : 0;
    p->formats = calloc(ncols + 1, sizeof *p->formats);
    for (idx_t i = 0; p->formats && i < ncols; i++) {
        if (nr == 1)
            p->formats[i] = 0; /* filled below */
    }
    int16_t rf[1024];
    for (int i = 0; i < nr && i < 1024; i++)
        rf[i] = pgm_get_i16(r);
    for (idx_t i = 0; p->formats && i < ncols; i++)
        p->formats[i] = format_of(rf, nr > 1024 ? 1024 : nr, i);
    p->next = s->portals;
    s->portals = p;
    if (st->kind == K_DUCK) {
        if (!tx_open(s))
            return ext_error(s);
        if (duckdb_pending_prepared_streaming(st->ps, &p->pending) == DuckDBError) {
            duck_error(s, duckdb_pending_error(p->pending), st->sql, 0);
            return ext_error(s);
        }
    }
    pgm_begin(s->c, '2');
    pgm_end(s->c);
}

static void parameter_description(session *s, pstmt *st)
{
    idx_t n = st->ps ? duckdb_nparams(st->ps) : 0;
    pgm_begin(s->c, 't');
    pgm_put_i16(&s->c->out, (int16_t)n);
    for (idx_t i = 0; i < n; i++) {
        uint32_t oid = (int)i < st->n_param_oids && st->param_oids[i] != 0
                           ? st->param_oids[i]
                           : pgv_param_oid(duckdb_param_type(st->ps, i + 1));
        pgm_put_i32(&s->c->out, (int32_t)oid);
    }
    pgm_end(s->c);
}

static void describe_rows(session *s, pstmt *st, const int16_t *formats, int n_formats)
{
    if (st->kind == K_DUCK && st->ps != NULL) {
        idx_t n = duckdb_prepared_statement_column_count(st->ps);
        row_description_types(s, n, ps_type, ps_name, st->ps, formats, n_formats);
    } else if (st->kind == K_SHOW) {
        show_description(s, st->param);
    } else {
        pgm_begin(s->c, 'n');
        pgm_end(s->c);
    }
}

static void on_describe(session *s, pgm_reader *r)
{
    char what = (char)pgm_get_u8(r);
    const char *name = pgm_get_str(r);
    if (what == 'S') {
        pstmt *st = *find_stmt(s, name);
        if (st == NULL) {
            send_errorf(s, "26000", "prepared statement \"%s\" does not exist", name);
            return ext_error(s);
        }
        parameter_description(s, st);
        describe_rows(s, st, NULL, 0);
    } else if (what == 'P') {
        portal *p = *find_portal(s, name);
        if (p == NULL) {
            send_errorf(s, "34000", "portal \"%s\" does not exist", name);
            return ext_error(s);
        }
        idx_t n = p->stmt->ps ? duckdb_prepared_statement_column_count(p->stmt->ps) : 0;
        describe_rows(s, p->stmt, p->formats, (int)n);
    } else {
        send_error(s, "08P01", "malformed Describe message", 0);
        ext_error(s);
    }
}

static void on_execute(session *s, pgm_reader *r)
{
    const char *name = pgm_get_str(r);
    int32_t max = pgm_get_i32(r);
    portal *p = *find_portal(s, name);
    if (p == NULL) {
        send_errorf(s, "34000", "portal \"%s\" does not exist", name);
        return ext_error(s);
    }
    if (refused_in_failed_block(s, p->stmt))
        return ext_error(s);
    if (p->stmt->kind != K_DUCK) {
        s->errored = false;
        run_own(s, p->stmt, false);
        if (s->errored)
            ext_error(s);
        return;
    }
    if (p->done) {
        command_complete(s, "SELECT 0");
        return;
    }
    stmt_begin(s);
    if (!p->started && !portal_start(s, p, 0, p->stmt->sql))
        return ext_error(s);
    if (!portal_run(s, p, max))
        ext_error(s);
}

static void on_close(session *s, pgm_reader *r)
{
    char what = (char)pgm_get_u8(r);
    const char *name = pgm_get_str(r);
    if (what == 'S') {
        pstmt **pp = find_stmt(s, name);
        if (*pp != NULL)
            drop_stmt(s, pp);
    } else if (what == 'P') {
        portal **pp = find_portal(s, name);
        if (*pp != NULL) {
            portal *p = *pp;
            *pp = p->next;
            portal_free(p);
        }
    }
    pgm_begin(s->c, '3');
    pgm_end(s->c);
}

static void ready_for_query(session *s)
{
    pgm_begin(s->c, 'Z');
    ds_buf_appendc(&s->c->out, s->failed ? 'E' : s->in_block ? 'T' : 'I');
    pgm_end(s->c);
}

/* ---- the session ---- */

static bool prepare_tx(session *s, ds_error *err)
{
    if (duckdb_prepare(s->con, "BEGIN TRANSACTION READ ONLY", &s->begin_ro) == DuckDBError ||
        duckdb_prepare(s->con, "ROLLBACK", &s->rollback) == DuckDBError)
        return ds_error_set(err, DS_ERR_STORE, "cannot prepare a session's transactions: %s",
                            duckdb_prepare_error(s->begin_ro) ? duckdb_prepare_error(s->begin_ro)
                                                              : duckdb_prepare_error(s->rollback));
    return true;
}

static void session_start(session *s, const char *user, const char *app)
{
    pgm_begin(s->c, 'K');
    pgm_put_i32(&s->c->out, (int32_t)s->slot->pid);
    pgm_put_i32(&s->c->out, (int32_t)s->slot->secret);
    pgm_end(s->c);
    if (app != NULL)
        put_setting(s, "application_name", app);
    for (size_t i = 0; i < sizeof reported / sizeof reported[0]; i++) {
        const char *v =
            strcmp(reported[i], "session_authorization") == 0 ? user : get_setting(s, reported[i]);
        parameter_status(s, reported[i], v ? v : "");
    }
}

void pgs_run(pgm_conn *c, pgs_slot *slot, const pgs_options *opt, const char *user, const char *database,
             const char *application_name)
{
    (void)database; /* one database: the cache */
    session s = {.c = c, .slot = slot, .opt = opt, .extra_float_digits = 1, .tmp = DS_BUF_INIT};
    snprintf(s.timezone, sizeof s.timezone, "UTC");
    ds_error err;
    ds_error_clear(&err);
    store_use_begin(opt->st);
    if (!store_connect(opt->st, &s.con, &err) || !store_exec(s.con, "SET errors_as_json = true", &err) ||
        !pgc_install(s.con, &err) || !prepare_tx(&s, &err)) {
        pgm_error(c, 'E', "FATAL", "57P03", err.msg, 0);
        pgm_flush(c, &err);
        duckdb_destroy_prepare(&s.begin_ro);
        duckdb_destroy_prepare(&s.rollback);
        if (s.con != NULL)
            duckdb_disconnect(&s.con);
        store_use_end(opt->st);
        return;
    }
    session_start(&s, user, application_name);
    ds_buf body = DS_BUF_INIT;
    bool idle = true;
    while (!s.terminate) {
        if (idle) {
            ready_for_query(&s);
            idle = false;
        }
        /* A pipelined batch (Parse, Bind, Describe, Execute, Sync in one
         * packet) gets its answers in one send. */
        if (!pgm_input_buffered(c) && !pgm_flush(c, &err))
            break;
        char type;
        bool timed_out = false;
        int wait = s.in_block ? -1 : opt->idle_timeout_ms;
        if (!pgm_read_message(c, &type, &body, wait, &timed_out, &err)) {
            if (timed_out) {
                pgm_error(c, 'E', "FATAL", "57P05", "terminating connection due to idle-session timeout", 0);
                pgm_flush(c, &err);
            } else if (err.code == DS_ERR_DECODE) {
                pgm_error(c, 'E', "FATAL", "08P01", err.msg, 0);
                pgm_flush(c, &err);
            }
            break;
        }
        pthread_mutex_lock(&slot->lock);
        bool down = slot->shutting_down;
        pthread_mutex_unlock(&slot->lock);
        if (down) {
            pgm_error(c, 'E', "FATAL", "57P01", "terminating connection due to administrator command", 0);
            pgm_flush(c, &err);
            break;
        }
        pgm_reader r;
        pgm_reader_init(&r, body.data, body.len);
        if (type == 'X')
            break;
        if (type == 'S') {
            s.skip_to_sync = false;
            portals_close(&s, true);
            if (!s.in_block)
                tx_close(&s);
            idle = true;
            continue;
        }
        if (s.skip_to_sync)
            continue;
        switch (type) {
        case 'Q': {
            const char *text = pgm_get_str(&r);
            if (r.bad)
                send_error(&s, "08P01", "malformed Query message", 0);
            else
                simple_query(&s, text);
            idle = true;
            break;
        }
        case 'P':
            on_parse(&s, &r);
            break;
        case 'B':
            on_bind(&s, &r);
            break;
        case 'D':
            on_describe(&s, &r);
            break;
        case 'E':
            on_execute(&s, &r);
            break;
        case 'C':
            on_close(&s, &r);
            break;
        case 'H':
            break; /* the loop flushes */
        case 'd':
        case 'c':
        case 'f':
            break; /* copy-in messages outside a copy: ignored, as PostgreSQL does */
        default:
            pgm_error(c, 'E', "FATAL", "08P01", "invalid frontend message type", 0);
            s.terminate = true;
            break;
        }
    }
    pgm_flush(c, &err);
    ds_buf_free(&body);
    tx_close(&s);
    discard_all(&s);
    ds_buf_free(&s.tmp);
    duckdb_destroy_prepare(&s.begin_ro);
    duckdb_destroy_prepare(&s.rollback);
    duckdb_disconnect(&s.con);
    store_use_end(opt->st);
}
