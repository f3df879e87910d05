/* pgwire/catalog.c: the catalog queries real PostgreSQL clients send, run on
 * a store connection after pgc_install, answer as PostgreSQL would; the
 * additions live in the store's in-memory catalog, installed once per
 * store (and again after a reopen), never written to the file. */
#include "testlib.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "pgwire/catalog.h"

/* What psql 15 sends for \\dt, \\d orders and \\l (psql -E), verbatim but
 * for the table's OID, a %s here. */
#define PSQL_DT                                                                                              \
    "SELECT n.nspname as \"Schema\",\n"                                                                      \
    "  c.relname as \"Name\",\n"                                                                             \
    "  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN "    \
    "'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' "   \
    "WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as \"Type\",\n"                 \
    "  pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\"\n"                                                \
    "FROM pg_catalog.pg_class c\n"                                                                           \
    "     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\n"                                   \
    "     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam\n"                                               \
    "WHERE c.relkind IN ('r','p','')\n"                                                                      \
    "      AND n.nspname <> 'pg_catalog'\n"                                                                  \
    "      AND n.nspname !~ '^pg_toast'\n"                                                                   \
    "      AND n.nspname <> 'information_schema'\n"                                                          \
    "  AND pg_catalog.pg_table_is_visible(c.oid)\n"                                                          \
    "ORDER BY 1,2;\n"

#define PSQL_D_LOOKUP                                                                                        \
    "SELECT c.oid,\n"                                                                                        \
    "  n.nspname,\n"                                                                                         \
    "  c.relname\n"                                                                                          \
    "FROM pg_catalog.pg_class c\n"                                                                           \
    "     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\n"                                   \
    "WHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default\n"                       \
    "  AND pg_catalog.pg_table_is_visible(c.oid)\n"                                                          \
    "ORDER BY 2, 3;\n"

#define PSQL_D_RELATION                                                                                      \
    "SELECT c.relchecks, c.relkind, c.relhasindex, c.relhasrules, c.relhastriggers, c.relrowsecurity, "      \
    "c.relforcerowsecurity, false AS relhasoids, c.relispartition, '', c.reltablespace, CASE WHEN "          \
    "c.reloftype = 0 THEN '' ELSE c.reloftype::pg_catalog.regtype::pg_catalog.text END, c.relpersistence, "  \
    "c.relreplident, am.amname\n"                                                                            \
    "FROM pg_catalog.pg_class c\n"                                                                           \
    " LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)\n"                                      \
    "LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid)\n"                                                  \
    "WHERE c.oid = '%s';\n"

#define PSQL_D_COLUMNS                                                                                       \
    "SELECT a.attname,\n"                                                                                    \
    "  pg_catalog.format_type(a.atttypid, a.atttypmod),\n"                                                   \
    "  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)\n"                                           \
    "   FROM pg_catalog.pg_attrdef d\n"                                                                      \
    "   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),\n"                             \
    "  a.attnotnull,\n"                                                                                      \
    "  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t\n"                            \
    "   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS "       \
    "attcollation,\n"                                                                                        \
    "  a.attidentity,\n"                                                                                     \
    "  a.attgenerated\n"                                                                                     \
    "FROM pg_catalog.pg_attribute a\n"                                                                       \
    "WHERE a.attrelid = '%s' AND a.attnum > 0 AND NOT a.attisdropped\n"                                      \
    "ORDER BY a.attnum;\n"

#define PSQL_D_INDEXES                                                                                       \
    "SELECT c2.relname, i.indisprimary, i.indisunique, i.indisclustered, i.indisvalid, "                     \
    "pg_catalog.pg_get_indexdef(i.indexrelid, 0, true),\n"                                                   \
    "  pg_catalog.pg_get_constraintdef(con.oid, true), contype, condeferrable, condeferred, "                \
    "i.indisreplident, c2.reltablespace\n"                                                                   \
    "FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i\n"                            \
    "  LEFT JOIN pg_catalog.pg_constraint con ON (conrelid = i.indrelid AND conindid = i.indexrelid AND "    \
    "contype IN ('p','u','x'))\n"                                                                            \
    "WHERE c.oid = '%s' AND c.oid = i.indrelid AND i.indexrelid = c2.oid\n"                                  \
    "ORDER BY i.indisprimary DESC, c2.relname;\n"

