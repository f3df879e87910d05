/* Fuzz body of the binary COPY decoder: arbitrary bytes, cut into CopyData
 * messages, decoded with a fixed column plan into real DuckDB data chunks,
 * exactly as pgsrc_stream_fill drives the decoder. The plans cover every
 * pgsrc_kind, decimals of every storage width and lists of each kind;
 * tests/fuzz/make-seeds.sh produces PostgreSQL's own COPY output for each. */
#include "fuzz_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/copy_decoder.h"
#include "source/pgtypes.h"

#define MAX_PLAN_COLS 24
#define NUMERIC(p, s) ((((p) << 16) | (s)) + 4)

typedef struct plan_col {
    uint32_t oid;
    int32_t typmod;
} plan_col;

typedef struct plan {
    size_t ncols;
    plan_col cols[MAX_PLAN_COLS];
} plan;

/* Keep in step with the SELECTs of tests/fuzz/make-seeds.sh. */
static const plan plans[FUZZ_COPY_PLANS] = {
    /* 0: every scalar kind */
    {22,
     {{16, -1},
      {21, -1},
      {23, -1},
      {20, -1},
      {26, -1},
      {700, -1},
      {701, -1},
      {1700, NUMERIC(4, 2)},
      {1700, NUMERIC(9, 3)},
      {1700, NUMERIC(18, 6)},
      {1700, NUMERIC(38, 10)},
      {1700, -1},
      {25, -1},
      {114, -1},
      {3802, -1},
      {17, -1},
      {1082, -1},
      {1083, -1},
      {1114, -1},
      {1184, -1},
      {1186, -1},
      {2950, -1}}},
    /* 1: a list of each kind */
    {19,
     {{1000, -1},
      {1005, -1},
      {1007, -1},
      {1016, -1},
      {1009, -1},
      {1021, -1},
      {1022, -1},
      {1231, NUMERIC(12, 4)},
      {1231, -1},
      {1182, -1},
      {1183, -1},
      {1115, -1},
      {1185, -1},
      {1187, -1},
      {2951, -1},
      {199, -1},
      {3807, -1},
      {1001, -1},
      {1028, -1}}},
    /* 2: one integer column: thousands of rows fill several chunks */
    {1, {{23, -1}}},
    /* 3: one text column */
    {1, {{25, -1}}},
    /* 4: decimals at the edges of each storage width */
    {7,
     {{1700, NUMERIC(1, 0)},
      {1700, NUMERIC(4, 4)},
      {1700, NUMERIC(5, 0)},
      {1700, NUMERIC(18, 18)},
      {1700, NUMERIC(19, 0)},
      {1700, NUMERIC(38, 0)},
      {1700, NUMERIC(38, 38)}}},
    /* 5: unconstrained numeric (DOUBLE) and float8 */
    {2, {{1700, -1}, {701, -1}}},
    /* 6: lists spanning chunks */
    {2, {{1009, -1}, {1007, -1}}},
    /* 7: dates and times */
    {5, {{1082, -1}, {1114, -1}, {1184, -1}, {1083, -1}, {1186, -1}}},
};

static duckdb_logical_type scalar_logical_type(pgsrc_kind kind, const pgsrc_type *t)
{
    duckdb_type id = DUCKDB_TYPE_VARCHAR;
    switch (kind) {
    case PGSRC_BOOL:
        id = DUCKDB_TYPE_BOOLEAN;
        break;
    case PGSRC_INT2:
        id = DUCKDB_TYPE_SMALLINT;
        break;
    case PGSRC_INT4:
        id = DUCKDB_TYPE_INTEGER;
        break;
    case PGSRC_INT8:
    case PGSRC_OID:
        id = DUCKDB_TYPE_BIGINT;
        break;
    case PGSRC_FLOAT4:
        id = DUCKDB_TYPE_FLOAT;
        break;
    case PGSRC_FLOAT8:
    case PGSRC_NUMERIC_DOUBLE:
        id = DUCKDB_TYPE_DOUBLE;
        break;
    case PGSRC_NUMERIC_DECIMAL:
        return duckdb_create_decimal_type(t->precision, t->scale);
    case PGSRC_TEXT:
    case PGSRC_INET:
    case PGSRC_JSON: /* JSON is a VARCHAR alias; plain VARCHAR stores the same */
    case PGSRC_JSONB:
        id = DUCKDB_TYPE_VARCHAR;
        break;
    case PGSRC_BYTEA:
        id = DUCKDB_TYPE_BLOB;
        break;
    case PGSRC_DATE:
        id = DUCKDB_TYPE_DATE;
        break;
    case PGSRC_TIME:
        id = DUCKDB_TYPE_TIME;
        break;
    case PGSRC_TIMESTAMP:
        id = DUCKDB_TYPE_TIMESTAMP;
        break;
    case PGSRC_TIMESTAMPTZ:
        id = DUCKDB_TYPE_TIMESTAMP_TZ;
        break;
    case PGSRC_INTERVAL:
        id = DUCKDB_TYPE_INTERVAL;
        break;
    case PGSRC_UUID:
        id = DUCKDB_TYPE_UUID;
        break;
    case PGSRC_LIST:
        CHECK(!"a list of lists in a plan");
    }
    return duckdb_create_logical_type(id);
}

