"""With ``MCP_IR_TEST_TIMINGS=FILE``, appends each test phase's duration to FILE as it
ends (``seconds<TAB>phase<TAB>node id``), so a long run can be read while it runs.
A fourth column names the xdist worker that ran it."""

from __future__ import annotations

import os

import pytest


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = os.environ.get("MCP_IR_TEST_TIMINGS")
    # Under xdist the controller receives every worker's reports: it alone writes.
    if path and not os.environ.get("PYTEST_XDIST_WORKER"):
        with open(path, "a", encoding="utf-8") as out:
            node = getattr(report, "node", None)
            worker = getattr(node, "gateway", None)
            out.write(
                f"{report.duration:.2f}\t{report.when}\t{report.nodeid}\t{getattr(worker, 'id', '-')}\n"
            )
