"""Whole-block fast path for time-ordered sources: blocks before the window.

A block (about 1 MiB of complete lines) whose lines carry non-decreasing UTC
timestamps and lie wholly before the window is judged by its first and last line:
lines before the baseline are only counted, baseline lines only feed the rate
buckets (split at bucket boundaries by binary search). A block that straddles a
boundary is split there; everything in the window goes through
:class:`.line_scan.LineScan`'s exact per-line path, so results never differ.
"""

from __future__ import annotations

from .line_scan import Disordered, LineScan
from .reader import bisect_lines, line_ns, ordered_utc


class BlockScan(LineScan):
    """Adds the before-the-window block path to :class:`LineScan`."""

    def _block(self, data: bytes, offset: int, artifact: str, checked: int = -1) -> None:
        """A block of a time-ordered source (see the module docstring)."""
        first = line_ns(data[: data.find(b"\n")] if b"\n" in data else data)
        last_start = data.rfind(b"\n") + 1
        last = line_ns(data[last_start:])
        if first is None or last is None or last < first or first >= self.start_ns:
            self._lines(data.split(b"\n"), offset, artifact, True)
            return
        if self.high_ns is not None and first < self.high_ns - self.tolerance_ns:
            raise Disordered
        if checked < 0:
            lines = data.split(b"\n")
            checked = ordered_utc(lines, self.high_ns)
            if checked < 0:
                self._lines(lines, offset, artifact, True)
                return
        lower_ns, start_ns = self.lower_ns, self.start_ns
        if last < lower_ns:
            self.flush_record()
            self.counts.lines_read += data.count(b"\n") + 1
            self.high_ns = max(self.high_ns or last, last)
            return
        if lower_ns <= first and last < start_ns:
            self.flush_record()
            count = data.count(b"\n") + 1
            self.counts.lines_read += count
            self.counts.lines_baseline += count
            self._bucket_block(data, offset, artifact, first, last)
            self.high_ns = max(self.high_ns or last, last)
            self.last_ns = max(self.last_ns or last, last)
            return
        for boundary in (lower_ns, start_ns):
            if first < boundary <= last:
                # Split at the boundary so each part is wholly on one side of it.
                cut = bisect_lines(data, boundary)
                if 0 < cut <= len(data):
                    self._block(data[: cut - 1], offset, artifact, checked)
                    self._block(data[cut:], offset + cut, artifact, checked)
                    return
        self._lines(data.split(b"\n"), offset, artifact, True)

    def _bucket_block(self, data: bytes, offset: int, artifact: str, first: int, last: int) -> None:
        """Adds a block's lines to the rate buckets, splitting it at bucket boundaries
        by binary search instead of reading every timestamp."""
        from .model import LineRef

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
