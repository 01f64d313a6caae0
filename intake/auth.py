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


# -- the other modes ---------------------------------------------------------------
#
# Each returns an AuthResult; none raises on hostile input. Every comparison runs
# against every active secret (``_any_equal``), so neither the answer's timing nor
# its content tells which secret (or whether a rotated-out one) matched.

PAGERDUTY_HEADER = "x-pagerduty-signature"
GRAFANA_HEADER = "x-grafana-alerting-signature"
STANDARD_WEBHOOKS_HEADER = "webhook-signature"
# Signature headers a vendor attaches by itself: when one is present it is checked,
# whatever the source's mode, and a wrong one is refused.
VENDOR_SIGNATURE_HEADERS = (
    SIGNATURE_HEADER,
    PAGERDUTY_HEADER,
    GRAFANA_HEADER,
    STANDARD_WEBHOOKS_HEADER,
)
MAX_SIGNATURE_HEADER = 4096


def verify_basic(
    headers: Mapping[str, str], username: str, secrets: tuple[bytes, ...]
) -> AuthResult:
    """Checks ``Authorization: Basic base64(user:password)`` (password = any secret)."""
    import base64
    import binascii

    value = headers.get("authorization", "")
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic" or not encoded or len(encoded) > MAX_SIGNATURE_HEADER:
        return AuthResult(False, "missing basic credentials")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return AuthResult(False, "basic credentials are not base64")
    user, sep, password = decoded.partition(b":")
    if not sep:
        return AuthResult(False, "basic credentials have no ':'")
    user_ok = hmac.compare_digest(user, username.encode("utf-8"))
    password_ok = _any_equal(password, list(secrets))
    if not (user_ok and password_ok):
        return AuthResult(False, "basic credentials do not match")
    return AuthResult(True)


def verify_url_token(token: str | None, secrets: tuple[bytes, ...]) -> AuthResult:
    """Checks the ``{token}`` path segment of ``POST /alerts/{source}/{token}``."""
    if not token:
        return AuthResult(False, "missing URL token")
    try:
        candidate = token.encode("utf-8")
    except UnicodeEncodeError:
        return AuthResult(False, "URL token is not text")
    if not _any_equal(candidate, list(secrets)):
        return AuthResult(False, "URL token does not match any active secret")
    return AuthResult(True)


def pagerduty_signature(secret: bytes, body: bytes) -> str:
    """One ``v1=<hex HMAC-SHA256(secret, body)>`` value (PagerDuty "Verifying Signatures")."""
    return "v1=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_pagerduty(
    headers: Mapping[str, str], body: bytes, secrets: tuple[bytes, ...]
) -> AuthResult:
    """``X-PagerDuty-Signature``: comma-separated ``v1=`` values (several while
    PagerDuty rotates its secret); any one matching any active secret passes."""
    header = headers.get(PAGERDUTY_HEADER)
    if not header:
        return AuthResult(False, "missing X-PagerDuty-Signature")
    if len(header) > MAX_SIGNATURE_HEADER or not header.isascii():
        return AuthResult(False, "X-PagerDuty-Signature is not v1=<hex> values")
    offered = [part.strip().encode("ascii") for part in header.split(",") if part.strip()]
    expected = [pagerduty_signature(s, body).encode("ascii") for s in secrets]
    found = False
    for candidate in offered:
        found |= _any_equal(candidate, expected)
    if not found:
        return AuthResult(False, "X-PagerDuty-Signature matches no active secret")
    return AuthResult(True)


def grafana_signature(secret: bytes, body: bytes, timestamp: str | None = None) -> str:
    """Grafana's HMAC: bare hex HMAC-SHA256 of the body, or of ``"<ts>:<body>"``."""
    message = body if timestamp is None else timestamp.encode("ascii") + b":" + body
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify_grafana(
    headers: Mapping[str, str],
    body: bytes,
    secrets: tuple[bytes, ...],
    *,
    timestamp_header: str | None = None,
    now: float | None = None,
    tolerance_s: int = 300,
) -> AuthResult:
    """``X-Grafana-Alerting-Signature`` (Grafana 12+ webhook HMAC), with the optional
    timestamp header: when configured, it must be present and within tolerance."""
    header = headers.get(GRAFANA_HEADER)
    if not header:
        return AuthResult(False, "missing X-Grafana-Alerting-Signature")
    if len(header) > MAX_SIGNATURE_HEADER or not header.isascii():
        return AuthResult(False, "X-Grafana-Alerting-Signature is not hex")
    ts_text = None
    if timestamp_header:
        ts_text = headers.get(timestamp_header.lower())
        if not ts_text or not ts_text.isascii() or not ts_text.isdigit():
            return AuthResult(False, "missing or non-numeric Grafana timestamp header")
        if len(ts_text) > MAX_TIMESTAMP_DIGITS:
            return AuthResult(False, "Grafana timestamp is not unix seconds")
        current = time.time() if now is None else now
        if abs(current - int(ts_text)) > tolerance_s:
            return AuthResult(False, "Grafana timestamp outside the tolerance window")
    expected = [grafana_signature(s, body, ts_text).encode("ascii") for s in secrets]
    if not _any_equal(header.strip().lower().encode("ascii"), expected):
        return AuthResult(False, "X-Grafana-Alerting-Signature matches no active secret")
    return AuthResult(True)


def verify_standard_webhooks(
    headers: Mapping[str, str], body: bytes, secrets: tuple[bytes, ...]
) -> AuthResult:
    """Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``),
    checked by the ``standardwebhooks`` package against each ``whsec_`` secret."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    wanted = {
        k: headers.get(k, "") for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    if not all(wanted.values()):
        return AuthResult(False, "missing webhook-id, webhook-timestamp or webhook-signature")
    if any(len(v) > MAX_SIGNATURE_HEADER for v in wanted.values()):
        return AuthResult(False, "Standard Webhooks header too long")
    ok = False
    for secret in secrets:
        try:
            Webhook(secret.decode("utf-8")).verify(body, wanted)
        except (WebhookVerificationError, ValueError, UnicodeDecodeError):
            continue
        ok = True
    if not ok:
        return AuthResult(False, "webhook-signature matches no active secret (or stale timestamp)")
    return AuthResult(True)


def vendor_signature_check(
    headers: Mapping[str, str],
    body: bytes,
    mode: str,
    secrets: tuple[bytes, ...],
    *,
    tolerance_s: int = 300,
) -> AuthResult | None:
    """A vendor's own signature header present on a source of another mode: checked
    with the source's signature secrets. None when no such header is present.

    A present but wrong signature is refused whatever the mode: a sender (or an
    attacker) claiming to be PagerDuty with a bad signature is not let in by a
    correct bearer token.
    """
    checks = {
        SIGNATURE_HEADER: (
            "hmac",
            lambda: verify_hmac(headers, body, secrets, tolerance_s=tolerance_s),
        ),
        PAGERDUTY_HEADER: ("pagerduty", lambda: verify_pagerduty(headers, body, secrets)),
        GRAFANA_HEADER: ("grafana", lambda: verify_grafana(headers, body, secrets)),
        STANDARD_WEBHOOKS_HEADER: (
            "standard-webhooks",
            lambda: verify_standard_webhooks(headers, body, secrets),
        ),
    }
    for header, (own_mode, check) in checks.items():
        if header in headers and own_mode != mode:
            result = check()
            if not result.ok:
                return AuthResult(False, f"{header} present and wrong: {result.reason}")
    return None
