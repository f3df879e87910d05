/* Logical capture when PostgreSQL fails it, on a server of the test's own
 * (wal_level=logical, a small max_slot_wal_keep_size): a slot PostgreSQL
 * invalidated makes the next run load again, with a log line saying why,
 * never a silent gap; and a server restarted under a streaming `duckstore
 * serve` is reconnected to without losing a change. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/capture.h"
#include "testlib.h"
#include "tl_fault.h"

#define QUERY "SELECT id, status, amount FROM orders"
#define SPEC "id,status,amount"

static tl_pg_instance g_pg;

static int group_setup(void **state)
{
    (void)state;
    tl_pg_instance_init(&g_pg);
    tl_pg_instance_stop(&g_pg, "fast");
    size_t len = strlen(g_pg.options);
    snprintf(g_pg.options + len, sizeof g_pg.options - len,
             " -c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10"
             " -c max_slot_wal_keep_size=1MB -c min_wal_size=32MB -c max_wal_size=32MB");
    tl_pg_instance_start(&g_pg);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tl_server_kill_all();
    tl_pg_instance_destroy(&g_pg);
    return 0;
}

static void assert_same(tl_env *e)
{
    char *want = tl_pg_checksum(e->pg, "orders", SPEC);
    char *got = tl_duck_checksum(e->con, "cdc_fault_data", SPEC);
    assert_string_equal(got, want);
    free(want);
    free(got);
}

static void capture_ok(tl_env *e, sync_report *report)
{
    capture_options opt = {0};
    ds_error err = {0};
    if (!capture_run(e->st, &e->cfg, tl_source(&e->cfg, "cdc_fault"), &opt, report, &err))
        fail_msg("capture_run: %s", err.msg);
}

static long long visible(const tl_server *srv, int id)
{
    char where[64];
    snprintf(where, sizeof where, "id = %d", id);
    return tl_server_count(srv, "cdc_fault_data", where);
}

static void an_invalidated_slot_loads_again_and_a_restart_loses_nothing(void **state)
{
    (void)state;
    tl_env e;
    tl_env_open(&e, g_pg.conninfo, "faults", "");
    tl_pg_exec(e.pg, "CREATE TABLE orders (id integer PRIMARY KEY, status text, amount numeric(10,2))");
    tl_pg_exec(e.pg, "INSERT INTO orders SELECT g, 'new', g FROM generate_series(1, 500) g");
    tl_env_source(&e, "cdc_fault", "  capture: logical\n  query: %s\n", QUERY);
    sync_report r;
    capture_ok(&e, &r);
    assert_int_equal(r.ntables, 1);
    assert_same(&e);

    /* A change, then more WAL than max_slot_wal_keep_size allows the slot
     * to hold: PostgreSQL invalidates it at a checkpoint. */
    tl_pg_exec(e.pg, "UPDATE orders SET status = 'paid' WHERE id <= 10");
    tl_pg_exec(e.pg, "CREATE TABLE junk (g int, pad text)");
    char *status = NULL;
    for (int round = 0; round < 40; round++) {
        tl_pg_exec(e.pg, "INSERT INTO junk SELECT g, repeat('x', 500) FROM generate_series(1, 20000) g");
        tl_pg_exec(e.pg, "SELECT pg_switch_wal()");
        tl_pg_exec(e.pg, "CHECKPOINT");
        free(status);
        status =
            tl_pg_scalar(e.pg, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = "
                               "'duckstore_cdc_fault'");
        if (status != NULL && strcmp(status, "lost") == 0)
            break;
    }
    assert_non_null(status);
    assert_string_equal(status, "lost");
    free(status);
    capture_ok(&e, &r);
    assert_int_equal(r.ntables, 1); /* loaded again */
    assert_same(&e);
    assert_string_equal(tl_keep(tl_pg_scalar(e.pg, "SELECT wal_status FROM pg_replication_slots WHERE "
                                                   "slot_name = 'duckstore_cdc_fault'")),
                        "reserved");

    /* PostgreSQL restarted under a streaming server. */
    duckdb_disconnect(&e.con);
    store_close(e.st);
    e.st = NULL;
    char log_path[700];
    snprintf(log_path, sizeof log_path, "%s/serve.log", e.dir);
    tl_server srv;
    tl_server_start(&srv, e.dir, log_path, NULL);
    tl_pg_exec(e.pg, "INSERT INTO orders VALUES (9001, 'before', 1)");
    double t0 = tl_now_ms();
    while (visible(&srv, 9001) != 1 && tl_now_ms() - t0 < 60000)
        tl_sleep_ms(50);
    assert_int_equal(visible(&srv, 9001), 1);
    PQfinish(e.pg);
    tl_pg_instance_stop(&g_pg, "fast");
    tl_pg_instance_start(&g_pg);
    e.pg = tl_pg_connect(e.url);
    tl_pg_exec(e.pg, "INSERT INTO orders VALUES (9002, 'after', 2)");
    t0 = tl_now_ms();
    while (visible(&srv, 9002) != 1 && tl_now_ms() - t0 < 90000)
        tl_sleep_ms(100);
    assert_int_equal(visible(&srv, 9002), 1);
    assert_int_equal(tl_server_stop(&srv, 30, NULL), 0);
    tl_assert_clean_log(log_path);
    ds_error err;
    assert_true(store_open(e.store_path, &e.st, &err));
    e.con = tl_store_connect(e.st);
    assert_same(&e);
    tl_env_close(&e);
    tl_free_kept();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_invalidated_slot_loads_again_and_a_restart_loses_nothing),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
