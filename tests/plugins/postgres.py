"""A real PostgreSQL (Debian's ``postgresql`` package, installed by scripts/setup.sh)
for the tests that run Prefect the way docs/operations.md does in production: a
throwaway cluster made with ``initdb`` in a temporary directory, started with
``pg_ctl`` on a free loopback port, stopped at the end of the session.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is
made and run by the ``postgres`` system user (created by the package)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Debian keeps the server binaries per major version, off PATH.
BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))


@dataclass(frozen=True)
class Postgres:
    port: int
    datadir: Path

    def url(self, database: str = "prefect") -> str:
        """The SQLAlchemy URL Prefect takes in PREFECT_API_DATABASE_CONNECTION_URL."""
        return f"postgresql+asyncpg://prefect:prefect@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        """A fresh, empty database: one left by an earlier attempt (a re-run) is dropped."""
        where = ["-h", "127.0.0.1", "-p", str(self.port)]
        _as_owner([_binary("dropdb"), *where, "--if-exists", "--force", name])
        _as_owner(
            [_binary("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-O", "prefect", name]
        )


def _binary(name: str) -> str:
    for directory in reversed(BINS):
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: run scripts/setup.sh (installs Debian's postgresql)")
    return found


def _as_owner(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    # Not under pytest's basetemp: that is private to root (0700), and the cluster's
    # owner must reach its directory.
    root = Path(tempfile.mkdtemp(prefix="mcp-ir-pg-"))
    datadir, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    _as_owner(
        [
            _binary("initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]
    )
    port = _free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    _as_owner(
        [
            _binary("pg_ctl"),
            "-D",
            str(datadir),
            "-o",
            options,
            "-l",
            str(root / "pg.log"),
            "-w",
            "start",
        ]
    )
    try:
        psql = [
            _binary("psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
        ]
        _as_owner([*psql, "-c", "CREATE ROLE prefect LOGIN PASSWORD 'prefect'"])
        pg = Postgres(port, datadir)
        pg.create_database("prefect")
        yield pg
    finally:
        _as_owner([_binary("pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)
