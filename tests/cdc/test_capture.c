/* Logical capture end to end against the harness PostgreSQL (started with
 * wal_level=logical): the initial load on the slot's snapshot, then random
 * mixes of inserts, updates (of TOASTed rows and of the key), deletes,
 * truncates, rolled-back and interleaved transactions must leave the cached
 * table equal to the query's result in PostgreSQL; a changed table, a lost
 * slot and a reset load again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/capture.h"
#include "testlib.h"
#include "tl_fault.h"

static const char *g_conninfo;

#define ORDERS_QUERY "SELECT id, status, note, amount AS total FROM orders WHERE status <> 'void'"
#define ORDERS_RELATION "(" ORDERS_QUERY ") AS q"
#define ORDERS_SPEC "id,status,note,total"

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("cdc"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free((char *)g_conninfo);
    return 0;
}

static void create_orders(tl_env *e, int rows)
{
    tl_pg_exec(e->pg, "CREATE TABLE orders (id integer PRIMARY KEY, status text NOT NULL, note text, "
                      "amount numeric(12,2))");
    /* Long notes are stored out of line: an update that leaves one alone
     * sends it as "unchanged" ('u'). */
    tl_pg_exec(e->pg, "ALTER TABLE orders ALTER COLUMN note SET STORAGE EXTERNAL");
    tl_pg_exec(e->pg,
               "INSERT INTO orders SELECT g, CASE WHEN g %% 10 = 0 THEN 'void' ELSE 'new' END, "
               "'note ' || g, g * 1.25 FROM generate_series(1, %d) g",
               rows);
}

/* Catches up once (what `duckstore sync` does) and returns the report. */
static sync_report capture_ok(tl_env *e, const char *name, bool full)
{
    capture_options opt = {.force_full = full};
    sync_report report;
    ds_error err = {0};
    if (!capture_run(e->st, &e->cfg, tl_source(&e->cfg, name), &opt, &report, &err))
        fail_msg("capture_run: %s", err.msg);
    return report;
}

/* The cached table holds exactly the rows (every copy) of relation. */
static void assert_cached(tl_env *e, const char *relation, const char *table, const char *spec)
{
    char *want = tl_pg_checksum(e->pg, relation, spec);
    char *got = tl_duck_checksum(e->con, table, spec);
    assert_string_equal(got, want);
    free(want);
    free(got);
}

static void assert_same(tl_env *e, const char *table)
{
    assert_cached(e, ORDERS_RELATION, table, ORDERS_SPEC);
}

static void drop_slot(tl_env *e, const char *name)
{
    tl_pg_exec(e->pg,
               "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = "
               "'duckstore_%s'",
               name);
}

static void open_source(tl_env *e, const char *schema, const char *name)
{
    tl_env_open(e, g_conninfo, schema, "");
    create_orders(e, 2000);
    tl_env_source(e, name, "  capture: logical\n  query: %s\n", ORDERS_QUERY);
}

static void the_initial_load_and_the_stream_meet_exactly(void **state)
{
    (void)state;
    tl_env e;
    open_source(&e, "meet", "cdc_meet");
    sync_report r = capture_ok(&e, "cdc_meet", false);
    assert_int_equal(r.rows, 1800);
    assert_same(&e, "cdc_meet_data");
    /* Changes after the load arrive, each once. */
    tl_pg_exec(e.pg, "INSERT INTO orders VALUES (5001, 'new', 'late', 1)");
    tl_pg_exec(e.pg, "UPDATE orders SET status = 'paid' WHERE id = 1");
    tl_pg_exec(e.pg, "DELETE FROM orders WHERE id = 2");
    r = capture_ok(&e, "cdc_meet", false);
    assert_int_equal(r.rows_added, 3);
    assert_same(&e, "cdc_meet_data");
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM cdc_meet_data WHERE id = 5001"), 1);
    /* Nothing new: nothing applied. */
    r = capture_ok(&e, "cdc_meet", false);
    assert_int_equal(r.rows_added, 0);
    assert_same(&e, "cdc_meet_data");
    /* The slot was confirmed up to what was applied. */
    json_t *st = tl_sync_status(e.st, &e.cfg, "cdc_meet");
    assert_string_equal(tl_json_str(st, "capture"), "logical");
    assert_string_equal(tl_json_str(st, "slot"), "duckstore_cdc_meet");
    char *confirmed = tl_pg_scalar(e.pg, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE "
                                         "slot_name = 'duckstore_cdc_meet'");
    assert_non_null(tl_json_str(st, "confirmed_lsn"));
    assert_int_equal(json_integer_value(json_object_get(st, "lag_bytes")), 0);
    free(confirmed);
    json_decref(st);
    drop_slot(&e, "cdc_meet");
    tl_env_close(&e);
}

