/* Partitioned reads (sync_workers > 1 + partition_column) load exactly what
 * one stream loads, for bigint, timestamptz, date and numeric columns with
 * NULLs and skew; and max_sync_rows caps every table, partitioned or not,
 * full or incremental. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *g_conninfo;

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("sync_partition"));
    PGconn *pg = tl_pg_connect(g_conninfo);
    /* Range boundaries travel as text in the session's formats: make those
     * unusual (half-hour offset with DST, day-first dates). */
    tl_pg_exec(pg, "ALTER DATABASE \"%s\" SET timezone = 'America/St_Johns'", PQdb(pg));
    tl_pg_exec(pg, "ALTER DATABASE \"%s\" SET datestyle = 'SQL, DMY'", PQdb(pg));
    PQfinish(pg);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_conninfo);
    return 0;
}

#define PART_ROWS 20000
#define PART_SPEC "k,id,ts:ts,d:date,n,payload"
/* The reader columns show how a row was read: partition workers run in a
 * REPEATABLE READ snapshot transaction, a single stream does not. */
#define PART_QUERY                                                                                           \
    "SELECT k, id, ts, d, n, payload, pg_backend_pid() AS reader_pid, "                                      \
    "current_setting('transaction_isolation') AS reader_isolation FROM part_src"

/* 20000 rows; 70% of them share a handful of partition values, every
 * partition column has NULLs, and the rest spread over a wide range. */
static void create_part_src(PGconn *pg)
{
    tl_pg_exec(
        pg, "CREATE TABLE part_src (k int PRIMARY KEY, id bigint, ts timestamptz, d date, n numeric(12,4), "
            "payload text)");
    tl_pg_exec(
        pg,
        "INSERT INTO part_src SELECT i, "
        "CASE WHEN i %% 97 = 0 THEN NULL WHEN i <= 14000 THEN 1000 + i %% 7 "
        "WHEN i %% 2 = 0 THEN -9000000000000000000 + i ELSE i::bigint * i * 1000 END, "
        "CASE WHEN i %% 89 = 0 THEN NULL WHEN i <= 14000 THEN timestamptz '2026-03-08 06:59:59.99999+00' "
        "+ (i %% 50) * interval '1 microsecond' ELSE timestamptz '1970-01-01 00:00:00+00' + i * interval "
        "'37 hours 11 minutes 0.000013 seconds' END, "
        "CASE WHEN i %% 83 = 0 THEN NULL WHEN i <= 14000 THEN date '2024-02-29' + i %% 3 "
        "ELSE date '1900-01-01' + i * 7 END, "
        "CASE WHEN i %% 79 = 0 THEN NULL WHEN i <= 14000 THEN 12.5 + i %% 2 "
        "ELSE ((i * 7919) %% 1000003 - 500000) / 7.0 END, "
        "'p' || i FROM generate_series(1, %d) AS i",
        PART_ROWS - 17);
    /* Extremes of n that make its range boundaries 4-decimal values... */
    tl_pg_exec(pg, "INSERT INTO part_src (k, n, payload) VALUES (%d, -80000, 'lo'), (%d, 80000, 'hi')",
               PART_ROWS - 16, PART_ROWS - 15);
    /* ...and one row on each boundary that 4 workers (16 ranges) use, computed
     * as the sync computes them: a row equal to a boundary must land in
     * exactly one range. */
    tl_pg_exec(
        pg,
        "INSERT INTO part_src SELECT %d + i, (lo_id::numeric + (hi_id::numeric - lo_id::numeric) * i / "
        "16)::bigint, "
        "lo_ts + (hi_ts - lo_ts) * (i::float8 / 16), lo_d + ((hi_d - lo_d) * i / 16), "
        "lo_n + (hi_n - lo_n) * i / 16, 'boundary ' || i FROM (SELECT min(id) AS lo_id, max(id) AS hi_id, "
        "min(ts) AS lo_ts, max(ts) AS hi_ts, min(d) AS lo_d, max(d) AS hi_d, min(n) AS lo_n, max(n) AS hi_n "
        "FROM part_src) AS b, generate_series(1, 15) AS i",
        PART_ROWS - 15);
    char *on = tl_pg_scalar(
        pg,
        "SELECT count(*) FROM (SELECT (lo_id::numeric + (hi_id::numeric - lo_id::numeric) * i / 16)::bigint "
        "AS "
        "b_id, lo_ts + (hi_ts - lo_ts) * (i::float8 / 16) AS b_ts, lo_d + ((hi_d - lo_d) * i / 16) AS b_d, "
        "lo_n::numeric + (hi_n::numeric - lo_n::numeric) * i / 16 AS b_n FROM (SELECT min(id) AS lo_id, "
        "max(id) AS hi_id, min(ts) AS lo_ts, max(ts) AS hi_ts, min(d) AS lo_d, max(d) AS hi_d, min(n) AS "
        "lo_n, "
        "max(n) AS hi_n FROM part_src) AS b, generate_series(1, 15) AS i) AS x WHERE EXISTS (SELECT FROM "
        "part_src WHERE id = b_id) AND EXISTS (SELECT FROM part_src WHERE ts = b_ts) AND EXISTS (SELECT FROM "
        "part_src WHERE d = b_d) AND EXISTS (SELECT FROM part_src WHERE n = b_n)");
    assert_string_equal(on, "15");
    free(on);
}

