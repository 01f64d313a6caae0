"""The exact per-line path of the review: every line parsed, grouped into records,
window membership decided line by line, gaps and rate buckets updated, and each
in-window record handed to the rules.

A record is a line with a recognised format plus the undated lines that follow it
(stack frames, a message's second line, a server's stderr copied into a client
log): they share its time and its format, and the rules see them together.
:mod:`.block_scan` skips whole blocks before the window on top of this.
"""

from __future__ import annotations

from datetime import datetime

from core.redact import Redactor

from .config import ReviewConfig
from .detections import Findings, Timeline
from .formats import UNKNOWN, LineParser, Parsed, zone_of
from .model import LineRef, Severity, Source, SourceCounts, Window
from .reader import json_ns, line_ns
from .rules import RecordRules
from .timestamps import NS, from_ns

_RECORD_BYTES = 4096
# Lines that open another part of the same crash report: a Go goroutine dump after
# ``panic:``/``fatal error:``, a chained Python traceback.
_STACK_HEADS = (b"goroutine ", b"Traceback (most recent call last)")
# A collector stamps the lines of one burst (a stack trace written at once) within
# microseconds of each other; a line a second or more later is a new record.
_TAIL_NS = NS


def may_join(parsed: Parsed) -> bool:
    """Whether a line could continue a record although it is dated (cheap test)."""
    return parsed.tail or (parsed.fmt.endswith("go_panic") and parsed.body.startswith(_STACK_HEADS))


def joins(parsed: Parsed, head: Parsed, gap_ns: int | None) -> bool:
    """Whether ``parsed`` continues the record opened by ``head``.

    Undated unrecognised lines always do (handled by the caller). This decides the
    others: behind a collector's timestamp (``docker logs --timestamps``: RFC 3339
    with nanoseconds and a space before each line as the daemon read it; ``podman
    logs -t`` and ``kubectl logs --timestamps`` alike) every line of a stack trace is
    dated, so a line joins when its payload alone would be a continuation (blank,
    indented, or any unrecognised text inside a panic/traceback record) and it was
    stamped less than a second after the line before (``gap_ns``; None: undated).
    A goroutine dump or a chained traceback joins a panic record it follows.
    """
    panic = head.fmt.endswith("go_panic")
    if gap_ns is not None and not 0 <= gap_ns < _TAIL_NS:
        return False
    if not parsed.tail:
        return panic and parsed.fmt.endswith("go_panic") and parsed.body.startswith(_STACK_HEADS)
    return gap_ns is not None and (panic or parsed.body[:1] in b" \t")


class Disordered(Exception):
    """The source is not time-ordered: seeking is not valid for it."""


class Stop(Exception):
    """Every line still to come is past the window (ordered source)."""


