"""Webhook payload formats, one module per sender, each ``parse(payload) -> NormalizedAlert``.

:func:`decode_json` turns raw bytes into a JSON object or raises
:class:`~intake.errors.MalformedPayload`; :func:`parse_alert` dispatches to the
format's parser, which raises :class:`~intake.errors.PayloadSchemaError` naming the
field. Nothing here does I/O, so every parser can be property-tested alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from intake.errors import PayloadSchemaError
from intake.formats import datadog, generic, pagerduty, sentinel, splunk
from intake.formats._common import decode_json
from intake.models import NormalizedAlert

PARSERS: dict[str, Callable[[dict[str, Any]], NormalizedAlert]] = {
    "generic": generic.parse,
    "splunk": splunk.parse,
    "datadog": datadog.parse,
    "pagerduty": pagerduty.parse,
    "sentinel": sentinel.parse,
}

__all__ = ["PARSERS", "decode_json", "parse_alert"]


def parse_alert(format_name: str, payload: Any) -> NormalizedAlert:
    """Parses a decoded JSON document with the named format.

    Raises:
        PayloadSchemaError: the document does not fit the format.
        KeyError: the format is unknown (configuration guarantees it is not).
    """
    if not isinstance(payload, dict):
        raise PayloadSchemaError("body", "must be a JSON object")
    return PARSERS[format_name](payload)