/* A catch-up ends where the stream can arrive: a start inside a WAL
 * page's header (the last record ended at the page's end, after a WAL
 * switch say) is the page's start, which the walsender reports; before,
 * `duckstore sync` waited there for unrelated WAL. */
static void a_catch_up_target_is_never_inside_a_page_header(void **state)
{
    (void)state;
    assert_int_equal(capture_stream_target(0x16000018, 8192), 0x16000000);  /* a page's short header */
    assert_int_equal(capture_stream_target(0x16000028, 8192), 0x16000000);  /* a segment's long header */
    assert_int_equal(capture_stream_target(0x16000029, 8192), 0x16000029);  /* past any header: a record */
    assert_int_equal(capture_stream_target(0x16002000, 8192), 0x16002000);  /* at a page's start */
    assert_int_equal(capture_stream_target(0x16008010, 32768), 0x16008000); /* another wal_block_size */
    assert_int_equal(capture_stream_target(0x16000018, 0), 0x16000018);
}

/* A table without a key, identified by the whole row (REPLICA IDENTITY
 * FULL). Its long notes are stored out of line: an update that leaves one
 * alone sends it as unchanged ('u') in the new row, whole in the old. */
static void create_keyless_table(tl_env *e, const char *table, const char *columns)
{
    tl_pg_exec(e->pg, "CREATE TABLE %s (%s)", table, columns);
    tl_pg_exec(e->pg, "ALTER TABLE %s REPLICA IDENTITY FULL", table);
    tl_pg_exec(e->pg, "ALTER TABLE %s ALTER COLUMN note SET STORAGE EXTERNAL", table);
}

/* A deterministic pseudo-random sequence (the same mix every run). */
static unsigned g_seed = 12345;
static int next_rand(int n)
{
    g_seed = g_seed * 1103515245u + 12345u;
    return (int)((g_seed >> 8) % (unsigned)n);
}

static void random_mix(PGconn *pg, PGconn *other, int rounds, int *next_id)
{
    for (int r = 0; r < rounds; r++) {
        int kind = next_rand(100);
        int id = 1 + next_rand(*next_id);
        if (kind < 40) {
            tl_pg_exec(pg, "INSERT INTO orders VALUES (%d, 'new', 'n%d', %d.5) ON CONFLICT DO NOTHING",
                       (*next_id)++, r, r);
        } else if (kind < 55) {
            tl_pg_exec(pg,
                       "UPDATE orders SET status = CASE WHEN status = 'void' THEN 'paid' ELSE 'void' END "
                       "WHERE id = %d",
                       id);
        } else if (kind < 62) {
            /* A TOASTed note, then an update that leaves it unchanged. */
            tl_pg_exec(pg, "UPDATE orders SET note = repeat(md5(id::text), 400) WHERE id = %d", id);
            tl_pg_exec(pg, "UPDATE orders SET amount = amount + 1 WHERE id = %d", id);
        } else if (kind < 68) {
            /* The key moves. */
            tl_pg_exec(pg, "UPDATE orders SET id = %d WHERE id = %d", (*next_id)++, id);
        } else if (kind < 78) {
            tl_pg_exec(pg, "DELETE FROM orders WHERE id = %d", id);
        } else if (kind < 84) {
            tl_pg_exec(pg,
                       "BEGIN; INSERT INTO orders VALUES (%d, 'new', 'rolled back', 0); DELETE FROM orders "
                       "WHERE id = %d; ROLLBACK",
                       *next_id + 100000, id);
        } else if (kind < 96) {
            /* Interleaved transactions committing in the other order. */
            int a = (*next_id)++, b = (*next_id)++;
            tl_pg_exec(pg, "BEGIN; INSERT INTO orders VALUES (%d, 'new', 'first', 1)", a);
            tl_pg_exec(other,
                       "BEGIN; INSERT INTO orders VALUES (%d, 'new', 'second', 2); UPDATE orders SET "
                       "status = 'paid' WHERE id = %d",
                       b, id);
            tl_pg_exec(pg, "UPDATE orders SET note = 'touched' WHERE id = %d", b - 1);
            tl_pg_exec(other, "COMMIT");
            tl_pg_exec(pg, "COMMIT");
        } else if (kind < 98) {
            /* Many rows in one transaction. */
            tl_pg_exec(pg,
                       "INSERT INTO orders SELECT g, 'bulk', 'b' || g, g FROM generate_series(%d, %d) g "
                       "ON CONFLICT DO NOTHING",
                       *next_id, *next_id + 2999);
            *next_id += 3000;
        } else {
            tl_pg_exec(pg, "TRUNCATE orders");
        }
    }
}

