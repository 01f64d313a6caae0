"""A local Anthropic API for the engine's tests and demo: Tunnels, Managed Agents
sessions and agents, and the Workload Identity Federation token endpoint, driven by
the real ``anthropic`` SDK over HTTP.

Wire behaviour follows the SDK 2.12 source and FACTS §2/§3:

* ``Authorization: Bearer <token>`` must be a token this sandbox knows (the seeded
  workspace token, or one minted by ``POST /v1/oauth/token``); ``x-api-key`` is
  refused. Otherwise 401 ``authentication_error``.
* ``anthropic-version`` must be present; ``anthropic-beta`` must CONTAIN
  ``mcp-tunnels-2026-06-22`` for ``/v1/tunnels`` and ``managed-agents-2026-04-01``
  for ``/v1/sessions`` and ``/v1/agents`` (the SDK sends several betas). Otherwise
  400 ``invalid_request_error``.
* Errors use the real body ``{"type": "error", "error": {"type", "message"},
  "request_id"}`` and a ``request-id`` header.

Test-only endpoints (no auth): ``GET /_sandbox/calls``, ``POST /_sandbox/reset``,
``POST /_sandbox/seed``, ``POST /_sandbox/faults``, ``POST /_sandbox/tunnel-connect``.

Run standalone: ``python -m sandbox.anthropic_api --port 8765 --seed seed.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox import anthropic_agents as agents
from sandbox import anthropic_tunnels as tunnels
from sandbox.anthropic_ca import make_ca_pem
from sandbox.anthropic_state import (
    ApiError,
    Fault,
    SandboxState,
    invalid,
    new_id,
    scrub,
)
from sandbox.anthropic_wif import exchange_token
from sandbox.bodies import json_object

TUNNELS_BETA = "mcp-tunnels-2026-06-22"
MANAGED_AGENTS_BETA = "managed-agents-2026-04-01"

_DEFAULT_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}

Handler = Callable[[SandboxState, dict[str, str], Any, dict[str, Any]], dict[str, Any]]

_ID = r"(?P<{}>[A-Za-z0-9_\-]+)"


def _route(
    method: str, pattern: str, beta: str, handler: Handler
) -> tuple[str, re.Pattern[str], str, Handler]:
    regex = re.sub(r"\{(\w+)\}", lambda m: _ID.format(m.group(1)), pattern)
    return method, re.compile(f"^{regex}$"), beta, handler


# (method, path regex, required beta, handler(state, path params, query, body))
ROUTES = [
    _route("POST", "/v1/tunnels", TUNNELS_BETA, lambda s, p, q, b: tunnels.create_tunnel(s, b)),
    _route("GET", "/v1/tunnels", TUNNELS_BETA, lambda s, p, q, b: tunnels.list_tunnels(s, q)),
    _route(
        "GET",
        "/v1/tunnels/{tunnel_id}",
        TUNNELS_BETA,
        lambda s, p, q, b: tunnels.retrieve_tunnel(s, p["tunnel_id"]),
    ),
    _route(
        "POST",
        "/v1/tunnels/{tunnel_id}/archive",
        TUNNELS_BETA,
        lambda s, p, q, b: tunnels.archive_tunnel(s, p["tunnel_id"]),
    ),
    _route(
        "POST",
        "/v1/tunnels/{tunnel_id}/reveal_token",
        TUNNELS_BETA,
        lambda s, p, q, b: tunnels.reveal_token(s, p["tunnel_id"]),
    ),
    _route(
        "POST",
        "/v1/tunnels/{tunnel_id}/rotate_token",
        TUNNELS_BETA,
        lambda s, p, q, b: tunnels.rotate_token(s, p["tunnel_id"], b),
    ),
    _route(
        "POST",
        "/v1/tunnels/{tunnel_id}/certificates",
        TUNNELS_BETA,
        lambda s, p, q, b: tunnels.create_certificate(s, p["tunnel_id"], b),
    ),
    _route(
        "GET",
        "/v1/tunnels/{tunnel_id}/certificates",
        TUNNELS_BETA,
        lambda s, p, q, b: tunnels.list_certificates(s, p["tunnel_id"], q),
    ),
    _route(
        "GET",
        "/v1/tunnels/{tunnel_id}/certificates/{cert_id}",
        TUNNELS_BETA,
        lambda s, p, q, b: tunnels.retrieve_certificate(s, p["tunnel_id"], p["cert_id"]),
    ),
    _route(
        "POST",
        "/v1/tunnels/{tunnel_id}/certificates/{cert_id}/archive",
        TUNNELS_BETA,
        lambda s, p, q, b: tunnels.archive_certificate(s, p["tunnel_id"], p["cert_id"]),
    ),
    *agents.routes(_route, MANAGED_AGENTS_BETA),
]


def _error(status: int, error_type: str, message: str) -> JSONResponse:
    request_id = new_id("req_")
    return JSONResponse(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        },
        status_code=status,
        headers={"request-id": request_id},
    )


class DroppedResponse(Response):
    """Starts a 200 answer, sends part of its body, then breaks the connection: the
    client gets no usable response (httpx raises ``RemoteProtocolError``, the SDK an
    ``APIConnectionError``)."""

    def __init__(self) -> None:
        super().__init__(status_code=599)  # recorded as 599: no answer reached the client

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": "', "more_body": True})
        raise ConnectionAbortedError("sandbox fault: response dropped on purpose")


def _fault_response(fault: Fault) -> Response:
    if fault.drop:
        return DroppedResponse()
    response = _error(
        fault.status,
        fault.error_type or _DEFAULT_ERROR_TYPES.get(fault.status, "api_error"),
        fault.message,
    )
    if fault.retry_after_ms is not None:
        response.headers["retry-after-ms"] = str(fault.retry_after_ms)
    if fault.retry_after is not None:
        response.headers["retry-after"] = str(fault.retry_after)
    return response


def _betas(request: Request) -> set[str]:
    values = request.headers.getlist("anthropic-beta")
    return {b.strip() for v in values for b in v.split(",") if b.strip()}


def _check_headers(state: SandboxState, request: Request, beta: str) -> None:
    """Raises ApiError for a missing/unknown credential, version or beta."""
    auth = request.headers.get("authorization", "")
    if not auth:
        if request.headers.get("x-api-key"):
            raise ApiError(
                401,
                "authentication_error",
                "x-api-key is not accepted for this endpoint; authenticate with an "
                "OAuth bearer token (Authorization: Bearer) minted by workload identity "
                "federation",
            )
        raise ApiError(401, "authentication_error", "Authorization header is missing")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "authentication_error", "Authorization header must be 'Bearer <token>'")
    token = token.strip()
    if token.startswith(("sk-ant-admin", "sk-ant-api")) and beta == TUNNELS_BETA:
        raise ApiError(
            401,
            "authentication_error",
            "API keys (including Admin API keys) are not accepted for the Tunnels API; "
            "use an OAuth bearer token minted by workload identity federation",
        )
    if not state.token_valid(token):
        raise ApiError(401, "authentication_error", "Invalid bearer token")
    if not request.headers.get("anthropic-version"):
        raise invalid("anthropic-version: header is required")
    if beta not in _betas(request):
        raise invalid(f"This endpoint is in beta: the anthropic-beta header must include {beta!r}")


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    return json_object(
        raw,
        lambda: invalid("Request body is not valid JSON"),
        lambda: invalid("Request body must be a JSON object"),
    )


def create_app(state: SandboxState | None = None) -> Starlette:
    """The sandbox as an ASGI app. ``app.state.sandbox`` is its :class:`SandboxState`."""
    state = state or SandboxState()

    async def recorded(request: Request, answer: Callable[[dict[str, Any]], Response]) -> Response:
        """Answers ``request`` from its JSON body (an ``ApiError`` becomes the API's
        error answer) and records the call."""
        query = request.query_params
        body: dict[str, Any] = {}
        started = time.time()
        try:
            body = await _json_body(request)
            response = answer(body)
        except ApiError as exc:
            response = _error(exc.status, exc.error_type, exc.message)
        _record(state, request, query, body, response, started)
        return response

    async def api(request: Request) -> Response:
        return await recorded(
            request,
            lambda body: _dispatch(state, request, request.url.path, request.query_params, body),
        )

    def _dispatch(
        state: SandboxState, request: Request, path: str, query: Any, body: dict[str, Any]
    ) -> Response:
        if path == "/v1/oauth/token" and request.method == "POST":
            status, payload = exchange_token(state, body)
            return JSONResponse(payload, status_code=status)
        path_matched = False
        for method, regex, beta, handler in ROUTES:
            match = regex.match(path)
            if not match:
                continue
            path_matched = True
            if method != request.method:
                continue
            _check_headers(state, request, beta)
            fault = state.take_fault(request.method, path)
            if fault is not None and not fault.after:
                return _fault_response(fault)
            payload = handler(state, match.groupdict(), query, body)
            if fault is not None:  # applied; now the answer is lost
                return _fault_response(fault)
            request_id = new_id("req_")
            return JSONResponse(payload, headers={"request-id": request_id})
        if path_matched:
            raise ApiError(405, "invalid_request_error", f"Method {request.method} not allowed")
        raise ApiError(404, "not_found_error", f"Not found: {request.method} {path}")

    async def calls(request: Request) -> Response:
        with state.lock:
            return JSONResponse(list(state.calls))

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    async def seed(request: Request) -> Response:
        return await recorded(request, lambda body: JSONResponse(seed_state(state, body)))

    async def faults(request: Request) -> Response:
        try:
            body = await _json_body(request)
            added = add_faults(state, body)
        except ApiError as exc:
            return _error(exc.status, exc.error_type, exc.message)
        return JSONResponse({"faults": added})

    async def connect(request: Request) -> Response:
        query = request.query_params
        started = time.time()
        try:
            body = await _json_body(request)
        except ApiError as exc:
            return _error(exc.status, exc.error_type, exc.message)
        status, payload = tunnels.tunnel_connect(state, body)
        response = JSONResponse(payload, status_code=status)
        _record(state, request, query, body, response, started)
        return response

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(
        routes=[
            Route("/_sandbox/calls", calls, methods=["GET"]),
            Route("/_sandbox/reset", reset, methods=["POST"]),
            Route("/_sandbox/seed", seed, methods=["POST"]),
            Route("/_sandbox/faults", faults, methods=["POST"]),
            Route("/_sandbox/tunnel-connect", connect, methods=["POST"]),
            Route("/{path:path}", api, methods=methods),
        ]
    )
    app.state.sandbox = state
    return app


def _record(
    state: SandboxState,
    request: Request,
    query: Any,
    body: dict[str, Any],
    response: Response,
    started: float,
) -> None:
    try:
        payload = json.loads(bytes(response.body)) if response.body else None
    except ValueError:
        payload = None
    state.record(
        {
            "method": request.method,
            "path": request.url.path,
            "query": _query_dict(query),
            "body": scrub(body),
            "status": response.status_code,
            "response": scrub(payload),
            "beta": sorted(_betas(request)),
            "ts": started,
        }
    )


def _query_dict(query: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in query.multi_items():
        if key in out:
            out[key] = [*out[key], value] if isinstance(out[key], list) else [out[key], value]
        else:
            out[key] = value
    return out


def add_faults(state: SandboxState, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Adds faults from ``{"faults": [{path, status, count?, method?, error_type?,
    message?, retry_after_ms?, retry_after?, after?, drop?}]}`` (or one fault
    object). ``path`` is an fnmatch pattern; ``retry_after_ms``/``retry_after`` set
    the headers the SDK honours between retries; ``after: true`` applies the request
    before failing its answer; ``drop: true`` breaks the connection instead of
    answering (``status`` is then ignored)."""
    specs = body.get("faults", [body]) if body else []
    added = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
            raise invalid(f"faults[{i}].path: Field required (an fnmatch pattern)")
        status = spec.get("status", 599 if spec.get("drop") is True else None)
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise invalid(f"faults[{i}].status: must be an HTTP error status (400-599)")
        count = spec.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise invalid(f"faults[{i}].count: must be a positive integer")
        for flag in ("after", "drop"):
            if not isinstance(spec.get(flag, False), bool):
                raise invalid(f"faults[{i}].{flag}: must be true or false")
        for header in ("retry_after", "retry_after_ms"):
            value = spec.get(header)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise invalid(f"faults[{i}].{header}: must be a non-negative integer")
        fault = Fault(
            path=spec["path"],
            status=status,
            count=count,
            method=spec.get("method"),
            error_type=spec.get("error_type"),
            message=spec.get("message", "injected fault"),
            retry_after_ms=spec.get("retry_after_ms"),
            retry_after=spec.get("retry_after"),
            after=spec.get("after", False),
            drop=spec.get("drop", False),
        )
        with state.lock:
            state.faults.append(fault)
        added.append({"path": fault.path, "status": fault.status, "count": fault.count})
    return added


