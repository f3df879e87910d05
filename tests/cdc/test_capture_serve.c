/* Logical capture inside `duckstore serve`: a change committed in
 * PostgreSQL becomes visible through the query API while the server keeps
 * streaming; status and /metrics show the slot's position and lag; and
 * SIGKILL at 20 moments while changes are applied loses and duplicates
 * nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "tl_http.h"

static const char *g_conninfo;

#define QUERY "SELECT id, status, note, amount FROM orders"
#define SPEC "id,status,note,amount"

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("cdcserve"));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tl_server_kill_all();
    free((char *)g_conninfo);
    return 0;
}

/* Waits until the query API counts `want` rows matching where. */
static double wait_count(const tl_server *srv, const char *where, long long want, double timeout_s)
{
    double t0 = tl_now_ms();
    long long got = -1;
    while ((tl_now_ms() - t0) / 1000 < timeout_s) {
        got = tl_server_count(srv, "cdc_live_data", where);
        if (got == want)
            return (tl_now_ms() - t0) / 1000;
        tl_sleep_ms(20);
    }
    fail_msg("%s: %lld rows after %.0f s, expected %lld", where, got, timeout_s, want);
    return -1;
}

/* The metadata document's row_count (a number, or a string for a BIGINT). */
static json_int_t row_count(const json_t *meta)
{
    const json_t *v = json_object_get(json_object_get(meta, "metadata"), "row_count");
    if (json_is_string(v))
        return atoll(json_string_value(v));
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void write_burst(PGconn *pg, int *next_id, int xacts)
{
    for (int x = 0; x < xacts; x++) {
        int base = *next_id;
        tl_pg_exec(pg,
                   "BEGIN; INSERT INTO orders SELECT g, 'new', 'n' || g, g FROM generate_series(%d, %d) g; "
                   "UPDATE orders SET status = 'paid', amount = amount + 1 WHERE id %% 7 = %d AND id < %d; "
                   "DELETE FROM orders WHERE id %% 11 = %d AND id < %d; COMMIT",
                   base, base + 199, x % 7, base, x % 11, base);
        *next_id += 200;
    }
}

static void changes_stream_into_a_running_server_and_survive_kills(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_conninfo, "live", "");
    tl_pg_exec(e.pg,
               "CREATE TABLE orders (id integer PRIMARY KEY, status text, note text, amount numeric(12,2))");
    tl_pg_exec(e.pg, "INSERT INTO orders SELECT g, 'new', 'n' || g, g FROM generate_series(1, 1000) g");
    tl_env_source(&e, "cdc_live", "  capture: logical\n  query: %s\n", QUERY);
    /* The server holds the file: the test's own store is closed first. */
    duckdb_disconnect(&e.con);
    store_close(e.st);
    e.st = NULL;

    char log_path[700];
    snprintf(log_path, sizeof log_path, "%s/serve.log", e.dir);
    tl_server srv;
    tl_server_start(&srv, e.dir, log_path, NULL);
    json_decref(tl_server_wait_state(&srv, "cdc_live_data", "ready", 60));
    wait_count(&srv, "true", 1000, 60);

    /* A committed change becomes visible while the server streams. */
    tl_pg_exec(e.pg, "INSERT INTO orders VALUES (424242, 'new', 'live', 1)");
    double seen_s = wait_count(&srv, "id = 424242", 1, 30);
    tl_pg_exec(e.pg, "UPDATE orders SET status = 'gone' WHERE id = 424242");
    wait_count(&srv, "id = 424242 AND status = 'gone'", 1, 30);
    tl_pg_exec(e.pg, "DELETE FROM orders WHERE id = 424242");
    wait_count(&srv, "id = 424242", 0, 30);
    print_message("change visible after %.3f s\n", seen_s);

    /* AXIS's metadata follows the stream, not only the initial load: a
     * document may be served again for a later batch while it is young
     * (ten times what it cost), then the next one counts the new row. */
    json_t *meta = tl_http_json(srv.port, "GET", "/api/store/metadata/cdc_live_data", NULL, 200, NULL);
    json_int_t before = row_count(meta);
    json_decref(meta);
    tl_pg_exec(e.pg, "INSERT INTO orders VALUES (525252, 'new', 'meta', 1)");
    wait_count(&srv, "id = 525252", 1, 30);
    json_int_t after = before;
    for (double t0 = tl_now_ms(); after == before && tl_now_ms() - t0 < 30000; tl_sleep_ms(20)) {
        meta = tl_http_json(srv.port, "GET", "/api/store/metadata/cdc_live_data", NULL, 200, NULL);
        after = row_count(meta);
        json_decref(meta);
    }
    assert_int_equal(after, before + 1);

    json_t *doc = tl_server_dataset(&srv, "cdc_live_data");
    assert_string_equal(tl_json_str(doc, "state"), "ready");
    assert_string_equal(tl_json_str(doc, "capture"), "logical");
    assert_string_equal(tl_json_str(doc, "slot"), "duckstore_cdc_live");
    assert_non_null(tl_json_str(doc, "confirmed_lsn"));
    assert_true(json_is_integer(json_object_get(doc, "lag_bytes")));
    json_decref(doc);
    /* The counters move just after the commit readers see. */
    char *metrics = NULL;
    for (double t0 = tl_now_ms(); tl_now_ms() - t0 < 10000; tl_sleep_ms(20)) {
        free(metrics);
        metrics = tl_server_metrics(&srv);
        if (tl_metric(metrics, "duckstore_capture_changes_total{source=\"cdc_live\"}") >= 4)
            break;
    }
    assert_int_equal(tl_metric(metrics, "duckstore_capture_changes_total{source=\"cdc_live\"}"), 4);
    assert_true(tl_metric(metrics, "duckstore_capture_lag_bytes{source=\"cdc_live\"}") >= 0);
    assert_true(tl_metric(metrics, "duckstore_capture_confirmed_lsn{source=\"cdc_live\"}") > 0);
    free(metrics);

    /* Idle: WAL of tables it does not read does not stay held for it. */
    tl_pg_exec(e.pg, "CREATE TABLE other (x int)");
    tl_pg_exec(e.pg, "INSERT INTO other SELECT generate_series(1, 10000)");
    char *written = tl_pg_scalar(e.pg, "SELECT pg_current_wal_insert_lsn()::text");
    bool advanced = false;
    for (double t0 = tl_now_ms(); !advanced && tl_now_ms() - t0 < 60000; tl_sleep_ms(100)) {
        char *ok = tl_pg_scalar(e.pg,
                                "SELECT confirmed_flush_lsn >= '%s'::pg_lsn FROM pg_replication_slots WHERE "
                                "slot_name = 'duckstore_cdc_live'",
                                written);
        advanced = ok != NULL && strcmp(ok, "t") == 0;
        free(ok);
    }
    free(written);
    assert_true(advanced);

    /* A sync asked for without full has nothing to start: the answer says
     * so, as a success (it was 409 "already syncing"). */
    json_t *answer = tl_http_json(srv.port, "POST", "/api/store/sync/cdc_live", NULL, 200, NULL);
    assert_true(json_is_true(json_object_get(answer, "success")));
    tl_assert_contains(tl_json_str(answer, "message"), "cdc_live streams its changes as they commit");
    json_decref(answer);
    /* So does `duckstore sync` through the server (it used to wait for the
     * stream to end, that is forever). */
    char *out = NULL;
    int rc =
        tl_run(&out, "timeout 60 '%s' --config-dir '%s' sync cdc_live 2>&1", getenv("DUCKSTORE_BIN"), e.dir);
    assert_int_equal(rc, 0);
    tl_assert_contains(out, "cdc_live streams its changes as they commit");
    free(out);
    answer = tl_http_json(srv.port, "POST", "/api/store/sync", NULL, 202, NULL);
    assert_string_equal(json_string_value(json_array_get(json_object_get(answer, "already_syncing"), 0)),
                        "cdc_live");
    json_decref(answer);

    /* ?full=true reloads a streaming source from a new slot. */
    json_decref(tl_http_json(srv.port, "POST", "/api/store/sync/cdc_live?full=true", NULL, 202, NULL));
    tl_pg_exec(e.pg, "INSERT INTO orders VALUES (434343, 'after reload', 'x', 1)");
    wait_count(&srv, "id = 434343", 1, 60);
    char *log = tl_read_file(log_path);
    tl_assert_contains(log, "a full load was asked for");
    free(log);

    /* The table dropped and created again (a migration): the stream notices
     * within seconds and loads the new table (before, the cache kept the
     * old rows and the new table's changes never arrived). */
    tl_pg_exec(e.pg,
               "DROP TABLE orders; CREATE TABLE orders (id integer PRIMARY KEY, status text, note text, "
               "amount numeric(12,2)); INSERT INTO orders VALUES (1, 'new', 'again', 1), (2, 'new', "
               "'again', 2), (3, 'new', 'again', 3)");
    wait_count(&srv, "true", 3, 60);
    tl_pg_exec(e.pg, "INSERT INTO orders VALUES (4, 'new', 'after', 4)");
    wait_count(&srv, "note = 'again' OR id = 4", 4, 60);
    log = tl_read_file(log_path);
    tl_assert_contains(log, "was dropped (or dropped and created again)");
    free(log);

    /* SIGKILL at 20 moments while a backlog is applied. */
    int next_id = 2000;
    unsigned seed = 7;
    for (int round = 0; round < 20; round++) {
        tl_server_kill(&srv);
        write_burst(e.pg, &next_id, 30);
        tl_server_start(&srv, e.dir, log_path, NULL);
        seed = seed * 1103515245u + 12345u;
        tl_sleep_ms(20 + (int)((seed >> 8) % 400));
    }
    /* The last server catches up: a row written last is there. */
    tl_pg_exec(e.pg, "INSERT INTO orders VALUES (999999, 'last', 'sentinel', 0)");
    wait_count(&srv, "id = 999999", 1, 120);
    /* The status counts the rows the stream leaves (at most a second late). */
    int64_t want_rows = tl_pg_int(e.pg, "SELECT count(*) FROM orders");
    json_int_t rows = -1;
    for (double t0 = tl_now_ms(); rows != want_rows && tl_now_ms() - t0 < 20000; tl_sleep_ms(100)) {
        tl_pg_exec(e.pg, "UPDATE orders SET note = note WHERE id = 999999"); /* a batch to count after */
        json_t *d = tl_server_dataset(&srv, "cdc_live_data");
        rows = json_integer_value(json_object_get(d, "rows"));
        json_decref(d);
    }
    assert_int_equal(rows, want_rows);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(log_path);

    e.st = NULL;
    ds_error err;
    assert_true(store_open(e.store_path, &e.st, &err));
    e.con = tl_store_connect(e.st);
    char *want = tl_pg_checksum(e.pg, "orders", SPEC);
    char *got = tl_duck_checksum(e.con, "cdc_live_data", SPEC);
    assert_string_equal(got, want);
    free(want);
    free(got);
    tl_pg_exec(e.pg, "SELECT pg_drop_replication_slot('duckstore_cdc_live')");
    tl_env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(changes_stream_into_a_running_server_and_survive_kills),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
