"""verify_teardown: prove a retired stack left nothing behind (read-only).

Checked, and all problems reported together:

* nothing of the workload is left (the driver's ``remaining``: Compose containers and
  networks of the project; Helm objects of the release, pods included);
* no credential material (Compose: no file in ``data/``; Helm: none of the three
  credential Secrets);
* the tunnel is archived (``archived_at`` set, so its token and hostname are dead).

The result is recorded as ``teardown.verified`` (names only, never contents).
"""

from __future__ import annotations

from typing import Any

from core.errors import StepFailed
from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from targets import base


@register
class VerifyTeardown(Step):
    key = "verify_teardown"
    reversible = True
    needs = frozenset({base.REMAINING})
    description = "Check: no container or pod, tunnel archived, no secret material left"

    def plan(self, ctx: StepContext) -> Plan:
        tunnel = ctx.target.tunnel.id
        return self.new_plan(
            ctx,
            summary="read-only check: no container/pod, tunnel archived, no secret material left",
            resources=[*ctx.driver.resources(ctx), f"tunnel:{tunnel}"],
            api_calls=[f"GET /v1/tunnels/{tunnel}"],
            parameters={},
        )

    def _problems(self, ctx: StepContext) -> tuple[list[str], dict[str, Any]]:
        from tasks import tunnels

        problems, found = ctx.driver.teardown_leftovers(ctx)
        record = tunnels.get_tunnel(ctx.clients.anthropic, ctx.target.tunnel.id)
        found["tunnel_archived_at"] = record.archived_at.isoformat() if record.archived_at else None
        if not record.archived:
            problems.append(f"tunnel {record.id} is not archived")
        return problems, found

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        problems, found = self._problems(ctx)
        ctx.record("teardown.verified", {"ok": not problems, "problems": problems, **found})
        if problems:
            raise StepFailed(self.key, "; ".join(problems))
        return found

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        problems, found = self._problems(ctx)
        if problems:
            raise StepFailed(self.key, "; ".join(problems))
        return found
