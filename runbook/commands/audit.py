"""``mcp-ir audit``: the hardening audit (playbook ``posture-audit``), read-only.

Checks each target against the seed's best practices (docs/audit.md), stores the
result in the evidence store (``<evidence>/_audit/``), diffs it against the previous
run and reports drift (a check that started failing) to Slack and ``/metrics``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

NAME = "audit"
HELP = "hardening audit of targets against the seed's best practices (read-only)"
DESCRIPTION = (
    "Check targets against the MCP tunnel hardening practices: OAuth on every upstream "
    "MCP server, upstream.allowed_ips, images by digest, network reach, NetworkPolicy "
    "enforcement by the cluster's network plugin (Helm), credentials at rest, "
    "token/certificate age and expiry, rotation drills, monitoring, server scope, "
    "SSO (manual). Each check is pass, fail, unverifiable (with the reason) or manual, "
    "with its severity and evidence. Nothing on a target is changed. The result is "
    "stored in the evidence store and diffed against the previous run: a check that "
    "started failing is drift (Slack, /metrics, the report's drift section). "
    "Exit 0 when no check failed, 1 when one did, 2 for bad input."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--target", action="append", help="target to audit (repeatable)")
    which.add_argument("--all", action="store_true", help="audit every target of the inventory")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--format", choices=["text", "md", "html"], default="text", help="report format on stdout"
    )
    p.add_argument("--output", help="write the report to this file instead of stdout")
    p.add_argument("--as", dest="initiator", default=None, help="who runs it (recorded)")
    p.add_argument(
        "--no-notify",
        action="store_true",
        help="do not tell Slack about drift (it is still recorded)",
    )


def run(args: argparse.Namespace, settings: Any) -> int:
    from audit.report import render, render_text
    from audit.service import run_audit
    from runbook.playbook import load_playbook

    inventory = settings.inventory()
    names = sorted(inventory.targets) if args.all else list(dict.fromkeys(args.target))
    for name in names:
        inventory.target(name)
        load_playbook("posture-audit", inventory=inventory, target=name)
    initiator = args.initiator or os.environ.get("MCP_IR_USER") or getpass.getuser()
    outcome = run_audit(
        inventory,
        names,
        settings.evidence_dir,
        initiator=initiator,
        trigger={"kind": "manual", "by": initiator, "command": "audit"},
        notify=not args.no_notify,
    )
    if args.json:
        text = render(outcome, "json")
    elif args.format == "text":
        text = render_text(outcome)
    else:
        text = render(outcome, args.format)
    if args.output:
        Path(args.output).write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
        print(f"report: {args.output}", file=sys.stderr)
    else:
        print(text)
    print(f"evidence: {settings.evidence_dir / '_audit' / outcome.audit_id}", file=sys.stderr)
    return 1 if outcome.failed else 0
