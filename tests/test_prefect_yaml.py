"""``prefect.yaml``: ``prefect deploy --all`` against the session's real Prefect server
creates the three deployments on the process work pool, the drill on its cron
schedule with its own parameters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.site import run_text

ROOT = Path(__file__).resolve().parent.parent
POOL = "mcp-ir-process"
DEPLOYMENTS = {
    "breach-response/breach-response": "flows/breach_response.py:breach_response",
    "teardown/teardown": "flows/teardown.py:teardown",
    "rotation-drill/rotation-drill": "flows/rotation_drill.py:rotation_drill",
    "posture-audit/posture-audit": "flows/posture_audit.py:posture_audit",
}

# One work pool and one set of deployments on the shared Prefect server: under xdist these
# files run one at a time (tests/plugins/shared_services.py).
pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_deployments_lock")]


def prefect_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``prefect`` CLI of this virtualenv, run from the repository root."""
    return run_text(
        [str(Path(sys.executable).parent / "prefect"), *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        timeout=300,
        check=False,
    )


def deploy_all(
    server_url: str, prefect_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Creates the process work pool (idempotent) and runs ``prefect deploy --all``
    (of ``prefect_file`` when given, from the repository root)."""
    env = {
        **os.environ,
        "PREFECT_API_URL": server_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
    }
    pool = prefect_cli("work-pool", "create", POOL, "--type", "process", "--overwrite", env=env)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    extra = ["--prefect-file", str(prefect_file)] if prefect_file else []
    return prefect_cli("--no-prompt", "deploy", "--all", *extra, env=env)


def read_deployment(name: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


@pytest.mark.long(40)
def test_deploy_all_creates_the_three_deployments_and_the_drill_schedule(
    prefect_server: Any,
) -> None:
    proc = deploy_all(prefect_server.url)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name, entrypoint in DEPLOYMENTS.items():
        deployment = read_deployment(name)
        assert deployment.entrypoint == entrypoint
        assert deployment.work_pool_name == POOL
        # No path frozen at deploy time: each worker finds its checkout when a run starts.
        assert deployment.pull_steps == [{"runbook.deploy_steps.enter_checkout": {}}]
    drill = read_deployment("rotation-drill/rotation-drill")
    assert [s.schedule.cron for s in drill.schedules] == ["30 6 * * 1"]
    assert drill.schedules[0].schedule.timezone == "UTC" and drill.schedules[0].active
    assert drill.parameters["target"] == "drill-sandbox"
    assert drill.parameters["policy"] == "auto-approve"
    assert read_deployment("breach-response/breach-response").schedules == []
    audit = read_deployment("posture-audit/posture-audit")
    assert [s.schedule.cron for s in audit.schedules] == ["15 5 * * *"]
    assert audit.schedules[0].active and audit.parameters["targets"] is None
