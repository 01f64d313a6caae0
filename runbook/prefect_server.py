"""A local Prefect server (SQLite) for the demo and the tests: started as a
subprocess, waited for, stopped. Production points PREFECT_API_URL at a real
server instead (see README, 'Operating in production')."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.processes import wait_gone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrefectServer:
    """A running ``prefect server start``. ``process`` is ``None`` in a process that
    attached to a server another one started (the pid is then all it has)."""

    url: str
    process: subprocess.Popen[bytes] | None
    log_path: Path
    pid: int = 0

    def __post_init__(self) -> None:
        if self.process is not None:
            self.pid = self.process.pid

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.killpg(self.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(self.pid, signal.SIGKILL)
                    self.process.wait(5)
            return
        _stop_group(self.pid, timeout)


def _stop_group(pid: int, timeout: float) -> None:
    """SIGTERM then SIGKILL to the process group of ``pid``, a child of another process."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not wait_gone(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def server_env(home: Path, database_url: str | None = None, *, ui: bool = False) -> dict[str, str]:
    """The server's environment: its home, its database (SQLite in ``home`` unless
    ``database_url`` names another, e.g. PostgreSQL), no analytics, the UI if ``ui``."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url
        or f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }


def start_prefect_server(
    home: Path,
    *,
    port: int | None = None,
    timeout_s: float = 120.0,
    ui: bool = False,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
) -> PrefectServer:
    """Starts ``prefect server start`` on a free loopback port and waits for health
    (``ui``: also serve the Prefect UI, where approval forms live). ``env`` adds
    settings (e.g. the scheduler's loop interval).

    Raises:
        RuntimeError: the server did not answer in time (its log is quoted).
    """
    port = port or _free_port()
    env = {**os.environ, **server_env(home, database_url, ui=ui), **(env or {})}
    env.pop("PREFECT_API_URL", None)
    log_path = home / "server.log"
    log = open(log_path, "ab")  # noqa: SIM115 (the child owns it for its lifetime)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"prefect server exited ({process.returncode}): {log_path.read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return PrefectServer(url=url, process=process, log_path=log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    PrefectServer(url, process, log_path).stop()
    raise RuntimeError(
        f"prefect server did not become healthy in {timeout_s:.0f}s: {log_path.read_text()[-2000:]}"
    )


def drain_prefect_workers(timeout: float = 10.0) -> None:
    """Delivers the log lines and events Prefect still holds in memory, so that nothing
    is lost (and nothing hangs at exit) when the server is stopped right after a run."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=timeout, at_exit=False)
