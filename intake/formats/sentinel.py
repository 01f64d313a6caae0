"""Microsoft Sentinel: incidents, and analytics-rule alerts.

Two bodies reach a webhook from Sentinel:

- an *incident*, as an automation rule's playbook (Logic App "Microsoft Sentinel
  incident" trigger) forwards it: the ``Microsoft.SecurityInsights/incidents``
  resource ``{"id", "name", "type", "properties": {"title", "severity", "status",
  "incidentNumber", "incidentUrl", "createdTimeUtc", "description", …}}``, either
  bare or wrapped as the trigger's ``{"object": <incident>, "workspaceId", …}``.
  ``status`` ``New`` fires, ``Closed`` resolves, ``Active`` (someone works on it)
  only updates. Severity High/Medium/Low/Informational. Dedup id: the incident's
  resource ``id``.
- an *alert* of a Sentinel workspace's log search rule through an action group: the
  Azure Monitor common alert schema (:mod:`intake.formats.azure_monitor`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from intake.errors import PayloadSchemaError
from intake.formats._common import parse_time, text, validate
from intake.formats.azure_monitor import parse_common
from intake.models import NormalizedAlert, Severity

SEVERITIES = {
    "high": Severity.high,
    "medium": Severity.medium,
    "low": Severity.low,
    "informational": Severity.info,
}
STATUSES = {"new": ("firing", False), "active": ("firing", True), "closed": ("resolved", False)}


class IncidentProperties(BaseModel):
    """``properties`` of a Sentinel incident."""

    model_config = ConfigDict(extra="allow")

    title: str = Field(min_length=1)
    severity: str | None = None
    status: str = Field(min_length=1)
    incidentNumber: int | str | None = None  # noqa: N815 (documented names)
    incidentUrl: str | None = None  # noqa: N815
    createdTimeUtc: str | None = None  # noqa: N815
    description: str | None = None


class SentinelIncident(BaseModel):
    """The incident resource."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=1000)
    properties: IncidentProperties


def _incident(payload: dict[str, Any], body: dict[str, Any], prefix: str) -> NormalizedAlert:
    try:
        incident = validate(SentinelIncident, body)
    except PayloadSchemaError as exc:
        raise PayloadSchemaError(prefix + exc.field, exc.problem) from None
    props = incident.properties
    state = props.status.strip().lower()
    if state not in STATUSES:
        raise PayloadSchemaError(
            prefix + "properties.status",
            f"must be New, Active or Closed, not {props.status[:40]!r}",
        )
    status, update_only = STATUSES[state]
    vendor = text(props.severity)
    return NormalizedAlert(
        format="sentinel",
        alert_id=incident.id,
        title=text(props.title) or "Sentinel incident",
        severity=SEVERITIES.get((vendor or "").lower()),
        vendor_severity=vendor,
        description=text(props.description, 10_000),
        occurred_at=parse_time(props.createdTimeUtc, prefix + "properties.createdTimeUtc"),
        link=text(props.incidentUrl, 2000),
        status=status,  # type: ignore[arg-type]
        update_only=update_only,
        event=props.status,
        raw=payload,
    )


def parse(payload: dict[str, Any]) -> NormalizedAlert:
    """Parses a Sentinel incident, or a common-alert-schema alert from Sentinel.

    Raises:
        PayloadSchemaError: naming the field.
    """
    if "schemaId" in payload:
        return parse_common(payload, "sentinel")
    wrapped = payload.get("object")
    if isinstance(wrapped, dict):
        return _incident(payload, wrapped, "object.")
    return _incident(payload, payload, "")
