"""drill_renew_server_cert: renew the proxy's server certificate (rotation drill, phase 2).

As ``setup renew-cert`` does (FACTS §2: no API call): a new key and certificate signed
directly by the CURRENT CA (``data/ca.crt`` + ``data/ca.key``), SAN ``*.<domain>``,
90 days, written atomically to ``data/tls.crt`` / ``data/tls.key``; the proxy
hot-reloads ``tls.cert_file``.

* check: this incident already renewed it and that certificate is the one served.
* apply: refuse before any change if the current CA is not registered on the tunnel
  (a certificate from it would be refused); keep the old pair in memory; write.
* verify: the certificate the proxy serves (read inside the container) chains to
  ``data/ca.crt``, which is an active CA of the tunnel; both containers run.

Rollback: if verification fails, the old pair is written back and the stack checked.
"""

from __future__ import annotations

from typing import Any

from runbook import failpoints
from runbook.context import StepContext
from runbook.errors import ConfigError, StepFailed
from runbook.registry import Plan, Step, register
from runbook.steps import _drill

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
    kinds = frozenset({"compose"})
    description = "Renew the server certificate from the current CA; the proxy hot-reloads it"

    def plan(self, ctx: StepContext) -> Plan:
        tunnel = ctx.target.tunnel.id
        data = _drill.data_dir(ctx)
        return Plan(
            step=self.key,
            target=ctx.incident.target,
            summary=(
                f"issue a {_days(ctx)}-day server certificate for *.{_drill.domain(ctx)} signed by "
                "the current CA (data/ca.crt), write data/tls.crt + tls.key atomically; "
                "the proxy hot-reloads it (no restart, no API change)"
            ),
            resources=[f"file:{data / 'tls.crt'}", f"file:{data / 'tls.key'}"],
            api_calls=[f"GET /v1/tunnels/{tunnel}/certificates"],
            parameters={"days": _days(ctx), "san": f"*.{_drill.domain(ctx)}"},
        )

    def check(self, ctx: StepContext) -> str | None:
        from tasks import certificates

        renewed = ctx.step_records("drill.cert.renewed")
        if not renewed:
            return None
        served = certificates.cert_fingerprint(_drill.served_certificate(ctx))
        if served == renewed[-1].data["fingerprint"]:
            return f"server certificate {served[:16]}… renewed and served since an earlier run"
        return None

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import certificates

        _drill.begin(ctx, PHASE)
        self._outcome = _drill.PhaseOutcome()
        with _drill.failing_phase(ctx, PHASE, self._outcome, rollback=lambda: self._rollback(ctx)):
            current = _drill.read_data(ctx, "ca.crt", "ca.key")
            ca = certificates.load_ca(current["ca.crt"], current["ca.key"])
            active = _drill.active_ca_fingerprints(ctx)
            if ca.fingerprint not in active:
                raise StepFailed(
                    self.key,
                    f"the current CA data/ca.crt ({ca.fingerprint[:16]}…) is not an active CA of "
                    f"tunnel {ctx.target.tunnel.id}: a certificate from it would be refused",
                )
            self._saved = _drill.read_data(ctx, *FILES)
            ctx.record(
                "drill.cert.before",
                {"fingerprint": certificates.cert_fingerprint(self._saved["tls.crt"])},
            )
            material = certificates.server_cert(ca, _drill.domain(ctx), days=_days(ctx))
            key_pem = material.key_pem.get_secret_value()
            ctx.redactor.add(key_pem)
            written = _drill.write_data(
                ctx, {"tls.crt": material.cert_pem.encode(), "tls.key": key_pem.encode()}
            )
            failpoints.reach(self.key, "after_write")
            evidence = {
                "fingerprint": material.fingerprint,
                "not_after": material.not_after.isoformat(),
                "aki": material.aki,
                "ca": ca.fingerprint,
                "files": written,
            }
            ctx.record("drill.cert.renewed", evidence)
        return evidence

    def _rollback(self, ctx: StepContext) -> str:
        saved = getattr(self, "_saved", None)
        if not saved:
            _drill.stack_running(ctx)
            return (
                "nothing to roll back: the old server certificate was not replaced; the stack runs"
            )
        _drill.write_data(ctx, saved)
        _drill.stack_running(ctx)
        return "restored the previous data/tls.crt and data/tls.key; the stack runs"

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import certificates

        outcome = getattr(self, "_outcome", None) or _drill.PhaseOutcome()
        with _drill.failing_phase(ctx, PHASE, outcome, rollback=lambda: self._rollback(ctx)):
            running = _drill.stack_running(ctx)
            problems = _drill.served_chain_problems(ctx, set(_drill.active_ca_fingerprints(ctx)))
            if problems:
                raise StepFailed(self.key, "served certificate: " + "; ".join(problems))
            served = certificates.cert_fingerprint(_drill.served_certificate(ctx))
        outcome.details = {"fingerprint": served}
        last = ctx.step_records("drill.phase")
        if not last or last[-1].data.get("status") != "succeeded":
            _drill.finish(ctx, PHASE, "succeeded", outcome)
        return {"running": running, "served": served}
