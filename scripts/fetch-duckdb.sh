#!/usr/bin/env bash
# Fetches the pinned DuckDB C API (library + header) from the npm registry,
# the one reachable place that serves an official DuckDB build, checks both
# tarballs against pinned sha512 values and unpacks them into
# .deps/duckdb-<version>/{include,lib}. Nothing is done when already present
# or when DUCKDB_DIR points at a system DuckDB.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version=1.4.4
dest="$root/.deps/duckdb-$version"

lib_pkg="@duckdb/node-bindings-linux-x64@1.4.4-r.4"
lib_tgz="duckdb-node-bindings-linux-x64-1.4.4-r.4.tgz"
lib_sha512="jBTL/WvfwxLToFa/pVHfT6elMtltJGnc3wSuxZD9OfMltit9YUdVFS37vBFQzXMT1Z8OWjtSjMh+zPKxOwHLHA=="
hdr_pkg="duckdb@1.4.4"
hdr_tgz="duckdb-1.4.4.tgz"
hdr_sha512="hEJJ5hyVF0VLj3dmOLpsWrQR0b3d4Ykqtygm6iUXjHJDDnSqg/USKxcb5qvNrOhFYPgktayU6dXCtgPqcmmpog=="

if [ -n "${DUCKDB_DIR:-}" ]; then
  if [ -f "$DUCKDB_DIR/include/duckdb.h" ] && [ -f "$DUCKDB_DIR/lib/libduckdb.so" ]; then
    exit 0
  fi
  echo "fetch-duckdb: DUCKDB_DIR=$DUCKDB_DIR needs include/duckdb.h and lib/libduckdb.so" >&2
  exit 1
fi

if [ -f "$dest/include/duckdb.h" ] && [ -f "$dest/lib/libduckdb.so" ]; then
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

check_sha512() { # file expected-base64
  local got
  got="$(openssl dgst -sha512 -binary "$1" | base64 -w0)"
  if [ "$got" != "$2" ]; then
    echo "fetch-duckdb: $1 has sha512-$got, expected sha512-$2; refusing to use it" >&2
    exit 1
  fi
}

echo "fetch-duckdb: downloading DuckDB $version C API from the npm registry"
# npm pack downloads the tarballs without running any install script.
(cd "$work" && npm pack --silent "$lib_pkg" "$hdr_pkg" >/dev/null)
check_sha512 "$work/$lib_tgz" "$lib_sha512"
check_sha512 "$work/$hdr_tgz" "$hdr_sha512"

mkdir -p "$work/lib" "$work/hdr"
tar -xzf "$work/$lib_tgz" -C "$work/lib" package/libduckdb.so package/LICENSE
tar -xzf "$work/$hdr_tgz" -C "$work/hdr" package/src/duckdb/src/include/duckdb.h

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/include" "$dest.tmp/lib"
cp "$work/lib/package/libduckdb.so" "$dest.tmp/lib/"
cp "$work/lib/package/LICENSE" "$dest.tmp/LICENSE"
cp "$work/hdr/package/src/duckdb/src/include/duckdb.h" "$dest.tmp/include/"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "fetch-duckdb: installed into $dest"
