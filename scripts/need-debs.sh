#!/usr/bin/env bash
# Install the named Debian packages that are missing (as root), then stop the services their
# install may have started: tests and benchmarks start their own servers on free ports.
set -euo pipefail
missing=()
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "please install Debian's packages: ${missing[*]} (sudo apt-get install ...)" >&2
        exit 1
    fi
    echo "installing ${missing[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if command -v systemctl >/dev/null 2>&1; then
    systemctl stop mosquitto postgresql redis-server prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi
