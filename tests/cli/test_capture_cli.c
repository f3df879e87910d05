/* The command line of logical capture against real servers: check-config
 * reports wal_level (a second server started with wal_level = replica),
 * the role's REPLICATION, each query's replica identity and the slots no
 * source uses, with its exit codes; drop-slot drops a real slot (and
 * duckstore's own publication when no source uses it) by source name, by
 * slot name with --url and for a source removed from the config, and
 * refuses a slot a replication connection streams from. */
#include "cli_harness.h"

typedef struct world {
    tl_env e;
    char *db_name;
} world;

static world W;

static int setup(void **state)
{
    (void)state;
    const char *db = tl_pg_fresh_db("capture_cli");
    /* The harness's conninfo names dbname=postgres first: the last one wins. */
    const char *last = strstr(db, "dbname=");
    for (const char *next = last; next != NULL; next = strstr(next + 1, "dbname="))
        last = next;
    W.db_name = strdup(last + 7);
    tl_env_open(&W.e, db, "cc", "");
    tl_pg_exec(W.e.pg, "CREATE TABLE items (id int PRIMARY KEY, name text)");
    tl_pg_exec(W.e.pg, "CREATE TABLE nokey (a int, b text)");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tl_env_close(&W.e);
    free(W.db_name);
    tl_free_kept();
    return 0;
}

