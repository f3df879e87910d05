/* PostgreSQL protocol 3.0 framing (message.h). */
#include "pgwire/message.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static bool fill(pgm_conn *c, int timeout_ms, bool *timed_out, ds_error *err)
{
    *timed_out = false;
    if (c->closed)
        return ds_error_set(err, DS_ERR_SOURCE, "the client closed the connection");
    /* TLS may hold decrypted bytes the socket no longer shows. */
    if (timeout_ms >= 0 && (c->ssl == NULL || SSL_pending(c->ssl) == 0)) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int rc;
        do
            rc = poll(&p, 1, timeout_ms);
        while (rc < 0 && errno == EINTR);
        if (rc == 0) {
            *timed_out = true;
            return ds_error_set(err, DS_ERR_TIMEOUT, "the client sent nothing in time");
        }
    }
    ssize_t n;
    if (c->ssl != NULL) {
        int r = SSL_read(c->ssl, c->rbuf, (int)sizeof c->rbuf);
        n = r > 0 ? r : -1;
        if (r <= 0)
            ERR_clear_error();
    } else {
        do
            n = recv(c->fd, c->rbuf, sizeof c->rbuf, 0);
        while (n < 0 && errno == EINTR);
    }
    if (n <= 0) {
        c->closed = true;
        return ds_error_set(err, DS_ERR_SOURCE, "the client closed the connection");
    }
    c->rpos = 0;
    c->rlen = (size_t)n;
    return true;
}

bool pgm_read_exact(pgm_conn *c, void *dst, size_t n, int timeout_ms, bool *timed_out, ds_error *err)
{
    bool first = true;
    *timed_out = false;
    while (n > 0) {
        if (c->rpos == c->rlen && !fill(c, first ? timeout_ms : -1, timed_out, err))
            return false;
        first = false;
        size_t k = c->rlen - c->rpos < n ? c->rlen - c->rpos : n;
        if (dst != NULL) {
            memcpy(dst, c->rbuf + c->rpos, k);
            dst = (char *)dst + k;
        }
        c->rpos += k;
        n -= k;
    }
    return true;
}

/* Reads n bytes into body, growing it as they arrive. */
static bool read_into(pgm_conn *c, ds_buf *body, size_t n, ds_error *err)
{
    ds_buf_reset(body);
    ds_buf_appendn(body, "", 0);
    char chunk[16384];
    bool timed_out;
    while (n > 0) {
        size_t k = n < sizeof chunk ? n : sizeof chunk;
        if (!pgm_read_exact(c, chunk, k, -1, &timed_out, err))
            return false;
        if (!ds_buf_appendn(body, chunk, k))
            return ds_error_set(err, DS_ERR_NOMEM, "out of memory reading a message");
        n -= k;
    }
    return true;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

bool pgm_read_startup(pgm_conn *c, ds_buf *body, int timeout_ms, bool *timed_out, ds_error *err)
{
    unsigned char len[4];
    if (!pgm_read_exact(c, len, 4, timeout_ms, timed_out, err))
        return false;
    uint32_t n = be32(len);
    if (n < 8 || n > PGM_MAX_STARTUP)
        return ds_error_set(err, DS_ERR_DECODE, "invalid length of startup packet (%u bytes)", n);
    return read_into(c, body, n - 4, err);
}

bool pgm_read_message(pgm_conn *c, char *type, ds_buf *body, int timeout_ms, bool *timed_out, ds_error *err)
{
    unsigned char head[5];
    if (!pgm_read_exact(c, head, 1, timeout_ms, timed_out, err) ||
        !pgm_read_exact(c, head + 1, 4, -1, timed_out, err))
        return false;
    uint32_t n = be32(head + 1);
    if (n < 4 || n > PGM_MAX_MESSAGE)
        return ds_error_set(err, DS_ERR_DECODE, "invalid message length %u (type '%c'); at most %u bytes", n,
                            head[0] >= 32 && head[0] < 127 ? head[0] : '?', PGM_MAX_MESSAGE);
    *type = (char)head[0];
    return read_into(c, body, n - 4, err);
}

bool pgm_parse_startup(const char *body, size_t len, pgm_startup *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    pgm_reader r;
    pgm_reader_init(&r, body, len);
    out->code = (uint32_t)pgm_get_i32(&r);
    if (r.bad)
        return ds_error_set(err, DS_ERR_DECODE, "startup packet too short");
    if (out->code == PGM_CANCEL_CODE) {
        out->cancel_pid = (uint32_t)pgm_get_i32(&r);
        out->cancel_secret = (uint32_t)pgm_get_i32(&r);
        return !r.bad || ds_error_set(err, DS_ERR_DECODE, "cancel request too short");
    }
    if (out->code != PGM_PROTOCOL_3)
        return true; /* the caller answers SSL, GSSENC, or refuses the version */
    for (;;) {
        const char *name = pgm_get_str(&r);
        if (r.bad)
            return ds_error_set(err, DS_ERR_DECODE, "startup packet: a parameter without its terminator");
        if (name[0] == '\0')
            break;
        const char *value = pgm_get_str(&r);
        if (r.bad)
            return ds_error_set(err, DS_ERR_DECODE, "startup packet: parameter \"%.60s\" has no value", name);
        if (out->n_params == sizeof out->names / sizeof out->names[0])
            return ds_error_set(err, DS_ERR_DECODE, "startup packet: too many parameters");
        out->names[out->n_params] = name;
        out->values[out->n_params++] = value;
    }
    if (r.pos != r.len)
        return ds_error_set(err, DS_ERR_DECODE, "startup packet: bytes after its last parameter");
    return true;
}

const char *pgm_startup_param(const pgm_startup *s, const char *name)
{
    for (size_t i = 0; i < s->n_params; i++)
        if (strcmp(s->names[i], name) == 0)
            return s->values[i];
    return NULL;
}

void pgm_reader_init(pgm_reader *r, const char *p, size_t len)
{
    *r = (pgm_reader){.p = p, .len = len};
}

const char *pgm_get_bytes(pgm_reader *r, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = true;
        return NULL;
    }
    const char *p = r->p + r->pos;
    r->pos += n;
    return p;
}