static void a_random_mix_of_changes_leaves_the_query_result(void **state)
{
    (void)state;
    tl_env e;
    open_source(&e, "mix", "cdc_mix");
    PGconn *other = tl_pg_connect(e.url);
    capture_ok(&e, "cdc_mix", false);
    int next_id = 2001;
    for (int round = 0; round < 6; round++) {
        random_mix(e.pg, other, 150, &next_id);
        capture_ok(&e, "cdc_mix", false);
        assert_same(&e, "cdc_mix_data");
    }
    PQfinish(other);
    drop_slot(&e, "cdc_mix");
    tl_env_close(&e);
}

/* The same for a table without a key, identified by the whole row, whose
 * rows repeat: copies come and go one by one (by ctid), all at once, in
 * interleaved and rolled-back transactions, with TOASTed values left
 * unchanged by updates. */
static void random_twins_mix(PGconn *pg, PGconn *other, int rounds)
{
#define ONE_COPY(cond) "ctid = (SELECT ctid FROM twins WHERE " cond " LIMIT 1)"
    for (int r = 0; r < rounds; r++) {
        int kind = next_rand(100), grp = next_rand(10), tag = next_rand(3);
        if (kind < 35) {
            tl_pg_exec(pg, "INSERT INTO twins SELECT %d, 't%d', NULL FROM generate_series(1, %d)", grp, tag,
                       1 + next_rand(3));
        } else if (kind < 50) {
            tl_pg_exec(pg, "DELETE FROM twins WHERE " ONE_COPY("grp = %d AND tag = 't%d'"), grp, tag);
        } else if (kind < 62) {
            tl_pg_exec(pg, "UPDATE twins SET tag = 't%d' WHERE " ONE_COPY("grp = %d"), next_rand(3), grp);
        } else if (kind < 70) {
            tl_pg_exec(pg, "UPDATE twins SET note = repeat(md5(grp::text), 400) WHERE " ONE_COPY("grp = %d"),
                       grp);
            tl_pg_exec(pg, "UPDATE twins SET grp = grp + 1 WHERE " ONE_COPY("grp = %d AND note IS NOT NULL"),
                       grp);
        } else if (kind < 76) {
            tl_pg_exec(pg, "DELETE FROM twins WHERE grp = %d AND tag = 't%d'", grp, tag);
        } else if (kind < 82) {
            tl_pg_exec(pg,
                       "BEGIN; INSERT INTO twins VALUES (%d, 't%d', 'rolled back'); DELETE FROM twins WHERE "
                       "grp = %d; ROLLBACK",
                       grp, tag, grp);
        } else if (kind < 98) {
            /* Interleaved transactions committing in the other order, on
             * rows apart (groups 5-9 and 0-4), so neither waits for the
             * other's lock. */
            grp = 5 + grp % 5;
            tl_pg_exec(pg, "BEGIN; INSERT INTO twins VALUES (%d, 't%d', NULL), (%d, 't%d', NULL)", grp, tag,
                       grp, tag);
            tl_pg_exec(other, "BEGIN; DELETE FROM twins WHERE " ONE_COPY("grp = %d"), next_rand(5));
            tl_pg_exec(pg, "DELETE FROM twins WHERE " ONE_COPY("grp = %d AND tag = 't%d'"), grp, tag);
            tl_pg_exec(other, "COMMIT");
            tl_pg_exec(pg, "COMMIT");
        } else {
            tl_pg_exec(pg, "TRUNCATE twins");
        }
    }
#undef ONE_COPY
}

