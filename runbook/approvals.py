"""Approving or rejecting a step from outside the flow (CLI, Slack).

The rules are applied here, against the trail, before anything is sent, so that a
refused attempt is answered at once and recorded; an accepted one is handed to
the paused Prefect flow run, which applies the same rules again (it also takes
decisions from the Prefect UI form) and records the outcome. This function waits
for that record so the caller is told what actually happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn
from uuid import UUID

from core.errors import ApprovalRefused
from core.trail import TRAIL_FILE, Record, Trail, check_incident_id, run_owner
from runbook.context import build_redactor
from runbook.deployment_runs import resume_command
from runbook.gates import GateState, evaluate, gate_state
from runbook.incident_view import build_view
from runbook.settings import Settings

# How long the CLI waits for the paused flow to record what it did with a delivered
# decision (it verifies the signature and appends; on a loaded worker that can take
# tens of seconds).
TAKE_WAIT_S = 60.0


@dataclass(frozen=True)
class DecisionResult:
    accepted: bool
    detail: str
    remaining: int
    gate_state: str


@dataclass(frozen=True)
class PendingGate:
    step: str
    plan_hash: str
    group: str
    required: int
    approvals: list[str]
    opened_at: str
    escalate_after_s: float | None
    timeout_s: float


def open_trail(settings: Settings, incident_id: str) -> Trail:
    """The incident's trail, with the target's redactor when an inventory is configured
    (the read-only CLI needs only the evidence directory: what it appends holds no
    target secret).

    Raises:
        ApprovalRefused: no such incident under the evidence dir.
    """
    check_incident_id(incident_id)
    if not (settings.evidence_dir / incident_id / TRAIL_FILE).exists():
        raise ApprovalRefused(
            f"unknown incident {incident_id!r}: no trail under {settings.evidence_dir}"
        )
    plain = Trail.open(settings.evidence_dir, incident_id)
    if settings.config_path is None:
        # Read-only commands work from the evidence alone; the trail is already redacted.
        return plain
    inventory = settings.inventory()
    target = build_view(plain.records()).incident.get("target")
    if target in inventory.targets:
        return Trail.open(
            settings.evidence_dir, incident_id, build_redactor(inventory.targets[target])
        )
    return plain


def pending_gates(settings: Settings, incident_id: str) -> list[PendingGate]:
    trail = open_trail(settings, incident_id)
    view = build_view(trail.records())
    out = []
    for sv in view.steps.values():
        g = sv.gate
        if g and g.status in ("open", "waiting") and g.plan_hash:
            out.append(
                PendingGate(
                    step=sv.key,
                    plan_hash=g.plan_hash,
                    group=g.group or "",
                    required=g.required,
                    approvals=list(g.approvals),
                    opened_at=g.opened_at.isoformat() if g.opened_at else "",
                    escalate_after_s=g.escalate_after_s,
                    timeout_s=g.timeout_s,
                )
            )
    return out


def dead_run_reason(trail: Trail, records: list[Record]) -> str | None:
    """Why no decision can be delivered now, when the incident's run has no live
    process (its lease is free and it never ended), else None."""
    view = build_view(records, run_owner(trail.dir))
    if view.status != "dead":
        return None
    return (
        f"the incident's run is dead ({view.status_detail}): resume it with "
        f"`{resume_command(trail.incident_id, records)}`, then decide again"
    )


def _resume(flow_run_id: str, run_input: dict[str, str]) -> None:
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(UUID(flow_run_id), run_input=run_input)


def submit_decision(
    settings: Settings,
    *,
    incident_id: str,
    step: str,
    approver: str,
    decision: Literal["approve", "reject"],
    comment: str = "",
    plan_hash: str | None = None,
    source: str = "cli",
    wait_s: float = 10.0,
    signer: Callable[[str], str] | None = None,
) -> DecisionResult:
    """Applies the gate rules and, if the decision counts, delivers it to the flow.

    ``signer(plan_hash)`` returns the proof (runbook.proofs) of the decision bound to
    the plan hash the rules were checked against; it is checked here against the
    inventory's keys (a key of another person is refused and recorded) and again
    by the flow, which counts nothing unproven.

    Raises:
        ApprovalRefused: the decision does not count (recorded in the trail) or no run
            is waiting at this gate to take it (also recorded; nothing is lost: the
            person is told to retry or resume the incident).
    """
    trail = open_trail(settings, incident_id)
    records = trail.records()
    view = build_view(records)
    initiator = view.incident.get("initiator", "")
    state: GateState = gate_state(records, step)
    attempt = {"approver": approver, "decision": decision, "source": source, "plan_hash": plan_hash}
    try:
        if step not in view.steps:
            raise ApprovalRefused(f"incident {incident_id} has no step {step!r} yet")
        evaluate(
            state, approver=approver, decision=decision, plan_hash=plan_hash, initiator=initiator
        )
    except ApprovalRefused as exc:
        trail.append("approval.refused", step, {**attempt, "reason": exc.detail})
        raise
    bound_hash = plan_hash or state.plan_hash or ""
    dead = dead_run_reason(trail, records)
    if dead:  # answered before anything is signed: no process will ever read it
        refuse(trail, "approval.undelivered", step, attempt, dead)
    try:
        proof = signer(bound_hash) if signer else ""
        precheck_proof(settings, trail, step, approver, decision, bound_hash, proof)
    except ApprovalRefused as exc:
        trail.append("approval.refused", step, {**attempt, "reason": exc.detail})
        raise
    run_input = {
        "approver": approver,
        "decision": decision,
        "comment": comment,
        "plan_hash": bound_hash,
        "source": source,
        "proof": proof,
    }
    seen = len(records)
    deadline = time.monotonic() + wait_s
    last_error = ""
    while True:
        current = live_records(trail, "approval.undelivered", step, attempt)
        state = gate_state(current, step)
        if state.status in ("passed", "rejected", "timed_out", "auto"):
            trail.append(
                "approval.refused", step, {**attempt, "reason": f"gate already {state.status}"}
            )
            raise ApprovalRefused(f"step {step!r} is no longer waiting (gate {state.status})")
        if state.status == "waiting" and state.flow_run_id:
            try:
                _resume(state.flow_run_id, run_input)
                break
            except Exception as exc:  # noqa: BLE001 (not paused right now: the flow re-pauses between rounds)
                last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            reason = (
                "no run is paused at this gate (the flow may be between approvals or not running: "
                f"`mcp-ir status {incident_id}`; resume a stopped run with "
                f"`{resume_command(incident_id, records)}`)"
            )
            refuse(trail, "approval.undelivered", step, attempt, reason, error=last_error[:200])
        time.sleep(0.5)
    while time.monotonic() < deadline + TAKE_WAIT_S:
        for rec in trail.records()[seen:]:
            if rec.step != step or rec.data.get("approver") != approver:
                continue
            if rec.kind == "approval.accepted":
                left = gate_state(trail.records(), step)
                return DecisionResult(
                    True,
                    f"approval by {approver} of plan {bound_hash} recorded",
                    left.remaining,
                    left.status,
                )
            if rec.kind == "gate.rejected":
                return DecisionResult(
                    True,
                    f"rejection by {approver} of plan {bound_hash} recorded; the run ends",
                    0,
                    "rejected",
                )
            if rec.kind == "approval.refused":
                raise ApprovalRefused(rec.data.get("reason", "refused by the flow"))
        time.sleep(0.3)
    reason = (
        f"the flow run did not take the decision within {wait_s + TAKE_WAIT_S:.0f}s (its process may have died): "
        f"check `mcp-ir status {incident_id}`, resume with `{resume_command(incident_id, records)}`, "
        "and decide again"
    )
    refuse(trail, "approval.undelivered", step, attempt, reason)


def refuse(
    trail: Trail, kind: str, step: str, attempt: dict[str, Any], reason: str, **extra: Any
) -> NoReturn:
    """Records on the trail why a decision or record was not delivered or accepted
    (``kind``, with the attempt's fields and ``reason``), then refuses it.

    Raises:
        ApprovalRefused: always, with ``reason``.
    """
    trail.append(kind, step, {**attempt, "reason": reason, **extra})
    raise ApprovalRefused(reason)


def live_records(trail: Trail, kind: str, step: str, attempt: dict[str, Any]) -> list[Record]:
    """The trail's records now, while its run can still take a decision; when the run
    is dead, no process will ever read one: refused at once (``kind``)."""
    current = trail.records()
    dead = dead_run_reason(trail, current)
    if dead:
        refuse(trail, kind, step, attempt, dead)
    return current


def precheck_proof(
    settings: Settings,
    trail: Trail,
    step: str,
    approver: str,
    decision: str,
    plan_hash: str,
    proof: str,
) -> None:
    """The check the flow will make, made before anything is delivered, so that a
    refusal is answered at once (the flow checks again; the gate's channels are its
    business).

    Raises:
        ApprovalRefused: the proof does not verify as ``approver``'s decision.
    """
    from runbook import proofs

    if not proof or settings.config_path is None:
        return  # without an inventory there is no key ring here: the flow checks it
    proofs.check(
        proofs.decode(proof),
        proofs.KeyRing.from_inventory(settings.inventory()),
        incident=trail.incident_id,
        step=step,
        approver=approver,
        decision=decision,
        plan_hash=plan_hash,
    )


def cli_signer(
    settings: Settings,
    *,
    incident_id: str,
    step: str,
    approver: str,
    decision: str,
    key: str | None,
    fields: dict[str, str] | None = None,
    confirm: Callable[[str], None] | None = None,
) -> Callable[[str], str]:
    """A ``signer`` for :func:`submit_decision` / ``submit_manual``: the person's SSH key
    (``--key``, ``$MCP_IR_SSH_KEY`` or ssh-agent) signs the statement over the plan
    hash; ``confirm(plan_hash)`` runs first (shows the plan, asks on a TTY)."""
    from runbook import proofs, signing

    def sign(plan_hash: str) -> str:
        if confirm is not None:
            confirm(plan_hash)
        # Without an inventory (a CLI host needs only the evidence directory) the key
        # comes from --key / $MCP_IR_SSH_KEY, or the agent's first key; the flow checks
        # the signature against the keys snapshotted when the incident opened.
        person = settings.inventory().people.get(approver) if settings.config_path else None
        key_path, agent_key = signing.choose_key(key, list(person.ssh_keys) if person else [])
        statement = proofs.make_statement(
            incident=incident_id,
            step=step,
            plan_hash=plan_hash,
            decision=decision,
            approver=approver,
            channel="cli",
            fields=fields,
        )
        signature = signing.sign(
            signing.canonical_json(statement),
            key_path=None if agent_key else key_path,
            agent_key=agent_key,
        )
        return proofs.encode(proofs.proof_document(statement, signature)).decode()

    return sign


def planned(settings: Settings, incident_id: str, step: str, plan_hash: str) -> dict[str, Any]:
    """The ``step.planned`` record of that plan hash (what an approval approves)."""
    for rec in reversed(open_trail(settings, incident_id).records()):
        if rec.step == step and rec.kind == "step.planned" and rec.data.get("hash") == plan_hash:
            return dict(rec.data)
    return {}
