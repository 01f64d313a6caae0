"""capture_evidence: before anything is destroyed, keep what would be lost.

Container logs (with timestamps), inspect documents, the proxy config, the tunnel
record and the certificate fingerprints, each stored as an artifact. On Helm targets:
both containers' logs of every pod of the release (timestamps, ``previous`` logs), the
Deployment, ReplicaSets, Pods, Events, NetworkPolicies, Jobs and CronJobs as YAML, and
the release's Secrets as metadata and key names only (``runbook/steps/_helm.py``).
Bounded by a deadline so containment is never held up by more than a few seconds; what did not
arrive in time is recorded as missing, not waited for. Re-running after a crash
captures only what the earlier attempt had not stored yet.
"""

from __future__ import annotations

from typing import Any

from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from runbook.steps import _helm
from runbook.steps._evidence import dumps, scrub_inspect

DEFAULT_DEADLINE_S = 5.0
_CERT_FILES = ("ca.crt", "tls.crt")


@register
class CaptureEvidence(Step):
    key = "capture_evidence"
    reversible = True
    kinds = frozenset({"compose", "helm"})
    description = "Capture container logs, inspect output, proxy config, tunnel record and certificate fingerprints"

    def plan(self, ctx: StepContext) -> Plan:
        deadline = float(ctx.params.get("deadline_s", DEFAULT_DEADLINE_S))
        if ctx.target.kind == "helm":
            return self._helm_plan(ctx, deadline)
        compose = ctx.target.compose
        assert compose is not None
        tunnel = ctx.target.tunnel.id
        return Plan(
            step=self.key,
            target=ctx.incident.target,
            summary=f"capture logs, inspect and config of compose project {compose.project!r} "
            f"and the record of tunnel {tunnel} (deadline {deadline:g}s)",
            resources=[
                f"compose-project:{compose.project}",
                f"tunnel:{tunnel}",
                f"dir:{compose.data_dir}",
            ],
            api_calls=[
                f"GET /v1/tunnels/{tunnel}",
                f"GET /v1/tunnels/{tunnel}/certificates",
                "GET /containers/json (label com.docker.compose.project)",
                "GET /containers/{id}/logs?timestamps=1",
                "GET /containers/{id}/json",
                "GET /containers/{proxy}/archive?path=/etc/mcp-gateway/config.yaml",
            ],
            parameters={"deadline_s": deadline},
        )

    def _helm_plan(self, ctx: StepContext, deadline: float) -> Plan:
        helm = _helm.config(ctx)
        tunnel = ctx.target.tunnel.id
        resources, calls = _helm.capture_plan(ctx)
        return Plan(
            step=self.key,
            target=ctx.incident.target,
            summary=f"capture logs, objects and Secret key names of Helm release "
            f"{helm.release!r} in namespace {helm.namespace!r} and the record of tunnel "
            f"{tunnel} (deadline {deadline:g}s)",
            resources=[*resources, f"tunnel:{tunnel}"],
            api_calls=[
                f"GET /v1/tunnels/{tunnel}",
                f"GET /v1/tunnels/{tunnel}/certificates",
                *calls,
            ],
            parameters={"deadline_s": deadline},
        )

    def _already(self, ctx: StepContext) -> set[str]:
        return {r.data.get("subject", "") for r in ctx.step_records("artifact")}

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        if ctx.target.kind == "helm":
            result = _helm.capture(ctx)
            have = self._already(ctx)
            return {**result, "tunnel_record": self._tunnel_record(ctx, have)}
        from tasks import compose

        compose_cfg = ctx.target.compose
        assert compose_cfg is not None
        deadline = float(ctx.params.get("deadline_s", DEFAULT_DEADLINE_S))
        have = self._already(ctx)
        stored: list[str] = []
        result = compose.capture(ctx.clients.docker, compose_cfg.project, deadline_s=deadline)
        for c in result.containers:
            if f"logs:{c.name}" not in have:
                ctx.artifact(
                    c.logs, name=f"{c.name}.log", subject=f"logs:{c.name}", partial=c.partial
                )
                stored.append(f"logs:{c.name}")
            if f"inspect:{c.name}" not in have:
                ctx.artifact(
                    dumps(scrub_inspect(c.inspect)),
                    name=f"{c.name}.inspect.json",
                    media_type="application/json",
                    subject=f"inspect:{c.name}",
                )
                stored.append(f"inspect:{c.name}")
        if result.proxy_config is not None and "proxy-config" not in have:
            ctx.artifact(
                result.proxy_config,
                name="mcp-proxy-config.yaml",
                media_type="application/yaml",
                subject="proxy-config",
            )
            stored.append("proxy-config")
        if result.timed_out or result.errors:
            ctx.record(
                "capture.incomplete", {"timed_out": result.timed_out, "errors": result.errors}
            )
        stored += self._tunnel_record(ctx, have)
        stored += self._local_certs(ctx, have)
        return {
            "stored": stored,
            "already_stored": sorted(have),
            "containers": [c.name for c in result.containers],
            "timed_out": result.timed_out,
            "elapsed_s": round(result.elapsed_s, 3),
        }

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

    def _local_certs(self, ctx: StepContext, have: set[str]) -> list[str]:
        if "local-certificates" in have or ctx.target.compose is None:
            return []
        from tasks.tunnels import pem_fingerprint

        found: dict[str, str] = {}
        for name in _CERT_FILES:
            path = ctx.target.compose.data_dir / name
            try:
                found[name] = pem_fingerprint(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                found[name] = f"unreadable: {type(exc).__name__}"
        ctx.artifact(
            dumps(found),
            name="certificate-fingerprints.json",
            media_type="application/json",
            subject="local-certificates",
        )
        return ["local-certificates"]
