"""Request bodies as the sandbox servers read them: a JSON object, or the error the
imitated API answers (each API words it its own way)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def json_object(
    raw: bytes, not_json: Callable[[], Exception], not_object: Callable[[], Exception]
) -> dict[str, Any]:
    """``raw`` parsed as a JSON object.

    Raises:
        Exception: ``not_json()`` when ``raw`` is not JSON, ``not_object()`` when it is
            JSON but not an object.
    """
    try:
        body = json.loads(raw)
    except ValueError:
        raise not_json() from None
    if not isinstance(body, dict):
        raise not_object()
    return body
