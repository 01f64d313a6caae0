"""drill_rotate_token: rotate the tunnel token and redeploy it (rotation drill, phase 1).

check → apply → verify:

* check: an earlier run of this incident rotated the token (the API's token id is no
  longer the one recorded before) AND the stack runs with the API's current token.
* apply: record the token id before (once), rotate it (only if that has not happened
  yet in this incident: the API call is not idempotent), then put the current token
  (``reveal_token``) into ``data/tunnel-token`` atomically and re-create cloudflared
  with it. A run killed after the rotation finds the rotated token with
  ``reveal_token`` and finishes without rotating twice.
* verify: both containers run; the fingerprint of the token cloudflared runs with and
  of ``data/tunnel-token`` equal the API's current token's.

Helm (``kind: helm``): the token goes into every credential Secret of the release that
holds one (``<release>``, ``<release>-token``; the other keys are written back as they
were read), and the Deployment is rolled (``kubectl rollout restart``) and waited for
until its new pods are Ready; verify compares the Secrets' token fingerprints with the
API's current token and checks the rollout is complete.

Rollback: when the API refuses the rotation nothing changed and the old token stays
deployed. Once the API has rotated, the old token is dead: the only way back to a
working stack is forward (deploy the new one), which is what a retry does.
"""

from __future__ import annotations

from typing import Any

from core import failpoints
from core.errors import StepFailed
from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from runbook.steps import _drill, _drill_helm

PHASE = "rotate token"


