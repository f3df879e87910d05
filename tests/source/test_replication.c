/* The replication connection (source/replication.h) against the harness
 * PostgreSQL: a slot's exported snapshot seen by another connection with
 * exactly the rows before the slot, the stream of a committed insert
 * (Begin, Relation, Insert, Commit) and nothing of a rolled-back one,
 * standby status updates moving the slot's confirmed_flush_lsn, keepalives,
 * refusals (no REPLICATION attribute, a wrong password, bad names) whose
 * messages never hold the password. Every slot is dropped at the end. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "source/pgoutput.h"
#include "source/replication.h"

/* A publication name that needs both kinds of quoting. */
#define PUBLICATION "we\"ird'pub"

static char *g_conninfo;
static PGconn *g_pg;

static const char *slot_name(const char *what)
{
    static char name[64];
    snprintf(name, sizeof name, "ds_repl_%s_%d", what, (int)getpid());
    return name;
}

static void repl_connect_ok(repl_conn *c)
{
    ds_error err = {0};
    if (!repl_connect(g_conninfo, 60, c, &err))
        fail_msg("repl_connect: %s", err.msg);
    assert_non_null(c->pg);
    assert_false(c->streaming);
}

/* The next pgoutput message of the stream, within 30 s; keepalives are
 * skipped. The message's values point into c's buffer until the next
 * call. */
static void next_message(repl_conn *c, pgo_parser *p, pgo_message *m)
{
    double deadline = ds_monotonic_s() + 30;
    while (ds_monotonic_s() < deadline) {
        const char *payload;
        size_t len;
        uint64_t at;
        bool reply;
        ds_error err = {0};
        repl_event ev = repl_next(c, 1.0, &payload, &len, &at, &reply, &err);
        if (ev == REPL_TIMEOUT || ev == REPL_KEEPALIVE)
            continue;
        if (ev != REPL_DATA)
            fail_msg("repl_next: event %d: %s", (int)ev, err.msg);
        /* PostgreSQL sends Relation and Type messages without a position. */
        assert_true(at > 0 || payload[0] == PGO_RELATION || payload[0] == PGO_TYPE);
        if (!pgo_parse(p, payload, len, m, &err))
            fail_msg("pgo_parse: %s", err.msg);
        return;
    }
    fail_msg("no message from the replication stream within 30 s");
}

static int32_t int4_of(const pgo_value *v)
{
    assert_int_equal(v->kind, 'b');
    assert_int_equal(v->len, 4);
    const unsigned char *d = (const unsigned char *)v->data;
    return (int32_t)((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3]);
}

/* Reads one whole transaction (Begin ... Commit) and returns the ids its
 * inserts carry, in order, as "3,4"; *end_lsn is its Commit's end. */
static void read_transaction(repl_conn *c, pgo_parser *p, char *ids, size_t cap, uint64_t *end_lsn)
{
    pgo_message m;
    next_message(c, p, &m);
    assert_int_equal(m.kind, PGO_BEGIN);
    uint64_t final_lsn = m.final_lsn;
    assert_true(m.xid > 0);
    pgo_message_clear(&m);
    ids[0] = '\0';
    for (;;) {
        next_message(c, p, &m);
        if (m.kind == PGO_COMMIT) {
            assert_int_equal(m.commit_lsn, final_lsn);
            *end_lsn = m.end_lsn;
            pgo_message_clear(&m);
            return;
        }
        if (m.kind == PGO_RELATION) {
            assert_string_equal(m.rel.relname, "t");
            assert_int_equal(m.rel.ncols, 2);
        } else {
            assert_int_equal(m.kind, PGO_INSERT);
            size_t n = strlen(ids);
            snprintf(ids + n, cap - n, "%s%d", n ? "," : "", int4_of(&m.new_tuple.values[0]));
        }
        pgo_message_clear(&m);
    }
}

/* Waits until no walsender streams from the slot (the server sees a
 * closed or terminated connection soon, not at once). */
static void wait_slot_inactive(const char *slot, const char *after)
{
    double deadline = ds_monotonic_s() + 30;
    while (tl_pg_int(g_pg, "SELECT active::int FROM pg_replication_slots WHERE slot_name = '%s'", slot) !=
           0) {
        if (ds_monotonic_s() > deadline)
            fail_msg("the slot stayed active 30 s after %s", after);
        usleep(20000);
    }
}

