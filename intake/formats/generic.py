"""mcp-ir's own alert schema (documented in docs/intake.md), for senders we template.

Strict: unknown fields are refused, so a typo is a 422 naming the field rather than
a silently ignored value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from intake.errors import PayloadSchemaError
from intake.formats._common import MAX_TIME, MIN_TIME, validate
from intake.models import NormalizedAlert, Severity


class GenericAlert(BaseModel):
    """The generic payload.

    Attributes:
        alert_id: the sender's id; the dedup key when present.
        title: short title (required).
        severity: info | low | medium | high | critical (required).
        occurred_at: when it fired, ISO 8601 with a timezone.
        window_start / window_end: the suspected window, if the sender knows it.
        description, link: free text and a URL back to the sender.
        labels: string key/values rules can match as ``raw.labels.<key>``.
        status: ``firing`` (default) or ``resolved``.
    """

    model_config = ConfigDict(extra="forbid")

    alert_id: str | None = Field(default=None, min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=500)
    severity: Severity
    occurred_at: AwareDatetime | None = None
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    description: str | None = Field(default=None, max_length=10_000)
    link: str | None = Field(default=None, max_length=2_000)
    labels: dict[str, str] = Field(default_factory=dict)
    status: Literal["firing", "resolved"] = "firing"


def parse(payload: dict[str, Any]) -> NormalizedAlert:
    """Parses the generic schema.

    Raises:
        PayloadSchemaError: a field is missing, unknown, mistyped or out of range, or
            ``window_start`` is after ``window_end``.
    """
    alert = validate(GenericAlert, payload)
    for name in ("occurred_at", "window_start", "window_end"):
        value = getattr(alert, name)
        if value is not None and not MIN_TIME <= value < MAX_TIME:
            raise PayloadSchemaError(name, "timestamp out of range")
    if alert.window_start and alert.window_end and alert.window_start > alert.window_end:
        raise PayloadSchemaError("window_start", "is after window_end")
    return NormalizedAlert(
        format="generic",
        alert_id=alert.alert_id,
        title=alert.title,
        severity=alert.severity,
        description=alert.description,
        occurred_at=alert.occurred_at,
        window_start=alert.window_start,
        window_end=alert.window_end,
        link=alert.link,
        status=alert.status,
        vendor_severity=alert.severity.value,
        raw=payload,
    )
