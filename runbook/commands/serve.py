"""``mcp-ir serve``: the SIEM intake, Slack approvals and Prometheus metrics in one
HTTP server (uvicorn, foreground)."""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

NAME = "serve"
HELP = "serve the alert intake, Slack approval buttons and /metrics over HTTP"
DESCRIPTION = (
    "Run one HTTP server (foreground, until Ctrl-C) with: GET /healthz; "
    "POST /alerts/SOURCE for each source of the inventory's `intake:` section "
    "(HMAC-signed or bearer, deduplicated, stored durably before the 2xx; a new "
    "incident starts breach-response on the rule's target, exactly once); "
    "POST /slack/interactions when the inventory has a `slack:` section; and "
    "GET /metrics (Prometheus text: alerts received/rejected/deduplicated, incidents by "
    "state, gate wait time, time to containment, Slack outbox depth). Source secrets "
    "are read from the environment variables the inventory names; a missing one "
    "stops the server at start (exit 2). Incidents a previous server accepted but did "
    "not launch are launched at start. Each run is its own process (it survives a "
    "restart of the server); --warm keeps some started ahead. See docs/intake.md."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1; put TLS in front when exposing it)",
    )
    p.add_argument("--port", type=int, default=8787, help="TCP port (default 8787)")
    p.add_argument(
        "--warm",
        type=int,
        default=2,
        metavar="N",
        help="pre-started run processes kept ready, so a new incident skips Python and "
        "Prefect start-up (default 2; 0 = start each run cold)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level (default info)",
    )


def run(args: argparse.Namespace, settings: Any) -> int:
    """Serves until interrupted; 0 on a clean stop.

    Raises:
        ConfigError: invalid inventory or intake section, unset secret variable,
            port out of range.
    """
    from functools import partial

    from core.errors import ConfigError
    from intake.server import run_server
    from intake.warm import WarmPool
    from notifications.slack_interactions import create_slack_routes
    from runbook.launch import launch_incident

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port: {args.port} is not a TCP port (1-65535)")
    if not 0 <= args.warm <= 32:
        raise ConfigError(f"--warm: {args.warm} is not between 0 and 32")
    routes = create_slack_routes(settings)
    pool = WarmPool(args.warm)
    pool.start()
    stop = threading.Event()
    threading.Thread(
        target=catch_up_loop, args=(settings, stop), name="catch-up", daemon=True
    ).start()
    try:
        run_server(
            settings,
            host=args.host,
            port=args.port,
            launcher=partial(launch_incident, spawner=pool.spawn),
            extra_routes=routes,
            metrics=True,
            collectors=[pool],
            log_level=args.log_level,
        )
    finally:
        stop.set()
        pool.close()
    return 0


CATCH_UP_EVERY_S = 60.0


def catch_up_loop(settings: Any, stop: threading.Event) -> None:
    """Delivers what ended runs left behind: Slack messages still in the outbox and
    evidence not yet copied to the WORM bucket. Never raises: a failure is logged and
    tried again at the next tick."""
    from notifications.trail_observer import drain_outbox
    from runbook import worm

    log = logging.getLogger("mcp_ir.serve")
    while not stop.wait(CATCH_UP_EVERY_S):
        try:
            inventory = settings.inventory()
            if inventory.slack is not None:
                drain_outbox(settings)
            if worm.configured_target(inventory) is not None:
                for incident_dir in sorted(settings.evidence_dir.glob("INC-*")):
                    worm.catch_up(inventory, incident_dir)
        except Exception:  # noqa: BLE001 (catch-up retries at the next tick)
            log.exception("catch-up of Slack outbox / WORM copy failed; retrying later")
