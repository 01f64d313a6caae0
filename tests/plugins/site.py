"""A sandbox site for end-to-end tests: a simulated Compose stack on the session's
podman engine, a tunnel in the session's Anthropic sandbox, and an inventory file
describing it — built by the same code as the demo (sandbox/site.py)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.trail import Trail
from sandbox.site import TOKEN_ENV, ComposeSite, provision_compose_site, write_inventory
from sandbox.stack import teardown_stack
from tests import warm_cli

CANARY_ENV = "MCP_IR_TEST_CANARY"


@dataclass
class Site:
    site: ComposeSite
    inventory: Path
    evidence: Path
    env: dict[str, str]
    canary: str
    sandbox: Any
    client: Any
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def target(self) -> str:
        return self.site.name

    def key(self, person: str) -> Path:
        """The SSH key of a sandbox person (``sandbox.keys``, beside the inventory)."""
        from sandbox.keys import person_key

        return person_key(self.inventory.parent / "keys", person)

    def cli(
        self, *args: str, check: bool = False, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``mcp-ir``. A decision (approve/reject/record) ``--as NAME`` without
        ``--key`` is made the way that person would make it from their own shell:
        signed with their own key (``MCP_IR_SSH_KEY``), and an approve/reject without
        ``--plan-hash`` with ``--yes`` (a script that signs the plan shown)."""
        env = self.env
        args = tuple(args)
        if args and args[0] in ("approve", "reject", "record") and "--key" not in args:
            if "--as" in args:
                env = {**env, "MCP_IR_SSH_KEY": str(self.key(args[args.index("--as") + 1]))}
            if args[0] != "record" and "--plan-hash" not in args and "--yes" not in args:
                args = (*args, "--yes")
        cmd = self._command(*args)
        return run_text(cmd, env=env, timeout=timeout, check=check)

    def _command(self, *args: str) -> list[str]:
        return mcp_ir_command(self.inventory, self.evidence, *args)

    def start(self, *args: str) -> subprocess.Popen[str]:
        cmd = self._command(*args)
        proc = warm_cli.popen(
            cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.procs.append(proc)
        return proc

    def run_auto_approved(self, playbook: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """alice's ``mcp-ir run`` of ``playbook`` on this site, every gate passed by the
        ``auto-approve`` policy of sandbox targets."""
        return self.cli(
            "run",
            playbook,
            "--target",
            self.target,
            "--as",
            "alice",
            "--policy",
            "auto-approve",
            *extra,
        )

    def kill_procs(self) -> None:
        """Kills the ``mcp-ir`` processes the test started that still run."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def trail(self, incident: str) -> Trail:
        return Trail.open(self.evidence, incident)

    def wait_for(
        self,
        incident: str,
        predicate: Any,
        timeout: float = 90,
        proc: subprocess.Popen[str] | None = None,
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            path = self.evidence / incident / "trail.jsonl"
            if path.exists():
                records = self.trail(incident).records()
                found = predicate(records)
                if found:
                    return found
            if proc is not None and proc.poll() is not None:
                raise AssertionError(
                    f"run ended early ({proc.returncode}): {proc.stdout.read() if proc.stdout else ''}"
                )
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting on the trail of {incident}")

    def wait_for_incident(self, proc: subprocess.Popen[str], timeout: float = 60) -> str:
        """Reads the run's output until it names its incident; returns that line."""
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("incident INC-"):
                return line
            if not line and proc.poll() is not None:
                break
        raise AssertionError("the run never named its incident")

    def mutating_calls(self) -> list[str]:
        return [
            f"{c['method']} {c['path']}" for c in self.sandbox.calls("/v1/") if c["method"] != "GET"
        ]


def canary_inventory(directory: Path, name: str, target: dict[str, Any]) -> Path:
    """Writes an inventory of the one sandbox target ``name``, whose run environment's
    canary secret (``CANARY_ENV``) it declares; returns its path."""
    target["secrets_env"] = [CANARY_ENV]
    return write_inventory(directory / "inventory.yaml", {name: target})


def run_env(
    anthropic_sandbox: Any, canary: str, prefect_server: Any, **extra: str
) -> dict[str, str]:
    """The environment of a site's ``mcp-ir`` runs: this one's, the sandbox bearer
    token, the canary secret, the session's Prefect server, and ``extra``."""
    return {
        **os.environ,
        TOKEN_ENV: anthropic_sandbox.token,
        CANARY_ENV: canary,
        "PREFECT_API_URL": prefect_server.url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **extra,
    }


def compose_target(data_dir: str | Path) -> dict[str, Any]:
    """The smallest valid inventory entry of a Compose target (project ``mcp`` with
    ``data_dir``, tunnel ``tnl_abc123``, its Tunnels API token in ``TUNNELS_TOKEN``),
    for tests that need a target but no stack."""
    return {
        "kind": "compose",
        "compose": {"project": "mcp", "data_dir": str(data_dir)},
        "tunnel": {"id": "tnl_abc123"},
        "anthropic": {"credentials": {"bearer_env": "TUNNELS_TOKEN"}},
    }


def capture_first(name: str = "breach-response") -> str:
    """The head of a test playbook named ``name``: its first step captures the
    evidence, automatically, with a 5 s deadline (the sandbox stack answers at once).
    The test appends the steps it is about."""
    return (
        f"name: {name}\n"
        "steps:\n"
        "  - key: capture_evidence\n"
        "    approval: auto\n"
        "    params: {deadline_s: 5}\n"
    )


def run_text(
    cmd: list[str], *, timeout: float = 120, check: bool = False, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Runs ``cmd`` to completion with its stdout and stderr captured as text: how the
    tests call a CLI (``kwargs``: ``env``, ``cwd``, ``input``, ``stdin`` …). An ``mcp-ir``
    run is forked from the warm zygote (tests/warm_cli.py)."""
    return warm_cli.run(cmd, capture_output=True, text=True, timeout=timeout, check=check, **kwargs)


def mcp_ir_command(inventory: Path, evidence: Path, *args: str) -> list[str]:
    """``mcp-ir`` (``python -m runbook.cli``) on ``inventory`` and ``evidence``."""
    return [
        sys.executable,
        "-m",
        "runbook.cli",
        "--config",
        str(inventory),
        "--evidence-dir",
        str(evidence),
        *args,
    ]


def incident_of(output: str) -> str:
    """The incident id an ``mcp-ir`` run prints (``incident: ID`` when it ends,
    ``incident ID: ...`` when it starts)."""
    for line in output.splitlines():
        if line.startswith("incident: "):
            return line.split()[1]
        if line.startswith("incident INC-"):
            return line.split()[1].rstrip(":")
    raise AssertionError(f"no incident id in output:\n{output}")


def kinds(records: list[Any], step: str | None = None) -> list[str]:
    """The kinds of the trail records (of ``step`` only, when given), in order."""
    return [r.kind for r in records if step is None or r.step == step]


def waiting_at(step: str, run: int = 1):  # noqa: ANN201
    """The gate of ``step`` is waiting in the incident's ``run``-th run (1 = first,
    2 = first resume, ...), which must be its latest."""

    def predicate(records: list[Any]) -> Any:
        from runbook.gates import gate_state

        runs = [r.data["flow_run_id"] for r in records if r.kind in ("run.started", "run.resumed")]
        state = gate_state(records, step)
        if len(runs) != run or state.status != "waiting":
            return None
        return state if state.flow_run_id == runs[-1] else None

    return predicate


def fresh_site(tmp_path: Path, anthropic_sandbox: Any, prefix: str) -> dict[str, Any]:
    """What both site fixtures provision with: a new site name and canary, under
    ``tmp_path/site``, on the Anthropic sandbox (reset: no tunnel of an earlier test)."""
    anthropic_sandbox.reset()
    return {
        "name": prefix + secrets.token_hex(2),
        "root": tmp_path / "site",
        "anthropic_state": anthropic_sandbox.state,
        "anthropic_url": anthropic_sandbox.url,
        "canary": "canary-" + secrets.token_hex(12),
    }


@pytest.fixture
def site(
    tmp_path: Path, engine: Any, anthropic_sandbox: Any, prefect_server: Any
) -> Iterator[Site]:
    client = engine.client()
    fresh = fresh_site(tmp_path, anthropic_sandbox, "site")
    canary = fresh["canary"]
    compose_site = provision_compose_site(
        docker_client=client, docker_host=engine.docker_host, **fresh
    )
    inventory = canary_inventory(tmp_path, fresh["name"], compose_site.target)
    env = run_env(
        anthropic_sandbox,
        canary,
        prefect_server,
        MCP_IR_PLAYBOOK_DIR=os.environ.get("MCP_IR_PLAYBOOK_DIR", ""),
    )
    if not env["MCP_IR_PLAYBOOK_DIR"]:
        env.pop("MCP_IR_PLAYBOOK_DIR")
    s = Site(compose_site, inventory, tmp_path / "evidence", env, canary, anthropic_sandbox, client)
    try:
        yield s
    finally:
        s.kill_procs()
        teardown_stack(client, compose_site.project)
