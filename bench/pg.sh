# shellcheck shell=bash disable=SC2154 # the variables of bench/run.sh and bench/read.sh
# Reading through PostgreSQL's protocol (pg_listen), sourced by bench/run.sh
# once the bench data is synced: duckstore serve against the harness
# PostgreSQL, the same clients and the same SQL text on both sides, SCRAM
# logins on both (sslmode=disable on both: the same bytes on the wire).
# - the dashboard aggregate of bench/read.sh from 10 concurrent clients
#   (pgbench -c 10 -j 2, extended protocol, a per-transaction log): p50/p99
#   and transactions per second; SELECT 1 the same way (the protocol's own
#   cost);
# - a large result (the results table up to id 1,000,000) fetched by psql to
#   /dev/null: rows per second, alternating sides, median;
# - connection setup with SCRAM: pgbench -C, one client, SELECT 1 per
#   connection: pgbench's average connection time and the per-connection
#   latency.
# No sync runs meanwhile: an incremental sync first brings the cache to
# PostgreSQL's rows, and the row counts of both sides are compared.
# The measured server has memory_limit BENCH_PG_MEMORY (plus the default
# read_memory_limit). A first run at the defaults (memory_limit 64MB for
# the syncs plus read_memory_limit 512MB for readers) records how many of
# 10 concurrent aggregates answered, and the first error if any.
#
#   BENCH_PG_TXNS   aggregate transactions per client (default 10)
#   BENCH_PG_RUNS   runs of the large result on each side (default 3)
#   BENCH_PG_MEMORY memory_limit of the measured server (default 1GB)

pg_txns="${BENCH_PG_TXNS:-10}"
pg_runs="${BENCH_PG_RUNS:-3}"
pg_memory="${BENCH_PG_MEMORY:-1GB}"
pg_clients=10
pg_connects=200
pgs="$work/pg.tsv" # name, milliseconds
: >"$pgs"
pg_port=$((20000 + RANDOM % 40000))
pg_password="bench-$RANDOM$RANDOM"
# The same client settings on both sides; passwords through PGPASSWORD.
pg_ds_conn="host=127.0.0.1 port=$pg_port user=reader dbname=cache sslmode=disable"
pg_src_conn="host=127.0.0.1 port=$port user=postgres dbname=postgres sslmode=disable"
pg_big_sql="SELECT id, dataset_id, metric_name, metric_score, metric_category, explanation, passed, created_at FROM monitoring_results WHERE id <= 1000000"

# Failures go through read.sh's read_fail (run.sh sources read.sh first).

# on_side SIDE COMMAND...: COMMAND with SIDE's password in PGPASSWORD and
# its time zone (UTC on both: the same text for timestamps).
on_side() {
  local pw="$pg_password"
  [ "$1" = ds ] || pw="$DUCKSTORE_TEST_PG_PASSWORD"
  shift
  PGPASSWORD="$pw" PGTZ=UTC "$@"
}
side_conn() { if [ "$1" = ds ]; then echo "$pg_ds_conn"; else echo "$pg_src_conn"; fi; }

# pgbench_run NAME SIDE SCRIPT PGBENCH-ARGS...: one pgbench run; every
# transaction's latency (ms) goes to $pgs as NAME, its summary to
# $work/NAME.out.
pgbench_run() {
  local name="$1" side="$2" script="$3"
  shift 3
  rm -f "$work/pgblog_$name".*
  on_side "$side" pgbench -n -f "$script" "$@" --log --log-prefix="$work/pgblog_$name" \
    "$(side_conn "$side")" >"$work/$name.out" 2>&1 || read_fail "pgbench $name failed: $(grep -v "^progress" "$work/$name.out" | head -n 20)"
  # Every transaction must have run: "actually processed: N/N".
  awk -F': ' '/^number of transactions actually processed: / { split($2, a, "/"); ok = (a[1] == a[2] && a[1] > 0) }
    END { exit !ok }' "$work/$name.out" || read_fail "pgbench $name: not every transaction ran: $(tail -n 5 "$work/$name.out")"
  # Log lines: client, transaction, latency in µs, script, epoch s, µs.
  cat "$work/pgblog_$name".* | awk -v n="$name" '{ printf "%s\t%.3f\n", n, $3 / 1000 }' >>"$pgs"
  {
    printf '%s_tps\t%s\n' "$name" "$(awk '/^tps = / { print $3; exit }' "$work/$name.out")"
    printf '%s_conn\t%s\n' "$name" "$(awk '/^average connection time = / { print $5; exit }' "$work/$name.out")"
  } >>"$pgs"
}

