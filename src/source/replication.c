/* replication.h on libpq: a walsender connection (replication=database),
 * its commands, and the CopyBoth stream of START_REPLICATION with its
 * XLogData, keepalive and standby status messages. Every wait polls the
 * socket within a bound, as pgsrc's statements do. */
#include "source/replication.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "common/clock.h"
#include "common/strbuf.h"
#include "source/pgoutput.h"
#include "source/pgsrc.h"
#include "source/pgsrc_wait.h"

/* Seconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01. */
#define PG_EPOCH_OFFSET_S 946684800LL

/* Longest slot name PostgreSQL keeps (NAMEDATALEN - 1). */
#define SLOT_NAME_MAX 63

static int first_line_len(const char *msg)
{
    return (int)strcspn(msg, "\n");
}

static uint64_t get_u64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (unsigned char)p[i];
    return v;
}

static void put_u64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

/* The pgsrc view of the connection, so its bounded waits and error
 * classification serve both. */
static pgsrc_conn as_pgsrc(const repl_conn *c)
{
    pgsrc_conn pc;
    memset(&pc, 0, sizeof pc);
    pc.pg = c->pg;
    pc.silence_s = c->silence_s;
    return pc;
}

/* The silence bound was hit (the socket is shut down by then). cause says
 * what the server may be waiting for, or NULL for a hung server. */
static bool silence_error(const repl_conn *c, const char *what, const char *cause, ds_error *err)
{
    return ds_error_set(
        err, DS_ERR_SOURCE,
        "PostgreSQL sent nothing for %g s %s on the replication connection: %s; the connection "
        "was closed",
        c->silence_s, what, cause ? cause : "the server or the network path to it hangs");
}

/* Copies libpq's message with the text inside each pair of double quotes
 * replaced by "...": a conninfo that does not parse is quoted back in
 * pieces by libpq, and a piece may be the password. */
