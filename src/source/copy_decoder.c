/* Binary COPY → DuckDB vectors. The hot path of every sync: one pass over
 * each message, values written in place into the chunk's vectors, strings
 * copied once into the vector's own heap. */
#include "source/copy_decoder.h"

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Days and microseconds between 1970-01-01 (DuckDB) and 2000-01-01 (PostgreSQL). */
#define PG_EPOCH_DAYS 10957
#define PG_EPOCH_MICROS INT64_C(946684800000000)

static const char copy_signature[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};

typedef struct col_state {
    pgsrc_type type;
    duckdb_vector vec;
    void *data;
    uint64_t *validity; /* NULL until the chunk's first NULL in this column */
    /* Lists only: child vector and how much of it is used. */
    duckdb_vector child;
    void *child_data;
    uint64_t *child_validity;
    idx_t list_size, list_capacity;
} col_state;

/* Puts a text value into row `row` of a VARCHAR vector. */
typedef void (*text_assign_fn)(duckdb_vector vec, idx_t row, const char *text, idx_t len);

struct copy_decoder {
    text_assign_fn assign_text;
    col_state *cols;
    size_t ncols;
    duckdb_data_chunk chunk; /* target, owned by the caller */
    idx_t capacity, rows;
    bool header_done, trailer_seen;
    uint64_t total_rows;
};

static inline uint16_t rd16(const unsigned char *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t rd32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return __builtin_bswap32(v);
}
static inline uint64_t rd64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

static void bind_vectors(copy_decoder *dec)
{
    for (size_t i = 0; i < dec->ncols; i++) {
        col_state *c = &dec->cols[i];
        c->vec = duckdb_data_chunk_get_vector(dec->chunk, i);
        c->data = duckdb_vector_get_data(c->vec);
        c->validity = NULL;
        if (c->type.kind == PGSRC_LIST) {
            c->child = duckdb_list_vector_get_child(c->vec);
            c->child_data = duckdb_vector_get_data(c->child);
            c->child_validity = NULL;
            c->list_size = 0;
            c->list_capacity = 0; /* unknown after a reset: reserve on first use */
        }
    }
}

copy_decoder *copy_decoder_new(const pgsrc_type *types, size_t ncols)
{
    copy_decoder *dec = calloc(1, sizeof *dec);
    if (dec == NULL)
        return NULL;
    dec->cols = calloc(ncols ? ncols : 1, sizeof *dec->cols);
    if (dec->cols == NULL) {
        free(dec);
        return NULL;
    }
    dec->ncols = ncols;
    dec->assign_text = duckdb_vector_assign_string_element_len;
    for (size_t i = 0; i < ncols; i++)
        dec->cols[i].type = types[i];
    return dec;
}

void copy_decoder_free(copy_decoder *dec)
{
    if (dec == NULL)
        return;
    free(dec->cols);
    free(dec);
}

void copy_decoder_start_chunk(copy_decoder *dec, duckdb_data_chunk chunk)
{
    dec->chunk = chunk;
    dec->capacity = duckdb_vector_size();
    dec->rows = 0;
    bind_vectors(dec);
}

idx_t copy_decoder_finish_chunk(copy_decoder *dec)
{
    if (dec->chunk)
        duckdb_data_chunk_set_size(dec->chunk, dec->rows);
    return dec->rows;
}

void copy_decoder_restart(copy_decoder *dec)
{
    dec->header_done = false;
    dec->trailer_seen = false;
}

bool copy_decoder_saw_trailer(const copy_decoder *dec)
{
    return dec->trailer_seen;
}

uint64_t copy_decoder_rows(const copy_decoder *dec)
{
    return dec->total_rows;
}

static inline void set_null(duckdb_vector vec, uint64_t **validity, idx_t row)
{
    if (*validity == NULL) {
        duckdb_vector_ensure_validity_writable(vec);
        *validity = duckdb_vector_get_validity(vec);
    }
    duckdb_validity_set_row_invalid(*validity, row);
}

