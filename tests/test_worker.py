"""breach-response through real ``prefect worker start --type process`` workers on the
session's Prefect server: a run triggered with ``run_deployment`` completes on a
worker, and an incident whose worker is killed while it waits at a gate resumes on a
second worker (a new run of the same incident id) without repeating a side effect."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from core.processes import wait_gone
from core.trail import verify_dir
from runbook.launch import new_incident_id
from tests.plugins.site import Site, capture_first, waiting_at
from tests.test_prefect_yaml import POOL, deploy_all

# One work pool and one set of deployments on the shared Prefect server: under xdist these
# files run one at a time (tests/plugins/shared_services.py).
pytestmark = [
    pytest.mark.podman,
    pytest.mark.prefect,
    pytest.mark.usefixtures("prefect_deployments_lock"),
]

# The containment part of breach-response (the steps after it wait for a vendor
# ticket and a log review, which this test is not about): one approval to stop the
# stack, two (not the initiator) to archive the tunnel.
CONTAINMENT = (
    capture_first()
    + """  - key: stop_stack
    approval: {required: 1, group: oncall, timeout: 15m, allow_initiator: true}
  - key: archive_tunnel
    approval: {required: 2, group: oncall, timeout: 15m}
"""
)


@pytest.fixture(scope="module")
def deployed(prefect_server: Any) -> None:
    proc = deploy_all(prefect_server.url)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


class Workers:
    """Starts ``prefect worker`` processes, each in its own process group."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "1", "MCP_IR_QUIET": "1"}
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> subprocess.Popen[bytes]:
        prefect = str(Path(sys.executable).parent / "prefect")
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [prefect, "worker", "start", "--pool", POOL, "--type", "process", "--name", name],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL to the worker's whole process group (the worker and the flow-run
        process it spawned)."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)


@pytest.fixture
def workers(site: Site, tmp_path: Path, deployed: None) -> Iterator[Workers]:
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "breach-response.yaml").write_text(CONTAINMENT)
    site.env["MCP_IR_PLAYBOOK_DIR"] = str(playbooks)
    # The worker's own environment names the inventory and the evidence directory (a
    # run resumed by incident id alone, from the CLI, carries neither).
    env = {
        **site.env,
        "MCP_IR_CONFIG": str(site.inventory),
        "MCP_IR_EVIDENCE_DIR": str(site.evidence),
    }
    w = Workers(env, tmp_path)
    try:
        yield w
    finally:
        w.stop_all()


def start_incident(site: Site, incident: str) -> Any:
    from prefect.deployments import run_deployment

    return run_deployment(
        "breach-response/breach-response",
        parameters={
            "target": site.target,
            "incident_id": incident,
            "initiator": "alice",
            "config_path": str(site.inventory),
            "evidence_dir": str(site.evidence),
        },
        timeout=0,
    )


def flow_run_state(flow_run_id: UUID) -> tuple[str, str | None]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    return (run.state.type.value if run.state else "NONE"), run.work_pool_name


def wait_state(flow_run_id: UUID, wanted: set[str], timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    state = "NONE"
    while time.monotonic() < deadline:
        state, _ = flow_run_state(flow_run_id)
        if state in wanted:
            return state
        time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} still {state} after {timeout}s")


