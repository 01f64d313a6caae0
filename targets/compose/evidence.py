"""Compose capture: container logs (timestamps), inspect documents (secret env values
fingerprinted), the proxy config and the fingerprints of the certificates in
``data/``, each stored as an artifact; bounded by a deadline. Re-running stores only
what an earlier attempt had not stored yet."""

from __future__ import annotations

from typing import Any

from runbook.context import StepContext
from runbook.steps._evidence import dumps, scrub_inspect
from targets.base import PlanPart

CERT_FILES = ("ca.crt", "tls.crt")


def capture_plan(ctx: StepContext, deadline_s: float) -> PlanPart:
    cfg = ctx.target.compose
    assert cfg is not None
    return PlanPart(
        summary=f"capture logs, inspect and config of compose project {cfg.project!r}",
        resources=[f"compose-project:{cfg.project}", f"dir:{cfg.data_dir}"],
        reads=[
            "GET /containers/json (label com.docker.compose.project)",
            "GET /containers/{id}/logs?timestamps=1",
            "GET /containers/{id}/json",
            "GET /containers/{proxy}/archive?path=/etc/mcp-gateway/config.yaml",
        ],
    )


def capture(ctx: StepContext, deadline_s: float, have: set[str]) -> dict[str, Any]:
    from tasks import compose

    cfg = ctx.target.compose
    assert cfg is not None
    stored: list[str] = []
    result = compose.capture(ctx.clients.docker, cfg.project, deadline_s=deadline_s)
    for c in result.containers:
        if f"logs:{c.name}" not in have:
            ctx.artifact(c.logs, name=f"{c.name}.log", subject=f"logs:{c.name}", partial=c.partial)
            stored.append(f"logs:{c.name}")
        if f"inspect:{c.name}" not in have:
            ctx.artifact(
                dumps(scrub_inspect(c.inspect)),
                name=f"{c.name}.inspect.json",
                media_type="application/json",
                subject=f"inspect:{c.name}",
            )
            stored.append(f"inspect:{c.name}")
    if result.proxy_config is not None and "proxy-config" not in have:
        ctx.artifact(
            result.proxy_config,
            name="mcp-proxy-config.yaml",
            media_type="application/yaml",
            subject="proxy-config",
        )
        stored.append("proxy-config")
    if result.timed_out or result.errors:
        ctx.record("capture.incomplete", {"timed_out": result.timed_out, "errors": result.errors})
    stored += _local_certs(ctx, have)
    return {
        "stored": stored,
        "containers": [c.name for c in result.containers],
        "timed_out": result.timed_out,
        "elapsed_s": round(result.elapsed_s, 3),
    }


def _local_certs(ctx: StepContext, have: set[str]) -> list[str]:
    if "local-certificates" in have:
        return []
    from tasks.tunnels import pem_fingerprint

    cfg = ctx.target.compose
    assert cfg is not None
    found: dict[str, str] = {}
    for name in CERT_FILES:
        path = cfg.data_dir / name
        try:
            found[name] = pem_fingerprint(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            found[name] = f"unreadable: {type(exc).__name__}"
    ctx.artifact(
        dumps(found),
        name="certificate-fingerprints.json",
        media_type="application/json",
        subject="local-certificates",
    )
    return ["local-certificates"]
