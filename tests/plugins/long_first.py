"""Tests marked ``long`` (a minute or more of mostly waiting: a scheduler's interval,
an escalation timer, a whole documented procedure) are run first. Under xdist the
first tests are dealt round-robin to the workers, so the long ones run side by side
at the start instead of one of them being the last thing a worker does while the
others sit idle."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "long: takes a minute or more; scheduled first")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("long") is None)  # stable