static void scrub_quoted(const char *msg, char *out, size_t cap)
{
    size_t o = 0;
    bool inside = false;
    for (const char *s = msg; *s != '\0' && *s != '\n' && o + 4 < cap; s++) {
        if (*s == '"') {
            if (!inside) {
                memcpy(out + o, "\"...", 4);
                o += 4;
            } else {
                out[o++] = '"';
            }
            inside = !inside;
        } else if (!inside) {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
}

/* The fix for the two refusals a replication connection meets that a
 * normal one does not. */
static const char *connect_hint(const char *msg)
{
    if (strstr(msg, "replication role") != NULL || strstr(msg, "start WAL sender") != NULL ||
        strstr(msg, "REPLICATION attribute") != NULL)
        return "; logical capture needs a role with the REPLICATION attribute: ALTER ROLE <role> REPLICATION "
               "(or use a role that has it)";
    /* PostgreSQL matches a logical replication connection against the
     * lines of its database, like a normal one; the "replication" keyword
     * is for physical replication only, and a common wrong fix. */
    if (strstr(msg, "pg_hba.conf") != NULL)
        return "; a logical replication connection matches the pg_hba.conf lines of its database like any "
               "other (lines for \"replication\" apply to physical replication only): allow this role and "
               "database there and reload PostgreSQL";
    return "";
}

bool repl_connect(const char *url, double timeout_s, repl_conn *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (opts == NULL) {
        char msg[512];
        scrub_quoted(perr ? perr : "out of memory", msg, sizeof msg);
        PQfreemem(perr);
        return ds_error_set(err, DS_ERR_CONFIG, "cannot read the connection string: %s", msg);
    }
    PQconninfoFree(opts);
    /* pgsrc_connect's session settings; replication and client_encoding
     * after dbname so that the URL cannot turn them off. */
    const char *keys[] = {
        "connect_timeout",  "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
        "application_name", "dbname",     "replication",     "client_encoding",     NULL};
    const char *vals[] = {"10", "1", "30", "10", "3", "duckstore", url, "database", "UTF8", NULL};
    out->pg = PQconnectdbParams(keys, vals, 1);
    if (out->pg == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory connecting to PostgreSQL");
    if (PQstatus(out->pg) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(out->pg);
        ds_error_set(err, DS_ERR_SOURCE, "cannot open a replication connection to PostgreSQL: %.*s%s",
                     first_line_len(msg), msg, connect_hint(msg));
        PQfinish(out->pg);
        out->pg = NULL;
        return false;
    }
    pgsrc_conn pc = as_pgsrc(out);
    pgsrc_set_log_name(&pc, NULL);
    out->silence_s = timeout_s;
    return true;
}

void repl_disconnect(repl_conn *c)
{
    if (c->buf != NULL)
        PQfreemem(c->buf);
    if (c->pg != NULL)
        PQfinish(c->pg);
    memset(c, 0, sizeof *c);
}

/* Runs a replication command within the silence bound; its result (the
 * caller checks the status and PQclear()s it) or NULL with err set. */
static PGresult *run_command(repl_conn *c, const char *sql, const char *what, const char *cause,
                             ds_error *err)
{
    pgsrc_conn pc = as_pgsrc(c);
    if (!PQsendQuery(c->pg, sql)) {
        pgsrc_result_error(&pc, NULL, err);
        return NULL;
    }
    PGresult *res = pgsrc_await_result(&pc, err);
    if (res == NULL && pc.hung)
        silence_error(c, what, cause, err);
    return res;
}

/* Slot names are what PostgreSQL allows unquoted in its replication
 * commands and functions: lower-case letters, digits and underscores. */
static bool check_slot_name(const char *slot, ds_error *err)
{
    size_t n = slot ? strlen(slot) : 0;
    if (n == 0 || n > SLOT_NAME_MAX || strspn(slot, "abcdefghijklmnopqrstuvwxyz0123456789_") != n)
        return ds_error_set(err, DS_ERR_CONFIG,
                            "invalid replication slot name \"%s\": PostgreSQL allows 1 to %d lower-case "
                            "letters, digits and underscores",
                            slot ? slot : "", SLOT_NAME_MAX);
    return true;
}

bool repl_create_slot(repl_conn *c, const char *slot, uint64_t *consistent_lsn, char **snapshot,
                      ds_error *err)
{
    *snapshot = NULL;
    if (!check_slot_name(slot, err))
        return false;
    if (c->streaming)
        return ds_error_set(err, DS_ERR_SOURCE, "cannot create a slot while the connection streams");
    /* EXPORT_SNAPSHOT, not (SNAPSHOT 'export'): the older spelling is read
     * by every PostgreSQL from 10 on, the newer only from 15. */
    ds_buf sql = DS_BUF_INIT;
    ds_buf_append(&sql, "CREATE_REPLICATION_SLOT ");
    ds_buf_append_ident(&sql, slot);
    ds_buf_append(&sql, " LOGICAL pgoutput EXPORT_SNAPSHOT");
    const char *text = ds_buf_str(&sql);
    if (text == NULL) {
        ds_buf_free(&sql);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    /* The server waits for the transactions running now to end before it
     * answers. */
    PGresult *res = run_command(c, text, "while creating a replication slot",
                                "the server waits for every transaction that was running when the slot was "
                                "asked for to end (or it hangs): end long transactions, or raise the timeout",
                                err);
    ds_buf_free(&sql);
    if (res == NULL)
        return false;
    bool ok = false;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pgsrc_conn pc = as_pgsrc(c);
        pgsrc_result_error(&pc, res, err);
        ds_error_prefix(err, "cannot create the replication slot \"%s\": ", slot);
    } else if (PQntuples(res) != 1 || PQnfields(res) < 3 || PQgetisnull(res, 0, 1) ||
               PQgetisnull(res, 0, 2) || !pgo_lsn_parse(PQgetvalue(res, 0, 1), consistent_lsn)) {
        ds_error_set(err, DS_ERR_SOURCE,
                     "CREATE_REPLICATION_SLOT \"%s\" answered without a consistent point and snapshot", slot);
    } else if ((*snapshot = strdup(PQgetvalue(res, 0, 2))) == NULL) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    } else {
        ok = true;
    }
    PQclear(res);
    return ok;
}

bool repl_drop_slot(repl_conn *c, const char *slot, ds_error *err)
{
    if (!check_slot_name(slot, err))
        return false;
    if (c->streaming)
        return ds_error_set(err, DS_ERR_SOURCE, "cannot drop a slot while the connection streams");
    ds_buf sql = DS_BUF_INIT;
    ds_buf_append(&sql, "DROP_REPLICATION_SLOT ");
    ds_buf_append_ident(&sql, slot);
    const char *text = ds_buf_str(&sql);
    PGresult *res = text ? run_command(c, text, "while dropping a replication slot", NULL, err) : NULL;
    if (text == NULL)
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    ds_buf_free(&sql);
    if (res == NULL)
        return false;
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        pgsrc_conn pc = as_pgsrc(c);
        pgsrc_result_error(&pc, res, err);
        ds_error_prefix(err, "cannot drop the replication slot \"%s\": ", slot);
    }
    PQclear(res);
    return ok;
}

bool repl_start(repl_conn *c, const char *slot, const char *publication, uint64_t start, int proto_version,
                ds_error *err)
{
    if (!check_slot_name(slot, err))
        return false;
    if (publication == NULL || publication[0] == '\0')
        return ds_error_set(err, DS_ERR_CONFIG, "no publication to stream from");
    if (proto_version < 1 || proto_version > 2)
        return ds_error_set(err, DS_ERR_SOURCE, "pgoutput protocol version %d: duckstore reads 1 and 2",
                            proto_version);
    if (c->streaming)
        return ds_error_set(err, DS_ERR_SOURCE, "the replication connection streams already");
    char lsn[24];
    pgo_lsn_format(start, lsn);
    /* publication_names is a string literal holding a list of identifiers:
     * the name quoted as an identifier, then all of it as a literal. */
    ds_buf names = DS_BUF_INIT, sql = DS_BUF_INIT;
    ds_buf_append_ident(&names, publication);
    ds_buf_append(&sql, "START_REPLICATION SLOT ");
    ds_buf_append_ident(&sql, slot);
    ds_buf_appendf(&sql, " LOGICAL %s (proto_version '%d', publication_names ", lsn, proto_version);
    const char *list = ds_buf_str(&names);
    ds_buf_append_literal(&sql, list ? list : "");
    ds_buf_append(&sql, ", binary 'true'");
    if (proto_version >= 2)
        ds_buf_append(&sql, ", streaming 'on'");
    ds_buf_append(&sql, ")");
    const char *text = list ? ds_buf_str(&sql) : NULL;
    PGresult *res = text ? run_command(c, text, "while starting replication", NULL, err) : NULL;
    if (text == NULL)
        ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    ds_buf_free(&names);
    ds_buf_free(&sql);
    if (res == NULL)
        return false;
    bool ok = PQresultStatus(res) == PGRES_COPY_BOTH;
    if (!ok) {
        pgsrc_conn pc = as_pgsrc(c);
        pgsrc_result_error(&pc, res, err);
        ds_error_prefix(err, "cannot start replication from slot \"%s\": ", slot);
    }
    PQclear(res);
    /* Non-blocking while streaming, so that no send waits past the
     * bounds of flush_bounded and send_copy. */
    if (ok && PQsetnonblocking(c->pg, 1) != 0) {
        const char *msg = PQerrorMessage(c->pg);
        ds_error_set(err, DS_ERR_SOURCE, "cannot stream from PostgreSQL: %.*s", first_line_len(msg), msg);
        ok = false;
    }
    c->streaming = ok;
    return ok;
}

static void end_streaming(repl_conn *c)
{
    c->streaming = false;
    PQsetnonblocking(c->pg, 0);
}

/* Waits for the socket (POLLIN or POLLOUT) until deadline (monotonic
 * seconds); 1 ready, 0 the deadline passed, -1 the socket is gone. */
static int wait_socket(repl_conn *c, short events, double deadline)
{
    int fd = PQsocket(c->pg);
    if (fd < 0)
        return -1;
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        /* Once at least, so that what already arrived is seen. */
        double left = deadline - ds_monotonic_s();
        int r = poll(&p, 1, left > 0 ? (int)(left * 1000.0) + 1 : 0);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (r == 0 && ds_monotonic_s() >= deadline)
            return 0;
    }
}

