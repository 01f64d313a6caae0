#!/usr/bin/env bash
# apt_install TAG PACKAGE...: installs the Debian packages of PACKAGE... that are not
# installed yet; messages start with TAG. Sourced by the setup-*.sh scripts.
#
# Idempotent: when every package is installed it returns at once without touching
# apt. Installing needs root (exits 1 otherwise). The package lists are refreshed only
# when they were never fetched or the install cannot find a package with them.
apt_install() {
    local tag=$1
    shift
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "$tag: already installed: $*"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "$tag: must run as root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "$tag: installing: ${missing[*]}"
    if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
        apt-get update
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
}
