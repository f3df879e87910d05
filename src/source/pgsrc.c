/* libpq plumbing for pgsrc.h. */
#include "source/pgsrc.h"
#include "source/pgsrc_wait.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/strbuf.h"

/* How long past query_timeout the server may stay silent (see silence_s). */
#define SILENCE_GRACE_S 10.0

static bool result_error(pgsrc_conn *conn, PGresult *res, ds_error *err);

/* Length of msg's first line: libpq's messages end in a newline and may
 * carry DETAIL lines; ours are one line. */
static int first_line_len(const char *msg)
{
    return (int)strcspn(msg, "\n");
}

/* Waits until the server sends something, then lets libpq read it. Every
 * wait for PostgreSQL goes through here, because libpq's own blocking calls
 * wait forever for a server that hangs without closing the connection (a
 * stopped backend, a dead path whose keepalives are still acknowledged).
 * Past conn->silence_s the socket is shut down, so every later libpq call on
 * it fails at once instead of blocking, and false is returned. */
bool pgsrc_await_input(pgsrc_conn *conn, ds_error *err)
{
    int fd = PQsocket(conn->pg);
    if (fd < 0)
        return true; /* already broken: libpq reports it */
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int left = conn->silence_s > 0 ? (int)(conn->silence_s * 1000.0) : -1;
    int r;
    for (;;) {
        /* Slices of 100 ms, to see a stop request while the server works. */
        int slice = left < 0 || left > 100 ? 100 : left;
        do
            r = poll(&p, 1, slice);
        while (r < 0 && errno == EINTR);
        if (r != 0)
            break;
        if (conn->stop != NULL && !conn->stop_sent && atomic_load(conn->stop)) {
            conn->stop_sent = true;
            pgsrc_cancel(conn);
        }
        if (left >= 0 && (left -= slice) <= 0)
            break;
    }
    if (r == 0) {
        shutdown(fd, SHUT_RDWR);
        conn->hung = true;
        return ds_error_set(err, DS_ERR_SOURCE,
                            "PostgreSQL sent nothing for %g s (query_timeout + %g s): the server or the "
                            "network path to it hangs; the connection was closed",
                            conn->silence_s, SILENCE_GRACE_S);
    }
    PQconsumeInput(conn->pg); /* on failure the next libpq call reports it */
    return true;
}

/* What PQexec would return for the statement just sent with PQsend*: the
 * last result, the first error, or the COPY OUT start (whose rows the
 * caller then reads); NULL with err set when the server went silent or the
 * send failed. */
PGresult *pgsrc_await_result(pgsrc_conn *conn, ds_error *err)
{
    PGresult *kept = NULL;
    for (;;) {
        while (PQisBusy(conn->pg) && PQstatus(conn->pg) != CONNECTION_BAD) {
            if (!pgsrc_await_input(conn, err)) {
                PQclear(kept);
                return NULL;
            }
        }
        PGresult *res = PQgetResult(conn->pg);
        if (res == NULL)
            break;
        ExecStatusType st = PQresultStatus(res);
        if (kept != NULL && PQresultStatus(kept) == PGRES_FATAL_ERROR) {
            PQclear(res);
            continue;
        }
        PQclear(kept);
        kept = res;
        if (st == PGRES_COPY_OUT || st == PGRES_COPY_IN || st == PGRES_COPY_BOTH)
            break;
    }
    if (kept == NULL)
        result_error(conn, NULL, err);
    return kept;
}

PGresult *pgsrc_query(pgsrc_conn *conn, const char *sql, ds_error *err)
{
    if (!PQsendQuery(conn->pg, sql)) {
        result_error(conn, NULL, err);
        return NULL;
    }
    return pgsrc_await_result(conn, err);
}

PGresult *pgsrc_query_rows(pgsrc_conn *conn, const char *sql, ds_error *err)
{
    if (sql == NULL) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    PGresult *res = pgsrc_query(conn, sql, err);
    if (res != NULL && PQresultStatus(res) != PGRES_TUPLES_OK) {
        result_error(conn, res, err);
        PQclear(res);
        res = NULL;
    }
    return res;
}

