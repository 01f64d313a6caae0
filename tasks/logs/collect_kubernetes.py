"""Collect a pod container's logs for a window through the Kubernetes API.

``read_namespaced_pod_log`` is streamed (``_preload_content=False``) so memory
stays bounded; ``since_seconds`` (whole seconds back from now) narrows what the
kubelet sends and every line is then filtered exactly on its ``timestamps=True``
RFC3339Nano prefix.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from core.errors import TransientError
from core.redact import Redactor

from .artifact import ArtifactWriter
from .model import CollectedArtifact, Window

CHUNK = 1 << 16


def collect_pod(
    api_client: client.ApiClient,
    namespace: str,
    pod: str,
    container: str,
    window: Window,
    out_dir: Path,
    *,
    name: str | None = None,
    previous: bool = False,
    now: datetime | None = None,
    redactor: Redactor | None = None,
) -> CollectedArtifact:
    """Streams one container's log for ``window`` into a hashed artifact.

    Args:
        api_client: a ``kubernetes.client.ApiClient`` (kubeconfig or in-cluster).
        namespace, pod, container: what to read.
        window: lines with ``start <= t < end`` are kept.
        out_dir: where the artifact file is written.
        name: artifact/source name (default ``<pod>.<container>``).
        previous: read the previous (crashed) instance's log.
        now: the clock ``since_seconds`` is computed from (default: now, UTC).
        redactor: known secret values to redact on top of the known shapes.

    Returns:
        The artifact; a pod or container that is gone (404/400) yields an empty
        artifact with an ``unreadable`` problem.

    Raises:
        TransientError: the API server failed (5xx, 429) or could not be reached.
    """
    writer = ArtifactWriter(out_dir, name or f"{pod}.{container}", window, redactor)
    moment = now or datetime.now(UTC)
    since_seconds = max(1, math.ceil((moment - window.start).total_seconds()))
    try:
        response = client.CoreV1Api(api_client).read_namespaced_pod_log(
            pod,
            namespace,
            container=container,
            timestamps=True,
            since_seconds=since_seconds,
            previous=previous,
            _preload_content=False,
        )
        try:
            writer.offer_stream(response.stream(CHUNK))
        finally:
            response.release_conn()
    except ApiException as exc:
        if exc.status >= 500 or exc.status == 429:
            writer.abort()
            raise TransientError(f"pod log {namespace}/{pod}/{container}: {exc.status}") from None
        writer.problem(
            "unreadable", f"pod log {namespace}/{pod}/{container}: {exc.status} {exc.reason}"
        )
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        writer.abort()
        raise TransientError(f"pod log {namespace}/{pod}/{container}: {exc}") from None
    return writer.finish()
