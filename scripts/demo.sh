#!/usr/bin/env bash
# The main job on sample data: a throwaway PostgreSQL seeded with LLM traces
# and metric results (runbook shape), a full sync into DuckDB, new rows, an
# incremental sync, and the status. Run through `make demo`; everything it
# creates is removed on exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${DUCKSTORE_TEST_PG:-}" ]; then
  exec "$root/scripts/with-test-pg.sh" "$0" "$@"
fi

duckstore="$root/build/duckstore"
work="$(mktemp -d /tmp/duckstore-demo.XXXXXX)"
trap 'rm -rf "$work"' EXIT
traces="${DEMO_TRACES:-20000}"
api_port="${DEMO_PORT:-8500}"
pg_port="${DEMO_PG_PORT:-5433}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Seeding PostgreSQL with $traces traces and $((traces * 4)) metric results"
psql "$DUCKSTORE_TEST_PG" -q -v ON_ERROR_STOP=1 -v traces="$traces" -f "$root/scripts/sample-data.sql" >/dev/null

# The source URL comes from the environment, as in the runbook (${DB_PASSWORD}).
port="$(sed 's/.*port=\([0-9]*\).*/\1/' <<<"$DUCKSTORE_TEST_PG")"
export DB_PASSWORD="$DUCKSTORE_TEST_PG_PASSWORD"
mkdir -p "$work/config"
cat >"$work/config/duckdb.yaml" <<YAML
duckdb:
  path: $work/data/store.duckdb
  sync_mode: manual
  sync_workers: 2
YAML
cat >"$work/config/monitoring_db.yaml" <<YAML
monitoring_db:
  enabled: true
  auto_load: true
  url: "postgresql://postgres:\${DB_PASSWORD}@127.0.0.1:$port/postgres"

  dataset_query: |
    SELECT
      id,
      trace_id AS dataset_id,
      timestamp,
      prompt AS query,
      completion AS actual_output,
      deployment_env AS environment,
      service_name AS source_name,
      component_name AS source_component,
      response_time_ms AS latency,
      metadata,
      created_at
    FROM llm_traces
    ORDER BY timestamp DESC

  results_query: |
    SELECT
      id,
      trace_id AS dataset_id,
      metric_name,
      metric_value AS metric_score,
      metric_category,
      explanation,
      passed,
      created_at
    FROM llm_metric_results

  partition_column: "id"
  incremental_column: "created_at"
  refresh_interval_minutes: 15
  query_timeout: 120
YAML
ds() { "$duckstore" --config-dir "$work/config" "$@"; }

step "duckstore check-config (password masked)"
ds check-config | sed -n '/monitoring_db:/,/url:/p'

step "duckstore sync monitoring   (first sync: full rebuild, staging + atomic swap)"
ds sync monitoring

step "New rows arrive in PostgreSQL: 500 traces, 2000 results"
psql "$DUCKSTORE_TEST_PG" -q -c "SELECT add_sample_traces(500)" >/dev/null

step "duckstore sync monitoring   (incremental: WHERE created_at > watermark, append)"
ds sync monitoring

step "duckstore status --json"
ds status --json | jq '.datasets.monitoring_data | {state, rows, sync_type, last_incremental, incremental_rows, watermarks, refresh_interval_minutes, incremental_column, truncated}'

step "A dashboard query on DuckDB"
ds query "SELECT metric_name, count(*) AS results, round(avg(metric_score), 3) AS avg_score, round(avg(latency), 1) AS avg_latency_ms FROM monitoring_data GROUP BY metric_name ORDER BY metric_name" | column -t -s $'\t'

