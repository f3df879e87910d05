/* The broken-config corpus (tests/config/corpus/<case>/): each case is a
 * config directory plus an `expect` file naming the file, the line and a
 * fragment of the one message it must produce. Every case runs through the
 * real binary, `duckstore --config-dir DIR --db FILE sync` and `check-config`,
 * against a DuckDB file that already holds synced data: each must exit 2
 * with exactly one message naming the file and line, never print the
 * PostgreSQL password (nor the `secret:` of the expect file, a piece of a
 * password the url holds in a way libpq misreads), and leave the DuckDB file as it was (byte for byte
 * when the config does not load; same tables and rows when the problem is
 * only found on connecting). Cases with `when: connect` have their url set
 * to a database of the harness PostgreSQL. */
#include "testlib.h"
#include "tl_http.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_CASES 128

typedef struct bad_case {
    char name[256];
    char file[128];
    int line;
    bool connect;
    char message[512];
    char secret[128]; /* a part of a password the output must not show, or "" */
} bad_case;

static bad_case cases[MAX_CASES];
static size_t ncases;

/* The world every case starts from: a database with the source tables and
 * a DuckDB file synced from it by a good config. */
static char *work_dir;
static char template_db[600];
static char *template_contents; /* store_contents() of template_db */
static char pg_url[1100];

static const char *bin(void)
{
    const char *b = getenv("DUCKSTORE_BIN");
    if (b == NULL || b[0] == '\0')
        fail_msg("DUCKSTORE_BIN is not set (ctest sets it)");
    return b;
}

static const char *corpus_dir(void)
{
    static char dir[1024];
    const char *root = getenv("DUCKSTORE_SOURCE_DIR");
    snprintf(dir, sizeof dir, "%s/tests/config/corpus", root ? root : ".");
    return dir;
}

static void read_expect(bad_case *c)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/%s/expect", corpus_dir(), c->name);
    char *text = tl_read_file(path);
    if (text == NULL)
        fail_msg("%s is missing", path);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "file: ", 6) == 0)
            snprintf(c->file, sizeof c->file, "%s", line + 6);
        else if (strncmp(line, "line: ", 6) == 0)
            c->line = atoi(line + 6);
        else if (strncmp(line, "when: ", 6) == 0)
            c->connect = strcmp(line + 6, "connect") == 0;
        else if (strncmp(line, "message: ", 9) == 0)
            snprintf(c->message, sizeof c->message, "%s", line + 9);
        else if (strncmp(line, "secret: ", 8) == 0)
            snprintf(c->secret, sizeof c->secret, "%s", line + 8);
    }
    free(text);
    if (c->file[0] == '\0' || c->line < 1 || c->message[0] == '\0')
        fail_msg("%s needs file:, line: and message:", path);
}

static int compare_cases(const void *a, const void *b)
{
    return strcmp(((const bad_case *)a)->name, ((const bad_case *)b)->name);
}

static void load_cases(void)
{
    DIR *d = opendir(corpus_dir());
    if (d == NULL)
        fail_msg("cannot open %s", corpus_dir());
    const struct dirent *ent;
    while ((ent = readdir(d)) != NULL && ncases < MAX_CASES) {
        if (ent->d_name[0] == '.')
            continue;
        bad_case *c = &cases[ncases++];
        memset(c, 0, sizeof *c);
        snprintf(c->name, sizeof c->name, "%s", ent->d_name);
        read_expect(c);
    }
    closedir(d);
    qsort(cases, ncases, sizeof cases[0], compare_cases);
}

/* Copies the case's files (not `expect`) into dir, @URL@ replaced. */
static void copy_case(const bad_case *c, const char *dir)
{
    char src_dir[1400];
    snprintf(src_dir, sizeof src_dir, "%s/%s", corpus_dir(), c->name);
    DIR *d = opendir(src_dir);
    assert_non_null(d);
    const struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (ent->d_name[0] == '.' || strcmp(ent->d_name, "expect") == 0)
            continue;
        char path[1700];
        snprintf(path, sizeof path, "%s/%s", src_dir, ent->d_name);
        char *text = tl_read_file(path);
        assert_non_null(text);
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        FILE *out = fopen(path, "wb");
        assert_non_null(out);
        for (const char *p = text; *p;) {
            const char *at = strstr(p, "@URL@");
            size_t n = at ? (size_t)(at - p) : strlen(p);
            fwrite(p, 1, n, out);
            if (at == NULL)
                break;
            fputs(pg_url, out);
            p = at + 5;
        }
        fclose(out);
        free(text);
    }
    closedir(d);
}

static char *read_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(*len ? *len : 1);
    assert_int_equal(fread(buf, 1, *len, f), *len);
    fclose(f);
    return buf;
}

/* Every table and view outside _duckstore with its row count and an md5 of
 * its sorted rows, read through a read-only connection. */
