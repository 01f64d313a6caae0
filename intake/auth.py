"""Request authentication for alert sources.

HMAC (default): ``X-MCP-IR-Timestamp: <unix seconds>`` and
``X-MCP-IR-Signature: v1=<hex HMAC-SHA256 of "{timestamp}.{raw body}">``. Every
active secret of the source is tried, so a rotation adds the next secret, moves the
sender over, then removes the old one, without a refused alert. Bearer is only for
sources configured ``auth: bearer``. All comparisons are constant-time, and a refusal
carries a reason for the log only, never for the sender.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

TIMESTAMP_HEADER = "x-mcp-ir-timestamp"
SIGNATURE_HEADER = "x-mcp-ir-signature"
SIGNATURE_VERSION = "v1="
MAX_TIMESTAMP_DIGITS = 12


@dataclass(frozen=True)
class AuthResult:
    """Outcome of a check: ``ok`` and, when refused, a reason safe to log."""

    ok: bool
    reason: str = ""


def sign(secret: bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-MCP-IR-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_VERSION + mac.hexdigest()


def signed_headers(secret: bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """Headers a sender attaches (used by tests, the benchmark and docs examples)."""
    ts = int(time.time() if now is None else now)
    return {
        "X-MCP-IR-Timestamp": str(ts),
        "X-MCP-IR-Signature": sign(secret, ts, body),
        "Content-Type": "application/json",
    }


def _any_equal(candidate: bytes, expected: list[bytes]) -> bool:
    # Compare against every secret without stopping early, so the time taken does not
    # tell which (or whether an earlier) secret matched.
    found = False
    for value in expected:
        found |= hmac.compare_digest(candidate, value)
    return found


def verify_hmac(
    headers: Mapping[str, str],
    body: bytes,
    secrets: tuple[bytes, ...],
    *,
    now: float | None = None,
    tolerance_s: int = 300,
) -> AuthResult:
    """Checks the timestamp window and the signature against every active secret.

    Args:
        headers: request headers (lower-case keys, as Starlette gives them).
        body: the raw body exactly as received.
        secrets: the source's active secrets.
        now: current unix time (tests pass it; default the clock).
        tolerance_s: how far the timestamp may be from ``now``, either way.
    """
    ts_text = headers.get(TIMESTAMP_HEADER)
    sig_text = headers.get(SIGNATURE_HEADER)
    if not ts_text or not sig_text:
        return AuthResult(False, "missing timestamp or signature header")
    if not ts_text.isascii() or not ts_text.isdigit() or len(ts_text) > MAX_TIMESTAMP_DIGITS:
        return AuthResult(False, "timestamp is not unix seconds")
    current = time.time() if now is None else now
    if abs(current - int(ts_text)) > tolerance_s:
        return AuthResult(False, "timestamp outside the tolerance window")
    if not sig_text.startswith(SIGNATURE_VERSION) or not sig_text.isascii():
        return AuthResult(False, "signature is not v1=<hex>")
    candidate = sig_text.encode("ascii")
    expected = [sign(s, ts_text, body).encode("ascii") for s in secrets]
    if not _any_equal(candidate, expected):
        return AuthResult(False, "signature does not match any active secret")
    return AuthResult(True)


def verify_bearer(headers: Mapping[str, str], secrets: tuple[bytes, ...]) -> AuthResult:
    """Checks ``Authorization: Bearer <token>`` against every active secret."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return AuthResult(False, "missing bearer token")
    try:
        candidate = token.strip().encode("utf-8")
    except UnicodeEncodeError:
        return AuthResult(False, "bearer token is not text")
    if not _any_equal(candidate, list(secrets)):
        return AuthResult(False, "bearer token does not match any active secret")
    return AuthResult(True)
