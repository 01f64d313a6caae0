"""The plan shown is the plan signed: before ``mcp-ir approve|reject|record`` signs a
statement over a plan hash, it prints that plan (from the trail's ``step.planned``
record) and, on a terminal, asks; scripts pass ``--yes`` (or ``--plan-hash`` for
the hash they reviewed elsewhere)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from core.errors import ApprovalRefused, ConfigError


def describe_plan(plan: dict[str, Any], plan_hash: str) -> str:
    """The plan as a person reads it: summary, resources, API calls, parameters."""
    lines = [f"plan {plan_hash}"]
    if not plan:
        lines.append("  (no step.planned record holds this hash)")
        return "\n".join(lines)
    lines.append(f"  {plan.get('step')} on {plan.get('target')}: {plan.get('summary')}")
    for title, key in (("resources", "resources"), ("API calls", "api_calls")):
        items = plan.get(key) or []
        if items:
            lines.append(f"  {title}:")
            lines += [f"    - {item}" for item in items]
    params = plan.get("parameters") or {}
    if params:
        lines.append(f"  parameters: {json.dumps(params, sort_keys=True, default=str)}")
    return "\n".join(lines)


def confirmer(
    settings: Any,
    incident_id: str,
    step: str,
    what: str,
    *,
    assume_yes: bool,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
) -> Callable[[str], None]:
    """``confirm(plan_hash)``: prints the plan to stderr and asks on a TTY.

    Raises (from the returned function):
        ConfigError: stdin is not a terminal and ``--yes`` was not given.
        ApprovalRefused: the person answered no.
    """
    from runbook.approvals import planned

    def confirm(plan_hash: str) -> None:
        src = stdin or sys.stdin
        dst = out or sys.stderr
        plan = planned(settings, incident_id, step, plan_hash)
        print(describe_plan(plan, plan_hash), file=dst, flush=True)
        if assume_yes:
            return
        if not src.isatty():
            raise ConfigError(
                "--yes: not asking on a non-terminal; pass --yes to sign the plan shown "
                "(or --plan-hash HASH for the plan you reviewed)"
            )
        print(f"{what}: sign this plan? [y/N] ", end="", file=dst, flush=True)
        answer = src.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise ApprovalRefused("not signed: you did not confirm the plan")

    return confirm