/* NOTICE and WARNING messages of the server (a RAISE NOTICE in a function
 * the query calls, say) become duckstore log lines instead of libpq's raw
 * stderr output; arg is the source's name, or NULL. */
static void log_notice(void *arg, const PGresult *res)
{
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (severity == NULL)
        severity = "NOTICE";
    bool warning = strcmp(severity, "WARNING") == 0;
    ds_log(warning ? DS_LOG_WARN : DS_LOG_INFO, "%s%sPostgreSQL %s: %s", arg ? (const char *)arg : "",
           arg ? ": " : "", severity, msg ? msg : "");
}

void pgsrc_set_log_name(pgsrc_conn *conn, const char *name)
{
    PQsetNoticeReceiver(conn->pg, log_notice, (void *)name);
}

bool pgsrc_connect(const char *url, double query_timeout_s, pgsrc_conn *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    /* Defaults come before dbname so that a value in the user's URL wins;
     * client_encoding comes after it because the decoder needs UTF-8. */
    const char *keys[] = {"connect_timeout",
                          "keepalives",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "application_name",
                          "dbname",
                          "client_encoding",
                          NULL};
    const char *vals[] = {"10", "1", "30", "10", "3", "duckstore", url, "UTF8", NULL};
    out->pg = PQconnectdbParams(keys, vals, 1);
    if (out->pg == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory connecting to PostgreSQL");
    if (PQstatus(out->pg) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(out->pg);
        ds_error_set(err, DS_ERR_SOURCE, "cannot connect to PostgreSQL: %.*s", first_line_len(msg), msg);
        PQfinish(out->pg);
        out->pg = NULL;
        return false;
    }
    pgsrc_set_log_name(out, NULL);
    out->cancel = PQgetCancel(out->pg);
    if (out->cancel == NULL) {
        pgsrc_disconnect(out);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory connecting to PostgreSQL");
    }
    out->silence_s = query_timeout_s + SILENCE_GRACE_S;
    ds_buf sql = DS_BUF_INIT;
    /* idle_in_transaction_session_timeout off as well: a partitioned read's
     * coordinator sits idle in the transaction that exported the snapshot
     * while the workers connect and read, and a role's limit would end it
     * (the workers then fail with "invalid snapshot identifier"). */
    bool ok =
        ds_buf_appendf(&sql, "SET statement_timeout = %lld; SET idle_in_transaction_session_timeout = 0",
                       (long long)(query_timeout_s * 1000.0 + 0.5))
            ? pgsrc_exec(out, ds_buf_str(&sql), err)
            : ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    ds_buf_free(&sql);
    if (!ok)
        pgsrc_disconnect(out);
    return ok;
}

/* pg_type's answer for one type, as lookup_types reads it. */
typedef struct pgsrc_type_fact {
    uint32_t oid;
    char typtype, category;
    char *name; /* format_type(oid, NULL) */
} pgsrc_type_fact;

static void type_facts_free(struct pgsrc_type_facts *facts)
{
    for (size_t i = 0; i < facts->n; i++)
        free(facts->v[i].name);
    free(facts->v);
    facts->v = NULL;
    facts->n = 0;
}

void pgsrc_prepared_forget(pgsrc_conn *conn)
{
    for (size_t i = 0; i < conn->nprepared; i++)
        free(conn->prepared[i].sql);
    conn->nprepared = 0;
}

bool pgsrc_pipeline_send(pgsrc_conn *conn, const char *sql, int *parse)
{
    *parse = -1;
    const struct pgsrc_prepared *known = NULL;
    for (size_t i = 0; i < conn->nprepared && known == NULL; i++)
        if (strcmp(conn->prepared[i].sql, sql) == 0)
            known = &conn->prepared[i];
    if (known == NULL && conn->nprepared >= PGSRC_PREPARED_MAX)
        return PQsendQueryParams(conn->pg, sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
    char name[32];
    snprintf(name, sizeof name, "duckstore_%u", known ? known->id : conn->prepared_ids);
    if (known == NULL) {
        if (PQsendPrepare(conn->pg, name, sql, 0, NULL) != 1)
            return false;
        *parse = (int)conn->prepared_ids++;
    }
    return PQsendQueryPrepared(conn->pg, name, 0, NULL, NULL, NULL, 0) == 1;
}

void pgsrc_prepared_answered(pgsrc_conn *conn, int parse, const char *sql, bool prepared)
{
    if (parse < 0 || !prepared || conn->nprepared >= PGSRC_PREPARED_MAX)
        return;
    char *copy = strdup(sql);
    if (copy != NULL)
        conn->prepared[conn->nprepared++] = (struct pgsrc_prepared){.sql = copy, .id = (unsigned)parse};
}

void pgsrc_disconnect(pgsrc_conn *conn)
{
    pgsrc_prepared_forget(conn);
    type_facts_free(&conn->types);
    free(conn->probed_copy);
    conn->probed_copy = NULL;
    if (conn->cancel)
        PQfreeCancel(conn->cancel);
    if (conn->pg)
        PQfinish(conn->pg);
    conn->cancel = NULL;
    conn->pg = NULL;
}

void pgsrc_cancel(pgsrc_conn *conn)
{
    char buf[256];
    if (conn->cancel)
        PQcancel(conn->cancel, buf, sizeof buf);
}

/* Turns a failed result into a ds_error: primary message, plus the
 * statement_timeout case as its own code. A connection given up as hung
 * keeps the message that says so. */
static bool result_error(pgsrc_conn *conn, PGresult *res, ds_error *err)
{
    PGconn *pg = conn->pg;
    if (conn->hung && res == NULL)
        return false;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *position = res ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
    const char *msg = primary ? primary : PQerrorMessage(pg);
    int len = first_line_len(msg);
    if (state && strcmp(state, "57014") == 0) {
        bool timeout = strstr(msg, "statement timeout") != NULL;
        return ds_error_set(err, timeout ? DS_ERR_TIMEOUT : DS_ERR_CANCELLED, "%.*s", len, msg);
    }
    if (position)
        return ds_error_set(err, DS_ERR_SOURCE, "%.*s (SQLSTATE %s, at character %s)", len, msg,
                            state ? state : "?", position);
    return ds_error_set(err, DS_ERR_SOURCE, "%.*s%s%s%s", len, msg, state ? " (SQLSTATE " : "",
                        state ? state : "", state ? ")" : "");
}

bool pgsrc_result_error(pgsrc_conn *conn, PGresult *res, ds_error *err)
{
    return result_error(conn, res, err);
}

bool pgsrc_exec(pgsrc_conn *conn, const char *sql, ds_error *err)
{
    PGresult *res = pgsrc_query(conn, sql, err);
    if (res == NULL)
        return false;
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        result_error(conn, res, err);
    PQclear(res);
    return ok;
}

bool pgsrc_query_value(pgsrc_conn *conn, const char *sql, char **out, ds_error *err)
{
    *out = NULL;
    PGresult *res = pgsrc_query_rows(conn, sql, err);
    if (res == NULL)
        return false;
    bool ok = true;
    if (PQntuples(res) > 0 && PQnfields(res) > 0 && !PQgetisnull(res, 0, 0)) {
        *out = strdup(PQgetvalue(res, 0, 0));
        if (*out == NULL)
            ok = ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    PQclear(res);
    return ok;
}

/* End of the quoted text or comment that starts at q[i] (a ', ", $tag$ or
 * comment opener), or 0 when there is none there. One that is not closed
 * runs to the end and sets *open. */
static size_t skip_quoted(const char *q, size_t len, size_t i, bool *open)
{
    *open = false;
    if (q[i] == '-' && i + 1 < len && q[i + 1] == '-') {
        while (i < len && q[i] != '\n')
            i++;
        return i;
    }
    if (q[i] == '/' && i + 1 < len && q[i + 1] == '*') {
        int depth = 0; /* PostgreSQL's block comments nest */
        while (i < len) {
            if (q[i] == '/' && i + 1 < len && q[i + 1] == '*') {
                depth++;
                i += 2;
            } else if (q[i] == '*' && i + 1 < len && q[i + 1] == '/') {
                i += 2;
                if (--depth == 0)
                    return i;
            } else {
                i++;
            }
        }
        *open = true;
        return len;
    }
    if (q[i] == '\'' || q[i] == '"') {
        char quote = q[i];
        /* E'...' takes backslash escapes. */
        bool escapes = quote == '\'' && i > 0 && (q[i - 1] == 'E' || q[i - 1] == 'e') &&
                       (i == 1 || !(isalnum((unsigned char)q[i - 2]) || q[i - 2] == '_'));
        for (i++; i < len; i++) {
            if (escapes && q[i] == '\\' && i + 1 < len)
                i++;
            else if (q[i] == quote && i + 1 < len && q[i + 1] == quote)
                i++;
            else if (q[i] == quote)
                return i + 1;
        }
        *open = true;
        return len;
    }
    if (q[i] == '$' && !(i > 0 && (isalnum((unsigned char)q[i - 1]) || q[i - 1] == '_' || q[i - 1] == '$' ||
                                   (unsigned char)q[i - 1] >= 0x80))) {
        size_t t = i + 1; /* $tag$ ... $tag$; $1 is a parameter */
        if (t < len && isdigit((unsigned char)q[t]))
            return 0;
        while (t < len && (isalnum((unsigned char)q[t]) || q[t] == '_' || (unsigned char)q[t] >= 0x80))
            t++;
        if (t >= len || q[t] != '$')
            return 0;
        size_t tag = t + 1 - i;
        for (size_t j = t + 1; j + tag <= len; j++)
            if (memcmp(q + j, q + i, tag) == 0)
                return j + tag;
        *open = true;
        return len;
    }
    return 0;
}

/* Length of the query without what a query pasted from psql ends with:
 * semicolons, and blanks and comments after them ("...; -- comment"),
 * which a subquery cannot hold. Semicolons inside quotes or comments are
 * text; one between two statements stays (PostgreSQL refuses the two). A
 * comment with no semicolon before it stays: the wrapper's newline ends it. */
static size_t trimmed_len(const char *query)
{
    size_t len = strlen(query), end = 0;
    bool semicolon = false; /* after end */
    for (size_t i = 0; i < len;) {
        bool comment = (query[i] == '-' || query[i] == '/') && i + 1 < len &&
                       query[i + 1] == (query[i] == '-' ? '-' : '*');
        bool open;
        size_t next = skip_quoted(query, len, i, &open);
        if (next > i) {
            /* An unclosed comment stays, for PostgreSQL to report. */
            if (!comment || open) {
                end = next;
                semicolon = false;
            }
            i = next;
            continue;
        }
        if (query[i] == ';') {
            semicolon = true;
        } else if (!isspace((unsigned char)query[i])) {
            end = i + 1;
            semicolon = false;
        }
        i++;
    }
    if (semicolon)
        return end;
    while (len > end && isspace((unsigned char)query[len - 1]))
        len--;
    return len;
}

char *pgsrc_trim_query(const char *query)
{
    return strndup(query, trimmed_len(query));
}

/* Appends libpq's escaping of s (PQescapeIdentifier or PQescapeLiteral).
 * libpq refuses text that is not valid in the client encoding, and fails
 * when out of memory; the buffer is then marked failed too, so a builder
 * that checks only at the end never runs the incomplete text. */
static bool append_escaped(ds_buf *b, pgsrc_conn *conn, const char *s, bool ident, ds_error *err)
{
    if (b->failed)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    char *q = ident ? PQescapeIdentifier(conn->pg, s, strlen(s)) : PQescapeLiteral(conn->pg, s, strlen(s));
    if (q == NULL) {
        b->failed = true;
        const char *msg = PQerrorMessage(conn->pg);
        if (ident)
            return ds_error_set(err, DS_ERR_SOURCE, "cannot quote the name \"%s\" for PostgreSQL: %.*s", s,
                                first_line_len(msg), msg);
        return ds_error_set(err, DS_ERR_SOURCE, "cannot quote a value for PostgreSQL: %.*s",
                            first_line_len(msg), msg);
    }
    bool ok = ds_buf_append(b, q);
    PQfreemem(q);
    return ok || ds_error_set(err, DS_ERR_NOMEM, "out of memory");
}

bool pgsrc_append_ident(ds_buf *b, pgsrc_conn *conn, const char *ident, ds_error *err)
{
    return append_escaped(b, conn, ident, true, err);
}

bool pgsrc_append_literal(ds_buf *b, pgsrc_conn *conn, const char *value, ds_error *err)
{
    return append_escaped(b, conn, value, false, err);
}

char *pgsrc_quote_ident(pgsrc_conn *conn, const char *ident)
{
    ds_buf b = DS_BUF_INIT;
    pgsrc_append_ident(&b, conn, ident, NULL);
    return ds_buf_take(&b);
}

char *pgsrc_quote_literal(pgsrc_conn *conn, const char *value)
{
    ds_buf b = DS_BUF_INIT;
    pgsrc_append_literal(&b, conn, value, NULL);
    return ds_buf_take(&b);
}

/* The fact of a type in facts, or NULL. */
static const pgsrc_type_fact *known_type(const struct pgsrc_type_facts *facts, uint32_t oid)
{
    for (size_t i = 0; i < facts->n; i++)
        if (facts->v[i].oid == oid)
            return &facts->v[i];
    return NULL;
}

/* OIDs below FirstNormalObjectId belong to the server's own catalog. */
#define PG_FIRST_NORMAL_OID 16384u

static void add_type_fact(struct pgsrc_type_facts *facts, uint32_t oid, const char *name, char typtype,
                          char category)
{
    if (known_type(facts, oid) != NULL)
        return;
    pgsrc_type_fact *grown = realloc(facts->v, (facts->n + 1) * sizeof *grown);
    if (grown == NULL)
        return; /* not remembered: looked up again next time */
    facts->v = grown;
    char *copy = strdup(name);
    if (copy == NULL)
        return;
    grown[facts->n++] = (pgsrc_type_fact){.oid = oid, .typtype = typtype, .category = category, .name = copy};
}

/* Asks pg_type for the facts of the columns' types this session has not
 * remembered; built-in ones are remembered for the session, the others
 * (users' types, which may change) go to this_call. */
static bool query_types(pgsrc_conn *conn, const pgsrc_desc *desc, struct pgsrc_type_facts *this_call,
                        ds_error *err)
{
    ds_buf list = DS_BUF_INIT;
    ds_buf_appendc(&list, '{');
    bool any = false;
    for (size_t i = 0; i < desc->ncols; i++) {
        if (known_type(&conn->types, desc->cols[i].oid) != NULL)
            continue;
        ds_buf_appendf(&list, "%s%u", any ? "," : "", desc->cols[i].oid);
        any = true;
    }
    ds_buf_appendc(&list, '}');
    char *oids = ds_buf_take_or_err(&list, err);
    if (oids == NULL || !any) {
        free(oids);
        return oids != NULL || !any;
    }
    const char *params[] = {oids};
    PGresult *res = NULL;
    if (PQsendQueryParams(conn->pg,
                          "SELECT oid, format_type(oid, NULL), typtype, typcategory "
                          "FROM pg_catalog.pg_type WHERE oid = ANY($1::oid[])",
                          1, NULL, params, NULL, NULL, 0))
        res = pgsrc_await_result(conn, err);
    else
        result_error(conn, NULL, err);
    free(oids);
    if (res == NULL)
        return false;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        result_error(conn, res, err);
        PQclear(res);
        return false;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        uint32_t oid = (uint32_t)strtoul(PQgetvalue(res, r, 0), NULL, 10);
        const char *name = PQgetvalue(res, r, 1);
        char typtype = PQgetvalue(res, r, 2)[0], category = PQgetvalue(res, r, 3)[0];
        add_type_fact(oid < PG_FIRST_NORMAL_OID ? &conn->types : this_call, oid, name, typtype, category);
    }
    PQclear(res);
    return true;
}

/* Catalog facts for the columns' types: the name to cast literals to, and
 * what to do with types that have no built-in mapping. */
static bool lookup_types(pgsrc_conn *conn, pgsrc_desc *desc, ds_error *err)
{
    /* The server's own types are looked up once per session; types users
     * create (enums, domains) at every describe, as they may change. */
    struct pgsrc_type_facts this_call = {0};
    bool ok = query_types(conn, desc, &this_call, err);
    for (size_t i = 0; ok && i < desc->ncols; i++) {
        pgsrc_column *c = &desc->cols[i];
        const pgsrc_type_fact *fact = known_type(&conn->types, c->oid);
        if (fact == NULL)
            fact = known_type(&this_call, c->oid);
        char typtype = fact ? fact->typtype : 'b', category = fact ? fact->category : 'U';
        c->pg_type = strdup(fact ? fact->name : "text");
        if (c->pg_type == NULL) {
            ok = ds_error_set(err, DS_ERR_NOMEM, "out of memory");
            break;
        }
        if (pgtypes_map_builtin(c->oid, c->typmod, &c->type)) {
            c->cast = PGSRC_CAST_NONE;
        } else if (typtype == 'e') { /* enum: its binary form is the label */
            pgtypes_text_type(&c->type);
            c->cast = PGSRC_CAST_NONE;
        } else if (category == 'A') {
            pgtypes_text_list_type(&c->type);
            c->cast = PGSRC_CAST_TEXT_ARRAY;
        } else {
            pgtypes_text_type(&c->type);
            c->cast = PGSRC_CAST_TEXT;
        }
    }
    type_facts_free(&this_call);
    return ok;
}

/* pgsrc_append_copy_sql, setting *query_at to the byte where the query
 * starts in b. */
static bool append_copy_sql(ds_buf *b, pgsrc_conn *conn, const char *query, const pgsrc_desc *desc,
                            const char *where, int64_t limit, size_t *query_at, ds_error *err)
{
    ds_buf_append(b, "COPY (SELECT ");
    for (size_t i = 0; i < desc->ncols; i++) {
        const pgsrc_column *c = &desc->cols[i];
        if (i)
            ds_buf_append(b, ", ");
        if (!pgsrc_append_ident(b, conn, c->name, err))
            return false;
        if (c->cast == PGSRC_CAST_NONE)
            continue;
        ds_buf_append(b, c->cast == PGSRC_CAST_TEXT_ARRAY ? "::text[] AS " : "::text AS ");
        if (!pgsrc_append_ident(b, conn, c->name, err))
            return false;
    }
    /* The newline ends a trailing "-- comment" in the query. */
    ds_buf_append(b, " FROM (");
    *query_at = b->len;
    ds_buf_appendn(b, query, trimmed_len(query));
    ds_buf_append(b, "\n) AS _ds");
    if (where) {
        ds_buf_append(b, " WHERE ");
        ds_buf_append(b, where);
    }
    if (limit >= 0)
        ds_buf_appendf(b, " LIMIT %lld", (long long)limit);
    if (!ds_buf_append(b, ") TO STDOUT (FORMAT binary)"))
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    return true;
}

bool pgsrc_append_copy_sql(ds_buf *b, pgsrc_conn *conn, const char *query, const pgsrc_desc *desc,
                           const char *where, int64_t limit, ds_error *err)
{
    size_t query_at;
    return append_copy_sql(b, conn, query, desc, where, limit, &query_at, err);
}

/* SQLSTATE classes of failures that are not the query's: the connection,
 * the server's resources, locks, transactions, operator actions, internal
 * errors, a foreign server. Anything else PostgreSQL rejects the query with
 * is for the config to fix. */
static bool transient_state(const char *state)
{
    static const char *const classes[] = {"08", "25", "40", "53", "55", "57", "58", "XX", "F0", "HV"};
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++)
        if (strncmp(state, classes[i], 2) == 0)
            return true;
    return false;
}

/* Byte offset of the 1-based character position pos in text (UTF-8, the
 * client encoding), or -1 past its end. */
static long char_to_byte(const char *text, size_t len, long pos)
{
    long chars = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)text[i] & 0xc0) == 0x80)
            continue;
        if (++chars == pos)
            return (long)i;
    }
    return -1;
}

