"""stop_stack: ``docker compose down --timeout 0`` through the Engine API.

Every container labelled with the project is killed (timeout 0) and removed, then
the project's networks; verified: nothing of the project is left.
"""

from __future__ import annotations

from typing import Any

from runbook.context import StepContext
from runbook.errors import StepFailed
from runbook.registry import Plan, Step, register


@register
class StopStack(Step):
    key = "stop_stack"
    reversible = True
    kinds = frozenset({"compose"})
    description = "Kill (timeout 0) and remove every container of the stack, then its networks"

    def _project(self, ctx: StepContext) -> str:
        assert ctx.target.compose is not None
        return ctx.target.compose.project

    def plan(self, ctx: StepContext) -> Plan:
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
        from tasks import compose

        if not compose.remaining(ctx.clients.docker, self._project(ctx)):
            return f"nothing of compose project {self._project(ctx)!r} is left"
        return None

    def apply(self, ctx: StepContext) -> dict[str, Any]:
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

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import compose

        left = compose.remaining(ctx.clients.docker, self._project(ctx))
        if left:
            raise StepFailed(self.key, f"still present after stop: {', '.join(left)}")
        return {"remaining": []}
