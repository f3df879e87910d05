# shellcheck shell=bash disable=SC2154 # the variables of bench/run.sh
# The read side of the benchmark, sourced by bench/run.sh once the bench
# data is generated and synced (it uses run.sh's configs, server and helpers).
#
# `duckstore serve` runs with the scheduler's incremental sync every 10 s
# while rows keep arriving in PostgreSQL (100 traces, 500 rows, a second),
# so the reads share the server with real syncs, as a dashboard does. Timed:
# - GET /api/store/data, first page, two filters and a search: p50/p99;
# - GET /api/store/metadata: p50/p99 of every request, and apart those
#   served from the cache and those that computed the document (the first
#   after each sync);
# - a dashboard aggregate through POST /api/store/query against the very
#   same SQL on PostgreSQL (views of the source queries there), runs
#   alternating, median of each; with variants that tell where the time
#   goes (without the view's join, the HTTP path alone).
# Each request is one curl (its own time_total: process start is not in
# it) or one psql (its \timing: the connection is not in it).

read_requests="${BENCH_READ_REQUESTS:-200}"
read_runs="${BENCH_READ_RUNS:-9}"
read_first=5       # metadata requests timed right after a sync's commit
reads="$work/reads.tsv" # name, milliseconds
: >"$reads"
writer_pid=""

read_agg_sql="SELECT metric_name, date_trunc('hour', timestamp) AS h, count(*) AS n, avg(metric_score) AS avg_score FROM monitoring_data GROUP BY 1, 2 ORDER BY 1, 2"
# The same buckets without DuckDB's ICU date_trunc on TIMESTAMP WITH TIME
# ZONE (time_bucket), and PostgreSQL's date_bin for it (both in UTC).
read_bucket_sql="SELECT metric_name, time_bucket(INTERVAL '1 hour', timestamp) AS h, count(*) AS n, avg(metric_score) AS avg_score FROM monitoring_data GROUP BY 1, 2 ORDER BY 1, 2"
read_pg_bucket_sql="SELECT metric_name, date_bin('1 hour', timestamp, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS h, count(*) AS n, avg(metric_score) AS avg_score FROM monitoring_data GROUP BY 1, 2 ORDER BY 1, 2"
# Hours as integers: no calendar work per row on either side.
read_epoch_sql="SELECT metric_name, epoch_us(timestamp) // 3600000000 AS h, count(*) AS n, avg(metric_score) AS avg_score FROM monitoring_data GROUP BY 1, 2 ORDER BY 1, 2"
read_pg_epoch_sql="SELECT metric_name, floor(extract(epoch FROM timestamp) / 3600) AS h, count(*) AS n, avg(metric_score) AS avg_score FROM monitoring_data GROUP BY 1, 2 ORDER BY 1, 2"
read_nojoin_sql="SELECT metric_name, date_trunc('hour', created_at) AS h, count(*) AS n, avg(metric_score) AS avg_score FROM monitoring_results GROUP BY 1, 2 ORDER BY 1, 2"
# prod is a third of the traces, faithfulness a quarter of the results;
# "ticket #42" is in one prompt of nine at 1M traces (#42, #420..., #4200...).
read_data_path="/api/store/data/monitoring_data?environment=prod&metric_name=faithfulness&search=ticket%20%2342"
# Where the data page's time goes: its count with its own WHERE (text
# columns cast, ILIKE with ESCAPE), without the search, and the search
# written as contains(lower(...)), which matches the same rows here.
read_filters="FROM monitoring_data WHERE CAST(environment AS VARCHAR) = 'prod' AND CAST(metric_name AS VARCHAR) = 'faithfulness'"
read_ilike_sql="SELECT count(*) $read_filters AND (CAST(query AS VARCHAR) ILIKE '%ticket #42%' ESCAPE '\\' OR CAST(actual_output AS VARCHAR) ILIKE '%ticket #42%' ESCAPE '\\')"
read_contains_sql="SELECT count(*) $read_filters AND (contains(lower(query), 'ticket #42') OR contains(lower(actual_output), 'ticket #42'))"
read_nosearch_sql="SELECT count(*) $read_filters"

read_fail() {
  echo "bench: $*" >&2
  [ ! -f "$work/server.log" ] || tail -n 20 "$work/server.log" >&2
  exit 1
}

