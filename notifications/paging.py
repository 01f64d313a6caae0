"""What pages the on-call engineer: gates that open or escalate, records a person
must make, and runs that fail — derived from the incident's trail.

:func:`page_events` maps one trail record to the paging events it implies. Every
event carries a dedup key of one incident and step (``mcp-ir/<incident>/<step>/gate``,
``…/record``, ``mcp-ir/<incident>/run``), so a trigger sent twice (a resumed run,
an at-least-once retry) is one alert, and the resolve closes exactly that alert.
The PagerDuty and email notifiers (``notifications/pagerduty.py``,
``notifications/email.py``) deliver them; neither ever sees a secret, because the
trail is already redacted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from core.trail import Record

Action = Literal["trigger", "resolve"]
Severity = Literal["critical", "error", "warning", "info"]


@dataclass(frozen=True)
class PageEvent:
    """One thing to tell the pager: open (``trigger``) or close (``resolve``) an alert."""

    action: Action
    dedup_key: str
    incident: str
    step: str | None
    summary: str
    severity: Severity = "error"
    # Who should hear about it (approver group members), for channels that address people.
    recipients: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


def gate_key(incident: str, step: str) -> str:
    return f"mcp-ir/{incident}/{step}/gate"


def record_key(incident: str, step: str) -> str:
    return f"mcp-ir/{incident}/{step}/record"


def run_key(incident: str) -> str:
    return f"mcp-ir/{incident}/run"


def page_events(incident: str, target: str, rec: Record) -> list[PageEvent]:
    """The paging events one trail record implies (most records imply none)."""
    step, data = rec.step, rec.data
    where = f"[{incident}] {target}"

    def gate(action: Action, summary: str, severity: Severity, **more: Any) -> list[PageEvent]:
        """The event of ``step``'s gate alert (one dedup key per gate)."""
        assert step is not None
        return [
            PageEvent(action, gate_key(incident, step), incident, step, summary, severity, **more)
        ]

    def run(action: Action, summary: str, severity: Severity, **more: Any) -> list[PageEvent]:
        """The event of the run's own alert (a failed or cancelled run)."""
        return [PageEvent(action, run_key(incident), incident, None, summary, severity, **more)]

    members = tuple(data.get("members") or ())
    if rec.kind == "gate.opened" and step:
        hash_ = str(data.get("plan_hash", ""))
        return gate(
            "trigger",
            f"{where}: {step} waits for {data.get('required', 1)} approval(s) from group "
            f"{data.get('group')!r} (plan {hash_})",
            "error",
            recipients=members,
            details={
                "plan_hash": hash_,
                "group": data.get("group"),
                "timeout_s": data.get("timeout_s"),
            },
        )
    if rec.kind == "gate.escalated" and step:
        return gate(
            "trigger",
            f"{where}: {step} ESCALATED to group {data.get('to')!r}: no quorum yet",
            "critical",
            recipients=members,
            details={"escalated_to": data.get("to")},
        )
    if rec.kind in ("gate.passed", "gate.rejected", "gate.timeout") and step:
        outcome = rec.kind.split(".", 1)[1]
        return gate("resolve", f"{where}: {step} gate {outcome}", "info")
    if rec.kind == "manual.waiting" and step:
        return [
            PageEvent(
                "trigger",
                record_key(incident, step),
                incident,
                step,
                f"{where}: {step} waits for a person's record (mcp-ir record {incident} {step} …)",
                "warning",
            )
        ]
    if rec.kind == "manual.recorded" and step:
        return [
            PageEvent(
                "resolve", record_key(incident, step), incident, step, f"{where}: {step} recorded"
            )
        ]
    if rec.kind == "run.ended":
        status = str(data.get("status", "ended"))
        if status == "succeeded":
            return run("resolve", f"{where}: run succeeded", "error")
        detail = str(data.get("detail") or "")
        summary = f"{where}: run {status}" + (f": {detail}" if detail else "")
        return run("trigger", summary, "critical", details={"status": status})
    return []


def outbox_events(incident: str, target: str, rec: Record) -> list[tuple[str, dict[str, Any]]]:
    """``(outbox key, payload)`` pairs for :class:`notifications.delivery.OutboxObserver`:
    one per paging event this record implies, keyed by record so each is queued once."""
    from dataclasses import asdict

    return [
        (f"{e.dedup_key}|{e.action}|{rec.kind}|{rec.seq}", asdict(e))
        for e in page_events(incident, target, rec)
    ]


def event_from_payload(payload: dict[str, Any]) -> PageEvent:
    return PageEvent(**{**payload, "recipients": tuple(payload.get("recipients") or ())})
