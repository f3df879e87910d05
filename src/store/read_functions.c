/* Faster equivalents of DuckDB functions for readers' queries
 * (read_functions.h).
 *
 * date_trunc on TIMESTAMP WITH TIME ZONE: DuckDB computes it through ICU's
 * calendar for every value (about 90 ns each, more than the rest of a
 * dashboard's GROUP BY over a 5M-row view). In a session whose TimeZone is
 * UTC, an instant's wall clock is its microseconds since 1970, so the
 * truncation is integer arithmetic on them (a civil date for months and
 * years): duckstore_date_trunc_utc below, a few ns a value. Only the units
 * for which tests/store/test_read_functions.c finds it equal to ICU's on
 * every value (BC dates included) take that path; decade, century,
 * millennium and the rest, and every other TimeZone, call DuckDB's own
 * function. */
#include "store/read_functions.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "common/strbuf.h"

typedef enum trunc_unit {
    TRUNC_NONE,
    TRUNC_MICROSECOND,
    TRUNC_MILLISECOND,
    TRUNC_SECOND,
    TRUNC_MINUTE,
    TRUNC_HOUR,
    TRUNC_DAY,
    TRUNC_WEEK,
    TRUNC_MONTH,
    TRUNC_QUARTER,
    TRUNC_YEAR,
    TRUNC_ISOYEAR,
} trunc_unit;

/* The units whose truncation in UTC equals ICU's, in DuckDB's spellings,
 * lower case (the macro compares lower(part)). */
static const struct {
    const char *name;
    trunc_unit unit;
} unit_names[] = {
    {"microseconds", TRUNC_MICROSECOND},
    {"microsecond", TRUNC_MICROSECOND},
    {"us", TRUNC_MICROSECOND},
    {"usec", TRUNC_MICROSECOND},
    {"usecs", TRUNC_MICROSECOND},
    {"milliseconds", TRUNC_MILLISECOND},
    {"millisecond", TRUNC_MILLISECOND},
    {"ms", TRUNC_MILLISECOND},
    {"msec", TRUNC_MILLISECOND},
    {"msecs", TRUNC_MILLISECOND},
    {"second", TRUNC_SECOND},
    {"seconds", TRUNC_SECOND},
    {"sec", TRUNC_SECOND},
    {"secs", TRUNC_SECOND},
    {"s", TRUNC_SECOND},
    {"minute", TRUNC_MINUTE},
    {"minutes", TRUNC_MINUTE},
    {"min", TRUNC_MINUTE},
    {"mins", TRUNC_MINUTE},
    {"m", TRUNC_MINUTE},
    {"hour", TRUNC_HOUR},
    {"hours", TRUNC_HOUR},
    {"hr", TRUNC_HOUR},
    {"hrs", TRUNC_HOUR},
    {"h", TRUNC_HOUR},
    {"day", TRUNC_DAY},
    {"days", TRUNC_DAY},
    {"d", TRUNC_DAY},
    {"week", TRUNC_WEEK},
    {"weeks", TRUNC_WEEK},
    {"w", TRUNC_WEEK},
    {"month", TRUNC_MONTH},
    {"months", TRUNC_MONTH},
    {"mon", TRUNC_MONTH},
    {"mons", TRUNC_MONTH},
    {"quarter", TRUNC_QUARTER},
    {"quarters", TRUNC_QUARTER},
    {"year", TRUNC_YEAR},
    {"years", TRUNC_YEAR},
    {"yr", TRUNC_YEAR},
    {"yrs", TRUNC_YEAR},
    {"y", TRUNC_YEAR},
    {"isoyear", TRUNC_ISOYEAR},
};

static trunc_unit unit_of(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof unit_names / sizeof unit_names[0]; i++)
        if (strlen(unit_names[i].name) == len && memcmp(unit_names[i].name, name, len) == 0)
            return unit_names[i].unit;
    return TRUNC_NONE;
}

#define US_PER_DAY INT64_C(86400000000)

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (year 0 is 1 BC),
 * and back: H. Hinnant's civil-date algorithms. */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int64_t *m)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yoe + era * 400 + (*m <= 2);
}

