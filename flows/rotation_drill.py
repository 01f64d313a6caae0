"""Flow: rotation drill (playbook ``rotation-drill``): rotate the tunnel token, renew
the server certificate, optionally rotate the CA — each phase verified and timed —
then publish the drill report (Markdown artifact), also when a phase failed. Drill
evidence is marked as such. ``options={"rotate_ca": true}`` adds the CA phase; a
new incident id is made when none is given (the cron deployment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from prefect.artifacts import create_markdown_artifact

from core.trail import Trail
from flows.playbook import PlaybookRun, Profile, playbook_entry
from runbook.context import build_redactor
from runbook.settings import Settings

TEMPLATES = Path(__file__).resolve().parent.parent / "notifications" / "templates"


def _after(params: PlaybookRun, incident_id: str, result: dict[str, Any]) -> None:
    result["drill_report"] = publish_drill_report(
        params.config_path, params.evidence_dir, params.target, incident_id, result
    )


def render_drill_report(trail: Trail, result: dict[str, Any]) -> str:
    """The drill report from the trail: each phase's duration, downtime, what failed
    and what was rolled back."""
    records = trail.records()
    opened = next((r.data for r in records if r.kind == "incident.opened"), {})
    started = next((r.ts for r in records if r.kind == "incident.opened"), "")
    last: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.kind == "drill.phase":
            last[rec.data["phase"]] = {"phase": rec.data["phase"], **rec.data}
    phases = list(last.values())
    skipped = [
        {"phase": r.step, "status": "skipped", "reason": r.data.get("reason", "")}
        for r in records
        if r.kind == "step.already_done"
        and r.step == "drill_rotate_ca"
        and r.data.get("reason", "").startswith(("not requested", "skipped"))
    ]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 (Markdown, not HTML)
        keep_trailing_newline=True,
    )
    failed = [p for p in phases if p["status"] != "succeeded"]
    text = env.get_template("drill_report.md.j2").render(
        incident=opened,
        trigger_kind=(opened.get("trigger") or {}).get("kind", "manual"),
        started=started,
        status=result.get("status", "unknown"),
        phases=phases,
        skipped=skipped,
        failed=failed,
        total_downtime=sum(float(p.get("downtime_s") or 0) for p in phases),
        outcome_detail=result.get("detail", ""),
    )
    return trail.redactor.text(text)


def publish_drill_report(
    config_path: str | None,
    evidence_dir: str | None,
    target: str,
    incident_id: str,
    result: dict[str, Any],
) -> str:
    """Stores the drill report beside the trail (artifact + ``drill-report.md``) and as
    a Prefect Markdown artifact; returns its path."""
    settings = Settings.from_env(config_path, evidence_dir)
    redactor = build_redactor(settings.inventory().target(target))
    trail = Trail.open(settings.evidence_dir, incident_id, redactor)
    text = render_drill_report(trail, result)
    trail.add_artifact(text.encode(), name="drill-report.md", media_type="text/markdown")
    path = trail.dir / "drill-report.md"
    path.write_text(text, encoding="utf-8")
    try:
        create_markdown_artifact(
            markdown=text,
            key=f"drill-report-{incident_id.lower()}",
            description=f"Rotation drill report for {incident_id}",
        )
    except Exception as exc:  # noqa: BLE001 (the report is on disk and in the trail already)
        trail.append("report.publish_failed", None, {"error": type(exc).__name__})
    return str(path)


rotation_drill = playbook_entry(
    "rotation-drill",
    Profile(
        trigger_kind="drill",
        severity="info",
        drill=True,
        after=_after,
        defaults={"initiator": "scheduler"},
    ),
)
