/* pgoutput.h: PostgreSQL's "Logical Replication Message Formats" (protocol
 * versions 1 and 2), read from one message with every length checked
 * against the message's own before it is used or allocated for. */
#include "source/pgoutput.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A cursor over one message; the first failure is kept in err. */
typedef struct reader {
    const unsigned char *p;
    size_t len, pos;
    char kind;
    bool failed;
    ds_error *err;
} reader;

static const char *kind_name(char kind)
{
    switch (kind) {
    case PGO_BEGIN:
        return "Begin";
    case PGO_COMMIT:
        return "Commit";
    case PGO_ORIGIN:
        return "Origin";
    case PGO_RELATION:
        return "Relation";
    case PGO_TYPE:
        return "Type";
    case PGO_INSERT:
        return "Insert";
    case PGO_UPDATE:
        return "Update";
    case PGO_DELETE:
        return "Delete";
    case PGO_TRUNCATE:
        return "Truncate";
    case PGO_MESSAGE:
        return "Message";
    case PGO_STREAM_START:
        return "Stream Start";
    case PGO_STREAM_STOP:
        return "Stream Stop";
    case PGO_STREAM_COMMIT:
        return "Stream Commit";
    case PGO_STREAM_ABORT:
        return "Stream Abort";
    default:
        return NULL;
    }
}

/* Fails the read with what went wrong at the current offset. */
__attribute__((format(printf, 2, 3))) static bool rd_fail(reader *r, const char *fmt, ...)
{
    if (r->failed)
        return false;
    r->failed = true;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ds_error_set(r->err, DS_ERR_SOURCE,
                        "malformed pgoutput %s message ('%c', %zu bytes) at byte %zu: %s; the replication "
                        "stream cannot be read",
                        kind_name(r->kind), r->kind, r->len, r->pos, what);
}

static bool rd_need(reader *r, size_t n, const char *field)
{
    if (r->failed)
        return false;
    if (n > r->len - r->pos)
        return rd_fail(r, "%s needs %zu bytes, %zu left", field, n, r->len - r->pos);
    return true;
}

static uint8_t rd_u8(reader *r, const char *field)
{
    if (!rd_need(r, 1, field))
        return 0;
    return r->p[r->pos++];
}

static uint16_t rd_u16(reader *r, const char *field)
{
    if (!rd_need(r, 2, field))
        return 0;
    uint16_t v = (uint16_t)(r->p[r->pos] << 8 | r->p[r->pos + 1]);
    r->pos += 2;
    return v;
}

