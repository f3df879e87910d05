/* PostgreSQL catalog functions and relations for the wire protocol's
 * sessions (catalog.h).
 *
 * The macros and views live in a schema of the store's in-memory catalog
 * (PGC_SCHEMA), created once per DuckDB instance: every session shares
 * them, the file never holds them, and a store reopen (a new instance)
 * gets them created again by its first session. A session puts that
 * schema on its search path after the store's own main schema and before
 * DuckDB's system catalog, so they fill the gaps of DuckDB's built-in
 * pg_catalog. A name qualified
 * with pg_catalog. resolves in DuckDB's system catalog only, which takes no
 * new entries; pgc_rewrite() therefore drops that qualifier, which is what
 * PostgreSQL's own lookup amounts to (pg_catalog comes first in its search
 * path).
 *
 * Type OIDs and typmods are PostgreSQL's, the ones RowDescription sends for
 * the same DuckDB types (pgvalues.c), so a driver that reads a column's type
 * from pg_attribute finds the type its result rows carry. */
#include "pgwire/catalog.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/strbuf.h"
#include "common/version.h"
#include "store/read_functions.h"
#include "store/store.h"

/* Where the catalog lives: the in-memory catalog beside the store's file. */
#define PGC_SCHEMA STORE_SCRATCH_CATALOG ".duckstore_pg"

/* The PostgreSQL types duckstore sends: oid, name, typlen, category,
 * element (arrays) and array type. */
#define PG_TYPES                                                                                             \
    "(16, 'bool', 1, 'B', 0, 1000), (17, 'bytea', -1, 'U', 0, 1001), (19, 'name', 64, 'S', 0, 1003), "       \
    "(20, 'int8', 8, 'N', 0, 1016), (21, 'int2', 2, 'N', 0, 1005), (23, 'int4', 4, 'N', 0, 1007), "          \
    "(25, 'text', -1, 'S', 0, 1009), (26, 'oid', 4, 'N', 0, 1028), (114, 'json', -1, 'U', 0, 199), "         \
    "(700, 'float4', 4, 'N', 0, 1021), (701, 'float8', 8, 'N', 0, 1022), "                                   \
    "(1042, 'bpchar', -1, 'S', 0, 1014), (1043, 'varchar', -1, 'S', 0, 1015), "                              \
    "(1082, 'date', 4, 'D', 0, 1182), (1083, 'time', 8, 'D', 0, 1183), "                                     \
    "(1114, 'timestamp', 8, 'D', 0, 1115), (1184, 'timestamptz', 8, 'D', 0, 1185), "                         \
    "(1186, 'interval', 16, 'T', 0, 1187), (1266, 'timetz', 12, 'D', 0, 1270), "                             \
    "(1700, 'numeric', -1, 'N', 0, 1231), (2950, 'uuid', 16, 'U', 0, 2951), "                                \
    "(3802, 'jsonb', -1, 'U', 0, 3807), "                                                                    \
    "(1000, '_bool', -1, 'A', 16, 0), (1001, '_bytea', -1, 'A', 17, 0), (1003, '_name', -1, 'A', 19, 0), "   \
    "(1016, '_int8', -1, 'A', 20, 0), (1005, '_int2', -1, 'A', 21, 0), (1007, '_int4', -1, 'A', 23, 0), "    \
    "(1009, '_text', -1, 'A', 25, 0), (1028, '_oid', -1, 'A', 26, 0), (199, '_json', -1, 'A', 114, 0), "     \
    "(1021, '_float4', -1, 'A', 700, 0), (1022, '_float8', -1, 'A', 701, 0), "                               \
    "(1014, '_bpchar', -1, 'A', 1042, 0), (1015, '_varchar', -1, 'A', 1043, 0), "                            \
    "(1182, '_date', -1, 'A', 1082, 0), (1183, '_time', -1, 'A', 1083, 0), "                                 \
    "(1115, '_timestamp', -1, 'A', 1114, 0), (1185, '_timestamptz', -1, 'A', 1184, 0), "                     \
    "(1187, '_interval', -1, 'A', 1186, 0), (1270, '_timetz', -1, 'A', 1266, 0), "                           \
    "(1231, '_numeric', -1, 'A', 1700, 0), (2951, '_uuid', -1, 'A', 2950, 0), "                              \
    "(3807, '_jsonb', -1, 'A', 3802, 0)"

/* One statement each, run in order. Objects a client only checks for
 * (triggers, policies, inheritance, publications) are empty relations with
 * PostgreSQL's columns, so catalog queries find nothing rather than fail. */
