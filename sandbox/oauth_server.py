"""An OAuth 2.0 authorization server stand-in: RFC 7009 revocation, RFC 7662
introspection (Starlette).

Upstream MCP servers issue OAuth tokens through their authorization server; after
a breach those tokens are revoked there. This stand-in follows the RFCs, errors
included, so the real ``httpx`` client in ``tasks/oauth_tokens.py`` is tested
against the documented behaviour:

* Both endpoints take ``POST`` ``application/x-www-form-urlencoded`` with
  ``token`` (required) and ``token_type_hint`` (optional); anything else is
  ``400 {"error": "invalid_request"}`` (RFC 6749 §5.2 error body,
  ``Cache-Control: no-store``).
* Client authentication (RFC 6749 §2.3.1): HTTP Basic with the form-urlencoded
  ``client_id:client_secret``, or ``client_id``/``client_secret`` form fields —
  not both. Failure is ``401 {"error": "invalid_client"}`` with
  ``WWW-Authenticate: Basic realm="oauth-sandbox"``.
* Revocation (RFC 7009 §2.2): ``200`` for a revoked token AND for an unknown or
  already revoked one; revoking a refresh token also revokes the access tokens
  issued with it (§2.1 SHOULD); a token issued to another client is refused
  (``400 unauthorized_client``, as Keycloak answers); a hint outside
  ``access_token``/``refresh_token``, or a token type this server is configured
  not to revoke, is ``400 unsupported_token_type`` (§2.2.1); an injected
  outage answers ``503`` with ``Retry-After`` (§2.2.1).
* Introspection (RFC 7662 §2.2): ``{"active": false}`` and nothing else for an
  unknown, revoked or expired token; otherwise ``active: true`` with
  ``scope``, ``client_id``, ``token_type``, ``exp``, ``iat``, ``sub``, ``iss``.

Sandbox-only endpoints: ``POST /_sandbox/issue`` (seed tokens), ``GET
/_sandbox/calls`` (what was called — token fingerprints, never values), ``POST
/_sandbox/faults`` (make the next N calls of an endpoint answer an error status).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.redact import fingerprint

TOKEN_TYPES = ("access_token", "refresh_token")
REALM = "oauth-sandbox"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class IssuedToken:
    value: str
    token_type: str
    client_id: str
    scope: str
    sub: str
    iat: int
    exp: int
    revoked: bool = False
    parent: str | None = None  # the refresh token an access token came with


@dataclass
class OAuthState:
    """Everything the server knows; guarded by ``lock`` (uvicorn runs in a thread)."""

    clients: dict[str, str]
    issuer: str
    revocable_types: tuple[str, ...]
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class OAuthFailure(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.description = description


def create_app(
    clients: Mapping[str, str],
    *,
    issuer: str = "https://auth.sandbox.example",
    revocable_types: Iterable[str] = TOKEN_TYPES,
) -> Starlette:
    """Builds the authorization server.

    Args:
        clients: Registered confidential clients, ``client_id`` → ``client_secret``.
        issuer: Value of ``iss`` in introspection answers and metadata.
        revocable_types: Token types this server revokes; others get
            ``unsupported_token_type``.
    """
    state = OAuthState(clients=dict(clients), issuer=issuer, revocable_types=tuple(revocable_types))

    async def metadata(request: Request) -> JSONResponse:
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "issuer": state.issuer,
                "revocation_endpoint": f"{base}/revoke",
                "introspection_endpoint": f"{base}/introspect",
                "revocation_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "introspection_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
            }
        )

    async def revoke(request: Request) -> JSONResponse:
        return await _handle(state, request, "revoke", _revoke)

    async def introspect(request: Request) -> JSONResponse:
        return await _handle(state, request, "introspect", _introspect)

    async def issue(request: Request) -> JSONResponse:
        body = await request.json()
        client_id = body.get("client_id")
        if client_id not in state.clients:
            return JSONResponse({"error": "unknown client_id"}, status_code=400)
        kind = body.get("token_type", "access_token")
        if kind not in (*TOKEN_TYPES, "both"):
            return JSONResponse(
                {"error": "token_type must be access_token, refresh_token or both"}, 400
            )
        now = int(time.time())
        expires_in = int(body.get("expires_in", 3600))
        scope = str(body.get("scope", "mcp:tools"))
        sub = str(body.get("sub", "user-1"))
        answer: dict[str, Any] = {"token_type": "Bearer", "expires_in": expires_in}
        with state.lock:
            refresh = None
            if kind in ("refresh_token", "both"):
                refresh = "ort_" + secrets.token_urlsafe(24)
                state.tokens[refresh] = IssuedToken(
                    refresh, "refresh_token", client_id, scope, sub, now, now + 30 * 86400
                )
                answer["refresh_token"] = refresh
            if kind in ("access_token", "both"):
                access = "oat_" + secrets.token_urlsafe(24)
                state.tokens[access] = IssuedToken(
                    access,
                    "access_token",
                    client_id,
                    scope,
                    sub,
                    now,
                    now + expires_in,
                    parent=refresh,
                )
                answer["access_token"] = access
        return JSONResponse(answer, headers=_NO_STORE)

    async def calls(request: Request) -> JSONResponse:
        with state.lock:
            return JSONResponse({"calls": list(state.calls)})

    async def faults(request: Request) -> JSONResponse:
        body = await request.json()
        endpoint = body.get("endpoint")
        if endpoint not in ("revoke", "introspect"):
            return JSONResponse({"error": "endpoint must be revoke or introspect"}, 400)
        entry = (int(body.get("status", 503)), int(body.get("retry_after", 0)))
        with state.lock:
            state.faults.setdefault(endpoint, []).extend([entry] * int(body.get("count", 1)))
        return JSONResponse({"queued": len(state.faults[endpoint])})

    app = Starlette(
        routes=[
            Route("/.well-known/oauth-authorization-server", metadata, methods=["GET"]),
            Route("/revoke", revoke, methods=["POST"]),
            Route("/introspect", introspect, methods=["POST"]),
            Route("/_sandbox/issue", issue, methods=["POST"]),
            Route("/_sandbox/calls", calls, methods=["GET"]),
            Route("/_sandbox/faults", faults, methods=["POST"]),
        ]
    )
    app.state.oauth = state
    return app


async def _handle(state: OAuthState, request: Request, endpoint: str, action: Any) -> JSONResponse:
    record: dict[str, Any] = {"endpoint": endpoint, "client_id": None, "auth_method": None}
    try:
        with state.lock:
            fault = state.faults.get(endpoint, [])
            injected = fault.pop(0) if fault else None
        if injected:
            status, retry_after = injected
            record.update(status=status, error="temporarily_unavailable")
            headers = {"Retry-After": str(retry_after)} if status == 503 else {}
            return _error(status, "temporarily_unavailable", "injected outage", headers)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise OAuthFailure(
                400, "invalid_request", "body must be application/x-www-form-urlencoded"
            )
        form = _parse_form(await request.body())
        client_id, method = _authenticate(state, request.headers.get("authorization"), form)
        record.update(client_id=client_id, auth_method=method)
        token = form.get("token")
        hint = form.get("token_type_hint")
        record["token_type_hint"] = hint
        if not isinstance(token, str) or not token:
            raise OAuthFailure(400, "invalid_request", "missing required parameter: token")
        record["token_fingerprint"] = fingerprint(token)
        with state.lock:
            body = action(state, client_id, token, hint)
        record["status"] = 200
        return JSONResponse(body, headers=_NO_STORE)
    except OAuthFailure as failure:
        record.update(status=failure.status, error=failure.error)
        headers = {"WWW-Authenticate": f'Basic realm="{REALM}"'} if failure.status == 401 else {}
        return _error(failure.status, failure.error, failure.description, headers)
    finally:
        with state.lock:
            state.calls.append(record)


def _parse_form(body: bytes) -> dict[str, str]:
    """Parses a urlencoded body; RFC 6749 §3.1: parameters MUST NOT repeat."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise OAuthFailure(400, "invalid_request", "malformed form body") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise OAuthFailure(400, "invalid_request", f"parameter {key} repeated")
        form[key] = value
    return form


