"""Time to containment: a signed alert POSTed to a running ``mcp-ir serve`` -> every
container of the simulated Compose stack stopped, with the real container engine.

Everything is real: podman serving the Docker API (``sandbox.engine``), a Prefect
server (``runbook.prefect_server``), the Anthropic sandbox in a thread, ``mcp-ir
serve`` in a subprocess with the default launcher (a detached ``mcp-ir run`` per
incident). Each run gets a fresh stack (all provisioned before the server starts,
one target and one intake rule each); the clock starts before the POST and stops when
the Docker API lists no running container of the stack (polled every 20 ms). After
each measured run the breach-response run (waiting at its next human gate) is killed.

The floor is measured in the same script on fresh stacks of the same shape: list the
project's containers through the Docker API, kill each, poll the same way.

``--launch deployment`` measures the production topology instead: ``mcp-ir serve
--launch deployment`` on this machine starts each run as a flow run of the
``breach-response`` deployment (``prefect deploy --all`` is run first), and a worker
on the same machine executes it: ``--worker warm`` (``mcp-ir worker``: warm flow-run
processes with the flows pre-loaded, ``--query-seconds`` between polls) or ``--worker process`` (the stock
``prefect worker --type process`` with ``PREFECT_WORKER_QUERY_SECONDS`` =
``--query-seconds``). The playbook is cut to capture_evidence + stop_stack, both
automatic, so each flow run ends on its own.

``--worker warm,warm-no-preload,process`` compares workers back to back in one run
of the script: blocks of ``--block`` alerts per worker, alternating, so each sees
the machine's load alike (``warm-no-preload``: ``mcp-ir worker --no-preload``, each
run reads its deployment and runs its pull step after it arrives). Before each
alert the script waits until the worker's warm processes are ready, then ``--gap``
seconds. Per run, the Prefect API's own timestamps say where the time went: flow
run created (the intake), claimed (``Pending``: the worker's poll), ``Running``
(the flow engine's preamble), then the trail's records.

Usage: ``python benchmarks/containment.py [--runs 20] [--launch deployment --worker
warm[,warm-no-preload,process] --query-seconds S]``. The last line printed is ONE
JSON object: ``{"bench": "containment", "p50_s", "p90_s", "p95_s", "floor_p50_s",
"ratio_p50", "runs", "load_1min", ...}`` (the first worker's figures; ``compare``
holds each worker's when several are given).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.trail import TRAIL_FILE  # noqa: E402
from intake.auth import signed_headers  # noqa: E402
from runbook.launch import MARKER_FILE, marker_holder, process_start  # noqa: E402
from runbook.prefect_server import start_prefect_server  # noqa: E402
from sandbox.anthropic_api import create_app  # noqa: E402
from sandbox.anthropic_state import SandboxState  # noqa: E402
from sandbox.engine import start_engine  # noqa: E402
from sandbox.serve import free_port, serve_in_thread  # noqa: E402
from sandbox.site import TOKEN_ENV, ComposeSite, provision_compose_site, write_inventory  # noqa: E402
from sandbox.stack import teardown_stack  # noqa: E402

SECRET_ENV = "BENCH_CONTAINMENT_SECRET"
SECRET = "bench-containment-" + secrets.token_hex(8)
POLL_S = 0.02


def running(client: docker.DockerClient, project: str) -> list[str]:
    """Ids of the project's running containers (one list call, no per-container
    inspect that could race with the removal)."""
    label = f"com.docker.compose.project={project}"
    return [c["Id"] for c in client.api.containers(filters={"label": label, "status": "running"})]


def wait_stopped(client: docker.DockerClient, project: str, t0: float, limit_s: float) -> float:
    while running(client, project):
        if time.perf_counter() - t0 > limit_s:
            raise RuntimeError(f"{project}: still running after {limit_s:.0f}s")
        time.sleep(POLL_S)
    return time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def provision(
    n: int, prefix: str, root: Path, engine: Any, client: Any, sandbox: Any
) -> list[ComposeSite]:
    return [
        provision_compose_site(
            name=f"{prefix}{i:02d}{secrets.token_hex(2)}",
            root=root / f"{prefix}{i}",
            docker_client=client,
            docker_host=engine.docker_host,
            anthropic_state=sandbox[0],
            anthropic_url=sandbox[1],
        )
        for i in range(n)
    ]


def start_serve(
    inventory: Path, evidence: Path, env: dict[str, str], warm: int, launch: str = "process"
) -> tuple[Any, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "runbook.cli", "--config", str(inventory)]
    cmd += ["--evidence-dir", str(evidence), "serve", "--port", str(port)]
    cmd += ["--log-level", "warning", "--warm", str(warm), "--launch", launch]
    if launch == "deployment":
        cmd += ["--deployment-paths"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("mcp-ir serve did not start")


def metric(url: str, name: str, labels: str = "") -> float:
    """One sample of the server's /metrics (``labels`` as in the exposition text)."""
    key = f"{name}{{{labels}}}" if labels else name
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    raise KeyError(key)


