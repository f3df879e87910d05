#!/usr/bin/env bash
# Installs the pinned npm packages of the node-postgres test
# (package-lock.json: pg, pg-cursor) into node_modules here with `npm ci`,
# unless that very lock file is installed already. No install scripts run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
stamp=node_modules/.duckstore-installed-lock
if [ -f "$stamp" ] && cmp -s package-lock.json "$stamp"; then
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund >&2
cp package-lock.json "$stamp"
