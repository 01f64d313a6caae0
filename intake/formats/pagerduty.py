"""PagerDuty V3 webhook subscriptions.

Body: ``{"event": {"id", "event_type", "resource_type", "occurred_at", "agent",
"client", "data"}}``; for incident events ``data`` is the incident (``id``,
``title``, ``status``, ``urgency``, ``priority`` {summary: P1…}, ``html_url``…).
The dedup id is the PagerDuty incident, so ``incident.triggered`` and later events
of the same incident (acknowledged, escalated…) make one mcp-ir incident; the intake
also keys deliveries on ``X-Webhook-Id``, which PagerDuty repeats on a retry.

Status: ``incident.triggered`` and ``incident.reopened`` fire; ``incident.resolved``
resolves; every other event (acknowledged, unacknowledged, annotated, delegated,
escalated, priority_updated, reassigned, responder.*, status_update_published,
conference_bridge_updated, workflow.*, service.*) only updates the stored alert.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from intake.formats._common import parse_time, text, validate
from intake.formats.datadog import PRIORITIES
from intake.models import NormalizedAlert, Severity

URGENCIES = {"high": Severity.high, "low": Severity.low}
FIRING_EVENTS = {"incident.triggered", "incident.reopened"}
RESOLVED_EVENTS = {"incident.resolved"}


class PagerDutyEventData(BaseModel):
    """``event.data``: the resource the event is about."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)
    type: str | None = None
    title: str | None = None
    summary: str | None = None
    html_url: str | None = None
    status: str | None = None
    urgency: str | None = None
    priority: dict[str, Any] | None = None
    incident: dict[str, Any] | None = None


class PagerDutyEvent(BaseModel):
    """``event``: one webhook event."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)
    event_type: str = Field(min_length=1)
    resource_type: str | None = None
    occurred_at: str = Field(min_length=1)
    data: PagerDutyEventData


class PagerDutyWebhook(BaseModel):
    """The V3 envelope."""

    model_config = ConfigDict(extra="allow")

    event: PagerDutyEvent


def _incident_id(event: PagerDutyEvent) -> str:
    ref = event.data.incident
    if isinstance(ref, dict) and isinstance(ref.get("id"), str) and ref["id"]:
        return f"incident:{ref['id'][:200]}"
    if event.data.type == "incident" or event.resource_type == "incident":
        return f"incident:{event.data.id}"
    return f"event:{event.id}"


def _severity(data: PagerDutyEventData) -> Severity | None:
    priority = data.priority or {}
    label = (text(priority.get("summary")) or text(priority.get("name")) or "").lower()
    if label in PRIORITIES:
        return PRIORITIES[label]
    return URGENCIES.get((text(data.urgency) or "").lower())


def parse(payload: dict[str, Any]) -> NormalizedAlert:
    """Parses a PagerDuty V3 webhook event.

    Raises:
        PayloadSchemaError: the envelope, ``event.id``, ``event.event_type``,
            ``event.occurred_at`` or ``event.data.id`` is missing or mistyped.
    """
    hook = validate(PagerDutyWebhook, payload)
    event = hook.event
    kind = event.event_type.strip().lower()
    priority = event.data.priority or {}
    vendor = text(priority.get("summary")) or text(event.data.urgency)
    return NormalizedAlert(
        format="pagerduty",
        alert_id=_incident_id(event),
        title=text(event.data.title) or text(event.data.summary) or event.event_type[:500],
        severity=_severity(event.data),
        description=f"PagerDuty {event.event_type[:100]}",
        occurred_at=parse_time(event.occurred_at, "event.occurred_at"),
        link=text(event.data.html_url, 2000),
        status="resolved" if kind in RESOLVED_EVENTS else "firing",
        update_only=kind not in FIRING_EVENTS | RESOLVED_EVENTS,
        event=event.event_type[:100],
        vendor_severity=vendor,
        raw=payload,
    )
