#!/usr/bin/env bash
# A simulated network between duckstore and the benchmark's PostgreSQL: a
# network namespace joined to the host by a veth pair whose two ends delay
# and rate-limit their traffic (tc netem), so duckstore reaches PostgreSQL
# as it would a server a few milliseconds away. Used by bench/run.sh, under
# scripts/with-test-pg.sh, as root.
#
#   bench/netem.sh up DELAY RATE   e.g. "2ms" "1gbit": makes the namespace,
#                                  makes PostgreSQL listen on the host's end
#                                  (a restart) and prints that address; exits
#                                  3 with the reason on stderr when
#                                  namespaces or netem are not available here
#   bench/netem.sh run CMD...      runs CMD inside the namespace
#   bench/netem.sh down            removes the namespace and the veth pair
set -euo pipefail

ns=dsbench_netem
host_if=dsbench_h
ns_if=dsbench_n
host_addr=10.231.0.1
ns_addr=10.231.0.2

skip() {
  echo "netem: $*" >&2
  down_quiet
  exit 3
}

down_quiet() {
  ip link del "$host_if" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
}

# PostgreSQL of scripts/with-test-pg.sh restarted with the host's end of the
# pair added to listen_addresses (and to pg_hba.conf): pg_ctl restart reuses
# the command line recorded in postmaster.opts.
pg_listen_too() {
  local data="$DUCKSTORE_TEST_PG_DATA" bin="$DUCKSTORE_TEST_PG_BIN"
  local as_pg=()
  [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
  grep -q "$ns_addr" "$data/pg_hba.conf" ||
    echo "host all all $ns_addr/32 scram-sha-256" >>"$data/pg_hba.conf"
  sed -i "s/listen_addresses=127\.0\.0\.1\"/listen_addresses=127.0.0.1,$host_addr\"/" "$data/postmaster.opts"
  grep -q "$host_addr" "$data/postmaster.opts" || skip "cannot add $host_addr to PostgreSQL's listen_addresses"
  "${as_pg[@]}" "$bin/pg_ctl" -D "$data" -w -t 60 restart -m fast >/dev/null
}

case "${1:-}" in
  up)
    delay="${2:?delay}" rate="${3:?rate}"
    [ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
    command -v ip >/dev/null && command -v tc >/dev/null || skip "ip or tc (iproute2) not installed"
    down_quiet
    ip netns add "$ns" 2>/dev/null || skip "cannot create a network namespace"
    ip link add "$host_if" type veth peer name "$ns_if" 2>/dev/null || skip "cannot create a veth pair"
    ip link set "$ns_if" netns "$ns"
    ip addr add "$host_addr/30" dev "$host_if"
    ip link set "$host_if" up
    ip -n "$ns" addr add "$ns_addr/30" dev "$ns_if"
    ip -n "$ns" link set "$ns_if" up
    ip -n "$ns" link set lo up
    # Both directions: the rows come through the host's end.
    out="$(tc qdisc add dev "$host_if" root netem delay "$delay" rate "$rate" 2>&1)" ||
      skip "tc netem unavailable (${out//$'\n'/ })"
    out="$(tc -n "$ns" qdisc add dev "$ns_if" root netem delay "$delay" rate "$rate" 2>&1)" ||
      skip "tc netem unavailable in the namespace (${out//$'\n'/ })"
    pg_listen_too
    echo "$host_addr"
    ;;
  run)
    shift
    exec ip netns exec "$ns" "$@"
    ;;
  down)
    down_quiet
    ;;
  *)
    echo "usage: bench/netem.sh up DELAY RATE | run CMD... | down" >&2
    exit 2
    ;;
esac