static void a_random_mix_of_identical_rows_leaves_the_query_result(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "twinmix", "");
    create_keyless_table(&e, "twins", "grp integer, tag text, note text");
    tl_pg_exec(e.pg,
               "INSERT INTO twins SELECT g %% 10, 't' || (g %% 3), NULL FROM generate_series(1, 200) g");
    tl_env_source(&e, "cdc_twinmix",
                  "  capture: logical\n  query: SELECT grp, tag, note FROM twins WHERE grp < 8\n");
    PGconn *other = tl_pg_connect(e.url);
    capture_ok(&e, "cdc_twinmix", false);
    for (int round = 0; round < 6; round++) {
        random_twins_mix(e.pg, other, 120);
        capture_ok(&e, "cdc_twinmix", false);
        assert_cached(&e, "(SELECT grp, tag, note FROM twins WHERE grp < 8) AS q", "cdc_twinmix_data",
                      "grp,tag,note");
    }
    PQfinish(other);
    drop_slot(&e, "cdc_twinmix");
    tl_env_close(&e);
}

static void a_changed_table_a_lost_slot_and_a_reset_load_again(void **state)
{
    (void)state;
    tl_env e;
    open_source(&e, "again", "cdc_again");
    capture_ok(&e, "cdc_again", false);
    /* A column added: the cached table is rebuilt from a new slot. */
    tl_pg_exec(e.pg, "ALTER TABLE orders ADD COLUMN extra int DEFAULT 7");
    tl_pg_exec(e.pg, "UPDATE orders SET status = 'paid' WHERE id < 50");
    sync_report r = capture_ok(&e, "cdc_again", false);
    assert_int_equal(r.ntables, 1); /* a full load ran */
    assert_same(&e, "cdc_again_data");
    /* The slot dropped under duckstore (a failover loses it too). */
    drop_slot(&e, "cdc_again");
    tl_pg_exec(e.pg, "DELETE FROM orders WHERE id < 100");
    r = capture_ok(&e, "cdc_again", false);
    assert_int_equal(r.ntables, 1);
    assert_same(&e, "cdc_again_data");
    /* reset-watermark forgets the position: the next run loads again. */
    ds_error err = {0};
    assert_true(capture_reset(e.st, tl_source(&e.cfg, "cdc_again"), &err));
    r = capture_ok(&e, "cdc_again", false);
    assert_int_equal(r.ntables, 1);
    assert_int_equal(tl_pg_int(e.pg, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = "
                                     "'duckstore_cdc_again'"),
                     1);
    assert_same(&e, "cdc_again_data");
    drop_slot(&e, "cdc_again");
    tl_env_close(&e);
}

/* The cache finds rows by the replica identity it was loaded with: a
 * changed primary key, or a change to REPLICA IDENTITY FULL, loads again
 * (before, a delete made before the change named the old key, matched
 * nothing under the new one and left its row cached; after the change to
 * FULL every run failed on a delete without its old row). */
static void a_changed_key_or_replica_identity_loads_again(void **state)
{
    (void)state;
    tl_env e;
    open_source(&e, "rekey", "cdc_rekey");
    capture_ok(&e, "cdc_rekey", false);
    tl_pg_exec(e.pg, "DELETE FROM orders WHERE id = 5");
    tl_pg_exec(e.pg, "ALTER TABLE orders DROP CONSTRAINT orders_pkey, ADD PRIMARY KEY (id, status)");
    sync_report r = capture_ok(&e, "cdc_rekey", false);
    assert_int_equal(r.ntables, 1); /* a full load ran */
    assert_same(&e, "cdc_rekey_data");
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM cdc_rekey_data WHERE id = 5"), 0);
    tl_pg_exec(e.pg, "DELETE FROM orders WHERE id = 6");
    tl_pg_exec(e.pg, "ALTER TABLE orders REPLICA IDENTITY FULL");
    r = capture_ok(&e, "cdc_rekey", false);
    assert_int_equal(r.ntables, 1);
    assert_same(&e, "cdc_rekey_data");
    /* Unchanged since: the stream goes on without a load. */
    tl_pg_exec(e.pg, "DELETE FROM orders WHERE id = 7");
    r = capture_ok(&e, "cdc_rekey", false);
    assert_int_equal(r.ntables, 0);
    assert_same(&e, "cdc_rekey_data");
    drop_slot(&e, "cdc_rekey");
    tl_env_close(&e);
}