static const char *const install_sql[] = {
    /* The one role: every relation and database is its. */
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pg_get_userbyid(role_oid) AS 'duckstore'",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_roles AS SELECT 10::BIGINT AS oid, 'duckstore' AS rolname, false AS "
    "rolsuper, "
    "true AS rolinherit, false AS rolcreaterole, false AS rolcreatedb, true AS rolcanlogin, "
    "false AS rolreplication, -1 AS rolconnlimit, '********' AS rolpassword, NULL::TIMESTAMPTZ AS "
    "rolvaliduntil, "
    "false AS rolbypassrls, NULL::VARCHAR[] AS rolconfig",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_user AS SELECT rolname AS usename, oid AS usesysid, rolcreatedb AS "
    "usecreatedb, "
    "rolsuper AS usesuper, rolreplication AS userepl, rolbypassrls AS usebypassrls, rolpassword AS passwd, "
    "rolvaliduntil AS valuntil, rolconfig AS useconfig FROM pg_roles",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pg_encoding_to_char(encoding) AS 'UTF8'",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pg_char_to_encoding(name) AS 6",
    /* The server's version as PostgreSQL prints it: drivers parse the
     * leading "PostgreSQL <major>.<minor>". */
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".version() AS 'PostgreSQL 15.0 (duckstore " DS_VERSION
    ") on x86_64-pc-linux-gnu, compiled by gcc, 64-bit'",

    /* DuckDB type (duckdb_columns().data_type) -> PostgreSQL OID. */
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pgc_scalar_oid(t) AS CASE "
    "WHEN t = 'BOOLEAN' THEN 16 WHEN t IN ('TINYINT', 'SMALLINT', 'UTINYINT') THEN 21 "
    "WHEN t IN ('INTEGER', 'USMALLINT') THEN 23 WHEN t IN ('BIGINT', 'UINTEGER') THEN 20 "
    "WHEN t IN ('HUGEINT', 'UBIGINT', 'UHUGEINT', 'BIGNUM', 'VARINT') OR t LIKE 'DECIMAL%' THEN 1700 "
    "WHEN t = 'FLOAT' THEN 700 WHEN t = 'DOUBLE' THEN 701 WHEN t = 'DATE' THEN 1082 WHEN t = 'TIME' THEN "
    "1083 "
    "WHEN t IN ('TIMESTAMP', 'TIMESTAMP_S', 'TIMESTAMP_MS', 'TIMESTAMP_NS') THEN 1114 "
    "WHEN t = 'TIMESTAMP WITH TIME ZONE' THEN 1184 WHEN t = 'TIME WITH TIME ZONE' THEN 1266 "
    "WHEN t = 'INTERVAL' THEN 1186 WHEN t = 'UUID' THEN 2950 WHEN t = 'JSON' THEN 114 "
    "WHEN t = 'BLOB' THEN 17 ELSE 25 END",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA
    ".pgc_type_oid(t) AS CASE WHEN regexp_matches(t, '\\[\\d*\\]$') THEN "
    "coalesce((SELECT typarray FROM pg_type WHERE oid = pgc_scalar_oid(regexp_replace(t, '(\\[\\d*\\])+$', "
    "''))), "
    "1009) ELSE pgc_scalar_oid(t) END",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pgc_type_mod(t, prec, scale) AS CASE WHEN t LIKE 'DECIMAL%' "
    "THEN ((prec::INTEGER << 16) | scale::INTEGER) + 4 ELSE -1 END",

    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_namespace AS SELECT oid::BIGINT AS oid, schema_name AS nspname, "
    "10::BIGINT AS nspowner, NULL::VARCHAR[] AS nspacl FROM duckdb_schemas() "
    "WHERE database_name = current_database() AND schema_name <> '_duckstore' "
    "UNION ALL SELECT oid::BIGINT, schema_name, 10::BIGINT, NULL FROM duckdb_schemas() "
    "WHERE database_name = 'system' AND schema_name IN ('pg_catalog', 'information_schema')",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA ".pg_type AS SELECT t.oid::BIGINT AS oid, t.typname, "
    "(SELECT oid FROM pg_namespace WHERE nspname = 'pg_catalog') AS typnamespace, 10::BIGINT AS typowner, "
    "t.typlen::SMALLINT AS typlen, t.typlen > 0 AND t.typlen <= 8 AS typbyval, 'b' AS typtype, "
    "t.typcategory, false AS typispreferred, true AS typisdefined, ',' AS typdelim, 0::BIGINT AS typrelid, "
    "t.typelem::BIGINT AS typelem, t.typarray::BIGINT AS typarray, "
    "CASE WHEN t.typelem <> 0 THEN 'array_in' ELSE t.typname || 'in' END::regproc AS typinput, "
    "CASE WHEN t.typelem <> 0 THEN 'array_out' ELSE t.typname || 'out' END::regproc AS typoutput, "
    "CASE WHEN t.typelem <> 0 THEN 'array_recv' ELSE t.typname || 'recv' END::regproc AS typreceive, "
    "CASE WHEN t.typelem <> 0 THEN 'array_send' ELSE t.typname || 'send' END::regproc AS typsend, "
    "CASE WHEN t.typlen > 0 AND t.typlen <= 8 THEN 'd' ELSE 'i' END AS typalign, 'p' AS typstorage, "
    "false AS typnotnull, 0::BIGINT AS typbasetype, -1 AS typtypmod, CASE WHEN t.typelem <> 0 THEN 1 ELSE 0 "
    "END "
    "AS typndims, CASE WHEN t.typcategory = 'S' THEN 100 ELSE 0 END::BIGINT AS typcollation, "
    "NULL::VARCHAR AS typdefaultbin, NULL::VARCHAR AS typdefault, NULL::VARCHAR[] AS typacl "
    "FROM (VALUES " PG_TYPES ") t(oid, typname, typlen, typcategory, typelem, typarray)",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".format_type(type_oid, typemod) AS CASE "
    "WHEN type_oid IS NULL THEN NULL "
    "WHEN type_oid = 1700 AND typemod >= 4 THEN "
    "'numeric(' || ((typemod - 4) >> 16) || ',' || ((typemod - 4) & 65535) || ')' "
    "WHEN type_oid = 1043 AND typemod >= 4 THEN 'character varying(' || (typemod - 4) || ')' "
    "ELSE coalesce((SELECT CASE WHEN t.typelem <> 0 THEN pgc_type_name(t.typelem) || '[]' "
    "ELSE pgc_type_name(t.oid) END FROM pg_type t WHERE t.oid = type_oid), '?"
    "?"
    "?') END",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pgc_type_name(type_oid) AS CASE type_oid "
    "WHEN 16 THEN 'boolean' WHEN 20 THEN 'bigint' WHEN 21 THEN 'smallint' WHEN 23 THEN 'integer' "
    "WHEN 700 THEN 'real' WHEN 701 THEN 'double precision' WHEN 1043 THEN 'character varying' "
    "WHEN 1042 THEN 'character' WHEN 1083 THEN 'time without time zone' "
    "WHEN 1114 THEN 'timestamp without time zone' WHEN 1184 THEN 'timestamp with time zone' "
    "WHEN 1266 THEN 'time with time zone' "
    "ELSE (SELECT typname FROM pg_type WHERE oid = type_oid) END",

    /* Relations of the store (its attached database), never the catalog's
     * own objects; duckstore's own metadata (_duckstore) stays out of
     * the tools' table lists, though a query can still read it. */
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_class AS SELECT table_oid::BIGINT AS oid, table_name AS relname, "
    "schema_oid::BIGINT AS relnamespace, 0::BIGINT AS reltype, 0::BIGINT AS reloftype, 10::BIGINT AS "
    "relowner, "
    "2::BIGINT AS relam, 0::BIGINT AS relfilenode, 0::BIGINT AS reltablespace, 0 AS relpages, "
    "estimated_size::FLOAT AS reltuples, 0 AS relallvisible, 0::BIGINT AS reltoastrelid, "
    "index_count > 0 AS relhasindex, false AS relisshared, 'p' AS relpersistence, 'r' AS relkind, "
    "column_count::SMALLINT AS relnatts, check_constraint_count::SMALLINT AS relchecks, false AS relhasoids, "
    "false AS relhasrules, false AS relhastriggers, false AS relhassubclass, false AS relrowsecurity, "
    "false AS relforcerowsecurity, true AS relispopulated, 'd' AS relreplident, false AS relispartition, "
    "0::BIGINT AS relrewrite, 0::BIGINT AS relfrozenxid, 0::BIGINT AS relminmxid, NULL::VARCHAR[] AS relacl, "
    "NULL::VARCHAR[] AS reloptions, NULL::VARCHAR AS relpartbound FROM duckdb_tables() "
    "WHERE database_name = current_database() AND schema_name <> '_duckstore' "
    "UNION ALL SELECT view_oid, view_name, schema_oid, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, false, false, 'p', "
    "'v', "
    "column_count, 0, false, false, false, false, false, false, true, 'n', false, 0, 0, 0, NULL, NULL, NULL "
    "FROM duckdb_views() WHERE database_name = current_database() AND NOT internal "
    "AND schema_name <> '_duckstore'",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_am AS SELECT * FROM (VALUES (2::BIGINT, 'heap', 'heap_tableam_handler', "
    "'t'), "
    "(403::BIGINT, 'btree', 'bthandler', 'i')) a(oid, amname, amhandler, amtype)",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_attribute AS SELECT table_oid::BIGINT AS attrelid, column_name AS "
    "attname, "
    "pgc_type_oid(data_type)::BIGINT AS atttypid, -1 AS attstattarget, "
    "coalesce((SELECT typlen FROM pg_type WHERE oid = pgc_type_oid(data_type)), -1)::SMALLINT AS attlen, "
    "column_index::SMALLINT AS attnum, CASE WHEN data_type LIKE '%]' THEN 1 ELSE 0 END AS attndims, "
    "-1 AS attcacheoff, pgc_type_mod(data_type, numeric_precision, numeric_scale) AS atttypmod, "
    "false AS attbyval, 'p' AS attstorage, 'i' AS attalign, NOT is_nullable AS attnotnull, "
    "column_default IS NOT NULL AS atthasdef, false AS atthasmissing, '' AS attidentity, '' AS attgenerated, "
    "false AS attisdropped, true AS attislocal, 0 AS attinhcount, 0::BIGINT AS attcollation, "
    "NULL::VARCHAR AS attcompression, NULL::VARCHAR[] AS attacl, NULL::VARCHAR[] AS attoptions, "
    "NULL::VARCHAR[] AS attfdwoptions, NULL::VARCHAR AS attmissingval FROM duckdb_columns() "
    "WHERE database_name = current_database()",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_attrdef AS SELECT (table_oid * 1000 + column_index)::BIGINT AS oid, "
    "table_oid::BIGINT AS adrelid, column_index::SMALLINT AS adnum, column_default AS adbin FROM "
    "duckdb_columns() "
    "WHERE database_name = current_database() AND column_default IS NOT NULL",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pg_get_expr(expr, relation) AS expr::VARCHAR, "
    "(expr, relation, pretty) AS expr::VARCHAR",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pg_table_is_visible(rel) AS rel IN (SELECT c.oid FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema())",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_database AS SELECT database_oid::BIGINT AS oid, database_name AS "
    "datname, "
    "10::BIGINT AS datdba, 6 AS encoding, 'c' AS datlocprovider, false AS datistemplate, true AS "
    "datallowconn, "
    "-1 AS datconnlimit, 0::BIGINT AS datfrozenxid, 0::BIGINT AS datminmxid, 1663::BIGINT AS dattablespace, "
    "'C.UTF-8' AS datcollate, 'C.UTF-8' AS datctype, NULL::VARCHAR AS daticulocale, "
    "NULL::VARCHAR AS datcollversion, NULL::VARCHAR[] AS datacl FROM duckdb_databases() "
    "WHERE database_name = current_database()",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pg_get_indexdef(index_oid) AS NULL::VARCHAR, "
    "(index_oid, col, pretty) AS NULL::VARCHAR",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pg_get_partkeydef(rel) AS NULL::VARCHAR",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pg_get_statisticsobjdef_columns(stat_oid) AS NULL::VARCHAR",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pg_relation_is_publishable(rel) AS false",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pg_get_serial_sequence(rel, col) AS NULL::VARCHAR",
    /* SQLAlchemy's get_columns builds a column's identity options with it. */
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".json_build_object(k1, v1) AS json_object(k1::VARCHAR, v1),"
    "(k1, v1, k2, v2) AS json_object(k1::VARCHAR, v1, k2::VARCHAR, v2),"
    "(k1, v1, k2, v2, k3, v3) AS json_object(k1::VARCHAR, v1, k2::VARCHAR, v2, k3::VARCHAR, v3),"
    "(k1, v1, k2, v2, k3, v3, k4, v4) AS json_object(k1::VARCHAR, v1, k2::VARCHAR, v2, k3::VARCHAR, v3, "
    "k4::VARCHAR, v4),"
    "(k1, v1, k2, v2, k3, v3, k4, v4, k5, v5) AS json_object(k1::VARCHAR, v1, k2::VARCHAR, v2, k3::VARCHAR, "
    "v3, k4::VARCHAR, v4, k5::VARCHAR, v5),"
    "(k1, v1, k2, v2, k3, v3, k4, v4, k5, v5, k6, v6) AS json_object(k1::VARCHAR, v1, k2::VARCHAR, v2, "
    "k3::VARCHAR, v3, k4::VARCHAR, v4, k5::VARCHAR, v5, k6::VARCHAR, v6),"
    "(k1, v1, k2, v2, k3, v3, k4, v4, k5, v5, k6, v6, k7, v7) AS json_object(k1::VARCHAR, v1, k2::VARCHAR, "
    "v2, k3::VARCHAR, v3, k4::VARCHAR, v4, k5::VARCHAR, v5, k6::VARCHAR, v6, k7::VARCHAR, v7),"
    "(k1, v1, k2, v2, k3, v3, k4, v4, k5, v5, k6, v6, k7, v7, k8, v8) AS json_object(k1::VARCHAR, v1, "
    "k2::VARCHAR, v2, k3::VARCHAR, v3, k4::VARCHAR, v4, k5::VARCHAR, v5, k6::VARCHAR, v6, k7::VARCHAR, v7, "
    "k8::VARCHAR, v8)",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA
    ".array_upper(arr, dim) AS CASE WHEN dim = 1 AND len(arr) > 0 THEN len(arr) "
    "END",
    "CREATE OR REPLACE MACRO " PGC_SCHEMA
    ".array_lower(arr, dim) AS CASE WHEN dim = 1 AND len(arr) > 0 THEN 1 END",

    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_inherits AS SELECT 0::BIGINT AS inhrelid, 0::BIGINT AS inhparent, "
    "0 AS inhseqno, false AS inhdetachpending WHERE false",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_policy AS SELECT 0::BIGINT AS oid, '' AS polname, 0::BIGINT AS polrelid, "
    "'' AS polcmd, true AS polpermissive, NULL::BIGINT[] AS polroles, NULL::VARCHAR AS polqual, "
    "NULL::VARCHAR AS polwithcheck WHERE false",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_statistic_ext AS SELECT 0::BIGINT AS oid, 0::BIGINT AS stxrelid, "
    "'' AS stxname, 0::BIGINT AS stxnamespace, 0::BIGINT AS stxowner, -1 AS stxstattarget, "
    "NULL::SMALLINT[] AS stxkeys, NULL::VARCHAR[] AS stxkind, NULL::VARCHAR AS stxexprs WHERE false",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA ".pg_publication AS SELECT 0::BIGINT AS oid, '' AS pubname, "
    "0::BIGINT AS pubowner, false AS puballtables, false AS pubinsert, false AS pubupdate, false AS "
    "pubdelete, "
    "false AS pubtruncate, false AS pubviaroot WHERE false",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_publication_namespace AS SELECT 0::BIGINT AS oid, 0::BIGINT AS pnpubid, "
    "0::BIGINT AS pnnspid WHERE false",
    /* psql indexes prattrs with a generate_series row, which DuckDB binds
     * as a one-field struct: the map type lets that bind (the relation is
     * empty, no value is ever read), and it casts to int2[] as psql does. */
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_publication_rel AS SELECT 0::BIGINT AS oid, 0::BIGINT AS prpubid, "
    "0::BIGINT AS prrelid, NULL::VARCHAR AS prqual, "
    "NULL::MAP(STRUCT(generate_series BIGINT), SMALLINT) AS prattrs WHERE false",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA ".pg_trigger AS SELECT 0::BIGINT AS oid, 0::BIGINT AS tgrelid, "
    "0::BIGINT AS tgparentid, '' AS tgname, 0::BIGINT AS tgfoid, 0::SMALLINT AS tgtype, 'O' AS tgenabled, "
    "false AS tgisinternal, 0::BIGINT AS tgconstrrelid, 0::BIGINT AS tgconstrindid, 0::BIGINT AS "
    "tgconstraint, "
    "false AS tgdeferrable, false AS tginitdeferred, 0::SMALLINT AS tgnargs WHERE false",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_partitioned_table AS SELECT 0::BIGINT AS partrelid, '' AS partstrat, "
    "0::SMALLINT AS partnatts, 0::BIGINT AS partdefid WHERE false",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_foreign_table AS SELECT 0::BIGINT AS ftrelid, 0::BIGINT AS ftserver, "
    "NULL::VARCHAR[] AS ftoptions WHERE false",
    "CREATE OR REPLACE VIEW " PGC_SCHEMA
    ".pg_rewrite AS SELECT 0::BIGINT AS oid, '' AS rulename, 0::BIGINT AS "
    "ev_class, "
    "'' AS ev_type, 'O' AS ev_enabled, false AS is_instead WHERE false",
    /* Last, in the same transaction: a session that finds it finds all. */
    "CREATE OR REPLACE MACRO " PGC_SCHEMA ".pgc_installed() AS '" DS_VERSION "'",
    NULL,
};

/* The search path of a session: the store's tables first (its default
 * schema: current_database() and current_schema() stay the store's), then
 * the readers' faster functions (store/read_functions.h), then the catalog;
 * DuckDB's system catalog comes after them all. */
#define PGC_SEARCH_PATH "SET search_path = 'main," STORE_READ_SCHEMA "," PGC_SCHEMA "'"

/* PostgreSQL's name of each type duckstore sends (what oid::regtype prints)
 * and its catalog name, with its array type's OID; 'name'::regtype reads
 * either name, and "name[]" or "_typname" for the array. */
static const struct {
    int64_t oid, array_oid;
    const char *name, *typname;
} pg_type_names[] = {
    {16, 1000, "boolean", "bool"},
    {17, 1001, "bytea", "bytea"},
    {19, 1003, "name", "name"},
    {20, 1016, "bigint", "int8"},
    {21, 1005, "smallint", "int2"},
    {23, 1007, "integer", "int4"},
    {25, 1009, "text", "text"},
    {26, 1028, "oid", "oid"},
    {114, 199, "json", "json"},
    {700, 1021, "real", "float4"},
    {701, 1022, "double precision", "float8"},
    {1042, 1014, "character", "bpchar"},
    {1043, 1015, "character varying", "varchar"},
    {1082, 1182, "date", "date"},
    {1083, 1183, "time without time zone", "time"},
    {1114, 1115, "timestamp without time zone", "timestamp"},
    {1184, 1185, "timestamp with time zone", "timestamptz"},
    {1186, 1187, "interval", "interval"},
    {1266, 1270, "time with time zone", "timetz"},
    {1700, 1231, "numeric", "numeric"},
    {2950, 2951, "uuid", "uuid"},
    {3802, 3807, "jsonb", "jsonb"},
};

/* The OIDs PostgreSQL gives its own catalog relations, for 'pg_class'::regclass
 * and the like in drivers' catalog queries. */
static const struct {
    int64_t oid;
    const char *name;
} pg_relation_names[] = {
    {1247, "pg_type"},        {1249, "pg_attribute"}, {1255, "pg_proc"},      {1259, "pg_class"},
    {1262, "pg_database"},    {2601, "pg_am"},        {2604, "pg_attrdef"},   {2606, "pg_constraint"},
    {2609, "pg_description"}, {2610, "pg_index"},     {2611, "pg_inherits"},  {2615, "pg_namespace"},
    {2620, "pg_trigger"},     {3079, "pg_extension"}, {3456, "pg_collation"},
};

/* name (len bytes) as a lowercase C string without quotes, surrounding
 * spaces or a pg_catalog. qualifier; false when it does not fit. */
static bool normal_name(const char *name, size_t len, char *out, size_t cap)
{
    while (len > 0 && isspace((unsigned char)*name))
        name++, len--;
    while (len > 0 && isspace((unsigned char)name[len - 1]))
        len--;
    if (len >= 11 && strncasecmp(name, "pg_catalog.", 11) == 0)
        name += 11, len -= 11;
    if (len >= 2 && name[0] == '"' && name[len - 1] == '"')
        name++, len -= 2;
    if (len == 0 || len >= cap)
        return false;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)name[i]);
    out[len] = '\0';
    return true;
}

