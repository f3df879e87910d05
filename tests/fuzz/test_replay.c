/* The fuzz targets in every test build: each seed of tests/fuzz/corpus/ and
 * each input that once crashed a target (tests/fuzz/regressions/) runs
 * through the same harness as under libFuzzer, where a broken invariant
 * aborts and ASan/UBSan (build-asan) catch memory errors. Then one test per
 * crash found, asserting the fixed behaviour with values. */
#include "testlib.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_harness.h"
#include "source/copy_decoder.h"
#include "source/pgtypes.h"

typedef int (*harness_fn)(const uint8_t *data, size_t size);

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    char *buf = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (cap - *len < 65536) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap);
        }
        size_t n = fread(buf + *len, 1, cap - *len, f);
        if (n == 0)
            break;
        *len += n;
    }
    fclose(f);
    return buf;
}

/* Runs every file of tests/fuzz/<kind>/<target>/; returns how many. */
static size_t replay_dir(const char *kind, const char *target, harness_fn fn)
{
    const char *root = getenv("DUCKSTORE_SOURCE_DIR");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/%s/%s", root ? root : ".", kind, target);
    DIR *d = opendir(dir);
    if (d == NULL)
        fail_msg("cannot open %s (DUCKSTORE_SOURCE_DIR unset?)", dir);
    size_t n = 0;
    const struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (ent->d_name[0] == '.')
            continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        size_t len;
        char *data = read_all(path, &len);
        assert_int_equal(fn((const uint8_t *)data, len), 0);
        free(data);
        n++;
    }
    closedir(d);
    return n;
}

static void test_copy_decoder_corpus(void **state)
{
    (void)state;
    assert_true(replay_dir("corpus", "copy_decoder", fuzz_copy_decoder_input) >= FUZZ_COPY_PLANS);
    replay_dir("regressions", "copy_decoder", fuzz_copy_decoder_input);
}

static void test_config_corpus(void **state)
{
    (void)state;
    assert_true(replay_dir("corpus", "config", fuzz_config_input) >= 10);
    assert_true(replay_dir("regressions", "config", fuzz_config_input) >= 1);
}

/* The protocol framing's seeds: startup packets and message streams. */
static void test_pgwire_corpus(void **state)
{
    (void)state;
    assert_true(replay_dir("corpus", "pgwire", fuzz_pgwire_input) >= 6);
}

/* The pgoutput decoder's seeds: PostgreSQL's own messages. */
static void test_pgoutput_corpus(void **state)
{
    (void)state;
    assert_true(replay_dir("corpus", "pgoutput", fuzz_pgoutput_input) >= 4);
}

/* The SQL builders' seeds: hostile names, collisions, every kind of merge. */
static void test_sql_corpus(void **state)
{
    (void)state;
    assert_true(replay_dir("corpus", "sql", fuzz_sql_input) >= 10);
}

/* ---- config loader: crashes found by fuzzing ------------------------- */

/* Loads one source file; returns the error message ("" on success) and
 * leaves the config in *cfg when it loads. */
static void load_source(const char *text, size_t len, cfg_config *cfg, char *msg, size_t cap)
{
    char *dir = tl_mkdtemp();
    char path[512];
    snprintf(path, sizeof path, "%s/s.yaml", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
    ds_error err;
    ds_error_clear(&err);
    bool ok = cfg_load_dir(dir, cfg, &err);
    const char *file = strstr(err.msg, "s.yaml");
    snprintf(msg, cap, "%s", ok ? "" : file ? file : err.msg);
    tl_rmtree(dir);
    free(dir);
}

/* Found by fuzz_config: libyaml counts a lone CR as a line break and puts
 * the end of the stream below the last line, so "\r{" was reported at line
 * 3 of a 2-line file. Lines are now counted like libyaml and an error never
 * names a line past the last one. */
static void test_config_error_line_inside_file(void **state)
{
    (void)state;
    cfg_config cfg;
    char msg[1100];
    load_source("\r{", 2, &cfg, msg, sizeof msg);
    tl_assert_contains(msg, "s.yaml:2: YAML syntax error");
    static const char unclosed[] = "s_db:\n  url: dbname=x\n  query: 'SELECT 1\n";
    load_source(unclosed, sizeof unclosed - 1, &cfg, msg, sizeof msg);
    tl_assert_contains(msg, "s.yaml:3: YAML syntax error: found unexpected end of stream");
    static const char crlf[] = "s_db:\r\n  url: dbname=x\r\n  query: [\r\n";
    load_source(crlf, sizeof crlf - 1, &cfg, msg, sizeof msg);
    tl_assert_contains(msg, "s.yaml:3: YAML syntax error");
}

/* Found by fuzz_config: a query holding U+0085 (NEL, "\N" in a quoted YAML
 * string) was printed in a `|` block, where YAML reads NEL as a line break,
 * so the printed config no longer loaded. Such values are now printed
 * double-quoted with the escape; so are the characters YAML does not allow
 * raw in a stream (C1 controls, U+FFFE, U+FFFF). */
static void test_config_print_unicode_breaks(void **state)
{
    (void)state;
    static const char text[] = "s_db:\n  url: dbname=x\n  query: \"SELECT 1\\Nun\\L2\\P3\\x9f4\\uFFFF5\"\n";
    cfg_config cfg;
    char msg[1100];
    load_source(text, sizeof text - 1, &cfg, msg, sizeof msg);
    assert_string_equal(msg, "");
    assert_string_equal(cfg.sources[0].query, "SELECT 1\xc2\x85un\xe2\x80\xa8"
                                              "2\xe2\x80\xa9"
                                              "3\xc2\x9f"
                                              "4\xef\xbf\xbf"
                                              "5");
    char *printed = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&printed, &len);
    cfg_print(out, &cfg);
    fclose(out);
    tl_assert_contains(printed, "  query: \"SELECT 1\\Nun\\L2\\P3\\x9f4\\uFFFF5\"\n");
    const char *section = strstr(printed, "s_db:");
    assert_non_null(section);
    cfg_config again;
    load_source(section, strlen(section), &again, msg, sizeof msg);
    assert_string_equal(msg, "");
    assert_string_equal(again.sources[0].query, cfg.sources[0].query);
    cfg_free(&again);
    cfg_free(&cfg);
    free(printed);
}

