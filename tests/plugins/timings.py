"""With ``MCP_IR_TEST_TIMINGS=FILE``, appends each test phase's duration to FILE as it
ends (``seconds<TAB>phase<TAB>node id``), so a long run can be read while it runs."""

from __future__ import annotations

import os

import pytest


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = os.environ.get("MCP_IR_TEST_TIMINGS")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"{report.duration:.2f}\t{report.when}\t{report.nodeid}\n")