int32_t pgm_get_i32(pgm_reader *r)
{
    const unsigned char *p = (const unsigned char *)pgm_get_bytes(r, 4);
    return p ? (int32_t)be32(p) : 0;
}

int16_t pgm_get_i16(pgm_reader *r)
{
    const unsigned char *p = (const unsigned char *)pgm_get_bytes(r, 2);
    return p ? (int16_t)((uint16_t)p[0] << 8 | p[1]) : 0;
}

uint8_t pgm_get_u8(pgm_reader *r)
{
    const unsigned char *p = (const unsigned char *)pgm_get_bytes(r, 1);
    return p ? p[0] : 0;
}

const char *pgm_get_str(pgm_reader *r)
{
    if (r->bad)
        return "";
    const char *s = r->p + r->pos;
    const char *nul = memchr(s, '\0', r->len - r->pos);
    if (nul == NULL) {
        r->bad = true;
        return "";
    }
    r->pos += (size_t)(nul - s) + 1;
    return s;
}

void pgm_put_i32(ds_buf *b, int32_t v)
{
    uint32_t u = htonl((uint32_t)v);
    ds_buf_appendn(b, (const char *)&u, 4);
}

void pgm_put_i16(ds_buf *b, int16_t v)
{
    uint16_t u = htons((uint16_t)v);
    ds_buf_appendn(b, (const char *)&u, 2);
}

void pgm_put_str(ds_buf *b, const char *s)
{
    ds_buf_appendn(b, s, strlen(s) + 1);
}

void pgm_begin(pgm_conn *c, char type)
{
    ds_buf_appendc(&c->out, type);
    c->msg_start = c->out.len;
    pgm_put_i32(&c->out, 0);
}

void pgm_end(pgm_conn *c)
{
    if (c->out.failed)
        return;
    uint32_t n = htonl((uint32_t)(c->out.len - c->msg_start));
    memcpy(c->out.data + c->msg_start, &n, 4);
}

bool pgm_write_raw(pgm_conn *c, const void *p, size_t n, ds_error *err)
{
    const char *s = p;
    while (n > 0) {
        ssize_t k;
        if (c->ssl != NULL) {
            int r = SSL_write(c->ssl, s, n > 1u << 30 ? 1 << 30 : (int)n);
            k = r > 0 ? r : -1;
            if (r <= 0)
                ERR_clear_error();
        } else {
            do
                k = send(c->fd, s, n, MSG_NOSIGNAL);
            while (k < 0 && errno == EINTR);
        }
        if (k <= 0) {
            c->closed = true;
            return ds_error_set(err, DS_ERR_SOURCE, "the client went away");
        }
        s += k;
        n -= (size_t)k;
    }
    return true;
}

bool pgm_input_buffered(const pgm_conn *c)
{
    return c->rpos < c->rlen || (c->ssl != NULL && SSL_pending(c->ssl) > 0);
}

bool pgm_flush(pgm_conn *c, ds_error *err)
{
    if (c->out.failed) {
        ds_buf_reset(&c->out);
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory building an answer");
    }
    bool ok = c->out.len == 0 || pgm_write_raw(c, c->out.data, c->out.len, err);
    ds_buf_reset(&c->out);
    /* A large answer's buffer is not kept for the whole session. */
    if (c->out.cap > (1u << 20))
        ds_buf_free(&c->out);
    return ok;
}

void pgm_error(pgm_conn *c, char type, const char *severity, const char *sqlstate, const char *message,
               int position)
{
    pgm_begin(c, type);
    ds_buf_appendc(&c->out, 'S');
    pgm_put_str(&c->out, severity);
    ds_buf_appendc(&c->out, 'V');
    pgm_put_str(&c->out, severity);
    ds_buf_appendc(&c->out, 'C');
    pgm_put_str(&c->out, sqlstate);
    ds_buf_appendc(&c->out, 'M');
    pgm_put_str(&c->out, message);
    if (position > 0) {
        char pos[16];
        snprintf(pos, sizeof pos, "%d", position);
        ds_buf_appendc(&c->out, 'P');
        pgm_put_str(&c->out, pos);
    }
    ds_buf_appendc(&c->out, '\0');
    pgm_end(c);
}
