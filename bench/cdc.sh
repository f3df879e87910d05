# shellcheck shell=bash disable=SC2154 # the variables of bench/run.sh and bench/read.sh
# Change data capture (`capture: logical`), sourced by bench/run.sh: a
# table of orders-like events (bigint id, two timestamptz, text, numeric,
# jsonb) in the harness PostgreSQL (wal_level=logical), preloaded with
# BENCH_CDC_ROWS rows, cached by a logical source. Every transaction is one
# statement of the mix: 7 inserts, 2 updates, 1 delete (70/20/10 %).
# - Change-to-visible latency: `duckstore serve` streams the source while
#   pgbench (2 clients, -R, PostgreSQL's default synchronous_commit=on)
#   commits 1,000 changes a second for 60 s (BENCH_CDC_SECONDS if shorter),
#   then 10,000 a second for BENCH_CDC_SECONDS. Each inserted row carries clock_timestamp() in created_at, taken
#   in the statement that commits right away; a reader polls the server's
#   query API every BENCH_CDC_POLL_MS for the rows not yet seen and takes
#   DuckDB's now() of that query (its transaction's start, when its snapshot
#   is taken) as the moment the row was visible. That moment is late by at
#   most the time since the previous poll began: the table gives the upper
#   bound (seen by this poll) and the lower one (not seen by the previous
#   poll). A transaction is applied whole in one DuckDB commit, so its
#   updates and delete become visible with its inserts. The server's CPU
#   (/proc) includes answering the polls.
# - Memory: the server's RSS, sampled every second through both runs; the
#   10,000 changes/s run is the long one (BENCH_CDC_SECONDS=600: ten minutes).
# - Apply throughput: with the server stopped, a backlog of
#   BENCH_CDC_CHANGES changes is written, timed (PostgreSQL's own rate of
#   producing it: pgbench -c 2 as fast as it goes), then `duckstore sync`
#   catches up from the slot, timed from process start to exit (the
#   process, the DuckDB file and the connections included); apply rate ÷
#   production rate is the ratio. Once in transactions of 10 changes (the
#   mix above), once in transactions of 10,000 (7,000 inserts, 2,000
#   updates, 1,000 deletes) and once in transactions of 10,000 inserts (an
#   event or trace stream), BENCH_REPEAT runs each, alternating.
# After each part the cache must equal the table (count, sums, key range).
# The measured server and syncs have memory_limit BENCH_CDC_MEMORY: at the
# default (64MB) the table outgrows what that limit leaves DuckDB's
# deletion marks (16 bytes a stored row, docs/incremental.md), and a
# catch-up then applies in small checkpointed batches, about 20 times
# slower (it used to run out of memory).
#
#   BENCH_CDC_SECONDS  length of the 10,000 changes/s run (default 60)
#   BENCH_CDC_ROWS     rows in the table before the runs (default 1000000)
#   BENCH_CDC_CHANGES  changes in each backlog (default 1000000)
#   BENCH_CDC_POLL_MS  poll period of the latency reader (default 20)
#   BENCH_CDC_MEMORY   memory_limit of the store (default 256MB)

cdc_seconds="${BENCH_CDC_SECONDS:-60}"
cdc_rows="${BENCH_CDC_ROWS:-1000000}"
cdc_backlog="${BENCH_CDC_CHANGES:-1000000}"
cdc_poll_ms="${BENCH_CDC_POLL_MS:-20}"
cdc_memory="${BENCH_CDC_MEMORY:-256MB}"
cdc_rates="1000 10000"
cdc_seconds_of() { if [ "$1" = 1000 ] && [ "$cdc_seconds" -gt 60 ]; then echo 60; else echo "$cdc_seconds"; fi; }
cdc_tsv="$work/cdc.tsv" # name, value
: >"$cdc_tsv"
cdc_view=cdcbench_data
cdc_query="SELECT id, created_at, updated_at, status, note, amount, attrs FROM bench_cdc.events"

cdc_val() { awk -F'\t' -v n="$1" '$1 == n { v = $2 } END { print v }' "$cdc_tsv"; }
cdc_put() { printf '%s\t%s\n' "$1" "$2" >>"$cdc_tsv"; }

