#!/usr/bin/env bash
# Regenerates the seed corpus of the COPY decoder fuzz target from
# PostgreSQL's own binary COPY output: one query per column plan of
# tests/fuzz/harness_copy_decoder.c (same column types, same order), each
# saved twice: cut into one message per tuple as PostgreSQL sends them, and
# as a single message. Then the pgoutput target's: the messages of a
# logical replication slot (tests/fuzz/harness_pgoutput.c's frames) for
# inserts, updates, deletes, truncates and a logical message, in protocol 1
# binary and text and in protocol 2 with a streamed transaction. Needs a
# server started with wal_level=logical: scripts/with-test-pg.sh tests/fuzz/make-seeds.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/corpus/copy_decoder"
: "${DUCKSTORE_TEST_PG:?run through scripts/with-test-pg.sh}"
mkdir -p "$out"

plans=(
  # 0: every scalar kind
  "SELECT b::bool, i2::int2, i4::int4, i8::int8, o::oid, f4::float4, f8::float8, n1::numeric(4,2),
          n2::numeric(9,3), n3::numeric(18,6), n4::numeric(38,10), n5::numeric, t::text, j::json,
          jb::jsonb, by::bytea, d::date, tm::time, ts::timestamp, tz::timestamptz, iv::interval, u::uuid
   FROM (VALUES
     ('t', '1', '42', '9000000000', '4000000000', '1.5', '2.25', '12.34', '123456.789', '123456789012.345678',
      '1234567890123456789012345678.0123456789', '3.14159265358979323846264338327950288',
      'hello, wörld ✓', '{\"a\": [1, 2.5, null]}', '{\"b\": {\"c\": true}}', '\\x00ff10',
      '2024-02-29', '13:45:07.123456', '2024-02-29 13:45:07.123456', '2024-02-29 13:45:07.123456+02',
      '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
     (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL, NULL, NULL, NULL),
     ('f', '-32768', '-2147483648', '-9223372036854775808', '0', 'NaN', '-Infinity', '-99.99', '-999999.999',
      '-999999999999.999999', '-9999999999999999999999999999.9999999999', 'NaN', '', 'null', '[]', '\\x',
      '-infinity', '24:00:00', 'infinity', '-infinity', '-178000000 years', '00000000-0000-0000-0000-000000000000'),
     ('t', '32767', '2147483647', '9223372036854775807', '4294967295', '-0', 'Infinity', 'NaN', '0.001', '0.000001',
      '0.0000000001', '-Infinity', repeat('x', 300), '\"\\u00e9\"', '{\"k\": 1e300}', '\\xdeadbeef',
      '4713-01-01 BC', '00:00:00', '4713-01-01 00:00:00 BC', '294246-12-31 23:59:59.999999+00',
      '-1 days -00:00:00.000001', 'ffffffff-ffff-ffff-ffff-ffffffffffff'),
     ('f', '0', '0', '0', '1', '1e-45', '5e-324', '0', '0', '0', '0', '1e-1000', E'tab\\there\\nnewline', '{}', '0',
      '\\x00', '5874897-12-31', '23:59:59.999999', '1999-12-31 23:59:59.999999', '2000-01-01 00:00:00+00',
      '0', '12345678-1234-5678-1234-567812345678')
   ) AS v(b, i2, i4, i8, o, f4, f8, n1, n2, n3, n4, n5, t, j, jb, by, d, tm, ts, tz, iv, u)"
  # 1: a list of each kind
  "SELECT ab::bool[], ai2::int2[], ai4::int4[], ai8::int8[], at::text[], af4::float4[], af8::float8[],
          an::numeric(12,4)[], anu::numeric[], ad::date[], atm::time[], ats::timestamp[],
          atz::timestamptz[], aiv::interval[], au::uuid[], aj::json[], ajb::jsonb[], aby::bytea[], ao::oid[]
   FROM (VALUES
     ('{t,f,NULL}', '{1,-2,NULL}', '{1,2,3}', '{9000000000,NULL}', '{a,\"b c\",NULL,\"\",ünï}',
      '{1.5,NaN,Infinity}', '{-0,1e308}', '{12345678.1234,-0.0001,NaN,NULL}', '{1e-20,NaN,-Infinity,0}',
      '{2024-01-01,infinity,NULL}', '{00:00:00,23:59:59}', '{2024-01-01 00:00:00,-infinity}',
      '{2024-01-01 00:00:00+00,NULL}', '{\"1 day\",\"-2 hours\"}',
      '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}', ARRAY['{\"a\":1}'::json, NULL],
      ARRAY['[1,2]'::jsonb, 'null'::jsonb], '{\"\\\\\\\\x00\",NULL}', '{1,4294967295}'),
     ('{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}'),
     (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL),
     ('[0:1]={t,f}', '{7}', '[5:7]={1,2,3}', '{NULL}', '{NULL,NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}',
      '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', NULL, NULL, NULL, '{NULL}')
   ) AS v(ab, ai2, ai4, ai8, at, af4, af8, an, anu, ad, atm, ats, atz, aiv, au, aj, ajb, aby, ao)"
  # 2: one integer column, enough rows to fill more than one chunk
  "SELECT CASE WHEN g % 7 = 0 THEN NULL ELSE g * 37 END::int4 FROM generate_series(1, 2100) AS g"
  # 3: one text column
  "SELECT t::text FROM (VALUES ('plain'), (''), (NULL), (E'multi\\nline'), ('ünïcödé ✓ 🦆'),
          (repeat('long text ', 100))) AS v(t)"
  # 4: decimals at the edges of each storage width
  "SELECT a::numeric(1,0), b::numeric(4,4), c::numeric(5,0), d::numeric(18,18), e::numeric(19,0),
          f::numeric(38,0), g::numeric(38,38)
   FROM (VALUES ('9', '0.9999', '99999', '0.999999999999999999', '9999999999999999999',
                 '99999999999999999999999999999999999999', '0.99999999999999999999999999999999999999'),
                ('-9', '-0.9999', '-99999', '-0.999999999999999999', '-9999999999999999999',
                 '-99999999999999999999999999999999999999', '-0.99999999999999999999999999999999999999'),
                ('0', '0', '0', '0', '0', '0', '0'),
                ('1', '0.0001', '10000', '0.000000000000000001', '1000000000000000000',
                 '10000000000000000000000000000000000000', '0.00000000000000000000000000000000000001'),
                ('NaN', 'NaN', NULL, 'NaN', NULL, 'NaN', NULL)) AS v(a, b, c, d, e, f, g)"
  # 5: unconstrained numeric (DOUBLE) and float8
  "SELECT n::numeric, f::float8 FROM (VALUES ('0', '0'), ('1e-130', '1e-300'), ('-123456789.123456789', '-1.5'),
          ('1' || repeat('0', 300), '1e308'), ('NaN', 'NaN'), ('Infinity', 'Infinity'), ('-Infinity', '-Infinity'),
          ('0.' || repeat('0', 1000) || '1', '5e-324'), (repeat('9', 200) || '.' || repeat('9', 200), NULL),
          (NULL, NULL)) AS v(n, f)"
  # 6: lists spanning two chunks: mostly NULL, real lists around the boundary
  "SELECT CASE WHEN g BETWEEN 2040 AND 2060 OR g < 4 THEN ARRAY['x' || g, NULL, 'y'] END::text[],
          CASE WHEN g BETWEEN 2040 AND 2060 THEN ARRAY[g, g + 1] END::int4[]
   FROM generate_series(1, 2080) AS g"
  # 7: dates and times
  "SELECT d::date, ts::timestamp, tz::timestamptz, tm::time, iv::interval FROM (VALUES
     ('2000-01-01', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00', '00:00:00', '0'),
     ('1970-01-01', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '12:00:00', '1 microsecond'),
     ('infinity', 'infinity', 'infinity', '24:00:00', '178000000 years'),
     ('-infinity', '-infinity', '-infinity', '00:00:00.000001', '-178000000 years'),
     ('4713-01-01 BC', '4713-01-01 00:00:00 BC', '4713-01-01 00:00:00+00 BC', '23:59:59.999999', '1 mon -1 day'),
     ('5874897-12-31', '294246-12-31 23:59:59.999999', '294246-12-31 23:59:59.999999+00', NULL, NULL)
   ) AS v(d, ts, tz, tm, iv)"
)

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
for i in "${!plans[@]}"; do
  psql "$DUCKSTORE_TEST_PG" -X -q -v ON_ERROR_STOP=1 \
    -c "COPY (${plans[$i]}) TO STDOUT (FORMAT binary)" >"$tmp"
  { printf "\\x$(printf %02x "$i")\\x80"; cat "$tmp"; } >"$out/plan$i-per-tuple.bin"
  { printf "\\x$(printf %02x "$i")\\x00"; cat "$tmp"; } >"$out/plan$i-one-message.bin"
  echo "plan $i: $(wc -c <"$tmp") bytes of COPY data"
