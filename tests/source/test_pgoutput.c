/* The pgoutput decoder (source/pgoutput.h): every message kind built byte
 * by byte from PostgreSQL's "Logical Replication Message Formats", each
 * decoded to its values and cut at every byte offset (always an error,
 * never a read past the cut: each cut is its own heap copy, so ASan sees
 * one); hostile counts and lengths; LSN text; and the real bytes of
 * PostgreSQL 15's pgoutput (protocol 1 with binary values, protocol 2 with
 * a streamed transaction) read through pg_logical_slot_peek_binary_changes. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "source/pgoutput.h"

/* ---- building messages ------------------------------------------------ */

typedef struct msgbuf {
    unsigned char b[1024];
    size_t n;
} msgbuf;

static void put8(msgbuf *m, unsigned v)
{
    assert_true(m->n < sizeof m->b);
    m->b[m->n++] = (unsigned char)v;
}

static void put16(msgbuf *m, unsigned v)
{
    put8(m, v >> 8 & 0xff);
    put8(m, v & 0xff);
}

static void put32(msgbuf *m, uint32_t v)
{
    put16(m, v >> 16);
    put16(m, v & 0xffff);
}

static void put64(msgbuf *m, uint64_t v)
{
    put32(m, (uint32_t)(v >> 32));
    put32(m, (uint32_t)v);
}

static void putstr(msgbuf *m, const char *s)
{
    size_t n = strlen(s) + 1;
    assert_true(m->n + n <= sizeof m->b);
    memcpy(m->b + m->n, s, n);
    m->n += n;
}

static void putbytes(msgbuf *m, const void *p, size_t n)
{
    assert_true(m->n + n <= sizeof m->b);
    memcpy(m->b + m->n, p, n);
    m->n += n;
}

/* A text or binary column value. */
static void putval(msgbuf *m, char kind, const char *data, uint32_t len)
{
    put8(m, (unsigned char)kind);
    put32(m, len);
    putbytes(m, data, len);
}

/* Parses the whole message from an exact-size heap copy; fails the test
 * on error. The copy stays alive (values point into it) until freed by
 * the caller. */
static char *parse_ok(pgo_parser *p, const msgbuf *m, pgo_message *out)
{
    char *copy = malloc(m->n);
    assert_non_null(copy);
    memcpy(copy, m->b, m->n);
    ds_error err = {0};
    if (!pgo_parse(p, copy, m->n, out, &err))
        fail_msg("pgo_parse: %s", err.msg);
    return copy;
}

/* Every cut of m short of its full length, and m with one byte more, is
 * an error that names the message; the parser's stream state stays. */
static void assert_every_cut_fails(const pgo_parser *state, const msgbuf *m)
{
    for (size_t cut = 0; cut <= m->n; cut++) {
        size_t len = cut < m->n ? cut : m->n + 1;
        char *copy = malloc(len ? len : 1);
        assert_non_null(copy);
        memcpy(copy, m->b, cut < m->n ? cut : m->n);
        if (cut == m->n)
            copy[m->n] = 0;
        pgo_parser p = *state;
        pgo_message out;
        ds_error err = {0};
        if (pgo_parse(&p, copy, len, &out, &err))
            fail_msg("a '%c' message of %zu bytes given as %zu bytes was accepted", m->b[0], m->n, len);
        assert_int_equal(err.code, DS_ERR_SOURCE);
        tl_assert_contains(err.msg, len ? "pgoutput" : "empty pgoutput message");
        assert_int_equal(p.in_stream, state->in_stream);
        /* Nothing is left allocated (LeakSanitizer checks), out is empty. */
        assert_null(out.rel.cols);
        assert_null(out.new_tuple.values);
        assert_null(out.relids);
        free(copy);
    }
}

/* ---- each kind, byte-exact -------------------------------------------- */

static void test_begin_commit_origin(void **state)
{
    (void)state;
    pgo_parser p = {0};
    pgo_message m;
    msgbuf b = {0};
    put8(&b, 'B');
    put64(&b, 0x16B374D848ULL);
    put64(&b, 822550000123456LL);
    put32(&b, 4000000001u);
    char *buf = parse_ok(&p, &b, &m);
    assert_int_equal(m.kind, PGO_BEGIN);
    assert_int_equal(m.final_lsn, 0x16B374D848ULL);
    assert_int_equal(m.time_us, 822550000123456LL);
    assert_int_equal(m.xid, 4000000001u);
    pgo_message_clear(&m);
    free(buf);
    assert_every_cut_fails(&p, &b);

    msgbuf c = {0};
    put8(&c, 'C');
    put8(&c, 0);
    put64(&c, 0x100000010ULL);
    put64(&c, 0x100000040ULL);
    put64(&c, (uint64_t)-5);
    buf = parse_ok(&p, &c, &m);
    assert_int_equal(m.kind, PGO_COMMIT);
    assert_int_equal(m.flags, 0);
    assert_int_equal(m.commit_lsn, 0x100000010ULL);
    assert_int_equal(m.end_lsn, 0x100000040ULL);
    assert_int_equal(m.time_us, -5);
    pgo_message_clear(&m);
    free(buf);
    assert_every_cut_fails(&p, &c);

    msgbuf o = {0};
    put8(&o, 'O');
    put64(&o, 0xABCDEF01ULL);
    putstr(&o, "pg_16385");
    buf = parse_ok(&p, &o, &m);
    assert_int_equal(m.kind, PGO_ORIGIN);
    assert_int_equal(m.origin_lsn, 0xABCDEF01ULL);
    assert_string_equal(m.origin, "pg_16385");
    pgo_message_clear(&m);
    assert_null(m.origin);
    free(buf);
    assert_every_cut_fails(&p, &o);
}

