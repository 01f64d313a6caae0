"""Stack traces behind a collector's timestamp are one record.

``docker logs --timestamps`` puts an RFC 3339 stamp with nanoseconds (padded to nine
digits) and a space before each line, ``podman logs -t`` and ``kubectl logs
--timestamps`` an RFC3339Nano one (trailing zeros trimmed): every frame of a Go
panic or Python traceback is then dated, and must still join the record it belongs
to. Material: a real timestamped panic pasted in an issue (tests/fixtures/logs,
SOURCES.md), and a real cloudflared panic excerpt written by a container and read
back through the real engine (podman's Docker API) with ``timestamps=True``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import pytest

from sandbox.engine import BUSYBOX_IMAGE
from tasks.logs import ReviewConfig, Source, review
from tasks.logs.batch import OPEN_END, OPEN_START
from tasks.logs.collect_docker import collect_container
from tasks.logs.model import Finding, SourceCounts, Window
from tasks.logs.render import to_document

FIXTURES = Path(__file__).parent / "fixtures" / "logs"
EVERYTHING = Window(OPEN_START, OPEN_END)
OPEN = ReviewConfig(gap_threshold=0, baseline_period=0)


def panics(
    path: Path, *, seek: bool = True, window: Window = EVERYTHING
) -> tuple[list[Finding], SourceCounts]:
    result = review([Source(name="s", paths=[path])], window, OPEN, seek=seek)
    return [f for f in result.findings if f.rule_id == "LR023"], result.per_source["s"]


def test_timestamped_go_panic_is_one_record() -> None:
    [panic], counts = panics(FIXTURES / "go_panic_timestamped.log")
    # Both goroutine dumps and their frames (each line dated) form one record.
    assert panic.count == 1 and panic.key == "goroutine N [running]:"
    assert "testing.(*M).startAlarm.func1()" in panic.sample
    assert counts.formats["go_panic"] == 9 and counts.unknown == 1
    # The indented lines before it joined the dated free text they follow.
    assert counts.formats["timestamped"] == 3 and counts.lines_in_window == 13


def _docker_stamp(line: bytes) -> bytes:
    """A podman/kubectl RFC3339Nano prefix rewritten as ``docker logs --timestamps``
    writes it: UTC, the fraction padded to nine digits."""
    match = re.match(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ", line)
    assert match is not None, line
    moment = datetime.fromisoformat(match.group(1).decode() + match.group(3).decode())
    fraction = (match.group(2) or b"").ljust(9, b"0")
    utc = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()
    return utc + b"." + fraction + b"Z " + line[match.end() :]


def test_panic_captured_through_the_engine_is_one_record(
    engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    excerpt = (FIXTURES / "cloudflared_2022_panic.log").read_text()
    started = datetime.now(UTC) - timedelta(seconds=2)
    container = engine_client.containers.run(
        BUSYBOX_IMAGE,
        ["sh", "-c", 'printf "%s\\n" "$EXCERPT"'],
        environment={"EXCERPT": excerpt.rstrip("\n")},
        network_mode="none",
        detach=True,
    )
    try:
        assert container.wait(timeout=60)["StatusCode"] == 0
        window = Window(started, datetime.now(UTC) + timedelta(seconds=2))
        artifact = collect_container(engine_client, container.id, window, tmp_path, name="cf")
    finally:
        container.remove(force=True)
    captured = artifact.path.read_bytes().splitlines()
    assert len(captured) == len(excerpt.splitlines())
    assert all(re.match(rb"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d) ", x) for x in captured)
    docker_style = tmp_path / "docker.log"
    docker_style.write_bytes(b"".join(_docker_stamp(x) + b"\n" for x in captured))
    for path in (artifact.path, docker_style):
        for seek in (True, False):
            [panic], counts = panics(path, seek=seek, window=window)
            assert panic.count == 1, (path, seek)
            assert "runtime/debug.Stack()" in panic.sample and "stack.go:24" in panic.sample
            assert counts.formats["go_panic"] == 13, counts.formats


@pytest.mark.parametrize("seek", [True, False])
def test_dated_lines_a_second_apart_stay_separate_records(tmp_path: Path, seek: bool) -> None:
    path = tmp_path / "c.log"
    path.write_text(
        "2026-11-21T20:00:00.000000000Z panic: boom\n"
        "2026-11-21T20:00:00.000100000Z main.main()\n"
        "2026-11-21T20:00:01.000100000Z     later text\n"
        "2026-11-21T20:00:01.000200000Z free text\n"
    )
    [panic], counts = panics(path, seek=seek)
    assert "main.main()" in panic.sample and "later text" not in panic.sample
    assert counts.formats == {"go_panic": 2, "timestamped": 2}


def _stamp(moment: datetime, trimmed: bool) -> bytes:
    """``docker logs --timestamps`` (nine fraction digits) or, trimmed, RFC3339Nano as
    ``podman logs -t`` / ``kubectl logs --timestamps`` write it."""
    fraction = f"{moment.microsecond:06d}000"
    if trimmed:
        fraction = fraction.rstrip("0")
    return (moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "")).encode()


@pytest.mark.parametrize("trimmed", [False, True], ids=["docker", "rfc3339nano"])
@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.log")))
def test_prefixed_fixtures_agree_on_both_paths(tmp_path: Path, name: str, trimmed: bool) -> None:
    """Every real excerpt as ``docker logs --timestamps`` (fixed-width UTC stamps) or
    podman/kubectl (fraction trimmed, so several widths in one block) would print it,
    100 µs apart: the whole-block path and the per-line path give the same review,
    findings included."""
    base = datetime(2026, 11, 21, 20, tzinfo=UTC)
    lines = [x for x in (FIXTURES / name).read_bytes().split(b"\n") if x]
    path = tmp_path / "prefixed.log"
    path.write_bytes(
        b"".join(
            _stamp(base + timedelta(microseconds=100 * i), trimmed) + b"Z " + line + b"\n"
            for i, line in enumerate(lines)
        )
    )
    window = Window(base, base + timedelta(hours=1))
    config = ReviewConfig(
        allowed_ip_ranges=["10.0.0.0/8"],
        tool_allowlist={"github": ["get_issue"]},
        expected_tunnel_locations=["ams"],
    )
    both = [
        to_document(review([Source(name="d", paths=[path])], window, config, seek=seek))
        for seek in (True, False)
    ]
    assert both[0] == both[1]
    assert both[0]["sources"][0]["lines"] == len(lines)
