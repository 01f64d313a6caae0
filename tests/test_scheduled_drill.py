"""The weekly rotation drill really fires: a real Prefect server (on SQLite, and on a
real PostgreSQL as docs/operations.md prescribes for production) gets ``prefect.yaml``
deployed, its scheduler CREATES the drill's scheduled runs, and a process worker runs
one against the sandbox target ``drill-sandbox`` to the end.

Prefect 3.8's scheduler fails every loop on SQLAlchemy 2.1 ("Can't evaluate bulk DML
statement") and creates nothing (FACTS §5); a test that only reads
``deployment.schedules`` cannot see that, this one does. The schedule is the one in
prefect.yaml with its cron replaced by a 30-second interval; once the worker has taken
the first run, the test deactivates the schedule, so exactly one drill runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.trail import Trail, verify_dir
from runbook.prefect_server import PrefectServer, start_prefect_server
from sandbox.polling import wait_until
from sandbox.site import write_inventory
from tests.plugins.site import Site
from tests.test_drill import register_site_ca
from tests.test_prefect_yaml import POOL, ROOT, deploy_all

pytestmark = [
    pytest.mark.long(70),
    pytest.mark.podman,
    pytest.mark.prefect,
    pytest.mark.timeout(900),
]

DRILL = "rotation-drill/rotation-drill"


INTERVAL_S = 30
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def short_schedule_yaml(dest: Path) -> Path:
    """prefect.yaml as shipped, except the drill's cron: every ``INTERVAL_S`` seconds."""
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    drill = next(d for d in doc["deployments"] if d["name"] == "rotation-drill")
    assert drill["schedules"][0]["cron"] == "30 6 * * 1"  # what production gets
    drill["schedules"] = [
        {
            "interval": INTERVAL_S,
            "anchor_date": ANCHOR.isoformat(),
            "timezone": "UTC",
            "active": True,
        }
    ]
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


@pytest.fixture(params=["sqlite", "postgresql"])
def scheduler_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrefectServer]:
    """A Prefect server of its own (the session's must not get a schedule that fires),
    its scheduler looping every second instead of every 60 s."""
    url = None
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres")
        database = f"sched{int(time.time() * 1000) % 10**9}"
        pg.create_database(database)
        url = pg.url(database)
    server = start_prefect_server(
        tmp_path / "prefect",
        database_url=url,
        env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1"},
        timeout_s=240,
    )
    try:
        yield server
    finally:
        server.stop()


def scheduled_runs(server: PrefectServer) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["rotation-drill"]))
        )


def test_the_scheduler_creates_the_drill_runs_and_a_worker_runs_one(
    site: Site, scheduler_server: PrefectServer, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    register_site_ca(site)
    inventory = write_inventory(
        tmp_path / "worker-inventory.yaml", {"drill-sandbox": site.site.target}
    )
    prefect_file = short_schedule_yaml(tmp_path / "prefect.yaml")
    deployed = deploy_all(scheduler_server.url, prefect_file=prefect_file)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]

    with temporary_settings(updates={PREFECT_API_URL: scheduler_server.url}):
        # 1. The scheduler creates the runs (nothing else does: no worker yet).
        runs = wait_until(
            lambda: [r for r in scheduled_runs(scheduler_server) if r.auto_scheduled],
            timeout=90,
            what="the scheduler to create the drill's runs",
        )
        first = min(runs, key=lambda r: r.expected_start_time)
        assert (first.expected_start_time - ANCHOR).total_seconds() % INTERVAL_S == 0
        assert first.state.type.value == "SCHEDULED"
        assert first.parameters["target"] == "drill-sandbox"
        assert first.parameters["policy"] == "auto-approve"
        assert first.parameters["initiator"] == "scheduler"

        # 2. A worker (its environment names the inventory and the evidence dir) runs it.
        env = {
            **site.env,
            "PREFECT_API_URL": scheduler_server.url,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "MCP_IR_CONFIG": str(inventory),
            "MCP_IR_EVIDENCE_DIR": str(site.evidence),
            "MCP_IR_QUIET": "1",
        }
        log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 (closed below)
        worker = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "prefect"),
                "worker",
                "start",
                "--pool",
                POOL,
                "--type",
                "process",
                "--limit",
                "1",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            picked = wait_until(
                lambda: [
                    r for r in scheduled_runs(scheduler_server) if r.state.type.value != "SCHEDULED"
                ],
                timeout=120,
                what="the worker to take a scheduled drill run",
            )
            assert [r.id for r in picked] == [first.id]
            with get_client(sync_client=True) as client:  # one drill is enough
                deployment = client.read_deployment_by_name(DRILL)
                client.update_deployment_schedule(
                    deployment.id, deployment.schedules[0].id, active=False
                )

            def finished() -> Any:
                with get_client(sync_client=True) as client:
                    run = client.read_flow_run(first.id)
                return run if run.state and run.state.is_final() else None

            done = wait_until(finished, timeout=240, what="the worker to finish the drill run")
        finally:
            # The assertions are about the run, which has ended: the worker is killed,
            # as in test_worker. (Prefect 3.8's worker, sent SIGTERM, forwards SIGINT to
            # itself and then took 60 s or more to exit here, once per variant.)
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
            log.close()
    assert done.state.type.value == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]

    # 3. It drilled the sandbox target, end to end, as a drill.
    incidents = [p for p in site.evidence.iterdir() if (p / "trail.jsonl").exists()]
    assert len(incidents) == 1  # the schedule's later runs were never taken
    records = Trail(incidents[0]).records()
    opened = records[0].data
    assert opened["target"] == "drill-sandbox" and opened["drill"] is True
    assert opened["initiator"] == "scheduler"
    started = next(r for r in records if r.kind == "run.started")
    assert started.data["flow_run_id"] == str(first.id) and started.data["deployment_id"]
    ended = [r for r in records if r.kind == "run.ended"]
    assert [r.data["status"] for r in ended] == ["succeeded"]
    phases = {r.data["phase"] for r in records if r.kind == "drill.phase"}
    assert phases == {"rotate token", "renew server certificate"}
    assert (incidents[0] / "drill-report.md").exists()
    assert verify_dir(incidents[0]).ok
