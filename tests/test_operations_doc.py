"""docs/operations.md §1, run as written on one machine.

Every block marked ``<!-- run: NAME -->`` in §1 is extracted from the document and run
with bash, unchanged, on the machine it is written for: the site values block is the
only one replaced (by this test's values, variable for variable). The Prefect server
runs on a real PostgreSQL; the two workers each run in a UTS namespace of their own,
so each is a machine with its own host name; the CLI machine has no inventory and no
target credential.

What it shows:
- the server, the pool, the deployments and two workers come up from the documented
  commands, and the scheduler creates the weekly drill's runs on PostgreSQL (that a
  worker runs one to the end, on SQLite and PostgreSQL: tests/test_scheduled_drill.py);
- a breach started with ``mcp-ir breach --on-worker`` stops at its gates, which the
  documented ``approve`` passes;
- only the worker running it is killed (its flow-run process lives on, paused at a
  gate: an orphan); the documented resume moves the incident to the other worker, says
  in the trail that the orphan is fenced, and finishes it; when the orphan's
  escalation timer wakes it, it exits without writing one byte: the outcome stands;
- the read-only commands work with only PREFECT_API_URL and the evidence directory.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.trail import verify_dir
from runbook.launch import process_start
from sandbox.polling import wait_until
from sandbox.site import TOKEN_ENV, write_inventory
from tests.plugins.postgres import Postgres
from tests.plugins.site import CANARY_ENV, Site, capture_first, run_text, waiting_at
from tests.test_prefect_yaml import ROOT

pytestmark = [
    pytest.mark.long(135),
    pytest.mark.podman,
    pytest.mark.prefect,
    pytest.mark.timeout(900),
]

DOC = ROOT / "docs" / "operations.md"
BLOCK = re.compile(r"<!-- run: (?P<name>[a-z]+) -->\n```sh\n(?P<body>.*?)```", re.S)
EXPECTED = ["site", "server", "deploy", "worker", "start", "approve", "resume", "read"]
BIN = str(Path(sys.executable).parent)

# The containment part of breach-response; archive_tunnel escalates after 60 s, which
# is when the orphan (paused at that gate) wakes up on its own.
PLAYBOOK = (
    capture_first()
    + """  - key: stop_stack
    approval: {required: 1, group: oncall, timeout: 15m, allow_initiator: true}
  - key: archive_tunnel
    approval: {required: 2, group: oncall, timeout: 15m, escalate_after: 60s, escalate_to: security-leads}
"""
)


def doc_blocks() -> dict[str, str]:
    section = DOC.read_text(encoding="utf-8").split("\n## 1. ", 1)[1].split("\n## 2. ", 1)[0]
    found = [(m["name"], m["body"]) for m in BLOCK.finditer(section)]
    assert [n for n, _ in found] == EXPECTED, "docs/operations.md §1 changed its runnable blocks"
    return dict(found)


def site_names(block: str) -> list[str]:
    names = []
    for line in block.splitlines():
        if not line.strip():
            continue
        m = re.match(r"export ([A-Z_][A-Z0-9_]*)=\S+", line)
        assert m, f"the site block only sets variables: {line!r}"
        names.append(m[1])
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Machines:
    """The processes of the test's "machines", all cleaned up at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: set[int] = set()

    def spawn(self, name: str, body: str, env: dict[str, str], host: str | None = None) -> Any:
        script = body if host is None else f"hostname {host}\n{body}"
        cmd = ["bash", "-ec", script]
        if host is not None:
            cmd = ["unshare", "--uts", *cmd]
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    m = Machines(tmp_path)
    try:
        yield m
    finally:
        m.stop_all()


