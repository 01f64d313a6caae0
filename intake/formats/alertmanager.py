"""Prometheus Alertmanager webhook receiver, payload version 4.

One POST carries one notification group: ``{"version": "4", "groupKey",
"truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
"commonAnnotations", "externalURL", "alerts": [{"status", "labels", "annotations",
"startsAt", "endsAt", "generatorURL", "fingerprint"}]}`` (Alertmanager docs,
``webhook_config``). Each entry of ``alerts`` becomes its own alert with its own
``status``; the dedup id is its ``fingerprint`` (a hash of its label set, added in
Alertmanager 0.19: older senders get the same hash computed here from the labels).
``truncatedAlerts`` (alerts left out because of ``max_alerts``) is returned so the
intake records it. Grafana's unified alerting sends the same shape plus a few fields
(:mod:`intake.formats.grafana`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from intake.errors import PayloadSchemaError
from intake.formats._common import parse_time, text, validate
from intake.models import NormalizedAlert, ParsedBatch, Severity

# Label values seen for ``severity`` in Prometheus rule sets (kube-prometheus, the
# Alertmanager docs' examples, Grafana's defaults); a source's ``severity_map``
# covers any other scheme.
LABEL_SEVERITIES = {
    "critical": Severity.critical,
    "page": Severity.critical,
    "high": Severity.high,
    "error": Severity.high,
    "major": Severity.high,
    "warning": Severity.medium,
    "warn": Severity.medium,
    "medium": Severity.medium,
    "minor": Severity.low,
    "low": Severity.low,
    "info": Severity.info,
    "informational": Severity.info,
    "none": Severity.info,
}


class GroupedAlert(BaseModel):
    """One entry of ``alerts``."""

    model_config = ConfigDict(extra="allow")

    status: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] | None = None
    startsAt: str | None = None  # noqa: N815 (the sender's field names)
    endsAt: str | None = None  # noqa: N815
    generatorURL: str | None = None  # noqa: N815
    fingerprint: str | None = Field(default=None, max_length=200)


class GroupNotification(BaseModel):
    """The envelope Alertmanager (and Grafana) POSTs."""

    model_config = ConfigDict(extra="allow")

    version: str | None = None
    groupKey: str | None = None  # noqa: N815
    truncatedAlerts: int = Field(default=0, ge=0)  # noqa: N815
    status: str | None = None
    receiver: str | None = None
    groupLabels: dict[str, str] | None = None  # noqa: N815
    commonLabels: dict[str, str] | None = None  # noqa: N815
    commonAnnotations: dict[str, str] | None = None  # noqa: N815
    externalURL: str | None = None  # noqa: N815
    alerts: list[GroupedAlert] = Field(min_length=1, max_length=10_000)


def status_of(value: str, field: str) -> str:
    """``firing`` or ``resolved`` from the sender's value.

    Raises:
        PayloadSchemaError: any other value.
    """
    lowered = value.strip().lower()
    if lowered not in ("firing", "resolved"):
        raise PayloadSchemaError(field, f"must be firing or resolved, not {value[:40]!r}")
    return lowered


def label_fingerprint(labels: dict[str, str]) -> str:
    """A stable id of a label set (what ``fingerprint`` is, for senders without it)."""
    canonical = json.dumps(labels, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def one_alert(
    fmt: str, envelope: dict[str, Any], entry: GroupedAlert, raw_entry: dict[str, Any], index: int
) -> NormalizedAlert:
    """Normalizes one grouped alert; ``raw`` is the envelope without ``alerts`` with
    the entry's own fields on top, so rules reach ``raw.labels.<name>`` of THIS alert
    and ``raw.commonLabels`` / ``raw.receiver`` of its group."""
    where = f"alerts.{index}"
    labels = entry.labels
    annotations = entry.annotations or {}
    fingerprint = text(entry.fingerprint, 200) or label_fingerprint(labels)
    vendor = text(labels.get("severity"))
    title = (
        text(labels.get("alertname"))
        or text(annotations.get("summary"))
        or text(annotations.get("title"))
        or f"{fmt} alert {fingerprint}"
    )
    raw = {k: v for k, v in envelope.items() if k != "alerts"}
    raw.update(raw_entry)
    return NormalizedAlert(
        format=fmt,
        alert_id=f"fingerprint:{fingerprint}",
        title=title,
        severity=LABEL_SEVERITIES.get((vendor or "").lower()),
        vendor_severity=vendor,
        description=text(annotations.get("description"), 10_000)
        or text(annotations.get("summary"), 10_000),
        occurred_at=parse_time(entry.startsAt, f"{where}.startsAt"),
        link=text(entry.generatorURL, 2000),
        status=status_of(entry.status, f"{where}.status"),  # type: ignore[arg-type]
        event=entry.status,
        raw=raw,
    )


def parse(payload: dict[str, Any]) -> ParsedBatch:
    """Parses an Alertmanager notification into one alert per ``alerts`` entry.

    Raises:
        PayloadSchemaError: no ``alerts``, an entry without ``status`` or with a
            status other than firing/resolved, non-string labels, a bad ``startsAt``.
    """
    hook = validate(GroupNotification, payload)
    alerts = tuple(
        one_alert("alertmanager", payload, entry, payload["alerts"][i], i)
        for i, entry in enumerate(hook.alerts)
    )
    return ParsedBatch(alerts=alerts, truncated=hook.truncatedAlerts)
