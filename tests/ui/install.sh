#!/usr/bin/env bash
# Installs the pinned npm packages of the browser test (package-lock.json:
# playwright-core) into tests/ui/node_modules with `npm ci`, unless that very
# lock file is installed already. CTest runs it before ui/test_status_page
# (a fixture), so `make test` installs once for the plain and the sanitizer
# runs. No install scripts run; the browser is Debian's chromium.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
stamp=node_modules/.duckstore-installed-lock
if [ -f "$stamp" ] && cmp -s package-lock.json "$stamp"; then
  echo "tests/ui: node_modules matches package-lock.json"
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund
cp package-lock.json "$stamp"
