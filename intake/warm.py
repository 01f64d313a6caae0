"""Pre-started ``mcp-ir run`` processes: the launch path of ``mcp-ir serve``.

A cold launch (``runbook.launch.spawn_process``) starts Python and imports Prefect,
the flows and the SDKs before the run's first record: seconds, every time, added to
time-to-containment. A warm worker is the same ``mcp-ir run`` process started ahead of
time with everything imported and the Prefect API reached once; it then waits on a
Unix socket for its arguments. :meth:`WarmPool.spawn` is a ``runbook.launch.Spawner``:
it sends the worker the argv plus two descriptors (``socket.send_fds``): the launch
marker (so the run holds the marker's lock, exactly as a cold child does) and
``run.log`` (its stdout/stderr). Each worker runs one incident and exits; the pool
starts a replacement ``replace_after_s`` (5 s) later, so that the replacement's
seconds of imports do not compete for the CPU with the run just handed over, in its
first seconds: the containment (as ``mcp-ir worker`` does, runbook/warm_worker.py).

Properties kept from the cold path: one process per incident, in its own session, so
a ``kill -9`` of ``serve`` does not touch runs in progress (idle workers see the
socket close and exit); the marker protocol is unchanged. When no worker is ready
(a burst of alerts, or a worker died) the pool falls back to a cold spawn.

Run as ``python -m intake.warm --fd N`` by the pool only.
"""

from __future__ import annotations

import argparse
import array
import importlib
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from runbook.launch import spawn_process
from runbook.warm_worker import MAX_JOB_BYTES, RUN_IMPORTS

log = logging.getLogger("mcp_ir.intake.warm")

READY = b"R"
STARTED = b"S"


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    sock: socket.socket


class WarmPool:
    """Keeps ``size`` workers ready.

    Args:
        size: ready workers to keep (0: every launch is cold).
        ready_timeout_s: how long a worker may take to signal it is ready.
        replace_after_s: a worker that took a run is replaced this long after (with
            ``size`` > 1 another is ready meanwhile; a burst beyond that goes cold).
    """

    def __init__(
        self, size: int = 2, ready_timeout_s: float = 120.0, replace_after_s: float = 5.0
    ) -> None:
        self.size = size
        self.replace_after_s = replace_after_s
        self._ready_timeout_s = ready_timeout_s
        self._ready: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.cold_launches = 0
        self.warm_launches = 0

    def start(self) -> None:
        """Starts the workers (returns at once; they become ready in the background)."""
        for _ in range(self.size):
            self._add()

    def _add(self) -> None:
        with self._lock:
            if self._closed:
                return
            ours, theirs = socket.socketpair()
            proc = subprocess.Popen(
                [sys.executable, "-m", "intake.warm", "--fd", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                env=os.environ.copy(),
                pass_fds=(theirs.fileno(),),
            )
            theirs.close()
            worker = _Worker(proc, ours)
            self._all.append(worker)
        threading.Thread(
            target=self._await_ready, args=(worker,), name="warm-ready", daemon=True
        ).start()

    def _await_ready(self, worker: _Worker) -> None:
        worker.sock.settimeout(self._ready_timeout_s)
        try:
            ok = worker.sock.recv(1) == READY
        except OSError:
            ok = False
        if ok:
            worker.sock.settimeout(None)
            self._ready.put(worker)
        else:
            if not self._closed:  # when closing, close() itself ended the worker
                log.warning("a warm worker did not become ready (exit %s)", worker.proc.poll())
            self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.sock.close()
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait(5)
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)

    def spawn(self, argv: list[str], marker_fd: int, log_path: Path) -> int:
        """A ``runbook.launch.Spawner``: hands the run to a ready worker, else cold.

        Raises:
            OSError: not even a cold process could be started.
        """
        while True:
            try:
                worker = self._ready.get_nowait()
            except queue.Empty:
                self.cold_launches += 1
                return spawn_process(argv, marker_fd, log_path)
            if self._hand_over(worker, argv, marker_fd, log_path):
                self.warm_launches += 1
                with self._lock:
                    self._all.remove(worker)
                timer = threading.Timer(self.replace_after_s, self._add)
                timer.daemon = True
                timer.start()
                return worker.proc.pid
            # No ack: the worker is killed before anything else is tried, so a worker
            # that did receive the job (and shares the marker's lock) cannot run
            # beside the fallback; had it reached its first record, the fallback
            # resumes that trail instead of opening a second incident.
            self._discard(worker)
            self._add()

    def _hand_over(self, worker: _Worker, argv: list[str], marker_fd: int, log_path: Path) -> bool:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            worker.sock.settimeout(10)
            socket.send_fds(worker.sock, [json.dumps(argv).encode()], [marker_fd, log_fd])
            # The ack means the worker holds both descriptors: only then may the
            # launcher close its own copy of the marker.
            return worker.sock.recv(1) == STARTED
        except OSError:
            return False
        finally:
            os.close(log_fd)
            worker.sock.close()

    @property
    def ready(self) -> int:
        """Workers ready to take a run now."""
        return self._ready.qsize()

    @property
    def ready_pids(self) -> list[int]:
        """Process ids of the ready workers (oldest first)."""
        return [w.proc.pid for w in list(self._ready.queue)]

    def collect(self) -> Iterator[Metric]:
        """Prometheus collector: ready workers and launches by mode."""
        yield GaugeMetricFamily(
            "mcp_ir_launch_workers_ready", "Warm run processes ready.", value=self.ready
        )
        launches = CounterMetricFamily(
            "mcp_ir_launches", "Runs started by this server, by mode.", labels=["mode"]
        )
        launches.add_metric(["warm"], self.warm_launches)
        launches.add_metric(["cold"], self.cold_launches)
        yield launches

    def close(self) -> None:
        """Stops the idle workers (runs already handed over continue)."""
        with self._lock:
            self._closed = True
            idle = list(self._all)
        for worker in idle:
            self._discard(worker)