/* The stream's end: the server's CopyDone or an error, and the command's
 * final result. */
static repl_event stream_end(repl_conn *c, ds_error *err)
{
    end_streaming(c);
    pgsrc_conn pc = as_pgsrc(c);
    PGresult *res = pgsrc_await_result(&pc, err);
    if (res == NULL) {
        if (pc.hung)
            silence_error(c, "at the end of the stream", NULL, err);
        return REPL_END;
    }
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        pgsrc_result_error(&pc, res, err);
    else
        ds_error_set(err, DS_ERR_SOURCE, "PostgreSQL ended the replication stream");
    PQclear(res);
    return REPL_END;
}

repl_event repl_next(repl_conn *c, double wait_s, const char **payload, size_t *len, uint64_t *wal_start,
                     bool *reply_requested, ds_error *err)
{
    *payload = NULL;
    *len = 0;
    *wal_start = 0;
    *reply_requested = false;
    if (c->buf != NULL) {
        PQfreemem(c->buf);
        c->buf = NULL;
    }
    if (!c->streaming) {
        ds_error_set(err, DS_ERR_SOURCE, "the replication connection does not stream (repl_start first)");
        return REPL_ERROR;
    }
    double deadline = ds_monotonic_s() + (wait_s > 0 ? wait_s : 0);
    int n;
    for (;;) {
        n = PQgetCopyData(c->pg, &c->buf, 1);
        if (n == -1)
            return stream_end(c, err);
        if (n == -2) {
            const char *msg = PQerrorMessage(c->pg);
            ds_error_set(err, DS_ERR_SOURCE, "the replication stream broke: %.*s", first_line_len(msg), msg);
            return REPL_ERROR;
        }
        if (n > 0)
            break;
        int ready = wait_socket(c, POLLIN, deadline);
        if (ready == 0)
            return REPL_TIMEOUT;
        if (ready < 0 || !PQconsumeInput(c->pg)) {
            const char *msg = PQerrorMessage(c->pg);
            ds_error_set(err, DS_ERR_SOURCE, "the replication stream broke: %.*s", first_line_len(msg), msg);
            return REPL_ERROR;
        }
    }
    const char *m = c->buf;
    size_t size = (size_t)n;
    /* XLogData: 'w', start LSN, end LSN, send time, then the payload. */
    if (m[0] == 'w' && size >= 25) {
        *wal_start = get_u64(m + 1);
        uint64_t end = get_u64(m + 9);
        if (end > c->server_wal_end)
            c->server_wal_end = end;
        *payload = m + 25;
        *len = size - 25;
        return REPL_DATA;
    }
    /* Primary keepalive: 'k', WAL end, send time, reply requested. */
    if (m[0] == 'k' && size == 18) {
        uint64_t end = get_u64(m + 1);
        if (end > c->server_wal_end)
            c->server_wal_end = end;
        *wal_start = end;
        *reply_requested = m[17] != 0;
        return REPL_KEEPALIVE;
    }
    ds_error_set(
        err, DS_ERR_SOURCE,
        "unexpected replication message of type 0x%02x and %d bytes (XLogData 'w' of 25 bytes or more "
        "and keepalives 'k' of 18 are known)",
        (unsigned char)m[0], n);
    return REPL_ERROR;
}

