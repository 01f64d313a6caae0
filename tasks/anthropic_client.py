"""Builds the one ``anthropic.Anthropic`` client the tunnel and session steps use.

Credentials are resolved explicitly and fail closed: either a bearer token read
from a named environment variable (``StaticToken``) or Workload Identity
Federation (``WorkloadIdentityCredentials`` reading a projected identity token
file). The SDK's ambient credential chain (``ANTHROPIC_API_KEY`` and friends) is
never used: admin API keys are not accepted by the Tunnels API anyway.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import anthropic

from core.errors import ConfigError, CredentialsError, StepFailed, TransientError

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
        max_retries: SDK retries for 408/409/429/5xx and connection errors.
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


class AnthropicApiError(StepFailed):
    """The API refused a request (4xx other than 429). ``status`` and ``error_type``
    are the API's; ``step`` names the operation (``tunnels.archive``…)."""

    def __init__(self, step: str, detail: str, *, status: int, error_type: str) -> None:
        super().__init__(step, detail)
        self.status = status
        self.error_type = error_type


class AnthropicNotFound(AnthropicApiError):
    """The object does not exist (404)."""


def _api_message(exc: anthropic.APIStatusError) -> tuple[str, str]:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("type", "api_error")), str(err.get("message", ""))
    return "api_error", exc.message


@contextmanager
def api_errors(step: str, subject: str) -> Iterator[None]:
    """Maps SDK exceptions raised inside the block onto :mod:`core.errors`, with
    ``subject`` (e.g. ``tunnel tnl_…``) in every detail.

    Raises:
        TransientError: 5xx, 429, timeouts and connection failures (retryable).
        CredentialsError: The workload identity token exchange was refused.
        AnthropicNotFound: 404.
        AnthropicApiError: any other 4xx.
    """
    try:
        yield
    except anthropic.WorkloadIdentityError as exc:
        # The token exchange failed before the request was sent. Its message is
        # already redacted by the SDK; a 5xx or an unreachable endpoint is temporary.
        status = exc.status_code
        detail = f"{step}: {subject}: workload identity token exchange failed (HTTP {status})"
        if status is None or status >= 500 or status == 429:
            raise TransientError(detail) from None
        raise CredentialsError(detail) from None
    except anthropic.APIConnectionError as exc:
        kind = "timed out" if isinstance(exc, anthropic.APITimeoutError) else "connection failed"
        raise TransientError(f"{step}: {subject}: request {kind}") from None
    except anthropic.APIStatusError as exc:
        error_type, message = _api_message(exc)
        detail = f"{subject}: HTTP {exc.status_code} {error_type}: {message}"
        if exc.status_code >= 500 or exc.status_code == 429:
            raise TransientError(f"{step}: {detail}") from None
        cls = AnthropicNotFound if exc.status_code == 404 else AnthropicApiError
        raise cls(step, detail, status=exc.status_code, error_type=error_type) from None
