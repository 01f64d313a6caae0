"""The two-process review (tasks/logs/prescan.py) gives exactly the serial result.

Material: every real excerpt in tests/fixtures/logs (sources in its SOURCES.md),
each line behind a collector's timestamp as ``docker logs --timestamps`` (nine
fraction digits) or ``podman logs -t`` (fraction trimmed) writes it, the whole set
repeated three times so that a window, its baseline and the lines after it cut
through real material. Tiny read blocks put hundreds of block boundaries through
it — inside the timestamped Go panic (a multi-line record) among them, which the
tests check — and the ``--json`` document, the findings, the timeline and every
counter must not change when a second process judges the blocks ahead.

The reviews run in a fresh single-threaded interpreter: the prescan process is
forked only from one (see :func:`tasks.logs.prescan.can_fork`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.logs.reader import iter_blocks
from tests import warm_cli

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "logs"
BASE = datetime(2026, 11, 21, 12, tzinfo=UTC)
ROUND = timedelta(hours=2)
STAMPED = "go_panic_timestamped.log"  # a Go panic as a collector captured it

# Reviews the file serially and with the prescan for each block size and window,
# and prints, per case, both documents and what differs.
SCRIPT = """
import dataclasses, json, sys
from datetime import datetime
from tasks.logs import ReviewConfig, Source, Window, review
from tasks.logs.render import to_document
path, cases = sys.argv[1], json.loads(sys.argv[2])
config = ReviewConfig(
    allowed_ip_ranges=["10.0.0.0/8", "192.168.0.0/16"],
    tool_allowlist={"github": ["search_issues", "get_issue"]},
    expected_tunnel_locations=["ams", "fra"],
    rate_spike_min_lines=5,
)
out = []
for block_size, start, end in cases:
    window = Window(datetime.fromisoformat(start), datetime.fromisoformat(end))
    runs = []
    for parallel in (-1, 0):
        result = review([Source.from_file("stack", path)], window, config,
                        parallel_bytes=parallel, block_size=block_size)
        counts = dataclasses.asdict(result.per_source["stack"])
        runs.append({
            "document": json.dumps(to_document(result), sort_keys=True),
            "findings": repr(result.findings),
            "timeline": repr(result.timeline),
            "prescanned": counts.pop("prescanned_blocks"),
            "counts": counts,
        })
    out.append(runs)
print(json.dumps(out))
"""


def _stamp(moment: datetime, trimmed: bool) -> bytes:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000"
    if trimmed:
        text = text.rstrip("0").rstrip(".")
    return text.encode() + b"Z "


def _corpus(path: Path) -> list[tuple[int, int]]:
    """Writes the stamped, repeated fixtures; returns each panic copy's byte span."""
    spans = []
    fixtures = sorted(FIXTURES.glob("*.log"))
    with open(path, "wb") as out:
        for round_ in range(3):
            moment = BASE + round_ * ROUND
            for index, fixture in enumerate(fixtures):
                moment = BASE + round_ * ROUND + index * timedelta(minutes=2)
                trimmed = (round_ + index) % 2 == 1
                lines = fixture.read_bytes().rstrip(b"\n").split(b"\n")
                start = out.tell()
                for line in lines:
                    if fixture.name == STAMPED:  # already behind a collector's stamp: ours instead
                        line = line.split(b" ", 1)[1]
                    out.write(_stamp(moment, trimmed) + line + b"\n")
                    moment += timedelta(milliseconds=1)
                if fixture.name == STAMPED:
                    spans.append((start, out.tell()))
    return spans


def _boundaries(path: Path, block_size: int) -> list[int]:
    with open(path, "rb") as raw:
        return [block.offset for block in iter_blocks(raw.read, 0, block_size=block_size)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]]]:
    path = tmp_path_factory.mktemp("prescan") / "stack.log"
    return path, _corpus(path)


