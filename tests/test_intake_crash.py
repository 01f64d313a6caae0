"""Crash recovery: ``kill -9`` the intake server right after its 202, restart it, and
the alert still gets its run, exactly once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx

from intake.auth import signed_headers
from tests.plugins.intake import (
    SECRETS,
    RecordingLauncher,
    free_port,
    start_server_process,
    write_inventory,
)


def _states(store) -> dict[str, str]:
    conn = sqlite3.connect(store)
    try:
        return dict(conn.execute("SELECT incident_id, state FROM incidents"))
    finally:
        conn.close()


def _intake(tmp_path: Path) -> tuple[Path, Path, Path, Path, RecordingLauncher]:
    """A test's inventory, evidence dir, launch record, alert store, and the recorder
    that reads the launches."""
    evidence = tmp_path / "evidence"
    record = tmp_path / "launches.sqlite"
    store = evidence / "_intake" / "alerts.sqlite"
    return write_inventory(tmp_path), evidence, record, store, RecordingLauncher(record)


def _post(port: int, body: bytes) -> httpx.Response:
    """Delivers ``body`` to the generic source, signed as its sender signs."""
    return httpx.post(
        f"http://127.0.0.1:{port}/alerts/generic-src",
        content=body,
        headers=signed_headers(SECRETS["INTAKE_TEST_SECRET"].encode(), body),
    )


def _alert(alert_id: str, title: str, severity: str) -> bytes:
    return json.dumps({"alert_id": alert_id, "title": title, "severity": severity}).encode()


def test_kill_9_right_after_202_then_restart_launches_once(tmp_path):
    config, evidence, record, store, recorder = _intake(tmp_path)
    body = _alert("crash-1", "MCP tunnel token leaked", "critical")

    # The first process launches slowly, so the kill lands before any launch finished.
    port = free_port()
    first = start_server_process(config, evidence, record, port, delay_s=5.0)
    try:
        response = _post(port, body)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait(10)
    assert response.status_code == 202
    incident_id = response.json()["incident_id"]
    assert first.returncode == -signal.SIGKILL
    # The 202 meant "on disk": the killed process left the incident unlaunched.
    states = _states(store)
    assert list(states) == [incident_id]
    assert states[incident_id] in ("new", "launching")
    assert recorder.calls() == []

    port = free_port()
    second = start_server_process(config, evidence, record, port)
    try:
        calls = recorder.wait_for_calls(1, timeout_s=20)
        # Resending the alert after the restart is a duplicate, not a second incident.
        again = _post(port, body)
    finally:
        second.terminate()
        second.wait(10)
    assert again.status_code == 200
    assert again.json()["incident_id"] == incident_id
    assert [c["incident_id"] for c in calls] == [incident_id]
    assert recorder.calls()[0]["pid"] == second.pid
    assert len(recorder.calls()) == 1
    assert recorder.runs() == [incident_id]
    assert _states(store) == {incident_id: "launched"}


def test_kill_9_after_launch_still_gives_one_run(tmp_path):
    """Killed after the launch but maybe before ``launched`` was recorded: the restart
    may call the launcher again, and its idempotency on the incident id keeps one run."""
    config, evidence, record, store, recorder = _intake(tmp_path)
    body = _alert("crash-2", "MCP tunnel cert exposed", "high")

    port = free_port()
    first = start_server_process(config, evidence, record, port)
    try:
        response = _post(port, body)
        recorder.wait_for_calls(1)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait(10)
    incident_id = response.json()["incident_id"]

    port = free_port()
    second = start_server_process(config, evidence, record, port)
    try:
        healthy = httpx.get(f"http://127.0.0.1:{port}/healthz")
        deadline = time.monotonic() + 10
        while _states(store)[incident_id] != "launched" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        second.terminate()
        second.wait(10)
    assert healthy.status_code == 200
    assert _states(store) == {incident_id: "launched"}
    assert recorder.runs() == [incident_id]
    assert {c["incident_id"] for c in recorder.calls()} == {incident_id}