static char *duck_hash(tl_env *e, const char *table)
{
    return tl_duck_scalar(e->con, "SELECT count(*) || ':' || sum(hash(k, id, ts, d, n, payload)) FROM %s",
                          table);
}

static void test_partitioned_equals_single_stream(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "partitioned", "  sync_workers: 1\n");
    create_part_src(e.pg);
    char *want = tl_pg_checksum(e.pg, "part_src", PART_SPEC);

    /* One stream: sync_workers 1, even with a partition_column. */
    tl_env_source(&e, "one", "  query: %s\n  partition_column: id\n", PART_QUERY);
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "one", false, &r);
    assert_int_equal(r.rows, PART_ROWS);
    assert_int_equal(r.nwarnings, 0);
    char *got = tl_duck_checksum(e.con, "one_data", PART_SPEC);
    assert_string_equal(got, want);
    free(got);
    char *base_hash = duck_hash(&e, "one_data");
    assert_int_equal(tl_duck_int(e.con, "SELECT count(DISTINCT reader_pid) FROM one_data"), 1);
    /* Every read runs in one repeatable-read snapshot, which the commit
     * horizon records. */
    char *iso = tl_duck_scalar(e.con, "SELECT string_agg(DISTINCT reader_isolation, ',') FROM one_data");
    assert_string_equal(iso, "repeatable read");
    free(iso);

    tl_env_store(&e, "  sync_workers: 4\n");
    static const char *const columns[] = {"id", "ts", "d", "n"};
    for (size_t c = 0; c < sizeof columns / sizeof columns[0]; c++) {
        char name[32];
        snprintf(name, sizeof name, "by_%s", columns[c]);
        tl_env_source(&e, name, "  query: %s\n  partition_column: %s\n", PART_QUERY, columns[c]);
        for (int round = 0; round < 2; round++) {
            tl_sync_ok(e.st, &e.cfg, name, round > 0, &r);
            assert_int_equal(r.rows, PART_ROWS);
            assert_int_equal(r.tables[0].rows_loaded, PART_ROWS);
            assert_false(r.truncated);
            assert_int_equal(r.nwarnings, 0);
            char table[64];
            snprintf(table, sizeof table, "%s_data", name);
            got = tl_duck_checksum(e.con, table, PART_SPEC);
            if (strcmp(got, want) != 0)
                fail_msg("partitioned by %s: DuckDB %s, PostgreSQL %s", columns[c], got, want);
            free(got);
            char *hash = duck_hash(&e, table);
            assert_string_equal(hash, base_hash);
            free(hash);
            assert_int_equal(
                tl_duck_int(e.con, "SELECT count(*) FROM %s WHERE %s IS NULL", table, columns[c]),
                tl_pg_int(e.pg, "SELECT count(*) FROM part_src WHERE %s IS NULL", columns[c]));
            iso = tl_duck_scalar(e.con, "SELECT string_agg(DISTINCT reader_isolation, ',') FROM %s", table);
            assert_string_equal(iso, "repeatable read");
            free(iso);
            int64_t readers = tl_duck_int(e.con, "SELECT count(DISTINCT reader_pid) FROM %s", table);
            assert_true(readers >= 1 && readers <= 4);
        }
    }
    free(base_hash);
    free(want);

    /* A column with one value only, and an empty result. */
    tl_env_source(&e, "flat", "  query: SELECT k, 42::bigint AS id FROM part_src\n  partition_column: id\n");
    tl_sync_ok(e.st, &e.cfg, "flat", false, &r);
    assert_int_equal(r.rows, PART_ROWS);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(DISTINCT k) FROM flat_data"), PART_ROWS);
    tl_env_source(&e, "empty", "  query: SELECT k, id FROM part_src WHERE k < 0\n  partition_column: id\n");
    tl_sync_ok(e.st, &e.cfg, "empty", false, &r);
    assert_int_equal(r.rows, 0);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM empty_data"), 0);
    tl_env_close(&e);
}