static const __int128 pow10_i128[39] = {
    (__int128)1,
    (__int128)10,
    (__int128)100,
    (__int128)1000,
    (__int128)10000,
    (__int128)100000,
    (__int128)1000000,
    (__int128)10000000,
    (__int128)100000000,
    (__int128)1000000000,
    (__int128)10000000000LL,
    (__int128)100000000000LL,
    (__int128)1000000000000LL,
    (__int128)10000000000000LL,
    (__int128)100000000000000LL,
    (__int128)1000000000000000LL,
    (__int128)10000000000000000LL,
    (__int128)100000000000000000LL,
    (__int128)1000000000000000000LL,
    (__int128)1000000000000000000LL * 10,
    (__int128)1000000000000000000LL * 100,
    (__int128)1000000000000000000LL * 1000,
    (__int128)1000000000000000000LL * 10000,
    (__int128)1000000000000000000LL * 100000,
    (__int128)1000000000000000000LL * 1000000,
    (__int128)1000000000000000000LL * 10000000,
    (__int128)1000000000000000000LL * 100000000,
    (__int128)1000000000000000000LL * 1000000000,
    (__int128)1000000000000000000LL * 10000000000LL,
    (__int128)1000000000000000000LL * 100000000000LL,
    (__int128)1000000000000000000LL * 1000000000000LL,
    (__int128)1000000000000000000LL * 10000000000000LL,
    (__int128)1000000000000000000LL * 100000000000000LL,
    (__int128)1000000000000000000LL * 1000000000000000LL,
    (__int128)1000000000000000000LL * 10000000000000000LL,
    (__int128)1000000000000000000LL * 100000000000000000LL,
    (__int128)1000000000000000000LL * 1000000000000000000LL,
    (__int128)1000000000000000000LL * 1000000000000000000LL * 10,
    (__int128)1000000000000000000LL * 1000000000000000000LL * 100,
};

enum {
    NUMERIC_POS = 0x0000,
    NUMERIC_NEG = 0x4000,
    NUMERIC_NAN = 0xC000,
    NUMERIC_PINF = 0xD000,
    NUMERIC_NINF = 0xF000
};

/* numeric wire format: int16 ndigits, int16 weight, uint16 sign, int16
 * dscale, then ndigits base-10000 digits; value = sum d[i] * 10000^(weight-i).
 * Returns the value scaled by 10^scale. Digits below the scale are dropped:
 * values of a numeric(p,s) column never have any. Returns 1 for NaN/±inf
 * (stored as NULL: DECIMAL cannot hold them), -1 on malformed input. */
static int numeric_to_scaled(const unsigned char *p, int32_t len, int scale, int precision, __int128 *out)
{
    if (len < 8)
        return -1;
    int ndigits = (int16_t)rd16(p);
    int weight = (int16_t)rd16(p + 2);
    uint16_t sign = rd16(p + 4);
    if (ndigits < 0 || len != 8 + 2 * ndigits)
        return -1;
    if (sign != NUMERIC_POS && sign != NUMERIC_NEG)
        return 1;
    /* Every partial sum stays below 10^precision <= 10^38 and each part is
     * checked before it is computed, so nothing overflows; the unsigned sum
     * has room for two such values. */
    unsigned __int128 acc = 0;
    const unsigned __int128 limit = (unsigned __int128)pow10_i128[precision];
    for (int i = 0; i < ndigits; i++) {
        int digit = rd16(p + 8 + 2 * i);
        if (digit > 9999)
            return -1;
        int exp = 4 * (weight - i) + scale;
        if (exp <= -4)
            break;
        if (digit == 0)
            continue;
        /* digit * 10^exp < 10^precision needs digit < 10^(precision - exp). */
        if (exp >= precision ||
            (exp >= 0 && precision - exp < 4 && digit >= (int)pow10_i128[precision - exp]))
            return -1;
        acc += exp >= 0 ? (unsigned __int128)digit * (unsigned __int128)pow10_i128[exp]
                        : (unsigned __int128)(digit / (int)pow10_i128[-exp]);
        if (acc >= limit)
            return -1;
    }
    *out = sign == NUMERIC_NEG ? -(__int128)acc : (__int128)acc;
    return 0;
}

/* Unconstrained numeric → double: the digits and a decimal exponent go
 * through strtod, which rounds correctly. Returns -1 on malformed input, -2
 * when out of memory. */
