"""contact_support (and the detach_servers part of breach-response) end to end: one
auto-approved breach-response run against the sandbox site with seeded Managed
Agents sessions and an agent, paused at contact_support until `mcp-ir record`;
plus the report template rendered from a hand-built trail."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.trail import Trail, verify_dir
from runbook.context import Incident
from runbook.steps.contact_support import render_report, report_context
from tests.plugins.site import Site
from tests.test_breach_e2e import incident_of, planned_mutations
from tests.test_detach_servers import agent_def

URL_SECRET = "urlpass-" + "5f1e2d3c4b5a"


def manual_waiting(round_no: int) -> Any:
    def predicate(records: list[Any]) -> Any:
        waits = [r for r in records if r.kind == "manual.waiting" and r.step == "contact_support"]
        return waits[-1] if len(waits) >= round_no else None

    return predicate


def step_succeeded(step: str) -> Any:
    def predicate(records: list[Any]) -> Any:
        return next((r for r in records if r.kind == "step.succeeded" and r.step == step), None)

    return predicate


@pytest.mark.long(40)
@pytest.mark.podman
@pytest.mark.prefect
def test_breach_detaches_sessions_and_waits_for_the_support_ticket(site: Site) -> None:
    domain = site.site.domain
    (agent,) = site.sandbox.seed(
        agents=[
            agent_def(
                domain, {"tunnel": f"https://{domain}/mcp", "pub": "https://mcp.example.com/mcp"}
            )
        ]
    )["agents"]
    running, idle, unrelated = site.sandbox.seed(
        sessions=[
            {
                "status": "running",
                "idle": {"polls": 2},
                "agent": agent_def(
                    domain,
                    {
                        "jira": f"https://ops:{URL_SECRET}@jira.{domain}:8443/mcp?key={URL_SECRET}",
                        "pub": "https://mcp.example.com/mcp",
                    },
                ),
            },
            {"status": "idle", "agent": agent_def(domain, {"t": f"https://{domain}/mcp"})},
            {
                "status": "idle",
                "agent": agent_def(
                    domain,
                    {"other": "https://mcp.other.example/mcp", "evil": f"https://evil{domain}/mcp"},
                ),
            },
        ]
    )["sessions"]

    proc = site.start(
        "breach", "--target", site.target, "--as", "alice", "--policy", "auto-approve"
    )
    incident = incident_of(site.wait_for_incident(proc))
    site.wait_for(incident, manual_waiting(1), proc=proc, timeout=120)

    # -- detach_servers did its work before the run paused for the ticket ----------
    state = site.sandbox.state
    assert [s["name"] for s in state.sessions[running["id"]].agent["mcp_servers"]] == ["pub"]
    assert state.sessions[running["id"]].status == "idle"
    assert state.sessions[idle["id"]].agent["mcp_servers"] == []
    tools = [t.get("mcp_server_name") for t in state.sessions[running["id"]].agent["tools"]]
    assert tools == ["pub", None]  # the tunnel's toolset went, the others stayed
    untouched = state.sessions[unrelated["id"]].agent["mcp_servers"]
    assert [s["name"] for s in untouched] == ["other", "evil"]
    assert not [
        c for c in site.sandbox.calls(f"/v1/sessions/{unrelated['id']}") if c["method"] == "POST"
    ]
    # The running session was interrupted and only then updated; the idle one directly.
    order = [
        (c["method"], c["path"])
        for c in site.sandbox.calls(f"/v1/sessions/{running['id']}")
        if c["method"] == "POST"
    ]
    assert order == [
        ("POST", f"/v1/sessions/{running['id']}/events"),
        ("POST", f"/v1/sessions/{running['id']}"),
    ]
    assert not site.sandbox.calls(f"/v1/sessions/{idle['id']}/events")
    versions = state.agents[agent["id"]].versions
    assert len(versions) == 2 and [s["name"] for s in versions[-1]["mcp_servers"]] == ["pub"]

    # -- contact_support: refusals, then the record ----------------------------------
    refused = site.cli("record", incident, "contact_support", "--ticket", "SUP-1", "--as", "eve")
    assert refused.returncode == 1 and "'eve' is not a person in the inventory" in refused.stderr
    bad = site.cli("record", incident, "contact_support", "--ticket", "SUP-1\nrm", "--as", "bob")
    assert bad.returncode == 1 and "ticket: must be one line" in bad.stderr, bad.stderr
    usage = site.cli("record", incident, "contact_support", "--field", "ticket", "--as", "bob")
    assert usage.returncode == 2 and "--field 'ticket': expected KEY=VALUE" in usage.stderr
    usage = site.cli("record", incident, "contact_support", "--field", "color=red", "--as", "bob")
    assert (
        usage.returncode == 2 and "--field color: not a field of 'contact_support'" in usage.stderr
    )
    usage = site.cli(
        "record", "INC-20000101-0000-none", "contact_support", "--ticket", "X", "--as", "bob"
    )
    assert usage.returncode == 2 and "incident" in usage.stderr, usage.stderr
    usage = site.cli("record", incident, "archive_tunnel", "--ticket", "X", "--as", "bob")
    assert usage.returncode == 2 and "takes no manual record" in usage.stderr
    assert proc.poll() is None  # still waiting: nothing of that counted

    ok = site.cli(
        "record", incident, "contact_support", "--ticket", "SUP-4711", "--as", "bob",
        "--comment", "called the vendor hotline",
    )  # fmt: skip
    assert ok.returncode == 0 and "ticket=SUP-4711" in ok.stdout, ok.stdout + ok.stderr
    # Later steps (rotate_credentials, …) belong to other tests; this one ends here.
    site.wait_for(incident, step_succeeded("contact_support"), proc=proc, timeout=60)
    trail = site.trail(incident)
    records = trail.records()

    contacted = [r for r in records if r.kind == "support.contacted"]
    assert len(contacted) == 1
    assert contacted[0].data["by"] == "bob" and contacted[0].data["ticket"] == "SUP-4711"
    assert contacted[0].data["source"] == "cli"
    refusals = [r.data for r in records if r.kind == "manual.refused"]
    assert {d["by"] for d in refusals} == {"eve", "bob"}

    # The report: fingerprints, the actions with their times, no secret.
    report_rec = next(
        r for r in records if r.kind == "artifact" and r.data.get("subject") == "support-report"
    )
    assert report_rec.data["sha256"] == contacted[0].data["report_sha256"]
    report = trail.read_artifact(report_rec.data["sha256"]).decode()
    captured = next(
        r for r in records if r.kind == "artifact" and r.data.get("subject") == "tunnel-record"
    )
    certs = json.loads(trail.read_artifact(captured.data["sha256"]))["certificates"]
    assert certs and all(c["fingerprint"] in report for c in certs)
    assert site.site.tunnel_id in report and domain in report
    for kind in ("stack.stopped", "tunnel.archived", "session.detached", "agent.detached"):
        rec = next(r for r in records if r.kind == kind)
        assert rec.ts in report, kind
    assert running["id"] in report and agent["id"] in report

    # The blocklist: the domain, its hosts and URLs, nothing of the URL's credentials.
    block_rec = next(
        r for r in records if r.kind == "artifact" and r.data.get("subject") == "blocklist"
    )
    blocklist = json.loads(trail.read_artifact(block_rec.data["sha256"]))
    assert blocklist["tunnel_domain"] == domain
    assert blocklist["host_patterns"] == [domain, f"*.{domain}"]
    assert blocklist["hosts"] == sorted([domain, f"jira.{domain}"])
    assert blocklist["urls"] == sorted([f"https://{domain}/mcp", f"https://jira.{domain}:8443/mcp"])

    # Exactly the Managed Agents calls detach_servers planned, each once.
    calls = [
        c for c in site.mutating_calls() if c.split()[1].startswith(("/v1/sessions", "/v1/agents"))
    ]
    planned = {
        c
        for c in planned_mutations(records)
        if c.split()[1].startswith(("/v1/sessions", "/v1/agents"))
    }
    assert len(calls) == len(set(calls)) == 4 and set(calls) == planned
    assert f"POST /v1/agents/{agent['id']}" in calls

    evidence = b"".join(
        p.read_bytes() for p in (site.evidence / incident).rglob("*") if p.is_file()
    )
    for secret in (site.canary, site.site.token, site.sandbox.token, URL_SECRET):
        assert secret.encode() not in evidence, secret[:8]
        assert secret not in report and secret not in ok.stdout + ok.stderr
    assert verify_dir(site.evidence / incident).ok


def test_report_renders_from_a_hand_built_trail(tmp_path: Path) -> None:
    trail = Trail.open(tmp_path, "INC-20260101-0000-abcd")
    tunnel = {"id": "tnl_abc", "domain": "abc.tunnels.example"}
    cert = {"id": "tcrt_1", "fingerprint": "ab" * 32, "archived_at": None}
    trail.add_artifact(
        json.dumps({"tunnel": tunnel, "certificates": [cert]}).encode(),
        name="tunnel.json",
        media_type="application/json",
        step="capture_evidence",
        extra={"subject": "tunnel-record"},
    )
    trail.add_artifact(
        json.dumps({"ca.crt": "cd" * 32, "tls.key": "unreadable: OSError"}).encode(),
        name="fp.json",
        media_type="application/json",
        step="capture_evidence",
        extra={"subject": "local-certificates"},
    )
    stopped = trail.append(
        "stack.stopped", "stop_stack", {"removed_containers": ["a", "b"], "removed_networks": ["n"]}
    )
    archived = trail.append(
        "tunnel.archived",
        "archive_tunnel",
        {"id": "tnl_abc", "archived_at": "2026-01-01T00:05:00+00:00"},
    )
    trail.append("step.succeeded", "archive_tunnel", {"duration_s": 1.5})
    trail.append("approval.accepted", "archive_tunnel", {"approver": "bob"})
    incident = Incident(
        id="INC-20260101-0000-abcd",
        target="prod",
        playbook="breach-response",
        initiator="alice",
        trigger={},
        severity="critical",
        window_start=datetime(2025, 12, 31, 23, 0, tzinfo=UTC),
        window_end=datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
    )

    def no_api() -> list[Any]:
        raise AssertionError("the captured tunnel record should have been used")

    context = report_context(
        trail, incident, tunnel_id="tnl_abc", domain=None, fallback_certificates=no_api
    )
    text = render_report(context)
    assert "`abc.tunnels.example`" in text  # the domain came from the captured record
    assert "2025-12-31T23:00:00+00:00 → 2026-01-01T00:00:00+00:00" in text
    assert f"| registered CA (active, captured) | `tcrt_1` | `{'ab' * 32}` |" in text
    assert f"`{'cd' * 32}`" in text and "unreadable" not in text
    assert (
        f"| {stopped.ts} | `stop_stack` | stack stopped: 2 container(s) and 1 network(s) removed |"
        in text
    )
    assert f"| {archived.ts} | `archive_tunnel` | tunnel `tnl_abc` archived" in text
    assert "step succeeded in" in text and "approval" not in text.split("## Actions")[1]

    empty = Trail.open(tmp_path, "INC-20260101-0000-efgh")
    fallback = report_context(
        empty,
        incident,
        tunnel_id="tnl_abc",
        domain="abc.tunnels.example",
        fallback_certificates=lambda: [],
    )
    assert "No certificate fingerprint is known." in render_report(fallback)
    assert "No action has been taken yet." in render_report(fallback)
