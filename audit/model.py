"""What an audit produces: one :class:`CheckResult` per check and target.

A check is ``pass``, ``fail``, ``unverifiable`` (it could not be decided from what
is readable: the reason says why) or ``manual`` (a person must confirm it). Its
evidence says what was read and where — never a secret value, only fingerprints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "unverifiable", "manual"]
Severity = Literal["critical", "high", "medium", "low", "info"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "unverifiable", "manual")
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "info")


@dataclass(frozen=True)
class Evidence:
    """One thing read: ``source`` (a path, URL or API object) and what it showed."""

    source: str
    observed: str

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "observed": self.observed}


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one target."""

    id: str
    title: str
    status: Status
    severity: Severity
    evidence: list[Evidence] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["evidence"] = [e.as_dict() for e in self.evidence]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            id=str(data["id"]),
            title=str(data.get("title", data["id"])),
            status=data["status"],
            severity=data["severity"],
            evidence=[
                Evidence(str(e["source"]), str(e["observed"])) for e in data.get("evidence", [])
            ],
            reason=str(data.get("reason", "")),
        )


@dataclass
class TargetAudit:
    """Every check of one target, in a fixed order."""

    target: str
    kind: str
    checks: list[CheckResult]
    at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind,
            "at": self.at,
            "checks": [c.as_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetAudit:
        return cls(
            target=str(data["target"]),
            kind=str(data.get("kind", "")),
            at=str(data.get("at", "")),
            checks=[CheckResult.from_dict(c) for c in data.get("checks", [])],
        )

    def status_of(self, check_id: str) -> Status | None:
        return next((c.status for c in self.checks if c.id == check_id), None)

    def failing(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]