static void relation_msg(msgbuf *r, bool xid)
{
    put8(r, 'R');
    if (xid)
        put32(r, 777);
    put32(r, 16390);
    putstr(r, "public");
    putstr(r, "llm \"traces\"");
    put8(r, 'd');
    put16(r, 3);
    put8(r, 1);
    putstr(r, "id");
    put32(r, 23);
    put32(r, (uint32_t)-1);
    put8(r, 0);
    putstr(r, "name");
    put32(r, 1043);
    put32(r, 68);
    put8(r, 0);
    putstr(r, "");
    put32(r, 25);
    put32(r, (uint32_t)-1);
}

static void test_relation_and_type(void **state)
{
    (void)state;
    pgo_parser p = {0};
    pgo_message m;
    msgbuf r = {0};
    relation_msg(&r, false);
    char *buf = parse_ok(&p, &r, &m);
    assert_int_equal(m.kind, PGO_RELATION);
    assert_int_equal(m.xid, 0);
    assert_int_equal(m.rel.oid, 16390);
    assert_string_equal(m.rel.nspname, "public");
    assert_string_equal(m.rel.relname, "llm \"traces\"");
    assert_int_equal(m.rel.replident, 'd');
    assert_int_equal(m.rel.ncols, 3);
    assert_true(m.rel.cols[0].key);
    assert_string_equal(m.rel.cols[0].name, "id");
    assert_int_equal(m.rel.cols[0].type_oid, 23);
    assert_int_equal(m.rel.cols[0].typmod, -1);
    assert_false(m.rel.cols[1].key);
    assert_string_equal(m.rel.cols[1].name, "name");
    assert_int_equal(m.rel.cols[1].type_oid, 1043);
    assert_int_equal(m.rel.cols[1].typmod, 68);
    assert_string_equal(m.rel.cols[2].name, "");
    /* Taken out, the relation outlives the message. */
    pgo_relation rel;
    pgo_relation_take(&m, &rel);
    assert_null(m.rel.cols);
    pgo_message_clear(&m);
    free(buf);
    assert_string_equal(rel.cols[1].name, "name");
    pgo_relation_free(&rel);
    assert_every_cut_fails(&p, &r);

    /* Every replica identity, and an unknown one. */
    const char idents[] = "dnfi";
    for (int i = 0; i < 4; i++) {
        r.b[5 + 7 + 13] = (unsigned char)idents[i];
        buf = parse_ok(&p, &r, &m);
        assert_int_equal(m.rel.replident, idents[i]);
        pgo_message_clear(&m);
        free(buf);
    }
    r.b[5 + 7 + 13] = 'x';
    ds_error err = {0};
    assert_false(pgo_parse(&p, (const char *)r.b, r.n, &m, &err));
    tl_assert_contains(err.msg, "unknown replica identity 0x78");

    msgbuf y = {0};
    put8(&y, 'Y');
    put32(&y, 16400);
    putstr(&y, "public");
    putstr(&y, "mood");
    buf = parse_ok(&p, &y, &m);
    assert_int_equal(m.kind, PGO_TYPE);
    assert_int_equal(m.type_oid, 16400);
    assert_string_equal(m.type_nspname, "public");
    assert_string_equal(m.type_name, "mood");
    pgo_message_clear(&m);
    free(buf);
    assert_every_cut_fails(&p, &y);
}

/* A tuple of five values: binary int4 42, text, NULL, unchanged TOAST,
 * empty binary. */
static void tuple5(msgbuf *m)
{
    put16(m, 5);
    putval(m, 'b', "\0\0\0\x2a", 4);
    putval(m, 't', "h\xc3\xa9llo", 6);
    put8(m, 'n');
    put8(m, 'u');
    putval(m, 'b', "", 0);
}

static void assert_tuple5(const pgo_tuple *t)
{
    assert_int_equal(t->ncols, 5);
    assert_int_equal(t->values[0].kind, 'b');
    assert_int_equal(t->values[0].len, 4);
    assert_memory_equal(t->values[0].data, "\0\0\0\x2a", 4);
    assert_int_equal(t->values[1].kind, 't');
    assert_int_equal(t->values[1].len, 6);
    assert_memory_equal(t->values[1].data, "h\xc3\xa9llo", 6);
    assert_int_equal(t->values[2].kind, 'n');
    assert_int_equal(t->values[3].kind, 'u');
    assert_int_equal(t->values[4].kind, 'b');
    assert_int_equal(t->values[4].len, 0);
}

