"""drill_rotate_ca: rotate the tunnel's CA through its two certificate slots (rotation
drill, optional phase 3, ``mcp-ir drill --rotate-ca``).

Zero-downtime order (FACTS §2): register the new CA in the free slot (the old one
keeps working), redeploy ``ca.*`` and a server certificate signed by the new CA
through the target's driver (Compose: ``data/``, the proxy hot-reloads; Helm: the
release's Secrets, the Deployment rolled), check the served certificate chains to the
new CA, then archive the old CA's certificate.

* check: not requested; or this incident's new CA is deployed, served and the old one
  archived.
* apply: record the old CA once; archive any CA an earlier, killed run of this
  incident registered but never deployed (its key died with that run); refuse
  before any change when no slot is free.
* verify: served certificate chains to ``data/ca.crt``, an active CA; the old CA's
  certificate is archived; both containers run.

Rollback: the API refuses the new CA → nothing changed, the old files and the
running stack are kept (and checked). The new chain does not verify after the
files were written → the old files are written back and the new CA is archived.
"""

from __future__ import annotations

from typing import Any

from core import failpoints
from core.errors import ConfigError, StepFailed
from core.operations import Operation
from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from runbook.steps import _drill
from targets import base

PHASE = "rotate CA"
FILES = ("ca.crt", "ca.key", "tls.crt", "tls.key")


def _enabled(ctx: StepContext) -> bool:
    value = ctx.params.get("enabled", False)
    if not isinstance(value, bool):
        raise ConfigError(f"params.enabled: must be true or false (got {value!r})")
    return value