/* ±infinity in a date or timestamp partition column: ranges are planned
 * over the finite values and the open-ended ranges take the infinities. */
static void test_partition_with_infinite_values(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "partitioned_infinity", "  sync_workers: 1\n");
    tl_pg_exec(e.pg, "CREATE TABLE inf_src (k int PRIMARY KEY, ts timestamptz, lts timestamp, d date)");
    tl_pg_exec(e.pg,
               "INSERT INTO inf_src SELECT i, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 hour', "
               "timestamp '2026-01-01' + i * interval '1 minute', date '2026-01-01' + i "
               "FROM generate_series(1, 3000) AS i");
    tl_pg_exec(e.pg, "INSERT INTO inf_src VALUES (-1, 'infinity', 'infinity', 'infinity'), "
                     "(-2, '-infinity', '-infinity', '-infinity'), (-3, NULL, NULL, NULL), "
                     "(-4, 'infinity', '-infinity', 'infinity')");
    tl_env_source(&e, "one", "  query: SELECT * FROM inf_src\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "one", false, &r);
    assert_int_equal(r.rows, 3004);
    char *want = tl_duck_scalar(e.con, "SELECT count(*) || ':' || sum(hash(k, ts, lts, d)) FROM one_data");
    assert_int_equal(tl_duck_int(e.con, "SELECT count(*) FROM one_data WHERE isinf(ts)"), 3);

    tl_env_store(&e, "  sync_workers: 4\n");
    static const char *const columns[] = {"ts", "lts", "d"};
    for (size_t c = 0; c < sizeof columns / sizeof columns[0]; c++) {
        char name[32];
        snprintf(name, sizeof name, "by_%s", columns[c]);
        tl_env_source(&e, name, "  query: SELECT * FROM inf_src\n  partition_column: %s\n", columns[c]);
        tl_sync_ok(e.st, &e.cfg, name, false, &r);
        assert_int_equal(r.rows, 3004);
        char *got =
            tl_duck_scalar(e.con, "SELECT count(*) || ':' || sum(hash(k, ts, lts, d)) FROM %s_data", name);
        assert_string_equal(got, want);
        free(got);
    }
    /* Only infinities and NULLs: no finite range at all. */
    tl_env_source(&e, "only_inf", "  query: SELECT * FROM inf_src WHERE k < 0\n  partition_column: ts\n");
    tl_sync_ok(e.st, &e.cfg, "only_inf", false, &r);
    assert_int_equal(r.rows, 4);
    free(want);
    tl_env_close(&e);
}

/* Both queries of a split source partitioned at once; the following
 * incremental sync reads one stream per query. */
static void test_partitioned_split_source(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "partitioned_split", "  sync_workers: 4\n");
    tl_llm_create(e.pg);
    tl_llm_add(e.pg, 1, 3000, 3);
    tl_env_source(&e, "monitoring", TL_LLM_SOURCE_YAML "  partition_column: id\n");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_false(r.incremental);
    assert_int_equal(r.rows, 9000);
    tl_llm_assert_synced(&e, "monitoring");
    tl_llm_add(e.pg, 3001, 3100, 3);
    tl_sync_ok(e.st, &e.cfg, "monitoring", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows_added, 300);
    tl_llm_assert_synced(&e, "monitoring");
    tl_sync_ok(e.st, &e.cfg, "monitoring", true, &r);
    assert_false(r.incremental);
    assert_int_equal(r.rows, 9300);
    tl_llm_assert_synced(&e, "monitoring");
    tl_env_close(&e);
}