static void test_insert_update_delete(void **state)
{
    (void)state;
    pgo_parser p = {0};
    pgo_message m;
    msgbuf ins = {0};
    put8(&ins, 'I');
    put32(&ins, 16390);
    put8(&ins, 'N');
    tuple5(&ins);
    char *buf = parse_ok(&p, &ins, &m);
    assert_int_equal(m.kind, PGO_INSERT);
    assert_int_equal(m.relid, 16390);
    assert_int_equal(m.old_kind, 0);
    assert_tuple5(&m.new_tuple);
    /* Values point into the message. */
    assert_ptr_equal(m.new_tuple.values[0].data, buf + 1 + 4 + 1 + 2 + 1 + 4);
    pgo_message_clear(&m);
    free(buf);
    assert_every_cut_fails(&p, &ins);

    /* Update without an old tuple, with 'K' and with 'O'. */
    for (int variant = 0; variant < 3; variant++) {
        msgbuf u = {0};
        put8(&u, 'U');
        put32(&u, 16391);
        if (variant == 1) {
            put8(&u, 'K');
            put16(&u, 2);
            putval(&u, 'b', "\0\0\0\x07", 4);
            put8(&u, 'n');
        } else if (variant == 2) {
            put8(&u, 'O');
            tuple5(&u);
        }
        put8(&u, 'N');
        tuple5(&u);
        buf = parse_ok(&p, &u, &m);
        assert_int_equal(m.kind, PGO_UPDATE);
        assert_int_equal(m.relid, 16391);
        assert_tuple5(&m.new_tuple);
        if (variant == 0) {
            assert_int_equal(m.old_kind, 0);
            assert_int_equal(m.old_tuple.ncols, 0);
        } else if (variant == 1) {
            assert_int_equal(m.old_kind, 'K');
            assert_int_equal(m.old_tuple.ncols, 2);
            assert_memory_equal(m.old_tuple.values[0].data, "\0\0\0\x07", 4);
            assert_int_equal(m.old_tuple.values[1].kind, 'n');
        } else {
            assert_int_equal(m.old_kind, 'O');
            assert_tuple5(&m.old_tuple);
        }
        pgo_message_clear(&m);
        free(buf);
        assert_every_cut_fails(&p, &u);
    }

    for (int variant = 0; variant < 2; variant++) {
        msgbuf d = {0};
        put8(&d, 'D');
        put32(&d, 16392);
        put8(&d, variant ? 'O' : 'K');
        tuple5(&d);
        buf = parse_ok(&p, &d, &m);
        assert_int_equal(m.kind, PGO_DELETE);
        assert_int_equal(m.relid, 16392);
        assert_int_equal(m.old_kind, variant ? 'O' : 'K');
        assert_tuple5(&m.old_tuple);
        assert_int_equal(m.new_tuple.ncols, 0);
        pgo_message_clear(&m);
        free(buf);
        assert_every_cut_fails(&p, &d);
    }

    /* A delete has no new tuple; an insert has no old one. */
    ds_error err = {0};
    msgbuf bad = {0};
    put8(&bad, 'D');
    put32(&bad, 1);
    put8(&bad, 'N');
    tuple5(&bad);
    assert_false(pgo_parse(&p, (const char *)bad.b, bad.n, &m, &err));
    tl_assert_contains(err.msg, "expected the old tuple's tag 'K' or 'O', found 0x4e");
    bad.b[0] = 'I';
    bad.b[5] = 'K';
    assert_false(pgo_parse(&p, (const char *)bad.b, bad.n, &m, &err));
    tl_assert_contains(err.msg, "Insert message");
    tl_assert_contains(err.msg, "at byte 6: expected the new tuple's tag 'N', found 0x4b");
}

static void test_truncate_and_message(void **state)
{
    (void)state;
    pgo_parser p = {0};
    pgo_message m;
    msgbuf t = {0};
    put8(&t, 'T');
    put32(&t, 3);
    put8(&t, 3);
    put32(&t, 16390);
    put32(&t, 16391);
    put32(&t, 4294967295u);
    char *buf = parse_ok(&p, &t, &m);
    assert_int_equal(m.kind, PGO_TRUNCATE);
    assert_int_equal(m.nrelids, 3);
    assert_int_equal(m.truncate_options, 3);
    assert_int_equal(m.relids[0], 16390);
    assert_int_equal(m.relids[1], 16391);
    assert_int_equal(m.relids[2], 4294967295u);
    pgo_message_clear(&m);
    free(buf);
    assert_every_cut_fails(&p, &t);

    msgbuf g = {0};
    put8(&g, 'M');
    put8(&g, 1);
    put64(&g, 0x2A000000FFULL);
    putstr(&g, "duckstore");
    put32(&g, 3);
    putbytes(&g, "a\0b", 3);
    buf = parse_ok(&p, &g, &m);
    assert_int_equal(m.kind, PGO_MESSAGE);
    assert_int_equal(m.flags, 1);
    assert_int_equal(m.message_lsn, 0x2A000000FFULL);
    assert_string_equal(m.prefix, "duckstore");
    assert_int_equal(m.content_len, 3);
    assert_memory_equal(m.content, "a\0b", 3);
    pgo_message_clear(&m);
    free(buf);
    assert_every_cut_fails(&p, &g);
}

/* Protocol 2: Stream Start, changes prefixed with their xid, Stream Stop,
 * then Stream Commit or Abort outside the block. */
