"""``mcp-ir drill``: run a rotation drill against a target (playbook ``rotation-drill``).

Rotates the tunnel token and renews the server certificate (``--rotate-ca``: also
rotates the CA through the tunnel's two slots), verifying and timing each phase;
a failed phase rolls back where it still can. Prints the incident, its status and
the drill report's path; the incident is marked as a drill.
"""

from __future__ import annotations

import argparse
import getpass
import os
from typing import Any

NAME = "drill"
HELP = "rotation drill: rotate token + renew server certificate (--rotate-ca: also the CA)"
DESCRIPTION = (
    "Run the rotation-drill playbook against TARGET in this process, printing progress. "
    "Each phase is verified (stack up, deployed token = API's current token, served "
    "certificate chains to a registered CA) and timed; the drill report (Markdown) gives "
    "each phase's duration, downtime and what failed. Exit 0 when every phase succeeded, "
    "1 when one failed (after rolling back where possible), 2 for bad input."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", required=True, help="target name from the inventory")
    p.add_argument(
        "--rotate-ca", action="store_true", help="also rotate the CA through the two slots"
    )
    p.add_argument("--incident", help="incident id; give an existing one to resume it")
    p.add_argument("--as", dest="initiator", default=None, help="who starts it")


def run(args: argparse.Namespace, settings: Any) -> int:
    from flows.rotation_drill import rotation_drill
    from flows.runner import RunEnded
    from runbook.launch import new_incident_id
    from runbook.playbook import load_playbook

    load_playbook(  # bad input (unknown target, wrong kind) fails here, exit 2
        "rotation-drill",
        inventory=settings.inventory(),
        target=args.target,
        context={"drill": True, "trigger": {"kind": "drill", "rotate_ca": args.rotate_ca}},
    )
    incident = args.incident or new_incident_id()
    try:
        result = rotation_drill(
            target=args.target,
            incident_id=incident,
            initiator=args.initiator or os.environ.get("MCP_IR_USER") or getpass.getuser(),
            rotate_ca=args.rotate_ca,
            config_path=str(settings.config_path) if settings.config_path else None,
            evidence_dir=str(settings.evidence_dir),
        )
        code = 0
    except RunEnded as exc:
        result, code = exc.result, 1
    print(f"incident: {result['incident_id']}")
    print(
        f"status:   {result['status']}" + (f" ({result['detail']})" if result.get("detail") else "")
    )
    print(f"evidence: {result['evidence_dir']}")
    if result.get("drill_report"):
        print(f"drill report: {result['drill_report']}")
    return code