@register
class DrillRotateCa(Step):
    key = "drill_rotate_ca"
    reversible = False
    needs = frozenset({base.READ_CREDENTIALS, base.WRITE_CREDENTIALS, base.SERVED_CERTIFICATE})
    description = "Rotate the tunnel CA through the two slots: add new, redeploy, archive old"

    def plan(self, ctx: StepContext) -> Plan:
        tunnel = ctx.target.tunnel.id
        if not _enabled(ctx):
            return self.new_plan(
                ctx,
                summary="not requested: the CA is rotated only with --rotate-ca",
                parameters={"enabled": False},
            )
        part = ctx.driver.write_credentials_plan(ctx, FILES)
        old = [
            f"ca-certificate:{cid}" for cid in sorted(_drill.active_ca_fingerprints(ctx).values())
        ]
        return self.new_plan(
            ctx,
            summary=(
                f"register a new CA on tunnel {tunnel} (second slot), deploy it and a server "
                f"certificate from it ({ctx.driver.credential_source(ctx, 'ca.crt')}, ...), "
                "verify the served chain, archive the old CA"
            ),
            resources=[f"tunnel:{tunnel}", *old, *part.resources],
            api_calls=[f"GET /v1/tunnels/{tunnel}/certificates"],
            operations=[
                Operation("anthropic", "POST", f"/v1/tunnels/{tunnel}/certificates"),
                Operation(
                    "anthropic",
                    "POST",
                    f"/v1/tunnels/{tunnel}/certificates/{{old_certificate_id}}/archive",
                ),
                *part.operations,
            ],
            parameters={"enabled": True, "key_type": "ec-p256", "server_days": 90},
        )

    def check(self, ctx: StepContext) -> str | None:
        if not _enabled(ctx):
            return "not requested (pass --rotate-ca to rotate the CA)"
        deployed = ctx.step_records("drill.ca.old_archived")
        if deployed and not self._problems(ctx):
            return "CA rotated, deployed and the old one archived in an earlier run"
        return None

    def _current_ca(self, ctx: StepContext) -> str:
        from tasks import certificates

        return certificates.cert_fingerprint(
            ctx.driver.require_credentials(ctx, "ca.crt")["ca.crt"]
        )

    def _problems(self, ctx: StepContext) -> list[str]:
        active = _drill.active_ca_fingerprints(ctx)
        problems = _drill.served_chain_problems(ctx, set(active))
        before = ctx.step_records("drill.ca.before")
        if before and before[0].data["fingerprint"] in active:
            problems.append(f"the old CA {before[0].data['certificate_id']} is still active")
        if before and self._current_ca(ctx) == before[0].data["fingerprint"]:
            where = ctx.driver.credential_source(ctx, "ca.crt")
            problems.append(f"{where} still holds the old CA")
        return problems

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        _drill.begin(ctx, PHASE)
        self._outcome = _drill.PhaseOutcome()
        with _drill.failing_phase(ctx, PHASE, self._outcome, rollback=lambda: self._rollback(ctx)):
            return self._rotate(ctx)

    def _rotate(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import certificates, tunnels

        client, tunnel = ctx.clients.anthropic, ctx.target.tunnel.id
        ctx.driver.require_credentials(ctx, "ca.crt", "tls.crt", "tls.key")
        current = ctx.driver.read_credentials(ctx)
        current_fp = certificates.cert_fingerprint(current["ca.crt"])
        active = _drill.active_ca_fingerprints(ctx)
        before = ctx.step_records("drill.ca.before")
        if not before:
            if current_fp not in active:
                where = ctx.driver.credential_source(ctx, "ca.crt")
                raise StepFailed(
                    self.key, f"the current CA {where} is not an active CA of the tunnel"
                )
            ctx.record(
                "drill.ca.before",
                {"fingerprint": current_fp, "certificate_id": active[current_fp]},
            )
            before = ctx.step_records("drill.ca.before")
        old_fp, old_id = before[0].data["fingerprint"], before[0].data["certificate_id"]
        if current_fp == old_fp:
            self._saved = {k: current[k] for k in FILES if k in current}
            # A CA a killed run registered but never deployed: its key is gone, free the slot.
            for rec in ctx.step_records("drill.ca.registered"):
                orphan = rec.data["fingerprint"]
                if orphan in active and orphan != old_fp:
                    tunnels.archive_certificate(client, tunnel, active.pop(orphan))
                    ctx.record("drill.ca.orphan_archived", {"fingerprint": orphan})
            if len(active) >= 2:
                raise StepFailed(
                    self.key,
                    f"both CA slots of tunnel {tunnel} are in use ({', '.join(sorted(active.values()))}); "
                    "a CA rotation needs a free slot",
                )
            new_ca = certificates.new_ca(f"mcp-ir drill {ctx.incident.id}")
            key_pem = new_ca.key_pem.get_secret_value()
            ctx.redactor.add(key_pem)
            registered = tunnels.register_ca(client, tunnel, new_ca.cert_pem)
            self._registered_id = registered.id
            ctx.record("drill.ca.registered", registered.evidence())
            failpoints.reach(self.key, "after_register")
            server = certificates.server_cert(new_ca, _drill.domain(ctx))
            server_key = server.key_pem.get_secret_value()
            ctx.redactor.add(server_key)
            written = ctx.driver.write_credentials(
                ctx,
                {
                    "ca.crt": new_ca.cert_pem,
                    "ca.key": key_pem,
                    "tls.crt": server.cert_pem,
                    "tls.key": server_key,
                },
            )
            ctx.record("drill.ca.deployed", {"ca": new_ca.fingerprint, **written.evidence})
            active = _drill.active_ca_fingerprints(ctx)
        problems = _drill.served_chain_problems(ctx, set(active))
        if problems:
            raise StepFailed(self.key, "new chain does not verify: " + "; ".join(problems))
        if old_fp in active:
            archived = tunnels.archive_certificate(client, tunnel, old_id)
            ctx.record("drill.ca.old_archived", archived.evidence())
        elif not ctx.step_records("drill.ca.old_archived"):
            ctx.record("drill.ca.old_archived", {"id": old_id, "already": True})
        # The old CA is archived: there is nothing to go back to any more.
        self._saved, self._registered_id = None, None
        self._point_of_no_return = True
        return {
            "old": old_id,
            "new_ca": self._current_ca(ctx),
        }

    def _rollback(self, ctx: StepContext) -> str:
        from tasks import tunnels

        saved = getattr(self, "_saved", None)
        registered = getattr(self, "_registered_id", None)
        if getattr(self, "_point_of_no_return", False) or (
            not registered and ctx.step_records("drill.ca.deployed")
        ):
            ctx.driver.running(ctx)
            return "no rollback: the new CA is deployed and the old one archived; the stack runs"
        if not registered:
            ctx.driver.running(ctx)
            return (
                "rolled back: nothing was changed — kept the old CA, its deployed ca.* and "
                "tls.* and the running stack"
            )
        actions = []
        if saved:
            ctx.driver.write_credentials(ctx, saved)
            actions.append("restored the old ca.* and tls.*")
        tunnels.archive_certificate(ctx.clients.anthropic, ctx.target.tunnel.id, registered)
        actions.append(f"archived the new CA {registered}")
        ctx.driver.running(ctx)
        return "rolled back: " + ", ".join(actions) + "; the stack runs"

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        if not _enabled(ctx):
            return {"enabled": False}
        outcome = getattr(self, "_outcome", None) or _drill.PhaseOutcome()
        with _drill.failing_phase(ctx, PHASE, outcome):
            running = ctx.driver.running(ctx)
            problems = self._problems(ctx)
            if problems:
                raise StepFailed(self.key, "; ".join(problems))
        _drill.succeeded(ctx, PHASE, outcome)
        return {"running": running}