static void test_streamed_transaction(void **state)
{
    (void)state;
    pgo_parser p = {0};
    pgo_message m;
    msgbuf s = {0};
    put8(&s, 'S');
    put32(&s, 777);
    put8(&s, 1);
    assert_every_cut_fails(&p, &s);
    char *buf = parse_ok(&p, &s, &m);
    assert_int_equal(m.kind, PGO_STREAM_START);
    assert_int_equal(m.xid, 777);
    assert_true(m.first_segment);
    assert_true(p.in_stream);
    free(buf);

    msgbuf r = {0};
    relation_msg(&r, true);
    buf = parse_ok(&p, &r, &m);
    assert_int_equal(m.xid, 777);
    assert_int_equal(m.rel.oid, 16390);
    assert_int_equal(m.rel.ncols, 3);
    pgo_message_clear(&m);
    free(buf);
    assert_every_cut_fails(&p, &r);

    msgbuf y = {0};
    put8(&y, 'Y');
    put32(&y, 777);
    put32(&y, 16400);
    putstr(&y, "s");
    putstr(&y, "t");
    buf = parse_ok(&p, &y, &m);
    assert_int_equal(m.xid, 777);
    assert_int_equal(m.type_oid, 16400);
    pgo_message_clear(&m);
    free(buf);
    assert_every_cut_fails(&p, &y);

    msgbuf ins = {0};
    put8(&ins, 'I');
    put32(&ins, 778); /* a subtransaction's changes carry its own xid */
    put32(&ins, 16390);
    put8(&ins, 'N');
    tuple5(&ins);
    buf = parse_ok(&p, &ins, &m);
    assert_int_equal(m.kind, PGO_INSERT);
    assert_int_equal(m.xid, 778);
    assert_int_equal(m.relid, 16390);
    assert_tuple5(&m.new_tuple);
    pgo_message_clear(&m);
    free(buf);
    assert_every_cut_fails(&p, &ins);

    msgbuf u = {0};
    put8(&u, 'U');
    put32(&u, 777);
    put32(&u, 16390);
    put8(&u, 'O');
    tuple5(&u);
    put8(&u, 'N');
    tuple5(&u);
    buf = parse_ok(&p, &u, &m);
    assert_int_equal(m.xid, 777);
    assert_int_equal(m.old_kind, 'O');
    assert_tuple5(&m.old_tuple);
    assert_tuple5(&m.new_tuple);
    pgo_message_clear(&m);
    free(buf);
    assert_every_cut_fails(&p, &u);

    msgbuf d = {0};
    put8(&d, 'D');
    put32(&d, 777);
    put32(&d, 16390);
    put8(&d, 'K');
    put16(&d, 1);
    putval(&d, 'b', "\0\0\0\x01", 4);
    buf = parse_ok(&p, &d, &m);
    assert_int_equal(m.xid, 777);
    assert_int_equal(m.old_kind, 'K');
    assert_int_equal(m.old_tuple.ncols, 1);
    pgo_message_clear(&m);
    free(buf);
    assert_every_cut_fails(&p, &d);

    msgbuf t = {0};
    put8(&t, 'T');
    put32(&t, 777);
    put32(&t, 2);
    put8(&t, 0);
    put32(&t, 16390);
    put32(&t, 16391);
    buf = parse_ok(&p, &t, &m);
    assert_int_equal(m.xid, 777);
    assert_int_equal(m.nrelids, 2);
    assert_int_equal(m.relids[1], 16391);
    pgo_message_clear(&m);
    free(buf);
    assert_every_cut_fails(&p, &t);

    msgbuf g = {0};
    put8(&g, 'M');
    put32(&g, 777);
    put8(&g, 1);
    put64(&g, 5);
    putstr(&g, "p");
    put32(&g, 0);
    buf = parse_ok(&p, &g, &m);
    assert_int_equal(m.xid, 777);
    assert_string_equal(m.prefix, "p");
    assert_int_equal(m.content_len, 0);
    pgo_message_clear(&m);
    free(buf);

    /* The same insert without the xid is short by four bytes inside the
     * block: the tuple's count is read from the relation id. */
    msgbuf noxid = {0};
    put8(&noxid, 'I');
    put32(&noxid, 16390);
    put8(&noxid, 'N');
    tuple5(&noxid);
    ds_error err = {0};
    assert_false(pgo_parse(&p, (const char *)noxid.b, noxid.n, &m, &err));
    /* A second Stream Start, Commit or Abort inside the block is refused. */
    assert_false(pgo_parse(&p, (const char *)s.b, s.n, &m, &err));
    tl_assert_contains(err.msg, "a stream starts inside another");

    msgbuf e = {0};
    put8(&e, 'E');
    assert_every_cut_fails(&p, &e);
    buf = parse_ok(&p, &e, &m);
    assert_int_equal(m.kind, PGO_STREAM_STOP);
    assert_false(p.in_stream);
    free(buf);
    assert_false(pgo_parse(&p, (const char *)e.b, e.n, &m, &err));
    tl_assert_contains(err.msg, "Stream Stop outside a streamed block");

    /* Outside the block the same insert reads without an xid. */
    buf = parse_ok(&p, &noxid, &m);
    assert_int_equal(m.xid, 0);
    assert_tuple5(&m.new_tuple);
    pgo_message_clear(&m);
    free(buf);

    msgbuf c = {0};
    put8(&c, 'c');
    put32(&c, 777);
    put8(&c, 0);
    put64(&c, 0x3000000010ULL);
    put64(&c, 0x3000000090ULL);
    put64(&c, 822550000000001LL);
    buf = parse_ok(&p, &c, &m);
    assert_int_equal(m.kind, PGO_STREAM_COMMIT);
    assert_int_equal(m.xid, 777);
    assert_int_equal(m.commit_lsn, 0x3000000010ULL);
    assert_int_equal(m.end_lsn, 0x3000000090ULL);
    assert_int_equal(m.time_us, 822550000000001LL);
    free(buf);
    assert_every_cut_fails(&p, &c);

    msgbuf a = {0};
    put8(&a, 'A');
    put32(&a, 777);
    put32(&a, 778);
    buf = parse_ok(&p, &a, &m);
    assert_int_equal(m.kind, PGO_STREAM_ABORT);
    assert_int_equal(m.xid, 777);
    assert_int_equal(m.subxid, 778);
    free(buf);
    assert_every_cut_fails(&p, &a);

    /* Commit and Abort belong after Stream Stop. */
    p.in_stream = true;
    assert_false(pgo_parse(&p, (const char *)c.b, c.n, &m, &err));
    tl_assert_contains(err.msg, "Stream Commit inside a streamed block");
    assert_false(pgo_parse(&p, (const char *)a.b, a.n, &m, &err));
    tl_assert_contains(err.msg, "Stream Abort inside a streamed block");
}