/* An OID written as digits. */
static bool oid_digits(const char *s, int64_t *oid)
{
    if (*s == '\0' || strspn(s, "0123456789") != strlen(s) || strlen(s) > 10)
        return false;
    *oid = strtoll(s, NULL, 10);
    return true;
}

static bool type_oid_of(const char *name, int64_t *oid)
{
    if (oid_digits(name, oid))
        return true;
    size_t len = strlen(name);
    bool array = false;
    char base[128];
    if (len > 2 && strcmp(name + len - 2, "[]") == 0) {
        array = true;
        snprintf(base, sizeof base, "%.*s", (int)(len - 2), name);
    } else if (name[0] == '_') {
        array = true;
        snprintf(base, sizeof base, "%s", name + 1);
    } else {
        snprintf(base, sizeof base, "%s", name);
    }
    static const struct {
        const char *alias, *name;
    } aliases[] = {{"int", "integer"}, {"decimal", "numeric"}, {"char", "character"}, {"bool", "boolean"}};
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(base, aliases[i].alias) == 0)
            snprintf(base, sizeof base, "%s", aliases[i].name);
    for (size_t i = 0; i < sizeof pg_type_names / sizeof pg_type_names[0]; i++) {
        if (strcmp(base, pg_type_names[i].name) == 0 || strcmp(base, pg_type_names[i].typname) == 0) {
            *oid = array ? pg_type_names[i].array_oid : pg_type_names[i].oid;
            return true;
        }
    }
    return false;
}

