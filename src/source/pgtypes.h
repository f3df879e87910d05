/* PostgreSQL → DuckDB type mapping. Each query column gets a column plan:
 * how its binary COPY value is decoded (the kind), the DuckDB column type,
 * and whether the source query must cast it to text first (types DuckDB has
 * no faithful counterpart for). */
#ifndef DS_SOURCE_PGTYPES_H
#define DS_SOURCE_PGTYPES_H

#include <stdbool.h>
#include <stdint.h>

typedef enum pgsrc_kind {
    PGSRC_BOOL,
    PGSRC_INT2,
    PGSRC_INT4,
    PGSRC_INT8,
    PGSRC_OID,
    PGSRC_FLOAT4,
    PGSRC_FLOAT8,
    PGSRC_NUMERIC_DECIMAL, /* numeric(p,s), 1 <= p <= 38, 0 <= s <= p */
    PGSRC_NUMERIC_DOUBLE,  /* unconstrained numeric */
    PGSRC_TEXT,            /* text, varchar, bpchar, name, enums, values cast to text */
    PGSRC_JSON,
    PGSRC_JSONB,
    PGSRC_BYTEA,
    PGSRC_DATE,
    PGSRC_TIME,
    PGSRC_TIMESTAMP,
    PGSRC_TIMESTAMPTZ,
    PGSRC_INTERVAL,
    PGSRC_UUID,
    PGSRC_INET, /* inet and cidr, as PostgreSQL prints them (VARCHAR) */
    PGSRC_LIST, /* one-dimensional array of a scalar kind above */
} pgsrc_kind;

typedef struct pgsrc_type {
    pgsrc_kind kind;
    pgsrc_kind elem_kind;     /* PGSRC_LIST only */
    uint8_t precision, scale; /* decimals (of the element for lists) */
    uint8_t decimal_bytes;    /* DuckDB storage of the decimal: 2, 4, 8 or 16 */
    /* A value of another type (an enum, a cast to text) stored as its text
     * form: DuckDB orders the text, PostgreSQL the type. */
    bool as_text;
    char ddl[40]; /* DuckDB column type, e.g. "DECIMAL(12,4)", "VARCHAR[]" */
} pgsrc_type;

/* How a query column should be read. cast is "" (read as is), "text" or
 * "text[]" (the wrapped query casts the column). */
typedef enum pgsrc_cast { PGSRC_CAST_NONE, PGSRC_CAST_TEXT, PGSRC_CAST_TEXT_ARRAY } pgsrc_cast;

/* Maps a built-in type OID and typmod. Returns false for OIDs it does not
 * know (the caller then looks at the catalog: enums are read as text, other
 * arrays cast to text[], anything else cast to text). */
bool pgtypes_map_builtin(uint32_t oid, int32_t typmod, pgsrc_type *out);

/* The plan for a column read through a text cast (scalar or array). */
void pgtypes_text_type(pgsrc_type *out);
void pgtypes_text_list_type(pgsrc_type *out);

/* True when values of this type order the same in PostgreSQL and in
 * DuckDB, so a maximum taken in DuckDB is a bound PostgreSQL's `>` agrees
 * with: numbers, dates and times, uuid and the real text types (which the
 * incremental read compares with COLLATE "C", bytewise as DuckDB does).
 * False for values stored as text that PostgreSQL orders as their own type
 * (see pgtypes_is_text_form) and for types without such an order. */
bool pgtypes_is_orderable(const pgsrc_type *type);

/* True for a scalar that DuckDB stores as VARCHAR but PostgreSQL orders
 * by its own rules: enums (declaration order), inet/cidr (by address),
 * money (by amount), citext (without case), any other type read as text.
 * Its text maximum is no watermark: `> '$9.00'` re-reads $10.00. */
bool pgtypes_is_text_form(const pgsrc_type *type);

bool pgtypes_is_partitionable(const pgsrc_type *type);

#endif