# big_run SIDE: the large result to /dev/null through psql; wall ms.
big_run() {
  local start end
  start="$EPOCHREALTIME"
  on_side "$1" psql "$(side_conn "$1")" -X -q -At -v ON_ERROR_STOP=1 -o /dev/null -c "$pg_big_sql" ||
    read_fail "the large result from $1 failed"
  end="$EPOCHREALTIME"
  printf 'big_%s\t%s\n' "$1" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", (b - a) * 1000 }')" >>"$pgs"
}

# pg_server_start DIR [MEMORY-LIMIT [AUTH]]: duckstore serve with pg_listen
# on the bench's data, once its protocol answers.
pg_server_start() {
  write_config "$1" 1
  # shellcheck disable=SC2016 # ${BENCH_PG_PASSWORD} is for duckstore to expand
  printf '  pg_listen: "127.0.0.1:%s"\n  pg_users:\n    reader: "${BENCH_PG_PASSWORD}"\n' "$pg_port" \
    >>"$1/duckdb.yaml"
  [ -z "${2:-}" ] || printf '  memory_limit: %s\n' "$2" >>"$1/duckdb.yaml"
  [ -z "${3:-}" ] || printf '  pg_auth: %s\n' "$3" >>"$1/duckdb.yaml"
  BENCH_PG_PASSWORD="$pg_password" server_start "$1"
  local deadline=$((SECONDS + 60))
  until on_side ds psql "$pg_ds_conn" -X -qAt -c "SELECT 1" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || read_fail "duckstore's PostgreSQL protocol did not answer within 60 s"
    sleep 0.1
  done
}

