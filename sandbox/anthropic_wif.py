"""The Workload Identity Federation token endpoint, ``POST /v1/oauth/token``.

The SDK's ``WorkloadIdentityCredentials`` posts JSON ``{grant_type, assertion,
federation_rule_id, organization_id, service_account_id?, workspace_id?}`` and
reads ``access_token``, ``expires_in`` and (optionally) ``token_type``. Errors are
OAuth-style bodies (RFC 6749 §5.2: ``{"error", "error_description"}``), which is
what the SDK keeps when it reports a failed exchange.

Sandbox choice for the assertion: the identity provider is not simulated, so an
assertion is accepted when it is JWT-shaped (three base64url segments) AND is one
of the assertions seeded through ``/_sandbox/seed`` ``{"wif": {"assertions":
[...]}}``. The rule, organisation and service account must equal the seeded ones
(defaults in :class:`sandbox.anthropic_state.WifConfig`).
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.anthropic_state import SandboxState

GRANT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_JWT = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*$")


def _oauth_error(status: int, error: str, description: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "error_description": description}


def exchange_token(state: SandboxState, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Validates a jwt-bearer grant and mints a workspace-scoped bearer token."""
    if body.get("grant_type") != GRANT_JWT_BEARER:
        return _oauth_error(
            400, "unsupported_grant_type", f"grant_type: must be {GRANT_JWT_BEARER!r}"
        )
    for field in ("assertion", "federation_rule_id", "organization_id"):
        if not isinstance(body.get(field), str) or not body[field]:
            return _oauth_error(400, "invalid_request", f"{field}: Field required")
    if not body["federation_rule_id"].startswith("fdrl_"):
        return _oauth_error(400, "invalid_request", "federation_rule_id: must start with 'fdrl_'")
    service_account = body.get("service_account_id")
    if service_account is not None and (
        not isinstance(service_account, str) or not service_account.startswith("svac_")
    ):
        return _oauth_error(400, "invalid_request", "service_account_id: must start with 'svac_'")
    assertion = body["assertion"]
    if not _JWT.match(assertion):
        return _oauth_error(400, "invalid_grant", "assertion: not a JWT (header.payload.signature)")
    with state.lock:
        wif = state.wif
        if assertion not in wif.assertions:
            return _oauth_error(401, "invalid_grant", "assertion was not accepted by the rule")
        if body["federation_rule_id"] != wif.federation_rule_id:
            return _oauth_error(401, "invalid_grant", "federation rule does not match")
        if body["organization_id"] != wif.organization_id:
            return _oauth_error(401, "invalid_grant", "organization does not match the rule")
        if service_account is not None and service_account != wif.service_account_id:
            return _oauth_error(401, "invalid_grant", "service account does not match the rule")
        workspace = body.get("workspace_id")
        if workspace is not None and workspace not in wif.workspace_ids:
            return _oauth_error(401, "invalid_grant", "workspace is not enabled on the rule")
        ttl = wif.expires_in
    token = state.mint_token(ttl)
    return 200, {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": "workspace:manage_tunnels",
    }
