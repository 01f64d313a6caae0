"""Helpers for turning raw captures into evidence without leaking secrets."""

from __future__ import annotations

import json
from typing import Any

from core.redact import scrub_env


def scrub_inspect(doc: dict[str, Any]) -> dict[str, Any]:
    """An inspect document with every env value replaced by its fingerprint (names
    stay: which variables were set is evidence; a secret of unknown shape is still a
    secret), see :func:`core.redact.scrub_env`."""
    return scrub_env(json.loads(json.dumps(doc, default=str)))


def dumps(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()