class LineScan:
    """Per-source scanning state and the exact per-line path (see module docstring)."""

    def __init__(
        self,
        source: Source,
        window: Window,
        config: ReviewConfig,
        redactor: Redactor,
        zone: str | None = None,
    ) -> None:
        self.source = source
        self.config = config
        self.redactor = redactor
        self.zone_name = zone or config.timezone or "UTC"
        self.zone = zone_of(self.zone_name)
        self.start_ns = window.start_ns
        self.end_ns = window.end_ns
        self.lower_ns = self.start_ns - int(config.baseline_period.total_seconds() * NS)
        self.tolerance_ns = int(config.order_tolerance.total_seconds() * NS)
        self.gap_ns = int(config.gap_threshold.total_seconds() * NS)
        self.bucket_ns = int(config.rate_bucket.total_seconds() * NS)
        self.networks = config.networks()
        self.mcp_server = source.mcp_server or (source.name if source.kind == "mcp" else None)
        self._reset()

    def _reset(self) -> None:
        self.counts = SourceCounts(members=[str(p) for p in self.source.paths])
        self.counts.zone = self.zone_name
        self.findings = Findings(self.redactor)
        self.timeline = Timeline(self.config.timeline_limit, self.redactor)
        start = from_ns(max(self.lower_ns, 0)).astimezone(self.zone)
        if start.year < 2000:  # open window: time-only stamps take today's date
            start = datetime.now(self.zone)
        self.parser = LineParser(self.zone, (start.year, start.month, start.day))
        self.rules = RecordRules(self.config, self.mcp_server, self._rule_hit)
        self.high_ns: int | None = None  # latest timestamp seen anywhere
        self.last_ns: int | None = None  # latest timestamp seen in [lower, end)
        self.gaps: list[tuple[int, int, LineRef]] = []
        self.buckets: dict[int, int] = {}
        self.bucket_refs: dict[int, LineRef] = {}
        self.last_ref: LineRef | None = None
        # The record being built: parsed first line, its time, reference, text parts.
        self._record: tuple[Parsed, int, LineRef, list[bytes], bool] | None = None
        self._record_size = 0
        self._current: tuple[int, LineRef, bytes] = (0, LineRef("", 0), b"")

    # -- records ----------------------------------------------------------------------

    def _rule_hit(self, rule: str, key: str, severity: Severity | None, what: str) -> None:
        ns, ref, raw = self._current
        if rule:
            from .detections import RULES

            self.findings.hit(rule, self.source.name, key, ns, ref, raw, severity)
            shown = severity if severity is not None else RULES[rule].severity
        else:
            shown = severity if severity is not None else Severity.INFO
        self.timeline.add(ns, shown, self.source.name, ref, what, raw)

    def extend_record(self, line: bytes) -> None:
        """Adds a continuation line to the record being built (capped at 4 KiB)."""
        record = self._record
        if record is not None and self._record_size < _RECORD_BYTES:
            record[3].append(line[: _RECORD_BYTES - self._record_size])
            self._record_size += min(len(line), _RECORD_BYTES) + 1

    def flush_record(self) -> None:
        """Applies the rules to the record being built (if it is in the window)."""
        record, self._record = self._record, None
        if record is None:
            return
        parsed, ns, ref, parts, in_window = record
        if not in_window:
            return
        text = b"\n".join(parts).rstrip(b"\r\n")
        self._current = (ns, ref, text)
        self.rules.apply(parsed, text, ns)

    # -- the per-line path ---------------------------------------------------------------

    def _lines(self, lines: list[bytes], offset: int, artifact: str, seek: bool) -> None:
        """Every line's timestamp parsed, records grouped, rules applied per record.
        With ``seek`` (ordered source) a line far back in time raises Disordered and a
        line past the window ends the source."""
        counts = self.counts
        formats = counts.formats
        parse = self.parser.parse
        lower_ns, start_ns, end_ns = self.lower_ns, self.start_ns, self.end_ns
        tolerance, gap_ns, bucket_ns = self.tolerance_ns, self.gap_ns, self.bucket_ns
        stop_ns = end_ns + tolerance
        max_line = self.config.max_line_bytes
        buckets = self.buckets
        high_ns, last_ns = self.high_ns, self.last_ns
        read = baseline = in_window = undated = assumed = 0
        try:
            for line in lines:
                size = len(line)
                here = offset
                offset += size + 1
                read += 1
                parsed = parse(line[:4096]) if size > max_line else parse(line)
                ns = parsed.ns
                record = self._record
                continuation = False
                if ns is None and parsed.fmt is UNKNOWN:
                    continuation = record is not None and (not line or _text(line))
                elif record is not None and may_join(parsed):
                    gap = None if ns is None or high_ns is None else ns - high_ns
                    continuation = joins(parsed, record[0], gap)
                dated = ns is not None
                if ns is None:
                    ns = high_ns if high_ns is not None else start_ns
                elif high_ns is None or ns > high_ns:
                    high_ns = ns
                elif ns < high_ns - tolerance and seek:
                    raise Disordered
                if not continuation:
                    self.flush_record()
                if ns < lower_ns:
                    continue
                if ns >= end_ns:
                    if seek and ns >= stop_ns and dated:
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
                if bucket not in self.bucket_refs:
                    self.bucket_refs[bucket] = LineRef(artifact, here)
                if ns < start_ns:
                    baseline += 1
                    continue
                in_window += 1
                if not dated:
                    undated += 1
                elif parsed.assumed:
                    assumed += 1
                self.last_ref = LineRef(artifact, here)
                if size > max_line:
                    self._oversized(artifact, here, size, line[:4096])
                if continuation and record is not None:
                    fmt = record[0].fmt
                    formats[fmt] = formats.get(fmt, 0) + 1
                    self.extend_record(line)
                    continue
                fmt = parsed.fmt
                formats[fmt] = formats.get(fmt, 0) + 1
                if fmt is UNKNOWN:
                    self._unknown(line, ns, artifact, here)
                    continue
                self._record = (parsed, ns, LineRef(artifact, here), [line[:_RECORD_BYTES]], True)
                self._record_size = min(size, _RECORD_BYTES)
        finally:
            self.high_ns, self.last_ns = high_ns, last_ns
            counts.lines_read += read
            counts.lines_baseline += baseline
            counts.lines_in_window += in_window
            counts.no_timestamp += undated
            counts.assumed_zone += assumed

    # -- problems with the log itself ---------------------------------------------------

    def _unknown(self, line: bytes, ns: int, artifact: str, at: int) -> None:
        if not _text(line):
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


def _text(line: bytes) -> bool:
    """True for a line of text: no NUL and valid UTF-8."""
    if b"\x00" in line:
        return False
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
