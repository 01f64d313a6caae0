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

from runbook import on_worker
from runbook.commands._outcome import print_outcome

NAME = "drill"
HELP = "rotation drill: rotate token + renew server certificate (--rotate-ca: also the CA)"
DESCRIPTION = (
    "Run the rotation-drill playbook against TARGET in this process, printing progress. "
    "Each phase is verified (stack up, deployed token = API's current token, served "
    "certificate chains to a registered CA) and timed; the drill report (Markdown) gives "
    "each phase's duration, downtime and what failed. Exit 0 when every phase succeeded, "
    "1 when one failed (after rolling back where possible), 2 for bad input. "
    "--on-worker: start (or resume) it on a worker through the rotation-drill deployment."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target", help="target name from the inventory (a resume reads it from the trail)"
    )
    p.add_argument(
        "--rotate-ca", action="store_true", help="also rotate the CA through the two slots"
    )
    p.add_argument("--incident", help="incident id; give an existing one to resume it")
    p.add_argument("--as", dest="initiator", default=None, help="who starts it")
    on_worker.add_argument(p)


def run(args: argparse.Namespace, settings: Any) -> int:
    from flows.rotation_drill import rotation_drill
    from flows.runner import RunEnded
    from runbook.launch import new_incident_id
    from runbook.playbook import load_playbook

    initiator = args.initiator or os.environ.get("MCP_IR_USER") or getpass.getuser()
    if args.on_worker:
        return on_worker.launch(
            settings,
            "rotation-drill",
            incident_id=args.incident,
            target=args.target,
            parameters={"initiator": initiator, "options": {"rotate_ca": args.rotate_ca}},
        )
    target = on_worker.target_of(settings, args.incident, args.target)
    load_playbook(  # bad input (unknown target, wrong kind) fails here, exit 2
        "rotation-drill",
        inventory=settings.inventory(),
        target=target,
        context={"drill": True, "trigger": {"kind": "drill", "rotate_ca": args.rotate_ca}},
    )
    incident = args.incident or new_incident_id()
    try:
        result = rotation_drill(
            target=target,
            incident_id=incident,
            initiator=initiator,
            options={"rotate_ca": args.rotate_ca},
            config_path=str(settings.config_path) if settings.config_path else None,
            evidence_dir=str(settings.evidence_dir),
        )
        code = 0
    except RunEnded as exc:
        result, code = exc.result, 1
    print_outcome(result, extra=("drill report", "drill_report"))
    return code
