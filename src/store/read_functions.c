/* Faster equivalents of DuckDB functions for readers' queries
 * (read_functions.h).
 *
 * date_trunc on TIMESTAMP WITH TIME ZONE: DuckDB computes it through ICU's
 * calendar for every value (about 90 ns each, several times the cost of the
 * rest of a dashboard's GROUP BY on 5M rows). In a session whose TimeZone
 * is UTC, a TIMESTAMPTZ holds the same microseconds as the TIMESTAMP of its
 * wall clock, so truncating that TIMESTAMP with DuckDB's plain date_trunc
 * gives the same instant, at a tenth of the cost. Only the units for which
 * tests/store/test_read_functions.c finds the two equal on every value
 * (BC dates included) take that path; decade, century, millennium, era and
 * the rest, and every other TimeZone, call DuckDB's own function. */
#include "store/read_functions.h"

#include <pthread.h>

/* The units (and DuckDB's names for them) whose truncation in UTC equals
 * ICU's; lower case, as the macro compares lower(part). */
#define UTC_TRUNC_UNITS                                                                                      \
    "'microseconds', 'microsecond', 'us', 'usec', 'usecs', "                                                 \
    "'milliseconds', 'millisecond', 'ms', 'msec', 'msecs', "                                                 \
    "'second', 'seconds', 'sec', 'secs', 's', 'minute', 'minutes', 'min', 'mins', 'm', "                     \
    "'hour', 'hours', 'hr', 'hrs', 'h', 'day', 'days', 'd', 'week', 'weeks', 'w', "                          \
    "'month', 'months', 'mon', 'mons', 'quarter', 'quarters', "                                              \
    "'year', 'years', 'yr', 'yrs', 'y', 'isoyear'"

/* The other argument types go to DuckDB's function unchanged: a macro
 * found first on the search path hides every overload of the name. */
static const char *const install_sql[] = {
    "CREATE OR REPLACE MACRO " STORE_READ_SCHEMA ".date_trunc(part VARCHAR, ts TIMESTAMPTZ) AS "
    "CASE WHEN lower(current_setting('TimeZone')) IN ('utc', 'etc/utc') AND lower(part) IN (" UTC_TRUNC_UNITS
    ") THEN CASE WHEN isfinite(ts) THEN "
    "make_timestamptz(epoch_us(system.main.date_trunc(part, make_timestamp(epoch_us(ts))))) ELSE ts END "
    "ELSE system.main.date_trunc(part, ts) END, "
    "(part VARCHAR, ts TIMESTAMP) AS system.main.date_trunc(part, ts), "
    "(part VARCHAR, ts DATE) AS system.main.date_trunc(part, ts), "
    "(part VARCHAR, ts INTERVAL) AS system.main.date_trunc(part, ts)",
    /* Last, in the same transaction: a reader that finds it finds all. */
    "CREATE OR REPLACE MACRO " STORE_READ_SCHEMA ".duckstore_read_installed() AS true",
    NULL,
};

static bool installed(duckdb_connection con)
{
    duckdb_result res;
    bool ok =
        duckdb_query(con, "SELECT " STORE_READ_SCHEMA ".duckstore_read_installed()", &res) == DuckDBSuccess;
    duckdb_destroy_result(&res);
    return ok;
}

static bool exec_install(duckdb_connection con, const char *sql, ds_error *err)
{
    duckdb_result res;
    if (duckdb_query(con, sql, &res) == DuckDBError) {
        ds_error_set(err, DS_ERR_STORE, "read functions: %s (in: %.200s)", duckdb_result_error(&res), sql);
        duckdb_destroy_result(&res);
        return false;
    }
    duckdb_destroy_result(&res);
    return true;
}

bool store_read_functions_install(duckdb_connection con, ds_error *err)
{
    if (installed(con))
        return true;
    /* One connection creates them (a store reopen starts a new, empty
     * instance); the others wait, then find them. */
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    bool ok = true;
    if (!installed(con)) {
        bool began = exec_install(con, "CREATE SCHEMA IF NOT EXISTS " STORE_READ_SCHEMA, err) &&
                     exec_install(con, "BEGIN TRANSACTION", err);
        ok = began;
        for (size_t i = 0; ok && install_sql[i] != NULL; i++)
            ok = exec_install(con, install_sql[i], err);
        if (ok)
            ok = exec_install(con, "COMMIT", err);
        else if (began)
            exec_install(con, "ROLLBACK", NULL);
    }
    pthread_mutex_unlock(&lock);
    return ok;
}

bool store_read_functions_use(duckdb_connection con, ds_error *err)
{
    return store_read_functions_install(con, err) &&
           exec_install(con, "SET search_path = 'main," STORE_READ_SCHEMA "'", err);
}
