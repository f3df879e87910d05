#!/usr/bin/env bash
# Installs what duckstore needs on Debian 12: the Debian packages below
# (skipped when present) and the pinned DuckDB C API.
#
#   scripts/install-deps.sh [build]   to build build/duckstore (make, make install)
#   scripts/install-deps.sh test      also what make test, fuzz, bench and demo use
#
# Safe to run again: a second run installs and downloads nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

what="${1:-build}"
case "$what" in
  build | test) ;;
  *)
    echo "usage: $0 [build|test]" >&2
    exit 2
    ;;
esac

# To build build/duckstore and the test programs (CMake configures the
# cmocka tests with every build); curl and openssl fetch and check the
# pinned DuckDB (scripts/fetch-duckdb.sh).
build_packages=(
  build-essential cmake pkg-config
  libpq-dev libyaml-dev libmicrohttpd-dev libjansson-dev libcmocka-dev libcurl4-openssl-dev
  ca-certificates curl openssl
)
# For make test, make fuzz, make bench and the demo: the throwaway
# PostgreSQL, the HTTP clients, clang and its runtime libraries
# (libFuzzer, sanitizers), chromium and npm for the status page's browser
# test (tests/ui, driven by the playwright-core that
# tests/ui/package-lock.json pins; the browser is Debian's, never a download
# of Playwright's), man-db and python3 for tests/install (the man pages, a
# systemd notify socket), and the PostgreSQL drivers tests/pgwire/clients
# reads the cache with (psycopg 3, psycopg2, SQLAlchemy + pandas, pgJDBC).
test_packages=(
  postgresql
  jq time
  wrk
  clang libclang-rt-14-dev
  chromium npm
  man-db python3
  python3-psycopg python3-psycopg2 python3-sqlalchemy python3-pandas
  libpostgresql-jdbc-java default-jdk-headless
)
packages=("${build_packages[@]}")
[ "$what" = build ] || packages+=("${test_packages[@]}")

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

# npm and python3 may come from elsewhere (a Node.js install, pyenv): only
# ask for them when absent.
filtered=()
for pkg in "${missing[@]+"${missing[@]}"}"; do
  case "$pkg" in
    npm | python3) command -v "$pkg" >/dev/null 2>&1 && continue ;;
  esac
  filtered+=("$pkg")
done
missing=("${filtered[@]+"${filtered[@]}"}")

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

"$here/fetch-duckdb.sh"
