"""Audit results in the evidence store, and the diff against the previous run.

Each audit run is a hash-chained trail (``core.trail``) under
``<evidence>/_audit/<AUD-id>/`` (``mcp-ir verify`` checks it like any trail): an
``audit.opened`` record, per target the full result as an artifact (JSON, by
SHA-256) and an ``audit.result`` record with each check's status, an
``audit.drift`` record when a check started failing, and ``audit.closed``. Audit
trails sit apart from incident trails, so they are not counted as incidents.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit.model import CheckResult, TargetAudit
from core.redact import Redactor
from core.trail import TRAIL_FILE, Record, Trail, read_records

AUDIT_DIR = "_audit"
RESULT_MEDIA_TYPE = "application/json"


def audit_root(evidence_dir: Path) -> Path:
    return Path(evidence_dir) / AUDIT_DIR


def new_audit_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"AUD-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Drift:
    """What changed since the previous run of the same target."""

    previous_audit: str | None
    new_failures: list[CheckResult] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.new_failures)

    def as_dict(self) -> dict[str, Any]:
        return {
            "previous_audit": self.previous_audit,
            "new_failures": [
                {"id": c.id, "severity": c.severity, "reason": c.reason} for c in self.new_failures
            ],
            "resolved": self.resolved,
        }


def diff(previous: TargetAudit | None, current: TargetAudit, previous_id: str | None) -> Drift:
    """A check that fails now and did not fail in the previous run is drift. The first
    run of a target is its baseline: nothing to drift from."""
    if previous is None:
        return Drift(None)
    new = [c for c in current.checks if c.status == "fail" and previous.status_of(c.id) != "fail"]
    resolved = [
        c.id
        for c in previous.checks
        if c.status == "fail" and current.status_of(c.id) not in ("fail", None)
    ]
    return Drift(previous_id, new, resolved)


def audit_trails(evidence_dir: Path) -> list[Path]:
    """Audit trail directories, oldest first (ids sort by time)."""
    root = audit_root(evidence_dir)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob(f"AUD-*/{TRAIL_FILE}"))


def latest_result(
    evidence_dir: Path, target: str, *, before: str | None = None
) -> tuple[str, TargetAudit, Record] | None:
    """The newest stored result of ``target`` (from an audit other than ``before``)."""
    for directory in reversed(audit_trails(evidence_dir)):
        if directory.name == before:
            continue
        records = read_records(directory / TRAIL_FILE)
        for rec in reversed(records):
            if rec.kind == "audit.result" and rec.data.get("target") == target:
                raw = Trail(directory).read_artifact(str(rec.data["artifact_sha256"]))
                return directory.name, TargetAudit.from_dict(json.loads(raw)), rec
    return None


def latest_records(evidence_dir: Path) -> dict[str, tuple[Record, Record | None]]:
    """Per target, its newest ``audit.result`` record and that run's ``audit.drift``
    record for it (None when it did not drift): what ``/metrics`` shows."""
    found: dict[str, tuple[Record, Record | None]] = {}
    for directory in reversed(audit_trails(evidence_dir)):
        records = read_records(directory / TRAIL_FILE)
        for rec in records:
            target = rec.data.get("target")
            if rec.kind != "audit.result" or target in found:
                continue
            drift = next(
                (r for r in records if r.kind == "audit.drift" and r.data.get("target") == target),
                None,
            )
            found[str(target)] = (rec, drift)
    return found


class AuditRun:
    """One audit run's trail."""

    def __init__(self, evidence_dir: Path, audit_id: str, redactor: Redactor | None = None) -> None:
        self.evidence_dir = Path(evidence_dir)
        self.id = audit_id
        self.trail = Trail.open(audit_root(evidence_dir), audit_id, redactor)

    def opened(self, targets: list[str], initiator: str, trigger: dict[str, Any]) -> None:
        self.trail.append(
            "audit.opened",
            None,
            {"audit_id": self.id, "targets": targets, "initiator": initiator, "trigger": trigger},
        )

    def store(self, result: TargetAudit) -> tuple[Drift, str]:
        """Stores ``result``, diffs it against the target's previous stored result and
        records the drift. Returns the drift and the result artifact's SHA-256."""
        previous = latest_result(self.evidence_dir, result.target, before=self.id)
        content = json.dumps(result.as_dict(), sort_keys=True, indent=1).encode()
        art = self.trail.add_artifact(
            content,
            name=f"audit-{result.target}.json",
            media_type=RESULT_MEDIA_TYPE,
            extra={"target": result.target},
        )
        sha = str(art.data.get("sha256"))
        drift = diff(previous[1] if previous else None, result, previous[0] if previous else None)
        self.trail.append(
            "audit.result",
            None,
            {
                "target": result.target,
                "kind": result.kind,
                "at": result.at,
                "artifact_sha256": sha,
                "previous_audit": drift.previous_audit,
                "checks": [
                    {"id": c.id, "status": c.status, "severity": c.severity} for c in result.checks
                ],
            },
        )
        if drift.drifted:
            self.trail.append("audit.drift", None, {"target": result.target, **drift.as_dict()})
        return drift, sha

    def closed(self, summary: dict[str, Any]) -> None:
        self.trail.append("audit.closed", None, summary)
