/* Which columns can carry an incremental watermark, and what a sync and
 * check-config say about the others: values stored as text that
 * PostgreSQL orders by their own rules (inet, money, enums, citext) are
 * refused with file:line; real text is accepted; a lookback of the wrong
 * kind for the column is refused; a configuration error keeps the
 * watermarks, so the sync after the fix is incremental; a top-level LIMIT
 * in an incremental query is warned about. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/querytext.h"

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("wmtypes"));
    PGconn *pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(pg, "CREATE EXTENSION IF NOT EXISTS citext");
    PQfinish(pg);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    tl_free_kept();
    return 0;
}

static const char *bin(void)
{
    const char *b = getenv("DUCKSTORE_BIN");
    if (b == NULL || b[0] == '\0')
        fail_msg("DUCKSTORE_BIN is not set (ctest sets it)");
    return b;
}

/* A sync that must fail with a configuration error; its message. */
static const char *sync_config_error(tl_env *e, const char *source)
{
    sync_report report;
    ds_error err;
    memset(&err, 0, sizeof err);
    if (sync_source(e->st, &e->cfg, tl_source(&e->cfg, source), NULL, &report, &err))
        fail_msg("the sync of %s succeeded; a configuration error was expected", source);
    if (err.code != DS_ERR_CONFIG)
        fail_msg("the sync of %s failed with code %d, not DS_ERR_CONFIG: %s", source, (int)err.code, err.msg);
    return tl_keep(strdup(err.msg));
}

/* `duckstore check-config` on the env's directory: its exit code, output kept. */
static int check_config(tl_env *e, char **output)
{
    int rc = tl_run(output, "'%s' --config-dir '%s' check-config", bin(), e->dir);
    tl_keep(*output);
    return rc;
}

static const char *status_watermark(json_t *doc, const char *table)
{
    const char *wm = json_string_value(json_object_get(json_object_get(doc, "watermarks"), table));
    if (wm == NULL)
        fail_msg("the status has no watermark for %s", table);
    return wm;
}

