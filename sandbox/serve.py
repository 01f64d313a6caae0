"""Run an ASGI app on a free loopback port in a background thread (sandbox servers)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ServerHandle:
    """A running server: ``url`` to reach it, ``stop()`` to end it."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread
    app: Any = field(repr=False, default=None)

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(min(timeout, 0.5))
        if self.thread.is_alive():
            # Connections that do not close promptly (a TLS peer that never answers the
            # close_notify, a watch stream) must not hold a sandbox's shutdown up.
            self.server.force_exit = True
            self.thread.join(timeout)


def start_uvicorn(
    config: uvicorn.Config, *, what: str, thread_name: str | None = None
) -> tuple[uvicorn.Server, threading.Thread]:
    """Runs ``config``'s server in a daemon thread and waits (10 s at most) until it
    accepts connections; ``RuntimeError`` naming ``what`` when it does not."""
    server = uvicorn.Server(config)
    name = thread_name or f"sandbox-{config.port}"
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.02)
    return server, thread


def serve_in_thread(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> ServerHandle:
    """Starts ``app`` under uvicorn in a daemon thread and waits until it accepts
    connections; HTTPS when ``ssl_certfile``/``ssl_keyfile`` are given."""
    port = port or free_port(host)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    server, thread = start_uvicorn(config, what=f"sandbox server on {host}:{port}")
    scheme = "https" if ssl_certfile else "http"
    return ServerHandle(url=f"{scheme}://{host}:{port}", server=server, thread=thread, app=app)