def wait_ready(url: str, workers: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while metric(url, "mcp_ir_launch_workers_ready") < workers:
        if time.monotonic() > deadline:
            raise RuntimeError("warm run processes not ready")
        time.sleep(0.2)


def kill_run(incident_dir: Path) -> None:
    holder = marker_holder(incident_dir / MARKER_FILE)
    if holder and holder["phase"] == "spawned" and process_start(holder["pid"]) == holder["start"]:
        os.killpg(holder["pid"], signal.SIGKILL)


def measure_floor(
    runs: int,
    work: Path,
    engine: Any,
    client: docker.DockerClient,
    anthropic: tuple[Any, str],
    projects: list[str],
) -> list[float]:
    """The baseline: seconds from killing a fresh stack's containers directly (no
    runbook at all) until none runs, once per run (projects are appended to
    ``projects`` for the tear-down)."""
    floor: list[float] = []
    for site in provision(runs, "f", work / "floor", engine, client, anthropic):
        projects.append(site.project)
        t0 = time.perf_counter()
        for container_id in running(client, site.project):
            client.api.kill(container_id)
        floor.append(wait_stopped(client, site.project, t0, 60))
    return floor


def tear_down(
    client: docker.DockerClient,
    engine: Any,
    servers: list[Any],
    projects: list[str],
    evidence: Path | None = None,
    kill: Any = kill_run,
) -> None:
    """Leaves nothing of a benchmark running: the runs of every incident under
    ``evidence`` (killed with ``kill``), the stacks of ``projects``, the ``servers``
    (sandbox API, Prefect), the Docker client and the engine."""
    for incident_dir in evidence.glob("INC-*") if evidence is not None else ():
        kill(incident_dir)
    for project in projects:
        teardown_stack(client, project)
    for server in servers:
        server.stop()
    client.close()
    engine.stop()


def phases(incident_dir: Path, t_post_wall: float) -> dict[str, float]:
    """Where the time went, from the trail: POST -> incident.opened -> stop_stack."""
    records = [json.loads(line) for line in (incident_dir / TRAIL_FILE).open()]

    def at(kind: str, step: str | None = None) -> float:
        from runbook.incident_view import ts

        rec = next(r for r in records if r["kind"] == kind and r.get("step") == step)
        return ts(rec["ts"]).timestamp() - t_post_wall

    return {
        "opened": at("incident.opened"),
        "capture_done": at("step.succeeded", "capture_evidence"),
        "stop_started": at("step.started", "stop_stack"),
        "stop_done": at("step.succeeded", "stop_stack"),
    }


def wait_phases(incident_dir: Path, t_post_wall: float) -> dict[str, float]:
    deadline = time.monotonic() + 30
    while True:
        trail = incident_dir / TRAIL_FILE
        if trail.exists() and '"step":"stop_stack"' in trail.read_text().replace(" ", ""):
            try:
                return phases(incident_dir, t_post_wall)
            except StopIteration:
                pass  # stop_stack's record not written yet
        if time.monotonic() > deadline:
            raise RuntimeError(f"{incident_dir.name}: no stop_stack record in the trail")
        time.sleep(0.05)


CONTAINMENT_ONLY = """name: breach-response
steps:
  - key: capture_evidence
    approval: auto
    timeout: 30s
    params: {deadline_s: 5}
  - key: stop_stack
    approval: auto
    auto_reason: "benchmark: containment only"
    timeout: 60s
"""


def prefect_cli(env: dict[str, str], *args: str) -> None:
    prefect = str(Path(sys.executable).parent / "prefect")
    proc = subprocess.run([prefect, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def deploy(env: dict[str, str]) -> None:
    """The work pool and ``prefect deploy --all``, as docs/operations.md does."""
    prefect_cli(env, "work-pool", "create", "mcp-ir-process", "--type", "process", "--overwrite")
    prefect_cli(env, "--no-prompt", "deploy", "--all")


# --worker options -> the worker's arguments ("Q": --query-seconds):
WORKERS = {
    # mcp-ir worker as documented: woken by the event stream, flows pre-loaded
    "warm": [],
    # the same polling every Q seconds instead of listening to events
    "warm-poll": ["--no-events", "--query-seconds", "Q"],
    # the same, each run reading its deployment and running its pull step
    "warm-no-preload": ["--no-preload"],
    # both, as this worker was before (every Q seconds, flow loaded per run)
    "warm-poll-no-preload": ["--no-events", "--query-seconds", "Q", "--no-preload"],
    # the stock prefect worker, PREFECT_WORKER_QUERY_SECONDS=Q
    "process": [],
}


class Worker:
    """One worker process on this machine (its own process group and log file)."""

    def __init__(self, kind: str, env: dict[str, str], query_s: float, log: Path) -> None:
        self.kind = kind
        self.log = log
        out = open(log, "ab")  # noqa: SIM115 (lives as long as the worker)
        if kind.startswith("warm"):
            cmd = [sys.executable, "-m", "runbook.cli", "worker", "--pool", "mcp-ir-process"]
            cmd += ["--warm", "2", "--log-dir", str(log.parent)]
            cmd += [str(query_s) if a == "Q" else a for a in WORKERS[kind]]
            worker_env = env
        else:
            prefect = str(Path(sys.executable).parent / "prefect")
            cmd = [prefect, "worker", "start", "--pool", "mcp-ir-process", "--type", "process"]
            worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": str(query_s)}
        self.offset = log.stat().st_size if log.exists() else 0
        self.proc = subprocess.Popen(
            cmd,
            env=worker_env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()

    def wait_ready(self, warm: int = 2, timeout_s: float = 180) -> None:
        """Until ``warm`` processes are ready (from the worker's own log lines); the
        stock worker has none to wait for."""
        if not self.kind.startswith("warm"):
            return
        deadline = time.monotonic() + timeout_s
        while True:
            with open(self.log, "rb") as fh:
                fh.seek(self.offset)
                text = fh.read().decode("utf-8", "replace")
            if text.count(" ready (") - text.count("started (warm") >= warm:
                return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} worker: warm processes not ready")
            time.sleep(0.2)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


def flow_run_phases(incident_id: str, t_post_wall: float) -> dict[str, float]:
    """From the Prefect API: POST -> flow run created -> claimed (Pending) -> Running."""
    from prefect.client.orchestration import get_client

    from runbook.deployment_runs import _key_filter, idempotency_key

    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(flow_run_filter=_key_filter(idempotency_key(incident_id)))
        if not runs:
            return {}
        states = prefect.read_flow_run_states(runs[0].id)
    out = {"flow_run_created": runs[0].created.timestamp() - t_post_wall}
    for state in states:
        name = {"PENDING": "claimed", "RUNNING": "flow_running"}.get(state.type.value)
        if name and name not in out:
            out[name] = state.timestamp.timestamp() - t_post_wall
    return out


def summary(times: list[float], breakdown: list[dict[str, float]], floor_p50: float) -> dict:
    keys = [k for k in breakdown[0] if all(k in b for b in breakdown)] if breakdown else []
    return {
        "p50_s": round(statistics.median(times), 3),
        "p90_s": round(pct(times, 0.90), 3),
        "p95_s": round(pct(times, 0.95), 3),
        "max_s": round(max(times), 3),
        "ratio_p50": round(statistics.median(times) / floor_p50, 1),
        "runs": len(times),
        "median_phases_s": {
            k: round(statistics.median(b[k] for b in breakdown), 3)
            for k in sorted(keys, key=lambda k: statistics.median(b[k] for b in breakdown))
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20, help="measured runs (per --worker)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--warm", type=int, default=2, help="serve --warm (0: cold launches)")
    parser.add_argument("--launch", choices=["process", "deployment"], default="process")
    parser.add_argument(
        "--worker",
        default="warm",
        help=f"deployment: comma-separated, compared back to back ({', '.join(WORKERS)})",
    )
    parser.add_argument("--block", type=int, default=3, help="runs per worker before the next")
    parser.add_argument("--query-seconds", type=float, default=0.25)
    parser.add_argument(
        "--gap",
        type=float,
        default=2.0,
        help="seconds between alerts (deployment: after the warm processes are ready)",
    )
    args = parser.parse_args()
    deployment = args.launch == "deployment"
    options = args.worker.split(",") if deployment else ["-"]
    if deployment and not set(options) <= set(WORKERS):
        parser.error(f"--worker: {args.worker!r}; choose from {', '.join(WORKERS)}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-contain-", dir="/tmp"))
    load_before = os.getloadavg()
    engine = start_engine(work / "engine", timeout_s=180)
    client = engine.client()
    prefect = start_prefect_server(work / "prefect")
    state = SandboxState()
    sandbox = serve_in_thread(create_app(state))
    serve = None
    worker: Worker | None = None
    projects: list[str] = []
    try:
        sites = provision(
            args.runs * len(options) + 1, "c", work / "sites", engine, client, (state, sandbox.url)
        )
        projects += [s.project for s in sites]
        rules = [{"match": {"raw.labels.stack": s.name}, "target": s.name} for s in sites]
        inventory = write_inventory(
            work / "inventory.yaml",
            {s.name: s.target for s in sites},
            intake={
                "sources": {
                    "siem": {"format": "generic", "secrets_env": [SECRET_ENV], "rules": rules}
                }
            },
        )
        env = {
            **os.environ,
            SECRET_ENV: SECRET,
            TOKEN_ENV: state.workspace_token,
            "PREFECT_API_URL": prefect.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        os.environ["PREFECT_API_URL"] = prefect.url  # flow_run_phases reads the API
        evidence = work / "evidence"
        logs = work / "worker-logs"
        if deployment:
            playbooks = work / "playbooks"
            playbooks.mkdir(exist_ok=True)
            (playbooks / "breach-response.yaml").write_text(CONTAINMENT_ONLY)
            env.update(
                MCP_IR_PLAYBOOK_DIR=str(playbooks),
                MCP_IR_HOME=str(ROOT),
                PREFECT_CLI_PROMPT="false",
                MCP_IR_QUIET="1",
            )
            deploy(env)
            logs.mkdir(parents=True, exist_ok=True)
        serve, url = start_serve(
            inventory, evidence, env, 0 if deployment else args.warm, args.launch
        )
        # The order of the runs: a warm-up, then blocks of --block runs per option,
        # alternating, so that every option sees the machine's load drift alike.
        plan = [options[0]]
        left = dict.fromkeys(options, args.runs)
        while any(left.values()):
            for option in options:
                take = min(args.block, left[option])
                plan += [option] * take
                left[option] -= take
        times: dict[str, list[float]] = {o: [] for o in options}
        breakdown: dict[str, list[dict[str, float]]] = {o: [] for o in options}
        first = 0.0
        with httpx.Client(timeout=30) as http:
            for i, (site, option) in enumerate(zip(sites, plan, strict=True)):
                if deployment and (worker is None or worker.kind != option):
                    if worker is not None:
                        worker.stop()
                    worker = Worker(option, env, args.query_seconds, logs / f"{option}.log")
                body = json.dumps(
                    {
                        "alert_id": f"bench-{site.name}",
                        "title": "MCP tunnel token leaked",
                        "severity": "critical",
                        "labels": {"stack": site.name},
                    }
                ).encode()
                if worker is not None:
                    worker.wait_ready()  # the worker's steady state: warm processes ready
                    time.sleep(args.gap)
                elif args.warm:
                    wait_ready(url, args.warm)  # the steady state an alert finds
                headers = signed_headers(SECRET.encode(), body)
                wall = time.time()
                t0 = time.perf_counter()
                response = http.post(f"{url}/alerts/siem", content=body, headers=headers)
                if response.status_code != 202:
                    raise RuntimeError(f"alert refused: {response.status_code} {response.text}")
                elapsed = wait_stopped(client, site.project, t0, 120)
                incident_id = response.json()["incident_id"]
                phases_s = wait_phases(evidence / incident_id, wall)
                if deployment:
                    phases_s.update(flow_run_phases(incident_id, wall))
                else:
                    kill_run(evidence / incident_id)
                if i == 0:
                    first = elapsed  # warm-up: Prefect registers the flow and task runs
                    continue
                times[option].append(elapsed)
                breakdown[option].append(phases_s)
                hops = " ".join(
                    f"{k}={v:.2f}" for k, v in sorted(phases_s.items(), key=lambda kv: kv[1])
                )
                print(
                    f"run {i} ({option}): {elapsed:.3f}s load {os.getloadavg()[0]:.1f} [{hops}]",
                    file=sys.stderr,
                )
        if worker is not None:
            worker.stop()
            worker = None

        floor = measure_floor(args.runs, work, engine, client, (state, sandbox.url), projects)
        floor_p50 = statistics.median(floor)
        per_option = {o: summary(times[o], breakdown[o], floor_p50) for o in options}
        result = {
            "bench": "containment",
            **per_option[options[0]],
            "floor_p50_s": round(floor_p50, 3),
            "first_run_s": round(first, 3),
            "launch": (
                f"deployment/{options[0]}-worker"
                if deployment
                else (f"warm{args.warm}" if args.warm else "cold")
            ),
            "warm_launches": int(metric(url, "mcp_ir_launches_total", 'mode="warm"')),
            "cold_launches": int(metric(url, "mcp_ir_launches_total", 'mode="cold"')),
            "load_1min": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
        }
        if len(options) > 1:
            result["compare"] = per_option
    finally:
        if serve is not None:
            serve.kill()
            serve.wait(10)
        if worker is not None:
            worker.stop()
        tear_down(client, engine, [sandbox, prefect], projects, work / "evidence")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
