"""``mcp-ir review`` as a user runs it: the real CLI in a subprocess, no Prefect
server, on real excerpts (tests/fixtures/logs, see SOURCES.md there)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests import warm_cli
from tests.plugins.site import compose_target

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "logs"


def cli(
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    config: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Runs ``mcp-ir [--config C] review ARGS`` (``--config`` is a global option)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    environment["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # nothing listens: unused
    environment.update(env or {})
    return warm_cli.run(
        [
            sys.executable,
            "-m",
            "runbook.cli",
            *(["--config", str(config)] if config else []),
            "review",
            *args,
        ],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        timeout=120,
        env=environment,
    )


def test_json_shape_exit_one_on_real_failures(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("cloudflared_2024_origin_timeout.log", "claude_desktop_level_first.log"):
        shutil.copy(FIXTURES / name, logs / name)
    done = cli(str(logs), "--json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) == {"window", "sources", "findings", "timeline"} and doc["window"] is None
    paths = {s["path"] for s in doc["sources"]}
    assert paths == {
        str(logs / "cloudflared_2024_origin_timeout.log"),
        str(logs / "claude_desktop_level_first.log"),
    }
    for source in doc["sources"]:
        assert {"path", "lines", "parsed", "unknown", "formats"} <= set(source)
        assert source["parsed"] == source["lines"] and source["unknown"] == 0
    for finding in doc["findings"]:
        assert set(finding) == {
            "rule",
            "severity",
            "title",
            "source",
            "count",
            "first",
            "last",
            "sample",
        }
        assert finding["source"] in paths
    rules = {(f["rule"], f["severity"]) for f in doc["findings"]}
    assert ("origin-unreachable", "medium") in rules
    assert ("mcp-server-disconnected", "medium") in rules
    assert doc["timeline"] and {"at", "source", "severity", "what", "text"} <= set(
        doc["timeline"][0]
    )


def test_healthy_log_exits_zero_and_prints_parse_rates() -> None:
    done = cli(str(FIXTURES / "cloudflared_2025_healthy.log"))
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert "12 lines, 12 parsed (100.0%)" in out and "cloudflared_text 12" in out


def test_stdin_and_gzip(tmp_path: Path) -> None:
    gz = tmp_path / "rotated.log.1.gz"
    gz.write_bytes(gzip.compress((FIXTURES / "cloudflared_2025_no_ingress.log").read_bytes()))
    data = (FIXTURES / "vscode_mcp_exited.log").read_bytes()
    done = cli("-", str(gz), "--json", "--tz", "Europe/Berlin", stdin=data)
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    by_path = {s["path"]: s for s in doc["sources"]}
    assert set(by_path) == {"-", str(gz)}
    assert by_path["-"]["assumed_zone"] == 4 and by_path["-"]["zone"] == "Europe/Berlin"
    findings = {(f["source"], f["rule"]) for f in doc["findings"]}
    assert ("-", "mcp-server-disconnected") in findings and (
        str(gz),
        "no-ingress-rules",
    ) in findings
    [exited] = [f for f in doc["findings"] if f["source"] == "-"]
    assert exited["first"].startswith("2025-10-06T14:15:20.051")  # 16:15 CEST


def test_window_and_output_keep_original_bytes_with_hashes(tmp_path: Path) -> None:
    raw = (FIXTURES / "cloudflared_2024_edge_closed.log").read_bytes()
    # A non-UTF-8 byte and a CRLF line must survive in the evidence copy.
    log = tmp_path / "edge.log"
    log.write_bytes(raw.replace(b"Retrying connection", b"Retrying conn\xe9ction\r", 1))
    out = tmp_path / "out"
    done = cli(
        str(log),
        "--window-start",
        "2024-11-27T11:16:14Z",
        "--window-end",
        "2024-11-27T11:16:16Z",
        "--output",
        str(out),
        "--json",
    )
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["window"] == {
        "start": "2024-11-27T11:16:14+00:00",
        "end": "2024-11-27T11:16:16+00:00",
    }
    assert doc["sources"][0]["lines"] == 7  # the three registrations at :18 are outside
    manifest = json.loads((out / "evidence" / "manifest.json").read_text())
    [entry] = manifest["files"]
    original = (out / "evidence" / entry["original"]).read_bytes()
    assert original == b"\n".join(log.read_bytes().split(b"\n")[:7]) + b"\n"
    assert b"conn\xe9ction\r" in original
    assert entry["sha256"] == hashlib.sha256(original).hexdigest() and entry["lines"] == 7
    view = (out / "evidence" / entry["redacted_view"]).read_bytes()
    assert entry["redacted_sha256"] == hashlib.sha256(view).hexdigest()
    # No secret in the window: the secret-free evidence copy IS the original.
    kept = (out / "evidence" / entry["evidence_copy"]).read_bytes()
    assert kept == original and entry["evidence_sha256"] == entry["sha256"]
    assert entry["withheld_lines"] == []
    report = json.loads((out / "review.json").read_text())
    assert {f["source"] for f in report["findings"]} == {str(log)}
    assert (out / "review.md").read_text().startswith("## Log review")


def test_bad_input_exits_two_naming_the_field(tmp_path: Path) -> None:
    missing = cli(str(tmp_path / "nope.log"))
    assert (
        missing.returncode == 2 and b"PATH" in missing.stderr and b"no such file" in missing.stderr
    )
    bad_start = cli(str(FIXTURES / "env_logger.log"), "--window-start", "yesterday")
    assert bad_start.returncode == 2 and b"--window-start" in bad_start.stderr
    reversed_window = cli(
        str(FIXTURES / "env_logger.log"),
        "--window-start",
        "2026-01-02T00:00:00Z",
        "--window-end",
        "2026-01-01T00:00:00Z",
    )
    assert reversed_window.returncode == 2 and b"--window-end" in reversed_window.stderr
    bad_zone = cli(str(FIXTURES / "env_logger.log"), "--tz", "Mars/Olympus")
    assert bad_zone.returncode == 2 and b"tz" in bad_zone.stderr


def test_target_brings_expectations_and_secret_values(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "people": {"alice": {}},
                "groups": {"oncall": ["alice"]},
                "targets": {
                    "prod": {
                        **compose_target(tmp_path / "data"),
                        "secrets_env": ["CUSTOM_SECRET"],
                        "review": {
                            "expected_tunnel_locations": ["fra"],
                            "tool_allowlist": {"weather": ["get_forecast"]},
                        },
                    }
                },
            }
        )
    )
    log = tmp_path / "mixed.log"
    log.write_bytes(
        (FIXTURES / "cloudflared_2024_edge_closed.log").read_bytes()
        + (FIXTURES / "claude_desktop_tools_call.log").read_bytes()
        + b"2024-11-27T11:16:19Z ERR leaked value opaque-custom-v4lue here\n"
    )
    done = cli(
        str(log),
        "--target",
        "prod",
        "--json",
        config=inventory,
        env={"CUSTOM_SECRET": "opaque-custom-v4lue"},
    )
    assert done.returncode == 1, done.stderr
    assert b"opaque-custom-v4lue" not in done.stdout
    doc = json.loads(done.stdout)
    keys = {(f["rule"], f["severity"]) for f in doc["findings"]}
    assert ("unexpected-tunnel-location", "high") in keys
    assert ("tool-outside-allowlist", "critical") in keys
    titles = [f["title"] for f in doc["findings"] if f["rule"] == "tool-outside-allowlist"]
    assert titles == ["Tool outside allowlist: weather/get_alerts"]
