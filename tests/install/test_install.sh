#!/usr/bin/env bash
# install/test_install: `make install DESTDIR=... PREFIX=/usr` from a build
# directory of its own (so it is safe beside the other tests), then the
# installed tree, copied to another directory, checks its files, RUNPATH,
# man pages and unit, syncs from the harness PostgreSQL and serves from a
# third directory under a systemd-style NOTIFY_SOCKET; then make uninstall
# leaves no file, and make dist unpacks into a tree that runs.
#
# Needs DUCKSTORE_SOURCE_DIR (CTest sets it) and DUCKSTORE_TEST_PG
# (scripts/with-test-pg.sh).
set -euo pipefail

src="${DUCKSTORE_SOURCE_DIR:?set DUCKSTORE_SOURCE_DIR to the source tree}"
: "${DUCKSTORE_TEST_PG:?run under scripts/with-test-pg.sh}"
: "${DUCKSTORE_TEST_PG_PASSWORD:?run under scripts/with-test-pg.sh}"
# The make of make test must not lend its jobserver or flags to this one.
unset MAKEFLAGS MFLAGS MAKELEVEL
export NO_PROXY='*' no_proxy='*'

tmp="$(mktemp -d /tmp/duckstore-install.XXXXXX)"
db="ds_install_$$"
serve_pid=""
listener_pid=""
cleanup() {
  [ -z "$serve_pid" ] || kill -KILL "$serve_pid" 2>/dev/null || true
  [ -z "$listener_pid" ] || kill -KILL "$listener_pid" 2>/dev/null || true
  psql "$DUCKSTORE_TEST_PG" -qX -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "test_install: FAIL: $*" >&2
  for log in "$tmp"/*.log "$tmp/notify.out"; do
    [ -f "$log" ] || continue
    echo "--- $log (last 40 lines)" >&2
    tail -n 40 "$log" >&2
  done
  exit 1
}
ok() { echo "ok - $*"; }

# Polls a command until it succeeds, for up to $1 seconds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

version="$(sed -n 's/^#define DS_VERSION "\(.*\)"/\1/p' "$src/src/common/version.h")"
[ -n "$version" ] || fail "no DS_VERSION in src/common/version.h"

# ---- make install -----------------------------------------------------------
make -C "$src" --no-print-directory install DESTDIR="$tmp/dest" PREFIX=/usr BUILD_DIR="$tmp/build" \
  >"$tmp/install.log" 2>&1 || fail "make install exited $?"

expected="./usr/bin/duckstore
./usr/lib/duckstore/libduckdb.so
./usr/lib/systemd/system/duckstore.service
./usr/share/doc/duckstore/LICENSE.duckdb
./usr/share/doc/duckstore/examples/config/duckdb.yaml
./usr/share/doc/duckstore/examples/config/monitoring_db.yaml
./usr/share/doc/duckstore/examples/config/secrets.env
./usr/share/man/man1/duckstore.1
./usr/share/man/man5/duckstore.conf.5"
got="$(cd "$tmp/dest" && find . \( -type f -o -type l \) | LC_ALL=C sort)"
[ "$got" = "$expected" ] || fail "installed files differ; got:
$got"
ok "make install put exactly the expected files"

bin_rel=usr/bin/duckstore
dynamic="$(readelf -d "$tmp/dest/$bin_rel")"
runpath="$(sed -n 's/.*(RUNPATH).*\[\(.*\)\]$/\1/p' <<<"$dynamic")"
# shellcheck disable=SC2016 # $ORIGIN is literal
[ "$runpath" = '$ORIGIN/../lib/duckstore' ] || fail "RUNPATH is '$runpath', want \$ORIGIN/../lib/duckstore"
! grep -q '(RPATH)' <<<"$dynamic" || fail "the binary has an RPATH besides its RUNPATH"
ok "RUNPATH is \$ORIGIN/../lib/duckstore"

unit="$tmp/dest/usr/lib/systemd/system/duckstore.service"
# shellcheck disable=SC2016 # $MAINPID is literal
for line in 'Type=notify' 'ExecReload=/bin/kill -HUP $MAINPID' \
  'ExecStart=/usr/bin/duckstore --config-dir /etc/duckstore serve --listen 127.0.0.1:8500'; do
  grep -qxF "$line" "$unit" || fail "the unit has no line $line"
done
if command -v systemd-analyze >/dev/null 2>&1; then
  # The binary is not at /usr/bin here: only that complaint is expected.
  complaints="$(systemd-analyze verify --man=no "$unit" 2>&1 | grep -v 'is not executable' || true)"
  [ -z "$complaints" ] || fail "systemd-analyze verify: $complaints"
fi
ok "the unit is Type=notify, runs /usr/bin/duckstore, reloads with SIGHUP"

# ---- man pages --------------------------------------------------------------
for page in man1/duckstore.1 man5/duckstore.conf.5; do
  file="$tmp/dest/usr/share/man/$page"
  rendered="$(MANWIDTH=80 man -l "$file" 2>&1)" || fail "man -l $page exited $?"
  ! grep -qi warning <<<"$rendered" || fail "man -l $page warns: $(grep -i warning <<<"$rendered")"
  grep -q '^NAME' <<<"$rendered" || fail "man -l $page rendered no NAME section"
  strict="$(groff -ww -z -man "$file" 2>&1)"
  [ -z "$strict" ] || fail "groff -ww $page: $strict"
done
grep -q -- '--config-dir' <<<"$(MANWIDTH=80 man -l "$tmp/dest/usr/share/man/man1/duckstore.1")" ||
  fail "duckstore(1) does not show --config-dir"
# Every key of the config (src/config/keys.c's tables) has its entry.
conf5="$(MANWIDTH=200 man -l "$tmp/dest/usr/share/man/man5/duckstore.conf.5" 2>/dev/null)"
# (Not the duckdb: section itself, nor the sub-keys of unique_key (dataset/results/data)
# and join (type/columns), which their key's entry describes.)
keys="$(sed -n 's/^ *{"\([a-z_]*\)", *\.parse = parse_[a-z0-9_]*\>.*/\1/p' "$src/src/config/keys.c" |
  grep -vxE 'duckdb|dataset|results|data|type|columns' | sort -u)"
