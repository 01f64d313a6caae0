#!/usr/bin/env bash
# Sets up everything the demo and the tests need on a fresh machine of this kind
# (run as root): Debian's podman, runc and busybox-static, Debian's postgresql (for
# the tests that run Prefect on PostgreSQL), then a virtualenv with
# the project and its pinned dependencies. Safe to run again: each part is
# skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-podman.sh
bash scripts/setup-postgres.sh

# ssh-keygen signs approvals (mcp-ir approve|reject|record) and makes the sandbox keys.
if ! command -v ssh-keygen >/dev/null 2>&1; then
  echo "setup: installing openssh-client (ssh-keygen)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client
fi

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.mcp-ir-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing mcp-ir and its pinned dependencies into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[dev]"
  rm -f "$VENV"/.mcp-ir-installed-*
  touch "$stamp"
fi
echo "setup: ready ($("$VENV/bin/python" -c 'import prefect, anthropic, docker; print("prefect", prefect.__version__, "anthropic", anthropic.__version__, "docker", docker.__version__)'))"
