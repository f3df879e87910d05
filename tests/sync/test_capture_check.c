/* capture_describe and the publication and slot SQL against the harness
 * PostgreSQL: the table behind a logical source's query, its replica
 * identity and the column mapping; every refusal's exact text; duckstore's
 * own publication created and reset, a named one checked; a real slot's
 * state, dropped, and refused while a replication connection streams
 * from it; the role and wal_level checks. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source/pgsrc.h"
#include "source/publication.h"
#include "sync/capture_check.h"

typedef struct world {
    const char *db; /* conninfo of the test database */
    tl_env e;
} world;

static world W;

static int setup(void **state)
{
    (void)state;
    W.db = tl_keep(strdup(tl_pg_fresh_db("capture_check")));
    tl_env_open(&W.e, W.db, "cc", "");
    tl_pg_exec(W.e.pg, "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[], "
                       "kind text)");
    tl_pg_exec(W.e.pg, "CREATE TYPE pair AS (a int, b int)");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tl_env_close(&W.e);
    tl_free_kept();
    return 0;
}

static void connect(pgsrc_conn *c)
{
    ds_error err;
    if (!pgsrc_connect(W.e.url, 60, c, &err))
        fail_msg("%s", err.msg);
}

/* A logical source "s" reading query; describes it and runs
 * capture_describe. True when accepted (*t filled), else err. */
static bool describe(const char *query, capture_table *t, ds_error *err)
{
    tl_env_source(&W.e, "s", "  capture: logical\n  query: %s\n", query);
    const cfg_source *src = tl_source(&W.e.cfg, "s");
    pgsrc_conn c;
    connect(&c);
    pgsrc_desc desc;
    if (!pgsrc_describe(&c, src->plans[0].sql, &desc, err))
        fail_msg("describe failed: %s", err->msg);
    bool ok = capture_describe(&c, src, &src->plans[0], &desc, t, err);
    pgsrc_desc_free(&desc);
    pgsrc_disconnect(&c);
    return ok;
}

/* The refusal of query: "<file>:<line>: query: " + want. */
static void refused(const char *query, const char *want)
{
    capture_table t;
    ds_error err = {0};
    if (describe(query, &t, &err)) {
        capture_table_free(&t);
        fail_msg("accepted: %s", query);
    }
    assert_int_equal(err.code, DS_ERR_CONFIG);
    char *full = tl_keepf("%s/s_db.yaml:4: query: %s", W.e.dir, want);
    if (strcmp(err.msg, full) != 0)
        fail_msg("expected\n  %s\ngot\n  %s", full, err.msg);
}

