"""One entry point for a request's authentication, whatever the source's mode.

Order: a vendor signature header of another mode, when present, must verify (a
present but wrong ``X-PagerDuty-Signature`` on a bearer source is refused); then the
source's own mode. A URL token is accepted only by ``url-token`` sources, and a
``url-token`` source accepts nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping

from intake.auth import (
    AuthResult,
    vendor_signature_check,
    verify_basic,
    verify_bearer,
    verify_grafana,
    verify_hmac,
    verify_pagerduty,
    verify_standard_webhooks,
    verify_url_token,
)
from intake.config import SourceConfig, SourceSecrets
from intake.entra import EntraVerifier


def authenticate(
    source: SourceConfig,
    secrets: SourceSecrets,
    headers: Mapping[str, str],
    body: bytes,
    *,
    path_token: str | None,
    tolerance_s: int,
    entra: EntraVerifier | None = None,
) -> AuthResult:
    """Checks one request; the result's reason is for the log only."""
    foreign = vendor_signature_check(
        headers, body, source.auth, secrets.signing, tolerance_s=tolerance_s
    )
    if foreign is not None:
        return foreign
    mode = source.auth
    if mode == "url-token":
        return verify_url_token(path_token, secrets.values)
    if path_token is not None:
        return AuthResult(False, "URL token sent to a source that does not use url-token")
    if mode == "hmac":
        return verify_hmac(headers, body, secrets.values, tolerance_s=tolerance_s)
    if mode == "bearer":
        return verify_bearer(headers, secrets.values)
    if mode == "basic":
        return verify_basic(headers, source.username or "", secrets.values)
    if mode == "pagerduty":
        return verify_pagerduty(headers, body, secrets.values)
    if mode == "grafana":
        return verify_grafana(
            headers,
            body,
            secrets.values,
            timestamp_header=source.timestamp_header,
            tolerance_s=tolerance_s,
        )
    if mode == "standard-webhooks":
        return verify_standard_webhooks(headers, body, secrets.values)
    if mode == "entra-id":
        if entra is None:
            return AuthResult(False, "entra-id verifier not configured")
        return entra.verify(headers)
    return AuthResult(False, f"unknown auth mode {mode!r}")
