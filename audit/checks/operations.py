"""Checks of how the target is operated: rotation drills, monitoring, SSO."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from audit.checks._common import result
from audit.context import AuditContext
from audit.history import target_runs
from audit.model import CheckResult, Evidence
from core.durations import format_duration

if TYPE_CHECKING:
    from audit.checks import CheckSpec


def rotation_drill(ctx: AuditContext, spec: CheckSpec) -> CheckResult:
    """The last finished ``rotation-drill`` run of this target succeeded and is not
    older than ``audit.drill_max_age``."""
    drills = [r for r in target_runs(ctx.evidence_dir, ctx.name) if r.playbook == "rotation-drill"]
    finished = [r for r in drills if r.status is not None]
    source = f"{ctx.evidence_dir} (rotation-drill trails of {ctx.name})"
    if not finished:
        return result(
            spec,
            "fail",
            [Evidence(source, f"{len(drills)} drill run(s), none finished")],
            "no finished rotation drill is recorded for this target",
        )
    last = finished[-1]
    ended = last.ended_at.isoformat() if last.ended_at else "?"
    how = "scheduled" if last.initiator == "scheduler" else f"started by {last.initiator or '?'}"
    ev = [Evidence(str(last.path), f"{last.incident} ({how}): {last.status} at {ended}")]
    if last.status != "succeeded":
        return result(
            spec, "fail", ev, f"the last rotation drill ({last.incident}) ended {last.status}"
        )
    age = (ctx.now - last.opened_at).total_seconds()
    if age > ctx.settings.drill_max_age:
        return result(
            spec,
            "fail",
            ev,
            f"the last rotation drill is {format_duration(age)} old (max {format_duration(ctx.settings.drill_max_age)})",
        )
    return result(spec, "pass", ev)


def _cloudwatch_readable(group: str, region: str | None) -> str | None:
    """None when the log group can be read, else why not (DescribeLogGroups only)."""
    import boto3
    import botocore.exceptions

    try:
        logs = boto3.client("logs", region_name=region)
        found = logs.describe_log_groups(logGroupNamePrefix=group, limit=50)["logGroups"]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        return f"cannot read: {type(exc).__name__}"
    if not any(g.get("logGroupName") == group for g in found):
        return "does not exist"
    return None


def monitoring(ctx: AuditContext, spec: CheckSpec) -> CheckResult:
    """Log review sources beyond the containers' own logs are configured and readable,
    and an intake source maps alerts to this target."""
    review = ctx.target.review
    evidence: list[Evidence] = []
    problems: list[str] = []
    for src in review.files:
        path = str(src.path)
        if os.path.isfile(path) and os.access(path, os.R_OK):
            evidence.append(Evidence(path, f"review file {src.name} ({src.kind}) is readable"))
        else:
            evidence.append(Evidence(path, f"review file {src.name} is missing or unreadable"))
            problems.append(f"review file {src.name} ({path}) is missing or unreadable")
    region = ctx.target.aws.region if ctx.target.aws else None
    for grp in review.cloudwatch:
        why = _cloudwatch_readable(grp.log_group, region)
        evidence.append(Evidence(f"CloudWatch Logs {grp.log_group}", why or "readable"))
        if why:
            problems.append(f"log group {grp.log_group}: {why}")
    if not review.files and not review.cloudwatch:
        problems.append(
            "no log source beyond the stack's own container logs, which vanish with "
            "`docker compose down` / `helm uninstall` (configure review.files or review.cloudwatch)"
        )
    intake: Any = ctx.inventory.intake
    mapped = []
    if intake is not None:
        for name, source in intake.sources.items():
            if any(rule.target == ctx.name for rule in source.rules):
                mapped.append(name)
    evidence.append(
        Evidence(
            f"{ctx.inventory.source or 'inventory'}: intake.sources",
            f"sources mapping alerts to {ctx.name}: {mapped or 'none'}",
        )
    )
    if not mapped:
        problems.append("no intake source has a rule for this target: its alerts start nothing")
    return result(spec, "fail" if problems else "pass", evidence, "; ".join(problems))


def sso(ctx: AuditContext, spec: CheckSpec) -> CheckResult:
    """SSO is set in the Claude Console, which no API the engine holds can read."""
    return result(
        spec,
        "manual",
        [
            Evidence(
                "Claude Console (organization settings)", "not readable through the Tunnels API"
            )
        ],
        "a person must confirm that SSO is enforced for the organization that manages the "
        "tunnels, federation rules and service accounts",
    )
