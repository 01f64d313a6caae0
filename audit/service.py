"""One audit run over some targets: check each, store each result in the evidence
store, diff it against the previous run and report drift (trail, Slack). Used by
``mcp-ir audit``, the ``posture-audit`` flow (scheduled daily) and the playbook step.

Killed at any point, an audit leaves a valid trail without ``audit.closed``; what it
stored counts as those targets' latest results, and running the audit again simply
audits again (it changes nothing on a target, so there is nothing to repeat or undo).
The failpoint ``posture-audit:after_store`` proves it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.drift import notify_drift
from audit.engine import audit_target
from audit.model import TargetAudit
from audit.store import AuditRun, Drift, new_audit_id
from core import failpoints
from core.redact import Redactor


@dataclass
class AuditOutcome:
    audit_id: str
    results: dict[str, TargetAudit] = field(default_factory=dict)
    drift: dict[str, Drift] = field(default_factory=dict)
    evidence_dir: Path | None = None

    @property
    def failed(self) -> bool:
        return any(r.failing() for r in self.results.values())


def redactor_for(inventory: Any, names: list[str]) -> Redactor:
    from runbook.context import secrets_for

    values: list[str] = []
    for name in names:
        values.extend(secrets_for(inventory.target(name)))
    return Redactor(values)


def run_audit(
    inventory: Any,
    names: list[str],
    evidence_dir: Path,
    *,
    initiator: str,
    trigger: dict[str, Any] | None = None,
    notify: bool = True,
    env: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
    audit_one: Any = None,
) -> AuditOutcome:
    """Audits ``names`` in order under a new audit id. ``audit_one(name)`` overrides
    how one target is audited (the flow runs each as a Prefect task)."""
    for name in names:
        inventory.target(name)  # unknown target: ConfigError before anything runs
    run = AuditRun(evidence_dir, new_audit_id(now), redactor_for(inventory, names))
    run.opened(names, initiator, trigger or {"kind": "manual", "by": initiator})
    outcome = AuditOutcome(run.id, evidence_dir=Path(evidence_dir))
    for name in names:
        if audit_one is not None:
            result = audit_one(name)
        else:
            result = audit_target(inventory, name, evidence_dir, now=now, env=env)
        drift, _ = run.store(result)
        failpoints.reach("posture-audit", "after_store")
        outcome.results[name] = result
        outcome.drift[name] = drift
        if notify:
            notify_drift(inventory, evidence_dir, run, result, drift, initiator=initiator)
    run.closed(
        {
            "targets": {
                n: {
                    s: sum(1 for c in r.checks if c.status == s)
                    for s in ("pass", "fail", "unverifiable", "manual")
                }
                for n, r in outcome.results.items()
            },
            "drifted": sorted(n for n, d in outcome.drift.items() if d.drifted),
        }
    )
    return outcome