# timed NAME CURL-ARGS...: one request that must answer 200; its time_total
# in ms goes to $reads, its body to $work/body.
timed() {
  local name="$1" out code t
  shift
  out="$(curl -s -o "$work/body" -w '%{http_code} %{time_total}' "$@")" || read_fail "$name: curl failed"
  read -r code t <<<"$out"
  [ "$code" = 200 ] || read_fail "$name answered $code: $(head -c 500 "$work/body")"
  printf '%s\t%s\n' "$name" "$(awk -v t="$t" 'BEGIN { printf "%.3f", t * 1000 }')" >>"$reads"
}

# query_timed NAME SQL: SQL through POST /api/store/query (JSON); also
# records the server's own elapsed_ms as NAME_server.
query_timed() {
  jq -n --arg sql "$2" '{sql: $sql}' >"$work/query.json"
  timed "$1" -X POST -H 'Content-Type: application/json' --data-binary @"$work/query.json" \
    "$server_url/api/store/query"
  [ "$(jq -r .truncated "$work/body")" = false ] || read_fail "$1: the answer was truncated"
  printf '%s_server\t%s\n' "$1" "$(jq -r .elapsed_ms "$work/body")" >>"$reads"
  read_rows="$(jq -r .row_count "$work/body")"
}

# pg_timed NAME SQL: the same SQL on PostgreSQL, psql's \timing of it.
pg_timed() {
  local out t
  out="$(PGTZ=UTC psql "$DUCKSTORE_TEST_PG" -X -q -At -v ON_ERROR_STOP=1 -c '\timing on' -c "$2")" ||
    read_fail "$1: psql failed"
  t="$(awk '/^Time: / { print $2 }' <<<"$out")"
  [ -n "$t" ] || read_fail "$1: psql printed no time"
  printf '%s\t%s\n' "$1" "$t" >>"$reads"
  read_rows="$(($(wc -l <<<"$out") - 1))"
}

# The cache's version the metadata is kept for: the source's status time.
data_version() {
  curl -sf -G "$server_url/api/store/query" --data-urlencode format=csv \
    --data-urlencode "sql=SELECT updated_at::VARCHAR AS v FROM _duckstore.sync_status WHERE source = 'monitoring'" |
    tail -n 1 | tr -d '\r'
}

# New rows while the reads run, so every scheduled sync has work to do.
read_writer() {
  while :; do
    psql "$DUCKSTORE_TEST_PG" -q -c "SELECT add_sample_traces(100)" >/dev/null || return 1
    sleep 1
  done
}
read_stop() {
  [ -n "$writer_pid" ] || return 0
  kill "$writer_pid" 2>/dev/null || true
  wait "$writer_pid" 2>/dev/null || true
  writer_pid=""
}
trap 'read_stop; server_stop; rm -rf "$work"' EXIT

# Polls /metrics until the server has finished more than COUNT successful
# syncs of monitoring; a failed sync ends the bench.
wait_syncs_above() {
  local deadline=$((SECONDS + 300))
  while :; do
    read_sync_counts
    [ "$syncs_failed" = 0 ] || read_fail "a scheduled sync failed"
    [ "$syncs_ok" -le "$1" ] || return 0
    [ "$SECONDS" -lt "$deadline" ] || read_fail "no scheduled sync finished within 300 s"
    sleep 0.1
  done
}

# The DuckDB view's join and the results table, as views of the source
# queries on PostgreSQL: the same SQL text runs on both sides.
read_pg_views() {
  psql "$DUCKSTORE_TEST_PG" -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET client_min_messages = warning;
DROP VIEW IF EXISTS monitoring_data, monitoring_results;
CREATE VIEW monitoring_results AS $results_query;
CREATE VIEW monitoring_data AS
  SELECT r.*, d."timestamp", d.query, d.actual_output, d.environment, d.source_name,
         d.source_component, d.latency, d.metadata
  FROM monitoring_results AS r LEFT JOIN ($dataset_query) AS d ON r.dataset_id = d.dataset_id;
SQL
}
read_pg_views_drop() {
  psql "$DUCKSTORE_TEST_PG" -q -c "DROP VIEW monitoring_data, monitoring_results" >/dev/null
}

