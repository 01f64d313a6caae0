"""Starting (and resuming) incidents: the one entry point for the CLI, the intake
and the demo."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from runbook.playbook import load_playbook
from runbook.settings import Settings
from runbook.trail import TRAIL_FILE, check_incident_id

PLAYBOOK_FLOWS = {"breach-response": "flows.breach_response:breach_response"}


def new_incident_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"INC-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def flow_for(playbook: str) -> Any:
    """The flow that runs a playbook: its own named flow, else the generic one."""
    if playbook in PLAYBOOK_FLOWS:
        module, _, name = PLAYBOOK_FLOWS[playbook].partition(":")
        return getattr(__import__(module, fromlist=[name]), name)
    from functools import partial

    from flows.run_playbook import run_playbook

    return partial(run_playbook, playbook)


def launch_incident(
    settings: Settings,
    *,
    target: str,
    playbook: str = "breach-response",
    incident_id: str | None = None,
    initiator: str,
    trigger: dict[str, Any] | None = None,
    severity: str = "high",
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    policy: str = "standard",
    wait: bool = False,
) -> str:
    """Starts a playbook run for an incident and returns the incident id.

    With ``wait`` the flow runs in this process until it ends (the CLI); without,
    a detached ``mcp-ir`` process runs it (the intake), its output in
    ``<incident dir>/run.log``. Idempotent on ``incident_id`` when not waiting: an
    incident that already has a trail is not started again.

    Raises:
        ConfigError: unknown target or playbook, invalid playbook for the target.
    """
    incident_id = check_incident_id(incident_id or new_incident_id())
    inventory = settings.inventory()
    inventory.target(target)
    flow_for(playbook)
    load_playbook(
        playbook,
        inventory=inventory,
        target=target,
        context={
            "trigger": {
                "kind": "manual",
                "severity": severity,
                "auto_contain": False,
                **(trigger or {}),
            },
            "severity": severity,
            "policy": policy,
        },
    )
    if wait:
        flow_fn = flow_for(playbook)
        flow_fn(
            target=target,
            incident_id=incident_id,
            initiator=initiator,
            trigger=trigger,
            severity=severity,
            window_start=window_start.isoformat() if window_start else None,
            window_end=window_end.isoformat() if window_end else None,
            policy=policy,
            config_path=str(settings.config_path) if settings.config_path else None,
            evidence_dir=str(settings.evidence_dir),
        )
        return incident_id
    incident_dir = settings.incident_dir(incident_id)
    if (incident_dir / TRAIL_FILE).exists():
        return incident_id
    incident_dir.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "runbook.cli",
        "--evidence-dir",
        str(settings.evidence_dir),
        *(["--config", str(settings.config_path)] if settings.config_path else []),
        "run",
        playbook,
        "--target",
        target,
        "--incident",
        incident_id,
        "--as",
        initiator,
        "--severity",
        severity,
        "--policy",
        policy,
        "--trigger-json",
        json.dumps(trigger or {}),
    ]
    if window_start:
        args += ["--window-start", window_start.isoformat()]
    if window_end:
        args += ["--window-end", window_end.isoformat()]
    with open(incident_dir / "run.log", "ab") as log:
        subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=os.environ.copy(),
        )
    return incident_id