pg_cases() {
  log "protocol: an incremental sync so the cache holds PostgreSQL's rows"
  "$duckstore" --config-dir "$work/w1" sync monitoring >/dev/null
  read_pg_views
  printf '%s;\n' "$read_agg_sql" >"$work/agg.sql"
  printf 'SELECT 1;\n' >"$work/select1.sql"
  # The same buckets as integer hours (no per-row calendar work; DuckDB's
  # and PostgreSQL's spelling of it): bench/read.sh's epoch variant.
  printf '%s;\n' "$read_epoch_sql" >"$work/epoch_ds.sql"
  printf '%s;\n' "$read_pg_epoch_sql" >"$work/epoch_src.sql"

  log "protocol: $pg_clients concurrent aggregates at the default memory_limit and read_memory_limit"
  pg_server_start "$work/wp_default"
  on_side ds pgbench -n -f "$work/agg.sql" -M extended -c "$pg_clients" -j 2 -t 1 "$pg_ds_conn" \
    >"$work/default.out" 2>&1 || true
  pg_default_done="$(awk -F': ' '/^number of transactions actually processed: / { print $2; exit }' "$work/default.out")"
  pg_default_error="$(grep -m 1 -o 'ERROR: .*' "$work/default.out" || true)"
  server_stop

  pg_server_start "$work/wp" "$pg_memory"
  local side
  for side in ds src; do
    printf 'rows_%s\t%s\n' "$side" "$(on_side "$side" psql "$(side_conn "$side")" -X -qAt -v ON_ERROR_STOP=1 \
      -c "SELECT count(*) FROM monitoring_data")" >>"$pgs"
    printf 'bigrows_%s\t%s\n' "$side" "$(on_side "$side" psql "$(side_conn "$side")" -X -qAt -v ON_ERROR_STOP=1 \
      -c "SELECT count(*) FROM ($pg_big_sql) AS b")" >>"$pgs"
  done
  [ "$(pg_val rows_ds)" = "$(pg_val rows_src)" ] ||
    read_fail "monitoring_data has $(pg_val rows_ds) rows in duckstore, $(pg_val rows_src) in PostgreSQL"
  pg_load_start="$(uptime | sed 's/.*load average: //')"

  log "protocol: the dashboard aggregate, $pg_clients clients x $pg_txns transactions on each side"
  for side in ds src; do # one unmeasured run per side: caches warm
    on_side "$side" psql "$(side_conn "$side")" -X -q -At -v ON_ERROR_STOP=1 -o /dev/null -f "$work/agg.sql" ||
      read_fail "the aggregate failed on $side"
  done
  pg_agg_rows_ds="$(on_side ds psql "$pg_ds_conn" -X -qAt -f "$work/agg.sql" | wc -l)"
  pg_agg_rows_src="$(on_side src psql "$pg_src_conn" -X -qAt -f "$work/agg.sql" | wc -l)"
  pgbench_run agg_ds ds "$work/agg.sql" -M extended -c "$pg_clients" -j 2 -t "$pg_txns"
  pgbench_run agg_src src "$work/agg.sql" -M extended -c "$pg_clients" -j 2 -t "$pg_txns"
  log "protocol: the aggregate by integer hours, $pg_clients clients x $pg_txns transactions on each side"
  pgbench_run epoch_ds ds "$work/epoch_ds.sql" -M extended -c "$pg_clients" -j 2 -t "$pg_txns"
  pgbench_run epoch_src src "$work/epoch_src.sql" -M extended -c "$pg_clients" -j 2 -t "$pg_txns"
  log "protocol: SELECT 1, $pg_clients clients x 500 transactions on each side"
  pgbench_run sel_ds ds "$work/select1.sql" -M extended -c "$pg_clients" -j 2 -t 500
  pgbench_run sel_src src "$work/select1.sql" -M extended -c "$pg_clients" -j 2 -t 500

  log "protocol: $(pg_val bigrows_ds) rows to psql, $pg_runs runs on each side"
  big_run ds # unmeasured: caches warm
  big_run src
  grep -v '^big_' "$pgs" >"$work/pg.tmp"
  mv "$work/pg.tmp" "$pgs"
  for _ in $(seq 1 "$pg_runs"); do
    big_run ds
    big_run src
  done

  log "protocol: connection setup with SCRAM, $pg_connects connections on each side"
  pgbench_run conn_ds ds "$work/select1.sql" -C -c 1 -j 1 -t "$pg_connects"
  pgbench_run conn_src src "$work/select1.sql" -C -c 1 -j 1 -t "$pg_connects"

  server_stop
  # Without SCRAM: what the session's own setup costs.
  pg_server_start "$work/wp_trust" "$pg_memory" trust
  pgbench_run conn_trust ds "$work/select1.sql" -C -c 1 -j 1 -t "$pg_connects"
  server_stop
  pg_load_end="$(uptime | sed 's/.*load average: //')"
  read_pg_views_drop
}

pg_val() { awk -F'\t' -v n="$1" '$1 == n { v = $2 } END { print v }' "$pgs"; }

# NAME -> "count p50 p99 max median min" of its samples (ms); nearest rank.
pg_stat() {
  sort -t $'\t' -k 2,2g <(awk -F'\t' -v n="$1" '$1 == n' "$pgs") | awk -F'\t' '
    { t[++c] = $2 }
    END {
      if (c == 0) { print "0 - - - - -"; exit }
      p50 = int(c * 0.5); if (p50 < c * 0.5) p50++
      p99 = int(c * 0.99); if (p99 < c * 0.99) p99++
      med = (c % 2) ? t[(c + 1) / 2] : (t[c / 2] + t[c / 2 + 1]) / 2
      printf "%d %.3f %.3f %.3f %.3f %.3f\n", c, t[p50], t[p99], t[c], med, t[1]
    }'
}

