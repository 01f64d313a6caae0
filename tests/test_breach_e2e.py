"""The engine end to end on the containment part of breach-response (capture, stop,
archive, with its real gates; tests/playbooks/containment.yaml): the real CLI in a
subprocess, a real Prefect server, real podman containers, the real anthropic SDK
against the sandbox Tunnels API. The whole procedure is tested in
test_breach_procedure.py."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from core.trail import verify_dir
from tests.plugins.site import Site, incident_of, kinds, waiting_at

pytestmark = [pytest.mark.podman, pytest.mark.prefect]

TEST_PLAYBOOKS = Path(__file__).parent / "playbooks"


@pytest.fixture(autouse=True)
def _containment_playbook(site: Site) -> None:
    site.env["MCP_IR_PLAYBOOK_DIR"] = str(TEST_PLAYBOOKS)


def contain(site: Site, *args: str, start: bool = False):  # noqa: ANN201
    argv = ("run", "containment", "--target", site.target, *args)
    return site.start(*argv) if start else site.cli(*argv)


def planned_mutations(records: list[Any]) -> set[str]:
    calls = set()
    for r in records:
        if r.kind == "step.planned":
            calls |= {
                c
                for c in r.data["api_calls"]
                if c.startswith("POST /v1/") or c.startswith("DELETE /v1/")
            }
    return calls


def project_objects(site: Site) -> list[str]:
    label = f"com.docker.compose.project={site.site.project}"
    containers = site.client.containers.list(all=True, filters={"label": label})
    networks = site.client.networks.list(filters={"label": label})
    return [c.name for c in containers] + [n.name for n in networks]


def prefect_log_text(flow_run_ids: list[str]) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids))
        )
    return "\n".join(log.message for log in logs)


def test_auto_approved_run_contains_the_stack_and_leaks_nothing(site: Site) -> None:
    assert len(project_objects(site)) == 3  # two containers and the project network
    proc = contain(site, "--as", "alice", "--policy", "auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout)
    records = site.trail(incident).records()

    # Nothing of the project is left; the logs were captured, as artifacts, before it stopped.
    assert project_objects(site) == []
    stopped = next(r.seq for r in records if r.kind == "stack.stopped")
    logs = [
        r for r in records if r.kind == "artifact" and r.data.get("subject", "").startswith("logs:")
    ]
    assert {r.data["subject"] for r in logs} == {
        f"logs:{site.site.project}-mcp-proxy-1",
        f"logs:{site.site.project}-cloudflared-1",
    }
    assert all(r.seq < stopped for r in logs)
    proxy_log = site.trail(incident).read_artifact(
        next(r.data["sha256"] for r in logs if "mcp-proxy" in r.data["subject"])
    )
    assert b"IP validation failed" in proxy_log and b"no route for host" in proxy_log

    # Exactly the calls the approved plans named, no more.
    assert sorted(site.mutating_calls()) == sorted(planned_mutations(records))
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.site.tunnel_id}/archive"]
    assert site.sandbox.connect(site.site.token) == 403  # archived: the old token is dead

    # The canary (in both containers' logs and configured as a secret), the tunnel
    # token and the API bearer token appear nowhere: evidence, report, Prefect logs.
    secrets = [site.canary, site.site.token, site.sandbox.token]
    evidence_bytes = b"".join(
        p.read_bytes() for p in (site.evidence / incident).rglob("*") if p.is_file()
    )
    report = (site.evidence / incident / "report.md").read_text()
    run_ids = [r.data["flow_run_id"] for r in records if r.kind in ("run.started", "run.resumed")]
    prefect_logs = prefect_log_text(run_ids)
    assert "capture_evidence" in prefect_logs and "archive_tunnel" in prefect_logs
    for secret in secrets:
        assert secret.encode() not in evidence_bytes
        assert secret not in report
        assert secret not in prefect_logs
        assert secret not in proc.stdout + proc.stderr
    assert b"[REDACTED]" in evidence_bytes  # the canary was there, and was removed
    assert "time to containment" in report and "succeeded" in report
    assert site.cli("verify", str(site.evidence / incident)).stdout.startswith("ok: ")


def test_two_person_rule_initiator_plan_hash_and_membership(site: Site) -> None:
    proc = contain(site, "--as", "alice", start=True)
    incident = incident_of(site.wait_for_incident(proc))
    state = site.wait_for(incident, waiting_at("stop_stack"), proc=proc)
    assert state.group == "oncall" and state.required == 1

    refused = site.cli("approve", incident, "stop_stack", "--as", "mallory")
    assert refused.returncode == 1 and "not a member of approver group 'oncall'" in refused.stderr
    ok = site.cli("approve", incident, "stop_stack", "--as", "alice", "--comment", "contain now")
    assert ok.returncode == 0, ok.stderr  # stop_stack allows the initiator (containment)

    state = site.wait_for(incident, waiting_at("archive_tunnel"), proc=proc)
    assert state.required == 2 and project_objects(site) == []
    assert site.mutating_calls() == []  # nothing irreversible before two people agree

    r = site.cli("approve", incident, "archive_tunnel", "--as", "alice")
    assert r.returncode == 1 and "started this incident and cannot approve" in r.stderr
    r = site.cli("approve", incident, "archive_tunnel", "--as", "bob", "--plan-hash", "0" * 64)
    assert r.returncode == 1 and "does not match the step's current plan" in r.stderr
    r = site.cli("approve", incident, "archive_tunnel", "--as", "bob")
    assert r.returncode == 0 and "1 more approval" in r.stdout, r.stdout + r.stderr
    assert site.mutating_calls() == []  # one approval is not enough
    r = site.cli("approve", incident, "archive_tunnel", "--as", "bob")
    assert r.returncode == 1 and "one person counts once" in r.stderr
    status = site.cli("status", incident)
    assert "needs 1 more from group 'oncall'" in status.stdout and "bob" in status.stdout
    r = site.cli("approve", incident, "archive_tunnel", "--as", "carol")
    assert r.returncode == 0, r.stderr
    assert proc.wait(60) == 0

    records = site.trail(incident).records()
    accepted = [(r.step, r.data["approver"]) for r in records if r.kind == "approval.accepted"]
    assert accepted == [
        ("stop_stack", "alice"),
        ("archive_tunnel", "bob"),
        ("archive_tunnel", "carol"),
    ]
    reasons = [r.data["reason"] for r in records if r.kind == "approval.refused"]
    assert len(reasons) == 4
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.site.tunnel_id}/archive"]
    assert sorted(site.mutating_calls()) == sorted(planned_mutations(records))
    assert verify_dir(site.evidence / incident).ok


def test_rejection_ends_the_run_and_names_who(site: Site) -> None:
    proc = contain(site, "--as", "alice", start=True)
    incident = incident_of(site.wait_for_incident(proc))
    site.wait_for(incident, waiting_at("stop_stack"), proc=proc)
    r = site.cli("reject", incident, "stop_stack", "--as", "bob", "--comment", "false positive")
    assert r.returncode == 0 and "rejection by bob of plan " in r.stdout, r.stdout + r.stderr
    assert proc.wait(60) == 1
    records = site.trail(incident).records()
    rejected = [r for r in records if r.kind == "gate.rejected"]
    assert (
        rejected
        and rejected[0].data["approver"] == "bob"
        and rejected[0].data["comment"] == "false positive"
    )
    assert records[-2].kind == "run.ended" and records[-2].data["status"] == "rejected"
    assert len(project_objects(site)) == 3  # nothing was stopped
    assert site.mutating_calls() == []
    status = json.loads(site.cli("status", incident, "--json").stdout)
    assert status["status"] == "rejected"


def test_gate_timeout_rejects(site: Site, tmp_path: Path) -> None:
    pb_dir = tmp_path / "playbooks"
    pb_dir.mkdir()
    (pb_dir / "quick-gate.yaml").write_text(
        "name: quick-gate\nsteps:\n"
        "  - key: capture_evidence\n    approval: auto\n"
        "  - key: stop_stack\n    approval: {required: 1, group: oncall, timeout: 3s}\n"
    )
    site.env["MCP_IR_PLAYBOOK_DIR"] = str(pb_dir)
    proc = site.cli("run", "quick-gate", "--target", site.target, "--as", "alice")
    assert proc.returncode == 1
    incident = incident_of(proc.stdout)
    records = site.trail(incident).records()
    assert "gate.timeout" in kinds(records, "stop_stack")
    assert "step.started" not in kinds(records, "stop_stack")
    assert next(r for r in records if r.kind == "run.ended").data["status"] == "timed_out"
    assert len(project_objects(site)) == 3


def test_kill_while_waiting_then_resume_repeats_nothing(site: Site) -> None:
    proc = contain(site, "--as", "alice", start=True)
    incident = incident_of(site.wait_for_incident(proc))
    site.wait_for(incident, waiting_at("stop_stack"), proc=proc)
    assert site.cli("approve", incident, "stop_stack", "--as", "alice").returncode == 0
    site.wait_for(incident, waiting_at("archive_tunnel"), proc=proc)
    assert site.cli("approve", incident, "archive_tunnel", "--as", "bob").returncode == 0
    proc.send_signal(signal.SIGKILL)  # the flow process dies while paused at the gate
    proc.wait(10)
    before = site.trail(incident).records()
    artifacts_before = [r for r in before if r.kind == "artifact"]

    resumed = contain(site, "--as", "alice", "--incident", incident, start=True)
    state = site.wait_for(incident, waiting_at("archive_tunnel", run=2), proc=resumed)
    assert state.approvals == ["bob"]  # bob's approval of the same plan still counts
    approved = site.cli("approve", incident, "archive_tunnel", "--as", "carol")
    assert approved.returncode == 0, approved.stderr
    assert resumed.wait(60) == 0

    records = site.trail(incident).records()
    assert "run.resumed" in kinds(records)
    skipped = {r.step for r in records if r.kind == "step.skipped"}
    assert skipped == {"capture_evidence", "stop_stack"}
    assert [r for r in records if r.kind == "artifact" and r.step == "capture_evidence"] == [
        r for r in artifacts_before if r.step == "capture_evidence"
    ]
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.site.tunnel_id}/archive"]
    assert verify_dir(site.evidence / incident).ok


@pytest.mark.parametrize(
    ("failpoint", "step"),
    [
        ("archive_tunnel:after_apply", "archive_tunnel"),
        ("capture_evidence:after_apply", "capture_evidence"),
    ],
)
def test_crash_inside_a_step_then_resume(site: Site, failpoint: str, step: str) -> None:
    site.env["MCP_IR_FAILPOINT"] = failpoint
    crashed = contain(site, "--as", "alice", "--policy", "auto-approve")
    assert crashed.returncode == 137, crashed.stderr
    incident = incident_of(crashed.stderr)
    del site.env["MCP_IR_FAILPOINT"]
    resumed = contain(site, "--as", "alice", "--incident", incident)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = site.trail(incident).records()
    assert "run.resumed" in kinds(records)
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.site.tunnel_id}/archive"]
    subjects = [
        r.data["subject"] for r in records if r.kind == "artifact" and r.step == "capture_evidence"
    ]
    assert len(subjects) == len(set(subjects)) == 7  # nothing captured twice
    if step == "archive_tunnel":
        assert "step.already_done" in kinds(records, "archive_tunnel")
    assert project_objects(site) == []
    assert verify_dir(site.evidence / incident).ok


def test_one_destructive_run_per_target(site: Site) -> None:
    first = contain(site, "--as", "alice", start=True)
    incident = incident_of(site.wait_for_incident(first))
    site.wait_for(incident, waiting_at("stop_stack"), proc=first)  # holds the target
    site.env["MCP_IR_TARGET_WAIT_S"] = "2"
    second = contain(site, "--as", "bob")
    assert second.returncode == 1
    assert f"target {site.target!r} is held by another run" in second.stdout + second.stderr
    other = incident_of(second.stdout)
    assert site.trail(other).records()[-2].data["status"] == "failed"
    assert len(project_objects(site)) == 3  # the second run did nothing
    assert site.cli("reject", incident, "stop_stack", "--as", "bob").returncode == 0
    assert first.wait(60) == 1
    third = contain(site, "--as", "bob", "--policy", "auto-approve")
    assert third.returncode == 0, third.stderr  # released when the first run ended


def test_report_is_a_prefect_artifact(site: Site) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    proc = contain(site, "--as", "alice", "--policy", "auto-approve")
    incident = incident_of(proc.stdout)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"report-{incident.lower()}"])
            )
        )
    assert artifacts and artifacts[0].type == "markdown"
    assert f"# Post-incident report — {incident}" in artifacts[0].data
    assert site.canary not in artifacts[0].data