done

# ---- pgoutput ----------------------------------------------------------------
out="$here/corpus/pgoutput"
mkdir -p "$out"
db="fuzz_seeds_pgoutput_$$"
psql "$DUCKSTORE_TEST_PG" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db"
trap 'rm -f "$tmp"; psql "$DUCKSTORE_TEST_PG" -X -q -c "SELECT pg_drop_replication_slot(slot_name) FROM
  pg_replication_slots WHERE slot_name = '"'$db'"'" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1' EXIT
pg() { psql "$DUCKSTORE_TEST_PG dbname=$db" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
pg -c "SET synchronous_commit = on" -c "
  CREATE TABLE t (id int4 PRIMARY KEY, name text, score numeric(8,2), at timestamptz, note text);
  ALTER TABLE t ALTER note SET STORAGE EXTERNAL;
  CREATE TABLE f (k int8, v jsonb); ALTER TABLE f REPLICA IDENTITY FULL;
  CREATE TABLE big (id int4 PRIMARY KEY, pad text);
  CREATE PUBLICATION p FOR TABLE t, f, big;" -c "SELECT pg_create_logical_replication_slot('$db', 'pgoutput')" >/dev/null
pg -c "SET synchronous_commit = on" \
  -c "INSERT INTO t VALUES (1, 'one', 1.5, '2024-02-29 13:45:07+00', NULL), (2, 'twö', NULL, NULL, repeat('x', 3000))" \
  -c "UPDATE t SET name = 'uno', score = -2 WHERE id = 1" \
  -c "UPDATE t SET score = 3 WHERE id = 2" \
  -c "UPDATE t SET id = 3 WHERE id = 1" \
  -c "DELETE FROM t WHERE id = 3" \
  -c "BEGIN; INSERT INTO f VALUES (5, '{\"a\": [1, null]}'); UPDATE f SET v = '[]'; DELETE FROM f; COMMIT" \
  -c "SELECT pg_logical_emit_message(true, 'duckstore', 'hello')" \
  -c "TRUNCATE t, f RESTART IDENTITY CASCADE" \
  -c "INSERT INTO big SELECT g, repeat('p', 40) FROM generate_series(1, 1500) AS g" >/dev/null

# Frames of the slot's messages, first/last keeps a long stream under 16 kB.
seed() {
  local name="$1" options="$2" first="${3:-100000}"
  local hex
  hex="$(pg -c "SET logical_decoding_work_mem = '64kB'" -c "
    SELECT encode('\\x00'::bytea || string_agg(int2send(length(data)::int2) || data, ''::bytea ORDER BY n), 'hex')
    FROM (SELECT c.*, count(*) OVER () AS total
          FROM pg_logical_slot_peek_binary_changes('$db', NULL, NULL, $options)
               WITH ORDINALITY AS c(lsn, xid, data, n)) AS c
    WHERE n <= $first OR n > total - 6")"
  printf "$(sed 's/../\\x&/g' <<<"$hex")" >"$out/$name.bin"
  echo "pgoutput $name: $(wc -c <"$out/$name.bin") bytes"
}
seed proto1-binary "'proto_version', '1', 'publication_names', 'p', 'binary', 'true', 'messages', 'true'" 60
seed proto1-text "'proto_version', '1', 'publication_names', 'p', 'messages', 'true'" 60
seed proto2-streamed "'proto_version', '2', 'publication_names', 'p', 'binary', 'true', 'streaming', 'on'" 120