static void full_identity_tables_and_split_sources_follow_too(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "split", "");
    /* A dataset table with a primary key, and results without one that
     * PostgreSQL identifies by the whole row. */
    tl_pg_exec(e.pg, "CREATE TABLE runs (dataset_id integer PRIMARY KEY, name text)");
    tl_pg_exec(e.pg, "CREATE TABLE scores (dataset_id integer, metric text, score numeric(6,3))");
    tl_pg_exec(e.pg, "ALTER TABLE scores REPLICA IDENTITY FULL");
    tl_pg_exec(e.pg, "INSERT INTO runs SELECT g, 'run ' || g FROM generate_series(1, 50) g");
    tl_pg_exec(e.pg,
               "INSERT INTO scores SELECT g %% 50 + 1, 'm' || g, g / 7.0 FROM generate_series(1, 400) g");
    tl_env_source(&e, "cdc_split",
                  "  capture: logical\n"
                  "  dataset_query: SELECT dataset_id, name FROM runs\n"
                  "  results_query: SELECT dataset_id, metric, score FROM scores WHERE score > 1\n");
    capture_ok(&e, "cdc_split", false);
    tl_pg_exec(e.pg, "UPDATE scores SET score = score + 10 WHERE metric IN ('m3', 'm5', 'm7')");
    tl_pg_exec(e.pg, "DELETE FROM scores WHERE metric IN ('m20', 'm21')");
    tl_pg_exec(e.pg, "UPDATE scores SET score = NULL WHERE metric = 'm30'");
    tl_pg_exec(e.pg, "INSERT INTO scores VALUES (7, NULL, 5)");
    tl_pg_exec(e.pg, "UPDATE runs SET name = 'renamed' WHERE dataset_id = 7");
    tl_pg_exec(e.pg, "DELETE FROM runs WHERE dataset_id = 8");
    capture_ok(&e, "cdc_split", false);
    assert_cached(&e, "(SELECT dataset_id, metric, score FROM scores WHERE score > 1) AS q",
                  "cdc_split_results", "dataset_id,metric,score");
    assert_cached(&e, "runs", "cdc_split_dataset", "dataset_id,name");
    /* The view joins them as for a watermark source. */
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM cdc_split_data WHERE name = 'renamed'"),
                     tl_pg_int(e.pg, "SELECT count(*) FROM scores WHERE dataset_id = 7 AND score > 1"));
    drop_slot(&e, "cdc_split");
    tl_env_close(&e);
}

/* A table without a key may hold identical rows, which PostgreSQL tells
 * apart only by their place (ctid): an insert adds one copy, a delete or an
 * update takes exactly one away, whether the copies arrive in one batch or
 * over several. */
