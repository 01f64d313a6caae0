"""``mcp-ir`` runs for the tests, forked from a warm process instead of exec'd cold.

Every ``python -m runbook.cli`` the suite starts spent about 2.5 s of CPU importing
the same third-party libraries (the Anthropic SDK alone is 1.5 s) before doing its
work, and the suite starts hundreds: on a 2-core machine that was most of its
time. Here one zygote per test process imports those libraries once; each run is a
``fork()`` of it that becomes ``mcp-ir``: the test's argv, environment, working
directory and stdin/stdout/stderr (passed as file descriptors), then
``runbook.cli`` run as ``__main__`` and a normal interpreter exit. It is a real
process with its own pid: signals, kills and exit codes behave as with a cold
start.

What the zygote preloads reads no environment at import (the SDKs read theirs when
a client is made), with one exception: Prefect fixes its settings and logging at
import, so ``runbook.cli`` makes them follow the run's own environment when Prefect
was already imported (``_prefect_follows_environment``). The project's own modules
are preloaded too (none reads the environment at import). After the imports the
zygote calls ``gc.freeze()``: a child's collections then neither walk nor copy the
preloaded heap (that took 1.5 s of CPU per run). ``MCP_IR_TEST_COLD_CLI=1`` makes
every run a cold ``exec`` again, as a user's shell does; the demo and the
documented commands (``test_operations_doc``) always start cold.

Measuring: ``MCP_IR_TEST_RUN_LOG=FILE`` appends each run's CPU seconds, test and
argv; ``MCP_IR_TEST_PROFILE=DIR`` writes a cProfile of each run's main thread.

Protocol on the zygote's unix socket, one connection per run: the client sends a
JSON header (argv, env, cwd) with three descriptors; the zygote answers
``pid N`` once forked and ``exit CODE`` (negative: killed by that signal) when the
child ends.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

PRELOAD = (
    "anthropic",
    "kubernetes.client",
    "kubernetes.config",
    "boto3",
    "botocore.session",
    "docker",
    "httpx",
    "aiohttp",
    "pydantic",
    "cryptography.x509",
    "yaml",
    "jinja2",
    "rich.console",
    "slack_sdk",
    "sqlalchemy",
    "fastapi",
    "detect_secrets",
    # Prefect, with what a flow run loads; each run refreshes its settings and
    # logging from its own environment (runbook.cli._prefect_follows_environment).
    "prefect",
    "prefect.main",
    "prefect.flow_engine",
    "prefect.task_engine",
    # The project's own modules: none reads the environment at import.
    "runbook.cli",
    "runbook.launch",
    "flows.runner",
    "flows.run_playbook",
)

CLI_MODULE = "runbook.cli"


def is_cli(cmd: list[str]) -> bool:
    return len(cmd) >= 3 and cmd[0] == sys.executable and cmd[1:3] == ["-m", CLI_MODULE]


# ---------------------------------------------------------------- the zygote


def _serve(path: str) -> None:
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)
    with contextlib.suppress(ImportError):
        from runbook.commands import discover

        discover()
    # What was preloaded stays in every child and is never garbage: out of the
    # collector's sight, a child's collections neither walk it (CPU) nor touch its
    # pages (copy-on-write), as the gc.freeze documentation advises for pre-fork.
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, tuple[socket.socket, str]] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wakeup_r, selectors.EVENT_READ, "reap")
    print("ready", flush=True)
    parent = os.getppid()
    while os.getppid() == parent:  # a test process that died without stopping it
        for key, _ in selector.select(timeout=2):
            if key.data == "accept":
                conn, _ = listener.accept()
                pid, what = _fork_run(conn, listener, wakeup_r, wakeup_w)
                if pid:
                    children[pid] = (conn, what)
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wakeup_r, 4096)
        _reap(children)


def _reap(children: dict[int, tuple[socket.socket, str]]) -> None:
    while children:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn, what = children.pop(pid, (None, ""))
        _account(what, usage)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()


def _account(what: str, usage: Any) -> None:
    """With ``MCP_IR_TEST_RUN_LOG`` set, one line per run: its CPU seconds and command,
    to see where the suite's CPU goes."""
    log = os.environ.get("MCP_IR_TEST_RUN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{usage.ru_utime + usage.ru_stime:.2f}\t{what}\n")