[ "$(wc -l <<<"$keys")" -ge 25 ] || fail "found only $(wc -l <<<"$keys") keys in src/config/keys.c"
for key in $keys; do
  grep -qE "^ {7}([a-z_]+ and )?$key( |$)" <<<"$conf5" || fail "duckstore.conf(5) has no entry for the key $key"
done
ok "both man pages render without warnings; duckstore.conf(5) lists all $(wc -l <<<"$keys") keys"

# ---- the Dockerfile keeps to these steps --------------------------------------
grep -q 'make install DESTDIR=/out PREFIX=/usr' "$src/Dockerfile" || fail "the Dockerfile does not make install"
grep -q 'COPY --from=build /out/usr/ /usr/' "$src/Dockerfile" || fail "the Dockerfile does not copy the tree"
# Its runtime stage installs the package of every library the binary and
# libduckdb need (libc6 is in every Debian image).
runtime_pkgs="$(sed -n '/^FROM debian:12-slim/,$p' "$src/Dockerfile")"
for lib in "$tmp/dest/$bin_rel" "$tmp/dest/usr/lib/duckstore/libduckdb.so"; do
  for soname in $(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
    [ "$soname" != libduckdb.so ] || continue
    pkg="$(dpkg -S "*/x86_64-linux-gnu/$soname" 2>/dev/null | head -n 1 | cut -d: -f1)"
    [ -n "$pkg" ] || fail "no Debian package holds $soname"
    [ "$pkg" != libc6 ] || continue
    grep -qw -- "$pkg" <<<"$runtime_pkgs" || fail "the Dockerfile's runtime stage lacks $pkg (for $soname)"
  done
done
ok "the Dockerfile's runtime stage has every library's package"

# ---- the tree elsewhere: sync and serve ----------------------------------------
# Moved away from where it was installed, and run from a third directory: it
# finds its libduckdb through $ORIGIN, nothing from the source or build tree.
cp -a "$tmp/dest/usr" "$tmp/moved"
bin="$tmp/moved/bin/duckstore"
lib="$tmp/moved/lib/duckstore/libduckdb.so"
ldd "$bin" | grep -qF "libduckdb.so => $tmp/moved/bin/../lib/duckstore/libduckdb.so" ||
  fail "ldd does not resolve libduckdb.so beside the moved binary: $(ldd "$bin" | grep duckdb)"
mkdir "$tmp/run"
cd "$tmp/run"

DB_PASSWORD=unused "$bin" --config-dir "$tmp/moved/share/doc/duckstore/examples/config" check-config --offline \
  >"$tmp/check-example.log" 2>&1 || fail "check-config --offline of the example config exited $?"
said="$("$bin" version)"
[[ "$said" == "duckstore $version "* ]] || fail "duckstore version says '$said', want duckstore $version"
ok "the moved binary runs, checks the example config, is version $version"

psql "$DUCKSTORE_TEST_PG" -qX -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" \
  -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" \
  >/dev/null || fail "cannot create the database $db"
pg_db="${DUCKSTORE_TEST_PG/dbname=postgres/dbname=$db}"
psql "$pg_db" -qX -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || fail "cannot fill the source table"
CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, note text);
INSERT INTO events SELECT g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', 'event ' || g
FROM generate_series(1, 1000) AS g;
SQL
mkdir "$tmp/conf"
cat >"$tmp/conf/duckdb.yaml" <<EOF
duckdb:
  path: $tmp/data/store.duckdb
  sync_mode: manual
