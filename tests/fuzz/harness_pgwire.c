/* Fuzz body of the PostgreSQL protocol's framing (src/pgwire/message.c).
 * Byte 0 picks what the rest is: even, a startup packet's body (after its
 * length) for pgm_parse_startup; odd, the bytes a client sends after its
 * startup, read message by message through a socket with pgm_read_message
 * and taken apart with the pgm_reader calls the session uses. Every parsed
 * name and value must lie inside the input and end at its NUL; every
 * message body must be exactly as long as its length said, within
 * PGM_MAX_MESSAGE; a reader never reads past its body. */
#include "fuzz_harness.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "pgwire/message.h"

static void check_inside(const char *s, const char *body, size_t len)
{
    CHECK(s >= body && s < body + len);
    CHECK(memchr(s, '\0', (size_t)(body + len - s)) != NULL);
}

static void startup(const uint8_t *data, size_t size)
{
    pgm_startup su;
    ds_error err;
    ds_error_clear(&err);
    if (!pgm_parse_startup((const char *)data, size, &su, &err)) {
        CHECK(err.msg[0] != '\0');
        return;
    }
    CHECK(size >= 4);
    for (size_t i = 0; i < su.n_params; i++) {
        check_inside(su.names[i], (const char *)data, size);
        check_inside(su.values[i], (const char *)data, size);
        CHECK(pgm_startup_param(&su, su.names[i]) != NULL);
    }
}

/* What the session reads of a Bind: names, counts and values. */
static void take_apart(const char *body, size_t len)
{
    pgm_reader r;
    pgm_reader_init(&r, body, len);
    const char *a = pgm_get_str(&r);
    const char *b = pgm_get_str(&r);
    int16_t n = pgm_get_i16(&r);
    for (int i = 0; i < n && !r.bad; i++)
        pgm_get_i16(&r);
    n = pgm_get_i16(&r);
    for (int i = 0; i < n && !r.bad; i++) {
        int32_t vlen = pgm_get_i32(&r);
        if (vlen > 0) {
            const char *v = pgm_get_bytes(&r, (size_t)vlen);
            CHECK(r.bad || (v >= body && v + vlen <= body + len));
        }
    }
    CHECK(r.pos <= r.len);
    if (!r.bad) {
        check_inside(a, body, len);
        check_inside(b, body, len);
    }
}

static void messages(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return;
    /* The input fits the socket's buffer (max_len in scripts/fuzz.sh). */
    if (size > 0 && write(sv[1], data, size) != (ssize_t)size) {
        close(sv[0]);
        close(sv[1]);
        return;
    }
    close(sv[1]);
    pgm_conn c = {.fd = sv[0], .out = DS_BUF_INIT};
    ds_buf body = DS_BUF_INIT;
    size_t consumed = 0;
    for (;;) {
        char type;
        bool timed_out;
        ds_error err;
        ds_error_clear(&err);
        if (!pgm_read_message(&c, &type, &body, -1, &timed_out, &err))
            break;
        CHECK(body.len <= PGM_MAX_MESSAGE);
        consumed += 5 + body.len;
        CHECK(consumed <= size);
        uint32_t announced = (uint32_t)data[consumed - body.len - 4] << 24 |
                             (uint32_t)data[consumed - body.len - 3] << 16 |
                             (uint32_t)data[consumed - body.len - 2] << 8 | data[consumed - body.len - 1];
        CHECK(announced == body.len + 4);
        CHECK(body.len == 0 || memcmp(body.data, data + consumed - body.len, body.len) == 0);
        take_apart(body.data ? body.data : "", body.len);
    }
    ds_buf_free(&body);
    ds_buf_free(&c.out);
    close(sv[0]);
}

int fuzz_pgwire_input(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] % 2 == 0)
        startup(data + 1, size - 1);
    else
        messages(data + 1, size - 1);
    return 0;
}
