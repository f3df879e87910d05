/* Streaming a binary COPY ... TO STDOUT chunk by chunk into the decoder,
 * and ending it cleanly (cancel, drain) so the connection can be reused. */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "source/pgsrc.h"
#include "source/pgsrc_wait.h"

/* After a cancel or an error: read what is left so the connection can be
 * used (or closed) cleanly. */
static void drain_copy(pgsrc_conn *conn)
{
    char *buf;
    int n;
    ds_error ignored;
    while ((n = PQgetCopyData(conn->pg, &buf, 1)) >= 0) {
        if (n > 0)
            PQfreemem(buf);
        else if (!pgsrc_await_input(conn, &ignored))
            return;
    }
    PGresult *res;
    while ((res = pgsrc_await_result(conn, &ignored)) != NULL)
        PQclear(res);
}

PGresult *pgsrc_copy_run(pgsrc_conn *conn, const char *copy_sql, ds_error *err)
{
    PGresult *res = pgsrc_query(conn, copy_sql, err);
    if (PQresultStatus(res) != PGRES_COPY_OUT)
        return res;
    PQclear(res);
    char *buf;
    int n;
    while ((n = PQgetCopyData(conn->pg, &buf, 1)) >= 0) {
        if (n > 0)
            PQfreemem(buf);
        else if (!pgsrc_await_input(conn, err))
            return NULL;
    }
    return pgsrc_await_result(conn, err); /* the COPY's own result */
}

bool pgsrc_stream_open(pgsrc_stream *s, pgsrc_conn *conn, const char *copy_sql, copy_decoder *dec,
                       _Atomic uint64_t *bytes, ds_error *err)
{
    memset(s, 0, sizeof *s);
    s->conn = conn;
    s->dec = dec;
    s->bytes = bytes;
    if (copy_sql == NULL || dec == NULL) {
        /* The caller's builder (or decoder) ran out of memory. */
        s->ended = true;
        s->conn = NULL;
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    }
    PGresult *res = pgsrc_query(conn, copy_sql, err);
    if (PQresultStatus(res) != PGRES_COPY_OUT) {
        if (res)
            pgsrc_result_error(conn, res, err);
        PQclear(res);
        s->ended = true;
        s->conn = NULL; /* nothing to drain */
        return false;
    }
    PQclear(res);
    /* pgsrc_connect asks for client_encoding UTF8: PostgreSQL then
     * validates every text it sends (converting it from the server's
     * encoding, or checking it when that is SQL_ASCII), so DuckDB need not
     * check it again. */
    if (strcmp(pg_encoding_to_char(PQclientEncoding(conn->pg)), "UTF8") == 0)
        copy_decoder_trust_utf8(dec);
    return true;
}

/* The COPY's final result: an error raised after the last row (or a
 * cancel) shows up here. saw_trailer: the data ended with its marker. */
static bool stream_finish(pgsrc_stream *s, bool saw_trailer, ds_error *err)
{
    s->ended = true;
    PGresult *res = pgsrc_await_result(s->conn, err);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok && res)
        pgsrc_result_error(s->conn, res, err);
    PQclear(res);
    s->conn = NULL;
    if (ok && !saw_trailer)
        return ds_error_set(err, DS_ERR_DECODE, "COPY data ended without the end marker");
    return ok;
}

/* Binary COPY's file header (signature, flags, no extension), which
 * PostgreSQL sends in the message of the first tuple, and its trailer. */
static const char copy_header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";

/* Appends a tuple as a 4-byte length and its bytes unless past max;
 * false when it did not fit. */
static bool append_row(ds_buf *b, size_t used_elsewhere, size_t max, const char *msg, size_t len)
{
    if (b->len + used_elsewhere + 4 + len > max)
        return false;
    unsigned char n[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16), (unsigned char)(len >> 8),
                          (unsigned char)len};
    return ds_buf_appendn(b, (const char *)n, 4) && ds_buf_appendn(b, msg, len);
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Field col of a binary COPY tuple: *vlen -1 for NULL; false when the
 * tuple is shorter than its lengths say. */
static bool tuple_field(const unsigned char *t, size_t len, int col, const unsigned char **val, int32_t *vlen)
{
    if (len < 2 || col >= ((int)t[0] << 8 | t[1]))
        return false;
    size_t at = 2;
    for (int i = 0;; i++) {
        if (len - at < 4)
            return false;
        int32_t l = (int32_t)be32(t + at);
        at += 4;
        if (l > 0 && (size_t)l > len - at)
            return false;
        if (i == col) {
            *val = t + at;
            *vlen = l;
            return l >= -1;
        }
        if (l > 0)
            at += (size_t)l;
    }
}

