#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL server: initdb in a temp
# directory, start on a free loopback port, export its connection string as
# DUCKSTORE_TEST_PG, run the command, then stop the server and delete the
# directory, also when the command fails or the run is interrupted.
#
#   scripts/with-test-pg.sh ctest --test-dir build
#
# As root, the server runs as the `postgres` user (initdb refuses root).
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  echo "with-test-pg: no PostgreSQL server found; run scripts/install-deps.sh test" >&2
  exit 1
fi

run_as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  run_as_pg=(runuser -u postgres --)
fi

pg_dir="$(mktemp -d /tmp/duckstore-pg.XXXXXX)"
chmod 755 "$pg_dir"
[ "$(id -u)" -eq 0 ] && chown postgres: "$pg_dir"

cleanup() {
  # A standby a test started (tests/sync/test_late_commits) goes too.
  for standby in "$pg_dir"/standby*; do
    [ -d "$standby" ] && { "${run_as_pg[@]}" "$pg_bin/pg_ctl" -D "$standby" -m immediate -w stop >/dev/null 2>&1 || true; }
  done
  "${run_as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The password exists so tests can prove it never leaks into logs or output.
password="ds-test-$RANDOM$RANDOM-secret"
echo "$password" >"$pg_dir/pwfile"
[ "$(id -u)" -eq 0 ] && chown postgres: "$pg_dir/pwfile"
"${run_as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --pwfile="$pg_dir/pwfile" \
  --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$pg_dir/initdb.log" 2>&1 || {
  cat "$pg_dir/initdb.log" >&2
  exit 1
}
rm -f "$pg_dir/pwfile"
# Logical replication (change data capture) and its tests' slots. In
# postgresql.conf rather than on the command line: a standby that
# pg_basebackup copies from this server (tests/sync/test_late_commits)
# needs max_wal_senders at least the primary's, and gets it from the copy.
printf '%s\n' "wal_level = logical" "max_replication_slots = 40" "max_wal_senders = 40" \
  >>"$pg_dir/data/postgresql.conf"

started=0
for _ in $(seq 1 20); do
  port=$((20000 + RANDOM % 40000))
  if "${run_as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 30 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $pg_dir -c fsync=off -c synchronous_commit=off \
        -c full_page_writes=off -c max_connections=200 -c max_prepared_transactions=10 -c shared_buffers=256MB \
        -c wal_level=logical -c max_replication_slots=40 -c max_wal_senders=40" >/dev/null 2>&1; then
    started=1
    break
  fi
done
if [ "$started" -ne 1 ]; then
  echo "with-test-pg: could not start PostgreSQL; server log:" >&2
  cat "$pg_dir/server.log" >&2 || true
  exit 1
fi

export DUCKSTORE_TEST_PG="host=127.0.0.1 port=$port user=postgres password=$password dbname=postgres"
export DUCKSTORE_TEST_PG_PASSWORD="$password"
export DUCKSTORE_TEST_PG_BIN="$pg_bin"
export DUCKSTORE_TEST_PG_DATA="$pg_dir/data"
echo "with-test-pg: PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
set +e
"$@"
status=$?
set -e
exit "$status"
