#!/usr/bin/env bash
# The test command: installs what the tests need, runs the linters, then pytest with coverage.
set -euo pipefail
cd "$(dirname "$0")/.."

need_debs=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_debs+=(postgresql)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_debs+=(mosquitto)
command -v socat >/dev/null 2>&1 || need_debs+=(socat)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need_debs+=(redis-server)
if [ ${#need_debs[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "test: installing ${need_debs[*]} from Debian's packages"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_debs[@]}" >/dev/null
    else
        echo "test: please install Debian's packages: ${need_debs[*]} (sudo apt-get install ...)" >&2
        exit 1
    fi
fi
# The packages start system-wide services on install; the tests start their own servers.
command -v systemctl >/dev/null 2>&1 && systemctl stop mosquitto postgresql redis-server >/dev/null 2>&1 || true

make --no-print-directory .venv/.installed
echo "test: ruff check"; .venv/bin/ruff check .
echo "test: ruff format --check"; .venv/bin/ruff format --check .
echo "test: mypy --strict"; .venv/bin/mypy
echo "test: pytest"
exec .venv/bin/python -m pytest --cov --cov-report=term-missing:skip-covered --cov-fail-under=95 "$@"