/* The top rows (pgsrc_kept_rows): a larger value starts them anew. */
static void keep_top(pgsrc_kept_rows *keep, const char *msg, size_t len)
{
    const unsigned char *v;
    int32_t vlen;
    if (!tuple_field((const unsigned char *)msg, len, keep->top_col, &v, &vlen) ||
        (vlen != -1 && vlen != keep->top_width)) {
        keep->top_over = true; /* not what the column's type sends: keep nothing */
        return;
    }
    if (vlen == -1) {
        if (!keep->nulls_over && !append_row(&keep->nulls, keep->top.len, keep->max, msg, len))
            keep->nulls_over = true;
        return;
    }
    uint64_t u = 0;
    for (int i = 0; i < vlen; i++)
        u = u << 8 | v[i];
    int shift = 64 - 8 * vlen;
    int64_t value = (int64_t)(u << shift) >> shift; /* sign-extended */
    if (keep->have_top && value < keep->top_value)
        return;
    if (!keep->have_top || value > keep->top_value) {
        ds_buf_reset(&keep->top);
        keep->have_top = true;
        keep->top_value = value;
        keep->top_over = false;
    }
    if (!keep->top_over && !append_row(&keep->top, keep->nulls.len, keep->max, msg, len))
        keep->top_over = true;
}

static void keep_row(pgsrc_kept_rows *keep, const char *msg, size_t len)
{
    if (len >= sizeof copy_header && memcmp(msg, copy_header, sizeof copy_header) == 0) {
        msg += sizeof copy_header;
        len -= sizeof copy_header;
    }
    if (len == 0 || (len == 2 && (unsigned char)msg[0] == 0xff && (unsigned char)msg[1] == 0xff))
        return;
    if (!keep->over && !append_row(&keep->buf, 0, keep->max, msg, len))
        keep->over = true;
    if (keep->track_top)
        keep_top(keep, msg, len);
}

void pgsrc_kept_rows_finish(pgsrc_kept_rows *keep)
{
    if (keep->nulls.len > 0 && !keep->top_over && !keep->nulls_over &&
        !ds_buf_appendn(&keep->top, keep->nulls.data, keep->nulls.len))
        keep->top_over = true;
    ds_buf_reset(&keep->nulls);
}

uint64_t pgsrc_kept_rows_count(const pgsrc_kept_rows *keep)
{
    uint64_t n = 0;
    const unsigned char *p = (const unsigned char *)keep->buf.data;
    for (size_t at = 0; p != NULL && at + 4 <= keep->buf.len; n++)
        at += 4 + be32(p + at);
    return n;
}

void pgsrc_kept_rows_free(pgsrc_kept_rows *keep)
{
    ds_buf_free(&keep->buf);
    ds_buf_free(&keep->top);
    ds_buf_free(&keep->nulls);
}

/* Counts (and keeps) a message just received; false with err set for a
 * row too large to decode. */
static bool account(pgsrc_stream *s, const char *buf, int n, ds_error *err)
{
    s->bytes_read += (uint64_t)n;
    if (s->bytes)
        atomic_fetch_add_explicit(s->bytes, (uint64_t)n, memory_order_relaxed);
    if (s->keep != NULL)
        keep_row(s->keep, buf, (size_t)n);
    if ((uint64_t)n > s->largest_row)
        s->largest_row = (uint64_t)n;
    /* Decoding it would fail inside DuckDB's allocator. */
    if (s->row_bytes_max > 0 && (uint64_t)n > s->row_bytes_max)
        return ds_error_set(err, DS_ERR_STORE, "a row of %.1f MB", (double)n / 1e6);
    return true;
}

double pgsrc_wait_meter_total(pgsrc_wait_meter *m, double now)
{
    pthread_mutex_lock(&m->lock);
    double total = m->done_s + m->waiting * now - m->begun_s;
    pthread_mutex_unlock(&m->lock);
    return total;
}

static void wait_begins(pgsrc_wait_meter *m, double t)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    m->waiting++;
    m->begun_s += t;
    pthread_mutex_unlock(&m->lock);
}

static void wait_ends(pgsrc_wait_meter *m, double began, double t)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    m->waiting--;
    m->begun_s -= began;
    m->done_s += t - began;
    pthread_mutex_unlock(&m->lock);
}

/* The next CopyData message from the server, waiting for it: its length
 * (*buf for PQfreemem), -1 once the data has ended, -2 with err set. */
static int receive(pgsrc_stream *s, char **buf, ds_error *err)
{
    for (;;) {
        *buf = NULL;
        int n = PQgetCopyData(s->conn->pg, buf, 1);
        if (n == 0) {
            /* Time on an empty socket tells the partition reader that
             * PostgreSQL, not DuckDB, is the bottleneck. */
            double t = ds_monotonic_s();
            wait_begins(s->wait, t);
            bool ok = pgsrc_await_input(s->conn, err);
            wait_ends(s->wait, t, ds_monotonic_s());
            if (!ok)
                return -2;
            continue;
        }
        if (n == -1)
            return -1;
        if (n < 0) {
            ds_error_set(err, DS_ERR_SOURCE, "COPY stream failed: %s", PQerrorMessage(s->conn->pg));
            err->msg[strcspn(err->msg, "\n")] = '\0';
            return -2;
        }
        if (!account(s, *buf, n, err)) {
            PQfreemem(*buf);
            return -2;
        }
        return n;
    }
}

