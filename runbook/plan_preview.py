"""``mcp-ir plan``: what a playbook would do against a target, without doing it.

Each step's plan is computed exactly as the run computes it (read-only calls
only: listing containers, reading records), with its gate and plan hash. Plans depend
on the target, the playbook and the incident window, never on the incident id, so the
hash shown here is the hash the run's gate asks approvers for (as long as the target
has not changed in between).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.durations import format_duration
from core.errors import McpIrError
from core.trail import Trail
from runbook.context import Clients, Incident, StepContext, build_redactor
from runbook.playbook import load_playbook
from runbook.registry import load_steps
from runbook.settings import Settings

DRILL_PLAYBOOKS = frozenset({"rotation-drill"})


def preview(
    settings: Settings,
    playbook: str,
    target: str,
    *,
    policy: str = "standard",
    window: tuple[datetime | None, datetime | None] = (None, None),
) -> str:
    inventory = settings.inventory()
    tgt = inventory.target(target)
    # A drill playbook is planned as the drill it is (its auto gates are drill gates).
    drill = playbook in DRILL_PLAYBOOKS
    pb = load_playbook(
        playbook, inventory=inventory, target=target, context={"policy": policy, "drill": drill}
    )
    end = window[1] or datetime.now(UTC)
    start = window[0] or end - timedelta(hours=24)
    incident = Incident(
        id="PLAN-PREVIEW",
        target=target,
        playbook=playbook,
        initiator="(you)",
        trigger={"kind": "plan"},
        severity="high",
        window_start=start,
        window_end=end,
        drill=drill,
        policy=policy,
    )
    scratch = Trail(Path(tempfile.gettempdir()) / "mcp-ir-plan-preview-unused", build_redactor(tgt))
    clients = Clients(tgt)
    lines = [
        f"playbook {pb.name} on target {target} ({tgt.kind}{', sandbox' if tgt.sandbox else ''}) — nothing is changed",
        "",
    ]
    steps = load_steps()
    try:
        for index, spec in enumerate(pb.steps, start=1):
            ctx = StepContext.for_spec(spec, incident, tgt, inventory, scratch, clients)
            if spec.auto:
                gate = f"auto ({spec.auto_reason or 'playbook policy'})"
            else:
                a = spec.approval
                assert a is not None
                gate = (
                    f"{a.required} approver(s) from {a.group!r}, timeout {format_duration(a.timeout_s)}"
                    f"{', initiator may approve' if a.allow_initiator else ', not the initiator'}"
                    + (
                        f", escalate to {a.escalate_to!r} after {format_duration(a.escalate_after_s)}"
                        if a.escalate_after_s and a.escalate_to
                        else ""
                    )
                )
            lines.append(
                f"{index}. {spec.key}  [{'reversible' if spec.reversible else 'IRREVERSIBLE'}; step timeout {format_duration(spec.timeout_s)}; on failure {spec.on_failure}]"
            )
            lines.append(f"   gate: {gate}")
            try:
                plan = steps[spec.key]().plan(ctx)
            except McpIrError as exc:
                lines.append(f"   plan: unavailable now ({exc.detail})")
                lines.append("")
                continue
            lines.append(f"   does: {plan.summary}")
            for r in plan.resources:
                lines.append(f"   resource: {r}")
            for c in plan.api_calls:
                lines.append(f"   call: {c}")
            if plan.parameters:
                lines.append(f"   parameters: {plan.parameters}")
            lines.append(f"   plan hash: {plan.digest()}")
            lines.append("")
    finally:
        clients.close()
    return "\n".join(lines).rstrip()
