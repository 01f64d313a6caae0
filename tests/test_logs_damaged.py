"""Damaged or unreadable logs become findings about the log: never a crash, never
silently skipped. Memory stays bounded whatever the input."""

from __future__ import annotations

import gzip
import os
import random
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest

from tasks.logs import ReviewConfig, Severity, Source, review
from tasks.logs.corpus import write_corpus
from tests.plugins.logs import DAY, WINDOW, WriteLog, at

NO_GAPS = ReviewConfig(gap_threshold=0)


def window_lines(count: int = 60, minute0: int = 0) -> list[str]:
    return [f"{at(20, minute0 + m)} INFO request remote=10.0.0.1:1" for m in range(count)]


@pytest.mark.parametrize("seek", [True, False])
def test_corrupt_gzip_is_a_finding_and_earlier_lines_count(tmp_path: Path, seek: bool) -> None:
    seconds = [f"{at(20, 0, s)} INFO request remote=10.0.0.1:1 n={s}" for s in range(3000)]
    data = gzip.compress(("\n".join(seconds) + "\n").encode())
    path = tmp_path / "proxy.log.1.gz"
    path.write_bytes(data[: len(data) // 2])  # truncated mid-stream
    current = tmp_path / "proxy.log"
    current.write_text("\n".join(window_lines(10, 50)) + "\n")
    result = review([Source.from_file("p", current)], WINDOW, NO_GAPS, seek=seek)
    [finding] = [f for f in result.findings if f.rule_id == "LR011"]
    assert finding.key == f"corrupt-gzip:{path}"
    assert finding.severity is Severity.HIGH
    assert "corrupt or truncated gzip" in finding.sample
    assert result.per_source["p"].lines_in_window > 10  # what could be read was


def test_garbled_gzip_payload_is_a_finding(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(("\n".join(window_lines()) + "\n").encode()))
    for i in range(30, len(data) - 12, 7):
        data[i] ^= 0x5A
    path = tmp_path / "x.log.gz"
    path.write_bytes(bytes(data))
    result = review([Source(name="x", paths=[path])], WINDOW, NO_GAPS)
    assert [f.key for f in result.findings if f.rule_id == "LR011"] == [f"corrupt-gzip:{path}"]


@pytest.mark.parametrize("seek", [True, False])
def test_binary_garbage_is_counted_and_reported(write_log: WriteLog, seek: bool) -> None:
    garbage = random.Random(1).randbytes(4096).replace(b"\n", b"\x00")
    lines: list[str | bytes] = [
        *window_lines(30),
        garbage,
        b"\x00\x01\x02\xff",
        *window_lines(30, 30),
    ]
    path = write_log("proxy.log", lines)
    result = review([Source.from_file("p", path)], WINDOW, NO_GAPS, seek=seek)
    [finding] = [f for f in result.findings if f.rule_id == "LR011"]
    assert finding.key == f"binary:{path}" and finding.count == 2
    counts = result.per_source["p"]
    assert counts.binary_lines == 2 and counts.unknown == 2 and counts.lines_in_window == 62
    assert finding.ref.offset == path.read_bytes().index(garbage)


@pytest.mark.parametrize("seek", [True, False])
def test_ten_megabyte_line_is_reported_not_loaded(write_log: WriteLog, seek: bool) -> None:
    huge = f"{at(20, 30, 30)} INFO request payload=" + "A" * (10 << 20)
    path = write_log("proxy.log", [*window_lines(31), huge, *window_lines(29, 31)])
    tracemalloc.start()
    try:
        result = review([Source.from_file("p", path)], WINDOW, NO_GAPS, seek=seek)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [finding] = [f for f in result.findings if f.rule_id == "LR011"]
    assert finding.key == f"oversized:{path}"
    assert f"line of {len(huge)} bytes" in finding.sample
    assert result.per_source["p"].oversized_lines == 1
    assert result.per_source["p"].lines_in_window == 60
    assert peak < 8 << 20  # the 10 MB line is never held whole


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("directory", "is a directory"),
        ("dangling", "dangling symlink"),
        ("fifo", "is a FIFO, not a regular file"),
        ("missing", "file not found"),
    ],
)
def test_unreadable_files_are_findings(tmp_path: Path, kind: str, reason: str) -> None:
    path = tmp_path / "proxy.log"
    if kind == "directory":
        path.mkdir()
    elif kind == "dangling":
        path.symlink_to(tmp_path / "gone.log")
    elif kind == "fifo":
        os.mkfifo(path)  # opening it blocking would hang the review forever
    older = tmp_path / "proxy.log.1"
    older.write_text("\n".join(window_lines()) + "\n")
    result = review([Source.from_file("p", path)], WINDOW, NO_GAPS)
    [finding] = [f for f in result.findings if f.rule_id == "LR010"]
    assert finding.key == str(path) and reason in finding.sample
    assert finding.severity is Severity.HIGH
    assert result.per_source["p"].lines_in_window == 60  # the readable member still counts
    assert result.needs_human


def test_memory_is_bounded_by_blocks_not_input(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    info = write_corpus(path, 16 << 20, DAY, seed=11)
    config = ReviewConfig(allowed_ip_ranges=["10.0.0.0/8", "192.168.0.0/16"])
    tracemalloc.start()
    try:
        everything = WINDOW.__class__(DAY, DAY + timedelta(days=2))
        result = review([Source.from_file("b", path)], everything, config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.per_source["b"].bytes_read == info.bytes
    assert result.per_source["b"].lines_read == info.lines
    # A reader that loaded the file (or its lines) would need more than the file size.
    assert peak < 10 << 20 < info.bytes, peak
