"""Collected logs become hashed artifacts: written once, SHA-256 computed while
writing (never by re-reading), secrets redacted on the way in.

Every collector keeps only the lines of its window (start inclusive, end
exclusive, compared on the line's own RFC 3339 prefix); an undated line (a
continuation) follows the decision for the line before it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from core.errors import ConfigError
from core.redact import Redactor

from .detections import scrub
from .model import CollectedArtifact, LogProblem, Window
from .reader import line_ns

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FLUSH = 1 << 20


def artifact_path(out_dir: Path, name: str) -> Path:
    """``<out_dir>/<name made filesystem-safe>.log`` (the directory is created)."""
    if not name:
        raise ConfigError("artifact name: must not be empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / (_UNSAFE.sub("_", name).strip("._") + ".log")


class ArtifactWriter:
    """Writes window-bounded, redacted lines to one artifact file and hashes them."""

    def __init__(
        self, out_dir: Path, name: str, window: Window, redactor: Redactor | None = None
    ) -> None:
        self.name = name
        self.path = artifact_path(Path(out_dir), name)
        self._handle = open(self.path, "wb")  # noqa: SIM115 - closed in finish()
        self._hash = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._start = window.start_ns
        self._end = window.end_ns
        self._redactor = redactor or Redactor()
        self._keep = False
        self.bytes = 0
        self.lines = 0
        self.redacted = 0
        self.seen = 0
        self.problems: list[LogProblem] = []

    def offer(self, line: bytes) -> None:
        """Keeps ``line`` (no newline) if it falls in the window."""
        self.seen += 1
        ns = line_ns(line)
        if ns is not None:
            self._keep = self._start <= ns < self._end
        if self._keep:
            self.write(line)

    def write(self, line: bytes) -> None:
        """Writes one line (no newline) unconditionally, redacted."""
        text = line.decode("utf-8", "replace")
        clean = scrub(text, self._redactor)
        if clean != text:
            self.redacted += 1
            line = clean.encode("utf-8")
        data = line + b"\n"
        self._buffer.append(data)
        self._buffered += len(data)
        self.lines += 1
        if self._buffered >= _FLUSH:
            self._flush()

    def offer_stream(self, chunks: object) -> None:
        """Feeds an iterable of byte chunks (any split) line by line."""
        carry = b""
        for chunk in chunks:  # type: ignore[attr-defined]
            if not chunk:
                continue
            data = carry + chunk if carry else chunk
            lines = data.split(b"\n")
            carry = lines.pop()
            for line in lines:
                self.offer(line.rstrip(b"\r"))
        if carry:
            self.offer(carry.rstrip(b"\r"))

    def problem(self, kind: str, detail: str, offset: int = 0) -> None:
        """Records something wrong with the log being collected (at most 100 are kept
        one by one; the review aggregates them per kind anyway)."""
        if len(self.problems) < 100:
            self.problems.append(LogProblem(str(self.path), kind, detail, offset))

    def _flush(self) -> None:
        data = b"".join(self._buffer)
        self._handle.write(data)
        self._hash.update(data)
        self.bytes += len(data)
        self._buffer.clear()
        self._buffered = 0

    def finish(self) -> CollectedArtifact:
        """Flushes, closes and describes the artifact."""
        self._flush()
        self._handle.close()
        return CollectedArtifact(
            source=self.name,
            path=self.path,
            sha256=self._hash.hexdigest(),
            bytes=self.bytes,
            lines=self.lines,
            redacted_lines=self.redacted,
            problems=tuple(self.problems),
        )

    def abort(self) -> None:
        """Closes the file after a failure (the partial artifact stays for evidence)."""
        if not self._handle.closed:
            self._flush()
            self._handle.close()
