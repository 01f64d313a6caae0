"""``mcp-ir alerts``: what intake received, read straight from its store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.redact import Redactor
from intake.config import SettingsLike, parse_intake_config
from intake.store import delivery_counts, read_dead_letters, read_incidents

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
    """Incidents created from alerts (newest first), or the dead-letter table.

    Incident rows: ``incident_id, source, alert_id, title, target, severity,
    auto_contain, state, attempts, last_error, deliveries, window_start, window_end,
    created_at``. Dead-letter rows: ``id, source, reason, received_at, body_sha256,
    body_bytes, body`` (the body cut to 2 KiB and passed through the redactor).

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
                "body_bytes": len(row["body"]),
                "body": redactor.text(bytes(row["body"][:BODY_PREVIEW]).decode("utf-8", "replace")),
            }
            for row in read_dead_letters(path)
        ]
    counts = delivery_counts(path)
    return [
        {
            "incident_id": r.incident_id,
            "source": r.source,
            "alert_id": r.alert_id,
            "title": r.title,
            "target": r.target,
            "severity": r.severity,
            "auto_contain": r.auto_contain,
            "state": r.state,
            "attempts": r.attempts,
            "last_error": r.last_error,
            "deliveries": counts.get(r.incident_id, 0),
            "window_start": r.window_start.isoformat(),
            "window_end": r.window_end.isoformat(),
            "created_at": _iso(r.created_at),
        }
        for r in read_incidents(path)
    ]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