static char *store_contents(const char *db_path)
{
    duckdb_config config;
    duckdb_create_config(&config);
    duckdb_set_config(config, "access_mode", "READ_ONLY");
    duckdb_database db;
    char *open_err = NULL;
    if (duckdb_open_ext(db_path, &db, config, &open_err) == DuckDBError)
        fail_msg("cannot open %s: %s", db_path, open_err ? open_err : "?");
    duckdb_destroy_config(&config);
    duckdb_connection con;
    assert_int_equal(duckdb_connect(db, &con), DuckDBSuccess);
    duckdb_result res;
    if (duckdb_query(con,
                     "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' UNION ALL "
                     "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main' "
                     "ORDER BY 1",
                     &res) == DuckDBError)
        fail_msg("%s", duckdb_result_error(&res));
    char *out = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&out, &size);
    for (idx_t r = 0; r < duckdb_row_count(&res); r++) {
        char *name = duckdb_value_varchar(&res, 0, r);
        char *sum = tl_duck_scalar(con,
                                   "SELECT count(*) || ' ' || coalesce(md5(string_agg(t::VARCHAR, chr(10) "
                                   "ORDER BY t::VARCHAR)), '') FROM \"%s\" AS t",
                                   name);
        fprintf(f, "%s: %s\n", name, sum);
        free(sum);
        duckdb_free(name);
    }
    fclose(f);
    duckdb_destroy_result(&res);
    duckdb_disconnect(&con);
    duckdb_close(&db);
    return out;
}

/* check-config prints the resolved config, whose comment lines name the
 * directory ("# resolved config of DIR ...") and each source file
 * ("# DIR/file.yaml:1"), whose store path is resolved against the
 * directory ("  path: \"DIR/data/store.duckdb\""), and ends with
 * "# config directory DIR: errors above"; those are not messages. */
static bool is_config_comment(const char *text, const char *dir)
{
    size_t dlen = strlen(dir);
    if (strncmp(text, "# resolved config of ", 21) == 0 ||
        (strncmp(text, "  path: \"", 9) == 0 && strncmp(text + 9, dir, dlen) == 0) ||
        (strncmp(text, "# config directory ", 19) == 0 && strncmp(text + 19, dir, dlen) == 0 &&
         text[19 + dlen] == ':'))
        return true;
    return strncmp(text, "# ", 2) == 0 && strncmp(text + 2, dir, dlen) == 0 && text[2 + dlen] == '/' &&
           strchr(text + 2, ' ') == NULL;
}

/* Exactly one line of output holds the expected fragment; it names
 * <dir>/<file>:<line>. No other line names a file of the config. */
static void assert_one_message(const bad_case *c, const char *command, const char *dir, const char *output)
{
    char where[1400];
    snprintf(where, sizeof where, "%s/%s:%d", dir, c->file, c->line);
    size_t found = 0, naming = 0;
    const char *line = output;
    while (*line) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        char *text = strndup(line, n);
        if (strstr(text, c->message)) {
            found++;
            if (strstr(text, where) == NULL)
                fail_msg("%s %s: the message does not name %s:\n%s", c->name, command, where, text);
        }
        if (strstr(text, dir) && !is_config_comment(text, dir))
            naming++;
        free(text);
        line += n + (nl != NULL);
    }
    if (found != 1 || naming != 1)
        fail_msg("%s %s: expected one message with \"%s\" naming %s, got %zu (%zu lines name the "
                 "config):\n%s",
                 c->name, command, c->message, where, found, naming, output);
    const char *password = getenv("DUCKSTORE_TEST_PG_PASSWORD");
    if (password && password[0] && strstr(output, password))
        fail_msg("%s %s: the PostgreSQL password is in the output:\n%s", c->name, command, output);
    if (c->secret[0] && strstr(output, c->secret))
        fail_msg("%s %s: \"%s\", part of a password, is in the output:\n%s", c->name, command, c->secret,
                 output);
}

