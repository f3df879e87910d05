/* Values on PostgreSQL's wire, compared with PostgreSQL itself: each case
 * is a DuckDB expression and the PostgreSQL expression of the same value;
 * the type OID and typmod pgvalues describes the column with, and the text
 * and binary fields it writes, must equal what the harness PostgreSQL 15
 * reports and sends for its expression (PQftype, PQfmod, the text result,
 * the binary result), byte for byte. Parameters go the other way: the text
 * and binary forms PostgreSQL sends of a value, bound into DuckDB, must
 * come back as the same value. */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgwire/pgvalues.h"

static char *g_conninfo;
static PGconn *g_pg;
static duckdb_database g_db;
static duckdb_connection g_con;
static int g_failures;

/* ---- DuckDB's side ------------------------------------------------------ */

/* The field pgv_put writes for the first value of `SELECT <expr>`: *len -1
 * for NULL, else the bytes (malloc'd, kept). */
typedef struct field {
    pgv_type type;
    int32_t len;
    char *bytes;
    char error[1200];
} field;

static void field_of_result(duckdb_result *res, const pgv_session *s, bool binary, field *f)
{
    memset(f, 0, sizeof *f);
    duckdb_logical_type t = duckdb_column_logical_type(res, 0);
    f->type = pgv_type_of(t);
    ds_error err = {0};
    pgv_column *c = pgv_column_new(t, s, binary, &err);
    duckdb_destroy_logical_type(&t);
    if (!c) {
        snprintf(f->error, sizeof f->error, "pgv_column_new: %s", err.msg);
        return;
    }
    duckdb_data_chunk chunk = duckdb_fetch_chunk(*res);
    assert_non_null(chunk);
    ds_buf out = DS_BUF_INIT;
    if (!pgv_put(c, duckdb_data_chunk_get_vector(chunk, 0), 0, &out, &err)) {
        snprintf(f->error, sizeof f->error, "pgv_put: %s", err.msg);
    } else {
        assert_true(out.len >= 4);
        const uint8_t *p = (const uint8_t *)out.data;
        f->len = (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
        assert_int_equal(out.len, 4 + (f->len < 0 ? 0 : (size_t)f->len));
        f->bytes = tl_keep(malloc((size_t)(f->len < 0 ? 0 : f->len) + 1));
        if (f->len > 0)
            memcpy(f->bytes, out.data + 4, (size_t)f->len);
        f->bytes[f->len < 0 ? 0 : f->len] = '\0';
    }
    ds_buf_free(&out);
    duckdb_destroy_data_chunk(&chunk);
    pgv_column_free(c);
}

static void duck_field(const char *expr, const pgv_session *s, bool binary, field *f)
{
    duckdb_result res;
    char *sql = tl_keepf("SELECT %s", expr);
    if (duckdb_query(g_con, sql, &res) != DuckDBSuccess)
        fail_msg("DuckDB: %s: %s", sql, duckdb_result_error(&res));
    field_of_result(&res, s, binary, f);
    duckdb_destroy_result(&res);
}

/* ---- PostgreSQL's side -------------------------------------------------- */

static void pg_field(const char *expr, const char *timezone, int extra_float_digits, bool binary, field *f)
{
    memset(f, 0, sizeof *f);
    tl_pg_exec(g_pg, "SET TimeZone = '%s'", timezone);
    tl_pg_exec(g_pg, "SET extra_float_digits = %d", extra_float_digits);
    char *sql = tl_keepf("SELECT %s", expr);
    PGresult *r = PQexecParams(g_pg, sql, 0, NULL, NULL, NULL, NULL, binary ? 1 : 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("PostgreSQL: %s: %s", sql, PQerrorMessage(g_pg));
    f->type.oid = PQftype(r, 0);
    f->type.typmod = PQfmod(r, 0);
    f->type.typlen = (int16_t)PQfsize(r, 0);
    if (PQgetisnull(r, 0, 0)) {
        f->len = -1;
        f->bytes = tl_keep(strdup(""));
    } else {
        f->len = PQgetlength(r, 0, 0);
        f->bytes = tl_keep(malloc((size_t)f->len + 1));
        memcpy(f->bytes, PQgetvalue(r, 0, 0), (size_t)f->len);
        f->bytes[f->len] = '\0';
    }
    PQclear(r);
}

static char *hex(const field *f)
{
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "(%d)", f->len);
    for (int32_t i = 0; i < f->len; i++)
        ds_buf_appendf(&b, " %02x", (uint8_t)f->bytes[i]);
    return tl_keep(ds_buf_take(&b));
}

/* Compares DuckDB's expr with PostgreSQL's pg_expr, in text and binary,
 * in the session's zone and extra_float_digits; prints each difference. */
static void check_in(const char *timezone, int extra_float_digits, const char *expr, const char *pg_expr)
{
    pgv_session s = {timezone, extra_float_digits};
    for (int binary = 0; binary <= 1; binary++) {
        field ours, theirs;
        duck_field(expr, &s, binary, &ours);
        pg_field(pg_expr, timezone, extra_float_digits, binary, &theirs);
        const char *what = binary ? "binary" : "text";
        if (ours.error[0]) {
            print_message("MISMATCH %s [%s, %s]: %s\n", expr, what, timezone, ours.error);
            g_failures++;
            continue;
        }
        if (!binary && (ours.type.oid != theirs.type.oid || ours.type.typmod != theirs.type.typmod ||
                        ours.type.typlen != theirs.type.typlen)) {
            print_message("MISMATCH %s: type %u/%d/%d, PostgreSQL's %s is %u/%d/%d\n", expr, ours.type.oid,
                          ours.type.typmod, ours.type.typlen, pg_expr, theirs.type.oid, theirs.type.typmod,
                          theirs.type.typlen);
            g_failures++;
        }
        if (ours.len != theirs.len ||
            (ours.len > 0 && memcmp(ours.bytes, theirs.bytes, (size_t)ours.len) != 0)) {
            if (binary)
                print_message("MISMATCH %s [binary, %s]: %s, PostgreSQL's %s: %s\n", expr, timezone,
                              hex(&ours), pg_expr, hex(&theirs));
            else
                print_message("MISMATCH %s [text, %s]: \"%s\", PostgreSQL's %s: \"%s\"\n", expr, timezone,
                              ours.bytes, pg_expr, theirs.bytes);
            g_failures++;
        }
    }
}

static void check(const char *expr, const char *pg_expr)
{
    check_in("UTC", 1, expr, pg_expr);
}

static void end_of_cases(void)
{
    int failures = g_failures;
    g_failures = 0;
    tl_free_kept();
    assert_int_equal(failures, 0);
}

/* ---- results ------------------------------------------------------------ */

static void test_bool_and_integers(void **state)
{
    (void)state;
    check("true", "true");
    check("false", "false");
    check("NULL::BOOLEAN", "NULL::boolean");
    check("42::TINYINT", "42::int2");
    check("(-128)::TINYINT", "(-128)::int2");
    check("(-32768)::SMALLINT", "(-32768)::int2");
    check("2147483647::INTEGER", "2147483647::int4");
    check("(-2147483648)::INTEGER", "(-2147483648)::int4");
    check("(-9223372036854775808)::BIGINT", "(-9223372036854775808)::int8");
    check("9223372036854775807::BIGINT", "9223372036854775807::int8");
    check("255::UTINYINT", "255::int2");
    check("65535::USMALLINT", "65535::int4");
    check("4294967295::UINTEGER", "4294967295::int8");
    check("18446744073709551615::UBIGINT", "18446744073709551615::numeric");
    check("170141183460469231731687303715884105727::HUGEINT",
          "170141183460469231731687303715884105727::numeric");
    check("(-170141183460469231731687303715884105727)::HUGEINT",
          "(-170141183460469231731687303715884105727)::numeric");
    check("0::HUGEINT", "0::numeric");
    check("340282366920938463463374607431768211455::UHUGEINT",
          "340282366920938463463374607431768211455::numeric");
    check("NULL::INTEGER", "NULL::int4");
    end_of_cases();
}

static void test_numeric(void **state)
{
    (void)state;
    check("12.34::DECIMAL(12,4)", "12.34::numeric(12,4)");
    check("(-12.34)::DECIMAL(12,4)", "(-12.34)::numeric(12,4)");
    check("0::DECIMAL(10,2)", "0::numeric(10,2)");
    check("(-0.0001)::DECIMAL(5,4)", "(-0.0001)::numeric(5,4)");
    check("0.5::DECIMAL(3,1)", "0.5::numeric(3,1)");
    check("1234::DECIMAL(4,0)", "1234::numeric(4,0)");
    check("10000::DECIMAL(9,0)", "10000::numeric(9,0)");
    check("100000000.00000001::DECIMAL(18,8)", "100000000.00000001::numeric(18,8)");
    check("12345678901234567890.123456789012345678::DECIMAL(38,18)",
          "12345678901234567890.123456789012345678::numeric(38,18)");
    check("(-99999999999999999999999999999999999999)::DECIMAL(38,0)",
          "(-99999999999999999999999999999999999999)::numeric(38,0)");
    check("0.00000000000000000000000000000000000001::DECIMAL(38,38)",
          "0.00000000000000000000000000000000000001::numeric(38,38)");
    check("1.10::DECIMAL(10,2)", "1.10::numeric(10,2)");
    end_of_cases();
}

static void test_floats(void **state)
{
    (void)state;
    const char *doubles[] = {"0.1",
                             "-0.0",
                             "0",
                             "1",
                             "100",
                             "1e15",
                             "1e14",
                             "123456789012345.6",
                             "1234567890123456",
                             "0.0001",
                             "0.00001",
                             "1.5e-7",
                             "1e100",
                             "1.7976931348623157e308",
                             "5e-324",
                             "2.2250738585072014e-308",
                             "3.141592653589793",
                             "-273.15",
                             "'NaN'",
                             "'Infinity'",
                             "'-Infinity'",
                             "0.30000000000000004",
                             "9007199254740993",
                             "123.456e-10"};
    for (size_t i = 0; i < sizeof doubles / sizeof doubles[0]; i++) {
        for (int efd = -15; efd <= 3; efd += 3)
            check_in("UTC", efd, tl_keepf("%s::DOUBLE", doubles[i]), tl_keepf("%s::float8", doubles[i]));
        check_in("UTC", 1, tl_keepf("%s::DOUBLE", doubles[i]), tl_keepf("%s::float8", doubles[i]));
    }
    const char *floats[] = {"1e6",    "123456",   "1234567",    "0.1",        "3.4028235e38",
                            "1e-45",  "16777217", "0.00012345", "'NaN'",      "-0.0",
                            "1.5e-7", "100",      "3.14159",    "'-Infinity'"};
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++)
        for (int efd = -6; efd <= 3; efd++)
            check_in("UTC", efd, tl_keepf("%s::FLOAT", floats[i]), tl_keepf("%s::float4", floats[i]));
    end_of_cases();
}

