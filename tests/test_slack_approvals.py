"""Slack clicks go through runbook.approvals.submit_decision, which applies the gate
rules against the incident's real trail: a refused click is explained to the
clicker ephemerally, recorded in the trail, and changes nothing else."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.trail import Trail, verify_dir
from notifications.slack import APPROVE_ACTION, REJECT_ACTION
from notifications.slack_interactions import SlackInteractions
from runbook.approvals import DecisionResult
from runbook.gates import gate_state
from runbook.settings import Settings
from sandbox.slack_api import block_actions_payload, sign_request
from tests.plugins.slack_sandbox import (
    SIGNING_SECRET,
    Interactions,
    SlackServer,
    interactions,
)

INC = "inc-20261121-0003"
CHANNEL = "C0PRODEU"
STEP = "stop_stack"
PLAN = "sha256:0123456789abcdef"


@pytest.fixture
def ix(slack_env: SlackServer, tmp_path: Path) -> Iterator[Interactions]:
    """The endpoint serving, with the approval request for STEP posted by the notifier."""
    with interactions(slack_env, tmp_path, incident=INC, step=STEP, plan=PLAN) as served:
        yield served


@pytest.fixture
def settings(ix: Interactions) -> Settings:
    return ix.settings


@pytest.fixture
def trail(settings: Settings) -> Trail:
    """An incident started by alice whose stop_stack gate (2 of oncall: alice, bob,
    carol) is waiting for plan PLAN — the records the runner writes."""
    t = Trail.open(settings.evidence_dir, INC)
    t.append(
        "incident.opened",
        None,
        {
            "incident_id": INC,
            "target": "prod-eu",
            "playbook": "breach-response",
            "initiator": "alice",
            "trigger": {"source": "manual"},
            "severity": "critical",
        },
    )
    t.append("run.started", None, {})
    t.append(
        "gate.opened",
        STEP,
        {
            "plan_hash": PLAN,
            "group": "oncall",
            "required": 2,
            "members": ["alice", "bob", "carol"],
            "allow_initiator": False,
            "timeout_s": 900,
            "escalate_after_s": None,
            "escalate_to": None,
        },
    )
    t.append(
        "gate.waiting",
        STEP,
        {"key": "stop-stack-1", "flow_run_id": str(uuid.uuid4()), "plan_hash": PLAN},
    )
    return t


def click(ix: Interactions, user: str, action: str = APPROVE_ACTION) -> None:
    body = ix.click_body(user, action)
    assert ix.post(body, sign_request(body, SIGNING_SECRET)).status_code == 200


def ephemerals(slack: SlackServer, count: int, wait_s: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + wait_s
    while len(slack.state.received("chat.postEphemeral")) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return [r["params"] for r in slack.state.received("chat.postEphemeral")]


def assert_click_refused(
    ix: Interactions,
    trail: Trail,
    user: str,
    *,
    approver: str,
    reason: str,
    action: str = APPROVE_ACTION,
) -> None:
    """``user`` clicks ``action``: the click is refused for ``reason``, explained to
    the clicker alone, recorded, and the gate and the message stay as they were."""
    before = gate_state(trail.records(), STEP)
    click(ix, user, action)
    slack, message = ix.slack, ix.message
    eph = ephemerals(slack, 1)
    assert len(eph) == 1 and eph[0]["user"] == user
    assert reason in eph[0]["text"] and "Nothing changed" in eph[0]["text"]
    last = trail.records()[-1]
    assert last.kind == "approval.refused" and last.step == STEP
    assert last.data["approver"] == approver and last.data["source"] == "slack"
    assert reason in last.data["reason"]
    state = gate_state(trail.records(), STEP)
    assert (state.approvals, state.status, state.plan_hash) == (
        before.approvals,
        before.status,
        before.plan_hash,
    )
    assert slack.state.received("chat.update") == []
    assert slack.state.channel_messages(CHANNEL)[1] == message
    assert verify_dir(trail.dir).ok


def test_non_member_click_changes_nothing(ix: Interactions, trail: Trail) -> None:
    # dave: security-leads, not oncall
    reason = "not a member of approver group 'oncall'"
    assert_click_refused(ix, trail, "U0DAVE", approver="dave", reason=reason)


def test_initiator_cannot_approve_own_step(ix: Interactions, trail: Trail) -> None:
    assert_click_refused(
        ix, trail, "U0ALICE", approver="alice", reason="cannot approve its own step"
    )


def test_two_person_rule_one_person_counts_once(ix: Interactions, trail: Trail) -> None:
    """bob's first approval is in the trail; his second click does not make two."""
    trail.append(
        "approval.accepted",
        STEP,
        {"approver": "bob", "decision": "approve", "plan_hash": PLAN, "source": "cli"},
    )
    assert_click_refused(ix, trail, "U0BOB", approver="bob", reason="one person counts once")
    assert gate_state(trail.records(), STEP).remaining == 1


