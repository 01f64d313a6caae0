"""Grafana webhook contact point: unified alerting, and the legacy (pre-8) fields.

Unified alerting (Grafana docs, "Configure webhook notifications") sends the
Alertmanager shape (:mod:`intake.formats.alertmanager`) plus ``orgId``, ``title``,
``state``, ``message`` and, per alert, ``silenceURL``, ``dashboardURL``,
``panelURL``, ``values``/``valueString``: one alert per ``alerts`` entry, keyed by
its ``fingerprint``, with its own ``status``.

Legacy alerting (Grafana <= 10 "legacy alerts") sends one rule's state:
``{"ruleId", "ruleName", "ruleUrl", "state", "title", "message", "evalMatches",
"tags", "dashboardId", "panelId", "orgId"}``. ``state`` ``alerting`` and
``no_data`` fire, ``ok`` resolves, ``pending`` and ``paused`` only update. The
dedup id is the rule (``orgId`` + ``ruleId``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from intake.errors import PayloadSchemaError
from intake.formats import alertmanager
from intake.formats._common import text, validate
from intake.models import NormalizedAlert, ParsedBatch

LEGACY_STATES = {
    "alerting": ("firing", False),
    "no_data": ("firing", False),
    "ok": ("resolved", False),
    "pending": ("firing", True),
    "paused": ("firing", True),
}


class LegacyNotification(BaseModel):
    """The legacy-alerting webhook body."""

    model_config = ConfigDict(extra="allow")

    ruleId: int | str  # noqa: N815 (the sender's field names)
    ruleName: str | None = None  # noqa: N815
    ruleUrl: str | None = None  # noqa: N815
    state: str = Field(min_length=1)
    title: str | None = None
    message: str | None = None
    orgId: int | str | None = None  # noqa: N815
    tags: dict[str, Any] | None = None


def _legacy(payload: dict[str, Any]) -> ParsedBatch:
    hook = validate(LegacyNotification, payload)
    state = hook.state.strip().lower()
    if state not in LEGACY_STATES:
        raise PayloadSchemaError(
            "state", f"must be one of {', '.join(LEGACY_STATES)}, not {hook.state[:40]!r}"
        )
    status, update_only = LEGACY_STATES[state]
    alert = NormalizedAlert(
        format="grafana",
        alert_id=f"rule:{text(hook.orgId) or '0'}:{text(hook.ruleId, 200)}",
        title=text(hook.ruleName) or text(hook.title) or f"Grafana rule {hook.ruleId}",
        description=text(hook.message, 10_000),
        link=text(hook.ruleUrl, 2000),
        status=status,  # type: ignore[arg-type]
        update_only=update_only,
        event=state,
        raw=payload,
    )
    return ParsedBatch(alerts=(alert,))


def parse(payload: dict[str, Any]) -> ParsedBatch:
    """Parses a Grafana webhook: ``alerts`` present means unified alerting, else legacy.

    Raises:
        PayloadSchemaError: naming the field (see the two parsers).
    """
    if "alerts" not in payload and "ruleId" in payload:
        return _legacy(payload)
    hook = validate(alertmanager.GroupNotification, payload)
    alerts = tuple(
        alertmanager.one_alert("grafana", payload, entry, payload["alerts"][i], i)
        for i, entry in enumerate(hook.alerts)
    )
    return ParsedBatch(alerts=alerts, truncated=hook.truncatedAlerts)
