"""Collected logs become hashed evidence: the window's ORIGINAL bytes in one file,
a redacted view in another, each SHA-256 computed while writing (never by
re-reading).

Why two files: the original is the evidence (byte for byte, invalid UTF-8 and
``\\r`` included, so its hash can be compared with the source's); everything a
person or a report sees is taken from the redacted view or redacted on the way
out. A third file, the secret-free evidence copy, is what a trail may keep (secret
values never enter it): the original bytes line for line, except that a line the
redactor changed is withheld — replaced by its fingerprint. With no secret in the
window it IS the original (same bytes, same hash). Every collector keeps only the lines of its window (start inclusive, end
exclusive) as :class:`~.formats.LineParser` dates them; an undated line follows the
decision for the line before it, and undated lines at the very start follow the
first dated line (all of them are kept when no line is dated at all).
"""

from __future__ import annotations

import hashlib
import re
from datetime import tzinfo
from pathlib import Path
from typing import BinaryIO

from core.errors import ConfigError
from core.redact import Redactor, fingerprint

from .detections import scrub
from .formats import LineParser
from .model import CollectedArtifact, LogProblem, Window
from .timestamps import from_ns

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FLUSH = 1 << 20
_LEADING_LIMIT = 1 << 20
_KEY_BEGIN = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_KEY_END = re.compile(rb"-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_WITHHELD_LIMIT = 10_000  # line numbers listed one by one (the count is always exact)


def withheld_line(line: bytes) -> bytes:
    """What stands in the evidence copy for a line holding a secret."""
    return b"[line withheld: it holds a secret; " + fingerprint(line).encode() + b"]"


def artifact_path(out_dir: Path, name: str, suffix: str = ".log") -> Path:
    """``<out_dir>/<name made filesystem-safe><suffix>`` (the directory is created)."""
    if not name:
        raise ConfigError("artifact name: must not be empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / ((_UNSAFE.sub("_", name).strip("._") or "log") + suffix)


class _HashedFile:
    """A file written through a buffer, hashed as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._hash = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= _FLUSH:
            self.flush()

    def flush(self) -> None:
        data = b"".join(self._buffer)
        self._handle.write(data)
        self._hash.update(data)
        self.bytes += len(data)
        self._buffer.clear()
        self._buffered = 0

    def close(self) -> str:
        if not self._handle.closed:
            self.flush()
            self._handle.close()
        return self._hash.hexdigest()


class ArtifactWriter:
    """Writes the window's lines of one log: originals and a redacted view."""

    def __init__(
        self,
        out_dir: Path,
        name: str,
        window: Window,
        redactor: Redactor | None = None,
        zone: tzinfo | None = None,
    ) -> None:
        self.name = name
        self.path = artifact_path(Path(out_dir), name)
        self.redacted_path = artifact_path(Path(out_dir), name, ".redacted.log")
        self.evidence_path = artifact_path(Path(out_dir), name, ".evidence.log")
        self._original = _HashedFile(self.path)
        self._redacted = _HashedFile(self.redacted_path)
        self._evidence = _HashedFile(self.evidence_path)
        self.withheld: list[tuple[int, str]] = []
        self._in_key = False
        self._start = window.start_ns
        self._end = window.end_ns
        start = from_ns(window.start_ns)
        self._parser = (
            LineParser(zone, (start.year, start.month, start.day)) if zone else LineParser()
        )
        self._redactor = redactor or Redactor()
        self._keep = False
        self._dated = False
        self._leading: list[bytes] = []
        self._leading_size = 0
        self.lines = 0
        self.redacted = 0
        self.seen = 0
        self.problems: list[LogProblem] = []

    @property
    def bytes(self) -> int:
        return self._original.bytes

    def offer(self, line: bytes) -> None:
        """Keeps ``line`` (no ``\\n``; a trailing ``\\r`` is part of the original) if
        it falls in the window."""
        self.seen += 1
        ns = self._parser.parse(line.rstrip(b"\r")).ns if line else None
        if ns is None and not self._dated:
            self._leading.append(line)
            self._leading_size += len(line)
            if self._leading_size > _LEADING_LIMIT:  # nothing dated yet: keep, bounded
                self._release(True)
            return
        if ns is not None:
            self._keep = self._start <= ns < self._end
            if not self._dated:
                self._dated = True
                self._release(self._keep)
        if self._keep:
            self.write(line)

    def _release(self, keep: bool) -> None:
        leading, self._leading, self._leading_size = self._leading, [], 0
        if keep:
            for line in leading:
                self.write(line)

    def write(self, line: bytes) -> None:
        """Writes one line (no newline) unconditionally: the original bytes, and the
        redacted text to the view."""
        self._original.write(line + b"\n")
        text = line.decode("utf-8", "replace")
        clean = scrub(text, self._redactor)
        self.lines += 1
        # A private key block spans lines: the body lines hold no shape of their own,
        # so every line from BEGIN to END is a secret line (the view shows none of it).
        if self._in_key or _KEY_BEGIN.search(line):
            self._in_key = _KEY_END.search(line) is None
            clean = "[REDACTED]" if clean == text else clean
        if clean != text:
            self.redacted += 1
            self._evidence.write(withheld_line(line) + b"\n")
            if len(self.withheld) < _WITHHELD_LIMIT:
                self.withheld.append((self.lines, fingerprint(line)))
        else:
            self._evidence.write(line + b"\n")
        self._redacted.write(clean.encode("utf-8") + b"\n")

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
                self.offer(line)
        if carry:
            self.offer(carry)

    def problem(self, kind: str, detail: str, offset: int = 0) -> None:
        """Records something wrong with the log being collected, under the log's name
        (never a scratch path); at most 100 are kept one by one."""
        if len(self.problems) < 100:
            self.problems.append(LogProblem(self.name, kind, detail, offset))

    def finish(self) -> CollectedArtifact:
        """Flushes, closes and describes the artifact (undated lines of a log that
        has no dated line at all are kept)."""
        if not self._dated:
            self._release(True)
        digest = self._original.close()
        redacted_digest = self._redacted.close()
        evidence_digest = self._evidence.close()
        return CollectedArtifact(
            source=self.name,
            path=self.path,
            sha256=digest,
            bytes=self._original.bytes,
            lines=self.lines,
            redacted_lines=self.redacted,
            problems=tuple(self.problems),
            redacted_path=self.redacted_path,
            redacted_sha256=redacted_digest,
            evidence_path=self.evidence_path,
            evidence_sha256=evidence_digest,
            withheld=tuple(self.withheld),
        )

    def abort(self) -> None:
        """Closes the files after a failure (the partial artifact stays for evidence)."""
        self._original.close()
        self._redacted.close()
        self._evidence.close()