static void identical_rows_of_a_full_identity_table_count_one_by_one(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "twins", "");
    create_keyless_table(&e, "hits", "page text, n integer, note text");
    tl_pg_exec(e.pg, "INSERT INTO hits SELECT 'p' || (g %% 3), g %% 2, NULL FROM generate_series(1, 12) g");
    tl_pg_exec(e.pg, "INSERT INTO hits SELECT 'long', 1, repeat('n', 5000) FROM generate_series(1, 3)");
    tl_env_source(&e, "cdc_twins",
                  "  capture: logical\n  query: SELECT page, n, note FROM hits WHERE n < 5\n");
    capture_ok(&e, "cdc_twins", false);
    const char *spec = "page,n,note";
    const char *relation = "(SELECT page, n, note FROM hits WHERE n < 5) AS q";
    /* One copy of a pair goes, one is updated, two more copies arrive in
     * one transaction, and a copy comes and goes in the same batch. */
    tl_pg_exec(e.pg,
               "DELETE FROM hits WHERE ctid = (SELECT min(ctid) FROM hits WHERE page = 'p0' AND n = 0)");
    tl_pg_exec(e.pg,
               "UPDATE hits SET n = 3 WHERE ctid = (SELECT min(ctid) FROM hits WHERE page = 'p1' AND n = 1)");
    tl_pg_exec(e.pg,
               "INSERT INTO hits VALUES ('p2', 0, NULL), ('p2', 0, NULL), ('new', 1, 'x'), ('new', 1, 'x')");
    tl_pg_exec(e.pg, "DELETE FROM hits WHERE ctid = (SELECT min(ctid) FROM hits WHERE page = 'new')");
    tl_pg_exec(e.pg, "UPDATE hits SET n = 4 WHERE ctid = (SELECT min(ctid) FROM hits WHERE page = 'long')");
    /* A copy leaves the query's WHERE, and one enters it. */
    tl_pg_exec(e.pg,
               "UPDATE hits SET n = 9 WHERE ctid = (SELECT min(ctid) FROM hits WHERE page = 'p2' AND n = 0)");
    tl_pg_exec(e.pg, "INSERT INTO hits VALUES ('out', 7, NULL), ('out', 7, NULL)");
    tl_pg_exec(e.pg, "UPDATE hits SET n = 2 WHERE ctid = (SELECT min(ctid) FROM hits WHERE page = 'out')");
    capture_ok(&e, "cdc_twins", false);
    assert_cached(&e, relation, "cdc_twins_data", spec);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM cdc_twins_data WHERE page = 'p2' AND n = 0"),
                     tl_pg_int(e.pg, "SELECT count(*) FROM hits WHERE page = 'p2' AND n = 0"));
    /* Every copy goes in one statement; the others stay. */
    tl_pg_exec(e.pg, "DELETE FROM hits WHERE page = 'p1'");
    capture_ok(&e, "cdc_twins", false);
    assert_cached(&e, relation, "cdc_twins_data", spec);
    drop_slot(&e, "cdc_twins");
    tl_env_close(&e);
}

/* Rows PostgreSQL tells apart by their bytes but DuckDB holds as equal: an
 * unconstrained numeric is a DOUBLE in the cache, so 1.0, 1.00 and 1.000
 * are three rows there with one value. Deleting them deletes three (before,
 * each picked the same stored row, and two stayed). */
static void rows_equal_in_duckdb_are_counted_together(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "equal", "");
    tl_pg_exec(e.pg, "CREATE TABLE amounts (a numeric, label text)");
    tl_pg_exec(e.pg, "ALTER TABLE amounts REPLICA IDENTITY FULL");
    tl_pg_exec(e.pg, "INSERT INTO amounts VALUES (1.0, 'x'), (1.00, 'x'), (1.000, 'x'), (2, 'x'), (1, 'y')");
    tl_env_source(&e, "cdc_equal", "  capture: logical\n  query: SELECT a, label FROM amounts\n");
    capture_ok(&e, "cdc_equal", false);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM cdc_equal_data"), 5);
    tl_pg_exec(e.pg, "DELETE FROM amounts WHERE a = 1 AND label = 'x'");
    capture_ok(&e, "cdc_equal", false);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM cdc_equal_data"), 2);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM cdc_equal_data WHERE label = 'x' AND a = 1"),
                     0);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM cdc_equal_data WHERE label = 'y' AND a = 1"),
                     1);
    drop_slot(&e, "cdc_equal");
    tl_env_close(&e);
}

/* A source loaded, whose walsender has a small logical_decoding_work_mem:
 * its large transactions are streamed before they commit (protocol 2). */
static void open_streaming_source(tl_env *e, const char *schema, const char *name)
{
    open_source(e, schema, name);
    snprintf(e->url, sizeof e->url, "%s options='-c search_path=%s -c logical_decoding_work_mem=64kB'",
             g_conninfo, schema);
    tl_env_source(e, name, "  capture: logical\n  query: %s\n", ORDERS_QUERY);
    capture_ok(e, name, false);
}

