"""Window boundaries (inclusive start, exclusive end), time zones, rotated and gzip
sets, the seek path against a full scan, and input validation."""

from __future__ import annotations

import gzip
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.errors import ConfigError
from tasks.logs import ReviewConfig, Source, Window, review, rotated_set
from tasks.logs.corpus import ALLOWED_RANGES, EXPECTED_LOCATIONS, TOOL_ALLOWLIST, write_corpus
from tasks.logs.reader import bisect_lines, line_ns, seek_offset
from tasks.logs.timestamps import parse_ns
from tests.plugins.logs import DAY, WINDOW, WriteLog, at

NO_GAPS = ReviewConfig(gap_threshold=0)
BOUNDARY_LINES = [
    "2026-11-21T19:59:59.999999999Z INFO request before",
    "2026-11-21T20:00:00Z INFO request at-start",
    "2026-11-21T20:59:59.999999999Z INFO request last",
    "2026-11-21T21:00:00Z INFO request at-end",
    "2026-11-21T21:00:00.000000001Z INFO request after",
]


def test_timestamps_parse_to_exact_nanoseconds() -> None:
    base = parse_ns(b"2026-11-21T20:00:00Z")
    assert base is not None
    assert parse_ns(b"2026-11-21T20:00:00.5Z") == base + 500_000_000
    assert parse_ns(b"2026-11-21T19:59:59.999999999Z") == base - 1
    assert parse_ns(b"2026-11-21T22:00:00+02:00") == base
    assert parse_ns(b"2026-11-21T15:30:00.000000001-04:30") == base + 1
    assert parse_ns(b"2026-13-21T20:00:00Z") is None
    assert parse_ns(b"not a time at all, no") is None


@pytest.mark.parametrize("seek", [True, False])
def test_start_inclusive_end_exclusive(write_log: WriteLog, seek: bool) -> None:
    path = write_log("proxy.log", BOUNDARY_LINES)
    result = review([Source.from_file("p", path)], WINDOW, NO_GAPS, seek=seek)
    counts = result.per_source["p"]
    assert counts.lines_in_window == 2
    assert counts.lines_baseline == 1


@pytest.mark.parametrize("seek", [True, False])
def test_offsets_and_window_in_another_zone(write_log: WriteLog, seek: bool) -> None:
    plus2 = timezone(timedelta(hours=2))
    lines = [
        "2026-11-21T21:59:59+02:00 INFO request before",
        "2026-11-21T22:00:00+02:00 WARN IP validation failed: 203.0.113.1 is not a private address",
        "2026-11-21T20:30:00Z INFO request middle",
        "2026-11-21T22:59:59.999+02:00 INFO request last",
        "2026-11-21T23:00:00+02:00 WARN IP validation failed: 203.0.113.2 is not a private address",
    ]
    path = write_log("proxy.log", lines)
    window = Window(
        datetime(2026, 11, 21, 22, tzinfo=plus2), datetime(2026, 11, 21, 23, tzinfo=plus2)
    )
    result = review([Source.from_file("p", path)], window, NO_GAPS, seek=seek)
    assert result.per_source["p"].lines_in_window == 3
    [finding] = [f for f in result.findings if f.rule_id == "LR001"]
    assert finding.key == "203.0.113.1"
    assert finding.first_seen == datetime(2026, 11, 21, 20, tzinfo=UTC)