static void test_text_bytea_uuid_json_bits(void **state)
{
    (void)state;
    check("'héllo wörld'", "'héllo wörld'::text");
    check("''", "''::text");
    check("'a long text that does not fit inline in a DuckDB string'",
          "'a long text that does not fit inline in a DuckDB string'::text");
    check("'{\"a\": [1, 2.50, null]}'::JSON", "'{\"a\": [1, 2.50, null]}'::json");
    check("'\\x00\\xFF\\x41'::BLOB", "'\\x00ff41'::bytea");
    check("''::BLOB", "''::bytea");
    check("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid");
    check("'00000000-0000-0000-0000-000000000000'::UUID", "'00000000-0000-0000-0000-000000000000'::uuid");
    check("'ffffffff-ffff-ffff-ffff-ffffffffffff'::UUID", "'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid");
    check("'7fffffff-0000-0000-0000-000000000001'::UUID", "'7fffffff-0000-0000-0000-000000000001'::uuid");
    check("'0101'::BIT", "B'0101'::varbit");
    check("'101010101'::BIT", "B'101010101'::varbit");
    check("'11111111'::BIT", "B'11111111'::varbit");
    end_of_cases();
}

static void test_dates_and_times(void **state)
{
    (void)state;
    check("DATE '2024-02-29'", "DATE '2024-02-29'");
    check("DATE '2000-01-01'", "DATE '2000-01-01'");
    check("DATE '1970-01-01'", "DATE '1970-01-01'");
    check("DATE '1899-12-31'", "DATE '1899-12-31'");
    check("DATE '0001-01-01'", "DATE '0001-01-01'");
    check("DATE '0044-03-15 (BC)'", "DATE '0044-03-15 BC'");
    check("DATE '0001-12-31 (BC)'", "DATE '0001-12-31 BC'");
    check("DATE '12345-06-07'", "DATE '12345-06-07'");
    /* the longest texts: a 7-digit year, and BC */
    check("DATE '5874897-12-31'", "DATE '5874897-12-31'");
    check("DATE '4713-01-01 (BC)'", "DATE '4713-01-01 BC'");
    check("'infinity'::DATE", "'infinity'::date");
    check("'-infinity'::DATE", "'-infinity'::date");
    check("TIME '04:05:06.789'", "TIME '04:05:06.789'");
    check("TIME '00:00:00'", "TIME '00:00:00'");
    check("TIME '23:59:59.999999'", "TIME '23:59:59.999999'");
    check("TIMETZ '04:05:06+02:30'", "TIMETZ '04:05:06+02:30'");
    check("TIMETZ '04:05:06.5-08'", "TIMETZ '04:05:06.5-08'");
    check("TIMETZ '04:05:06+00'", "TIMETZ '04:05:06+00'");
    check("TIMESTAMP '2024-01-02 03:04:05.123456'", "TIMESTAMP '2024-01-02 03:04:05.123456'");
    check("TIMESTAMP '2024-01-02 03:04:05'", "TIMESTAMP '2024-01-02 03:04:05'");
    check("TIMESTAMP '1999-12-31 23:59:59.5'", "TIMESTAMP '1999-12-31 23:59:59.5'");
    check("TIMESTAMP '1900-01-01 00:00:00.000001'", "TIMESTAMP '1900-01-01 00:00:00.000001'");
    check("DATE '0044-03-15 (BC)' + TIME '12:00:00'", "TIMESTAMP '0044-03-15 12:00:00 BC'");
    check("TIMESTAMP '294246-12-31 23:59:59.999999'", "TIMESTAMP '294246-12-31 23:59:59.999999'");
    check("'infinity'::TIMESTAMP", "'infinity'::timestamp");
    check("'-infinity'::TIMESTAMP", "'-infinity'::timestamp");
    check("'2024-01-02 03:04:05'::TIMESTAMP_S", "'2024-01-02 03:04:05'::timestamp(0)");
    check("'2024-01-02 03:04:05.123'::TIMESTAMP_MS", "'2024-01-02 03:04:05.123'::timestamp(3)");
    check("'2024-01-02 03:04:05.123456789'::TIMESTAMP_NS", "'2024-01-02 03:04:05.123456'::timestamp");
    end_of_cases();
}