EOF
# The password comes from the environment, as in production.
url="${pg_db/password=$DUCKSTORE_TEST_PG_PASSWORD/password=\${DS_INSTALL_PASSWORD\}}"
cat >"$tmp/conf/events_db.yaml" <<EOF
events_db:
  url: "$url"
  query: SELECT id, created_at, note FROM events
  incremental_column: created_at
EOF
export DS_INSTALL_PASSWORD="$DUCKSTORE_TEST_PG_PASSWORD"

"$bin" --config-dir "$tmp/conf" sync >"$tmp/sync.log" 2>&1 || fail "sync exited $?"
count="$("$bin" --config-dir "$tmp/conf" query --format csv "SELECT count(*) AS n FROM events_data")"
[ "$count" = $'n\n1000' ] || fail "events_data after the sync: $count"
[ ! -e "$tmp/run/data" ] || fail "the run directory got a data/ directory"
ok "the moved binary synced 1000 rows"

# A stand-in for systemd: a datagram socket that records each notification;
# on READY=1 it asks the server's /health at once, so the line says whether
# the port answered when READY=1 arrived.
cat >"$tmp/notify.py" <<'PY'
import re, socket, sys, urllib.request
sock_path, log_path, out_path = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sock_path)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with open(out_path, "a", buffering=1) as out:
    out.write("listening\n")
    while True:
        msg = s.recv(4096).decode()
        line = msg.replace("\n", " ")
        if "READY=1" in msg:
            m = re.search(r"listening on \S+ \(port (\d+)\)", open(log_path).read())
            health = "no-port-logged"
            if m:
                try:
                    health = str(opener.open("http://127.0.0.1:%s/health" % m.group(1), timeout=10).status)
                except Exception as e:
                    health = "error:%s" % e
            line += " health=" + health
        out.write(line + "\n")
PY
touch "$tmp/notify.out"
python3 "$tmp/notify.py" "$tmp/notify.sock" "$tmp/serve.log" "$tmp/notify.out" 2>"$tmp/notify-err.log" &
listener_pid=$!
disown "$listener_pid" # killed at the end; no job notice
wait_for 30 grep -qx listening "$tmp/notify.out" || fail "the notify listener did not start"

NOTIFY_SOCKET="$tmp/notify.sock" "$bin" --config-dir "$tmp/conf" serve --listen 127.0.0.1:0 \
  >"$tmp/serve.log" 2>&1 &
serve_pid=$!
wait_for 60 grep -q 'READY=1' "$tmp/notify.out" || fail "no READY=1 on NOTIFY_SOCKET within 60 s"
grep -q '^READY=1 health=200$' "$tmp/notify.out" ||
  fail "READY=1 came before the port answered: $(grep READY "$tmp/notify.out")"
port="$(sed -n 's/.*listening on [^ ]* (port \([0-9]*\)).*/\1/p' "$tmp/serve.log" | head -n 1)"
ok "READY=1 arrived once the port ($port) answered"