/* s shell-quoted in single quotes. */
static char *sq(const char *s)
{
    size_t n = 2;
    for (const char *c = s; *c; c++)
        n += *c == '\'' ? 4 : 1;
    char *out = malloc(n + 1), *o = out;
    *o++ = '\'';
    for (const char *c = s; *c; c++) {
        if (*c == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else {
            *o++ = *c;
        }
    }
    *o++ = '\'';
    *o = '\0';
    return tl_keep(out);
}

/* A source file of its own, with any url (one without " or \\). */
static void source_at(const char *name, const char *url, const char *body)
{
    tl_write_filef(tl_keepf("%s/%s_db.yaml", W.e.dir, name), "%s_db:\n  url: \"%s\"\n%s", name, url, body);
}

static void remove_source(const char *name)
{
    unlink(tl_keepf("%s/%s_db.yaml", W.e.dir, name));
}

static cli_out check_config(void)
{
    return cli_run(W.e.dir, NULL, "--config-dir %s check-config", sq(W.e.dir));
}

static int64_t slots_named(const char *slot)
{
    return tl_pg_int(W.e.pg, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'", slot);
}

static int64_t publications_named(const char *pub)
{
    return tl_pg_int(W.e.pg, "SELECT count(*) FROM pg_publication WHERE pubname = '%s'", pub);
}

static void test_check_config(void **state)
{
    (void)state;
    source_at("s", W.e.url, "  capture: logical\n  query: SELECT id, name FROM items\n");
    cli_out o = check_config();
    cli_expect(&o, 0, "check-config of a logical source");
    tl_assert_contains(o.out, "  capture: logical\n  # publication: duckstore_s (created by duckstore)\n"
                              "  # replication slot: duckstore_s\n");
    tl_assert_contains(o.out,
                       "# s: query reads table \"cc\".\"items\", whose changes are applied by its primary "
                       "key (id)\n");
    tl_assert_contains(o.out, tl_keepf("# config directory %s: OK\n", W.e.dir));

    /* A table without replica identity: exit 2, the line and the fix. */
    source_at("bad", W.e.url, "  capture: logical\n  query: SELECT a, b FROM nokey\n");
    o = check_config();
    cli_expect(&o, 2, "check-config of a table without primary key");
    tl_assert_contains(o.out,
                       tl_keepf("# bad: %s/bad_db.yaml:4: query: table \"cc\".\"nokey\" has no primary key "
                                "and REPLICA IDENTITY DEFAULT, so its updates and deletes do not say which "
                                "row they change. Fix: ALTER TABLE \"cc\".\"nokey\" REPLICA IDENTITY FULL or "
                                "add a primary key\n",
                                W.e.dir));
    tl_assert_contains(o.out, tl_keepf("# config directory %s: errors above\n", W.e.dir));
    tl_pg_exec(W.e.pg, "ALTER TABLE nokey REPLICA IDENTITY FULL");
    o = check_config();
    cli_expect(&o, 0, "check-config once the table has REPLICA IDENTITY FULL");
    tl_assert_contains(o.out,
                       "# bad: query reads table \"cc\".\"nokey\", whose changes are applied by its whole "
                       "row (REPLICA IDENTITY FULL)\n");

    /* A named publication that lacks the table. */
    tl_pg_exec(W.e.pg, "CREATE PUBLICATION theirs FOR TABLE items");
    source_at("bad", W.e.url, "  capture: logical\n  publication: theirs\n  query: SELECT a, b FROM nokey\n");
    o = check_config();
    cli_expect(&o, 2, "check-config of a publication without the table");
    tl_assert_contains(o.out, tl_keepf("# bad: %s/bad_db.yaml:4: publication \"theirs\" does not publish "
                                       "\"cc\".\"nokey\", so its changes would never reach the cache; ALTER "
                                       "PUBLICATION \"theirs\" ADD TABLE \"cc\".\"nokey\"\n",
                                       W.e.dir));

    /* A named publication whose changes the cache could not follow: a
     * partitioned table published partition by partition (its changes were
     * skipped without a word), a row filter, a column list. */
    tl_pg_exec(W.e.pg, "CREATE TABLE parts (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);"
                       "CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM (0) TO (100);"
                       "CREATE PUBLICATION by_partition FOR TABLE parts");
    source_at("bad", W.e.url,
              "  capture: logical\n  publication: by_partition\n  query: SELECT id, v FROM parts\n");
    o = check_config();
    cli_expect(&o, 2, "check-config of a publication that sends a partitioned table's partitions");
    tl_assert_contains(o.out,
                       tl_keepf("# bad: %s/bad_db.yaml:4: publication \"by_partition\" sends the changes "
                                "of the partitioned table \"cc\".\"parts\" under each partition's name, "
                                "which the cache would skip; ALTER PUBLICATION \"by_partition\" SET "
                                "(publish_via_partition_root = true)",
                                W.e.dir));
    /* FOR ALL TABLES publishes every table, so only this check stood
     * between such a publication and changes skipped for good. */
    tl_pg_exec(W.e.pg, "CREATE PUBLICATION everything FOR ALL TABLES");
    source_at("bad", W.e.url,
              "  capture: logical\n  publication: everything\n  query: SELECT id, v FROM parts\n");
    o = check_config();
    cli_expect(&o, 2, "check-config of FOR ALL TABLES with a partitioned table");
    tl_assert_contains(o.out, "publication \"everything\" sends the changes of the partitioned table "
                              "\"cc\".\"parts\" under each partition's name");
    tl_pg_exec(W.e.pg, "DROP PUBLICATION everything");
    source_at("bad", W.e.url,
              "  capture: logical\n  publication: by_partition\n  query: SELECT id, v FROM parts\n");
    tl_pg_exec(W.e.pg, "ALTER PUBLICATION by_partition SET (publish_via_partition_root = true)");
    o = check_config();
    cli_expect(&o, 0, "check-config once the publication sends the partitioned table under its name");
    tl_pg_exec(W.e.pg, "CREATE PUBLICATION filtered FOR TABLE items WHERE (id > 100)");
    source_at("bad", W.e.url,
              "  capture: logical\n  publication: filtered\n  query: SELECT id, name FROM items\n");
    o = check_config();
    cli_expect(&o, 2, "check-config of a publication with a row filter");
    tl_assert_contains(o.out, "publication \"filtered\" filters the rows of \"cc\".\"items\" (a WHERE)");
    tl_pg_exec(W.e.pg, "CREATE PUBLICATION some_columns FOR TABLE items (id)");
    source_at("bad", W.e.url,
              "  capture: logical\n  publication: some_columns\n  query: SELECT id FROM items\n");
    o = check_config();
    cli_expect(&o, 2, "check-config of a publication with a column list");
    tl_assert_contains(o.out, "publication \"some_columns\" sends only some columns of \"cc\".\"items\"");
    remove_source("bad");

    /* A role without REPLICATION (roles belong to the whole server: the
     * name is this process's, so a run beside another never meets it). */
    const char *role = tl_keepf("cli_reader_%d", (int)getpid());
    PGconn *admin = tl_pg_connect(tl_pg_base_conninfo());
    tl_pg_exec(admin, "CREATE ROLE %s LOGIN PASSWORD 'pw'", role);
    PQfinish(admin);
    tl_pg_exec(W.e.pg, "GRANT USAGE ON SCHEMA cc TO %s", role);
    tl_pg_exec(W.e.pg, "GRANT SELECT ON items TO %s", role);
    source_at("ro", tl_keepf("%s user=%s password=pw", W.e.url, role),
              "  capture: logical\n  query: SELECT id FROM items\n");
    o = check_config();
    cli_expect(&o, 2, "check-config with a role without REPLICATION");
    tl_assert_contains(o.out, tl_keepf("# ro: %s/ro_db.yaml:3: capture: logical streams changes through a "
                                       "replication slot, but the role \"%s\" has neither REPLICATION nor "
                                       "superuser. Fix: ALTER ROLE \"%s\" REPLICATION\n",
                                       W.e.dir, role, role));
    admin = tl_pg_connect(tl_pg_base_conninfo());
    tl_pg_exec(admin, "ALTER ROLE %s REPLICATION", role);
    PQfinish(admin);
    o = check_config();
    cli_expect(&o, 0, "check-config once the role has REPLICATION");
    remove_source("ro");

    /* Slots named duckstore_* that no source uses are listed once (two
     * sources read this server), the one of s is not; nothing fails. */
    source_at("s2", W.e.url, "  query: SELECT id FROM items\n");
    tl_pg_exec(W.e.pg, "SELECT pg_create_logical_replication_slot('duckstore_s', 'pgoutput')");
    tl_pg_exec(W.e.pg, "SELECT pg_create_logical_replication_slot('duckstore_cli_gone', 'pgoutput')");
    o = check_config();
    cli_expect(&o, 0, "check-config with an orphan slot");
    const char *line =
        tl_keepf("# warning: replication slot \"duckstore_cli_gone\" (database \"%s\") is used by "
                 "no configured source, and the server keeps WAL for it; drop it with: duckstore "
                 "drop-slot duckstore_cli_gone\n",
                 W.db_name);
    tl_assert_contains(o.out, line);
    assert_null(strstr(strstr(o.out, line) + 1, line));
    assert_null(strstr(o.out, "slot \"duckstore_s\""));
    remove_source("s2");
    tl_pg_exec(W.e.pg, "SELECT pg_drop_replication_slot('duckstore_s')");
    tl_pg_exec(W.e.pg, "SELECT pg_drop_replication_slot('duckstore_cli_gone')");
}

/* ---- a second server with wal_level = replica ----------------------------- */

static void test_wal_level(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/duckstore-pgw-XXXXXX";
    char *pg_dir = mkdtemp(tmpl);
    assert_non_null(pg_dir);
    /* initdb refuses root: the server runs as postgres then, as in
     * scripts/with-test-pg.sh. */
    char *out = NULL;
    int rc = tl_run(
        &out,
        "set -e; d='%s'; pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1); "
        "as=''; if [ \"$(id -u)\" -eq 0 ]; then chown postgres: \"$d\"; as='runuser -u postgres --'; fi; "
        "$as \"$pg_bin/initdb\" -D \"$d/data\" -U postgres --auth=trust >\"$d/initdb.log\" 2>&1 || "
        "{ cat \"$d/initdb.log\"; exit 1; }; "
        "for i in $(seq 1 20); do port=$((20000 + $(od -An -N2 -tu2 /dev/urandom) %% 40000)); "
        "if $as \"$pg_bin/pg_ctl\" -D \"$d/data\" -l \"$d/log\" -w -t 30 start -o \"-c "
        "listen_addresses=127.0.0.1 -p $port -k $d -c wal_level=replica -c fsync=off\" >/dev/null 2>&1; then "
        "echo $port; exit 0; fi; done; exit 1",
        pg_dir);
    if (rc != 0)
        fail_msg("cannot start a second PostgreSQL: %s", out);
    /* The port is the last line: an attempt on a port taken meanwhile may
     * have said so before it. */
    int port = 0;
    for (const char *line = out; line != NULL && *line != '\0';) {
        if (*line >= '1' && *line <= '9')
            port = atoi(line);
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    free(out);
    if (port <= 0)
        fail_msg("no port in the second PostgreSQL's start output");
    const char *url = tl_keepf("host=127.0.0.1 port=%d user=postgres dbname=postgres", port);
    PGconn *other = tl_pg_connect(url);
    tl_pg_exec(other, "CREATE TABLE items (id int PRIMARY KEY)");
    PQfinish(other);
    char *dir = tl_keep(tl_mkdtemp());
    tl_write_file(tl_keepf("%s/duckdb.yaml", dir), "duckdb:\n  path: store.duckdb\n");
    tl_write_filef(tl_keepf("%s/w_db.yaml", dir),
                   "w_db:\n  url: %s\n  capture: logical\n  query: SELECT id FROM "
                   "items\n",
                   sq(url));
    cli_out o = cli_run(dir, NULL, "--config-dir %s check-config", sq(dir));
    tl_run(NULL,
           "d='%s'; pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1); as=''; "
           "[ \"$(id -u)\" -eq 0 ] && as='runuser -u postgres --'; $as \"$pg_bin/pg_ctl\" -D \"$d/data\" -m "
           "immediate stop >/dev/null 2>&1; rm -rf \"$d\"",
           pg_dir);
    tl_rmtree(dir);
    cli_expect(&o, 2, "check-config against wal_level = replica");
    tl_assert_contains(o.out,
                       tl_keepf("# w: %s/w_db.yaml:3: capture: logical needs wal_level = logical, but the "
                                "server has wal_level = replica. Fix: ALTER SYSTEM SET wal_level = logical "
                                "on the server, then restart PostgreSQL\n",
                                dir));
}

/* ---- drop-slot ------------------------------------------------------------------ */

static void test_drop_slot(void **state)
{
    (void)state;
    source_at("s", W.e.url, "  capture: logical\n  query: SELECT id, name FROM items\n");
    tl_pg_exec(W.e.pg, "SELECT pg_create_logical_replication_slot('duckstore_s', 'pgoutput')");
    tl_pg_exec(W.e.pg, "CREATE PUBLICATION duckstore_s FOR TABLE items");

    /* By a configured source's name: its slot; the publication it uses stays. */
    cli_out o = cli_run(W.e.dir, NULL, "--config-dir %s drop-slot s", sq(W.e.dir));
    cli_expect(&o, 0, "drop-slot of a configured source");
    assert_string_equal(o.out, "dropped replication slot \"duckstore_s\"\n"
                               "kept publication \"duckstore_s\": source s uses it\n");
    assert_int_equal(slots_named("duckstore_s"), 0);
    assert_int_equal(publications_named("duckstore_s"), 1);

    /* A source removed from the config: found on the configured sources'
     * servers by its name; its publication goes too. */
    tl_pg_exec(W.e.pg, "SELECT pg_create_logical_replication_slot('duckstore_old', 'pgoutput')");
    tl_pg_exec(W.e.pg, "CREATE PUBLICATION duckstore_old FOR TABLE items");
    o = cli_run(W.e.dir, NULL, "--config-dir %s drop-slot old", sq(W.e.dir));
    cli_expect(&o, 0, "drop-slot of a removed source");
    assert_string_equal(
        o.out, "dropped replication slot \"duckstore_old\"\ndropped publication \"duckstore_old\"\n");
    assert_int_equal(slots_named("duckstore_old"), 0);
    assert_int_equal(publications_named("duckstore_old"), 0);

    /* By slot name on a server given with --url (--url=URL works too). */
    tl_pg_exec(W.e.pg, "SELECT pg_create_logical_replication_slot('duckstore_elsewhere', 'pgoutput')");
    o = cli_run(W.e.dir, NULL, "--config-dir %s drop-slot --url=%s duckstore_elsewhere", sq(W.e.dir),
                sq(W.e.url));
    cli_expect(&o, 0, "drop-slot --url");
    assert_string_equal(o.out, "dropped replication slot \"duckstore_elsewhere\"\n");
    assert_int_equal(slots_named("duckstore_elsewhere"), 0);

    /* Refused while a replication connection streams from it. */
    tl_pg_exec(W.e.pg, "SELECT pg_create_logical_replication_slot('duckstore_busy', 'pgoutput')");
    PGconn *repl = tl_pg_connect(tl_keepf("%s replication=database", W.e.url));
    PGresult *res = PQexec(repl, "START_REPLICATION SLOT duckstore_busy LOGICAL 0/0 (proto_version '1', "
                                 "publication_names 'duckstore_s')");
    assert_int_equal(PQresultStatus(res), PGRES_COPY_BOTH);
    PQclear(res);
    for (int i = 0;
         i < 3000 && tl_pg_int(W.e.pg, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = "
                                       "'duckstore_busy' AND active") == 0;
         i++)
        tl_pg_exec(W.e.pg, "SELECT pg_sleep(0.01)");
    int64_t pid =
        tl_pg_int(W.e.pg, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'duckstore_busy'");
    o = cli_run(W.e.dir, NULL, "--config-dir %s drop-slot duckstore_busy", sq(W.e.dir));
    cli_expect(&o, 1, "drop-slot of an active slot");
    assert_string_equal(o.out, "");
    assert_string_equal(o.err,
                        tl_keepf("duckstore: replication slot \"duckstore_busy\" is in use: the process "
                                 "with PID %lld streams from it; stop that process (the duckstore that "
                                 "reads this source) and try again\n",
                                 (long long)pid));
    assert_int_equal(slots_named("duckstore_busy"), 1);
    PQfinish(repl);
    int64_t left = 1;
    for (int i = 0; i < 3000 && left > 0; i++) {
        o = cli_run(W.e.dir, NULL, "--config-dir %s drop-slot duckstore_busy", sq(W.e.dir));
        left = slots_named("duckstore_busy");
        if (left > 0)
            tl_pg_exec(W.e.pg, "SELECT pg_sleep(0.01)");
    }
    cli_expect(&o, 0, "drop-slot once the stream ended");

    /* Nothing of that name: exit 2, saying where it looked. */
    o = cli_run(W.e.dir, NULL, "--config-dir %s drop-slot nope", sq(W.e.dir));
    cli_expect(&o, 2, "drop-slot of an unknown slot");
    assert_string_equal(o.err,
                        "duckstore: no replication slot named \"nope\" or \"duckstore_nope\" on the servers "
                        "of the configured sources; duckstore check-config lists the slots no source "
                        "uses\n");
    o = cli_run(W.e.dir, NULL, "--config-dir %s drop-slot", sq(W.e.dir));
    cli_expect(&o, 2, "drop-slot without a name");
    assert_string_equal(
        o.err, "duckstore drop-slot: missing argument\nusage: duckstore drop-slot NAME [--url URL]\n");
    o = cli_run(W.e.dir, NULL, "--config-dir %s drop-slot a b", sq(W.e.dir));
    cli_expect(&o, 2, "drop-slot with two names");
    tl_pg_exec(W.e.pg, "DROP PUBLICATION duckstore_s");
    remove_source("s");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_config),
        cmocka_unit_test(test_wal_level),
        cmocka_unit_test(test_drop_slot),
    };
    return cmocka_run_group_tests_name("cli/capture", tests, setup, teardown);
}