/* sync_workers is per source: the queries of a split source share it
 * (4: two readers each; 3: one for the dataset, two for the results). */
static void test_split_source_shares_workers(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "partitioned_share", "  sync_workers: 4\n");
    static const char source[] =
        "  dataset_query: SELECT k AS id, md5(k::text)::uuid AS dataset_id, pg_backend_pid() AS reader_pid "
        "FROM part_src\n"
        "  results_query: SELECT k AS id, md5((k % 5000)::text)::uuid AS dataset_id, pg_backend_pid() AS "
        "reader_pid FROM part_src\n"
        "  partition_column: id\n";
    create_part_src(e.pg);
    sync_report r;
    for (int workers = 4; workers >= 3; workers--) {
        char store_yaml[64];
        snprintf(store_yaml, sizeof store_yaml, "  sync_workers: %d\n", workers);
        tl_env_store(&e, store_yaml);
        tl_env_source(&e, "shared", "%s", source);
        tl_sync_ok(e.st, &e.cfg, "shared", true, &r);
        assert_int_equal(r.tables[0].rows_loaded, PART_ROWS);
        assert_int_equal(r.tables[1].rows_loaded, PART_ROWS);
        int64_t dataset = tl_duck_int(e.con, "SELECT count(DISTINCT reader_pid) FROM shared_dataset");
        int64_t results = tl_duck_int(e.con, "SELECT count(DISTINCT reader_pid) FROM shared_results");
        if (dataset > workers / 2 || results > workers - workers / 2)
            fail_msg("sync_workers %d: %lld dataset and %lld results readers", workers, (long long)dataset,
                     (long long)results);
        assert_true(dataset >= 1 && results >= 1);
    }
    tl_env_close(&e);
}

static void assert_truncated_status(tl_env *e, const char *source, bool truncated)
{
    json_t *s = tl_sync_status(e->st, &e->cfg, source);
    assert_string_equal(tl_json_str(s, "state"), "ready");
    assert_true(json_is_boolean(json_object_get(s, "truncated")));
    assert_int_equal(json_boolean_value(json_object_get(s, "truncated")), truncated);
    char table[64];
    snprintf(table, sizeof table, "%s_data", source);
    json_t *t = json_object_get(json_object_get(s, "tables"), table);
    assert_int_equal(json_boolean_value(json_object_get(t, "truncated")), truncated);
    json_decref(s);
}

/* Syncs a capped source and checks rows, distinct keys and the flags. */
static void sync_capped(tl_env *e, const char *source, bool force_full, int64_t want_rows,
                        bool want_truncated)
{
    sync_report r;
    tl_sync_ok(e->st, &e->cfg, source, force_full, &r);
    assert_int_equal(r.rows, want_rows);
    assert_int_equal(r.truncated, want_truncated);
    assert_int_equal(r.tables[0].truncated, want_truncated);
    assert_int_equal(tl_duck_int(e->con, "SELECT count(DISTINCT k) FROM %s_data", source), want_rows);
    assert_truncated_status(e, source, want_truncated);
}

