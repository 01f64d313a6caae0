"""The real container engine (podman serving the Docker API) and simulated stacks.

Fixtures:

- ``engine`` (session): one podman service for the whole session, in a tmp dir.
  Fails (never skips) with a clear message when podman/runc/busybox-static are
  missing: ``scripts/setup-podman.sh`` installs them.
- ``engine_client`` (session): a ``docker.DockerClient`` bound to it.
- ``make_stack`` (function): factory deploying a fresh simulated tunnel stack
  under a unique project name; everything it made is torn down afterwards.
- ``compose_stack`` (function): one such stack, already logging (both containers
  running, cloudflared's four connections registered).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from sandbox.engine import EngineHandle, podman_available, start_engine
from sandbox.stack import ComposeLayout, DeployedStack, deploy_stack, teardown_stack, write_data_dir
from tests.plugins.shared_services import shared_dir, shared_service


@dataclass
class ComposeStack:
    """A deployed simulated stack, as tests see it."""

    project: str
    data_dir: Path
    config_dir: Path
    layout: ComposeLayout
    docker_host: str
    client: docker.DockerClient
    canary: str | None
    token: str
    tunnel_id: str
    domain: str
    containers: dict[str, str] = field(default_factory=dict)
    deployed: DeployedStack | None = None


@pytest.fixture(scope="session")
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineHandle]:
    """One podman service answering the Docker Engine API for the whole session."""
    problem = podman_available()
    if problem:
        pytest.fail(f"the container engine cannot run: {problem}", pytrace=False)
    shared = shared_dir(request.config)
    if shared is None:
        # A loaded 2-core machine has taken minutes to start podman: wait, do not fail.
        handle = start_engine(tmp_path_factory.mktemp("engine"), timeout_s=300)
        yield handle
        handle.stop()
        return
    found = shared_service(shared, "engine", _start_shared)
    yield EngineHandle(
        workdir=Path(found["workdir"]),
        docker_host=found["docker_host"],
        pid=found["pid"],
        timings=found["timings"],
    )  # the xdist controller stops it when every worker is done


def _start_shared(workdir: Path) -> dict[str, Any]:
    handle = start_engine(workdir, timeout_s=300)
    return {
        "workdir": str(handle.workdir),
        "docker_host": handle.docker_host,
        "pid": handle.pid,
        "timings": handle.timings,
    }


@pytest.fixture(scope="session")
def engine_client(engine: EngineHandle) -> Iterator[docker.DockerClient]:
    """A docker SDK client of the session engine."""
    client = engine.client()
    yield client
    client.close()


def wait_stack_ready(client: docker.DockerClient, stack: DeployedStack, timeout_s: float) -> None:
    """Waits until both containers run and have logged their start-up lines."""
    ready_markers = {
        "mcp-proxy": b"listening addr=:8080",
        "cloudflared": b"Registered tunnel connection connIndex=",
    }
    deadline = time.monotonic() + timeout_s
    pending = dict(stack.containers)
    while pending:
        for service, name in list(pending.items()):
            container = client.containers.get(name)
            if container.status == "running" and ready_markers[service] in container.logs():
                del pending[service]
        if not pending:
            return
        if time.monotonic() > deadline:
            states = {n: client.containers.get(n).status for n in pending.values()}
            raise AssertionError(f"stack {stack.project} not ready after {timeout_s}s: {states}")
        time.sleep(0.05)


@pytest.fixture
def make_stack(
    engine: EngineHandle,
    engine_client: docker.DockerClient,
    tmp_path: Path,
) -> Iterator[Callable[..., ComposeStack]]:
    """Factory: ``make_stack(canary=..., connections=4, ...)`` deploys a fresh stack."""
    projects: list[str] = []

    def make(
        *,
        canary: str | None = None,
        wait: bool = True,
        **deploy_kwargs: object,
    ) -> ComposeStack:
        project = f"t{secrets.token_hex(4)}"
        projects.append(project)
        token = f"tok-{secrets.token_urlsafe(24)}"
        tunnel_id = f"tnl_{secrets.token_hex(8)}"
        domain = f"{secrets.token_hex(4)}.tunnel.example"
        layout = write_data_dir(tmp_path / project / "data", tunnel_id, domain, token)
        deployed = deploy_stack(
            engine_client,
            project,
            layout,
            token=token,
            tunnel_id=tunnel_id,
            domain=domain,
            canary=canary,
            **deploy_kwargs,  # type: ignore[arg-type]
        )
        if wait:
            wait_stack_ready(engine_client, deployed, timeout_s=15)
        return ComposeStack(
            project=project,
            data_dir=layout.data_dir,
            config_dir=layout.config_dir,
            layout=layout,
            docker_host=engine.docker_host,
            client=engine_client,
            canary=canary,
            token=token,
            tunnel_id=tunnel_id,
            domain=domain,
            containers=deployed.containers,
            deployed=deployed,
        )

    yield make
    for project in projects:
        teardown_stack(engine_client, project)


@pytest.fixture
def compose_stack(make_stack: Callable[..., ComposeStack]) -> ComposeStack:
    """A fresh simulated stack with a canary secret in both containers' logs."""
    return make_stack(canary=f"canary-{secrets.token_hex(12)}")


