"""``mcp-ir incidents``: every incident with its target, state, what it waits for
and its age, read from the evidence directory alone (no inventory, no server)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from runbook.incident_index import human_age, iter_views, summarize

NAME = "incidents"
HELP = "list every incident: target, state, what it waits for, age"
DESCRIPTION = (
    "List the incidents under the evidence directory, newest first, from their trails "
    "alone: target, playbook, state (running, succeeded, failed, rejected, …), what a "
    "person must do next (an approval or a record), and age. Needs no inventory."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--open", action="store_true", help="only incidents whose run has not ended")


def run(args: argparse.Namespace, settings: Any) -> int:
    rows = [summarize(view) for _, view in iter_views(settings.evidence_dir)]
    rows.reverse()
    if args.open:
        rows = [r for r in rows if r.state == "running"]
    if args.json:
        print(json.dumps({"incidents": [r.as_json() for r in rows]}, indent=2))
        return 0
    if not rows:
        print(f"no incidents under {settings.evidence_dir}")
        return 0
    print(f"{'INCIDENT':<26} {'TARGET':<16} {'PLAYBOOK':<16} {'STATE':<10} {'AGE':>5}  WAITING FOR")
    for r in rows:
        playbook = (r.playbook or "?") + (" (drill)" if r.drill else "")
        print(
            f"{r.id:<26} {r.target or '?':<16} {playbook:<16} {r.state:<10} "
            f"{human_age(r.age_s):>5}  {r.waiting_for or '-'}"
        )
    return 0