@register
class DrillRotateToken(Step):
    key = "drill_rotate_token"
    reversible = False
    kinds = frozenset({"compose", "helm"})
    description = (
        "Rotate the tunnel token, write it to data/tunnel-token (Compose) or the release's "
        "Secrets (Helm), restart cloudflared / roll the Deployment"
    )

    def plan(self, ctx: StepContext) -> Plan:
        tunnel = ctx.target.tunnel.id
        if _drill_helm.is_helm(ctx):
            resources, calls = _drill_helm.plan_writes(ctx)
            return Plan(
                step=self.key,
                target=ctx.incident.target,
                summary=(
                    f"rotate the token of tunnel {tunnel} (old one stops working for new "
                    "connections), write it to the release's credential Secrets (other keys "
                    "kept), roll the Deployment and wait for new ready pods"
                ),
                resources=[f"tunnel:{tunnel}", *resources],
                api_calls=[
                    f"POST /v1/tunnels/{tunnel}/reveal_token",
                    f"POST /v1/tunnels/{tunnel}/rotate_token",
                    *calls,
                ],
                parameters={"reason": f"rotation drill {ctx.incident.id}"},
            )
        return Plan(
            step=self.key,
            target=ctx.incident.target,
            summary=(
                f"rotate the token of tunnel {tunnel} (old one stops working for new "
                "connections), write it to data/tunnel-token, re-create cloudflared with it"
            ),
            resources=[
                f"tunnel:{tunnel}",
                f"file:{_drill.data_dir(ctx) / 'tunnel-token'}",
                f"container:{_drill.container_name(ctx, _drill.CLOUDFLARED)}",
            ],
            api_calls=[
                f"POST /v1/tunnels/{tunnel}/reveal_token",
                f"POST /v1/tunnels/{tunnel}/rotate_token",
                "POST /containers/{id}/rename",
                "POST /containers/{id}/stop?t=0",
                "POST /containers/create",
                "POST /containers/{id}/start",
                "DELETE /containers/{id}?force=1",
            ],
            parameters={"reason": f"rotation drill {ctx.incident.id}"},
        )

    def _before(self, ctx: StepContext) -> dict[str, Any] | None:
        records = ctx.step_records("drill.token.before")
        return dict(records[0].data) if records else None

    def check(self, ctx: StepContext) -> str | None:
        from tasks import tunnels

        before = self._before(ctx)
        if before is None:
            return None
        current = tunnels.reveal_token(ctx.clients.anthropic, ctx.target.tunnel.id)
        deployed = self._deployed(ctx)
        if current.token_id != before["token_id"] and set(deployed.values()) == {
            current.fingerprint
        }:
            return f"token rotated to {current.token_id} and deployed in an earlier run"
        return None

    def _deployed(self, ctx: StepContext) -> dict[str, str | None]:
        if _drill_helm.is_helm(ctx):
            return _drill_helm.deployed_token_fingerprints(ctx)
        return _drill.deployed_token_fingerprints(ctx)

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import tunnels

        _drill.begin(ctx, PHASE)
        outcome = _drill.PhaseOutcome()
        self._outcome = outcome
        client, tunnel = ctx.clients.anthropic, ctx.target.tunnel.id
        with _drill.failing_phase(ctx, PHASE, outcome, rollback=lambda: self._rollback(ctx)):
            before = self._before(ctx)
            if before is None:
                old = tunnels.reveal_token(client, tunnel)
                before = {"token_id": old.token_id, "fingerprint": old.fingerprint}
                ctx.record("drill.token.before", before)
            current = tunnels.reveal_token(client, tunnel)
            if current.token_id == before["token_id"]:
                failpoints.reach(self.key, "before_rotate")
                current = tunnels.rotate_token(client, tunnel, f"rotation drill {ctx.incident.id}")
                self._rotated = True
                ctx.redactor.add(current.token.get_secret_value())
                ctx.record("tunnel.token_rotated", {**current.evidence(), "previous": before})
                failpoints.reach(self.key, "after_rotate")
            self._rotated = True
            value = current.token.get_secret_value()
            ctx.redactor.add(value)
            if _drill_helm.is_helm(ctx):
                # Rolling update: the old pods serve until the new ones are Ready.
                values = {**_drill_helm.current_values(ctx), "tunnel-token": value}
                written = _drill_helm.write(ctx, values)
                ctx.record(
                    "drill.token.written",
                    {
                        "secrets": written["secrets_written"],
                        "token": current.fingerprint,
                        "restarted": written["restarted"],
                        "pod_template_hash": written["pod_template_hash"],
                    },
                )
            else:
                written = _drill.write_data(ctx, {"tunnel-token": f"{value}\n".encode()})
                ctx.record("drill.token.written", {"files": written})
                outcome.downtime_s = _drill.restart_cloudflared(ctx, value)
        outcome.details = {"token_id": current.token_id, "token": current.fingerprint}
        return {"token_id": current.token_id, "token": current.fingerprint}

    def _rollback(self, ctx: StepContext) -> str:
        if not getattr(self, "_rotated", False):
            self._running(ctx)
            return "nothing to roll back: the token was not rotated; the old token stays deployed and the stack runs"
        return (
            "the old token cannot be restored: the API invalidated it when it rotated; "
            "re-run the drill to deploy the current token"
        )

    def _running(self, ctx: StepContext) -> Any:
        if _drill_helm.is_helm(ctx):
            return _drill_helm.wait_ready(ctx)
        return _drill.stack_running(ctx)

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import tunnels

        outcome = getattr(self, "_outcome", None) or _drill.PhaseOutcome()
        with _drill.failing_phase(ctx, PHASE, outcome):
            running = self._running(ctx)
            current = tunnels.reveal_token(ctx.clients.anthropic, ctx.target.tunnel.id)
            deployed = self._deployed(ctx)
            if not deployed:
                raise StepFailed(self.key, "no deployed token found")
            wrong = {k: v for k, v in deployed.items() if v != current.fingerprint}
            if wrong:
                raise StepFailed(
                    self.key,
                    f"deployed token differs from the API's current token {current.fingerprint}: "
                    + ", ".join(f"{k}={v}" for k, v in sorted(wrong.items())),
                )
        if (
            not ctx.step_records("drill.phase")
            or ctx.step_records("drill.phase")[-1].data.get("status") != "succeeded"
        ):
            outcome.details = {"token_id": current.token_id, "token": current.fingerprint}
            _drill.finish(ctx, PHASE, "succeeded", outcome)
        return {"running": running, "deployed": deployed, "api_token": current.fingerprint}
