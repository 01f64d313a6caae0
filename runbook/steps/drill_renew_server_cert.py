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

Helm (``kind: helm``): the current CA is the Secret ``<release>``'s ``ca.crt``; its key
comes from that Secret's ``ca.key`` or from ``aws.secrets_manager.ca_secret_id``
(:mod:`runbook.steps._drill_helm`); when neither holds it the phase fails before
changing anything. The new pair is written to ``tls.crt`` / ``tls.key`` of every
credential Secret that holds them (the other keys kept as read), the Deployment is
rolled and waited for; verify checks that every Secret's ``tls.crt`` is the renewed
certificate, that it chains to ``ca.crt`` for ``*.<domain>`` and that this CA is active
on the tunnel. Rollback writes the previous values back (and rolls again).
"""

from __future__ import annotations

from typing import Any

from core import failpoints
from core.errors import ConfigError, StepFailed
from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from runbook.steps import _drill, _drill_helm

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
    kinds = frozenset({"compose", "helm"})
    description = "Renew the server certificate from the current CA; the proxy hot-reloads it"

    def plan(self, ctx: StepContext) -> Plan:
        tunnel = ctx.target.tunnel.id
        if _drill_helm.is_helm(ctx):
            resources, calls = _drill_helm.plan_writes(ctx)
            dom = _drill_helm.domain(ctx)
            return Plan(
                step=self.key,
                target=ctx.incident.target,
                summary=(
                    f"issue a {_days(ctx)}-day server certificate for *.{dom} signed by the "
                    "current CA (ca.crt of the release's Secret; its key from ca.key there or "
                    "from aws.secrets_manager.ca_secret_id), write tls.crt + tls.key into the "
                    "release's Secrets (other keys kept), roll the Deployment"
                ),
                resources=resources,
                api_calls=[f"GET /v1/tunnels/{tunnel}/certificates", *calls],
                parameters={"days": _days(ctx), "san": f"*.{dom}"},
            )
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
        if _drill_helm.is_helm(ctx):
            deployed = _drill_helm.deployed_tls(ctx)
            fps = {certificates.cert_fingerprint(pem) for pem in deployed.values()}
            if deployed and fps == {renewed[-1].data["fingerprint"]}:
                fp = renewed[-1].data["fingerprint"]
                return f"server certificate {fp[:16]}… renewed and deployed since an earlier run"
            return None
        served = certificates.cert_fingerprint(_drill.served_certificate(ctx))
        if served == renewed[-1].data["fingerprint"]:
            return f"server certificate {served[:16]}… renewed and served since an earlier run"
        return None

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import certificates

        _drill.begin(ctx, PHASE)
        self._outcome = _drill.PhaseOutcome()
        if _drill_helm.is_helm(ctx):
            with _drill.failing_phase(
                ctx, PHASE, self._outcome, rollback=lambda: self._rollback_helm(ctx)
            ):
                return self._apply_helm(ctx)
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

    def _apply_helm(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import certificates

        current = _drill_helm.current_values(ctx)
        key, source = _drill_helm.ca_key(ctx, current)
        ca = certificates.load_ca(current["ca.crt"], key)
        active = _drill.active_ca_fingerprints(ctx)
        if ca.fingerprint not in active:
            raise StepFailed(
                self.key,
                f"the current CA (ca.crt of Secret {_drill_helm.secret_names(ctx)[0]}, "
                f"{ca.fingerprint[:16]}…) is not an active CA of tunnel "
                f"{ctx.target.tunnel.id}: a certificate from it would be refused",
            )
        self._saved_values = current
        ctx.record(
            "drill.cert.before",
            {"fingerprint": certificates.cert_fingerprint(current["tls.crt"]), "ca_key": source},
        )
        material = certificates.server_cert(ca, _drill_helm.domain(ctx, current), days=_days(ctx))
        key_pem = material.key_pem.get_secret_value()
        ctx.redactor.add(key_pem)
        # ca.key is written back where the drill found it (or to the Secret when it came
        # from AWS), so the next drill finds it in the Secret.
        values = {**current, "ca.key": key, "tls.crt": material.cert_pem, "tls.key": key_pem}
        self._wrote = True
        written = _drill_helm.write(ctx, values)
        failpoints.reach(self.key, "after_write")
        evidence = {
            "fingerprint": material.fingerprint,
            "not_after": material.not_after.isoformat(),
            "aki": material.aki,
            "ca": ca.fingerprint,
            "ca_key_from": source,
            "secrets": written["secrets_written"],
            "pod_template_hash": written["pod_template_hash"],
        }
        ctx.record("drill.cert.renewed", evidence)
        return evidence

    def _rollback_helm(self, ctx: StepContext) -> str:
        saved = getattr(self, "_saved_values", None)
        if not saved or not getattr(self, "_wrote", False):
            _drill_helm.wait_ready(ctx)
            return (
                "nothing to roll back: the old server certificate was not replaced; "
                "the Deployment is ready"
            )
        _drill_helm.write(ctx, saved)
        return "restored the previous tls.crt and tls.key in the release's Secrets; rolled out"

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
        if _drill_helm.is_helm(ctx):
            with _drill.failing_phase(
                ctx, PHASE, outcome, rollback=lambda: self._rollback_helm(ctx)
            ):
                running, served = self._verify_helm(ctx)
            outcome.details = {"fingerprint": served}
            last = ctx.step_records("drill.phase")
            if not last or last[-1].data.get("status") != "succeeded":
                _drill.finish(ctx, PHASE, "succeeded", outcome)
            return {"running": running, "served": served}
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

    def _verify_helm(self, ctx: StepContext) -> tuple[Any, str]:
        from tasks import certificates

        running = _drill_helm.wait_ready(ctx)
        current = _drill_helm.current_values(ctx)
        deployed = _drill_helm.deployed_tls(ctx)
        renewed = ctx.step_records("drill.cert.renewed")
        want = renewed[-1].data["fingerprint"] if renewed else None
        problems = [
            f"{name}/tls.crt is not the renewed certificate"
            for name, pem in sorted(deployed.items())
            if certificates.cert_fingerprint(pem) != want
        ]
        problems += certificates.check_server_cert(
            current["tls.crt"], current["ca.crt"], _drill_helm.domain(ctx, current)
        )
        ca_fp = certificates.cert_fingerprint(current["ca.crt"])
        if ca_fp not in _drill.active_ca_fingerprints(ctx):
            problems.append(f"ca.crt (sha256 {ca_fp[:16]}…) is not an active CA of the tunnel")
        if problems:
            raise StepFailed(self.key, "deployed certificate: " + "; ".join(problems))
        return running, certificates.cert_fingerprint(current["tls.crt"])
