# shellcheck shell=bash disable=SC2154 # the variables of bench/run.sh
# The cost of publishing (docs/publish.md), sourced by bench/run.sh once
# the bench data is generated: the `monitoring` source of run.sh's configs
# with a `publish:` section (`partition_by: day(timestamp)`), in a config
# directory of its own on the same DuckDB file. The syncs run with run.sh's
# config, which has no `publish:` (a `duckstore sync` of a source that has
# one publishes after it), so each is timed alone, then `duckstore publish
# monitoring` is. Each run, BENCH_REPEAT times:
# - a full sync, then a first publish into an empty directory (every file
#   written);
# - with BENCH_PUBLISH_TABLES=1, the same with `tables: true` (the two
#   tables too), into another directory;
# - 10,000 new rows, an incremental sync, then a publish after it (the
#   partitions it touched written, the others hard-linked from the version
#   before), for each of the two variants.
# Then the sizes (published Parquet, the DuckDB file after a full sync,
# PostgreSQL's tables) and reading the last published version back with
# DuckDB (bench/duckdb_exec: a count and an aggregate), against the same
# two queries on the DuckDB file.
#
#   BENCH_PUBLISH_TABLES  also time the `tables: true` variant (default 1)

publish_tables="${BENCH_PUBLISH_TABLES:-1}"
publish_dir="$work/published"
publish_facts="$work/publish.tsv" # name, value
: >"$publish_facts"

publish_fail() {
  echo "bench: $*" >&2
  exit 1
}

publish_fact() { printf '%s\t%s\n' "$1" "$2" >>"$publish_facts"; }
publish_val() { awk -F'\t' -v n="$1" '$1 == n { v = $2 } END { print v }' "$publish_facts"; }

publish_config() { # DIR PUBLISH-PATH TABLES
  write_config "$1" 1
  cat >>"$1/monitoring_db.yaml" <<YAML
  publish:
    path: $2
    partition_by: day(timestamp)
    keep_versions: 2
    tables: $3
YAML
}

# The manifest's files of every published relation: "files written bytes
# bytes-written rows version" (written: by this version; the others are
# hard links to an older version's); rows: the view's.
publish_manifest_facts() { # PUBLISH-PATH
  jq -r '.version as $v | [.files[], (.tables[]?.files[])] as $f | [$f[] | select(.written_in == $v)] as $w
    | "\($f | length) \($w | length) \([$f[].bytes] | add // 0) \([$w[].bytes] | add // 0) \(.rows) \($v)"' \
    "$1/_duckstore_manifest.json" || publish_fail "no manifest in $1"
}

# publish_run NAME CONFIG-DIR PUBLISH-PATH: one timed publish; its files.
publish_run() {
  measure "$1" "$duckstore" --config-dir "$2" publish monitoring
  local files written bytes bytes_written rows version
  read -r files written bytes bytes_written rows version <<<"$(publish_manifest_facts "$3")"
  publish_fact "$1_files" "$files"
  publish_fact "$1_written" "$written"
  publish_fact "$1_bytes" "$bytes"
  publish_fact "$1_bytes_written" "$bytes_written"
  publish_fact "$1_rows" "$rows"
  publish_fact "$1_version" "$version"
}

