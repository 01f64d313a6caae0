"""``mcp-ir alerts``: what intake received, read straight from its store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.redact import Redactor
from intake.config import SettingsLike, parse_intake_config
from intake.store_read import read_alerts, read_dead_letters

BODY_PREVIEW = 2048


def store_path(settings: SettingsLike) -> Path:
    """The store file the configuration points at (secrets are not needed to read it).

    Raises:
        ConfigError: the inventory or its ``intake:`` section is invalid.
    """
    inventory = settings.inventory()
    config = parse_intake_config(getattr(inventory, "intake", None), list(inventory.targets))
    return config.store_path(Path(settings.evidence_dir))


def list_alerts(settings: SettingsLike, dead_letter: bool = False) -> list[dict[str, Any]]:
    """Every alert the intake stored (newest first), or the dead-letter table.

    Alert rows (one per source and dedup key; repeats count in ``deliveries``):
    ``source, status, title, severity, alert_id, decision`` (``open``, ``join``,
    ``duplicate``, ``resolve``, ``ignore``: the last delivery's), ``incident_id``
    (None when no incident), ``mode`` (``launch``/``observe``), ``event``,
    ``target``, ``deliveries``, ``truncated_alerts``, ``first_seen``, ``last_seen``,
    and for alerts with an incident its launch: ``state`` (``new``, ``launching``,
    ``launched``, ``failed``), ``started`` (the run's first trail record exists),
    ``attempts``, ``last_error``, ``retry_at`` (while a failed launch will be
    retried), ``auto_contain``, ``window_start``, ``window_end``.
    Dead-letter rows: ``id, source, reason, received_at, body_sha256, body_bytes,
    body`` (the body cut to 2 KiB and passed through the redactor) and ``meta``.

    Raises:
        ConfigError: the inventory or its ``intake:`` section is invalid.
    """
    path = store_path(settings)
    if dead_letter:
        redactor = Redactor()
        return [
            {
                "id": row["id"],
                "source": row["source"],
                "reason": row["reason"],
                "received_at": _iso(row["received_at"]),
                "body_sha256": row["body_sha256"],
                "body_bytes": row["body_bytes"]
                if row["body_bytes"] is not None
                else len(row["body"]),
                "body": redactor.text(bytes(row["body"][:BODY_PREVIEW]).decode("utf-8", "replace")),
                "meta": json.loads(row["meta_json"] or "{}"),
            }
            for row in read_dead_letters(path)
        ]
    rows = []
    for r in read_alerts(path):
        has_incident = r["launch_state"] is not None
        retrying = has_incident and r["launch_state"] == "failed" and not r["gave_up"]
        rows.append(
            {
                "source": r["source"],
                "status": r["status"],
                "title": r["title"],
                "severity": r["severity"],
                "alert_id": r["alert_id"],
                "decision": r["decision"],
                "incident_id": r["incident_id"],
                "mode": r["mode"],
                "event": r["event"],
                "target": r["target"],
                "deliveries": r["deliveries"],
                "truncated_alerts": r["truncated"],
                "first_seen": _iso(r["first_seen"]),
                "last_seen": _iso(r["last_seen"]),
                "state": r["launch_state"],
                "started": bool(r["started_at"]) if has_incident else None,
                "attempts": r["attempts"],
                "last_error": r["last_error"],
                "retry_at": _iso(r["next_attempt_at"]) if retrying else None,
                "auto_contain": bool(r["auto_contain"]) if has_incident else None,
                "window_start": r["window_start"],
                "window_end": r["window_end"],
                "created_at": _iso(r["first_seen"]),
            }
        )
    return rows


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