#define PSQL_D_POLICIES                                                                                      \
    "SELECT pol.polname, pol.polpermissive,\n"                                                               \
    "  CASE WHEN pol.polroles = '{0}' THEN NULL ELSE pg_catalog.array_to_string(array(select rolname from "  \
    "pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END,\n"                             \
    "  pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),\n"                                                 \
    "  pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid),\n"                                            \
    "  CASE pol.polcmd\n"                                                                                    \
    "    WHEN 'r' THEN 'SELECT'\n"                                                                           \
    "    WHEN 'a' THEN 'INSERT'\n"                                                                           \
    "    WHEN 'w' THEN 'UPDATE'\n"                                                                           \
    "    WHEN 'd' THEN 'DELETE'\n"                                                                           \
    "    END AS cmd\n"                                                                                       \
    "FROM pg_catalog.pg_policy pol\n"                                                                        \
    "WHERE pol.polrelid = '%s' ORDER BY 1;\n"

#define PSQL_D_STATISTICS                                                                                    \
    "SELECT oid, stxrelid::pg_catalog.regclass, stxnamespace::pg_catalog.regnamespace::pg_catalog.text AS "  \
    "nsp, stxname,\n"                                                                                        \
    "pg_catalog.pg_get_statisticsobjdef_columns(oid) AS columns,\n"                                          \
    "  'd' = any(stxkind) AS ndist_enabled,\n"                                                               \
    "  'f' = any(stxkind) AS deps_enabled,\n"                                                                \
    "  'm' = any(stxkind) AS mcv_enabled,\n"                                                                 \
    "stxstattarget\n"                                                                                        \
    "FROM pg_catalog.pg_statistic_ext\n"                                                                     \
    "WHERE stxrelid = '%s'\n"                                                                                \
    "ORDER BY nsp, stxname;\n"

#define PSQL_D_PUBLICATIONS                                                                                  \
    "SELECT pubname\n"                                                                                       \
    "     , NULL\n"                                                                                          \
    "     , NULL\n"                                                                                          \
    "FROM pg_catalog.pg_publication p\n"                                                                     \
    "     JOIN pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid\n"                               \
    "     JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid\n"                                     \
    "WHERE pc.oid ='%s' and pg_catalog.pg_relation_is_publishable('%s')\n"                                   \
    "UNION\n"                                                                                                \
    "SELECT pubname\n"                                                                                       \
    "     , pg_get_expr(pr.prqual, c.oid)\n"                                                                 \
    "     , (CASE WHEN pr.prattrs IS NOT NULL THEN\n"                                                        \
    "         (SELECT string_agg(attname, ', ')\n"                                                           \
    "           FROM pg_catalog.generate_series(0, pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[], "   \
    "1)) s,\n"                                                                                               \
    "                pg_catalog.pg_attribute\n"                                                              \
    "          WHERE attrelid = pr.prrelid AND attnum = prattrs[s])\n"                                       \
    "        ELSE NULL END) FROM pg_catalog.pg_publication p\n"                                              \
    "     JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid\n"                                     \
    "     JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid\n"                                                \
    "WHERE pr.prrelid = '%s'\n"                                                                              \
    "UNION\n"                                                                                                \
    "SELECT pubname\n"                                                                                       \
    "     , NULL\n"                                                                                          \
    "     , NULL\n"                                                                                          \
    "FROM pg_catalog.pg_publication p\n"                                                                     \
    "WHERE p.puballtables AND pg_catalog.pg_relation_is_publishable('%s')\n"                                 \
    "ORDER BY 1;\n"

#define PSQL_D_PARENTS                                                                                       \
    "SELECT c.oid::pg_catalog.regclass\n"                                                                    \
    "FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i\n"                                                 \
    "WHERE c.oid = i.inhparent AND i.inhrelid = '%s'\n"                                                      \
    "  AND c.relkind != 'p' AND c.relkind != 'I'\n"                                                          \
    "ORDER BY inhseqno;\n"

#define PSQL_D_PARTITIONS                                                                                    \
    "SELECT c.oid::pg_catalog.regclass, c.relkind, inhdetachpending, "                                       \
    "pg_catalog.pg_get_expr(c.relpartbound, c.oid)\n"                                                        \
    "FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i\n"                                                 \
    "WHERE c.oid = i.inhrelid AND i.inhparent = '%s'\n"                                                      \
    "ORDER BY pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', "                                   \
    "c.oid::pg_catalog.regclass::pg_catalog.text;\n"

