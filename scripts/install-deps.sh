#!/usr/bin/env bash
# Installs what duckstore needs to build, test and run its demo on Debian 12:
# the Debian packages below (skipped when present) and the pinned DuckDB C API.
# Safe to run again: a second run installs and downloads nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# To build build/duckstore and the test programs (npm fetches the pinned
# DuckDB; CMake configures the cmocka tests with every build).
build_packages=(
  build-essential cmake pkg-config
  libpq-dev libyaml-dev libmicrohttpd-dev libjansson-dev libcmocka-dev libcurl4-openssl-dev
  npm
)
# For `make test`, `make fuzz`, `make bench` and the demo: the throwaway
# PostgreSQL, the HTTP clients, clang and its runtime libraries
# (libFuzzer, sanitizers), and chromium for the status page's browser test
# (tests/ui, driven by the playwright-core that tests/ui/package-lock.json
# pins; the browser is Debian's, never a download of Playwright's).
test_packages=(
  postgresql
  curl jq openssl time
  wrk
  clang libclang-rt-14-dev
  chromium
)
packages=("${build_packages[@]}" "${test_packages[@]}")

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

# npm may come from elsewhere (a Node.js install): only ask for it when absent.
if command -v npm >/dev/null 2>&1; then
  filtered=()
  for pkg in "${missing[@]}"; do [ "$pkg" = npm ] || filtered+=("$pkg"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

"$here/fetch-duckdb.sh"
