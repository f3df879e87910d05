/* Fuzz body of the pgoutput decoder (src/source/pgoutput.c). Byte 0: bit 0
 * starts the parser inside a streamed block, bit 1 makes the rest one
 * message; otherwise the rest is frames of a big-endian uint16 length and
 * that many bytes (the last one cut to what is left), parsed in order by
 * one parser, as a replication stream's payloads are. Each message is an
 * exact-size heap copy, so ASan sees any read past its end. A parsed
 * message's values and strings lie inside it, its counts match its arrays,
 * and only Stream Start / Stop change the parser's state; a refused one is
 * DS_ERR_SOURCE with a message, leaves nothing allocated (LeakSanitizer)
 * and the state as it was. tests/fuzz/make-seeds.sh writes PostgreSQL's own
 * pgoutput bytes as seeds. */
#include "fuzz_harness.h"

#include <string.h>

#include "source/pgoutput.h"

static void check_inside(const char *p, size_t n, const char *buf, size_t len)
{
    CHECK(p != NULL || n == 0);
    if (p != NULL)
        CHECK(p >= buf && n <= len && p - buf <= (ptrdiff_t)(len - n));
}

static void check_string(const char *s, const char *buf, size_t len)
{
    CHECK(s != NULL);
    check_inside(s, strlen(s) + 1, buf, len);
}

static void check_tuple(const pgo_tuple *t, const char *buf, size_t len)
{
    CHECK(t->ncols == 0 || t->values != NULL);
    for (uint16_t i = 0; i < t->ncols; i++) {
        const pgo_value *v = &t->values[i];
        CHECK(strchr("nutb", v->kind) != NULL && v->kind != '\0');
        if (v->kind == 't' || v->kind == 'b')
            check_inside(v->data, v->len, buf, len);
        else
            CHECK(v->data == NULL && v->len == 0);
    }
}

static void parse_one(pgo_parser *p, const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    CHECK(buf != NULL);
    memcpy(buf, data, size);
    bool before = p->in_stream;
    pgo_message m;
    ds_error err;
    ds_error_clear(&err);
    if (!pgo_parse(p, buf, size, &m, &err)) {
        CHECK(err.code == DS_ERR_SOURCE || err.code == DS_ERR_NOMEM);
        CHECK(err.msg[0] != '\0');
        CHECK(p->in_stream == before);
        CHECK(m.rel.cols == NULL && m.new_tuple.values == NULL && m.old_tuple.values == NULL &&
              m.relids == NULL && m.origin == NULL);
        free(buf);
        return;
    }
    CHECK(size > 0 && (char)m.kind == buf[0]);
    CHECK(p->in_stream == (m.kind == PGO_STREAM_START ? true : m.kind == PGO_STREAM_STOP ? false : before));
    check_tuple(&m.new_tuple, buf, size);
    check_tuple(&m.old_tuple, buf, size);
    CHECK((m.old_kind == 0) == (m.old_tuple.values == NULL));
    if (m.kind == PGO_INSERT)
        CHECK(m.old_kind == 0 && m.new_tuple.values != NULL);
    if (m.kind == PGO_DELETE)
        CHECK((m.old_kind == 'K' || m.old_kind == 'O') && m.new_tuple.values == NULL);
    if (m.kind == PGO_RELATION) {
        CHECK(m.rel.nspname != NULL && m.rel.relname != NULL);
        CHECK(m.rel.ncols == 0 || m.rel.cols != NULL);
        for (uint16_t i = 0; i < m.rel.ncols; i++)
            CHECK(m.rel.cols[i].name != NULL);
        /* Moved out, the relation outlives the message. */
        pgo_relation rel;
        pgo_relation_take(&m, &rel);
        CHECK(m.rel.cols == NULL);
        pgo_relation_free(&rel);
    }
    if (m.kind == PGO_TRUNCATE)
        CHECK(m.relids != NULL && (size_t)m.nrelids * 4 <= size);
    if (m.kind == PGO_ORIGIN)
        CHECK(m.origin != NULL);
    if (m.kind == PGO_TYPE) {
        check_string(m.type_nspname, buf, size);
        check_string(m.type_name, buf, size);
    }
    if (m.kind == PGO_MESSAGE) {
        check_string(m.prefix, buf, size);
        check_inside(m.content, m.content_len, buf, size);
    }
    pgo_message_clear(&m);
    free(buf);
}

int fuzz_pgoutput_input(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    pgo_parser p = {.in_stream = (data[0] & 1) != 0};
    bool whole = (data[0] & 2) != 0;
    data++;
    size--;
    if (whole) {
        parse_one(&p, data, size);
        return 0;
    }
    while (size >= 2) {
        size_t n = (size_t)data[0] << 8 | data[1];
        data += 2;
        size -= 2;
        if (n > size)
            n = size;
        parse_one(&p, data, n);
        data += n;
        size -= n;
    }
    /* LSN text round trip on the same bytes. */
    char text[24];
    uint64_t lsn = 0;
    for (size_t i = 0; i < 8 && i < size; i++)
        lsn = lsn << 8 | data[i];
    pgo_lsn_format(lsn, text);
    uint64_t back = 0;
    CHECK(pgo_lsn_parse(text, &back) && back == lsn);
    return 0;
}
