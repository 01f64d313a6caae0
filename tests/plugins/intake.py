"""Intake test plumbing: an inventory with every source format, a recording launcher,
and the intake app served by a real uvicorn (in a thread, or in a subprocess for
the kill -9 test).

The recording launcher stands in for ``runbook.launch.launch_incident`` at the
boundary: it keeps the same signature and the same idempotency contract (one run per
incident id, however often it is called) and records every call durably in SQLite,
so a test can count runs across a killed server process.

Run as a module it serves intake in the foreground (used by the crash test)::

    python -m tests.plugins.intake --config INV --evidence DIR --port P --record DB [--delay S]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from intake.auth import signed_headers
from runbook.settings import Settings

SECRETS = {
    "INTAKE_TEST_SECRET": "generic-current-secret-7d1c",
    "INTAKE_TEST_SECRET_NEXT": "generic-next-secret-93aa",
    "INTAKE_SPLUNK_SECRET": "splunk-secret-0b5e8f",
    "INTAKE_DATADOG_SECRET": "datadog-secret-51c2aa",
    "INTAKE_PAGERDUTY_SECRET": "pagerduty-secret-e4f019",
    "INTAKE_SENTINEL_SECRET": "sentinel-secret-66d0b3",
    "INTAKE_BEARER_TOKEN": "bearer-static-token-c8e1f2",
}

SOURCES: dict[str, Any] = {
    "generic-src": {
        "format": "generic",
        "secrets_env": ["INTAKE_TEST_SECRET", "INTAKE_TEST_SECRET_NEXT"],
        "rules": [
            {"match": {"title": "MCP tunnel*"}, "target": "prod-eu", "window_before": "2h"},
            {"match": {"raw.labels.env": "staging"}, "target": "staging", "severity": "low"},
        ],
    },
    "splunk-prod": {
        "format": "splunk",
        "secrets_env": ["INTAKE_SPLUNK_SECRET"],
        "rules": [
            {
                "match": {"title": "MCP tunnel*", "raw.app": "search"},
                "target": "prod-eu",
                "severity": "critical",
                "window_before": "30m",
            }
        ],
    },
    "datadog": {
        "format": "datadog",
        "secrets_env": ["INTAKE_DATADOG_SECRET"],
        "rules": [{"match": {"title": "*tunnel*"}, "target": "prod-eu"}],
    },
    "pagerduty": {
        "format": "pagerduty",
        "secrets_env": ["INTAKE_PAGERDUTY_SECRET"],
        "rules": [{"match": {"raw.event.event_type": "incident.*"}, "target": "staging"}],
    },
    "sentinel": {
        "format": "sentinel",
        "secrets_env": ["INTAKE_SENTINEL_SECRET"],
        "rules": [{"match": {"title": "MCP*"}, "target": "prod-eu"}],
    },
    "token-src": {
        "format": "generic",
        "auth": "bearer",
        "secrets_env": ["INTAKE_BEARER_TOKEN"],
        "rules": [{"match": {}, "target": "staging"}],
    },
}


def _target(project: str, data_dir: Path) -> dict[str, Any]:
    return {
        "kind": "compose",
        "compose": {"project": project, "data_dir": str(data_dir)},
        "tunnel": {"id": "tnl_intake01"},
        "anthropic": {"credentials": {"bearer_env": "ANTHROPIC_TEST_TOKEN"}},
    }


def write_inventory(directory: Path, intake: dict[str, Any] | None = None) -> Path:
    """Writes an inventory with targets ``prod-eu`` and ``staging`` and an intake
    section (default: every source of :data:`SOURCES`)."""
    section = intake if intake is not None else {"dedup_window": "1h", "sources": SOURCES}
    document = {
        "targets": {
            "prod-eu": _target("mcp-eu", directory / "data-eu"),
            "staging": _target("mcp-staging", directory / "data-staging"),
        },
        "intake": section,
    }
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


class RecordingLauncher:
    """Records launches in SQLite; one run per incident id, like ``launch_incident``.

    Args:
        path: the SQLite file (shared across processes and restarts).
        delay_s: wait before recording (to kill a server mid-launch).
        fail_first: number of first calls that raise ``fail_with`` instead.
        fail_with: factory of the exception to raise.
    """

    def __init__(
        self,
        path: Path,
        *,
        delay_s: float = 0.0,
        fail_first: int = 0,
        fail_with: Callable[[], Exception] | None = None,
    ) -> None:
        self.path = Path(path)
        self.delay_s = delay_s
        self._failures_left = fail_first
        self._fail_with = fail_with
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS calls (n INTEGER PRIMARY KEY AUTOINCREMENT,"
                " incident_id TEXT, target TEXT, playbook TEXT, initiator TEXT, severity TEXT,"
                " trigger TEXT, window_start TEXT, window_end TEXT, pid INTEGER)"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS runs (incident_id TEXT PRIMARY KEY)")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def __call__(
        self,
        settings: Any,
        *,
        target: str,
        playbook: str = "breach-response",
        incident_id: str,
        initiator: str,
        trigger: dict[str, Any],
        severity: str = "high",
        window_start: datetime | None = None,
        window_end: datetime | None = None,
        wait: bool = False,
    ) -> str:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self._failures_left > 0:
            self._failures_left -= 1
            assert self._fail_with is not None
            raise self._fail_with()
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO calls (incident_id, target, playbook, initiator, severity, trigger,"
                " window_start, window_end, pid) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    incident_id,
                    target,
                    playbook,
                    initiator,
                    severity,
                    json.dumps(trigger, sort_keys=True),
                    window_start.isoformat() if window_start else None,
                    window_end.isoformat() if window_end else None,
                    os.getpid(),
                ),
            )
            conn.execute("INSERT OR IGNORE INTO runs (incident_id) VALUES (?)", (incident_id,))
        return incident_id

    def calls(self) -> list[dict[str, Any]]:
        """Every call, oldest first."""
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM calls ORDER BY n").fetchall()
        return [{**dict(r), "trigger": json.loads(r["trigger"])} for r in rows]

    def runs(self) -> list[str]:
        """Incident ids that got a run."""
        with self._connect() as conn:
            return [r[0] for r in conn.execute("SELECT incident_id FROM runs ORDER BY 1")]

    def wait_for_calls(self, count: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """Waits until at least ``count`` calls were recorded; returns them."""
        deadline = time.monotonic() + timeout_s
        while True:
            calls = self.calls()
            if len(calls) >= count or time.monotonic() > deadline:
                return calls
            time.sleep(0.05)


@dataclass
class IntakeServer:
    """A running intake app as tests see it."""

    url: str
    settings: Settings
    launcher: RecordingLauncher
    secrets: dict[str, str]
    app: Any

    def post(
        self,
        source: str,
        payload: Any,
        *,
        secret_env: str | None = None,
        client: httpx.Client | None = None,
        now: float | None = None,
    ) -> httpx.Response:
        """POSTs ``payload`` (JSON-encoded unless bytes), signed with the source's
        first secret or ``secret_env``."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        env = secret_env or SOURCES[source]["secrets_env"][0]
        headers = signed_headers(self.secrets[env].encode(), body, now=now)
        if client is not None:
            return client.post(f"{self.url}/alerts/{source}", content=body, headers=headers)
        return httpx.post(f"{self.url}/alerts/{source}", content=body, headers=headers, timeout=30)