static void test_text_form_watermarks_refused(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "text_form", "");
    tl_pg_exec(e.pg, "CREATE TYPE level AS ENUM ('zlow', 'high')");
    tl_pg_exec(e.pg,
               "CREATE TABLE hosts (id int, ip inet, net cidr, price money, lvl level, tag public.citext)");
    tl_pg_exec(e.pg, "INSERT INTO hosts SELECT g, ('10.0.0.' || g)::inet, ('10.' || g || '.0.0/16')::cidr, "
                     "g::numeric::money, CASE WHEN g %% 2 = 0 THEN 'zlow' ELSE 'high' END::level, 'Tag' || g "
                     "FROM generate_series(1, 20) AS g");
    static const struct {
        const char *col, *pg_type;
    } cases[] = {
        {"ip", "inet"}, {"net", "cidr"}, {"price", "money"}, {"lvl", "level"}, {"tag", "public.citext"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tl_env_source(&e, "h", "  query: SELECT id, %s FROM hosts\n  incremental_column: %s\n", cases[i].col,
                      cases[i].col);
        const char *msg = sync_config_error(&e, "h");
        tl_assert_contains(msg, tl_keepf("%s/h_db.yaml:4: incremental_column \"%s\" of query has type %s, "
                                         "which is stored as text",
                                         e.dir, cases[i].col, cases[i].pg_type));
        tl_assert_contains(msg, "Fix: cast it in the query to a type that orders the same");
        tl_assert_contains(msg, "or use a timestamp or serial column as incremental_column");
        /* Nothing was stored. */
        assert_int_equal(
            tl_duck_int(e.con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'h_data'"), 0);

        char *out;
        int rc = check_config(&e, &out);
        if (rc != 2)
            fail_msg("check-config with incremental_column %s: exit %d, expected 2:\n%s", cases[i].col, rc,
                     out);
        tl_assert_contains(out, tl_keepf("h_db.yaml:4: incremental_column \"%s\" of query has type %s",
                                         cases[i].col, cases[i].pg_type));
    }
    /* The fixes the message names work: an IPv4 address as a number. */
    tl_env_source(&e, "h",
                  "  query: SELECT id, (host(ip)::inet - '0.0.0.0') AS ip_n, price::numeric(20,2) AS p "
                  "FROM hosts\n  incremental_column: ip_n\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "h", false, &report);
    tl_pg_exec(e.pg, "INSERT INTO hosts VALUES (21, '10.0.0.21', NULL, '1.00', 'high', 'x')");
    tl_sync_ok(e.st, &e.cfg, "h", false, &report);
    assert_true(report.incremental);
    assert_int_equal(report.rows_added, 1);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM h_data"), 21);
    tl_env_close(&e);
}

/* Text keeps the same order on both sides: accepted, and the second sync
 * reads only the new rows. */
static void test_text_watermark_accepted(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "text_ok", "");
    tl_pg_exec(e.pg, "CREATE TABLE codes (code text, v varchar(10), n name, c char(6))");
    tl_pg_exec(e.pg, "INSERT INTO codes SELECT 'k' || lpad(g::text, 4, '0'), 'v' || g, 'n' || g, 'c' || g "
                     "FROM generate_series(1, 50) AS g");
    static const char *const cols[] = {"code", "v", "n", "c"};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) {
        tl_env_source(&e, "c", "  query: SELECT code, v, n, c FROM codes\n  incremental_column: %s\n",
                      cols[i]);
        sync_report report;
        tl_sync_ok(e.st, &e.cfg, "c", true, &report);
        assert_int_equal(report.nwarnings, 0);
        char *out;
        assert_int_equal(check_config(&e, &out), 0);
    }
    tl_env_source(&e, "c", "  query: SELECT code, v FROM codes\n  incremental_column: code\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "c", true, &report);
    json_t *doc = tl_sync_status(e.st, &e.cfg, "c");
    assert_string_equal(status_watermark(doc, "c_data"), "k0050");
    json_decref(doc);
    tl_pg_exec(e.pg, "INSERT INTO codes VALUES ('k0051', 'x'), ('k0052', 'y')");
    for (int i = 0; i < 3; i++) {
        tl_sync_ok(e.st, &e.cfg, "c", false, &report);
        assert_true(report.incremental);
        assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM c_data"), 52);
    }
    tl_env_close(&e);
}

/* An inet watermark before it was refused: every sync re-read the rows
 * past the text maximum and appended them again. Now the sync refuses, so
 * the count cannot grow. */
static void test_inet_watermark_never_duplicates(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "inet_dup", "");
    tl_pg_exec(e.pg, "CREATE TABLE hosts (ip inet)");
    tl_pg_exec(e.pg, "INSERT INTO hosts SELECT ('10.0.0.' || g)::inet FROM generate_series(1, 20) AS g");
    tl_env_source(&e, "d", "  query: SELECT ip FROM hosts\n  incremental_column: ip\n");
    for (int i = 0; i < 3; i++)
        tl_assert_contains(sync_config_error(&e, "d"), "incremental_column \"ip\" of query has type inet");
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'd_data'"),
                     0);
    tl_env_close(&e);
}

/* A table synced when inet was stored as its ::text form (10.0.1.1/32) is
 * rebuilt once, so all its rows read as PostgreSQL prints them. */
static void test_inet_table_from_before_is_rebuilt(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "inet_old", "");
    tl_pg_exec(e.pg, "CREATE TABLE hosts (id int, ip inet, nets cidr[])");
    tl_pg_exec(e.pg, "INSERT INTO hosts VALUES (1, '10.0.1.1', '{10.0.0.0/8}')");
    tl_env_source(&e, "h", "  query: SELECT id, ip, nets FROM hosts\n  incremental_column: id\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "h", false, &r);
    /* What a file from before holds: the old text and the old signature. */
    tl_duck_exec(e.con, "UPDATE h_data SET ip = '10.0.1.1/32'");
    tl_duck_exec(e.con, "UPDATE _duckstore.tables SET schema_signature = replace(schema_signature, "
                        "' inet-as-printed', '') WHERE table_name = 'h_data'");
    store_forget_metadata(e.st);
    tl_pg_exec(e.pg, "INSERT INTO hosts VALUES (2, '10.0.1.2', NULL)");
    tl_sync_ok(e.st, &e.cfg, "h", false, &r);
    assert_false(r.incremental);
    char *ips = tl_duck_scalar(e.con, "SELECT string_agg(ip, ',' ORDER BY id) FROM h_data");
    assert_string_equal(ips, "10.0.1.1,10.0.1.2");
    free(ips);
    tl_pg_exec(e.pg, "INSERT INTO hosts VALUES (3, '10.0.1.3', NULL)");
    tl_sync_ok(e.st, &e.cfg, "h", false, &r);
    assert_true(r.incremental);
    tl_env_close(&e);
}

