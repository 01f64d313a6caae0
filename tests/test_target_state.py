"""What the engine remembers between incidents, and what an operator can read from
the evidence alone: after a real archive + rotation (real CLI, Prefect server,
podman, the Tunnels sandbox through the real SDK), ``mcp-ir targets`` names the new
tunnel and where that came from, the next plan targets it, ``incidents`` lists the
run, and ``status``/``report``/``verify`` work with no inventory at all. A trail
edited by hand is ignored, never followed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins.site import Site, run_text

pytestmark = [pytest.mark.podman, pytest.mark.prefect]

PLAYBOOK = (
    "name: rotation-only\nsteps:\n"
    "  - key: archive_tunnel\n    approval: auto\n"
    "  - key: rotate_credentials\n    approval: auto\n"
)


def bare_cli(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with the evidence directory only: no --config, no MCP_IR_CONFIG."""
    env = {k: v for k, v in site.env.items() if k != "MCP_IR_CONFIG"}
    return run_text(
        [sys.executable, "-m", "runbook.cli", "--evidence-dir", str(site.evidence), *args],
        env=env,
        timeout=120,
    )


def test_rotation_is_remembered_and_evidence_reads_without_inventory(
    site: Site, tmp_path: Path
) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "rotation-only.yaml").write_text(PLAYBOOK)
    site.env["MCP_IR_PLAYBOOK_DIR"] = str(tmp_path / "playbooks")
    old_tunnel = site.site.tunnel_id

    proc = site.cli(
        "run", "rotation-only", "--target", site.target, "--as", "alice", "--policy", "auto-approve"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = re.search(r"incident: (INC-\S+)", proc.stdout).group(1)
    records = site.trail(incident).records()
    rotated = next(r for r in records if r.kind == "rotation.completed")
    new_tunnel = rotated.data["tunnel"]["id"]
    assert new_tunnel != old_tunnel

    # targets: the current tunnel, its origin, and a warning about the stale inventory.
    shown = site.cli("targets", "--json")
    assert shown.returncode == 0, shown.stderr
    state = json.loads(shown.stdout)
    entry = state["targets"][site.target]
    assert entry["inventory_tunnel_id"] == old_tunnel
    assert entry["tunnel_id"] == {
        "value": new_tunnel,
        "incident": incident,
        "seq": rotated.seq,
        "ts": rotated.ts,
    }
    assert entry["domain"]["value"] == rotated.data["tunnel"]["domain"]
    assert entry["token_fingerprint"]["value"] == rotated.data["token"]["token"]
    assert entry["token_fingerprint"]["value"].startswith("sha256:")
    assert old_tunnel in entry["archived_tunnels"]
    assert any(old_tunnel in w and new_tunnel in w for w in state["warnings"])
    text = site.cli("targets").stdout
    assert f"{new_tunnel}  (from {incident}#{rotated.seq})" in text

    # The next run's plan targets the new tunnel, and says why on stderr.
    plan = site.cli("plan", "rotation-only", "--target", site.target)
    assert plan.returncode == 0, plan.stderr
    assert f"tunnel:{new_tunnel}" in plan.stdout and f"tunnel:{old_tunnel}" not in plan.stdout
    assert f"replaced by {new_tunnel}" in plan.stderr

    # incidents, status, report and verify from the evidence alone.
    listed = bare_cli(site, "incidents", "--json")
    assert listed.returncode == 0, listed.stderr
    row = next(i for i in json.loads(listed.stdout)["incidents"] if i["incident_id"] == incident)
    assert row["target"] == site.target and row["state"] == "succeeded"
    assert row["playbook"] == "rotation-only" and row["waiting_for"] is None
    assert row["age_s"] >= 0
    assert incident in bare_cli(site, "incidents").stdout
    status = bare_cli(site, "status", incident)
    assert status.returncode == 0 and "succeeded" in status.stdout, status.stderr
    html = bare_cli(site, "report", incident, "--format", "html")
    assert html.returncode == 0, html.stderr
    assert "<html" in html.stdout.lower() and incident in html.stdout
    assert bare_cli(site, "verify", str(site.evidence / incident)).stdout.startswith("ok: ")

    # A hand-edited trail is ignored: the state no longer follows it.
    path = site.evidence / incident / "trail.jsonl"
    path.write_text(path.read_text().replace(new_tunnel, "tnl_attacker0000"))
    forged = json.loads(site.cli("targets", "--json").stdout)
    assert incident in forged["ignored_trails"]
    assert forged["targets"][site.target]["tunnel_id"] is None
    plan = site.cli("plan", "rotation-only", "--target", site.target)
    assert f"tunnel:{old_tunnel}" in plan.stdout and "tnl_attacker" not in plan.stdout
