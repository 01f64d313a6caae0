"""Compose adapter: a Docker Compose project seen through the Docker Engine API.

``docker compose`` finds a project's containers and networks by the labels it
put on them (``com.docker.compose.project=<project>``, FACTS §1), so this
adapter does the same with the ``docker`` SDK: capture evidence, stop and
remove everything (``docker compose down --timeout 0``) and verify nothing is
left. Re-creating containers from captured inspect documents is
:mod:`tasks.compose_restore`.

Every function takes its ``docker.DockerClient`` as a parameter (built from the
target's ``docker_host`` / ``DOCKER_HOST``): this module is the one place the
engine is substituted. Nothing here writes files or logs: raw bytes and inspect
documents are returned for the caller to redact and store. Inspect documents
hold the containers' environment (``TUNNEL_TOKEN``!): they are returned as
they are, but no error raised here ever quotes an environment value.
"""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from core.errors import ConfigError, McpIrError, NotInPlaceYet, OperationFailed, TransientError

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
PROXY_SERVICE = "mcp-proxy"
PROXY_CONFIG_PATH = "/etc/mcp-gateway/config.yaml"

# How errors name the operation that failed (adapters never name engine steps).
CAPTURE_OP = "compose.capture"
STOP_OP = "compose.stop"

T = TypeVar("T")


@dataclass(frozen=True)
class ContainerCapture:
    """Evidence of one container.

    Attributes:
        name: Container name (``<project>-<service>-1``).
        service: The Compose service label, if any.
        id: Full container id.
        logs: stdout and stderr interleaved, each line prefixed with the engine's
            timestamp (``docker logs --timestamps``); raw, NOT redacted.
        inspect: The engine's inspect document (``container.attrs``); holds the
            environment, NOT redacted.
        partial: True when the deadline cut the log read short (``logs`` then
            holds what arrived in time).
    """

    name: str
    service: str | None
    id: str
    logs: bytes
    inspect: dict[str, Any]
    partial: bool = False


@dataclass(frozen=True)
class CaptureResult:
    """Everything ``capture`` got within its deadline.

    Attributes:
        project: The Compose project.
        containers: One entry per container whose inspect document arrived.
        proxy_config: ``/etc/mcp-gateway/config.yaml`` read from the proxy
            container, or ``None`` when it could not be read (see ``errors``).
        timed_out: Names of containers (or ``"<name>:config"``) whose reads did
            not finish before the deadline.
        errors: Name → what failed, for reads that failed outright.
        elapsed_s: Wall time spent.
    """

    project: str
    containers: list[ContainerCapture]
    proxy_config: bytes | None
    timed_out: list[str]
    errors: dict[str, str]
    elapsed_s: float

    def by_service(self, service: str) -> ContainerCapture | None:
        """The capture of ``service``'s container, if any."""
        return next((c for c in self.containers if c.service == service), None)


@dataclass(frozen=True)
class StopResult:
    """What ``stop_project`` did.

    Attributes:
        project: The Compose project.
        stopped: Containers that were running and were stopped (killed).
        removed_containers: Containers removed.
        removed_networks: Networks removed.
        elapsed_s: Wall time spent, verification included.
    """

    project: str
    stopped: list[str] = field(default_factory=list)
    removed_containers: list[str] = field(default_factory=list)
    removed_networks: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


def project_filter(project: str) -> dict[str, str]:
    """The Engine API filter that selects a Compose project's objects."""
    if not project or not isinstance(project, str):
        raise ConfigError(f"project: must be a non-empty Compose project name, got {project!r}")
    return {"label": f"{PROJECT_LABEL}={project}"}


def project_containers(client: docker.DockerClient, project: str) -> list[Container]:
    """All containers of ``project``, running or not.

    Raises:
        TransientError: the engine cannot be reached or answered 5xx.
        OperationFailed: the engine refused the request.
    """
    return _call(
        CAPTURE_OP,
        f"listing containers of project {project}",
        lambda: client.containers.list(all=True, filters=project_filter(project)),
    )


