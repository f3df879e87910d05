/* PostgreSQL catalog functions and relations for the wire protocol's
 * sessions (catalog.h). DuckDB resolves an unqualified name in the
 * connection's temp catalog first, so TEMP macros and views added here fill
 * the gaps of its built-in pg_catalog without touching the store file.
 * Names qualified with pg_catalog. resolve in DuckDB's system catalog only,
 * which takes no new entries: what is added here serves unqualified names. */
#include "pgwire/catalog.h"

#include "common/strbuf.h"
#include "common/version.h"

/* One statement each, run in order. Objects a client only checks for
 * (triggers, policies, inheritance) are empty relations with PostgreSQL's
 * columns, so the joins of catalog queries find nothing rather than fail. */
static const char *const install_sql[] = {
    /* Every relation is the session user's; PostgreSQL would name the
     * owner role, which duckstore does not have. */
    "CREATE OR REPLACE TEMP MACRO pg_get_userbyid(role_oid) AS 'duckstore'",
    "CREATE OR REPLACE TEMP MACRO pg_encoding_to_char(encoding) AS 'UTF8'",
    "CREATE OR REPLACE TEMP MACRO pg_char_to_encoding(name) AS 6",
    /* The server's version string as PostgreSQL prints it: drivers parse the
     * leading "PostgreSQL <major>.<minor>". */
    "CREATE OR REPLACE TEMP MACRO version() AS 'PostgreSQL 15.0 (duckstore " DS_VERSION
    ") on x86_64-pc-linux-gnu, compiled by gcc, 64-bit'",
    NULL,
};

bool pgc_install(duckdb_connection con, ds_error *err)
{
    for (size_t i = 0; install_sql[i]; i++) {
        duckdb_result res;
        if (duckdb_query(con, install_sql[i], &res) == DuckDBError) {
            ds_error_set(err, DS_ERR_STORE, "pg catalog: %s (in: %.200s)", duckdb_result_error(&res),
                         install_sql[i]);
            duckdb_destroy_result(&res);
            return false;
        }
        duckdb_destroy_result(&res);
    }
    return true;
}
