#!/bin/sh
# Installs Debian's chromium for the HTML report tests (headless rendering).
# Idempotent: does nothing when chromium is already on PATH.
set -eu
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-chromium.sh: run as root (apt-get install -y chromium)" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium || {
    apt-get update
    apt-get install -y --no-install-recommends chromium
}
command -v chromium >/dev/null
