"""Renders an audit run: JSON (``{"targets": {name: {"checks": [...]}}}``),
Markdown and a self-contained HTML page. Each has a drift section: the checks that
started failing since the previous run, and those that recovered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from audit.service import AuditOutcome

TEMPLATES = Path(__file__).parent / "templates"
ICON = {"pass": "PASS", "fail": "FAIL", "unverifiable": "UNVERIFIABLE", "manual": "MANUAL"}


def as_json(outcome: AuditOutcome) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    for name, result in outcome.results.items():
        targets[name] = {
            "kind": result.kind,
            "at": result.at,
            "checks": [c.as_dict() for c in result.checks],
            "drift": outcome.drift[name].as_dict() if name in outcome.drift else None,
        }
    return {"audit_id": outcome.audit_id, "targets": targets}


def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,  # noqa: S701 (Markdown is not HTML; the HTML report escapes)
        keep_trailing_newline=True,
    )
    env.filters["mdcell"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    return env


def render(outcome: AuditOutcome, fmt: str) -> str:
    """``json``, ``md`` or ``html``."""
    data = as_json(outcome)
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=False)
    template = "audit_report.html.j2" if fmt == "html" else "audit_report.md.j2"
    return _env(fmt == "html").get_template(template).render(report=data, icon=ICON)


def render_text(outcome: AuditOutcome) -> str:
    """The terminal summary: one line per check."""
    lines = [f"audit {outcome.audit_id}"]
    for name, result in outcome.results.items():
        lines.append(f"{name} ({result.kind}):")
        width = max((len(c.id) for c in result.checks), default=20)
        for c in result.checks:
            lines.append(
                f"  {ICON[c.status]:<13} {c.id:<{width}} {c.severity:<7} {c.reason}".rstrip()
            )
        drift = outcome.drift.get(name)
        if drift and drift.drifted:
            lines.append(
                f"  DRIFT since {drift.previous_audit}: {', '.join(c.id for c in drift.new_failures)}"
            )
    return "\n".join(lines)