/* Found by fuzz_config: a query starting with a tab was printed in a `|`
 * block without an indentation indicator, and libyaml refuses to guess the
 * indentation from a line that starts with a tab. */
static void test_config_print_tab_first_query(void **state)
{
    (void)state;
    static const char text[] = "s_db:\n  url: dbname=x\n  query: \"\\tSELECT 1\\n\\t  FROM t\"\n";
    cfg_config cfg;
    char msg[1100];
    load_source(text, sizeof text - 1, &cfg, msg, sizeof msg);
    assert_string_equal(msg, "");
    assert_string_equal(cfg.sources[0].query, "\tSELECT 1\n\t  FROM t");
    char *printed = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&printed, &len);
    cfg_print(out, &cfg);
    fclose(out);
    tl_assert_contains(printed, "  query: |2-\n    \tSELECT 1\n    \t  FROM t\n");
    cfg_config again;
    const char *section = strstr(printed, "s_db:");
    load_source(section, strlen(section), &again, msg, sizeof msg);
    assert_string_equal(msg, "");
    assert_string_equal(again.sources[0].query, cfg.sources[0].query);
    cfg_free(&again);
    cfg_free(&cfg);
    free(printed);
}

/* ---- binary COPY decoder ----------------------------------------------- */

/* The seeds are PostgreSQL's own COPY output (tests/fuzz/make-seeds.sh):
 * each decodes to the end marker with the rows its query returns, both cut
 * per tuple and as one message. */
static void test_copy_seeds_decode_fully(void **state)
{
    (void)state;
    static const uint64_t rows[FUZZ_COPY_PLANS] = {5, 4, 2100, 6, 5, 10, 2080, 6};
    static const char *const cuts[] = {"per-tuple", "one-message"};
    const char *root = getenv("DUCKSTORE_SOURCE_DIR");
    for (int plan = 0; plan < FUZZ_COPY_PLANS; plan++) {
        for (size_t c = 0; c < 2; c++) {
            char path[1024];
            snprintf(path, sizeof path, "%s/tests/fuzz/corpus/copy_decoder/plan%d-%s.bin", root ? root : ".",
                     plan, cuts[c]);
            size_t len;
            char *data = read_all(path, &len);
            fuzz_copy_result res;
            assert_int_equal(fuzz_copy_decoder_run((const uint8_t *)data, len, &res), 0);
            if (!res.done || res.rows != rows[plan])
                fail_msg("%s: done %d, %llu rows (expected %llu), error \"%s\"", path, res.done,
                         (unsigned long long)res.rows, (unsigned long long)rows[plan], res.error);
            free(data);
        }
    }
}

/* A binary COPY stream of one numeric column: the header, one tuple per
 * value (each the wire form: ndigits, weight, sign, dscale, digits), the end
 * marker. */
static size_t numeric_stream(unsigned char *buf, const int16_t *const *values, size_t n)
{
    static const unsigned char header[19] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0};
    size_t len = sizeof header;
    memcpy(buf, header, len);
    for (size_t v = 0; v < n; v++) {
        const int16_t *w = values[v]; /* ndigits, weight, sign, dscale, digits... */
        size_t bytes = 8 + 2 * (size_t)w[0];
        buf[len++] = 0, buf[len++] = 1;
        buf[len++] = 0, buf[len++] = 0, buf[len++] = (unsigned char)(bytes >> 8),
        buf[len++] = (unsigned char)bytes;
        for (size_t i = 0; i < 4 + (size_t)w[0]; i++) {
            buf[len++] = (unsigned char)((uint16_t)w[i] >> 8);
            buf[len++] = (unsigned char)w[i];
        }
    }
    buf[len++] = 0xff, buf[len++] = 0xff;
    return len;
}

/* Decodes a numeric(precision, 0) stream into a DECIMAL chunk; returns the
 * status of the feed and leaves the chunk for inspection. */
