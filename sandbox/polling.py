"""Waiting for a condition instead of sleeping a fixed time (tests and benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None], timeout: float = 30, what: str = "", interval: float = 0.2
) -> T:
    """Calls ``predicate`` every ``interval`` s until it returns something truthy, and
    returns that; after ``timeout`` s raises ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what or predicate}")