publish_cases() {
  publish_config "$work/p_data" "$publish_dir/data" false
  publish_config "$work/p_tables" "$publish_dir/tables" true
  local run
  for run in $(seq 1 "$repeat"); do
    log "run $run/$repeat: publish: full sync, then a first publish"
    rm -rf "$work/store.duckdb" "$work/store.duckdb.wal" "$publish_dir"
    measure pub_full_sync "$duckstore" --config-dir "$work/w1" sync monitoring --full
    publish_fact store_bytes "$(du -cb "$work"/store.duckdb* | awk 'END { print $1 }')"
    publish_fact store_rows "$(awk '/rows total/ { n += $(NF - 2) } END { print n + 0 }' "$work/cmd.out")"
    publish_fact pg_traces_bytes "$(psql "$DUCKSTORE_TEST_PG" -qAt -c "SELECT pg_total_relation_size('llm_traces')")"
    publish_fact pg_results_bytes \
      "$(psql "$DUCKSTORE_TEST_PG" -qAt -c "SELECT pg_total_relation_size('llm_metric_results')")"
    publish_run pub_full "$work/p_data" "$publish_dir/data"
    if [ "$publish_tables" = 1 ]; then
      log "run $run/$repeat: publish: the same with tables: true"
      publish_run pub_full_tables "$work/p_tables" "$publish_dir/tables"
    fi

    log "run $run/$repeat: publish: 10000 new rows, an incremental sync, then a publish"
    psql "$DUCKSTORE_TEST_PG" -q -c "SELECT add_sample_traces(2000)" >/dev/null
    measure pub_inc_sync "$duckstore" --config-dir "$work/w1" sync monitoring
    grep -q "incremental sync" "$work/cmd.out" || publish_fail "the sync was not incremental: $(cat "$work/cmd.out")"
    publish_run pub_inc "$work/p_data" "$publish_dir/data"
    if [ "$publish_tables" = 1 ]; then
      publish_run pub_inc_tables "$work/p_tables" "$publish_dir/tables"
    fi
  done

  # Reading the last version back: the published rows, then the same two
  # queries on the DuckDB file (its view joins the two tables).
  local version glob agg_from n
  version="$(publish_val pub_inc_version)"
  glob="$publish_dir/data/v$version/**/*.parquet"
  agg_from="read_parquet('$glob', hive_partitioning = true)"
  for run in $(seq 1 "$repeat"); do
    log "run $run/$repeat: publish: reading v$version back"
    measure pub_read "$duckdb_exec" :memory: "SELECT count(*) FROM $agg_from" \
      "SELECT metric_name, count(*), avg(metric_score) FROM $agg_from GROUP BY 1"
    n="$(head -n 1 "$work/cmd.out")"
    [ "$n" = "$(publish_val pub_inc_rows)" ] ||
      publish_fail "v$version holds $n rows, its manifest says $(publish_val pub_inc_rows)"
    measure pub_read_store "$duckdb_exec" "$work/store.duckdb" "SELECT count(*) FROM monitoring_data" \
      "SELECT metric_name, count(*), avg(metric_score) FROM monitoring_data GROUP BY 1"
    [ "$(head -n 1 "$work/cmd.out")" = "$n" ] ||
      publish_fail "monitoring_data holds $(head -n 1 "$work/cmd.out") rows, v$version $n"
  done
}

# One line for the main table: the DuckDB file's size after a full sync
# (the publish case's, whose rows the read side may have added to).
publish_store_size() {
  [ -n "$(publish_val store_bytes)" ] || return 0
  awk -v b="$(publish_val store_bytes)" -v n="$(publish_val store_rows)" \
    -v pg="$(($(publish_val pg_traces_bytes) + $(publish_val pg_results_bytes)))" 'BEGIN {
      printf "DuckDB store file after a full sync of %d rows (both tables): %.0f MB; PostgreSQL'"'"'s tables: %.0f MB (pg_total_relation_size).\n",
        n, b / 1e6, pg / 1e6 }'
}