# cdc_mix INSERTS UPDATES DELETES: one transaction of the mix as one
# statement. Deletes take rows of the older half of the ids, updates of the
# newer half, so no row is both; the limits are literals, so a prepared
# statement's generic plan keeps the index scans.
cdc_mix() {
  cat <<SQL
WITH b AS (
  SELECT lo + floor(random() * (hi - lo) / 2)::bigint AS del_from,
         (lo + hi) / 2 + floor(random() * (hi - lo) / 2)::bigint AS upd_from, (lo + hi) / 2 AS mid
  FROM (SELECT min(id) AS lo, max(id) AS hi FROM bench_cdc.events) AS m),
d AS (
  DELETE FROM bench_cdc.events WHERE id IN (SELECT id FROM bench_cdc.events
    WHERE id >= (SELECT del_from FROM b) AND id < (SELECT mid FROM b) ORDER BY id LIMIT $3)),
u AS (
  UPDATE bench_cdc.events SET status = 'paid', amount = amount + 1, updated_at = clock_timestamp(),
    attrs = attrs || jsonb_build_object('paid_at', clock_timestamp())
  WHERE id IN (SELECT id FROM bench_cdc.events WHERE id >= (SELECT upd_from FROM b) ORDER BY id LIMIT $2))
INSERT INTO bench_cdc.events (created_at, updated_at, status, note, amount, attrs)
SELECT clock_timestamp(), clock_timestamp(), 'new', md5(random()::text) || ' ' || md5(random()::text),
       round((random() * 1000)::numeric, 2),
       jsonb_build_object('customer', (random() * 997)::int, 'channel', 'web', 'items', g % 7 + 1)
FROM generate_series(1, $1) AS g;
SQL
}

# Rows changed in the table so far, as PostgreSQL counts them.
cdc_changes() {
  psql "$DUCKSTORE_TEST_PG" -qAt -c "SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables
    WHERE relid = 'bench_cdc.events'::regclass"
}

# The cache equals the table (the server stopped): count, sums, key range.
cdc_summary_sql="SELECT count(*) || ' ' || sum(amount) || ' ' || count(*) FILTER (WHERE status = 'paid') || ' ' || min(id) || ' ' || max(id) AS s FROM"
cdc_check() { # WHEN
  local pg ds
  pg="$(psql "$DUCKSTORE_TEST_PG" -qAt -c "$cdc_summary_sql bench_cdc.events")"
  ds="$("$duckstore" --config-dir "$work/cdc" query --format csv "$cdc_summary_sql $cdc_view" | tail -n 1)" ||
    read_fail "cdc: reading the cache failed"
  [ "$pg" = "$ds" ] || read_fail "cdc: after $1 the cache holds $ds (rows, sum, paid, min id, max id), PostgreSQL $pg"
  cdc_put "table_rows" "${pg%% *}"
}

# /metrics until the stream has applied up to PostgreSQL's insert position.
cdc_wait_caught_up() {
  local lsn want deadline=$((SECONDS + 300))
  want="$(psql "$DUCKSTORE_TEST_PG" -qAt -c "SELECT pg_current_wal_insert_lsn() - '0/0'")"
  local re='duckstore_capture_confirmed_lsn\{source="cdcbench"\} ([0-9]+)'
  while :; do
    http_request GET /metrics
    lsn=0
    if [[ $http_body =~ $re ]]; then lsn="${BASH_REMATCH[1]}"; fi
    [ "$lsn" -lt "$want" ] || return 0
    [ "$SECONDS" -lt "$deadline" ] || read_fail "cdc: the stream did not catch up within 300 s"
    sleep 0.1
  done
}

# The latency reader: polls the query API for rows above the highest id
# below which every row was seen (2 clients commit ids out of order), and
# writes NAME (upper bound) and NAME_lo (lower bound) in ms for each new
# row. It stops once every id up to the one in TARGET-FILE was seen; an id
# missing for 10 s while later ones are seen was never committed.
cdc_reader() { # NAME TARGET-FILE
  python3 - "$server_port" "$cdc_view" "$cdc_poll_ms" "$1" "$2" >"$work/cdc_reader.tsv" 2>"$work/cdc_reader.err" <<'PY'
import http.client, json, os, sys, time

port, view, period, name, target_file = sys.argv[1], sys.argv[2], float(sys.argv[3]) / 1000, sys.argv[4], sys.argv[5]
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)