/* The Monday of the week holding day z (1970-01-01 was a Thursday). */
static int64_t monday_of(int64_t z)
{
    return z - (z + 3 - floor_div(z + 3, 7) * 7);
}

/* The first day of ISO year y: the Monday of the week holding January 4. */
static int64_t isoyear_start(int64_t y)
{
    return monday_of(days_from_civil(y, 1, 4));
}

static int64_t trunc_us(trunc_unit unit, int64_t us)
{
    static const int64_t fixed[] = {[TRUNC_MICROSECOND] = 1,
                                    [TRUNC_MILLISECOND] = 1000,
                                    [TRUNC_SECOND] = 1000000,
                                    [TRUNC_MINUTE] = INT64_C(60000000),
                                    [TRUNC_HOUR] = INT64_C(3600000000),
                                    [TRUNC_DAY] = US_PER_DAY};
    if (unit <= TRUNC_DAY)
        return floor_div(us, fixed[unit]) * fixed[unit];
    int64_t z = floor_div(us, US_PER_DAY), y, m;
    switch (unit) {
    case TRUNC_WEEK:
        return monday_of(z) * US_PER_DAY;
    case TRUNC_ISOYEAR:
        civil_from_days(z, &y, &m);
        if (z < isoyear_start(y))
            y--;
        else if (z >= isoyear_start(y + 1))
            y++;
        return isoyear_start(y) * US_PER_DAY;
    default:
        civil_from_days(z, &y, &m);
        m = unit == TRUNC_MONTH ? m : unit == TRUNC_QUARTER ? (m - 1) / 3 * 3 + 1 : 1;
        return days_from_civil(y, m, 1) * US_PER_DAY;
    }
}

static bool row_valid(const uint64_t *mask, idx_t i)
{
    return mask == NULL || (mask[i / 64] >> (i % 64) & 1) != 0;
}

/* The unit of row i, resolved again only when its text differs from the
 * row before's (it nearly never does: the unit is a constant). */
static bool unit_at(const duckdb_string_t *text, idx_t i, duckdb_string_t *seen, trunc_unit *unit)
{
    if (*unit != TRUNC_NONE && memcmp(&text[i], seen, sizeof *seen) == 0)
        return true;
    duckdb_string_t copy = text[i];
    uint32_t len = duckdb_string_t_length(copy);
    *unit = unit_of(duckdb_string_t_data(&copy), len);
    *seen = copy;
    return *unit != TRUNC_NONE;
}

/* duckstore_date_trunc_utc(unit VARCHAR, ts TIMESTAMPTZ): date_trunc in
 * UTC; unit is lower case and one unit_of knows (the macro checks). The
 * infinities stay as they are. Called for 2,048 rows at a time, so the
 * loop over them is kept free of calls. */
static void date_trunc_utc(duckdb_function_info info, duckdb_data_chunk input, duckdb_vector output)
{
    idx_t n = duckdb_data_chunk_get_size(input);
    duckdb_vector units = duckdb_data_chunk_get_vector(input, 0),
                  times = duckdb_data_chunk_get_vector(input, 1);
    const duckdb_string_t *unit_text = duckdb_vector_get_data(units);
    const int64_t *in = duckdb_vector_get_data(times);
    int64_t *out = duckdb_vector_get_data(output);
    const uint64_t *unit_ok = duckdb_vector_get_validity(units), *in_ok = duckdb_vector_get_validity(times);
    uint64_t *out_ok = NULL;
    if (unit_ok != NULL || in_ok != NULL) {
        duckdb_vector_ensure_validity_writable(output);
        out_ok = duckdb_vector_get_validity(output);
    }
    trunc_unit unit = TRUNC_NONE;
    duckdb_string_t seen;
    memset(&seen, 0, sizeof seen);
    for (idx_t i = 0; i < n; i++) {
        if (!row_valid(unit_ok, i) || !row_valid(in_ok, i)) {
            out_ok[i / 64] &= ~((uint64_t)1 << (i % 64));
            continue;
        }
        if (!unit_at(unit_text, i, &seen, &unit)) {
            duckdb_scalar_function_set_error(info, "duckstore_date_trunc_utc: unknown unit");
            return;
        }
        int64_t v = in[i];
        out[i] = (v == INT64_MAX || v == -INT64_MAX) ? v : trunc_us(unit, v);
    }
}