static duckdb_logical_type logical_type(const pgsrc_type *t)
{
    if (t->kind != PGSRC_LIST)
        return scalar_logical_type(t->kind, t);
    duckdb_logical_type child = scalar_logical_type(t->elem_kind, t);
    duckdb_logical_type list = duckdb_create_list_type(child);
    duckdb_destroy_logical_type(&child);
    return list;
}

/* The read plan of each column of pl into types, and the plan's chunk: one
 * for the whole run, reset before each input, the way DuckDB hands the
 * decoder the same output chunk call after call (and 2-3x faster than a
 * new chunk per input). */
static duckdb_data_chunk plan_chunk(const plan *pl, pgsrc_type *types)
{
    static duckdb_data_chunk chunks[FUZZ_COPY_PLANS];
    duckdb_data_chunk *chunk = &chunks[pl - plans];
    for (size_t i = 0; i < pl->ncols; i++)
        CHECK(pgtypes_map_builtin(pl->cols[i].oid, pl->cols[i].typmod, &types[i]));
    if (*chunk != NULL) {
        duckdb_data_chunk_reset(*chunk);
        return *chunk;
    }
    duckdb_logical_type logical[MAX_PLAN_COLS];
    for (size_t i = 0; i < pl->ncols; i++)
        logical[i] = logical_type(&types[i]);
    *chunk = duckdb_create_data_chunk(logical, pl->ncols);
    for (size_t i = 0; i < pl->ncols; i++)
        duckdb_destroy_logical_type(&logical[i]);
    CHECK(*chunk != NULL);
    return *chunk;
}

/* Message boundaries: offsets into the payload, ascending, ending at len. */
typedef struct cuts {
    size_t n;
    size_t at[1024];
} cuts;

/* One cut after the header plus first tuple, then one per tuple, as
 * PostgreSQL sends them. Where the framing stops making sense the rest is
 * one message. */
static void cut_per_tuple(const uint8_t *p, size_t len, cuts *c)
{
    size_t pos = 19;
    if (len >= 19) {
        uint32_t ext = (uint32_t)p[15] << 24 | (uint32_t)p[16] << 16 | (uint32_t)p[17] << 8 | p[18];
        pos = ext <= len - 19 ? 19 + ext : len;
    }
    bool first = true;
    c->n = 0;
    while (pos + 2 <= len && c->n + 2 < sizeof c->at / sizeof c->at[0]) {
        int16_t nfields = (int16_t)(p[pos] << 8 | p[pos + 1]);
        size_t q = pos + 2;
        for (int16_t i = 0; i < nfields && q + 4 <= len; i++) {
            int32_t flen = (int32_t)((uint32_t)p[q] << 24 | (uint32_t)p[q + 1] << 16 |
                                     (uint32_t)p[q + 2] << 8 | p[q + 3]);
            q += 4;
            if (flen > 0)
                q = (size_t)flen <= len - q ? q + (size_t)flen : len;
        }
        if (nfields <= 0 || q > len)
            break;
        if (!first)
            c->at[c->n++] = pos;
        first = false;
        pos = q;
    }
    if (!first && pos < len)
        c->at[c->n++] = pos;
    c->at[c->n++] = len;
}

static int compare_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* The list entries of every valid row lie inside the list's child vector,
 * so DuckDB can read the chunk. */
