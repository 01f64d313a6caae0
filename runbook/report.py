"""The post-incident report, rendered from the trail alone (Jinja2 Markdown)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from core.durations import format_duration
from core.trail import Record, Trail, verify_dir
from runbook.incident_view import build_view, ts

TEMPLATES = Path(__file__).resolve().parent.parent / "notifications" / "templates"

_TIMELINE_KINDS = {
    "incident.opened": "incident opened",
    "run.started": "run started",
    "run.resumed": "run resumed",
    "run.superseded": "earlier run superseded (its process killed or fenced off the trail)",
    "step.started": "step started",
    "step.succeeded": "step succeeded",
    "step.failed": "step FAILED",
    "step.skipped": "step skipped (done earlier)",
    "step.already_done": "effect already in place",
    "gate.auto": "gate passed automatically",
    "gate.opened": "approval requested",
    "gate.escalated": "gate escalated",
    "approval.accepted": "approved",
    "approval.refused": "approval refused",
    "gate.rejected": "REJECTED",
    "gate.timeout": "gate timed out (rejects)",
    "gate.passed": "gate passed",
    "run.ended": "run ended",
}


def markdown_env() -> jinja2.Environment:
    """The Jinja environment of the Markdown templates in ``notifications/templates``
    (the incident report, the vendor support report): a missing field is an error."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 (Markdown, not HTML)
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = format_duration
    return env


def _elapsed(start: str, end: str) -> float:
    return (ts(end) - ts(start)).total_seconds()


def _proof_note(trail: Trail, records: list[Any], rec: Any) -> str:
    """The decision's channel and whether its proof verifies against the keys the trail
    snapshotted at incident open (a rewritten record names its approver UNPROVEN)."""
    from core.errors import ApprovalRefused
    from runbook import proofs

    source = rec.data.get("source") or ""
    if rec.kind not in ("approval.accepted", "gate.rejected"):
        return source
    ref = (records[0].data.get("keys") or {}) if records else {}
    raw = trail.read_artifact(ref["sha256"]) if isinstance(ref.get("sha256"), str) else None
    if raw is None:
        return f"{source} (not signed)" if source else "not signed"
    try:
        proven = proofs.check_record(
            rec.kind,
            rec.step,
            rec.data,
            incident=trail.incident_id,
            keys=proofs.KeyRing.from_document(json.loads(raw)),
            read_artifact=proofs.read_artifact_from(trail.dir),
        )
    except ApprovalRefused as exc:
        return f"UNPROVEN: {exc.detail}"
    if proven is None:
        return "ui (unsigned)"
    return f"{proven.channel}, signed {proven.key_fingerprint}"


