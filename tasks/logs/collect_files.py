"""Collect log files (plain, gzip, rotated sets) for a window into one artifact.

Members are read oldest → newest; plain time-ordered members are entered by
binary search at the window start and left at the first line past it. Problems
with the files (unreadable, corrupt gzip, oversized lines) are recorded on the
artifact so the review reports them.
"""

from __future__ import annotations

from datetime import tzinfo
from pathlib import Path

from core.redact import Redactor

from .artifact import ArtifactWriter
from .model import CollectedArtifact, Source, Window
from .reader import (
    BLOCK_SIZE,
    GZIP_BLOCK,
    GZIP_ERRORS,
    OpenFailure,
    iter_blocks,
    line_ns,
    open_member,
    seek_offset,
)

MAX_LINE = 1 << 20


def collect_files(
    source: Source,
    window: Window,
    out_dir: Path,
    *,
    redactor: Redactor | None = None,
    max_line: int = MAX_LINE,
    zone: tzinfo | None = None,
) -> CollectedArtifact:
    """Copies the lines of ``source``'s files that fall in ``window`` to an artifact.

    Args:
        source: the files (``Source.from_file(name, path)`` finds the rotated set).
        window: lines with ``start <= t < end`` are kept.
        out_dir: where the artifact file is written.
        redactor: known secret values to redact on top of the known shapes.
        max_line: longer lines are not copied; each is recorded as a problem.
        zone: the zone of zone-less timestamps (UTC when None).

    Returns:
        The artifact, with a problem per unreadable file, corrupt gzip member or
        oversized line.
    """
    writer = ArtifactWriter(out_dir, source.name, window, redactor, zone)
    for path in source.paths:
        member = open_member(path)
        if isinstance(member, OpenFailure):
            writer.problem("unreadable", f"{path}: {member.reason}")
            continue
        try:
            offset = 0
            if source.ordered and not member.gzip:
                offset = seek_offset(member.raw, member.size, window.start_ns)
            member.raw.seek(offset)
            position = offset
            size = GZIP_BLOCK if member.gzip else BLOCK_SIZE
            blocks = iter_blocks(member.stream().read, offset, block_size=size, max_line=max_line)
            for block in blocks:
                position = block.offset
                if block.oversized:
                    writer.problem(
                        "oversized", f"{path}: line of {block.oversized} bytes not copied", position
                    )
                    continue
                for line in block.data.split(b"\n"):
                    if len(line) > max_line:
                        writer.problem(
                            "oversized", f"{path}: line of {len(line)} bytes not copied", position
                        )
                    else:
                        writer.offer(line)
                    position += len(line) + 1
                if source.ordered:
                    last = line_ns(block.data[block.data.rfind(b"\n") + 1 :])
                    if last is not None and last >= window.end_ns + 2_000_000_000:
                        break
        except GZIP_ERRORS as exc:
            writer.problem("corrupt", f"{path}: corrupt or truncated gzip ({exc})", position)
        finally:
            member.close()
    return writer.finish()
