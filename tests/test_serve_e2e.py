"""``mcp-ir serve`` end to end: the real server in a subprocess, the real launcher
(a detached ``mcp-ir run``), a real Prefect server, real podman containers and the
sandbox Tunnels API. A signed alert contains the stack without a human (break-glass)
and the run then waits at the next human gate; duplicates, a ``kill -9`` of the
server and a second launch all end in one run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.trail import Record
from intake.auth import signed_headers
from runbook.gates import gate_state
from runbook.launch import MARKER_FILE, launch_incident, marker_holder, process_start
from runbook.settings import Settings
from sandbox.site import write_inventory
from tests.plugins.intake import free_port, healthy
from tests.plugins.site import Site

pytestmark = [pytest.mark.podman, pytest.mark.prefect]

SECRET_ENV = "MCP_IR_TEST_INTAKE_SECRET"
SECRET = "serve-e2e-secret-5f0c9a"
CONTAINMENT = ("capture_evidence", "stop_stack")


@dataclass
class Serve:
    """A running ``mcp-ir serve`` subprocess."""

    proc: subprocess.Popen[bytes]
    url: str

    def post(self, source: str, payload: Any, *, secret: str = SECRET) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = signed_headers(secret.encode(), body)
        return httpx.post(f"{self.url}/alerts/{source}", content=body, headers=headers, timeout=30)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def intake_section(target: str) -> dict[str, Any]:
    return {
        "dedup_window": "1h",
        "auto_contain_at": "high",
        "max_body_bytes": 4096,
        "sources": {
            "siem": {
                "format": "generic",
                "secrets_env": [SECRET_ENV],
                "rules": [{"match": {"title": "MCP tunnel*"}, "target": target}],
            }
        },
    }


def alert(alert_id: str, severity: str = "critical") -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "title": "MCP tunnel token seen on paste site",
        "severity": severity,
    }


@pytest.fixture
def serve_site(site: Site) -> Iterator[Site]:
    """The site's inventory with an ``intake:`` section; runs started by the intake are
    killed at the end (they are detached from the test's processes)."""
    write_inventory(
        site.inventory, {site.target: site.site.target}, intake=intake_section(site.target)
    )
    site.env[SECRET_ENV] = SECRET
    yield site
    for marker in site.evidence.glob(f"INC-*/{MARKER_FILE}"):
        holder = marker_holder(marker)
        alive = holder and process_start(holder["pid"]) == holder["start"]
        if alive and holder["phase"] == "spawned":  # a detached run: its own session
            os.killpg(holder["pid"], signal.SIGKILL)


def start_serve(site: Site, started: list[Serve]) -> Serve:
    port = free_port()
    cmd = [sys.executable, "-m", "runbook.cli", "--config", str(site.inventory)]
    cmd += ["--evidence-dir", str(site.evidence), "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=site.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    serve = Serve(proc, f"http://127.0.0.1:{port}")
    started.append(serve)
    if healthy(serve.url, proc):
        return serve
    serve.kill()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    raise AssertionError(f"mcp-ir serve did not start: {err[-2000:]}")


@pytest.fixture
def servers() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.kill()


def wait_ready(serve: Serve, workers: int = 2, timeout: float = 120) -> None:
    """Waits until the server's warm run processes are ready (as ``/metrics`` says)."""
    deadline = time.monotonic() + timeout
    while serve.metrics()[("mcp_ir_launch_workers_ready", ())] < workers:
        if time.monotonic() > deadline:
            raise AssertionError("the warm run processes never became ready")
        time.sleep(0.5)


def waiting_after_containment(records: list[Record]) -> Any:
    """The first gate after containment that waits for people, if any."""
    steps = [r.step for r in records if r.kind == "step.planned" and r.step not in CONTAINMENT]
    for step in steps:
        state = gate_state(records, step)
        if state.status == "waiting":
            return state
    return None


def incident_dirs(site: Site) -> list[str]:
    return sorted(p.name for p in site.evidence.glob("INC-*"))


def project_containers(site: Site) -> list[str]:
    label = f"com.docker.compose.project={site.site.project}"
    return [
        c.name
        for c in site.client.containers.list(all=True, filters={"label": label})
        if c.status == "running"
    ]


def flow_runs_named(name: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )
    return len(runs)


@pytest.mark.long(25)
def test_signed_alert_contains_the_stack_once_then_waits_for_people(
    serve_site: Site, servers: list[Serve]
) -> None:
    site = serve_site
    assert len(project_containers(site)) == 2
    serve = start_serve(site, servers)
    wait_ready(serve)

    first = serve.post("siem", alert("siem-7731"))
    assert first.status_code == 202, first.text
    incident = first.json()["incident_id"]
    again = serve.post("siem", alert("siem-7731"))
    assert again.status_code == 200
    assert again.json() == {"incident_id": incident, "status": "duplicate", "decision": "duplicate"}

    gate = site.wait_for(incident, waiting_after_containment, timeout=150)
    records = site.trail(incident).records()

    # Containment ran without a person: both steps were auto, as break-glass, and the
    # trail says which alert triggered it.
    assert project_containers(site) == []
    for step in CONTAINMENT:
        auto = [r for r in records if r.kind == "gate.auto" and r.step == step]
        assert len(auto) == 1
        assert any(r.kind == "step.succeeded" and r.step == step for r in records)
    stop_auto = next(r for r in records if r.kind == "gate.auto" and r.step == "stop_stack")
    assert stop_auto.data["reason"].startswith("break-glass: alert of severity critical")
    assert stop_auto.data["trigger"]["alert_id"] == "siem-7731"
    assert stop_auto.data["trigger"]["source"] == "siem"
    assert stop_auto.data["trigger"]["auto_contain"] is True
    opened = next(r for r in records if r.kind == "incident.opened")
    assert opened.data["initiator"] == "alert:siem"
    assert opened.data["trigger"]["kind"] == "alert"
    # Everything after containment keeps its human gate.
    assert gate.step not in CONTAINMENT and gate.group and gate.required >= 1
    assert not any(r.kind == "gate.auto" and r.step == gate.step for r in records)

    # One incident, one run: the duplicate started nothing.
    assert incident_dirs(site) == [incident]
    assert [r.kind for r in records].count("run.started") == 1
    assert "run.resumed" not in [r.kind for r in records]
    assert flow_runs_named(incident) == 1
    holder = marker_holder(site.evidence / incident / MARKER_FILE)
    assert holder is not None and holder["phase"] == "spawned"

    listed = site.cli("alerts", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["incident_id"], r["state"], r["deliveries"]) for r in rows] == [
        (incident, "launched", 2)
    ]
    text = site.cli("alerts").stdout
    assert text.startswith(incident) and "auto-contain  launched  deliveries 2" in text

    time.sleep(1.2)  # the trail-derived metrics are cached for 1 s
    metrics = serve.metrics()
    assert metrics[("mcp_ir_alerts_received_total", (("source", "siem"),))] == 2
    assert metrics[("mcp_ir_alerts_deduplicated_total", (("source", "siem"),))] == 1
    assert metrics[("mcp_ir_incidents", (("state", "waiting_for_approval"),))] == 1
    assert metrics[("mcp_ir_incidents", (("state", "running"),))] == 0
    assert metrics[("mcp_ir_launches_total", (("mode", "warm"),))] == 1
    assert metrics[("mcp_ir_launches_total", (("mode", "cold"),))] == 0
    assert metrics[("mcp_ir_time_to_containment_seconds_count", ())] == 1
    assert 0 < metrics[("mcp_ir_time_to_containment_seconds_sum", ())] < 150


def test_each_bad_input_gets_its_status_and_starts_nothing(
    serve_site: Site, servers: list[Serve]
) -> None:
    site = serve_site
    serve = start_serve(site, servers)
    url = f"{serve.url}/alerts/siem"

    assert serve.post("nope", alert("a1")).status_code == 404
    assert serve.post("siem", alert("a2"), secret="not-the-secret").status_code == 401
    unsigned = httpx.post(url, json=alert("a3"), timeout=10)
    assert unsigned.status_code == 401 and unsigned.json() == {"error": "unauthorized"}
    stale = json.dumps(alert("a4")).encode()
    old = signed_headers(SECRET.encode(), stale, now=time.time() - 3600)
    assert httpx.post(url, content=stale, headers=old, timeout=10).status_code == 401
    big = serve.post("siem", {**alert("a5"), "description": "x" * 5000})
    assert big.status_code == 413
    bad_json = serve.post("siem", b'{"title": "MCP tunnel", ')
    assert bad_json.status_code == 400 and bad_json.json()["error"].startswith("malformed JSON")
    schema = serve.post("siem", {"title": "MCP tunnel x", "severity": "apocalyptic"})
    assert schema.status_code == 422 and schema.json()["field"] == "severity"
    unmapped = serve.post("siem", {"title": "disk full", "severity": "critical"})
    assert unmapped.status_code == 202 and unmapped.json()["status"] == "dead_letter"

    # Nothing started: no incident directory, no incident in the store, no container
    # stopped; the authenticated refusals are kept as dead letters.
    time.sleep(1.0)
    assert incident_dirs(site) == []
    assert len(project_containers(site)) == 2
    listed = json.loads(site.cli("alerts", "--json").stdout)
    assert listed == []
    assert site.cli("alerts").stdout == "no alerts\n"
    dead = json.loads(site.cli("alerts", "--dead-letter", "--json").stdout)
    # 413 (its digest and first 2 KiB), 400, 422 and the unmapped alert are kept;
    # nothing unauthenticated is.
    assert len(dead) == 4
    assert any(d["reason"].startswith("body larger than") for d in dead)
    assert any(d["reason"].startswith("malformed JSON") for d in dead)
    assert any(d["reason"].startswith("severity") for d in dead)
    assert any("disk full" in d["body"] for d in dead)
    text = site.cli("alerts", "--dead-letter").stdout.splitlines()
    assert len(text) == 4 and all(line.startswith("#") and "source siem" in line for line in text)

    metrics = serve.metrics()
    rejected = {
        dict(labels)["reason"]: value
        for (name, labels), value in metrics.items()
        if name == "mcp_ir_alerts_rejected_total"
    }
    assert rejected == {
        "unknown_source": 1,
        "unauthorized": 3,
        "too_large": 1,
        "malformed": 1,
        "schema": 1,
        "unmapped": 1,
    }
    assert metrics[("mcp_ir_alerts_received_total", (("source", "_unknown"),))] == 1
    assert metrics[("mcp_ir_alerts_received_total", (("source", "siem"),))] == 7


@pytest.mark.long(40)
def test_kill_9_right_after_202_then_restart_runs_exactly_once(
    serve_site: Site, servers: list[Serve]
) -> None:
    site = serve_site
    serve = start_serve(site, servers)
    response = serve.post("siem", alert("siem-crash"))
    serve.kill()  # SIGKILL as soon as the 202 is read
    assert response.status_code == 202
    assert serve.proc.returncode == -signal.SIGKILL
    incident = response.json()["incident_id"]

    # Whether the killed server had spawned the run or not, the restart converges.
    restarted = start_serve(site, servers)
    site.wait_for(incident, waiting_after_containment, timeout=150)
    again = restarted.post("siem", alert("siem-crash"))
    assert again.status_code == 200 and again.json()["incident_id"] == incident
    time.sleep(2.0)  # a second run, if one had been started, would have resumed by now

    records = site.trail(incident).records()
    kinds = [r.kind for r in records]
    assert incident_dirs(site) == [incident]
    assert kinds.count("incident.opened") == 1
    assert kinds.count("run.started") == 1 and "run.resumed" not in kinds
    assert flow_runs_named(incident) == 1
    assert project_containers(site) == []
    rows = json.loads(site.cli("alerts", "--json").stdout)
    assert [(r["incident_id"], r["state"]) for r in rows] == [(incident, "launched")]


def test_second_launch_before_the_first_record_and_stale_marker(
    serve_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The duplicate-launch window: a second launch right after the first (the run has
    not written its trail yet) is a no-op; a marker left by a launcher that died
    before spawning is taken over and the incident still gets its one run."""
    site = serve_site
    for name, value in site.env.items():
        monkeypatch.setenv(name, value)  # what the spawned runs inherit
    monkeypatch.setenv("MCP_IR_TARGET_WAIT_S", "3")  # the losing run gives up sooner
    settings = Settings(config_path=site.inventory, evidence_dir=site.evidence)
    kwargs: dict[str, Any] = {
        "target": site.target,
        "initiator": "alert:siem",
        "trigger": {"kind": "alert", "source": "siem", "auto_contain": True},
        "severity": "critical",
    }
    first = launch_incident(settings, incident_id="INC-20260101-000000-aaaa", **kwargs)
    marker = site.evidence / first / MARKER_FILE
    assert not (site.evidence / first / "trail.jsonl").exists()  # inside the window
    spawned = marker_holder(marker)
    assert spawned is not None and spawned["phase"] == "spawned"
    launch_incident(settings, incident_id=first, **kwargs)
    assert marker_holder(marker) == spawned  # no-op: the live run holds the marker

    # A launcher that crashed after creating its marker, before spawning anything: the
    # marker names a process that is gone and nobody holds its lock.
    stale_dir = site.evidence / "INC-20260101-000000-bbbb"
    stale_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_start = process_start(dead.pid)
    dead.wait()
    (stale_dir / MARKER_FILE).write_text(
        json.dumps({"pid": dead.pid, "start": dead_start, "phase": "spawning", "at": 0})
    )
    second = launch_incident(settings, incident_id=stale_dir.name, **kwargs)
    taken = marker_holder(stale_dir / MARKER_FILE)
    assert taken is not None and taken["phase"] == "spawned" and taken["pid"] != dead.pid

    # Both incidents target the same stack: one run takes the target lock and contains
    # it, the other gives up on the lock after 3 s. Each has exactly one run.
    def settled(records: list[Record]) -> Any:
        ended = any(r.kind == "run.ended" for r in records)
        return waiting_after_containment(records) or ended

    for incident in (first, second):
        site.wait_for(incident, settled, timeout=150)
    contained = [
        incident
        for incident in (first, second)
        if waiting_after_containment(site.trail(incident).records())
    ]
    assert len(contained) == 1
    assert project_containers(site) == []
    for incident in (first, second):
        kinds = [r.kind for r in site.trail(incident).records()]
        assert kinds.count("run.started") == 1 and "run.resumed" not in kinds
        assert flow_runs_named(incident) == 1
