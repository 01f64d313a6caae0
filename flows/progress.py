"""Progress lines for the person at the terminal and the Prefect UI."""

from __future__ import annotations

import contextlib
import os
import sys

from prefect import get_run_logger


def emit(line: str) -> None:
    """Progress for the person at the terminal (stderr, so stdout stays parseable) and
    for the Prefect UI (the run's log)."""
    if os.environ.get("MCP_IR_QUIET") != "1":
        print(line, file=sys.stderr, flush=True)
    with contextlib.suppress(Exception):  # outside a run there is no run logger
        get_run_logger().info(line.strip())