/* The next message: a prefetched one first. */
static int next_message(pgsrc_stream *s, char **buf, ds_error *err)
{
    if (s->ahead_used < s->ahead_n) {
        *buf = s->ahead[s->ahead_used].msg;
        int n = s->ahead[s->ahead_used].len;
        s->ahead[s->ahead_used++].msg = NULL;
        return n;
    }
    return s->ahead_end ? -1 : receive(s, buf, err);
}

static void free_ahead(pgsrc_stream *s)
{
    for (size_t i = s->ahead_used; i < s->ahead_n; i++)
        PQfreemem(s->ahead[i].msg);
    free(s->ahead);
    s->ahead = NULL;
    s->ahead_n = s->ahead_used = s->ahead_cap = 0;
}

bool pgsrc_stream_prefetch(pgsrc_stream *s, size_t max_bytes, ds_error *err)
{
    size_t bytes = 0;
    while (!s->ended && !s->ahead_end && bytes < max_bytes) {
        if (s->ahead_n == s->ahead_cap) {
            size_t cap = s->ahead_cap ? 2 * s->ahead_cap : 16;
            void *grown = realloc(s->ahead, cap * sizeof *s->ahead);
            if (grown == NULL)
                return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
            s->ahead = grown;
            s->ahead_cap = cap;
        }
        char *buf;
        int n = receive(s, &buf, err);
        if (n == -2)
            return false;
        if (n == -1) {
            s->ahead_end = true;
            break;
        }
        s->ahead[s->ahead_n].msg = buf;
        s->ahead[s->ahead_n++].len = n;
        bytes += (size_t)n;
    }
    return true;
}

bool pgsrc_stream_prefetched_all(const pgsrc_stream *s)
{
    return s->ahead_end || s->ended;
}

/* Whether a message ends with binary COPY's trailer (-1 as a 16-bit field
 * count), alone or after the header of a COPY of no rows. */
static bool is_trailer(const char *msg, size_t len)
{
    if (len == sizeof copy_header + 2 && memcmp(msg, copy_header, sizeof copy_header) == 0) {
        msg += sizeof copy_header;
        len -= sizeof copy_header;
    }
    return len == 2 && (unsigned char)msg[0] == 0xff && (unsigned char)msg[1] == 0xff;
}

bool pgsrc_stream_skip(pgsrc_stream *s, ds_error *err)
{
    if (!s->ahead_end)
        return ds_error_set(err, DS_ERR_DECODE, "a COPY was skipped before it was read to its end");
    bool trailer = s->ahead_n > 0 && s->ahead[s->ahead_n - 1].msg != NULL &&
                   is_trailer(s->ahead[s->ahead_n - 1].msg, (size_t)s->ahead[s->ahead_n - 1].len);
    free_ahead(s);
    return stream_finish(s, trailer, err);
}

bool pgsrc_stream_fill(pgsrc_stream *s, duckdb_data_chunk chunk, ds_error *err)
{
    copy_decoder_start_chunk(s->dec, chunk);
    /* A message holds whole tuples, so a chunk may end after any of them:
     * cut by bytes too, a chunk of 2,048 rows of 5 MB values would be 10 GB. */
    uint64_t filled = 0;
    while (!s->ended) {
        if (s->msg == NULL && s->chunk_bytes > 0 && filled >= s->chunk_bytes)
            break;
        if (s->msg == NULL) {
            char *buf = NULL;
            int n = next_message(s, &buf, err);
            if (n == -2)
                return false;
            if (n == -1) {
                if (!stream_finish(s, copy_decoder_saw_trailer(s->dec), err))
                    return false;
                break;
            }
            s->msg = buf;
            s->msg_len = (size_t)n;
            s->msg_used = 0;
        }
        size_t used = 0;
        copy_status st =
            copy_decoder_feed(s->dec, s->msg + s->msg_used, s->msg_len - s->msg_used, &used, err);
        s->msg_used += used;
        if (st == COPY_ERROR)
            return false;
        if (st == COPY_FULL)
            break;
        filled += s->msg_len;
        PQfreemem(s->msg);
        s->msg = NULL;
    }
    copy_decoder_finish_chunk(s->dec);
    return true;
}

void pgsrc_stream_close(pgsrc_stream *s)
{
    if (s->msg)
        PQfreemem(s->msg);
    s->msg = NULL;
    free_ahead(s);
    /* A hung server gets no cancel request: PQcancel would wait for its
     * answer with no time limit. */
    if (s->conn != NULL && !s->conn->hung) {
        pgsrc_cancel(s->conn);
        drain_copy(s->conn);
    }
    s->conn = NULL;
    s->ended = true;
}
