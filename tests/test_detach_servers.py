"""detach_servers end to end: the real CLI in a subprocess, a real Prefect server, the
real anthropic SDK against the sandbox's Managed Agents API (FACTS §3).

The full breach-response run (running, idle, unrelated and look-alike sessions, an
agent, the blocklist, calls == plan) is in tests/test_contact_support.py, which
shares one run with contact_support; here: the failure and resumption paths, on a
playbook holding just this step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.trail import verify_dir
from tests.plugins.site import Site
from tests.test_breach_e2e import incident_of, kinds, planned_mutations

pytestmark = [pytest.mark.podman, pytest.mark.prefect]


def agent_def(domain: str, names: dict[str, str]) -> dict[str, Any]:
    """An inline agent whose servers are ``{name: url}``, each with its toolset."""
    return {
        "name": "ops agent",
        "mcp_servers": [{"type": "url", "name": n, "url": u} for n, u in names.items()],
        "tools": [{"type": "mcp_toolset", "mcp_server_name": n} for n in names]
        + [{"type": "agent_toolset_20260401"}],
    }


def detach_playbook(site: Site, tmp_path: Path, timeout: str = "30s") -> None:
    pb_dir = tmp_path / "playbooks"
    pb_dir.mkdir(exist_ok=True)
    (pb_dir / "detach-only.yaml").write_text(
        "name: detach-only\nsteps:\n"
        "  - key: detach_servers\n    approval: auto\n"
        '    auto_reason: "sandbox test"\n'
        f"    timeout: {timeout}\n"
    )
    site.env["MCP_IR_PLAYBOOK_DIR"] = str(pb_dir)


def server_names(site: Site, session_id: str) -> list[str]:
    return [s["name"] for s in site.sandbox.state.sessions[session_id].agent["mcp_servers"]]


def updates_of(site: Site, session_id: str) -> list[dict[str, Any]]:
    return [
        c
        for c in site.sandbox.calls(f"/v1/sessions/{session_id}")
        if c["method"] == "POST" and c["path"] == f"/v1/sessions/{session_id}"
    ]


def test_never_idle_session_fails_the_step_by_id(site: Site, tmp_path: Path) -> None:
    domain = site.site.domain
    seeded = site.sandbox.seed(
        sessions=[
            {
                "status": "running",
                "idle": "never",
                "agent": agent_def(domain, {"t": f"https://{domain}/mcp"}),
            },
            {"status": "idle", "agent": agent_def(domain, {"t": f"https://{domain}/mcp"})},
        ]
    )["sessions"]
    stuck, idle = seeded[0]["id"], seeded[1]["id"]
    detach_playbook(site, tmp_path, timeout="5s")

    proc = site.cli("run", "detach-only", "--target", site.target, "--as", "alice")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert stuck in proc.stdout  # the run's outcome names the session
    incident = incident_of(proc.stdout)
    records = site.trail(incident).records()
    failed = next(r for r in records if r.kind == "step.failed" and r.step == "detach_servers")
    assert stuck in failed.data["error"] and "did not become idle" in failed.data["error"]
    assert "Timeout" not in failed.data["error"]  # failed by the step, not cut off by the task
    assert next(r for r in records if r.kind == "run.ended").data["status"] == "failed"
    # It was interrupted, not skipped: and the idle session was still detached.
    events = [c for c in site.sandbox.calls(f"/v1/sessions/{stuck}/events")]
    assert [e["body"]["events"][0]["type"] for e in events] == ["user.interrupt"]
    assert updates_of(site, stuck) == [] and server_names(site, stuck) == ["t"]
    assert server_names(site, idle) == []
    assert [r.data["session_id"] for r in records if r.kind == "session.not_idle"] == [stuck]
    assert verify_dir(site.evidence / incident).ok


@pytest.mark.parametrize("point", ["after_session", "after_apply"])
def test_crash_then_resume_repeats_no_update(site: Site, tmp_path: Path, point: str) -> None:
    domain = site.site.domain
    (agent,) = site.sandbox.seed(agents=[agent_def(domain, {"t": f"https://{domain}/mcp"})])[
        "agents"
    ]
    seeded = site.sandbox.seed(
        sessions=[
            {
                "status": "running",
                "idle": {"polls": 1},
                "agent": agent_def(domain, {"t": f"https://a.{domain}/mcp"}),
            },
            {"status": "idle", "agent": agent_def(domain, {"t": f"https://b.{domain}/mcp"})},
        ]
    )["sessions"]
    ids = [s["id"] for s in seeded]
    detach_playbook(site, tmp_path)

    site.env["MCP_IR_FAILPOINT"] = f"detach_servers:{point}"
    crashed = site.cli("run", "detach-only", "--target", site.target, "--as", "alice")
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    incident = incident_of(crashed.stderr)
    touched_before = sum(len(updates_of(site, i)) for i in ids)
    assert touched_before == (1 if point == "after_session" else 2)
    del site.env["MCP_IR_FAILPOINT"]

    resumed = site.cli(
        "run", "detach-only", "--target", site.target, "--as", "alice", "--incident", incident
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = site.trail(incident).records()
    assert "run.resumed" in kinds(records)
    # Each session updated exactly once, the agent versioned once, one interrupt.
    assert [len(updates_of(site, i)) for i in ids] == [1, 1]
    assert all(server_names(site, i) == [] for i in ids)
    agent_updates = [c for c in site.sandbox.calls(f"/v1/agents/{agent['id']}")]
    assert [c["method"] for c in agent_updates if c["method"] == "POST"] == ["POST"]
    assert len(site.sandbox.calls(f"/v1/sessions/{ids[0]}/events")) == 1
    detached = sorted(r.data["session_id"] for r in records if r.kind == "session.detached")
    assert detached == sorted(ids)
    # The resumed run kept the approved plan (the trail's handled objects are in it).
    hashes = {r.data["hash"] for r in records if r.kind == "step.planned"}
    assert len(hashes) == 1
    blocklists = [
        r for r in records if r.kind == "artifact" and r.data.get("subject") == "blocklist"
    ]
    assert len(blocklists) == 1
    if point == "after_apply":
        assert "step.already_done" in kinds(records, "detach_servers")
    mutations = site.mutating_calls()
    assert len(mutations) == len(set(mutations)) and set(mutations) == planned_mutations(records)
    assert verify_dir(site.evidence / incident).ok
