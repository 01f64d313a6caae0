"""A Prefect worker for the deployments' process pool that keeps flow-run processes
warm: what ``mcp-ir serve --launch deployment`` needs to contain in seconds.

Measured here (FACTS §5, benchmarks/containment.py): a stock ``prefect worker
--type process`` polls every ``PREFECT_WORKER_QUERY_SECONDS`` (10 s by default) and
then starts a new Python process per flow run, which imports Prefect, the flows and
the SDKs before the first step: 4.5–7 s. This worker is woken by the Prefect
server's event stream when a flow run is scheduled (``prefect.flow-run.Scheduled``
on ``/api/events/out``), polls the pool then (and every ``query_s``, 2 s by default,
in case an event was missed) and hands each scheduled flow run to a process that
has already imported everything and reached the Prefect API, so the run's first
step starts within a fraction of a second.

Why events rather than a fast poll (measured, docs/intake.md): every poll of the
pool is three SQLite write transactions on a Prefect server with the default
database (the poll itself, then ``mark_work_queues_ready`` and
``mark_deployments_ready``); at 0.25 s polling on a loaded machine one of them once
waited out SQLite's 60 s ``busy_timeout`` ("database is locked" in the server log),
and the claim of the run waiting behind it took ~68 s.

Protocol, per flow run: poll ``get_scheduled_flow_runs_for_work_pool`` -> claim it
by proposing ``Pending`` (the server accepts exactly one proposer, so two workers
never run the same flow run) -> send the claimed flow run (one JSON line) to a ready
warm process over a Unix socket -> that process runs it with Prefect's flow engine
(``run_flow``; it need not read the run again) and exits; a replacement is started
a few seconds later. With no warm process ready, the run goes to a cold one.

Before it reports ready, a warm process also does what ``python -m prefect.engine``
would do for each run after it arrives (profiled: 1.3-1.9 s per run at load ~8):
it reads the pool's deployments and, for each whose pull steps only enter this
checkout (``runbook.deploy_steps.enter_checkout``, no arguments), runs that step and
loads the entrypoint's flow — ``load_flow`` for a run of such a deployment is then
a dictionary look-up. It keeps one Prefect client open (``SyncClientContext``) for the
engine to reuse: no new client, version check or CSRF request per run. A
deployment with other pull steps (code fetched per run) is loaded per run, as
Prefect does. The worker re-reads the pool's deployments every
``deployments_check_s``; an idle warm process that loaded an older version of them
is replaced, so a ``prefect deploy`` reaches the warm processes. Every process runs in its own session, so killing the worker
does not kill runs in progress (they are resumed like any crashed run: run the
deployment again for the incident).

Run with ``mcp-ir worker --pool mcp-ir-process [--warm 2] [--query-seconds 2]``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("mcp_ir.warm_worker")

READY = b"R"
# What a breach-response run imports on its way to stop_stack (steps import their
# adapters lazily): anthropic alone costs ~2 s on this machine. The intake's warm
# launch processes (intake.warm) import the same.
RUN_IMPORTS = (
    "flows.breach_response",
    "runbook.steps",
    "tasks.compose",
    "tasks.tunnels",
    "tasks.anthropic_client",
    "anthropic",
    "docker",
)
# The pull steps a warm process may run ahead of the flow run: they only change to
# this checkout (no code is fetched), so running them once per process is the same.
PRELOADABLE_STEPS = frozenset({"runbook.deploy_steps.enter_checkout"})
# Everything a flow run imports before its first trail record (profiled: what a run
# still imported after the first version of this list cost 0.3-0.9 s per run).
WARM_IMPORTS = (
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.deployments.steps.core",  # load_flow runs the deployment's pull steps
    "prefect.utilities.visualization",
    "prefect._internal.observers",
    "runbook.deploy_steps",
    "flows.teardown",
    "flows.execute",
    "runbook.inventory",
    "runbook.target_state",
    *RUN_IMPORTS,
)
MAX_JOB_BYTES = 1 << 20
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    deployments: str = ""  # the deployments' versions it loaded (deployments_version)


class WarmWorker:
    """Polls a work pool and runs its flow runs in pre-started processes.

    Args:
        pool: the work pool name (``prefect.yaml``: ``mcp-ir-process``).
        warm: processes kept ready.
        query_s: seconds between polls of the pool (with ``events``, the fallback).
        events: be woken by the server's event stream when a flow run is scheduled.
        log_dir: where each flow-run process writes its output (default: discarded).
        replace_after_s: a used warm process is replaced this long after its hand-over
            (with ``warm`` > 1 another one is ready meanwhile; a burst beyond that
            goes cold).
        deployments_check_s: how often the pool's deployments are re-read; warm
            processes that pre-loaded an older version of them are replaced.
        preload: pre-load the flows of the pool's deployments in warm processes
            (False: every run reads its deployment and runs its pull steps, as
            ``prefect flow-run execute`` does).
    """

    def __init__(
        self,
        pool: str,
        *,
        warm: int = 2,
        query_s: float = 2.0,
        log_dir: Path | None = None,
        events: bool = True,
        replace_after_s: float = 5.0,
        deployments_check_s: float = 30.0,
        preload: bool = True,
    ) -> None:
        self.pool = pool
        self.deployments_check_s = deployments_check_s
        self.preload = preload
        self._deployments = ""  # deployments_version() at the last check
        self.replace_after_s = replace_after_s
        self.warm = warm
        self.query_s = query_s
        self.events = events
        self.log_dir = log_dir
        self._ready: queue.Queue[_Child] = queue.Queue()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.event_wakes = 0  # polls started by a Scheduled event
        self.started_runs = 0
        self.warm_runs = 0
        self.cold_runs = 0

    # -- warm processes -------------------------------------------------------------

    def _spawn(self, flow_run_id: str | None = None) -> _Child | None:
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", "runbook.warm_worker", "--child", str(theirs.fileno())]
        if self.preload:
            argv += ["--pool", self.pool]
        if flow_run_id is not None:
            argv += ["--flow-run", flow_run_id]
        out = (
            open(self.log_dir / f"flow-run-{time.time_ns()}.log", "wb")  # noqa: SIM115
            if self.log_dir
            else subprocess.DEVNULL
        )
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(theirs.fileno(),),
            env=os.environ.copy(),
        )
        theirs.close()
        if out is not subprocess.DEVNULL:
            out.close()  # type: ignore[union-attr]
        child = _Child(proc, ours)
        if flow_run_id is None:
            threading.Thread(target=self._await_ready, args=(child,), daemon=True).start()
        else:
            ours.close()
        return child

    def _await_ready(self, child: _Child) -> None:
        child.sock.settimeout(180)
        try:
            line = _read_line(child.sock, 4096)
        except OSError:
            line = None
        if line is not None and line.startswith(READY):
            child.deployments = line[1:].decode("ascii", "replace")
            child.sock.settimeout(10)
            self._ready.put(child)
            log.info("warm process %d ready (%d ready)", child.proc.pid, self._ready.qsize())
        else:
            log.warning("a warm flow-run process did not become ready")
            child.sock.close()
            if child.proc.poll() is None:
                child.proc.kill()

    def _hand_over(self, flow_run: Any) -> str:
        """Runs the claimed flow run in a ready process ("warm") or a new one ("cold").

        A warm process is sent the flow run as this worker read and claimed it (one
        JSON line), so it does not read it again before starting."""
        job = flow_run.model_dump_json().encode() + b"\n"
        while True:
            try:
                child = self._ready.get_nowait()
            except queue.Empty:
                self._spawn(str(flow_run.id))  # cold: the flow run id on its command line
                self.cold_runs += 1
                return "cold"
            if self._stale(child):
                self._discard(child)
                continue
            try:
                child.sock.sendall(job)
                child.sock.close()
            except OSError:
                child.proc.kill()
                continue
            # The replacement's start-up (seconds of imports) would compete for the CPU
            # with the run just handed over, in its first seconds: the containment.
            timer = threading.Timer(self.replace_after_s, self._replace)
            timer.daemon = True
            timer.start()
            self.warm_runs += 1
            return "warm"

    def _replace(self) -> None:
        if not self._stop.is_set():
            self._spawn()

    def _stale(self, child: _Child) -> bool:
        """True when the process pre-loaded deployments that changed since (one whose
        pre-load failed loads each run's flow itself: never stale)."""
        return bool(self._deployments and child.deployments) and (
            child.deployments != self._deployments
        )

    def _discard(self, child: _Child) -> None:
        """Ends an idle warm process and starts its replacement."""
        child.sock.close()
        if child.proc.poll() is None:
            child.proc.kill()
        self._spawn()

    def _check_deployments(self, client: object) -> None:
        """Re-reads the pool's deployments; replaces idle processes that pre-loaded
        an older version of them."""
        try:
            self._deployments = deployments_version(pool_deployments(client, self.pool))
        except Exception as exc:  # noqa: BLE001 (checked again next time)
            log.warning("cannot read the deployments of %s: %s", self.pool, type(exc).__name__)
            return
        for _ in range(self._ready.qsize()):
            try:
                child = self._ready.get_nowait()
            except queue.Empty:
                return
            if self._stale(child):
                log.info("replacing a warm process: the deployments changed")
                self._discard(child)
            else:
                self._ready.put(child)

    # -- polling ---------------------------------------------------------------------

    def _claim(self, client: object, flow_run: Any) -> bool:
        """Proposes ``Pending``; True (and the run's state updated) when accepted."""
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.states import Pending

        result = client.set_flow_run_state(flow_run.id, Pending(), force=False)  # type: ignore[attr-defined]
        accepted = (
            result.status == SetStateStatus.ACCEPT
            and result.state is not None
            and result.state.type == StateType.PENDING
        )
        if accepted:
            flow_run.state = result.state
        return accepted

    def _listen(self) -> None:
        """Sets ``_wake`` on every ``prefect.flow-run.Scheduled`` event until stopped
        (reconnecting after a lost stream; polling covers the gap)."""
        import asyncio

        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

        async def listen() -> None:
            scheduled = EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.Scheduled"]),
                occurred=EventOccurredFilter(since=datetime.now(UTC)),  # no backfill
            )
            async with get_events_subscriber(filter=scheduled) as events:
                async for _ in events:
                    self.event_wakes += 1
                    self._wake.set()
                    if self._stop.is_set():
                        return

        while not self._stop.is_set():
            try:
                asyncio.run(listen())
            except Exception as exc:  # noqa: BLE001 (polling goes on meanwhile)
                log.warning("event stream lost (%s); polling only", type(exc).__name__)
            self._stop.wait(self.query_s)

    def run(self) -> None:
        """Polls until :meth:`stop`; blocking."""
        import contextvars

        from prefect.client.orchestration import get_client

        for _ in range(self.warm):
            self._spawn()
        if self.events:
            # The Prefect settings may live in a context variable: the thread gets a copy.
            context = contextvars.copy_context()
            threading.Thread(
                target=context.run, args=(self._listen,), name="worker-events", daemon=True
            ).start()
        checked = float("-inf")
        with get_client(sync_client=True) as client:
            while not self._stop.is_set():
                if self.preload and time.monotonic() - checked >= self.deployments_check_s:
                    checked = time.monotonic()
                    self._check_deployments(client)
                try:
                    due = client.get_scheduled_flow_runs_for_work_pool(
                        self.pool, scheduled_before=datetime.now(UTC)
                    )
                except Exception as exc:  # noqa: BLE001 (the API may be restarting)
                    log.warning("cannot poll work pool %s: %s", self.pool, type(exc).__name__)
                    due = []
                for item in due:
                    run = item.flow_run
                    if self._claim(client, run):
                        self.started_runs += 1
                        how = self._hand_over(run)
                        log.info(
                            "flow run %s started (%s; %d warm, %d cold so far)",
                            run.id,
                            how,
                            self.warm_runs,
                            self.cold_runs,
                        )
                self._wake.wait(self.query_s)
                self._wake.clear()

    @property
    def ready(self) -> int:
        """Warm processes ready to take a flow run now."""
        return self._ready.qsize()

    @property
    def ready_children(self) -> list[tuple[int, str]]:
        """(pid, version of the deployments it pre-loaded) of each ready process."""
        return [(c.proc.pid, c.deployments) for c in list(self._ready.queue)]

    def stop(self) -> None:
        """Stops polling and the idle warm processes (runs in progress continue)."""
        self._stop.set()
        self._wake.set()
        while True:
            try:
                child = self._ready.get_nowait()
            except queue.Empty:
                return
            child.sock.close()
            if child.proc.poll() is None:
                child.proc.kill()