def query(sql):
    conn.request("POST", "/api/store/query", json.dumps({"sql": sql, "format": "csv", "max_rows": 1000000}),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read().decode()
    if r.status != 200:
        sys.exit(f"the query API answered {r.status}: {body[:300]}")
    return body.splitlines()[1:]

low = int(query(f"SELECT coalesce(max(id), 0) FROM {view}")[0])
seen, missing_since, target = set(), None, None
polls, busy, prev_start = 0, 0.0, None
while True:
    start_wall, start = time.time(), time.monotonic()
    for line in query(f"SELECT id, epoch_us(created_at), epoch_us(now()) FROM {view} WHERE id > {low} ORDER BY id"):
        i, c, v = (int(x) for x in line.split(","))
        if i in seen:
            continue
        seen.add(i)
        print(f"{name}\t{(v - c) / 1000:.3f}")
        if prev_start is not None:
            print(f"{name}_lo\t{max(prev_start * 1e6 - c, 0) / 1000:.3f}")
    while low + 1 in seen:
        low += 1
        seen.discard(low)
    if seen and low + 1 not in seen:
        missing_since = missing_since or start
        if start - missing_since > 10:
            low = min(seen) - 1
            missing_since = None
    else:
        missing_since = None
    polls += 1
    busy += time.monotonic() - start
    prev_start = start_wall
    if target is None and os.path.exists(target_file):
        target = int(open(target_file).read())
    if target is not None and low >= target:
        break
    time.sleep(max(period - (time.monotonic() - start), 0))
print(f"{name}_polls\t{polls}")
print(f"{name}_poll_ms\t{busy / polls * 1000:.2f}")
PY
}

# The server's RSS (KiB) every second, as NAME, until killed. The reader
# and the sampler write files of their own, added to $cdc_tsv after the run.
# Beside it, as NAME_duckdb, what DuckDB's buffer manager holds then
# (duckdb_memory(), KiB): RSS minus that is duckstore's own memory and the
# allocator's, which must not grow with the changes applied.
cdc_sampler() { # NAME PID
  local k v _ duck
  local body='{"sql": "SELECT sum(memory_usage_bytes) // 1024 FROM duckdb_memory()", "format": "csv"}'
  while [ -r "/proc/$2/status" ]; do
    while read -r k v _; do
      [ "$k" != VmRSS: ] || printf '%s\t%s\n' "$1" "$v"
    done <"/proc/$2/status"
    duck="$(curl -sf -X POST -H 'Content-Type: application/json' -d "$body" "$server_url/api/store/query" | tail -n 1)" &&
      printf '%s_duckdb\t%s\n' "$1" "$duck"
    sleep 1
  done >"$work/cdc_sampler.tsv"
}
cdc_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }

# One steady run at RATE changes/s against the running server.
cdc_steady() { # RATE
  local rate="$1" name="r$1" reader sampler before ticks start end
  rm -f "$work/cdc_target"
  cdc_reader "$name" "$work/cdc_target" &
  reader=$!
  cdc_sampler "${name}_rss" "$server_pid" &
  sampler=$!
  before="$(cdc_changes)"
  ticks="$(cdc_cpu_ticks)"
  start="$EPOCHREALTIME"
  # PostgreSQL's default synchronous_commit (the harness turns it off): a
  # commit off reaches the walsender only at the WAL writer's next round
  # (wal_writer_delay, 200 ms), which would be measured instead.
  PGOPTIONS="-c synchronous_commit=on" pgbench -n -M prepared -c 2 -j 2 -R "$((rate / 10))" -T "$(cdc_seconds_of "$rate")" \
    -f "$work/cdc_small.sql" "$DUCKSTORE_TEST_PG" >"$work/cdc_pgbench.out" 2>&1 ||
    read_fail "cdc: pgbench at $rate changes/s failed: $(tail -n 5 "$work/cdc_pgbench.out")"
  end="$EPOCHREALTIME"
  psql "$DUCKSTORE_TEST_PG" -qAt -c "SELECT max(id) FROM bench_cdc.events" >"$work/cdc_target.tmp"
  mv "$work/cdc_target.tmp" "$work/cdc_target"
  wait "$reader" || read_fail "cdc: the latency reader failed: $(tail -n 5 "$work/cdc_reader.err")"
  cdc_put "${name}_cpu" "$(awk -v a="$ticks" -v b="$(cdc_cpu_ticks)" -v t="$(getconf CLK_TCK)" \
    -v s="$start" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) / t / (e - s) * 100 }')"
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  cat "$work/cdc_reader.tsv" "$work/cdc_sampler.tsv" >>"$cdc_tsv"
  cdc_put "${name}_rate" "$(awk -v n="$(($(cdc_changes) - before))" -v s="$start" -v e="$end" \
    'BEGIN { printf "%.0f", n / (e - s) }')"
  cdc_put "${name}_lag" "$(awk '/schedule lag: avg/ { print $6 "/" $8; exit }' "$work/cdc_pgbench.out" | tr -d ')(')"
}

# One backlog: SHAPE small, bulk or inserts, written with the server stopped and
# caught up by `duckstore sync`; both timed with run.sh's measure.
cdc_run_backlog() { # SHAPE TRANSACTIONS-PER-CLIENT
  local before
  before="$(cdc_changes)"
  measure "cdc_pg_$1" pgbench -n -M prepared -c 2 -j 2 -t "$2" -f "$work/cdc_$1.sql" "$DUCKSTORE_TEST_PG"
  cdc_put "cdc_n_$1" "$(($(cdc_changes) - before))"
  # PostgreSQL's own consumer drains the same changes from a slot of its
  # own, with duckstore's options, to /dev/null: how fast the server's
  # walsender decodes them, the ceiling of any client of one slot.
  measure "cdc_decode_$1" pg_recvlogical -d "$DUCKSTORE_TEST_PG" --slot duckstore_bench_reference --start \
    --no-loop -o proto_version=2 -o publication_names=duckstore_cdcbench -o binary=true -o streaming=on \
    --endpos="$(psql "$DUCKSTORE_TEST_PG" -qAt -c "SELECT pg_current_wal_insert_lsn()")" -f /dev/null
  measure "cdc_apply_$1" "$duckstore" --config-dir "$work/cdc" sync cdcbench
  grep -q "$(cdc_val "cdc_n_$1") change(s) applied" "$work/cmd.out" ||
    read_fail "cdc: the sync did not apply the backlog's $(cdc_val "cdc_n_$1") changes: $(cat "$work/cmd.out")"
  cdc_check "a $1 backlog"
}

cdc_cases() {
  log "cdc: a table of $cdc_rows rows"
  psql "$DUCKSTORE_TEST_PG" -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_cdc CASCADE;
CREATE SCHEMA bench_cdc;
CREATE TABLE bench_cdc.events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  status text NOT NULL,
  note text,
  amount numeric(12, 2),
  attrs jsonb);
INSERT INTO bench_cdc.events (created_at, updated_at, status, note, amount, attrs)
SELECT now(), now(), 'new', md5(g::text) || ' ' || md5((g + 1)::text), (g % 100000) / 100.0,
       jsonb_build_object('customer', g % 997, 'channel', 'web', 'items', g % 7 + 1)
FROM generate_series(1, $cdc_rows) AS g;
VACUUM ANALYZE bench_cdc.events;
SQL
  cdc_mix 7 2 1 >"$work/cdc_small.sql"
  cdc_mix 7000 2000 1000 >"$work/cdc_bulk.sql"
  cdc_mix 10000 0 0 >"$work/cdc_inserts.sql"
  mkdir -p "$work/cdc"
  printf 'duckdb:\n  path: %s/cdc.duckdb\n  memory_limit: %s\n' "$work" "$cdc_memory" >"$work/cdc/duckdb.yaml"
  cat >"$work/cdc/cdcbench_db.yaml" <<YAML
