"""The log review: every source streamed once through the window, findings out.

For each source the files are read oldest → newest. A plain, time-ordered file is
entered by binary search (:func:`reader.seek_offset`) at the start of the baseline
period and left at the first line past the window, so a 1 GiB log costs what its
window costs. Every line read is counted; lines in the window are classified by
format with cheap byte checks, and only lines a rule cares about (found by
substring tests on the raw bytes) are parsed further. A source that turns out not
to be time-ordered is rescanned in full, so seeking never changes the result.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from itertools import accumulate

from runbook.redact import Redactor

from .config import ReviewConfig
from .detections import Findings, Timeline, sanitize
from .model import LineRef, ReviewResult, Severity, Source, SourceCounts, Window
from .parsers import (
    CLOUDFLARED,
    MCP,
    PROXY_JSON,
    PROXY_TEXT,
    REMOTE_PREFIX_RES,
    UNKNOWN,
    classify,
    mcp_call,
    normalize_ip,
    probed_host,
    refused_ip,
    remote_ip,
    strip_timestamp,
    suspect_tool_names,
    tool_call_allowed_fast,
    tunnel_connection,
)
from .reader import (
    BLOCK_SIZE,
    GZIP_BLOCK,
    GZIP_ERRORS,
    Member,
    OpenFailure,
    bisect_lines,
    dated_ns_before,
    first_ns,
    iter_blocks,
    json_ns,
    line_ns,
    open_member,
    ordered_utc,
    seek_offset,
)
from .timestamps import NS, format_ns, parse_ns

# First four payload bytes → format, for the common cases (the rest: classify()).
_HEADS = {
    **dict.fromkeys((b"INF ", b"WRN ", b"ERR ", b"DBG ", b"FTL ", b"TRC "), CLOUDFLARED),
    **dict.fromkeys(
        (b"INFO", b"WARN", b"ERRO", b"DEBU", b"info", b"warn", b"erro", b"debu", b"FATA", b"fata"),
        PROXY_TEXT,
    ),
    **dict.fromkeys((b'{"ti', b'{"ts', b'{"le', b'{"ms', b'{"js', b'{"me', b'{"id'), PROXY_JSON),
}
# Substrings of every proxy line a rule acts on (cloudflared and MCP lines are picked
# in the classification loop, LR004 and LR005 by their own block-level passes).
_MARKERS = (
    b"IP validation failed",
    b"andshake",
    b"no route for host",
    b"invalid upstream",
    b"permission denied",
)


class _Disordered(Exception):
    """The source is not time-ordered: seeking is not valid for it."""


class _Stop(Exception):
    """Every line still to come is past the window (ordered source)."""


def _location_expected(location: str, expected: list[str]) -> bool:
    """``ams01`` matches ``ams01`` and ``ams`` (the edge's city code), case-insensitive."""
    location = location.lower()
    city = location.rstrip("0123456789")
    return any(e.lower() in (location, city) for e in expected)


def _duration(ns: int) -> str:
    seconds = ns // NS
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class _SourceReview:
    """Reviews one source; see the module docstring for the reading strategy."""

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

    # -- driver ---------------------------------------------------------------

    def run(self, seek: bool) -> tuple[Findings, Timeline, SourceCounts]:
        opened: list[Member] = []
        try:
            for path in self.source.paths:
                member = open_member(path)
                if isinstance(member, OpenFailure):
                    self._problem("LR010", str(path), 0, f"{path}: {member.reason}")
                else:
                    opened.append(member)
            try:
                self._scan(opened, seek and self.source.ordered)
            except _Disordered:
                self._reset()
                self._scan(opened, False)
        finally:
            for member in opened:
                member.close()
        for problem in self.source.problems:
            rule = "LR010" if problem.kind == "unreadable" else "LR011"
            self.findings.hit(
                rule,
                self.source.name,
                f"{problem.kind}:{problem.artifact}",
                self.start_ns,
                LineRef(problem.artifact, problem.offset),
                problem.detail.encode(),
            )
        self._finish_gaps()
        self._finish_rates()
        return self.findings, self.timeline, self.counts

    def _problem(
        self, rule: str, key: str, offset: int, detail: str, *, artifact: str | None = None
    ) -> None:
        ref = LineRef(artifact or key, offset)
        self.findings.add(rule, self.source.name, key, ref, self.start_ns, self.start_ns, 1, detail)

    def _scan(self, members: list[Member], seek: bool) -> None:
        self.counts.seeked = False
        try:
            for index, member in enumerate(members):
                if seek and member.gzip and index + 1 < len(members):
                    newer = first_ns(members[index + 1])
                    if newer is not None and newer <= self.lower_ns - self.tolerance_ns:
                        self.counts.members_skipped += 1
                        continue
                self._scan_member(member, seek)
        except _Stop:
            return

    def _scan_member(self, member: Member, seek: bool) -> None:
        offset = 0
        if seek and not member.gzip:
            offset = seek_offset(member.raw, member.size, self.lower_ns - self.tolerance_ns)
            self.counts.seeked = self.counts.seeked or offset > 0
        member.raw.seek(offset)
        stream = member.stream()
        artifact = str(member.path)
        position = offset
        try:
            blocks = iter_blocks(
                stream.read,
                offset,
                # gzip raises at a damaged spot and loses that read: read less at once
                block_size=GZIP_BLOCK if member.gzip else BLOCK_SIZE,
                max_line=self.config.max_line_bytes,
            )
            for block in blocks:
                position = block.offset
                if block.oversized:
                    self.counts.lines_read += 1
                    self._oversized(artifact, block.offset, block.oversized, block.data)
                elif seek:
                    self._block(block.data, block.offset, artifact)
                else:
                    self._lines(block.data.split(b"\n"), block.offset, artifact, False)
        except GZIP_ERRORS as exc:
            self._problem(
                "LR011",
                f"corrupt-gzip:{artifact}",
                position,
                f"{artifact}: corrupt or truncated gzip near decompressed offset {position} "
                f"({exc})",
                artifact=artifact,
            )
        finally:
            self.counts.bytes_read += member.raw.tell() - offset

    # -- whole blocks (time-ordered sources) -------------------------------------------

    def _block(self, data: bytes, offset: int, artifact: str, checked: int = -1) -> None:
        """A block of a time-ordered source. Blocks wholly inside the baseline or the
        window (and too short in time to hold a gap) are handled without parsing each
        line's timestamp; anything else goes through the exact per-line path."""
        first = line_ns(data[: data.find(b"\n")] if b"\n" in data else data)
        last_start = data.rfind(b"\n") + 1
        last = line_ns(data[last_start:])
        if first is None or last is None or last < first:
            self._lines(data.split(b"\n"), offset, artifact, True)
            return
        if self.high_ns is not None and first < self.high_ns - self.tolerance_ns:
            raise _Disordered
        lines: list[bytes] | None = None
        if checked < 0:
            lines = data.split(b"\n")
            checked = ordered_utc(lines, self.high_ns)
            if checked < 0:
                self._lines(lines, offset, artifact, True)
                return
        lower_ns, start_ns, end_ns = self.lower_ns, self.start_ns, self.end_ns
        if last < lower_ns:
            self.counts.lines_read += data.count(b"\n") + 1
            self.high_ns = max(self.high_ns or last, last)
            return
        if lower_ns <= first and last < start_ns:
            count = data.count(b"\n") + 1
            self.counts.lines_read += count
            self.counts.lines_baseline += count
            self._bucket_block(data, offset, artifact, first, last)
            self.high_ns = max(self.high_ns or last, last)
            self.last_ns = max(self.last_ns or last, last)
            return
        for boundary in (lower_ns, start_ns, end_ns):
            if first < boundary <= last:
                # Split at the boundary so each part is wholly on one side of it.
                cut = bisect_lines(data, boundary)
                if 0 < cut <= len(data):
                    self._block(data[: cut - 1], offset, artifact, checked)
                    self._block(data[cut:], offset + cut, artifact, checked)
                    return
        if start_ns <= first and last < end_ns:
            lines = lines if lines is not None else data.split(b"\n")
            max_line = self.config.max_line_bytes
            gaps: list[tuple[int, int, LineRef]] = []
            if (len(data) > max_line and max(map(len, lines)) > max_line) or (
                self.gap_ns
                and not self._block_gaps(data, 0, len(data), first, last, offset, artifact, gaps)
            ):
                self._lines(lines, offset, artifact, True)
                return
            since = start_ns if self.last_ns is None or self.last_ns < start_ns else self.last_ns
            if self.gap_ns and first - since > self.gap_ns:
                self.gaps.append((since, first, LineRef(artifact, offset)))
            self.gaps.extend(gaps)
            self._bucket_block(data, offset, artifact, first, last)
            self.high_ns = max(self.high_ns or last, last)
            self.last_ns = max(self.last_ns or last, last)
            if checked > 0:
                self._uniform_window_block(data, lines, offset, artifact, checked)
            else:
                self._window_block(data, lines, offset, artifact)
            return
        self._lines(lines if lines is not None else data.split(b"\n"), offset, artifact, True)

    def _block_gaps(
        self,
        data: bytes,
        start: int,
        end: int,
        first: int,
        last: int,
        offset: int,
        artifact: str,
        out: list[tuple[int, int, LineRef]],
    ) -> bool:
        """Gaps between the lines of ``data[start:end]`` (first/last: timestamps of its
        first and last line), found by halving: a span shorter than the threshold
        cannot hold a gap. False when an undated line sits at a split point (the
        caller then takes the per-line path)."""
        if last - first <= self.gap_ns:
            return True
        split = data.find(b"\n", (start + end) // 2, end)
        if split < 0:
            split = data.rfind(b"\n", start, (start + end) // 2)
            if split < 0:
                return True  # a single line
        left_start = data.rfind(b"\n", start, split) + 1
        left_start = max(left_start, start)
        left_last = line_ns(data[left_start:split])
        right_end = data.find(b"\n", split + 1, end)
        right_first = line_ns(data[split + 1 : right_end if right_end >= 0 else end])
        if left_last is None or right_first is None or right_first < left_last:
            return False
        if not self._block_gaps(data, start, split, first, left_last, offset, artifact, out):
            return False
        if right_first - left_last > self.gap_ns:
            out.append((left_last, right_first, LineRef(artifact, offset + split + 1)))
        return self._block_gaps(data, split + 1, end, right_first, last, offset, artifact, out)

    def _bucket_block(self, data: bytes, offset: int, artifact: str, first: int, last: int) -> None:
        """Adds a block's lines to the rate buckets, splitting it at bucket boundaries
        by binary search instead of reading every timestamp."""
        lower, width = self.lower_ns, self.bucket_ns
        buckets, refs = self.buckets, self.bucket_refs
        bucket, final = (first - lower) // width, (last - lower) // width
        position = 0
        if bucket not in refs:
            refs[bucket] = LineRef(artifact, offset)
        while bucket < final:
            boundary = bisect_lines(data, lower + (bucket + 1) * width)
            buckets[bucket] = buckets.get(bucket, 0) + data.count(b"\n", position, boundary)
            position = boundary
            end = data.find(b"\n", boundary)
            at_boundary = line_ns(data[boundary : end if end >= 0 else len(data)])
            bucket = ((at_boundary or lower) - lower) // width
            if bucket not in refs:
                refs[bucket] = LineRef(artifact, offset + boundary)
        buckets[bucket] = buckets.get(bucket, 0) + data.count(b"\n", position) + 1

    def _window_block(self, data: bytes, lines: list[bytes], offset: int, artifact: str) -> None:
        """Every line of ``data`` is in the window. One tight loop classifies and counts
        lines; the rules then run only on the lines that hold one of their markers,
        found by substring search over the whole block (C speed)."""
        counts = self.counts
        heads = _HEADS
        previous = self.high_ns
        dated: bytes | None = None
        here = offset
        undated = n_cloudflared = n_text = n_json = n_mcp = n_unknown = 0
        picked: list[int] = []
        for line in lines:
            at = here
            here += len(line) + 1
            space = line.find(b" ", 19, 48)
            if space > 0 and line[10:11] == b"T":
                dated = line
                start = space + 1
            else:
                if line_ns(line) is None:
                    undated += 1
                else:
                    dated = line
                start = 0
            fmt = heads.get(line[start : start + 4])
            if fmt is None:
                payload = line[start:]
                if payload[:1].isdigit():
                    payload = strip_timestamp(payload)
                fmt = classify(payload)
            elif fmt is PROXY_TEXT and (b"method=tools/" in line or b"jsonrpc=" in line):
                fmt = MCP
            elif fmt is PROXY_JSON:  # a JSON object: MCP when it carries JSON-RPC
                if b'"jsonrpc"' in line or b'"method"' in line:
                    fmt = MCP
                elif b'"msg"' not in line and b'"message"' not in line:
                    fmt = UNKNOWN
            if fmt is PROXY_TEXT:
                n_text += 1
            elif fmt is PROXY_JSON:
                n_json += 1
            elif fmt is MCP:
                n_mcp += 1
                if b'"error"' in line:
                    picked.append(at - offset)
            elif fmt is CLOUDFLARED:
                n_cloudflared += 1
                if b"DBG " not in line[start : start + 40] and (
                    b"ERR " in line
                    or b"FTL " in line
                    or b"Registered tunnel connection" in line
                    or b"No ingress rules" in line
                ):
                    picked.append(at - offset)
            else:
                n_unknown += 1
                ns = line_ns(dated) if dated is not None else previous
                self._unknown(line, ns or self.start_ns, artifact, at)
        formats = counts.formats
        for name, n in (
            (PROXY_TEXT, n_text),
            (PROXY_JSON, n_json),
            (MCP, n_mcp),
            (CLOUDFLARED, n_cloudflared),
            (UNKNOWN, n_unknown),
        ):
            if n:
                formats[name] = formats.get(name, 0) + n
        counts.lines_read += len(lines)
        counts.lines_in_window += len(lines)
        counts.no_timestamp += undated
        self.last_ref = LineRef(artifact, here - len(lines[-1]) - 1)
        for start in sorted(self._candidates(data).union(picked)):
            end = data.find(b"\n", start)
            line = data[start : end if end >= 0 else len(data)]
            ns = line_ns(line)
            payload = line
            if ns is not None and line[:1].isdigit():
                space = line.find(b" ", 19, 48)
                payload = line[space + 1 :] if space > 0 else line
            when = ns or dated_ns_before(data, start) or previous or self.start_ns
            self._inspect(payload, line, when, artifact, offset + start, False)
        if self.networks:
            self._remote_block(data, offset, artifact, previous)

    def _uniform_window_block(
        self, data: bytes, lines: list[bytes], offset: int, artifact: str, width: int
    ) -> None:
        """:meth:`_window_block` for a block whose every line starts with a UTC
        timestamp of one width (checked by :func:`ordered_utc`): no per-line search
        for the payload, and offsets computed only for the rare lines that need one."""
        heads = _HEADS
        picked: list[int] = []  # indices of lines to inspect
        odd: list[int] = []  # indices of unknown lines
        n_cloudflared = n_text = n_json = n_mcp = 0
        kv_mcp = False  # a key=value MCP line (the block-level tool check cannot read it)
        for index, line in enumerate(lines):
            fmt = heads.get(line[width : width + 4])
            if fmt is PROXY_TEXT:
                if b"method=tools/" in line or b"jsonrpc=" in line:
                    n_mcp += 1
                    kv_mcp = True
                else:
                    n_text += 1
                continue
            if fmt is PROXY_JSON:
                if b'"jsonrpc"' in line or b'"method"' in line:
                    fmt = MCP
                elif b'"msg"' not in line and b'"message"' not in line:
                    fmt = UNKNOWN
            elif fmt is None:
                payload = line[width:]
                if payload[:1].isdigit():
                    payload = strip_timestamp(payload)
                fmt = classify(payload)
                kv_mcp = kv_mcp or (fmt is MCP and payload[:1] != b"{")
            if fmt is PROXY_JSON:
                n_json += 1
            elif fmt is PROXY_TEXT:
                n_text += 1
            elif fmt is MCP:
                n_mcp += 1
                if b'"error"' in line:
                    picked.append(index)
            elif fmt is CLOUDFLARED:
                n_cloudflared += 1
                if b"DBG " not in line[width : width + 40] and (
                    b"ERR " in line
                    or b"FTL " in line
                    or b"Registered tunnel connection" in line
                    or b"No ingress rules" in line
                ):
                    picked.append(index)
            else:
                odd.append(index)
        counts = self.counts
        formats = counts.formats
        for name, n in (
            (PROXY_TEXT, n_text),
            (PROXY_JSON, n_json),
            (MCP, n_mcp),
            (CLOUDFLARED, n_cloudflared),
            (UNKNOWN, len(odd)),
        ):
            if n:
                formats[name] = formats.get(name, 0) + n
        counts.lines_read += len(lines)
        counts.lines_in_window += len(lines)
        starts = [0, *accumulate(len(x) + 1 for x in lines)] if picked or odd else []
        for index in odd:
            line = lines[index]
            self._unknown(line, line_ns(line) or self.start_ns, artifact, offset + starts[index])
        self.last_ref = LineRef(artifact, offset + len(data) - len(lines[-1]))
        candidates = self._candidates(data, kv_mcp).union(starts[i] for i in picked)
        for start in sorted(candidates):
            end = data.find(b"\n", start)
            line = data[start : end if end >= 0 else len(data)]
            when = line_ns(line) or self.start_ns
            self._inspect(line[width:], line, when, artifact, offset + start, False)
        if self.networks:
            self._remote_block(data, offset, artifact, self.high_ns)

    def _candidates(self, data: bytes, kv_mcp: bool = True) -> set[int]:
        """Start offsets of the lines of ``data`` that some rule must look at."""
        starts: set[int] = set()
        for marker in _MARKERS:
            at = data.find(marker)
            while at >= 0:
                starts.add(data.rfind(b"\n", 0, at) + 1)
                end = data.find(b"\n", at)
                at = data.find(marker, end) if end >= 0 else -1
        if b"tools/call" not in data:
            return starts
        suspects = suspect_tool_names(data, self.mcp_server, self.allowlist, kv_checked=not kv_mcp)
        if suspects is not None:
            needles = [b'"' + name + b'"' for name in suspects]
        else:  # the block cannot be judged as a whole: every tools/call line
            needles = [b"tools/call"]
        for needle in needles:
            at = data.find(needle)
            while at >= 0:
                start = data.rfind(b"\n", 0, at) + 1
                end = data.find(b"\n", at)
                line = data[start : end if end >= 0 else len(data)]
                space = line.find(b" ", 19, 48)
                payload = line[space + 1 :] if space > 0 and line[10:11] == b"T" else line
                if b"tools/call" in payload and not tool_call_allowed_fast(
                    payload, self.mcp_server, self.allowlist
                ):
                    starts.add(start)
                at = data.find(needle, end) if end >= 0 else -1
        return starts

    def _remote_block(self, data: bytes, offset: int, artifact: str, previous: int | None) -> None:
        """LR004 for a whole window block: the distinct client addresses are checked
        once each, and only lines holding a disallowed one are examined."""
        values: set[bytes] = set()
        for word, pattern in REMOTE_PREFIX_RES:
            if word in data:
                values.update(pattern.findall(data))
        suspects = {
            raw for raw in values if (ip := normalize_ip(raw)) is not None and not self._allowed(ip)
        }
        if not suspects:
            return
        starts: set[int] = set()
        for raw in suspects:
            at = data.find(raw)
            while at >= 0:
                starts.add(data.rfind(b"\n", 0, at) + 1)
                at = data.find(raw, at + len(raw))
        for start in sorted(starts):
            end = data.find(b"\n", start)
            line = data[start : end if end >= 0 else len(data)]
            ns = line_ns(line)
            payload = line
            if ns is not None and line[:1].isdigit():
                payload = line[line.find(b" ", 19, 48) + 1 :]
            if payload[:1].isdigit():
                payload = strip_timestamp(payload)
            if (
                classify(payload) not in (PROXY_TEXT, PROXY_JSON)
                or len(line) > self.config.max_line_bytes
            ):
                continue
            ip = remote_ip(payload)
            if ip is not None and not self._allowed(ip):
                when = ns or dated_ns_before(data, start) or previous or self.start_ns
                self._hit(
                    "LR004",
                    ip,
                    when,
                    artifact,
                    offset + start,
                    line,
                    Severity.HIGH,
                    f"request from {ip} outside the allowed ranges",
                )

    # -- per line (hot path) -----------------------------------------------------

    def _lines(self, lines: list[bytes], offset: int, artifact: str, seek: bool) -> None:
        """The exact path: every line's timestamp parsed, every rule applied per line.
        With ``seek`` (ordered source) a line far back in time raises _Disordered and a
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
                    raise _Disordered
                if ns < lower_ns:
                    continue
                if ns >= end_ns:
                    if seek and ns >= stop_ns:
                        raise _Stop
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

    def _finish_gaps(self) -> None:
        name = self.source.name
        if self.gaps:
            since, until, ref = max(self.gaps, key=lambda g: g[1] - g[0])
            sample = (
                f"{len(self.gaps)} gap(s); longest {_duration(until - since)} without "
                f"lines from {format_ns(since)} to {format_ns(until)}"
            )
            self.findings.add(
                "LR008",
                name,
                "gap",
                self.gaps[0][2],
                self.gaps[0][0],
                self.gaps[-1][1],
                len(self.gaps),
                sample,
            )
        last = self.last_ns if self.last_ns is not None and self.last_ns >= self.start_ns else None
        ends = last if last is not None else self.start_ns
        if self.gap_ns and self.end_ns - ends > self.gap_ns:
            ref = self.last_ref or LineRef(str(self.source.paths[-1]), 0)
            if last is None:
                sample = f"no lines in the window (threshold {_duration(self.gap_ns)})"
            else:
                sample = (
                    f"log ends at {format_ns(last)}, {_duration(self.end_ns - last)} "
                    f"before the window end {format_ns(self.end_ns)}"
                )
            self.findings.add("LR009", name, "truncated", ref, ends, self.end_ns, 1, sample)

    def _finish_rates(self) -> None:
        baseline_buckets = (self.start_ns - self.lower_ns) // self.bucket_ns
        if baseline_buckets <= 0 or self.counts.lines_baseline == 0:
            return
        mean = self.counts.lines_baseline / baseline_buckets
        threshold = max(mean * self.config.rate_spike_factor, self.config.rate_spike_min_lines)
        spikes = sorted(
            b for b, n in self.buckets.items() if b >= baseline_buckets and n > threshold
        )
        if not spikes:
            return
        peak = max(spikes, key=lambda b: self.buckets[b])
        width = _duration(self.bucket_ns)
        sample = (
            f"peak {self.buckets[peak]} lines/{width} at "
            f"{format_ns(self.lower_ns + peak * self.bucket_ns)}; baseline mean "
            f"{mean:.1f} lines/{width}, threshold {threshold:.1f}"
        )
        self.findings.add(
            "LR006",
            self.source.name,
            "rate",
            self.bucket_refs[spikes[0]],
            self.lower_ns + spikes[0] * self.bucket_ns,
            self.lower_ns + spikes[-1] * self.bucket_ns,
            len(spikes),
            sample,
        )


def review(
    sources: Sequence[Source],
    window: Window,
    config: ReviewConfig | None = None,
    *,
    redactor: Redactor | None = None,
    seek: bool = True,
) -> ReviewResult:
    """Reviews ``sources`` for ``window`` and returns findings, timeline and counts.

    Args:
        sources: the logs, each a file or rotated set (see :class:`Source`).
        window: the suspected window; lines in ``[start, end)`` are reviewed and the
            ``config.baseline_period`` before it feeds the rate baseline.
        config: what is normal for the deployment (defaults: every optional rule off).
        redactor: secret values known to the engine, removed from samples and the
            timeline on top of the known secret shapes.
        seek: enter time-ordered plain files by binary search (False: read all).

    Returns:
        A :class:`ReviewResult`; problems with the logs themselves are findings in it,
        never exceptions.
    """
    config = config or ReviewConfig()
    redactor = redactor or Redactor()
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        from runbook.errors import ConfigError

        raise ConfigError(f"sources: names must be unique, repeated: {', '.join(duplicates)}")
    findings = []
    events = []
    total = 0
    per_source: dict[str, SourceCounts] = {}
    for source in sources:
        found, timeline, counts = _SourceReview(source, window, config, redactor).run(seek)
        findings.extend(found.result())
        events.extend(timeline.result())
        total += timeline.total
        per_source[source.name] = counts
    findings.sort(key=lambda f: (-f.severity, f.first_ns, f.source, f.rule_id, f.key))
    events.sort(key=lambda e: (-e.severity, e.ts_ns, e.source, e.ref.offset))
    events = sorted(
        events[: config.timeline_limit], key=lambda e: (e.ts_ns, e.source, e.ref.offset)
    )
    return ReviewResult(
        window=window,
        findings=findings,
        timeline=events,
        timeline_total=total,
        per_source=per_source,
    )


__all__ = ["review", "sanitize"]
