"""Tests marked ``long(seconds)`` (mostly waiting: a scheduler's interval, an
escalation timer, a whole documented procedure) are spread over the xdist workers and
run first, so they run side by side at the start instead of one of them being the
last thing a worker does while the others sit idle.

xdist's ``load`` scheduler first hands each worker a chunk of consecutive tests
(a quarter of its share), then the rest one by one to whoever is free. So the long
tests are dealt to the workers longest first, each to the least loaded (by their
``seconds``), and each worker's long tests are put at the front of its first chunk.
If xdist ever deals differently, the order is still valid: only slower."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "long(seconds): takes about that long, mostly waiting; scheduled first"
    )


def _seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("long")
    return float(marker.args[0]) if marker and marker.args else 0.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    long = sorted((i for i in items if _seconds(i)), key=_seconds, reverse=True)
    if not long:
        return
    rest = [i for i in items if not _seconds(i)]
    dealt: list[list[pytest.Item]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for item in long:
        k = loads.index(min(loads))
        dealt[k].append(item)
        loads[k] += _seconds(item)
    chunk = max(len(items) // workers // 4, 2)  # xdist LoadScheduling's first chunk
    ordered: list[pytest.Item] = []
    for k in range(workers):
        ordered += dealt[k]
        take = max(chunk - len(dealt[k]), 0) if k < workers - 1 else 0
        ordered += rest[:take]
        rest = rest[take:]
    items[:] = ordered + rest