def kill_and_reap(pid: int, timeout: float = 10) -> None:
    """SIGKILLs ``pid`` and waits until it is gone (a zombie counts as gone; reaped
    when it is this process's child)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_gone(pid, timeout):
        raise AssertionError(f"process {pid} survived SIGKILL")
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def project_objects(site: Site) -> list[str]:
    label = f"com.docker.compose.project={site.site.project}"
    return [c.name for c in site.client.containers.list(all=True, filters={"label": label})]


def stop_then_wait_at_archive(site: Site, incident: str) -> None:
    """alice approves stop_stack once the run waits there; returns when the run waits
    at archive_tunnel."""
    site.wait_for(incident, waiting_at("stop_stack"), timeout=180)
    assert site.cli("approve", incident, "stop_stack", "--as", "alice").returncode == 0
    site.wait_for(incident, waiting_at("archive_tunnel"), timeout=120)


@pytest.mark.long(25)
def test_breach_runs_to_completion_on_a_process_worker(site: Site, workers: Workers) -> None:
    worker = workers.start("worker-a")
    incident = new_incident_id()
    run = start_incident(site, incident)
    stop_then_wait_at_archive(site, incident)
    for who in ("bob", "carol"):
        approved = site.cli("approve", incident, "archive_tunnel", "--as", who)
        assert approved.returncode == 0, approved.stderr
    assert wait_state(run.id, {"COMPLETED", "FAILED", "CRASHED"}) == "COMPLETED"
    assert flow_run_state(run.id)[1] == POOL
    assert worker.poll() is None  # the worker ran it and is still serving the pool

    records = site.trail(incident).records()
    assert records[-2].kind == "run.ended" and records[-2].data["status"] == "succeeded"
    started = next(r for r in records if r.kind == "run.started")
    assert started.data["flow_run_id"] == str(run.id)
    assert project_objects(site) == []
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.site.tunnel_id}/archive"]
    assert verify_dir(site.evidence / incident).ok


@pytest.mark.long(45)
def test_worker_killed_at_a_gate_then_a_second_worker_resumes_the_incident(
    site: Site, workers: Workers
) -> None:
    first = workers.start("worker-1")
    incident = new_incident_id()
    run1 = start_incident(site, incident)
    stop_then_wait_at_archive(site, incident)
    assert site.cli("approve", incident, "archive_tunnel", "--as", "bob").returncode == 0
    site.wait_for(
        incident,
        lambda rs: any(r.kind == "approval.accepted" and r.step == "archive_tunnel" for r in rs),
        timeout=60,
    )
    flow_pid = next(
        r.data["pid"] for r in site.trail(incident).records() if r.kind == "run.started"
    )
    # The worker's machine dies at the gate: the worker and the flow-run process it
    # spawned (Prefect starts that in a session of its own) are killed.
    workers.kill(first)
    kill_and_reap(flow_pid)
    assert first.poll() is not None
    assert flow_run_state(run1.id)[0] == "PAUSED"  # Prefect still thinks it waits
    before = site.trail(incident).records()
    assert project_objects(site) == [] and site.mutating_calls() == []

    # The truth, not "running / awaiting approval": no process runs it any more; a
    # decision is answered at once with the command that resumes it on a worker.
    status = site.cli("status", incident)
    assert "status dead (no live process runs it" in status.stdout, status.stdout
    resume = f"mcp-ir breach --incident {incident} --on-worker"
    assert f"resume it with: {resume}" in status.stdout
    refused = site.cli("approve", incident, "archive_tunnel", "--as", "carol")
    assert refused.returncode == 1 and resume in refused.stderr, refused.stderr

    second = workers.start("worker-2")
    # The documented resume: the incident id alone, through the deployment.
    resumed_cli = site.cli("breach", "--incident", incident, "--on-worker")
    assert resumed_cli.returncode == 0, resumed_cli.stderr
    run2 = UUID(resumed_cli.stdout.split("flow run ")[1].split()[0])
    again = site.cli("breach", "--incident", incident, "--on-worker")  # same dead run:
    assert str(run2) in again.stdout  # the idempotency key gives the same flow run
    state = site.wait_for(incident, waiting_at("archive_tunnel", run=2), timeout=180)
    assert state.approvals == ["bob"]  # bob's approval of the same plan still counts
    approved = site.cli("approve", incident, "archive_tunnel", "--as", "carol")
    assert approved.returncode == 0, approved.stderr
    assert wait_state(run2, {"COMPLETED", "FAILED", "CRASHED"}) == "COMPLETED"
    assert second.poll() is None
    assert flow_run_state(run1.id)[0] == "CRASHED"  # superseded by the resumed run

    records = site.trail(incident).records()
    resumed = next(r for r in records if r.kind == "run.resumed")
    assert resumed.data["flow_run_id"] == str(run2)
    assert resumed.data["previous_flow_runs"] == [str(run1.id)]
    superseded = next(r for r in records if r.kind == "run.superseded")
    assert superseded.data["flow_runs"] == [str(run1.id)]
    assert superseded.data["process"] == "not running"  # the machine took it down
    assert {r.step for r in records if r.kind == "step.skipped"} == {
        "capture_evidence",
        "stop_stack",
    }
    captured = [r for r in records if r.kind == "artifact" and r.step == "capture_evidence"]
    assert captured == [r for r in before if r.kind == "artifact" and r.step == "capture_evidence"]
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.site.tunnel_id}/archive"]
    assert records[-2].kind == "run.ended" and records[-2].data["status"] == "succeeded"
    assert verify_dir(site.evidence / incident).ok