static bool relation_oid_of(const char *name, int64_t *oid)
{
    if (oid_digits(name, oid))
        return true;
    for (size_t i = 0; i < sizeof pg_relation_names / sizeof pg_relation_names[0]; i++) {
        if (strcmp(name, pg_relation_names[i].name) == 0) {
            *oid = pg_relation_names[i].oid;
            return true;
        }
    }
    return false;
}

/* VARCHAR -> regtype or regclass: extra info says which. A name not known
 * is PostgreSQL's 42704/42P01 text; under TRY_CAST it is NULL. */
static bool cast_name_to_oid(duckdb_function_info info, idx_t count, duckdb_vector input,
                             duckdb_vector output)
{
    bool relation = duckdb_cast_function_get_extra_info(info) != NULL;
    duckdb_string_t *in = duckdb_vector_get_data(input);
    uint64_t *in_valid = duckdb_vector_get_validity(input);
    int64_t *out = duckdb_vector_get_data(output);
    bool all_ok = true;
    for (idx_t row = 0; row < count; row++) {
        if (in_valid != NULL && !duckdb_validity_row_is_valid(in_valid, row)) {
            duckdb_vector_ensure_validity_writable(output);
            duckdb_validity_set_row_invalid(duckdb_vector_get_validity(output), row);
            continue;
        }
        char name[128];
        int64_t oid = 0;
        bool found =
            normal_name(duckdb_string_t_data(&in[row]), duckdb_string_t_length(in[row]), name, sizeof name) &&
            (relation ? relation_oid_of(name, &oid) : type_oid_of(name, &oid));
        if (found) {
            out[row] = oid;
            continue;
        }
        ds_buf msg = DS_BUF_INIT;
        ds_buf_appendf(&msg,
                       relation ? "relation \"%.*s\" does not exist (duckstore reads a relation's OID from "
                                  "pg_class, not from its name)"
                                : "type \"%.*s\" does not exist",
                       (int)duckdb_string_t_length(in[row]), duckdb_string_t_data(&in[row]));
        duckdb_cast_function_set_row_error(info, ds_buf_str(&msg) ? ds_buf_str(&msg) : "unknown name", row,
                                           output);
        ds_buf_free(&msg);
        all_ok = false;
    }
    return all_ok || duckdb_cast_function_get_cast_mode(info) == DUCKDB_CAST_TRY;
}

