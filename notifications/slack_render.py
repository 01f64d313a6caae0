"""Block Kit messages for Slack, rendered from the Jinja2 templates
``notifications/templates/slack_*.j2``, and the pieces the approval messages and
the interactions endpoint share (action ids, button values, decision lines)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES_DIR = Path(__file__).parent / "templates"
APPROVE_ACTION = "mcp_ir_approve"
REJECT_ACTION = "mcp_ir_reject"
DECISIONS_BLOCK = "mcp_ir_decisions"
ACTIONS_BLOCK = "mcp_ir_actions"


def mrkdwn(value: Any) -> str:
    """Escapes the three characters Slack's mrkdwn gives meaning to."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(value: Any, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _duration(seconds: Any) -> str:
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    minutes, sec = divmod(int(round(s)), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


@functools.cache
def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=False,  # noqa: S701 (JSON output; values go through tojson)
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["mrkdwn"] = mrkdwn
    env.filters["clip"] = _clip
    env.filters["duration"] = _duration
    return env


def render(template: str, **context: Any) -> dict[str, Any]:
    """Renders ``slack_<template>.j2`` into a ``{"text", "blocks"}`` message."""
    out = _env().get_template(f"slack_{template}.j2").render(**context)
    message = json.loads(out)
    if not isinstance(message, dict) or "text" not in message:
        raise ValueError(f"template slack_{template}.j2 did not render a message")
    return message


def button_value(incident_id: str, step: str, plan_hash: str) -> str:
    """What an Approve / Reject button carries back: the incident, step and plan hash."""
    return json.dumps({"incident_id": incident_id, "step": step, "plan_hash": plan_hash})


def decisions_block(lines: list[str], status: str) -> dict[str, Any]:
    """The context block under an approval request: who decided, what is still needed."""
    return render("approval_status", lines=lines, status=status)["blocks"][0]


def approval_status_line(state: str, remaining: int) -> str:
    """The one-line state of a gate as shown on its approval message."""
    if state == "rejected":
        return ":no_entry: Rejected: the step will not run."
    if state == "timed_out":
        return ":hourglass: Timed out without quorum: the gate rejected the step."
    if state == "superseded":
        return ":arrows_counterclockwise: Superseded: the plan changed; see the newer request."
    if state == "approved" or remaining <= 0:
        return ":white_check_mark: Approved: the step proceeds."
    return (
        f":hourglass_flowing_sand: {remaining} more approval{'s' if remaining != 1 else ''} needed."
    )


def decision_line(approver: str, decision: str, source: str = "") -> str:
    """One line of the decisions list: ``alice approved (slack)``."""
    verb = "approved" if decision == "approve" else "rejected"
    icon = ":white_check_mark:" if decision == "approve" else ":no_entry:"
    via = f" via {source}" if source else ""
    return f"{icon} {mrkdwn(approver)} {verb}{via}"
