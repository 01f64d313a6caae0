"""Collect a container's logs for a window through the Docker Engine API.

The engine filters by whole seconds (``since``/``until``), so the request is
widened to whole seconds and every line is then filtered exactly on its
``--timestamps`` prefix (RFC3339Nano) by :class:`ArtifactWriter`.
"""

from __future__ import annotations

import math
from pathlib import Path

import docker
import docker.errors
import requests

from core.errors import TransientError
from core.redact import Redactor

from .artifact import ArtifactWriter
from .model import CollectedArtifact, Window
from .timestamps import NS


def collect_container(
    client: docker.DockerClient,
    container: str,
    window: Window,
    out_dir: Path,
    *,
    name: str | None = None,
    redactor: Redactor | None = None,
) -> CollectedArtifact:
    """Streams ``container``'s stdout+stderr for ``window`` into a hashed artifact.

    Args:
        client: a docker SDK client (``docker.from_env()`` honours ``DOCKER_HOST``).
        container: container id or name.
        window: lines with ``start <= t < end`` are kept; pass
            ``window.widened(config.baseline_period)`` to feed the rate baseline.
        out_dir: where the artifact file is written.
        name: artifact/source name (default: the container name).
        redactor: known secret values to redact on top of the known shapes.

    Returns:
        The artifact; a container that no longer exists yields an empty artifact with
        an ``unreadable`` problem (a finding about the log, not a crash).

    Raises:
        TransientError: the engine failed (5xx) or could not be reached.
    """
    writer = ArtifactWriter(out_dir, name or container, window, redactor)
    try:
        target = client.containers.get(container)
        since = math.floor(window.start_ns / NS)
        until = math.ceil(window.end_ns / NS) + 1
        stream = target.logs(
            stdout=True,
            stderr=True,
            timestamps=True,
            since=since,
            until=until,
            stream=True,
            follow=False,  # the SDK would default follow to stream=True: never end
        )
        writer.offer_stream(stream)
    except docker.errors.NotFound as exc:
        writer.problem("unreadable", f"container {container} not found: {exc.explanation}")
    except docker.errors.APIError as exc:
        status = exc.status_code or 0
        if status >= 500 or status == 429:
            writer.abort()
            raise TransientError(f"docker logs {container}: engine error {status}") from None
        writer.problem("unreadable", f"docker logs {container} refused ({status}): {exc}")
    except requests.exceptions.ConnectionError as exc:
        writer.abort()
        raise TransientError(f"docker logs {container}: engine unreachable ({exc})") from None
    return writer.finish()