static void drop_slot(const char *slot)
{
    tl_pg_exec(g_pg,
               "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '%s'",
               slot);
}

/* The exported snapshot shows exactly the rows committed before the
 * slot; the stream starts after them and brings the later row, then what
 * follows; a rolled-back transaction sends nothing; feedback moves the
 * slot; a keepalive answers a reply request. */
static void test_slot_snapshot_stream_feedback(void **state)
{
    (void)state;
    const char *slot = slot_name("main");
    tl_pg_exec(g_pg, "CREATE TABLE t (id int4 PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b');"
                     "CREATE PUBLICATION \"we\"\"ird'pub\" FOR TABLE t");
    repl_conn c;
    repl_connect_ok(&c);
    uint64_t consistent = 0;
    char *snapshot = NULL;
    ds_error err = {0};
    if (!repl_create_slot(&c, slot, &consistent, &snapshot, &err))
        fail_msg("repl_create_slot: %s", err.msg);
    assert_true(consistent > 0);
    assert_non_null(snapshot);
    char lsn_text[24];
    pgo_lsn_format(consistent, lsn_text);
    char *slot_lsn = tl_pg_scalar(
        g_pg, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '%s'", slot);
    assert_string_equal(slot_lsn, lsn_text);
    free(slot_lsn);

    /* Committed after the slot: not in the snapshot, in the stream. */
    tl_pg_exec(g_pg, "INSERT INTO t VALUES (3, 'c')");
    PGconn *reader = tl_pg_connect(g_conninfo);
    tl_pg_exec(reader, "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '%s'", snapshot);
    char *seen = tl_pg_scalar(reader, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t");
    assert_string_equal(seen, "1,2");
    free(seen);
    tl_pg_exec(reader, "COMMIT");
    seen = tl_pg_scalar(reader, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t");
    assert_string_equal(seen, "1,2,3");
    free(seen);
    PQfinish(reader);
    free(snapshot);

    if (!repl_start(&c, slot, PUBLICATION, consistent, 1, &err))
        fail_msg("repl_start: %s", err.msg);
    assert_true(c.streaming);
    pgo_parser p = {0};
    char ids[64];
    uint64_t end_lsn = 0;
    read_transaction(&c, &p, ids, sizeof ids, &end_lsn);
    assert_string_equal(ids, "3");
    assert_true(end_lsn > consistent);
    assert_true(c.server_wal_end >= end_lsn);

    /* A rolled-back transaction sends nothing: the next one is the insert
     * committed after it. */
    tl_pg_exec(g_pg, "BEGIN; INSERT INTO t VALUES (100, 'never'); ROLLBACK");
    tl_pg_exec(g_pg, "INSERT INTO t VALUES (4, 'd'), (5, 'e')");
    uint64_t end2 = 0;
    read_transaction(&c, &p, ids, sizeof ids, &end2);
    assert_string_equal(ids, "4,5");
    assert_true(end2 > end_lsn);

    /* Nothing else is pending. */
    const char *payload;
    size_t len;
    uint64_t at;
    bool reply;
    repl_event ev;
    while ((ev = repl_next(&c, 0.3, &payload, &len, &at, &reply, &err)) == REPL_KEEPALIVE)
        ;
    assert_int_equal(ev, REPL_TIMEOUT);

    /* Feedback moves confirmed_flush_lsn to what was confirmed. */
    if (!repl_send_feedback(&c, end_lsn, false, &err))
        fail_msg("repl_send_feedback: %s", err.msg);
    char end_text[24];
    pgo_lsn_format(end_lsn, end_text);
    double deadline = ds_monotonic_s() + 30;
    while (
        tl_pg_int(g_pg,
                  "SELECT (confirmed_flush_lsn = '%s')::int FROM pg_replication_slots WHERE slot_name = '%s'",
                  end_text, slot) != 1) {
        if (ds_monotonic_s() > deadline)
            fail_msg("confirmed_flush_lsn did not reach %s within 30 s", end_text);
        usleep(20000);
    }

    /* A status update that asks for a reply gets a keepalive with the
     * server's WAL end. */
    if (!repl_send_feedback(&c, end2, true, &err))
        fail_msg("repl_send_feedback: %s", err.msg);
    deadline = ds_monotonic_s() + 30;
    for (;;) {
        ev = repl_next(&c, 1.0, &payload, &len, &at, &reply, &err);
        if (ev == REPL_KEEPALIVE)
            break;
        assert_int_equal(ev, REPL_TIMEOUT);
        if (ds_monotonic_s() > deadline)
            fail_msg("no keepalive within 30 s of a reply request");
    }
    assert_true(at >= end2);
    assert_true(c.server_wal_end >= at);
    pgo_lsn_format(end2, end_text);
    deadline = ds_monotonic_s() + 30;
    while (
        tl_pg_int(g_pg,
                  "SELECT (confirmed_flush_lsn = '%s')::int FROM pg_replication_slots WHERE slot_name = '%s'",
                  end_text, slot) != 1) {
        if (ds_monotonic_s() > deadline)
            fail_msg("confirmed_flush_lsn did not reach %s within 30 s", end_text);
        usleep(20000);
    }

    /* Stopped, the connection runs commands again: the slot is dropped
     * through it. */
    if (!repl_stop(&c, &err))
        fail_msg("repl_stop: %s", err.msg);
    assert_false(c.streaming);
    assert_int_equal(repl_next(&c, 0.1, &payload, &len, &at, &reply, &err), REPL_ERROR);
    if (!repl_drop_slot(&c, slot, &err))
        fail_msg("repl_drop_slot: %s", err.msg);
    assert_int_equal(
        tl_pg_int(g_pg, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'", slot), 0);
    repl_disconnect(&c);
    assert_null(c.pg);
}

/* A restart from the confirmed position does not send the confirmed
 * transaction again; protocol 2 streams the same changes. */
static void test_restart_from_confirmed(void **state)
{
    (void)state;
    const char *slot = slot_name("restart");
    tl_pg_exec(g_pg, "CREATE TABLE IF NOT EXISTS t (id int4 PRIMARY KEY, v text); TRUNCATE t");
    repl_conn c;
    repl_connect_ok(&c);
    uint64_t consistent;
    char *snapshot;
    ds_error err = {0};
    if (!repl_create_slot(&c, slot, &consistent, &snapshot, &err))
        fail_msg("repl_create_slot: %s", err.msg);
    free(snapshot);
    /* The same slot again: PostgreSQL's refusal, with its SQLSTATE. */
    assert_false(repl_create_slot(&c, slot, &consistent, &snapshot, &err));
    assert_null(snapshot);
    tl_assert_contains(err.msg, "already exists (SQLSTATE 42710)");
    tl_pg_exec(g_pg, "INSERT INTO t VALUES (10, 'x')");
    tl_pg_exec(g_pg, "INSERT INTO t VALUES (11, 'y')");
    if (!repl_start(&c, slot, PUBLICATION, consistent, 2, &err))
        fail_msg("repl_start: %s", err.msg);
    pgo_parser p = {0};
    char ids[64];
    uint64_t end_lsn;
    read_transaction(&c, &p, ids, sizeof ids, &end_lsn);
    assert_string_equal(ids, "10");
    if (!repl_send_feedback(&c, end_lsn, false, &err) || !repl_stop(&c, &err))
        fail_msg("%s", err.msg);
    repl_disconnect(&c);

    repl_connect_ok(&c);
    if (!repl_start(&c, slot, PUBLICATION, 0, 2, &err))
        fail_msg("repl_start: %s", err.msg);
    memset(&p, 0, sizeof p);
    read_transaction(&c, &p, ids, sizeof ids, &end_lsn);
    assert_string_equal(ids, "11");

    /* A zero wait returns what has arrived, without waiting. */
    tl_pg_exec(g_pg, "INSERT INTO t VALUES (12, 'z')");
    const char *payload;
    size_t len;
    uint64_t at;
    bool reply;
    repl_event ev;
    double deadline = ds_monotonic_s() + 30;
    while ((ev = repl_next(&c, 0, &payload, &len, &at, &reply, &err)) != REPL_DATA) {
        if (ev != REPL_TIMEOUT && ev != REPL_KEEPALIVE)
            fail_msg("repl_next: event %d: %s", (int)ev, err.msg);
        if (ds_monotonic_s() > deadline)
            fail_msg("a zero wait never returned the committed insert");
        usleep(10000);
    }
    assert_int_equal(payload[0], PGO_BEGIN);
    repl_disconnect(&c); /* without repl_stop: the server ends the walsender */
    wait_slot_inactive(slot, "its connection closed");
    drop_slot(slot);
}

/* Names are checked before anything is sent; a publication that does not
 * exist is PostgreSQL's error once the stream runs. */
static void test_names_and_server_errors(void **state)
{
    (void)state;
    repl_conn c;
    repl_connect_ok(&c);
    uint64_t lsn;
    char *snapshot;
    ds_error err = {0};
    const char *bad[] = {"",        "Upper",
                         "dash-ed", "quote\"d",
                         "sp ace",  "a234567890123456789012345678901234567890123456789012345678901234"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(repl_create_slot(&c, bad[i], &lsn, &snapshot, &err));
        assert_int_equal(err.code, DS_ERR_CONFIG);
        tl_assert_contains(err.msg, "invalid replication slot name");
        assert_false(repl_start(&c, bad[i], PUBLICATION, 0, 1, &err));
        assert_int_equal(err.code, DS_ERR_CONFIG);
    }
    assert_false(repl_start(&c, slot_name("none"), PUBLICATION, 0, 3, &err));
    tl_assert_contains(err.msg, "protocol version 3");
    /* A slot that does not exist: PostgreSQL's message and SQLSTATE. */
    assert_false(repl_start(&c, slot_name("none"), PUBLICATION, 0, 1, &err));
    tl_assert_contains(err.msg, "does not exist (SQLSTATE 42704)");

    const char *slot = slot_name("nopub");
    if (!repl_create_slot(&c, slot, &lsn, &snapshot, &err))
        fail_msg("repl_create_slot: %s", err.msg);
    free(snapshot);
    if (!repl_start(&c, slot, "no_such_pub", lsn, 1, &err))
        fail_msg("repl_start: %s", err.msg);
    tl_pg_exec(g_pg,
               "CREATE TABLE IF NOT EXISTS t (id int4 PRIMARY KEY, v text); INSERT INTO t VALUES (500, 'z')");
    const char *payload;
    size_t len;
    uint64_t at;
    bool reply;
    repl_event ev;
    double deadline = ds_monotonic_s() + 30;
    do
        ev = repl_next(&c, 1.0, &payload, &len, &at, &reply, &err);
    while ((ev == REPL_TIMEOUT || ev == REPL_KEEPALIVE || ev == REPL_DATA) && ds_monotonic_s() < deadline);
    assert_int_equal(ev, REPL_END);
    tl_assert_contains(err.msg, "publication \"no_such_pub\" does not exist");
    assert_false(c.streaming);
    repl_disconnect(&c);
    drop_slot(slot);
}

/* A walsender ended by the server (pg_terminate_backend) ends the stream
 * with PostgreSQL's message, not a hang. */
static void test_terminated_walsender(void **state)
{
    (void)state;
    const char *slot = slot_name("term");
    repl_conn c;
    repl_connect_ok(&c);
    uint64_t lsn;
    char *snapshot;
    ds_error err = {0};
    if (!repl_create_slot(&c, slot, &lsn, &snapshot, &err) ||
        !repl_start(&c, slot, PUBLICATION, lsn, 1, &err))
        fail_msg("%s", err.msg);
    free(snapshot);
    int pid = PQbackendPID(c.pg);
    assert_int_equal(tl_pg_int(g_pg, "SELECT pg_terminate_backend(%d)::int", pid), 1);
    const char *payload;
    size_t len;
    uint64_t at;
    bool reply;
    repl_event ev;
    double deadline = ds_monotonic_s() + 30;
    do
        ev = repl_next(&c, 1.0, &payload, &len, &at, &reply, &err);
    while ((ev == REPL_TIMEOUT || ev == REPL_KEEPALIVE) && ds_monotonic_s() < deadline);
    assert_true(ev == REPL_END || ev == REPL_ERROR);
    tl_assert_contains(err.msg, "terminating connection due to administrator command");
    assert_false(c.streaming);
    repl_disconnect(&c);
    wait_slot_inactive(slot, "its walsender was terminated");
    drop_slot(slot);
}

/* Creating a slot waits for the transactions running at that moment:
 * with one left open the wait ends at the connection's bound, with a
 * message that says why, and no slot is left behind. */
static void test_slot_wait_is_bounded(void **state)
{
    (void)state;
    const char *slot = slot_name("bound");
    PGconn *open_tx = tl_pg_connect(g_conninfo);
    tl_pg_exec(open_tx, "CREATE TABLE IF NOT EXISTS t (id int4 PRIMARY KEY, v text)");
    tl_pg_exec(open_tx, "BEGIN; INSERT INTO t VALUES (900, 'open')");
    repl_conn c;
    ds_error err = {0};
    if (!repl_connect(g_conninfo, 1.0, &c, &err))
        fail_msg("repl_connect: %s", err.msg);
    uint64_t lsn;
    char *snapshot;
    double t0 = ds_monotonic_s();
    assert_false(repl_create_slot(&c, slot, &lsn, &snapshot, &err));
    double took = ds_monotonic_s() - t0;
    assert_true(took >= 0.9 && took < 10);
    assert_null(snapshot);
    tl_assert_contains(err.msg, "PostgreSQL sent nothing for 1 s while creating a replication slot");
    tl_assert_contains(err.msg,
                       "the server waits for every transaction that was running when the slot was asked "
                       "for to end (or it hangs): end long transactions, or raise the timeout");
    repl_disconnect(&c);
    tl_pg_exec(open_tx, "ROLLBACK");
    PQfinish(open_tx);
    /* The server drops the half-made slot when its walsender goes. */
    double deadline = ds_monotonic_s() + 30;
    while (tl_pg_int(g_pg, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'", slot) != 0) {
        if (ds_monotonic_s() > deadline)
            fail_msg("the slot of a given-up CREATE_REPLICATION_SLOT still exists after 30 s");
        usleep(20000);
    }
}

/* The harness's password and port, from its conninfo. */
static void harness_params(char *password, size_t pcap, char *port, size_t portcap)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(tl_pg_base_conninfo(), &errmsg);
    assert_non_null(opts);
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "password") == 0)
            snprintf(password, pcap, "%s", o->val);
        if (strcmp(o->keyword, "port") == 0)
            snprintf(port, portcap, "%s", o->val);
    }
    PQconninfoFree(opts);
}

static void test_refusals_never_show_the_password(void **state)
{
    (void)state;
    char password[256] = "", port[16] = "";
    harness_params(password, sizeof password, port, sizeof port);
    char *db = tl_pg_scalar(g_pg, "SELECT current_database()");
    repl_conn c;
    ds_error err = {0};

    /* A URI works as well as key=value. */
    char url[1024];
    snprintf(url, sizeof url, "postgresql://postgres:%s@127.0.0.1:%s/%s?application_name=uri_test", password,
             port, db);
    if (!repl_connect(url, 60, &c, &err))
        fail_msg("repl_connect: %s", err.msg);
    assert_int_equal(tl_pg_int(g_pg,
                               "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'uri_test' "
                               "AND backend_type = 'walsender'"),
                     1);
    repl_disconnect(&c);

    /* A wrong password, as key=value and in a URI. */
    const char *wrong = "wr0ng-Pa55-zq";
    snprintf(url, sizeof url, "host=127.0.0.1 port=%s user=postgres password=%s dbname=%s", port, wrong, db);
    assert_false(repl_connect(url, 60, &c, &err));
    assert_null(c.pg);
    tl_assert_contains(err.msg, "password authentication failed for user \"postgres\"");
    assert_null(strstr(err.msg, wrong));
    snprintf(url, sizeof url, "postgresql://postgres:%s@127.0.0.1:%s/%s", wrong, port, db);
    assert_false(repl_connect(url, 60, &c, &err));
    tl_assert_contains(err.msg, "password authentication failed");
    assert_null(strstr(err.msg, wrong));

    /* A URI libpq cannot read quotes pieces of it back: not the password. */
    snprintf(url, sizeof url, "postgresql://postgres:%%zz%s@127.0.0.1:%s/%s", wrong, port, db);
    assert_false(repl_connect(url, 60, &c, &err));
    assert_int_equal(err.code, DS_ERR_CONFIG);
    tl_assert_contains(err.msg, "cannot read the connection string: invalid percent-encoded token");
    assert_null(strstr(err.msg, wrong));

    /* A role without REPLICATION: PostgreSQL's refusal and the fix. */
    char role[64];
    snprintf(role, sizeof role, "ds_norepl_%d", (int)getpid());
    tl_pg_exec(g_pg, "CREATE ROLE %s LOGIN PASSWORD 'norepl-pw-1'", role);
    snprintf(url, sizeof url, "host=127.0.0.1 port=%s user=%s password=norepl-pw-1 dbname=%s", port, role,
             db);
    assert_false(repl_connect(url, 60, &c, &err));
    assert_int_equal(err.code, DS_ERR_SOURCE);
    tl_assert_contains(err.msg, "must be superuser or replication role to start walsender");
    tl_assert_contains(err.msg, "ALTER ROLE <role> REPLICATION");
    assert_null(strstr(err.msg, "norepl-pw-1"));
    /* With the attribute it connects. */
    tl_pg_exec(g_pg, "ALTER ROLE %s REPLICATION", role);
    if (!repl_connect(url, 60, &c, &err))
        fail_msg("repl_connect: %s", err.msg);
    repl_disconnect(&c);
    tl_pg_exec(g_pg, "DROP ROLE %s", role);
    free(db);
}

/* A pg_hba.conf line that refuses the role on the database (PostgreSQL
 * matches logical replication connections like normal ones, not with the
 * "replication" keyword) gets a message naming the fix. */
static void test_hba_refusal_names_the_fix(void **state)
{
    (void)state;
    const char *data = getenv("DUCKSTORE_TEST_PG_DATA");
    if (data == NULL)
        fail_msg("DUCKSTORE_TEST_PG_DATA is not set: run under scripts/with-test-pg.sh");
    char role[64], path[1024], url[1024];
    snprintf(role, sizeof role, "ds_nohba_%d", (int)getpid());
    snprintf(path, sizeof path, "%s/pg_hba.conf", data);
    char *saved = tl_pg_scalar(g_pg, "SELECT pg_read_file('%s')", path);
    assert_non_null(saved);
    tl_pg_exec(g_pg, "CREATE ROLE %s LOGIN REPLICATION PASSWORD 'nohba-pw-1'", role);
    char port[16] = "", password[256] = "";
    harness_params(password, sizeof password, port, sizeof port);
    char *db = tl_pg_scalar(g_pg, "SELECT current_database()");
    char *rules = tl_keepf("host %s %s 127.0.0.1/32 reject\n%s", db, role, saved);
    tl_write_file(path, rules);
    tl_pg_exec(g_pg, "SELECT pg_reload_conf()");
    snprintf(url, sizeof url, "host=127.0.0.1 port=%s user=%s password=nohba-pw-1 dbname=%s", port, role, db);
    /* The reload is asynchronous: poll until the rule is in force. */
    repl_conn c;
    ds_error err = {0};
    double deadline = ds_monotonic_s() + 30;
    while (repl_connect(url, 60, &c, &err)) {
        repl_disconnect(&c);
        if (ds_monotonic_s() > deadline)
            fail_msg("the pg_hba.conf rule was not in force 30 s after the reload");
        usleep(50000);
    }
    tl_write_file(path, saved);
    tl_pg_exec(g_pg, "SELECT pg_reload_conf()");
    tl_assert_contains(err.msg,
                       "cannot open a replication connection to PostgreSQL: connection to server at ");
    tl_assert_contains(err.msg, "pg_hba.conf rejects connection for host \"127.0.0.1\"");
    tl_assert_contains(err.msg,
                       "(lines for \"replication\" apply to physical replication only): allow this role "
                       "and database there and reload PostgreSQL");
    assert_null(strstr(err.msg, "nohba-pw-1"));
    tl_pg_exec(g_pg, "DROP ROLE %s", role);
    free(saved);
    free(db);
    tl_free_kept();
}

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("repl"));
    g_pg = tl_pg_connect(g_conninfo);
    /* The harness runs with synchronous_commit off; a walsender sends only
     * flushed WAL, so commits here are flushed at once. */
    tl_pg_exec(g_pg, "SET synchronous_commit = on");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    /* A slot left by a failed test would keep WAL. */
    double deadline = ds_monotonic_s() + 30;
    while (tl_pg_int(g_pg,
                     "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'ds\\_repl\\_%%\\_%d' "
                     "AND active",
                     (int)getpid()) > 0 &&
           ds_monotonic_s() < deadline)
        usleep(20000);
    tl_pg_exec(g_pg,
               "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
               "WHERE slot_name LIKE 'ds\\_repl\\_%%\\_%d'",
               (int)getpid());
    PQfinish(g_pg);
    free(g_conninfo);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slot_snapshot_stream_feedback),
        cmocka_unit_test(test_restart_from_confirmed),
        cmocka_unit_test(test_names_and_server_errors),
        cmocka_unit_test(test_terminated_walsender),
        cmocka_unit_test(test_slot_wait_is_bounded),
        cmocka_unit_test(test_refusals_never_show_the_password),
        cmocka_unit_test(test_hba_refusal_names_the_fix),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
