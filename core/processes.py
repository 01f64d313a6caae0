"""Whether a local process is still running (for the commands and sandboxes that
start helper processes and must tell a live one from a dead or reaped one), and
whether a live process holds a file lock (run leases, launch markers)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


def pid_alive(pid: int | None) -> bool:
    """True while ``pid`` runs (also when it belongs to another user). A zombie has
    exited, only its parent has not reaped it yet, so it counts as dead."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    """Waits up to ``timeout`` seconds for ``pid`` to end (see ``pid_alive``); returns
    whether it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def lock_held(path: Path, *, exclusive: bool = False) -> bool:
    """Whether a live process holds a ``flock`` on ``path`` that conflicts with a
    non-blocking probe: a shared probe sees exclusive holders, an exclusive probe sees
    any holder. Needs only read access; a missing file is held by nobody."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
