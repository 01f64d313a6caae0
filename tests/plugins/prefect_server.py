"""One real Prefect server (SQLite) per test session.

Its URL is exported as PREFECT_API_URL for every subprocess the tests start and set
as a temporary Prefect setting for in-process clients.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from runbook.prefect_server import PrefectServer, start_prefect_server


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = start_prefect_server(tmp_path_factory.mktemp("prefect"))
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
        server.stop()