/* A failed describe or probe: the server's message and hint, the error
 * position as a byte offset in the query (out->error_at; sent is the SQL
 * sent, which holds the query at byte query_at), DS_ERR_CONFIG unless the
 * failure is the server's or the connection's. */
static bool describe_error(pgsrc_conn *conn, PGresult *res, const char *sent, size_t query_at,
                           size_t query_len, bool wrapped, pgsrc_desc *out, ds_error *err)
{
    out->error_at = -1;
    if (res == NULL || PQresultStatus(res) != PGRES_FATAL_ERROR) {
        if (res == NULL && conn->hung)
            return false;
        return result_error(conn, res, err);
    }
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
    const char *position = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
    if (state == NULL || primary == NULL || strcmp(state, "57014") == 0 || transient_state(state))
        return result_error(conn, res, err);
    long at = position ? char_to_byte(sent, strlen(sent), strtol(position, NULL, 10)) : -1;
    if (at >= (long)query_at && at < (long)(query_at + query_len))
        out->error_at = at - (long)query_at;
    /* The query prepared on its own: a syntax error once wrapped is a
     * statement that cannot be a subquery (DELETE ... RETURNING), as is a
     * data-modifying WITH. */
    bool not_select = wrapped && (strcmp(state, "42601") == 0 || strcmp(state, "0A000") == 0);
    return ds_error_set(err, DS_ERR_CONFIG, "%.*s (SQLSTATE %s%s%.*s)%s", first_line_len(primary), primary,
                        state, hint ? "; HINT: " : "", hint ? first_line_len(hint) : 0, hint ? hint : "",
                        not_select
                            ? "; duckstore reads the query as a subquery (COPY (SELECT ... FROM (query)) "
                              "...): it must be a single SELECT that changes nothing"
                            : "");
}