def _authenticate(state: OAuthState, authorization: str | None, form: Any) -> tuple[str, str]:
    form_id, form_secret = form.get("client_id"), form.get("client_secret")
    if authorization:
        scheme, _, param = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise OAuthFailure(401, "invalid_client", "unsupported authentication scheme")
        if form_secret is not None:
            raise OAuthFailure(
                400, "invalid_request", "more than one client authentication method used"
            )
        try:
            decoded = base64.b64decode(param.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthFailure(401, "invalid_client", "malformed Basic credentials") from None
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise OAuthFailure(401, "invalid_client", "malformed Basic credentials")
        client_id, secret, method = (
            unquote_plus(raw_id),
            unquote_plus(raw_secret),
            "client_secret_basic",
        )
    elif form_id is not None and form_secret is not None:
        client_id, secret, method = str(form_id), str(form_secret), "client_secret_post"
    else:
        raise OAuthFailure(401, "invalid_client", "client authentication required")
    expected = state.clients.get(client_id)
    if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
        raise OAuthFailure(401, "invalid_client", "client authentication failed")
    return client_id, method


def _revoke(state: OAuthState, client_id: str, token: str, hint: str | None) -> dict[str, Any]:
    if hint is not None and hint not in TOKEN_TYPES:
        raise OAuthFailure(400, "unsupported_token_type", f"token_type_hint {hint!r} not supported")
    issued = state.tokens.get(token)
    if issued is None:
        return {}  # RFC 7009 §2.2: invalid tokens do not cause an error response
    if issued.client_id != client_id:
        raise OAuthFailure(400, "unauthorized_client", "token was not issued to this client")
    if issued.token_type not in state.revocable_types:
        raise OAuthFailure(
            400, "unsupported_token_type", f"revocation of {issued.token_type} is not supported"
        )
    issued.revoked = True
    if issued.token_type == "refresh_token":
        for other in state.tokens.values():
            if other.parent == token:
                other.revoked = True
    return {}


def _introspect(state: OAuthState, client_id: str, token: str, hint: str | None) -> dict[str, Any]:
    issued = state.tokens.get(token)
    if issued is None or issued.revoked or issued.exp <= time.time():
        return {"active": False}
    return {
        "active": True,
        "scope": issued.scope,
        "client_id": issued.client_id,
        "token_type": "Bearer" if issued.token_type == "access_token" else "refresh_token",
        "exp": issued.exp,
        "iat": issued.iat,
        "sub": issued.sub,
        "iss": state.issuer,
    }


def _error(status: int, error: str, description: str, headers: Mapping[str, str]) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={**_NO_STORE, **headers},
    )
