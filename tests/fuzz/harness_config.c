/* Fuzz body of the config loader: the input becomes a source file (and
 * optionally duckdb.yaml) in a scratch directory, which cfg_load_dir loads.
 * A failure must be a DS_ERR_CONFIG message "<file>:<line>: ..." naming one
 * of the files and a line inside it. A success is printed (cfg_print), its
 * urls masked, and the printed config, saved and loaded again, must print
 * the same: cfg_print promises that its output reads back unchanged. */
#include "fuzz_harness.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

#define SOURCE_FILE "fuzz_db.yaml"
#define STORE_FILE "duckdb.yaml"

static char *dirs[2];

static void remove_files(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/" SOURCE_FILE, dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/" STORE_FILE, dir);
    unlink(path);
}

static void remove_dirs(void)
{
    for (size_t i = 0; i < 2; i++) {
        if (dirs[i] == NULL)
            continue;
        remove_files(dirs[i]);
        rmdir(dirs[i]);
        free(dirs[i]);
        dirs[i] = NULL;
    }
}

/* Two scratch directories for the whole run: the input and the reprint. */
static void make_dirs(void)
{
    if (dirs[0] != NULL)
        return;
    const char *tmp = getenv("TMPDIR");
    for (size_t i = 0; i < 2; i++) {
        CHECK(asprintf(&dirs[i], "%s/duckstore-fuzz.XXXXXX", tmp ? tmp : "/tmp") >= 0, "out of memory");
        CHECK(mkdtemp(dirs[i]) != NULL, "mkdtemp: %s", strerror(errno));
    }
    atexit(remove_dirs);
    /* Seeds use ${FUZZ_PASSWORD}; an unset variable is an error path of its own. */
    setenv("FUZZ_PASSWORD", "fuzz-secret", 1);
}

static void write_file(const char *dir, const char *name, const char *text, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "%s: %s", path, strerror(errno));
    CHECK(fwrite(text, 1, len, f) == len && fclose(f) == 0, "cannot write %s", path);
}

/* Lines of the file as libyaml counts them (CR LF, CR, LF, NEL, LS, PS end
 * a line); a break at the very end does not start another line. */
static size_t count_lines(const char *text, size_t len)
{
    const unsigned char *t = (const unsigned char *)text;
    size_t lines = 1;
    bool open_line = false;
    for (size_t i = 0; i < len;) {
        size_t n = 0;
        if (t[i] == '\r')
            n = i + 1 < len && t[i + 1] == '\n' ? 2 : 1;
        else if (t[i] == '\n')
            n = 1;
        else if (t[i] == 0xc2 && i + 1 < len && t[i + 1] == 0x85)
            n = 2;
        else if (t[i] == 0xe2 && i + 2 < len && t[i + 1] == 0x80 && (t[i + 2] == 0xa8 || t[i + 2] == 0xa9))
            n = 3;
        open_line = n == 0;
        lines += n > 0;
        i += n > 0 ? n : 1;
    }
    return open_line || lines == 1 ? lines : lines - 1;
}

/* err says "<dir>/<one of the files>:<line>: " with the line inside that file. */
static void check_error(const ds_error *err, const char *dir, const char *source, size_t source_len,
                        const char *store, size_t store_len)
{
    CHECK(err->code == DS_ERR_CONFIG || err->code == DS_ERR_NOMEM, "code %d: %s", err->code, err->msg);
    if (err->code == DS_ERR_NOMEM)
        return;
    size_t dlen = strlen(dir);
    CHECK(strncmp(err->msg, dir, dlen) == 0 && err->msg[dlen] == '/', "no file in: %s", err->msg);
    const char *name = err->msg + dlen + 1;
    size_t lines;
    if (strncmp(name, SOURCE_FILE ":", sizeof SOURCE_FILE) == 0) {
        lines = count_lines(source, source_len);
        name += sizeof SOURCE_FILE;
    } else {
        CHECK(store != NULL && strncmp(name, STORE_FILE ":", sizeof STORE_FILE) == 0, "no file in: %s",
              err->msg);
        lines = count_lines(store, store_len);
        name += sizeof STORE_FILE;
    }
    char *end = NULL;
    long line = strtol(name, &end, 10);
    CHECK(end != name && end[0] == ':' && end[1] == ' ' && end[2] != '\0', "no line in: %s", err->msg);
    CHECK(line >= 1 && (size_t)line <= lines, "line %ld of %zu in: %s", line, lines, err->msg);
}