/* Runs the query wrapped exactly as the sync's COPY wraps it, returning no
 * row (LIMIT 0): what preparing alone does not check fails here, at the
 * cost of one round trip: privileges (checked when the executor starts),
 * statements that cannot be a subquery (DELETE ... RETURNING, a
 * data-modifying WITH) and text the wrapper breaks. */
static bool probe_copy(pgsrc_conn *conn, const char *query, pgsrc_desc *desc, ds_error *err)
{
    ds_buf sql = DS_BUF_INIT;
    size_t query_at = 0;
    if (!append_copy_sql(&sql, conn, query, desc, NULL, 0, &query_at, err)) {
        ds_buf_free(&sql);
        return false;
    }
    /* The same statement ran without error on this session before (its
     * columns and types are in the text): the read that follows reports
     * what may have changed since, such as a revoked privilege. */
    if (conn->probed_copy != NULL && strcmp(conn->probed_copy, ds_buf_str(&sql)) == 0) {
        ds_buf_free(&sql);
        return true;
    }
    PGresult *res = pgsrc_copy_run(conn, ds_buf_str(&sql), err);
    bool ok = res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        describe_error(conn, res, ds_buf_str(&sql), query_at, trimmed_len(query), true, desc, err);
    PQclear(res);
    free(conn->probed_copy);
    conn->probed_copy = ok ? ds_buf_take(&sql) : NULL;
    ds_buf_free(&sql);
    return ok;
}

