"""The HTML post-incident report, rendered by the real CLI and checked in a real
headless Chromium: the screenshot (decoded here, pixel colours in the chart) and
the DOM (one chart mark per event, the head hash, the findings table)."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from core.trail import Trail, verify_dir
from tests.plugins.site import compose_target, mcp_ir_command, run_text

ROOT = Path(__file__).resolve().parent.parent
INCIDENT = "INC-20261121-101500-beef"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
COLOURS = {  # the chart's mark colours (template :root variables)
    "ok": (0x2E, 0x7D, 0x32),
    "bad": (0xC6, 0x28, 0x28),
    "gate": (0xF9, 0xA8, 0x25),
    "human": (0x15, 0x65, 0xC0),
    "run": (0x60, 0x7D, 0x8B),
}


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed by scripts/install-chromium.sh when missing."""
    if shutil.which("chromium") is None:
        subprocess.run(["sh", str(ROOT / "scripts" / "install-chromium.sh")], check=True)
    path = shutil.which("chromium")
    assert path, "chromium is not installed and scripts/install-chromium.sh did not install it"
    return path


def _steps(trail: Trail) -> None:
    """A trail shaped like a real breach-response run: auto and human gates, a
    refusal, a log review with findings, a failed last step."""

    def pause() -> None:
        time.sleep(0.05)

    trail.append(
        "incident.opened",
        None,
        {
            "incident_id": INCIDENT,
            "target": "prod",
            "playbook": "breach-response",
            "initiator": "alice",
            "trigger": {"kind": "manual", "by": "alice"},
            "severity": "high",
            "window_start": "2026-11-20T10:00:00+00:00",
            "window_end": "2026-11-21T10:00:00+00:00",
            "drill": False,
            "policy": "standard",
            "sandbox": False,
        },
    )
    trail.append("run.started", None, {"flow_run_id": "r1"})
    for key in ("capture_evidence", "stop_stack", "archive_tunnel", "review_logs"):
        trail.append("step.planned", key, {"summary": f"plan of {key}", "hash": key * 2})
        pause()
        if key == "capture_evidence":
            trail.append("gate.auto", key, {"plan_hash": "a" * 64, "reason": "read-only"})
        else:
            required = 2 if key == "archive_tunnel" else 1
            trail.append(
                "gate.opened",
                key,
                {
                    "plan_hash": "b" * 64,
                    "group": "oncall",
                    "required": required,
                    "members": ["alice", "bob", "carol"],
                    "allow_initiator": False,
                    "timeout_s": 1800.0,
                    "escalate_after_s": 600.0,
                    "escalate_to": "security-leads",
                },
            )
            trail.append(
                "gate.waiting", key, {"key": key + "-1", "flow_run_id": "r1", "plan_hash": "b" * 64}
            )
            pause()
            if key == "archive_tunnel":
                trail.append("approval.refused", key, {"approver": "alice", "reason": "initiator"})
                pause()
            for who in ("bob", "carol") if key == "archive_tunnel" else ("bob",):
                trail.append(
                    "approval.accepted",
                    key,
                    {"approver": who, "source": "cli", "plan_hash": "b" * 64},
                )
                pause()
            trail.append("gate.passed", key, {"plan_hash": "b" * 64})
        if key == "review_logs":
            trail.append(
                "step.prepared",
                key,
                {
                    "plan_hash": "c" * 64,
                    "result": {
                        "summary": "2 findings in 3 sources",
                        "needs_human": True,
                        "findings": 2,
                    },
                },
            )
            findings = {
                "summary": "2 findings in 3 sources",
                "needs_human": True,
                "findings": [
                    {
                        "severity": "high",
                        "rule": "D3 IP validation failed",
                        "source": "proxy",
                        "key": "203.0.113.9",
                        "count": 41,
                        "first_seen": "2026-11-21T09:01:02Z",
                        "last_seen": "2026-11-21T09:40:00Z",
                        "line": "proxy:17",
                    },
                    {
                        "severity": "medium",
                        "rule": "D5 no route for host",
                        "source": "proxy",
                        "key": "evil.example",
                        "count": 3,
                        "first_seen": "2026-11-21T09:05:00Z",
                        "last_seen": "2026-11-21T09:06:00Z",
                        "line": "proxy:40",
                    },
                ],
            }
            trail.add_artifact(
                json.dumps(findings).encode(),
                name="log-review-findings.json",
                media_type="application/json",
                step=key,
            )
        trail.append("step.started", key, {"plan_hash": "b" * 64})
        pause()
        if key == "review_logs":
            trail.append("step.failed", key, {"error": "2 findings need a human"})
        else:
            trail.append("step.succeeded", key, {"duration_s": 0.05})
    trail.append("run.ended", None, {"status": "failed", "detail": "review_logs failed"})


@pytest.fixture
def rendered(tmp_path: Path) -> Iterator[tuple[Path, Trail]]:
    """The report of a sample incident, written by ``mcp-ir report --format html``."""
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "people": {"alice": {}, "bob": {}, "carol": {}},
                "groups": {"oncall": ["alice", "bob", "carol"]},
                "targets": {"prod": compose_target(tmp_path / "data")},
            }
        )
    )
    evidence = tmp_path / "evidence"
    trail = Trail.open(evidence, INCIDENT)
    _steps(trail)
    out = tmp_path / "report.html"
    cmd = mcp_ir_command(
        inventory, evidence, "report", INCIDENT, "--format", "html", "--output", str(out)
    )
    proc = run_text(
        cmd,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    yield out, trail


def run_chromium(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    profile.mkdir()
    return run_text(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        timeout=120,
        check=False,
        cwd=tmp_path,
    )


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """A tiny PNG decoder (8-bit RGB/RGBA, non-interlaced): width, height and rows
    of RGB triples."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(v for j, v in enumerate(line) if channels == 3 or j % 4 != 3))
        prev = line
    return width, height, rows


def test_html_is_self_contained_and_names_everything(
    rendered: tuple[Path, Trail],
) -> None:
    path, trail = rendered
    html = path.read_text()
    # No external resource: nothing fetched from anywhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<link" not in html and "<script" not in html and "@import" not in html
    assert "@media print" in html
    head = verify_dir(trail.dir).head
    assert head in html
    assert "203.0.113.9" in html and "D3 IP validation failed" in html
    assert "time to acknowledge (first human action)" in html
    assert "time to first approval" in html and "time to containment" in html
    assert "<code>review_logs</code>: failed" in html  # an open item


def test_chromium_renders_the_timeline_chart(
    rendered: tuple[Path, Trail], chromium: str, tmp_path: Path
) -> None:
    path, trail = rendered
    url = path.as_uri()
    dom = run_chromium(chromium, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    timeline_events = len(re.findall(r"<tr><td>\d{4}-\d\d-\d\dT", text))
    marks = re.findall(r'<circle class="mark c-(\w+)" data-seq="(\d+)"', text)
    assert timeline_events > 20
    assert len(marks) == timeline_events  # one mark per event
    assert {c for c, _ in marks} == set(COLOURS)
    assert f'<td class="hash" id="head-hash">{verify_dir(trail.dir).head}</td>' in text
    findings = re.search(r'<table id="findings">(.*?)</table>', text, re.S)
    assert findings and findings.group(1).count('<tr class="finding">') == 2
    assert "evil.example" in findings.group(1)

    shot = tmp_path / "report.png"
    proc = run_chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1100,1400", url)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    width, height, rows = read_png(shot.read_bytes())
    assert (width, height) == (1100, 1400)
    found: dict[str, list[int]] = {name: [] for name in COLOURS}
    distinct: set[bytes] = set()
    for y, row in enumerate(rows):
        for x in range(0, len(row), 3):
            pixel = row[x : x + 3]
            distinct.add(pixel)
            for name, rgb in COLOURS.items():
                if tuple(pixel) == rgb:
                    found[name].append(y)
    # Every kind of mark is visible, and the chart is a band of the page, not blank.
    assert all(found.values()), {k: len(v) for k, v in found.items()}
    chart_rows = sorted(y for name in ("human", "gate") for y in found[name])
    assert chart_rows[0] > 100 and chart_rows[-1] - chart_rows[0] > 100
    assert len(distinct) > 50
