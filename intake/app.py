"""The intake ASGI app: ``GET /healthz``, ``POST /alerts/{source}`` and (optionally)
``GET /metrics``.

Order of checks for an alert, each refusal logged without the body or any secret:
unknown source 404 -> declared or streamed body over the limit 413 -> signature or
token 401 (the answer echoes nothing) -> not JSON 400 -> not the source's format 422
-> no rule maps it: kept in the dead-letter table, 202 ``dead_letter``. Anything that
authenticated is written to the store before the answer: a new incident 202, the same
alert again within the dedup window 200 with the existing incident id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from core.redact import Redactor
from intake.auth import verify_bearer, verify_hmac
from intake.config import IntakeRuntime, SettingsLike, load_intake
from intake.errors import MalformedPayload, PayloadSchemaError, StoreUnavailable, UnmappedAlert
from intake.formats import decode_json, parse_alert
from intake.models import MappedAlert, NormalizedAlert
from intake.rules import map_alert
from intake.store import AlertStore
from intake.worker import Launcher, LaunchWorker, default_launcher
from runbook.metrics import AlertMetrics, Metrics, build_metrics

log = logging.getLogger("mcp_ir.intake")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REDACT = Redactor()


@dataclass
class IntakeService:
    """The running parts behind the app (``app.state.intake``)."""

    runtime: IntakeRuntime
    store: AlertStore
    worker: LaunchWorker
    metrics: AlertMetrics | None = None

    def close(self) -> None:
        """Stops the worker, then commits and closes the store."""
        self.worker.stop()
        self.store.close()


def dedup_key(alert: NormalizedAlert) -> str:
    """The sender's alert id, else a fingerprint of the normalized content."""
    if alert.alert_id:
        return "id:" + alert.alert_id
    canonical = json.dumps(alert.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "fp:" + hashlib.sha256(canonical.encode()).hexdigest()


def build_trigger(
    source: str, mapped: MappedAlert, key: str, body_sha256: str, received_at: float
) -> dict[str, Any]:
    """The ``trigger`` dict handed to the launcher (JSON-safe, no secrets).

    ``auto_contain`` tells the playbook that capture_evidence and stop_stack may run
    without a human gate (break-glass) because the severity reached ``auto_contain_at``.
    """
    alert = mapped.alert
    return {
        "kind": "alert",
        "source": source,
        "format": alert.format,
        "alert_id": alert.alert_id,
        "title": alert.title,
        "severity": mapped.severity.value,
        "auto_contain": mapped.auto_contain,
        "rule": mapped.rule_index,
        "occurred_at": alert.occurred_at.isoformat() if alert.occurred_at else None,
        "received_at": datetime.fromtimestamp(received_at, UTC).isoformat(),
        "link": alert.link,
        "dedup_key": key,
        "body_sha256": body_sha256,
    }


def _log_name(name: str) -> str:
    return name if _SAFE_NAME.match(name) else "<invalid name>"


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


class _AlertEndpoint:
    def __init__(self, service: IntakeService) -> None:
        self.service = service
        self.config = service.runtime.config

    def _count(self, source: str, code: str) -> None:
        if self.service.metrics is not None:
            self.service.metrics.rejected(source, code)

    def _refuse(
        self,
        request: Request,
        source: str,
        status: int,
        reason: str,
        body: dict[str, Any],
        code: str,
    ) -> JSONResponse:
        self._count(source, code)
        # The reason may name a field of the payload (422): cut it and pass it through
        # the redactor so no fragment of a body can carry a secret into the log.
        log.warning(
            "alert refused: source=%s status=%d reason=%s client=%s",
            _log_name(source),
            status,
            _REDACT.text(reason)[:200],
            _client(request),
        )
        return JSONResponse(body, status_code=status)

    async def _read_body(self, request: Request, limit: int) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None  # stop reading: never buffer an unbounded body
            chunks.append(chunk)
        return b"".join(chunks)

    async def _dead_letter(
        self, name: str, reason: str, body: bytes, sha: str, received_at: float
    ) -> int:
        future = self.service.store.dead_letter(
            source=name, reason=reason, body=body, body_sha256=sha, received_at=received_at
        )
        return await asyncio.wrap_future(future)

    async def handle(self, request: Request) -> JSONResponse:
        """Answers ``POST /alerts/{source}``."""
        received_at = time.time()
        name = request.path_params["source"]
        if self.service.metrics is not None:
            self.service.metrics.received(name)
        source = self.config.sources.get(name)
        if source is None:
            return self._refuse(
                request, name, 404, "unknown source", {"error": "unknown source"}, "unknown_source"
            )
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isascii() or not declared.isdigit():
                return self._refuse(
                    request,
                    name,
                    400,
                    "bad Content-Length",
                    {"error": "invalid Content-Length"},
                    "bad_content_length",
                )
            if int(declared) > limit:
                return self._refuse(
                    request, name, 413, "declared body too large", _too_large(limit), "too_large"
                )
        body = await self._read_body(request, limit)
        if body is None:
            return self._refuse(
                request, name, 413, "body too large", _too_large(limit), "too_large"
            )

        secrets = self.service.runtime.secrets[name].values
        if source.auth == "bearer":
            auth = verify_bearer(request.headers, secrets)
        else:
            auth = verify_hmac(
                request.headers, body, secrets, tolerance_s=self.config.timestamp_tolerance_s
            )
        if not auth.ok:
            return self._refuse(
                request, name, 401, auth.reason, {"error": "unauthorized"}, "unauthorized"
            )

        sha = hashlib.sha256(body).hexdigest()
        try:
            alert = parse_alert(source.format, decode_json(body))
        except MalformedPayload as exc:
            await self._keep_rejected(name, exc.detail, body, sha, received_at)
            return self._refuse(request, name, 400, exc.detail, {"error": exc.detail}, "malformed")
        except PayloadSchemaError as exc:
            await self._keep_rejected(name, exc.detail, body, sha, received_at)
            return self._refuse(
                request,
                name,
                422,
                exc.detail,
                {"error": exc.detail, "field": exc.field},
                "schema",
            )

        try:
            mapped = map_alert(
                alert,
                source,
                auto_contain_at=self.config.auto_contain_at,
                received_at=datetime.fromtimestamp(received_at, UTC),
            )
        except UnmappedAlert as exc:
            try:
                letter = await self._dead_letter(name, exc.detail, body, sha, received_at)
            except StoreUnavailable as store_exc:
                self._count(name, "store_unavailable")
                return _unavailable(name, store_exc)
            self._count(name, "unmapped")
            log.warning(
                "alert dead-lettered: source=%s id=%d reason=%s",
                name,
                letter,
                _REDACT.text(exc.detail)[:200],
            )
            return JSONResponse(
                {"status": "dead_letter", "dead_letter_id": letter, "reason": exc.detail},
                status_code=202,
            )

        key = dedup_key(alert)
        trigger = build_trigger(name, mapped, key, sha, received_at)
        try:
            receipt = await asyncio.wrap_future(
                self.service.store.accept(
                    source=name,
                    dedup_key=key,
                    mapped=mapped,
                    trigger=trigger,
                    body_sha256=sha,
                    window_s=self.config.dedup_window.total_seconds(),
                    received_at=received_at,
                )
            )
        except StoreUnavailable as exc:
            self._count(name, "store_unavailable")
            return _unavailable(name, exc)
        if receipt.created:
            self.service.worker.notify()
            return JSONResponse(
                {"incident_id": receipt.incident_id, "status": "accepted"}, status_code=202
            )
        if self.service.metrics is not None:
            self.service.metrics.deduplicated(name)
        return JSONResponse(
            {"incident_id": receipt.incident_id, "status": "duplicate"}, status_code=200
        )

    async def _keep_rejected(
        self, name: str, reason: str, body: bytes, sha: str, received_at: float
    ) -> None:
        # The sender is told (400/422), and the authenticated body is kept as well, so a
        # format change on the SIEM side loses nothing.
        try:
            await self._dead_letter(name, reason, body, sha, received_at)
        except StoreUnavailable as exc:
            log.error("could not keep a refused alert from %s: %s", name, exc.detail)


def _too_large(limit: int) -> dict[str, Any]:
    return {"error": f"body larger than {limit} bytes"}


def _unavailable(name: str, exc: StoreUnavailable) -> JSONResponse:
    log.error("alert from %s not stored: %s", name, exc.detail)
    return JSONResponse({"error": "alert store unavailable, retry"}, status_code=503)


async def _healthz(request: Request) -> JSONResponse:
    service: IntakeService = request.app.state.intake
    if service.store.closed:
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


def _metrics_endpoint(built: Metrics) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        # Collecting reads trails and SQLite files: off the event loop.
        body, content_type = await run_in_threadpool(built.render)
        return Response(body, media_type=content_type)

    return endpoint


def create_app(
    settings: SettingsLike,
    *,
    launcher: Launcher | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    environ: dict[str, str] | None = None,
    metrics: bool = False,
    collectors: Sequence[Collector] = (),
) -> Starlette:
    """Builds the intake app and starts its store writer and launch worker.

    Args:
        settings: ``runbook.settings.Settings``.
        launcher: what starts breach-response (default
            ``runbook.launch.launch_incident``); it must be idempotent on the incident id.
        extra_routes: more routes on the same server, e.g. the Slack interactivity
            routes from ``notifications.slack_interactions.create_slack_routes``.
        environ: where source secrets are read (default ``os.environ``).
        metrics: also serve ``GET /metrics`` (``runbook.metrics``: alert counters,
            incidents by state, gate waits, time to containment, outbox depth).
        collectors: more Prometheus collectors for ``/metrics`` (the warm pool).

    Raises:
        ConfigError: invalid ``intake:`` section, unset secret variable, or no launcher.
    """
    runtime = load_intake(settings, environ)
    chosen = launcher if launcher is not None else default_launcher()
    store = AlertStore(runtime.store_path)
    worker = LaunchWorker(store, settings, chosen)
    counters = None
    routes: list[BaseRoute] = [
        Route("/healthz", _healthz, methods=["GET"]),
    ]
    if metrics:
        built = build_metrics(
            Path(settings.evidence_dir), runtime.config.sources, collectors=collectors
        )
        counters = built.alerts
        routes.append(Route("/metrics", _metrics_endpoint(built), methods=["GET"]))
    service = IntakeService(runtime, store, worker, counters)
    worker.start()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        service.close()

    routes += [
        Route("/alerts/{source}", _AlertEndpoint(service).handle, methods=["POST"]),
        *extra_routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.intake = service
    return app
