"""``mcp-ir alerts``: the incidents intake opened from alerts, or its dead letters."""

from __future__ import annotations

import argparse
import json
from typing import Any

NAME = "alerts"
HELP = "list alerts the intake received (or kept as dead letters)"
DESCRIPTION = (
    "Read the intake's store (no secrets needed) and list the incidents opened from "
    "alerts, newest first: incident id, source, target, severity, launch state "
    "(new, launching, launched, failed), attempts and last error, and how many times "
    "the alert was delivered (1 + duplicates). With --dead-letter, list the alerts "
    "that authenticated but could not be used (not JSON, wrong format, no rule "
    "matched), with the reason and the first 2 KiB of the body, redacted."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dead-letter",
        action="store_true",
        help="list kept alerts that opened no incident, with the reason",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output (a JSON list)")


def run(args: argparse.Namespace, settings: Any) -> int:
    """Prints the list; 0 always (an empty list is not an error).

    Raises:
        ConfigError: the inventory or its ``intake:`` section is invalid.
    """
    from intake.alerts_cli import list_alerts

    rows = list_alerts(settings, dead_letter=args.dead_letter)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no dead letters" if args.dead_letter else "no alerts")
    elif args.dead_letter:
        for row in rows:
            print(
                f"#{row['id']}  {row['received_at']}  source {row['source']}  "
                f"{row['body_bytes']} bytes  sha256 {row['body_sha256'][:12]}  — {row['reason']}"
            )
    else:
        for row in rows:
            print(_incident_line(row))
    return 0


def _incident_line(row: dict[str, Any]) -> str:
    line = (
        f"{row['incident_id']}  {row['created_at']}  source {row['source']}  "
        f"target {row['target']}  {row['severity']}"
        + (" auto-contain" if row["auto_contain"] else "")
        + f"  {row['state']}  deliveries {row['deliveries']}  {row['title']!r}"
    )
    if row["last_error"]:
        line += f"  (attempt {row['attempts']}: {row['last_error']})"
    return line
