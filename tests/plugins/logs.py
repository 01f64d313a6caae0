"""Helpers for the log-review tests: timestamps and log files written on demand."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.logs import Window

DAY = datetime(2026, 11, 21, tzinfo=UTC)
WINDOW = Window(DAY + timedelta(hours=20), DAY + timedelta(hours=21))


def at(hour: int, minute: int = 0, second: float = 0) -> str:
    """RFC 3339 (UTC, ``Z``) for a moment of the test day."""
    moment = DAY + timedelta(hours=hour, minutes=minute, seconds=second)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


WriteLog = Callable[..., Path]


@pytest.fixture
def write_log(tmp_path: Path) -> WriteLog:
    """``write_log(name, lines, gz=False)`` writes lines (str or bytes) to tmp_path."""

    def write(name: str, lines: Iterable[str | bytes], *, gz: bool = False) -> Path:
        path = tmp_path / name
        data = b"".join((x.encode() if isinstance(x, str) else x) + b"\n" for x in lines)
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    return write