def rotated(write_log: WriteLog) -> tuple[Path, Path, Path]:
    """proxy.log.2.gz 18:00-19:50, proxy.log.1 19:50-20:40, proxy.log 20:40-22:00,
    one line a minute; IP validation failures at 19:59, 20:00, 20:39, 20:41, 21:00."""

    def lines(start: int, end: int) -> list[str]:
        out = []
        for minute in range(start, end):
            moment = at(minute // 60, minute % 60)
            if minute in (19 * 60 + 59, 20 * 60, 20 * 60 + 39, 20 * 60 + 41, 21 * 60):
                out.append(
                    f"{moment} WARN IP validation failed: 203.0.113.{minute % 60} is "
                    "not a private address"
                )
            else:
                out.append(f"{moment} INFO request remote=10.0.0.1:1")
        return out

    older = write_log("proxy.log.2.gz", lines(18 * 60, 19 * 60 + 50), gz=True)
    old = write_log("proxy.log.1", lines(19 * 60 + 50, 20 * 60 + 40))
    current = write_log("proxy.log", lines(20 * 60 + 40, 22 * 60))
    return older, old, current


@pytest.mark.parametrize("seek", [True, False])
def test_rotated_and_gzip_set(write_log: WriteLog, seek: bool) -> None:
    older, old, current = rotated(write_log)
    assert rotated_set(current) == [older, old, current]
    result = review([Source.from_file("p", current)], WINDOW, NO_GAPS, seek=seek)
    counts = result.per_source["p"]
    assert counts.lines_in_window == 60
    assert counts.lines_baseline == 60
    found = {f.key: f.ref.artifact for f in result.findings if f.rule_id == "LR001"}
    assert found == {
        "203.0.113.0": str(old),
        "203.0.113.39": str(old),
        "203.0.113.41": str(current),
    }


def test_gzip_member_boundary_inside_compressed_file(write_log: WriteLog) -> None:
    lines = [f"{at(19, m)} INFO request remote=10.0.0.1:1" for m in range(60)]
    lines += [f"{at(20, m)} INFO request remote=10.0.0.1:1" for m in range(60)]
    lines += [f"{at(21, 0)} WARN IP validation failed: 203.0.113.5 is not a private address"]
    path = write_log("proxy.log.gz", lines, gz=True)
    result = review([Source(name="p", paths=[path])], WINDOW, NO_GAPS)
    assert result.per_source["p"].lines_in_window == 60
    assert result.findings == []


def test_seek_path_equals_full_scan_and_reads_less(tmp_path: Path) -> None:
    path = tmp_path / "stack.log"
    info = write_corpus(path, 24 << 20, DAY)
    config = ReviewConfig(
        allowed_ip_ranges=ALLOWED_RANGES,
        tool_allowlist=TOOL_ALLOWLIST,
        expected_tunnel_locations=EXPECTED_LOCATIONS,
    )
    sought = review([Source.from_file("s", path)], WINDOW, config)
    scanned = review([Source.from_file("s", path)], WINDOW, config, seek=False)
    assert sought.findings == scanned.findings and len(sought.findings) > 10
    assert sought.timeline == scanned.timeline
    a, b = sought.per_source["s"], scanned.per_source["s"]
    assert (a.lines_in_window, a.lines_baseline, a.formats, a.no_timestamp) == (
        b.lines_in_window,
        b.lines_baseline,
        b.formats,
        b.no_timestamp,
    )
    assert a.seeked and not b.seeked
    assert a.bytes_read < info.bytes / 5 and b.bytes_read == info.bytes


def test_unordered_source_falls_back_to_full_scan(write_log: WriteLog) -> None:
    seconds = list(range(17 * 3600, 22 * 3600, 2))
    # ten minutes of the window written in reverse order (a merge gone wrong)
    lo, hi = seconds.index(20 * 3600 + 600), seconds.index(20 * 3600 + 1200)
    seconds[lo:hi] = reversed(seconds[lo:hi])
    lines = [f"{at(0, 0, s)} INFO request remote=10.0.0.1:1 n={s}" for s in seconds]
    lines[lo + 5] = (
        f"{at(0, 0, seconds[lo + 5])} WARN IP validation failed: 203.0.113.77 is not "
        "a private address"
    )
    path = write_log("proxy.log", lines)
    sought = review([Source.from_file("p", path)], WINDOW, NO_GAPS)
    scanned = review([Source.from_file("p", path)], WINDOW, NO_GAPS, seek=False)
    assert [f.key for f in sought.findings] == ["203.0.113.77"]
    assert sought.findings == scanned.findings
    assert sought.per_source["p"].lines_in_window == 1800
    assert sought.per_source["p"] == scanned.per_source["p"]  # rescanned from the start


def test_seek_offset_and_bisect_find_the_first_line_at_or_after(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = []
    for second in range(0, 7200, 3):
        lines.append(f"{at(19, 0, second)} INFO request n={second}".encode())
        if rng.random() < 0.2:
            lines.append(b"   continuation line without a time")
    data = b"\n".join(lines)
    path = tmp_path / "x.log"
    path.write_bytes(data + b"\n")
    for target in (at(19, 0), at(19, 30, 1), at(20, 0), at(20, 59, 57), at(21, 0)):
        target_ns = parse_ns(target.encode())
        assert target_ns is not None
        expected = next(
            (
                sum(len(x) + 1 for x in lines[:i])
                for i, x in enumerate(lines)
                if (ns := line_ns(x)) is not None and ns >= target_ns
            ),
            len(data) + 1,
        )
        assert bisect_lines(data, target_ns) == expected
        with open(path, "rb") as handle:
            offset = seek_offset(handle, len(data) + 1, target_ns, probe=256)
        assert offset <= min(expected, len(data))
        before = [line_ns(x) for x in data[:offset].split(b"\n")] if offset else []
        assert all(ns is None or ns < target_ns for ns in before)


def test_window_rejects_naive_and_reversed() -> None:
    with pytest.raises(ConfigError, match="window.start: must be timezone-aware"):
        Window(datetime(2026, 11, 21, 20), datetime(2026, 11, 21, 21, tzinfo=UTC))
    with pytest.raises(ConfigError, match="window.end: must be after window.start"):
        Window(DAY, DAY)


def test_config_errors_name_the_field() -> None:
    bad_cidr = r"log_review\.allowed_ip_ranges: .*10\.0\.0\.0/33. is not an IP network"
    with pytest.raises(ConfigError, match=bad_cidr):
        ReviewConfig.parse({"allowed_ip_ranges": ["10.0.0.0/33"]})
    with pytest.raises(ConfigError, match=r"log_review\.gap_thresold"):
        ReviewConfig.parse({"gap_thresold": 5})
    config = ReviewConfig.parse({"gap_threshold": "PT10M", "baseline_period": 600})
    assert config.gap_threshold == timedelta(minutes=10)
    assert config.baseline_period == timedelta(minutes=10)


def test_duplicate_source_names_are_refused(write_log: WriteLog) -> None:
    path = write_log("a.log", BOUNDARY_LINES)
    with pytest.raises(ConfigError, match="sources: names must be unique"):
        review([Source.from_file("x", path), Source.from_file("x", path)], WINDOW)


def test_gzip_written_with_multiple_members_is_read_whole(tmp_path: Path) -> None:
    first = "\n".join(f"{at(20, m)} INFO request remote=10.0.0.1:1" for m in range(30)) + "\n"
    second = "\n".join(f"{at(20, m)} INFO request remote=10.0.0.1:1" for m in range(30, 60)) + "\n"
    path = tmp_path / "multi.log.gz"
    path.write_bytes(gzip.compress(first.encode()) + gzip.compress(second.encode()))
    result = review([Source(name="m", paths=[path])], WINDOW, NO_GAPS)
    assert result.per_source["m"].lines_in_window == 60
