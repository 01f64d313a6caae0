"""Secret redaction and fingerprints.

Secret values never enter the trail, logs, Slack or reports. Code that handles a
secret records ``fingerprint(value)`` instead, and every string that leaves the
process through those channels goes through a :class:`Redactor`, which removes
both the configured secret values and the known secret shapes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"

# Known shapes of secrets that may appear in logs even when nobody configured them.
SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
        re.S,
    ),
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/=\-]{8,}"),
    # cloudflared / MCP tunnel tokens: base64 of a JSON object ('{"' -> 'eyJ').
    re.compile(r"\beyJ[A-Za-z0-9_\-+/=]{20,}"),
    # Tunnel tokens of the sandbox and the documented token prefix.
    re.compile(r"\btnltok_[A-Za-z0-9_\-]{8,}"),
    # Stops at quotes and commas so a JSON string holding "TUNNEL_TOKEN=…" stays valid JSON.
    re.compile(r"(?i)(TUNNEL_TOKEN=)[^\s\"',]+"),
)


def fingerprint(value: str | bytes) -> str:
    """A stable, non-reversible reference to a secret: ``sha256:`` + 16 hex digits."""
    data = value.encode() if isinstance(value, str) else value
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


class Redactor:
    """Removes configured secret values and known secret shapes from text and data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for s in secrets:
            self.add(s)

    def add(self, secret: str | bytes | None) -> None:
        """Registers a secret value; values shorter than 6 characters are ignored
        (they would redact ordinary words)."""
        if secret is None:
            return
        text = secret.decode(errors="replace") if isinstance(secret, bytes) else secret
        text = text.strip()
        if len(text) >= 6:
            self._secrets.add(text)

    def text(self, value: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern in SECRET_PATTERNS:
            if pattern.groups:
                value = pattern.sub(lambda m: m.group(1) + REDACTED, value)
            else:
                value = pattern.sub(REDACTED, value)
        return value

    def bytes(self, value: bytes) -> bytes:
        return self.text(value.decode("utf-8", errors="replace")).encode("utf-8")

    def data(self, value: Any) -> Any:
        """Redacts every string inside a JSON-like structure (keys included)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value
