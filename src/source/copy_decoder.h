/* Decoder of PostgreSQL's binary COPY stream into DuckDB data chunks. It is
 * fed one CopyData message at a time (PostgreSQL sends whole tuples per
 * message, the file header with the first one), writes values straight into
 * the chunk's vectors and hands every full chunk to a sink. No I/O of its
 * own, so it is unit- and fuzz-testable on plain buffers. */
#ifndef DS_SOURCE_COPY_DECODER_H
#define DS_SOURCE_COPY_DECODER_H

#include <duckdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "source/pgtypes.h"

/* Receives a full (or, at the end, partial) chunk. Returns false on error
 * (err set); sets *stop to end the stream early (say, at a row cap). */
typedef bool (*copy_sink_fn)(void *ctx, duckdb_data_chunk chunk, bool *stop, ds_error *err);

typedef struct copy_decoder copy_decoder;

/* types[i] is the plan of column i; chunk_types[i] the DuckDB logical type of
 * the destination column (from the appender, so aliases like JSON match). */
copy_decoder *copy_decoder_new(const pgsrc_type *types, duckdb_logical_type *chunk_types, size_t ncols,
                               copy_sink_fn sink, void *sink_ctx);
void copy_decoder_free(copy_decoder *dec);

typedef enum copy_status { COPY_MORE, COPY_DONE, COPY_STOPPED, COPY_ERROR } copy_status;

/* Decodes one CopyData message. COPY_DONE once the trailer was seen,
 * COPY_STOPPED when the sink asked to stop. */
copy_status copy_decoder_feed(copy_decoder *dec, const char *buf, size_t len, ds_error *err);

/* Hands the last partial chunk to the sink. Errors if the trailer is missing
 * and require_trailer is set. */
bool copy_decoder_finish(copy_decoder *dec, bool require_trailer, ds_error *err);

uint64_t copy_decoder_rows(const copy_decoder *dec);

#endif