/* VARCHAR -> regproc: the function's name as a catalog stores it, without
 * quotes or a pg_catalog. qualifier ('pg_catalog.array_in'::regproc). */
static bool cast_name_to_proc(duckdb_function_info info, idx_t count, duckdb_vector input,
                              duckdb_vector output)
{
    duckdb_string_t *in = duckdb_vector_get_data(input);
    uint64_t *in_valid = duckdb_vector_get_validity(input);
    bool all_ok = true;
    for (idx_t row = 0; row < count; row++) {
        if (in_valid != NULL && !duckdb_validity_row_is_valid(in_valid, row)) {
            duckdb_vector_ensure_validity_writable(output);
            duckdb_validity_set_row_invalid(duckdb_vector_get_validity(output), row);
            continue;
        }
        char name[128];
        if (normal_name(duckdb_string_t_data(&in[row]), duckdb_string_t_length(in[row]), name, sizeof name)) {
            duckdb_vector_assign_string_element(output, row, name);
        } else {
            duckdb_cast_function_set_row_error(info, "function name too long or empty", row, output);
            all_ok = false;
        }
    }
    return all_ok || duckdb_cast_function_get_cast_mode(info) == DUCKDB_CAST_TRY;
}

/* regtype -> VARCHAR: PostgreSQL's type name, or the OID's digits for a
 * type duckstore does not send. */
