"""``mcp-ir serve`` as an operator starts it: the routes it mounts (Slack only when
configured), and the exit code and message for bad configuration."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.plugins.intake import SECRETS, free_port, healthy, write_inventory
from tests.plugins.site import mcp_ir_command

SLACK_ENV = {"MCP_IR_TEST_SLACK_TOKEN": "xoxb-test-0000", "MCP_IR_TEST_SLACK_SIGNING": "s3cr3t"}


def serve_cmd(inventory: Path, evidence: Path, *extra: str) -> list[str]:
    return mcp_ir_command(inventory, evidence, "serve", *extra)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)


def start(cmd: list[str], procs: list[subprocess.Popen[bytes]], port: int) -> str:
    env = {**os.environ, **SECRETS, **SLACK_ENV}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    if healthy(url, proc):
        return url
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    raise AssertionError("mcp-ir serve did not answer /healthz")


def with_slack(inventory: Path) -> Path:
    doc = yaml.safe_load(inventory.read_text())
    doc["slack"] = {
        "token_env": "MCP_IR_TEST_SLACK_TOKEN",
        "signing_secret_env": "MCP_IR_TEST_SLACK_SIGNING",
        "base_url": "http://127.0.0.1:9/api/",
    }
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    return inventory


def test_slack_route_is_mounted_only_when_configured(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    plain_dir, slack_dir = tmp_path / "plain", tmp_path / "slack"
    plain_dir.mkdir()
    slack_dir.mkdir()
    plain_port, slack_port = free_port(), free_port()
    plain = start(
        serve_cmd(
            write_inventory(plain_dir), plain_dir / "ev", "--port", str(plain_port), "--warm", "0"
        ),
        procs,
        plain_port,
    )
    slack = start(
        serve_cmd(
            with_slack(write_inventory(slack_dir)),
            slack_dir / "ev",
            "--port",
            str(slack_port),
            "--warm",
            "0",
        ),
        procs,
        slack_port,
    )
    assert httpx.post(f"{plain}/slack/interactions", content=b"payload=x").status_code == 404
    # Mounted: an unsigned click is refused, and the attempt is logged for security.
    # (Both servers run with --warm 0: no Prefect server is needed here.)
    unsigned = httpx.post(f"{slack}/slack/interactions", content=b"payload=x")
    assert unsigned.status_code == 401
    assert (slack_dir / "ev" / "_security" / "slack-rejected.jsonl").exists()
    for url in (plain, slack):
        metrics = httpx.get(f"{url}/metrics").text
        assert 'mcp_ir_alerts_received_total{source="generic-src"} 0.0' in metrics
        assert "mcp_ir_launch_workers_ready" in metrics


@pytest.mark.parametrize(
    ("args", "env_drop", "message"),
    [
        (["--port", "0"], None, "--port: 0 is not a TCP port"),
        (["--warm", "99"], None, "--warm: 99 is not between 0 and 32"),
        ([], "INTAKE_SPLUNK_SECRET", "environment variable INTAKE_SPLUNK_SECRET is not set"),
    ],
)
def test_bad_configuration_exits_2_naming_the_problem(
    tmp_path: Path, args: list[str], env_drop: str | None, message: str
) -> None:
    env = {**os.environ, **SECRETS}
    if env_drop:
        env.pop(env_drop)
    cmd = serve_cmd(write_inventory(tmp_path), tmp_path / "ev", *args, "--port", str(free_port()))
    if "--port" in args:
        cmd = serve_cmd(write_inventory(tmp_path), tmp_path / "ev", *args)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    for secret in SECRETS.values():
        assert secret not in proc.stderr