static void test_lookback_kinds(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "lookbacks", "");
    tl_pg_exec(e.pg, "CREATE TABLE ev (id bigint, amount numeric(12,2), ts timestamptz, d date, code text)");
    tl_pg_exec(e.pg, "INSERT INTO ev SELECT g, g, '2026-01-01'::timestamptz + g * interval '1 minute', "
                     "'2026-01-01'::date + g, 'k' || g FROM generate_series(1, 30) AS g");
    static const struct {
        const char *col, *lookback, *says;
    } bad[] = {
        {"id", "\"5 minutes\"",
         "lookback \"5 minutes\" is an interval, but incremental_column \"id\" of query has type bigint: a "
         "numeric column takes a number in its own unit"},
        {"amount", "\"1 day\"",
         "is an interval, but incremental_column \"amount\" of query has type numeric"},
        {"ts", "300",
         "lookback \"300\" is a number, but incremental_column \"ts\" of query has type timestamp with time "
         "zone: a date or time column takes an interval, e.g. lookback: \"5 minutes\""},
        {"d", "2", "is a number, but incremental_column \"d\" of query has type date"},
        {"code", "\"5 minutes\"",
         "incremental_column \"code\" of query has type text: a column of this type "
         "takes no lookback"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tl_env_source(&e, "l",
                      "  query: SELECT id, amount, ts, d, code FROM ev\n  incremental_column: %s\n"
                      "  lookback: %s\n",
                      bad[i].col, bad[i].lookback);
        const char *msg = sync_config_error(&e, "l");
        tl_assert_contains(msg, tl_keepf("%s/l_db.yaml:5: lookback", e.dir));
        tl_assert_contains(msg, bad[i].says);
        char *out;
        int rc = check_config(&e, &out);
        if (rc != 2)
            fail_msg("check-config with lookback %s on %s: exit %d, expected 2:\n%s", bad[i].lookback,
                     bad[i].col, rc, out);
        tl_assert_contains(out, "l_db.yaml:5: lookback");
        tl_assert_contains(out, bad[i].says);
    }
    static const struct {
        const char *col, *lookback;
    } good[] = {{"id", "10"}, {"amount", "2.5"}, {"ts", "\"5 minutes\""}, {"d", "\"1 day\""}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        tl_env_source(&e, "l",
                      "  query: SELECT id, amount, ts, d, code FROM ev\n  incremental_column: %s\n"
                      "  lookback: %s\n  unique_key: id\n",
                      good[i].col, good[i].lookback);
        sync_report report;
        tl_sync_ok(e.st, &e.cfg, "l", true, &report);
        tl_sync_ok(e.st, &e.cfg, "l", false, &report);
        assert_true(report.incremental);
        assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM l_data"), 30);
        char *out;
        assert_int_equal(check_config(&e, &out), 0);
    }
    tl_env_close(&e);
}

/* A failure the configuration causes is fixed in the configuration: the
 * watermark it found stays, and the sync after the fix is incremental. */
