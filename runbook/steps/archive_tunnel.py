"""archive_tunnel: archive the tunnel (invalidates its token, retires its hostname);
verified with ``retrieve``: ``archived_at`` is set. Archiving is idempotent on the
server, and the check skips the call when the tunnel is already archived."""

from __future__ import annotations

from typing import Any

from core.errors import StepFailed
from core.operations import Operation
from runbook.context import StepContext
from runbook.registry import Plan, Step, register


@register
class ArchiveTunnel(Step):
    key = "archive_tunnel"
    reversible = False
    description = "Archive the tunnel through the Tunnels API and verify archived_at"

    def plan(self, ctx: StepContext) -> Plan:
        tunnel = ctx.target.tunnel.id
        return self.new_plan(
            ctx,
            summary=f"archive tunnel {tunnel} (irreversible: invalidates its token and hostname)",
            resources=[f"tunnel:{tunnel}"],
            api_calls=[f"GET /v1/tunnels/{tunnel}"],
            operations=[Operation("anthropic", "POST", f"/v1/tunnels/{tunnel}/archive")],
            parameters={},
        )

    def check(self, ctx: StepContext) -> str | None:
        from tasks import tunnels

        record = tunnels.get_tunnel(ctx.clients.anthropic, ctx.target.tunnel.id)
        if record.archived:
            return f"tunnel {record.id} already archived at {record.archived_at.isoformat()}"
        return None

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import tunnels

        record = tunnels.archive_tunnel(ctx.clients.anthropic, ctx.target.tunnel.id)
        ctx.record("tunnel.archived", record.evidence())
        return {"tunnel": record.evidence()}

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import tunnels

        record = tunnels.get_tunnel(ctx.clients.anthropic, ctx.target.tunnel.id)
        if not record.archived:
            raise StepFailed(
                self.key, f"tunnel {record.id} reports archived_at = null after archive"
            )
        return {"archived_at": record.archived_at.isoformat()}
