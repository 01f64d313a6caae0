"""Sandbox upstream MCP servers speaking real MCP over HTTP (streamable HTTP
transport), built with the official ``mcp`` SDK's FastMCP — the same way the MCP
tunnels "Deploy with Helm" page builds its sample server.

With ``oauth`` the server is an OAuth 2.1 resource server as the MCP authorization
spec (2025-11-25) describes, through the SDK's own machinery: an unauthenticated
request gets ``401`` with ``WWW-Authenticate: Bearer ... resource_metadata="<url>"``,
the Protected Resource Metadata document (RFC 9728) is served at
``/.well-known/oauth-protected-resource/mcp`` naming the authorization server, and a
bearer token is accepted when the authorization server's RFC 7662 introspection
(``sandbox/oauth_server.py``) says it is active. Without ``oauth`` anybody may call it.

Each tool returns a fixed string; ``calls`` records every JSON-RPC method received
(names only), so a test can prove an audit never called a tool.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from sandbox.serve import free_port, start_uvicorn

MCP_PATH = "/mcp"


@dataclass(frozen=True)
class OAuthProtection:
    """The authorization server a protected sandbox server trusts, and the client
    credentials it introspects tokens with."""

    issuer_url: str
    introspection_endpoint: str
    client_id: str
    client_secret: str
    required_scopes: tuple[str, ...] = ("mcp:tools",)


class IntrospectionVerifier:
    """``mcp.server.auth.provider.TokenVerifier`` backed by RFC 7662 introspection."""

    def __init__(self, oauth: OAuthProtection) -> None:
        self.oauth = oauth

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        async with httpx.AsyncClient(timeout=5) as http:
            resp = await http.post(
                self.oauth.introspection_endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                auth=(self.oauth.client_id, self.oauth.client_secret),
            )
        if resp.status_code != 200:
            return None
        body = resp.json()
        if not body.get("active"):
            return None
        return AccessToken(
            token=token,
            client_id=str(body.get("client_id", "")),
            scopes=str(body.get("scope", "")).split(),
            expires_at=body.get("exp"),
        )


@dataclass
class SandboxMcpServer:
    """A running sandbox MCP server: ``url`` is its MCP endpoint."""

    name: str
    url: str
    tools: list[str]
    protected: bool
    server: uvicorn.Server
    thread: threading.Thread
    calls: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.url.removesuffix(MCP_PATH)

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


class _MethodRecorder:
    """ASGI middleware noting the JSON-RPC ``method`` of every POST."""

    def __init__(self, app: Any, calls: list[str]) -> None:
        self.app = app
        self.calls = calls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            if scope["type"] == "http":
                self.calls.append(f"{scope['method']} {scope['path']}")
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            doc = json.loads(body)
            items = doc if isinstance(doc, list) else [doc]
            for item in items:
                self.calls.append(str(item.get("method", "(response)")))
        except (ValueError, AttributeError):
            self.calls.append("(unparsable)")
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _tool(name: str) -> Any:
    def tool(query: str = "") -> str:
        return f"{name}: sandbox result for {query!r}"

    tool.__name__ = name
    tool.__doc__ = f"Sandbox tool {name}."
    return tool


def start_mcp_server(
    name: str,
    tools: list[str],
    *,
    oauth: OAuthProtection | None = None,
    advertise_metadata: bool = True,
    host: str = "127.0.0.1",
) -> SandboxMcpServer:
    """Starts an MCP server named ``name`` listing ``tools`` on a free loopback port.
    ``advertise_metadata=False`` (with ``oauth``) leaves out the resource URL, so the
    SDK's 401 carries no ``resource_metadata`` and no metadata document is served: a
    server that requires a token but does not follow the MCP authorization spec."""
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.fastmcp import FastMCP

    port = free_port(host)
    url = f"http://{host}:{port}{MCP_PATH}"
    kwargs: dict[str, Any] = {}
    if oauth is not None:
        kwargs["token_verifier"] = IntrospectionVerifier(oauth)
        kwargs["auth"] = AuthSettings(
            issuer_url=oauth.issuer_url,
            resource_server_url=url if advertise_metadata else None,
            required_scopes=list(oauth.required_scopes),
            validate_token_resource=False if advertise_metadata else None,
        )
    # CRITICAL: the SDK logs every request (and a benign teardown traceback) otherwise.
    mcp = FastMCP(
        name,
        host=host,
        port=port,
        streamable_http_path=MCP_PATH,
        log_level="CRITICAL",
        **kwargs,
    )
    for tool in tools:
        mcp.tool(name=tool)(_tool(tool))
    calls: list[str] = []
    app = _MethodRecorder(mcp.streamable_http_app(), calls)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server, thread = start_uvicorn(
        config,
        what=f"sandbox MCP server {name} on {host}:{port}",
        thread_name=f"mcp-{name}-{port}",
    )
    return SandboxMcpServer(name, url, list(tools), oauth is not None, server, thread, calls)
