"""stop_stack: containment — the target's driver stops and removes the workload.

Compose: ``docker compose down --timeout 0`` through the Engine API (every container
of the project killed and removed, then its networks). Helm: the release's pods are
isolated by their effective NetworkPolicy set (every policy selecting them captured,
allowing ones removed or narrowed, a deny-all added, the result verified), evidence is
captured (unless an earlier step already did), the pods are deleted to cut open
connections, then the release is uninstalled as ``helm uninstall --no-hooks`` does (its
manifest stored first). Verified, polling while garbage collection finishes: nothing
of the workload is left.
"""

from __future__ import annotations

from typing import Any

from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from targets import base


@register
class StopStack(Step):
    key = "stop_stack"
    reversible = True
    needs = frozenset({base.STOP, base.REMAINING})
    description = "Kill (timeout 0) and remove every container of the stack, then its networks"

    def plan(self, ctx: StepContext) -> Plan:
        return self.planned(ctx, ctx.driver.stop_plan(ctx))

    def check(self, ctx: StepContext) -> str | None:
        return ctx.driver.stopped_reason(ctx)

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        return ctx.driver.stop(ctx)

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        return ctx.driver.verify_stopped(ctx)
