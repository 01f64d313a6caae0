"""verify_teardown: prove a retired stack left nothing behind (read-only).

Checked, and all problems reported together:

* no container (Compose: nothing labelled with the project; Helm: nothing of the
  release, pods included);
* the tunnel is archived (``archived_at`` set, so its token and hostname are dead);
* no secret material: Compose ``data/`` holds no file; Helm: none of the three
  credential Secrets exists.

The result is recorded as ``teardown.verified`` (names only, never contents).
"""

from __future__ import annotations

from typing import Any

from core.errors import StepFailed
from runbook.context import StepContext
from runbook.registry import Plan, Step, register


@register
class VerifyTeardown(Step):
    key = "verify_teardown"
    reversible = True
    kinds = frozenset({"compose", "helm"})
    description = "Check: no container or pod, tunnel archived, no secret material left"

    def plan(self, ctx: StepContext) -> Plan:
        tunnel = ctx.target.tunnel.id
        if ctx.target.kind == "helm":
            helm = ctx.target.helm
            assert helm is not None
            where = [f"helm-release:{helm.namespace}/{helm.release}"]
        else:
            compose = ctx.target.compose
            assert compose is not None
            where = [f"compose-project:{compose.project}", f"dir:{compose.data_dir}"]
        return Plan(
            step=self.key,
            target=ctx.incident.target,
            summary="read-only check: no container/pod, tunnel archived, no secret material left",
            resources=[*where, f"tunnel:{tunnel}"],
            api_calls=[f"GET /v1/tunnels/{tunnel}"],
            parameters={},
        )

    def _problems(self, ctx: StepContext) -> tuple[list[str], dict[str, Any]]:
        from tasks import tunnels

        problems: list[str] = []
        found: dict[str, Any] = {}
        if ctx.target.kind == "helm":
            left, secrets = self._helm(ctx)
            found["objects"], found["secrets"] = left, secrets
            problems += [f"still in the cluster: {x}" for x in left]
            problems += [f"credential Secret still present: {x}" for x in secrets]
        else:
            from tasks import compose, credential_files

            cfg = ctx.target.compose
            assert cfg is not None
            left = compose.remaining(ctx.clients.docker, cfg.project)
            files = sorted(credential_files.read_fingerprints(cfg.data_dir))
            found["containers"], found["data_files"] = left, files
            problems += [f"still present: {x}" for x in left]
            problems += [f"secret file still in data/: {f}" for f in files]
        record = tunnels.get_tunnel(ctx.clients.anthropic, ctx.target.tunnel.id)
        found["tunnel_archived_at"] = record.archived_at.isoformat() if record.archived_at else None
        if not record.archived:
            problems.append(f"tunnel {record.id} is not archived")
        return problems, found

    def _helm(self, ctx: StepContext) -> tuple[list[str], list[str]]:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        from runbook.steps import _helm

        cfg = _helm.config(ctx)
        core = client.CoreV1Api(ctx.clients.kubernetes)
        present = []
        for name in (cfg.release, f"{cfg.release}-token", f"{cfg.release}-cert"):
            try:
                core.read_namespaced_secret(name, cfg.namespace)
                present.append(f"{cfg.namespace}/{name}")
            except ApiException as exc:
                if exc.status != 404:
                    raise StepFailed(
                        self.key, f"reading Secret {name}: HTTP {exc.status}"
                    ) from None
        return _helm.remaining(ctx), present

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
