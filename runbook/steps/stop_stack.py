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

from runbook.registry import DriverCalls, DriverStep, register
from targets import base


@register
class StopStack(DriverStep):
    key = "stop_stack"
    reversible = True
    needs = frozenset({base.STOP, base.REMAINING})
    description = "Kill (timeout 0) and remove every container of the stack, then its networks"
    calls = DriverCalls(
        plan="stop_plan", check="stopped_reason", apply="stop", verify="verify_stopped"
    )
