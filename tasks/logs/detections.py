"""The detection rules, and the bounded accumulators their hits go into.

Each rule has an id, a severity and a rationale (``docs/detections.md`` explains
them at length). Hits are aggregated per (rule, source, key) — an IP, a host, a
tool — so a flood of identical lines becomes one finding with a count, first and
last timestamps and the reference of the first line. Keys per rule and source are
capped so memory stays bounded whatever an attacker writes into the logs.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from itertools import count

from core.redact import Redactor

from .model import Finding, LineRef, Severity, TimelineEvent


@dataclass(frozen=True)
class Rule:
    """A documented detection (``title`` is what a responder reads first)."""

    id: str
    name: str
    severity: Severity
    rationale: str
    title: str = ""


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule(
            "LR001",
            "ip-validation-failure",
            Severity.HIGH,
            "The proxy refused to forward to a public address: someone tried to use the "
            "gateway as an SSRF pivot or planted a public upstream.",
        ),
        Rule(
            "LR002",
            "tls-handshake-failure",
            Severity.MEDIUM,
            "Failed inner TLS handshakes mean clients without a certificate signed by the "
            "tunnel CA reached the proxy: scanning, or an impersonation attempt.",
        ),
        Rule(
            "LR003",
            "no-route-probe",
            Severity.MEDIUM,
            "Requests for hosts the proxy has no route for are enumeration of the tunnel "
            "domain: someone who knows the hostname is probing for other services.",
        ),
        Rule(
            "LR004",
            "request-from-disallowed-ip",
            Severity.HIGH,
            "A request came from outside the configured client ranges: with a leaked token "
            "or certificate, this is what the attacker's traffic looks like.",
        ),
        Rule(
            "LR005",
            "tool-outside-allowlist",
            Severity.CRITICAL,
            "An MCP tool the server is not configured to expose was called: either the "
            "allowlist is bypassed or a tool was added behind the reviewers' back.",
        ),
        Rule(
            "LR006",
            "rate-spike",
            Severity.MEDIUM,
            "The line rate in the window exceeds the pre-window baseline by the configured "
            "factor: bulk exfiltration, brute force or a scanner.",
        ),
        Rule(
            "LR007",
            "unexpected-tunnel-location",
            Severity.HIGH,
            "A tunnel connection registered at an edge location the deployment never uses: "
            "a copy of the tunnel token may be running elsewhere.",
        ),
        Rule(
            "LR008",
            "log-gap",
            Severity.MEDIUM,
            "No lines for longer than the gap threshold inside the window: the service was "
            "down, or logs were deleted or not shipped for that period.",
        ),
        Rule(
            "LR009",
            "log-truncated",
            Severity.HIGH,
            "The log ends before the window does: it was rotated away, truncated or wiped, "
            "so part of the window cannot be reviewed.",
        ),
        Rule(
            "LR010",
            "log-unreadable",
            Severity.HIGH,
            "A log file could not be read at all: that part of the evidence is missing and "
            "a human must find it elsewhere.",
        ),
        Rule(
            "LR011",
            "log-corrupt",
            Severity.HIGH,
            "The log is damaged (corrupt gzip, binary garbage, absurdly long lines): lines "
            "may be lost, and tampering looks exactly like this.",
        ),
        Rule(
            "LR012",
            "gateway-misconfiguration",
            Severity.LOW,
            "The proxy or cloudflared reported a configuration error (invalid upstream, "
            "unreadable key, no ingress rules): relevant when judging what was reachable.",
        ),
        Rule(
            "LR013",
            "origin-unreachable",
            Severity.MEDIUM,
            "cloudflared could not reach the service behind the tunnel (refused, timeout, "
            "DNS, EOF): the MCP server was down or moved while requests kept arriving.",
            "Origin unreachable",
        ),
        Rule(
            "LR014",
            "edge-connection-lost",
            Severity.MEDIUM,
            "Tunnel connections to the Cloudflare edge dropped. Reconnects above the "
            "configured rate (reconnect_churn per churn_window) raise it to high: a second "
            "connector with the same token, or a network in the way, looks like this.",
            "Tunnel lost the edge",
        ),
        Rule(
            "LR015",
            "edge-tls-failure",
            Severity.MEDIUM,
            "The TLS handshake with the edge failed; high when a certificate was rejected, "
            "which is what TLS interception between cloudflared and Cloudflare looks like.",
            "TLS to the edge failed",
        ),
        Rule(
            "LR016",
            "quic-fallback",
            Severity.LOW,
            "cloudflared gave up on QUIC (UDP 7844 blocked or dropped) and fell back to "
            "HTTP/2: a changed egress path, worth knowing when reading the edge findings.",
            "QUIC fell back to HTTP/2",
        ),
        Rule(
            "LR017",
            "fatal-shutdown",
            Severity.HIGH,
            "The process stopped without a requested shutdown, or logged at fatal level: "
            "the service went down inside the window.",
            "Fatal error or unrequested shutdown",
        ),
        Rule(
            "LR018",
            "ingress-changed-remotely",
            Severity.HIGH,
            "The tunnel's ingress configuration was replaced from the Cloudflare dashboard "
            "or API: whoever holds that access can route the hostname anywhere. Confirm "
            "every change inside the window was yours.",
            "Ingress configuration changed remotely",
        ),
        Rule(
            "LR019",
            "no-ingress-rules",
            Severity.MEDIUM,
            "cloudflared ran without ingress rules and answered 503 to every request: the "
            "configuration was lost, replaced or never loaded.",
            "No ingress rules",
        ),
        Rule(
            "LR020",
            "mcp-server-disconnected",
            Severity.MEDIUM,
            "An MCP client lost its server (transport closed unexpectedly, process exited, "
            "stream terminated): tools stopped working, or the server was killed.",
            "MCP server disconnected",
        ),
        Rule(
            "LR021",
            "request-timeout",
            Severity.MEDIUM,
            "Requests timed out or were cancelled: an overloaded or hung server, or a "
            "client giving up on a tool call that may still have run.",
            "Requests timed out or were cancelled",
        ),
        Rule(
            "LR022",
            "unexpected-client",
            Severity.HIGH,
            "An MCP initialize came from a client (clientInfo.name) the deployment does "
            "not expect: someone else is talking to the server.",
            "Initialize from an unexpected client",
        ),
        Rule(
            "LR023",
            "panic",
            Severity.HIGH,
            "A process panicked or crashed (Go panic, Rust panic, Python traceback); the "
            "whole stack trace is one record.",
            "Panic or crash",
        ),
        Rule(
            "LR024",
            "errors-and-warnings",
            Severity.LOW,
            "Error and warning lines no other rule explains, grouped by message shape: "
            "read them after the rules above.",
            "Other errors and warnings",
        ),
    )
}

SAMPLE_CHARS = 300
# Rules whose finding key is a message shape (may hold anything a log line holds).
MESSAGE_KEYS = frozenset(("LR017", "LR023", "LR024"))
_HEAD_BYTES = 4096


def scrub(text: str, redactor: Redactor) -> str:
    """``text`` with configured secrets and every known secret shape redacted
    (:class:`core.redact.Redactor`: detect-secrets' shapes, header values, token
    query parameters, secret-named fields)."""
    return redactor.text(text)


def sanitize(raw: bytes, redactor: Redactor, *, limit: int = SAMPLE_CHARS) -> str:
    """A line fit for a finding or the timeline: decoded, secrets redacted, then cut.

    Redaction runs on at most the first 4 KiB and BEFORE the cut, so a secret is
    never split into a piece the patterns no longer recognise.
    """
    text = scrub(raw[:_HEAD_BYTES].decode("utf-8", "replace"), redactor)
    text = text.replace("\r", "").replace("\n", " ↵ ").replace("\t", " ")
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Hit:
    __slots__ = ("count", "first_ns", "last_ns", "ref", "raw", "severity", "note")

    def __init__(self, ns: int, ref: LineRef, raw: bytes, severity: Severity) -> None:
        self.count = 1
        self.first_ns = ns
        self.last_ns = ns
        self.ref = ref
        self.raw = raw
        self.severity = severity
        self.note = ""


class Findings:
    """Aggregates hits per (rule, source, key), at most ``max_keys`` keys per rule and
    source (the rest fold into the key ``(other)``)."""

    def __init__(self, redactor: Redactor, *, max_keys: int = 1000) -> None:
        self._hits: dict[tuple[str, str, str], _Hit] = {}
        self._keys: dict[tuple[str, str], int] = {}
        self._redactor = redactor
        self._max_keys = max_keys

    def hit(
        self,
        rule_id: str,
        source: str,
        key: str,
        ns: int,
        ref: LineRef,
        raw: bytes,
        severity: Severity | None = None,
    ) -> None:
        """Records one matching line (``raw``: its bytes, redacted only at the end);
        ``severity`` raises the finding above the rule's own when given."""
        severity = severity if severity is not None else RULES[rule_id].severity
        slot = (rule_id, source, key)
        hit = self._hits.get(slot)
        if hit is None:
            per_rule = (rule_id, source)
            if self._keys.get(per_rule, 0) >= self._max_keys:
                slot = (rule_id, source, "(other)")
                hit = self._hits.get(slot)
            if hit is None:
                self._keys[per_rule] = self._keys.get(per_rule, 0) + 1
                self._hits[slot] = _Hit(ns, ref, raw[:_HEAD_BYTES], severity)
                return
        hit.count += 1
        hit.severity = max(hit.severity, severity)
        if ns < hit.first_ns:
            hit.first_ns, hit.ref, hit.raw = ns, ref, raw[:_HEAD_BYTES]
        if ns > hit.last_ns:
            hit.last_ns = ns

    def add(
        self,
        rule_id: str,
        source: str,
        key: str,
        ref: LineRef,
        first_ns: int,
        last_ns: int,
        count_: int,
        sample: str,
    ) -> None:
        """Records an already aggregated finding (gaps, spikes, problems with a log)."""
        hit = _Hit(first_ns, ref, sample.encode(), RULES[rule_id].severity)
        hit.last_ns, hit.count = last_ns, count_
        self._hits[(rule_id, source, key)] = hit

    def escalate(self, rule_id: str, source: str, severity: Severity, note: str) -> None:
        """Raises every finding of ``rule_id`` for ``source`` to ``severity`` with a note
        (the edge-loss churn rate, known only at the end of the source)."""
        for (rule, src, _), hit in self._hits.items():
            if rule == rule_id and src == source:
                hit.severity = max(hit.severity, severity)
                hit.note = note

    def result(self) -> list[Finding]:
        """The findings, most severe first, then by first timestamp."""
        findings = []
        for (rule_id, source, raw_key), hit in self._hits.items():
            rule = RULES[rule_id]
            # Keys made of message text (error shapes, panic lines) are redacted like
            # samples before they are shown, then cut; addresses, hosts, tools and
            # locations are shown as they are.
            key = (
                sanitize(raw_key.encode(), self._redactor, limit=120)
                if rule_id in MESSAGE_KEYS
                else raw_key
            )
            findings.append(
                Finding(
                    rule_id=rule_id,
                    rule=rule.name,
                    severity=hit.severity,
                    source=source,
                    key=key,
                    ref=hit.ref,
                    first_ns=hit.first_ns,
                    last_ns=hit.last_ns,
                    count=hit.count,
                    sample=sanitize(hit.raw, self._redactor),
                    rationale=rule.rationale + (f" {hit.note}" if hit.note else ""),
                    title=f"{rule.title or rule.name.replace('-', ' ').capitalize()}: {key}",
                )
            )
        findings.sort(key=lambda f: (-f.severity, f.first_ns, f.source, f.rule_id, f.key))
        return findings


