"""Who runs an incident, and what a resume does to the run it replaces.

The trail's epoch and lease (``core.trail``: :meth:`Trail.claim`, :func:`run_owner`)
make one run the incident's only writer. This module supplies what a run records
about itself when it claims the trail, and what a resume does to the process it
supersedes: on the same machine, that process (identified by pid AND its start
time, so a reused pid is never hit) is killed; elsewhere it cannot be reached, and
the fence alone keeps it from writing. Either way the resume says so in the trail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from typing import Any

from runbook.launch import process_start


def run_meta(flow_run_id: str, deployment_id: str | None) -> dict[str, Any]:
    """What a run records about itself in ``run.started`` / ``run.resumed`` (and in the
    trail's epoch file): its Prefect flow run and deployment, and the process that
    holds the lease."""
    pid = os.getpid()
    return {
        "flow_run_id": flow_run_id,
        "deployment_id": deployment_id,
        "pid": pid,
        "pid_start": process_start(pid),
        "host": socket.gethostname(),
    }


def stop_previous(previous: dict[str, Any] | None, timeout_s: float = 10.0) -> dict[str, Any]:
    """Deals with the process of the run being superseded (``previous``: the owner
    returned by :meth:`Trail.claim`). Returns what the ``run.superseded`` record says:
    ``process`` is ``killed`` (same host, SIGKILLed and gone), ``fenced`` (alive on
    another host, or would not die: it can no longer write to the trail), or
    ``not running`` (its lease was free)."""
    if previous is None:
        return {"process": "not running", "previous": None}
    who = {k: previous.get(k) for k in ("epoch", "flow_run_id", "pid", "host") if k in previous}
    if not previous.get("alive"):
        return {"process": "not running", "previous": who}
    pid, start = previous.get("pid"), previous.get("pid_start")
    if previous.get("host") != socket.gethostname() or not isinstance(pid, int) or start is None:
        return {
            "process": "fenced",
            "previous": who,
            "detail": f"still alive on {previous.get('host')}; it can no longer write to the trail",
        }
    if process_start(pid) == start:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while process_start(pid) == start and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_start(pid) == start:
            return {
                "process": "fenced",
                "previous": who,
                "detail": f"pid {pid} survived SIGKILL for {timeout_s:.0f}s; it can no longer write",
            }
    return {"process": "killed", "previous": who, "detail": f"pid {pid} on {previous.get('host')}"}
