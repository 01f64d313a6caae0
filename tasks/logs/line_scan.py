"""The exact per-line path of the review, and the rules applied to one line.

Every line's timestamp is parsed, window membership decided line by line, gaps
and rate buckets updated, and the line classified and handed to the rules of its
format. :mod:`.block_scan` builds the fast whole-block paths on top of this and
falls back to it whenever a block cannot be judged as a whole.
"""

from __future__ import annotations

import ipaddress
import socket

from core.redact import Redactor

from .config import ReviewConfig
from .detections import Findings, Timeline
from .model import LineRef, Severity, Source, SourceCounts, Window
from .parsers import (
    CLOUDFLARED,
    MCP,
    PROXY_JSON,
    PROXY_TEXT,
    UNKNOWN,
    classify,
    mcp_call,
    probed_host,
    refused_ip,
    remote_ip,
    strip_timestamp,
    tunnel_connection,
)
from .reader import (
    json_ns,
    line_ns,
)
from .timestamps import NS, parse_ns


class Disordered(Exception):
    """The source is not time-ordered: seeking is not valid for it."""


class Stop(Exception):
    """Every line still to come is past the window (ordered source)."""


def _location_expected(location: str, expected: list[str]) -> bool:
    """``ams01`` matches ``ams01`` and ``ams`` (the edge's city code), case-insensitive."""
    location = location.lower()
    city = location.rstrip("0123456789")
    return any(e.lower() in (location, city) for e in expected)


