"""The detections applied to each record (a line and its continuation lines).

Rules look at what failures really look like in the logs of cloudflared (every
version, text or JSON), the proxy, MCP clients (Claude Desktop, VS Code, bare
JSON-RPC) and MCP servers, whatever wrapper the line came in. Markers are literal
byte strings, so one record costs a handful of ``in`` tests; only records holding a
marker are parsed further. ``docs/detections.md`` cites a real line for each rule.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable

from ahocorasick_rs import BytesAhoCorasick, Implementation

from .config import ReviewConfig
from .formats import ERROR, FATAL, WARN, Parsed
from .model import Severity
from .parsers import mcp_call, probed_host, refused_ip, remote_ip

Hit = Callable[[str, str, Severity | None, str], None]
"""hit(rule_id, key, severity or None for the rule's own, timeline text)"""

_ORIGIN = (
    b"Unable to reach the origin service",
    b"Error proxying request to origin",
    b"failed to connect to origin",
)
_EDGE_LOSS = (
    b"Lost connection with the edge",
    b"connection with edge closed",
    b"Serve tunnel error",
    b"Failed to serve quic connection",
    b"failed to serve tunnel connection",
    b"Connection terminated",
    b"Unable to establish connection with Cloudflare edge",
    b"Failed to dial a quic connection",
    b"Failed to create new quic connection",
    b"failed to dial to edge",
)
_EDGE_TLS = (b"TLS handshake with edge", b"handshake with edge error")
_RETRY = b"Retrying connection in"
_GRACEFUL = (b"Initiating graceful shutdown", b"Graceful shutdown signalled")
_STOPPED = (b"Tunnel server stopped",)
_REGISTERED = (b"Registered tunnel connection", b" registered connIndex", b"Connection established")
_MCP_DISCONNECT = (
    b"Server disconnected",
    b"transport closed unexpectedly",
    b"Connection state: Error",
    b"Server exited before responding",
    b"Error reading from async stream",
    b"MCP error -32000",
    b"Connection closed unexpectedly",
)
_TIMEOUT = (b"Request timed out", b"-32001", b"context deadline exceeded", b"timed out waiting")
_CANCEL = (
    b"notifications/cancelled",
    b'error="context canceled"',
    b'"error":"context canceled"',
    b"Incoming request ended abruptly",
)
_PANIC = (
    b"panic: ",
    b"panic(",
    b"Recover from",
    b"fatal error: ",
    b"panicked at",
    b"Traceback (most recent call last)",
    b"SIGSEGV",
)
_LOCATION = re.compile(rb'location"?\s*[=:]\s*"?([A-Za-z0-9_\-*]+)')
_VERSION = re.compile(rb'version"?\s*[=:]\s*"?(-?\d+)')
_ORIGIN_SERVICE = re.compile(rb'originService"?\s*[=:]\s*"?([^\s",]+)')
_SERVER_TAG = re.compile(rb"\[([^\]\n]{1,80})\] ")
_PROXY_SERVER = re.compile(rb"<([^>\n]{1,80})> ")
_VSCODE_START = re.compile(rb"Starting server (?:from )?(.+?)\s*$")
# Standalone numbers only: digits inside a token (a Slack token's segments, base64)
# stay, so a secret keeps the shape the redactor recognises in the shown key.
_DIGITS = re.compile(rb"(?<![\w\-/+.])\d+(?![\w\-/+.])")
_QUOTED = re.compile(rb'"[^"]{0,200}"')
_DECODER = json.JSONDecoder()
# Every marker of every rule: a record holding none of them (and not at warning level
# or above) is skipped after one search; the block path finds them with bytes.find.
MARKERS: tuple[bytes, ...] = (
    *_ORIGIN,
    *_EDGE_LOSS,
    *_EDGE_TLS,
    _RETRY,
    *_GRACEFUL,
    *_STOPPED,
    *_REGISTERED,
    *_MCP_DISCONNECT,
    *_TIMEOUT,
    *_CANCEL,
    *_PANIC,
    b"Switching to fallback protocol",
    b"Updated to new configuration",
    b"No ingress rules were defined",
    b"tools/call",
    b'"initialize"',
    b"Starting server",
    b"IP validation failed",
    b"andshake",
    b"no route for host",
    b"invalid upstream",
    b"permission denied",
)
# One pass finds whether a record holds any marker (Aho-Corasick DFA; an alternation
# of ~50 literals in ``re`` costs ~10x more per record).
MARKER_SEARCH = BytesAhoCorasick(MARKERS, implementation=Implementation.DFA)
_NONE: frozenset[bytes] = frozenset()
# Short literals, each contained in some marker, covering every marker but
# "tools/call" (the block path searches a whole block once per hint; a test checks
# the coverage). tools/call lines are found through the tool names instead.
BLOCK_HINTS: tuple[bytes, ...] = (
    b"the origin",
    b"to origin",
    b"edge",
    b"quic",
    b"Serve tunnel",
    b"serve tunnel",
    b"Connection terminated",
    b"Retrying",
    b"raceful shutdown",
    b"server stopped",
    b"egistered",
    b"Connection established",
    b"transport closed",
    b"Server disconnected",
    b"Connection state",
    b"Server exited",
    b"async stream",
    b"-3200",
    b"timed out",
    b"deadline exceeded",
    b"cancel",
    b"abruptly",
    b"anic",
    b"Recover from",
    b"fatal error",
    b"Traceback",
    b"SIGSEGV",
    b"fallback protocol",
    b"new configuration",
    b"ingress rules",
    b'"initialize"',
    b"Starting server",
    b"IP validation",
    b"andshake",
    b"no route for host",
    b"invalid upstream",
    b"permission denied",
    b"Connection closed",
)
_REMOTE_MARKER = re.compile(rb"remote|client_ip|src_ip")
_TEXT_FORMATS = ("proxy_text", "json", "logfmt", "timestamped")
_LOUD = (FATAL, ERROR, WARN)


def _location_expected(location: str, expected: list[str]) -> bool:
    """``ams01`` matches ``ams01`` and ``ams`` (the edge's city code), case-insensitive."""
    location = location.lower()
    city = location.rstrip("0123456789")
    return any(e.lower() in (location, city) for e in expected)


def _origin_cause(text: bytes) -> str:
    lower = text.lower()
    if b"refused" in lower:
        return "connection refused"
    if b"no such host" in lower or b"lookup " in lower:
        return "DNS failure"
    if b"timeout" in lower or b"deadline exceeded" in lower:
        return "timeout"
    if b"x509" in lower or b"tls:" in lower:
        return "TLS failure"
    if b"eof" in lower:
        return "EOF"
    return "unreachable"


def _template(body: bytes) -> str:
    """A message with standalone numbers and quoted values blanked: one key per kind
    of line. Not cut here: the key is redacted before it is shown, and only then cut,
    so a secret is never half-kept."""
    text = _QUOTED.sub(b'"..."', body)
    return _DIGITS.sub(b"N", text).decode("utf-8", "replace").strip()


def _json_objects(text: bytes) -> list[dict[str, object]]:
    """The JSON objects embedded in a line (``Message from client: {…} {…}``)."""
    found: list[dict[str, object]] = []
    decoded = text.decode("utf-8", "replace")
    start = decoded.find("{")
    while 0 <= start < len(decoded) and len(found) < 4:
        try:
            value, end = _DECODER.raw_decode(decoded, start)
        except ValueError:
            start = decoded.find("{", start + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        start = decoded.find("{", end)
    return found


def _rpc(value: dict[str, object]) -> dict[str, object] | None:
    """The JSON-RPC message in a logged object (top level or in an envelope)."""
    if "method" in value:
        return value
    for nest in ("message", "request", "rpc", "body"):
        inner = value.get(nest)
        if isinstance(inner, dict) and "method" in inner:
            return inner
    return None


class RecordRules:
    """Applies the rules to the records of ONE source, keeping the little state some
    rules need (shutdown in progress, reconnect times, the MCP server in view)."""

    def __init__(self, config: ReviewConfig, mcp_server: str | None, hit: Hit) -> None:
        self.config = config
        self.mcp_server = mcp_server
        self.hit = hit
        self.allowlist = config.tool_allowlist
        self.allowed_anywhere = {t for tools in self.allowlist.values() for t in tools}
        self.locations = config.expected_tunnel_locations
        self.clients = config.expected_clients
        self.networks = config.networks()
        self._v4 = [
            (int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 4
        ]
        self._allowed_cache: dict[str, bool] = {}
        self.shutdown_ns: int | None = None
        self.reconnects: list[int] = []
        self.server_in_view: str | None = None
        self.registrations: list[tuple[int, str]] = []
        self._found: set[bytes] | frozenset[bytes] = _NONE

    # -- entry point ---------------------------------------------------------------

    def apply(self, parsed: Parsed, text: bytes, ns: int) -> None:
        """Applies every rule to one in-window record (``text``: first line and its
        continuation lines, capped)."""
        level = parsed.level
        # Every marker the record holds, overlapping ones included, from one pass.
        hits = MARKER_SEARCH.find_matches_as_indexes(text, overlapping=True)
        self._found = {MARKERS[index] for index, _, _ in hits} if hits else _NONE
        if not hits:
            matched = self._panic(parsed, text) if parsed.fmt.endswith("go_panic") else False
            if self.networks and _REMOTE_MARKER.search(text):
                matched = self._remote(parsed, text) or matched
            if level not in _LOUD:
                return
        else:
            matched = (
                self._cloudflared(text, parsed.ns or ns)
                | self._mcp(parsed, text)
                | self._panic(parsed, text)
                | self._proxy(parsed, text)
            )
        if level == FATAL and not matched:
            self.hit("LR017", _template(parsed.body), None, "fatal log line")
        elif level in (ERROR, WARN) and not matched:
            self.hit("LR024", f"{level}: {_template(parsed.body)}", None, f"{level} line")

    def _has(self, markers: tuple[bytes, ...]) -> bool:
        """Whether the record being judged holds one of ``markers`` (all in MARKERS)."""
        return not self._found.isdisjoint(markers)

    # -- cloudflared ---------------------------------------------------------------------

    def _cloudflared(self, text: bytes, ns: int) -> bool:
        matched = False
        if self._has(_GRACEFUL):
            self.shutdown_ns = ns
            return False
        shutting_down = self.shutdown_ns is not None and 0 <= ns - self.shutdown_ns <= 60 * 10**9
        if self._has(_ORIGIN):
            service = _ORIGIN_SERVICE.search(text)
            target = service.group(1).decode("utf-8", "replace") if service else ""
            cause = _origin_cause(text)
            self.hit("LR013", cause, None, f"origin {target} unreachable ({cause})".strip())
            matched = True
        if self._has(_EDGE_TLS):
            certificate = b"x509" in text or b"certificate" in text
            severity = Severity.HIGH if certificate else None
            what = "TLS to the edge failed" + (" (certificate)" if certificate else "")
            self.hit("LR015", "certificate" if certificate else "handshake", severity, what)
            matched = True
        elif self._has(_EDGE_LOSS):
            if not shutting_down:
                self.hit("LR014", "edge", None, "connection to the edge lost")
            matched = True
        if _RETRY in text and not shutting_down:
            self.reconnects.append(ns)
            matched = True
        if b"Switching to fallback protocol" in text:
            self.hit("LR016", "http2", None, "quic → http2 fallback")
            matched = True
        if self._has(_STOPPED) and not shutting_down:
            self.hit("LR017", "tunnel server stopped", None, "tunnel stopped without a shutdown")
            matched = True
        if b"Updated to new configuration" in text:
            version = _VERSION.search(text)
            key = f"version {version.group(1).decode()}" if version else "configuration"
            self.hit("LR018", key, None, f"ingress configuration replaced remotely ({key})")
            matched = True
        if b"No ingress rules were defined" in text:
            self.hit("LR019", "no ingress rules", None, "no ingress rules: every request gets 503")
            matched = True
        if self._has(_REGISTERED):
            location = _LOCATION.search(text)
            if location is not None:
                self._registered(location.group(1).decode("ascii", "replace"))
            matched = True
        return matched

    def _registered(self, location: str) -> None:
        if not self.locations or not location.replace("_", "").replace("-", "").isalnum():
            self.hit("", location, Severity.INFO, f"tunnel connection at {location}")
            return
        if _location_expected(location, self.locations):
            self.hit("", location, Severity.INFO, f"tunnel connection at {location}")
        else:
            self.hit("LR007", location, None, f"tunnel connection registered at {location}")

    # -- MCP clients and servers -------------------------------------------------------

    def _mcp(self, parsed: Parsed, text: bytes) -> bool:
        matched = False
        body = parsed.body
        if parsed.fmt.endswith("vscode_mcp"):
            start = _VSCODE_START.match(body)
            if start is not None and b"extension host" not in body:
                self.server_in_view = start.group(1).decode("utf-8", "replace")
        server = self._server_of(parsed)
        if self._has(_MCP_DISCONNECT):
            self.hit("LR020", server or "-", None, f"MCP server {server or ''} disconnected")
            matched = True
        if self._has(_TIMEOUT):
            self.hit("LR021", "timeout", None, "request timed out")
            matched = True
        elif self._has(_CANCEL):
            self.hit("LR021", "cancelled", None, "request cancelled")
            matched = True
        if b"tools/call" in text or (self.clients and b'"initialize"' in text):
            matched = self._rpc(parsed, text, server) or matched
        return matched

    def _server_of(self, parsed: Parsed) -> str | None:
        fmt = parsed.fmt
        if fmt.endswith("claude_desktop"):
            tag = _SERVER_TAG.match(parsed.body)
            if tag is not None:
                return tag.group(1).decode("utf-8", "replace")
        if fmt.endswith("mcp_proxy"):
            tag = _PROXY_SERVER.match(parsed.body)
            if tag is not None:
                return tag.group(1).decode("utf-8", "replace")
        if fmt.endswith("vscode_mcp") and self.server_in_view:
            return self.server_in_view
        return self.mcp_server

    def _rpc(self, parsed: Parsed, text: bytes, server: str | None) -> bool:
        matched = False
        messages = [m for m in map(_rpc, _json_objects(text)) if m is not None]
        if not messages and b"tools/call" in text:
            call = mcp_call(parsed.body)
            if call is not None:
                messages = [{"method": call.method, "params": {"name": call.tool}}]
                server = call.server or server
        for message in messages:
            method = message.get("method")
            params = message.get("params")
            params = params if isinstance(params, dict) else {}
            named = message.get("server") or message.get("mcp_server")
            where = str(named) if named else server
            if method == "tools/call" and self.allowlist:
                tool = str(params.get("name") or params.get("tool") or "(no tool name)")
                if where is None:  # server unknown: a tool allowed nowhere is suspect
                    allowed: list[str] | None = sorted(self.allowed_anywhere)
                else:  # servers absent from the allowlist are not checked
                    allowed = self.allowlist.get(where)
                if allowed is not None and tool not in allowed:
                    self.hit("LR005", f"{where or '?'}/{tool}", None, f"tool {tool} called")
                    matched = True
            if method == "initialize" and self.clients:
                info = params.get("clientInfo")
                name = str(info.get("name")) if isinstance(info, dict) else "(no clientInfo)"
                if name not in self.clients:
                    self.hit("LR022", name, None, f"initialize from client {name}")
                    matched = True
        return matched

    # -- panics and the proxy --------------------------------------------------------

    def _panic(self, parsed: Parsed, text: bytes) -> bool:
        if parsed.fmt.endswith("go_panic") or self._has(_PANIC):
            first = (parsed.body or text).split(b"\n", 1)[0]
            self.hit("LR023", _template(first), None, "panic / crash")
            return True
        return False

    def _proxy(self, parsed: Parsed, text: bytes) -> bool:
        if not parsed.fmt.endswith(_TEXT_FORMATS) and not parsed.fmt.endswith("syslog"):
            return False
        body = parsed.body if parsed.body else text
        matched = False
        if b"IP validation failed" in body:
            ip = refused_ip(body) or "-"
            self.hit("LR001", ip, None, f"IP validation failed for {ip}")
            matched = True
        elif b"tls handshake failed" in body or b"TLS handshake error" in body:
            ip = remote_ip(body) or "-"
            self.hit("LR002", ip, None, f"TLS handshake failed from {ip}")
            matched = True
        elif b"no route for host" in body:
            host = probed_host(body)
            self.hit("LR003", host, None, f"no route for host {host}")
            matched = True
        elif b"invalid upstream" in body or b"permission denied" in body:
            what = "invalid upstream" if b"invalid upstream" in body else "permission denied"
            self.hit("LR012", what, None, f"proxy: {what}")
            matched = True
        if self.networks and _REMOTE_MARKER.search(body):
            matched = self._remote(parsed, text) or matched
        return matched

    def _remote(self, parsed: Parsed, text: bytes) -> bool:
        """LR004: a proxy line's client address outside the allowed ranges."""
        if not parsed.fmt.endswith(_TEXT_FORMATS):
            return False
        ip = remote_ip(parsed.body if parsed.body else text)
        if ip is not None and not self._allowed(ip):
            self.hit("LR004", ip, None, f"request from {ip} outside the allowed ranges")
            return True
        return False

    def _allowed(self, ip: str) -> bool:
        allowed = self._allowed_cache.get(ip)
        if allowed is None:
            if ip.count(".") == 3:
                value = int.from_bytes(socket.inet_aton(ip), "big")
                allowed = any(value & mask == net for net, mask in self._v4)
            else:
                import ipaddress

                address = ipaddress.ip_address(ip)
                allowed = any(address in net for net in self.networks)
            if len(self._allowed_cache) > 4096:
                self._allowed_cache.clear()
            self._allowed_cache[ip] = allowed
        return allowed

    # -- end of source ---------------------------------------------------------------------

    def churn(self) -> tuple[int, int, int] | None:
        """(peak reconnects in one churn window, its start ns, end ns) when the rate of
        reconnects to the edge exceeds ``config.reconnect_churn``, else None."""
        window = int(self.config.churn_window.total_seconds() * 10**9)
        times = sorted(self.reconnects)
        best = (0, 0, 0)
        left = 0
        for right, ns in enumerate(times):
            while ns - times[left] > window:
                left += 1
            if right - left + 1 > best[0]:
                best = (right - left + 1, times[left], ns)
        return best if best[0] >= self.config.reconnect_churn else None
