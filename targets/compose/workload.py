"""The Compose workload: the project's containers and networks, found by their
``com.docker.compose.project`` label; stopped the ``docker compose down --timeout 0``
way, checked to be running, and cloudflared re-created with a new token.

cloudflared is re-created from its own inspect document; the old container is first
renamed aside and stopped, so a run killed between "old stopped" and "new started"
still finds the old container's configuration on resume (nothing secret is written
anywhere to make that possible)."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any

import yaml

from core.errors import StepFailed
from core.operations import Operation
from core.redact import fingerprint
from runbook.context import StepContext
from targets.base import PlanPart

CLOUDFLARED = "cloudflared"
PROXY = "mcp-proxy"
SERVICES = (PROXY, CLOUDFLARED)
ASIDE_SUFFIX = "-drill-old"
DEFAULT_CERT_FILE = "/data/tls.crt"

STOP_OPERATIONS = (
    Operation("docker", "POST", "/containers/{id}/stop", note="t=0"),
    Operation("docker", "DELETE", "/containers/{id}", note="force=1"),
    Operation("docker", "DELETE", "/networks/{id}"),
)
RECREATE_OPERATIONS = (
    Operation("docker", "POST", "/containers/create"),
    Operation("docker", "POST", "/containers/{id}/start"),
)


def project(ctx: StepContext) -> str:
    assert ctx.target.compose is not None
    return ctx.target.compose.project


def container_name(ctx: StepContext, service: str) -> str:
    return f"{project(ctx)}-{service}-1"


def remaining(ctx: StepContext) -> list[str]:
    from tasks import compose

    return compose.remaining(ctx.clients.docker, project(ctx))


def stop_plan(ctx: StepContext) -> PlanPart:
    present = sorted(remaining(ctx))
    cfg = ctx.target.compose
    assert cfg is not None
    return PlanPart(
        summary=f"kill (timeout 0) and remove {len(present)} object(s) of compose project "
        f"{project(ctx)!r}",
        resources=[f"compose-project:{project(ctx)}", *present],
        operations=list(STOP_OPERATIONS),
        parameters={"timeout": 0, "docker_host": cfg.docker_host},
    )


def stop(ctx: StepContext) -> dict[str, Any]:
    from tasks import compose

    result = compose.stop_project(ctx.clients.docker, project(ctx))
    data = {
        "stopped": result.stopped,
        "removed_containers": result.removed_containers,
        "removed_networks": result.removed_networks,
        "elapsed_s": round(result.elapsed_s, 3),
    }
    ctx.record("stack.stopped", data)
    return data


def stack_running(ctx: StepContext, timeout_s: float = 15.0) -> list[str]:
    """Both services have a running container (raises ``StepFailed`` otherwise)."""
    from tasks import compose_restore

    return compose_restore.wait_running(ctx.clients.docker, project(ctx), SERVICES, timeout_s)


def _env(doc: dict[str, Any]) -> dict[str, str]:
    pairs = (doc.get("Config") or {}).get("Env") or []
    return dict(p.partition("=")[::2] for p in pairs)


def running_token_fingerprint(ctx: StepContext) -> str | None:
    import docker.errors

    try:
        doc = ctx.clients.docker.api.inspect_container(container_name(ctx, CLOUDFLARED))
    except docker.errors.NotFound:
        return None
    running = _env(doc).get("TUNNEL_TOKEN")
    return fingerprint(running) if running else None


def served_certificate(ctx: StepContext) -> str:
    """The certificate the running proxy serves: its ``tls.cert_file`` (from the proxy
    config) read from INSIDE the proxy container, as the proxy reloads it."""
    cert_file = DEFAULT_CERT_FILE
    cfg = ctx.target.compose
    if cfg is not None and cfg.config_dir is not None:
        try:
            config = yaml.safe_load((Path(cfg.config_dir) / "config.yaml").read_text())
            cert_file = ((config or {}).get("tls") or {}).get("cert_file") or cert_file
        except (OSError, yaml.YAMLError, AttributeError):
            cert_file = DEFAULT_CERT_FILE
    try:
        stream, _ = ctx.clients.docker.api.get_archive(container_name(ctx, PROXY), cert_file)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            for member in tar:
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    return extracted.read().decode("utf-8", errors="replace")
    except Exception as exc:  # noqa: BLE001 (any engine failure means: not served)
        raise StepFailed(
            ctx.step, f"cannot read {cert_file} from the proxy container ({type(exc).__name__})"
        ) from None
    raise StepFailed(ctx.step, f"{cert_file} is not a regular file in the proxy container")


RESTART_OPERATIONS = (
    Operation("docker", "POST", "/containers/{id}/rename"),
    Operation("docker", "POST", "/containers/{id}/stop", note="t=0"),
    *RECREATE_OPERATIONS,
    Operation("docker", "DELETE", "/containers/{id}", note="force=1"),
)


def restart_cloudflared(ctx: StepContext, token: str) -> float:
    """Re-creates cloudflared from its own inspect document with ``TUNNEL_TOKEN`` =
    ``token`` and returns the downtime (old stopped → new running), in seconds.

    Order, for resumability: rename the old container aside and stop it; create and
    start the new one under the Compose name; wait until it runs; remove the old
    one. A run killed in between finds the aside container on resume and finishes.
    Nothing is done when the running container already has this token.
    """
    import docker.errors

    from tasks import compose_restore

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
    compose_restore.recreate_from_inspect(
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
