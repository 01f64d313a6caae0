"""What an alert does, decided inside the store's write transaction.

One of five decisions, the same in launch and observe mode (observe stores it and
changes nothing else):

- ``open``: a firing alert, new (or last seen longer ago than the dedup window), for
  a target without an open incident: a new incident, launched by the worker.
- ``join``: a firing alert for a target that already has an open incident, from any
  source: it is attached to that incident (``alert.joined`` in its trail), no second
  run.
- ``duplicate``: the same alert again within the dedup window, or a webhook delivery
  id (PagerDuty ``X-Webhook-Id``, Standard Webhooks ``webhook-id``) seen before.
- ``resolve``: a resolved notification whose alert belongs to an open incident:
  ``alert.resolved`` in its trail, visible in ``mcp-ir status``; the run goes on,
  people decide. A resolved notification never opens an incident.
- ``ignore``: a resolved notification for nothing open, a lifecycle update
  (acknowledged, priority changed, annotated …), or an alert no rule maps to a
  target while not firing.

An incident is open from its creation until its trail records that the run ended
(``ended_at``), unless its launch failed for good (``gave_up``).

Everything here runs on the store's writer connection, inside its transaction, so
two alerts arriving together can never both open an incident for one target.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from intake.models import MappedAlert, NormalizedAlert

DECISIONS = ("open", "join", "duplicate", "resolve", "ignore")

# The window test sits inside the upsert: a stale row (last seen longer ago than the
# window) is taken over by the new candidate incident, a fresh one keeps its incident.
# SET expressions see the row as it was before this statement.
UPSERT_DEDUP = """
INSERT INTO dedup (source, dedup_key, incident_id, first_seen, last_seen, hits)
VALUES (:source, :dedup_key, :candidate, :now, :now, 1)
ON CONFLICT (source, dedup_key) DO UPDATE SET
    incident_id = CASE WHEN dedup.last_seen < :now - :window
                       THEN excluded.incident_id ELSE dedup.incident_id END,
    first_seen  = CASE WHEN dedup.last_seen < :now - :window
                       THEN excluded.first_seen ELSE dedup.first_seen END,
    hits        = CASE WHEN dedup.last_seen < :now - :window THEN 1 ELSE dedup.hits + 1 END,
    last_seen   = MAX(dedup.last_seen, excluded.last_seen)
