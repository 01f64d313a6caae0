"""Approval-gate rules and the gate state, derived from the evidence trail.

The trail is the record of what was opened, who approved which plan, who was
refused and why; but a decision record counts only when its proof verifies as the
trail is read (``prove``, see :mod:`runbook.proofs`): anyone who can write the
evidence directory can append a record with a correct hash chain, nobody but the
approver can sign it. Unproven decision records are listed in ``unproven`` and
never counted. The rules are applied in exactly one function, :func:`evaluate`,
by every channel (CLI, Prefect UI, Slack).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from core.errors import ApprovalRefused
from core.trail import Record

GateStatus = Literal["not_opened", "auto", "open", "waiting", "passed", "rejected", "timed_out"]
Decision = Literal["approve", "reject"]


@dataclass
class GateState:
    step: str
    status: GateStatus = "not_opened"
    plan_hash: str | None = None
    group: str | None = None
    required: int = 0
    members: list[str] = field(default_factory=list)
    allow_initiator: bool = False
    timeout_s: float = 0.0
    escalate_after_s: float | None = None
    escalate_to: str | None = None
    opened_at: datetime | None = None
    approvals: list[str] = field(default_factory=list)
    refusals: int = 0
    rejected_by: str | None = None
    escalated: bool = False
    waiting_key: str | None = None
    flow_run_id: str | None = None
    rounds: int = 0
    channels: list[str] = field(default_factory=lambda: ["cli", "slack"])
    unproven: list[tuple[int, str]] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return max(0, self.required - len(self.approvals))


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


Prover = Callable[[Record], str | None]


def gate_state(records: list[Record], step: str, prove: Prover | None = None) -> GateState:
    """Replays the trail's gate records for one step (the latest gate wins).

    ``prove(record)`` returns None when a decision record's proof verifies, else
    why not; such records are listed in ``unproven`` and not counted. Without
    ``prove`` (a display of what the trail claims) every record counts.
    """
    state = GateState(step=step)
    for rec in records:
        if rec.step != step:
            continue
        d = rec.data
        if rec.kind == "gate.auto":
            state.status = "auto"
        elif rec.kind == "gate.opened":
            state = GateState(
                step=step,
                status="open",
                plan_hash=d["plan_hash"],
                group=d["group"],
                required=d["required"],
                members=list(d.get("members", [])),
                allow_initiator=d.get("allow_initiator", False),
                timeout_s=d["timeout_s"],
                escalate_after_s=d.get("escalate_after_s"),
                escalate_to=d.get("escalate_to"),
                opened_at=_ts(rec.ts),
                rounds=state.rounds,
                channels=list(d.get("channels") or ["cli", "slack"]),
                unproven=state.unproven,
            )
        elif rec.kind == "gate.waiting":
            state.status = "waiting"
            state.waiting_key = d.get("key")
            state.flow_run_id = d.get("flow_run_id")
            state.rounds += 1
        elif rec.kind in ("approval.accepted", "gate.rejected") and (
            reason := (prove(rec) if prove else None)
        ):
            state.unproven.append((rec.seq, reason))
        elif rec.kind == "approval.accepted" and d.get("plan_hash") == state.plan_hash:
            if d["approver"] not in state.approvals:
                state.approvals.append(d["approver"])
            if state.status == "waiting":
                state.status = "open"
        elif rec.kind == "approval.refused":
            state.refusals += 1
        elif rec.kind == "gate.escalated":
            state.escalated = True
        elif rec.kind == "gate.rejected":
            state.status = "rejected"
            state.rejected_by = d.get("approver")
        elif rec.kind == "gate.timeout":
            state.status = "timed_out"
        elif rec.kind == "gate.passed":
            state.status = "passed"
        elif rec.kind in ("run.started", "run.resumed") and state.status == "waiting":
            # The process that was waiting is gone; the new run opens a new wait.
            state.status = "open"
    return state


def evaluate(
    state: GateState,
    *,
    approver: str,
    decision: Decision,
    plan_hash: str | None,
    initiator: str,
) -> None:
    """Applies the gate rules to one decision; returns when it counts.

    Raises:
        ApprovalRefused: the gate is not waiting, the plan hash is stale, the person
            is not in the group (an empty group denies everyone), is the initiator of
            a step that does not allow it, or has already approved.
    """
    if decision not in ("approve", "reject"):
        raise ApprovalRefused(f"decision must be 'approve' or 'reject', not {decision!r}")
    if state.status not in ("waiting", "open"):
        raise ApprovalRefused(
            f"step {state.step!r} is not waiting for approval (gate: {state.status})"
        )
    if plan_hash is not None and plan_hash != state.plan_hash:
        raise ApprovalRefused(
            f"plan hash {plan_hash[:12]}… does not match the step's current plan "
            f"{(state.plan_hash or '')[:12]}…: review the current plan (mcp-ir status) and decide again"
        )
    if not state.members or approver not in state.members:
        raise ApprovalRefused(f"{approver!r} is not a member of approver group {state.group!r}")
    if decision == "approve" and approver == initiator and not state.allow_initiator:
        raise ApprovalRefused(
            f"{approver!r} started this incident and cannot approve its own step {state.step!r}"
        )
    if decision == "approve" and approver in state.approvals:
        raise ApprovalRefused(
            f"{approver!r} has already approved {state.step!r}; one person counts once"
        )
