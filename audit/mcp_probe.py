"""Probes of the upstream MCP servers, over the streamable HTTP transport.

:func:`probe_oauth` sends an unauthenticated JSON-RPC ``initialize`` as an MCP
client would and judges the answer against the MCP authorization spec
(2025-11-25, "Protected Resource Metadata Discovery Requirements"; RFC 9728 §5.1):
a protected server answers ``401`` with ``WWW-Authenticate: Bearer
resource_metadata="<url>"``, and that URL serves the Protected Resource Metadata
document with at least one ``authorization_servers`` entry.

:func:`list_tools` lists a server's tools with the official ``mcp`` client
(``initialize`` then ``tools/list``, following ``nextCursor``). Neither calls a tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

PROTOCOL_VERSION = "2025-11-25"
TIMEOUT_S = 10.0
_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')


def parse_www_authenticate(value: str) -> dict[str, dict[str, str]]:
    """``{scheme (lowercase): {param: value}}`` of a WWW-Authenticate header value
    (RFC 9110 §11.6.1: auth-scheme followed by comma-separated auth-params; several
    challenges may share one header)."""
    challenges: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    pos = 0
    while pos < len(value):
        rest = value[pos:]
        skip = len(rest) - len(rest.lstrip(" ,\t"))
        pos += skip
        if pos >= len(value):
            break
        match = _PARAM.match(value, pos)
        if match and current is not None:
            raw = match.group(2) if match.group(2) is not None else match.group(3)
            current[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", raw)
            pos = match.end()
            continue
        scheme = re.match(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", value[pos:])
        if not scheme:
            break
        current = challenges.setdefault(scheme.group(0).lower(), {})
        pos += scheme.end()
    return challenges


@dataclass
class OAuthProbe:
    """What an unauthenticated request to one server showed."""

    route: str
    url: str
    verdict: str  # "protected" | "open" | "bad_challenge" | "unreachable"
    observed: str
    status: int | None = None
    resource_metadata: dict[str, Any] = field(default_factory=dict)


def _initialize_body() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-ir-audit", "version": "1.0"},
        },
    }


def probe_oauth(route: str, url: str, http: httpx.Client | None = None) -> OAuthProbe:
    """One unauthenticated ``initialize`` to ``url`` and, on a 401 challenge, one GET of
    the resource metadata it names."""
    own = http is None
    http = http or httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)
    try:
        try:
            resp = http.post(
                url,
                json=_initialize_body(),
                headers={"Accept": "application/json, text/event-stream"},
            )
        except httpx.HTTPError as exc:
            return OAuthProbe(
                route, url, "unreachable", f"POST initialize failed: {type(exc).__name__}"
            )
        if resp.status_code != 401:
            session = resp.headers.get("mcp-session-id")
            if session and resp.is_success:
                # close the session our probe opened (streamable HTTP: DELETE with its id)
                with contextlib.suppress(httpx.HTTPError):
                    http.delete(url, headers={"Mcp-Session-Id": session})
            verdict = "open" if resp.is_success else "bad_challenge"
            return OAuthProbe(
                route,
                url,
                verdict,
                f"unauthenticated initialize answered HTTP {resp.status_code}"
                + (" (the server accepted it without a token)" if resp.is_success else ""),
                resp.status_code,
            )
        header = resp.headers.get("www-authenticate", "")
        bearer = parse_www_authenticate(header).get("bearer")
        if bearer is None or not bearer.get("resource_metadata"):
            return OAuthProbe(
                route,
                url,
                "bad_challenge",
                f"HTTP 401 but WWW-Authenticate {header!r} has no Bearer resource_metadata",
                401,
            )
        meta_url = bearer["resource_metadata"]
        try:
            meta = http.get(meta_url, headers={"Accept": "application/json"})
            doc = meta.json() if meta.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            return OAuthProbe(
                route,
                url,
                "bad_challenge",
                f"resource metadata {meta_url}: {type(exc).__name__}",
                401,
            )
        servers = (doc or {}).get("authorization_servers") if isinstance(doc, dict) else None
        if not servers or not isinstance(servers, list):
            return OAuthProbe(
                route,
                url,
                "bad_challenge",
                f"HTTP 401 with resource_metadata={meta_url}, but that document "
                f"(HTTP {meta.status_code}) lists no authorization_servers",
                401,
            )
        return OAuthProbe(
            route,
            url,
            "protected",
            f"HTTP 401, WWW-Authenticate Bearer resource_metadata={meta_url}; metadata "
            f"resource={doc.get('resource')}, authorization_servers={servers}"
            + (f", scope={bearer['scope']}" if bearer.get("scope") else ""),
            401,
            doc,
        )
    finally:
        if own:
            http.close()


async def _list_tools(url: str, token: str | None) -> list[str]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    names: list[str] = []
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(TIMEOUT_S)) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        cursor = None
        while True:
            result = (
                await session.list_tools(cursor=cursor) if cursor else await session.list_tools()
            )
            names.extend(t.name for t in result.tools)
            cursor = result.nextCursor
            if not cursor:
                break
    return names


def list_tools(url: str, token: str | None = None) -> list[str]:
    """The names of every tool the server lists (``tools/list``, all pages).

    Raises:
        Exception: whatever the transport raised (the caller reports it as unverifiable).
    """
    # In a thread of its own: callers may already run an event loop (Prefect, serve).
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(
            asyncio.run, asyncio.wait_for(_list_tools(url, token), TIMEOUT_S * 3)
        ).result()