def test_stale_plan_hash_is_refused(ix: Interactions, trail: Trail) -> None:
    """The plan changed after the message was posted: its buttons still carry the
    old hash, and a click on them approves nothing."""
    trail.append(
        "gate.opened",
        STEP,
        {
            "plan_hash": "sha256:ffffeeeeddddcccc",
            "group": "oncall",
            "required": 2,
            "members": ["alice", "bob", "carol"],
            "allow_initiator": False,
            "timeout_s": 900,
        },
    )
    trail.append(
        "gate.waiting",
        STEP,
        {"key": "stop-stack-2", "flow_run_id": str(uuid.uuid4()), "plan_hash": "sha256:ffff"},
    )
    assert_click_refused(
        ix, trail, "U0BOB", approver="bob", reason="does not match the step's current plan"
    )
    assert trail.records()[-1].data["plan_hash"] == PLAN


def test_reject_by_non_member_is_refused_too(ix: Interactions, trail: Trail) -> None:
    assert_click_refused(
        ix, trail, "U0DAVE", approver="dave", reason="not a member", action=REJECT_ACTION
    )
    assert trail.records()[-1].data["decision"] == "reject"


@pytest.mark.timeout(120)
def test_valid_click_with_no_paused_run_is_kept_and_explained(
    ix: Interactions, trail: Trail
) -> None:
    """bob may approve, but no flow run is paused to take it (none runs here): the
    attempt is recorded as undelivered and bob is told — never silently dropped."""
    click(ix, "U0BOB")
    eph = ephemerals(ix.slack, 1, wait_s=60)
    assert len(eph) == 1 and eph[0]["user"] == "U0BOB"
    assert "no run is paused" in eph[0]["text"]
    last = trail.records()[-1]
    assert last.kind == "approval.undelivered" and last.data["approver"] == "bob"
    assert last.data["source"] == "slack" and last.data["plan_hash"] == PLAN
    assert gate_state(trail.records(), STEP).approvals == []
    assert json.dumps(ix.slack.state.channel_messages(CHANNEL)[1]) == json.dumps(ix.message)


def test_accepted_decisions_update_the_approval_message(ix: Interactions) -> None:
    """What the endpoint does after submit_decision accepts: the message gains a
    line per decision and the still-needed count; the buttons go at quorum. (The
    accepted path itself needs a paused Prefect flow run.)"""
    handler = SlackInteractions(ix.settings)

    def payload(user: str) -> dict[str, Any]:
        message = ix.slack.state.channel_messages(CHANNEL)[1]
        return block_actions_payload(
            channel=CHANNEL, message=message, user_id=user, action_id=APPROVE_ACTION
        )

    handler.update_approval_message(
        payload("U0BOB"), "bob", "approve", DecisionResult(True, "recorded", 1, "open")
    )
    after_bob = ix.slack.state.channel_messages(CHANNEL)[1]
    text = json.dumps(after_bob["blocks"])
    assert "bob approved via Slack" in text and "1 more approval needed" in text
    assert any(b["type"] == "actions" for b in after_bob["blocks"])

    handler.update_approval_message(
        payload("U0CAROL"), "carol", "approve", DecisionResult(True, "recorded", 0, "passed")
    )
    final = ix.slack.state.channel_messages(CHANNEL)[1]
    decisions = next(b for b in final["blocks"] if b.get("block_id") == "mcp_ir_decisions")
    lines = decisions["elements"][0]["text"].split("\n")
    assert [line.split(" ", 1)[1] for line in lines] == [
        "bob approved via Slack",
        "carol approved via Slack",
    ]
    assert "Approved: the step proceeds" in decisions["elements"][1]["text"]
    assert not any(b["type"] == "actions" for b in final["blocks"])
    assert final["edits"] == 2 and final["ts"] == ix.message["ts"]