step "duckstore serve   (startup sync, 1-minute refresh, API on 127.0.0.1:$api_port, PostgreSQL protocol on 127.0.0.1:$pg_port)"
sed -i 's/sync_mode: manual/sync_mode: startup/' "$work/config/duckdb.yaml"
# PostgreSQL's protocol in front of the cache, for psql and every driver;
# the reader's password comes from the environment like the source's.
export READER_PASSWORD="demo-$RANDOM$RANDOM"
cat >>"$work/config/duckdb.yaml" <<YAML
  pg_listen: "127.0.0.1:$pg_port"
  pg_users:
    reader: "\${READER_PASSWORD}"
YAML
sed -i 's/refresh_interval_minutes: 15/refresh_interval_minutes: 1/' "$work/config/monitoring_db.yaml"
"$duckstore" --config-dir "$work/config" serve --listen "127.0.0.1:$api_port" 2>"$work/serve.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$api_port/health" >/dev/null && break; sleep 0.1; done
api="http://127.0.0.1:$api_port"
# Waits until the source is no longer syncing (the startup sync first).
settled() {
  for _ in $(seq 1 300); do
    state="$(curl -s "$api/api/store/status" | jq -r '.datasets.monitoring_data.state')"
    [ "$state" = ready ] || [ "$state" = error ] && return 0
    sleep 0.2
  done
}
settled
echo "\$ curl -X POST $api/api/store/sync/monitoring?full=true"
curl -s -X POST "$api/api/store/sync/monitoring?full=true"; echo
echo "\$ curl $api/api/store/status | jq '.datasets.monitoring_data'"
settled
curl -s "$api/api/store/status" | jq '.datasets.monitoring_data | {state, rows, sync_type, watermarks}'
echo "\$ curl $api/metrics   (per table: rows, bytes read, age of the newest data)"
curl -s "$api/metrics" | grep -E '^duckstore_(table_rows|bytes_read_total|data_age_seconds)'
echo "\$ grep sync serve.log   (each sync named by what started it: startup, scheduled, manual)"
grep -E ': sync started|sync done|sync failed' "$work/serve.log"

pg="host=127.0.0.1 port=$pg_port user=reader dbname=cache sslmode=disable"
step "psql against the cache   (PostgreSQL's protocol: SCRAM login, reads only)"
show_psql() {
  echo "\$ psql \"$pg\" -c \"$1\""
  PGPASSWORD="$READER_PASSWORD" psql -X "$pg" -c "$1" 2>&1 || true
}
show_psql "SHOW server_version"
show_psql "SELECT metric_name, count(*) AS results, round(avg(metric_score), 3) AS avg_score FROM monitoring_data GROUP BY metric_name ORDER BY metric_name"
show_psql "DELETE FROM monitoring_results"

commands="  curl -X POST \"$api/api/store/sync/monitoring\"                  # incremental sync
  curl -X POST \"$api/api/store/sync/monitoring?full=true\"        # forced full rebuild
  curl -X POST \"$api/api/store/sync/monitoring/reset-watermark\"  # next sync is full
  curl \"$api/api/store/status\" | jq '.datasets.monitoring_data'
  curl \"$api/metrics\"
  $api/                                     # the status page, in a browser
  PGPASSWORD=$READER_PASSWORD psql \"$pg\"   # any PostgreSQL client"
if [ -t 0 ] && [ -z "${CI:-}" ]; then
  printf '\nThe server keeps running (log: %s). Try the runbook'"'"'s commands:\n%s\n' "$work/serve.log" "$commands"
  step "A psql session against the cache (quit with \\q; then Ctrl-C stops the server)"
  PGPASSWORD="$READER_PASSWORD" psql -X "$pg" || true
  echo "Press Ctrl-C to stop the server and clean up."
  wait "$server" || true
  printf '\nDone. The server, the throwaway PostgreSQL and the demo files are removed now.\n'
else
  printf '\nNo terminal (or CI is set): the demo does not wait, so the server stops now and the throwaway\n'
  printf 'PostgreSQL and the demo files are removed. Run `make demo` in a terminal to keep the server\n'
  printf 'running at %s until Ctrl-C, and try the runbook'"'"'s commands:\n%s\n' "$api" "$commands"
fi