static bool cast_type_to_name(duckdb_function_info info, idx_t count, duckdb_vector input,
                              duckdb_vector output)
{
    (void)info;
    int64_t *in = duckdb_vector_get_data(input);
    uint64_t *in_valid = duckdb_vector_get_validity(input);
    for (idx_t row = 0; row < count; row++) {
        if (in_valid != NULL && !duckdb_validity_row_is_valid(in_valid, row)) {
            duckdb_vector_ensure_validity_writable(output);
            duckdb_validity_set_row_invalid(duckdb_vector_get_validity(output), row);
            continue;
        }
        char text[160];
        snprintf(text, sizeof text, "%lld", (long long)in[row]);
        for (size_t i = 0; i < sizeof pg_type_names / sizeof pg_type_names[0]; i++) {
            if (in[row] == pg_type_names[i].oid)
                snprintf(text, sizeof text, "%s", pg_type_names[i].name);
            else if (in[row] == pg_type_names[i].array_oid)
                snprintf(text, sizeof text, "%s[]", pg_type_names[i].name);
        }
        duckdb_vector_assign_string_element(output, row, text);
    }
    return true;
}

/* regproc holds a function's name, the other alias types an OID. */
static duckdb_logical_type alias_type(const char *alias)
{
    bool name = strncmp(alias, "regproc", 7) == 0;
    duckdb_logical_type t = duckdb_create_logical_type(name ? DUCKDB_TYPE_VARCHAR : DUCKDB_TYPE_BIGINT);
    duckdb_logical_type_set_alias(t, alias);
    return t;
}