/* The store reopened as a server opens it, at this memory_limit. */
static void reopen_with_memory_limit(tl_env *e, const char *limit)
{
    char yaml[64];
    snprintf(yaml, sizeof yaml, "  memory_limit: %s\n", limit);
    tl_env_store(e, yaml);
    duckdb_disconnect(&e->con);
    store_close(e->st);
    ds_error err = {0};
    store_settings settings = {.memory_limit = limit, .threads = 1};
    if (!store_open_ext(e->store_path, &settings, &e->st, &err))
        fail_msg("%s", err.msg);
    e->con = tl_store_connect(e->st);
}

static void a_transaction_larger_than_a_batch_commits_whole(void **state)
{
    (void)state;
    tl_env e;
    open_streaming_source(&e, "big", "cdc_big");
    /* 250,000 inserts (make soak: 10M rows of about 200 bytes, 2 GB of
     * changes) and their updates and deletes in one transaction: applied in
     * parts inside one DuckDB transaction, committed with its end; a
     * subtransaction rolled back and a whole transaction rolled back after
     * PostgreSQL streamed them leave nothing. */
    int rows = tl_scale(250000, 10000000), pad = tl_scale(1, 190);
    tl_pg_exec(
        e.pg,
        "BEGIN; INSERT INTO orders SELECT g, 'bulk', 'big ' || g || repeat('x', %d), g FROM "
        "generate_series(10001, %d) g; SAVEPOINT s; INSERT INTO orders SELECT g, 'undone', 'u', g FROM "
        "generate_series(50000001, 50040000) g; ROLLBACK TO SAVEPOINT s; UPDATE orders SET status = "
        "'void' WHERE id %% 5 = 0 AND id > 10000; DELETE FROM orders WHERE id %% 7 = 0; COMMIT",
        pad, 10000 + rows);
    tl_pg_exec(e.pg, "BEGIN; INSERT INTO orders SELECT g, 'aborted', 'a', g FROM generate_series(60000001, "
                     "60050000) g; ROLLBACK");
    sync_report r = capture_ok(&e, "cdc_big", false);
    assert_true(r.rows_added >= rows);
    assert_same(&e, "cdc_big_data");
    assert_true(tl_pg_int(e.pg, "SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = "
                                "'duckstore_cdc_big'") >= 2);
    drop_slot(&e, "cdc_big");
    tl_env_close(&e);
}

/* A streamed transaction that does not fit memory_limit: the capture stops
 * with an error that says so and what to do, confirms nothing, and once
 * memory_limit is raised the same transaction arrives whole. */
static void a_transaction_past_memory_limit_says_so_and_loses_nothing(void **state)
{
    (void)state;
    tl_env e;
    open_streaming_source(&e, "huge", "cdc_huge");
    reopen_with_memory_limit(&e, "4MB");
    tl_pg_exec(e.pg, "INSERT INTO orders SELECT g, 'bulk', repeat(md5(g::text), 32), g FROM "
                     "generate_series(10001, 210000) g");
    capture_options opt = {0};
    sync_report report;
    ds_error err = {0};
    assert_false(capture_run(e.st, &e.cfg, tl_source(&e.cfg, "cdc_huge"), &opt, &report, &err));
    printf("# %s\n", err.msg);
    tl_assert_contains(err.msg, "a transaction of about ");
    tl_assert_contains(err.msg,
                       "which PostgreSQL streamed before its commit, does not fit memory_limit 4MB: ");
    tl_assert_contains(err.msg, "raise memory_limit in duckdb.yaml");
    tl_assert_contains(err.msg, "nothing is lost (");
    tl_assert_contains(err.msg, "Out of Memory Error: ");
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM cdc_huge_data WHERE id > 10000"), 0);
    /* Raised: the transaction is sent again and applied whole. */
    reopen_with_memory_limit(&e, "2GB");
    sync_report r = capture_ok(&e, "cdc_huge", false);
    assert_int_equal(r.rows_added, 200000);
    assert_same(&e, "cdc_huge_data");
    drop_slot(&e, "cdc_huge");
    tl_env_close(&e);
}