static bool register_date_trunc_utc(duckdb_connection con, ds_error *err)
{
    duckdb_scalar_function f = duckdb_create_scalar_function();
    duckdb_logical_type text = duckdb_create_logical_type(DUCKDB_TYPE_VARCHAR);
    duckdb_logical_type tstz = duckdb_create_logical_type(DUCKDB_TYPE_TIMESTAMP_TZ);
    duckdb_scalar_function_set_name(f, "duckstore_date_trunc_utc");
    duckdb_scalar_function_add_parameter(f, text);
    duckdb_scalar_function_add_parameter(f, tstz);
    duckdb_scalar_function_set_return_type(f, tstz);
    duckdb_scalar_function_set_function(f, date_trunc_utc);
    bool ok = duckdb_register_scalar_function(con, f) == DuckDBSuccess;
    duckdb_destroy_logical_type(&text);
    duckdb_destroy_logical_type(&tstz);
    duckdb_destroy_scalar_function(&f);
    return ok || ds_error_set(err, DS_ERR_STORE, "read functions: cannot register duckstore_date_trunc_utc");
}

/* The C function exists in this instance's system catalog (a failed
 * install may have registered it already). */
static bool registered(duckdb_connection con)
{
    duckdb_result res;
    bool ok = duckdb_query(con,
                           "SELECT count(*) FROM duckdb_functions() WHERE function_name = "
                           "'duckstore_date_trunc_utc'",
                           &res) == DuckDBSuccess &&
              duckdb_value_int64(&res, 0, 0) > 0;
    duckdb_destroy_result(&res);
    return ok;
}

static bool prepare_install(duckdb_connection con, ds_error *err)
{
    return (registered(con) || register_date_trunc_utc(con, err)) &&
           store_exec(con, "CREATE SCHEMA IF NOT EXISTS " STORE_READ_SCHEMA, err);
}

/* The macro, its units listed from unit_names. The other argument types
 * go to DuckDB's function unchanged: a macro found first on the search
 * path hides every overload of the name. */
static char *date_trunc_macro_sql(void)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_append(&b,
                  "CREATE OR REPLACE MACRO " STORE_READ_SCHEMA ".date_trunc(part VARCHAR, ts TIMESTAMPTZ) AS "
                  "CASE WHEN lower(current_setting('TimeZone')) IN ('utc', 'etc/utc') AND lower(part) IN (");
    for (size_t i = 0; i < sizeof unit_names / sizeof unit_names[0]; i++) {
        ds_buf_append(&b, i ? ", " : "");
        ds_buf_append_literal(&b, unit_names[i].name);
    }
    ds_buf_append(
        &b, ") THEN duckstore_date_trunc_utc(lower(part), ts) ELSE system.main.date_trunc(part, ts) END, "
            "(part VARCHAR, ts TIMESTAMP) AS system.main.date_trunc(part, ts), "
            "(part VARCHAR, ts DATE) AS system.main.date_trunc(part, ts), "
            "(part VARCHAR, ts INTERVAL) AS system.main.date_trunc(part, ts)");
    return ds_buf_take(&b);
}

static char *macro_sql;

static void build_macro_sql(void)
{
    macro_sql = date_trunc_macro_sql();
}

bool store_read_functions_install(duckdb_connection con, ds_error *err)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build_macro_sql);
    if (macro_sql == NULL)
        return ds_error_set(err, DS_ERR_NOMEM, "out of memory");
    /* Last, in the same transaction: a reader that finds it finds all. */
    const char *const statements[] = {
        macro_sql, "CREATE OR REPLACE MACRO " STORE_READ_SCHEMA ".duckstore_read_installed() AS true", NULL};
    return store_install_once(con, "read functions",
                              "SELECT " STORE_READ_SCHEMA ".duckstore_read_installed()", prepare_install,
                              statements, err);
}

bool store_read_functions_use(duckdb_connection con, ds_error *err)
{
    return store_read_functions_install(con, err) &&
           store_exec(con, "SET search_path = 'main," STORE_READ_SCHEMA "'", err);
}