static void test_config_error_keeps_watermark(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "keep_wm", "");
    tl_pg_exec(e.pg, "CREATE TABLE ev (id bigint, payload text)");
    tl_pg_exec(e.pg, "INSERT INTO ev SELECT g, 'p' || g FROM generate_series(1, 100) AS g");
    tl_env_source(&e, "k", "  query: SELECT id, payload FROM ev\n  incremental_column: id\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "k", false, &report);
    assert_false(report.incremental);

    tl_env_source(&e, "k",
                  "  query: SELECT id, payload FROM ev\n  incremental_column: id\n  unique_key: uid\n");
    tl_assert_contains(sync_config_error(&e, "k"), "unique_key column \"uid\" is not a column of query");
    json_t *doc = tl_sync_status(e.st, &e.cfg, "k");
    assert_string_equal(tl_json_str(doc, "state"), "error");
    assert_string_equal(status_watermark(doc, "k_data"), "100");
    json_decref(doc);

    tl_pg_exec(e.pg, "INSERT INTO ev SELECT g, 'p' || g FROM generate_series(101, 105) AS g");
    tl_env_source(&e, "k", "  query: SELECT id, payload FROM ev\n  incremental_column: id\n");
    tl_sync_ok(e.st, &e.cfg, "k", false, &report);
    assert_true(report.incremental);
    assert_int_equal(report.rows_added, 5);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM k_data"), 105);
    doc = tl_sync_status(e.st, &e.cfg, "k");
    assert_string_equal(status_watermark(doc, "k_data"), "105");
    json_decref(doc);
    tl_env_close(&e);
}

static bool has_warning(const sync_report *r, const char *needle)
{
    for (size_t i = 0; i < r->nwarnings; i++)
        if (strstr(r->warnings[i], needle))
            return true;
    return false;
}

/* ORDER BY ... LIMIT in an incremental query: each sync appends the new
 * rows past the watermark and keeps the stored ones, so the table drifts
 * past the LIMIT; the sync, its status and check-config say so. */
static void test_limit_warned(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "limits", "");
    tl_pg_exec(e.pg, "CREATE TABLE ev (id bigint, payload text)");
    tl_pg_exec(e.pg, "INSERT INTO ev SELECT g, 'p' || g FROM generate_series(1, 100) AS g");
    tl_env_source(
        &e, "lim",
        "  query: SELECT id, payload FROM ev ORDER BY id DESC LIMIT 50\n  incremental_column: id\n");
    sync_report report;
    tl_sync_ok(e.st, &e.cfg, "lim", false, &report);
    const char *says = "lim: query has a top-level LIMIT, but an incremental sync reads the query wrapped in "
                       "WHERE \"id\" > watermark and appends those rows";
    if (!has_warning(&report, says))
        fail_msg("no LIMIT warning in the report (%zu warnings: %s)", report.nwarnings,
                 report.nwarnings ? report.warnings[0] : "");
    assert_true(has_warning(&report, "Fix: drop the LIMIT"));
    json_t *doc = tl_sync_status(e.st, &e.cfg, "lim");
    char *warnings = json_dumps(json_object_get(doc, "warnings"), 0);
    tl_assert_contains(warnings, "query has a top-level LIMIT");
    free(warnings);
    json_decref(doc);
    char *out;
    assert_int_equal(check_config(&e, &out), 0);
    tl_assert_contains(out, "# warning: lim: query has a top-level LIMIT");

    tl_env_source(&e, "lim",
                  "  query: SELECT id, payload FROM ev OFFSET 10 ROWS FETCH FIRST 20 ROWS ONLY\n"
                  "  incremental_column: id\n");
    tl_sync_ok(e.st, &e.cfg, "lim", false, &report);
    assert_true(has_warning(&report, "lim: query has a top-level OFFSET"));

    /* Limits that are not the query's own: in a subquery, a string, a
     * quoted name, a comment, a full read (no incremental_column). */
    tl_env_source(
        &e, "lim",
        "  query: |\n    SELECT id, payload, 'LIMIT 5' AS \"offset\" FROM (SELECT * FROM ev LIMIT 80) "
        "AS s -- LIMIT 3\n    /* OFFSET 4 */ ORDER BY id\n  incremental_column: id\n");
    tl_sync_ok(e.st, &e.cfg, "lim", true, &report);
    assert_false(has_warning(&report, "top-level"));
    tl_env_source(&e, "lim", "  query: SELECT id, payload FROM ev ORDER BY id DESC LIMIT 50\n");
    tl_sync_ok(e.st, &e.cfg, "lim", false, &report);
    assert_false(has_warning(&report, "top-level"));
    tl_env_close(&e);
}