static bool send_stalled(repl_conn *c, const char *what, ds_error *err)
{
    shutdown(PQsocket(c->pg), SHUT_RDWR);
    return ds_error_set(err, DS_ERR_SOURCE,
                        "PostgreSQL took nothing for %g s while duckstore sent %s on the replication "
                        "connection: the server or the network path to it hangs; the connection was closed",
                        c->silence_s, what);
}

/* Sends what libpq buffered, within the silence bound. */
static bool flush_bounded(repl_conn *c, const char *what, ds_error *err)
{
    double deadline = ds_monotonic_s() + c->silence_s;
    for (;;) {
        int r = PQflush(c->pg);
        if (r == 0)
            return true;
        if (r < 0)
            break;
        int ready = wait_socket(c, POLLOUT | POLLIN, deadline);
        if (ready == 0)
            return send_stalled(c, what, err);
        /* Reading what the server sent keeps it from blocking on us. */
        if (ready < 0 || !PQconsumeInput(c->pg))
            break;
    }
    const char *msg = PQerrorMessage(c->pg);
    return ds_error_set(err, DS_ERR_SOURCE, "cannot send %s to PostgreSQL: %.*s", what, first_line_len(msg),
                        msg);
}

/* Queues a CopyData message (data) or the CopyDone (data NULL) and sends
 * it, within the silence bound. */