def _fork_run(conn: socket.socket, listener: socket.socket, *pipes: int) -> tuple[int, str]:
    conn.settimeout(30)
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    buffer = data
    while not buffer.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            break
        buffer += more
    request = json.loads(buffer)
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        conn.sendall(f"pid {pid}\n".encode())
        test = request["env"].get("PYTEST_CURRENT_TEST", "")
        return pid, f"{test}\t{' '.join(request['argv'])}"
    # The child: become the requested mcp-ir run.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    listener.close()
    conn.close()
    for fd in pipes:
        os.close(fd)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    _as_if_started_now()
    sys.argv = ["-m", *request["argv"]]  # run_module puts the module's path first
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False, errors="backslashreplace")  # noqa: SIM115
    os._exit(_run_cli())


def _run_cli() -> int:
    """Runs ``runbook.cli`` as ``__main__`` and what an interpreter exit does that a
    run can observe (joins its non-daemon threads, runs ``atexit``, flushes stdio);
    returns the exit code. The module teardown is skipped: it would free, one by one,
    the thousands of classes the zygote preloaded (0.6 s of CPU per run)."""
    import atexit
    import runpy
    import traceback

    code: int
    prof_dir = os.environ.get("MCP_IR_TEST_PROFILE")
    profiler = None
    if prof_dir:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    # As in a cold start, ``__main__`` is a fresh copy of the module (the preloaded
    # one would make runpy warn that it was imported before it ran).
    sys.modules.pop(CLI_MODULE, None)
    try:
        runpy.run_module(CLI_MODULE, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(os.path.join(prof_dir, f"{os.getpid()}.prof"))
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


def _as_if_started_now() -> None:
    """What a cold start would have taken from the run's environment and cwd: the
    import path (``-m`` puts the cwd first; ``PYTHONPATH`` next) and the one value a
    preloaded library fixes at import (the Kubernetes SDK's default kubeconfig)."""
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:1] = [os.getcwd(), *extra]
    with contextlib.suppress(ImportError):
        from kubernetes.config import kube_config

        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = os.environ.get("KUBECONFIG", "~/.kube/config")


# ---------------------------------------------------------------- the client


class Zygote:
    """The zygote of this test process, started on first use."""

    _instance: ClassVar[Zygote | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="mcp-ir-zy-")
        self.path = os.path.join(self.directory, "sock")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.warm_cli", self.path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the warm CLI zygote did not start: {line!r}")

    @classmethod
    def get(cls) -> Zygote:
        with cls._lock:
            if cls._instance is None or cls._instance.process.poll() is not None:
                cls._instance = Zygote()
            return cls._instance

    @classmethod
    def shutdown(cls) -> None:
        with cls._lock:
            if cls._instance is not None:
                cls._instance.process.kill()
                cls._instance.process.wait(10)
                with contextlib.suppress(OSError):
                    os.unlink(cls._instance.path)
                    os.rmdir(cls._instance.directory)
                cls._instance = None


