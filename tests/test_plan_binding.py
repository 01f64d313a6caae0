"""``mcp-ir plan`` computes the plan the run's gates ask for: for every step of
breach-response, the hash the preview shows equals the plan hash the live gate bound
(auto-approved here, on the sandbox site), with the same window. One real run: the
CLI in subprocesses, Prefect, podman, the sandbox Tunnels API."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from core.trail import verify_dir
from runbook.playbook import load_playbook
from runbook.settings import Settings
from tests.plugins.site import Site
from tests.test_breach_e2e import incident_of
from tests.test_contact_support import manual_waiting

pytestmark = [pytest.mark.podman, pytest.mark.prefect]

_STEP = re.compile(r"^\d+\. (\w+)  \[")
_HASH = re.compile(r"^   plan hash: ([0-9a-f]{64})$")


def preview_hashes(output: str) -> dict[str, str]:
    """Step key → the plan hash ``mcp-ir plan`` printed for it."""
    found: dict[str, str] = {}
    step = None
    for line in output.splitlines():
        if m := _STEP.match(line):
            step = m.group(1)
        elif (m := _HASH.match(line)) and step is not None:
            found[step] = m.group(1)
    return found


def test_preview_hash_equals_the_live_gate_hash_for_every_breach_step(site: Site) -> None:
    site.env.pop("MCP_IR_PLAYBOOK_DIR", None)  # the real breach-response playbook
    now = datetime.now(UTC)
    window = [
        "--window-start",
        (now - timedelta(hours=1)).isoformat(),
        "--window-end",
        (now + timedelta(minutes=5)).isoformat(),
    ]
    common = ["--target", site.target, "--policy", "auto-approve", *window]
    shown = site.cli("plan", "breach-response", *common)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "unavailable" not in shown.stdout
    preview = preview_hashes(shown.stdout)
    pb = load_playbook(
        "breach-response",
        inventory=Settings.from_env(site.inventory, site.evidence).inventory(),
        target=site.target,
    )
    assert list(preview) == [s.key for s in pb.steps]

    proc = site.start("breach", *common, "--as", "alice")
    incident = incident_of(site.wait_for_incident(proc))
    site.wait_for(incident, manual_waiting(1), proc=proc, timeout=180)
    recorded = site.cli("record", incident, "contact_support", "--ticket", "SUP-9", "--as", "bob")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out

    records = site.trail(incident).records()
    live = {r.step: r.data["plan_hash"] for r in records if r.kind in ("gate.auto", "gate.passed")}
    assert live == preview
    # What was approved is what ran: each step started under the hash of its gate.
    started = {r.step: r.data["plan_hash"] for r in records if r.kind == "step.started"}
    assert started == preview
    assert not [r for r in records if r.kind == "operation.refused"]
    assert verify_dir(site.evidence / incident).ok
