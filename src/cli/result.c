/* The printed forms of a query result (see result.h). */
#include "cli/result.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

bool cli_format_parse(const char *name, cli_format *out)
{
    static const char *const names[] = {"table", "tsv", "csv", "json"};
    static const cli_format formats[] = {CLI_FORMAT_TABLE, CLI_FORMAT_TSV, CLI_FORMAT_CSV, CLI_FORMAT_JSON};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = formats[i];
            return true;
        }
    return false;
}

bool cli_result_init(cli_result *r, size_t ncols)
{
    memset(r, 0, sizeof *r);
    r->names = calloc(ncols ? ncols : 1, sizeof *r->names);
    if (r->names == NULL)
        return false;
    r->ncols = ncols;
    return true;
}

bool cli_result_set_name(cli_result *r, size_t col, const char *name)
{
    free(r->names[col]);
    return (r->names[col] = strdup(name)) != NULL;
}

bool cli_result_add_row(cli_result *r)
{
    if (r->nrows == r->cap_rows) {
        size_t cap = r->cap_rows ? r->cap_rows * 2 : 64;
        char **cells = realloc(r->cells, cap * (r->ncols ? r->ncols : 1) * sizeof *cells);
        if (cells == NULL)
            return false;
        r->cells = cells;
        r->cap_rows = cap;
    }
    memset(r->cells + r->nrows * r->ncols, 0, r->ncols * sizeof *r->cells);
    r->nrows++;
    return true;
}

bool cli_result_set(cli_result *r, size_t col, const char *value)
{
    char **cell = &r->cells[(r->nrows - 1) * r->ncols + col];
    free(*cell);
    *cell = NULL;
    return value == NULL || (*cell = strdup(value)) != NULL;
}

void cli_result_free(cli_result *r)
{
    for (size_t c = 0; r->names != NULL && c < r->ncols; c++)
        free(r->names[c]);
    for (size_t i = 0; i < r->nrows * r->ncols; i++)
        free(r->cells[i]);
    free(r->names);
    free(r->cells);
    memset(r, 0, sizeof *r);
}

static const char *cell(const cli_result *r, size_t row, size_t col)
{
    return r->cells[row * r->ncols + col];
}

static void print_tsv(const cli_result *r, FILE *out)
{
    for (size_t c = 0; c < r->ncols; c++)
        fprintf(out, "%s%s", c ? "\t" : "", r->names[c]);
    fputc('\n', out);
    for (size_t i = 0; i < r->nrows; i++) {
        for (size_t c = 0; c < r->ncols; c++)
            fprintf(out, "%s%s", c ? "\t" : "", cell(r, i, c) ? cell(r, i, c) : "NULL");
        fputc('\n', out);
    }
}

/* A field quoted when it must be (a separator, a quote, a line break) and
 * when empty: an empty field is a NULL. */
static void csv_field(const char *v, FILE *out)
{
    if (v == NULL)
        return;
    if (v[0] != '\0' && strpbrk(v, ",\"\r\n") == NULL) {
        fputs(v, out);
        return;
    }
    fputc('"', out);
    for (const char *p = v; *p; p++) {
        if (*p == '"')
            fputc('"', out);
        fputc(*p, out);
    }
    fputc('"', out);
}

static void print_csv(const cli_result *r, FILE *out)
{
    for (size_t c = 0; c < r->ncols; c++) {
        if (c)
            fputc(',', out);
        csv_field(r->names[c], out);
    }
    fputc('\n', out);
    for (size_t i = 0; i < r->nrows; i++) {
        for (size_t c = 0; c < r->ncols; c++) {
            if (c)
                fputc(',', out);
            csv_field(cell(r, i, c), out);
        }
        fputc('\n', out);
    }
}

/* A JSON string of s; "null" for NULL. Names may repeat in a result, so
 * rows are written key by key, not through an object that would merge them. */
static bool json_text_out(const char *s, FILE *out)
{
    if (s == NULL) {
        fputs("null", out);
        return true;
    }
    json_t *v = json_string(s);
    if (v == NULL) /* not UTF-8: DuckDB's VARCHAR always is, so this is out of memory */
        return false;
    bool ok = json_dumpf(v, out, JSON_ENCODE_ANY) == 0;
    json_decref(v);
    return ok;
}

static bool print_json(const cli_result *r, FILE *out)
{
    bool ok = true;
    fputs("[\n", out);
    for (size_t i = 0; ok && i < r->nrows; i++) {
        fputc('{', out);
        for (size_t c = 0; ok && c < r->ncols; c++) {
            if (c)
                fputc(',', out);
            ok = json_text_out(r->names[c], out);
            fputc(':', out);
            ok = ok && json_text_out(cell(r, i, c), out);
        }
        fputs(i + 1 < r->nrows ? "},\n" : "}\n", out);
    }
    fputs("]\n", out);
    return ok;
}

/* Display width: code points (UTF-8 continuation bytes take no column). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        w += (*p & 0xC0) != 0x80;
    return w;
}

/* s padded to w columns; the last column is not padded (no trailing blanks). */
static void pad(const char *s, size_t w, bool last, FILE *out)
{
    fputs(s, out);
    if (last)
        return;
    for (size_t n = width(s); n < w; n++)
        fputc(' ', out);
}

static bool print_table(const cli_result *r, FILE *out)
{
    size_t *w = calloc(r->ncols ? r->ncols : 1, sizeof *w);
    if (w == NULL)
        return false;
    for (size_t c = 0; c < r->ncols; c++) {
        w[c] = width(r->names[c]);
        for (size_t i = 0; i < r->nrows; i++) {
            size_t cw = width(cell(r, i, c) ? cell(r, i, c) : "NULL");
            w[c] = cw > w[c] ? cw : w[c];
        }
    }
    for (size_t c = 0; c < r->ncols; c++) {
        fputs(c ? " | " : " ", out);
        pad(r->names[c], w[c], c + 1 == r->ncols, out);
    }
    fputc('\n', out);
    for (size_t c = 0; c < r->ncols; c++) {
        fputs(c ? "-+-" : "-", out);
        for (size_t n = 0; n < w[c]; n++)
            fputc('-', out);
    }
    if (r->ncols)
        fputc('-', out);
    fputc('\n', out);
    for (size_t i = 0; i < r->nrows; i++) {
        for (size_t c = 0; c < r->ncols; c++) {
            fputs(c ? " | " : " ", out);
            pad(cell(r, i, c) ? cell(r, i, c) : "NULL", w[c], c + 1 == r->ncols, out);
        }
        fputc('\n', out);
    }
    fprintf(out, "(%zu row%s)\n", r->nrows, r->nrows == 1 ? "" : "s");
    free(w);
    return true;
}

bool cli_result_print(const cli_result *r, cli_format format, FILE *out)
{
    bool ok = true;
    switch (format) {
    case CLI_FORMAT_TABLE:
        ok = print_table(r, out);
        break;
    case CLI_FORMAT_TSV:
        print_tsv(r, out);
        break;
    case CLI_FORMAT_CSV:
        print_csv(r, out);
        break;
    case CLI_FORMAT_JSON:
        ok = print_json(r, out);
        break;
    }
    return fflush(out) == 0 && !ferror(out) && ok;
}
