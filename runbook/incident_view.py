"""A read-only view of an incident, built from its trail (and, when given, whether
the run that owns it still lives): what the status command, the report and the
approvals service show.

Two truths the trail alone cannot tell are made explicit here: a run whose process
is gone is ``dead`` (not "running / awaiting approval"), with the command that
resumes it; a step waiting for a person's record says so, with the ``mcp-ir record``
line to send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.trail import Record, RunOwner
from runbook.gates import GateState, gate_state

STEP_KINDS = {
    "step.planned",
    "step.started",
    "step.succeeded",
    "step.failed",
    "step.skipped",
    "step.already_done",
}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class StepView:
    key: str
    state: str = "pending"
    plan: dict[str, Any] | None = None
    started: str | None = None
    finished: str | None = None
    duration_s: float | None = None
    error: str | None = None
    gate: GateState | None = None
    record_fields: list[str] | None = None  # set while it waits for a person's record


@dataclass
class IncidentView:
    incident: dict[str, Any]
    steps: dict[str, StepView] = field(default_factory=dict)
    status: str = "running"
    status_detail: str = ""
    records: list[Record] = field(default_factory=list)
    # ``alert.joined`` / ``alert.resolved`` records the intake added (newest last)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    last_run: dict[str, Any] | None = None  # the latest run.started/run.resumed data

    @property
    def id(self) -> str:
        return self.incident.get("incident_id", "?")


def build_view(records: list[Record], owner: RunOwner | None = None) -> IncidentView:
    """The incident's state from its trail. With ``owner`` (``core.trail.run_owner``):
    a run that has not ended and whose process no longer holds its lease is ``dead``."""
    opened = next((r for r in records if r.kind == "incident.opened"), None)
    view = IncidentView(incident=dict(opened.data) if opened else {}, records=records)
    if opened:
        view.incident["opened_at"] = opened.ts
    for rec in records:
        if rec.step is None:
            if rec.kind == "run.ended":
                view.status = rec.data.get("status", "ended")
                view.status_detail = rec.data.get("detail", "")
            elif rec.kind in ("run.started", "run.resumed"):
                view.status = "running"
                view.status_detail = ""
                view.last_run = dict(rec.data)
            elif rec.kind in ("alert.joined", "alert.resolved"):
                view.alerts.append({"kind": rec.kind, "ts": rec.ts, **rec.data})
            continue
        sv = view.steps.setdefault(rec.step, StepView(rec.step))
        if rec.kind == "step.planned":
            sv.plan = rec.data
            if sv.state in ("pending", "failed"):
                sv.state = "planned"
        elif rec.kind == "step.started":
            sv.state, sv.started, sv.error = "running", rec.ts, None
        elif rec.kind == "step.succeeded":
            sv.state, sv.finished = "succeeded", rec.ts
            sv.duration_s = rec.data.get("duration_s")
        elif rec.kind == "step.failed":
            sv.state, sv.finished, sv.error = "failed", rec.ts, rec.data.get("error")
        elif rec.kind == "step.skipped" and sv.state != "succeeded":
            sv.state = "skipped"
        elif rec.kind == "manual.waiting" and sv.state not in ("succeeded", "failed"):
            sv.state = "waiting for a record"
            sv.record_fields = list(rec.data.get("fields") or [])
        elif rec.kind == "manual.recorded" and sv.state == "waiting for a record":
            sv.state, sv.record_fields = "recorded", None
    for key, sv in view.steps.items():
        g = gate_state(records, key)
        if g.status != "not_opened":
            sv.gate = g
            if sv.state in ("pending", "planned") and g.status in ("open", "waiting"):
                sv.state = "awaiting approval"
            elif sv.state in ("pending", "planned") and g.status in ("rejected", "timed_out"):
                sv.state = g.status
    if view.status == "running" and owner is not None and not owner.alive:
        run = view.last_run or {}
        view.status = "dead"
        view.status_detail = (
            f"no live process runs it (last run: flow run {run.get('flow_run_id') or '?'}, "
            f"pid {run.get('pid', '?')} on {run.get('host', '?')})"
        )
    return view


def record_command(incident_id: str, step: str, fields: list[str]) -> str:
    """The ``mcp-ir record`` line that answers a step waiting for a person's record."""
    parts = [f"mcp-ir record {incident_id} {step}"]
    if "ticket" in fields:
        parts.append("--ticket REF")
    parts += [
        f"--field {n}=VALUE" for n in fields if n not in ("by", "source", "ticket", "comment")
    ]
    if "comment" in fields:
        parts.append("[--comment TEXT]")
    parts.append("--as YOU")
    return " ".join(parts)
