"""PagerDuty Events API v2: page on-call when a gate opens or escalates, when a
person's record is awaited, and when a run fails; resolve when it is over.

One alert per incident and step (the dedup key of :mod:`notifications.paging`).
Answers follow PagerDuty's documented retry rules (developer-docs,
events-API-v2/01-Overview.md): 202 accepted; 400 is final (the event is invalid:
never retried, recorded); 429, 5xx and network errors are retried later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from core.errors import ConfigError, TransientError
from notifications.delivery import OutboxObserver
from notifications.paging import PageEvent, event_from_payload, outbox_events
from notifications.plugins import NotifierContext

DEFAULT_URL = "https://events.pagerduty.com"
SOURCE = "mcp-ir"


class PagerDutyRejected(ConfigError):
    """PagerDuty answered 400: the event (or the routing key) is invalid; final."""


@dataclass(frozen=True)
class PagerDutyClient:
    """Sends events to ``<url>/v2/enqueue`` with one integration's routing key."""

    routing_key: str
    url: str = DEFAULT_URL
    timeout_s: float = 10.0

    def event_body(self, event: PageEvent) -> dict[str, Any]:
        body: dict[str, Any] = {
            "routing_key": self.routing_key,
            "event_action": event.action,
            "dedup_key": event.dedup_key,
        }
        if event.action == "trigger":
            body["payload"] = {
                "summary": event.summary[:1024],
                "source": SOURCE,
                "severity": event.severity,
                "timestamp": datetime.now(UTC).isoformat(),
                "component": event.step or "run",
                "group": event.incident,
                "class": "mcp-ir incident",
                "custom_details": {"incident": event.incident, "step": event.step, **event.details},
            }
            body["client"] = "mcp-ir"
        return body

    def send(self, event: PageEvent) -> str:
        """Sends one event; returns the dedup key PagerDuty confirmed.

        Raises:
            PagerDutyRejected: 400 (or another 4xx but 429): never worth retrying.
            TransientError: 429, 5xx or a network failure: retry later.
        """
        try:
            response = httpx.post(
                self.url.rstrip("/") + "/v2/enqueue",
                json=self.event_body(event),
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"PagerDuty unreachable: {type(exc).__name__}") from None
        if response.status_code == 202:
            return str(response.json().get("dedup_key", event.dedup_key))
        detail = _detail(response)
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"PagerDuty answered {response.status_code}: {detail}")
        raise PagerDutyRejected(f"PagerDuty refused the event ({response.status_code}): {detail}")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    errors = body.get("errors") if isinstance(body, dict) else None
    message = body.get("message", "") if isinstance(body, dict) else ""
    return f"{message}{': ' + '; '.join(map(str, errors)) if errors else ''}"[:500]


class PagerDutyConfig(BaseModel):
    """``notifiers.pagerduty`` in the inventory.

    Attributes:
        routing_key_env: Environment variable holding the 32-character integration key
            (Events API v2); never the key itself.
        url: The Events API base URL (default PagerDuty's; a sandbox in tests).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    routing_key_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    url: str = DEFAULT_URL


class PagerDutyPlugin:
    """The ``pagerduty`` notifier plugin (entry point ``mcp_ir.notifiers``)."""

    name: ClassVar[str] = "pagerduty"
    config_model: ClassVar[type[BaseModel]] = PagerDutyConfig

    def build(self, config: PagerDutyConfig, ctx: NotifierContext) -> OutboxObserver:
        key = os.environ.get(config.routing_key_env, "")
        if not key:
            raise ConfigError(
                f"notifiers.pagerduty.routing_key_env: environment variable "
                f"{config.routing_key_env} is not set"
            )
        ctx.trail.redactor.add(key)
        client = PagerDutyClient(routing_key=key, url=config.url)
        return OutboxObserver(
            "pagerduty",
            ctx.evidence_dir,
            ctx.trail,
            lambda rec: outbox_events(ctx.incident, ctx.target, rec),
            lambda payload: client.send(event_from_payload(payload)) and None,
        )


plugin = PagerDutyPlugin()
