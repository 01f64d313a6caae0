"""Parsers for the three log families of an MCP tunnel stack.

- cloudflared console format: ``<RFC3339> INF|WRN|ERR|DBG <message> key=value…``
- the proxy: text (``<RFC3339> INFO <message> key=value…`` or slog's
  ``time=… level=… msg=…``) and JSON (``{"time":…,"level":…,"msg":…}``)
- MCP server logs: JSON-RPC messages (method, ``params.name`` for ``tools/call``,
  client/session id, status or error), as JSON or key=value text.

Classification is cheap byte checks so that every line can be counted per format;
fields are extracted only from lines a detection is interested in.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass

CLOUDFLARED = "cloudflared"
PROXY_TEXT = "proxy_text"
PROXY_JSON = "proxy_json"
MCP = "mcp"
UNKNOWN = "unknown"
FORMATS = (CLOUDFLARED, PROXY_TEXT, PROXY_JSON, MCP, UNKNOWN)

_CLOUDFLARED_LEVELS = frozenset((b"INF ", b"WRN ", b"ERR ", b"DBG ", b"FTL ", b"TRC "))
_PROXY_LEVELS = frozenset(
    (b"INFO", b"WARN", b"ERRO", b"DEBU", b"info", b"warn", b"erro", b"debu", b"FATA", b"fata")
)
_KV = re.compile(rb'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def strip_timestamp(line: bytes) -> bytes:
    """The line without its leading timestamp tokens (Docker's prefix and the
    program's own, when both are present)."""
    for _ in range(2):
        if line[:1].isdigit() and line[4:5] == b"-":
            space = line.find(b" ", 19, 48)
            if space < 0:
                return b""
            line = line[space + 1 :]
        else:
            break
    return line


def classify(payload: bytes) -> str:
    """The format of a line's payload (timestamp already stripped)."""
    head = payload[:4]
    if head in _CLOUDFLARED_LEVELS:
        return CLOUDFLARED
    if payload[:1] == b"{":
        if b'"jsonrpc"' in payload or b'"method"' in payload:
            return MCP
        if b'"msg"' in payload or b'"message"' in payload:
            return PROXY_JSON
        return UNKNOWN
    if head in _PROXY_LEVELS or payload.startswith(b"time="):
        if b"method=tools/" in payload or b"jsonrpc=" in payload:
            return MCP
        return PROXY_TEXT
    return UNKNOWN


def kv_fields(payload: bytes) -> dict[str, str]:
    """``key=value`` pairs of a text line (quoted values unquoted)."""
    fields: dict[str, str] = {}
    for key, value in _KV.findall(payload):
        text = value.decode("utf-8", "replace")
        if text[:1] == '"' and text[-1:] == '"' and len(text) >= 2:
            text = text[1:-1].replace('\\"', '"')
        fields[key.decode("ascii", "replace")] = text
    return fields


def json_fields(payload: bytes) -> dict[str, object]:
    """A JSON line as a dict; an empty dict when it is not a JSON object."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def fields_of(payload: bytes) -> dict[str, object]:
    """Fields of a JSON or key=value line."""
    if payload[:1] == b"{":
        return json_fields(payload)
    return dict(kv_fields(payload))


def message_of(payload: bytes) -> str:
    """The human message of a line: JSON ``msg``/``message`` or the text after the
    level word up to the first ``key=value``."""
    if payload[:1] == b"{":
        fields = json_fields(payload)
        return str(fields.get("msg") or fields.get("message") or "")
    text = payload.decode("utf-8", "replace")
    level, _, rest = text.partition(" ")
    if level.startswith("time="):
        return str(kv_fields(payload).get("msg", ""))
    cut = _KV.search(rest.encode())
    return (rest[: cut.start()] if cut else rest).strip()


# The address after a client-address field; an IPv4 port is left out of the group so
# that one client on many source ports is one distinct value.
_ADDRESS = (
    rb'"?[ \t]*[=:][ \t]*"?'
    rb"(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[0-9A-Fa-f:.]+\](?::\d+)?|[0-9A-Fa-f]*:[0-9A-Fa-f:.]+)"
)
REMOTE_RE = re.compile(rb"(?:remote_addr|remote_ip|remote|client_ip|src_ip)" + _ADDRESS)
# The same, split by a literal first word: the regex engine then skips to candidates
# at memchr speed (used on whole blocks).
REMOTE_PREFIX_RES = (
    (b"remote", re.compile(rb"remote(?:_addr|_ip)?" + _ADDRESS)),
    (b"client_ip", re.compile(rb"client_ip" + _ADDRESS)),
    (b"src_ip", re.compile(rb"src_ip" + _ADDRESS)),
)
_IP_CACHE: dict[bytes, str | None] = {}


def normalize_ip(text: bytes | str) -> str | None:
    """An IP address from ``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:443`` or ``::1``."""
    key = text.encode() if isinstance(text, str) else text
    cached = _IP_CACHE.get(key, ...)
    if cached is not ...:
        return cached  # type: ignore[return-value]
    value = key.decode("ascii", "replace").strip('"')
    host, _, port = value.partition(":")
    if host.count(".") == 3 and (not port or port.isdigit()) and _dotted(host):
        result_v4: str | None = host
        if len(_IP_CACHE) > 4096:
            _IP_CACHE.clear()
        _IP_CACHE[key] = result_v4
        return result_v4
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else value[1:]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        result: str | None = str(ipaddress.ip_address(value))
    except ValueError:
        result = None
    if len(_IP_CACHE) > 4096:
        _IP_CACHE.clear()
    _IP_CACHE[key] = result
    return result


def _dotted(host: str) -> bool:
    """Strict dotted-quad IPv4 check (no leading zeros, each part 0-255)."""
    for part in host.split("."):
        if not part.isdigit() or len(part) > 3 or (len(part) > 1 and part[0] == "0"):
            return False
        if int(part) > 255:
            return False
    return True


def remote_ip(payload: bytes) -> str | None:
    """The client address of a proxy line (``remote=``, ``remote_addr``… text or JSON)."""
    match = REMOTE_RE.search(payload)
    return normalize_ip(match.group(1)) if match else None


_IP_VALIDATION = re.compile(rb"IP validation failed: (\S+?) is not a private address")
_NO_ROUTE_HOST = re.compile(rb'no route for host(?:[:=]?\s*"?([A-Za-z0-9.\-:_*]+)"?)?')
_HOST_FIELD = re.compile(rb'\bhost"?\s*[=:]\s*"?([A-Za-z0-9.\-:_*]+)')


def refused_ip(payload: bytes) -> str | None:
    """The upstream address of ``IP validation failed: <ip> is not a private address``."""
    match = _IP_VALIDATION.search(payload)
    return match.group(1).decode("ascii", "replace") if match else None


def probed_host(payload: bytes) -> str:
    """The host of a ``no route for host`` line (``host=`` field, or after the
    message)."""
    match = _HOST_FIELD.search(payload)
    if match:
        return match.group(1).decode("ascii", "replace")
    match = _NO_ROUTE_HOST.search(payload)
    if match and match.group(1):
        return match.group(1).decode("ascii", "replace")
    return "-"


@dataclass(frozen=True)
class TunnelConnection:
    """cloudflared's ``Registered tunnel connection`` line."""

    conn_index: str
    ip: str
    location: str
    protocol: str


def tunnel_connection(payload: bytes) -> TunnelConnection:
    """Fields of a ``Registered tunnel connection`` line."""
    fields = kv_fields(payload)
    return TunnelConnection(
        conn_index=fields.get("connIndex", ""),
        ip=fields.get("ip", ""),
        location=fields.get("location", ""),
        protocol=fields.get("protocol", ""),
    )


@dataclass(frozen=True)
class McpCall:
    """One MCP JSON-RPC message as logged by a server."""

    method: str
    tool: str | None
    session: str | None
    client: str | None
    server: str | None
    status: str | None
    error: str | None


def _first(fields: dict[str, object], *names: str) -> str | None:
    for name in names:
        value = fields.get(name)
        if value not in (None, ""):
            return str(value)
    return None


def tool_call_allowed_fast(
    payload: bytes, source_server: str | None, allowlist: dict[str, list[str]]
) -> bool:
    """True only when a JSON ``tools/call`` line certainly calls an allowed tool (or a
    server the allowlist does not cover), decided without parsing the JSON.

    Conservative on purpose, because arguments are attacker-controlled: any escape
    sequence, a ``"name"`` or server key whose value the pattern cannot read, or any
    name not allowed on every server the line could belong to sends the line to the
    full parser (:func:`mcp_call`).
    """
    if payload[:1] != b"{":
        return False
    suspects = suspect_tool_names(payload, source_server, allowlist)
    return suspects is not None and not suspects


def _quoted_values(data: bytes, key: bytes) -> set[bytes] | None:
    """The string values of ``key`` in compact JSON (``"key":"value"``), or None when
    some occurrence of the key is not in that form (then nothing can be concluded).
    Finding the literal is much faster than a regex over a whole block."""
    total = data.count(key)
    if not total:
        return set()
    separator = key + b':"'
    values = set()
    found = 0
    at = data.find(separator)
    while at >= 0:  # what data.split(separator) would cut, without copying the pieces
        found += 1
        start = at + len(separator)
        at = data.find(separator, start)
        end = data.find(b'"', start, len(data) if at < 0 else at)
        if end < 0:
            return None
        values.add(data[start:end])
    return values if found == total else None


def suspect_tool_names(
    data: bytes,
    source_server: str | None,
    allowlist: dict[str, list[str]],
    *,
    kv_checked: bool = False,
) -> set[bytes] | None:
    """The ``"name"`` values in ``data`` (one or many JSON lines) that some allowlisted
    server does not allow, or None when the data cannot be judged this way (escapes,
    key=value MCP lines, a ``"name"`` value not in compact string form).

    A line whose tool is refused necessarily contains one of these names, so only
    lines holding one need the full parser; which server a line belongs to is left
    to that parser (``source_server`` narrows nothing here, by design: a line may
    name its own server). ``kv_checked``: the caller already knows ``data`` holds no
    key=value MCP line.
    """
    del source_server
    if b"\\" in data:
        return None
    if not kv_checked and (b"method=tools/" in data or b"jsonrpc=" in data):
        return None
    names = _quoted_values(data, b'"name"')
    if names is None:
        return None
    suspects: set[bytes] = set()
    for allowed in allowlist.values():
        suspects.update(n for n in names if n.decode("utf-8", "replace") not in allowed)
    return suspects


def mcp_call(payload: bytes) -> McpCall | None:
    """The JSON-RPC message of an MCP server log line, JSON or key=value.

    Accepts the message at the top level or nested under ``message``/``request``/
    ``rpc``/``body`` (servers log an envelope around it). None when no method.
    """
    fields = fields_of(payload)
    envelope = fields
    for nest in ("message", "request", "rpc", "body"):
        inner = fields.get(nest)
        if isinstance(inner, dict) and "method" in inner:
            fields = inner
            break
    method = _first(fields, "method")
    if method is None:
        return None
    params = fields.get("params")
    tool = None
    if isinstance(params, dict):
        tool = _first(params, "name", "tool")
    tool = tool or _first(fields, "tool", "tool_name", "params.name")
    error = fields.get("error") or envelope.get("error")
    if isinstance(error, dict):
        error = error.get("message") or error.get("code")
    return McpCall(
        method=method,
        tool=tool,
        session=_first(envelope, "session_id", "sessionId", "mcp_session_id", "session"),
        client=_first(envelope, "client_id", "clientId", "client"),
        server=_first(envelope, "server", "mcp_server", "server_name"),
        status=_first(envelope, "status", "outcome"),
        error=str(error) if error else None,
    )
