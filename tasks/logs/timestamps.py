"""RFC 3339 timestamps of log lines, parsed to integer nanoseconds since the epoch.

Why integers: Docker and Kubernetes prefix lines with RFC3339Nano timestamps, and a
float epoch cannot tell ``20:44:59.999999999`` from ``20:45:00`` — the window's
exclusive end would be wrong by one line. Why a cache: consecutive lines share
their second, so the expensive calendar arithmetic runs once per second of log,
not once per line.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime

NS = 1_000_000_000

# After "YYYY-MM-DDTHH:MM:SS": optional fraction, optional zone.
_TAIL = re.compile(rb"(?:[.,](\d{1,9})\d*)?(Z|z|[+-]\d\d:?\d\d)?")
_MISSING = -1
_SECONDS: dict[bytes, int] = {}
_OFFSETS: dict[bytes, int] = {}


def _seconds(head: bytes) -> int:
    """Epoch seconds of a naive ``YYYY-MM-DDTHH:MM:SS`` read as UTC, or -1."""
    if head[4:5] != b"-" or head[7:8] != b"-" or head[13:14] != b":" or head[16:17] != b":":
        return _MISSING
    if head[10:11] not in (b"T", b"t", b" "):
        return _MISSING
    try:
        parts = (
            int(head[0:4]),
            int(head[5:7]),
            int(head[8:10]),
            int(head[11:13]),
            int(head[14:16]),
            int(head[17:19]),
        )
        datetime(*parts)  # validates month/day ranges
    except ValueError:
        return _MISSING
    return calendar.timegm((*parts, 0, 0, 0))


def _offset(zone: bytes) -> int:
    seconds = _OFFSETS.get(zone)
    if seconds is None:
        digits = zone[1:].replace(b":", b"")
        seconds = int(digits[:2]) * 3600 + int(digits[2:4]) * 60
        if zone[:1] == b"-":
            seconds = -seconds
        _OFFSETS[zone] = seconds
    return seconds


def parse_ns(token: bytes) -> int | None:
    """Parses an RFC 3339 timestamp (``Z`` or ``±HH:MM``; up to 9 fraction digits).

    A timestamp without a zone is read as UTC. Returns None when ``token`` is not a
    timestamp, so callers can count the line instead of failing.
    """
    if len(token) < 19:
        return None
    head = token[:19]
    seconds = _SECONDS.get(head)
    if seconds is None:
        seconds = _seconds(head)
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        _SECONDS[head] = seconds
    if seconds == _MISSING:
        return None
    ns = seconds * NS
    if len(token) == 19:
        return ns
    match = _TAIL.fullmatch(token, 19)
    if match is None:
        return None
    fraction, zone = match.groups()
    if fraction:
        ns += int(fraction.ljust(9, b"0"))
    if zone and zone not in (b"Z", b"z"):
        ns -= _offset(zone) * NS
    return ns


def to_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch of a timezone-aware datetime (exact, no float)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1_000


def from_ns(ns: int) -> datetime:
    """A UTC datetime for ``ns`` (microsecond precision, as datetime allows)."""
    return datetime.fromtimestamp(ns // NS, tz=UTC).replace(microsecond=(ns % NS) // 1_000)


def format_ns(ns: int) -> str:
    """RFC3339Nano in UTC, the format Docker uses for ``--timestamps``."""
    base = datetime.fromtimestamp(ns // NS, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ns % NS:09d}Z"