def capture(
    client: docker.DockerClient,
    project: str,
    *,
    deadline_s: float = 5.0,
    since: datetime | None = None,
) -> CaptureResult:
    """Captures logs, inspect documents and the proxy config, bounded in time.

    Containment must never wait on evidence: every read runs in a small thread
    pool and whatever has not finished when ``deadline_s`` expires is reported
    in ``timed_out`` (logs read so far are kept, marked ``partial``) while its
    thread is abandoned. Log reads stream, so a huge log still yields a prefix.

    Args:
        client: Docker SDK client of the target's engine.
        project: The Compose project.
        deadline_s: Overall time budget in seconds, listing included.
        since: Only log lines at or after this time (``docker logs --since``).

    Returns:
        The capture; an empty project gives an empty result, not an error.

    Raises:
        TransientError: the engine could not list the project's containers
            within the deadline or could not be reached.
        OperationFailed: the engine refused the listing (4xx).
    """
    if deadline_s <= 0:
        raise OperationFailed(CAPTURE_OP, f"deadline_s: must be positive, got {deadline_s}")
    started = time.monotonic()
    end = started + deadline_s
    pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix=f"capture-{project}")
    try:
        listing = pool.submit(
            _call,
            CAPTURE_OP,
            f"listing containers of project {project}",
            lambda: client.api.containers(all=True, filters=project_filter(project)),
        )
        done, _ = wait([listing], timeout=max(0.0, end - time.monotonic()))
        if not done:
            raise TransientError(
                f"{CAPTURE_OP}: listing containers of project {project} did not answer "
                f"within {deadline_s:g}s"
            )
        summaries = listing.result()

        inspects: dict[str, Future[dict[str, Any]]] = {}
        logs: dict[str, tuple[_LogBuffer, Future[None]]] = {}
        config: tuple[str, Future[bytes]] | None = None
        names: dict[str, str] = {}
        for summary in summaries:
            cid = summary["Id"]
            name = _summary_name(summary)
            names[cid] = name
            inspects[cid] = pool.submit(client.api.inspect_container, cid)
            buffer = _LogBuffer()
            logs[cid] = (buffer, pool.submit(_read_logs, client, cid, since, buffer))
            labels = summary.get("Labels") or {}
            if labels.get(SERVICE_LABEL) == PROXY_SERVICE and config is None:
                config = (name, pool.submit(_read_file, client, cid, PROXY_CONFIG_PATH))

        every: list[Future[Any]] = [*inspects.values(), *(f for _, f in logs.values())]
        if config is not None:
            every.append(config[1])
        wait(every, timeout=max(0.0, end - time.monotonic()))

        containers: list[ContainerCapture] = []
        timed_out: list[str] = []
        errors: dict[str, str] = {}
        for cid, name in names.items():
            inspect_future = inspects[cid]
            buffer, log_future = logs[cid]
            if not inspect_future.done() or not log_future.done():
                timed_out.append(name)
            inspect_doc = _outcome(inspect_future, name, "inspect", errors)
            _outcome(log_future, name, "logs", errors)
            if inspect_doc is None:
                continue
            labels = (inspect_doc.get("Config") or {}).get("Labels") or {}
            containers.append(
                ContainerCapture(
                    name=name,
                    service=labels.get(SERVICE_LABEL),
                    id=cid,
                    logs=buffer.value(),
                    inspect=inspect_doc,
                    partial=not log_future.done() or log_future.exception() is not None,
                )
            )
        proxy_config: bytes | None = None
        if config is None:
            if names:
                errors["mcp-proxy:config"] = "no container of service mcp-proxy in the project"
        else:
            config_name, config_future = config
            if not config_future.done():
                timed_out.append(f"{config_name}:config")
            proxy_config = _outcome(config_future, config_name, "config", errors)
        return CaptureResult(
            project=project,
            containers=sorted(containers, key=lambda c: c.name),
            proxy_config=proxy_config,
            timed_out=timed_out,
            errors=errors,
            elapsed_s=time.monotonic() - started,
        )
    finally:
        # Abandon reads still blocked on the engine: containment goes on.
        pool.shutdown(wait=False, cancel_futures=True)


