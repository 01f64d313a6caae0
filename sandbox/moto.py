"""moto's server: AWS (Secrets Manager, S3, CloudWatch Logs) over HTTP on a loopback
port, as the sandbox host, the tests and the benchmarks start it, and the environment
that points boto3 at it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import IO, Any

from sandbox.serve import free_port

REGION = "us-east-1"


def moto_env(url: str, credential: str = "testing") -> dict[str, str]:
    """AWS_ENDPOINT_URL, dummy credentials and the region: what boto3 needs to use
    the moto server at ``url``."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": credential,
        "AWS_SECRET_ACCESS_KEY": credential,
        "AWS_DEFAULT_REGION": REGION,
    }


def secrets_client(url: str) -> Any:
    """A boto3 Secrets Manager client of the moto server at ``url``."""
    import boto3

    return boto3.client(
        "secretsmanager",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def start_moto(
    *, stdout: int | IO[bytes] = subprocess.DEVNULL, timeout_s: float = 30, what: str = "moto"
) -> tuple[subprocess.Popen[bytes], str]:
    """Starts ``moto.server`` on a free loopback port (output to ``stdout``) and waits
    until it accepts connections; returns the process and its URL. ``RuntimeError``
    naming ``what`` (the process stopped) when it does not start in ``timeout_s``."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=stdout,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.terminate()
                proc.wait(10)
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)