static bool add_cast(duckdb_connection con, const char *from, const char *to, duckdb_cast_function_t fn,
                     void *extra)
{
    duckdb_logical_type source = from ? alias_type(from) : duckdb_create_logical_type(DUCKDB_TYPE_VARCHAR);
    duckdb_logical_type target = to ? alias_type(to) : duckdb_create_logical_type(DUCKDB_TYPE_VARCHAR);
    duckdb_cast_function cast = duckdb_create_cast_function();
    duckdb_cast_function_set_source_type(cast, source);
    duckdb_cast_function_set_target_type(cast, target);
    duckdb_cast_function_set_function(cast, fn);
    if (extra != NULL)
        duckdb_cast_function_set_extra_info(cast, extra, NULL);
    bool ok = duckdb_register_cast_function(con, cast) == DuckDBSuccess;
    duckdb_destroy_cast_function(&cast);
    duckdb_destroy_logical_type(&source);
    duckdb_destroy_logical_type(&target);
    return ok;
}

/* The OID alias types (regclass, regtype, ...) hold an OID; a name cast to
 * regtype or regclass finds its OID, a regtype prints as its name. DuckDB
 * keeps types and casts for the whole database, so the first session
 * registers them and later ones find them there. */
static bool install_oid_types(duckdb_connection con, ds_error *err)
{
    static const char *const aliases[] = {"regclass", "regtype",      "regnamespace",
                                          "regproc",  "regprocedure", "regrole"};
    duckdb_result res;
    if (duckdb_query(con, "SELECT count(*) FROM duckdb_types() WHERE type_name = 'regrole'", &res) ==
        DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "pg catalog: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return false;
    }
    bool present = duckdb_value_int64(&res, 0, 0) > 0;
    duckdb_destroy_result(&res);
    if (present)
        return true;
    bool ok = true;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++) {
        duckdb_logical_type t = alias_type(aliases[i]);
        ok = duckdb_register_logical_type(con, t, NULL) == DuckDBSuccess && ok;
        duckdb_destroy_logical_type(&t);
    }
    static char relation_marker;
    ok = ok && add_cast(con, NULL, "regtype", cast_name_to_oid, NULL) &&
         add_cast(con, "regtype", NULL, cast_type_to_name, NULL) &&
         add_cast(con, NULL, "regclass", cast_name_to_oid, &relation_marker) &&
         add_cast(con, NULL, "regproc", cast_name_to_proc, NULL);
    /* Another session may have registered them at the same moment. */
    if (!ok) {
        ok = duckdb_query(con, "SELECT count(*) FROM duckdb_types() WHERE type_name = 'regrole'", &res) ==
                 DuckDBSuccess &&
             duckdb_value_int64(&res, 0, 0) > 0;
        duckdb_destroy_result(&res);
    }
    if (!ok)
        return ds_error_set(err, DS_ERR_STORE, "pg catalog: cannot register the regclass and regtype types");
    return true;
}

/* DuckDB checks that a search path's schemas exist; the objects' own
 * bodies bind with it as a session will. */
static bool prepare_install(duckdb_connection con, ds_error *err)
{
    return install_oid_types(con, err) && store_exec(con, "CREATE SCHEMA IF NOT EXISTS " PGC_SCHEMA, err) &&
           store_exec(con, PGC_SEARCH_PATH, err);
}

bool pgc_install(duckdb_connection con, ds_error *err)
{
    return store_read_functions_install(con, err) &&
           store_install_once(con, "pg catalog", "SELECT " PGC_SCHEMA ".pgc_installed()", prepare_install,
                              install_sql, err) &&
           store_exec(con, PGC_SEARCH_PATH, err);
}

/* The SQL lexer's view of the text, enough to find names: quoted strings,
 * quoted identifiers, comments and dollar quotes are skipped whole. */
static bool ident_start(unsigned char c)
{
    return isalpha(c) || c == '_' || c >= 0x80;
}

static bool ident_char(unsigned char c)
{
    return ident_start(c) || isdigit(c) || c == '$';
}

/* Past the quoted text starting at s[i] (a ' or "), doubled quotes kept
 * inside; backslash escapes when escapes (E'...'). */