static void test_max_sync_rows(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "capped", "  max_sync_rows: 1000\n");
    tl_pg_exec(e.pg, "CREATE TABLE cap_src (k int PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT "
                     "clock_timestamp())");
    tl_pg_exec(e.pg, "INSERT INTO cap_src (k) SELECT generate_series(1, 5000)");

    /* One stream: the cap, and exactly at the cap (not truncated). */
    tl_env_source(&e, "single", "  query: SELECT k, created_at FROM cap_src\n");
    sync_capped(&e, "single", false, 1000, true);
    tl_env_source(&e, "at_cap", "  query: SELECT k, created_at FROM cap_src WHERE k <= 1000\n");
    sync_capped(&e, "at_cap", false, 1000, false);
    tl_env_source(&e, "over_cap", "  query: SELECT k, created_at FROM cap_src WHERE k <= 1001\n");
    sync_capped(&e, "over_cap", false, 1000, true);

    /* Partitioned: the workers share the budget. */
    tl_env_store(&e, "  max_sync_rows: 1000\n  sync_workers: 4\n");
    tl_env_source(&e, "parted", "  query: SELECT k, created_at FROM cap_src\n  partition_column: k\n");
    for (int round = 0; round < 3; round++)
        sync_capped(&e, "parted", true, 1000, true);
    tl_env_source(&e, "parted_at",
                  "  query: SELECT k, created_at FROM cap_src WHERE k <= 1000\n"
                  "  partition_column: k\n");
    sync_capped(&e, "parted_at", false, 1000, false);
    tl_env_source(&e, "parted_over",
                  "  query: SELECT k, created_at FROM cap_src WHERE k <= 1001\n"
                  "  partition_column: created_at\n");
    sync_capped(&e, "parted_over", false, 1000, true);

    /* Incremental after a capped full sync: the table is full, nothing is
     * appended, the watermark stays. */
    tl_env_store(&e, "  max_sync_rows: 1000\n");
    tl_env_source(&e, "inc",
                  "  query: SELECT k, created_at FROM cap_src\n  incremental_column: created_at\n");
    sync_capped(&e, "inc", false, 1000, true);
    json_t *s = tl_sync_status(e.st, &e.cfg, "inc");
    char *wm = strdup(tl_json_str(json_object_get(s, "watermarks"), "inc_data"));
    json_decref(s);
    tl_pg_exec(e.pg, "INSERT INTO cap_src (k) SELECT generate_series(5001, 5050)");
    sync_report r;
    tl_sync_ok(e.st, &e.cfg, "inc", false, &r);
    assert_true(r.incremental);
    assert_true(r.truncated);
    assert_int_equal(r.rows, 1000);
    assert_int_equal(r.rows_added, 0);
    assert_int_equal(r.tables[0].rows_loaded, 0); /* no place left, not even for the row at the watermark */
    s = tl_sync_status(e.st, &e.cfg, "inc");
    assert_string_equal(tl_json_str(json_object_get(s, "watermarks"), "inc_data"), wm);
    assert_true(json_is_true(json_object_get(s, "truncated")));
    assert_string_equal(tl_json_str(s, "sync_type"), "incremental");
    json_decref(s);
    free(wm);

    /* Incremental with room left: it fills up to the cap and no further;
     * the watermark is the newest row it kept. */
    tl_pg_exec(e.pg, "CREATE TABLE room_src (k int PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT "
                     "clock_timestamp())");
    tl_pg_exec(e.pg, "INSERT INTO room_src (k) SELECT generate_series(1, 900)");
    tl_env_source(&e, "room",
                  "  query: SELECT k, created_at FROM room_src\n  incremental_column: created_at\n");
    sync_capped(&e, "room", false, 900, false);
    tl_pg_exec(e.pg, "INSERT INTO room_src (k) SELECT generate_series(901, 1100)");
    int64_t again = tl_duck_at_max(e.con, "room_data", "created_at");
    tl_sync_ok(e.st, &e.cfg, "room", false, &r);
    assert_true(r.incremental);
    assert_true(r.truncated);
    /* 100 places were left; the stored rows at the watermark, read again,
     * may take some of them: never more than the cap. */
    assert_in_range(r.rows_added, 100 - again, 100);
    assert_int_equal(r.rows, 900 + r.rows_added);
    assert_int_equal(r.tables[0].rows_loaded, 100);
    assert_int_equal(tl_duck_int(e.con, "SELECT count(DISTINCT k) FROM room_data"), r.rows);
    char *kept_max = tl_duck_scalar(e.con, "SELECT max(created_at) FROM room_data");
    s = tl_sync_status(e.st, &e.cfg, "room");
    assert_string_equal(tl_json_str(json_object_get(s, "watermarks"), "room_data"), kept_max);
    json_decref(s);
    free(kept_max);
    tl_pg_exec(e.pg, "INSERT INTO room_src (k) SELECT generate_series(1101, 1110)");
    int64_t before = r.rows;
    tl_sync_ok(e.st, &e.cfg, "room", false, &r);
    assert_in_range(r.rows, before, 1000);
    assert_true(r.truncated);

    /* Newest rows first, as the runbook's results_query orders them: the
     * capped incremental keeps the newest, so its watermark is past rows it
     * never loaded. Raising the cap must bring them back (a rebuild), and
     * lowering it must shrink the table (a rebuild): never more than the cap. */
    tl_pg_exec(e.pg, "CREATE TABLE newest_src (k int PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT "
                     "clock_timestamp())");
    /* Distinct times: two rows of one microsecond (clock_timestamp() can
     * give them) would make "the newest 100" ambiguous at the boundary. */
    tl_pg_exec(e.pg,
               "INSERT INTO newest_src SELECT g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 "
               "millisecond' FROM generate_series(1, 900) AS g");
    tl_env_source(&e, "newest",
                  "  query: SELECT k, created_at FROM newest_src ORDER BY created_at DESC\n"
                  "  incremental_column: created_at\n");
    sync_capped(&e, "newest", false, 900, false);
    tl_pg_exec(e.pg,
               "INSERT INTO newest_src SELECT g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 "
               "millisecond' FROM generate_series(901, 1100) AS g");
    tl_sync_ok(e.st, &e.cfg, "newest", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows, 1000);
    assert_int_equal(tl_duck_int(e.con, "SELECT min(k) FROM newest_data WHERE k > 900"), 1001);

    tl_env_store(&e, "  max_sync_rows: 0\n");
    tl_sync_ok(e.st, &e.cfg, "newest", false, &r);
    assert_false(r.incremental);
    assert_false(r.truncated);
    assert_int_equal(r.rows, 1100);
    char *want = tl_pg_checksum(e.pg, "newest_src", "k,created_at:ts");
    char *got = tl_duck_checksum(e.con, "newest_data", "k,created_at:ts");
    assert_string_equal(got, want);
    free(want);
    free(got);
    tl_sync_ok(e.st, &e.cfg, "newest", false, &r);
    assert_true(r.incremental);
    assert_int_equal(r.rows_added, 0);

    tl_env_store(&e, "  max_sync_rows: 500\n");
    sync_capped(&e, "newest", false, 500, true);
    tl_pg_exec(e.pg, "INSERT INTO newest_src (k) VALUES (1101)");
    sync_capped(&e, "newest", false, 500, true);
    tl_env_close(&e);
}

