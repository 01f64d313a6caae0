#!/usr/bin/env bash
# Installs what the local container engine needs (FACTS §5): podman serving the
# Docker Engine API, runc (crun fails on this machine kind's hybrid cgroups) and
# busybox-static (the only binary in the sandbox image, which cannot be pulled).
#
# Idempotent: when every package is already installed it does not touch apt (it
# still checks the binaries). Must run as root to install (the Makefile calls it
# before demo/tests).
set -euo pipefail
source "$(dirname "$0")/apt-install.sh"

apt_install setup-podman podman runc busybox-static

for bin in podman /usr/sbin/runc /bin/busybox; do
    command -v "$bin" >/dev/null || { echo "setup-podman: $bin missing after install" >&2; exit 1; }
done
echo "setup-podman: ok ($(podman --version))"
