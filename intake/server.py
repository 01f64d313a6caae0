"""``mcp-ir serve``: the intake app under uvicorn, in the foreground."""

from __future__ import annotations

from collections.abc import Sequence

import uvicorn
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute

from intake.app import create_app
from intake.config import SettingsLike
from intake.worker import Launcher


def run_server(
    settings: SettingsLike,
    host: str = "127.0.0.1",
    port: int = 8787,
    *,
    launcher: Launcher | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    metrics: bool = False,
    collectors: Sequence[Collector] = (),
    log_level: str = "info",
) -> None:
    """Serves intake until interrupted (blocking).

    The store and the launch worker start before the socket is bound, so incidents a
    previous process left unlaunched are picked up even if no alert arrives.

    Args:
        settings: ``runbook.settings.Settings``.
        host: interface to bind (loopback by default; put TLS in front when exposed).
        port: TCP port.
        launcher: default ``runbook.launch.launch_incident``.
        extra_routes: e.g. the Slack interactivity routes.
        metrics: also serve ``GET /metrics``.
        collectors: more Prometheus collectors for ``/metrics``.
        log_level: uvicorn's log level.

    Raises:
        ConfigError: invalid intake configuration or unset secret variable.
    """
    app = create_app(
        settings,
        launcher=launcher,
        extra_routes=extra_routes,
        metrics=metrics,
        collectors=collectors,
    )
    uvicorn.run(app, host=host, port=port, lifespan="on", log_level=log_level)