/* Prepares the query as the unnamed statement and describes it in one
 * round trip (libpq's pipeline mode; every table of every sync does this).
 * *prepared and *described are the two results, NULL where none came (err
 * says why); a failed prepare's describe is PGRES_PIPELINE_ABORTED. */
static void prepare_and_describe(pgsrc_conn *conn, const char *query, PGresult **prepared,
                                 PGresult **described, ds_error *err)
{
    *prepared = *described = NULL;
    if (!PQenterPipelineMode(conn->pg)) {
        result_error(conn, NULL, err);
        return;
    }
    if (PQsendPrepare(conn->pg, "", query, 0, NULL) && PQsendDescribePrepared(conn->pg, "") &&
        PQpipelineSync(conn->pg) && (*prepared = pgsrc_await_result(conn, err)) != NULL &&
        (*described = pgsrc_await_result(conn, err)) != NULL) {
        PGresult *sync = pgsrc_await_result(conn, err);
        if (sync != NULL && PQresultStatus(sync) != PGRES_PIPELINE_SYNC) {
            PQclear(*described);
            *described = NULL;
            ds_error_set(err, DS_ERR_SOURCE, "the describe's pipeline ended with %s",
                         PQresStatus(PQresultStatus(sync)));
        }
        PQclear(sync);
    } else if (*prepared == NULL && !conn->hung) {
        result_error(conn, NULL, err);
    }
    /* Fails only with results left, on a connection given up already. */
    PQexitPipelineMode(conn->pg);
}