static int numeric_to_double(const unsigned char *p, int32_t len, double *out)
{
    if (len < 8)
        return -1;
    int ndigits = (int16_t)rd16(p);
    int weight = (int16_t)rd16(p + 2);
    uint16_t sign = rd16(p + 4);
    if (ndigits < 0 || len != 8 + 2 * ndigits)
        return -1;
    switch (sign) {
    case NUMERIC_NAN:
        *out = NAN;
        return 0;
    case NUMERIC_PINF:
        *out = INFINITY;
        return 0;
    case NUMERIC_NINF:
        *out = -INFINITY;
        return 0;
    case NUMERIC_POS:
    case NUMERIC_NEG:
        break;
    default:
        return -1;
    }
    if (ndigits == 0) {
        *out = 0.0;
        return 0;
    }
    /* Sign, four characters per digit, "e" and an exponent of at most
     * 4 * 32768 with its sign, NUL: ndigits * 4 + 16 bytes at most. */
    char stack_buf[128];
    size_t need = (size_t)ndigits * 4 + 16;
    char *buf = need <= sizeof stack_buf ? stack_buf : malloc(need);
    if (buf == NULL)
        return -2;
    char *w = buf;
    if (sign == NUMERIC_NEG)
        *w++ = '-';
    for (int i = 0; i < ndigits; i++) {
        int digit = rd16(p + 8 + 2 * i);
        if (digit > 9999) {
            if (buf != stack_buf)
                free(buf);
            return -1;
        }
        w[0] = (char)('0' + digit / 1000);
        w[1] = (char)('0' + digit / 100 % 10);
        w[2] = (char)('0' + digit / 10 % 10);
        w[3] = (char)('0' + digit % 10);
        w += 4;
    }
    snprintf(w, need - (size_t)(w - buf), "e%d", 4 * (weight - ndigits + 1));
    *out = strtod(buf, NULL);
    if (buf != stack_buf)
        free(buf);
    return 0;
}

static bool bad_length(const pgsrc_type *t, int32_t len, ds_error *err)
{
    return ds_error_set(err, DS_ERR_DECODE, "malformed %s value in COPY data (%d bytes)", t->ddl, (int)len);
}

enum { PG_AF_INET = 2, PG_AF_INET6 = 3, INET_TEXT_CAP = 64 };

/* The 8 groups of an IPv6 address as PostgreSQL's inet output prints them:
 * the first longest run of two or more zero groups becomes "::", and an
 * address of the forms ::a.b.c.d and ::ffff:a.b.c.d (not ::1) ends in
 * dotted decimal. */
