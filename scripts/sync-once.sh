#!/usr/bin/env bash
# Triggers one sync of a source through a running `duckstore serve` and waits
# for its result (runbook section 2: POST the sync, poll the status until
# <NAME>_data.state is ready or error).
#
#   scripts/sync-once.sh NAME [--full] [--url http://127.0.0.1:8500]
#                             [--timeout SECONDS] [--interval SECONDS]
#
# Sends `Authorization: Bearer $DUCKSTORE_API_TOKEN` when that variable is set
# (through curl's stdin config, so the token never shows in `ps`).
# If the source is already syncing (409), waits for that sync instead.
#
# Exit codes: 0 ready, 1 the sync failed (its error is printed) or the
# timeout passed, 2 usage or the request was refused (unreachable server,
# 401, 404, 400, ...). Needs curl and jq.
set -euo pipefail

usage() {
  echo "usage: $0 NAME [--full] [--url http://127.0.0.1:8500] [--timeout SECONDS] [--interval SECONDS]" >&2
  exit 2
}

name=""
full=0
url="http://127.0.0.1:8500"
timeout=1800
interval=1
while [ "$#" -gt 0 ]; do
  case "$1" in
    --full) full=1 ;;
    --url) [ "$#" -ge 2 ] || usage; url="$2"; shift ;;
    --timeout) [ "$#" -ge 2 ] || usage; timeout="$2"; shift ;;
    --interval) [ "$#" -ge 2 ] || usage; interval="$2"; shift ;;
    -h | --help) usage ;;
    -*) echo "sync-once: unknown option $1" >&2; usage ;;
    *) [ -z "$name" ] || usage; name="$1" ;;
  esac
  shift
done
[ -n "$name" ] || usage
if ! [[ "$name" =~ ^[a-z_][a-z0-9_]*$ ]]; then
  echo "sync-once: \"$name\" is not a source name (lowercase letters, digits, _)" >&2
  exit 2
fi
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "sync-once: $tool is required" >&2; exit 2; }
done
url="${url%/}"

# api METHOD PATH: prints the body, then a last line with the HTTP code.
api() {
  local args=(-sS -X "$1" -w '\n%{http_code}' --max-time 30 "$url$2")
  if [ -n "${DUCKSTORE_API_TOKEN:-}" ]; then
    printf 'header = "Authorization: Bearer %s"\n' "$DUCKSTORE_API_TOKEN" | curl -K - "${args[@]}"
  else
    curl "${args[@]}"
  fi
}

# Splits api's output into $body and $code.
call() {
  local out
  if ! out="$(api "$1" "$2" 2>&1)"; then
    echo "sync-once: cannot reach $url: $(grep -m1 '^curl:' <<<"$out" || true)" >&2
    exit 2
  fi
  code="${out##*$'\n'}"
  body="${out%$'\n'*}"
}

error_of() { jq -r '.error // empty' <<<"$body" 2>/dev/null || true; }

path="/api/store/sync/$name"
[ "$full" -eq 1 ] && path="$path?full=true"
call POST "$path"
case "$code" in
  202) echo "sync-once: $(jq -r '.message' <<<"$body")" ;;
  409)
    msg="$(error_of)"
    if [ "$msg" = "$name is already syncing" ]; then
      echo "sync-once: $name is already syncing; waiting for that sync"
    else
      echo "sync-once: HTTP 409: ${msg:-$body}" >&2
      exit 2
    fi
    ;;
  *)
    msg="$(error_of)"
    echo "sync-once: HTTP $code: ${msg:-$body}" >&2
    sources="$(jq -r '.sources // empty | join(", ")' <<<"$body" 2>/dev/null || true)"
    [ -n "$sources" ] && echo "sync-once: known sources: $sources" >&2
    exit 2
    ;;
esac

dataset="${name}_data"
deadline=$((SECONDS + timeout))
while :; do
  call GET /api/store/status
  if [ "$code" != 200 ]; then
    echo "sync-once: status answered HTTP $code: $(error_of)" >&2
    exit 2
  fi
  state="$(jq -r --arg d "$dataset" '.datasets[$d].state // "missing"' <<<"$body")"
  case "$state" in
    ready)
      jq -r --arg d "$dataset" '.datasets[$d] |
        "sync-once: \($d) ready: \(.rows) rows, \(.sync_type) sync" +
        (if .sync_type == "incremental" then " (+\(.incremental_rows) rows)" else "" end) +
        ", \(.duration_seconds // 0 | . * 100 | round / 100) s" +
        (if .truncated then ", truncated at max_sync_rows" else "" end)' <<<"$body"
      jq -r --arg d "$dataset" '.datasets[$d].warnings[]? | "sync-once: warning: \(.)"' <<<"$body" >&2
      exit 0
      ;;
    error)
      echo "sync-once: $dataset failed: $(jq -r --arg d "$dataset" '.datasets[$d].error' <<<"$body")" >&2
      exit 1
      ;;
    syncing) ;;
    *)
      echo "sync-once: unexpected state \"$state\" of $dataset" >&2
      exit 1
      ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "sync-once: $dataset still syncing after ${timeout} s; giving up (the sync goes on)" >&2
    exit 1
  fi
  sleep "$interval"
done