pg_report() {
  echo
  echo "Reading through the PostgreSQL protocol: \`duckstore serve\` with \`pg_listen\` and" \
    "\`memory_limit: $pg_memory\` and the default \`read_memory_limit\` (\`threads: 1\` and the default \`read_threads\`, the cores it leaves, and \`read_concurrency\`, as many queries at once; no sync running)" \
    "against the harness PostgreSQL, the same clients and SQL text, SCRAM-SHA-256 logins and" \
    "\`sslmode=disable\` on both; PostgreSQL reads views of the two source queries. monitoring_data:" \
    "$(pg_val rows_ds) rows on both sides. Load average (1, 5, 15 min) $pg_load_start at the start," \
    "$pg_load_end at the end."
  echo
  echo "Dashboard aggregate: \`$read_agg_sql\`, one unmeasured run per side first."
  echo
  echo "| through the protocol | transactions | duckstore p50 ms | p99 ms | tps | PostgreSQL p50 ms | p99 ms | tps | PostgreSQL ÷ duckstore (p50, p99) |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  local name label n dp50 dp99 pp50 pp99
  for name in agg epoch sel; do
    read -r n dp50 dp99 _ _ _ <<<"$(pg_stat "${name}_ds")"
    read -r _ pp50 pp99 _ _ _ <<<"$(pg_stat "${name}_src")"
    case "$name" in
      agg) label="dashboard aggregate ($pg_agg_rows_ds rows from duckstore, $pg_agg_rows_src from PostgreSQL), pgbench -M extended -c $pg_clients -j 2" ;;
      epoch) label="the same by integer hours (\`epoch_us(timestamp) // 3600000000\`; PostgreSQL: \`floor(extract(epoch FROM timestamp) / 3600)\`)" ;;
      sel) label="\`SELECT 1\`, pgbench -M extended -c $pg_clients -j 2" ;;
    esac
    awk -v l="$label" -v n="$n" -v dp50="$dp50" -v dp99="$dp99" -v pp50="$pp50" -v pp99="$pp99" \
      -v dt="$(pg_val "${name}_ds_tps")" -v pt="$(pg_val "${name}_src_tps")" 'BEGIN {
        printf "| %s | %d | %.2f | %.2f | %.1f | %.2f | %.2f | %.1f | %.2f, %.2f |\n",
          l, n, dp50, dp99, dt, pp50, pp99, pt, pp50 / dp50, pp99 / dp99
      }'
  done
  echo
  echo "At the defaults (\`memory_limit\` 64MB for the syncs, \`read_memory_limit\` 512MB for readers)," \
    "$pg_clients concurrent aggregates: ${pg_default_done:-none} answered" \
    "(pgbench ends a client at its first error)${pg_default_error:+; the first error: \`$pg_default_error\`}."
  echo
  echo "| connection setup, SCRAM-SHA-256: pgbench -C -c 1, a new connection for each \`SELECT 1\` | connections | duckstore | PostgreSQL | duckstore ÷ PostgreSQL |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  awk -v n="$pg_connects" -v dc="$(pg_val conn_ds_conn)" -v pc="$(pg_val conn_src_conn)" \
    -v dt="$(pg_val conn_ds_tps)" -v pt="$(pg_val conn_src_tps)" 'BEGIN {
      printf "| average connection time (pgbench), ms | %d | %.1f | %.1f | %.1f |\n", n, dc, pc, dc / pc
      printf "| connections with their \140SELECT 1\140 per second | %d | %.1f | %.1f | %.2f |\n", n, dt, pt, dt / pt
    }'
  echo
  awk -v c="$(pg_val conn_trust_conn)" -v t="$(pg_val conn_trust_tps)" 'BEGIN {
    printf "duckstore with \140pg_auth: trust\140 (no SCRAM exchange: the session'"'"'s own setup): average" \
      " connection time %.1f ms, %.1f connections per second.\n", c, t
  }'
  echo
  local dm dlo dhi pm plo phi rows
  rows="$(pg_val bigrows_ds)"
  read -r _ _ _ dhi dm dlo <<<"$(pg_stat big_ds)"
  read -r _ _ _ phi pm plo <<<"$(pg_stat big_src)"
  echo "| large result to psql (\`psql -At -o /dev/null\`, wall time with the login) | rows | duckstore median ms | spread | rows/s | PostgreSQL median ms | spread | rows/s | duckstore ÷ PostgreSQL rows/s |"
  echo "| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: |"
  awk -v l="\`$pg_big_sql\`, $pg_runs runs alternating" -v r="$rows" -v rs="$(pg_val bigrows_src)" \
    -v dm="$dm" -v dlo="$dlo" -v dhi="$dhi" -v pm="$pm" -v plo="$plo" -v phi="$phi" 'BEGIN {
      if (r != rs) l = l " (PostgreSQL: " rs " rows)"
      printf "| %s | %d | %.0f | %.0f–%.0f | %.0f | %.0f | %.0f–%.0f | %.0f | %.2f |\n",
        l, r, dm, dlo, dhi, r / dm * 1000, pm, plo, phi, rs / pm * 1000, (r / dm) / (rs / pm)
    }'
}
