"""An incident's bookkeeping around its runs: the incident read back from its trail,
earlier runs marked crashed, the report published, and the outcome the CLI gets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect.artifacts import create_markdown_artifact

from core.trail import Record, Trail
from runbook.context import Incident


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def incident_from_trail(records: list[Record]) -> Incident | None:
    for rec in records:
        if rec.kind == "incident.opened":
            d = rec.data
            return Incident(
                id=d["incident_id"],
                target=d["target"],
                playbook=d["playbook"],
                initiator=d["initiator"],
                trigger=d.get("trigger", {}),
                severity=d.get("severity", "high"),
                window_start=parse_time(d.get("window_start")),
                window_end=parse_time(d.get("window_end")),
                drill=d.get("drill", False),
                policy=d.get("policy", "standard"),
            )
    return None


def supersede_flow_runs(flow_run_ids: list[str]) -> list[str]:
    """Marks earlier runs of this incident that Prefect still shows as paused or running
    (their process died) as crashed, so that nobody can resume a dead run and hand
    it a decision that no process will ever read."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    done: list[str] = []
    with get_client(sync_client=True) as client:
        for run_id in flow_run_ids:
            try:
                run = client.read_flow_run(UUID(run_id))
            except Exception:  # noqa: BLE001, S112 (a run the server no longer knows needs nothing)
                continue
            if run.state and run.state.type.value in ("PAUSED", "RUNNING", "PENDING", "SCHEDULED"):
                client.set_flow_run_state(
                    UUID(run_id),
                    Crashed(
                        message="process died; superseded by a resumed run of the same incident"
                    ),
                    force=True,
                )
                done.append(run_id)
    return done


class RunEnded(Exception):  # noqa: N818 (it is an outcome, not always an error)
    """The run ended without success; carries the result for the CLI."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(f"incident {result['incident_id']} {result['status']}: {result['detail']}")
        self.result = result


def publish_report(trail: Trail) -> Any:
    from runbook.report import render_markdown

    text = render_markdown(trail)
    trail.add_artifact(text.encode(), name="post-incident-report.md", media_type="text/markdown")
    path = trail.dir / "report.md"
    path.write_text(trail.redactor.text(text), encoding="utf-8")
    try:
        create_markdown_artifact(
            markdown=trail.redactor.text(text),
            key=f"report-{trail.incident_id.lower()}",
            description=f"Post-incident report for {trail.incident_id}",
        )
    except Exception as exc:  # noqa: BLE001 (the report is on disk and in the trail already)
        trail.append("report.publish_failed", None, {"error": f"{type(exc).__name__}"})
    return path
