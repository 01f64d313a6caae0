"""Launch modes for the intake, measured: incident launch call -> every container of
the stack stopped (breach-response with auto-contain), on real podman and Prefect.

Modes (each on fresh stacks, same machine, same script):

- ``subprocess``: ``runbook.launch.launch_incident`` as the intake calls it — a
  detached ``python -m runbook.cli run`` per incident (Python start, Prefect import,
  flow run).
- ``warm``: the same, through ``intake.warm.WarmPool`` (what ``mcp-ir serve`` does):
  the ``mcp-ir run`` process was started ahead of time with everything imported.
- ``thread``: the flow called in a thread of this already-warm process (what an
  in-process worker pool in ``serve`` would do).
- ``deployment``: ``run_deployment(..., idempotency_key=<incident id>, timeout=0)``
  against ``breach_response.serve()`` already running in another process, polling
  every ``PREFECT_RUNNER_POLL_FREQUENCY`` = 1 s (its default is 10 s). The same key
  sent twice must return the same flow run (checked).

Usage: ``python benchmarks/launch_modes.py [--runs 5]``. The last line printed is ONE
JSON object with the median and max per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.containment import kill_run, provision, tear_down, wait_stopped  # noqa: E402
from runbook.launch import launch_incident, new_incident_id  # noqa: E402
from runbook.prefect_server import start_prefect_server  # noqa: E402
from runbook.settings import Settings  # noqa: E402
from sandbox.anthropic_api import create_app  # noqa: E402
from sandbox.anthropic_state import SandboxState  # noqa: E402
from sandbox.engine import start_engine  # noqa: E402
from sandbox.serve import serve_in_thread  # noqa: E402
from sandbox.site import TOKEN_ENV, write_inventory  # noqa: E402

DEPLOYMENT = "breach-response/launch-bench"


def trigger() -> dict[str, Any]:
    return {"kind": "alert", "source": "bench", "severity": "critical", "auto_contain": True}


def alert_launch(incident: str) -> dict[str, Any]:
    """The launch arguments every mode shares: ``incident`` opened by a critical alert."""
    return {
        "incident_id": incident,
        "initiator": "alert:bench",
        "trigger": trigger(),
        "severity": "critical",
    }


def run_subprocess(settings: Settings, target: str) -> str:
    incident = new_incident_id()
    launch_incident(settings, target=target, **alert_launch(incident))
    return incident


POOL: list[Any] = []


def run_warm(settings: Settings, target: str) -> str:
    incident = new_incident_id()
    launch_incident(settings, target=target, spawner=POOL[0].spawn, **alert_launch(incident))
    return incident


def run_warm_wait(pool: Any) -> None:
    deadline = time.monotonic() + 120
    while pool.ready < 1:  # the steady state an alert finds
        if time.monotonic() > deadline:
            raise RuntimeError("no warm worker became ready")
        time.sleep(0.1)


def run_thread(settings: Settings, target: str) -> str:
    incident = new_incident_id()

    def body() -> None:
        try:
            launch_incident(settings, target=target, wait=True, **alert_launch(incident))
        except Exception as exc:  # the run waits at a gate until the process exits
            print(f"thread run ended: {type(exc).__name__}", file=sys.stderr)

    threading.Thread(target=body, daemon=True).start()
    return incident


def run_deployment_mode(settings: Settings, target: str) -> str:
    from prefect.deployments import run_deployment

    incident = new_incident_id()
    params = {
        "target": target,
        **alert_launch(incident),
        "config_path": str(settings.config_path),
        "evidence_dir": str(settings.evidence_dir),
    }
    first = run_deployment(DEPLOYMENT, parameters=params, idempotency_key=incident, timeout=0)
    again = run_deployment(DEPLOYMENT, parameters=params, idempotency_key=incident, timeout=0)
    if first.id != again.id:
        raise RuntimeError("run_deployment with one idempotency key made two flow runs")
    return incident


def serve_deployment(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    code = (
        "from flows.breach_response import breach_response\n"
        "breach_response.serve(name='launch-bench', print_starting_message=False, limit=20)\n"
    )
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:
                client.read_deployment_by_name(DEPLOYMENT)
                return proc
            except Exception:  # not registered yet
                time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("the served deployment never registered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-launch-", dir="/tmp"))
    engine = start_engine(work / "engine")
    client = engine.client()
    prefect = start_prefect_server(work / "prefect")
    state = SandboxState()
    sandbox = serve_in_thread(create_app(state))
    modes = {
        "subprocess": run_subprocess,
        "warm": run_warm,
        "thread": run_thread,
        "deployment": run_deployment_mode,
    }
    sites = provision(
        len(modes) * (args.runs + 1), "m", work / "sites", engine, client, (state, sandbox.url)
    )
    inventory = write_inventory(work / "inventory.yaml", {s.name: s.target for s in sites})
    env = {
        TOKEN_ENV: state.workspace_token,
        "PREFECT_API_URL": prefect.url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    }
    os.environ.update(env)
    settings = Settings(config_path=inventory, evidence_dir=work / "evidence")
    served = serve_deployment({**os.environ}, work / "served.log")
    from intake.warm import WarmPool

    POOL.append(WarmPool(1))
    POOL[0].start()
    results: dict[str, Any] = {}
    try:
        remaining = iter(sites)
        for mode, start in modes.items():
            times = []
            for i in range(args.runs + 1):
                site = next(remaining)
                if mode == "warm":
                    run_warm_wait(POOL[0])
                t0 = time.perf_counter()
                incident = start(settings, site.name)
                elapsed = wait_stopped(client, site.project, t0, 180)
                kill_run(settings.incident_dir(incident))
                print(f"{mode} run {i}: {elapsed:.3f}s", file=sys.stderr)
                if i:  # the first run of a mode is a warm-up
                    times.append(elapsed)
            results[mode] = {
                "p50_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
            }
    finally:
        os.killpg(served.pid, signal.SIGKILL)
        POOL[0].close()
        tear_down(client, engine, [sandbox, prefect], [site.project for site in sites])
    print(
        json.dumps(
            {
                "bench": "launch_modes",
                "runs": args.runs,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                **results,
            }
        )
    )


if __name__ == "__main__":
    main()
