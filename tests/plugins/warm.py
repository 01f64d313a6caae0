"""Stops this test process's warm ``mcp-ir`` zygote (tests/warm_cli.py) at the end."""

from __future__ import annotations

import pytest

from tests.warm_cli import Zygote


def pytest_unconfigure(config: pytest.Config) -> None:
    Zygote.shutdown()
