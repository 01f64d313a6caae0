"""Builds the one ``anthropic.Anthropic`` client the tunnel and session steps use.

Credentials are resolved explicitly and fail closed: either a bearer token read
from a named environment variable (``StaticToken``) or Workload Identity
Federation (``WorkloadIdentityCredentials`` reading a projected identity token
file). The SDK's ambient credential chain (``ANTHROPIC_API_KEY`` and friends) is
never used: admin API keys are not accepted by the Tunnels API anyway.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import anthropic

from core.errors import ConfigError, CredentialsError
from tasks.anthropic_errors import (
    AnthropicApiError,
    AnthropicConflict,
    AnthropicNotFound,
    api_errors,
    deadline_guard,
)

__all__ = [
    "AnthropicApiError",
    "AnthropicConflict",
    "AnthropicNotFound",
    "api_errors",
    "build_client",
]

_WIF_REQUIRED = ("identity_token_file", "federation_rule_id", "organization_id")
_WIF_OPTIONAL = ("service_account_id", "workspace_id")


def build_client(
    base_url: str | None,
    *,
    bearer_env: str | None = None,
    workload_identity: Mapping[str, Any] | None = None,
    max_retries: int = 2,
    timeout: float = 30,
) -> anthropic.Anthropic:
    """Returns an SDK client for the Tunnels and Managed Agents APIs.

    Args:
        base_url: API root; ``None`` uses ``ANTHROPIC_BASE_URL`` (then the SDK default).
        bearer_env: Name of the environment variable holding a bearer token.
        workload_identity: WIF settings: ``identity_token_file``,
            ``federation_rule_id`` (``fdrl_…``), ``organization_id`` and optionally
            ``service_account_id`` (``svac_…``) and ``workspace_id``.
        max_retries: SDK retries for 408/409/429/5xx and connection errors, for
            idempotent calls; non-idempotent ones (``tunnels.create``,
            ``rotate_token``, ``certificates.create``, ``agents.update``) are sent
            with none, and their adapters look before trying again. The SDK's
            waits never pass the step's deadline (:func:`deadline_guard`).
        timeout: Per-request timeout in seconds.

    Raises:
        CredentialsError: Neither or both credential sources were given, the
            environment variable is unset/empty, or the identity token file is missing.
        ConfigError: A workload-identity field is missing or malformed.
    """
    if (bearer_env is None) == (workload_identity is None):
        raise CredentialsError(
            "anthropic credentials: give exactly one of bearer_env or workload_identity"
        )
    resolved_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
    credentials: Any
    if bearer_env is not None:
        token = os.environ.get(bearer_env, "").strip()
        if not token:
            raise CredentialsError(
                f"anthropic credentials: environment variable {bearer_env} is not set or empty"
            )
        credentials = anthropic.StaticToken(token)
    else:
        assert workload_identity is not None
        credentials = _workload_identity(workload_identity)
    kwargs: dict[str, Any] = {
        "credentials": credentials,
        "max_retries": max_retries,
        "timeout": timeout,
        "middleware": [deadline_guard],
    }
    if resolved_url:
        kwargs["base_url"] = resolved_url
    return anthropic.Anthropic(**kwargs)


def _workload_identity(config: Mapping[str, Any]) -> anthropic.WorkloadIdentityCredentials:
    unknown = set(config) - set(_WIF_REQUIRED) - set(_WIF_OPTIONAL)
    if unknown:
        raise ConfigError(f"workload_identity: unknown field(s) {', '.join(sorted(unknown))}")
    for field in _WIF_REQUIRED:
        value = config.get(field)
        if not isinstance(value, str | os.PathLike) or not str(value).strip():
            raise ConfigError(f"workload_identity.{field}: required, a non-empty string")
    if not str(config["federation_rule_id"]).startswith("fdrl_"):
        raise ConfigError("workload_identity.federation_rule_id: must start with 'fdrl_'")
    service_account = config.get("service_account_id")
    if service_account is not None and not str(service_account).startswith("svac_"):
        raise ConfigError("workload_identity.service_account_id: must start with 'svac_'")
    path = os.fspath(config["identity_token_file"])
    if not os.path.isfile(path):
        raise CredentialsError(f"workload_identity.identity_token_file: no file at {path}")
    return anthropic.WorkloadIdentityCredentials(
        identity_token_provider=anthropic.IdentityTokenFile(path),
        federation_rule_id=str(config["federation_rule_id"]),
        organization_id=str(config["organization_id"]),
        service_account_id=service_account,
        workspace_id=config.get("workspace_id"),
    )