def seed_state(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    """Creates objects directly (no caps): ``tunnels``, ``sessions``, ``agents``, plus
    ``wif`` settings and ``faults``. Returns what was created, tunnel tokens included
    (this endpoint exists for tests and the demo)."""
    out: dict[str, Any] = {"tunnels": [], "sessions": [], "agents": []}
    for i, spec in enumerate(body.get("tunnels", [])):
        out["tunnels"].append(_seed_tunnel(state, spec, i))
    for i, spec in enumerate(body.get("agents", [])):
        out["agents"].append(agents.seed_agent(state, spec, i))
    for i, spec in enumerate(body.get("sessions", [])):
        out["sessions"].append(agents.seed_session(state, spec, i))
    if "wif" in body:
        _seed_wif(state, body["wif"])
        out["wif"] = {"configured": True}
    if "faults" in body:
        out["faults"] = add_faults(state, {"faults": body["faults"]})
    if body.get("tunnel_cap") is not None:
        with state.lock:
            state.tunnel_cap = int(body["tunnel_cap"])
    return out


def _seed_tunnel(state: SandboxState, spec: dict[str, Any], i: int) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise invalid(f"tunnels[{i}]: must be an object")
    tunnel = tunnels.new_tunnel(state, spec.get("display_name"), domain=spec.get("domain"))
    certs: list[dict[str, Any]] = []
    ca = spec.get("ca", True)
    if ca:
        pem = ca if isinstance(ca, str) else make_ca_pem()
        certs.append(tunnels.create_certificate(state, tunnel.id, {"ca_certificate_pem": pem}))
    if spec.get("archived"):
        tunnels.archive_tunnel(state, tunnel.id)
    record = tunnel.to_api()
    record["tunnel_token"] = tunnel.token
    record["token_id"] = tunnel.token_id
    record["certificates"] = certs
    return record


def _seed_wif(state: SandboxState, spec: dict[str, Any]) -> None:
    if not isinstance(spec, dict):
        raise invalid("wif: must be an object")
    with state.lock:
        wif = state.wif
        if "assertions" in spec:
            wif.assertions = set(spec["assertions"])
        for key in ("federation_rule_id", "organization_id", "service_account_id"):
            if key in spec:
                setattr(wif, key, spec[key])
        if "workspace_ids" in spec:
            wif.workspace_ids = set(spec["workspace_ids"])
        if "expires_in" in spec:
            wif.expires_in = int(spec["expires_in"])


def main(argv: list[str] | None = None) -> None:
    """Serves the sandbox on ``--port`` after applying ``--seed`` (a JSON file)."""
    import os

    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", help="JSON file with the /_sandbox/seed body")
    parser.add_argument(
        "--token-env",
        default="SANDBOX_ANTHROPIC_TOKEN",
        help="environment variable holding the workspace bearer token to accept",
    )
    parser.add_argument(
        "--token-file",
        help="write the accepted workspace bearer token to this file (mode 0600)",
    )
    args = parser.parse_args(argv)
    state = SandboxState(workspace_token=os.environ.get(args.token_env) or None)
    if args.token_file:
        fd = os.open(args.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(state.workspace_token)
    if args.seed:
        with open(args.seed, encoding="utf-8") as fh:
            seed_state(state, json.load(fh))
    from core.redact import fingerprint

    print(
        f"anthropic sandbox on http://{args.host}:{args.port} "
        f"(workspace token {fingerprint(state.workspace_token)})",
        flush=True,
    )
    uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="warning")


__all__ = ["SandboxState", "create_app", "main", "seed_state"]

if __name__ == "__main__":
    main()
