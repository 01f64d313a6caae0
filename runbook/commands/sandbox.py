"""``mcp-ir sandbox up|down``: a local sandbox with real gates, left running until
``down``, to try a breach run the way on-call would (see ``sandbox/host.py``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.errors import ConfigError, McpIrError
from core.processes import pid_alive

NAME = "sandbox"
HELP = "start (up) or stop (down) a local sandbox with real gates"
DESCRIPTION = """\
up: start a local sandbox and leave it running — a Prefect server with its UI,
podman, the sandbox Tunnels and Managed Agents APIs (two sessions and an agent using
the tunnel's MCP servers), the OAuth server, moto, Slack, PagerDuty and SMTP
stand-ins, and the targets 'sandbox' (Compose), 'sandbox-helm' (Helm), and
'sandbox-hardened' / 'sandbox-weak' (for mcp-ir audit). Writes
DIR/inventory.yaml (people alice, bob, carol in oncall; dave in security-leads),
DIR/env (export lines to source), DIR/keys/<person> (SSH keys for approvals),
DIR/kubeconfig, and prints the commands to try next. Running it again while the
sandbox is up only prints them again.

down: stop everything 'up' started in DIR and check that nothing is left running."""

DEFAULT_DIR = ".mcp-ir/sandbox"
UP_TIMEOUT_S = 300.0
DOWN_TIMEOUT_S = 60.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["up", "down"], help="up: start; down: stop")
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"sandbox directory (default {DEFAULT_DIR})")
    p.add_argument(
        "--only",
        default="compose,helm,audit",
        help="up: which targets to provision, comma-separated from compose (sandbox), helm "
        "(sandbox-helm), audit (sandbox-hardened, sandbox-weak); default all (faster with fewer)",
    )


def run(args: argparse.Namespace, settings: Any) -> int:
    directory = Path(args.dir).resolve()
    if args.action == "down":
        return down(directory)
    kinds = tuple(k.strip() for k in args.only.split(",") if k.strip())
    unknown = sorted(set(kinds) - {"compose", "helm", "audit"})
    if unknown or not kinds:
        raise ConfigError(
            f"--only: unknown target kind(s) {', '.join(unknown) or '(none given)'}; "
            "choose from compose, helm, audit"
        )
    if "audit" in kinds and "compose" not in kinds:
        raise ConfigError("--only: audit needs compose (its targets run in the container engine)")
    return up(directory, kinds)


def _state(directory: Path) -> dict[str, Any] | None:
    path = directory / "state.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg})") from None


def up(
    directory: Path, kinds: tuple[str, ...] = ("compose", "helm", "audit"), quiet: bool = False
) -> int:
    state = _state(directory)
    if state and pid_alive(state.get("pid")) and (directory / "ready").exists():
        print(f"sandbox: already up in {directory} (pid {state['pid']})")
        _next_steps(directory, state)
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    for stale in ("ready", "failed", "state.json"):
        (directory / stale).unlink(missing_ok=True)
    log_path = directory / "host.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox.host",
                "--dir",
                str(directory),
                "--kinds",
                ",".join(kinds),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    shown = 0
    deadline = time.monotonic() + UP_TIMEOUT_S
    while True:
        lines = log_path.read_text(errors="replace").splitlines()
        for line in lines[shown:]:
            if line.startswith("sandbox: "):
                print(line, flush=True)
        shown = len(lines)
        if (directory / "ready").exists():
            break
        failed = directory / "failed"
        if failed.exists() or process.poll() is not None or time.monotonic() > deadline:
            why = failed.read_text().strip() if failed.exists() else "did not become ready"
            if process.poll() is None:
                _stop_group(process.pid, DOWN_TIMEOUT_S)
            raise McpIrError(f"sandbox up failed: {why} (log: {log_path})")
        time.sleep(0.5)
    state = _state(directory) or {}
    print(f"sandbox: up in {directory} (pid {process.pid}); log {log_path}")
    if not quiet:
        _next_steps(directory, state)
    return 0


def load_env(directory: Path) -> dict[str, str]:
    """The variables of DIR/env (the lines ``up`` wrote), for in-process use."""
    import shlex

    env = {}
    for line in (directory / "env").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def _next_steps(directory: Path, state: dict[str, Any]) -> None:
    urls = state.get("urls", {})
    d = directory
    print(
        f"""
Next:
  source {d}/env
  mcp-ir breach --target sandbox --as alice        # a real gated run (Ctrl-C leaves it resumable)
In a second shell (source {d}/env too):
  mcp-ir incidents                                  # what waits for whom
  mcp-ir status INC                                 # the plan, its hash and the approvals so far
  mcp-ir approve INC STEP --as bob --key {d}/keys/bob  # the STEP status names
  mcp-ir approve INC STEP --as carol --key {d}/keys/carol  # two-person gates
  mcp-ir record INC contact_support --ticket SUP-1 --as carol --key {d}/keys/carol
  mcp-ir report INC --format html --output report.html
  mcp-ir audit --all                                # sandbox-hardened passes, sandbox-weak fails
Prefect UI: {urls.get("prefect_ui", "?")}
kubectl:    kubectl --kubeconfig {d}/kubeconfig -n mcp-tunnel get pods   (target sandbox-helm)
Stop it:    mcp-ir sandbox down --dir {d}"""
    )


def _stop_group(pid: int, timeout_s: float) -> bool:
    """SIGTERM to the process (it stops what it started), then SIGKILL its group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    clean = not pid_alive(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return clean


def _ancestors() -> set[int]:
    """This process and its parents (a shell running 'sandbox down --dir DIR' names DIR)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(") ", 1)[1].split()[1])
    return pids


def processes_under(directory: Path) -> list[int]:
    """Live processes whose command line names the sandbox directory (podman's
    conmon and containers, the Prefect server, the host): what 'down' must leave none of."""
    mine = str(directory)
    found = []
    spared = _ancestors()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in spared:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if mine in cmdline and pid_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def down(directory: Path) -> int:
    state = _state(directory)
    if state is None:
        print(f"sandbox: nothing to stop in {directory} (no state.json)")
        return 0
    pid = state.get("pid")
    clean = True
    if pid_alive(pid):
        print(f"sandbox: stopping (pid {pid})…", flush=True)
        clean = _stop_group(pid, DOWN_TIMEOUT_S)
    left = []
    for name, child in (state.get("pids") or {}).items():
        if pid_alive(child):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child, signal.SIGKILL)
            time.sleep(0.2)
            if pid_alive(child):
                left.append(f"{name} (pid {child})")
    for other in processes_under(directory):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(other, signal.SIGKILL)
        time.sleep(0.2)
        if pid_alive(other):
            left.append(f"pid {other}")
    for stale in ("ready", "state.json"):
        (directory / stale).unlink(missing_ok=True)
    if left:
        raise McpIrError(f"sandbox down: still running: {', '.join(left)}")
    print(
        "sandbox: down; nothing left running"
        + ("" if clean else " (the sandbox did not stop in time and was killed)")
    )
    return 0