def run(body: str, env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return run_text(
        ["bash", "-ec", body],
        env={**env, **extra},
        timeout=240,
        check=False,
    )


def run_on_terminal(
    body: str, env: dict[str, str], **extra: str
) -> subprocess.CompletedProcess[str]:
    """Runs a block as a person at a terminal: stdin is a pseudo-terminal on which
    every question (``sign this plan? [y/N]``) is answered ``y``."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, b"y\n" * 4)
        return run_text(
            ["bash", "-ec", body],
            env={**env, **extra},
            stdin=terminal,
            timeout=240,
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)


def person(site: Site, name: str) -> dict[str, str]:
    """Another approver's own shell: who they are and their key."""
    return {"MCP_IR_USER": name, "MCP_IR_SSH_KEY": str(site.key(name))}


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def argv(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


def worker_pid(shell: subprocess.Popen[bytes]) -> int:
    """The ``prefect worker`` process of a machine (bash may have exec'd it)."""
    for pid in [shell.pid, *children(shell.pid)]:
        args = argv(pid)
        if not args[0].endswith(b"bash") and any(a.endswith(b"/prefect") for a in args[:2]):
            return pid
    raise AssertionError("no prefect worker on the machine")


def flow_runs(deployment: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
        )


def test_operations_doc_section_1_as_written(
    site: Site, postgres: Postgres, machines: Machines, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    blocks = doc_blocks()
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "breach-response.yaml").write_text(PLAYBOOK)
    inventory = write_inventory(
        tmp_path / "inventory.yaml",
        {site.target: site.site.target, "drill-sandbox": site.site.target},
    )
    postgres.create_database("operations")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    values = {
        "PREFECT_API_URL": api,
        "PREFECT_API_DATABASE_CONNECTION_URL": postgres.url("operations"),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "MCP_IR_HOME": str(ROOT),
        "MCP_IR_CONFIG": str(inventory),
        "MCP_IR_EVIDENCE_DIR": str(site.evidence),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "MCP_IR_MODE": "production",
        "MCP_IR_USER": "alice",
        "MCP_IR_SSH_KEY": str(site.key("alice")),
        "TARGET": site.target,
    }
    assert sorted(site_names(blocks["site"])) == sorted(values)
    base = {
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MCP_IR_QUIET": "1",
    }

    def machine(role: str, *names: str, **extra: str) -> dict[str, str]:
        """A machine's environment: the site values it needs (§1.2), its own home."""
        home = tmp_path / f"home-{role}"
        home.mkdir()
        return {**base, "PREFECT_HOME": str(home), **{n: values[n] for n in names}, **extra}

    server_env = machine(
        "server",
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "PREFECT_SERVER_API_HOST",
        "PREFECT_SERVER_API_PORT",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1",  # the test's near schedule
    )
    worker_env = machine(
        "worker",
        "PREFECT_API_URL",
        "MCP_IR_HOME",
        "MCP_IR_CONFIG",
        "MCP_IR_EVIDENCE_DIR",
        "PREFECT_WORKER_QUERY_SECONDS",
        **{
            TOKEN_ENV: site.env[TOKEN_ENV],
            CANARY_ENV: site.canary,
            "MCP_IR_PLAYBOOK_DIR": str(playbooks),
        },
    )
    # The CLI machine: no inventory, no credential.
    cli_env = machine(
        "cli",
        "PREFECT_API_URL",
        "MCP_IR_EVIDENCE_DIR",
        "MCP_IR_MODE",
        "MCP_IR_USER",
        "MCP_IR_SSH_KEY",
        "TARGET",
    )
    deploy_env = machine("deploy", "PREFECT_API_URL", "MCP_IR_HOME")

    # -- 1.3 server, on PostgreSQL ------------------------------------------------------
    server = machines.spawn("server", blocks["server"], server_env)

    def healthy() -> bool:
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{api}/health", timeout=2).status_code == 200
        return False

    wait_until(healthy, timeout=240, what="the Prefect server")

    # -- 1.4 pool and deployments ------------------------------------------------------
    deployed = run(blocks["deploy"], deploy_env)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]

    with temporary_settings(updates={PREFECT_API_URL: api}):
        # The scheduler (on PostgreSQL) creates the weekly drill's runs: Mondays 06:30 UTC.
        weekly = wait_until(
            lambda: [r for r in flow_runs("rotation-drill") if r.auto_scheduled],
            timeout=90,
            what="the scheduler to create the weekly drill's runs",
        )
        for r in weekly:
            start = r.expected_start_time.astimezone(UTC)
            assert (start.weekday(), start.hour, start.minute) == (0, 6, 30)
            assert r.parameters["target"] == "drill-sandbox"
        # -- 1.5 two workers, each a machine of its own ----------------------------------
        shells = {
            host: machines.spawn(host, blocks["worker"], worker_env, host=host)
            for host in ("worker-a", "worker-b")
        }

        # -- 1.6 a breach through the deployment -----------------------------------------
        started = run(blocks["start"], cli_env)
        assert started.returncode == 0, started.stdout + started.stderr
        incident = re.search(r"^incident: (\S+)$", started.stdout, re.M)[1]
        cli_env["INCIDENT"] = incident
        site.wait_for(incident, waiting_at("stop_stack"), timeout=240)
        approved = run_on_terminal(blocks["approve"], cli_env)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert "approval by alice of plan " in approved.stdout, approved.stdout
        site.wait_for(incident, waiting_at("archive_tunnel"), timeout=120)
        bob = run_on_terminal(
            'mcp-ir approve "$INCIDENT" archive_tunnel', cli_env, **person(site, "bob")
        )
        assert bob.returncode == 0, bob.stderr

        # Only the worker running it dies: its flow-run process lives on, an orphan
        # paused at archive_tunnel's gate until its escalation timer wakes it.
        first = next(r for r in site.trail(incident).records() if r.kind == "run.started")
        orphan, orphan_host = first.data["pid"], first.data["host"]
        orphan_start = process_start(orphan)
        machines.pids.add(orphan)
        os.kill(worker_pid(shells[orphan_host]), signal.SIGKILL)
        assert process_start(orphan) == orphan_start  # alive

        resumed = run(blocks["resume"], cli_env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "resume:    flow run" in resumed.stdout
        state = site.wait_for(incident, waiting_at("archive_tunnel", run=2), timeout=240)
        assert state.approvals == ["bob"]
        carol = run_on_terminal(
            'mcp-ir approve "$INCIDENT" archive_tunnel', cli_env, **person(site, "carol")
        )
        assert carol.returncode == 0, carol.stderr
        ended = site.wait_for(
            incident, lambda rs: [r for r in rs if r.kind == "run.ended"], timeout=120
        )
        assert [r.data["status"] for r in ended] == ["succeeded"]

    records = site.trail(incident).records()
    resumed_rec = next(r for r in records if r.kind == "run.resumed")
    other = next(h for h in shells if h != orphan_host)
    assert resumed_rec.data["host"] == other and resumed_rec.data["epoch"] == 2
    superseded = next(r for r in records if r.kind == "run.superseded")
    assert superseded.data["process"] == "fenced"
    assert superseded.data["previous"]["pid"] == orphan
    assert superseded.data["previous"]["host"] == orphan_host

    # The orphan wakes at its escalation timer, finds itself fenced and exits.
    trail_bytes = (site.evidence / incident / "trail.jsonl").read_bytes()
    wait_until(
        lambda: process_start(orphan) != orphan_start,
        timeout=120,
        what="the orphan to wake and exit",
    )
    assert (site.evidence / incident / "trail.jsonl").read_bytes() == trail_bytes
    assert site.mutating_calls().count(f"POST /v1/tunnels/{site.site.tunnel_id}/archive") == 1

    # -- the read-only CLI -------------------------------------------------------------
    read = run_text(
        ["bash", "-ec", blocks["read"]],
        env=cli_env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert read.returncode == 0, read.stdout + read.stderr
    assert "status succeeded" in read.stdout
    assert (tmp_path / f"incident-{incident}.md").read_text().startswith("#")
    assert "ok: " in read.stdout
    assert verify_dir(site.evidence / incident).ok
