"""Helpers of the rotation-drill steps: phase timing, the deployed credentials, the
cloudflared restart and the rollback to the last working files.

A drill proves the rotation path on a live (or sandbox) stack, so every phase is
timed and recorded (``drill.phase``) with its downtime and, when it fails, what
was rolled back. Rollback means "the last credentials that worked": files the
phase replaced are written back (atomically) while their old values are still
known, and the stack is checked to run again. Where rollback is impossible (a
rotated token cannot be un-rotated: the API has invalidated the old one) the
record says so.

The deployed state is the target driver's (``ctx.driver``): it reads and writes the
credentials and redeploys them (Compose re-creates cloudflared for a new token, the
proxy hot-reloads its certificate files; Helm patches the release's Secrets and rolls
the Deployment), and says what certificate is served.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from core.errors import McpIrError, StepFailed
from runbook.context import StepContext


@dataclass
class PhaseOutcome:
    """What a phase reports when it ends (filled in while it runs)."""

    downtime_s: float = 0.0
    rollback: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def begin(ctx: StepContext, phase: str) -> None:
    """Records the start of a phase (once per run of the step)."""
    ctx.record("drill.phase.started", {"phase": phase, "started_at": time.time()})


def _started_at(ctx: StepContext) -> float:
    started = ctx.step_records("drill.phase.started")
    return float(started[-1].data["started_at"]) if started else time.time()


def finish(
    ctx: StepContext, phase: str, status: str, outcome: PhaseOutcome, error: str = ""
) -> None:
    """Records the end of a phase: status, duration since its start, downtime,
    the error (redacted by the trail) and what was rolled back."""
    ctx.record(
        "drill.phase",
        {
            "phase": phase,
            "status": status,
            "duration_s": round(time.time() - _started_at(ctx), 3),
            "downtime_s": round(outcome.downtime_s, 3),
            "error": error,
            "rollback": outcome.rollback,
            **outcome.details,
        },
    )


def succeeded(ctx: StepContext, phase: str, outcome: PhaseOutcome) -> None:
    """Records the phase as succeeded, once: a re-run verify of a phase already
    recorded as succeeded adds nothing."""
    last = ctx.step_records("drill.phase")
    if not last or last[-1].data.get("status") != "succeeded":
        finish(ctx, phase, "succeeded", outcome)


@contextmanager
def failing_phase(
    ctx: StepContext, phase: str, outcome: PhaseOutcome, rollback: Any = None
) -> Iterator[None]:
    """Runs a block; on failure calls ``rollback()`` (which returns a sentence saying
    what it restored), records the failed phase and re-raises as ``StepFailed``."""
    try:
        yield
    except Exception as exc:
        detail = exc.detail if isinstance(exc, McpIrError) else f"{type(exc).__name__}: {exc}"
        if rollback is not None and not outcome.rollback:
            try:
                outcome.rollback = rollback()
            except Exception as rb_exc:  # noqa: BLE001 (reported, the original error stands)
                why = rb_exc.detail if isinstance(rb_exc, McpIrError) else type(rb_exc).__name__
                outcome.rollback = f"rollback FAILED: {why}"
            ctx.record("drill.rollback", {"phase": phase, "result": outcome.rollback})
        finish(ctx, phase, "failed", outcome, detail)
        message = detail + (f" — {outcome.rollback}" if outcome.rollback else "")
        raise StepFailed(ctx.step, message) from exc


# -- deployed state, through the target's driver ------------------------------------


def domain(ctx: StepContext, values: dict[str, str] | None = None) -> str:
    """The tunnel's domain: the inventory's, else the deployed ``tunnel-domain``."""
    if ctx.target.tunnel.domain:
        return ctx.target.tunnel.domain
    current = values if values is not None else ctx.driver.read_credentials(ctx)
    if not current.get("tunnel-domain", "").strip():
        where = ctx.driver.credential_source(ctx, "tunnel-domain")
        raise StepFailed(ctx.step, f"{where}: cannot read the tunnel's domain")
    return current["tunnel-domain"].strip()


def active_ca_fingerprints(ctx: StepContext) -> dict[str, str]:
    """Active CA certificates of the tunnel: fingerprint → certificate id."""
    from tasks import tunnels

    certs = tunnels.list_certificates(ctx.clients.anthropic, ctx.target.tunnel.id)
    return {c.fingerprint: c.id for c in certs}


def served_chain_problems(
    ctx: StepContext, registered: set[str], want: str | None = None
) -> list[str]:
    """Problems with what the workload serves: every served certificate (``want``: it
    must be that one) chains directly to the deployed ``ca.crt`` for ``*.<domain>``,
    and that CA is registered (active) on the tunnel."""
    from tasks import certificates

    driver = ctx.driver
    values = driver.require_credentials(ctx, "ca.crt")
    ca_pem = values["ca.crt"]
    dom = domain(ctx)
    problems: list[str] = []
    for name, pem in sorted(driver.served_certificates(ctx).items()):
        if want is not None and certificates.cert_fingerprint(pem) != want:
            problems.append(f"{name}: not the renewed certificate")
        problems += [f"{name}: {p}" for p in certificates.check_server_cert(pem, ca_pem, dom)]
    ca_fp = certificates.cert_fingerprint(ca_pem)
    if ca_fp not in registered:
        where = driver.credential_source(ctx, "ca.crt")
        problems.append(f"{where} (sha256 {ca_fp[:16]}…) is not an active CA of the tunnel")
    return problems
