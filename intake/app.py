"""The intake ASGI app: ``GET /healthz``, ``POST /alerts/{source}`` and (optionally)
``GET /metrics``.

Order of checks for an alert, each refusal logged without the body or any secret:
unknown source 404 -> body over the limit 413 (dead-lettered first: metadata,
SHA-256, the first 2 KiB redacted) -> authentication 401 (the answer echoes nothing;
see :mod:`intake.authenticate`) -> not JSON (or not a form where the sender sends
forms) 400 -> not the source's format 422 -> per alert (one, or N for a grouped
sender): a firing alert no rule maps is dead-lettered (202 ``dead_letter``); anything
else is stored with its decision (:mod:`intake.decisions`) before the answer: ``open``
202, ``join`` 202, ``duplicate`` 200, ``resolve`` 200, ``ignore`` 200; an observe-mode
source answers 200 ``observed`` with the decision and launches nothing.
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
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from core.redact import Redactor
from intake.authenticate import authenticate
from intake.config import IntakeRuntime, SettingsLike, SourceConfig, load_intake
from intake.decisions import IngestRequest
from intake.entra import EntraVerifier
from intake.errors import MalformedPayload, PayloadSchemaError, StoreUnavailable, UnmappedAlert
from intake.formats import decode_body, parse_batch
from intake.models import MappedAlert, NormalizedAlert
from intake.receive import Received, read_body
from intake.rules import map_alert
from intake.server_log import install_access_log_filter
from intake.store import AlertStore
from intake.worker import LaunchCollector, Launcher, LaunchWorker, default_launcher
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
    source: str,
    mapped: MappedAlert,
    key: str,
    body_sha256: str,
    received_at: float,
    truncated: int = 0,
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
        # Only a firing alert may contain without a human gate.
        "auto_contain": mapped.auto_contain and alert.status == "firing",
        "status": alert.status,
        "rule": mapped.rule_index,
        "occurred_at": alert.occurred_at.isoformat() if alert.occurred_at else None,
        "received_at": datetime.fromtimestamp(received_at, UTC).isoformat(),
        "link": alert.link,
        "dedup_key": key,
        "body_sha256": body_sha256,
        "truncated_alerts": truncated,
    }


def _log_name(name: str) -> str:
    return name if _SAFE_NAME.match(name) else "<invalid name>"


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


class _AlertEndpoint:
    def __init__(self, service: IntakeService) -> None:
        self.service = service
        self.config = service.runtime.config
        # Redacts the shapes every redactor knows plus this intake's own secrets, so
        # a sender that pasted one into a body never gets it into a dead letter.
        self.redact = Redactor()
        for secrets in service.runtime.secrets.values():
            for value in (*secrets.values, *secrets.signature_values):
                self.redact.add(value)
        self.entra = {
            name: EntraVerifier(src.entra_id)
            for name, src in self.config.sources.items()
            if src.entra_id is not None
        }

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

    async def _dead_letter(
        self,
        name: str,
        reason: str,
        body: bytes,
        sha: str,
        received_at: float,
        *,
        body_bytes: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        future = self.service.store.dead_letter(
            source=name,
            reason=reason,
            body=body,
            body_sha256=sha,
            received_at=received_at,
            body_bytes=body_bytes,
            meta=meta,
        )
        return await asyncio.wrap_future(future)

    async def _too_large(
        self, request: Request, name: str, received: Received, received_at: float
    ) -> JSONResponse:
        limit = self.config.max_body_bytes
        preview = self.redact.text(received.head.decode("utf-8", "replace")).encode("utf-8")
        meta = {
            "content_type": request.headers.get("content-type", "")[:200],
            "user_agent": request.headers.get("user-agent", "")[:200],
            "declared_length": request.headers.get("content-length", "")[:20],
            "client": _client(request),
            "read_bytes": received.size,
            "stopped_at_cap": received.capped,
            "limit": limit,
        }
        try:
            letter = await self._dead_letter(
                name,
                f"body larger than {limit} bytes ({received.size}"
                + ("+" if received.capped else "")
                + " received); kept: SHA-256 and the first 2 KiB, redacted",
                preview,
                received.sha256,
                received_at,
                body_bytes=received.size,
                meta=meta,
            )
        except StoreUnavailable as exc:
            log.error("could not dead-letter an over-size alert from %s: %s", name, exc.detail)
            letter = None
        response = self._refuse(
            request, name, 413, "body too large", _too_large(limit), "too_large"
        )
        if letter is not None:
            response = JSONResponse(
                {**_too_large(limit), "dead_letter_id": letter}, status_code=413
            )
        return response

    async def handle(self, request: Request) -> JSONResponse:
        """Answers ``POST /alerts/{source}`` and ``POST /alerts/{source}/{token}``."""
        received_at = time.time()
        name = request.path_params["source"]
        path_token = request.path_params.get("token")
        if self.service.metrics is not None:
            self.service.metrics.received(name)
        source = self.config.sources.get(name)
        if source is None:
            return self._refuse(
                request, name, 404, "unknown source", {"error": "unknown source"}, "unknown_source"
            )
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isascii() or not declared.isdigit()):
            return self._refuse(
                request,
                name,
                400,
                "bad Content-Length",
                {"error": "invalid Content-Length"},
                "bad_content_length",
            )
        received = await read_body(request.stream(), self.config.max_body_bytes)
        if received.body is None:
            return await self._too_large(request, name, received, received_at)
        body = received.body

        check = partial(
            authenticate,
            source,
            self.service.runtime.secrets[name],
            request.headers,
            body,
            path_token=path_token,
            tolerance_s=self.config.timestamp_tolerance_s,
            entra=self.entra.get(name),
        )
        # Entra ID may fetch the tenant's keys: that blocking call stays off the loop.
        auth = await run_in_threadpool(check) if source.auth == "entra-id" else check()
        if not auth.ok:
            return self._refuse(
                request, name, 401, auth.reason, {"error": "unauthorized"}, "unauthorized"
            )

        sha = received.sha256
        try:
            document = decode_body(body, request.headers.get("content-type", ""), source.format)
            batch = parse_batch(
                source.format,
                document,
                fields=source.fields or None,
                severity_map=source.severity_map or None,
            )
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
        if batch.truncated:
            log.warning(
                "alert group from %s arrived truncated: %d alert(s) left out by the sender",
                name,
                batch.truncated,
            )
        webhook_id = request.headers.get("x-webhook-id") or request.headers.get("webhook-id")
        results: list[dict[str, Any]] = []
        for alert in batch.alerts:
            try:
                one = await self._one(
                    name,
                    source,
                    alert,
                    (sha, received_at, batch.truncated, body),
                    webhook_id if len(batch.alerts) == 1 else None,
                )
                results.append(one)
            except StoreUnavailable as exc:
                self._count(name, "store_unavailable")
                return _unavailable(name, exc)
        return _answer(results, batch.truncated, len(batch.alerts) > 1 or source.format in GROUPED)

    async def _one(
        self,
        name: str,
        source: SourceConfig,
        alert: NormalizedAlert,
        delivery: tuple[str, float, int, bytes],
        webhook_id: str | None,
    ) -> dict[str, Any]:
        sha, received_at, truncated, body = delivery
        mapped: MappedAlert | None
        try:
            mapped = map_alert(
                alert,
                source,
                auto_contain_at=self.config.auto_contain_at,
                received_at=datetime.fromtimestamp(received_at, UTC),
            )
        except UnmappedAlert as exc:
            if alert.status == "firing" and not alert.update_only:
                letter = await self._dead_letter(name, exc.detail, body, sha, received_at)
                self._count(name, "unmapped")
                log.warning(
                    "alert dead-lettered: source=%s id=%d reason=%s",
                    name,
                    letter,
                    _REDACT.text(exc.detail)[:200],
                )
                return {
                    "alert_id": alert.alert_id,
                    "decision": "dead_letter",
                    "dead_letter_id": letter,
                    "reason": exc.detail,
                    "incident_id": None,
                }
            mapped = None
        key = dedup_key(alert)
        trigger = build_trigger(name, mapped, key, sha, received_at, truncated) if mapped else {}
        outcome = await asyncio.wrap_future(
            self.service.store.ingest(
                IngestRequest(
                    source=name,
                    mode=source.mode,
                    dedup_key=key,
                    alert=alert,
                    mapped=mapped,
                    trigger=trigger,
                    body_sha256=sha,
                    window_s=self.config.dedup_window.total_seconds(),
                    received_at=received_at,
                    truncated=truncated,
                    webhook_id=webhook_id,
                )
            )
        )
        if outcome.created:
            self.service.worker.notify()  # joins and resolves wait for the next poll (1 s)
        if outcome.decision == "duplicate" and self.service.metrics is not None:
            self.service.metrics.deduplicated(name)
        if log.isEnabledFor(logging.INFO):  # the redactor is not free: only when logged
            log.info(
                "alert %s: source=%s status=%s decision=%s incident=%s mode=%s",
                _REDACT.text(alert.alert_id or key)[:120],
                name,
                alert.status,
                outcome.decision,
                outcome.incident_id,
                source.mode,
            )
        return {
            "alert_id": alert.alert_id,
            "status": alert.status,
            "decision": outcome.decision,
            "incident_id": outcome.incident_id,
            "mode": source.mode,
        }

    async def _keep_rejected(
        self, name: str, reason: str, body: bytes, sha: str, received_at: float
    ) -> None:
        # The sender is told (400/422), and the authenticated body is kept as well, so a
        # format change on the SIEM side loses nothing.
        try:
            await self._dead_letter(name, reason, body, sha, received_at)
        except StoreUnavailable as exc:
            log.error("could not keep a refused alert from %s: %s", name, exc.detail)


GROUPED = frozenset({"alertmanager", "grafana"})
_WORDS = {
    "open": ("accepted", 202),
    "join": ("joined", 202),
    "duplicate": ("duplicate", 200),
    "resolve": ("resolved", 200),
    "ignore": ("ignored", 200),
    "dead_letter": ("dead_letter", 202),
}


def _answer(results: list[dict[str, Any]], truncated: int, grouped: bool) -> JSONResponse:
    """One alert: ``{"incident_id", "status", "decision"}`` (plus the dead-letter id);
    a group: every alert's decision, and ``truncated_alerts``. Observe-mode sources
    answer ``status: observed`` with the decision launch mode would have taken."""
    if not grouped:
        result = results[0]
        word, code = _WORDS[result["decision"]]
        if result.get("mode") == "observe":
            word, code = "observed", 200
        if result["decision"] == "dead_letter":
            return JSONResponse(
                {
                    "status": "dead_letter",
                    "dead_letter_id": result["dead_letter_id"],
                    "reason": result["reason"],
                },
                status_code=code,
            )
        return JSONResponse(
            {
                "incident_id": result["incident_id"],
                "status": word,
                "decision": result["decision"],
            },
            status_code=code,
        )
    observed = all(r.get("mode") == "observe" for r in results)
    code = 202 if any(_WORDS[r["decision"]][1] == 202 for r in results) and not observed else 200
    return JSONResponse(
        {
            "status": "observed" if observed else "accepted",
            "alerts": results,
            "truncated_alerts": truncated,
        },
        status_code=code,
    )


def _too_large(limit: int) -> dict[str, Any]:
    return {"error": f"body larger than {limit} bytes"}


def _unavailable(name: str, exc: StoreUnavailable) -> JSONResponse:
    log.error("alert from %s not stored: %s", name, exc.detail)
    return JSONResponse({"error": "alert store unavailable, retry"}, status_code=503)


async def _healthz(request: Request) -> JSONResponse:
    """``{"status": "ok", "launch_backlog": {...}}``: incidents not yet running, by
    kind (``new``, ``launching``, ``retrying``, ``awaiting_first_record``) and
    ``failed`` (launch given up). 503 when the store writer is gone."""
    service: IntakeService = request.app.state.intake
    if service.store.closed:
        return JSONResponse({"status": "unavailable"}, status_code=503)
    try:
        backlog = await asyncio.wrap_future(service.store.backlog())
    except StoreUnavailable:
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok", "launch_backlog": backlog})


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
    install_access_log_filter()
    chosen = launcher if launcher is not None else default_launcher()
    store = AlertStore(runtime.store_path)
    config = runtime.config
    worker = LaunchWorker(
        store,
        settings,
        chosen,
        max_attempts=config.launch_attempts,
        backoff_s=config.launch_backoff.total_seconds(),
        backoff_max_s=config.launch_backoff_max.total_seconds(),
        confirm_timeout_s=config.launch_confirm_timeout.total_seconds(),
    )
    counters = None
    routes: list[BaseRoute] = [
        Route("/healthz", _healthz, methods=["GET"]),
    ]
    if metrics:
        built = build_metrics(
            Path(settings.evidence_dir), runtime.config.sources, collectors=collectors
        )
        counters = built.alerts
        built.registry.register(LaunchCollector(store))
        routes.append(Route("/metrics", _metrics_endpoint(built), methods=["GET"]))
    service = IntakeService(runtime, store, worker, counters)
    worker.start()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        service.close()

    endpoint = _AlertEndpoint(service)
    routes += [
        Route("/alerts/{source}", endpoint.handle, methods=["POST"]),
        Route("/alerts/{source}/{token}", endpoint.handle, methods=["POST"]),
        *extra_routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.intake = service
    return app
