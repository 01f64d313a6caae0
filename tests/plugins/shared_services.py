"""One Prefect server and one container engine per test run, also under pytest-xdist.

Without xdist each session fixture starts its service and stops it at the end, as
before. With ``-n N`` the controller makes a short shared directory and hands it to
every worker (``pytest_configure_node``); the first worker that needs a service
starts it there under a file lock and writes how to reach it, the others attach,
and the controller stops whatever was started once every worker is done. So a run
with three workers still has one Prefect server and one podman service.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SHARED_KEY = "mcp_ir_shared_dir"
_shared_key = pytest.StashKey[Path]()


def shared_dir(config: pytest.Config) -> Path | None:
    """The run's shared directory in an xdist worker, ``None`` otherwise."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None or SHARED_KEY not in workerinput:
        return None
    return Path(workerinput[SHARED_KEY])


def shared_service(
    directory: Path, name: str, start: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """The description of service ``name``: read from ``directory`` when another
    worker started it, else made by ``start(directory / name)`` and written there."""
    with open(directory / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = directory / f"{name}.json"
        if state.exists():
            return json.loads(state.read_text())
        description = start(directory / name)
        state.write_text(json.dumps(description))
        return description


@pytest.fixture(scope="module")
def prefect_deployments_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """Held by a worker while it runs a module that creates the work pool and the
    deployments on the shared Prefect server: such modules run one at a time, as they
    would without xdist (another one's `prefect deploy` would change the deployments
    under it)."""
    directory = shared_dir(request.config)
    if directory is None:
        yield
        return
    with open(directory / "prefect-deployments.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _stop_prefect(description: dict[str, Any]) -> None:
    from runbook.prefect_server import PrefectServer

    PrefectServer(description["url"], None, Path(description["log"]), description["pid"]).stop()


def _stop_engine(description: dict[str, Any]) -> None:
    from sandbox.engine import stop_engine

    stop_engine(Path(description["workdir"]))


STOPPERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "prefect": _stop_prefect,
    "engine": _stop_engine,
}


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is None and getattr(
        config.option, "numprocesses", None
    ):
        # Short: podman's socket path must stay under 100 characters.
        config.stash[_shared_key] = Path(tempfile.mkdtemp(prefix="mcp-ir-"))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    directory = node.config.stash.get(_shared_key, None)
    if directory is not None:
        node.workerinput[SHARED_KEY] = str(directory)


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = config.stash.get(_shared_key, None)
    if directory is None:
        return
    for name, stop in STOPPERS.items():
        state = directory / f"{name}.json"
        if state.exists():
            stop(json.loads(state.read_text()))
    shutil.rmtree(directory, ignore_errors=True)