read_cases() {
  write_config "$work/wr" 1
  echo "  refresh_interval_minutes: 0.16666667" >>"$work/wr/monitoring_db.yaml"
  read_pg_views

  log "read side: duckstore serve with an incremental sync every 10 s, 500 new rows a second"
  read_load_start="$(uptime | sed 's/.*load average: //')"
  read_rows_start="$(psql "$DUCKSTORE_TEST_PG" -qAt -c "SELECT count(*) FROM llm_metric_results")"
  server_start "$work/wr"
  read_writer &
  writer_pid=$!
  wait_syncs_above 0 # the scheduler's first sync
  read_sync_counts
  read_syncs_start="$syncs_ok"

  log "read side: $read_requests data pages"
  timed data_warm "$server_url$read_data_path"
  read_data_total="$(jq -r .total "$work/body")"
  [ "$(jq '.data | length' "$work/body")" -gt 0 ] || read_fail "the data page is empty"
  for _ in $(seq 1 "$read_requests"); do
    timed data "$server_url$read_data_path"
  done

  # Each request is classed by the version before and after it: the same
  # version, already computed: cached; the same, new: computed (first after
  # a sync); a sync committed meanwhile: unsure, and so is the next request.
  # When computing the document takes longer than the sync interval every
  # request computes it: the loop then stops after 10 minutes, and the
  # table shows how many requests it made.
  log "read side: $read_requests metadata requests"
  local known="" unsure=false v1 v2 ms class meta_deadline=$((SECONDS + 600))
  for _ in $(seq 1 "$read_requests"); do
    if [ "$SECONDS" -ge "$meta_deadline" ]; then
      log "read side: metadata requests stopped after 10 minutes"
      break
    fi
    v1="$(data_version)"
    timed meta "$server_url/api/store/metadata/monitoring_data"
    v2="$(data_version)"
    ms="$(tail -n 1 "$reads" | cut -f 2)"
    if [ "$v1" != "$v2" ] || $unsure; then
      class=meta_unsure
      if [ "$v1" != "$v2" ]; then unsure=true; else unsure=false; fi
    elif [ "$v1" != "$known" ]; then
      class=meta_first
    else
      class=meta_cached
    fi
    known="$v2"
    printf '%s\t%s\n' "$class" "$ms" >>"$reads"
  done
  log "read side: metadata right after $read_first syncs"
  for _ in $(seq 1 "$read_first"); do
    v1="$(data_version)"
    local deadline=$((SECONDS + 120))
    while [ "$(data_version)" = "$v1" ]; do
      [ "$SECONDS" -lt "$deadline" ] || read_fail "the data did not change within 120 s"
      sleep 0.05
    done
    timed meta_first "$server_url/api/store/metadata/monitoring_data"
    timed meta_second "$server_url/api/store/metadata/monitoring_data"
  done

  log "read side: the dashboard aggregate, $read_runs runs on each side"
  query_timed agg_warm "$read_agg_sql"
  read_agg_rows="$read_rows"
  pg_timed pg_agg_warm "$read_agg_sql"
  read_pg_agg_rows="$read_rows"
  query_timed bucket_warm "$read_bucket_sql"
  pg_timed pg_bucket_warm "$read_pg_bucket_sql"
  query_timed epoch_warm "$read_epoch_sql"
  pg_timed pg_epoch_warm "$read_pg_epoch_sql"
  query_timed nojoin_warm "$read_nojoin_sql"
  pg_timed pg_nojoin_warm "$read_nojoin_sql"
  for _ in $(seq 1 "$read_runs"); do
    query_timed agg "$read_agg_sql"
    pg_timed pg_agg "$read_agg_sql"
    query_timed bucket "$read_bucket_sql"
    pg_timed pg_bucket "$read_pg_bucket_sql"
    query_timed epoch "$read_epoch_sql"
    pg_timed pg_epoch "$read_pg_epoch_sql"
    query_timed nojoin "$read_nojoin_sql"
    pg_timed pg_nojoin "$read_nojoin_sql"
    query_timed select1 "SELECT 1"
  done
  log "read side: where the data page's time goes, $read_runs runs"
  query_timed ilike_warm "$read_ilike_sql"
  read_ilike_count="$(jq -r '.rows[0][0]' "$work/body")"
  query_timed contains_warm "$read_contains_sql"
  read_contains_count="$(jq -r '.rows[0][0]' "$work/body")"
  for _ in $(seq 1 "$read_runs"); do
    query_timed ilike "$read_ilike_sql"
    query_timed contains "$read_contains_sql"
    query_timed nosearch "$read_nosearch_sql"
  done

  read_sync_counts
  read_syncs="$((syncs_ok - read_syncs_start))"
  read_stop
  server_stop
  read_rows_added="$(($(psql "$DUCKSTORE_TEST_PG" -qAt -c "SELECT count(*) FROM llm_metric_results") - read_rows_start))"
  read_load_end="$(uptime | sed 's/.*load average: //')"
  read_pg_views_drop
}