def report_context(trail: Trail) -> dict[str, Any]:
    records = trail.records()
    view = build_view(records)
    opened = view.incident.get("opened_at")
    timeline = []
    for rec in records:
        if rec.kind not in _TIMELINE_KINDS:
            continue
        who = rec.data.get("approver") or ""
        extra = rec.data.get("reason") or rec.data.get("error") or rec.data.get("status") or ""
        if rec.kind == "run.superseded":
            extra = f"{rec.data.get('process', '')} {rec.data.get('detail', '')}".strip()
        timeline.append(
            {
                "ts": rec.ts,
                "seq": rec.seq,
                "what": _TIMELINE_KINDS[rec.kind],
                "step": rec.step or "",
                "who": who,
                "note": str(extra)[:200],
            }
        )
    gates = []
    for rec in records:
        if rec.kind in (
            "gate.auto",
            "approval.accepted",
            "approval.refused",
            "gate.rejected",
            "gate.timeout",
            "gate.escalated",
        ):
            waited = None
            opened_gate = next(
                (
                    r
                    for r in reversed(records[: rec.seq])
                    if r.step == rec.step and r.kind == "gate.opened"
                ),
                None,
            )
            if opened_gate and rec.kind != "gate.auto":
                waited = _elapsed(opened_gate.ts, rec.ts)
            gates.append(
                {
                    "step": rec.step,
                    "kind": rec.kind.split(".")[1],
                    "who": rec.data.get("approver") or rec.data.get("to") or "",
                    "source": _proof_note(trail, records, rec),
                    "ts": rec.ts,
                    "opened": opened_gate.ts if opened_gate else "",
                    "waited": waited,
                    "reason": rec.data.get("reason") or rec.data.get("comment") or "",
                    "plan_hash": (rec.data.get("plan_hash") or "")[:12],
                }
            )
    milestones = _human_milestones(records, opened)
    for key, label in (
        ("stop_stack", "time to containment (stack stopped)"),
        ("archive_tunnel", "time to archive"),
        ("rotate_credentials", "time to rotation"),
    ):
        sv = view.steps.get(key)
        if opened and sv and sv.state == "succeeded" and sv.finished:
            milestones.append({"label": label, "value": _elapsed(opened, sv.finished)})
    open_items = []
    for key, sv in view.steps.items():
        if sv.state != "succeeded":
            note = sv.error or (
                f"waiting for {sv.gate.remaining} approval(s) from {sv.gate.group}"
                if sv.gate and sv.gate.status in ("open", "waiting")
                else ""
            )
            open_items.append({"step": key, "state": sv.state, "note": note})
    # Follow-ups a step asked operators for (e.g. point the inventory at the new tunnel).
    for rec in records:
        if rec.kind == "open_item":
            open_items.append(
                {"step": rec.step or "", "state": "follow-up", "note": rec.data.get("note", "")}
            )
    from runbook.plan_text import warnings

    for warning in warnings(records):
        open_items.append({"step": "", "state": "warning", "note": warning})
    artifacts = [r.data | {"step": r.step, "seq": r.seq} for r in records if r.kind == "artifact"]
    verification = verify_dir(trail.dir)
    return {
        "incident": view.incident,
        "status": view.status,
        "status_detail": view.status_detail,
        "steps": list(view.steps.values()),
        "timeline": timeline,
        "gates": gates,
        "milestones": milestones,
        "open_items": open_items,
        "artifacts": artifacts,
        "verification": verification,
        "record_count": len(records),
        "head_hash": records[-1].hash if records else "",
        "review": _log_review(trail, records),
        "remote_copy": _remote_copy(trail),
    }


_HUMAN_KINDS = (
    "approval.accepted",
    "approval.refused",
    "gate.rejected",
    "manual.recorded",
    "manual.refused",
)


def _human_milestones(records: list[Record], opened: str | None) -> list[dict[str, Any]]:
    """Time to acknowledge (the first thing a person did: an approval, a refusal, a
    rejection or a recorded manual action) and time to first approval."""
    if not opened:
        return []
    out = []
    first_human = next((r for r in records if r.kind in _HUMAN_KINDS), None)
    if first_human:
        out.append(
            {
                "label": "time to acknowledge (first human action)",
                "value": _elapsed(opened, first_human.ts),
            }
        )
    first_approval = next((r for r in records if r.kind == "approval.accepted"), None)
    if first_approval:
        out.append(
            {"label": "time to first approval", "value": _elapsed(opened, first_approval.ts)}
        )
    return out


def _log_review(trail: Trail, records: list[Record]) -> dict[str, Any] | None:
    """The log review's summary (its latest ``step.prepared``) and findings table (its
    latest ``log-review-findings.json`` artifact); None when no review ran."""
    prepared = [r for r in records if r.step == "review_logs" and r.kind == "step.prepared"]
    if not prepared:
        return None
    result = prepared[-1].data.get("result") or {}
    findings: list[dict[str, Any]] = []
    stored = [
        r
        for r in records
        if r.kind == "artifact"
        and r.step == "review_logs"
        and r.data.get("name") == "log-review-findings.json"
    ]
    if stored:
        import json

        try:
            doc = json.loads(trail.read_artifact(stored[-1].data["sha256"]))
            findings = [f for f in doc.get("findings", []) if isinstance(f, dict)]
        except (OSError, ValueError):
            findings = []
    return {
        "summary": str(result.get("summary", "")),
        "needs_human": bool(result.get("needs_human")),
        "severity_counts": result.get("severity_counts") or {},
        "findings": findings,
    }


def _remote_copy(trail: Trail) -> str | None:
    """How complete the WORM copy is, from the local outbox (no network call)."""
    from runbook.worm import OUTBOX_FILE, Outbox, trail_lines

    if not (trail.dir / OUTBOX_FILE).exists():
        return None
    return Outbox(trail.dir).status(trail_lines(trail.dir)).line()


def render_markdown(trail: Trail) -> str:
    text = markdown_env().get_template("report.md.j2").render(**report_context(trail))
    return trail.redactor.text(text)
