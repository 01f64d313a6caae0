"""Whole-block fast paths for time-ordered sources.

A block (about 1 MiB of complete lines) whose lines carry non-decreasing UTC
timestamps is judged by its first and last line. Before the baseline its lines are
only counted; in the baseline they only feed the rate buckets (split at bucket
boundaries by binary search). In the window, when every line starts with a ``Z``
timestamp (of one width as ``docker logs --timestamps`` writes it, or of several as
podman and kubectl trim the fraction), formats are named by cheap byte checks per
line, and only the lines a rule could act on — found by ONE Aho-Corasick pass over
the block for every rule's markers and warning-or-worse levels, plus the client
addresses and suspect tool names — are parsed one by one, grouped into records
(stack traces behind the stamps included) and handed to the rules. Anything else
goes through
:class:`.line_scan.LineScan`'s exact per-line path; both give the same result
(the tests run every case both ways).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from ahocorasick_rs import BytesAhoCorasick, MatchKind

from .block_names import name_lines
from .formats import Parsed
from .line_scan import Disordered, LineScan, joins, may_join
from .model import LineRef
from .parsers import REMOTE_PREFIX_RES, normalize_ip, suspect_tool_names
from .reader import bisect_lines, line_ns, ordered_utc
from .rules import BLOCK_HINTS
from .timestamps import parse_ns

# Literals whose presence makes a line worth parsing: warning-or-worse levels in every
# format (a superset: the rules re-check the parsed level) and panic starts.
_LOUD = (
    b"WRN ",
    b"ERR",
    b"FTL ",
    b"WARN",
    b"FATA",
    b"CRIT",
    b"PANIC",
    b'"level":"w',
    b'"level":"e',
    b'"level":"f',
    b'"level":"p',
    b'"level":"c',
    b"goroutine ",
    b"thread '",
    b"SIGABRT",
    # MCP clients' bracketed levels (Claude Desktop, VS Code): lowercase
    b"[error]",
    b"[warn",
    b"[Error]",
    b"[Warn",
)


# Every hint and loud literal found in ONE pass over a block (Aho-Corasick in Rust: one
# scan instead of one ``bytes.find`` pass per literal). Leftmost-first matching lets
# the library use its packed (SIMD) prefilter, about 3.5x faster here than standard
# matching; it reports fewer overlapping matches, but every line holding a literal
# still holds a match (no literal spans a newline), and lines are all that is kept.
# The prefilter takes at most 64 literals: _MAX_HINTS (tests/test_logs_names.py).
_MAX_HINTS = 64
_HINTS = BytesAhoCorasick([*BLOCK_HINTS, *_LOUD], matchkind=MatchKind.LeftmostFirst)


def _lines_holding(data: bytes, needles: Sequence[bytes], starts: set[int]) -> None:
    """Adds to ``starts`` the start offset of every line of ``data`` holding one of
    ``needles``: one pass for all of them (every occurrence, overlapping ones too)
    instead of one scan of the block per needle."""
    if needles:
        search = BytesAhoCorasick(list(needles))
        for _, at, _ in search.find_matches_as_indexes(data, overlapping=True):
            starts.add(data.rfind(b"\n", 0, at) + 1)


def _marked_lines(data: bytes, matches: list[tuple[int, int, int]], starts: set[int]) -> None:
    """Adds to ``starts`` the start offset of every line of ``data`` holding a match
    (matches come in text order; several on one line cost one lookup)."""
    line_end = -1
    for _, at, _ in matches:
        if at < line_end:
            continue
        starts.add(data.rfind(b"\n", 0, at) + 1)
        line_end = data.find(b"\n", at)
        if line_end < 0:
            return


@dataclass(frozen=True)
class WindowFacts:
    """What :meth:`BlockScan.window_facts` finds in a block wholly in the window: the
    count of lines named per format (in first-seen order), the start offsets of the
    lines to parse because no cheap check names them (``odd``), and of every line to
    parse (``starts``: odd ones, lines holding a marker, a loud level, a suspect tool
    name or a client address outside the allowed ranges), the line count and the
    longest line's length."""

    named: dict[str, int]
    odd: frozenset[int]
    starts: frozenset[int]
    total: int
    longest: int


