"""A durable outbox for notifier plugins, and the observer that drives it.

Every notification is written to a SQLite file (WAL, one per evidence directory
and channel: ``<evidence>/_notify/<channel>.sqlite3``) before it is sent, so a
notification that cannot be delivered now (the service is down, rate limited) is
delivered later — by the run's background thread, by the next run of any incident
on the same evidence directory, or never silently: a final refusal is recorded in
the incident's trail as ``notification.failed``, and a late delivery as
``notification.delivered_late``. A key (``dedup_key`` + action) is queued once:
a resumed run replaying the same records adds nothing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import McpIrError, TransientError
from core.trail import Record, Trail

STATE_DIR = "_notify"
MAX_BACKOFF_S = 300.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL,
    key         TEXT NOT NULL UNIQUE,
    payload     TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     REAL NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  REAL NOT NULL,
    sent_at     REAL
);
"""


class Outbox:
    """The pending and sent notifications of one channel."""

    def __init__(self, evidence_dir: Path, channel: str) -> None:
        directory = Path(evidence_dir) / STATE_DIR
        directory.mkdir(parents=True, exist_ok=True)
        self.channel = channel
        self._db = sqlite3.connect(directory / f"{channel}.sqlite3", check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def add(self, incident_id: str, key: str, payload: dict[str, Any]) -> bool:
        """Queues one notification; False when that key was queued before."""
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO outbox (incident_id, key, payload, created_at) "
                "VALUES (?, ?, ?, ?)",
                (incident_id, key, json.dumps(payload, sort_keys=True), time.time()),
            )
            return cur.rowcount == 1

    def due(self, now: float | None = None) -> list[sqlite3.Row]:
        with self._lock:
            return list(
                self._db.execute(
                    "SELECT * FROM outbox WHERE status = 'pending' AND next_at <= ? ORDER BY id",
                    (now if now is not None else time.time(),),
                )
            )

    def pending(self) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE status = 'pending'"
            ).fetchone()[0]

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute("SELECT * FROM outbox ORDER BY id")]

    def mark(self, row_id: int, status: str, error: str | None = None) -> None:
        with self._lock, self._db:
            self._db.execute(
                "UPDATE outbox SET status = ?, last_error = ?, attempts = attempts + 1, "
                "sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id = ?",
                (status, error, status, time.time(), row_id),
            )

    def retry_later(self, row_id: int, attempts: int, error: str) -> None:
        delay = min(MAX_BACKOFF_S, 2.0 ** max(0, attempts))
        with self._lock, self._db:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?",
                (time.time() + delay, error, row_id),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


Send = Callable[[dict[str, Any]], None]
Events = Callable[[Record], list[tuple[str, dict[str, Any]]]]


class OutboxObserver:
    """Turns trail records into queued notifications (``events(record)`` gives
    ``(key, payload)`` pairs) and delivers them with ``send(payload)`` in a
    background thread. ``send`` raises ``TransientError`` to retry later and any
    other ``McpIrError`` for a final refusal."""

    def __init__(
        self,
        channel: str,
        evidence_dir: Path,
        trail: Trail,
        events: Events,
        send: Send,
        *,
        flush_timeout_s: float = 5.0,
    ) -> None:
        self.channel = channel
        self.trail = trail
        self.evidence_dir = Path(evidence_dir)
        self.outbox = Outbox(evidence_dir, channel)
        self._events = events
        self._send = send
        self._flush_timeout_s = flush_timeout_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"notify-{channel}", daemon=True)
        self._thread.start()
        self._wake.set()  # deliver what earlier runs left

    def on_record(self, record: Record) -> None:
        if record.kind.startswith("notification."):
            return
        queued = False
        for key, payload in self._events(record):
            queued |= self.outbox.add(self.trail.incident_id, key, payload)
        if queued:
            self._wake.set()

    def deliver_due(self) -> None:
        for row in self.outbox.due():
            payload = json.loads(row["payload"])
            try:
                self._send(payload)
            except TransientError as exc:
                self.outbox.retry_later(row["id"], row["attempts"], exc.detail)
                continue
            except McpIrError as exc:
                self.outbox.mark(row["id"], "dead", exc.detail)
                self._record(row["incident_id"], "notification.failed", row, exc.detail)
                continue
            self.outbox.mark(row["id"], "sent")
            if row["attempts"] > 0 or row["incident_id"] != self.trail.incident_id:
                self._record(row["incident_id"], "notification.delivered_late", row, None)

    def _record(self, incident: str, kind: str, row: Any, error: str | None) -> None:
        trail = (
            self.trail
            if incident == self.trail.incident_id
            else Trail.open(self.evidence_dir, incident, self.trail.redactor)
        )
        data = {"channel": self.channel, "key": row["key"], "attempts": row["attempts"] + 1}
        if error:
            data["error"] = error
        trail.append(kind, None, data)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self.deliver_due()
            except Exception:  # noqa: BLE001 (a notifier never fails the run it observes)
                time.sleep(1.0)

    def close(self) -> None:
        # Wait for what is due before the flush deadline (a retry scheduled after it
        # stays in the outbox for the next run, or `mcp-ir serve`, to deliver).
        deadline = time.monotonic() + self._flush_timeout_s
        while time.monotonic() < deadline and self.outbox.due(
            time.time() + (deadline - time.monotonic())
        ):
            self._wake.set()
            time.sleep(0.2)
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        self.outbox.close()
