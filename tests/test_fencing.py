"""Fencing of the evidence trail (core/trail.py, runbook/fencing.py) and the truths
``status`` and ``approve`` tell from it, on real processes and real locks: a run
that has been superseded can never append again; a run whose process is gone is
reported dead with the command that resumes it; a decision for a dead run is
answered at once; a step waiting for a person's record says so."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import RunSuperseded
from core.trail import Trail, run_owner, verify_dir
from runbook.fencing import run_meta, stop_previous
from runbook.incident_view import build_view
from runbook.launch import process_start
from tests.plugins.site import run_text

INC = "INC-20261203-110000-beef"
PLAN = "ab" * 32

# A run in its own process: claims the trail, says so, then waits to be killed.
HOLDER = """
import sys, time
from core.trail import Trail
from runbook.fencing import run_meta
t = Trail.open(sys.argv[1], sys.argv[2])
t.claim(sys.argv[3], run_meta("flow-run-" + sys.argv[3], None))
print("claimed", flush=True)
time.sleep(600)
"""


def opened(trail: Trail, playbook: str = "breach-response") -> None:
    trail.append(
        "incident.opened",
        None,
        {
            "incident_id": trail.incident_id,
            "target": "prod-eu",
            "playbook": playbook,
            "initiator": "alice",
            "trigger": {"kind": "manual"},
            "severity": "high",
        },
    )


def holder(evidence: Path, kind: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(evidence), INC, kind],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
    return proc


def cli(
    evidence: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("MCP_IR_CONFIG", "MCP_IR_MODE")}
    return run_text(
        [sys.executable, "-m", "runbook.cli", "--evidence-dir", str(evidence), *args],
        timeout=60,
        env={**base, **(env or {})},
        check=False,
    )


def test_a_superseded_claim_can_never_append_again(tmp_path: Path) -> None:
    old = Trail.open(tmp_path, INC)
    opened(old)
    old.claim("run.started", run_meta("run-1", None))
    old.append("step.started", "stop_stack", {})
    new = Trail.open(tmp_path, INC)
    record, previous = new.claim("run.resumed", run_meta("run-2", None))
    assert record.data["epoch"] == 2
    assert previous is not None and previous["epoch"] == 1 and previous["flow_run_id"] == "run-1"
    assert previous["alive"] is True  # old still holds its lease (same process, other fd)
    before = old.path.read_bytes()
    for attempt in (
        lambda: old.append("step.failed", "stop_stack", {"error": "late"}),
        lambda: old.append("run.ended", None, {"status": "failed"}),
        lambda: old.add_artifact(b"report", name="post-incident-report.md"),
        old.check_fence,
    ):
        with pytest.raises(RunSuperseded, match="superseded by epoch 2"):
            attempt()
    assert old.path.read_bytes() == before  # not one byte
    new.append("step.succeeded", "stop_stack", {})
    Trail.open(tmp_path, INC).append("approval.refused", "x", {})  # the CLI is never fenced
    assert verify_dir(new.dir).ok


def test_the_owner_is_alive_while_its_process_holds_the_lease(tmp_path: Path) -> None:
    trail = Trail.open(tmp_path, INC)
    opened(trail)
    assert run_owner(trail.dir) is None  # nobody ever claimed it
    proc = holder(tmp_path, "run.started")
    owner = run_owner(trail.dir)
    assert owner is not None and owner.epoch == 1 and owner.alive
    assert owner.data["pid"] == proc.pid and owner.data["host"] == socket.gethostname()
    proc.kill()
    proc.wait(10)
    owner = run_owner(trail.dir)
    assert owner is not None and not owner.alive


def test_status_says_dead_with_the_resume_command_and_approve_answers_at_once(
    tmp_path: Path,
) -> None:
    trail = Trail.open(tmp_path, INC)
    opened(trail)
    proc = holder(tmp_path, "run.started")
    trail.append(
        "gate.opened",
        "stop_stack",
        {
            "plan_hash": PLAN,
            "group": "oncall",
            "required": 1,
            "members": ["alice", "bob"],
            "allow_initiator": True,
            "timeout_s": 900,
            "escalate_after_s": None,
            "escalate_to": None,
        },
    )
    trail.append(
        "gate.waiting",
        "stop_stack",
        {"key": "stop-stack-1", "flow_run_id": "flow-run-run.started", "plan_hash": PLAN},
    )
    alive = cli(tmp_path, "status", INC)
    assert alive.returncode == 0, alive.stderr
    assert "status running" in alive.stdout and "awaiting approval" in alive.stdout

    proc.kill()
    proc.wait(10)
    # No inventory anywhere: the read-only CLI needs only the evidence directory.
    status = cli(tmp_path, "status", INC)
    assert status.returncode == 0, status.stderr
    assert "status dead (no live process runs it" in status.stdout
    assert f"resume it with: mcp-ir breach --incident {INC}\n" in status.stdout
    as_json = json.loads(cli(tmp_path, "status", INC, "--json").stdout)
    assert as_json["status"] == "dead" and as_json["resume"] == f"mcp-ir breach --incident {INC}"

    production = cli(tmp_path, "status", INC, env={"MCP_IR_MODE": "production"})
    assert f"mcp-ir breach --incident {INC} --on-worker" in production.stdout

    approve = cli(tmp_path, "approve", INC, "stop_stack", "--as", "bob")
    assert approve.returncode == 1
    assert "run is dead" in approve.stderr
    assert f"mcp-ir breach --incident {INC}" in approve.stderr
    undelivered = [r for r in trail.records() if r.kind == "approval.undelivered"]
    assert len(undelivered) == 1 and undelivered[0].data["approver"] == "bob"


def test_a_step_waiting_for_a_record_says_so_with_the_record_line(tmp_path: Path) -> None:
    trail = Trail.open(tmp_path, INC)
    opened(trail)
    trail.claim("run.started", run_meta("run-1", None))
    trail.append("step.planned", "contact_support", {"hash": PLAN})
    trail.append(
        "manual.waiting",
        "contact_support",
        {
            "key": "contact-support-1-input",
            "flow_run_id": "run-1",
            "plan_hash": PLAN,
            "fields": ["by", "comment", "source", "ticket"],
        },
    )
    view = build_view(trail.records(), run_owner(trail.dir))
    assert view.status == "running"
    assert view.steps["contact_support"].state == "waiting for a record"
    status = cli(tmp_path, "status", INC)
    line = next(x for x in status.stdout.splitlines() if "contact_support" in x)
    assert "waiting for a record" in line
    assert f"mcp-ir record {INC} contact_support --ticket REF [--comment TEXT] --as YOU" in line
    trail.append("manual.recorded", "contact_support", {"by": "alice", "ticket": "SUP-1"})
    assert build_view(trail.records()).steps["contact_support"].state == "recorded"


def test_a_resume_kills_the_old_process_on_this_host_and_says_so(tmp_path: Path) -> None:
    trail = Trail.open(tmp_path, INC)
    opened(trail)
    proc = holder(tmp_path, "run.started")
    start = process_start(proc.pid)
    resumed = Trail.open(tmp_path, INC)
    _, previous = resumed.claim("run.resumed", run_meta("run-2", None))
    outcome = stop_previous(previous)
    assert outcome["process"] == "killed" and outcome["previous"]["pid"] == proc.pid
    assert proc.wait(10) == -9 and process_start(proc.pid) != start


def test_a_live_process_elsewhere_is_fenced_not_killed(tmp_path: Path) -> None:
    previous = {
        "epoch": 3,
        "flow_run_id": "run-3",
        "pid": os.getpid(),  # this very process: it must not be touched
        "pid_start": process_start(os.getpid()),
        "host": "another-machine",
        "alive": True,
    }
    outcome = stop_previous(previous)
    assert outcome["process"] == "fenced" and "another-machine" in outcome["detail"]
    assert stop_previous({**previous, "alive": False})["process"] == "not running"


def test_a_new_incident_needs_a_target_and_a_resume_needs_only_its_id(tmp_path: Path) -> None:
    missing = cli(tmp_path, "breach")
    assert missing.returncode == 2
    assert "--target is required to start a new incident" in missing.stderr
    unknown = cli(tmp_path, "drill", "--incident", INC, "--on-worker")
    assert unknown.returncode == 2 and "--target is required" in unknown.stderr
    trail = Trail.open(tmp_path, INC)
    opened(trail)
    wrong = cli(tmp_path, "breach", "--incident", INC, "--target", "other")
    assert wrong.returncode == 2
    assert f"incident {INC} is on target 'prod-eu'" in wrong.stderr