#define PSQL_L                                                                                               \
    "SELECT d.datname as \"Name\",\n"                                                                        \
    "       pg_catalog.pg_get_userbyid(d.datdba) as \"Owner\",\n"                                            \
    "       pg_catalog.pg_encoding_to_char(d.encoding) as \"Encoding\",\n"                                   \
    "       d.datcollate as \"Collate\",\n"                                                                  \
    "       d.datctype as \"Ctype\",\n"                                                                      \
    "       d.daticulocale as \"ICU Locale\",\n"                                                             \
    "       CASE d.datlocprovider WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' END AS \"Locale Provider\",\n"    \
    "       pg_catalog.array_to_string(d.datacl, E'\\n') AS \"Access privileges\"\n"                         \
    "FROM pg_catalog.pg_database d\n"                                                                        \
    "ORDER BY 1;\n"

typedef struct fixture {
    char *dir;
    store *st;
    duckdb_connection con;
} fixture;

/* A store connection with the catalog installed, as a session has it. */
static duckdb_connection session_con(store *st)
{
    duckdb_connection con = tl_store_connect(st);
    ds_error err = {0};
    if (!pgc_install(con, &err))
        fail_msg("pgc_install: %s", err.msg);
    return con;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = tl_mkdtemp();
    char *path = tl_keepf("%s/catalog.duckdb", f->dir);
    ds_error err = {0};
    if (!store_open(path, &f->st, &err))
        fail_msg("store_open: %s", err.msg);
    duckdb_connection con = tl_store_connect(f->st);
    tl_duck_exec(con,
                 "CREATE TABLE orders (id BIGINT NOT NULL, amount DECIMAL(12,2) DEFAULT 0, note VARCHAR, "
                 "created TIMESTAMPTZ)");
    duckdb_disconnect(&con);
    f->con = session_con(f->st);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->con != NULL)
        duckdb_disconnect(&f->con);
    store_close(f->st);
    tl_rmtree(f->dir);
    free(f->dir);
    free(f);
    tl_free_kept();
    return 0;
}

/* Every row of a query as "a|b|c" lines ("" for an empty result), NULL as
 * "<null>"; fails the test on error. */
