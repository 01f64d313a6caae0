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
    "POST /alerts/SOURCE (and /alerts/SOURCE/TOKEN for url-token sources) for each "
    "source of the inventory's `intake:` section (Splunk, Datadog, Elastic, Azure "
    "Monitor, Sentinel, PagerDuty, Alertmanager, Grafana or generic payloads; hmac, "
    "bearer, basic, url-token, pagerduty, grafana, standard-webhooks or entra-id "
    "auth; deduplicated, stored durably before the 2xx; a firing alert for a target "
    "without an open incident starts breach-response exactly once, one for a target "
    "with one joins it, a resolved one never starts anything); "
    "POST /slack/interactions when the inventory has a `slack:` section; and "
    "GET /metrics (Prometheus text: alerts received/rejected/deduplicated, incidents by "
    "state, gate wait time, time to containment, Slack outbox depth). Source secrets "
    "are read from the environment variables the inventory names; a missing one "
    "stops the server at start (exit 2). Incidents a previous server accepted but did "
    "not launch are launched at start. --launch deployment (production) starts each "
    "run as a flow run of the Prefect deployment, executed by a worker, so this host "
    "holds no target credential; --launch process (single host) runs each as its own "
    "process here (it survives a restart of the server), --warm keeping some started "
    "ahead. A run that dies before its first trail record shows as failed and is "
    "retried with backoff. See docs/intake.md."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1; put TLS in front when exposing it)",
    )
    p.add_argument("--port", type=int, default=8787, help="TCP port (default 8787)")
    p.add_argument(
        "--launch",
        choices=["process", "deployment"],
        default="process",
        help="how runs start: 'deployment' = a flow run of the Prefect deployment, on a "
        "worker (production: no target credential on this host); 'process' = a "
        "detached process on this host (single-host set-ups; default)",
    )
    p.add_argument(
        "--deployment-paths",
        action="store_true",
        help="with --launch deployment, pass this host's --config and --evidence-dir "
        "to the flow run (worker on the same machine or a shared filesystem)",
    )
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
    from core.errors import ConfigError
    from intake.launchers import DeploymentLauncher, ProcessLauncher
    from intake.server import run_server
    from intake.warm import WarmPool
    from notifications.slack_interactions import create_slack_routes

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port: {args.port} is not a TCP port (1-65535)")
    if not 0 <= args.warm <= 32:
        raise ConfigError(f"--warm: {args.warm} is not between 0 and 32")
    routes = create_slack_routes(settings)
    pool = WarmPool(args.warm if args.launch == "process" else 0)
    pool.start()
    launcher = (
        DeploymentLauncher(pass_paths=args.deployment_paths)
        if args.launch == "deployment"
        else ProcessLauncher(pool.spawn)
    )
    stop = threading.Event()
    threading.Thread(
        target=catch_up_loop, args=(settings, stop), name="catch-up", daemon=True
    ).start()
    try:
        run_server(
            settings,
            host=args.host,
            port=args.port,
            launcher=launcher,
            extra_routes=routes,
            metrics=True,
            collectors=[pool],
            log_level=args.log_level,
        )
    finally:
        stop.set()
        pool.close()
        if isinstance(launcher, DeploymentLauncher):
            launcher.close()
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
            drain_outbox(settings)
            if worm.configured_target(inventory) is not None:
                for incident_dir in sorted(settings.evidence_dir.glob("INC-*")):
                    worm.catch_up(inventory, incident_dir)
        except Exception:  # noqa: BLE001 (catch-up retries at the next tick)
            log.exception("catch-up of notifier outboxes / WORM copy failed; retrying later")