/* The scanner behind the warning, on PostgreSQL's lexical corners. */
static void test_limit_scanner(void **state)
{
    (void)state;
    static const struct {
        const char *sql, *found;
    } cases[] = {
        {"SELECT * FROM t LIMIT 10", "LIMIT"},
        {"select * from t order by id desc limit 10;", "LIMIT"},
        {"SELECT * FROM t\nLiMiT\n10", "LIMIT"},
        {"SELECT * FROM t LIMIT ALL", NULL},
        {"SELECT * FROM t LIMIT /* c */ ALL", NULL},
        {"SELECT * FROM t OFFSET 5", "OFFSET"},
        {"SELECT * FROM t FETCH FIRST 5 ROWS ONLY", "FETCH"},
        {"SELECT * FROM t FETCH NEXT ROW ONLY", "FETCH"},
        {"SELECT fetch FROM t", NULL},
        {"SELECT 1 AS limit, t.offset FROM t", NULL},
        {"SELECT * FROM (SELECT * FROM t LIMIT 5) s", NULL},
        {"SELECT * FROM t WHERE id IN (SELECT id FROM u ORDER BY 1 LIMIT 5)", NULL},
        {"WITH a AS (SELECT 1 LIMIT 1) SELECT * FROM a", NULL},
        {"WITH a AS (SELECT 1) SELECT * FROM a LIMIT 1", "LIMIT"},
        {"SELECT 'x LIMIT 1' FROM t", NULL},
        {"SELECT 'it''s LIMIT 1' FROM t", NULL},
        {"SELECT 'a' 'b' FROM t LIMIT 1", "LIMIT"},
        {"SELECT E'\\' LIMIT 1' FROM t", NULL},
        {"SELECT E'\\\\' FROM t LIMIT 1", "LIMIT"},
        {"SELECT '\\' FROM t LIMIT 1", "LIMIT"},
        {"SELECT \"LIMIT\" FROM t", NULL},
        {"SELECT \"a\"\" LIMIT 1\" FROM t", NULL},
        {"SELECT $$ LIMIT 1 $$ FROM t", NULL},
        {"SELECT $fn$ LIMIT $$ 1 $fn$ FROM t", NULL},
        {"SELECT $fn$ x $fn$ FROM t LIMIT 1", "LIMIT"},
        {"SELECT a$b$ FROM t LIMIT 1", "LIMIT"},
        {"SELECT * FROM t WHERE id = $1 LIMIT 1", "LIMIT"},
        {"SELECT 1 -- LIMIT 1", NULL},
        {"SELECT 1 -- x\rLIMIT 1", "LIMIT"},
        {"SELECT 1 /* LIMIT /* nested */ LIMIT */ FROM t", NULL},
        {"SELECT 1 /* unterminated LIMIT 1", NULL},
        {"SELECT 'unterminated LIMIT 1", NULL},
        {"SELECT 1 FROM t LIMIT", "LIMIT"},
        {"SELECT limited, offsets FROM t", NULL},
        {"SELECT 10limit FROM t", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *found = pgsrc_top_level_limit(cases[i].sql);
        if ((found == NULL) != (cases[i].found == NULL) ||
            (found != NULL && strcmp(found, cases[i].found) != 0))
            fail_msg("%s: found %s, expected %s", cases[i].sql, found ? found : "none",
                     cases[i].found ? cases[i].found : "none");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_form_watermarks_refused),
        cmocka_unit_test(test_text_watermark_accepted),
        cmocka_unit_test(test_inet_table_from_before_is_rebuilt),
        cmocka_unit_test(test_inet_watermark_never_duplicates),
        cmocka_unit_test(test_lookback_kinds),
        cmocka_unit_test(test_config_error_keeps_watermark),
        cmocka_unit_test(test_limit_warned),
        cmocka_unit_test(test_limit_scanner),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
