"""Step ``audit_posture`` (playbook ``posture-audit``): the hardening audit of the
incident's target, read-only. The result goes to the audit store (``audit.store``)
and a summary with the drift into this run's trail."""

from __future__ import annotations

from typing import Any

from runbook.context import StepContext
from runbook.registry import Plan, Step, register


@register
class AuditPosture(Step):
    key = "audit_posture"
    reversible = True  # it changes nothing
    description = "hardening audit of the target (read-only)"

    def plan(self, ctx: StepContext) -> Plan:
        from audit.engine import checks_for

        checks = checks_for(ctx.target)
        return self.new_plan(
            ctx,
            summary=f"read-only hardening audit of {ctx.incident.target}: {len(checks)} checks",
            resources=[f"check:{c}" for c in checks],
            api_calls=[],  # no mutating call
            parameters={},
        )

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        from audit.service import run_audit

        evidence_dir = ctx.trail.dir.parent
        outcome = run_audit(
            ctx.inventory,
            [ctx.incident.target],
            evidence_dir,
            initiator=ctx.incident.initiator,
            trigger={"kind": "playbook", "incident": ctx.incident.id},
        )
        result = outcome.results[ctx.incident.target]
        drift = outcome.drift[ctx.incident.target]
        summary = {
            "audit_id": outcome.audit_id,
            "checks": {c.id: c.status for c in result.checks},
            "drift": [c.id for c in drift.new_failures],
        }
        ctx.record("audit.summary", summary)
        return summary