static bool send_copy(repl_conn *c, const char *data, int len, const char *what, ds_error *err)
{
    double deadline = ds_monotonic_s() + c->silence_s;
    for (;;) {
        int r = data ? PQputCopyData(c->pg, data, len) : PQputCopyEnd(c->pg, NULL);
        if (r == 1)
            return flush_bounded(c, what, err);
        if (r < 0)
            break;
        /* Non-blocking and libpq's buffer is full: let it drain. */
        int ready = wait_socket(c, POLLOUT, deadline);
        if (ready == 0)
            return send_stalled(c, what, err);
        if (ready < 0 || PQflush(c->pg) < 0)
            break;
    }
    const char *e = PQerrorMessage(c->pg);
    return ds_error_set(err, DS_ERR_SOURCE, "cannot send %s to PostgreSQL: %.*s", what, first_line_len(e), e);
}

bool repl_send_feedback(repl_conn *c, uint64_t flushed, bool reply_requested, ds_error *err)
{
    if (!c->streaming)
        return ds_error_set(err, DS_ERR_SOURCE, "no replication stream to confirm a position on");
    /* Standby status update: 'r', written, flushed and applied LSN, the
     * client's clock in microseconds since 2000-01-01, reply requested. */
    char msg[34];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now_us = ((int64_t)ts.tv_sec - PG_EPOCH_OFFSET_S) * 1000000 + ts.tv_nsec / 1000;
    msg[0] = 'r';
    put_u64(msg + 1, flushed);
    put_u64(msg + 9, flushed);
    put_u64(msg + 17, flushed);
    put_u64(msg + 25, (uint64_t)now_us);
    msg[33] = reply_requested ? 1 : 0;
    return send_copy(c, msg, (int)sizeof msg, "a standby status update", err);
}

bool repl_stop(repl_conn *c, ds_error *err)
{
    if (c->buf != NULL) {
        PQfreemem(c->buf);
        c->buf = NULL;
    }
    if (!c->streaming)
        return true;
    if (!send_copy(c, NULL, 0, "the end of the replication stream", err)) {
        end_streaming(c);
        return false;
    }
    /* The server may still send what it had queued before its own
     * CopyDone; that is dropped. */
    double deadline = ds_monotonic_s() + c->silence_s;
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(c->pg, &buf, 1);
        if (buf != NULL)
            PQfreemem(buf);
        if (n > 0) {
            deadline = ds_monotonic_s() + c->silence_s;
            continue;
        }
        if (n == -1)
            break;
        if (n == -2) {
            const char *e = PQerrorMessage(c->pg);
            end_streaming(c);
            return ds_error_set(err, DS_ERR_SOURCE, "the replication stream broke while ending: %.*s",
                                first_line_len(e), e);
        }
        int ready = wait_socket(c, POLLIN, deadline);
        if (ready == 0) {
            end_streaming(c);
            shutdown(PQsocket(c->pg), SHUT_RDWR);
            return silence_error(c, "while ending the stream", NULL, err);
        }
        if (ready < 0 || !PQconsumeInput(c->pg)) {
            const char *e = PQerrorMessage(c->pg);
            end_streaming(c);
            return ds_error_set(err, DS_ERR_SOURCE, "the replication stream broke while ending: %.*s",
                                first_line_len(e), e);
        }
    }
    end_streaming(c);
    pgsrc_conn pc = as_pgsrc(c);
    PGresult *res = pgsrc_await_result(&pc, err);
    if (res == NULL)
        return pc.hung ? silence_error(c, "while ending the stream", NULL, err) : false;
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        pgsrc_result_error(&pc, res, err);
    PQclear(res);
    return ok;
}
