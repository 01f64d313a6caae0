"""Helpers for turning raw captures into evidence without leaking secrets."""

from __future__ import annotations

import json
import re
from typing import Any

from core.redact import fingerprint

_SECRET_NAME = re.compile(r"(?i)(token|secret|passw|key|credential|auth)")


def scrub_env(pairs: list[str] | None) -> list[str]:
    """``NAME=value`` pairs with the value of every secret-looking variable replaced by
    its fingerprint (the name stays: which variables were set is evidence)."""
    out = []
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        out.append(f"{name}={fingerprint(value)}" if sep and _SECRET_NAME.search(name) else pair)
    return out


def scrub_inspect(doc: dict[str, Any]) -> dict[str, Any]:
    clean = json.loads(json.dumps(doc, default=str))
    config = clean.get("Config") or {}
    if "Env" in config:
        config["Env"] = scrub_env(config["Env"])
    return clean


def dumps(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()
