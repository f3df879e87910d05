/* Decoder of PostgreSQL's logical replication messages (the `pgoutput`
 * plugin, protocol versions 1 and 2 with streamed transactions), one
 * XLogData payload at a time. No I/O, so it is unit- and fuzz-testable on
 * plain buffers; every length is checked against the message's own. */
#ifndef DS_SOURCE_PGOUTPUT_H
#define DS_SOURCE_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef enum pgo_kind {
    PGO_BEGIN = 'B',
    PGO_COMMIT = 'C',
    PGO_ORIGIN = 'O',
    PGO_RELATION = 'R',
    PGO_TYPE = 'Y',
    PGO_INSERT = 'I',
    PGO_UPDATE = 'U',
    PGO_DELETE = 'D',
    PGO_TRUNCATE = 'T',
    PGO_MESSAGE = 'M',
    PGO_STREAM_START = 'S',
    PGO_STREAM_STOP = 'E',
    PGO_STREAM_COMMIT = 'c',
    PGO_STREAM_ABORT = 'A',
} pgo_kind;

/* One column value of a tuple: 'n' NULL, 'u' unchanged TOASTed value (not
 * sent), 't' text, 'b' binary (the type's send format, as in binary COPY).
 * data points into the message buffer given to pgo_parse. */
typedef struct pgo_value {
    char kind;
    const char *data;
    uint32_t len;
} pgo_value;

typedef struct pgo_tuple {
    uint16_t ncols;
    pgo_value *values; /* owned by the message */
} pgo_tuple;

typedef struct pgo_column {
    bool key; /* part of the replica identity */
    char *name;
    uint32_t type_oid;
    int32_t typmod;
} pgo_column;

/* A table as the stream describes it (sent before its first change in a
 * session and again after any change of its columns). */
typedef struct pgo_relation {
    uint32_t oid;
    char *nspname, *relname;
    char replident; /* 'd' default (primary key), 'n' nothing, 'f' full, 'i' index */
    uint16_t ncols;
    pgo_column *cols;
} pgo_relation;

typedef struct pgo_message {
    pgo_kind kind;
    /* Transaction of a change inside a streamed block (protocol 2), of
     * Begin, Stream Start / Commit / Abort; 0 when the message has none. */
    uint32_t xid;
    /* Begin: final_lsn; Commit / Stream Commit: commit_lsn and end_lsn;
     * times in microseconds since 2000-01-01 (PostgreSQL's epoch). */
    uint64_t final_lsn, commit_lsn, end_lsn;
    int64_t time_us;
    uint8_t flags;
    bool first_segment;  /* Stream Start */
    uint32_t subxid;     /* Stream Abort */
    pgo_relation rel;    /* Relation (owned; pgo_relation_take moves it out) */
    uint32_t relid;      /* Insert / Update / Delete */
    char old_kind;       /* Update / Delete: 'K' key columns only, 'O' whole old row, 0 none */
    pgo_tuple old_tuple; /* when old_kind != 0 */
    pgo_tuple new_tuple; /* Insert / Update */
    uint32_t *relids;    /* Truncate (owned) */
    uint32_t nrelids;
    uint8_t truncate_options; /* 1 CASCADE, 2 RESTART IDENTITY */
    char *origin;             /* Origin (owned) */
    uint64_t origin_lsn;
    /* Type: a non-built-in column type; both names point into buf. */
    uint32_t type_oid;
    const char *type_nspname, *type_name;
    /* Message (pg_logical_emit_message, sent with the messages option):
     * flags bit 1 is "transactional"; prefix (NUL-terminated) and content
     * point into buf. */
    uint64_t message_lsn;
    const char *prefix;
    const char *content;
    uint32_t content_len;
} pgo_message;

/* Stream state: protocol 2 prefixes the changes between Stream Start and
 * Stream Stop with their transaction id. */
typedef struct pgo_parser {
    bool in_stream;
} pgo_parser;

/* Parses one pgoutput message (the payload of an XLogData message). On
 * success out holds the message (pgo_message_clear frees what it owns; its
 * values point into buf, which must outlive their use). A truncated,
 * oversized or unknown message is DS_ERR_SOURCE with its type and offset;
 * nothing is left allocated then. */
bool pgo_parse(pgo_parser *p, const char *buf, size_t len, pgo_message *out, ds_error *err);
void pgo_message_clear(pgo_message *m);

/* Moves a Relation message's table out of it (caller frees with
 * pgo_relation_free). */
void pgo_relation_take(pgo_message *m, pgo_relation *out);
void pgo_relation_free(pgo_relation *rel);

/* An LSN as PostgreSQL writes it ("16/B374D848") and back. */
void pgo_lsn_format(uint64_t lsn, char out[24]);
bool pgo_lsn_parse(const char *text, uint64_t *out);

#endif