class EngineInterposer:
    """A unix-socket relay in front of the engine that can stall or pre-empt requests.

    It speaks no HTTP itself: it relays bytes, and looks at the first line of each
    request a client sends. ``hook(request_line)`` may return ``"stall"`` (the
    request is never forwarded: the client waits, as on a hung engine) or run a
    side effect against the real engine first (e.g. remove a container, to
    reproduce a race) and return ``None`` to forward the request unchanged.
    """

    def __init__(self, upstream: str, path: Path, hook: Callable[[str], str | None]) -> None:
        import socket
        import threading

        self.upstream = upstream
        self.path = path
        self.hook = hook
        self.docker_host = f"unix://{path}"
        self.seen: list[str] = []
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(16)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import socket
        import threading

        while not self._closing.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            self._sockets += [client, upstream]
            threading.Thread(
                target=self._pump_requests, args=(client, upstream), daemon=True
            ).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump_requests(self, src, dst) -> None:  # type: ignore[no-untyped-def]
        """Relays the client's bytes, noting each request line in ``seen``; a request
        the hook answers "stall" for is held (never forwarded) until the relay closes."""
        import re

        def forward(data: bytes) -> bool:
            match = re.match(rb"(GET|POST|PUT|DELETE|HEAD) (\S+) HTTP/1\.[01]\r\n", data)
            if match:
                line = f"{match.group(1).decode()} {match.group(2).decode()}"
                self.seen.append(line)
                if self.hook(line) == "stall":
                    self._closing.wait()
                    return False
            return True

        self._pump(src, dst, forward)

    def _pump(self, src, dst, forward=lambda data: True) -> None:  # type: ignore[no-untyped-def]
        """Copies ``src`` to ``dst`` until either ends or ``forward`` refuses a chunk."""
        try:
            while True:
                data = src.recv(65536)
                if not data or not forward(data):
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def client(self, timeout: int = 30) -> docker.DockerClient:
        """A docker SDK client that talks to the engine through this relay."""
        # A pinned API version: no /version round trip through a relay that may stall.
        return docker.DockerClient(base_url=self.docker_host, timeout=timeout, version="1.41")

    def close(self) -> None:
        self._closing.set()
        self._server.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def interposer(
    engine: EngineHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[Callable[[str], str | None]], EngineInterposer]]:
    """Factory: ``interposer(hook)`` puts an ``EngineInterposer`` in front of the engine."""
    made: list[EngineInterposer] = []
    upstream = engine.docker_host.removeprefix("unix://")

    def make(hook: Callable[[str], str | None]) -> EngineInterposer:
        path = tmp_path_factory.mktemp("relay") / "relay.sock"
        relay = EngineInterposer(upstream, path, hook)
        made.append(relay)
        return relay

    yield make
    for relay in made:
        relay.close()