class WarmProcess:
    """The ``subprocess.Popen`` surface the tests use, for a run forked by the zygote."""

    def __init__(
        self,
        cmd: list[str],
        env: dict[str, str] | None,
        cwd: str | os.PathLike[str] | None,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        text: bool,
    ) -> None:
        self.args = cmd
        self._text = text
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None
        ends: list[int] = []
        close_after: list[int] = []

        def end(spec: Any, writing: bool, role: str) -> int:
            if spec == subprocess.PIPE:
                r, w = os.pipe()
                mine, theirs = (r, w) if writing else (w, r)
                mode = ("r" if writing else "w") + ("" if text else "b")
                setattr(self, role, open(mine, mode, encoding="utf-8" if text else None))  # noqa: SIM115
                close_after.append(theirs)
                return theirs
            if spec == subprocess.DEVNULL or spec is None:
                fd = os.open(os.devnull, os.O_RDWR)
                close_after.append(fd)
                return fd
            if spec == subprocess.STDOUT:
                return -1
            return spec if isinstance(spec, int) else spec.fileno()

        ends.append(end(stdin, False, "stdin"))
        ends.append(end(stdout, True, "stdout"))
        err = end(stderr, True, "stderr")
        ends.append(ends[1] if err == -1 else err)
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect(Zygote.get().path)
        header = json.dumps(
            {
                "argv": cmd[3:],
                "env": dict(os.environ if env is None else env),
                "cwd": str(cwd or os.getcwd()),
            }
        ).encode()
        socket.send_fds(self._conn, [header + b"\n"], ends)
        for fd in close_after:
            os.close(fd)
        self._reply = b""
        first = self._read_line(timeout=30)
        if first is None or not first.startswith("pid "):
            raise RuntimeError(f"the warm CLI zygote did not fork the run: {first!r}")
        self.pid = int(first.split()[1])

    def _read_line(self, timeout: float | None) -> str | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._reply:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._conn], [], [], remaining)
            if not ready:
                return None
            chunk = self._conn.recv(4096)
            if not chunk:
                raise RuntimeError("the warm CLI zygote went away during a run")
            self._reply += chunk
        line, self._reply = self._reply.split(b"\n", 1)
        return line.decode()

    def poll(self) -> int | None:
        if self.returncode is None:
            line = self._read_line(timeout=0)
            if line is not None:
                self.returncode = int(line.split()[1])
                self._conn.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            line = self._read_line(timeout)
            if line is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self.returncode = int(line.split()[1])
            self._conn.close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:  # noqa: A002
        # subprocess.Popen.communicate without its threads' generality: feed, then drain.
        if self.stdin is not None:
            if input:
                with contextlib.suppress(BrokenPipeError):
                    self.stdin.write(input)
            with contextlib.suppress(BrokenPipeError):
                self.stdin.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        out: dict[str, list[Any]] = {"stdout": [], "stderr": []}
        streams = {s: name for name in out if (s := getattr(self, name)) is not None}
        while streams:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            ready, _, _ = select.select(list(streams), [], [], remaining)
            for stream in ready:
                chunk = os.read(stream.fileno(), 1 << 16)
                if chunk:
                    out[streams[stream]].append(chunk)
                else:
                    stream.close()
                    del streams[stream]
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.wait(remaining)
        return tuple(self._join(out[name]) for name in ("stdout", "stderr"))  # type: ignore[return-value]

    def _join(self, chunks: list[bytes]) -> Any:
        data = b"".join(chunks)
        return data.decode("utf-8", errors="replace") if self._text else data


def cold() -> bool:
    return os.environ.get("MCP_IR_TEST_COLD_CLI") == "1"


def popen(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    text: bool = True,
) -> Any:
    """``subprocess.Popen(cmd, ...)``, forked warm when ``cmd`` is an ``mcp-ir`` run."""
    if cold() or not is_cli(cmd):
        return subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr, text=text
        )
    return WarmProcess(cmd, env, cwd, stdin, stdout, stderr, text)


def run(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: str | None = None,  # noqa: A002
    timeout: float | None = None,
    check: bool = False,
    capture_output: bool = False,
    text: bool = False,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(cmd, ...)`` with the same result (and defaults), forked warm for
    an ``mcp-ir`` run; other commands, and other keyword arguments, go to
    ``subprocess.run`` itself."""
    if cold() or not is_cli(cmd) or kwargs:
        return subprocess.run(
            cmd,
            env=env,
            cwd=cwd,
            input=input,
            timeout=timeout,
            check=check,
            capture_output=capture_output,
            text=text,
            **kwargs,
        )
    pipe = subprocess.PIPE if capture_output else None
    proc = popen(
        cmd,
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=pipe,
        stderr=pipe,
        text=text,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result


if __name__ == "__main__":
    try:
        _serve(sys.argv[1])
    except OSError as exc:  # pragma: no cover - start-up failure is reported to the client
        if exc.errno != errno.EINTR:
            raise