static void check_chunk(duckdb_data_chunk chunk, const pgsrc_type *types, size_t ncols)
{
    idx_t rows = duckdb_data_chunk_get_size(chunk);
    CHECK(rows <= duckdb_vector_size());
    for (size_t i = 0; i < ncols; i++) {
        if (types[i].kind != PGSRC_LIST)
            continue;
        duckdb_vector vec = duckdb_data_chunk_get_vector(chunk, i);
        const duckdb_list_entry *entries = duckdb_vector_get_data(vec);
        uint64_t *validity = duckdb_vector_get_validity(vec);
        idx_t size = duckdb_list_vector_get_size(vec);
        for (idx_t r = 0; r < rows; r++)
            if (duckdb_validity_row_is_valid(validity, r))
                CHECK(entries[r].offset <= size && entries[r].length <= size - entries[r].offset);
    }
}

int fuzz_copy_decoder_input(const uint8_t *data, size_t size)
{
    return fuzz_copy_decoder_run(data, size, NULL);
}

int fuzz_copy_decoder_run(const uint8_t *data, size_t size, fuzz_copy_result *out)
{
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (size < 2)
        return 0;
    const plan *pl = &plans[data[0] % FUZZ_COPY_PLANS];
    uint8_t mode = data[1];
    data += 2;
    size -= 2;
    static cuts c;
    if (mode & 0x80) {
        cut_per_tuple(data, size, &c);
    } else {
        size_t n = mode & 0x0f;
        if (size < 2 * n)
            return 0;
        const uint8_t *offsets = data;
        data += 2 * n;
        size -= 2 * n;
        for (size_t i = 0; i < n; i++)
            c.at[i] = ((size_t)offsets[2 * i] << 8 | offsets[2 * i + 1]) % (size + 1);
        qsort(c.at, n, sizeof c.at[0], compare_size);
        c.at[n] = size;
        c.n = n + 1;
    }

    pgsrc_type types[MAX_PLAN_COLS];
    duckdb_data_chunk chunk = plan_chunk(pl, types);
    copy_decoder *dec = copy_decoder_new(types, pl->ncols);
    CHECK(chunk != NULL && dec != NULL);
    copy_decoder_start_chunk(dec, chunk);

    uint64_t rows = 0;
    bool done = false, failed = false;
    size_t start = 0;
    for (size_t m = 0; m < c.n && !done && !failed; m++) {
        const char *msg = (const char *)data + start;
        size_t len = c.at[m] - start, off = 0;
        start = c.at[m];
        for (;;) {
            size_t used = 0;
            ds_error err;
            ds_error_clear(&err);
            copy_status st = copy_decoder_feed(dec, msg + off, len - off, &used, &err);
            CHECK(used <= len - off);
            off += used;
            if (st == COPY_ERROR) {
                CHECK(err.code == DS_ERR_DECODE || err.code == DS_ERR_NOMEM);
                CHECK(err.msg[0] != '\0');
                if (out != NULL)
                    snprintf(out->error, sizeof out->error, "%s", err.msg);
                failed = true;
                break;
            }
            if (st == COPY_MORE) {
                CHECK(off == len);
                break;
            }
            idx_t filled = copy_decoder_finish_chunk(dec);
            rows += filled;
            check_chunk(chunk, types, pl->ncols);
            if (st == COPY_DONE) {
                CHECK(off == len && copy_decoder_saw_trailer(dec));
                done = true;
                break;
            }
            CHECK(st == COPY_FULL && filled == duckdb_vector_size());
            duckdb_data_chunk_reset(chunk);
            copy_decoder_start_chunk(dec, chunk);
        }
    }
    if (!done) {
        rows += copy_decoder_finish_chunk(dec);
        check_chunk(chunk, types, pl->ncols);
    }
    CHECK(rows == copy_decoder_rows(dec));
    if (out != NULL) {
        out->rows = rows;
        out->done = done;
    }
    if (done) {
        /* Anything after the end marker is an error, never more rows. */
        size_t used = 0;
        ds_error err;
        CHECK(copy_decoder_feed(dec, "\0\1", 2, &used, &err) == COPY_ERROR);
        CHECK(copy_decoder_rows(dec) == rows);
    }
    copy_decoder_free(dec);
    return 0;
}
