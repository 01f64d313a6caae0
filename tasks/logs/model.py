"""Typed inputs and results of the log review: window, sources, findings, counts."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from core.errors import ConfigError

from .timestamps import from_ns, to_ns


class Severity(enum.IntEnum):
    """How urgently a human must look; ``high`` and above need the reviewer."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Window:
    """The suspected window of compromise: ``start`` inclusive, ``end`` exclusive.

    Both ends must be timezone-aware so that logs written in any offset compare
    correctly; naive datetimes are refused rather than guessed.
    """

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, datetime):
                raise ConfigError(f"window.{name}: expected a datetime, got {type(value).__name__}")
            if value.tzinfo is None or value.utcoffset() is None:
                raise ConfigError(f"window.{name}: must be timezone-aware (e.g. UTC), got {value}")
        if self.end <= self.start:
            raise ConfigError(
                f"window.end: must be after window.start ({self.end} <= {self.start})"
            )

    @property
    def start_ns(self) -> int:
        return to_ns(self.start)

    @property
    def end_ns(self) -> int:
        return to_ns(self.end)

    def widened(self, before: timedelta) -> Window:
        """The window extended backwards, e.g. by the baseline period, for collectors."""
        return Window(self.start - before, self.end)

    def contains_ns(self, ns: int) -> bool:
        return self.start_ns <= ns < self.end_ns


@dataclass(frozen=True)
class LineRef:
    """Where a line is: the artifact (file) and the byte offset of the line's start in
    the (decompressed) file. Offsets, not line numbers, because the seek path never
    reads what comes before the window."""

    artifact: str
    offset: int

    def __str__(self) -> str:
        return f"{self.artifact}@{self.offset}"


@dataclass(frozen=True)
class LogProblem:
    """Something wrong with a log itself (unreadable, corrupt, garbage, truncated),
    found while collecting; the review turns it into a finding."""

    artifact: str
    kind: str
    detail: str
    offset: int = 0


SourceKind = Literal["auto", "cloudflared", "proxy", "mcp"]

_ROTATED = re.compile(r"^(?P<base>.+?)\.(?P<n>\d+)(?P<gz>\.gz)?$")


def rotated_set(path: str | Path) -> list[Path]:
    """The rotated set of ``path`` ordered oldest → newest.

    ``proxy.log.2.gz``, ``proxy.log.1``, ``proxy.log`` (logrotate numbering: a higher
    number is older); ``proxy.log.gz`` counts as the newest compressed member.
    ``path`` itself is always included, even when it does not exist, so that a
    missing log becomes a finding rather than an empty set.
    """
    path = Path(path)
    members: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            match = _ROTATED.match(candidate.name)
            if match and match["base"] == path.name:
                members.append((int(match["n"]), candidate))
            elif candidate.name == path.name + ".gz":
                members.append((0, candidate))
    ordered = [p for _, p in sorted(members, key=lambda item: -item[0])]
    return [*ordered, path]


