"""drill_renew_server_cert: renew the proxy's server certificate (rotation drill, phase 2).

As ``setup renew-cert`` does (FACTS §2: no API call): a new key and certificate signed
directly by the CURRENT CA, SAN ``*.<domain>``, 90 days, written through the target's
driver (Compose: ``data/tls.crt`` / ``data/tls.key`` atomically, the proxy hot-reloads
``tls.cert_file``; Helm: ``tls.crt`` / ``tls.key`` of every credential Secret that holds
them, other keys kept, the Deployment rolled and waited for).

The current CA is the deployed ``ca.crt``; its key is where the driver keeps it
(Compose: ``data/ca.key``; Helm: the Secret's ``ca.key``, else
``aws.secrets_manager.ca_secret_id``); when it is not available the phase fails before
changing anything.

* check: this incident already renewed it and that certificate is the one served.
* apply: refuse before any change if the current CA is not registered on the tunnel
  (a certificate from it would be refused); keep the old pair in memory; write.
* verify: every certificate the workload serves is the renewed one and chains to the
  deployed ``ca.crt``, which is an active CA of the tunnel; the workload runs.

Rollback: if verification fails, the old pair is written back and the workload checked.
"""

from __future__ import annotations

from typing import Any

from core import failpoints
from core.errors import ConfigError, StepFailed
from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from runbook.steps import _drill
from targets import base

PHASE = "renew server certificate"
FILES = ("tls.crt", "tls.key")


def _days(ctx: StepContext) -> int:
    days = ctx.params.get("days", 90)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 397:
        raise ConfigError(f"params.days: must be a number of days from 1 to 397 (got {days!r})")
    return days


@register
class DrillRenewServerCert(Step):
    key = "drill_renew_server_cert"
    reversible = True
    needs = frozenset({base.READ_CREDENTIALS, base.WRITE_CREDENTIALS, base.SERVED_CERTIFICATE})
    description = "Renew the server certificate from the current CA; the proxy hot-reloads it"

    def plan(self, ctx: StepContext) -> Plan:
        tunnel = ctx.target.tunnel.id
        part = ctx.driver.write_credentials_plan(ctx, FILES)
        dom = _drill.domain(ctx)
        driver = ctx.driver
        return self.new_plan(
            ctx,
            summary=(
                f"issue a {_days(ctx)}-day server certificate for *.{dom} signed by the "
                f"current CA ({driver.credential_source(ctx, 'ca.crt')}), write "
                f"{driver.credential_source(ctx, 'tls.crt')} and tls.key (other credentials "
                "kept) and redeploy them (no API change)"
            ),
            resources=part.resources,
            api_calls=[f"GET /v1/tunnels/{tunnel}/certificates"],
            operations=part.operations,
            parameters={"days": _days(ctx), "san": f"*.{dom}"},
        )

    def check(self, ctx: StepContext) -> str | None:
        from tasks import certificates

        renewed = ctx.step_records("drill.cert.renewed")
        if not renewed:
            return None
        served = ctx.driver.served_certificates(ctx)
        fp = renewed[-1].data["fingerprint"]
        if served and {certificates.cert_fingerprint(p) for p in served.values()} == {fp}:
            return f"server certificate {fp[:16]}… renewed and served since an earlier run"
        return None

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        _drill.begin(ctx, PHASE)
        self._outcome = _drill.PhaseOutcome()
        with _drill.failing_phase(ctx, PHASE, self._outcome, rollback=lambda: self._rollback(ctx)):
            return self._renew(ctx)

    def _renew(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import certificates

        driver = ctx.driver
        driver.require_credentials(ctx, "ca.crt", *FILES)
        current = driver.read_credentials(ctx)
        key, source = driver.ca_key(ctx, current)
        ca = certificates.load_ca(current["ca.crt"], key)
        if ca.fingerprint not in _drill.active_ca_fingerprints(ctx):
            raise StepFailed(
                self.key,
                f"the current CA {driver.credential_source(ctx, 'ca.crt')} "
                f"({ca.fingerprint[:16]}…) is not an active CA of tunnel "
                f"{ctx.target.tunnel.id}: a certificate from it would be refused",
            )
        self._saved = {k: current[k] for k in FILES}
        ctx.record(
            "drill.cert.before",
            {"fingerprint": certificates.cert_fingerprint(current["tls.crt"]), "ca_key": source},
        )
        material = certificates.server_cert(ca, _drill.domain(ctx, current), days=_days(ctx))
        key_pem = material.key_pem.get_secret_value()
        ctx.redactor.add(key_pem)
        values = {"tls.crt": material.cert_pem, "tls.key": key_pem}
        if current.get("ca.key") != key:
            # Kept beside ca.crt (it came from elsewhere), so the next drill finds it there.
            values["ca.key"] = key
        self._wrote = True
        written = driver.write_credentials(ctx, values)
        failpoints.reach(self.key, "after_write")
        evidence = {
            "fingerprint": material.fingerprint,
            "not_after": material.not_after.isoformat(),
            "aki": material.aki,
            "ca": ca.fingerprint,
            "ca_key_from": source,
            **written.evidence,
        }
        ctx.record("drill.cert.renewed", evidence)
        return evidence

    def _rollback(self, ctx: StepContext) -> str:
        saved = getattr(self, "_saved", None)
        if not saved or not getattr(self, "_wrote", False):
            ctx.driver.running(ctx)
            return (
                "nothing to roll back: the old server certificate was not replaced; the stack runs"
            )
        ctx.driver.write_credentials(ctx, saved)
        ctx.driver.running(ctx)
        return "restored the previous tls.crt and tls.key; the stack runs"

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import certificates

        outcome = getattr(self, "_outcome", None) or _drill.PhaseOutcome()
        renewed = ctx.step_records("drill.cert.renewed")
        want = renewed[-1].data["fingerprint"] if renewed else None
        with _drill.failing_phase(ctx, PHASE, outcome, rollback=lambda: self._rollback(ctx)):
            running = ctx.driver.running(ctx)
            registered = set(_drill.active_ca_fingerprints(ctx))
            problems = _drill.served_chain_problems(ctx, registered, want)
            if problems:
                raise StepFailed(self.key, "served certificate: " + "; ".join(problems))
            served = sorted(
                {
                    certificates.cert_fingerprint(p)
                    for p in ctx.driver.served_certificates(ctx).values()
                }
            )
        outcome.details = {"fingerprint": served[0] if len(served) == 1 else served}
        _drill.succeeded(ctx, PHASE, outcome)
        return {"running": running, "served": outcome.details["fingerprint"]}
