"""Only a person's own signature counts, end to end: the real CLI in a subprocess
signing with ssh-keygen, the real flow paused on a real Prefect server, the real
podman stack and sandbox Tunnels API (tests/playbooks/containment.yaml: capture,
stop_stack 1-of-oncall, archive_tunnel 2-of-oncall)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from runbook.signing import fingerprint
from tests.plugins.site import Site, waiting_at

pytestmark = [pytest.mark.podman, pytest.mark.prefect, pytest.mark.timeout(900)]

TEST_PLAYBOOKS = Path(__file__).parent / "playbooks"
STEP = "archive_tunnel"


@pytest.fixture(autouse=True)
def _containment_playbook(site: Site) -> None:
    site.env["MCP_IR_PLAYBOOK_DIR"] = str(TEST_PLAYBOOKS)


def start(site: Site, *args: str) -> tuple[Any, str]:
    proc = site.start("run", "containment", "--target", site.target, "--as", "alice", *args)
    line = site.wait_for_incident(proc)
    return proc, line.split()[1].rstrip(":")


def refused_with(text: str):  # noqa: ANN201
    def predicate(records: list[Any]) -> Any:
        return [r for r in records if r.kind == "approval.refused" and text in r.data["reason"]]

    return predicate


def resume_via_prefect_api(flow_run_id: str, run_input: dict[str, str]) -> None:
    """What anyone with access to the Prefect API (or the UI's form) can send."""
    from prefect.flow_runs import resume_flow_run

    deadline = time.monotonic() + 30
    while True:
        try:
            resume_flow_run(UUID(flow_run_id), run_input=run_input)
            return
        except Exception:  # not paused yet: the flow pauses right after recording
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_only_the_persons_own_key_counts_on_every_channel(site: Site) -> None:
    proc, incident = start(site)
    site.wait_for(incident, waiting_at("stop_stack"), proc=proc)
    assert site.cli("approve", incident, "stop_stack", "--as", "alice").returncode == 0
    state = site.wait_for(incident, waiting_at(STEP), proc=proc)
    assert state.required == 2

    bob_key = str(site.key("bob"))
    ok = site.cli("approve", incident, STEP, "--as", "bob", "--key", bob_key, "--yes")
    assert ok.returncode == 0 and "1 more approval" in ok.stdout, ok.stderr
    assert f"plan {state.plan_hash}" in ok.stderr  # the plan it signed was shown first
    # One operator, a second name: bob's key signing as carol.
    twice = site.cli("approve", incident, STEP, "--as", "carol", "--key", bob_key, "--yes")
    assert twice.returncode == 1 and "signed with bob's key" in twice.stderr
    # A non-member's key under a member's name, and the non-member herself.
    outsider = site.cli(
        "approve", incident, STEP, "--as", "carol", "--key", str(site.key("mallory")), "--yes"
    )
    assert outsider.returncode == 1 and "signed with mallory's key" in outsider.stderr
    mallory = site.cli("approve", incident, STEP, "--as", "mallory")
    assert mallory.returncode == 1 and "not a member of approver group 'oncall'" in mallory.stderr
    # carol, with her own key (site.cli: MCP_IR_SSH_KEY of the person named, --yes).
    carol = site.cli("approve", incident, STEP, "--as", "carol")
    assert carol.returncode == 0, carol.stderr

    records = site.trail(incident).records()
    accepted = [r for r in records if r.kind == "approval.accepted" and r.step == STEP]
    assert [r.data["approver"] for r in accepted] == ["bob", "carol"]
    assert proc.wait(90) == 0
    inventory = {
        name: fingerprint(p["ssh_keys"][0])
        for name, p in __import__("yaml").safe_load(site.inventory.read_text())["people"].items()
    }
    assert [r.data["proof"]["key"] for r in accepted] == [inventory["bob"], inventory["carol"]]
    refusals = [r.data["reason"] for r in records if r.kind == "approval.refused"]
    assert len(refusals) == 3
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.site.tunnel_id}/archive"]

    verified = site.cli("verify", str(site.evidence / incident))
    assert verified.returncode == 0, verified.stdout
    assert "3 signed decision(s) verified" in verified.stdout and "(run ended)" in verified.stdout


def test_prefect_api_resume_naming_a_member_is_refused(site: Site) -> None:
    proc, incident = start(site)
    state = site.wait_for(incident, waiting_at("stop_stack"), proc=proc)
    vote = {"approver": "bob", "decision": "approve", "plan_hash": state.plan_hash, "source": "cli"}
    resume_via_prefect_api(str(state.flow_run_id), vote)
    refused = site.wait_for(
        incident, refused_with("unsigned decision (Prefect UI/API) naming 'bob'"), proc=proc
    )
    assert refused[0].data["source"] == "cli" and refused[0].step == "stop_stack"
    # Still waiting; nothing was stopped.
    assert site.wait_for(incident, waiting_at("stop_stack"), proc=proc).approvals == []
    assert not [
        r
        for r in site.trail(incident).records()
        if r.kind == "step.started" and r.step == "stop_stack"
    ]
    proc.kill()


def test_hand_appended_approvals_do_not_pass_a_resumed_gate(site: Site) -> None:
    """Anyone who can write the evidence directory can append records with a correct
    hash chain; a resumed run does not count them (nor a forged gate.passed)."""
    proc, incident = start(site)
    site.wait_for(incident, waiting_at("stop_stack"), proc=proc)
    assert site.cli("approve", incident, "stop_stack", "--as", "alice").returncode == 0
    state = site.wait_for(incident, waiting_at(STEP), proc=proc)
    proc.kill()
    proc.wait(10)

    trail = site.trail(incident)
    alice = next(r for r in trail.records() if r.kind == "approval.accepted")
    forged = [
        trail.append(
            "approval.accepted",
            STEP,
            {
                "approver": "bob",
                "decision": "approve",
                "plan_hash": state.plan_hash,
                "source": "cli",
            },
        ),
        # alice's genuine proof (for stop_stack) under carol's name on archive_tunnel
        trail.append(
            "approval.accepted",
            STEP,
            {**alice.data, "approver": "carol", "plan_hash": state.plan_hash},
        ),
    ]
    trail.append("gate.passed", STEP, {"plan_hash": state.plan_hash, "approvers": ["bob", "carol"]})

    resumed = site.start(
        "run", "containment", "--target", site.target, "--as", "alice", "--incident", incident
    )
    again = site.wait_for(incident, waiting_at(STEP, run=2), proc=resumed)
    assert again.approvals == [] and again.remaining == 2
    records = site.trail(incident).records()
    unproven = {r.data["seq"]: r.data["reason"] for r in records if r.kind == "approval.unproven"}
    assert set(unproven) == {f.seq for f in forged}
    assert "unsigned" in unproven[forged[0].seq]
    assert (
        "is for step 'stop_stack'" in unproven[forged[1].seq]
        or "not 'carol'" in unproven[forged[1].seq]
    )
    assert site.mutating_calls() == []  # nothing irreversible happened
    verified = site.cli("verify", str(site.evidence / incident))
    assert verified.returncode == 1
    assert f"seq {forged[0].seq}: approval.accepted by 'bob': unsigned" in verified.stdout
