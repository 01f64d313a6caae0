"""`mcp-ir sandbox up`, a breach run with human gates driven as on-call drives it
(`incidents`, `status`, `approve`, `record` with the sandbox people's SSH keys), the
report without an inventory, then `sandbox down` leaving nothing running. Every
command is the real CLI in a subprocess, as the README and `up`'s output give it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from runbook.commands.sandbox import load_env, processes_under
from tests.plugins.site import run_text

pytestmark = [pytest.mark.long(55), pytest.mark.podman, pytest.mark.prefect]

APPROVERS = ("bob", "carol")


def mcp_ir(
    env: dict[str, str], *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return run_text(
        [sys.executable, "-m", "runbook.cli", *args],
        env=env,
        timeout=timeout,
    )


def drive(env: dict[str, str], box: Path, incident: str, proc: subprocess.Popen[str]) -> list[str]:
    """Plays bob and carol until the run ends: approves each waiting gate (the plan
    hash read from status) and records the vendor ticket. Returns what was done."""
    done: list[str] = []
    deadline = time.monotonic() + 420
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the gated run did not finish"
        status = json.loads(mcp_ir(env, "status", incident, "--json").stdout)
        for step in status["steps"]:
            if step["waiting_for"] and step["plan_hash"]:
                who = next(p for p in APPROVERS if p not in step["approvals"])
                r = mcp_ir(
                    env,
                    "approve",
                    incident,
                    step["key"],
                    "--as",
                    who,
                    "--key",
                    str(box / "keys" / who),
                    "--plan-hash",
                    step["plan_hash"],
                    "--yes",
                )
                assert r.returncode == 0, r.stdout + r.stderr
                assert step["plan_hash"] in r.stdout  # approve says which plan it approved
                done.append(f"approve {step['key']} {who}")
                break
            if step.get("record"):
                r = mcp_ir(
                    env,
                    "record",
                    incident,
                    step["key"],
                    "--ticket",
                    "SUP-1",
                    "--as",
                    "carol",
                    "--key",
                    str(box / "keys" / "carol"),
                )
                assert r.returncode == 0, r.stdout + r.stderr
                done.append(f"record {step['key']}")
                break
        else:
            time.sleep(1)
    return done


@pytest.mark.timeout(900)  # a whole sandbox and a whole gated procedure: minutes under load
def test_sandbox_up_gated_breach_then_down(tmp_path: Path) -> None:
    box = tmp_path / "sbx"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_IR_", "PREFECT_API"))}
    up = mcp_ir(base, "sandbox", "up", "--dir", str(box), "--only", "compose", timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"source {box}/env" in up.stdout and "mcp-ir sandbox down" in up.stdout
    try:
        env = {**base, **load_env(box)}
        inventory = (box / "inventory.yaml").read_text()
        assert "alice" in inventory and "security-leads" in inventory
        state = json.loads((box / "state.json").read_text())
        assert len(state["sessions"]) == 2
        assert httpx.get(state["urls"]["prefect_ui"], timeout=10).status_code == 200  # UI on

        proc = subprocess.Popen(
            [sys.executable, "-m", "runbook.cli", "breach", "--target", "sandbox", "--as", "alice"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        incident = _incident(proc)
        listed = json.loads(mcp_ir(env, "incidents", "--json").stdout)["incidents"]
        assert listed[0]["incident_id"] == incident and listed[0]["state"] == "running"
        done = drive(env, box, incident, proc)
        output = proc.stdout.read() if proc.stdout else ""
        assert proc.returncode == 0, output
        assert "record contact_support" in done
        assert sum(d.startswith("approve archive_tunnel") for d in done) == 2
        assert "support report:" in output and "findings:" in output

        evidence = Path(env["MCP_IR_EVIDENCE_DIR"]) / incident
        records = [json.loads(line) for line in (evidence / "trail.jsonl").read_text().splitlines()]
        detached = {r["data"]["session_id"] for r in records if r["kind"] == "session.detached"}
        assert set(state["sessions"]) == detached  # the demo's detach step detaches real sessions
        # The report and verify from the evidence alone (no inventory).
        bare = {k: v for k, v in env.items() if k != "MCP_IR_CONFIG"}
        html = mcp_ir(bare, "report", incident, "--format", "html")
        assert html.returncode == 0 and incident in html.stdout, html.stderr
        assert mcp_ir(bare, "verify", str(evidence)).stdout.startswith("ok")
    finally:
        down = mcp_ir(base, "sandbox", "down", "--dir", str(box), timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "nothing left running" in down.stdout
    assert processes_under(box) == []


def _incident(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("incident INC-"):
            return line.split()[1].rstrip(":")
        if not line and proc.poll() is not None:
            break
    raise AssertionError("the breach run never named its incident")