bool pgsrc_describe(pgsrc_conn *conn, const char *query, pgsrc_desc *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    out->error_at = -1;
    char *trimmed = pgsrc_trim_query(query);
    if (trimmed == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    PGresult *prepared = NULL, *res = NULL;
    prepare_and_describe(conn, trimmed, &prepared, &res, err);
    if (prepared == NULL || PQresultStatus(prepared) != PGRES_COMMAND_OK || res == NULL ||
        PQresultStatus(res) != PGRES_COMMAND_OK) {
        bool prepare_failed = prepared == NULL || PQresultStatus(prepared) != PGRES_COMMAND_OK;
        describe_error(conn, prepare_failed ? prepared : res, trimmed, 0, strlen(trimmed), false, out, err);
        free(trimmed);
        PQclear(prepared);
        PQclear(res);
        return false;
    }
    PQclear(prepared);
    free(trimmed);
    int n = PQnfields(res);
    if (n == 0) {
        PQclear(res);
        return ds_error_set(err, DS_ERR_CONFIG, "the query returns no columns; it must be a SELECT");
    }
    if (PQnparams(res) > 0) {
        PQclear(res);
        return ds_error_set(err, DS_ERR_CONFIG,
                            "the query has $n parameters; write the values into the query");
    }
    out->cols = calloc((size_t)n, sizeof *out->cols);
    if (out->cols == NULL) {
        PQclear(res);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    out->ncols = (size_t)n;
    for (int i = 0; i < n; i++) {
        out->cols[i].name = strdup(PQfname(res, i));
        if (out->cols[i].name == NULL) {
            ds_error_set(err, DS_ERR_NOMEM, "out of memory");
            PQclear(res);
            pgsrc_desc_free(out);
            return false;
        }
        out->cols[i].oid = PQftype(res, i);
        out->cols[i].typmod = PQfmod(res, i);
        out->cols[i].table_oid = PQftable(res, i) == InvalidOid ? 0 : (uint32_t)PQftable(res, i);
        out->cols[i].table_col = PQftablecol(res, i);
        /* DuckDB's names ignore (ASCII) case: "A" and "a" would be one
         * column there. */
        for (int j = 0; j < i; j++) {
            if (strcasecmp(out->cols[j].name, out->cols[i].name) == 0) {
                bool same = strcmp(out->cols[j].name, out->cols[i].name) == 0;
                ds_error_set(err, DS_ERR_CONFIG,
                             "the query returns two columns named \"%s\"%s%s%s; give one of them another "
                             "name (... AS other_name)%s",
                             out->cols[j].name, same ? "" : " and \"", same ? "" : out->cols[i].name,
                             same ? "" : "\"", same ? "" : ": DuckDB's column names ignore case");
                PQclear(res);
                pgsrc_desc_free(out);
                return false;
            }
        }
    }
    PQclear(res);
    if (!lookup_types(conn, out, err) || !probe_copy(conn, query, out, err)) {
        pgsrc_desc_free(out);
        return false;
    }
    return true;
}

void pgsrc_desc_free(pgsrc_desc *desc)
{
    for (size_t i = 0; i < desc->ncols; i++) {
        free(desc->cols[i].name);
        free(desc->cols[i].pg_type);
    }
    free(desc->cols);
    desc->cols = NULL;
    desc->ncols = 0;
}

int pgsrc_desc_find(const pgsrc_desc *desc, const char *name)
{
    for (size_t i = 0; i < desc->ncols; i++)
        if (strcmp(desc->cols[i].name, name) == 0)
            return (int)i;
    return -1;
}

char *pgsrc_desc_column_list(const pgsrc_desc *desc)
{
    ds_buf b = DS_BUF_INIT;
    for (size_t i = 0; i < desc->ncols; i++) {
        if (i)
            ds_buf_append(&b, ", ");
        ds_buf_append(&b, desc->cols[i].name);
    }
    return ds_buf_take(&b);
}

char *pgsrc_copy_sql(pgsrc_conn *conn, const char *query, const pgsrc_desc *desc, const char *where,
                     int64_t limit)
{
    ds_buf b = DS_BUF_INIT;
    if (!pgsrc_append_copy_sql(&b, conn, query, desc, where, limit, NULL)) {
        ds_buf_free(&b);
        return NULL;
    }
    return ds_buf_take(&b);
}
