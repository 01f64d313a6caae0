"""``mcp-ir serve`` as operators run it (a subprocess, its output captured): a run
killed before its first trail record shows as ``failed`` with its error in ``mcp-ir
alerts`` and ``/metrics``, is retried with bounded backoff, and ``/healthz`` reports
the backlog; a ``url-token`` never appears in anything the server prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.plugins.intake import free_port, healthy, write_inventory
from tests.plugins.site import capture_first, run_text

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "url-token-3b8e61f0c9d24a77"


def serve(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    section = {
        "dedup_window": "1h",
        "launch_attempts": 2,
        "launch_backoff": "1s",
        "launch_backoff_max": "2s",
        "sources": {
            "splunk": {
                "format": "splunk",
                "auth": "url-token",
                "secrets_env": ["TRUTH_URL_TOKEN"],
                "rules": [{"match": {}, "target": "prod-eu", "severity": "critical"}],
            }
        },
    }
    inventory = write_inventory(tmp_path, section)
    port = free_port()
    log = tmp_path / "serve.out"
    cmd = [sys.executable, "-m", "runbook.cli", "--config", str(inventory)]
    cmd += ["--evidence-dir", str(tmp_path / "ev"), "serve", "--port", str(port)]
    cmd += ["--warm", "0", "--log-level", "info"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    url = f"http://127.0.0.1:{port}"
    if healthy(url, proc):
        return proc, url, log
    proc.kill()
    raise AssertionError(log.read_text())


def alerts_json(tmp_path: Path, env: dict[str, str]) -> list[dict]:
    out = run_text(
        [
            sys.executable,
            "-m",
            "runbook.cli",
            "--config",
            str(tmp_path / "inventory.yaml"),
            "--evidence-dir",
            str(tmp_path / "ev"),
            "alerts",
            "--json",
        ],
        cwd=ROOT,
        env=env,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


PLAYBOOK = capture_first()


def test_run_killed_at_launch_is_failed_retried_and_token_never_printed(tmp_path):
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "breach-response.yaml").write_text(PLAYBOOK)
    env = {
        "MCP_IR_PLAYBOOK_DIR": str(playbooks),
        **os.environ,
        "TRUTH_URL_TOKEN": TOKEN,
        "ANTHROPIC_TEST_TOKEN": "unused-token-value",
        # every run this server starts dies before its first trail record
        "MCP_IR_FAILPOINT": "run:before_first_record",
    }
    proc, url, log = serve(tmp_path, env)
    try:
        body = (ROOT / "tests/fixtures/intake/splunk/search_one_result.json").read_bytes()
        answer = httpx.post(
            f"{url}/alerts/splunk/{TOKEN}",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        incident = answer.json()["incident_id"]
        refused = httpx.post(f"{url}/alerts/splunk/{TOKEN}x", content=body, timeout=30)
        assert refused.status_code == 401
        deadline = time.monotonic() + 90
        row: dict = {}
        while time.monotonic() < deadline:
            [row] = alerts_json(tmp_path, env)
            if row["state"] == "failed" and row["retry_at"] is None and row["attempts"] == 2:
                break
            time.sleep(0.3)
        assert row["incident_id"] == incident
        assert (row["state"], row["attempts"], row["started"]) == ("failed", 2, False)
        assert "before its first trail record" in row["last_error"]
        assert "failpoint run:before_first_record" in row["last_error"]
        assert httpx.get(f"{url}/healthz", timeout=10).json()["launch_backlog"]["failed"] == 1
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'mcp_ir_intake_launches{state="failed"} 1.0' in metrics
    finally:
        proc.terminate()
        proc.wait(20)
    printed = log.read_text(errors="replace")
    # Between the two attempts it was failed, with its retry scheduled (1 s backoff).
    assert f"run of {incident} died before its first record (attempt 1); retrying in 1s" in printed
    assert f"run of {incident} died before its first record (attempt 2); giving up" in printed
    assert "/alerts/splunk/<token>" in printed  # the access log saw the request…
    assert TOKEN not in printed  # …and never the token
    for path in (tmp_path / "ev").rglob("*"):
        if path.is_file() and path.suffix in (".log", ".jsonl", ".json"):
            assert TOKEN not in path.read_text(errors="replace"), path