static uint32_t rd_u32(reader *r, const char *field)
{
    if (!rd_need(r, 4, field))
        return 0;
    const unsigned char *q = r->p + r->pos;
    r->pos += 4;
    return (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
}

static uint64_t rd_u64(reader *r, const char *field)
{
    uint64_t hi = rd_u32(r, field);
    return hi << 32 | rd_u32(r, field);
}

/* A NUL-terminated string inside the message; points into it. */
static const char *rd_str(reader *r, const char *field)
{
    if (!rd_need(r, 1, field))
        return NULL;
    const unsigned char *start = r->p + r->pos;
    const unsigned char *nul = memchr(start, '\0', r->len - r->pos);
    if (nul == NULL) {
        rd_fail(r, "%s has no terminating NUL byte", field);
        return NULL;
    }
    r->pos += (size_t)(nul - start) + 1;
    return (const char *)start;
}

static char *rd_strdup(reader *r, const char *field)
{
    const char *s = rd_str(r, field);
    if (s == NULL)
        return NULL;
    char *copy = strdup(s);
    if (copy == NULL) {
        r->failed = true;
        ds_error_set(r->err, DS_ERR_NOMEM, "out of memory decoding a pgoutput %s message",
                     kind_name(r->kind));
    }
    return copy;
}

static void *rd_alloc(reader *r, size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (p == NULL) {
        r->failed = true;
        ds_error_set(r->err, DS_ERR_NOMEM, "out of memory decoding a pgoutput %s message",
                     kind_name(r->kind));
    }
    return p;
}

/* TupleData: Int16 columns, then per column 'n', 'u', or 't'/'b' + Int32
 * length + bytes. Each column takes at least one byte, so the count is
 * checked against what is left before the values are allocated. */
static bool rd_tuple(reader *r, pgo_tuple *t)
{
    uint16_t ncols = rd_u16(r, "the tuple's column count");
    if (r->failed)
        return false;
    if (ncols > r->len - r->pos)
        return rd_fail(r, "the tuple claims %u columns in %zu bytes", ncols, r->len - r->pos);
    t->values = rd_alloc(r, ncols, sizeof *t->values);
    if (t->values == NULL)
        return false;
    t->ncols = ncols;
    for (uint16_t i = 0; i < ncols; i++) {
        pgo_value *v = &t->values[i];
        v->kind = (char)rd_u8(r, "a column's kind");
        if (r->failed)
            return false;
        switch (v->kind) {
        case 'n':
        case 'u':
            break;
        case 't':
        case 'b': {
            uint32_t len = rd_u32(r, "a value's length");
            if (r->failed)
                return false;
            if (len > INT32_MAX)
                return rd_fail(r, "column %u has a negative length", i + 1);
            if (!rd_need(r, len, "a value"))
                return false;
            v->data = (const char *)r->p + r->pos;
            v->len = len;
            r->pos += len;
            break;
        }
        default:
            return rd_fail(r, "column %u has the unknown kind 0x%02x (expected n, u, t or b)", i + 1,
                           (unsigned char)v->kind);
        }
    }
    return true;
}

static bool rd_relation(reader *r, pgo_relation *rel)
{
    rel->oid = rd_u32(r, "the relation id");
    rel->nspname = rd_strdup(r, "the namespace");
    rel->relname = rd_strdup(r, "the relation name");
    rel->replident = (char)rd_u8(r, "the replica identity");
    uint16_t ncols = rd_u16(r, "the column count");
    if (r->failed)
        return false;
    if (strchr("dnfi", rel->replident) == NULL || rel->replident == '\0')
        return rd_fail(r, "unknown replica identity 0x%02x", (unsigned char)rel->replident);
    /* flags, name's NUL, type oid, typmod: at least 10 bytes a column */
    if (ncols > (r->len - r->pos) / 10)
        return rd_fail(r, "the relation claims %u columns in %zu bytes", ncols, r->len - r->pos);
    rel->cols = rd_alloc(r, ncols, sizeof *rel->cols);
    if (rel->cols == NULL)
        return false;
    for (uint16_t i = 0; i < ncols; i++) {
        pgo_column *c = &rel->cols[i];
        uint8_t flags = rd_u8(r, "a column's flags");
        c->name = rd_strdup(r, "a column name");
        if (c->name != NULL)
            rel->ncols = (uint16_t)(i + 1); /* what pgo_relation_free frees */
        c->type_oid = rd_u32(r, "a column's type");
        c->typmod = (int32_t)rd_u32(r, "a column's typmod");
        if (r->failed)
            return false;
        c->key = (flags & 1) != 0;
    }
    rel->ncols = ncols;
    return true;
}

/* The transaction id that protocol 2 puts before a change inside a
 * streamed block. */
static void rd_stream_xid(reader *r, const pgo_parser *p, pgo_message *m)
{
    if (p->in_stream)
        m->xid = rd_u32(r, "the streamed transaction id");
}

static bool parse_body(reader *r, pgo_parser *p, pgo_message *m)
{
    switch (r->kind) {
    case PGO_BEGIN:
        m->final_lsn = rd_u64(r, "the final LSN");
        m->time_us = (int64_t)rd_u64(r, "the commit time");
        m->xid = rd_u32(r, "the transaction id");
        break;
    case PGO_COMMIT:
        m->flags = rd_u8(r, "the flags");
        m->commit_lsn = rd_u64(r, "the commit LSN");
        m->end_lsn = rd_u64(r, "the end LSN");
        m->time_us = (int64_t)rd_u64(r, "the commit time");
        break;
    case PGO_ORIGIN:
        m->origin_lsn = rd_u64(r, "the origin's commit LSN");
        m->origin = rd_strdup(r, "the origin name");
        break;
    case PGO_RELATION:
        rd_stream_xid(r, p, m);
        rd_relation(r, &m->rel);
        break;
    case PGO_TYPE:
        rd_stream_xid(r, p, m);
        m->type_oid = rd_u32(r, "the type id");
        m->type_nspname = rd_str(r, "the type's namespace");
        m->type_name = rd_str(r, "the type name");
        break;
    case PGO_INSERT: {
        rd_stream_xid(r, p, m);
        m->relid = rd_u32(r, "the relation id");
        uint8_t tag = rd_u8(r, "the new tuple's tag");
        if (!r->failed && tag != 'N')
            return rd_fail(r, "expected the new tuple's tag 'N', found 0x%02x", tag);
        rd_tuple(r, &m->new_tuple);
        break;
    }
    case PGO_UPDATE:
    case PGO_DELETE: {
        rd_stream_xid(r, p, m);
        m->relid = rd_u32(r, "the relation id");
        uint8_t tag = rd_u8(r, "the tuple's tag");
        if (r->failed)
            return false;
        if (tag == 'K' || tag == 'O') {
            m->old_kind = (char)tag;
            if (!rd_tuple(r, &m->old_tuple))
                return false;
            if (r->kind == PGO_DELETE)
                break;
            tag = rd_u8(r, "the new tuple's tag");
            if (r->failed)
                return false;
        } else if (r->kind == PGO_DELETE) {
            return rd_fail(r, "expected the old tuple's tag 'K' or 'O', found 0x%02x", tag);
        }
        if (tag != 'N')
            return rd_fail(r, "expected the new tuple's tag 'N', found 0x%02x", tag);
        rd_tuple(r, &m->new_tuple);
        break;
    }
    case PGO_TRUNCATE: {
        rd_stream_xid(r, p, m);
        uint32_t n = rd_u32(r, "the relation count");
        m->truncate_options = rd_u8(r, "the options");
        if (r->failed)
            return false;
        if (n > (r->len - r->pos) / 4)
            return rd_fail(r, "the message claims %" PRIu32 " relations in %zu bytes", n, r->len - r->pos);
        m->relids = rd_alloc(r, n, sizeof *m->relids);
        if (m->relids == NULL)
            return false;
        m->nrelids = n;
        for (uint32_t i = 0; i < n; i++)
            m->relids[i] = rd_u32(r, "a relation id");
        break;
    }
    case PGO_MESSAGE: {
        rd_stream_xid(r, p, m);
        m->flags = rd_u8(r, "the flags");
        m->message_lsn = rd_u64(r, "the message's LSN");
        m->prefix = rd_str(r, "the prefix");
        uint32_t len = rd_u32(r, "the content's length");
        if (r->failed)
            return false;
        if (len > INT32_MAX)
            return rd_fail(r, "the content has a negative length");
        if (!rd_need(r, len, "the content"))
            return false;
        m->content = (const char *)r->p + r->pos;
        m->content_len = len;
        r->pos += len;
        break;
    }
    case PGO_STREAM_START: {
        if (p->in_stream)
            return rd_fail(r, "a stream starts inside another (no Stream Stop before it)");
        m->xid = rd_u32(r, "the transaction id");
        uint8_t first = rd_u8(r, "the first-segment flag");
        m->first_segment = first == 1;
        break;
    }
    case PGO_STREAM_STOP:
        if (!p->in_stream)
            return rd_fail(r, "Stream Stop outside a streamed block");
        break;
    case PGO_STREAM_COMMIT:
        if (p->in_stream)
            return rd_fail(r, "Stream Commit inside a streamed block");
        m->xid = rd_u32(r, "the transaction id");
        m->flags = rd_u8(r, "the flags");
        m->commit_lsn = rd_u64(r, "the commit LSN");
        m->end_lsn = rd_u64(r, "the end LSN");
        m->time_us = (int64_t)rd_u64(r, "the commit time");
        break;
    case PGO_STREAM_ABORT:
        if (p->in_stream)
            return rd_fail(r, "Stream Abort inside a streamed block");
        m->xid = rd_u32(r, "the transaction id");
        m->subxid = rd_u32(r, "the subtransaction id");
        break;
    }
    if (r->failed)
        return false;
    if (r->pos != r->len)
        return rd_fail(r, "%zu bytes past the message's end", r->len - r->pos);
    return true;
}

bool pgo_parse(pgo_parser *p, const char *buf, size_t len, pgo_message *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    if (len == 0)
        return ds_error_set(err, DS_ERR_SOURCE,
                            "empty pgoutput message; the replication stream cannot be read");
    reader r = {.p = (const unsigned char *)buf, .len = len, .pos = 1, .kind = buf[0], .err = err};
    if (kind_name(r.kind) == NULL)
        return ds_error_set(err, DS_ERR_SOURCE,
                            "unknown pgoutput message type 0x%02x (%zu bytes) at byte 0; the replication "
                            "stream uses a protocol duckstore does not read (versions 1 and 2 are read)",
                            (unsigned char)r.kind, len);
    out->kind = (pgo_kind)r.kind;
    if (!parse_body(&r, p, out)) {
        pgo_message_clear(out);
        return false;
    }
    if (out->kind == PGO_STREAM_START)
        p->in_stream = true;
    else if (out->kind == PGO_STREAM_STOP)
        p->in_stream = false;
    return true;
}

void pgo_relation_free(pgo_relation *rel)
{
    for (uint16_t i = 0; rel->cols != NULL && i < rel->ncols; i++)
        free(rel->cols[i].name);
    free(rel->cols);
    free(rel->nspname);
    free(rel->relname);
    memset(rel, 0, sizeof *rel);
}

void pgo_message_clear(pgo_message *m)
{
    pgo_relation_free(&m->rel);
    free(m->old_tuple.values);
    free(m->new_tuple.values);
    free(m->relids);
    free(m->origin);
    memset(m, 0, sizeof *m);
}

void pgo_relation_take(pgo_message *m, pgo_relation *out)
{
    *out = m->rel;
    memset(&m->rel, 0, sizeof m->rel);
}

void pgo_lsn_format(uint64_t lsn, char out[24])
{
    snprintf(out, 24, "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32), (uint32_t)lsn);
}

/* One to eight hex digits, as PostgreSQL's pg_lsn input reads them. */
static bool parse_hex32(const char *s, size_t n, uint32_t *out)
{
    if (n == 0 || n > 8)
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return true;
}

bool pgo_lsn_parse(const char *text, uint64_t *out)
{
    if (text == NULL)
        return false;
    const char *slash = strchr(text, '/');
    uint32_t hi, lo;
    if (slash == NULL || !parse_hex32(text, (size_t)(slash - text), &hi) ||
        !parse_hex32(slash + 1, strlen(slash + 1), &lo))
        return false;
    *out = (uint64_t)hi << 32 | lo;
    return true;
}
