#!/usr/bin/env bash
# Fetches the DuckDB C API pinned in scripts/duckdb.pin (library + header)
# from the npm registry, the one reachable place that serves an official
# DuckDB build, checks every tarball against its pinned sha512 and unpacks
# into .deps/duckdb-<version>/{include,lib}: the version duckstore builds
# against, and the older one that must still read its files (tests only).
# Nothing is done for a version already present; DUCKDB_DIR pointing at a
# system DuckDB takes the place of the first.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=duckdb.pin
. "$root/scripts/duckdb.pin"

work=""
trap '[ -z "$work" ] || rm -rf "$work"' EXIT

check_sha512() { # file expected-base64
  local got
  got="$(openssl dgst -sha512 -binary "$1" | base64 -w0)"
  if [ "$got" != "$2" ]; then
    echo "fetch-duckdb: $1 has sha512-$got, expected sha512-$2; refusing to use it" >&2
    exit 1
  fi
}

fetch() { # package tarball sha512: downloads into $work (once) and checks it
  [ -n "$work" ] || work="$(mktemp -d)"
  [ -f "$work/$2" ] && return 0
  if command -v npm >/dev/null 2>&1; then
    # npm pack downloads the tarball without running any install script.
    (cd "$work" && npm pack --silent "$1" >/dev/null)
  else
    # A plain build needs no npm: the registry serves each tarball at
    # <registry>/<name>/-/<name without scope>-<version>.tgz.
    local name="${1%@*}" version="${1##*@}"
    local registry="${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org/}"
    curl -fsSL --retry 3 -o "$work/$2" "${registry%/}/$name/-/${name##*/}-$version.tgz"
  fi
  check_sha512 "$work/$2" "$3"
}

install_duckdb() { # version lib-revision lib-sha512
  local version="$1" dest="$root/.deps/duckdb-$1"
  if [ -f "$dest/include/duckdb.h" ] && [ -f "$dest/lib/libduckdb.so" ]; then
    return 0
  fi
  echo "fetch-duckdb: downloading DuckDB $version C API from the npm registry"
  local lib_tgz="duckdb-node-bindings-linux-x64-$version-$2.tgz"
  local hdr_tgz="duckdb-$DUCKDB_HEADER_VERSION.tgz"
  fetch "@duckdb/node-bindings-linux-x64@$version-$2" "$lib_tgz" "$3"
  fetch "duckdb@$DUCKDB_HEADER_VERSION" "$hdr_tgz" "$DUCKDB_HEADER_SHA512"

  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp/include" "$dest.tmp/lib"
  tar -xzOf "$work/$lib_tgz" package/libduckdb.so >"$dest.tmp/lib/libduckdb.so"
  tar -xzOf "$work/$lib_tgz" package/LICENSE >"$dest.tmp/LICENSE"
  tar -xzOf "$work/$hdr_tgz" package/src/duckdb/src/include/duckdb.h >"$dest.tmp/include/duckdb.h"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  echo "fetch-duckdb: installed into $dest"
}

if [ -n "${DUCKDB_DIR:-}" ]; then
  if [ ! -f "$DUCKDB_DIR/include/duckdb.h" ] || [ ! -f "$DUCKDB_DIR/lib/libduckdb.so" ]; then
    echo "fetch-duckdb: DUCKDB_DIR=$DUCKDB_DIR needs include/duckdb.h and lib/libduckdb.so" >&2
    exit 1
  fi
else
  install_duckdb "$DUCKDB_VERSION" "$DUCKDB_LIB_REVISION" "$DUCKDB_LIB_SHA512"
fi
install_duckdb "$DUCKDB_READER_VERSION" "$DUCKDB_READER_LIB_REVISION" "$DUCKDB_READER_LIB_SHA512"
