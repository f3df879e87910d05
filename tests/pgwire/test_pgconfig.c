/* The pg_ keys of duckdb.yaml: defaults, the rules between them, and the
 * passwords of pg_users kept out of every message and of check-config's
 * print. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

#define SECRET "s3cret-Value!"

static void write_store(const char *dir, const char *lines)
{
    char path[700];
    snprintf(path, sizeof path, "%s/duckdb.yaml", dir);
    tl_write_filef(path, "duckdb:\n  path: %s/store.duckdb\n%s", dir, lines);
}

/* Loads dir, which must fail; the message must hold want and not SECRET. */
static void fails_with(const char *lines, const char *want)
{
    char *dir = tl_mkdtemp();
    write_store(dir, lines);
    cfg_config cfg;
    ds_error err = {0};
    if (cfg_load_dir(dir, &cfg, &err)) {
        cfg_free(&cfg);
        fail_msg("loaded: %s", lines);
    }
    assert_int_equal(err.code, DS_ERR_CONFIG);
    tl_assert_contains_at(err.msg, want, __FILE__, __LINE__);
    if (strstr(err.msg, SECRET) != NULL)
        fail_msg("the password is in: %s", err.msg);
    tl_rmtree(dir);
    free(dir);
}

static void test_defaults_and_print(void **state)
{
    (void)state;
    setenv("PGCONFIG_TEST_PASSWORD", SECRET, 1);
    char *dir = tl_mkdtemp();
    write_store(dir, "");
    cfg_config cfg;
    tl_cfg_load(dir, &cfg);
    assert_null(cfg.store.pg_listen); /* off by default: nothing listens */
    assert_int_equal(cfg.store.pg_max_connections, 64);
    assert_false(cfg.store.pg_trust);
    cfg_free(&cfg);
    write_store(dir,
                "  pg_listen: \"127.0.0.1:5433\"\n  pg_users:\n    reader: \"${PGCONFIG_TEST_PASSWORD}\"\n"
                "  pg_statement_timeout: 2.5\n");
    tl_cfg_load(dir, &cfg);
    assert_string_equal(cfg.store.pg_listen, "127.0.0.1:5433");
    assert_int_equal(cfg.store.pg_user_names.n, 1);
    assert_string_equal(cfg.store.pg_user_names.cols[0], "reader");
    assert_string_equal(cfg.store.pg_user_passwords.cols[0], SECRET);
    assert_true(cfg.store.pg_statement_timeout_s == 2.5);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cfg_print(f, &cfg);
    fclose(f);
    tl_assert_contains_at(text, "  pg_users:\n    \"reader\": \"***\"\n", __FILE__, __LINE__);
    if (strstr(text, SECRET) != NULL)
        fail_msg("check-config prints the password:\n%s", text);
    free(text);
    cfg_free(&cfg);
    tl_rmtree(dir);
    free(dir);
}

static void test_rules(void **state)
{
    (void)state;
    setenv("PGCONFIG_TEST_PASSWORD", SECRET, 1);
    setenv("PGCONFIG_TEST_EMPTY", "", 1);
    fails_with("  pg_tls_cert: cert.pem\n", "pg_tls_cert and pg_tls_key go together");
    fails_with("  pg_listen: \"127.0.0.1:5433\"\n", "pg_listen is set but pg_users names no user");
    fails_with("  pg_users:\n    reader: \"${PGCONFIG_TEST_EMPTY}\"\n",
               "the password of \"reader\" is empty");
    fails_with("  pg_users: \"${PGCONFIG_TEST_PASSWORD}\"\n",
               "pg_users must be a mapping of user name to password");
    fails_with("  pg_auth: md5\n", "pg_auth must be");
    fails_with("  pg_max_connections: 0\n", "pg_max_connections must be an integer between 1 and 4096");
    /* trust needs no users. */
    char *dir = tl_mkdtemp();
    write_store(dir, "  pg_listen: \"127.0.0.1:5433\"\n  pg_auth: trust\n");
    cfg_config cfg;
    tl_cfg_load(dir, &cfg);
    assert_true(cfg.store.pg_trust);
    cfg_free(&cfg);
    tl_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_print),
        cmocka_unit_test(test_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
