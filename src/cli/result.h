/* A query result as text (what `duckstore query` prints), filled from
 * DuckDB or from the server's answer, and its four printed forms: so both
 * ways of running a query print the same bytes. */
#ifndef DS_CLI_RESULT_H
#define DS_CLI_RESULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum cli_format {
    CLI_FORMAT_TABLE, /* aligned columns, a (N rows) footer */
    CLI_FORMAT_TSV,   /* tab-separated, a header line, NULL for nulls */
    CLI_FORMAT_CSV,   /* RFC 4180, a header line, nulls empty, "" an empty string */
    CLI_FORMAT_JSON,  /* an array of objects, one per row, values as text or null */
} cli_format;

/* "table", "tsv", "csv", "json"; false for another name. */
bool cli_format_parse(const char *name, cli_format *out);

typedef struct cli_result {
    size_t ncols, nrows, cap_rows;
    char **names; /* ncols */
    char **cells; /* nrows * ncols, row by row; NULL = SQL NULL */
} cli_result;

/* False when out of memory; the result is empty then, and freeable. */
bool cli_result_init(cli_result *r, size_t ncols);
bool cli_result_set_name(cli_result *r, size_t col, const char *name);
/* Adds a row of NULLs; its cells are r->cells[(r->nrows - 1) * ncols ...]. */
bool cli_result_add_row(cli_result *r);
/* Sets a cell of the last row to a copy of value (NULL: SQL NULL). */
bool cli_result_set(cli_result *r, size_t col, const char *value);
void cli_result_free(cli_result *r);

/* False when the output failed (a closed pipe, a full disk). */
bool cli_result_print(const cli_result *r, cli_format format, FILE *out);

#endif
