"""Helpers of the rotation-drill steps: phase timing, the deployed credentials, the
cloudflared restart and the rollback to the last working files.

A drill proves the rotation path on a live (or sandbox) stack, so every phase is
timed and recorded (``drill.phase``) with its downtime and, when it fails, what
was rolled back. Rollback means "the last credentials that worked": files the
phase replaced are written back (atomically) while their old values are still
known, and the stack is checked to run again. Where rollback is impossible (a
rotated token cannot be un-rotated: the API has invalidated the old one) the
record says so.

Compose only: the cloudflared container is re-created from its own inspect
document with the new ``TUNNEL_TOKEN``. The old container is first renamed aside
and stopped, so a run killed between "old stopped" and "new started" still finds
the old container's configuration on resume (nothing secret is written anywhere
to make that possible).
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import McpIrError, StepFailed
from core.redact import fingerprint
from runbook.context import StepContext

CLOUDFLARED = "cloudflared"
PROXY = "mcp-proxy"
SERVICES = (PROXY, CLOUDFLARED)
ASIDE_SUFFIX = "-drill-old"
DEFAULT_CERT_FILE = "/data/tls.crt"


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


# -- deployed state ------------------------------------------------------------------


def data_dir(ctx: StepContext) -> Path:
    compose = ctx.target.compose
    if compose is None:
        raise StepFailed(ctx.step, "target has no compose section (drills support Compose)")
    return Path(compose.data_dir)


def project(ctx: StepContext) -> str:
    assert ctx.target.compose is not None
    return ctx.target.compose.project


def read_data(ctx: StepContext, *names: str) -> dict[str, bytes]:
    """The current content of ``data/`` files (for rollback; kept in memory only)."""
    out: dict[str, bytes] = {}
    for name in names:
        path = data_dir(ctx) / name
        try:
            out[name] = path.read_bytes()
        except OSError as exc:
            raise StepFailed(ctx.step, f"data/{name}: cannot read ({exc.strerror})") from None
    return out


def write_data(ctx: StepContext, files: dict[str, bytes]) -> dict[str, str]:
    """Atomic writes into ``data/`` owned as the containers expect; returns
    fingerprints (never values)."""
    from tasks import credential_files

    compose = ctx.target.compose
    assert compose is not None
    result = credential_files.write_credentials(
        compose.data_dir, files, uid=compose.data_uid, gid=compose.data_gid
    )
    return {name: f"{w.action} {w.fingerprint}" for name, w in result.files.items()}


def domain(ctx: StepContext) -> str:
    if ctx.target.tunnel.domain:
        return ctx.target.tunnel.domain
    return read_data(ctx, "tunnel-domain")["tunnel-domain"].decode().strip()


def container_name(ctx: StepContext, service: str) -> str:
    return f"{project(ctx)}-{service}-1"


def _env(doc: dict[str, Any]) -> dict[str, str]:
    pairs = (doc.get("Config") or {}).get("Env") or []
    return dict(p.partition("=")[::2] for p in pairs)


def deployed_token_fingerprints(ctx: StepContext) -> dict[str, str | None]:
    """Fingerprints of the token cloudflared runs with and of ``data/tunnel-token``."""
    import docker.errors

    client = ctx.clients.docker
    try:
        doc = client.api.inspect_container(container_name(ctx, CLOUDFLARED))
        running = _env(doc).get("TUNNEL_TOKEN")
    except docker.errors.NotFound:
        running = None
    try:
        stored = (data_dir(ctx) / "tunnel-token").read_text().strip()
    except OSError:
        stored = None
    return {
        "container": fingerprint(running) if running else None,
        "data/tunnel-token": fingerprint(stored) if stored else None,
    }


def served_certificate(ctx: StepContext) -> bytes:
    """The certificate the running proxy serves: its ``tls.cert_file`` (from the
    proxy config) read from INSIDE the proxy container, as the proxy reloads it."""
    cert_file = DEFAULT_CERT_FILE
    compose = ctx.target.compose
    if compose is not None and compose.config_dir is not None:
        try:
            config = yaml.safe_load((Path(compose.config_dir) / "config.yaml").read_text())
            cert_file = ((config or {}).get("tls") or {}).get("cert_file") or cert_file
        except (OSError, yaml.YAMLError, AttributeError):
            cert_file = DEFAULT_CERT_FILE
    try:
        stream, _ = ctx.clients.docker.api.get_archive(container_name(ctx, PROXY), cert_file)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            for member in tar:
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    return extracted.read()
    except Exception as exc:  # noqa: BLE001 (any engine failure means: not served)
        raise StepFailed(
            ctx.step, f"cannot read {cert_file} from the proxy container ({type(exc).__name__})"
        ) from None
    raise StepFailed(ctx.step, f"{cert_file} is not a regular file in the proxy container")


def stack_running(ctx: StepContext, timeout_s: float = 15.0) -> list[str]:
    """Both services have a running container (raises ``StepFailed`` otherwise)."""
    from tasks import compose

    return compose.wait_running(ctx.clients.docker, project(ctx), SERVICES, timeout_s)


def served_chain_problems(ctx: StepContext, registered: set[str]) -> list[str]:
    """Problems with the served certificate: it must chain directly to ``data/ca.crt``
    for ``*.<domain>``, and that CA must be registered (active) on the tunnel."""
    from tasks import certificates

    ca_pem = read_data(ctx, "ca.crt")["ca.crt"]
    problems = certificates.check_server_cert(served_certificate(ctx), ca_pem, domain(ctx))
    ca_fp = certificates.cert_fingerprint(ca_pem)
    if ca_fp not in registered:
        problems.append(f"data/ca.crt (sha256 {ca_fp[:16]}…) is not an active CA of the tunnel")
    return problems


def active_ca_fingerprints(ctx: StepContext) -> dict[str, str]:
    """Active CA certificates of the tunnel: fingerprint → certificate id."""
    from tasks import tunnels

    certs = tunnels.list_certificates(ctx.clients.anthropic, ctx.target.tunnel.id)
    return {c.fingerprint: c.id for c in certs}


# -- cloudflared restart -----------------------------------------------------------------


def restart_cloudflared(ctx: StepContext, token: str) -> float:
    """Re-creates cloudflared from its own inspect document with ``TUNNEL_TOKEN`` =
    ``token`` and returns the downtime (old stopped → new running), in seconds.

    Order, for resumability: rename the old container aside and stop it; create and
    start the new one under the Compose name; wait until it runs; remove the old
    one. A run killed in between finds the aside container on resume and finishes.
    Nothing is done when the running container already has this token.
    """
    import docker.errors

    from tasks import compose

    client = ctx.clients.docker
    name = container_name(ctx, CLOUDFLARED)
    aside = name + ASIDE_SUFFIX

    def inspect(ref: str) -> dict[str, Any] | None:
        try:
            return client.api.inspect_container(ref)
        except docker.errors.NotFound:
            return None

    current, old = inspect(name), inspect(aside)
    if (
        current is not None
        and _env(current).get("TUNNEL_TOKEN") == token
        and (current.get("State") or {}).get("Running")
    ):
        if old is not None:
            client.api.remove_container(aside, force=True)
        return 0.0
    started = time.monotonic()
    if current is not None and old is None:
        client.api.rename(current["Id"], aside)
        old = current
    if old is None:
        raise StepFailed(ctx.step, f"container {name} is missing: nothing to re-create it from")
    client.api.stop(aside, timeout=0)
    ctx.record("drill.cloudflared.stopped", {"container": aside})
    if current is not None and current is not old:
        client.api.remove_container(name, force=True)  # a half-made new one from a dead run
    doc = {**old, "Name": "/" + name}
    compose.recreate_from_inspect(
        client, [doc], env_overrides={CLOUDFLARED: {"TUNNEL_TOKEN": token}}
    )
    _wait_running(ctx, name, 15.0)
    downtime = time.monotonic() - started
    client.api.remove_container(aside, force=True)
    ctx.record(
        "drill.cloudflared.recreated",
        {"container": name, "token": fingerprint(token), "downtime_s": round(downtime, 3)},
    )
    return downtime


def _wait_running(ctx: StepContext, name: str, timeout_s: float) -> None:
    """Waits for one container by name (the aside copy carries the same labels, so a
    label-based wait could look at the wrong one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = ctx.clients.docker.api.inspect_container(name).get("State") or {}
        if state.get("Running"):
            return
        if state.get("Status") in ("exited", "dead") or time.monotonic() > deadline:
            raise StepFailed(
                ctx.step, f"container {name} is not running ({state.get('Status', 'unknown')})"
            )
        time.sleep(0.1)