/* Counts and lengths that promise more than the message holds are refused
 * before anything is allocated for them. */
static void test_hostile_counts(void **state)
{
    (void)state;
    pgo_parser p = {0};
    pgo_message m;
    ds_error err = {0};

    msgbuf t = {0};
    put8(&t, 'T');
    put32(&t, 0x7fffffff);
    put8(&t, 0);
    put32(&t, 1);
    assert_false(pgo_parse(&p, (const char *)t.b, t.n, &m, &err));
    tl_assert_contains(err.msg, "claims 2147483647 relations in 4 bytes");

    msgbuf i = {0};
    put8(&i, 'I');
    put32(&i, 1);
    put8(&i, 'N');
    put16(&i, 65535);
    put8(&i, 'n');
    assert_false(pgo_parse(&p, (const char *)i.b, i.n, &m, &err));
    tl_assert_contains(err.msg, "the tuple claims 65535 columns in 1 bytes");

    msgbuf v = {0};
    put8(&v, 'I');
    put32(&v, 1);
    put8(&v, 'N');
    put16(&v, 1);
    put8(&v, 't');
    put32(&v, 0xffffffffu);
    assert_false(pgo_parse(&p, (const char *)v.b, v.n, &m, &err));
    tl_assert_contains(err.msg, "column 1 has a negative length");
    v.n -= 4;
    put32(&v, 0x7fffffff);
    assert_false(pgo_parse(&p, (const char *)v.b, v.n, &m, &err));
    tl_assert_contains(err.msg, "a value needs 2147483647 bytes, 0 left");

    msgbuf k = {0};
    put8(&k, 'I');
    put32(&k, 1);
    put8(&k, 'N');
    put16(&k, 1);
    put8(&k, 'x');
    assert_false(pgo_parse(&p, (const char *)k.b, k.n, &m, &err));
    tl_assert_contains(err.msg, "column 1 has the unknown kind 0x78 (expected n, u, t or b)");

    msgbuf r = {0};
    put8(&r, 'R');
    put32(&r, 1);
    putstr(&r, "s");
    putstr(&r, "t");
    put8(&r, 'd');
    put16(&r, 1000);
    for (int c = 0; c < 99; c++) {
        put8(&r, 0);
        putstr(&r, "");
        put32(&r, 23);
        put32(&r, 0);
    }
    assert_false(pgo_parse(&p, (const char *)r.b, r.n, &m, &err));
    tl_assert_contains(err.msg, "the relation claims 1000 columns in 990 bytes");

    msgbuf s = {0};
    put8(&s, 'O');
    put64(&s, 1);
    putbytes(&s, "no-nul", 6);
    assert_false(pgo_parse(&p, (const char *)s.b, s.n, &m, &err));
    tl_assert_contains(err.msg, "the origin name has no terminating NUL byte");

    /* Protocol 3's two-phase messages and anything else: unknown. */
    assert_false(pgo_parse(&p, "P", 1, &m, &err));
    tl_assert_contains(err.msg, "unknown pgoutput message type 0x50");
    assert_false(pgo_parse(&p, "", 0, &m, &err));
    tl_assert_contains(err.msg, "empty pgoutput message");
}

