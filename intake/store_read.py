"""Reading the alert store from another process (``mcp-ir alerts``, ``/metrics``,
tests): fresh connections, safe beside a running server."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from intake.store import IncidentRecord, connect, migrate


def read_incidents(path: Path) -> list[IncidentRecord]:
    """All incidents, newest first (a fresh connection: safe beside a running server)."""
    if not Path(path).exists():
        return []
    conn = connect(Path(path))
    try:
        migrate(conn)
        rows = conn.execute("SELECT * FROM incidents ORDER BY created_at DESC").fetchall()
        return [IncidentRecord.from_row(r) for r in rows]
    finally:
        conn.close()


def read_dead_letters(path: Path) -> list[sqlite3.Row]:
    """All dead-lettered alerts, newest first."""
    if not Path(path).exists():
        return []
    conn = connect(Path(path))
    try:
        migrate(conn)
        return conn.execute("SELECT * FROM dead_letters ORDER BY id DESC").fetchall()
    finally:
        conn.close()


def delivery_counts(path: Path) -> dict[str, int]:
    """Deliveries per incident id (1 = first, more = duplicates seen)."""
    if not Path(path).exists():
        return {}
    conn = connect(Path(path))
    try:
        migrate(conn)
        rows = conn.execute(
            "SELECT incident_id, COUNT(*) FROM deliveries GROUP BY incident_id"
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}
    finally:
        conn.close()


def read_alerts(path: Path) -> list[dict[str, Any]]:
    """Every stored alert (one row per source and dedup key), newest first, with its
    incident's launch state when it has one."""
    if not Path(path).exists():
        return []
    conn = connect(Path(path))
    try:
        migrate(conn)
        rows = conn.execute(
            "SELECT a.*, i.state AS launch_state, i.attempts, i.last_error, i.gave_up,"
            " i.started_at, i.ended_at, i.window_start, i.window_end, i.auto_contain,"
            " i.next_attempt_at"
            " FROM alerts a LEFT JOIN incidents i ON i.incident_id = a.incident_id"
            " ORDER BY a.last_seen DESC, a.first_seen DESC"
        ).fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()