RETURNING incident_id
"""


def new_incident_id(now: float | None = None) -> str:
    """``INC-YYYYMMDD-HHMMSS-xxxx`` in UTC with 4 random hex digits."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return f"INC-{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class IngestRequest:
    """One parsed alert to store and decide on.

    Attributes:
        mapped: the rule's mapping, None when no rule maps a non-firing alert.
        trigger: the launcher's trigger dict (used when an incident is opened).
        webhook_id: the sender's delivery id, when it sends one.
    """

    source: str
    mode: str
    dedup_key: str
    alert: NormalizedAlert
    mapped: MappedAlert | None
    trigger: dict[str, Any]
    body_sha256: str
    window_s: float
    received_at: float
    truncated: int = 0
    webhook_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """The decision and the incident concerned (None when there is none)."""

    decision: str
    incident_id: str | None
    created: bool = False


def _open_incident(conn: sqlite3.Connection, incident_id: str | None) -> bool:
    if incident_id is None:
        return False
    row = conn.execute(
        "SELECT 1 FROM incidents WHERE incident_id = ? AND ended_at IS NULL AND gave_up = 0",
        (incident_id,),
    ).fetchone()
    return row is not None


def _open_for_target(conn: sqlite3.Connection, target: str) -> str | None:
    row = conn.execute(
        "SELECT incident_id FROM incidents WHERE target = ? AND ended_at IS NULL"
        " AND gave_up = 0 ORDER BY created_at DESC, incident_id DESC LIMIT 1",
        (target,),
    ).fetchone()
    return None if row is None else str(row[0])


def _event(conn: sqlite3.Connection, incident_id: str, kind: str, req: IngestRequest) -> None:
    alert = req.alert
    data = {
        "source": req.source,
        "alert_id": alert.alert_id,
        "dedup_key": req.dedup_key,
        "title": alert.title,
        "status": alert.status,
        "event": alert.event,
        "severity": alert.severity.value if alert.severity else None,
        "body_sha256": req.body_sha256,
        "received_at": datetime.fromtimestamp(req.received_at, UTC).isoformat(),
    }
    conn.execute(
        "INSERT INTO incident_events (incident_id, kind, data_json, created_at) VALUES (?,?,?,?)",
        (incident_id, kind, json.dumps(data, sort_keys=True), req.received_at),
    )


def _create_incident(conn: sqlite3.Connection, req: IngestRequest) -> str:
    mapped = req.mapped
    assert mapped is not None
    candidate = free_incident_id(conn, req.received_at)
    insert_incident(
        conn, candidate, req.source, req.dedup_key, mapped, req.trigger, req.received_at
    )
    return candidate


def free_incident_id(conn: sqlite3.Connection, received_at: float) -> str:
    """A new incident id no row holds yet (the caller holds the write lock, so it
    stays free until its insert)."""
    candidate = new_incident_id(received_at)
    while conn.execute("SELECT 1 FROM incidents WHERE incident_id = ?", (candidate,)).fetchone():
        candidate = new_incident_id(received_at)
    return candidate


def insert_incident(
    conn: sqlite3.Connection,
    incident_id: str,
    source: str,
    dedup_key: str,
    mapped: MappedAlert,
    trigger: dict[str, Any],
    received_at: float,
) -> None:
    """Writes a new incident row in state ``new``, due for launch now; its trigger
    names the incident."""
    alert = mapped.alert
    conn.execute(
        "INSERT INTO incidents (incident_id, source, dedup_key, alert_id, title,"
        " target, severity, auto_contain, window_start, window_end, trigger_json,"
        " alert_json, state, attempts, next_attempt_at, created_at, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'new',0,?,?,?)",
        (
            incident_id,
            source,
            dedup_key,
            alert.alert_id,
            alert.title,
            mapped.target,
            mapped.severity.value,
            int(mapped.auto_contain),
            mapped.window_start.isoformat(),
            mapped.window_end.isoformat(),
            json.dumps({**trigger, "incident_id": incident_id}, sort_keys=True),
            alert.model_dump_json(),
            received_at,
            received_at,
            received_at,
        ),
    )


def _point_dedup(conn: sqlite3.Connection, req: IngestRequest, incident_id: str) -> None:
    conn.execute(
        "INSERT INTO dedup (source, dedup_key, incident_id, first_seen, last_seen, hits)"
        " VALUES (?,?,?,?,?,1) ON CONFLICT (source, dedup_key) DO UPDATE SET"
        " incident_id = excluded.incident_id, first_seen = excluded.first_seen,"
        " last_seen = excluded.last_seen, hits = 1",
        (req.source, req.dedup_key, incident_id, req.received_at, req.received_at),
    )


def _firing(conn: sqlite3.Connection, req: IngestRequest, known: sqlite3.Row | None) -> Outcome:
    launch = req.mode == "launch"
    now, window = req.received_at, req.window_s
    if launch:
        dedup = conn.execute(
            "SELECT incident_id, last_seen FROM dedup WHERE source = ? AND dedup_key = ?",
            (req.source, req.dedup_key),
        ).fetchone()
        if dedup is not None and dedup["last_seen"] >= now - window:
            conn.execute(
                "UPDATE dedup SET last_seen = MAX(last_seen, ?), hits = hits + 1"
                " WHERE source = ? AND dedup_key = ?",
                (now, req.source, req.dedup_key),
            )
            return Outcome("duplicate", dedup["incident_id"])
    elif (
        known is not None
        and known["last_seen"] >= now - window
        and known["decision"] in ("open", "join", "duplicate")
    ):
        return Outcome("duplicate", known["incident_id"])
    if req.mapped is None:
        return Outcome("ignore", None)
    joined = _open_for_target(conn, req.mapped.target)
    if joined is not None:
        if launch:
            _point_dedup(conn, req, joined)
            _event(conn, joined, "alert.joined", req)
        return Outcome("join", joined)
    if not launch:
        return Outcome("open", None)
    candidate = new_incident_id(now)
    while conn.execute("SELECT 1 FROM incidents WHERE incident_id = ?", (candidate,)).fetchone():
        candidate = new_incident_id(now)
    row = conn.execute(
        UPSERT_DEDUP,
        {
            "source": req.source,
            "dedup_key": req.dedup_key,
            "candidate": candidate,
            "now": now,
            "window": window,
        },
    ).fetchone()
    if row[0] != candidate:  # pragma: no cover - the window check above saw it first
        return Outcome("duplicate", row[0])
    created = _create_incident(conn, req)
    conn.execute(
        "UPDATE dedup SET incident_id = ? WHERE source = ? AND dedup_key = ?",
        (created, req.source, req.dedup_key),
    )
    return Outcome("open", created, created=True)


def decide(conn: sqlite3.Connection, req: IngestRequest) -> Outcome:
    """Stores ``req`` and returns what it did (runs inside the writer's transaction)."""
    known = conn.execute(
        "SELECT * FROM alerts WHERE source = ? AND dedup_key = ?", (req.source, req.dedup_key)
    ).fetchone()
    fresh_delivery = True
    if req.webhook_id:
        cur = conn.execute(
            "INSERT OR IGNORE INTO webhook_ids (source, webhook_id, first_seen) VALUES (?,?,?)",
            (req.source, req.webhook_id[:200], req.received_at),
        )
        fresh_delivery = cur.rowcount == 1
    alert = req.alert
    if not fresh_delivery:
        outcome = Outcome("duplicate", known["incident_id"] if known else None)
    elif alert.update_only:
        outcome = Outcome("ignore", known["incident_id"] if known else None)
    elif alert.status == "resolved":
        dedup = conn.execute(
            "SELECT incident_id FROM dedup WHERE source = ? AND dedup_key = ?",
            (req.source, req.dedup_key),
        ).fetchone()
        incident = dedup["incident_id"] if dedup else (known["incident_id"] if known else None)
        if _open_incident(conn, incident):
            if req.mode == "launch":
                _event(conn, incident, "alert.resolved", req)  # type: ignore[arg-type]
            outcome = Outcome("resolve", incident)
        else:
            outcome = Outcome("ignore", incident)
    else:
        outcome = _firing(conn, req, known)
    _remember(conn, req, outcome)
    return outcome


def _remember(conn: sqlite3.Connection, req: IngestRequest, outcome: Outcome) -> None:
    alert = req.alert
    severity = (
        req.mapped.severity.value
        if req.mapped is not None
        else (alert.severity.value if alert.severity else None)
    )
    conn.execute(
        "INSERT INTO alerts (source, dedup_key, alert_id, title, severity, status, event,"
        " decision, mode, incident_id, target, truncated, deliveries, first_seen, last_seen)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,1,?,?)"
        " ON CONFLICT (source, dedup_key) DO UPDATE SET alert_id = excluded.alert_id,"
        " title = excluded.title, severity = COALESCE(excluded.severity, alerts.severity),"
        " status = excluded.status, event = excluded.event, decision = excluded.decision,"
        " mode = excluded.mode, incident_id = COALESCE(excluded.incident_id, alerts.incident_id),"
        " target = COALESCE(excluded.target, alerts.target), truncated = excluded.truncated,"
        " deliveries = alerts.deliveries + 1, last_seen = excluded.last_seen",
        (
            req.source,
            req.dedup_key,
            alert.alert_id,
            alert.title,
            severity,
            alert.status,
            alert.event,
            outcome.decision,
            req.mode,
            outcome.incident_id,
            req.mapped.target if req.mapped is not None else None,
            req.truncated,
            req.received_at,
            req.received_at,
        ),
    )
    if outcome.incident_id is not None and req.mode == "launch":
        conn.execute(
            "INSERT INTO deliveries (source, incident_id, duplicate, body_sha256, received_at)"
            " VALUES (?,?,?,?,?)",
            (
                req.source,
                outcome.incident_id,
                int(not outcome.created),
                req.body_sha256,
                req.received_at,
            ),
        )
