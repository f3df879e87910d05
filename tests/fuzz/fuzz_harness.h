/* The fuzz targets' bodies, shared by the libFuzzer entry points
 * (fuzz_*.c, built by `make fuzz`) and by fuzz/test_replay, which runs every
 * seed and every past crash input through them in the normal test builds.
 * Each returns 0 and abort()s when it catches the code under test doing
 * something wrong that the sanitizers would not see (a broken invariant). */
#ifndef DS_TESTS_FUZZ_HARNESS_H
#define DS_TESTS_FUZZ_HARNESS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Input: byte 0 picks a column plan (FUZZ_COPY_PLANS), byte 1 says how the
 * rest is cut into CopyData messages: with bit 7 set, one message per tuple
 * as PostgreSQL sends them (header with the first); else its low 4 bits are
 * a count n of big-endian uint16 cut offsets that follow. The rest is the
 * binary COPY stream, decoded into DuckDB chunks. */
int fuzz_copy_decoder_input(const uint8_t *data, size_t size);

/* What one input decoded to, for the regression tests. */
typedef struct fuzz_copy_result {
    uint64_t rows;    /* rows decoded */
    bool done;        /* the end marker was reached */
    char error[1024]; /* the decoder's message when it failed, else "" */
} fuzz_copy_result;

/* fuzz_copy_decoder_input, also reporting the outcome into *out. */
int fuzz_copy_decoder_run(const uint8_t *data, size_t size, fuzz_copy_result *out);

/* Number of column plans; plan i has the columns of FUZZ_COPY_PLAN_SQL. */
#define FUZZ_COPY_PLANS 8

/* Input: the text of a source file (written as fuzz_db.yaml); when it holds
 * a line "#@duckdb.yaml", what follows that line becomes duckdb.yaml. The
 * directory is loaded, printed, masked, and the printed config is loaded
 * again and must print the same. */
int fuzz_config_input(const uint8_t *data, size_t size);

/* The marker of fuzz_config_input. */
#define FUZZ_CONFIG_STORE_MARKER "#@duckdb.yaml\n"

/* Input: 19 control bytes (missing ones are 0): [0] counts (bits 0-2
 * dataset columns, 3-5 results columns besides dataset_id) and the merge
 * (bit 6 overlap, bit 7 inclusive start), [1] the incremental column, [2]
 * flags (bit 0 qualified staging table, bit 1 new dataset_ids, bits 2-3 a
 * value index, bit 4 VARCHAR dataset_id), [3] further choices, [4..10] and
 * [11..17] the types of the dataset and results columns, [18] the unique
 * key (a mask of results columns). Then, separated by NUL bytes, the names
 * of the dataset, results, view and staging tables, of the dataset and the
 * results columns, and a value. The SQL builders of store/tables.h and the
 * conditions of source/ranges.h are run on them (tests/fuzz/harness_sql.c). */
int fuzz_sql_input(const uint8_t *data, size_t size);

/* Input: byte 0 even, a startup packet's body for pgm_parse_startup; odd,
 * the bytes a client sends after startup, read as messages through a
 * socket (tests/fuzz/harness_pgwire.c). */
int fuzz_pgwire_input(const uint8_t *data, size_t size);

/* Input: byte 0 bit 0 starts inside a streamed block, bit 1 makes the
 * rest one pgoutput message; else the rest is frames (big-endian uint16
 * length, bytes) parsed in order by one pgo_parser
 * (tests/fuzz/harness_pgoutput.c). */
int fuzz_pgoutput_input(const uint8_t *data, size_t size);

/* Aborts with the condition, file:line and an optional printf-style
 * message when an invariant of the code under test does not hold (the
 * sanitizers would not see it): CHECK(ok) or CHECK(ok, "row %d", r). */
#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            fuzz_broken(__FILE__, __LINE__, #cond, "  " __VA_ARGS__);                                        \
    } while (0)

__attribute__((noreturn, format(printf, 4, 5))) static inline void
fuzz_broken(const char *file, int line, const char *cond, const char *fmt, ...)
{
    fprintf(stderr, "%s:%d: broken invariant: %s\n", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
