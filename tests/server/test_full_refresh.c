/* full_refresh_interval_minutes under the server's scheduler: periodic
 * syncs are incremental, and once the interval has passed since the last
 * full sync the next one is a full rebuild, so rows deleted in PostgreSQL
 * leave the cache; status says when the next full refresh is due. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"
#include "tl_http.h"

static void test_deletes_vanish_after_full_refresh(void **state)
{
    (void)state;
    const char *conninfo = tl_pg_fresh_db("fullrefresh");
    PGconn *pg = tl_pg_connect(conninfo);
    tl_pg_exec(
        pg,
        "CREATE TABLE events (id serial PRIMARY KEY, v text, created_at timestamptz NOT NULL DEFAULT now());"
        "INSERT INTO events (v) SELECT 'e' || g FROM generate_series(1, 50) g");
    char *dir = tl_mkdtemp();
    char path[600], log[600];
    snprintf(path, sizeof path, "%s/duckdb.yaml", dir);
    tl_write_filef(path, "duckdb:\n  path: %s/store.duckdb\n  sync_mode: startup\n", dir);
    snprintf(path, sizeof path, "%s/ev_db.yaml", dir);
    /* Periodic syncs every 0.6 s; a full rebuild once 4 s have passed. */
    tl_write_filef(path,
                   "ev_db:\n  url: \"%s\"\n  query: SELECT id, v, created_at FROM events\n"
                   "  incremental_column: created_at\n  refresh_interval_minutes: 0.01\n"
                   "  full_refresh_interval_minutes: 0.0667\n",
                   conninfo);
    snprintf(log, sizeof log, "%s/serve.log", dir);
    tl_server srv;
    tl_server_start(&srv, dir, log, NULL);
    json_t *ds = tl_server_wait_state(&srv, "ev_data", "ready", 30);
    assert_string_equal(tl_json_str(ds, "sync_type"), "full");
    assert_int_equal(json_integer_value(json_object_get(ds, "rows")), 50);
    const char *last_full = tl_json_str(ds, "last_full");
    assert_non_null(last_full);
    char first_full[40];
    snprintf(first_full, sizeof first_full, "%s", last_full);
    assert_non_null(tl_json_str(ds, "next_full_refresh"));
    assert_true(strcmp(tl_json_str(ds, "next_full_refresh"), first_full) > 0);
    json_decref(ds);

    /* Deletes are invisible to incremental syncs ... An incremental sync
     * must come between the delete and the next full refresh; when the
     * scheduler runs the full one first (a slow machine), that refresh is
     * checked and the round repeats. */
    char full_before[40];
    snprintf(full_before, sizeof full_before, "%s", first_full);
    int64_t pg_rows = 50;
    bool saw_incremental = false;
    for (int round = 0; round < 5 && !saw_incremental; round++) {
        tl_pg_exec(pg, "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT 5);"
                       "INSERT INTO events (v) VALUES ('new')");
        /* Since the last full sync the cache held PostgreSQL's rows; an
         * incremental one adds the new row and keeps the deleted ones. */
        int64_t pg_before = pg_rows, expect_rows = pg_before + 1;
        pg_rows = pg_before - 4;
        double deadline = tl_now_ms() + 60000;
        for (bool round_over = false; !round_over;) {
            ds = tl_server_dataset(&srv, "ev_data");
            const char *type = tl_json_str(ds, "sync_type"), *full = tl_json_str(ds, "last_full");
            int64_t rows = json_integer_value(json_object_get(ds, "rows"));
            bool ready = strcmp(tl_json_str(ds, "state"), "ready") == 0;
            if (ready && full && strcmp(full, full_before) != 0) {
                /* A full refresh: PostgreSQL's rows before the delete (it
                 * read them first) or after it (then the round is lost). */
                if (rows != pg_before && rows != pg_rows)
                    fail_msg("a full refresh holds %lld rows; PostgreSQL had %lld, then %lld",
                             (long long)rows, (long long)pg_before, (long long)pg_rows);
                snprintf(full_before, sizeof full_before, "%s", full);
                round_over = rows == pg_rows;
            } else if (ready && type && strcmp(type, "incremental") == 0 && rows == expect_rows) {
                saw_incremental = round_over = true;
            }
            json_decref(ds);
            if (!round_over && tl_now_ms() > deadline)
                fail_msg("no sync showed the row added in PostgreSQL in 60 s");
            if (!round_over)
                tl_sleep_ms(50);
        }
    }
    if (!saw_incremental)
        fail_msg("in 5 rounds no incremental sync came between a delete and the next full refresh");

    /* ... until the periodic full refresh rebuilds the table. */
    double deadline = tl_now_ms() + 60000;
    int64_t rows = -1;
    for (;;) {
        ds = tl_server_dataset(&srv, "ev_data");
        const char *full = tl_json_str(ds, "last_full");
        rows = json_integer_value(json_object_get(ds, "rows"));
        bool rebuilt =
            full && strcmp(full, full_before) != 0 && strcmp(tl_json_str(ds, "state"), "ready") == 0;
        json_decref(ds);
        if (rebuilt)
            break;
        if (tl_now_ms() > deadline)
            fail_msg("no full refresh in 60 s (the interval is 4 s)");
        tl_sleep_ms(100);
    }
    assert_int_equal(rows, pg_rows);
    assert_int_equal(pg_rows, tl_pg_int(pg, "SELECT count(*) FROM events"));
    assert_int_equal(tl_server_stop(&srv, 10, NULL), 0);
    tl_assert_clean_log(log);
    PQfinish(pg);
    tl_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deletes_vanish_after_full_refresh),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tl_server_kill_all();
    return rc;
}