class LineScan:
    """Per-source scanning state and the exact per-line path (see module docstring)."""

    def __init__(
        self, source: Source, window: Window, config: ReviewConfig, redactor: Redactor
    ) -> None:
        self.source = source
        self.config = config
        self.redactor = redactor
        self.start_ns = window.start_ns
        self.end_ns = window.end_ns
        self.lower_ns = self.start_ns - int(config.baseline_period.total_seconds() * NS)
        self.tolerance_ns = int(config.order_tolerance.total_seconds() * NS)
        self.gap_ns = int(config.gap_threshold.total_seconds() * NS)
        self.bucket_ns = int(config.rate_bucket.total_seconds() * NS)
        self.networks = config.networks()
        self.allowlist = config.tool_allowlist
        self.locations = config.expected_tunnel_locations
        self.mcp_server = source.mcp_server or (source.name if source.kind == "mcp" else None)
        self._allowed_cache: dict[str, bool] = {}
        self._v4 = [
            (int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 4
        ]
        self._reset()

    def _reset(self) -> None:
        self.counts = SourceCounts(members=[str(p) for p in self.source.paths])
        self.findings = Findings(self.redactor)
        self.timeline = Timeline(self.config.timeline_limit, self.redactor)
        self.high_ns: int | None = None  # latest timestamp seen anywhere
        self.last_ns: int | None = None  # latest timestamp seen in [lower, end)
        self.gaps: list[tuple[int, int, LineRef]] = []
        self.buckets: dict[int, int] = {}
        self.bucket_refs: dict[int, LineRef] = {}
        self.last_ref: LineRef | None = None

    def _lines(self, lines: list[bytes], offset: int, artifact: str, seek: bool) -> None:
        """The exact path: every line's timestamp parsed, every rule applied per line.
        With ``seek`` (ordered source) a line far back in time raises Disordered and a
        line past the window ends the source."""
        counts = self.counts
        formats = counts.formats
        lower_ns, start_ns, end_ns = self.lower_ns, self.start_ns, self.end_ns
        tolerance, gap_ns, bucket_ns = self.tolerance_ns, self.gap_ns, self.bucket_ns
        stop_ns = end_ns + tolerance
        max_line = self.config.max_line_bytes
        buckets = self.buckets
        high_ns, last_ns = self.high_ns, self.last_ns
        last_bucket = -1
        read = baseline = in_window = undated = 0
        try:
            for line in lines:
                size = len(line)
                here = offset
                offset += size + 1
                read += 1
                if line[:1].isdigit():
                    space = line.find(b" ", 19, 48)
                    ns = parse_ns(line[:space] if space > 0 else line[:48])
                    payload = line[space + 1 :] if ns is not None and space > 0 else line
                else:
                    ns = line_ns(line) if line[:1] in (b"{", b"t") else None
                    payload = line
                dated = ns is not None
                if ns is None:
                    ns = high_ns if high_ns is not None else start_ns
                elif high_ns is None or ns > high_ns:
                    high_ns = ns
                elif ns < high_ns - tolerance and seek:
                    raise Disordered
                if ns < lower_ns:
                    continue
                if ns >= end_ns:
                    if seek and ns >= stop_ns:
                        raise Stop
                    continue
                if last_ns is None or ns > last_ns:
                    if ns >= start_ns and gap_ns:
                        since = start_ns if last_ns is None or last_ns < start_ns else last_ns
                        if ns - since > gap_ns:
                            self.gaps.append((since, ns, LineRef(artifact, here)))
                    last_ns = ns
                bucket = (ns - lower_ns) // bucket_ns
                buckets[bucket] = buckets.get(bucket, 0) + 1
                if bucket != last_bucket:
                    last_bucket = bucket
                    if bucket not in self.bucket_refs:
                        self.bucket_refs[bucket] = LineRef(artifact, here)
                if ns < start_ns:
                    baseline += 1
                    continue
                in_window += 1
                if not dated:
                    undated += 1
                self.last_ref = LineRef(artifact, here)
                if size > max_line:
                    self._oversized(artifact, here, size, line[:4096])
                    continue
                fmt = self._inspect(payload, line, ns, artifact, here, True)
                formats[fmt] = formats.get(fmt, 0) + 1
                if fmt is UNKNOWN:
                    self._unknown(line, ns, artifact, here)
        finally:
            self.high_ns, self.last_ns = high_ns, last_ns
            counts.lines_read += read
            counts.lines_baseline += baseline
            counts.lines_in_window += in_window
            counts.no_timestamp += undated

    # -- detections ----------------------------------------------------------------

    def _inspect(
        self, payload: bytes, line: bytes, ns: int, artifact: str, at: int, remote: bool
    ) -> str:
        """Classifies one in-window line and applies the rules for its format (except
        the unknown-line check, which callers do). Returns the format."""
        if payload[:1].isdigit():
            payload = strip_timestamp(payload)
        fmt = classify(payload)
        if fmt is PROXY_TEXT or fmt is PROXY_JSON:
            self._proxy(payload, line, ns, artifact, at, remote)
        elif fmt is CLOUDFLARED:
            if payload[:4] != b"DBG ":
                self._cloudflared(payload, line, ns, artifact, at)
        elif fmt is MCP and (b"tools/call" in payload or b'"error"' in payload):
            self._mcp(payload, line, ns, artifact, at)
        return fmt

    def _hit(
        self,
        rule: str,
        key: str,
        ns: int,
        artifact: str,
        offset: int,
        line: bytes,
        severity: Severity,
        what: str,
    ) -> None:
        ref = LineRef(artifact, offset)
        self.findings.hit(rule, self.source.name, key, ns, ref, line)
        self.timeline.add(ns, severity, self.source.name, ref, what, line)

    def _allowed(self, ip: str) -> bool:
        allowed = self._allowed_cache.get(ip)
        if allowed is None:
            if ip.count(".") == 3:
                value = int.from_bytes(socket.inet_aton(ip), "big")
                allowed = any(value & mask == net for net, mask in self._v4)
            else:
                address = ipaddress.ip_address(ip)
                allowed = any(address in net for net in self.networks)
            if len(self._allowed_cache) > 4096:
                self._allowed_cache.clear()
            self._allowed_cache[ip] = allowed
        return allowed

    def _proxy(
        self, payload: bytes, line: bytes, ns: int, artifact: str, at: int, remote: bool = True
    ) -> None:
        if b"IP validation failed" in payload:
            ip = refused_ip(payload) or "-"
            self._hit(
                "LR001", ip, ns, artifact, at, line, Severity.HIGH, f"IP validation failed for {ip}"
            )
        elif b"tls handshake failed" in payload or b"TLS handshake error" in payload:
            ip = remote_ip(payload) or "-"
            self._hit(
                "LR002",
                ip,
                ns,
                artifact,
                at,
                line,
                Severity.MEDIUM,
                f"TLS handshake failed from {ip}",
            )
        elif b"no route for host" in payload:
            host = probed_host(payload)
            self._hit(
                "LR003", host, ns, artifact, at, line, Severity.MEDIUM, f"no route for host {host}"
            )
        elif b"invalid upstream" in payload or b"permission denied" in payload:
            what = "invalid upstream" if b"invalid upstream" in payload else "permission denied"
            self._hit("LR012", what, ns, artifact, at, line, Severity.LOW, f"proxy: {what}")
        if (
            remote
            and self.networks
            and (b"remote" in payload or b"client_ip" in payload or b"src_ip" in payload)
        ):
            ip = remote_ip(payload)
            if ip is not None and not self._allowed(ip):
                self._hit(
                    "LR004",
                    ip,
                    ns,
                    artifact,
                    at,
                    line,
                    Severity.HIGH,
                    f"request from {ip} outside the allowed ranges",
                )

    def _cloudflared(self, payload: bytes, line: bytes, ns: int, artifact: str, at: int) -> None:
        if b"Registered tunnel connection" in payload:
            conn = tunnel_connection(payload)
            if self.locations and not _location_expected(conn.location, self.locations):
                self._hit(
                    "LR007",
                    conn.location or "-",
                    ns,
                    artifact,
                    at,
                    line,
                    Severity.HIGH,
                    f"tunnel connection registered at unexpected {conn.location}",
                )
            else:
                self.timeline.add(
                    ns,
                    Severity.INFO,
                    self.source.name,
                    LineRef(artifact, at),
                    f"tunnel connection at {conn.location}",
                    line,
                )
        elif b"No ingress rules were defined" in payload:
            self._hit(
                "LR012",
                "no ingress rules",
                ns,
                artifact,
                at,
                line,
                Severity.LOW,
                "cloudflared: no ingress rules",
            )
        elif payload[:4] in (b"ERR ", b"FTL "):
            self.timeline.add(
                ns, Severity.LOW, self.source.name, LineRef(artifact, at), "cloudflared error", line
            )

    def _mcp(self, payload: bytes, line: bytes, ns: int, artifact: str, at: int) -> None:
        call = mcp_call(payload)
        if call is None:
            return
        server = call.server or self.mcp_server
        if call.method == "tools/call" and server in self.allowlist:
            tool = call.tool or "(no tool name)"
            if tool not in self.allowlist[server]:
                self._hit(
                    "LR005",
                    f"{server}/{tool}",
                    ns,
                    artifact,
                    at,
                    line,
                    Severity.CRITICAL,
                    f"tool {tool} called on {server} (not allowed)",
                )
                return
        if call.error:
            self.timeline.add(
                ns,
                Severity.LOW,
                self.source.name,
                LineRef(artifact, at),
                f"MCP {call.method} error",
                line,
            )

    def _unknown(self, line: bytes, ns: int, artifact: str, at: int) -> None:
        binary = b"\x00" in line
        if not binary:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                binary = True
        if binary:
            self.counts.binary_lines += 1
            self.findings.hit(
                "LR011",
                self.source.name,
                f"binary:{artifact}",
                ns,
                LineRef(artifact, at),
                b"binary content (not text) in the log",
            )

    def _oversized(self, artifact: str, at: int, size: int, head: bytes) -> None:
        self.counts.oversized_lines += 1
        ns = line_ns(head) or json_ns(head) or self.high_ns or self.start_ns
        note = f"line of {size} bytes (limit {self.config.max_line_bytes}); starts: ".encode()
        self.findings.hit(
            "LR011",
            self.source.name,
            f"oversized:{artifact}",
            ns,
            LineRef(artifact, at),
            note + head[:200],
        )

    # -- end of source -----------------------------------------------------------------
