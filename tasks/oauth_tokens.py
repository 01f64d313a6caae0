"""Revoking the OAuth tokens upstream MCP servers issued (RFC 7009 + RFC 7662, httpx).

After a breach, every OAuth token an upstream MCP server's authorization server
issued to us may be in the attacker's hands. For each upstream server the
inventory lists (:class:`UpstreamServer`), each token held in its store is
checked, revoked and checked again:

1. check — introspect (RFC 7662); a token already inactive is not revoked again;
2. apply — revoke (RFC 7009): ``200`` means revoked *or* unknown, so repeating it
   is harmless; ``503`` means "not revoked, try later" (retried with backoff,
   then :class:`TransientError`);
3. verify — introspect again: ``active`` must be false.

Only fingerprints of tokens are recorded; token values and the client secret
never enter results, logs or exceptions.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote_plus, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from core.errors import ConfigError, CredentialsError, OperationFailed, TransientError
from core.redact import fingerprint
from core.retry import RetryPolicy
from tasks.aws_secrets import get_secret_json

log = logging.getLogger(__name__)

TokenTypeHint = Literal["access_token", "refresh_token"]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}


class FileTokenStore(BaseModel):
    """Tokens held in a file: a JSON list, or one token per line (``#`` comments
    and blank lines ignored). JSON entries are strings or
    ``{"token": ..., "token_type_hint": ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["file"]
    path: Path


class AwsSecretTokenStore(BaseModel):
    """Tokens held in an AWS Secrets Manager secret whose ``AWSCURRENT`` value is a
    JSON list (entries as for :class:`FileTokenStore`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["aws_secret"]
    secret_id: str = Field(min_length=1)


TokenStore = Annotated[FileTokenStore | AwsSecretTokenStore, Field(discriminator="kind")]


class UpstreamServer(BaseModel):
    """One upstream MCP server whose authorization server issued tokens to us.

    Embed a list of these in the target inventory (e.g. ``upstream_servers:``).

    Attributes:
        name: The MCP server's name (as in ``mcp_servers[].name``).
        revocation_endpoint: The authorization server's RFC 7009 endpoint
            (``revocation_endpoint`` in its RFC 8414 metadata).
        introspection_endpoint: Its RFC 7662 endpoint.
        client_id: Our OAuth client id at that authorization server.
        client_secret_env: NAME of the environment variable holding our client
            secret (the secret itself never goes in the inventory).
        client_auth: ``client_secret_basic`` (HTTP Basic, default) or
            ``client_secret_post`` (form fields), RFC 6749 §2.3.1.
        token_type_hint: Default ``token_type_hint`` for the held tokens.
        tokens: Where the issued tokens are held: ``{kind: file, path}`` or
            ``{kind: aws_secret, secret_id}``.
        timeout_seconds: Per-request timeout.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    revocation_endpoint: str
    introspection_endpoint: str
    client_id: str = Field(min_length=1)
    client_secret_env: str
    client_auth: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    token_type_hint: TokenTypeHint | None = None
    tokens: TokenStore
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("revocation_endpoint", "introspection_endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        if parts.username or parts.password:
            raise ValueError("must not embed credentials")
        return value

    @field_validator("client_secret_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError("must be an environment variable NAME (letters, digits, _)")
        return value


@dataclass(frozen=True)
class HeldToken:
    """A token from a store; the value is masked."""

    value: SecretStr
    token_type_hint: TokenTypeHint | None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.value.get_secret_value())


@dataclass(frozen=True)
class Introspection:
    """The RFC 7662 answer, minus anything identifying the token."""

    active: bool
    token_type: str | None = None
    client_id: str | None = None
    exp: int | None = None


@dataclass(frozen=True)
class TokenRotation:
    """What happened to one token.

    Attributes:
        server: The upstream server's name.
        token_fingerprint: ``fingerprint()`` of the token.
        active_before: Introspection before revoking.
        revoked: True when this run sent a revocation the server accepted; False
            when the token was already inactive and nothing was sent.
        active_after: Introspection afterwards (False on success).
    """

    server: str
    token_fingerprint: str
    active_before: bool
    revoked: bool
    active_after: bool

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field, for evidence (no secret value in it)."""
        return asdict(self)


class TokensStillActive(OperationFailed):
    """Some tokens are still active after revocation; ``results`` has every token."""

    def __init__(self, detail: str, results: list[TokenRotation]) -> None:
        super().__init__("rotate_upstream_tokens", detail)
        self.results = results


def parse_servers(raw: Any) -> list[UpstreamServer]:
    """Validates the inventory's list of upstream servers.

    Raises:
        ConfigError: Naming the entry and field that is wrong.
    """
    if not isinstance(raw, list):
        raise ConfigError("upstream_servers: must be a list")
    servers = []
    for index, entry in enumerate(raw):
        try:
            servers.append(UpstreamServer.model_validate(entry))
        except ValueError as exc:
            errors = getattr(exc, "errors", lambda: [])()
            first = errors[0] if errors else {"loc": (), "msg": str(exc)}
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"upstream_servers[{index}].{where}: {first['msg']}") from None
    names = [s.name for s in servers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"upstream_servers: duplicate name(s) {dupes}")
    return servers


def client_secret_for(
    server: UpstreamServer, environ: Mapping[str, str] | None = None
) -> SecretStr:
    """Reads the client secret from the environment variable the inventory names.

    Raises:
        CredentialsError: The variable is unset or empty (names the variable).
    """
    env = os.environ if environ is None else environ
    value = env.get(server.client_secret_env)
    if not value:
        raise CredentialsError(
            f"upstream server {server.name!r}: environment variable "
            f"{server.client_secret_env} (client secret) is not set"
        )
    return SecretStr(value)


def load_tokens(server: UpstreamServer, *, secrets_client: Any = None) -> list[HeldToken]:
    """Reads the tokens held for ``server`` from its configured store.

    Raises:
        ConfigError: The store is missing, unreadable or malformed (never quoting
            a token).
        CredentialsError / TransientError: From Secrets Manager.
    """
    store = server.tokens
    if isinstance(store, FileTokenStore):
        try:
            text = store.path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"upstream server {server.name!r}: tokens.path {store.path}: {exc.strerror}"
            ) from None
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                raw: Any = json.loads(stripped)
            except json.JSONDecodeError:
                raise ConfigError(
                    f"upstream server {server.name!r}: tokens.path {store.path} is not valid JSON"
                ) from None
        else:
            raw = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        where = f"tokens.path {store.path}"
    else:
        if secrets_client is None:
            raise ConfigError(
                f"upstream server {server.name!r}: tokens in AWS secret "
                f"{store.secret_id!r} but no Secrets Manager client was given"
            )
        raw = get_secret_json(secrets_client, store.secret_id)
        where = f"tokens.secret_id {store.secret_id!r}"
    return _parse_tokens(server, raw, where)


def revoke(
    http: httpx.Client,
    server: UpstreamServer,
    token: HeldToken,
    *,
    client_secret: SecretStr,
) -> None:
    """Revokes one token (RFC 7009 §2.1). ``200`` — revoked or unknown — is success.

    Raises:
        TransientError: ``503`` (with its ``Retry-After``), other 5xx, 429, or a
            connection failure — the token must be assumed still valid.
        CredentialsError: ``401 invalid_client``.
        OperationFailed: Any other refusal (``unsupported_token_type``,
            ``unauthorized_client``, ``invalid_request``…), naming the error code.
    """
    _post(http, server, server.revocation_endpoint, "revoke", token, client_secret)


def introspect(
    http: httpx.Client,
    server: UpstreamServer,
    token: HeldToken,
    *,
    client_secret: SecretStr,
) -> Introspection:
    """Asks the authorization server whether ``token`` is active (RFC 7662 §2.1).

    Raises:
        TransientError, CredentialsError, OperationFailed: As for :func:`revoke`; also
            OperationFailed when the answer lacks a boolean ``active``.
    """
    response = _post(
        http, server, server.introspection_endpoint, "introspect", token, client_secret
    )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
        raise OperationFailed(
            "introspect",
            f"upstream server {server.name!r}: introspection answer has no boolean 'active'",
        )
    return Introspection(
        active=body["active"],
        token_type=body.get("token_type") if body["active"] else None,
        client_id=body.get("client_id") if body["active"] else None,
        exp=body.get("exp") if body["active"] else None,
    )


def rotate_upstream_tokens(
    servers: list[UpstreamServer],
    *,
    http: httpx.Client,
    secrets_client: Any = None,
    environ: Mapping[str, str] | None = None,
    attempts: int = 1,
    max_backoff: float = 5.0,
) -> list[TokenRotation]:
    """Check → revoke → verify every token every upstream server holds.

    Idempotent: a token already inactive is not revoked again, and re-running
    after a crash only repeats harmless calls. A transient failure raises
    :class:`TransientError` (with the server's ``Retry-After``), which the runner's
    retry policy answers by running the step again; ``attempts`` > 1 applies the
    same policy (:mod:`core.retry`) here, for callers outside a run, waiting at
    most ``max_backoff`` seconds between tries.

    Returns:
        One :class:`TokenRotation` per token (fingerprints only), in inventory order.

    Raises:
        TokensStillActive: A token still introspects active after revocation
            (``.results`` holds every token's outcome).
        ConfigError, CredentialsError, TransientError, OperationFailed: See
            :func:`load_tokens`, :func:`client_secret_for`, :func:`revoke`.
    """
    if attempts < 1:
        raise ConfigError("attempts: must be at least 1")
    policy = RetryPolicy(
        attempts=attempts, backoff_s=min(0.2, max_backoff), max_backoff_s=max_backoff
    )
    results: list[TokenRotation] = []
    for server in servers:
        secret = client_secret_for(server, environ)
        for token in load_tokens(server, secrets_client=secrets_client):
            before = policy.call(introspect, http, server, token, client_secret=secret)
            revoked = False
            if before.active:
                policy.call(revoke, http, server, token, client_secret=secret)
                revoked = True
            after = policy.call(introspect, http, server, token, client_secret=secret)
            result = TokenRotation(
                server.name, token.fingerprint, before.active, revoked, after.active
            )
            log.info(
                "upstream %s token %s: active_before=%s revoked=%s active_after=%s",
                server.name,
                token.fingerprint,
                before.active,
                revoked,
                after.active,
            )
            results.append(result)
    still = [r for r in results if r.active_after]
    if still:
        listed = ", ".join(f"{r.server}:{r.token_fingerprint}" for r in still)
        raise TokensStillActive(f"token(s) still active after revocation: {listed}", results)
    return results


# -- internals -----------------------------------------------------------------------------


def _parse_tokens(server: UpstreamServer, raw: Any, where: str) -> list[HeldToken]:
    if not isinstance(raw, list):
        raise ConfigError(f"upstream server {server.name!r}: {where} must hold a list of tokens")
    held: list[HeldToken] = []
    for index, entry in enumerate(raw):
        hint: Any = server.token_type_hint
        if isinstance(entry, dict):
            value, hint = entry.get("token"), entry.get("token_type_hint", hint)
        else:
            value = entry
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                f"upstream server {server.name!r}: {where}[{index}] is not a token string"
            )
        if hint not in (None, "access_token", "refresh_token"):
            raise ConfigError(
                f"upstream server {server.name!r}: {where}[{index}].token_type_hint must be "
                "access_token or refresh_token"
            )
        held.append(HeldToken(SecretStr(value.strip()), hint))
    return held


def _post(
    http: httpx.Client,
    server: UpstreamServer,
    url: str,
    operation: str,
    token: HeldToken,
    client_secret: SecretStr,
) -> httpx.Response:
    form = {"token": token.value.get_secret_value()}
    if token.token_type_hint:
        form["token_type_hint"] = token.token_type_hint
    headers = dict(_FORM)
    if server.client_auth == "client_secret_basic":
        # RFC 6749 §2.3.1: id and secret are form-urlencoded BEFORE Basic encoding.
        pair = f"{quote_plus(server.client_id)}:{quote_plus(client_secret.get_secret_value())}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        form["client_id"] = server.client_id
        form["client_secret"] = client_secret.get_secret_value()
    what = f"upstream server {server.name!r}: {operation} of token {token.fingerprint}"
    try:
        response = http.post(url, data=form, headers=headers, timeout=server.timeout_seconds)
    except httpx.TransportError as exc:
        raise TransientError(f"{what}: cannot reach {url} ({type(exc).__name__})") from None
    if response.status_code == 200:
        return response
    error = _error_code(response)
    detail = f"{what}: HTTP {response.status_code} {error}"
    if response.status_code in (429, 503) or response.status_code >= 500:
        raise TransientError(detail, retry_after=_retry_after(response))
    if response.status_code == 401 or error == "invalid_client":
        raise CredentialsError(f"{detail} (client_id {server.client_id!r} was refused)")
    raise OperationFailed(operation, detail)


def _error_code(response: httpx.Response) -> str:
    """The RFC 6749 ``error`` code only: ``error_description`` is free text that a
    server might fill with the request's values, so it is not passed on."""
    try:
        body = response.json()
    except ValueError:
        return "(no error code)"
    code = body.get("error") if isinstance(body, dict) else None
    return (
        code if isinstance(code, str) and re.fullmatch(r"[a-z_]{1,64}", code) else "(no error code)"
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None