publish_report() {
  local name label m lo hi rss base bm written files ratio
  echo
  echo "Publishing: \`duckstore publish monitoring\` (one process, timed alone) after a \`duckstore sync\` of the" \
    "same DuckDB file, \`partition_by: day(timestamp)\`, ZSTD Parquet; monitoring_data: $(publish_val pub_full_rows)" \
    "rows at the full sync. Median of $repeat runs; × sync = publish ÷ the sync before it."
  echo
  echo "| measurement | median s | spread s | × sync | files (written, linked) | Parquet MB written | peak RSS MB |"
  echo "| --- | ---: | --- | ---: | --- | ---: | ---: |"
  for name in pub_full_sync pub_full pub_full_tables pub_inc_sync pub_inc pub_inc_tables; do
    awk -F'\t' -v n="$name" '$1 == n { found = 1 } END { exit !found }' "$results" || continue
    read -r m lo hi rss <<<"$(stat_of "$name")"
    case "$name" in
      pub_full_sync) label="full sync" base="" ;;
      pub_full) label="first publish after it (the view)" base=pub_full_sync ;;
      pub_full_tables) label="first publish after it, \`tables: true\` (the view and both tables)" base=pub_full_sync ;;
      pub_inc_sync) label="incremental sync, 10,000 new rows" base="" ;;
      pub_inc) label="publish after it (the view)" base=pub_inc_sync ;;
      pub_inc_tables) label="publish after it, \`tables: true\`" base=pub_inc_sync ;;
    esac
    ratio="-" files="-" bm="-"
    if [ -n "$base" ]; then
      read -r bm _ _ _ <<<"$(stat_of "$base")"
      ratio="$(awk -v a="$m" -v b="$bm" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')"
      written="$(publish_val "${name}_written")"
      files="$(publish_val "${name}_files")"
      files="$files ($written, $((files - written)))"
      bm="$(awk -v b="$(publish_val "${name}_bytes_written")" 'BEGIN { printf "%.1f", b / 1e6 }')"
    fi
    awk -v label="$label" -v m="$m" -v lo="$lo" -v hi="$hi" -v r="$ratio" -v f="$files" -v bm="$bm" -v rss="$rss" \
      'BEGIN { printf "| %s | %.3f | %.3f–%.3f | %s | %s | %s | %.0f |\n", label, m, lo, hi, r, f, bm, rss / 1024 }'
  done
  echo
  local pub_bytes tab_bytes store pg
  pub_bytes="$(publish_val pub_full_bytes)"
  tab_bytes="$(publish_val pub_full_tables_bytes)"
  store="$(publish_val store_bytes)"
  pg="$(($(publish_val pg_traces_bytes) + $(publish_val pg_results_bytes)))"
  awk -v n="$(publish_val store_rows)" -v p="$pub_bytes" -v t="${tab_bytes:-0}" -v s="$store" -v pg="$pg" -v pt="$(publish_val pg_traces_bytes)" \
    -v pr="$(publish_val pg_results_bytes)" 'BEGIN {
      printf "Sizes after the full sync of %d rows: the published view %.0f MB of Parquet (%.2f × the DuckDB file, %.2f × PostgreSQL)", n, p / 1e6, p / s, p / pg
      if (t > 0) printf "; with `tables: true` %.0f MB", t / 1e6
      printf "; the DuckDB file %.0f MB; PostgreSQL %.0f MB (llm_traces %.0f MB, llm_metric_results %.0f MB, pg_total_relation_size).\n",
        s / 1e6, pg / 1e6, pt / 1e6, pr / 1e6
    }'
  echo
  echo "| reading the last version back (\`build/duckdb_exec\`, one process) | median s | spread s | peak RSS MB |"
  echo "| --- | ---: | --- | ---: |"
  for name in pub_read pub_read_store; do
    read -r m lo hi rss <<<"$(stat_of "$name")"
    case "$name" in
      pub_read) label="\`read_parquet('…/v$(publish_val pub_inc_version)/**/*.parquet', hive_partitioning = true)\`: count(*), then count and avg(metric_score) by metric_name ($(publish_val pub_inc_rows) rows)" ;;
      pub_read_store) label="the same two queries on monitoring_data in the DuckDB file" ;;
    esac
    awk -v label="$label" -v m="$m" -v lo="$lo" -v hi="$hi" -v rss="$rss" \
      'BEGIN { printf "| %s | %.3f | %.3f–%.3f | %.0f |\n", label, m, lo, hi, rss / 1024 }'
  done
}
