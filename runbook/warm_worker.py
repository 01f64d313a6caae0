"""A Prefect worker for the deployments' process pool that keeps flow-run processes
warm: what ``mcp-ir serve --launch deployment`` needs to contain in seconds.

Measured here (FACTS §5, benchmarks/containment.py): a stock ``prefect worker
--type process`` polls every ``PREFECT_WORKER_QUERY_SECONDS`` (10 s by default) and
then starts a new Python process per flow run, which imports Prefect, the flows and
the SDKs before the first step: 4.5–7 s. This worker polls the pool every
``query_s`` (0.25 s by default) and hands each scheduled flow run to a process that
has already imported everything and reached the Prefect API, so the run's first
step starts within a fraction of a second.

Protocol, per flow run: poll ``get_scheduled_flow_runs_for_work_pool`` -> claim it
by proposing ``Pending`` (the server accepts exactly one proposer, so two workers
never run the same flow run) -> send the claimed flow run (one JSON line) to a ready
warm process over a Unix socket -> that process runs it exactly as ``python -m
prefect.engine`` would (``load_flow``, ``run_flow``; it need not read the run again)
and exits; a replacement is started at once. With no warm process ready, the run
goes to a cold one. Every process runs in its own session, so killing the worker
does not kill runs in progress (they are resumed like any crashed run: run the
deployment again for the incident).

Run with ``mcp-ir worker --pool mcp-ir-process [--warm 2] [--query-seconds 0.25]``.
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


class WarmWorker:
    """Polls a work pool and runs its flow runs in pre-started processes.

    Args:
        pool: the work pool name (``prefect.yaml``: ``mcp-ir-process``).
        warm: processes kept ready.
        query_s: seconds between polls of the pool.
        log_dir: where each flow-run process writes its output (default: discarded).
        replace_after_s: a used warm process is replaced this long after its hand-over
            (with ``warm`` > 1 another one is ready meanwhile; a burst beyond that
            goes cold).
    """

    def __init__(
        self,
        pool: str,
        *,
        warm: int = 2,
        query_s: float = 0.25,
        log_dir: Path | None = None,
        replace_after_s: float = 5.0,
    ) -> None:
        self.pool = pool
        self.replace_after_s = replace_after_s
        self.warm = warm
        self.query_s = query_s
        self.log_dir = log_dir
        self._ready: queue.Queue[_Child] = queue.Queue()
        self._stop = threading.Event()
        self.started_runs = 0
        self.warm_runs = 0
        self.cold_runs = 0

    # -- warm processes -------------------------------------------------------------

    def _spawn(self, flow_run_id: str | None = None) -> _Child | None:
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", "runbook.warm_worker", "--child", str(theirs.fileno())]
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
            ok = child.sock.recv(1) == READY
        except OSError:
            ok = False
        if ok:
            child.sock.settimeout(10)
            self._ready.put(child)
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

    def run(self) -> None:
        """Polls until :meth:`stop`; blocking."""
        from prefect.client.orchestration import get_client

        for _ in range(self.warm):
            self._spawn()
        with get_client(sync_client=True) as client:
            while not self._stop.is_set():
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
                self._stop.wait(self.query_s)

    @property
    def ready(self) -> int:
        """Warm processes ready to take a flow run now."""
        return self._ready.qsize()

    def stop(self) -> None:
        """Stops polling and the idle warm processes (runs in progress continue)."""
        self._stop.set()
        while True:
            try:
                child = self._ready.get_nowait()
            except queue.Empty:
                return
            child.sock.close()
            if child.proc.poll() is None:
                child.proc.kill()


def _run_flow_run(flow_run_id: str, flow_run: Any = None) -> int:
    """Runs the flow run as ``python -m prefect.engine`` would; ``flow_run`` is the run
    as the worker claimed it (read from the API when not given)."""
    from uuid import UUID

    from prefect.flow_engine import flow_run_logger, load_flow, load_flow_run, run_flow

    os.environ["PREFECT__FLOW_RUN_ID"] = flow_run_id
    if flow_run is None:
        flow_run = load_flow_run(flow_run_id=UUID(flow_run_id))
    flow = load_flow(flow_run)
    run_flow(flow, flow_run=flow_run, error_logger=flow_run_logger(flow_run=flow_run))
    return 0


def _warm_up() -> None:
    """What every run would otherwise pay after its alert: the imports, the redactor's
    patterns (detect-secrets, built on the first trail record) and a first API round
    trip."""
    from prefect.client.orchestration import get_client

    from core.redact import warm_up as warm_redactor

    for module in WARM_IMPORTS:
        importlib.import_module(module)
    warm_redactor()
    with get_client(sync_client=True) as client:
        client.api_healthcheck()


def _receive_job(sock: socket.socket) -> Any:
    """The claimed flow run (one JSON line), or None when the worker stopped."""
    from prefect.client.schemas.objects import FlowRun

    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            return None
        line += chunk
        if len(line) > MAX_JOB_BYTES:
            from core.errors import McpIrError

            raise McpIrError(f"flow run message over {MAX_JOB_BYTES} bytes from the worker")
    return FlowRun.model_validate_json(line)


def _child_main(fd: int, flow_run_id: str | None) -> int:
    for name, value in (
        ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        ("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING"),
    ):
        os.environ.setdefault(name, value)
    sock = socket.socket(fileno=fd)
    if flow_run_id is not None:  # cold: started for this flow run
        sock.close()
        return _run_flow_run(flow_run_id)
    _warm_up()
    try:
        sock.sendall(READY)
        flow_run = _receive_job(sock)
    except ConnectionError:
        flow_run = None  # the worker stopped while this process was warming up
    sock.close()
    if flow_run is None:
        return 0  # the worker stopped: nothing to run
    return _run_flow_run(str(flow_run.id), flow_run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--flow-run", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return _child_main(args.child, args.flow_run)


if __name__ == "__main__":
    raise SystemExit(main())
