"""The warm pool behind ``mcp-ir serve``: real worker processes (real imports, a real
Prefect health check) receive the run's arguments, the launch marker and run.log over
a Unix socket; a dead worker falls back to a cold spawn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.processes import lock_held
from intake.warm import WarmPool
from runbook.launch import MARKER_FILE, claim_launch, marker_holder, process_start
from tests.plugins.intake import free_port, healthy, write_inventory

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
    return lock_held(path, exclusive=True)


def marker_fd_flags(pid: int, marker: Path) -> int:
    """The open flags of ``pid``'s descriptor of ``marker`` (/proc/PID/fdinfo)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if os.readlink(f"/proc/{pid}/fd/{fd}") == str(marker):
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            return int(info.split("flags:")[1].split()[0], 8)
    raise AssertionError(f"process {pid} does not hold {marker}")


# A process whose main thread has exited while another thread still runs: what every
# multi-threaded run looks like for a moment as it exits (longer under load).
HALF_EXITED = """
import ctypes, fcntl, os, sys, threading
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
threading.Thread(target=sys.stdin.read).start()
print("locked", flush=True)
ctypes.CDLL(None, use_errno=True).syscall(60, 0)  # SYS_exit: this thread only
"""


def test_a_process_runs_until_its_last_thread_exits(tmp_path: Path) -> None:
    incident = tmp_path / "INC-20260101-000000-cccc"
    incident.mkdir()
    marker = claim_launch(incident)
    assert marker is not None
    os.close(marker)  # the launcher is gone; the process below takes the lock
    child = subprocess.Popen(
        [sys.executable, "-c", HALF_EXITED, str(incident / MARKER_FILE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline() == b"locked\n"
    start = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the main thread did not exit"
        time.sleep(0.01)
    # The main thread is a zombie, the process is not: it still holds the lock.
    assert process_start(child.pid) == int(start)
    assert marker_locked(incident / MARKER_FILE)
    assert claim_launch(incident) is None
    child.stdin.close()  # the last thread ends
    wait_exit(child.pid)
    assert not marker_locked(incident / MARKER_FILE)  # gone = the lock is free
    child.wait(10)


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
        assert healthy(f"http://127.0.0.1:{port}", None), (incident / "run.log").read_text()
        assert marker_locked(incident / MARKER_FILE)  # held by the running worker
        # ... and close-on-exec there: nothing the run starts can keep the lock.
        assert marker_fd_flags(pid, incident / MARKER_FILE) & os.O_CLOEXEC
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
