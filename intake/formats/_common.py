"""Helpers the format parsers share: strict JSON decoding, pydantic error naming,
and the timestamp shapes senders use (ISO 8601, epoch seconds or milliseconds)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from intake.errors import MalformedPayload, PayloadSchemaError

M = TypeVar("M", bound=BaseModel)

# Plausible alert times: anything outside is a schema error, not an OverflowError later.
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9000, 1, 1, tzinfo=UTC)


def _refuse_constant(name: str) -> Any:
    raise MalformedPayload(f"malformed JSON: {name} is not a JSON value")


def decode_json(body: bytes) -> Any:
    """Decodes a UTF-8 JSON document strictly.

    Refuses what Python's decoder would otherwise let through and later code could
    choke on: NaN/Infinity, lone surrogates, nesting deep enough to hit the recursion
    limit, integers too long to convert.

    Raises:
        MalformedPayload: naming the problem (and the position when the decoder gives one).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPayload(f"malformed JSON: body is not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise MalformedPayload("malformed JSON: body is empty")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise MalformedPayload(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise MalformedPayload("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python's conversion limit
        raise MalformedPayload(f"malformed JSON: {str(exc)[:120]}") from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedPayload("malformed JSON: string holds a lone surrogate") from None
    except RecursionError:
        raise MalformedPayload("malformed JSON: nested too deeply") from None
    return value


def validate(model: type[M], payload: dict[str, Any]) -> M:
    """``model.model_validate(payload)`` with the first error turned into a
    :class:`PayloadSchemaError` naming the dotted field path."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "body"
        raise PayloadSchemaError(loc, first["msg"]) from None


_EPOCH = re.compile(r"^\d{1,16}(\.\d+)?$")


def parse_time(value: Any, field: str) -> datetime | None:
    """Reads a timestamp given as ISO 8601, epoch seconds or epoch milliseconds.

    Naive ISO times are taken as UTC. None or "" give None.

    Raises:
        PayloadSchemaError: the value is none of those, or outside 1970..9000.
    """
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int | float) or (isinstance(value, str) and _EPOCH.match(value)):
            number = float(value)
            if number > 1e11:  # milliseconds
                number /= 1000.0
            result = datetime.fromtimestamp(number, UTC)
        elif isinstance(value, str):
            result = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if result.tzinfo is None:
                result = result.replace(tzinfo=UTC)
            result = result.astimezone(UTC)
        else:
            raise ValueError
    except (ValueError, OverflowError, OSError):
        raise PayloadSchemaError(
            field, "not a timestamp (ISO 8601, epoch seconds or epoch milliseconds)"
        ) from None
    if not MIN_TIME <= result < MAX_TIME:
        raise PayloadSchemaError(field, "timestamp out of range")
    return result


def text(value: Any, limit: int = 500) -> str | None:
    """A scalar as a trimmed string (None stays None); long values are cut at ``limit``."""
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    result = str(value).strip()
    return result[:limit] if result else None
