"""Splunk saved-search webhook alert action.

Documented payload (Splunk Alerting Manual, "Use a webhook alert action"): ``sid``,
``search_name``, ``app``, ``owner``, ``results_link`` and ``result`` (the first result
row). Splunk sends no severity: rules must set one, unless the result row carries a
``severity`` or ``urgency`` field (Splunk ES notable events do).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from intake.errors import PayloadSchemaError
from intake.formats._common import parse_time, text, validate
from intake.models import NormalizedAlert, Severity

_SID_TIME = re.compile(r"_at_(\d{9,11})_")
_SEVERITIES = {
    "informational": Severity.info,
    "info": Severity.info,
    "low": Severity.low,
    "medium": Severity.medium,
    "high": Severity.high,
    "critical": Severity.critical,
}


class SplunkWebhook(BaseModel):
    """The Splunk webhook body; extra keys are kept in ``raw``."""

    model_config = ConfigDict(extra="allow")

    sid: str = Field(min_length=1, max_length=500)
    search_name: str | None = None
    app: str | None = None
    owner: str | None = None
    results_link: str | None = None
    result: dict[str, Any] | None = None


def _occurred_at(hook: SplunkWebhook) -> datetime | None:
    row = hook.result or {}
    try:
        found = parse_time(row.get("_time"), "result._time")
    except PayloadSchemaError:
        found = None  # a result row is search output, not a schema we can insist on
    if found is not None:
        return found
    match = _SID_TIME.search(hook.sid)
    return datetime.fromtimestamp(int(match.group(1)), UTC) if match else None


def parse(payload: dict[str, Any]) -> NormalizedAlert:
    """Parses a Splunk webhook (always ``firing``: Splunk sends no recovery).

    The dedup id is the saved search's name plus the search job's ``sid``: a
    re-delivery of the same job is a duplicate, the next scheduled run is a new alert.

    Raises:
        PayloadSchemaError: ``sid`` is missing or a field has the wrong type.
    """
    hook = validate(SplunkWebhook, payload)
    row = hook.result or {}
    severity = None
    severity_label = None
    for key in ("severity", "urgency"):
        label = text(row.get(key))
        if label:
            severity_label = severity_label or label
        if label and label.lower() in _SEVERITIES:
            severity = _SEVERITIES[label.lower()]
            severity_label = label
            break
    return NormalizedAlert(
        format="splunk",
        alert_id=f"{text(hook.search_name, 200) or '-'}:{hook.sid}",
        vendor_severity=severity_label,
        title=text(hook.search_name) or f"Splunk search {hook.sid[:200]}",
        severity=severity,
        occurred_at=_occurred_at(hook),
        link=text(hook.results_link, 2000),
        raw=payload,
    )
