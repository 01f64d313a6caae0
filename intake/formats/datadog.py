"""Datadog Webhooks integration, default and extended payloads, JSON or form-encoded.

The default payload is ``{"body": "$EVENT_MSG", "last_updated": "$LAST_UPDATED",
"event_type": "$EVENT_TYPE", "title": "$EVENT_TITLE", "date": "$DATE",
"org": {"id": "$ORG_ID", "name": "$ORG_NAME"}, "id": "$ID"}``. The extended payload
docs/intake.md recommends adds ``alert_id`` ($ALERT_ID), ``alert_cycle_key``
($ALERT_CYCLE_KEY), ``alert_scope`` ($ALERT_SCOPE), ``alert_priority``
($ALERT_PRIORITY), ``alert_transition`` ($ALERT_TRANSITION), ``alert_type``
($ALERT_TYPE), ``alert_status``, ``alert_title``, ``alert_metric``, ``aggreg_key``,
``tags`` ($TAGS) and ``link`` ($LINK); each is used when present. Datadog renders
every variable as a string; ``$DATE`` is epoch milliseconds. With "Encode as form"
the same keys arrive as ``application/x-www-form-urlencoded`` fields (the app
decodes them before this parser; a field holding a JSON object is decoded too).

Status: ``alert_transition`` ``Recovered`` (or a title starting ``[Recovered]``, or
``alert_type`` ``success`` on a monitor event) resolves; everything else fires.

Dedup id, most precise first: ``alert_cycle_key`` (one id from trigger to
resolution, so re-notifications and the recovery share it), else the monitor
``alert_id`` plus ``alert_scope`` (one per monitor and group), else the event ``id``.
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
RESOLVED_TRANSITIONS = {"recovered"}

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
    org: dict[str, Any] | str | None = None
    alert_id: Scalar | None = None
    alert_cycle_key: Scalar | None = None
    alert_scope: str | None = None
    alert_priority: str | None = None
    alert_transition: str | None = None
    alert_type: str | None = None
    alert_title: str | None = None
    tags: str | list[str] | None = None
    link: str | None = None


def _severity(hook: DatadogWebhook) -> tuple[Severity | None, str | None]:
    priority = text(hook.alert_priority)
    if priority and priority.lower() in PRIORITIES:
        return PRIORITIES[priority.lower()], priority
    kind = text(hook.alert_type)
    return ALERT_TYPES.get((kind or "").lower()), priority or kind


def _resolved(hook: DatadogWebhook) -> bool:
    transition = (text(hook.alert_transition) or "").lower()
    if transition:
        return transition in RESOLVED_TRANSITIONS
    title = hook.title.lstrip()
    return "[recovered]" in title[:40].lower()


def dedup_id(hook: DatadogWebhook) -> str:
    """The dedup id (see the module docstring)."""
    cycle = text(hook.alert_cycle_key, 200)
    if cycle:
        return f"cycle:{cycle}"
    monitor = text(hook.alert_id, 100)
    if monitor:
        return f"monitor:{monitor}:{text(hook.alert_scope, 300) or '*'}"
    return f"event:{text(hook.id, 200)}"


def parse(payload: dict[str, Any]) -> NormalizedAlert:
    """Parses a Datadog webhook.

    Raises:
        PayloadSchemaError: ``id`` or ``title`` missing, a field mistyped, a bad date.
    """
    hook = validate(DatadogWebhook, payload)
    severity, vendor = _severity(hook)
    return NormalizedAlert(
        format="datadog",
        alert_id=dedup_id(hook),
        title=text(hook.title) or "Datadog alert",
        severity=severity,
        vendor_severity=vendor,
        description=text(hook.body, 10_000),
        occurred_at=parse_time(hook.date, "date"),
        link=text(hook.link, 2000),
        status="resolved" if _resolved(hook) else "firing",
        event=text(hook.alert_transition, 100),
        raw=payload,
    )