static copy_status decode_numeric(int precision, const unsigned char *buf, size_t len,
                                  duckdb_data_chunk *chunk, ds_error *err)
{
    pgsrc_type type;
    assert_true(pgtypes_map_builtin(1700, (precision << 16) + 4, &type));
    duckdb_logical_type logical = duckdb_create_decimal_type((uint8_t)precision, 0);
    *chunk = duckdb_create_data_chunk(&logical, 1);
    duckdb_destroy_logical_type(&logical);
    copy_decoder *dec = copy_decoder_new(&type, 1);
    copy_decoder_start_chunk(dec, *chunk);
    size_t used = 0;
    ds_error_clear(err);
    copy_status st = copy_decoder_feed(dec, (const char *)buf, len, &used, err);
    copy_decoder_finish_chunk(dec);
    copy_decoder_free(dec);
    return st;
}

/* Found by fuzz_copy_decoder (UBSan): a numeric digit group far above the
 * column's precision was multiplied by 10^36 in a signed 128-bit integer
 * and overflowed before the range check. Such values are now rejected
 * before any arithmetic, and the largest valid values still decode. */
static void test_copy_numeric_overflow_rejected(void **state)
{
    (void)state;
    unsigned char buf[256];
    duckdb_data_chunk chunk;
    ds_error err;
    /* 9999 * 10000^9 = 9.999e39 in a numeric(38,0) column. */
    static const int16_t too_big[] = {1, 9, 0, 0, 9999};
    const int16_t *values[] = {too_big};
    size_t len = numeric_stream(buf, values, 1);
    assert_int_equal(decode_numeric(38, buf, len, &chunk, &err), COPY_ERROR);
    assert_int_equal(err.code, DS_ERR_DECODE);
    assert_string_equal(err.msg, "malformed DECIMAL(38,0) value in COPY data (10 bytes)");
    assert_int_equal(duckdb_data_chunk_get_size(chunk), 0);
    duckdb_destroy_data_chunk(&chunk);

    /* 10^38 - 1 (38 nines: 99 then nine groups of 9999) and its negative. */
    static const int16_t max[] = {10, 9, 0, 0, 99, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999};
    static const int16_t min[] = {10, 9, 0x4000, 0, 99, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999};
    /* 10^38: one digit more than numeric(38,0) holds. */
    static const int16_t over[] = {1, 9, 0, 0, 100};
    const int16_t *edge[] = {max, min};
    len = numeric_stream(buf, edge, 2);
    assert_int_equal(decode_numeric(38, buf, len, &chunk, &err), COPY_DONE);
    assert_int_equal(duckdb_data_chunk_get_size(chunk), 2);
    const duckdb_hugeint *h = duckdb_vector_get_data(duckdb_data_chunk_get_vector(chunk, 0));
    __int128 expect = 1;
    for (int i = 0; i < 38; i++)
        expect *= 10;
    expect -= 1;
    assert_true(h[0].lower == (uint64_t)expect && h[0].upper == (int64_t)(expect >> 64));
    assert_true(h[1].lower == (uint64_t)-expect && h[1].upper == (int64_t)(-expect >> 64));
    duckdb_destroy_data_chunk(&chunk);
    const int16_t *too[] = {over};
    len = numeric_stream(buf, too, 1);
    assert_int_equal(decode_numeric(38, buf, len, &chunk, &err), COPY_ERROR);
    assert_string_equal(err.msg, "malformed DECIMAL(38,0) value in COPY data (10 bytes)");
    duckdb_destroy_data_chunk(&chunk);

    /* The same value in a numeric(4,0) column: 9999 fits, 10000 does not. */
    static const int16_t fits4[] = {1, 0, 0, 0, 9999};
    static const int16_t over4[] = {1, 1, 0, 0, 1};
    const int16_t *four[] = {fits4};
    len = numeric_stream(buf, four, 1);
    assert_int_equal(decode_numeric(4, buf, len, &chunk, &err), COPY_DONE);
    assert_int_equal(((const int16_t *)duckdb_vector_get_data(duckdb_data_chunk_get_vector(chunk, 0)))[0],
                     9999);
    duckdb_destroy_data_chunk(&chunk);
    four[0] = over4;
    len = numeric_stream(buf, four, 1);
    assert_int_equal(decode_numeric(4, buf, len, &chunk, &err), COPY_ERROR);
    assert_string_equal(err.msg, "malformed DECIMAL(4,0) value in COPY data (10 bytes)");
    duckdb_destroy_data_chunk(&chunk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_decoder_corpus),
        cmocka_unit_test(test_config_corpus),
        cmocka_unit_test(test_sql_corpus),
        cmocka_unit_test(test_pgwire_corpus),
        cmocka_unit_test(test_pgoutput_corpus),
        cmocka_unit_test(test_config_error_line_inside_file),
        cmocka_unit_test(test_config_print_unicode_breaks),
        cmocka_unit_test(test_config_print_tab_first_query),
        cmocka_unit_test(test_copy_seeds_decode_fully),
        cmocka_unit_test(test_copy_numeric_overflow_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
