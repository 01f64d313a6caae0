"""Drift goes to Slack through the existing notifier (``notifications.base``):
one thread per drifting target and audit run — opened like an incident thread,
one ``drift`` line naming each new failure and its reason, then closed. Failures to
deliver are recorded in the audit's trail by the notifier itself; a notification
never fails the audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit.model import TargetAudit
from audit.store import AuditRun, Drift
from core.errors import McpIrError

STEP = "posture-audit"
FLUSH_S = 5.0
_ORDER = ("critical", "high", "medium", "low", "info")


def drift_text(target: str, drift: Drift) -> str:
    lines = [
        f"{len(drift.new_failures)} check(s) of {target} started failing since {drift.previous_audit}:"
    ]
    for c in drift.new_failures:
        lines.append(f"- {c.id} ({c.severity}): {c.reason or 'failed'}")
    return "\n".join(lines)


def notify_drift(
    inventory: Any,
    evidence_dir: Path,
    run: AuditRun,
    result: TargetAudit,
    drift: Drift,
    *,
    initiator: str,
) -> bool:
    """Tells Slack (when the inventory configures it) about ``drift``; True when a
    notifier was used."""
    if not drift.drifted or not getattr(inventory, "notifiers", None):
        return False
    from notifications.base import NullNotifier, build_notifier

    thread = f"{run.id}-{result.target}"
    trail = run.trail

    def record(kind: str, data: dict[str, Any]) -> None:
        trail.append(kind, None, {**data, "thread": thread})

    try:
        notifier = build_notifier(
            inventory,
            result.target,
            record=record,
            state_dir=Path(evidence_dir),
            redactor=trail.redactor,
        )
    except McpIrError as exc:
        trail.append("notification.unavailable", None, {"error": exc.detail, "thread": thread})
        return False
    if isinstance(notifier, NullNotifier):  # only pagers configured: they page on runs
        return False
    severity = min((c.severity for c in drift.new_failures), key=_ORDER.index)
    try:
        notifier.incident_opened(
            thread,
            result.target,
            severity,
            f"posture-audit drift ({run.id})",
            initiator,
            "posture-audit",
        )
        notifier.step_finished(thread, STEP, "drift", 0.0, drift_text(result.target, drift))
        notifier.incident_closed(
            thread,
            "drift",
            f"new failures: {', '.join(c.id for c in drift.new_failures)}; run `mcp-ir audit "
            f"--target {result.target}` for the evidence",
        )
        notifier.flush(FLUSH_S)
    finally:
        notifier.close()
    return True