cdcbench_db:
  url: "postgresql://postgres:\${DB_PASSWORD}@127.0.0.1:$port/postgres"
  capture: logical
  query: "$cdc_query"
YAML

  log "cdc: duckstore serve loads the table and streams it"
  cdc_load_start="$(uptime | sed 's/.*load average: //')"
  server_start "$work/cdc"
  cdc_wait_caught_up
  local rate
  for rate in $cdc_rates; do
    log "cdc: $rate changes/s for $(cdc_seconds_of "$rate") s, latency polled every $cdc_poll_ms ms"
    cdc_steady "$rate"
  done
  cdc_wait_caught_up
  cdc_put serve_hwm "$(awk '/VmHWM/ { print $2 }' "/proc/$server_pid/status")"
  server_stop
  cdc_load_steady="$(uptime | sed 's/.*load average: //')"
  cdc_check "the steady runs"
  cdc_rows_steady="$(cdc_val table_rows)"

  psql "$DUCKSTORE_TEST_PG" -qAt -c \
    "SELECT pg_create_logical_replication_slot('duckstore_bench_reference', 'pgoutput')" >/dev/null
  local run
  for run in $(seq 1 "$repeat"); do
    log "run $run/$repeat: cdc backlog of $cdc_backlog changes in transactions of 10, then duckstore sync"
    cdc_run_backlog small "$((cdc_backlog >= 20 ? cdc_backlog / 20 : 1))"
    log "run $run/$repeat: cdc backlog of $cdc_backlog changes in transactions of 10,000, then duckstore sync"
    cdc_run_backlog bulk "$((cdc_backlog >= 20000 ? cdc_backlog / 20000 : 1))"
    log "run $run/$repeat: cdc backlog of $cdc_backlog inserts in transactions of 10,000, then duckstore sync"
    cdc_run_backlog inserts "$((cdc_backlog >= 20000 ? cdc_backlog / 20000 : 1))"
  done
  cdc_load_end="$(uptime | sed 's/.*load average: //')"
  psql "$DUCKSTORE_TEST_PG" -q -c "SELECT pg_drop_replication_slot('duckstore_cdcbench')" \
    -c "SELECT pg_drop_replication_slot('duckstore_bench_reference')" >/dev/null
}

# NAME -> "count p50 p99 max median min" of its samples (bench/read.sh's).
cdc_stat() { reads="$cdc_tsv" read_stat "$1"; }

