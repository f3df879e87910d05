#!/usr/bin/env bash
# Runs each libFuzzer target of build-fuzz/ (make fuzz builds them) for
# SECONDS (default $FUZZ_SECONDS or 60), all targets at once, under ASan,
# UBSan and LeakSanitizer. Each starts from its seed corpus in
# tests/fuzz/corpus/<target>/ plus the past crash inputs in
# tests/fuzz/regressions/<target>/ (read only); what it finds goes to
# build-fuzz/fuzz-work/<target>/. Fails on any crash, leak, UB report or
# timeout, naming the input to turn into a regression test.
#
# With FUZZ_SEED set (make test does so), each target runs a fixed number of
# inputs (about SECONDS on a 2-core machine) from that seed instead of a
# fixed time: the same inputs on every run, so a test run cannot fail on
# whatever a random search happened to reach that day. Plain `make fuzz`
# searches freely.
#
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail

seconds="${1:-${FUZZ_SECONDS:-60}}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
work="$build/fuzz-work"

targets=(copy_decoder config sql pgwire pgoutput)
# Inputs up to this size: the decoder's seeds hold more than one 2048-row chunk.
declare -A max_len=([copy_decoder]=32768 [config]=8192 [sql]=4096 [pgwire]=16384 [pgoutput]=16384)
# DuckDB holds memory between statements where LeakSanitizer's check after
# each input does not see it: the sql target is checked for leaks at exit,
# after it closed its database.
declare -A flags=([copy_decoder]= [config]= [sql]=-detect_leaks=0 [pgwire]= [pgoutput]=)
# Inputs per second each target reaches on a 2-core machine under sanitizers.
declare -A rate=([copy_decoder]=20000 [config]=3500 [sql]=8 [pgwire]=10000 [pgoutput]=15000)

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1"
export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

declare -A pids
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/fuzz_$t"
  [ -x "$bin" ] || { echo "fuzz: $bin is missing; run make fuzz" >&2; exit 1; }
  rm -rf "${work:?}/$t"
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  budget=(-max_total_time="$seconds")
  if [ -n "${FUZZ_SEED:-}" ]; then
    budget=(-seed="$FUZZ_SEED" -runs=$((seconds * ${rate[$t]})))
  fi
  dirs=("$work/$t/corpus" "$root/tests/fuzz/corpus/$t")
  [ -d "$root/tests/fuzz/regressions/$t" ] && dirs+=("$root/tests/fuzz/regressions/$t")
  "$bin" "${budget[@]}" ${flags[$t]} -timeout=10 -rss_limit_mb=2048 -max_len="${max_len[$t]}" \
    -print_final_stats=1 -artifact_prefix="$work/$t/artifacts/" "${dirs[@]}" >"$work/$t/log" 2>&1 &
  pids[$t]=$!
done

status=0
printf '%-14s %12s %10s %8s %8s\n' target execs execs/s seeds found
for t in "${targets[@]}"; do
  rc=0
  wait "${pids[$t]}" || rc=$?
  final_stat() { awk -v k="stat::$1:" '$1 == k { print $2 }' "$work/$t/log"; }
  seeds=$(find "$root/tests/fuzz/corpus/$t" -type f | wc -l)
  found=$(find "$work/$t/corpus" -type f | wc -l)
  printf '%-14s %12s %10s %8s %8s\n' "$t" "$(final_stat number_of_executed_units)" \
    "$(final_stat average_exec_per_sec)" "$seeds" "$found"
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "fuzz: $t failed (exit $rc); last lines of $work/$t/log:" >&2
    grep -a -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse)' "$work/$t/log" | tail -n 40 >&2
    echo "fuzz: the input is in $work/$t/artifacts/; replay it with $build/tests/fuzz/fuzz_$t FILE," >&2
    echo "      then add it to tests/fuzz/regressions/$t/ with a test in tests/fuzz/test_replay.c" >&2
  fi
done
exit "$status"
