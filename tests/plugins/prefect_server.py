"""One real Prefect server (SQLite) per test run (shared by xdist workers).

Its URL is exported as PREFECT_API_URL for every subprocess the tests start and set
as a temporary Prefect setting for in-process clients.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runbook.prefect_server import PrefectServer, start_prefect_server
from tests.plugins.shared_services import shared_dir, shared_service


def _start(home: Path) -> dict[str, Any]:
    server = start_prefect_server(home)
    return {"url": server.url, "pid": server.pid, "log": str(server.log_path)}


@pytest.fixture(scope="session")
def prefect_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    shared = shared_dir(request.config)
    if shared is None:
        server = start_prefect_server(tmp_path_factory.mktemp("prefect"))
    else:
        found = shared_service(shared, "prefect", _start)
        server = PrefectServer(found["url"], None, Path(found["log"]), found["pid"])
    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.url
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.url}):
            yield server
    finally:
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old
        if shared is None:
            server.stop()  # else the xdist controller stops it when every worker is done


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stops the temporary Prefect servers a test made Prefect start in this process
    (an in-process flow call without ``PREFECT_API_URL``) while the output streams are
    still open: Prefect's own ``atexit`` stop logged to a stream pytest had closed."""
    module = sys.modules.get("prefect.server.api.server")
    if module is not None:
        for server in list(module.SubprocessASGIServer._instances.values()):
            server.stop()
