"""Datadog Webhooks integration.

The default payload is ``{"body": "$EVENT_MSG", "last_updated": "$LAST_UPDATED",
"event_type": "$EVENT_TYPE", "title": "$EVENT_TITLE", "date": "$DATE",
"org": {"id": "$ORG_ID", "name": "$ORG_NAME"}, "id": "$ID"}``. docs/intake.md
recommends adding ``alert_id`` ($ALERT_ID), ``alert_cycle_key`` ($ALERT_CYCLE_KEY),
``alert_priority`` ($ALERT_PRIORITY), ``alert_transition`` ($ALERT_TRANSITION),
``alert_type`` ($ALERT_TYPE), ``tags`` ($TAGS) and ``link`` ($LINK); each is used when
present. Datadog renders every variable as a string; ``$DATE`` is epoch milliseconds.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from intake.formats._common import parse_time, text, validate
from intake.models import NormalizedAlert, Severity

PRIORITIES = {
    "p1": Severity.critical,
    "p2": Severity.high,
    "p3": Severity.medium,
    "p4": Severity.low,
    "p5": Severity.info,
}
ALERT_TYPES = {
    "error": Severity.high,
    "warning": Severity.medium,
    "info": Severity.info,
    "success": Severity.info,
}

Scalar = str | int | float


class DatadogWebhook(BaseModel):
    """The Datadog webhook body (default payload plus the recommended variables)."""

    model_config = ConfigDict(extra="allow")

    id: Scalar
    title: str = Field(min_length=1)
    body: str | None = None
    date: Scalar | None = None
    last_updated: Scalar | None = None
    event_type: str | None = None
    org: dict[str, Any] | None = None
    alert_id: Scalar | None = None
    alert_cycle_key: Scalar | None = None
    alert_priority: str | None = None
    alert_transition: str | None = None
    alert_type: str | None = None
    tags: str | list[str] | None = None
    link: str | None = None


def _severity(hook: DatadogWebhook) -> Severity | None:
    priority = (text(hook.alert_priority) or "").lower()
    if priority in PRIORITIES:
        return PRIORITIES[priority]
    return ALERT_TYPES.get((text(hook.alert_type) or "").lower())


def parse(payload: dict[str, Any]) -> NormalizedAlert:
    """Parses a Datadog webhook.

    The dedup id is ``alert_cycle_key`` (same for every notification from trigger to
    resolution) when present, else the event ``id``.

    Raises:
        PayloadSchemaError: ``id`` or ``title`` missing, a field mistyped, a bad date.
    """
    hook = validate(DatadogWebhook, payload)
    cycle = text(hook.alert_cycle_key, 200)
    return NormalizedAlert(
        format="datadog",
        alert_id=f"cycle:{cycle}" if cycle else f"event:{text(hook.id, 200)}",
        title=text(hook.title) or "Datadog alert",
        severity=_severity(hook),
        description=text(hook.body, 10_000),
        occurred_at=parse_time(hook.date, "date"),
        link=text(hook.link, 2000),
        raw=payload,
    )
