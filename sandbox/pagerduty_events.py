"""A local PagerDuty Events API v2 (``POST /v2/enqueue``) for tests and the sandbox.

It follows PagerDuty's documented semantics (developer-docs,
docs/events-API-v2/01-Overview.md and 02-Trigger-Events.md, commit 1da9f6a):

- ``routing_key`` is the 32-character integration key; ``event_action`` is
  ``trigger``, ``acknowledge`` or ``resolve``; a trigger needs ``payload.summary``
  (<= 1024 chars), ``payload.source`` and ``payload.severity`` (critical, error,
  warning, info); ``dedup_key`` is at most 255 chars, required for acknowledge and
  resolve, generated when a trigger has none.
- 202 ``{"status": "success", "message": "Event processed", "dedup_key": …}``;
  400 ``{"status": "invalid event", "message": "Event object is invalid",
  "errors": [...]}`` for a bad event or invalid JSON; 429 when rate limited; a
  payload over 512 KB is refused (413).
- Alert de-duplication: events for an open alert's ``dedup_key`` (same routing
  key) apply to it; once resolved, a new trigger opens a new alert, and an
  acknowledge or resolve for it is dropped (still 202).

Tests read what arrived through :class:`PagerDutySandbox` (``events``,
``alerts``) and inject faults (``fail_next``).
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAX_BODY = 512 * 1024
SEVERITIES = {"critical", "error", "warning", "info"}
ACTIONS = {"trigger", "acknowledge", "resolve"}


@dataclass
class Alert:
    routing_key: str
    dedup_key: str
    summary: str
    severity: str
    status: str = "triggered"  # triggered | acknowledged | resolved
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PagerDutySandbox:
    """The service's state: every accepted event, and the alerts they opened."""

    routing_keys: set[str] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    _faults: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.events.clear()
            self.alerts.clear()
            self._faults.clear()

    def fail_next(self, *statuses: int) -> None:
        """The next requests are answered with these statuses (e.g. 429, 500)."""
        with self._lock:
            self._faults.extend(statuses)

    def open_alert(self, routing_key: str, dedup_key: str) -> Alert | None:
        for alert in reversed(self.alerts):
            if (alert.routing_key, alert.dedup_key) == (routing_key, dedup_key):
                return None if alert.status == "resolved" else alert
        return None

    def alert(self, dedup_key: str) -> Alert | None:
        """The latest alert with this dedup key, whatever its status."""
        return next((a for a in reversed(self.alerts) if a.dedup_key == dedup_key), None)

    def _next_fault(self) -> int | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def apply(self, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        errors = validate(event, self.routing_keys)
        if errors:
            return 400, {
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": errors,
            }
        action = event["event_action"]
        routing_key = event["routing_key"]
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        with self._lock:
            self.events.append({**event, "dedup_key": dedup_key})
            alert = self.open_alert(routing_key, dedup_key)
            if action == "trigger":
                if alert is None:
                    payload = event["payload"]
                    alert = Alert(routing_key, dedup_key, payload["summary"], payload["severity"])
                    self.alerts.append(alert)
                alert.events.append(event)
            elif alert is not None:  # acknowledge/resolve of a resolved/unknown alert: dropped
                alert.status = "acknowledged" if action == "acknowledge" else "resolved"
                alert.events.append(event)
        return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}


def validate(event: Any, routing_keys: set[str]) -> list[str]:
    """PagerDuty's checks on one event; the error strings follow its wording."""
    if not isinstance(event, dict):
        return ["Event object is not a JSON object"]
    errors: list[str] = []
    key = event.get("routing_key")
    if not isinstance(key, str) or not key:
        errors.append("'routing_key' is missing or blank")
    elif len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    elif routing_keys and key not in routing_keys:
        errors.append("'routing_key' is not a valid integration key")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append(f"'dedup_key' is required for {action} events")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or not an object")
        else:
            summary = payload.get("summary")
            if not isinstance(summary, str) or not summary.strip():
                errors.append("'payload.summary' is missing or blank")
            elif len(summary) > 1024:
                errors.append("'payload.summary' must be at most 1024 characters")
            if not isinstance(payload.get("source"), str) or not payload.get("source"):
                errors.append("'payload.source' is missing or blank")
            if payload.get("severity") not in SEVERITIES:
                errors.append(
                    "'payload.severity' is invalid (must be one of: critical, error, warning, info)"
                )
    return errors


def create_app(state: PagerDutySandbox) -> Starlette:
    async def enqueue(request: Request) -> JSONResponse:
        fault = state._next_fault()
        if fault is not None:
            body = (
                {
                    "status": "throttle event",
                    "message": "Requests for this service are arriving too quickly.  Please retry later.",
                }
                if fault == 429
                else {"status": "error", "message": "internal error"}
            )
            return JSONResponse(body, status_code=fault)
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return JSONResponse(
                {"status": "invalid event", "message": "Request entity too large"},
                status_code=413,
            )
        try:
            event = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse(
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": ["Invalid JSON"],
                },
                status_code=400,
            )
        status, body = state.apply(event)
        return JSONResponse(body, status_code=status)

    return Starlette(routes=[Route("/v2/enqueue", enqueue, methods=["POST"])])