static void test_timestamptz_in_session_zone(void **state)
{
    (void)state;
    const char *zones[] = {"UTC",
                           "Europe/Paris",
                           "America/New_York",
                           "America/St_Johns",
                           "Asia/Kolkata",
                           "Australia/Lord_Howe",
                           "Africa/Monrovia",
                           "Pacific/Chatham",
                           "Asia/Kathmandu",
                           "America/Sao_Paulo",
                           "Etc/GMT+5",
                           "EST5EDT"};
    const char *instants[] = {
        "2024-01-15 12:00:00+00", "2024-07-01 12:00:00.25+00", "2024-03-31 00:59:59+00",
        "2024-03-31 01:00:00+00", "2024-10-27 00:30:00+00",    "1960-06-01 00:00:00+00",
        "1800-01-01 00:00:00+00", "1900-01-01 00:00:00+00",    "2100-07-01 12:00:00+00",
        "2300-01-01 00:00:00+00", "1970-01-01 00:00:00+00",    "2038-01-19 03:14:08+00"};
    for (size_t z = 0; z < sizeof zones / sizeof zones[0]; z++)
        for (size_t i = 0; i < sizeof instants / sizeof instants[0]; i++)
            check_in(zones[z], 1, tl_keepf("TIMESTAMPTZ '%s'", instants[i]),
                     tl_keepf("TIMESTAMPTZ '%s'", instants[i]));
    check_in("Europe/Paris", 1, "'infinity'::TIMESTAMPTZ", "'infinity'::timestamptz");
    /* zone names are found without regard to case, as PostgreSQL finds them */
    check_in("america/new_york", 1, "TIMESTAMPTZ '2024-07-01 12:00:00+00'",
             "TIMESTAMPTZ '2024-07-01 12:00:00+00'");
    check_in("Europe/Paris", 1, "(DATE '0044-03-15 (BC)' + TIME '12:00:00')::TIMESTAMPTZ",
             "TIMESTAMPTZ '0044-03-15 12:00:00+00 BC'");
    end_of_cases();
}

