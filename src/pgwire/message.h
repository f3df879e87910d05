/* PostgreSQL protocol 3.0 framing (docs/pg-protocol.md): the startup
 * packet, typed messages in and out, over a plain or TLS socket. Every
 * length a client sends is checked against a bound before anything is
 * read into memory: a hostile length never allocates more than it sent. */
#ifndef DS_PGWIRE_MESSAGE_H
#define DS_PGWIRE_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/strbuf.h"

/* PostgreSQL's own bound on a startup packet. */
#define PGM_MAX_STARTUP 10000
/* A message after startup (a Query, a Bind with its parameters). */
#define PGM_MAX_MESSAGE (64u << 20)

#define PGM_PROTOCOL_3 196608u
#define PGM_CANCEL_CODE 80877102u
#define PGM_SSL_CODE 80877103u
#define PGM_GSSENC_CODE 80877104u

typedef struct ssl_st SSL;

typedef struct pgm_conn {
    int fd;
    SSL *ssl;         /* after an accepted SSLRequest */
    ds_buf out;       /* written, not yet sent */
    size_t msg_start; /* of the message being built in out */
    unsigned char rbuf[16384];
    size_t rpos, rlen; /* received, not yet consumed */
    bool closed;
} pgm_conn;

/* Reads exactly n bytes (into dst, or discarded when dst is NULL); waits at
 * most timeout_ms for the first byte (< 0: forever); *timed_out tells. */
bool pgm_read_exact(pgm_conn *c, void *dst, size_t n, int timeout_ms, bool *timed_out, ds_error *err);

/* What a startup packet says. */
typedef struct pgm_startup {
    uint32_t code; /* PGM_PROTOCOL_3, PGM_CANCEL_CODE, PGM_SSL_CODE, PGM_GSSENC_CODE or another */
    /* PGM_CANCEL_CODE */
    uint32_t cancel_pid, cancel_secret;
    /* PGM_PROTOCOL_3: name/value pairs, pointing into the packet */
    const char *names[64];
    const char *values[64];
    size_t n_params;
} pgm_startup;

/* Parses a startup packet's body (after its length); false with err when
 * malformed. Pure: the fuzz target's entry point. */
bool pgm_parse_startup(const char *body, size_t len, pgm_startup *out, ds_error *err);
const char *pgm_startup_param(const pgm_startup *s, const char *name);

/* Reads a startup packet into body (bounded by PGM_MAX_STARTUP). */
bool pgm_read_startup(pgm_conn *c, ds_buf *body, int timeout_ms, bool *timed_out, ds_error *err);

/* Reads one typed message: its type and body (bounded by PGM_MAX_MESSAGE;
 * the body grows as bytes arrive, not from the announced length). */
bool pgm_read_message(pgm_conn *c, char *type, ds_buf *body, int timeout_ms, bool *timed_out, ds_error *err);

/* A cursor over a received message body. */
typedef struct pgm_reader {
    const char *p;
    size_t len, pos;
    bool bad; /* read past the end or a string without its NUL */
} pgm_reader;

void pgm_reader_init(pgm_reader *r, const char *p, size_t len);
int32_t pgm_get_i32(pgm_reader *r);
int16_t pgm_get_i16(pgm_reader *r);
uint8_t pgm_get_u8(pgm_reader *r);
/* NUL-terminated string in the body; "" once bad. */
const char *pgm_get_str(pgm_reader *r);
/* n bytes; NULL once bad. */
const char *pgm_get_bytes(pgm_reader *r, size_t n);

/* Building messages into c->out. */
void pgm_begin(pgm_conn *c, char type);
void pgm_end(pgm_conn *c);
void pgm_put_i32(ds_buf *b, int32_t v);
void pgm_put_i16(ds_buf *b, int16_t v);
void pgm_put_str(ds_buf *b, const char *s); /* with its NUL */

/* Bytes of a message the client sent are here already (read, or held
 * decrypted by TLS): answers can wait for the next flush, as PostgreSQL's
 * do, rather than go out one small send per message. */
bool pgm_input_buffered(const pgm_conn *c);

/* Sends what is in out. */
bool pgm_flush(pgm_conn *c, ds_error *err);
/* Writes raw bytes now (the SSLRequest answer, before TLS starts). */
bool pgm_write_raw(pgm_conn *c, const void *p, size_t n, ds_error *err);

/* An ErrorResponse (or NoticeResponse with type 'N'): severity, SQLSTATE,
 * message, and a 1-based character position when > 0. */
void pgm_error(pgm_conn *c, char type, const char *severity, const char *sqlstate, const char *message,
               int position);

#endif
