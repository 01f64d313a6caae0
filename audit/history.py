"""What the evidence store says about a target's past runs (read-only): its last
rotation drill and its last token rotation. Incident trails live in
``<evidence>/<incident>/trail.jsonl``; each opens with ``incident.opened`` naming the
playbook and target."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from core.trail import TRAIL_FILE, read_records

TOKEN_ROTATING_STEPS = ("drill_rotate_token", "rotate_credentials")


def _ts(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class RunSummary:
    incident: str
    playbook: str
    opened_at: dt.datetime
    status: str | None  # run.ended status; None while it runs
    ended_at: dt.datetime | None
    token_rotated_at: dt.datetime | None
    path: Path
    initiator: str = ""


def target_runs(evidence_dir: Path, target: str) -> list[RunSummary]:
    """Every incident of ``target`` in the evidence store, oldest first."""
    runs = []
    for path in sorted(Path(evidence_dir).glob(f"*/{TRAIL_FILE}")):
        try:
            records = read_records(path)
        except OSError:
            continue
        opened = next((r for r in records if r.kind == "incident.opened"), None)
        if opened is None or opened.data.get("target") != target:
            continue
        ended = [r for r in records if r.kind == "run.ended"]
        rotated = [
            r.ts for r in records if r.kind == "step.succeeded" and r.step in TOKEN_ROTATING_STEPS
        ]
        runs.append(
            RunSummary(
                incident=path.parent.name,
                playbook=str(opened.data.get("playbook", "")),
                opened_at=_ts(opened.ts),
                status=str(ended[-1].data.get("status")) if ended else None,
                ended_at=_ts(ended[-1].ts) if ended else None,
                token_rotated_at=_ts(rotated[-1]) if rotated else None,
                path=path,
                initiator=str(opened.data.get("initiator", "")),
            )
        )
    return sorted(runs, key=lambda r: r.opened_at)
