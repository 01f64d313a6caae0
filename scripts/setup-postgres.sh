#!/usr/bin/env bash
# Installs Debian's PostgreSQL (15 on bookworm): the tests that run Prefect as
# docs/operations.md prescribes for production (tests/test_operations_doc.py) make a
# throwaway cluster of their own with its initdb/pg_ctl (tests/plugins/postgres.py);
# the package's default cluster is not used.
#
# Idempotent: returns at once when the package is installed. Must run as root.
set -euo pipefail

if dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q "install ok installed"; then
    echo "setup-postgres: already installed: postgresql"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-postgres: must run as root to install postgresql" >&2
    exit 1
fi
echo "setup-postgres: installing postgresql"
if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
    apt-get update
fi
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
fi
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