@dataclass(frozen=True)
class BlockFacts:
    """The pure, state-free judgement of one block (:meth:`BlockScan.block_facts`), so
    another process can compute it ahead of the scan: ``checked`` is
    :func:`.reader.ordered_utc` without a floor, ``head_ns`` the first line's stamp
    it compared, ``window`` the window facts when the block may be wholly in the
    window."""

    offset: int
    size: int
    checked: int | list[int]
    head_ns: int | None
    window: WindowFacts | None

    def ordered(self, floor_ns: int | None) -> int | list[int]:
        """:func:`.reader.ordered_utc` of the block with ``floor_ns``, when the floorless
        answer settles it; -1 otherwise (the caller then computes it: a floor only
        ever turns a positive answer negative, and then the slow path decides)."""
        checked = self.checked
        if not checked:  # 0 may become -1 with a floor; -1 stays -1
            return -1
        if floor_ns is None or (self.head_ns is not None and self.head_ns >= floor_ns):
            return checked
        return -1


class BlockScan(LineScan):
    """Adds the before-the-window block path to :class:`LineScan`."""

    def block_facts(self, data: bytes, offset: int) -> BlockFacts:
        """What the scan of this block needs that depends on the block alone (no scan
        state): its order check and, when it may lie wholly in the window, its window
        facts. Runs in the prescan process (:mod:`.prescan`)."""
        lines = data.split(b"\n")
        checked = ordered_utc(lines, None)
        head_ns = None
        window = None
        if checked and checked != -1:
            width = checked if isinstance(checked, int) else checked[0]
            head_ns = parse_ns(lines[0][: width - 1])
            first, last = line_ns(lines[0]), line_ns(lines[-1])
            if (
                first is not None
                and last is not None
                and self.start_ns <= first
                and last < self.end_ns
            ):
                window = self.window_facts(data, lines, checked)
        return BlockFacts(offset, len(data), checked, head_ns, window)

    def window_facts(self, data: bytes, lines: list[bytes], width: int | list[int]) -> WindowFacts:
        """The state-free part of :meth:`_window_block` (see :class:`WindowFacts`)."""
        named, unnamed = name_lines(data, lines, width)
        odd: set[int] = set()
        if unnamed:  # the lines to parse: their start offsets
            ends = list(accumulate(map(len, lines)))
            odd.update(ends[index] - len(lines[index]) + index for index in unnamed)
        starts = set(odd)
        _marked_lines(data, _HINTS.find_matches_as_indexes(data), starts)
        _lines_holding(data, self._tool_needles(data), starts)
        if self.rules.networks:
            starts.update(self._remote_lines(data))
        # No line can be longer than the limit when the whole block is not.
        longest = max(map(len, lines)) if len(data) > self.config.max_line_bytes else 0
        return WindowFacts(named, frozenset(odd), frozenset(starts), len(lines), longest)

    def _block(
        self,
        data: bytes,
        offset: int,
        artifact: str,
        checked: int | list[int] = -1,
        facts: BlockFacts | None = None,
    ) -> None:
        """A block of a time-ordered source (see the module docstring). ``facts``: what
        :meth:`block_facts` found in this very block, computed ahead in another process
        (:mod:`.prescan`); None computes what is needed here."""
        first = line_ns(data[: data.find(b"\n")] if b"\n" in data else data)
        last_start = data.rfind(b"\n") + 1
        last = line_ns(data[last_start:])
        if first is None or last is None or last < first or first >= self.end_ns:
            self._lines(data.split(b"\n"), offset, artifact, True)
            return
        if self.high_ns is not None and first < self.high_ns - self.tolerance_ns:
            raise Disordered
        lines: list[bytes] | None = None
        window = None
        if facts is not None and checked == -1:
            checked = facts.ordered(self.high_ns)
            window = facts.window if checked != -1 else None
            if isinstance(checked, list) and window is None:
                lines = data.split(b"\n")
        if checked == -1:
            lines = data.split(b"\n")
            checked = ordered_utc(lines, self.high_ns)
            if checked == -1:
                self._lines(lines, offset, artifact, True)
                return
        lower_ns, start_ns = self.lower_ns, self.start_ns
        if (
            start_ns <= first
            and last < self.end_ns
            and checked  # one stamp width, or each line's (podman, kubectl)
            and (isinstance(checked, int) or lines is not None or window is not None)
            and self._window_block(data, lines, offset, artifact, first, last, checked, window)
        ):
            return
        if last < lower_ns:
            self.flush_record()
            self.counts.lines_read += data.count(b"\n") + 1
            self.high_ns = max(self.high_ns or last, last)
            return
        if lower_ns <= first and last < start_ns:
            self.flush_record()
            count = self._bucket_block(data, offset, artifact, first, last)
            self.counts.lines_read += count
            self.counts.lines_baseline += count
            self.high_ns = max(self.high_ns or last, last)
            self.last_ns = max(self.last_ns or last, last)
            return
        for boundary in (lower_ns, start_ns, self.end_ns):
            if first < boundary <= last:
                # Split at the boundary so each part is wholly on one side of it.
                cut = bisect_lines(data, boundary)
                if 0 < cut <= len(data):
                    # Per-line widths belong to the whole block: the parts recompute.
                    again = checked if isinstance(checked, int) else -1
                    self._block(data[: cut - 1], offset, artifact, again)
                    self._block(data[cut:], offset + cut, artifact, again)
                    return
        self._lines(data.split(b"\n"), offset, artifact, True)

    def _window_block(
        self,
        data: bytes,
        lines: list[bytes] | None,
        offset: int,
        artifact: str,
        first: int,
        last: int,
        width: int | list[int],
        facts: WindowFacts | None = None,
    ) -> bool:
        """A block wholly in the window, every line dated by a ``Z`` timestamp of
        ``width`` bytes (or of each line's own width, a list). False (nothing done) when it must take the per-line path:
        lines longer than the limit, an undated line at a split point, or a first
        line that may continue the record left open by the block before."""
        head_end = data.find(b"\n")
        if may_join(self.parser.parse(data[:head_end] if head_end >= 0 else data)):
            return False
        if facts is None and lines is None:
            lines = data.split(b"\n")
        if len(data) > self.config.max_line_bytes and (
            facts.longest if facts is not None else max(map(len, lines or ()))
        ) > (self.config.max_line_bytes):
            return False
        gaps: list[tuple[int, int, LineRef]] = []
        if self.gap_ns and not self._block_gaps(
            data, 0, len(data), first, last, offset, artifact, gaps
        ):
            return False
        self.flush_record()
        start_ns = self.start_ns
        since = start_ns if self.last_ns is None or self.last_ns < start_ns else self.last_ns
        if self.gap_ns and first - since > self.gap_ns:
            self.gaps.append((since, first, LineRef(artifact, offset)))
        self.gaps.extend(gaps)
        self._bucket_block(data, offset, artifact, first, last)
        formats = self.counts.formats
        if facts is None:
            facts = self.window_facts(data, lines or data.split(b"\n"), width)
        named, odd, starts = facts.named, facts.odd, set(facts.starts)
        total = facts.total
        for name, n in named.items():
            formats[name] = formats.get(name, 0) + n
        last_start = data.rfind(b"\n") + 1
        parse = self.parser.parse
        found: dict[int, tuple[bytes, Parsed]] = {}
        for start in sorted(starts):
            end = data.find(b"\n", start)
            line = data[start : end if end >= 0 else len(data)]
            found[start] = (line, parse(line))
        joined, members = self._join_tails(data, odd, found)
        for start in sorted(found):
            if start in members:
                continue
            line, parsed = found[start]
            if start in odd:
                formats[parsed.fmt] = formats.get(parsed.fmt, 0) + 1
            ns = parsed.ns if parsed.ns is not None else last
            tails = joined.get(start)
            if tails:  # a dated stack trace: one record, its lines under its format
                formats[parsed.fmt] = formats.get(parsed.fmt, 0) + len(tails)
                self._record = (parsed, ns, LineRef(artifact, offset + start), [line[:4096]], True)
                self._record_size = min(len(line), 4096)
                for tail in tails:
                    self.extend_record(found[tail][0])
                if tails[-1] != last_start:
                    self.flush_record()
                continue
            if start == last_start:
                self._record = (parsed, ns, LineRef(artifact, offset + start), [line], True)
                self._record_size = len(line)
                continue
            self._current = (ns, LineRef(artifact, offset + start), line)
            self.rules.apply(parsed, line, ns)
        if last_start not in found:
            line = data[last_start:]
            parsed = parse(line)  # pending: an undated line in the next block may join it
            self._record = (parsed, last, LineRef(artifact, offset + last_start), [line], True)
            self._record_size = len(line)
        counts = self.counts
        counts.lines_read += total
        counts.lines_in_window += total
        self.high_ns = max(self.high_ns or last, last)
        self.last_ns = max(self.last_ns or last, last)
        self.last_ref = LineRef(artifact, offset + last_start)
        return True

    def _join_tails(
        self, data: bytes, odd: set[int], found: dict[int, tuple[bytes, Parsed]]
    ) -> tuple[dict[int, list[int]], set[int]]:
        """The dated continuation lines of the block (stack frames behind a collector's
        timestamp, :func:`.line_scan.joins`), grouped under the line opening their
        record: (head start → continuation starts, every continuation start). A head
        no rule asked for is parsed and added to ``found``: its record is judged whole,
        as the per-line path judges it."""
        joined: dict[int, list[int]] = {}
        owner: dict[int, int] = {}
        for start in sorted(s for s in odd if s and may_join(found[s][1])):
            previous = data.rfind(b"\n", 0, start - 1) + 1
            if previous not in found:
                line = data[previous : start - 1]
                found[previous] = (line, self.parser.parse(line))
            head = owner.get(previous, previous)
            ns, previous_ns = found[start][1].ns, found[previous][1].ns
            gap = None if ns is None or previous_ns is None else ns - previous_ns
            if joins(found[start][1], found[head][1], gap):
                joined.setdefault(head, []).append(start)
                owner[start] = head
        return joined, set(owner)

    def _tool_needles(self, data: bytes) -> tuple[bytes, ...]:
        """What finds the tools/call lines the allowlist rule must see: the quoted
        names no allowlisted server allows, or every tools/call line when the block
        cannot be judged that way (escapes, key=value MCP lines)."""
        if not self.rules.allowlist or b"tools/call" not in data:
            return ()
        suspects = suspect_tool_names(data, None, self.rules.allowlist)
        if suspects is None:
            return (b"tools/call",)
        return tuple(b'"' + name + b'"' for name in suspects)

    def _remote_lines(self, data: bytes) -> set[int]:
        """Start offsets of the lines holding a client address outside the allowed
        ranges: each distinct address is checked once."""
        values: set[bytes] = set()
        underscored = b"_ip" in data  # one search instead of one per field below
        for word, pattern in REMOTE_PREFIX_RES:
            if (underscored or not word.endswith(b"_ip")) and word in data:
                values.update(pattern.findall(data))
        starts: set[int] = set()
        outside = []
        for raw in values:
            ip = normalize_ip(raw)
            if ip is not None and not self.rules._allowed(ip):
                outside.append(raw)
        _lines_holding(data, outside, starts)
        return starts

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
        left_start = max(data.rfind(b"\n", start, split) + 1, start)
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

    def _bucket_block(self, data: bytes, offset: int, artifact: str, first: int, last: int) -> int:
        """Adds a block's lines to the rate buckets, splitting it at bucket boundaries
        by binary search instead of reading every timestamp; returns the block's line
        count (the buckets' counts add up to it: no second count)."""
        lower, width = self.lower_ns, self.bucket_ns
        buckets, refs = self.buckets, self.bucket_refs
        bucket, final = (first - lower) // width, (last - lower) // width
        position = total = 0
        if bucket not in refs:
            refs[bucket] = LineRef(artifact, offset)
        while bucket < final:
            boundary = bisect_lines(data, lower + (bucket + 1) * width)
            count = data.count(b"\n", position, boundary)
            buckets[bucket] = buckets.get(bucket, 0) + count
            total += count
            position = boundary
            end = data.find(b"\n", boundary)
            at_boundary = line_ns(data[boundary : end if end >= 0 else len(data)])
            bucket = ((at_boundary or lower) - lower) // width
            if bucket not in refs:
                refs[bucket] = LineRef(artifact, offset + boundary)
        count = data.count(b"\n", position) + 1
        buckets[bucket] = buckets.get(bucket, 0) + count
        return total + count