@dataclass
class Source:
    """One log to review: a name (shown in findings), its files oldest → newest, the
    format hint and, for MCP server logs, the server name the tool allowlist uses.

    ``ordered`` says lines are written in time order, which lets the review seek to
    the window; a source found out of order is rescanned in full automatically.
    ``problems`` carries what a collector found wrong with the log.
    """

    name: str
    paths: list[Path]
    kind: SourceKind = "auto"
    mcp_server: str | None = None
    ordered: bool = True
    problems: list[LogProblem] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("source.name: must not be empty")
        if not self.paths:
            raise ConfigError(f"source {self.name!r}: paths must list at least one file")
        self.paths = [Path(p) for p in self.paths]
        if self.kind not in ("auto", "cloudflared", "proxy", "mcp"):
            raise ConfigError(
                f"source {self.name!r}: kind must be auto|cloudflared|proxy|mcp, got {self.kind!r}"
            )

    @classmethod
    def from_file(cls, name: str, path: str | Path, **kwargs: object) -> Source:
        """A source for ``path`` and its rotated predecessors (see :func:`rotated_set`)."""
        return cls(name=name, paths=rotated_set(path), **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CollectedArtifact:
    """What a collector wrote: the window's original bytes (``path``, ``sha256``), the
    redacted view beside it, the secret-free evidence copy (the original with each
    line that holds a secret withheld: ``withheld`` lists (line number, fingerprint of
    the original line), the first 10 000), size, line count and any problem met
    while collecting."""

    source: str
    path: Path
    sha256: str
    bytes: int
    lines: int
    redacted_lines: int = 0
    problems: tuple[LogProblem, ...] = ()
    redacted_path: Path | None = None
    redacted_sha256: str = ""
    evidence_path: Path | None = None
    evidence_sha256: str = ""
    withheld: tuple[tuple[int, str], ...] = ()

    def as_source(self, kind: SourceKind = "auto", mcp_server: str | None = None) -> Source:
        """The artifact as a review source (collected lines are in time order)."""
        return Source(
            name=self.source,
            paths=[self.path],
            kind=kind,
            mcp_server=mcp_server,
            problems=list(self.problems),
        )


@dataclass(frozen=True)
class Finding:
    """One detection result, aggregated over every line that matched the same key."""

    rule_id: str
    rule: str
    severity: Severity
    source: str
    key: str
    ref: LineRef
    first_ns: int
    last_ns: int
    count: int
    sample: str
    rationale: str
    title: str = ""

    @property
    def first_seen(self) -> datetime:
        return from_ns(self.first_ns)

    @property
    def last_seen(self) -> datetime:
        return from_ns(self.last_ns)


@dataclass(frozen=True)
class TimelineEvent:
    """A notable line, merged with other sources' lines in time order."""

    ts_ns: int
    source: str
    ref: LineRef
    severity: Severity
    what: str
    text: str

    @property
    def at(self) -> datetime:
        return from_ns(self.ts_ns)


@dataclass
class SourceCounts:
    """What the review did with one source. Unknown lines are counted, never dropped."""

    members: list[str] = field(default_factory=list)
    members_skipped: int = 0
    seeked: bool = False
    bytes_read: int = 0
    lines_read: int = 0
    lines_baseline: int = 0
    lines_in_window: int = 0
    no_timestamp: int = 0
    formats: dict[str, int] = field(default_factory=dict)
    binary_lines: int = 0
    oversized_lines: int = 0
    assumed_zone: int = 0
    zone: str = "UTC"
    # Blocks judged from a second process's facts (:mod:`.prescan`); not in the report:
    # the result is the same either way.
    prescanned_blocks: int = 0
    # Why that second process stopped early, "" when it did not (or never ran): the
    # scan then judged the remaining blocks itself (same result); the report says it.
    prescan_failed: str = ""

    @property
    def unknown(self) -> int:
        return self.formats.get("unknown", 0)

    @property
    def parsed(self) -> int:
        """Lines read in the window whose format was recognised (continuation lines
        of a recognised record included)."""
        return self.lines_in_window - self.unknown


@dataclass
class ReviewResult:
    """Findings (most severe first), a bounded merged timeline and per-source counts."""

    window: Window
    findings: list[Finding]
    timeline: list[TimelineEvent]
    timeline_total: int
    per_source: dict[str, SourceCounts]

    @property
    def needs_human(self) -> bool:
        """True when any finding is high or critical: the gate must not auto-pass."""
        return any(f.severity >= Severity.HIGH for f in self.findings)

    def summary(self) -> str:
        """One line for the ``review_logs`` gate and the Slack thread."""
        by_severity: dict[Severity, int] = {}
        for finding in self.findings:
            by_severity[finding.severity] = by_severity.get(finding.severity, 0) + 1
        parts = [
            f"{n} {severity.label}" for severity, n in sorted(by_severity.items(), reverse=True)
        ] or ["no findings"]
        lines = sum(c.lines_in_window for c in self.per_source.values())
        return (
            f"log review {self.window.start.isoformat()} → {self.window.end.isoformat()}: "
            f"{len(self.per_source)} sources, {lines} lines in window, {', '.join(parts)}"
            + ("; needs a human" if self.needs_human else "")
        )
