"""Azure Monitor action groups, common alert schema (every ``monitoringService``).

Body: ``{"schemaId": "azureMonitorCommonAlertSchema", "data": {"essentials": {...},
"alertContext": {...}, "customProperties": {...}}}`` (Microsoft Learn, "Common alert
schema" and "Sample alert payloads"). ``essentials`` is the same for metric, log
search (Log Analytics, Application Insights, Log Alerts V2), activity log
(Administrative, Autoscale, Policy, Recommendation, Security, Resource Health,
Service Health), Prometheus, Smart Detector and VM Insights alerts; ``alertContext``
varies by service and is kept in ``raw`` for rules. ``monitorCondition`` ``Fired``
fires and ``Resolved`` resolves; the dedup id is ``alertId`` (the same for the Fired
and the Resolved notification of one alert). A suspected window is taken from
``alertContext.condition.windowStartTime``/``windowEndTime`` when the service gives it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from intake.errors import PayloadSchemaError
from intake.formats._common import parse_time, text, validate
from intake.models import NormalizedAlert, Severity

SEVERITIES = {
    "sev0": Severity.critical,
    "sev1": Severity.high,
    "sev2": Severity.medium,
    "sev3": Severity.low,
    "sev4": Severity.info,
}
CONDITIONS = {"fired": "firing", "resolved": "resolved"}


class Essentials(BaseModel):
    """``data.essentials``: the fields common to every Azure Monitor alert."""

    model_config = ConfigDict(extra="allow")

    alertId: str = Field(min_length=1, max_length=1000)  # noqa: N815 (documented name)
    alertRule: str = Field(min_length=1)  # noqa: N815
    severity: str | None = None
    signalType: str | None = None  # noqa: N815
    monitorCondition: str | None = None  # noqa: N815
    monitoringService: str | None = None  # noqa: N815
    firedDateTime: str | None = None  # noqa: N815
    resolvedDateTime: str | None = None  # noqa: N815
    description: str | None = None
    alertTargetIDs: list[str] | None = None  # noqa: N815
    investigationLink: str | None = None  # noqa: N815


class CommonAlertData(BaseModel):
    """``data``."""

    model_config = ConfigDict(extra="allow")

    essentials: Essentials
    alertContext: dict[str, Any] | None = None  # noqa: N815


class CommonAlert(BaseModel):
    """The envelope."""

    model_config = ConfigDict(extra="allow")

    schemaId: Literal["azureMonitorCommonAlertSchema"]  # noqa: N815
    data: CommonAlertData


def _window(context: dict[str, Any] | None) -> tuple[Any, Any]:
    condition = (context or {}).get("condition")
    if not isinstance(condition, dict):
        return None, None
    prefix = "data.alertContext.condition."
    start = parse_time(condition.get("windowStartTime"), prefix + "windowStartTime")
    end = parse_time(condition.get("windowEndTime"), prefix + "windowEndTime")
    if start and end and start > end:
        raise PayloadSchemaError(prefix + "windowStartTime", "is after windowEndTime")
    return start, end


def parse_common(payload: dict[str, Any], fmt: str) -> NormalizedAlert:
    """Parses a common-alert-schema notification as format ``fmt``.

    Raises:
        PayloadSchemaError: wrong ``schemaId``, missing ``alertId`` or ``alertRule``, a
            ``monitorCondition`` other than Fired/Resolved, a mistyped field or a bad time.
    """
    alert = validate(CommonAlert, payload)
    ess = alert.data.essentials
    condition = (text(ess.monitorCondition) or "Fired").lower()
    if condition not in CONDITIONS:
        raise PayloadSchemaError(
            "data.essentials.monitorCondition",
            f"must be Fired or Resolved, not {ess.monitorCondition[:40]!r}",  # type: ignore[index]
        )
    start, end = _window(alert.data.alertContext)
    vendor = text(ess.severity)
    return NormalizedAlert(
        format=fmt,
        alert_id=ess.alertId,
        title=text(ess.alertRule) or "Azure Monitor alert",
        severity=SEVERITIES.get((vendor or "").lower()),
        vendor_severity=vendor,
        description=text(ess.description, 10_000),
        occurred_at=parse_time(ess.firedDateTime, "data.essentials.firedDateTime"),
        window_start=start,
        window_end=end,
        link=text(ess.investigationLink, 2000),
        status=CONDITIONS[condition],  # type: ignore[arg-type]
        event=text(ess.monitorCondition),
        raw=payload,
    )


def parse(payload: dict[str, Any]) -> NormalizedAlert:
    """Parses an Azure Monitor common-alert-schema notification.

    Raises:
        PayloadSchemaError: see :func:`parse_common`.
    """
    return parse_common(payload, "azure-monitor")