static void test_lsn_text(void **state)
{
    (void)state;
    char text[24];
    pgo_lsn_format(0x16B374D848ULL, text);
    assert_string_equal(text, "16/B374D848");
    pgo_lsn_format(0, text);
    assert_string_equal(text, "0/0");
    pgo_lsn_format(UINT64_MAX, text);
    assert_string_equal(text, "FFFFFFFF/FFFFFFFF");
    uint64_t lsn = 1;
    assert_true(pgo_lsn_parse("16/B374D848", &lsn));
    assert_int_equal(lsn, 0x16B374D848ULL);
    assert_true(pgo_lsn_parse("ffffffff/ffffffff", &lsn));
    assert_int_equal(lsn, UINT64_MAX);
    assert_true(pgo_lsn_parse("0/0", &lsn));
    assert_int_equal(lsn, 0);
    const char *bad[] = {"",    "/",    "16/",  "/1",   "16B374D848", "1/2/3", "123456789/0", "0/123456789",
                         "g/0", "1/ 2", " 1/2", "1/2 ", "-1/2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (pgo_lsn_parse(bad[i], &lsn))
            fail_msg("\"%s\" was read as an LSN", bad[i]);
}

/* ---- PostgreSQL's own bytes ------------------------------------------- */

static char *g_conninfo;
static PGconn *g_pg;

/* Every change the slot holds, decoded in order through one parser; the
 * result stays alive while the messages point into it. */
typedef struct peeked {
    PGresult *res;
    size_t n;
    pgo_message *msgs;
} peeked;

static void peek(peeked *out, const char *slot, const char *options)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT data FROM pg_logical_slot_peek_binary_changes('%s', NULL, NULL, %s)",
             slot, options);
    out->res = PQexecParams(g_pg, sql, 0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(out->res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(g_pg));
    out->n = (size_t)PQntuples(out->res);
    out->msgs = calloc(out->n ? out->n : 1, sizeof *out->msgs);
    assert_non_null(out->msgs);
    pgo_parser p = {0};
    for (size_t i = 0; i < out->n; i++) {
        ds_error err = {0};
        if (!pgo_parse(&p, PQgetvalue(out->res, (int)i, 0), (size_t)PQgetlength(out->res, (int)i, 0),
                       &out->msgs[i], &err))
            fail_msg("change %zu: %s", i, err.msg);
    }
    assert_false(p.in_stream);
}

static void peeked_free(peeked *pk)
{
    for (size_t i = 0; i < pk->n; i++)
        pgo_message_clear(&pk->msgs[i]);
    free(pk->msgs);
    PQclear(pk->res);
}

/* The kinds in order, as a string ("BRIC..."), for one assertion. */
static void assert_kinds(const peeked *pk, const char *expected)
{
    char kinds[256];
    size_t n = 0;
    for (size_t i = 0; i < pk->n && n + 1 < sizeof kinds; i++)
        kinds[n++] = (char)pk->msgs[i].kind;
    kinds[n] = '\0';
    assert_string_equal(kinds, expected);
}

static void assert_int4(const pgo_value *v, int32_t expected)
{
    assert_int_equal(v->kind, 'b');
    assert_int_equal(v->len, 4);
    const unsigned char *d = (const unsigned char *)v->data;
    int32_t got = (int32_t)((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3]);
    assert_int_equal(got, expected);
}

static void assert_text(const pgo_value *v, const char *expected)
{
    assert_int_equal(v->kind, 'b'); /* text's binary form is its bytes */
    assert_int_equal(v->len, strlen(expected));
    assert_memory_equal(v->data, expected, v->len);
}

static uint32_t table_oid(const char *name)
{
    return (uint32_t)tl_pg_int(g_pg, "SELECT '%s'::regclass::oid", name);
}

