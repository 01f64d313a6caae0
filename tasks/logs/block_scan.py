"""Whole-block fast paths for time-ordered sources.

A block (about 1 MiB of complete lines) whose lines carry non-decreasing UTC
timestamps and lie wholly in the baseline or the window is judged by its first and
last line: rates split at bucket boundaries by binary search, gaps found by
halving, and rules run only on lines holding one of their markers, found by
substring search over the whole block. Anything else goes through
:class:`.line_scan.LineScan`'s exact per-line path, so results never differ.
"""

from __future__ import annotations

from itertools import accumulate

from .line_scan import Disordered, LineScan
from .model import LineRef, Severity
from .parsers import (
    CLOUDFLARED,
    MCP,
    PROXY_JSON,
    PROXY_TEXT,
    REMOTE_PREFIX_RES,
    UNKNOWN,
    classify,
    normalize_ip,
    remote_ip,
    strip_timestamp,
    suspect_tool_names,
    tool_call_allowed_fast,
)
from .reader import (
    bisect_lines,
    dated_ns_before,
    line_ns,
    ordered_utc,
)

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


class BlockScan(LineScan):
    """Adds the whole-block paths to :class:`LineScan`."""

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
            raise Disordered
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
