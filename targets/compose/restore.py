"""Compose restore: the containers are re-created from the inspect documents
``capture_evidence`` stored.

Secret environment values in those documents were replaced (fingerprints, redaction)
at capture time, so they are never taken from there: ``TUNNEL_TOKEN`` comes from the
rotated ``data/tunnel-token``; any other secret variable from the engine's environment
under the same name, or it is left out (recorded by name). Verified: both services
running, cloudflared running with the token in ``data/``; on a sandbox target also
that this token is the API's current token for the tunnel in ``data/tunnel-id`` and
that the sandbox accepts a connection with it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from core import failpoints
from core.errors import StepFailed
from core.operations import Operation
from core.redact import REDACTED, fingerprint
from runbook.context import StepContext
from targets.base import PlanPart
from targets.compose import workload

INSPECT_SUBJECT = "inspect:"
SERVICES = workload.SERVICES
TOKEN_VAR = "TUNNEL_TOKEN"  # noqa: S105 (the variable name, not a value)
_FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{16}$")
# The trail's redaction of ``TUNNEL_TOKEN=\S+`` also eats the closing ``",`` of the
# (pretty-printed) JSON string that holds it: such a line is closed again on load.
_CUT_STRING = re.compile(rf'^(\s*"{TOKEN_VAR}={re.escape(REDACTED)})$')


def load_inspect(raw: bytes) -> dict[str, Any]:
    """Parses a captured inspect document, repairing the one known redaction damage.

    Raises:
        ValueError: the document is not JSON even after the repair.
    """
    try:
        return dict(json.loads(raw))
    except ValueError:
        lines = raw.decode("utf-8", "replace").split("\n")
        for i, line in enumerate(lines):
            if _CUT_STRING.match(line):
                following = next((x.strip() for x in lines[i + 1 :] if x.strip()), "")
                lines[i] = line + ('"' if following.startswith("]") else '",')
        return dict(json.loads("\n".join(lines)))


def read(ctx: StepContext, name: str) -> str:
    assert ctx.target.compose is not None
    path = ctx.target.compose.data_dir / name
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise StepFailed(ctx.step, f"cannot read data/{name} ({path}): {exc.strerror}") from None
    if not value:
        raise StepFailed(ctx.step, f"data/{name} ({path}) is empty")
    return value


def _scrubbed(value: str) -> bool:
    """True when capture replaced the value (a fingerprint or a redaction)."""
    return bool(_FINGERPRINT.match(value)) or REDACTED in value


def _inspects(ctx: StepContext) -> list[dict[str, Any]]:
    latest: dict[str, str] = {}
    for rec in ctx.trail.records():
        subject = str(rec.data.get("subject", "")) if rec.kind == "artifact" else ""
        if rec.step == "capture_evidence" and subject.startswith(INSPECT_SUBJECT):
            latest[subject] = rec.data["sha256"]
    if not latest:
        raise StepFailed(
            ctx.step, "no inspect documents in the trail (capture_evidence stored none)"
        )
    docs = []
    for subject, digest in sorted(latest.items()):
        try:
            docs.append(load_inspect(ctx.trail.read_artifact(digest)))
        except (OSError, ValueError) as exc:
            raise StepFailed(
                ctx.step, f"artifact {subject} ({digest[:12]}) unreadable: {type(exc).__name__}"
            ) from None
    return docs


def _env_overrides(
    ctx: StepContext, docs: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]], dict[str, list[str]]]:
    """Removes scrubbed secret values from the documents and returns the overrides:
    the token from ``data/``, other secrets from this process's environment."""
    token = read(ctx, "tunnel-token")
    overrides: dict[str, dict[str, str]] = {}
    dropped: dict[str, list[str]] = {}
    for doc in docs:
        name = str(doc.get("Name", "")).lstrip("/")
        config = doc.setdefault("Config", {})
        kept = []
        for pair in config.get("Env") or []:
            var, _, value = pair.partition("=")
            if var == TOKEN_VAR:
                overrides.setdefault(name, {})[TOKEN_VAR] = token
            elif _scrubbed(value):
                if var not in os.environ:
                    dropped.setdefault(name, []).append(var)
                    continue
                overrides.setdefault(name, {})[var] = os.environ[var]
            kept.append(pair)
        config["Env"] = kept
    return docs, overrides, dropped


def deployed(ctx: StepContext) -> dict[str, Any]:
    """Running services and the fingerprint of cloudflared's deployed token."""
    from tasks import compose

    running: dict[str, str] = {}
    token_fp: str | None = None
    for c in compose.project_containers(ctx.clients.docker, workload.project(ctx)):
        service = c.labels.get(compose.SERVICE_LABEL, c.name)
        if (c.attrs.get("State") or {}).get("Running"):
            running[service] = c.name
            if service == workload.CLOUDFLARED:
                for pair in (c.attrs.get("Config") or {}).get("Env") or []:
                    var, _, value = pair.partition("=")
                    if var == TOKEN_VAR:
                        token_fp = fingerprint(value)
    return {"running": running, "token": token_fp}