static void test_real_protocol1_binary(void **state)
{
    (void)state;
    char slot[64];
    snprintf(slot, sizeof slot, "ds_pgo_p1_%d", (int)getpid());
    tl_pg_exec(g_pg, "CREATE TABLE t (id int4 PRIMARY KEY, name text, score int4, note text);"
                     "ALTER TABLE t ALTER note SET STORAGE EXTERNAL;"
                     "CREATE TABLE f (k int4, v text); ALTER TABLE f REPLICA IDENTITY FULL;"
                     "CREATE PUBLICATION p FOR TABLE t, f");
    tl_pg_exec(g_pg, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot);
    tl_pg_exec(g_pg,
               "INSERT INTO t VALUES (1, 'one', 10, NULL), (3, 'thr\u00e9e', NULL, repeat('x', 10000))");
    tl_pg_exec(g_pg, "UPDATE t SET name = 'uno', score = 11 WHERE id = 1");
    tl_pg_exec(g_pg, "UPDATE t SET score = 31 WHERE id = 3");
    tl_pg_exec(g_pg, "UPDATE t SET id = 2 WHERE id = 1");
    tl_pg_exec(g_pg, "DELETE FROM t WHERE id = 2");
    tl_pg_exec(g_pg, "BEGIN; INSERT INTO t VALUES (99, 'never', 0, NULL); ROLLBACK");
    tl_pg_exec(g_pg, "BEGIN; INSERT INTO f VALUES (5, 'a'); UPDATE f SET v = 'b'; DELETE FROM f; COMMIT");
    tl_pg_exec(g_pg, "TRUNCATE t, f");

    peeked pk;
    peek(&pk, slot, "'proto_version', '1', 'publication_names', 'p', 'binary', 'true'");
    assert_kinds(&pk, "BRIIC"
                      "BUC"
                      "BUC"
                      "BUC"
                      "BDC"
                      "BRIUDC"
                      "BRRTC");
    uint32_t t_oid = table_oid("t"), f_oid = table_oid("f");
    const pgo_message *m = pk.msgs;

    /* Begin and Commit agree on the transaction's LSN. */
    assert_true(m[0].final_lsn > 0);
    assert_true(m[0].xid > 0);
    assert_int_equal(m[4].commit_lsn, m[0].final_lsn);
    assert_true(m[4].end_lsn > m[4].commit_lsn);
    assert_true(m[4].time_us > 0 && m[4].time_us == m[0].time_us);

    const pgo_relation *rel = &m[1].rel;
    assert_int_equal(rel->oid, t_oid);
    assert_string_equal(rel->nspname, "public");
    assert_string_equal(rel->relname, "t");
    assert_int_equal(rel->replident, 'd');
    assert_int_equal(rel->ncols, 4);
    const char *names[] = {"id", "name", "score", "note"};
    const uint32_t types[] = {23, 25, 23, 25};
    for (int i = 0; i < 4; i++) {
        assert_string_equal(rel->cols[i].name, names[i]);
        assert_int_equal(rel->cols[i].type_oid, types[i]);
        assert_int_equal(rel->cols[i].typmod, -1);
        assert_int_equal(rel->cols[i].key, i == 0);
    }

    assert_int_equal(m[2].relid, t_oid);
    assert_int_equal(m[2].new_tuple.ncols, 4);
    assert_int4(&m[2].new_tuple.values[0], 1);
    assert_text(&m[2].new_tuple.values[1], "one");
    assert_int4(&m[2].new_tuple.values[2], 10);
    assert_int_equal(m[2].new_tuple.values[3].kind, 'n');
    assert_int4(&m[3].new_tuple.values[0], 3);
    assert_text(&m[3].new_tuple.values[1], "thr\u00e9e");
    assert_int_equal(m[3].new_tuple.values[2].kind, 'n');
    assert_int_equal(m[3].new_tuple.values[3].len, 10000);

    /* The key did not change: no old tuple. */
    assert_int_equal(m[6].kind, PGO_UPDATE);
    assert_int_equal(m[6].old_kind, 0);
    assert_int4(&m[6].new_tuple.values[0], 1);
    assert_text(&m[6].new_tuple.values[1], "uno");
    assert_int4(&m[6].new_tuple.values[2], 11);

    /* The TOASTed note was not changed: 'u', not sent. */
    assert_int_equal(m[9].old_kind, 0);
    assert_int4(&m[9].new_tuple.values[0], 3);
    assert_int4(&m[9].new_tuple.values[2], 31);
    assert_int_equal(m[9].new_tuple.values[3].kind, 'u');
    assert_int_equal(m[9].new_tuple.values[3].len, 0);

    /* The key changed: 'K' with the old key, the other columns NULL. */
    assert_int_equal(m[12].old_kind, 'K');
    assert_int_equal(m[12].old_tuple.ncols, 4);
    assert_int4(&m[12].old_tuple.values[0], 1);
    assert_int_equal(m[12].old_tuple.values[1].kind, 'n');
    assert_int_equal(m[12].old_tuple.values[2].kind, 'n');
    assert_int4(&m[12].new_tuple.values[0], 2);
    assert_text(&m[12].new_tuple.values[1], "uno");

    assert_int_equal(m[15].kind, PGO_DELETE);
    assert_int_equal(m[15].relid, t_oid);
    assert_int_equal(m[15].old_kind, 'K');
    assert_int4(&m[15].old_tuple.values[0], 2);
    assert_int_equal(m[15].new_tuple.ncols, 0);

    /* The rolled-back insert is absent; REPLICA IDENTITY FULL sends the
     * whole old row. */
    assert_int_equal(m[18].rel.oid, f_oid);
    assert_int_equal(m[18].rel.replident, 'f');
    assert_true(m[18].rel.cols[0].key && m[18].rel.cols[1].key);
    assert_int4(&m[19].new_tuple.values[0], 5);
    assert_int_equal(m[20].old_kind, 'O');
    assert_int4(&m[20].old_tuple.values[0], 5);
    assert_text(&m[20].old_tuple.values[1], "a");
    assert_text(&m[20].new_tuple.values[1], "b");
    assert_int_equal(m[21].old_kind, 'O');
    assert_text(&m[21].old_tuple.values[1], "b");

    /* TRUNCATE gave both tables new files: their Relation again, then one
     * Truncate naming both. */
    assert_int_equal(m[24].rel.oid + m[25].rel.oid, t_oid + f_oid);
    assert_int_equal(m[26].kind, PGO_TRUNCATE);
    assert_int_equal(m[26].nrelids, 2);
    assert_int_equal(m[26].truncate_options, 0);
    assert_true((m[26].relids[0] == t_oid && m[26].relids[1] == f_oid) ||
                (m[26].relids[0] == f_oid && m[26].relids[1] == t_oid));
    peeked_free(&pk);

    /* Text mode: the same values as PostgreSQL's text output. */
    peek(&pk, slot, "'proto_version', '1', 'publication_names', 'p'");
    assert_int_equal(pk.msgs[2].new_tuple.values[0].kind, 't');
    assert_int_equal(pk.msgs[2].new_tuple.values[0].len, 1);
    assert_memory_equal(pk.msgs[2].new_tuple.values[0].data, "1", 1);
    peeked_free(&pk);

    tl_pg_exec(g_pg, "SELECT pg_drop_replication_slot('%s')", slot);
}

