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
UV_VERSION=0.13.9
install_with_uv() {
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION" || return 1
  local args=(--python "$VENV/bin/python")
  local value
  value=$("$VENV/bin/pip" config get global.constraint 2>/dev/null || true)
  [ -n "$value" ] && [ -f "$value" ] && args+=(--constraint "$value")
  value=${PIP_FIND_LINKS:-$("$VENV/bin/pip" config get global.find-links 2>/dev/null || true)}
  [ -n "$value" ] && [ -d "$value" ] && args+=(--find-links "$value")
  value=${PIP_CERT:-$("$VENV/bin/pip" config get global.cert 2>/dev/null || true)}
  [ -n "$value" ] && [ -f "$value" ] && export SSL_CERT_FILE="$value"
  # Compiled now, on both cores: left to the first imports, the test workers each
  # compiled the same modules at once (140 s more CPU in the first run).
  "$VENV/bin/uv" pip install --quiet --compile-bytecode "${args[@]}" -e ".[dev]"
}
stamp="$VENV/.mcp-ir-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing mcp-ir and its pinned dependencies into $VENV"
  # uv installs the same versions as pip here in ~30 s instead of ~90 s; it does not
  # read pip's configuration, so it gets this machine's from pip. pip itself is the
  # fallback if uv cannot be installed or fails.
  if ! install_with_uv; then
    echo "setup: uv failed; installing with pip"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[dev]"
  fi
  rm -f "$VENV"/.mcp-ir-installed-*
  touch "$stamp"
fi
echo "setup: ready ($("$VENV/bin/python" -c 'import prefect, anthropic, docker; print("prefect", prefect.__version__, "anthropic", anthropic.__version__, "docker", docker.__version__)'))"
