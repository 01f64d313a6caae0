"""Typed values shared by the intake modules: severities and the normalized alert.

Every SIEM format is parsed into one :class:`NormalizedAlert`; inventory rules then
turn it into a :class:`MappedAlert` (target, severity, suspected window). Keeping
both typed means the store, the worker and the launcher never see a loose dict.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Severity(StrEnum):
    """Alert severities, lowest first. Formats map their own scales onto these."""

    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        """Position in the ordering (info = 0 … critical = 4)."""
        return _ORDER.index(self)

    def at_least(self, other: Severity) -> bool:
        """True when this severity is ``other`` or above (used by the containment policy)."""
        return self.rank >= other.rank


AlertStatus = Literal["firing", "resolved"]

_ORDER = [Severity.info, Severity.low, Severity.medium, Severity.high, Severity.critical]


class NormalizedAlert(BaseModel):
    """One alert, whatever SIEM sent it.

    Attributes:
        format: the parser that produced it (``generic``, ``splunk`` …).
        alert_id: the sender's own id for the alert, used for dedup; None when the
            format has none (then a fingerprint of this object is used).
        title: short human title.
        severity: the sender's severity mapped onto ours, None when it sends none.
        description: longer text, if any.
        occurred_at: when the sender says the alert fired.
        window_start / window_end: the suspected window when the sender gives one.
        link: a URL back to the sender's view of the alert.
        status: ``firing`` or ``resolved`` (the sender says the condition ended). A
            resolved alert never opens an incident and never auto-contains.
        update_only: a lifecycle event that is neither a new alert nor its end
            (PagerDuty ``incident.acknowledged``, ``incident.priority_updated``,
            ``incident.annotated`` …): it updates the stored alert, opens nothing.
        event: the sender's own name for what happened (``incident.triggered``,
            ``Recovered``, ``Fired`` …), kept for the record.
        vendor_severity: the sender's severity value as sent, which a source's
            ``severity_map`` may translate.
        raw: the payload as received (JSON object), for rules and evidence.
    """

    model_config = ConfigDict(frozen=True)

    format: str
    alert_id: str | None = None
    title: str
    severity: Severity | None = None
    description: str | None = None
    occurred_at: datetime | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    link: str | None = None
    status: AlertStatus = "firing"
    update_only: bool = False
    event: str | None = None
    vendor_severity: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict)


class ParsedBatch(BaseModel):
    """What one request carried: one alert for most senders, N for Alertmanager and
    Grafana (one per ``alerts[]`` entry), plus how many the sender left out
    (Alertmanager's ``truncatedAlerts``, 0 when it says nothing)."""

    model_config = ConfigDict(frozen=True)

    alerts: tuple[NormalizedAlert, ...]
    truncated: int = 0


class MappedAlert(BaseModel):
    """A normalized alert after an inventory rule chose its target and window."""

    model_config = ConfigDict(frozen=True)

    alert: NormalizedAlert
    rule_index: int
    target: str
    severity: Severity
    window_start: datetime
    window_end: datetime
    auto_contain: bool