/* Protocol 2 with streaming: a transaction larger than
 * logical_decoding_work_mem arrives in Stream Start / Stop blocks whose
 * changes carry its xid, then Stream Commit; an aborted one that streamed
 * ends in Stream Abort. */
static void test_real_protocol2_streamed(void **state)
{
    (void)state;
    char slot[64];
    snprintf(slot, sizeof slot, "ds_pgo_p2_%d", (int)getpid());
    tl_pg_exec(g_pg, "CREATE TABLE big (id int4 PRIMARY KEY, pad text); CREATE PUBLICATION pb FOR TABLE big");
    tl_pg_exec(g_pg, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot);
    tl_pg_exec(g_pg, "BEGIN; INSERT INTO big SELECT g, 'x' FROM generate_series(3001, 6000) AS g; ROLLBACK");
    tl_pg_exec(g_pg, "INSERT INTO big SELECT g, repeat('p', 100) FROM generate_series(1, 3000) AS g");
    tl_pg_exec(g_pg, "SET logical_decoding_work_mem = '64kB'");
    peeked pk;
    peek(&pk, slot, "'proto_version', '2', 'publication_names', 'pb', 'binary', 'true', 'streaming', 'on'");
    tl_pg_exec(g_pg, "RESET logical_decoding_work_mem");
    const pgo_message *m = pk.msgs;
    /* First the rolled-back transaction's blocks and its Stream Abort,
     * then the committed one's blocks and its Stream Commit. */
    uint32_t xids[2] = {0, 0};
    size_t inserts[2] = {0, 0}, starts[2] = {0, 0}, ends[2] = {0, 0}, i = 0;
    int32_t next_id = 1;
    for (int t = 0; t < 2; t++) {
        assert_true(i < pk.n);
        assert_int_equal(m[i].kind, PGO_STREAM_START);
        xids[t] = m[i].xid;
        assert_true(xids[t] > 0);
        for (; i < pk.n && m[i].kind != PGO_STREAM_COMMIT && m[i].kind != PGO_STREAM_ABORT; i++) {
            if (m[i].kind == PGO_STREAM_START) {
                assert_int_equal(m[i].xid, xids[t]);
                assert_int_equal(m[i].first_segment, starts[t] == 0);
                starts[t]++;
            } else if (m[i].kind == PGO_INSERT) {
                assert_int_equal(m[i].xid, xids[t]);
                if (t == 1) {
                    assert_int4(&m[i].new_tuple.values[0], next_id++);
                    assert_int_equal(m[i].new_tuple.values[1].len, 100);
                }
                inserts[t]++;
            } else if (m[i].kind == PGO_RELATION) {
                assert_int_equal(m[i].xid, xids[t]);
                assert_string_equal(m[i].rel.relname, "big");
            } else {
                assert_int_equal(m[i].kind, PGO_STREAM_STOP);
            }
        }
        assert_true(i < pk.n);
        assert_int_equal(m[i].xid, xids[t]);
        ends[t] = i++;
    }
    assert_int_equal(i, pk.n);
    assert_int_not_equal(xids[0], xids[1]);
    /* The aborted one streams at least one block (PostgreSQL 15 drops the
     * changes of a transaction it already knows aborted), the committed
     * one several. */
    assert_true(starts[0] >= 1 && starts[1] >= 2);
    assert_int_equal(inserts[1], 3000);
    assert_int_equal(m[ends[0]].kind, PGO_STREAM_ABORT);
    assert_int_equal(m[ends[0]].subxid, xids[0]); /* the whole transaction */
    assert_int_equal(m[ends[1]].kind, PGO_STREAM_COMMIT);
    assert_true(m[ends[1]].commit_lsn > 0 && m[ends[1]].end_lsn > m[ends[1]].commit_lsn);
    assert_true(m[ends[1]].time_us > 0);
    peeked_free(&pk);
    tl_pg_exec(g_pg, "SELECT pg_drop_replication_slot('%s')", slot);
}

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("pgoutput"));
    g_pg = tl_pg_connect(g_conninfo);
    /* The harness runs with synchronous_commit off; a slot is read up to
     * the flushed WAL, so each commit here is flushed before the next read. */
    tl_pg_exec(g_pg, "SET synchronous_commit = on");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    /* A slot left by a failed test would keep WAL: drop this program's. */
    tl_pg_exec(g_pg,
               "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
               "WHERE slot_name LIKE 'ds\\_pgo\\_%%\\_%d' AND NOT active",
               (int)getpid());
    PQfinish(g_pg);
    free(g_conninfo);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_begin_commit_origin),
        cmocka_unit_test(test_relation_and_type),
        cmocka_unit_test(test_insert_update_delete),
        cmocka_unit_test(test_truncate_and_message),
        cmocka_unit_test(test_streamed_transaction),
        cmocka_unit_test(test_hostile_counts),
        cmocka_unit_test(test_lsn_text),
        cmocka_unit_test(test_real_protocol1_binary),
        cmocka_unit_test(test_real_protocol2_streamed),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
