"""drill_rotate_token: rotate the tunnel token and redeploy it (rotation drill, phase 1).

check → apply → verify:

* check: an earlier run of this incident rotated the token (the API's token id is no
  longer the one recorded before) AND the stack runs with the API's current token.
* apply: record the token id before (once), rotate it (only if that has not happened
  yet in this incident: the API call is not idempotent), then hand the current token
  (``reveal_token``) to the target's driver, which writes it and redeploys (Compose:
  ``data/tunnel-token`` atomically, cloudflared re-created with it; Helm: every
  credential Secret that holds a token, other keys kept, the Deployment rolled and
  waited for). A run killed after the rotation finds the rotated token with
  ``reveal_token`` and finishes without rotating twice.
* verify: the workload runs; every deployed token fingerprint (the driver's) equals
  the API's current token's.

Rollback: when the API refuses the rotation nothing changed and the old token stays
deployed. Once the API has rotated, the old token is dead: the only way back to a
working stack is forward (deploy the new one), which is what a retry does.
"""

from __future__ import annotations

from typing import Any

from core import failpoints
from core.errors import StepFailed
from core.operations import Operation
from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from runbook.steps import _drill
from targets import base

PHASE = "rotate token"


@register
class DrillRotateToken(Step):
    key = "drill_rotate_token"
    reversible = False
    needs = frozenset({base.READ_CREDENTIALS, base.WRITE_CREDENTIALS})
    description = (
        "Rotate the tunnel token, write it to data/tunnel-token (Compose) or the release's "
        "Secrets (Helm), restart cloudflared / roll the Deployment"
    )

    def plan(self, ctx: StepContext) -> Plan:
        tunnel = ctx.target.tunnel.id
        part = ctx.driver.write_credentials_plan(ctx, ("tunnel-token",))
        where = ctx.driver.credential_source(ctx, "tunnel-token")
        return self.new_plan(
            ctx,
            summary=(
                f"rotate the token of tunnel {tunnel} (old one stops working for new "
                f"connections), write it to {where} (other credentials kept) and redeploy it"
            ),
            resources=[f"tunnel:{tunnel}", *part.resources],
            operations=[
                Operation("anthropic", "POST", f"/v1/tunnels/{tunnel}/reveal_token"),
                Operation("anthropic", "POST", f"/v1/tunnels/{tunnel}/rotate_token"),
                *part.operations,
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
        deployed = ctx.driver.deployed_token_fingerprints(ctx)
        if current.token_id != before["token_id"] and set(deployed.values()) == {
            current.fingerprint
        }:
            return f"token rotated to {current.token_id} and deployed in an earlier run"
        return None

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
            written = ctx.driver.write_credentials(ctx, {"tunnel-token": f"{value}\n"})
            ctx.record("drill.token.written", {**written.evidence, "token": current.fingerprint})
            outcome.downtime_s = written.downtime_s
        outcome.details = {"token_id": current.token_id, "token": current.fingerprint}
        return {"token_id": current.token_id, "token": current.fingerprint}

    def _rollback(self, ctx: StepContext) -> str:
        if not getattr(self, "_rotated", False):
            ctx.driver.running(ctx)
            return "nothing to roll back: the token was not rotated; the old token stays deployed and the stack runs"
        return (
            "the old token cannot be restored: the API invalidated it when it rotated; "
            "re-run the drill to deploy the current token"
        )

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import tunnels

        outcome = getattr(self, "_outcome", None) or _drill.PhaseOutcome()
        with _drill.failing_phase(ctx, PHASE, outcome):
            running = ctx.driver.running(ctx)
            current = tunnels.reveal_token(ctx.clients.anthropic, ctx.target.tunnel.id)
            deployed = ctx.driver.deployed_token_fingerprints(ctx)
            if not deployed:
                raise StepFailed(self.key, "no deployed token found")
            wrong = {k: v for k, v in deployed.items() if v != current.fingerprint}
            if wrong:
                raise StepFailed(
                    self.key,
                    f"deployed token differs from the API's current token {current.fingerprint}: "
                    + ", ".join(f"{k}={v}" for k, v in sorted(wrong.items())),
                )
        outcome.details = {"token_id": current.token_id, "token": current.fingerprint}
        _drill.succeeded(ctx, PHASE, outcome)
        return {"running": running, "deployed": deployed, "api_token": current.fingerprint}
