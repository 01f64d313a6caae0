"""``--launch deployment``: runs start as flow runs of the Prefect deployment, with an
idempotency key, on the session's real Prefect server; a flow run that ends before
its first trail record is reported dead (then retried under the next key)."""

from __future__ import annotations

import contextvars
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from intake.launchers import DeploymentLauncher
from intake.store import IncidentRecord
from runbook.deployment_runs import idempotency_key, run_state, start_run
from runbook.settings import Settings
from runbook.warm_worker import (
    WarmWorker,
    deployments_version,
    pool_deployments,
    preloadable,
)
from tests.test_prefect_yaml import deploy_all

# One work pool and one set of deployments on the shared Prefect server: under xdist these
# files run one at a time (tests/plugins/shared_services.py).
pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_deployments_lock")]


@pytest.fixture(scope="module")
def deployed(prefect_server: Any) -> None:
    proc = deploy_all(prefect_server.url)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def record(incident: str, ref: str | None) -> IncidentRecord:
    now = datetime.now(UTC)
    return IncidentRecord(
        incident_id=incident,
        source="s",
        dedup_key="k",
        alert_id=None,
        title="t",
        target="prod-eu",
        severity="high",
        auto_contain=False,
        window_start=now,
        window_end=now,
        trigger={},
        state="launched",
        attempts=1,
        last_error=None,
        created_at=0.0,
        updated_at=0.0,
        run_ref=ref,
    )


def test_same_key_same_flow_run_next_attempt_new_run(deployed):
    params = {
        "target": "prod-eu",
        "incident_id": "INC-20260101-000000-dep1",
        "initiator": "alert:s",
    }
    first = start_run(
        "breach-response",
        parameters=params,
        idempotency_key=idempotency_key("INC-20260101-000000-dep1"),
    )
    again = start_run(
        "breach-response",
        parameters=params,
        idempotency_key=idempotency_key("INC-20260101-000000-dep1"),
    )
    assert (first.created, again.created) == (True, False)
    assert first.flow_run_id == again.flow_run_id
    assert first.deployment == "breach-response/breach-response"
    retry = start_run(
        "breach-response",
        parameters=params,
        idempotency_key=idempotency_key("INC-20260101-000000-dep1", 2),
    )
    assert retry.flow_run_id != first.flow_run_id
    assert run_state(first.flow_run_id).type == "SCHEDULED"


def test_launcher_probe_reports_a_flow_run_that_crashed_before_its_first_record(deployed, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    settings = Settings(config_path=None, evidence_dir=tmp_path)
    launcher = DeploymentLauncher()
    incident = "INC-20260101-000000-dep2"
    launcher(
        settings,
        target="prod-eu",
        playbook="breach-response",
        incident_id=incident,
        initiator="alert:s",
        trigger={"kind": "alert"},
        severity="high",
        window_start=None,
        window_end=None,
    )
    ref = launcher.run_ref(incident)
    assert ref is not None
    assert launcher.probe(settings, record(incident, ref)) is None  # scheduled: may still start
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(ref, Crashed(message="worker killed"), force=True)
    reason = launcher.probe(settings, record(incident, ref))
    assert reason is not None and "Crashed before its first trail record" in reason
    assert "worker killed" in reason
    (tmp_path / incident).mkdir()
    (tmp_path / incident / "trail.jsonl").write_text("{}\n")
    assert launcher.probe(settings, record(incident, ref)) is None  # it did start
    launcher.close()


def test_unknown_playbook_is_a_config_error(deployed):
    from core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        start_run("no-such-playbook", parameters={}, idempotency_key="k")
    assert "no Prefect deployment" in err.value.detail


@pytest.mark.long(30)
def test_a_warm_process_receives_the_claimed_flow_run_and_runs_it(deployed, tmp_path, monkeypatch):
    """``mcp-ir worker``: the flow run goes, as claimed, to a pre-started process that
    pre-loaded the deployments' flows, which runs it with the flow engine to a final
    state (here the flow fails at once, having no inventory); after a redeploy, the
    ready processes are ones that loaded the new version. The run is scheduled while
    the worker polls only every 30 s: the event stream wakes it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    monkeypatch.delenv("MCP_IR_CONFIG", raising=False)
    worker = WarmWorker(
        "mcp-ir-process", warm=1, query_s=30, log_dir=tmp_path, deployments_check_s=0.5
    )
    # The session's Prefect settings live in a context variable: the thread gets a copy.
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(worker.run,), name="warm-worker", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 180
        while worker.ready < 1:
            assert time.monotonic() < deadline, "no warm process became ready"
            time.sleep(0.1)
        with get_client(sync_client=True) as client:
            deployments = pool_deployments(client, "mcp-ir-process")
            breach = client.read_deployment_by_name("breach-response/breach-response")
        assert preloadable(breach)  # its pull step only enters this checkout
        fetched = [{"prefect.deployments.steps.git_clone": {"repository": "https://x/y"}}]
        assert not preloadable(breach.model_copy(update={"pull_steps": fetched}))
        ((_, loaded),) = worker.ready_children
        assert loaded == deployments_version(deployments)
        time.sleep(1)  # the first poll is done: from now on only an event wakes it
        ref = start_run(
            "breach-response",
            parameters={
                "target": "prod-eu",
                "incident_id": "INC-20260101-000000-warm",
                "initiator": "alert:s",
                "evidence_dir": str(tmp_path / "ev"),
            },
            idempotency_key=idempotency_key("INC-20260101-000000-warm"),
            check_existing=False,
        )
        assert ref.created is None  # not looked up
        while not (state := run_state(ref.flow_run_id)).final:
            assert thread.is_alive(), "the worker stopped polling"
            assert time.monotonic() < deadline, f"flow run still {state.name}"
            time.sleep(0.2)
        assert state.type == "FAILED", state
        assert "no inventory" in state.message
        assert worker.warm_runs >= 1 and worker.started_runs >= 1
        assert worker.event_wakes >= 1  # the Scheduled event woke it
        with get_client(sync_client=True) as client:
            client.update_deployment(breach.id, DeploymentUpdate(description="redeployed"))
            redeployed = deployments_version(pool_deployments(client, "mcp-ir-process"))
        assert redeployed != loaded
        while [v for _, v in worker.ready_children] != [redeployed]:
            assert time.monotonic() < deadline, f"ready: {worker.ready_children}"
            time.sleep(0.2)
    finally:
        worker.stop()
        thread.join(10)