class Timeline:
    """The ``limit`` most severe (then earliest) notable events across all sources."""

    def __init__(self, limit: int, redactor: Redactor) -> None:
        self._limit = limit
        self._heap: list[tuple[int, int, int, tuple[str, LineRef, str, bytes]]] = []
        self._seq = count()
        self._redactor = redactor
        self.total = 0

    def add(
        self, ns: int, severity: Severity, source: str, ref: LineRef, what: str, raw: bytes
    ) -> None:
        """Offers an event; kept if it ranks among the ``limit`` best so far."""
        self.total += 1
        # Heap of the kept events, worst (lowest severity, latest) on top.
        entry = (int(severity), -ns, -next(self._seq), (source, ref, what, raw[:_HEAD_BYTES]))
        if len(self._heap) < self._limit:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def result(self) -> list[TimelineEvent]:
        """The kept events in time order, their text redacted."""
        events = [
            TimelineEvent(
                ts_ns=-neg_ns,
                source=source,
                ref=ref,
                severity=Severity(severity),
                what=sanitize(what.encode(), self._redactor, limit=160),
                text=sanitize(raw, self._redactor),
            )
            for severity, neg_ns, _, (source, ref, what, raw) in self._heap
        ]
        events.sort(key=lambda e: (e.ts_ns, e.source, e.ref.offset))
        return events
