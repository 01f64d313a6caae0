"""Recording what a person did outside the engine (``mcp-ir record``): the step is
paused with a form (e.g. ``contact_support``: who contacted the vendor, the ticket
reference); this hands the values to the paused flow run, which validates and
records them, and waits for that record."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from core.errors import ApprovalRefused
from core.trail import Record
from runbook.approvals import TAKE_WAIT_S, _resume, live_records, open_trail, refuse
from runbook.settings import Settings


def _waiting(records: list[Record], step: str) -> Record | None:
    """The latest ``manual.waiting`` of the step, if no later record settled it."""
    latest = None
    for rec in records:
        if rec.step == step and rec.kind == "manual.waiting":
            latest = rec
        elif (
            rec.step == step
            and rec.kind == "manual.recorded"
            or rec.kind in ("run.started", "run.resumed", "run.ended")
        ):
            latest = None
    return latest


def submit_manual(
    settings: Settings,
    *,
    incident_id: str,
    step: str,
    by: str,
    fields: dict[str, Any],
    source: str = "cli",
    wait_s: float = 10.0,
    signer: Callable[[str], str] | None = None,
) -> Record:
    """Delivers a person's record to the step waiting for it and returns the trail
    record the flow wrote.

    Raises:
        ApprovalRefused: nobody is waiting for it, the signature is not the
            person's, or the flow refused it (all recorded in the trail, with the
            reason).

    ``signer(plan_hash)`` returns the proof (runbook.proofs) of the record, a
    statement over the step's plan hash and the fields, signed by the person.
    """
    trail = open_trail(settings, incident_id)
    inventory = settings.inventory()
    attempt = {"by": by, "source": source, **{k: str(v) for k, v in fields.items()}}
    if by not in inventory.people:
        refuse(trail, "manual.refused", step, attempt, f"{by!r} is not a person in the inventory")
    seen = len(trail.records())
    deadline = time.monotonic() + wait_s
    last_error = ""
    proof: str | None = None
    while True:
        current = live_records(trail, "manual.undelivered", step, attempt)
        waiting = _waiting(current, step)
        if waiting is not None:
            if proof is None:
                proof = _signed(settings, trail, step, by, fields, waiting, signer, attempt)
            try:
                _resume(
                    waiting.data["flow_run_id"],
                    {**fields, "by": by, "source": source, "proof": proof},
                )
                break
            except Exception as exc:  # noqa: BLE001 (not paused yet: the flow pauses right after recording)
                last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            reason = f"step {step!r} of {incident_id} is not waiting for a record (`mcp-ir status {incident_id}`)"
            refuse(trail, "manual.undelivered", step, attempt, reason, error=last_error[:200])
        time.sleep(0.5)
    while time.monotonic() < deadline + TAKE_WAIT_S:
        for rec in trail.records()[seen:]:
            if rec.step == step and rec.data.get("by") == by:
                if rec.kind == "manual.recorded":
                    return rec
                if rec.kind == "manual.refused":
                    raise ApprovalRefused(rec.data.get("reason", "refused by the flow"))
        time.sleep(0.3)
    reason = f"the flow run did not take the record within {wait_s + TAKE_WAIT_S:.0f}s (its process may have died)"
    refuse(trail, "manual.undelivered", step, attempt, reason)


def _signed(
    settings: Settings,
    trail: Any,
    step: str,
    by: str,
    fields: dict[str, Any],
    waiting: Record,
    signer: Callable[[str], str] | None,
    attempt: dict[str, Any],
) -> str:
    """The proof for the waiting step's plan hash, checked against the person's keys
    (a refusal is recorded)."""
    from runbook.approvals import precheck_proof

    if signer is None:
        return ""
    plan_hash = str(waiting.data.get("plan_hash", ""))
    proof = signer(plan_hash)
    try:
        precheck_proof(settings, trail, step, by, "record", plan_hash, proof)
    except ApprovalRefused as exc:
        trail.append("manual.refused", step, {**attempt, "reason": exc.detail})
        raise
    return proof
