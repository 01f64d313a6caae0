"""Microsoft Sentinel / Azure Monitor alerts, in the Azure Monitor common alert schema.

A Sentinel workspace's log-search alerts reach a webhook through an action group,
which posts ``{"schemaId": "azureMonitorCommonAlertSchema", "data": {"essentials":
{...}, "alertContext": {...}}}``. ``essentials`` holds ``alertId``, ``alertRule``,
``severity`` (Sev0…Sev4), ``signalType``, ``monitorCondition`` (Fired/Resolved),
``monitoringService``, ``alertTargetIDs``, ``firedDateTime``, ``description``…
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from intake.formats._common import parse_time, text, validate
from intake.models import NormalizedAlert, Severity

SEVERITIES = {
    "sev0": Severity.critical,
    "sev1": Severity.high,
    "sev2": Severity.medium,
    "sev3": Severity.low,
    "sev4": Severity.info,
}


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


def parse(payload: dict[str, Any]) -> NormalizedAlert:
    """Parses a common-alert-schema notification; the dedup id is ``alertId``.

    Raises:
        PayloadSchemaError: wrong ``schemaId``, missing ``data.essentials.alertId`` or
            ``alertRule``, a mistyped field or a bad ``firedDateTime``.
    """
    alert = validate(CommonAlert, payload)
    ess = alert.data.essentials
    return NormalizedAlert(
        format="sentinel",
        alert_id=ess.alertId,
        title=text(ess.alertRule) or "Azure Monitor alert",
        severity=SEVERITIES.get((text(ess.severity) or "").lower()),
        description=text(ess.description, 10_000),
        occurred_at=parse_time(ess.firedDateTime, "data.essentials.firedDateTime"),
        raw=payload,
    )
