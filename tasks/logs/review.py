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

import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext

from core.errors import ConfigError
from core.redact import Redactor

from .block_scan import BlockScan
from .config import ReviewConfig
from .detections import Findings, Timeline
from .line_scan import Disordered, Stop
from .model import LineRef, ReviewResult, Severity, Source, SourceCounts, Window
from .prescan import Prescan, can_fork, parallel_threshold, prescan
from .reader import (
    BLOCK_SIZE,
    GZIP_BLOCK,
    GZIP_ERRORS,
    Member,
    OpenFailure,
    first_ns,
    iter_blocks,
    open_member,
    seek_offset,
)
from .timestamps import NS, format_ns


def _duration(ns: int) -> str:
    seconds = ns // NS
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class _SourceReview(BlockScan):
    """Reviews one source; see the module docstring for the reading strategy."""

    block_size = BLOCK_SIZE
    parallel_bytes = -1  # bytes left from which a plain member is prescanned (-1: never)
    parallel_if_idle = True  # prescan only with a core to spare (the default threshold)

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
            except Disordered:
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
        self.flush_record()
        self._finish_gaps()
        self._finish_rates()
        self._finish_churn()
        return self.findings, self.timeline, self.counts

    def _finish_churn(self) -> None:
        churn = self.rules.churn()
        if churn is None:
            return
        peak, since, until = churn
        window = _duration(int(self.config.churn_window.total_seconds() * NS))
        note = (
            f"Reconnect rate: {peak} reconnects within {window} "
            f"({format_ns(since)} to {format_ns(until)}), threshold {self.config.reconnect_churn}."
        )
        self.findings.escalate("LR014", self.source.name, Severity.HIGH, note)

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
        except Stop:
            return

    def _scan_member(self, member: Member, seek: bool) -> None:
        offset = 0
        if seek and not member.gzip:
            offset = seek_offset(member.raw, member.size, self.lower_ns - self.tolerance_ns)
            self.counts.seeked = self.counts.seeked or offset > 0
        member.raw.seek(offset)
        stream = member.stream()
        artifact = str(member.path)
        self._position = offset
        # gzip raises at a damaged spot and loses that read: read less at once
        block_size = GZIP_BLOCK if member.gzip else self.block_size
        parallel = (
            seek
            and not member.gzip
            and 0 <= self.parallel_bytes <= member.size - offset
            and can_fork(idle_core=self.parallel_if_idle)
        )
        ahead = (
            prescan(self, member.path, offset, block_size, self.config.max_line_bytes)
            if parallel
            else nullcontext(None)
        )
        used: Prescan | None = None
        try:
            with ahead as facts:
                used = facts
                self._read_blocks(stream.read, offset, block_size, artifact, seek, facts)
        except GZIP_ERRORS as exc:
            position = self._position
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
            if used is not None and used.failure:  # the process is joined: its status known
                self._prescan_failed(artifact, used)

    def _prescan_failed(self, artifact: str, ahead: Prescan) -> None:
        """Says on stderr, and records for the report, that the prescan process failed
        and the scan went on alone."""
        reason = self.redactor.text(ahead.failure or "")
        self.counts.prescan_failed = reason
        sys.stderr.write(
            f"mcp-ir review: {artifact}: the parallel prescan failed ({reason}); the review "
            "continued in one process (same result)\n"
        )
        sys.stderr.flush()

    def _read_blocks(
        self,
        read: Callable[[int], bytes],
        offset: int,
        block_size: int,
        artifact: str,
        seek: bool,
        ahead: Prescan | None,
    ) -> None:
        """Every block of a member, with the prescan's facts when there is one."""
        blocks = iter_blocks(
            read, offset, block_size=block_size, max_line=self.config.max_line_bytes
        )
        for block in blocks:
            self._position = block.offset
            if block.oversized:
                self.counts.lines_read += 1
                self._oversized(artifact, block.offset, block.oversized, block.data)
            elif seek:
                facts = None if ahead is None else ahead.facts(block.offset, len(block.data))
                self.counts.prescanned_blocks += facts is not None
                self._block(block.data, block.offset, artifact, facts=facts)
            else:
                self._lines(block.data.split(b"\n"), block.offset, artifact, False)

    # -- whole blocks (time-ordered sources) -------------------------------------------

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
    zone: str | None = None,
    parallel_bytes: int | None = None,
    block_size: int = BLOCK_SIZE,
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
        zone: the zone of zone-less timestamps (overrides ``config.timezone``).
        parallel_bytes: a plain file with at least this many bytes left after the
            seek is judged ahead block by block in a second process
            (:mod:`.prescan`; same result) whatever the load; negative: never;
            None: the ``MCP_IR_REVIEW_PARALLEL_BYTES`` environment variable or
            64 MiB, and only when the machine has a core to spare.
        block_size: bytes read at once from a plain file (tests make it small to
            cross many block boundaries).

    Returns:
        A :class:`ReviewResult`; problems with the logs themselves are findings in it,
        never exceptions.
    """
    config = config or ReviewConfig()
    redactor = redactor or Redactor()
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"sources: names must be unique, repeated: {', '.join(duplicates)}")
    findings = []
    events = []
    total = 0
    per_source: dict[str, SourceCounts] = {}
    threshold = parallel_threshold() if parallel_bytes is None else parallel_bytes
    for source in sources:
        scan = _SourceReview(source, window, config, redactor, zone)
        scan.parallel_bytes, scan.block_size = threshold, block_size
        scan.parallel_if_idle = parallel_bytes is None
        found, timeline, counts = scan.run(seek)
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


__all__ = ["review"]
