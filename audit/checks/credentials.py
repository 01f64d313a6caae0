"""Checks of the credentials: how they are stored, how old they are, when the server
certificate expires."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from cryptography import x509

from audit.checks._common import result
from audit.context import AuditContext
from audit.facts import FactUnavailable
from audit.history import target_runs
from audit.model import CheckResult, Evidence
from core.durations import format_duration
from core.redact import fingerprint

if TYPE_CHECKING:
    from audit.checks import CheckSpec


def at_rest(ctx: AuditContext, spec: CheckSpec) -> CheckResult:
    """Compose: every file of ``data/`` is mode 0600 (or stricter) and owned by the
    containers' UID. Helm: the Secrets reach the pods as mounted files, not env."""
    got = ctx.facts.credentials()
    evidence = [Evidence(c.source, f"{c.name}: {c.detail}") for c in got.value]
    problems = [f"{c.name}: {p}" for c in got.value for p in c.problems]
    return result(spec, "fail" if problems else "pass", evidence, "; ".join(problems))


def _certificate(ctx: AuditContext) -> tuple[x509.Certificate, Evidence]:
    got = ctx.facts.server_certificate()
    try:
        cert = x509.load_pem_x509_certificate(got.value)
    except ValueError:
        raise FactUnavailable(f"{got.source} is not a PEM certificate") from None
    return cert, Evidence(
        got.source,
        f"server certificate {fingerprint(got.value.decode('ascii', 'replace'))}: "
        f"notBefore {cert.not_valid_before_utc.isoformat()}, "
        f"notAfter {cert.not_valid_after_utc.isoformat()}",
    )


def age(ctx: AuditContext, spec: CheckSpec) -> CheckResult:
    """The tunnel token (last written where the target stores it, or last rotated per
    the evidence store, whichever is newer) and the server certificate (notBefore) are
    younger than ``rotation.max_age``."""
    max_age = ctx.settings.rotation.max_age
    evidence: list[Evidence] = []
    problems: list[str] = []
    stored = ctx.facts.token_updated_at()
    token_at = stored.value
    evidence.append(Evidence(stored.source, f"tunnel token written {token_at.isoformat()}"))
    rotations = [r for r in target_runs(ctx.evidence_dir, ctx.name) if r.token_rotated_at]
    if rotations:
        last = rotations[-1]
        evidence.append(
            Evidence(
                str(last.path),
                f"token rotated by {last.playbook} at {last.token_rotated_at.isoformat()}",
            )
        )
        token_at = max(token_at, last.token_rotated_at)  # type: ignore[type-var]
    token_age = (ctx.now - token_at).total_seconds()
    if token_age > max_age:
        problems.append(
            f"tunnel token is {format_duration(token_age)} old (max {format_duration(max_age)})"
        )
    cert, cert_ev = _certificate(ctx)
    evidence.append(cert_ev)
    cert_age = (ctx.now - cert.not_valid_before_utc).total_seconds()
    if cert_age > max_age:
        problems.append(
            f"server certificate is {format_duration(cert_age)} old (max {format_duration(max_age)})"
        )
    return result(spec, "fail" if problems else "pass", evidence, "; ".join(problems))


def expiry(ctx: AuditContext, spec: CheckSpec) -> CheckResult:
    """The server certificate has not expired and does not expire within
    ``rotation.cert_expiry_within``."""
    cert, ev = _certificate(ctx)
    left = (cert.not_valid_after_utc - ctx.now).total_seconds()
    within = ctx.settings.rotation.cert_expiry_within
    if left <= 0:
        return result(
            spec, "fail", [ev], f"the server certificate expired {format_duration(-left)} ago"
        )
    if left < within:
        return result(
            spec,
            "fail",
            [ev],
            f"the server certificate expires in {format_duration(left)} (< {format_duration(within)})",
        )
    if cert.not_valid_before_utc > ctx.now + dt.timedelta(minutes=5):
        return result(spec, "fail", [ev], "the server certificate is not valid yet")
    return result(spec, "pass", [ev])
