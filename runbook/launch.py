"""Starting (and resuming) incidents: the one entry point for the CLI, the intake
and the demo."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core import failpoints
from core.trail import TRAIL_FILE, check_incident_id
from runbook.playbook import load_playbook
from runbook.settings import Settings

PLAYBOOK_FLOWS = {
    "breach-response": "flows.breach_response:breach_response",
    "teardown": "flows.teardown:teardown",
    "rotation-drill": "flows.rotation_drill:rotation_drill",
}


def new_incident_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"INC-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def flow_for(playbook: str) -> Any:
    """The flow that runs a playbook: its own named flow, else the generic one."""
    if playbook in PLAYBOOK_FLOWS:
        module, _, name = PLAYBOOK_FLOWS[playbook].partition(":")
        return getattr(__import__(module, fromlist=[name]), name)
    from functools import partial

    from flows.run_playbook import run_playbook

    return partial(run_playbook, playbook=playbook)


def launch_incident(
    settings: Settings,
    *,
    target: str,
    playbook: str = "breach-response",
    incident_id: str | None = None,
    initiator: str,
    trigger: dict[str, Any] | None = None,
    severity: str = "high",
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    policy: str = "standard",
    wait: bool = False,
    spawner: Spawner | None = None,
) -> str:
    """Starts a playbook run for an incident and returns the incident id.

    With ``wait`` the flow runs in this process until it ends (the CLI); without,
    a detached ``mcp-ir`` process runs it (the intake), its output in
    ``<incident dir>/run.log``. Idempotent on ``incident_id`` when not waiting: an
    incident that already has a trail, or whose ``launch.marker`` is held by a live
    launcher or run, is not started again (see :func:`claim_launch`). ``spawner``
    starts the detached run (default :func:`spawn_process`; ``mcp-ir serve`` hands it
    to a pre-started worker, ``intake.warm``).

    Raises:
        ConfigError: unknown target or playbook, invalid playbook for the target.
    """
    incident_id = check_incident_id(incident_id or new_incident_id())
    inventory = settings.inventory()
    inventory.target(target)
    flow_for(playbook)
    load_playbook(
        playbook,
        inventory=inventory,
        target=target,
        context={
            "trigger": {
                "kind": "manual",
                "severity": severity,
                "auto_contain": False,
                **(trigger or {}),
            },
            "severity": severity,
            "policy": policy,
        },
    )
    if wait:
        flow_fn = flow_for(playbook)
        # A test kills the run here, before its first trail record (the intake then
        # shows the launch as failed and retries it).
        failpoints.reach("run", "before_first_record")
        flow_fn(
            target=target,
            incident_id=incident_id,
            initiator=initiator,
            trigger=trigger,
            severity=severity,
            window_start=window_start.isoformat() if window_start else None,
            window_end=window_end.isoformat() if window_end else None,
            policy=policy,
            config_path=str(settings.config_path) if settings.config_path else None,
            evidence_dir=str(settings.evidence_dir),
        )
        return incident_id
    incident_dir = settings.incident_dir(incident_id)
    if (incident_dir / TRAIL_FILE).exists():
        return incident_id
    incident_dir.mkdir(parents=True, exist_ok=True)
    marker = claim_launch(incident_dir)
    if marker is None:
        return incident_id
    argv = [
        "--evidence-dir",
        str(settings.evidence_dir),
        *(["--config", str(settings.config_path)] if settings.config_path else []),
        "run",
        playbook,
        "--target",
        target,
        "--incident",
        incident_id,
        "--as",
        initiator,
        "--severity",
        severity,
        "--policy",
        policy,
        "--trigger-json",
        json.dumps(trigger or {}),
    ]
    if window_start:
        argv += ["--window-start", window_start.isoformat()]
    if window_end:
        argv += ["--window-end", window_end.isoformat()]
    try:
        pid = (spawner or spawn_process)(argv, marker, incident_dir / "run.log")
    except OSError:
        os.close(marker)
        (incident_dir / MARKER_FILE).unlink(missing_ok=True)  # nothing was started
        raise
    try:
        _write_marker(marker, pid, "spawned")
    finally:
        os.close(marker)
    return incident_id


Spawner = Callable[[list[str], int, Path], int]
"""Starts ``mcp-ir ARGV`` detached, giving it the marker descriptor (so the run holds
the marker's lock) and ``run.log`` as stdout/stderr; returns the run's pid. Raises
``OSError`` when nothing was started."""


def spawn_process(argv: list[str], marker_fd: int, log_path: Path) -> int:
    """The default :data:`Spawner`: a new ``python -m runbook.cli`` in its own session."""
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "runbook.cli", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=os.environ.copy(),
            pass_fds=(marker_fd,),
        )
    _reap(child)
    return child.pid


# -- the launch marker ---------------------------------------------------------------
#
# ``<incident dir>/launch.marker`` is created with O_CREAT|O_EXCL BEFORE the run is
# spawned, so two launches of one incident (intake crash recovery, a retry) never both
# spawn: the trail appears only once the spawned run has started, and without the
# marker a crash between the spawn and that first record would let a retry start a
# second run. The launcher holds an ``flock`` on the marker and the spawned run
# inherits that descriptor, so the lock is held while either of them lives; the
# marker's content names the holder: ``{"pid", "start", "phase"}`` — the launcher
# ("spawning"), then the run ("spawned"); ``start`` is the process's start time in
# /proc, which guards against pid reuse.
#
# A marker is stale — and taken over by the next launch — only when there is still no
# trail, nobody holds its lock, AND the process it names is not alive with that start
# time: the launcher crashed before spawning, or the run died before its first record.
# Every claim runs under ``launch.lock`` (held for microseconds), so no claimant can
# look at a marker between another's create and its lock.

MARKER_FILE = "launch.marker"
LOCK_FILE = "launch.lock"
_children: list[subprocess.Popen[bytes]] = []


def claim_launch(incident_dir: Path) -> int | None:
    """Takes the right to spawn the incident's run.

    Returns:
        An open descriptor of the marker holding its lock (pass it to the run, then
        close it), or None when the incident has a trail or a live launch holds it.
    """
    path = incident_dir / MARKER_FILE
    with open(incident_dir / LOCK_FILE, "a+b") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if (incident_dir / TRAIL_FILE).exists():
            return None
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except FileExistsError:
            fd = os.open(path, os.O_RDWR)
            if not _lock(fd) or not _names_dead_process(fd):
                os.close(fd)
                return None
        else:
            _lock(fd)
        _write_marker(fd, os.getpid(), "spawning")
        return fd


def marker_holder(path: Path) -> dict[str, Any] | None:
    """The marker's content (``pid``, ``start``, ``phase``, ``at``), if readable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def process_start(pid: int) -> int | None:
    """The process's start time (clock ticks since boot) while it runs, else None.

    A process is gone once every one of its threads has exited. Its main thread alone
    is not enough: when a multi-threaded process exits, the main thread shows as a
    zombie while the other threads are still on their way out, and those still share
    its descriptors (a run's launch-marker lock is released only after the last one
    has gone: microseconds to milliseconds, longer under load).
    """
    fields = _stat_fields(f"/proc/{pid}/stat")
    if fields is None:
        return None
    if fields[0] in ("Z", "X") and not _other_threads_alive(pid):
        return None
    return int(fields[19])


def _stat_fields(path: str) -> list[str] | None:
    """The fields of a ``/proc/.../stat`` after the command name, or None if gone."""
    try:
        stat = Path(path).read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def _other_threads_alive(pid: int) -> bool:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
        if fields is not None and fields[0] not in ("Z", "X"):
            return True
    return False


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _names_dead_process(fd: int) -> bool:
    """True unless the marker names a process that still runs (same start time).

    An empty or torn marker (a crash between create and write) names nobody.
    """
    raw = os.pread(fd, 4096, 0)
    try:
        data = json.loads(raw)
        pid, start = int(data["pid"]), data["start"]
    except (ValueError, KeyError, TypeError):
        return True
    return start is None or process_start(pid) != start


def _write_marker(fd: int, pid: int, phase: str) -> None:
    text = json.dumps(
        {"pid": pid, "start": process_start(pid), "phase": phase, "at": time.time()},
        sort_keys=True,
    ).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)
    os.fsync(fd)


def _reap(child: subprocess.Popen[bytes]) -> None:
    """Keeps the handle so a long-lived launcher (``serve``) reaps finished runs."""
    _children.append(child)
    _children[:] = [c for c in _children if c.poll() is None]