static char *rows_of(duckdb_connection con, const char *sql)
{
    duckdb_result res;
    if (duckdb_query(con, sql, &res) == DuckDBError) {
        char *msg = tl_keepf("%s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        fail_msg("%s\nSQL: %s", msg, sql);
    }
    ds_buf out = DS_BUF_INIT;
    ds_buf_append(&out, "");
    for (idx_t r = 0; r < duckdb_row_count(&res); r++) {
        for (idx_t c = 0; c < duckdb_column_count(&res); c++) {
            char *v = duckdb_value_is_null(&res, c, r) ? NULL : duckdb_value_varchar(&res, c, r);
            ds_buf_appendf(&out, "%s%s", c ? "|" : "", v ? v : "<null>");
            duckdb_free(v);
        }
        ds_buf_append(&out, "\n");
    }
    duckdb_destroy_result(&res);
    return tl_keep(ds_buf_take(&out));
}

/* rows_of() of the query as pgc_rewrite() hands it to DuckDB; the OID
 * given (may be NULL) fills each %s, as psql fills in the OID it found. */
static char *client_rows(duckdb_connection con, const char *query, const char *oid)
{
    ds_buf sql = DS_BUF_INIT;
    for (const char *p = query; *p; p++) {
        if (p[0] == '%' && p[1] == 's') {
            ds_buf_append(&sql, oid);
            p++;
        } else {
            ds_buf_appendc(&sql, *p);
        }
    }
    ds_error err = {0};
    char *rewritten = pgc_rewrite(ds_buf_str(&sql), &err);
    assert_non_null(rewritten);
    assert_int_equal(strlen(rewritten), sql.len);
    ds_buf_free(&sql);
    char *rows = rows_of(con, rewritten);
    free(rewritten);
    return rows;
}

/* psql's \\dt lists the store's tables of the current schema (not the
 * _duckstore metadata, not the session's own catalog views), \\d describes
 * one with PostgreSQL's type names, \\l lists the store's database. */
static void test_psql_describes(void **state)
{
    fixture *f = *state;
    assert_string_equal(client_rows(f->con, PSQL_DT, NULL), "main|orders|table|duckstore\n");
    char *oid = tl_duck_scalar(f->con, "SELECT table_oid FROM duckdb_tables() WHERE table_name = 'orders'");
    tl_keep(oid);
    assert_string_equal(client_rows(f->con, PSQL_D_LOOKUP, NULL), tl_keepf("%s|main|orders\n", oid));
    assert_string_equal(client_rows(f->con, PSQL_D_RELATION, oid),
                        "0|r|false|false|false|false|false|false|false||0||p|d|heap\n");
    assert_string_equal(client_rows(f->con, PSQL_D_COLUMNS, oid),
                        "id|bigint|<null>|true|<null>||\n"
                        "amount|numeric(12,2)|0|false|<null>||\n"
                        "note|text|<null>|false|<null>||\n"
                        "created|timestamp with time zone|<null>|false|<null>||\n");
    assert_string_equal(client_rows(f->con, PSQL_D_INDEXES, oid), "");
    assert_string_equal(client_rows(f->con, PSQL_D_POLICIES, oid), "");
    assert_string_equal(client_rows(f->con, PSQL_D_STATISTICS, oid), "");
    assert_string_equal(client_rows(f->con, PSQL_D_PUBLICATIONS, oid), "");
    assert_string_equal(client_rows(f->con, PSQL_D_PARENTS, oid), "");
    assert_string_equal(client_rows(f->con, PSQL_D_PARTITIONS, oid), "");
    /* duckstore's metadata is in no table list */
    assert_string_equal(rows_of(f->con, "SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                                        "ON n.oid = c.relnamespace WHERE n.nspname = '_duckstore'"),
                        "0\n");
    assert_string_equal(client_rows(f->con, PSQL_L, NULL),
                        "catalog|duckstore|UTF8|C.UTF-8|C.UTF-8|<null>|libc|<null>\n");
}

static void test_functions_psql_calls(void **state)
{
    fixture *f = *state;
    assert_string_equal(rows_of(f->con, "SELECT pg_get_userbyid(c.relowner), pg_encoding_to_char(6) "
                                        "FROM pg_catalog.pg_class c WHERE c.relname = 'orders'"),
                        "duckstore|UTF8\n");
    char *version = rows_of(f->con, "SELECT version()");
    assert_true(strncmp(version, "PostgreSQL 15.", 14) == 0);
    tl_assert_contains(version, "duckstore");
}

/* Drivers cast names to regtype and regclass and print a regtype: the
 * names are PostgreSQL's, an unknown one is PostgreSQL's error. */
static void test_oid_types(void **state)
{
    fixture *f = *state;
    assert_string_equal(rows_of(f->con, "SELECT 'int4'::regtype, 'integer'::regtype, ' \"_text\" '::regtype, "
                                        "'numeric[]'::regtype, 'pg_catalog.uuid'::regtype, '1700'::regtype"),
                        "23|23|1009|1231|2950|1700\n");
    assert_string_equal(rows_of(f->con,
                                "SELECT 23::regtype::text, 1184::regtype::VARCHAR, 1007::regtype::text, "
                                "99999::regtype::text, NULL::regtype::text"),
                        "integer|timestamp with time zone|integer[]|99999|<null>\n");
    assert_string_equal(rows_of(f->con, "SELECT 'pg_class'::regclass, '42'::regclass, 7::regclass, "
                                        "TRY_CAST('nope' AS regtype), TRY_CAST('orders' AS regclass)"),
                        "1259|42|7|<null>|<null>\n");
    /* pgJDBC tells arrays by their input function */
    assert_string_equal(rows_of(f->con, "SELECT typinput = 'pg_catalog.array_in'::regproc, typinput "
                                        "FROM pg_type WHERE oid IN (23, 1007) ORDER BY oid"),
                        "false|int4in\ntrue|array_in\n");
    duckdb_result res;
    assert_int_equal(duckdb_query(f->con, "SELECT 'hstore'::regtype", &res), DuckDBError);
    tl_assert_contains(duckdb_result_error(&res), "type \"hstore\" does not exist");
    duckdb_destroy_result(&res);
    /* a second session of the same store finds the types registered */
    duckdb_connection other = session_con(f->st);
    assert_string_equal(rows_of(other, "SELECT 'text'::regtype::text"), "text\n");
    duckdb_disconnect(&other);
}

/* Installing twice (a DISCARD ALL, a reused connection) is harmless, and a
 * connection without the catalog (the HTTP API's) does not see it. */
static void test_install_is_session_only(void **state)
{
    fixture *f = *state;
    ds_error err = {0};
    assert_true(pgc_install(f->con, &err));
    assert_string_equal(rows_of(f->con, "SELECT pg_get_userbyid(1)"), "duckstore\n");
    duckdb_connection other = tl_store_connect(f->st);
    duckdb_result res;
    assert_int_equal(duckdb_query(other, "SELECT pg_get_userbyid(1)", &res), DuckDBError);
    duckdb_destroy_result(&res);
    duckdb_disconnect(&other);
}

/* The catalog is created once per store, not at every login: a second
 * session finds it and creates nothing (its objects keep their OIDs, which
 * a CREATE OR REPLACE would change). */
static void test_installed_once_per_store(void **state)
{
    fixture *f = *state;
    const char *oids = "SELECT string_agg(oid::VARCHAR, ',' ORDER BY oid) FROM (SELECT view_oid AS oid "
                       "FROM duckdb_views() WHERE NOT internal AND database_name = 'memory' UNION ALL "
                       "SELECT function_oid FROM duckdb_functions() WHERE database_name = 'memory')";
    char *before = rows_of(f->con, oids);
    assert_true(strlen(before) > 40); /* the views and macros are there */
    duckdb_connection other = session_con(f->st);
    assert_string_equal(rows_of(other, "SELECT pg_get_userbyid(1), format_type(1700, 655366)"),
                        "duckstore|numeric(10,2)\n");
    assert_string_equal(rows_of(other, oids), before);
    duckdb_disconnect(&other);
}

/* Nothing of the catalog is written to the user's file, and a reopen of
 * the store (a new DuckDB instance, its in-memory catalog empty) gets it
 * installed again by the next session. */
static void test_not_in_file_and_survives_reopen(void **state)
{
    fixture *f = *state;
    duckdb_disconnect(&f->con);
    store_mark_suspect(f->st);
    ds_error err = {0};
    if (!store_reopen(f->st, &err))
        fail_msg("store_reopen: %s", err.msg);
    f->con = session_con(f->st);
    assert_string_equal(client_rows(f->con, PSQL_DT, NULL), "main|orders|table|duckstore\n");
    assert_string_equal(rows_of(f->con, "SELECT 'int4'::regtype, pg_get_userbyid(1)"), "23|duckstore\n");
    duckdb_disconnect(&f->con);
    char *path = tl_keepf("%s", store_path(f->st));
    store_close(f->st);
    f->st = NULL;

    /* the file as DuckDB itself opens it: the store's table and metadata,
     * no macro or view of the catalog */
    duckdb_database db;
    duckdb_connection con;
    assert_int_equal(duckdb_open(path, &db), DuckDBSuccess);
    assert_int_equal(duckdb_connect(db, &con), DuckDBSuccess);
    assert_string_equal(rows_of(con, "SELECT count(*) FROM duckdb_views() WHERE NOT internal"), "0\n");
    assert_string_equal(rows_of(con, "SELECT count(*) FROM duckdb_functions() WHERE NOT internal"), "0\n");
    assert_string_equal(rows_of(con, "SELECT string_agg(schema_name, ',' ORDER BY schema_name) FROM "
                                     "duckdb_schemas() WHERE database_name = current_database()"),
                        "_duckstore,main\n");
    duckdb_disconnect(&con);
    duckdb_close(&db);
    if (!store_open(path, &f->st, &err))
        fail_msg("store_open: %s", err.msg);
}

typedef struct login {
    store *st;
    bool ok;
    char answer[64];
} login;

static void *log_in(void *arg)
{
    login *l = arg;
    duckdb_connection con;
    ds_error err = {0};
    if (!store_connect(l->st, &con, &err))
        return NULL;
    duckdb_result res;
    if (pgc_install(con, &err) &&
        duckdb_query(con, "SELECT format_type(1184, -1) || '|' || pg_get_userbyid(1)", &res) ==
            DuckDBSuccess) {
        char *v = duckdb_value_varchar(&res, 0, 0);
        snprintf(l->answer, sizeof l->answer, "%s", v ? v : "");
        duckdb_free(v);
        duckdb_destroy_result(&res);
        l->ok = true;
    }
    duckdb_disconnect(&con);
    return NULL;
}

/* Ten sessions logging in at once into a store whose catalog is not there
 * yet (a server just started, or just reopened): one creates it, every one
 * finds all of it. */
static void test_concurrent_first_logins(void **state)
{
    fixture *f = *state;
    duckdb_disconnect(&f->con);
    store_mark_suspect(f->st);
    ds_error err = {0};
    if (!store_reopen(f->st, &err))
        fail_msg("store_reopen: %s", err.msg);
    login logins[10];
    pthread_t threads[10];
    for (int i = 0; i < 10; i++) {
        logins[i] = (login){.st = f->st};
        assert_int_equal(pthread_create(&threads[i], NULL, log_in, &logins[i]), 0);
    }
    for (int i = 0; i < 10; i++) {
        pthread_join(threads[i], NULL);
        assert_true(logins[i].ok);
        assert_string_equal(logins[i].answer, "timestamp with time zone|duckstore");
    }
    f->con = session_con(f->st);
}

static void assert_rewrite(const char *sql, const char *expected)
{
    ds_error err = {0};
    char *out = pgc_rewrite(sql, &err);
    assert_non_null(out);
    assert_string_equal(out, expected);
    free(out);
}

/* Only a leading pg_catalog qualifier of a name goes, each character
 * becoming a space; text in strings, quoted identifiers, comments and
 * dollar quotes is the client's and stays as sent. */
static void test_rewrite_touches_names_only(void **state)
{
    (void)state;
    assert_rewrite("SELECT pg_catalog.format_type(1, -1) FROM pg_catalog . pg_class",
                   "SELECT            format_type(1, -1) FROM              pg_class");
    assert_rewrite("SELECT \"pg_catalog\".\"pg_class\".oid FROM PG_CATALOG.pg_class",
                   "SELECT              \"pg_class\".oid FROM            pg_class");
    assert_rewrite("SELECT 'pg_catalog.x', E'it\\'s pg_catalog.x', $$pg_catalog.y$$, $q$pg_catalog.z$q$",
                   "SELECT 'pg_catalog.x', E'it\\'s pg_catalog.x', $$pg_catalog.y$$, $q$pg_catalog.z$q$");
    assert_rewrite("SELECT 1 -- pg_catalog.x\n/* pg_catalog.y /* nested */ */ + $1",
                   "SELECT 1 -- pg_catalog.x\n/* pg_catalog.y /* nested */ */ + $1");
    /* another catalog's pg_catalog, and a column of that name, are names */
    assert_rewrite("SELECT store.pg_catalog.f(), t.pg_catalog, pg_catalog FROM t",
                   "SELECT store.pg_catalog.f(), t.pg_catalog, pg_catalog FROM t");
    assert_rewrite(
        "WHERE a OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default AND b COLLATE \"default\" = 'x'",
        "WHERE a OPERATOR(           ~) '^(t)$'                            AND b                   = 'x'");
    assert_rewrite("SELECT x::pg_catalog.regclass::pg_catalog.text",
                   "SELECT x::           regclass::           text");
    /* unterminated quotes and comments end the text, they do not overrun it */
    assert_rewrite("SELECT 'pg_catalog.x", "SELECT 'pg_catalog.x");
    assert_rewrite("SELECT \"pg_catalog", "SELECT \"pg_catalog");
    assert_rewrite("SELECT /* pg_catalog.x", "SELECT /* pg_catalog.x");
    assert_rewrite("SELECT $a$ pg_catalog.x", "SELECT $a$ pg_catalog.x");
    assert_rewrite("SELECT pg_catalog.", "SELECT            ");
    assert_rewrite("", "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_functions_psql_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_psql_describes, setup, teardown),
        cmocka_unit_test(test_rewrite_touches_names_only),
        cmocka_unit_test_setup_teardown(test_oid_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_is_session_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_installed_once_per_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_in_file_and_survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_first_logins, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
