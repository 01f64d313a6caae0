#!/usr/bin/env bash
# Installs Debian's PostgreSQL (15 on bookworm): the tests that run Prefect as
# docs/operations.md prescribes for production (tests/test_operations_doc.py) make a
# throwaway cluster of their own with its initdb/pg_ctl (tests/plugins/postgres.py);
# the package's default cluster is not used.
#
# Idempotent: does not touch apt when the package is installed. Must run as root to
# install.
set -euo pipefail
source "$(dirname "$0")/apt-install.sh"

apt_install setup-postgres postgresql
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
