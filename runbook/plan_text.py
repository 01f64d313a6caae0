"""A step's plan as a person reads it at a gate: what it does, to which resources,
with which operations, and the full hash an approval is bound to. Used by
``mcp-ir status`` and the run's console, so both show exactly what is approved."""

from __future__ import annotations

from typing import Any

from core.trail import Record


def plan_lines(plan: dict[str, Any] | None, indent: str = "      ") -> list[str]:
    """The lines describing ``plan`` (a ``step.planned`` record's data)."""
    if not plan:
        return [f"{indent}plan: not recorded yet"]
    lines = []
    if plan.get("summary"):
        lines.append(f"{indent}does:      {plan['summary']}")
    for resource in plan.get("resources") or []:
        lines.append(f"{indent}resource:  {resource}")
    for op in plan.get("operations") or []:
        lines.append(f"{indent}operation: {_operation(op)}")
    if not plan.get("operations"):
        for call in plan.get("api_calls") or []:
            lines.append(f"{indent}call:      {call}")
    if plan.get("parameters"):
        lines.append(f"{indent}params:    {plan['parameters']}")
    if plan.get("hash"):
        lines.append(f"{indent}plan hash: {plan['hash']}")
    return lines


def _operation(op: Any) -> str:
    if isinstance(op, dict):
        head = " ".join(str(op[k]) for k in ("system", "verb", "resource") if op.get(k))
        return head or str(op)
    return str(op)


def warnings(records: list[Record]) -> list[str]:
    """What a person must know did not go as planned, though the run went on: an
    incomplete evidence capture, a failing WORM copy or notification, NetworkPolicy
    isolation on a cluster where enforcement is not seen."""
    out: list[str] = []
    for rec in records:
        if rec.kind == "capture.incomplete":
            what = ", ".join(f"{k}: {v}" for k, v in sorted(rec.data.items()) if v)
            out.append(
                f"evidence capture incomplete ({rec.step or 'capture'}): {what or 'see trail'}"
            )
        elif rec.kind.startswith("worm.") and ("fail" in rec.kind or rec.data.get("error")):
            out.append(f"WORM copy: {rec.kind} {rec.data.get('error') or ''}".rstrip())
        elif rec.kind == "network_policy.enforcement" and rec.data.get("status") != "enforced":
            out.append(
                f"NetworkPolicy {rec.data.get('status')} on the cluster "
                f"({rec.step or 'isolation'}): {rec.data.get('reason')}; the isolation "
                "policies hold only where the network plugin enforces them"
            )
        elif rec.kind == "notification.failed":
            out.append(
                f"notification to {rec.data.get('channel')} failed for good: {rec.data.get('error')}"
            )
    return out
