"""Spreads the long tests over the xdist workers.

Tests marked ``long(seconds)`` are mostly waiting (a scheduler's interval, an
escalation timer, a whole documented procedure). Left in collection order they
ended up one after another on one worker, or last, while the other workers sat
idle. xdist's ``load`` scheduler first hands each worker a chunk of consecutive tests
(a quarter of its share), then the rest one by one to whoever is free. So the long
tests are dealt longest first, each to the least loaded worker, into that worker's
first chunk. The modules that hold ``prefect_deployments_lock`` go to one worker
together, as one unit: spread over several they only waited for each other.

If xdist ever deals differently, the order is still a valid order: only slower."""

from __future__ import annotations

import os

import pytest

LOCK = "prefect_deployments_lock"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "long(seconds): takes about that long, mostly waiting; spread over workers"
    )


def _seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("long")
    return float(marker.args[0]) if marker and marker.args else 0.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    if workers == 1:
        return
    locked = [i for i in items if LOCK in getattr(i, "fixturenames", ())]
    units = [[i] for i in items if _seconds(i) and i not in locked]
    if locked:
        units.append(locked)
    units.sort(key=lambda unit: sum(map(_seconds, unit)), reverse=True)
    dealt: list[list[pytest.Item]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for unit in units:
        k = loads.index(min(loads))
        dealt[k] += unit
        loads[k] += sum(map(_seconds, unit))
    placed = {id(i) for unit in units for i in unit}
    rest = [i for i in items if id(i) not in placed]
    chunk = max(len(items) // workers // 4, 2)  # xdist LoadScheduling's first chunk
    ordered: list[pytest.Item] = []
    for k in range(workers):
        # The worker's own short tests first: the session's servers start meanwhile.
        take = max(chunk - len(dealt[k]), 0)
        ordered += rest[:take] + dealt[k]
        rest = rest[take:]
    items[:] = ordered + rest
