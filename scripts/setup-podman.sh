#!/usr/bin/env bash
# Installs what the local container engine needs (FACTS §5): podman serving the
# Docker Engine API, runc (crun fails on this machine kind's hybrid cgroups) and
# busybox-static (the only binary in the sandbox image, which cannot be pulled).
#
# Idempotent: when every package is already installed it returns at once without
# touching apt. Must run as root (the Makefile calls it before demo/tests).
set -euo pipefail

PACKAGES=(podman runc busybox-static)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup-podman: already installed: ${PACKAGES[*]}"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-podman: must run as root to install: ${missing[*]}" >&2
    exit 1
fi

echo "setup-podman: installing: ${missing[*]}"
# Refresh the package lists only when they were never fetched or the install
# cannot find a package with the current lists.
if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
    apt-get update
fi
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

for bin in podman /usr/sbin/runc /bin/busybox; do
    command -v "$bin" >/dev/null || { echo "setup-podman: $bin missing after install" >&2; exit 1; }
done
echo "setup-podman: ok ($(podman --version))"