static void test_unknown_time_zone_is_refused(void **state)
{
    (void)state;
    duckdb_result res;
    assert_int_equal(duckdb_query(g_con, "SELECT TIMESTAMPTZ '2024-01-01 00:00:00+00'", &res), DuckDBSuccess);
    duckdb_logical_type t = duckdb_column_logical_type(&res, 0);
    const char *bad[] = {"Nowhere/Land", "../../../../etc/passwd", "/etc/localtime",
                         "Europe/../../etc/passwd", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pgv_session s = {bad[i], 1};
        ds_error err = {0};
        pgv_column *c = pgv_column_new(t, &s, false, &err);
        if (!bad[i][0]) { /* an empty zone is the default, UTC */
            assert_non_null(c);
            pgv_column_free(c);
            continue;
        }
        assert_null(c);
        tl_assert_contains(err.msg, "time zone");
        tl_assert_contains(err.msg, bad[i]);
    }
    duckdb_destroy_logical_type(&t);
    duckdb_destroy_result(&res);
}

static void test_intervals(void **state)
{
    (void)state;
    const char *intervals[] = {"1 year 2 months 3 days 04:05:06.789",
                               "0 seconds",
                               "-1 days",
                               "3 months",
                               "1 month",
                               "-3 months",
                               "14 months",
                               "-14 months",
                               "100 hours",
                               "1 day -02:00:00",
                               "-1 day 02:00:00",
                               "1 year -1 month",
                               "-00:00:01.5",
                               "00:00:00.000001",
                               "2 days 1 second",
                               "-2 years -3 days -04:00:00"};
    for (size_t i = 0; i < sizeof intervals / sizeof intervals[0]; i++)
        check(tl_keepf("INTERVAL '%s'", intervals[i]), tl_keepf("INTERVAL '%s'", intervals[i]));
    check("to_months(-1) + to_days(1) + to_hours(-1)", "INTERVAL '-1 month 1 day -1 hour'");
    end_of_cases();
}

static void test_arrays(void **state)
{
    (void)state;
    check("[1, NULL, 3]::INTEGER[]", "ARRAY[1, NULL, 3]::int4[]");
    check("[]::INTEGER[]", "'{}'::int4[]");
    check("[[1, 2], [3, 4]]::INTEGER[][]", "'{{1,2},{3,4}}'::int4[]");
    check("[1, 2]::BIGINT[]", "ARRAY[1, 2]::int8[]");
    check("[true, false, NULL]", "ARRAY[true, false, NULL]");
    check("['a', 'b c', '', 'NULL', 'null', 'x\"y', 'back\\slash', '{}', 'a,b', 'tab\t']::VARCHAR[]",
          "ARRAY['a', 'b c', '', 'NULL', 'null', 'x\"y', 'back\\slash', '{}', 'a,b', E'tab\\t']::text[]");
    check("[1.5, -2.25]::DECIMAL(5,2)[]", "ARRAY[1.5, -2.25]::numeric(5,2)[]");
    check("[0.1::DOUBLE, 'NaN'::DOUBLE, '-Infinity'::DOUBLE]", "ARRAY[0.1, 'NaN', '-Infinity']::float8[]");
    check("[TIMESTAMP '2024-01-01 00:00:00', NULL]", "ARRAY[TIMESTAMP '2024-01-01 00:00:00', NULL]");
    check("[DATE '2024-01-01']", "ARRAY[DATE '2024-01-01']");
    check("['\\x01\\x02'::BLOB]", "ARRAY['\\x0102'::bytea]");
    check("['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID]",
          "ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]");
    check("[INTERVAL '1 day 02:00:00']", "ARRAY[INTERVAL '1 day 02:00:00']");
    check("[1, 2, 3]::INTEGER[3]", "ARRAY[1, 2, 3]::int4[]");
    check("['{\"a\": 1}'::JSON]", "ARRAY['{\"a\": 1}'::json]");
    check_in("Asia/Kolkata", 1, "[TIMESTAMPTZ '2024-01-01 00:00:00+00']",
             "ARRAY[TIMESTAMPTZ '2024-01-01 00:00:00+00']");
    end_of_cases();
}

/* Types PostgreSQL has no counterpart for are text, in DuckDB's own form. */
static void test_nested_types_as_duckdb_text(void **state)
{
    (void)state;
    const char *exprs[] = {
        "{'a': 1, 'b': NULL}",
        "MAP {1: 10, 2: 20}",
        "{'x': [1, 2], 'y': {'z': true}}",
        "{'s': 'hi', 'q': 'it''s', 'e': '', 'n': NULL, 'l': ['a b', 'c', NULL, 'x,y', ' lead', 'Null']}",
        "{'k k': 1, 'it''s': 2, 'd': DATE '2024-01-01', 'dec': 1.50::DECIMAL(5,2)}",
        "MAP {'k': 'v w', 'x=y': '[z]'}",
        "{'a': 'back\\slash'}",
        "union_value(num := 2)::UNION(num INTEGER, str VARCHAR)"};
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        char *expected = tl_duck_scalar(g_con, "SELECT CAST(%s AS VARCHAR)", exprs[i]);
        pgv_session s = {"UTC", 1};
        for (int binary = 0; binary <= 1; binary++) {
            field f;
            duck_field(exprs[i], &s, binary, &f);
            assert_string_equal(f.error, "");
            assert_int_equal(f.type.oid, 25);
            assert_string_equal(f.bytes, expected);
        }
        free(expected);
    }
    /* ENUM labels */
    tl_duck_exec(g_con, "CREATE TYPE IF NOT EXISTS mood AS ENUM ('sad', 'happy')");
    pgv_session s = {"UTC", 1};
    field f;
    duck_field("'happy'::mood", &s, false, &f);
    assert_int_equal(f.type.oid, 25);
    assert_string_equal(f.bytes, "happy");
    tl_free_kept();
}