/* A role or database with idle_in_transaction_session_timeout set: the
 * coordinator's transaction, idle while the workers connect and read, must
 * keep its exported snapshot alive (the session turns the timeout off, as
 * it sets statement_timeout), or the workers fail with "invalid snapshot
 * identifier". */
static void test_idle_in_transaction_timeout_of_the_role(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "partitioned_idle", "  sync_workers: 4\n");
    create_part_src(e.pg);
    char *want = tl_pg_checksum(e.pg, "part_src", PART_SPEC);
    /* As a role setting would: every session starts with a 10 ms limit. */
    snprintf(e.url, sizeof e.url,
             "%s options='-c search_path=partitioned_idle -c "
             "idle_in_transaction_session_timeout=10'",
             g_conninfo);
    tl_env_source(&e, "idle", "  query: %s\n  partition_column: id\n", PART_QUERY);
    sync_report r;
    /* Several workers for sure (the read would otherwise start with one
     * and add more only where they help). */
    setenv("DUCKSTORE_INSERT_STREAMS", "4", 1);
    for (int round = 0; round < 3; round++) {
        tl_sync_ok(e.st, &e.cfg, "idle", true, &r);
        assert_int_equal(r.rows, PART_ROWS);
        char *got = tl_duck_checksum(e.con, "idle_data", PART_SPEC);
        assert_string_equal(got, want);
        free(got);
        assert_true(tl_duck_int(e.con, "SELECT count(DISTINCT reader_pid) FROM idle_data") > 1);
    }
    unsetenv("DUCKSTORE_INSERT_STREAMS");
    free(want);
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partitioned_equals_single_stream),
        cmocka_unit_test(test_partition_with_infinite_values),
        cmocka_unit_test(test_partitioned_split_source),
        cmocka_unit_test(test_split_source_shares_workers),
        cmocka_unit_test(test_max_sync_rows),
        cmocka_unit_test(test_idle_in_transaction_timeout_of_the_role),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