def _worker_main(fd: int) -> int:
    # The same console settings as ``mcp-ir`` itself, before Prefect is imported.
    for name, value in (
        ("PREFECT_LOGGING_LEVEL", "INFO"),
        ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        ("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING"),
        ("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING"),
        ("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "WARNING"),
    ):
        os.environ.setdefault(name, value)
    sock = socket.socket(fileno=fd)
    for module in RUN_IMPORTS:
        importlib.import_module(module)  # warm-up: the imports are the cost
    from prefect.client.orchestration import get_client

    import runbook.cli

    with get_client(sync_client=True) as client:
        client.api_healthcheck()
    sock.sendall(READY)
    message, fds = _receive_job(sock)
    if not message or len(fds) != 2:
        return 0  # the pool closed (or serve died): nothing to run
    # The marker (fds[0]) stays open for the life of this process, and only in it:
    # the run holds its lock, and nothing the run starts inherits it (close-on-exec).
    log_fd = fds[1]
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sock.sendall(STARTED)
    sock.close()
    argv = json.loads(message)
    return runbook.cli.main(argv)


def _receive_job(sock: socket.socket) -> tuple[bytes, list[int]]:
    """The job's argv (JSON) and its descriptors, received close-on-exec.

    ``socket.recv_fds`` cannot set ``MSG_CMSG_CLOEXEC`` (Python 3.11 drops its
    ``flags``), and a received descriptor is otherwise inheritable: a process started
    by any thread before it was marked would keep the marker's lock past this run.
    """
    item = array.array("i")
    message, ancdata, _, _ = sock.recvmsg(
        MAX_JOB_BYTES, socket.CMSG_SPACE(2 * item.itemsize), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            item.frombytes(data[: len(data) - (len(data) % item.itemsize)])
    return message, list(item)


def main() -> None:
    parser = argparse.ArgumentParser(description="a warm mcp-ir run (started by WarmPool)")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    code = _worker_main(args.fd)
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