def plan(ctx: StepContext) -> PlanPart:
    cfg = ctx.target.compose
    assert cfg is not None
    reads: list[str] = []
    if ctx.target.sandbox:
        reads.append("POST /_sandbox/tunnel-connect")
    return PlanPart(
        summary=f"re-create compose project {cfg.project!r} from the captured inspect documents "
        "with the token in data/tunnel-token, and verify it is up",
        resources=[
            f"compose-project:{cfg.project}",
            *(f"service:{s}" for s in SERVICES),
            f"file:{cfg.data_dir / 'tunnel-token'}",
        ],
        reads=reads,
        operations=[
            *workload.RECREATE_OPERATIONS,
            # A stack still running with the old token is replaced.
            *workload.STOP_OPERATIONS,
            *(
                [Operation("anthropic", "POST", "/v1/tunnels/{data/tunnel-id}/reveal_token")]
                if ctx.target.sandbox
                else []
            ),
        ],
        parameters={"services": list(SERVICES), "sandbox_checks": ctx.target.sandbox},
    )


def restored_reason(ctx: StepContext) -> str | None:
    state = deployed(ctx)
    want = fingerprint(read(ctx, "tunnel-token"))
    if set(SERVICES) <= set(state["running"]) and state["token"] == want:
        return f"both services running with the token in data/ ({want})"
    return None


def restore(ctx: StepContext) -> dict[str, Any]:
    from tasks import compose, compose_restore

    docs, overrides, dropped = _env_overrides(ctx, _inspects(ctx))
    if dropped:
        ctx.record("restore.env_dropped", {"containers": dropped})
    stale = deployed(ctx)
    if stale["token"] is not None and stale["token"] != fingerprint(read(ctx, "tunnel-token")):
        # Running with the old token (e.g. stopped before the rotation): replace it.
        compose.stop_project(ctx.clients.docker, workload.project(ctx))
        ctx.record("restore.replaced_stale", {"running": stale["running"], "token": stale["token"]})
    started = compose_restore.recreate_from_inspect(
        ctx.clients.docker, docs, env_overrides=overrides
    )
    failpoints.reach(ctx.step, "after_recreate")
    running = compose_restore.wait_running(
        ctx.clients.docker, workload.project(ctx), SERVICES, timeout_s=15
    )
    data = {
        "started": started,
        "running": running,
        "token": fingerprint(overrides.get(_cloudflared(ctx, docs), {}).get(TOKEN_VAR, "")),
    }
    ctx.record("service.restored", data)
    return data


def _cloudflared(ctx: StepContext, docs: list[dict[str, Any]]) -> str:
    for doc in docs:
        labels = (doc.get("Config") or {}).get("Labels") or {}
        if labels.get("com.docker.compose.service") == workload.CLOUDFLARED:
            return str(doc.get("Name", "")).lstrip("/")
    raise StepFailed(ctx.step, "no cloudflared container among the inspect documents")


def verify(ctx: StepContext) -> dict[str, Any]:
    state = deployed(ctx)
    missing = sorted(set(SERVICES) - set(state["running"]))
    if missing:
        raise StepFailed(ctx.step, f"not running after restore: {', '.join(missing)}")
    token = read(ctx, "tunnel-token")
    if state["token"] != fingerprint(token):
        raise StepFailed(
            ctx.step,
            f"cloudflared runs with token {state['token']}, data/tunnel-token is "
            f"{fingerprint(token)}",
        )
    result: dict[str, Any] = {"running": state["running"], "token": fingerprint(token)}
    if ctx.target.sandbox:
        result.update(_sandbox_checks(ctx, token))
    return result


def _sandbox_checks(ctx: StepContext, token: str) -> dict[str, Any]:
    """Sandbox only (production has no such endpoint): the deployed token is the API's
    current token of the tunnel in data/tunnel-id, and a connection with it is
    accepted."""
    import httpx

    from tasks import tunnels

    tunnel_id = read(ctx, "tunnel-id")
    current = tunnels.reveal_token(ctx.clients.anthropic, tunnel_id)
    if current.fingerprint != fingerprint(token):
        raise StepFailed(
            ctx.step,
            f"data/tunnel-token ({fingerprint(token)}) is not the current token of "
            f"{tunnel_id} ({current.fingerprint})",
        )
    base = str(ctx.clients.anthropic.base_url).rstrip("/")
    response = httpx.post(
        f"{base}/_sandbox/tunnel-connect", json={"tunnel_token": token}, timeout=10
    )
    if response.status_code != 200:
        raise StepFailed(
            ctx.step,
            f"the sandbox refused a connection with the deployed token "
            f"({response.status_code}: {response.json().get('reason', '')})",
        )
    return {"tunnel_id": tunnel_id, "api_token": current.fingerprint, "connect": 200}
