/* Decoder of PostgreSQL's binary COPY stream into DuckDB data chunks. It is
 * fed one CopyData message at a time (PostgreSQL sends one tuple per message,
 * the file header with the first one) and writes values straight into the
 * vectors of a chunk DuckDB hands it. No I/O of its own, so it is unit- and
 * fuzz-testable on plain buffers. */
#ifndef DS_SOURCE_COPY_DECODER_H
#define DS_SOURCE_COPY_DECODER_H

#include <duckdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "source/pgtypes.h"

typedef struct copy_decoder copy_decoder;

/* types[i] is the read plan of column i. */
copy_decoder *copy_decoder_new(const pgsrc_type *types, size_t ncols);
void copy_decoder_free(copy_decoder *dec);

/* The text the decoder will meet is valid UTF-8 already (PostgreSQL
 * sends it so to a client_encoding UTF8 session, whatever the server's
 * encoding), so DuckDB's check of every text value is skipped. False (and
 * the check kept) when the DuckDB library has no unchecked variant. */
bool copy_decoder_trust_utf8(copy_decoder *dec);

/* Makes chunk the target of the next rows, from row 0. Its column types must
 * be those of the destination table (so aliases such as JSON match) and its
 * capacity duckdb_vector_size(). */
void copy_decoder_start_chunk(copy_decoder *dec, duckdb_data_chunk chunk);

/* Sets the target chunk's size to the rows decoded into it and returns it. */
idx_t copy_decoder_finish_chunk(copy_decoder *dec);

typedef enum copy_status {
    COPY_MORE,  /* message consumed; feed the next one */
    COPY_FULL,  /* chunk full; *used bytes consumed, feed the rest into the next chunk */
    COPY_DONE,  /* end marker seen */
    COPY_ERROR, /* err set */
} copy_status;

/* Decodes the tuples of one CopyData message (the first one starts with the
 * file header) into the target chunk. */
copy_status copy_decoder_feed(copy_decoder *dec, const char *buf, size_t len, size_t *used, ds_error *err);

bool copy_decoder_saw_trailer(const copy_decoder *dec);

/* Readies the decoder for another COPY's data (its own header first), after
 * the previous one's end marker; the target chunk stays. */
void copy_decoder_restart(copy_decoder *dec);

/* Rows decoded since the decoder was created. */
uint64_t copy_decoder_rows(const copy_decoder *dec);

#endif
