/* Where the DuckDB file is, seen from the real binary: a relative
 * duckdb.path names a file beside the config wherever duckstore runs;
 * commands that only read (status, query, check-config) never create the
 * file nor its folder and say that the store does not exist yet; a config
 * directory without config files, or without a source, is an error for
 * check-config. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *g_root;  /* scratch: shop/config, elsewhere/ */
static char *g_url;   /* a database of the harness server */
static char *g_store; /* the file duckdb.path names, absolute */

static const char *bin(void)
{
    const char *b = getenv("DUCKSTORE_BIN");
    if (b == NULL || b[0] == '\0')
        fail_msg("DUCKSTORE_BIN is not set (ctest sets it; by hand: DUCKSTORE_BIN=build/duckstore)");
    return b;
}

static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Runs duckstore from dir with args (shell words); returns its exit code
 * and keeps its output in *out. */
static int run_in(const char *dir, char **out, const char *args)
{
    char *output = NULL;
    int rc = tl_run(&output, "cd '%s' && '%s' %s", dir, bin(), args);
    *out = tl_keep(output);
    return rc;
}

static int setup(void **state)
{
    (void)state;
    g_root = tl_mkdtemp();
    const char *conninfo = tl_pg_fresh_db("cfg_paths");
    PGconn *pg = tl_pg_connect(conninfo);
    tl_pg_exec(
        pg, "CREATE TABLE orders (id int, amount numeric(10,2)); INSERT INTO orders VALUES (1, 9.5), (2, 3)");
    PQfinish(pg);
    g_url = strdup(conninfo);
    char *dir = tl_keepf("%s/shop", g_root);
    mkdir(dir, 0755);
    mkdir(tl_keepf("%s/config", dir), 0755);
    mkdir(tl_keepf("%s/elsewhere", g_root), 0755);
    mkdir(tl_keepf("%s/empty", g_root), 0755);
    mkdir(tl_keepf("%s/store-only", g_root), 0755);
    tl_write_file(tl_keepf("%s/shop/config/duckdb.yaml", g_root), "duckdb:\n  path: data/shop.duckdb\n");
    tl_write_filef(tl_keepf("%s/shop/config/orders_db.yaml", g_root),
                   "orders_db:\n  url: \"%s\"\n  query: SELECT id, amount FROM orders\n", g_url);
    tl_write_file(tl_keepf("%s/store-only/duckdb.yaml", g_root), "duckdb:\n  path: x.duckdb\n");
    g_store = strdup(tl_keepf("%s/shop/config/data/shop.duckdb", g_root));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tl_rmtree(g_root);
    free(g_root);
    free(g_url);
    free(g_store);
    tl_free_kept();
    return 0;
}

/* Before any sync, from another directory: status and query say that the
 * store does not exist yet, where, and exit 1; nothing is created, neither
 * there nor beside the config. check-config shows the resolved path. */
static void test_read_only_commands_create_nothing(void **state)
{
    (void)state;
    char *elsewhere = tl_keepf("%s/elsewhere", g_root), *out;
    char *missing =
        tl_keepf("duckstore: the DuckDB file %s does not exist yet: nothing has been synced into it; "
                 "run duckstore sync to create it, or point duckdb.path (or --db) at the store\n",
                 g_store);
    const char *commands[] = {"--config-dir ../shop/config status",
                              "--config-dir ../shop/config status --json",
                              "--config-dir ../shop/config query 'SELECT 1'"};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        int rc = run_in(elsewhere, &out, commands[i]);
        if (rc != 1 || strcmp(out, missing) != 0)
            fail_msg("%s: exit %d, expected 1 and\n  %s\ngot\n  %s", commands[i], rc, missing, out);
    }
    assert_int_equal(run_in(elsewhere, &out, "--config-dir ../shop/config check-config --offline"), 0);
    tl_assert_contains(out, tl_keepf("  path: \"%s\"\n", g_store));
    assert_false(exists(tl_keepf("%s/data", elsewhere)));
    assert_false(exists(tl_keepf("%s/shop/config/data", g_root)));
}

/* sync run from one directory and status / query from others all use the
 * file beside the config. */
static void test_relative_path_is_the_config_dirs(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(run_in(tl_keepf("%s/elsewhere", g_root), &out, "--config-dir ../shop/config sync"), 0);
    assert_true(exists(g_store));
    assert_false(exists(tl_keepf("%s/elsewhere/data", g_root)));
    assert_int_equal(
        run_in(g_root, &out,
               "--config-dir shop/config query --format csv 'SELECT sum(amount) FROM orders_data'"),
        0);
    assert_string_equal(out, "sum(amount)\n12.50\n");
    assert_int_equal(run_in(tl_keepf("%s/shop/config", g_root), &out, "--config-dir . status --json"), 0);
    tl_assert_contains(out, "\"state\": \"ready\"");
    tl_assert_contains(out, "\"rows\": 2");
}

/* check-config on a directory without config files, or with duckdb.yaml
 * but no source: exit 2 naming the directory and what it must hold. */
static void test_empty_config_dir(void **state)
{
    (void)state;
    char *out;
    int rc = run_in(g_root, &out, "--config-dir empty check-config --offline");
    assert_int_equal(rc, 2);
    assert_string_equal(out,
                        "duckstore: empty: no config file in this directory; it must hold duckdb.yaml (the "
                        "store's settings) and one <name>_db.yaml per PostgreSQL source (see "
                        "docs/configuration.md), or pass the right directory with --config-dir\n");
    rc = run_in(g_root, &out, "--config-dir store-only check-config");
    assert_int_equal(rc, 2);
    assert_string_equal(out,
                        "duckstore: store-only: no source defined; add one <name>_db.yaml per PostgreSQL "
                        "source (e.g. monitoring_db.yaml holding monitoring_db: with url and queries)\n");
    assert_false(exists(tl_keepf("%s/store-only/x.duckdb", g_root)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_only_commands_create_nothing),
        cmocka_unit_test(test_relative_path_is_the_config_dirs),
        cmocka_unit_test(test_empty_config_dir),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
