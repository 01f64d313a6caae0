"""``mcp-ir teardown``: retire tunnel stacks (playbook ``teardown``).

One target runs in this process, printing progress. Several targets (``--target``
repeated, or ``--selector KEY=VALUE`` on the inventory's labels) run each as its
own incident in its own ``mcp-ir teardown`` process, under ``--max-concurrency``
and ``--max-errors`` (``runbook.fanout``); the output says which targets ran,
failed, and were not started.
"""

from __future__ import annotations

import argparse
import getpass
import os
import subprocess
import sys
import threading
import time
from typing import Any

from core.errors import ConfigError
from runbook import on_worker
from runbook.commands._outcome import print_outcome
from runbook.fanout import TargetOutcome, parse_limit, run_fanout, select_targets

NAME = "teardown"
HELP = "retire tunnel stacks: stop, archive the tunnel, destroy stored credentials, verify"
DESCRIPTION = (
    "Run the teardown playbook against one or more targets. Each target is its own "
    "incident. With several targets, --max-concurrency bounds how many run at once and "
    "--max-errors stops launching new ones once more than that many have failed (as AWS "
    "Systems Manager rate control does). Re-running on a torn-down target is harmless: "
    "every step finds its effect already in place. Exit 0 when every target succeeded."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", action="append", default=[], help="target name (repeatable)")
    p.add_argument(
        "--selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="every target whose inventory labels match (repeatable: all must match)",
    )
    p.add_argument("--max-concurrency", default="1", help="targets at once: N or N%% (default 1)")
    p.add_argument(
        "--max-errors",
        default="0",
        help="stop launching new targets once MORE than N (or N%%) failed (default 0)",
    )
    p.add_argument(
        "--remove-config",
        action="store_true",
        help="also delete config/ and the compose file (no secrets there; kept by default)",
    )
    p.add_argument(
        "--incident", help="incident id (one target only): give an existing one to resume"
    )
    p.add_argument("--as", dest="initiator", default=None, help="who starts it")
    p.add_argument(
        "--policy",
        default="standard",
        choices=["standard", "auto-approve"],
        help="auto-approve passes every gate; refused unless the target is a sandbox",
    )
    on_worker.add_argument(p)


def _me(args: argparse.Namespace) -> str:
    return args.initiator or os.environ.get("MCP_IR_USER") or getpass.getuser()


def run(args: argparse.Namespace, settings: Any) -> int:
    if args.on_worker:
        if len(args.target) > 1 or args.selector:
            raise ConfigError("--on-worker: one --target (or --incident) at a time")
        return on_worker.launch(
            settings,
            "teardown",
            incident_id=args.incident,
            target=args.target[0] if args.target else None,
            parameters={
                "initiator": _me(args),
                "options": {"remove_config": args.remove_config},
                "policy": args.policy,
            },
        )
    if args.incident and not args.target and not args.selector:
        args.target = [on_worker.target_of(settings, args.incident, None)]
    inventory = settings.inventory()
    targets = select_targets(inventory, args.target, args.selector)
    if args.incident and len(targets) > 1:
        raise ConfigError("--incident: only with a single target (each target is its own incident)")
    concurrency = parse_limit(args.max_concurrency, len(targets), "--max-concurrency", minimum=1)
    max_errors = parse_limit(args.max_errors, len(targets), "--max-errors", minimum=0)
    for target in targets:
        _check(settings, target, args)
    if len(targets) == 1:
        return run_one(settings, targets[0], args)
    print(
        f"teardown of {len(targets)} target(s): {', '.join(targets)} "
        f"(max concurrency {concurrency}, max errors {max_errors})",
        flush=True,
    )
    result = run_fanout(
        targets,
        lambda t: _child(settings, t, args),
        max_concurrency=concurrency,
        max_errors=max_errors,
        emit=lambda line: print(line, flush=True),
    )
    for line in result.summary():
        print(line, flush=True)
    return 0 if result.ok else 1


def _check(settings: Any, target: str, args: argparse.Namespace) -> None:
    """Bad input fails before anything runs (exit 2): unknown target, a playbook that
    does not fit the target, auto-approve on a production target."""
    from runbook.playbook import load_playbook

    load_playbook(
        "teardown",
        inventory=settings.inventory(),
        target=target,
        context={
            "policy": args.policy,
            "trigger": {"kind": "teardown", "remove_config": args.remove_config},
        },
    )


def run_one(settings: Any, target: str, args: argparse.Namespace) -> int:
    """Tears one target down in this process."""
    from flows.runner import RunEnded
    from flows.teardown import teardown
    from runbook.launch import new_incident_id

    incident = args.incident or new_incident_id()
    try:
        result = teardown(
            target=target,
            incident_id=incident,
            initiator=_me(args),
            options={"remove_config": args.remove_config},
            policy=args.policy,
            config_path=str(settings.config_path) if settings.config_path else None,
            evidence_dir=str(settings.evidence_dir),
        )
    except RunEnded as exc:
        print_outcome(exc.result)
        return 1
    print_outcome(result)
    return 0


def _child(settings: Any, target: str, args: argparse.Namespace) -> TargetOutcome:
    """One target of a fan-out: its own ``mcp-ir teardown`` process and incident; its
    progress is shown prefixed with the target's name."""
    from runbook.launch import new_incident_id

    incident = new_incident_id()
    cmd = [
        sys.executable,
        "-m",
        "runbook.cli",
        "--evidence-dir",
        str(settings.evidence_dir),
        *(["--config", str(settings.config_path)] if settings.config_path else []),
        NAME,
        "--target",
        target,
        "--incident",
        incident,
        "--as",
        _me(args),
        "--policy",
        args.policy,
        *(["--remove-config"] if args.remove_config else []),
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    status_line: list[str] = []

    def relay(stream: Any, keep: bool) -> None:
        for line in stream:
            print(f"[{target}] {line.rstrip()}", file=sys.stderr, flush=True)
            if keep and line.startswith("status:"):
                status_line.append(line.split(":", 1)[1].strip())

    threads = [
        threading.Thread(target=relay, args=(proc.stdout, True), daemon=True),
        threading.Thread(target=relay, args=(proc.stderr, False), daemon=True),
    ]
    for t in threads:
        t.start()
    code = proc.wait()
    for t in threads:
        t.join(10)
    detail = status_line[-1] if status_line else f"exit code {code}"
    return TargetOutcome(
        target,
        "succeeded" if code == 0 else "failed",
        incident_id=incident,
        detail="" if code == 0 else detail,
        duration_s=time.monotonic() - started,
    )