maps="$(grep -F libduckdb.so "/proc/$serve_pid/maps" | awk '{print $6}' | sort -u)"
[ "$maps" = "$lib" ] || fail "the server mapped libduckdb from '$maps', want $lib"
ok "the server runs on the moved tree's libduckdb"

api="http://127.0.0.1:$port/api/store"
rows() { curl -fsS "$api/status" | jq -r '.datasets.events_data | "\(.state) \(.rows)"'; }
[ "$(rows)" = "ready 1000" ] || fail "status before the new rows: $(rows)"
psql "$pg_db" -qX -v ON_ERROR_STOP=1 -c "INSERT INTO events SELECT g, timestamptz '2026-01-02 00:00:00+00' \
  + g * interval '1 second', 'late ' || g FROM generate_series(1001, 1010) AS g" >/dev/null
curl -fsS -X POST "$api/sync/events" >/dev/null || fail "POST $api/sync/events failed"
ready_1010() { [ "$(rows)" = "ready 1010" ]; }
wait_for 60 ready_1010 || fail "status after POST sync: $(rows)"
ok "the server synced the new rows; /api/store/status says ready 1010"

kill -HUP "$serve_pid"
reloaded() { grep -A1 '^RELOADING=1 MONOTONIC_USEC=[0-9]*$' "$tmp/notify.out" | grep -q '^READY=1 health=200$'; }
wait_for 60 reloaded || fail "no RELOADING=1 then READY=1 after SIGHUP"
ok "SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1"

kill -TERM "$serve_pid"
rc=0
wait "$serve_pid" || rc=$?
serve_pid=""
[ "$rc" -eq 0 ] || fail "serve exited $rc after SIGTERM"
wait_for 30 grep -qx 'STOPPING=1' "$tmp/notify.out" || fail "no STOPPING=1 after SIGTERM"
[ "$(tail -n 1 "$tmp/notify.out")" = STOPPING=1 ] || fail "STOPPING=1 is not the last notification"
ok "SIGTERM: STOPPING=1, exit 0"
kill -KILL "$listener_pid" 2>/dev/null || true
listener_pid=""
cd "$tmp"

# ---- make uninstall -----------------------------------------------------------
make -C "$src" --no-print-directory uninstall DESTDIR="$tmp/dest" PREFIX=/usr BUILD_DIR="$tmp/build" \
  >"$tmp/uninstall.log" 2>&1 || fail "make uninstall exited $?"
left="$(cd "$tmp/dest" && find . \( -type f -o -type l \))"
[ -z "$left" ] || fail "make uninstall left files: $left"
for dir in usr/lib/duckstore usr/share/doc/duckstore; do
  [ ! -e "$tmp/dest/$dir" ] || fail "make uninstall left $dir"
done
ok "make uninstall removed every file and duckstore's directories"

# ---- make dist ----------------------------------------------------------------
make -C "$src" --no-print-directory dist BUILD_DIR="$tmp/build" DIST_DIR="$tmp/dist" >"$tmp/dist.log" 2>&1 ||
  fail "make dist exited $?"
name="duckstore-$version-linux-x86_64"
tarball="$tmp/dist/$name.tar.gz"
[ -f "$tarball" ] || fail "make dist made no $tarball"
tops="$(tar -tzf "$tarball" | cut -d/ -f1 | sort -u)"
[ "$tops" = "$name" ] || fail "the tarball's top directories: $tops"
mkdir "$tmp/unpacked"
tar -C "$tmp/unpacked" -xzf "$tarball"
for f in bin/duckstore lib/duckstore/libduckdb.so share/man/man1/duckstore.1 lib/systemd/system/duckstore.service; do
  [ -f "$tmp/unpacked/$name/$f" ] || fail "the tarball has no $name/$f"
done
"$tmp/unpacked/$name/bin/duckstore" --config-dir "$tmp/conf" query --format csv "SELECT count(*) AS n FROM events_data" \
  >"$tmp/dist-query.log" 2>&1 || fail "the unpacked binary's query exited $?"
[ "$(cat "$tmp/dist-query.log")" = $'n\n1010' ] || fail "the unpacked binary read: $(cat "$tmp/dist-query.log")"
ok "make dist: $name.tar.gz unpacks into a tree that runs"
echo "test_install: all passed"
