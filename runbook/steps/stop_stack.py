"""stop_stack: ``docker compose down --timeout 0`` through the Engine API.

Every container labelled with the project is killed (timeout 0) and removed, then
the project's networks; verified: nothing of the project is left.

Helm: containment first, destruction second — a deny-all NetworkPolicy isolates the
release's pods, evidence is captured (unless an earlier step of the incident already
did), then the release is uninstalled as ``helm uninstall --no-hooks`` does (its
manifest stored as an artifact first); verified: nothing of the release is left.
"""

from __future__ import annotations

from typing import Any

from core import failpoints
from core.errors import StepFailed
from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from runbook.steps import _helm


@register
class StopStack(Step):
    key = "stop_stack"
    reversible = True
    kinds = frozenset({"compose", "helm"})
    description = "Kill (timeout 0) and remove every container of the stack, then its networks"

    def _project(self, ctx: StepContext) -> str:
        assert ctx.target.compose is not None
        return ctx.target.compose.project

    def plan(self, ctx: StepContext) -> Plan:
        if ctx.target.kind == "helm":
            helm = _helm.config(ctx)
            planned = _helm.stop_plan(ctx)
            return Plan(
                step=self.key,
                target=ctx.incident.target,
                summary=planned["summary"],
                resources=planned["resources"],
                api_calls=planned["api_calls"],
                parameters={
                    "namespace": helm.namespace,
                    "release": helm.release,
                    "kubeconfig": helm.kubeconfig,
                    "context": helm.context,
                    "grace_period_seconds": 0,
                    "no_hooks": True,
                },
            )
        from tasks import compose

        project = self._project(ctx)
        present = sorted(compose.remaining(ctx.clients.docker, project))
        return Plan(
            step=self.key,
            target=ctx.incident.target,
            summary=f"kill (timeout 0) and remove {len(present)} object(s) of compose project {project!r}",
            resources=[f"compose-project:{project}", *present],
            api_calls=[
                "POST /containers/{id}/stop?t=0",
                "DELETE /containers/{id}?force=1",
                "DELETE /networks/{id}",
            ],
            parameters={
                "timeout": 0,
                "docker_host": ctx.target.compose.docker_host if ctx.target.compose else None,
            },
        )

    def check(self, ctx: StepContext) -> str | None:
        if ctx.target.kind == "helm":
            return _helm.stopped_reason(ctx)
        from tasks import compose

        if not compose.remaining(ctx.clients.docker, self._project(ctx)):
            return f"nothing of compose project {self._project(ctx)!r} is left"
        return None

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        if ctx.target.kind == "helm":
            return self._helm_apply(ctx)
        from tasks import compose

        result = compose.stop_project(ctx.clients.docker, self._project(ctx))
        data = {
            "stopped": result.stopped,
            "removed_containers": result.removed_containers,
            "removed_networks": result.removed_networks,
            "elapsed_s": round(result.elapsed_s, 3),
        }
        ctx.record("stack.stopped", data)
        return data

    def _helm_apply(self, ctx: StepContext) -> dict[str, Any]:
        # Isolation and capture only while something of the release still runs: a
        # re-run after a crash late in the uninstall just finishes it.
        out: dict[str, Any] = {}
        if _helm.remaining(ctx):
            out["isolation"] = _helm.isolate(ctx)
            failpoints.reach(self.key, "after_isolate")
            out["capture"] = _helm.capture(ctx, skip_if_captured=True)
            failpoints.reach(self.key, "after_capture")
        out["uninstall"] = _helm.uninstall(ctx)
        return out

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        if ctx.target.kind == "helm":
            left = _helm.remaining(ctx)
            if left:
                raise StepFailed(self.key, f"still present after uninstall: {', '.join(left)}")
            return {"remaining": [], "isolation_lifted": not _helm.isolation_present(ctx)}
        from tasks import compose

        left = compose.remaining(ctx.clients.docker, self._project(ctx))
        if left:
            raise StepFailed(self.key, f"still present after stop: {', '.join(left)}")
        return {"remaining": []}
