"""restore_service: start the stack again with the NEW credentials, only after the
log review was approved.

Defence in depth: besides the playbook's order, ``check`` and ``apply`` refuse
unless the trail shows ``review_logs`` passed its gate (``gate.passed`` or
``gate.auto``) and succeeded. The target's driver restores: Compose re-creates the
containers from the inspect documents ``capture_evidence`` stored, with the token in
``data/tunnel-token``; Helm re-creates the release's objects from the manifest
``stop_stack`` stored and waits for ready pods.
"""

from __future__ import annotations

from typing import Any

from core.errors import StepFailed
from runbook.context import StepContext
from runbook.registry import DriverCalls, DriverStep, register
from targets import base


@register
class RestoreService(DriverStep):
    key = "restore_service"
    reversible = True
    needs = frozenset({base.RESTORE})
    description = "Start the stack again with the new credentials, after the log review passed"
    calls = DriverCalls(
        plan="restore_plan", check="restored_reason", apply="restore", verify="verify_restored"
    )

    def _require_review(self, ctx: StepContext) -> None:
        records = ctx.trail.records()
        gate = [
            r for r in records if r.step == "review_logs" and r.kind in ("gate.passed", "gate.auto")
        ]
        done = [r for r in records if r.step == "review_logs" and r.kind == "step.succeeded"]
        if not gate or not done:
            missing = "its gate has not passed" if not gate else "it has not succeeded"
            raise StepFailed(
                self.key,
                f"refusing to restore: review_logs must be approved and succeed first ({missing})",
            )

    def check(self, ctx: StepContext) -> str | None:
        self._require_review(ctx)
        return super().check(ctx)

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        self._require_review(ctx)
        return super().apply(ctx)