def pool_deployments(client: Any, pool: str) -> list[Any]:
    """The deployments of work pool ``pool``."""
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    return client.read_deployments(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))
    )


def deployments_version(deployments: list[Any]) -> str:
    """A short digest that changes whenever one of ``deployments`` is created,
    updated or deleted."""
    import hashlib

    text = ",".join(
        sorted(f"{d.id}@{d.updated.isoformat() if d.updated else ''}" for d in deployments)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def preloadable(deployment: Any) -> bool:
    """True when the deployment's code is this checkout: an entrypoint file path and
    pull steps that only enter the checkout (no code fetched per run)."""
    steps = deployment.pull_steps or []
    return (
        bool(deployment.entrypoint)
        and ":" in deployment.entrypoint
        and bool(steps)
        and all(
            len(step) == 1
            and next(iter(step)) in PRELOADABLE_STEPS
            and not next(iter(step.values()))
            for step in steps
        )
    )


def preload_flows(client: Any, pool: str) -> tuple[dict[str, Any], str]:
    """Loads, ahead of any run, the flow of each preloadable deployment of ``pool``
    (after running its pull step once, as ``load_flow`` would for each run). Returns
    deployment id -> flow, and the deployments' version."""
    from prefect.flows import load_flow_from_entrypoint

    from runbook.deploy_steps import enter_checkout

    deployments = pool_deployments(client, pool)
    flows: dict[str, Any] = {}
    for deployment in deployments:
        if preloadable(deployment):
            enter_checkout()
            flows[str(deployment.id)] = load_flow_from_entrypoint(
                deployment.entrypoint, use_placeholder_flow=False
            )
    return flows, deployments_version(deployments)


def _run_flow_run(
    flow_run_id: str, flow_run: Any = None, flows: dict[str, Any] | None = None
) -> int:
    """Runs the flow run as ``python -m prefect.engine`` would; ``flow_run`` is the run
    as the worker claimed it (read from the API when not given), ``flows`` the flows
    pre-loaded per deployment id (any other deployment is loaded now)."""
    from uuid import UUID

    from prefect.flow_engine import flow_run_logger, load_flow, load_flow_run, run_flow

    os.environ["PREFECT__FLOW_RUN_ID"] = flow_run_id
    if flow_run is None:
        flow_run = load_flow_run(flow_run_id=UUID(flow_run_id))
    flow = (flows or {}).get(str(flow_run.deployment_id)) or load_flow(flow_run)
    run_flow(flow, flow_run=flow_run, error_logger=flow_run_logger(flow_run=flow_run))
    return 0


def _warm_up(client: Any, pool: str | None) -> tuple[dict[str, Any], str]:
    """What every run would otherwise pay after its alert: the imports, the redactor's
    patterns (detect-secrets, built on the first trail record), the client's
    connection and version check, and loading the flows of ``pool``'s deployments."""
    from core.redact import warm_up as warm_redactor

    for module in WARM_IMPORTS:
        importlib.import_module(module)
    warm_redactor()
    client.api_healthcheck()
    if not pool:
        return {}, ""
    try:
        return preload_flows(client, pool)
    except Exception as exc:  # noqa: BLE001 (each run then loads its flow itself)
        log.warning("cannot pre-load the flows of %s: %s", pool, type(exc).__name__)
        return {}, ""


def _read_line(sock: socket.socket, limit: int) -> bytes | None:
    """One newline-terminated message (without the newline); None at end of stream."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            return None
        line += chunk
        if len(line) > limit:
            from core.errors import McpIrError

            raise McpIrError(f"message over {limit} bytes on the warm-worker socket")
    return line[:-1]


def _receive_job(sock: socket.socket) -> Any:
    """The claimed flow run (one JSON line), or None when the worker stopped."""
    from prefect.client.schemas.objects import FlowRun

    line = _read_line(sock, MAX_JOB_BYTES)
    return None if line is None else FlowRun.model_validate_json(line)


def _child_main(fd: int, flow_run_id: str | None, pool: str | None = None) -> int:
    for name, value in (
        ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        ("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING"),
    ):
        os.environ.setdefault(name, value)
    sock = socket.socket(fileno=fd)
    if flow_run_id is not None:  # cold: started for this flow run
        sock.close()
        return _run_flow_run(flow_run_id)
    from prefect.context import SyncClientContext

    # One client for the warm-up and the run: the engine finds it in the context.
    with SyncClientContext.get_or_create() as context:
        flows, version = _warm_up(context.client, pool)
        try:
            sock.sendall(READY + version.encode("ascii") + b"\n")
            flow_run = _receive_job(sock)
        except ConnectionError:
            flow_run = None  # the worker stopped while this process was warming up
        sock.close()
        if flow_run is None:
            return 0  # the worker stopped: nothing to run
        return _run_flow_run(str(flow_run.id), flow_run, flows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--flow-run", help=argparse.SUPPRESS)
    parser.add_argument("--pool", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return _child_main(args.child, args.flow_run, args.pool)


if __name__ == "__main__":
    raise SystemExit(main())