cdc_report() {
  echo
  echo "Change data capture (\`capture: logical\`): a table of $cdc_rows rows at the start (bigint id, two" \
    "timestamptz, text, numeric, jsonb), every transaction 7 inserts, 2 updates and 1 delete in one statement;" \
    "\`memory_limit: $cdc_memory\` (\`threads: 1\`; \`duckstore serve\` adds the default \`read_threads\` and \`read_memory_limit\`)." \
    "Load average (1, 5, 15 min) $cdc_load_start at the start, $cdc_load_steady after the steady runs," \
    "$cdc_load_end at the end."
  echo
  echo "Change to visible: \`duckstore serve\` streams while pgbench -c 2 -R commits (synchronous_commit=on)" \
    "for $(cdc_seconds_of 1000) s at 1,000/s and $cdc_seconds s at 10,000/s; each inserted row's clock_timestamp() against DuckDB's now() of the first" \
    "query-API poll (every $cdc_poll_ms ms) that sees it (upper bound) and the start of the poll before" \
    "(lower bound). Server CPU includes answering the polls."
  echo
  echo "| changes/s asked | done | rows timed | p50 ms | p99 ms | max ms | p50, p99 lower bound ms | polls, mean ms | pgbench schedule lag avg/max ms | server CPU % of a core |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  local rate n p50 p99 max lo50 lo99
  for rate in $cdc_rates; do
    read -r n p50 p99 max _ _ <<<"$(cdc_stat "r$rate")"
    read -r _ lo50 lo99 _ _ _ <<<"$(cdc_stat "r${rate}_lo")"
    printf '| %s | %s | %s | %s | %s | %s | %s, %s | %s, %s | %s | %s |\n' "$rate" "$(cdc_val "r${rate}_rate")" \
      "$n" "$p50" "$p99" "$max" "$lo50" "$lo99" "$(cdc_val "r${rate}_polls")" "$(cdc_val "r${rate}_poll_ms")" \
      "$(cdc_val "r${rate}_lag")" "$(cdc_val "r${rate}_cpu")"
  done
  echo
  echo "Memory: the server's RSS sampled every second during each steady run" \
    "(peak of the whole server, including the initial load: $(($(cdc_val serve_hwm) / 1024)) MB)."
  echo
  echo "| steady run | samples | RSS after 1/10 MB | RSS at the end MB | peak sampled MB | end ÷ 1/10 | DuckDB's buffers after 1/10, at the end MB | RSS − DuckDB's buffers after 1/10, at the end MB |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for rate in $cdc_rates; do
    awk -F'\t' -v n="r${rate}_rss" -v l="$rate changes/s, $(cdc_seconds_of "$rate") s" '
      $1 == n { r[++c] = $2; if ($2 > m) m = $2 }
      $1 == n "_duckdb" { d[c] = $2 }
      END {
        i = int(c / 10) + 1
        e = r[i]
        # A second the query API did not answer has no DuckDB sample: the
        # nearest earlier one stands for it.
        for (k = i; k > 1 && d[k] == ""; k--) { }
        di = d[k]
        for (k = c; k > 1 && d[k] == ""; k--) { }
        dc = d[k]
        printf "| %s | %d | %.0f | %.0f | %.0f | %.2f | %.0f, %.0f | %.0f, %.0f |\n", l, c, e / 1024, r[c] / 1024,
          m / 1024, r[c] / e, di / 1024, dc / 1024, (e - di) / 1024, (r[c] - dc) / 1024
      }' "$cdc_tsv"
  done
  echo
  echo "Apply throughput: a backlog written with the server stopped (pgbench -c 2, as fast as PostgreSQL" \
    "goes), then \`duckstore sync\` catching up from the slot (process start to exit); median of $repeat," \
    "alternating. The table had $cdc_rows_steady rows before the first backlog, $(cdc_val table_rows) after the last."
  echo
  echo "PostgreSQL decodes: \`pg_recvlogical\` draining the same changes from a second slot with duckstore's" \
    "options (pgoutput protocol 2, binary, streaming) to /dev/null, just before duckstore: the rate at which" \
    "the server's walsender, one process per slot, hands them out."
  echo
  echo "| backlog | changes | PostgreSQL writes s | spread | changes/s | PostgreSQL decodes s | changes/s | duckstore sync s | spread | changes/s | peak RSS MB | apply ÷ writes | apply ÷ decodes |"
  echo "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
  local shape label pm plo phi dm am alo ahi rss
  for shape in small bulk inserts; do
    case "$shape" in
      small) label="transactions of 10 changes" ;;
      bulk) label="transactions of 10,000 changes" ;;
      inserts) label="transactions of 10,000 inserts" ;;
    esac
    read -r pm plo phi _ <<<"$(stat_of "cdc_pg_$shape")"
    read -r dm _ _ _ <<<"$(stat_of "cdc_decode_$shape")"
    read -r am alo ahi rss <<<"$(stat_of "cdc_apply_$shape")"
    awk -v l="$label" -v n="$(cdc_val "cdc_n_$shape")" -v pm="$pm" -v plo="$plo" -v phi="$phi" -v dm="$dm" \
      -v am="$am" -v alo="$alo" -v ahi="$ahi" -v rss="$rss" 'BEGIN {
        printf "| %s | %d | %.2f | %.2f–%.2f | %.0f | %.2f | %.0f | %.2f | %.2f–%.2f | %.0f | %.0f | %.2f | %.2f |\n",
          l, n, pm, plo, phi, n / pm, dm, n / dm, am, alo, ahi, n / am, rss / 1024, pm / am, dm / am
      }'
  done
  echo
  echo "Targets: apply ≥ 100,000 changes/s and never below PostgreSQL's rate (ratio ≥ 1); memory flat."
}
