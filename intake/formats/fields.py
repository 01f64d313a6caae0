"""A source's ``fields:`` mapping and ``severity_map``, and form-encoded bodies.

``fields`` maps normalized names (``title``, ``alert_id``, ``severity``, ``status``,
``time``, ``description``, ``link``) to dotted paths into the payload (list indexes
as digits). On a ``generic`` source it replaces the strict schema: the document may
hold anything, unknown fields are kept in ``raw``. On any other format it overrides
what the parser found, path by path, for each alert (for Alertmanager and Grafana
the paths are read from each alert's own ``raw``: its entry over the group).

``severity_map`` translates the sender's severity value (as sent, compared
case-insensitively) to ours; it wins over the format's built-in table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from intake.errors import MalformedPayload, PayloadSchemaError
from intake.formats._common import parse_time, text
from intake.models import NormalizedAlert, Severity

MAPPABLE = ("title", "alert_id", "severity", "status", "time", "description", "link")
MISSING = object()  # what lookup() answers for an absent path
FIRING_WORDS = {"firing", "fired", "triggered", "alerting", "alert", "open", "problem", "new"}
RESOLVED_WORDS = {"resolved", "recovered", "ok", "closed", "cleared", "clear", "normal"}


def lookup(document: Any, path: str) -> Any:
    """The value at ``path`` (``a.b.0.c``) or a sentinel when absent."""
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


def _scalar(value: Any, path: str, limit: int = 500) -> str | None:
    if value is MISSING or value is None:
        return None
    if isinstance(value, dict | list):
        raise PayloadSchemaError(path, "must be a single value, not an object or a list")
    return text(value, limit)


def status_word(value: str, path: str) -> str:
    """``firing`` or ``resolved`` from a sender's word for it.

    Raises:
        PayloadSchemaError: a word that is neither.
    """
    word = value.strip().lower()
    if word in FIRING_WORDS:
        return "firing"
    if word in RESOLVED_WORDS:
        return "resolved"
    raise PayloadSchemaError(path, f"{value[:40]!r} is neither a firing nor a resolved status")


def translate_severity(
    value: str | None, severity_map: Mapping[str, Severity] | None
) -> Severity | None:
    """``severity_map[value]`` (case-insensitive), else ``value`` if it is one of ours."""
    if value is None:
        return None
    if severity_map:
        for key, mapped in severity_map.items():
            if key.lower() == value.lower():
                return mapped
    try:
        return Severity(value.lower())
    except ValueError:
        return None


def mapped_generic(payload: dict[str, Any], fields: Mapping[str, str]) -> NormalizedAlert:
    """A ``generic`` alert read through ``fields`` (unknown fields kept).

    Raises:
        PayloadSchemaError: the title is missing, or a mapped value is an object, not
            a status word or not a timestamp.
    """
    values = {name: lookup(payload, fields.get(name, name)) for name in MAPPABLE}
    title = _scalar(values["title"], fields.get("title", "title"))
    if not title:
        raise PayloadSchemaError(fields.get("title", "title"), "field required (title)")
    status_text = _scalar(values["status"], fields.get("status", "status"))
    vendor = _scalar(values["severity"], fields.get("severity", "severity"), 100)
    return NormalizedAlert(
        format="generic",
        alert_id=_scalar(values["alert_id"], fields.get("alert_id", "alert_id"), 200),
        title=title,
        severity=translate_severity(vendor, None),
        vendor_severity=vendor,
        description=_scalar(
            values["description"], fields.get("description", "description"), 10_000
        ),
        occurred_at=parse_time(
            _scalar(values["time"], fields.get("time", "time")), fields.get("time", "time")
        ),
        link=_scalar(values["link"], fields.get("link", "link"), 2000),
        status=status_word(status_text, fields.get("status", "status"))
        if status_text
        else "firing",  # type: ignore[arg-type]
        raw=payload,
    )


def override(alert: NormalizedAlert, fields: Mapping[str, str]) -> NormalizedAlert:
    """``alert`` with each mapped field replaced by the value at its path in ``raw``."""
    changes: dict[str, Any] = {}
    for name, path in fields.items():
        value = _scalar(lookup(alert.raw, path), path, 10_000 if name == "description" else 2000)
        if value is None:
            continue
        if name == "title":
            changes["title"] = value[:500]
        elif name == "alert_id":
            changes["alert_id"] = value[:200]
        elif name == "severity":
            changes["vendor_severity"] = value[:100]
            changes["severity"] = translate_severity(value, None)
        elif name == "status":
            changes["status"] = status_word(value, path)
        elif name == "time":
            changes["occurred_at"] = parse_time(value, path)
        else:
            changes[name] = value
    return alert.model_copy(update=changes) if changes else alert


def apply_severity_map(
    alert: NormalizedAlert, severity_map: Mapping[str, Severity] | None
) -> NormalizedAlert:
    """Translates ``vendor_severity`` through the source's map when it has the value."""
    if not severity_map or alert.vendor_severity is None:
        return alert
    for key, mapped in severity_map.items():
        if key.lower() == alert.vendor_severity.lower():
            return alert.model_copy(update={"severity": mapped})
    return alert


def decode_form(body: bytes) -> dict[str, Any]:
    """An ``application/x-www-form-urlencoded`` body as a JSON-like object.

    A repeated key becomes a list; a value that is itself a JSON object or list
    (Datadog's "Encode as form" with a nested payload key) is decoded.

    Raises:
        MalformedPayload: not UTF-8, or no field at all.
    """
    try:
        textual = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPayload(f"malformed form: body is not UTF-8 (byte {exc.start})") from None
    pairs = parse_qsl(textual, keep_blank_values=True, max_num_fields=1000)
    if not pairs:
        raise MalformedPayload("malformed form: no field")
    result: dict[str, Any] = {}
    for key, value in pairs:
        decoded: Any = value
        if value[:1] in ("{", "["):
            try:
                decoded = json.loads(value)
            except ValueError:
                decoded = value
        if key in result:
            previous = result[key]
            result[key] = (
                [*previous, decoded] if isinstance(previous, list) else [previous, decoded]
            )
        else:
            result[key] = decoded
    return result