static void run_case(void **state)
{
    const bad_case *c = *state;
    char *dir = tl_mkdtemp();
    char cfg_dir[600], db[600], wal[620];
    snprintf(cfg_dir, sizeof cfg_dir, "%s/config", dir);
    snprintf(db, sizeof db, "%s/store.duckdb", dir);
    snprintf(wal, sizeof wal, "%s.wal", db);
    mkdir(cfg_dir, 0755);
    copy_case(c, cfg_dir);
    char *out = NULL;
    assert_int_equal(tl_run(&out, "cp '%s' '%s'", template_db, db), 0);
    free(out);
    size_t before_len, len;
    char *before = read_bytes(db, &before_len);
    char *bytes;

    int rc = tl_run(&out, "'%s' --config-dir '%s' --db '%s' sync", bin(), cfg_dir, db);
    if (rc != 2)
        fail_msg("%s sync: exit %d, expected 2:\n%s", c->name, rc, out);
    assert_one_message(c, "sync", cfg_dir, out);
    free(out);

    if (!c->connect) {
        /* The config never loaded: the DuckDB file was not even opened. */
        bytes = read_bytes(db, &len);
        if (len != before_len || memcmp(bytes, before, len) != 0)
            fail_msg("%s: the DuckDB file changed", c->name);
        free(bytes);
        struct stat st;
        assert_int_not_equal(stat(wal, &st), 0);
    } else {
        /* Found on connecting: the failure is recorded in the status, the
         * synced tables and views hold what they held. */
        char *after_contents = store_contents(db);
        if (strcmp(template_contents, after_contents) != 0)
            fail_msg("%s: the DuckDB tables changed:\nbefore:\n%s\nafter:\n%s", c->name, template_contents,
                     after_contents);
        free(after_contents);
    }

    rc = tl_run(&out, "'%s' --config-dir '%s' check-config", bin(), cfg_dir);
    if (rc != 2)
        fail_msg("%s check-config: exit %d, expected 2:\n%s", c->name, rc, out);
    assert_one_message(c, "check-config", cfg_dir, out);
    free(out);

    free(before);
    tl_rmtree(dir);
    free(dir);
}

static const char events_yaml[] = "events_db:\n"
                                  "  url: \"%s\"\n"
                                  "  query: SELECT id, created_at, payload FROM events\n"
                                  "  incremental_column: created_at\n";

static int setup_world(void **state)
{
    (void)state;
    const char *conninfo = tl_pg_fresh_db("badcfg");
    snprintf(pg_url, sizeof pg_url, "%s", conninfo);
    PGconn *pg = tl_pg_connect(conninfo);
    tl_pg_exec(pg,
               "CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, payload text)");
    tl_pg_exec(pg,
               "INSERT INTO events SELECT g, '2026-01-01'::timestamptz + g * interval '1 minute', 'e' || g "
               "FROM generate_series(1, 500) AS g");
    tl_llm_create(pg);
    tl_llm_add(pg, 1, 40, 2);
    PQfinish(pg);

    work_dir = tl_mkdtemp();
    char good[700], path[800];
    snprintf(good, sizeof good, "%s/good", work_dir);
    mkdir(good, 0755);
    snprintf(path, sizeof path, "%s/events_db.yaml", good);
    tl_write_filef(path, events_yaml, conninfo);
    snprintf(path, sizeof path, "%s/monitoring_db.yaml", good);
    tl_write_filef(path, "monitoring_db:\n  url: \"%s\"\n%s", conninfo, TL_LLM_SOURCE_YAML);
    snprintf(template_db, sizeof template_db, "%s/template.duckdb", work_dir);
    char *out = NULL;
    int rc = tl_run(&out, "'%s' --config-dir '%s' --db '%s' sync", bin(), good, template_db);
    if (rc != 0)
        fail_msg("the good config does not sync (exit %d):\n%s", rc, out);
    free(out);
    template_contents = store_contents(template_db);
    return 0;
}

static int teardown_world(void **state)
{
    (void)state;
    tl_rmtree(work_dir);
    free(work_dir);
    free(template_contents);
    return 0;
}

/* The template holds what the good config synced; the cases are compared
 * against it, so it must hold real rows. */
static void test_template_has_data(void **state)
{
    (void)state;
    const char *contents = template_contents;
    tl_assert_contains(contents, "events_data: 500 ");
    tl_assert_contains(contents, "monitoring_dataset: 40 ");
    tl_assert_contains(contents, "monitoring_results: 80 ");
    tl_assert_contains(contents, "monitoring_data: 80 ");
}

/* At least 30 broken configs, each kind the issue names among them. */
static void test_corpus_size(void **state)
{
    (void)state;
    assert_true(ncases >= 30);
    static const char *const kinds[] = {"yaml_",
                                        "type_",
                                        "unknown_key",
                                        "missing_queries",
                                        "without_dataset_id",
                                        "sql_syntax",
                                        "unset_variable",
                                        "duplicate_source_names",
                                        "source_name_quotes",
                                        "source_name_unicode"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        bool seen = false;
        for (size_t i = 0; i < ncases && !seen; i++)
            seen = strstr(cases[i].name, kinds[k]) != NULL;
        if (!seen)
            fail_msg("no case of kind %s in the corpus", kinds[k]);
    }
}

int main(void)
{
    load_cases();
    static struct CMUnitTest tests[MAX_CASES + 2];
    size_t n = 0;
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_template_has_data);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_corpus_size);
    for (size_t i = 0; i < ncases; i++)
        tests[n++] =
            (struct CMUnitTest){.name = cases[i].name, .test_func = run_case, .initial_state = &cases[i]};
    return _cmocka_run_group_tests("bad configs", tests, n, setup_world, teardown_world);
}
