"""Small helpers shared by the check modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from audit.model import CheckResult, Evidence, Status

if TYPE_CHECKING:
    from audit.checks import CheckSpec


def result(
    spec: CheckSpec, status: Status, evidence: list[Evidence], reason: str = ""
) -> CheckResult:
    return CheckResult(spec.id, spec.title, status, spec.severity, evidence, reason)


def worst(statuses: list[Status]) -> Status:
    """fail beats unverifiable beats pass."""
    if "fail" in statuses:
        return "fail"
    if "unverifiable" in statuses:
        return "unverifiable"
    return "pass"