def test_prescan_gives_the_serial_result(corpus: tuple[Path, list[tuple[int, int]]]) -> None:
    path, panics = corpus
    everything = ((BASE - timedelta(hours=2)).isoformat(), (BASE + 3 * ROUND).isoformat())
    # The window starts and ends inside rounds 2 and 3 (baseline: the hour before it).
    middle = ((BASE + ROUND + timedelta(minutes=30)).isoformat(),)
    middle += ((BASE + 2 * ROUND + timedelta(minutes=47)).isoformat(),)
    sizes = (700, 4096, 1 << 20)
    cases = [[size, *window] for size in sizes for window in (everything, middle)]
    # The window covering everything is entered at offset 0: its blocks start where
    # iter_blocks from 0 starts them, and some boundary falls inside a panic record.
    straddled = [at for at in _boundaries(path, sizes[0]) for a, b in panics if a < at < b]
    assert len(straddled) >= len(panics), straddled  # every copy of the panic is cut

    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), json.dumps(cases)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for (size, start, end), (serial, parallel) in zip(cases, results, strict=True):
        case = f"block {size}, window {start} .. {end}"
        assert serial["prescanned"] == 0, case
        assert parallel["prescanned"] > 0, case  # the second process did judge blocks
        assert parallel["document"] == serial["document"], case
        assert parallel["findings"] == serial["findings"], case
        assert parallel["timeline"] == serial["timeline"], case
        assert parallel["counts"] == serial["counts"], case
        document = json.loads(serial["document"])
        rules = {f["rule"] for f in document["findings"]}
        # Real failures surface in both runs: panics, edge churn, origin, MCP.
        assert {"panic", "edge-connection-lost", "fatal-shutdown"} <= rules, (case, rules)
        assert len(rules) >= 8, (case, rules)
    # Tiny blocks cut every few lines: most window blocks came from the prescan, and
    # each copy of the panic cut by a boundary is still one record holding its frames.
    everything_tiny = results[0][1]
    found = json.loads(everything_tiny["document"])["findings"]
    [panic] = [f for f in found if f["rule"] == "panic" and "timed out after" in f["sample"]]
    assert panic["count"] == len(panics), panic
    # Its last dump (past the boundary) opened no record of its own.
    assert not [f for f in found if "chan receive" in f["sample"]], found
    assert everything_tiny["prescanned"] > 100
    assert everything_tiny["counts"]["lines_in_window"] == sum(1 for _ in path.open("rb"))


def test_prescan_threshold_must_be_an_integer(corpus: tuple[Path, list[tuple[int, int]]]) -> None:
    path, _ = corpus
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    environment["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # nothing listens: unused
    environment["MCP_IR_REVIEW_PARALLEL_BYTES"] = "64M"
    run = warm_cli.run(
        [sys.executable, "-m", "runbook.cli", "review", str(path), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert "MCP_IR_REVIEW_PARALLEL_BYTES" in run.stderr and "'64M'" in run.stderr


# Reviews the file with the prescan forced (its process killed at its first block by
# the failpoint) and serially; prints both documents, the counts and the report.
KILLED = """
import dataclasses, json, sys
from datetime import datetime
from tasks.logs import ReviewConfig, Source, Window, review
from tasks.logs.render import to_document, to_markdown
path, start, end = sys.argv[1:4]
window = Window(datetime.fromisoformat(start), datetime.fromisoformat(end))
config = ReviewConfig(expected_tunnel_locations=["ams", "fra"], rate_spike_min_lines=5)
runs = [review([Source.from_file("stack", path)], window, config, parallel_bytes=parallel,
               block_size=4096) for parallel in (0, -1)]
print(json.dumps([{"document": to_document(r), "markdown": to_markdown(r),
                   "counts": dataclasses.asdict(r.per_source["stack"])} for r in runs]))
"""


def test_a_failed_prescan_is_said_and_the_review_goes_on(
    corpus: tuple[Path, list[tuple[int, int]]],
) -> None:
    """The prescan process killed (as the OOM killer would: the failpoint) — the
    review finishes in one process with the serial result, and says on stderr, in the
    ``--json`` document and in the report that the prescan failed and why."""
    path, _ = corpus
    start, end = BASE - timedelta(hours=2), BASE + 3 * ROUND
    run = subprocess.run(
        [sys.executable, "-c", KILLED, str(path), start.isoformat(), end.isoformat()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MCP_IR_FAILPOINT": "review:prescan"},
        timeout=300,
        check=True,
    )
    failed, serial = json.loads(run.stdout.strip().splitlines()[-1])
    reason = "the prescan process ended before its last block (exit status 137)"
    assert failed["counts"]["prescan_failed"] == reason, run.stderr
    assert failed["counts"]["prescanned_blocks"] == 0
    assert serial["counts"]["prescan_failed"] == ""
    assert "prescan_failed" not in str(serial["document"])
    assert "parallel prescan" not in serial["markdown"]
    assert f"the parallel prescan failed ({reason}); the review continued in one process" in (
        run.stderr
    )
    [source] = failed["document"]["sources"]
    assert source.pop("prescan_failed") == reason
    assert failed["document"] == serial["document"]  # the same review otherwise
    assert f"The parallel prescan of stack failed ({reason})" in failed["markdown"]
    for counts in (failed["counts"], serial["counts"]):
        counts.pop("prescan_failed")
    assert failed["counts"] == serial["counts"]
