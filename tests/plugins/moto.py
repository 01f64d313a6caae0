"""A real moto server over HTTP for AWS (Secrets Manager, S3, CloudWatch Logs)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sandbox.moto import moto_env, start_moto


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Starts ``moto_server`` once per session and yields its endpoint URL. Tests that
    use boto3 get it through ``aws_env`` (AWS_ENDPOINT_URL and dummy credentials)."""
    proc, url = start_moto(what="moto server")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in moto_env(moto_server).items():
        monkeypatch.setenv(name, value)
    os.environ.pop("AWS_PROFILE", None)
    return moto_server