@pytest.fixture
def intake_secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Puts the source secrets in the environment, as an operator would."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return dict(SECRETS)


@pytest.fixture
def make_intake_server(
    tmp_path: Path, intake_secrets: dict[str, str]
) -> Iterator[Callable[..., IntakeServer]]:
    """Factory: ``make_intake_server(intake=None, launcher=None)`` serves a fresh
    intake app (own inventory, evidence dir and store) on a free port."""
    from intake.app import create_app
    from sandbox.serve import serve_in_thread

    started: list[tuple[Any, Any]] = []

    def make(
        intake: dict[str, Any] | None = None, launcher: RecordingLauncher | None = None
    ) -> IntakeServer:
        base = tmp_path / f"intake{len(started)}"
        base.mkdir()
        settings = Settings(config_path=write_inventory(base, intake), evidence_dir=base / "ev")
        recorder = launcher or RecordingLauncher(base / "launches.sqlite")
        app = create_app(settings, launcher=recorder)
        handle = serve_in_thread(app)
        started.append((handle, app))
        return IntakeServer(handle.url, settings, recorder, intake_secrets, app)

    yield make
    for handle, app in started:
        handle.stop()
        app.state.intake.close()


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server_process(
    config: Path, evidence: Path, record: Path, port: int, *, delay_s: float = 0.0
) -> subprocess.Popen[bytes]:
    """Starts ``python -m tests.plugins.intake`` and waits for ``/healthz``."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, **SECRETS}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.plugins.intake",
            "--config",
            str(config),
            "--evidence",
            str(evidence),
            "--record",
            str(record),
            "--port",
            str(port),
            "--delay",
            str(delay_s),
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if healthy(f"http://127.0.0.1:{port}", proc, timeout_s=30):
        return proc
    proc.kill()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    raise RuntimeError(f"intake server did not start: {err[-2000:]}")


def healthy(url: str, proc: subprocess.Popen[Any] | None, *, timeout_s: float = 60) -> bool:
    """Waits for ``url``'s ``/healthz`` to answer 200: True once it does, False when
    ``proc`` (the server, when the test started it) exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _main() -> None:
    from intake.server import run_server

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--evidence", required=True, type=Path)
    parser.add_argument("--record", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    settings = Settings(config_path=args.config, evidence_dir=args.evidence)
    launcher = RecordingLauncher(args.record, delay_s=args.delay)
    run_server(settings, port=args.port, launcher=launcher, log_level="warning")


if __name__ == "__main__":
    _main()
