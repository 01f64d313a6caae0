"""Time to containment on a worker: a breach started through the ``breach-response``
deployment (what ``mcp-ir breach --on-worker`` and the intake's deployment launches
do) -> every container of the simulated Compose stack stopped, executed by a real
``prefect worker start --type process`` on the process pool — the production
topology, with no target credential on the host that asks.

Everything is real: podman serving the Docker API, a Prefect server, ``prefect deploy
--all`` of prefect.yaml, the Anthropic sandbox in a thread. The trigger is break-glass
(``auto_contain``, as a critical SIEM alert sets it): ``capture_evidence`` and
``stop_stack`` pass their gates automatically. The clock starts before the flow run is
created and stops when the Docker API lists no running container of the stack
(polled every 20 ms); the run is then killed at its next human gate.

Measured for each worker poll interval in ``--query-seconds`` (Prefect's default is
10 s, ``PREFECT_WORKER_QUERY_SECONDS``); each series gets one unmeasured warm-up run.
The floor is the engine's own kill call on fresh stacks of the same shape, measured in
the same script.

Usage: ``python benchmarks/worker_containment.py [--runs 5] [--query-seconds 10,2]``.
The last line printed is ONE JSON object: ``{"bench": "worker_containment",
"series": {"<q>": {"p50_s", "p95_s", "ratio_p50", "median_phases_s"}}, "floor_p50_s",
...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.containment import (  # noqa: E402
    measure_floor,
    pct,
    provision,
    tear_down,
    wait_stopped,
)
from core.trail import TRAIL_FILE  # noqa: E402
from runbook.deployment_runs import idempotency_key, start_run  # noqa: E402
from runbook.launch import new_incident_id, process_start  # noqa: E402
from runbook.prefect_server import start_prefect_server  # noqa: E402
from sandbox.anthropic_api import create_app  # noqa: E402
from sandbox.anthropic_state import SandboxState  # noqa: E402
from sandbox.engine import start_engine  # noqa: E402
from sandbox.polling import wait_until  # noqa: E402
from sandbox.serve import serve_in_thread  # noqa: E402
from sandbox.site import TOKEN_ENV, write_inventory  # noqa: E402

PREFECT = str(Path(sys.executable).parent / "prefect")
POOL = "mcp-ir-process"


def prefect(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run(
        [PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def records(incident_dir: Path) -> list[dict[str, Any]]:
    path = incident_dir / TRAIL_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def phases(incident_dir: Path, t0_wall: float, flow_run_id: str) -> dict[str, float]:
    """Where the time went: created -> the worker started the flow-run process ->
    incident.opened -> stop_stack done (seconds after the request)."""
    from prefect.client.orchestration import get_client

    from runbook.incident_view import ts

    recs = records(incident_dir)

    def at(kind: str, step: str | None = None) -> float:
        rec = next(r for r in recs if r["kind"] == kind and r.get("step") == step)
        return round(ts(rec["ts"]).timestamp() - t0_wall, 3)

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    picked = run.start_time.timestamp() - t0_wall if run.start_time else float("nan")
    return {
        "worker_started_run": round(picked, 3),
        "opened": at("incident.opened"),
        "stop_done": at("step.succeeded", "stop_stack"),
    }


def kill_run(incident_dir: Path) -> None:
    for rec in records(incident_dir):
        if rec["kind"] in ("run.started", "run.resumed"):
            pid, start = rec["data"].get("pid"), rec["data"].get("pid_start")
            if pid and process_start(pid) == start:
                os.kill(pid, signal.SIGKILL)


def series(
    q: int, sites: list[Any], env: dict[str, str], evidence: Path, work: Path, client: Any
) -> dict[str, Any]:
    """One worker polling every ``q`` s; the first site is the warm-up."""
    log = open(work / f"worker-q{q}.log", "wb")  # noqa: SIM115 (closed below)
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", POOL, "--type", "process", "--name", f"bench-q{q}"],
        env={**env, "PREFECT_WORKER_QUERY_SECONDS": str(q)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    times: list[float] = []
    breakdown: list[dict[str, float]] = []
    try:
        for i, site in enumerate(sites):
            incident = new_incident_id()
            parameters = {
                "target": site.name,
                "incident_id": incident,
                "initiator": "siem",
                "trigger": {"kind": "alert", "severity": "critical", "auto_contain": True},
                "severity": "critical",
            }
            wall, t0 = time.time(), time.perf_counter()
            ref = start_run(
                "breach-response", parameters=parameters, idempotency_key=idempotency_key(incident)
            )
            elapsed = wait_stopped(client, site.project, t0, 180)
            incident_dir = evidence / incident
            wait_until(
                lambda d=incident_dir: any(
                    r["kind"] == "step.succeeded" and r.get("step") == "stop_stack"
                    for r in records(d)
                ),
                60,
                "stop_stack's record",
                interval=0.05,
            )
            breakdown.append(phases(incident_dir, wall, ref.flow_run_id))
            kill_run(incident_dir)
            if i == 0:
                continue  # warm-up
            times.append(elapsed)
            print(f"q={q} run {i}: {elapsed:.3f}s {breakdown[-1]}", file=sys.stderr)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        log.close()
    return {
        "p50_s": round(statistics.median(times), 3),
        "p95_s": round(pct(times, 0.95), 3),
        "runs": len(times),
        "median_phases_s": {
            k: round(statistics.median(b[k] for b in breakdown[1:]), 3) for k in breakdown[-1]
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="measured runs per poll interval")
    parser.add_argument("--query-seconds", default="10,2", help="worker poll intervals to measure")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    intervals = [int(q) for q in args.query_seconds.split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-worker-", dir="/tmp"))
    engine = start_engine(work / "engine")
    client = engine.client()
    try:
        server = start_prefect_server(work / "prefect", timeout_s=300)
    except RuntimeError:
        client.close()
        engine.stop()  # nothing of the benchmark is left running
        raise
    state = SandboxState()
    sandbox = serve_in_thread(create_app(state))
    projects: list[str] = []
    evidence = work / "evidence"
    try:
        per = args.runs + 1
        sites = provision(
            per * len(intervals), "w", work / "sites", engine, client, (state, sandbox.url)
        )
        projects += [s.project for s in sites]
        inventory = write_inventory(work / "inventory.yaml", {s.name: s.target for s in sites})
        env = {
            **os.environ,
            TOKEN_ENV: state.workspace_token,
            "PREFECT_API_URL": server.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_HOME": str(work / "prefect-client"),
            "MCP_IR_CONFIG": str(inventory),
            "MCP_IR_EVIDENCE_DIR": str(evidence),
            "MCP_IR_QUIET": "1",
        }
        os.environ["PREFECT_API_URL"] = server.url
        prefect(env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
        prefect(env, "--no-prompt", "deploy", "--all")
        results = {
            str(q): series(q, sites[i * per : (i + 1) * per], env, evidence, work, client)
            for i, q in enumerate(intervals)
        }
        floor = measure_floor(args.runs, work, engine, client, (state, sandbox.url), projects)
        floor_p50 = statistics.median(floor)
        for r in results.values():
            r["ratio_p50"] = round(r["p50_s"] / floor_p50, 1)
        result = {
            "bench": "worker_containment",
            "series": results,
            "floor_p50_s": round(floor_p50, 3),
            "trigger": "run created through the breach-response deployment (break-glass)",
        }
    finally:
        tear_down(client, engine, [sandbox, server], projects, evidence, kill=kill_run)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
