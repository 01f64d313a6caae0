"""The warm pool behind ``mcp-ir serve``: real worker processes (real imports, a real
Prefect health check) receive the run's arguments, the launch marker and run.log over
a Unix socket; a dead worker falls back to a cold spawn."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from intake.warm import WarmPool
from runbook.launch import MARKER_FILE, claim_launch, marker_holder, process_start
from tests.plugins.intake import free_port, write_inventory

pytestmark = [pytest.mark.prefect]


def wait_ready(pool: WarmPool, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while pool.ready < count:
        assert time.monotonic() < deadline, "warm workers never became ready"
        time.sleep(0.1)


def wait_exit(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while process_start(pid) is not None:
        assert time.monotonic() < deadline, f"process {pid} did not exit"
        time.sleep(0.05)


def marker_locked(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_warm_worker_runs_the_arguments_and_holds_the_marker(
    tmp_path: Path, prefect_server: object
) -> None:
    pool = WarmPool(1)
    pool.start()
    try:
        wait_ready(pool, 1)
        incident = tmp_path / "INC-20260101-000000-dddd"
        incident.mkdir()
        marker = claim_launch(incident)
        assert marker is not None
        # A real command that runs until stopped: ``mcp-ir serve`` on a bare inventory.
        port = free_port()
        argv = ["--config", str(write_inventory(tmp_path, intake={}))]
        argv += ["--evidence-dir", str(tmp_path / "ev"), "serve", "--port", str(port)]
        pid = pool.spawn([*argv, "--warm", "0"], marker, incident / "run.log")
        os.close(marker)  # the launcher's copy: from now on only the worker holds it
        assert pool.warm_launches == 1 and pool.cold_launches == 0
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, (incident / "run.log").read_text()
                time.sleep(0.1)
        assert marker_locked(incident / MARKER_FILE)  # held by the running worker
        os.kill(pid, signal.SIGTERM)
        wait_exit(pid)
        assert "Uvicorn running on" in (incident / "run.log").read_text()
        assert not marker_locked(incident / MARKER_FILE)  # released with the process
        wait_ready(pool, 1)  # a replacement was started
    finally:
        pool.close()


def test_a_dead_worker_falls_back_to_a_cold_spawn(tmp_path: Path, prefect_server: object) -> None:
    pool = WarmPool(1)
    pool.start()
    try:
        wait_ready(pool, 1)
        (idle,) = pool.ready_pids
        os.kill(idle, signal.SIGKILL)
        wait_exit(idle)
        incident = tmp_path / "INC-20260101-000000-eeee"
        incident.mkdir()
        marker = claim_launch(incident)
        assert marker is not None
        pid = pool.spawn(["verify", str(tmp_path / "nothing")], marker, incident / "run.log")
        os.close(marker)
        assert pool.cold_launches == 1 and pool.warm_launches == 0
        assert pid != idle
        wait_exit(pid)
        assert "not a directory" in (incident / "run.log").read_text()
        holder = marker_holder(incident / MARKER_FILE)
        assert holder is not None and holder["phase"] == "spawning"  # set by claim only
    finally:
        pool.close()
