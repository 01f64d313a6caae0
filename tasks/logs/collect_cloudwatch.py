"""Collect a CloudWatch Logs group for a window (``filter_log_events``, paginated).

CloudWatch timestamps are milliseconds and ``endTime`` is inclusive, so the query
is widened to whole milliseconds and each event is then kept only if
``start <= t < end`` exactly. Events are written as ``<RFC3339Nano> <message>``
lines, the same shape as Docker's ``--timestamps`` output.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.errors import TransientError
from core.redact import Redactor

from .artifact import ArtifactWriter
from .model import CollectedArtifact, Window
from .timestamps import format_ns

_TRANSIENT = {"ThrottlingException", "ServiceUnavailableException", "InternalFailure"}


def collect_log_group(
    logs_client: Any,
    log_group: str,
    window: Window,
    out_dir: Path,
    *,
    stream_names: list[str] | None = None,
    name: str | None = None,
    page_size: int = 10_000,
    redactor: Redactor | None = None,
) -> CollectedArtifact:
    """Pages through ``log_group``'s events in ``window`` into a hashed artifact.

    Args:
        logs_client: ``boto3.client("logs")`` (honours ``AWS_ENDPOINT_URL``).
        log_group: the log group name.
        window: events with ``start <= t < end`` are kept.
        out_dir: where the artifact file is written.
        stream_names: restrict to these log streams.
        name: artifact/source name (default: the group name).
        page_size: events per page (``limit``), pages follow ``nextToken``.
        redactor: known secret values to redact on top of the known shapes.

    Returns:
        The artifact; a missing group yields an empty artifact with an
        ``unreadable`` problem.

    Raises:
        TransientError: throttling or a service-side failure.
    """
    writer = ArtifactWriter(out_dir, name or log_group, window, redactor)
    start_ns, end_ns = window.start_ns, window.end_ns
    request: dict[str, Any] = {
        "logGroupName": log_group,
        "startTime": start_ns // 1_000_000,
        "endTime": math.ceil(end_ns / 1_000_000),
        "limit": page_size,
    }
    if stream_names:
        request["logStreamNames"] = stream_names
    try:
        while True:
            page = logs_client.filter_log_events(**request)
            for event in page.get("events", []):
                ns = int(event["timestamp"]) * 1_000_000
                if start_ns <= ns < end_ns:
                    message = str(event.get("message", "")).rstrip("\n")
                    for i, part in enumerate(message.split("\n")):
                        text = f"{format_ns(ns)} {part}" if i == 0 else part
                        writer.write(text.encode("utf-8"))
            token = page.get("nextToken")
            if not token or token == request.get("nextToken"):
                break
            request["nextToken"] = token
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _TRANSIENT or status >= 500:
            writer.abort()
            raise TransientError(f"filter_log_events {log_group}: {code or status}") from None
        writer.problem("unreadable", f"log group {log_group}: {code}")
    except BotoCoreError as exc:
        writer.abort()
        raise TransientError(f"filter_log_events {log_group}: {exc}") from None
    return writer.finish()