static size_t skip_quoted(const char *s, size_t i, size_t n, bool escapes)
{
    char q = s[i++];
    while (i < n) {
        if (escapes && s[i] == '\\' && i + 1 < n) {
            i += 2;
        } else if (s[i] == q) {
            if (i + 1 < n && s[i + 1] == q)
                i += 2;
            else
                return i + 1;
        } else {
            i++;
        }
    }
    return n;
}

/* Past a $tag$...$tag$ string at s[i], or i when s[i] starts none ($1). */
static size_t skip_dollar(const char *s, size_t i, size_t n)
{
    size_t t = i + 1;
    if (t < n && isdigit((unsigned char)s[t]))
        return i;
    while (t < n && s[t] != '$' && ident_char((unsigned char)s[t]) && s[t] != '$')
        t++;
    if (t >= n || s[t] != '$')
        return i;
    size_t tag_len = t + 1 - i;
    for (size_t k = t + 1; k + tag_len <= n; k++)
        if (s[k] == '$' && memcmp(s + k, s + i, tag_len) == 0)
            return k + tag_len;
    return n;
}

static size_t skip_space(const char *s, size_t i, size_t n)
{
    for (;;) {
        while (i < n && isspace((unsigned char)s[i]))
            i++;
        if (i + 1 < n && s[i] == '-' && s[i + 1] == '-') {
            while (i < n && s[i] != '\n')
                i++;
        } else if (i + 1 < n && s[i] == '/' && s[i + 1] == '*') {
            int depth = 0;
            do {
                if (i + 1 < n && s[i] == '/' && s[i + 1] == '*') {
                    depth++;
                    i += 2;
                } else if (i + 1 < n && s[i] == '*' && s[i + 1] == '/') {
                    depth--;
                    i += 2;
                } else {
                    i++;
                }
            } while (i < n && depth > 0);
        } else {
            return i;
        }
    }
}

/* Whether s[i, end) is the name word, plain or "quoted" exactly. */
static bool is_name(const char *s, size_t i, size_t end, const char *word)
{
    size_t len = strlen(word);
    if (s[i] == '"')
        return end - i == len + 2 && memcmp(s + i + 1, word, len) == 0;
    return end - i == len && strncasecmp(s + i, word, len) == 0;
}

/* End of the name (plain or quoted) at s[i], or i when none starts there. */
static size_t name_end(const char *s, size_t i, size_t n)
{
    if (i < n && s[i] == '"')
        return skip_quoted(s, i, n, false);
    size_t e = i;
    if (e < n && ident_start((unsigned char)s[e]))
        while (e < n && ident_char((unsigned char)s[e]))
            e++;
    return e;
}

static void blank(char *out, size_t from, size_t to)
{
    memset(out + from, ' ', to - from);
}

char *pgc_rewrite(const char *sql, ds_error *err)
{
    size_t n = strlen(sql);
    char *out = malloc(n + 1);
    if (!out) {
        ds_error_set(err, DS_ERR_NOMEM, "out of memory rewriting a query of %zu bytes", n);
        return NULL;
    }
    memcpy(out, sql, n + 1);
    /* prev_dot: the last token was '.', so a name here is not a first part
     * (db.pg_catalog.x keeps its qualifier); collate_at: where the last
     * COLLATE keyword started. */
    bool prev_dot = false;
    size_t collate_at = (size_t)-1;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)sql[i];
        if (isspace(c) || (c == '-' && i + 1 < n && sql[i + 1] == '-') ||
            (c == '/' && i + 1 < n && sql[i + 1] == '*')) {
            i = skip_space(sql, i, n);
            continue;
        }
        if (c == '\'') {
            i = skip_quoted(sql, i, n, false);
            prev_dot = false;
            continue;
        }
        if ((c == 'e' || c == 'E') && i + 1 < n && sql[i + 1] == '\'') {
            i = skip_quoted(sql, i + 1, n, true);
            prev_dot = false;
            continue;
        }
        if (c == '$') {
            size_t e = skip_dollar(sql, i, n);
            i = e > i ? e : i + 1;
            prev_dot = false;
            continue;
        }
        if (c == '"' || ident_start(c)) {
            size_t e = name_end(sql, i, n);
            bool was_collate = collate_at != (size_t)-1;
            size_t collate_start = collate_at;
            collate_at = is_name(sql, i, e, "collate") && sql[i] != '"' ? i : (size_t)-1;
            if (!prev_dot && is_name(sql, i, e, "pg_catalog")) {
                size_t d = skip_space(sql, e, n);
                if (d < n && sql[d] == '.') {
                    size_t m = skip_space(sql, d + 1, n);
                    size_t me = name_end(sql, m, n);
                    /* COLLATE pg_catalog.default: DuckDB has no such
                     * collation, and the default is what it does anyway. */
                    if (was_collate && me > m && is_name(sql, m, me, "default")) {
                        blank(out, collate_start, me);
                        i = me;
                        prev_dot = false;
                        continue;
                    }
                    /* pg_catalog.name, and OPERATOR(pg_catalog.~) */
                    blank(out, i, m);
                    i = m;
                    prev_dot = false;
                    continue;
                }
            }
            if (was_collate && is_name(sql, i, e, "default") && sql[i] == '"')
                blank(out, collate_start, e);
            i = e;
            prev_dot = false;
            continue;
        }
        prev_dot = c == '.';
        collate_at = (size_t)-1;
        i++;
    }
    return out;
}