static char *print_config(const cfg_config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    CHECK(out != NULL, "out of memory");
    cfg_print(out, cfg);
    CHECK(fclose(out) == 0, "out of memory");
    return text;
}

/* cfg_print's text without its comment lines (they name the directory). */
static void strip_comments(char *text)
{
    char *w = text;
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) + 1 : strlen(line);
        if (line[0] != '#') {
            memmove(w, line, n);
            w += n;
        }
        line += n;
    }
    *w = '\0';
}

/* The printed config, split back into duckdb.yaml and the source file,
 * loads and prints the same. */
static void check_reprint(const cfg_config *cfg)
{
    char *first = print_config(cfg);
    char *split = strstr(first, "\n\n# ");
    CHECK(split != NULL, "no source section in:\n%s", first);
    remove_files(dirs[1]);
    write_file(dirs[1], STORE_FILE, first, (size_t)(split - first) + 1);
    write_file(dirs[1], SOURCE_FILE, split + 2, strlen(split + 2));
    cfg_config again;
    ds_error err;
    ds_error_clear(&err);
    CHECK(cfg_load_dir(dirs[1], &again, &err), "the printed config does not load: %s\n%s", err.msg, first);
    char *second = print_config(&again);
    cfg_free(&again);
    strip_comments(first);
    strip_comments(second);
    CHECK(strcmp(first, second) == 0, "printed twice differently:\n%s\n---\n%s", first, second);
    free(first);
    free(second);
}

static size_t count_in(const char *haystack, const char *needle)
{
    size_t n = 0, len = strlen(needle);
    for (const char *p = haystack; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return len ? n : 0;
}

/* cfg_mask_url hides the password as libpq reads it: the masked string
 * holds it fewer times than the url (it may also be, say, the user name). */
static void check_masked(const char *url)
{
    char *masked = cfg_mask_url(url);
    CHECK(masked != NULL, "cfg_mask_url failed on: %s", url);
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, "password") != 0 || o->val == NULL || strspn(o->val, "*") == strlen(o->val))
            continue;
        size_t before = count_in(url, o->val);
        CHECK(before == 0 || count_in(masked, o->val) < before, "password \"%s\" of %s is not masked: %s",
              o->val, url, masked);
    }
    PQconninfoFree(opts);
    free(masked);
}

int fuzz_config_input(const uint8_t *data, size_t size)
{
    make_dirs();
    const char *text = (const char *)data;
    const char *marker = memmem(text, size, FUZZ_CONFIG_STORE_MARKER, sizeof FUZZ_CONFIG_STORE_MARKER - 1);
    size_t source_len = marker ? (size_t)(marker - text) : size;
    const char *store = marker ? marker + sizeof FUZZ_CONFIG_STORE_MARKER - 1 : NULL;
    size_t store_len = marker ? size - source_len - (sizeof FUZZ_CONFIG_STORE_MARKER - 1) : 0;

    remove_files(dirs[0]);
    write_file(dirs[0], SOURCE_FILE, text, source_len);
    if (store)
        write_file(dirs[0], STORE_FILE, store, store_len);

    cfg_config cfg;
    ds_error err;
    ds_error_clear(&err);
    if (!cfg_load_dir(dirs[0], &cfg, &err)) {
        check_error(&err, dirs[0], text, source_len, store, store_len);
    } else {
        CHECK(cfg.n_sources == 1, "%zu sources from one file", cfg.n_sources);
        static FILE *devnull;
        if (devnull == NULL)
            devnull = fopen("/dev/null", "w");
        cfg_print(devnull, &cfg);
        check_masked(cfg.sources[0].url);
        check_reprint(&cfg);
        cfg_free(&cfg);
    }

    /* The masker also takes any string: the input as a connection string. */
    char *raw = strndup(text, size);
    CHECK(raw != NULL, "out of memory");
    check_masked(raw);
    free(raw);
    return 0;
}