static void test_table_and_columns(void **state)
{
    (void)state;
    capture_table t;
    ds_error err = {0};
    if (!describe("SELECT i.id, name, price * 2 AS double_price, tags, kind AS category FROM items i WHERE "
                  "price > 0",
                  &t, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(t.relid, tl_pg_int(W.e.pg, "SELECT 'cc.items'::regclass::oid"));
    assert_string_equal(t.nspname, "cc");
    assert_string_equal(t.relname, "items");
    assert_string_equal(t.qualified, "\"cc\".\"items\"");
    assert_int_equal(t.replident, 'd');
    assert_int_equal(t.nkey, 1);
    assert_string_equal(t.key_cols[0], "id");
    assert_int_equal(t.ncols, 5);
    assert_string_equal(t.source_col[0], "id");
    assert_string_equal(t.source_col[1], "name");
    assert_null(t.source_col[2]);
    assert_string_equal(t.source_col[3], "tags");
    assert_string_equal(t.source_col[4], "kind");
    capture_table_free(&t);
}

static void test_replica_identities(void **state)
{
    (void)state;
    tl_pg_exec(W.e.pg, "CREATE TABLE \"Full\" (a int, b text)");
    tl_pg_exec(W.e.pg, "ALTER TABLE \"Full\" REPLICA IDENTITY FULL");
    capture_table t;
    ds_error err = {0};
    /* FULL: every column identifies the row; none needs selecting. */
    if (!describe("SELECT b FROM cc.\"Full\"", &t, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(t.replident, 'f');
    assert_int_equal(t.nkey, 2);
    assert_string_equal(t.key_cols[0], "a");
    assert_string_equal(t.key_cols[1], "b");
    assert_string_equal(t.qualified, "\"cc\".\"Full\"");
    capture_table_free(&t);

    /* USING INDEX: the index's columns, in its order. */
    tl_pg_exec(W.e.pg, "CREATE TABLE keyed (x int NOT NULL, y int NOT NULL, z text)");
    tl_pg_exec(W.e.pg, "CREATE UNIQUE INDEX keyed_yx ON keyed (y, x)");
    tl_pg_exec(W.e.pg, "ALTER TABLE keyed REPLICA IDENTITY USING INDEX keyed_yx");
    if (!describe("SELECT x, y FROM keyed", &t, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(t.replident, 'i');
    assert_int_equal(t.nkey, 2);
    assert_string_equal(t.key_cols[0], "y");
    assert_string_equal(t.key_cols[1], "x");
    capture_table_free(&t);
    refused("SELECT x, z FROM keyed", "column \"y\" of \"cc\".\"keyed\" (its replica identity) is not "
                                      "selected as a plain column; the cache "
                                      "updates and deletes rows by it. Fix: add y to the select list");
}

static void test_refusals(void **state)
{
    (void)state;
    tl_pg_exec(W.e.pg, "CREATE VIEW items_v AS SELECT * FROM items");
    refused(
        "SELECT id FROM items_v",
        "\"cc\".\"items_v\" is a view; logical replication publishes the changes of tables only. Fix: read "
        "the table behind it directly (SELECT ... FROM <table> WHERE ...), or use capture: watermark");
    tl_pg_exec(W.e.pg, "CREATE MATERIALIZED VIEW items_m AS SELECT * FROM items");
    refused(
        "SELECT id FROM items_m",
        "\"cc\".\"items_m\" is a materialized view; logical replication publishes the changes of tables "
        "only. Fix: read the table behind it directly (SELECT ... FROM <table> WHERE ...), or use capture: "
        "watermark");

    tl_pg_exec(W.e.pg, "CREATE TABLE nokey (a int, b text)");
    refused(
        "SELECT a, b FROM nokey",
        "table \"cc\".\"nokey\" has no primary key and REPLICA IDENTITY DEFAULT, so its updates and deletes "
        "do not say which row they change. Fix: ALTER TABLE \"cc\".\"nokey\" REPLICA IDENTITY FULL or add a "
        "primary key");
    tl_pg_exec(W.e.pg, "CREATE TABLE nothing (a int PRIMARY KEY)");
    tl_pg_exec(W.e.pg, "ALTER TABLE nothing REPLICA IDENTITY NOTHING");
    refused(
        "SELECT a FROM nothing",
        "table \"cc\".\"nothing\" has REPLICA IDENTITY NOTHING, so its updates and deletes do not say which "
        "row they change. Fix: ALTER TABLE \"cc\".\"nothing\" REPLICA IDENTITY FULL or add a primary key "
        "(with REPLICA IDENTITY DEFAULT)");

    refused(
        "SELECT name FROM items",
        "column \"id\" of \"cc\".\"items\" (its primary key) is not selected as a plain column; the cache "
        "updates and deletes rows by it. Fix: add id to the select list");
    /* Computed from the key is not the key: a change could not find its row. */
    refused(
        "SELECT id + 0 AS id, name FROM items",
        "column \"id\" of \"cc\".\"items\" (its primary key) is not selected as a plain column; the cache "
        "updates and deletes rows by it. Fix: add id to the select list");

    tl_pg_exec(W.e.pg, "CREATE TABLE shapes (id int PRIMARY KEY, p pair, ps pair[])");
    refused(
        "SELECT id, p FROM shapes",
        "column \"p\" has type pair, which duckstore reads only as text (no binary decoding), but logical "
        "capture decodes every change in binary. Fix: cast it in the query, e.g. p::text AS p, or leave it "
        "out");
    refused(
        "SELECT id, ps FROM shapes",
        "column \"ps\" has type pair[], which duckstore reads only as text (no binary decoding), but "
        "logical capture decodes every change in binary. Fix: cast it in the query, e.g. ps::text AS ps, or "
        "leave it out");
    /* Arrays of built-ins and the cast a user writes are fine. */
    capture_table t;
    ds_error err = {0};
    if (!describe("SELECT id, p::text AS p, ARRAY[1, 2] AS ints FROM shapes", &t, &err))
        fail_msg("%s", err.msg);
    assert_null(t.source_col[1]);
    capture_table_free(&t);
}

static void test_publications(void **state)
{
    (void)state;
    tl_pg_exec(W.e.pg, "CREATE TABLE other (id int PRIMARY KEY)");
    pgsrc_conn c;
    connect(&c);
    ds_error err = {0};
    const char *both[] = {"\"cc\".\"items\"", "\"cc\".\"other\""};
    /* duckstore's own: created with the tables, then set to another list. */
    if (!pub_ensure(&c, "duckstore_s", true, both, 2, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(
        tl_pg_int(W.e.pg, "SELECT pubviaroot::int FROM pg_publication WHERE pubname = 'duckstore_s'"), 1);
    char *tables =
        tl_pg_scalar(W.e.pg, "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY tablename) "
                             "FROM pg_publication_tables WHERE pubname = 'duckstore_s'");
    assert_string_equal(tables, "cc.items,cc.other");
    free(tables);
    tl_pg_exec(W.e.pg,
               "ALTER PUBLICATION duckstore_s SET (publish = 'insert', publish_via_partition_root = false)");
    if (!pub_ensure(&c, "duckstore_s", true, both + 1, 1, &err))
        fail_msg("%s", err.msg);
    tables =
        tl_pg_scalar(W.e.pg, "SELECT string_agg(tablename, ',') FROM pg_publication_tables WHERE pubname = "
                             "'duckstore_s'");
    assert_string_equal(tables, "other");
    free(tables);
    assert_int_equal(
        tl_pg_int(W.e.pg,
                  "SELECT (pubinsert AND pubupdate AND pubdelete AND pubtruncate AND pubviaroot)::int FROM "
                  "pg_publication WHERE pubname = 'duckstore_s'"),
        1);

    /* A named one is checked, never changed. */
    assert_false(pub_ensure(&c, "Their Pub", false, both, 2, &err));
    assert_int_equal(err.code, DS_ERR_CONFIG);
    assert_string_equal(err.msg,
                        "publication \"Their Pub\" does not exist in this database; create it (CREATE "
                        "PUBLICATION \"Their Pub\" FOR TABLE \"cc\".\"items\", \"cc\".\"other\"), or "
                        "remove the publication key so that duckstore creates its own");
    tl_pg_exec(W.e.pg, "CREATE PUBLICATION \"Their Pub\" FOR TABLE items");
    assert_false(pub_ensure(&c, "Their Pub", false, both, 2, &err));
    assert_string_equal(err.msg,
                        "publication \"Their Pub\" does not publish \"cc\".\"other\", so its changes would "
                        "never reach the cache; ALTER PUBLICATION \"Their Pub\" ADD TABLE \"cc\".\"other\"");
    tl_pg_exec(W.e.pg, "ALTER PUBLICATION \"Their Pub\" ADD TABLE other");
    tl_pg_exec(W.e.pg, "ALTER PUBLICATION \"Their Pub\" SET (publish = 'insert, update, delete')");
    assert_false(pub_ensure(&c, "Their Pub", false, both, 2, &err));
    assert_string_equal(err.msg,
                        "publication \"Their Pub\" does not publish every insert, update, delete and "
                        "truncate, so the cache would miss changes; ALTER PUBLICATION \"Their Pub\" SET "
                        "(publish = 'insert, update, delete, truncate')");
    tl_pg_exec(W.e.pg, "ALTER PUBLICATION \"Their Pub\" SET (publish = 'insert, update, delete, truncate')");
    if (!pub_ensure(&c, "Their Pub", false, both, 2, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(
        tl_pg_int(W.e.pg, "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'Their Pub'"), 2);
    /* FOR ALL TABLES publishes them all. */
    tl_pg_exec(W.e.pg, "CREATE PUBLICATION everything FOR ALL TABLES");
    if (!pub_ensure(&c, "everything", false, both, 2, &err))
        fail_msg("%s", err.msg);

    /* check-config's form: the file and line of publication: first. */
    tl_env_source(&W.e, "s", "  capture: logical\n  publication: Their Pub\n  query: SELECT id FROM other\n");
    const cfg_source *src = tl_source(&W.e.cfg, "s");
    capture_table t = {.qualified = "\"cc\".\"items\""};
    tl_pg_exec(W.e.pg, "ALTER PUBLICATION \"Their Pub\" DROP TABLE items");
    assert_false(capture_check_publication(&c, src, &t, 1, &err));
    assert_string_equal(err.msg,
                        tl_keepf("%s/s_db.yaml:4: publication \"Their Pub\" does not publish "
                                 "\"cc\".\"items\", so its changes would never reach the cache; ALTER "
                                 "PUBLICATION \"Their Pub\" ADD TABLE \"cc\".\"items\"",
                                 W.e.dir));

    bool exists = false;
    assert_true(pub_drop_publication(&c, "duckstore_s", &err));
    assert_true(pub_exists(&c, "duckstore_s", &exists, &err));
    assert_false(exists);
    assert_true(pub_drop_publication(&c, "duckstore_s", &err)); /* gone already: fine */
    pgsrc_disconnect(&c);
}

/* A replication connection streaming from slot: the slot is active while
 * it stays open. */
static PGconn *stream_from(const char *slot, const char *publication)
{
    PGconn *repl = tl_pg_connect(tl_keepf("%s replication=database", W.e.url));
    PGresult *res = PQexec(repl, tl_keepf("START_REPLICATION SLOT %s LOGICAL 0/0 (proto_version '1', "
                                          "publication_names '%s')",
                                          slot, publication));
    if (PQresultStatus(res) != PGRES_COPY_BOTH)
        fail_msg("START_REPLICATION: %s", PQerrorMessage(repl));
    PQclear(res);
    /* Active once the walsender has acquired the slot. */
    for (int i = 0; i < 3000 && tl_pg_int(W.e.pg,
                                          "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' "
                                          "AND active",
                                          slot) == 0;
         i++)
        tl_pg_exec(W.e.pg, "SELECT pg_sleep(0.01)");
    return repl;
}

static void test_slots(void **state)
{
    (void)state;
    tl_pg_exec(W.e.pg, "CREATE PUBLICATION pub_all FOR ALL TABLES");
    tl_pg_exec(W.e.pg, "SELECT pg_create_logical_replication_slot('duckstore_cc_one', 'pgoutput')");
    tl_pg_exec(W.e.pg, "SELECT pg_create_logical_replication_slot('other_tool', 'pgoutput')");
    pgsrc_conn c;
    connect(&c);
    ds_error err = {0};
    pub_slot info;
    assert_true(pub_slot_info(&c, "duckstore_cc_one", &info, &err));
    assert_true(info.exists);
    assert_string_equal(info.plugin, "pgoutput");
    assert_true(info.confirmed_lsn[0] != '\0' && strchr(info.confirmed_lsn, '/') != NULL);
    assert_true(info.restart_lsn[0] != '\0');
    assert_string_equal(info.wal_status, "reserved");
    assert_false(info.active);
    assert_int_equal(info.active_pid, 0);
    assert_true(info.lag_bytes >= 0);
    tl_pg_exec(W.e.pg, "INSERT INTO items VALUES (1, 'a', 1, NULL, 'k')");
    assert_true(pub_slot_info(&c, "duckstore_cc_one", &info, &err));
    assert_true(info.lag_bytes > 0);
    assert_true(pub_slot_info(&c, "duckstore_none", &info, &err));
    assert_false(info.exists);
    assert_int_equal(info.lag_bytes, -1);

    char **names = NULL;
    size_t n = 0;
    assert_true(pub_list_slots(&c, &names, &n, &err));
    bool listed = false;
    for (size_t i = 0; i < n; i++) {
        assert_memory_equal(names[i], "duckstore_", 10);
        listed |= strcmp(names[i], "duckstore_cc_one") == 0;
    }
    assert_true(listed);
    pub_free_names(names, n);

    /* Refused while a process streams from it, naming that process. */
    PGconn *repl = stream_from("duckstore_cc_one", "pub_all");
    int64_t pid =
        tl_pg_int(W.e.pg, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'duckstore_cc_one'");
    assert_false(pub_drop_slot(&c, "duckstore_cc_one", &err));
    assert_int_equal(err.code, DS_ERR_SOURCE);
    assert_string_equal(err.msg,
                        tl_keepf("replication slot \"duckstore_cc_one\" is in use: the process with PID "
                                 "%lld streams from it; stop that process (the duckstore that reads this "
                                 "source) and try again",
                                 (long long)pid));
    assert_int_equal(tl_pg_int(W.e.pg, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = "
                                       "'duckstore_cc_one'"),
                     1);
    PQfinish(repl);
    /* Dropped once the stream is gone (the walsender releases it as it exits). */
    bool dropped = false;
    for (int i = 0; i < 3000 && !dropped; i++) {
        dropped = pub_drop_slot(&c, "duckstore_cc_one", &err);
        if (!dropped)
            tl_pg_exec(W.e.pg, "SELECT pg_sleep(0.01)");
    }
    if (!dropped)
        fail_msg("%s", err.msg);
    assert_int_equal(tl_pg_int(W.e.pg, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = "
                                       "'duckstore_cc_one'"),
                     0);
    assert_false(pub_drop_slot(&c, "duckstore_cc_one", &err));
    assert_int_equal(err.code, DS_ERR_CONFIG);
    assert_string_equal(err.msg, "no replication slot named \"duckstore_cc_one\" on this server");
    tl_pg_exec(W.e.pg, "SELECT pg_drop_replication_slot('other_tool')");
    pgsrc_disconnect(&c);
}

static void test_server_checks(void **state)
{
    (void)state;
    tl_env_source(&W.e, "s", "  capture: logical\n  query: SELECT id FROM items\n");
    const cfg_source *src = tl_source(&W.e.cfg, "s");
    pgsrc_conn c;
    connect(&c);
    ds_error err = {0};
    char level[32];
    assert_true(pub_wal_level(&c, level, sizeof level, &err));
    assert_string_equal(level, "logical");
    bool can = false;
    assert_true(pub_can_replicate(&c, &can, &err));
    assert_true(can); /* the harness connects as a superuser */
    assert_true(capture_check_server(&c, src, &err));
    pgsrc_disconnect(&c);

    /* A role without REPLICATION. */
    PGconn *admin = tl_pg_connect(tl_pg_base_conninfo());
    tl_pg_exec(admin, "DROP ROLE IF EXISTS \"cc Reader\"");
    tl_pg_exec(admin, "CREATE ROLE \"cc Reader\" LOGIN PASSWORD 'pw'");
    PQfinish(admin);
    const char *url = tl_keepf("%s user='cc Reader' password=pw", W.e.url);
    if (!pgsrc_connect(url, 60, &c, &err))
        fail_msg("%s", err.msg);
    assert_true(pub_can_replicate(&c, &can, &err));
    assert_false(can);
    assert_false(capture_check_server(&c, src, &err));
    assert_int_equal(err.code, DS_ERR_CONFIG);
    assert_string_equal(err.msg,
                        tl_keepf("%s/s_db.yaml:3: capture: logical streams changes through a replication "
                                 "slot, but the role \"cc Reader\" has neither REPLICATION nor superuser. "
                                 "Fix: ALTER ROLE \"cc Reader\" REPLICATION",
                                 W.e.dir));
    pgsrc_disconnect(&c);
    admin = tl_pg_connect(tl_pg_base_conninfo());
    tl_pg_exec(admin, "ALTER ROLE \"cc Reader\" REPLICATION");
    PQfinish(admin);
    if (!pgsrc_connect(url, 60, &c, &err))
        fail_msg("%s", err.msg);
    assert_true(capture_check_server(&c, src, &err));
    pgsrc_disconnect(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_and_columns),
        cmocka_unit_test(test_replica_identities),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_publications),
        cmocka_unit_test(test_slots),
        cmocka_unit_test(test_server_checks),
    };
    return cmocka_run_group_tests_name("sync/capture_check", tests, setup, teardown);
}
