"""Every incident under the evidence directory, read from its trail alone.

``mcp-ir incidents`` and the target state (``runbook/target_state.py``) are built
on this: no inventory and no Prefect server are needed, so an operator can see
what happened from the evidence directory (or a copy of it) on any machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.trail import TRAIL_FILE, Record, Trail, check_incident_id
from runbook.incident_view import IncidentView, build_view, ts


@dataclass(frozen=True)
class IncidentSummary:
    """What one line of ``mcp-ir incidents`` says about an incident."""

    id: str
    target: str | None
    playbook: str | None
    state: str
    waiting_for: str
    opened_at: str | None
    age_s: float | None
    drill: bool
    initiator: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "incident_id": self.id,
            "target": self.target,
            "playbook": self.playbook,
            "state": self.state,
            "waiting_for": self.waiting_for or None,
            "opened_at": self.opened_at,
            "age_s": None if self.age_s is None else round(self.age_s, 1),
            "drill": self.drill,
            "initiator": self.initiator,
        }


def incident_dirs(evidence_dir: Path) -> list[Path]:
    """Incident directories (those holding a non-empty trail), oldest name first."""
    if not evidence_dir.is_dir():
        return []
    out = []
    for child in sorted(evidence_dir.iterdir()):
        trail = child / TRAIL_FILE
        if not child.is_dir() or not trail.is_file() or trail.stat().st_size == 0:
            continue
        try:
            check_incident_id(child.name)
        except ConfigError:
            continue
        out.append(child)
    return out


def iter_views(evidence_dir: Path) -> Iterator[tuple[Path, IncidentView]]:
    """Each incident's directory and view, in the order the incidents were opened."""
    views = []
    for directory in incident_dirs(evidence_dir):
        records = Trail(directory).records()
        views.append((directory, build_view(records)))
    views.sort(key=lambda pair: pair[1].incident.get("opened_at") or "")
    yield from views


def waiting_for(view: IncidentView) -> str:
    """What a person must do next for this incident, in one phrase ('' when nothing)."""
    if view.status not in ("running",):
        return ""
    for step in view.steps.values():
        gate = step.gate
        if gate and gate.status in ("open", "waiting"):
            return (
                f"{step.key}: {gate.remaining} approval(s) from group {gate.group!r} "
                f"(plan {gate.plan_hash})"
            )
        if _manual_waiting(view.records, step.key):
            return f"{step.key}: a record (mcp-ir record {view.id} {step.key} …)"
    return ""


def _manual_waiting(records: list[Record], step: str) -> bool:
    state = False
    for rec in records:
        if rec.step != step:
            continue
        if rec.kind == "manual.waiting":
            state = True
        elif rec.kind in ("manual.recorded", "step.succeeded", "step.failed"):
            state = False
    return state


def summarize(view: IncidentView, now: datetime | None = None) -> IncidentSummary:
    inc = view.incident
    opened = inc.get("opened_at")
    age = None
    if opened:
        age = ((now or datetime.now(UTC)) - ts(opened)).total_seconds()
    return IncidentSummary(
        id=view.id,
        target=inc.get("target"),
        playbook=inc.get("playbook"),
        state=view.status,
        waiting_for=waiting_for(view),
        opened_at=opened,
        age_s=age,
        drill=bool(inc.get("drill")),
        initiator=inc.get("initiator"),
    )


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