/* Updates and deletes scattered over a large table. DuckDB keeps the
 * marks of deleted stored rows in memory until a checkpoint: 256 KB for
 * each row group a delete touches, 19 MB once deletes reach all 74 row
 * groups of these 1.2M rows. Its own checkpoints follow the WAL, which
 * deletes hardly grow, so at memory_limit 20MB a catch-up of such
 * transactions ran out of memory; the stream now ends its batches and
 * checkpoints before the marks could pass what the limit leaves them. A
 * single transaction that cannot fit stops with an error naming
 * memory_limit in duckdb.yaml, and loses nothing. */
static void scattered_updates_and_deletes_stay_within_memory_limit(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "cdc_marks", "");
    tl_pg_exec(e.pg, "CREATE TABLE orders (id integer PRIMARY KEY, status text NOT NULL, note text, "
                     "amount numeric(12,2))");
    tl_pg_exec(e.pg, "INSERT INTO orders SELECT g, 'new', NULL, g FROM generate_series(1, 1200000) g");
    tl_env_source(&e, "cdc_marks", "  capture: logical\n  query: %s\n", ORDERS_QUERY);
    capture_ok(&e, "cdc_marks", false);
    reopen_with_memory_limit(&e, "20MB");
    /* Each transaction: 20 updates and 20 deletes of ids 60,013 apart,
     * each in a row group of its own (16,384 rows). */
    for (int t = 1; t <= 60; t++)
        tl_pg_exec(e.pg,
                   "BEGIN; UPDATE orders SET amount = amount + 1, status = 'paid' WHERE id %% 60013 = %d; "
                   "DELETE FROM orders WHERE id %% 60013 = %d; COMMIT",
                   t, 30000 + t);
    sync_report r = capture_ok(&e, "cdc_marks", false);
    assert_int_equal(r.rows_added, 60 * 40);
    reopen_with_memory_limit(&e, "256MB"); /* the checksum's own memory */
    assert_same(&e, "cdc_marks_data");
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM cdc_marks_data"), 1200000 - 60 * 20);
    reopen_with_memory_limit(&e, "20MB");

    /* One transaction touching every vector of the table. */
    tl_pg_exec(e.pg, "UPDATE orders SET amount = amount + 1 WHERE id %% 2000 = 7");
    capture_options opt = {0};
    sync_report report;
    ds_error err = {0};
    assert_false(capture_run(e.st, &e.cfg, tl_source(&e.cfg, "cdc_marks"), &opt, &report, &err));
    printf("# %s\n", err.msg);
    tl_assert_contains(err.msg, "DuckDB ran out of memory_limit 20MB applying a batch of changes; raise "
                                "memory_limit in duckdb.yaml and sync again");
    tl_assert_contains(err.msg, "nothing is lost (");
    reopen_with_memory_limit(&e, "256MB");
    r = capture_ok(&e, "cdc_marks", false);
    assert_int_equal(r.rows_added, tl_pg_int(e.pg, "SELECT count(*) FROM orders WHERE id %% 2000 = 7"));
    assert_same(&e, "cdc_marks_data");
    drop_slot(&e, "cdc_marks");
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_catch_up_target_is_never_inside_a_page_header),
        cmocka_unit_test(the_initial_load_and_the_stream_meet_exactly),
        cmocka_unit_test(a_random_mix_of_changes_leaves_the_query_result),
        cmocka_unit_test(a_random_mix_of_identical_rows_leaves_the_query_result),
        cmocka_unit_test(a_changed_table_a_lost_slot_and_a_reset_load_again),
        cmocka_unit_test(a_changed_key_or_replica_identity_loads_again),
        cmocka_unit_test(full_identity_tables_and_split_sources_follow_too),
        cmocka_unit_test(identical_rows_of_a_full_identity_table_count_one_by_one),
        cmocka_unit_test(rows_equal_in_duckdb_are_counted_together),
        cmocka_unit_test(a_transaction_larger_than_a_batch_commits_whole),
        cmocka_unit_test(a_transaction_past_memory_limit_says_so_and_loses_nothing),
        cmocka_unit_test(scattered_updates_and_deletes_stay_within_memory_limit),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
