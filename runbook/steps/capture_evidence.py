"""capture_evidence: before anything is destroyed, keep what would be lost.

The target's driver captures the workload (Compose: container logs with timestamps,
inspect documents, the proxy config and the fingerprints of the certificates in
``data/``; Helm: both containers' logs of every pod of the release, its objects as
YAML and its Secrets as metadata and key names only); this step adds the tunnel
record and its certificates. Each is stored as an artifact. Bounded by a deadline so
containment is never held up by more than a few seconds; what did not arrive in time
is recorded as missing, not waited for. Re-running after a crash captures only what
the earlier attempt had not stored yet.
"""

from __future__ import annotations

from typing import Any

from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from runbook.steps._evidence import dumps
from targets import base

DEFAULT_DEADLINE_S = 5.0


@register
class CaptureEvidence(Step):
    key = "capture_evidence"
    reversible = True
    needs = frozenset({base.CAPTURE})
    description = "Capture container logs, inspect output, proxy config, tunnel record and certificate fingerprints"

    def _deadline(self, ctx: StepContext) -> float:
        return float(ctx.params.get("deadline_s", DEFAULT_DEADLINE_S))

    def plan(self, ctx: StepContext) -> Plan:
        deadline = self._deadline(ctx)
        tunnel = ctx.target.tunnel.id
        part = ctx.driver.capture_plan(ctx, deadline)
        return self.new_plan(
            ctx,
            summary=f"{part.summary} and the record of tunnel {tunnel} (deadline {deadline:g}s)",
            resources=[*part.resources, f"tunnel:{tunnel}"],
            api_calls=[
                f"GET /v1/tunnels/{tunnel}",
                f"GET /v1/tunnels/{tunnel}/certificates",
                *part.reads,
            ],
            operations=part.operations,
            parameters={"deadline_s": deadline},
        )

    def _already(self, ctx: StepContext) -> set[str]:
        return {r.data.get("subject", "") for r in ctx.step_records("artifact")}

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        have = self._already(ctx)
        result = ctx.driver.capture(ctx, self._deadline(ctx), have)
        tunnel = self._tunnel_record(ctx, have)
        return {"already_stored": sorted(have), **result, "tunnel_record": tunnel}

    def _tunnel_record(self, ctx: StepContext, have: set[str]) -> list[str]:
        if "tunnel-record" in have:
            return []
        from core.errors import McpIrError
        from tasks import tunnels

        tunnel_id = ctx.target.tunnel.id
        try:
            record = tunnels.get_tunnel(ctx.clients.anthropic, tunnel_id)
            certs = tunnels.list_certificates(ctx.clients.anthropic, tunnel_id)
        except McpIrError as exc:
            ctx.record("capture.incomplete", {"tunnel_record": exc.detail})
            return []
        doc = {"tunnel": record.evidence(), "certificates": [c.evidence() for c in certs]}
        ctx.artifact(
            dumps(doc),
            name=f"tunnel-{tunnel_id}.json",
            media_type="application/json",
            subject="tunnel-record",
        )
        return ["tunnel-record"]