def stop_project(client: docker.DockerClient, project: str) -> StopResult:
    """Stops and removes every container and network of ``project``, then verifies.

    ``docker compose down --timeout 0`` semantics: running containers are
    stopped with timeout 0 (SIGKILL at once), then every container is removed
    (force, anonymous volumes kept as evidence), then the project's networks.
    Safe to re-run: a container or network that is already gone (404, also
    between listing and acting on it) is not a failure.

    Returns:
        What was stopped and removed.

    Raises:
        OperationFailed: something of the project is still present afterwards (the
            detail names it and the engine's errors).
        TransientError: the engine cannot be reached.
    """
    started = time.monotonic()
    result = StopResult(project=project)
    failures: dict[str, str] = {}
    summaries = _call(
        STOP_OP,
        f"listing containers of project {project}",
        lambda: client.api.containers(all=True, filters=project_filter(project)),
    )
    lock = threading.Lock()

    def down(summary: dict[str, Any]) -> None:
        cid, name = summary["Id"], _summary_name(summary)
        try:
            if str(summary.get("State", "")).lower() in ("running", "paused", "restarting"):
                client.api.stop(cid, timeout=0)
                with lock:
                    result.stopped.append(name)
            client.api.remove_container(cid, v=False, force=True)
            with lock:
                result.removed_containers.append(name)
        except docker.errors.NotFound:
            # Removed by someone else meanwhile: the goal is reached, nothing to record.
            return
        except docker.errors.APIError as exc:
            with lock:
                failures[name] = _explain(exc)
        except requests.exceptions.RequestException as exc:
            with lock:
                failures[name] = f"engine unreachable ({type(exc).__name__})"

    if summaries:
        with ThreadPoolExecutor(max_workers=min(8, len(summaries))) as pool:
            list(pool.map(down, summaries))

    networks = _call(
        STOP_OP,
        f"listing networks of project {project}",
        lambda: client.networks.list(filters=project_filter(project)),
    )
    for network in networks:
        try:
            network.remove()
            result.removed_networks.append(network.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            failures[f"network {network.name}"] = _explain(exc)
        except requests.exceptions.RequestException as exc:
            failures[f"network {network.name}"] = f"engine unreachable ({type(exc).__name__})"

    left = remaining(client, project)
    if left:
        why = "; ".join(f"{k}: {v}" for k, v in sorted(failures.items()))
        # Something else may still be tearing the project down: the runner's retry
        # policy runs the step again.
        raise NotInPlaceYet(
            STOP_OP,
            f"project {project}: still present after stop: {', '.join(left)}"
            + (f" ({why})" if why else ""),
        )
    return StopResult(
        project=project,
        stopped=sorted(result.stopped),
        removed_containers=sorted(result.removed_containers),
        removed_networks=sorted(result.removed_networks),
        elapsed_s=time.monotonic() - started,
    )


def remaining(client: docker.DockerClient, project: str) -> list[str]:
    """Names of the containers (any state) and networks of ``project`` still present.

    Raises:
        TransientError: the engine cannot be reached.
    """
    containers = _call(
        STOP_OP,
        f"listing containers of project {project}",
        lambda: client.api.containers(all=True, filters=project_filter(project)),
    )
    networks = _call(
        STOP_OP,
        f"listing networks of project {project}",
        lambda: client.networks.list(filters=project_filter(project)),
    )
    names = sorted(_summary_name(c) for c in containers)
    return names + sorted(f"network {n.name}" for n in networks)


class _LogBuffer:
    """Chunks appended by a reader thread, readable at any time."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()

    def append(self, chunk: bytes) -> None:
        with self._lock:
            self._chunks.append(chunk)

    def value(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)


def _read_logs(
    client: docker.DockerClient, cid: str, since: datetime | None, buffer: _LogBuffer
) -> None:
    kwargs: dict[str, Any] = {
        "stdout": True,
        "stderr": True,
        "timestamps": True,
        "stream": True,
        "follow": False,
    }
    if since is not None:
        kwargs["since"] = since
    for chunk in client.api.logs(cid, **kwargs):
        buffer.append(chunk)


def _read_file(client: docker.DockerClient, cid: str, path: str) -> bytes:
    stream, _stat = client.api.get_archive(cid, path)
    data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            if member.isfile():
                extracted = tar.extractfile(member)
                if extracted is not None:
                    return extracted.read()
    raise FileNotFoundError(f"{path} is not a regular file in the container")


def _outcome(future: Future[T], name: str, what: str, errors: dict[str, str]) -> T | None:
    if not future.done():
        return None
    exc = future.exception()
    if exc is None:
        return future.result()
    key = name if what != "config" else f"{name}:config"
    if isinstance(exc, docker.errors.APIError):
        errors[key] = f"{what}: {_explain(exc)}"
    elif isinstance(exc, McpIrError):
        errors[key] = exc.detail
    else:
        errors[key] = f"{what}: {type(exc).__name__}: {exc}"
    return None


def _call(
    op: str,
    what: str,
    fn: Callable[[], T],
    scrub: Callable[[str], str] = lambda s: s,
) -> T:
    """Runs one Engine API call; failures become core errors naming the operation."""
    try:
        return fn()
    except docker.errors.APIError as exc:
        status = exc.status_code
        detail = scrub(f"{what}: {_explain(exc)}")
        if status is None or status >= 500 or status == 429:
            raise TransientError(f"{op}: {detail}") from None
        raise OperationFailed(op, detail) from None
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise TransientError(f"{op}: {what}: engine unreachable ({type(exc).__name__})") from None


def _explain(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return f"engine answered {exc.status_code}: {explanation or exc}"


def _summary_name(summary: dict[str, Any]) -> str:
    names = summary.get("Names") or [summary.get("Id", "?")[:12]]
    return str(names[0]).lstrip("/")


__all__ = [
    "CaptureResult",
    "ContainerCapture",
    "StopResult",
    "capture",
    "project_containers",
    "remaining",
    "stop_project",
]