static int format_ipv6(const unsigned char *a, char *out)
{
    unsigned words[8];
    int zero_at = -1, zero_len = 0;
    for (int i = 0, run = 0; i < 8; i++) {
        words[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
        run = words[i] == 0 ? run + 1 : 0;
        if (run > zero_len) {
            zero_len = run;
            zero_at = i - run + 1;
        }
    }
    if (zero_len < 2)
        zero_at = -1;
    bool v4_tail = zero_at == 0 && (zero_len == 6 || (zero_len == 7 && words[7] != 1) ||
                                    (zero_len == 5 && words[5] == 0xffff));
    int n = 0;
    for (int i = 0; i < 8; i++) {
        if (zero_at >= 0 && i >= zero_at && i < zero_at + zero_len) {
            if (i == zero_at)
                out[n++] = ':';
            continue;
        }
        if (i != 0)
            out[n++] = ':';
        if (i == 6 && v4_tail) {
            n += snprintf(out + n, INET_TEXT_CAP - (size_t)n, "%u.%u.%u.%u", a[12], a[13], a[14], a[15]);
            return n;
        }
        n += snprintf(out + n, INET_TEXT_CAP - (size_t)n, "%x", words[i]);
    }
    if (zero_at >= 0 && zero_at + zero_len == 8)
        out[n++] = ':';
    out[n] = '\0';
    return n;
}

/* inet / cidr wire format: family, mask bits, is_cidr, address length (4
 * or 16), the address. Printed as PostgreSQL's output functions print it
 * (not as its ::text cast, which always adds the mask): an inet's mask only
 * when shorter than the address, a cidr's always. Returns the length of
 * out (INET_TEXT_CAP bytes), or -1 when the value is malformed. */
static int format_inet(const unsigned char *p, int32_t len, char *out)
{
    if (len < 4)
        return -1;
    int family = p[0], bits = p[1], is_cidr = p[2], nb = p[3];
    int full = family == PG_AF_INET ? 32 : family == PG_AF_INET6 ? 128 : -1;
    if (full < 0 || nb != full / 8 || len != 4 + nb || bits > full || is_cidr > 1)
        return -1;
    const unsigned char *a = p + 4;
    int n = full == 32 ? snprintf(out, INET_TEXT_CAP, "%u.%u.%u.%u", a[0], a[1], a[2], a[3])
                       : format_ipv6(a, out);
    if (is_cidr || bits != full)
        n += snprintf(out + n, INET_TEXT_CAP - (size_t)n, "/%d", bits);
    return n;
}

/* DuckDB 1.5's variant that skips the UTF-8 check (a tenth of a sync's
 * CPU for text-heavy rows). It is looked up at run time: duckdb.h is
 * 1.4's, and a 1.4 library (which files must stay readable by) lacks it. */
static text_assign_fn unchecked_assign;
static pthread_once_t unchecked_once = PTHREAD_ONCE_INIT;

static void find_unchecked_assign(void)
{
    void *f = dlsym(RTLD_DEFAULT, "duckdb_unsafe_vector_assign_string_element_len");
    memcpy(&unchecked_assign, &f, sizeof unchecked_assign);
}

bool copy_decoder_trust_utf8(copy_decoder *dec)
{
    pthread_once(&unchecked_once, find_unchecked_assign);
    if (unchecked_assign == NULL)
        return false;
    dec->assign_text = unchecked_assign;
    return true;
}

/* Decodes one non-NULL scalar value into row `row` of a flat vector. */
static bool decode_scalar(const copy_decoder *dec, pgsrc_kind kind, const pgsrc_type *t, duckdb_vector vec,
                          void *data, uint64_t **validity, idx_t row, const unsigned char *p, int32_t len,
                          ds_error *err)
{
    switch (kind) {
    case PGSRC_BOOL:
        if (len != 1)
            return bad_length(t, len, err);
        ((bool *)data)[row] = p[0] != 0;
        return true;
    case PGSRC_INT2:
        if (len != 2)
            return bad_length(t, len, err);
        ((int16_t *)data)[row] = (int16_t)rd16(p);
        return true;
    case PGSRC_INT4:
        if (len != 4)
            return bad_length(t, len, err);
        ((int32_t *)data)[row] = (int32_t)rd32(p);
        return true;
    case PGSRC_OID:
        if (len != 4)
            return bad_length(t, len, err);
        ((int64_t *)data)[row] = (int64_t)rd32(p);
        return true;
    case PGSRC_INT8:
        if (len != 8)
            return bad_length(t, len, err);
        ((int64_t *)data)[row] = (int64_t)rd64(p);
        return true;
    case PGSRC_FLOAT4: {
        if (len != 4)
            return bad_length(t, len, err);
        uint32_t bits = rd32(p);
        memcpy(&((float *)data)[row], &bits, 4);
        return true;
    }
    case PGSRC_FLOAT8: {
        if (len != 8)
            return bad_length(t, len, err);
        uint64_t bits = rd64(p);
        memcpy(&((double *)data)[row], &bits, 8);
        return true;
    }
    case PGSRC_NUMERIC_DECIMAL: {
        __int128 v;
        int rc = numeric_to_scaled(p, len, t->scale, t->precision, &v);
        if (rc < 0)
            return bad_length(t, len, err);
        if (rc > 0) {
            set_null(vec, validity, row);
            return true;
        }
        switch (t->decimal_bytes) {
        case 2:
            ((int16_t *)data)[row] = (int16_t)v;
            break;
        case 4:
            ((int32_t *)data)[row] = (int32_t)v;
            break;
        case 8:
            ((int64_t *)data)[row] = (int64_t)v;
            break;
        default: {
            duckdb_hugeint h = {.lower = (uint64_t)v, .upper = (int64_t)(v >> 64)};
            ((duckdb_hugeint *)data)[row] = h;
        }
        }
        return true;
    }
    case PGSRC_NUMERIC_DOUBLE:
        switch (numeric_to_double(p, len, &((double *)data)[row])) {
        case -2:
            return ds_error_set(err, DS_ERR_NOMEM, "out of memory decoding a numeric value");
        case -1:
            return bad_length(t, len, err);
        }
        return true;
    case PGSRC_TEXT:
    case PGSRC_JSON:
        dec->assign_text(vec, row, (const char *)p, (idx_t)len);
        return true;
    case PGSRC_BYTEA:
        duckdb_vector_assign_string_element_len(vec, row, (const char *)p, (idx_t)len);
        return true;
    case PGSRC_JSONB:
        if (len < 1 || p[0] != 1)
            return ds_error_set(err, DS_ERR_DECODE, "unsupported jsonb wire version in COPY data");
        dec->assign_text(vec, row, (const char *)p + 1, (idx_t)len - 1);
        return true;
    case PGSRC_DATE: {
        if (len != 4)
            return bad_length(t, len, err);
        int32_t days = (int32_t)rd32(p);
        if (days == INT32_MAX || days == INT32_MIN) /* ±infinity */
            ((int32_t *)data)[row] = days == INT32_MAX ? INT32_MAX : -INT32_MAX;
        else if (__builtin_add_overflow(days, PG_EPOCH_DAYS, &((int32_t *)data)[row]))
            return ds_error_set(err, DS_ERR_DECODE, "date outside DuckDB's range");
        return true;
    }
    case PGSRC_TIME:
        if (len != 8)
            return bad_length(t, len, err);
        ((int64_t *)data)[row] = (int64_t)rd64(p);
        return true;
    case PGSRC_TIMESTAMP:
    case PGSRC_TIMESTAMPTZ: {
        if (len != 8)
            return bad_length(t, len, err);
        int64_t micros = (int64_t)rd64(p);
        if (micros == INT64_MAX || micros == INT64_MIN) /* ±infinity */
            ((int64_t *)data)[row] = micros == INT64_MAX ? INT64_MAX : -INT64_MAX;
        else if (__builtin_add_overflow(micros, PG_EPOCH_MICROS, &((int64_t *)data)[row]) ||
                 ((int64_t *)data)[row] == INT64_MAX)
            return ds_error_set(err, DS_ERR_DECODE, "timestamp outside DuckDB's range");
        return true;
    }
    case PGSRC_INTERVAL: {
        if (len != 16)
            return bad_length(t, len, err);
        duckdb_interval iv = {
            .micros = (int64_t)rd64(p), .days = (int32_t)rd32(p + 8), .months = (int32_t)rd32(p + 12)};
        ((duckdb_interval *)data)[row] = iv;
        return true;
    }
    case PGSRC_UUID: {
        if (len != 16)
            return bad_length(t, len, err);
        /* DuckDB keeps UUIDs as a hugeint with the top bit flipped, so that
         * signed comparison orders them like the bytes. */
        duckdb_hugeint h = {.lower = rd64(p + 8), .upper = (int64_t)(rd64(p) ^ (UINT64_C(1) << 63))};
        ((duckdb_hugeint *)data)[row] = h;
        return true;
    }
    case PGSRC_INET: {
        char text[INET_TEXT_CAP];
        int n = format_inet(p, len, text);
        if (n < 0)
            return ds_error_set(err, DS_ERR_DECODE, "malformed inet or cidr value in COPY data (%d bytes)",
                                (int)len);
        duckdb_vector_assign_string_element_len(vec, row, text, (idx_t)n);
        return true;
    }
    case PGSRC_LIST:
        break;
    }
    return ds_error_set(err, DS_ERR_DECODE, "internal: unexpected column kind");
}

/* Array wire format: int32 ndim, int32 has_nulls, uint32 element OID, then
 * (int32 size, int32 lower bound) per dimension, then length-prefixed
 * elements. */
static bool decode_list(const copy_decoder *dec, col_state *c, idx_t row, const unsigned char *p, int32_t len,
                        ds_error *err)
{
    if (len < 12)
        return bad_length(&c->type, len, err);
    int32_t ndim = (int32_t)rd32(p);
    duckdb_list_entry *entries = c->data;
    if (ndim == 0) {
        entries[row].offset = c->list_size;
        entries[row].length = 0;
        return true;
    }
    if (ndim != 1)
        return ds_error_set(err, DS_ERR_DECODE,
                            "a %d-dimensional array arrived for a %s column; only one-dimensional arrays "
                            "map to a DuckDB list (cast the column to text in the query)",
                            (int)ndim, c->type.ddl);
    if (len < 20)
        return bad_length(&c->type, len, err);
    int32_t n = (int32_t)rd32(p + 12);
    if (n < 0 || n > (len - 20) / 4)
        return bad_length(&c->type, len, err);
    idx_t needed = c->list_size + (idx_t)n;
    if (needed > c->list_capacity) {
        idx_t cap = c->list_capacity ? c->list_capacity : 1024;
        while (cap < needed)
            cap *= 2;
        if (duckdb_list_vector_reserve(c->vec, cap) != DuckDBSuccess)
            return ds_error_set(err, DS_ERR_NOMEM, "cannot grow a list vector to %llu entries",
                                (unsigned long long)cap);
        c->list_capacity = cap;
        c->child_data = duckdb_vector_get_data(c->child);
        c->child_validity = NULL;
    }
    const unsigned char *q = p + 20, *end = p + len;
    for (int32_t i = 0; i < n; i++) {
        if (end - q < 4)
            return bad_length(&c->type, len, err);
        int32_t elen = (int32_t)rd32(q);
        q += 4;
        idx_t at = c->list_size + (idx_t)i;
        if (elen < 0) {
            set_null(c->child, &c->child_validity, at);
            continue;
        }
        if (end - q < elen)
            return bad_length(&c->type, len, err);
        if (!decode_scalar(dec, c->type.elem_kind, &c->type, c->child, c->child_data, &c->child_validity, at,
                           q, elen, err))
            return false;
        q += elen;
    }
    entries[row].offset = c->list_size;
    entries[row].length = (idx_t)n;
    c->list_size = needed;
    duckdb_list_vector_set_size(c->vec, needed);
    return true;
}

static bool parse_header(copy_decoder *dec, const unsigned char **pp, const unsigned char *end, ds_error *err)
{
    const unsigned char *p = *pp;
    if (end - p < 19 || memcmp(p, copy_signature, sizeof copy_signature) != 0)
        return ds_error_set(err, DS_ERR_DECODE, "COPY data does not start with the binary COPY signature");
    uint32_t ext_len = rd32(p + 15);
    if ((size_t)(end - p - 19) < ext_len)
        return ds_error_set(err, DS_ERR_DECODE, "truncated binary COPY header");
    *pp = p + 19 + ext_len;
    dec->header_done = true;
    return true;
}

copy_status copy_decoder_feed(copy_decoder *dec, const char *buf, size_t len, size_t *used, ds_error *err)
{
    const unsigned char *start = (const unsigned char *)buf, *p = start, *end = start + len;
    copy_status st = COPY_MORE;
    if (dec->trailer_seen) {
        ds_error_set(err, DS_ERR_DECODE, "COPY data after the end marker");
        st = COPY_ERROR;
        goto out;
    }
    if (!dec->header_done && !parse_header(dec, &p, end, err)) {
        st = COPY_ERROR;
        goto out;
    }
    while (p < end) {
        if (dec->rows == dec->capacity) {
            st = COPY_FULL;
            goto out;
        }
        if (end - p < 2) {
            ds_error_set(err, DS_ERR_DECODE, "truncated tuple in COPY data");
            st = COPY_ERROR;
            goto out;
        }
        int16_t nfields = (int16_t)rd16(p);
        if (nfields == -1) {
            dec->trailer_seen = true;
            p += 2;
            if (p != end) {
                ds_error_set(err, DS_ERR_DECODE, "COPY data after the end marker");
                st = COPY_ERROR;
            } else {
                st = COPY_DONE;
            }
            goto out;
        }
        if ((size_t)nfields != dec->ncols) {
            ds_error_set(err, DS_ERR_DECODE, "tuple with %d fields in COPY data, expected %zu", nfields,
                         dec->ncols);
            st = COPY_ERROR;
            goto out;
        }
        const unsigned char *q = p + 2;
        idx_t row = dec->rows;
        for (size_t i = 0; i < dec->ncols; i++) {
            col_state *c = &dec->cols[i];
            if (end - q < 4) {
                ds_error_set(err, DS_ERR_DECODE, "truncated tuple in COPY data");
                st = COPY_ERROR;
                goto out;
            }
            int32_t flen = (int32_t)rd32(q);
            q += 4;
            if (flen < 0) {
                if (c->type.kind == PGSRC_LIST) {
                    duckdb_list_entry *entries = c->data;
                    entries[row].offset = c->list_size;
                    entries[row].length = 0;
                }
                set_null(c->vec, &c->validity, row);
                continue;
            }
            if (end - q < flen) {
                ds_error_set(err, DS_ERR_DECODE, "truncated value in COPY data");
                st = COPY_ERROR;
                goto out;
            }
            bool ok = c->type.kind == PGSRC_LIST ? decode_list(dec, c, row, q, flen, err)
                                                 : decode_scalar(dec, c->type.kind, &c->type, c->vec, c->data,
                                                                 &c->validity, row, q, flen, err);
            if (!ok) {
                st = COPY_ERROR;
                goto out;
            }
            q += flen;
        }
        p = q;
        dec->rows++;
        dec->total_rows++;
    }
out:
    *used = (size_t)(p - start);
    return st;
}