/* Every row of a result of several chunks, with NULLs here and there (and
 * in lists), equals PostgreSQL's rows, field by field, in text and binary. */
static void test_many_rows_across_chunks(void **state)
{
    (void)state;
    const char *duck =
        "SELECT CASE WHEN i % 7 = 0 THEN NULL ELSE i END::INTEGER, "
        "CASE WHEN i % 5 = 0 THEN NULL ELSE [i, NULL, i * 2] END, (i * 0.37)::DOUBLE, "
        "'row ' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE TIMESTAMPTZ '2024-01-01 00:00:00+00' + "
        "i * INTERVAL '1 hour' END, (i * 1.25)::DECIMAL(12,2), i::DOUBLE / 7, i::DOUBLE * 1.1e-7, "
        "(i::DOUBLE / 3)::FLOAT, i::DOUBLE * 1e13 / 9 FROM range(0, 5000) t(i) ORDER BY t.i";
    const char *pg =
        "SELECT CASE WHEN i % 7 = 0 THEN NULL ELSE i END::int4, "
        "CASE WHEN i % 5 = 0 THEN NULL ELSE ARRAY[i, NULL, i * 2] END, (i * 0.37)::float8, "
        "'row ' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE TIMESTAMPTZ '2024-01-01 00:00:00+00' + "
        "i * INTERVAL '1 hour' END, (i * 1.25)::numeric(12,2), i::float8 / 7, i::float8 * 1.1e-7, "
        "(i::float8 / 3)::float4, i::float8 * 1e13 / 9 FROM generate_series(0::int8, 4999) g(i) "
        "ORDER BY g.i";
    tl_pg_exec(g_pg, "SET TimeZone = 'Europe/Paris'");
    tl_pg_exec(g_pg, "SET extra_float_digits = 3");
    pgv_session s = {"Europe/Paris", 3};
    for (int binary = 0; binary <= 1; binary++) {
        PGresult *r = PQexecParams(g_pg, pg, 0, NULL, NULL, NULL, NULL, binary);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        duckdb_result res;
        assert_int_equal(duckdb_query(g_con, duck, &res), DuckDBSuccess);
        idx_t ncols = duckdb_column_count(&res);
        assert_int_equal(ncols, (idx_t)PQnfields(r));
        pgv_column *cols[16];
        for (idx_t c = 0; c < ncols; c++) {
            duckdb_logical_type t = duckdb_column_logical_type(&res, c);
            ds_error err = {0};
            cols[c] = pgv_column_new(t, &s, binary, &err);
            assert_int_equal(pgv_type_of(t).oid, PQftype(r, (int)c));
            duckdb_destroy_logical_type(&t);
            assert_non_null(cols[c]);
        }
        int row = 0;
        ds_buf out = DS_BUF_INIT;
        for (;;) {
            duckdb_data_chunk chunk = duckdb_fetch_chunk(res);
            if (!chunk)
                break;
            idx_t n = duckdb_data_chunk_get_size(chunk);
            for (idx_t i = 0; i < n; i++, row++) {
                for (idx_t c = 0; c < ncols; c++) {
                    ds_error err = {0};
                    ds_buf_reset(&out);
                    if (!pgv_put(cols[c], duckdb_data_chunk_get_vector(chunk, c), i, &out, &err))
                        fail_msg("row %d column %d: %s", row, (int)c, err.msg);
                    const uint8_t *p = (const uint8_t *)out.data;
                    int32_t len =
                        (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
                    bool same = PQgetisnull(r, row, (int)c)
                                    ? len == -1
                                    : len == PQgetlength(r, row, (int)c) &&
                                          memcmp(out.data + 4, PQgetvalue(r, row, (int)c), (size_t)len) == 0;
                    if (!same) {
                        print_message("MISMATCH row %d column %d [%s]: \"%.*s\", PostgreSQL's \"%s\"\n", row,
                                      (int)c, binary ? "binary" : "text", len < 0 ? 4 : (int)len,
                                      len < 0 ? "NULL" : out.data + 4, PQgetvalue(r, row, (int)c));
                        g_failures++;
                    }
                }
            }
            duckdb_destroy_data_chunk(&chunk);
        }
        assert_int_equal(row, PQntuples(r));
        ds_buf_free(&out);
        for (idx_t c = 0; c < ncols; c++)
            pgv_column_free(cols[c]);
        duckdb_destroy_result(&res);
        PQclear(r);
    }
    end_of_cases();
}

/* ---- parameters --------------------------------------------------------- */

/* Binds v as $1 of `SELECT $1` (cast to DuckDB's cast when not "") and
 * returns the result's first field as text (kept), its type id in *id. */
static const char *bound_text(duckdb_value v, const char *cast, duckdb_type *id)
{
    duckdb_prepared_statement p;
    char *sql = tl_keepf("SELECT $1%s%s", *cast ? "::" : "", cast);
    if (duckdb_prepare(g_con, sql, &p) != DuckDBSuccess)
        fail_msg("prepare %s: %s", sql, duckdb_prepare_error(p));
    if (duckdb_bind_value(p, 1, v) != DuckDBSuccess)
        fail_msg("bind %s: %s", sql, duckdb_prepare_error(p));
    duckdb_result res;
    if (duckdb_execute_prepared(p, &res) != DuckDBSuccess)
        fail_msg("execute %s: %s", sql, duckdb_result_error(&res));
    *id = duckdb_column_type(&res, 0);
    pgv_session s = {"UTC", 1};
    field f;
    field_of_result(&res, &s, false, &f);
    duckdb_destroy_result(&res);
    duckdb_destroy_prepare(&p);
    if (f.error[0])
        fail_msg("%s: %s", sql, f.error);
    return f.len < 0 ? "NULL" : f.bytes;
}

/* The text and binary forms PostgreSQL sends of `pg_expr` (of type oid),
 * given as a parameter of that OID, must bind as a DuckDB value of type id
 * that prints as PostgreSQL prints pg_expr. */
static void param(uint32_t oid, const char *pg_expr, duckdb_type id)
{
    for (int binary = 0; binary <= 1; binary++) {
        field pg;
        pg_field(pg_expr, "UTC", 1, binary, &pg);
        field text;
        pg_field(pg_expr, "UTC", 1, false, &text);
        ds_error err = {0};
        duckdb_value v = pgv_param_value(oid, binary, pg.bytes, pg.len, &err);
        if (!v) {
            print_message("MISMATCH param %s [%s]: %s\n", pg_expr, binary ? "binary" : "text", err.msg);
            g_failures++;
            continue;
        }
        duckdb_type got;
        const char *back = bound_text(v, "", &got);
        duckdb_destroy_value(&v);
        if (got != id || strcmp(back, text.bytes) != 0) {
            print_message("MISMATCH param %s [%s]: bound as type %d \"%s\", expected type %d \"%s\"\n",
                          pg_expr, binary ? "binary" : "text", (int)got, back, (int)id, text.bytes);
            g_failures++;
        }
    }
}

static void test_params_round_trip(void **state)
{
    (void)state;
    param(21, "(-32768)::int2", DUCKDB_TYPE_SMALLINT);
    param(23, "2147483647::int4", DUCKDB_TYPE_INTEGER);
    param(20, "(-9223372036854775808)::int8", DUCKDB_TYPE_BIGINT);
    param(700, "3.14::float4", DUCKDB_TYPE_FLOAT);
    param(700, "'-Infinity'::float4", DUCKDB_TYPE_FLOAT);
    param(701, "0.1::float8", DUCKDB_TYPE_DOUBLE);
    param(701, "'NaN'::float8", DUCKDB_TYPE_DOUBLE);
    param(701, "1e308::float8", DUCKDB_TYPE_DOUBLE);
    param(1700, "12.3400::numeric", DUCKDB_TYPE_DECIMAL);
    param(1700, "(-0.5)::numeric", DUCKDB_TYPE_DECIMAL);
    param(1700, "0::numeric", DUCKDB_TYPE_DECIMAL);
    param(1700, "0.000::numeric", DUCKDB_TYPE_DECIMAL);
    param(1700, "10000::numeric", DUCKDB_TYPE_DECIMAL);
    param(1700, "123456789012345678901234567890.12345678::numeric", DUCKDB_TYPE_DECIMAL);
    param(1700, "0.00000000000000000000000000000000000001::numeric", DUCKDB_TYPE_DECIMAL);
    param(1700, "(-99999999999999999999999999999999999999)::numeric", DUCKDB_TYPE_DECIMAL);
    param(25, "'héllo wörld'::text", DUCKDB_TYPE_VARCHAR);
    param(25, "''::text", DUCKDB_TYPE_VARCHAR);
    param(1043, "'it''s'::varchar", DUCKDB_TYPE_VARCHAR);
    param(16, "true", DUCKDB_TYPE_BOOLEAN);
    param(16, "false", DUCKDB_TYPE_BOOLEAN);
    param(1082, "DATE '2024-02-29'", DUCKDB_TYPE_DATE);
    param(1082, "DATE '0044-03-15 BC'", DUCKDB_TYPE_DATE);
    param(1082, "'infinity'::date", DUCKDB_TYPE_DATE);
    param(1114, "TIMESTAMP '2024-01-02 03:04:05.123456'", DUCKDB_TYPE_TIMESTAMP);
    param(1114, "TIMESTAMP '1999-12-31 23:59:59'", DUCKDB_TYPE_TIMESTAMP);
    param(1114, "TIMESTAMP '0044-03-15 12:00:00 BC'", DUCKDB_TYPE_TIMESTAMP);
    param(1114, "'-infinity'::timestamp", DUCKDB_TYPE_TIMESTAMP);
    param(1184, "TIMESTAMPTZ '2024-01-02 03:04:05.5+05:30'", DUCKDB_TYPE_TIMESTAMP_TZ);
    param(1184, "TIMESTAMPTZ '1900-01-01 00:00:00+00'", DUCKDB_TYPE_TIMESTAMP_TZ);
    param(1184, "'infinity'::timestamptz", DUCKDB_TYPE_TIMESTAMP_TZ);
    param(1083, "TIME '04:05:06.789'", DUCKDB_TYPE_TIME);
    param(1186, "INTERVAL '1 year 2 mons 3 days 04:05:06.789'", DUCKDB_TYPE_INTERVAL);
    param(2950, "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid", DUCKDB_TYPE_UUID);
    param(2950, "'ffffffff-0000-0000-0000-000000000001'::uuid", DUCKDB_TYPE_UUID);
    param(17, "'\\x00ff41'::bytea", DUCKDB_TYPE_BLOB);
    param(17, "''::bytea", DUCKDB_TYPE_BLOB);
    end_of_cases();
}

/* What drivers send beyond PostgreSQL's own output: other spellings of the
 * same values, OID 0 (text, cast by DuckDB where it is used), NULL. */
static void test_params_other_spellings(void **state)
{
    (void)state;
    struct {
        uint32_t oid;
        const char *text;
        const char *cast; /* DuckDB type the bound value is read back as */
        const char *expected;
    } cases[] = {
        {16, "yes", "", "t"},
        {16, "OFF", "", "f"},
        {16, "1", "", "t"},
        {21, " 42 ", "", "42"},
        {701, "Infinity", "", "Infinity"},
        {701, "-1.5e-3", "", "-0.0015"},
        {1700, "1.5e3", "", "1500"},
        {1700, "-2.50E-2", "", "-0.0250"},
        {1700, "NaN", "", "NaN"},
        {1184, "2024-01-02T03:04:05Z", "", "2024-01-02 03:04:05+00"},
        {1184, "2024-01-02 03:04:05.123-08", "", "2024-01-02 11:04:05.123+00"},
        {1184, "2024-01-02 03:04:05+05:45:30", "", "2024-01-01 21:18:35+00"},
        {1114, "2024-01-02T03:04", "", "2024-01-02 03:04:00"},
        {1082, "+infinity", "", "infinity"},
        {2950, "{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11}", "", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
        {2950, "a0eebc999c0b4ef8bb6d6bb9bd380a11", "", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
        {17, "\\x00 FF", "", "\\x00ff"},
        {17, "ab\\\\c\\001", "", "\\x61625c6301"},
        {114, "{\"a\": 1}", "", "{\"a\": 1}"},
        {3802, "[1, 2]", "", "[1, 2]"},
        {0, "42", "INTEGER", "42"},
        {0, "2024-01-02 03:04:05+01", "TIMESTAMPTZ", "2024-01-02 02:04:05+00"},
        {705, "hello", "", "hello"},
        {1186, "-1 days +02:00:00", "", "-1 days +02:00:00"},
        {1186, "0 years 0 mons 1 days 2 hours 3 mins 4.5 secs", "", "1 day 02:03:04.5"},
        {1186, "1.5 days", "", "1 day 12:00:00"},
        {1186, "2 weeks ago", "", "-14 days"},
        {1186, "100:00:00.000001", "", "100:00:00.000001"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ds_error err = {0};
        duckdb_value v =
            pgv_param_value(cases[i].oid, 0, cases[i].text, (int32_t)strlen(cases[i].text), &err);
        if (!v) {
            print_message("MISMATCH param %u '%s': %s\n", cases[i].oid, cases[i].text, err.msg);
            g_failures++;
            continue;
        }
        duckdb_type id;
        const char *back = bound_text(v, cases[i].cast, &id);
        duckdb_destroy_value(&v);
        if (strcmp(back, cases[i].expected) != 0) {
            print_message("MISMATCH param %u '%s': \"%s\", expected \"%s\"\n", cases[i].oid, cases[i].text,
                          back, cases[i].expected);
            g_failures++;
        }
    }
    ds_error err = {0};
    duckdb_value v = pgv_param_value(23, 0, NULL, -1, &err);
    duckdb_type id;
    assert_non_null(v);
    assert_string_equal(bound_text(v, "INTEGER", &id), "NULL");
    duckdb_destroy_value(&v);
    end_of_cases();
}

/* Malformed parameters are refused with PostgreSQL's wording, naming the
 * type and the value; nothing is bound. */
static void test_params_refused(void **state)
{
    (void)state;
    struct {
        uint32_t oid;
        int format;
        const char *data;
        int32_t len;
        const char *message;
    } cases[] = {
        {23, 0, "12x", 3, "invalid input syntax for type integer: \"12x\""},
        {23, 0, "", 0, "invalid input syntax for type integer: \"\""},
        {21, 0, "40000", 5, "value \"40000\" is out of range for type smallint"},
        {20, 0, "9223372036854775808", 19, "out of range for type bigint"},
        {16, 0, "maybe", 5, "invalid input syntax for type boolean: \"maybe\""},
        {701, 0, "1e999", 5, "out of range for type double precision"},
        {700, 0, "1e39", 4, "out of range for type real"},
        {1700, 0, "1.2.3", 5, "invalid input syntax for type numeric: \"1.2.3\""},
        {1082, 0, "2024-02-30", 10, "date/time field value out of range: \"2024-02-30\""},
        {1114, 0, "yesterday-ish", 13, "invalid input syntax for type timestamp: \"yesterday-ish\""},
        {2950, 0, "a0eebc99", 8, "invalid input syntax for type uuid: \"a0eebc99\""},
        {17, 0, "\\xabc", 5, "invalid hexadecimal data: odd number of digits"},
        {25, 0, "a\0b", 3, "invalid byte sequence for encoding \"UTF8\": 0x00"},
        {25, 0, "\xff", 1, "invalid byte sequence for encoding \"UTF8\""},
        {23, 1, "\0\0\0", 3, "insufficient data left in message"},
        {20, 1, "\0\0\0\0", 4, "insufficient data left in message"},
        {1700, 1, "\0\1\0\0\0\0\0\0", 8, "insufficient data left in message"},
        {2950, 1, "0123456789", 10, "insufficient data left in message"},
        {600, 1, "\0\0\0\0", 4, "binary format of type OID 600 is not supported"},
        {23, 2, "1", 1, "format code 2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ds_error err = {0};
        duckdb_value v = pgv_param_value(cases[i].oid, cases[i].format, cases[i].data, cases[i].len, &err);
        if (v) {
            duckdb_destroy_value(&v);
            print_message("MISMATCH param %u '%.*s' was accepted\n", cases[i].oid, (int)cases[i].len,
                          cases[i].data);
            g_failures++;
        } else if (!strstr(err.msg, cases[i].message)) {
            print_message("MISMATCH param %u: \"%s\" does not say \"%s\"\n", cases[i].oid, err.msg,
                          cases[i].message);
            g_failures++;
        }
    }
    end_of_cases();
}

/* Hostile parameters (random bytes, and random mixes of the characters
 * the parsers look for) of every OID in both formats: each is a value or a
 * refusal with a message, never a crash or a read past its length (the
 * sanitizer build checks that: each input is a copy of exactly len bytes). */
static void test_params_hostile(void **state)
{
    (void)state;
    static const uint32_t oids[] = {0,    16,   17,   20,   21,   23,   25,   26,   114,  700, 701,
                                    1042, 1043, 1082, 1083, 1114, 1184, 1186, 1700, 2950, 3802};
    static const char alphabet[] = "0123456789+-.:eE \\xXTZ{}abcdefBCADinfityNaNyearmonsdayhoursecago";
    uint64_t seed = 0x9e3779b97f4a7c15u;
    int values = 0, refusals = 0;
    for (int round = 0; round < 20000; round++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        uint32_t oid = oids[seed % (sizeof oids / sizeof oids[0])];
        int format = (int)(seed >> 8) & 1;
        int32_t len = (int32_t)((seed >> 16) % 40);
        char *data = malloc((size_t)len + (len == 0)); /* exactly len bytes */
        assert_non_null(data);
        for (int32_t i = 0; i < len; i++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            data[i] = round % 2 ? (char)(seed & 0xff) : alphabet[seed % (sizeof alphabet - 1)];
        }
        ds_error err = {0};
        duckdb_value v = pgv_param_value(oid, format, data, len, &err);
        if (v) {
            values++;
            duckdb_destroy_value(&v);
        } else {
            refusals++;
            assert_true(err.msg[0] != '\0');
        }
        free(data);
    }
    assert_true(values > 0);
    assert_true(refusals > 0);
}

static void test_param_oids(void **state)
{
    (void)state;
    struct {
        const char *sql;
        uint32_t oid;
    } cases[] = {
        {"SELECT 1 WHERE 1::INTEGER = $1", 23},
        {"SELECT 1 WHERE 1::BIGINT = $1", 20},
        {"SELECT 1 WHERE 1::SMALLINT = $1", 21},
        {"SELECT 1 WHERE 1.5::DOUBLE = $1", 701},
        {"SELECT 1 WHERE 'a' = $1", 25},
        {"SELECT 1 WHERE DATE '2024-01-01' = $1", 1082},
        {"SELECT 1 WHERE now() = $1", 1184},
        {"SELECT 1 WHERE TIMESTAMP '2024-01-01' = $1", 1114},
        {"SELECT 1 WHERE true = $1", 16},
        {"SELECT 1 WHERE 1.5::DECIMAL(5,2) = $1", 1700},
        {"SELECT $1", 25},
        {"SELECT 1 WHERE uuid() = $1", 2950},
        {"SELECT 1 WHERE '\\x01'::BLOB = $1", 17},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        duckdb_prepared_statement p;
        if (duckdb_prepare(g_con, cases[i].sql, &p) != DuckDBSuccess)
            fail_msg("prepare %s: %s", cases[i].sql, duckdb_prepare_error(p));
        uint32_t oid = pgv_param_oid(duckdb_param_type(p, 1));
        duckdb_destroy_prepare(&p);
        if (oid != cases[i].oid) {
            print_message("MISMATCH %s: $1 described as %u, expected %u\n", cases[i].sql, oid, cases[i].oid);
            g_failures++;
        }
    }
    end_of_cases();
}

/* What PostgreSQL cannot carry is refused with the fix, not sent wrong. */
static void test_refused_results(void **state)
{
    (void)state;
    pgv_session s = {"UTC", 1};
    field f;
    /* lists of different lengths: text as DuckDB nests them, no binary
     * array (PostgreSQL arrays are rectangular) */
    duck_field("[[1], [2, 3]]", &s, false, &f);
    assert_string_equal(f.error, "");
    assert_string_equal(f.bytes, "{{1},{2,3}}");
    duck_field("[[1], [2, 3]]", &s, true, &f);
    tl_assert_contains(f.error, "rectangular");
    tl_assert_contains(f.error, "text format");
    duck_field("[[1], NULL]", &s, true, &f);
    tl_assert_contains(f.error, "NULL list");
    duck_field("12345678901234567890123456789012345678901234567890::BIGNUM", &s, false, &f);
    tl_assert_contains(f.error, "BIGNUM");
    tl_assert_contains(f.error, "cast it to VARCHAR");
    tl_free_kept();
}

/* ---- setup -------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    g_conninfo = strdup(tl_pg_fresh_db("pgvalues"));
    g_pg = tl_pg_connect(g_conninfo);
    tl_pg_exec(g_pg, "SET DateStyle = 'ISO, MDY'");
    tl_pg_exec(g_pg, "SET IntervalStyle = 'postgres'");
    if (duckdb_open(NULL, &g_db) != DuckDBSuccess || duckdb_connect(g_db, &g_con) != DuckDBSuccess)
        return -1;
    tl_duck_exec(g_con, "SET TimeZone = 'UTC'");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    duckdb_disconnect(&g_con);
    duckdb_close(&g_db);
    PQfinish(g_pg);
    free(g_conninfo);
    tl_free_kept();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bool_and_integers),
        cmocka_unit_test(test_numeric),
        cmocka_unit_test(test_floats),
        cmocka_unit_test(test_text_bytea_uuid_json_bits),
        cmocka_unit_test(test_dates_and_times),
        cmocka_unit_test(test_timestamptz_in_session_zone),
        cmocka_unit_test(test_unknown_time_zone_is_refused),
        cmocka_unit_test(test_intervals),
        cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_nested_types_as_duckdb_text),
        cmocka_unit_test(test_refused_results),
        cmocka_unit_test(test_many_rows_across_chunks),
        cmocka_unit_test(test_params_round_trip),
        cmocka_unit_test(test_params_other_spellings),
        cmocka_unit_test(test_params_refused),
        cmocka_unit_test(test_params_hostile),
        cmocka_unit_test(test_param_oids),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
