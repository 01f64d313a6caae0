"""Webhook payload formats, one module per sender.

Each parser is ``parse(payload) -> NormalizedAlert | ParsedBatch`` (a batch for
senders that group alerts: Alertmanager, Grafana). :func:`decode_json` turns raw
bytes into a JSON object or raises :class:`~intake.errors.MalformedPayload`;
:func:`parse_batch` dispatches to the format's parser, applies the source's
``fields`` and ``severity_map``, and always returns a :class:`ParsedBatch`. Parsers
raise :class:`~intake.errors.PayloadSchemaError` naming the field. Nothing here does
I/O, so every parser can be property-tested alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from intake.errors import PayloadSchemaError
from intake.formats import (
    alertmanager,
    azure_monitor,
    datadog,
    elastic,
    generic,
    grafana,
    pagerduty,
    sentinel,
    splunk,
)
from intake.formats._common import decode_json
from intake.formats.fields import apply_severity_map, decode_form, mapped_generic, override
from intake.models import NormalizedAlert, ParsedBatch, Severity

PARSERS: dict[str, Callable[[dict[str, Any]], NormalizedAlert | ParsedBatch]] = {
    "generic": generic.parse,
    "splunk": splunk.parse,
    "datadog": datadog.parse,
    "elastic": elastic.parse,
    "azure-monitor": azure_monitor.parse,
    "sentinel": sentinel.parse,
    "pagerduty": pagerduty.parse,
    "alertmanager": alertmanager.parse,
    "grafana": grafana.parse,
}
# Formats whose senders can post application/x-www-form-urlencoded bodies.
FORM_FORMATS = frozenset({"datadog", "generic"})

__all__ = ["FORM_FORMATS", "PARSERS", "decode_body", "decode_json", "parse_alert", "parse_batch"]


def decode_body(body: bytes, content_type: str, format_name: str) -> Any:
    """Decodes JSON, or a form when the format's sender sends forms and says so.

    Raises:
        MalformedPayload: naming the problem.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded" and format_name in FORM_FORMATS:
        return decode_form(body)
    return decode_json(body)


def parse_batch(
    format_name: str,
    payload: Any,
    *,
    fields: Mapping[str, str] | None = None,
    severity_map: Mapping[str, Severity] | None = None,
) -> ParsedBatch:
    """Parses a decoded document into the alerts it carries.

    Raises:
        PayloadSchemaError: the document does not fit the format (or the mapping).
        KeyError: the format is unknown (configuration guarantees it is not).
    """
    if not isinstance(payload, dict):
        raise PayloadSchemaError("body", "must be a JSON object")
    if format_name == "generic" and fields:
        batch = ParsedBatch(alerts=(mapped_generic(payload, fields),))
    else:
        result = PARSERS[format_name](payload)
        batch = result if isinstance(result, ParsedBatch) else ParsedBatch(alerts=(result,))
        if fields:
            batch = batch.model_copy(
                update={"alerts": tuple(override(a, fields) for a in batch.alerts)}
            )
    if severity_map:
        batch = batch.model_copy(
            update={"alerts": tuple(apply_severity_map(a, severity_map) for a in batch.alerts)}
        )
    return batch


def parse_alert(format_name: str, payload: Any) -> NormalizedAlert:
    """The first (for most formats, the only) alert of a document.

    Raises:
        PayloadSchemaError: the document does not fit the format.
    """
    return parse_batch(format_name, payload).alerts[0]
