"""Whether a local process is still running, for the commands and sandboxes that
start helper processes and must tell a live one from a dead or reaped one."""

from __future__ import annotations

import os
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
