"""``mcp-ir worker``: a Prefect worker for the deployments with warm flow-run processes."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from typing import Any

NAME = "worker"
HELP = "run the deployments' flow runs on this machine, from warm processes"
DESCRIPTION = (
    "Take the flow runs of a Prefect work pool (default mcp-ir-process, the pool of "
    "prefect.yaml) as soon as the server's event stream says one is scheduled (polling "
    "every --query-seconds as a fallback) and run each in a process that has already "
    "imported Prefect, the flows and the SDKs and loaded the deployments' flows "
    "(--warm of them kept ready), so a run "
    "started by `mcp-ir serve --launch deployment` reaches its first step in well "
    "under a second instead of the stock process worker's poll interval plus 4-7 s of "
    "start-up. Runs continue if the worker is stopped. This machine needs the target "
    "credentials; the intake host does not. See docs/intake.md."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", default="mcp-ir-process", help="work pool (default mcp-ir-process)")
    p.add_argument("--warm", type=int, default=2, help="ready processes kept (default 2)")
    p.add_argument(
        "--query-seconds",
        type=float,
        default=2.0,
        help="seconds between polls of the pool (default 2; a scheduled flow run wakes "
        "the worker at once through the server's event stream)",
    )
    p.add_argument(
        "--no-events",
        dest="events",
        action="store_false",
        help="poll only, every --query-seconds (do not listen to the event stream)",
    )
    p.add_argument("--log-dir", type=Path, default=None, help="keep each flow run's output here")
    p.add_argument(
        "--no-preload",
        dest="preload",
        action="store_false",
        help="do not pre-load the deployments' flows in the warm processes: each run "
        "reads its deployment and runs its pull steps, as `prefect flow-run execute` "
        "does (deployments whose pull steps only enter this checkout are pre-loaded "
        "by default; others always load per run)",
    )


def run(args: argparse.Namespace, settings: Any) -> int:
    """Runs until SIGTERM/SIGINT; 0 on a clean stop.

    Raises:
        ConfigError: an argument out of range.
    """
    from core.errors import ConfigError
    from runbook.warm_worker import WarmWorker

    if not 0 <= args.warm <= 32:
        raise ConfigError(f"--warm: {args.warm} is not between 0 and 32")
    if not 0.05 <= args.query_seconds <= 60:
        raise ConfigError(f"--query-seconds: {args.query_seconds} is not between 0.05 and 60")
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    worker = WarmWorker(
        args.pool,
        warm=args.warm,
        query_s=args.query_seconds,
        log_dir=args.log_dir,
        preload=args.preload,
        events=args.events,
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    finally:
        worker.stop()
    return 0