# NAME -> "count p50 p99 max median min" of its samples (ms); nearest rank.
read_stat() {
  sort -t $'\t' -k 2,2g <(awk -F'\t' -v n="$1" '$1 == n' "$reads") | awk -F'\t' '
    { t[++c] = $2 }
    END {
      if (c == 0) { print "0 - - - - -"; exit }
      p50 = int(c * 0.5); if (p50 < c * 0.5) p50++
      p99 = int(c * 0.99); if (p99 < c * 0.99) p99++
      med = (c % 2) ? t[(c + 1) / 2] : (t[c / 2] + t[c / 2 + 1]) / 2
      printf "%d %.1f %.1f %.1f %.1f %.1f\n", c, t[p50], t[p99], t[c], med, t[1]
    }'
}

read_report() {
  local name label n p50 p99 max
  echo
  echo "Read side: \`duckstore serve\` with an incremental sync every 10 s (scheduler) while 500 rows a" \
    "second arrive in PostgreSQL: $read_syncs syncs ran during the reads, $read_rows_added metric" \
    "results (and a quarter as many traces) arrived. Load average (1, 5, 15 min) $read_load_start at the" \
    "start, $read_load_end at the end. One curl per request (its time_total), one psql per query (its timing)."
  echo
  echo "| read request | requests | p50 ms | p99 ms | max ms |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  for name in data meta meta_cached meta_unsure meta_first meta_second; do
    read -r n p50 p99 max _ _ <<<"$(read_stat "$name")"
    [ "$n" != 0 ] || continue
    case "$name" in
      data) label="\`/api/store/data\` page 1, environment + metric_name filters + search ($read_data_total matching rows)" ;;
      meta) label="\`/api/store/metadata\`, every request" ;;
      meta_cached) label="… of which served from the cache" ;;
      meta_first) label="\`/api/store/metadata\`, first request after a sync (computes the document)" ;;
      meta_second) label="\`/api/store/metadata\`, the request right after that one" ;;
      meta_unsure) label="… of which a sync committed during it or the one before (cached or computed)" ;;
    esac
    printf '| %s | %s | %s | %s | %s |\n' "$label" "$n" "$p50" "$p99" "$max"
  done
  echo
  echo "Dashboard aggregate, the same SQL on both sides ($read_agg_rows rows from duckstore," \
    "$read_pg_agg_rows from PostgreSQL; PostgreSQL reads views of the two source queries):" \
    "\`$read_agg_sql\`. Median of $read_runs runs each, alternating, after one unmeasured run."
  echo
  echo "| dashboard aggregate | duckstore median ms | spread | PostgreSQL median ms | spread | PostgreSQL ÷ duckstore |"
  echo "| --- | ---: | --- | ---: | --- | ---: |"
  local dm dlo dhi pm plo phi
  for name in agg agg_server bucket epoch nojoin select1 select1_server ilike contains nosearch; do
    read -r _ _ _ dhi dm dlo <<<"$(read_stat "$name")"
    case "$name" in
      agg) label="by metric and hour over \`monitoring_data\` (the view's join), through \`POST /api/store/query\`" ;;
      agg_server) label="… its \`elapsed_ms\` inside the server (DuckDB and the JSON text, no HTTP)" ;;
      bucket) label="the same with \`time_bucket\` (PostgreSQL: \`date_bin\`) instead of \`date_trunc\`" ;;
      epoch) label="the same with integer hours (\`epoch_us(timestamp) // 3600000000\`; PostgreSQL: \`floor(extract(epoch FROM timestamp) / 3600)\`)" ;;
      nojoin) label="the same over \`monitoring_results\` alone (\`created_at\`: no join)" ;;
      select1) label="\`SELECT 1\` through \`POST /api/store/query\` (the HTTP path)" ;;
      select1_server) label="… its \`elapsed_ms\` inside the server" ;;
      ilike) label="the data page's count: its filters and search (\`ILIKE ... ESCAPE\`, $read_ilike_count rows)" ;;
      contains) label="… the search as \`contains(lower(...))\` ($read_contains_count rows)" ;;
      nosearch) label="… without the search" ;;
    esac
    case "$name" in
      agg | bucket | epoch | nojoin)
        read -r _ _ _ phi pm plo <<<"$(read_stat "pg_$name")"
        awk -v l="$label" -v dm="$dm" -v dlo="$dlo" -v dhi="$dhi" -v pm="$pm" -v plo="$plo" -v phi="$phi" 'BEGIN {
          printf "| %s | %.1f | %.1f–%.1f | %.1f | %.1f–%.1f | %.1f |\n", l, dm, dlo, dhi, pm, plo, phi, pm / dm
        }'
        ;;
      *)
        printf '| %s | %s | %s–%s | - | - | - |\n' "$label" "$dm" "$dlo" "$dhi"
        ;;
    esac
  done
}
