"""The durable Slack outbox: every message is written here before it is sent.

A SQLite file (WAL) under the engine's state directory holds, per incident, the
thread's context (what the opening message shows) and every message still to be
delivered, in order. A message is sent only after every earlier message of the
same incident, so a thread reads in the order things happened even when Slack was
down for the whole run. The opening message's ``ts`` is stored with it, so replies
written after a restart land in the same thread, and replies queued before the
opener was delivered get its ``ts`` once it is known.

Delivery is at-least-once: a crash between Slack's answer and the ``mark_sent``
write sends that one message again after a restart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.rows import from_row

OUTBOX_FILE = "slack-outbox.sqlite3"
OPENER_KEY = "opener"

Op = Literal["post", "update"]
Status = Literal["pending", "sent", "dead", "superseded"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    incident_id TEXT PRIMARY KEY,
    channel     TEXT NOT NULL,
    context     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id     TEXT NOT NULL,
    op              TEXT NOT NULL,
    key             TEXT,
    target_key      TEXT,
    in_thread       INTEGER NOT NULL,
    channel         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    delivered_at    REAL,
    ts              TEXT
);
CREATE INDEX IF NOT EXISTS messages_pending ON messages (status, incident_id, id);
CREATE INDEX IF NOT EXISTS messages_key ON messages (incident_id, key);
"""


@dataclass(frozen=True)
class OutboxMessage:
    """One queued message. ``payload`` is the rendered, redacted ``{text, blocks}``."""

    id: int
    incident_id: str
    op: Op
    key: str | None
    target_key: str | None
    in_thread: bool
    channel: str
    payload: dict[str, Any]
    status: Status
    attempts: int
    next_attempt_at: float
    created_at: float
    ts: str | None

    @property
    def kind(self) -> str:
        """A short, secret-free name of what this message is (for the trail)."""
        if self.op == "update":
            return f"update:{self.target_key}"
        return self.key or "reply"


def _row(r: sqlite3.Row) -> OutboxMessage:
    return from_row(OutboxMessage, r, {"in_thread": bool, "payload": json.loads})


class Outbox:
    """Thread-safe access to the outbox file (one connection, serialised)."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / OUTBOX_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- thread context ----------------------------------------------------

    def thread(self, incident_id: str) -> tuple[str, dict[str, Any]] | None:
        """``(channel, context)`` of an incident's thread, or None if never opened."""
        with self._tx() as db:
            r = db.execute(
                "SELECT channel, context FROM threads WHERE incident_id = ?", (incident_id,)
            ).fetchone()
        return (r["channel"], json.loads(r["context"])) if r else None

    def save_thread(self, incident_id: str, channel: str, context: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO threads (incident_id, channel, context) VALUES (?, ?, ?) "
                "ON CONFLICT(incident_id) DO UPDATE SET context = excluded.context",
                (incident_id, channel, json.dumps(context)),
            )

    # -- queue -------------------------------------------------------------

    def enqueue(
        self,
        incident_id: str,
        *,
        op: Op,
        channel: str,
        payload: dict[str, Any],
        key: str | None = None,
        target_key: str | None = None,
        in_thread: bool = True,
    ) -> int:
        """Appends a message; returns its id (delivery order within the incident)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO messages (incident_id, op, key, target_key, in_thread, channel, "
                "payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    incident_id,
                    op,
                    key,
                    target_key,
                    int(in_thread),
                    channel,
                    json.dumps(payload),
                    time.time(),
                ),
            )
            return int(cur.lastrowid or 0)

    def pending(self, incident_ids: set[str] | None = None) -> list[OutboxMessage]:
        """Undelivered messages, oldest first (all incidents, or only these)."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM messages WHERE status = 'pending' ORDER BY id"
            ).fetchall()
        msgs = [_row(r) for r in rows]
        if incident_ids is not None:
            msgs = [m for m in msgs if m.incident_id in incident_ids]
        return msgs

    def has_key(self, incident_id: str, key: str) -> bool:
        with self._tx() as db:
            r = db.execute(
                "SELECT 1 FROM messages WHERE incident_id = ? AND key = ? AND op = 'post'",
                (incident_id, key),
            ).fetchone()
        return r is not None

    def target(self, incident_id: str, key: str) -> OutboxMessage | None:
        """The latest posted message with ``key`` (its ``ts`` once delivered)."""
        with self._tx() as db:
            r = db.execute(
                "SELECT * FROM messages WHERE incident_id = ? AND key = ? AND op = 'post' "
                "ORDER BY id DESC LIMIT 1",
                (incident_id, key),
            ).fetchone()
        return _row(r) if r else None

    def newer_update_pending(self, msg: OutboxMessage) -> bool:
        """Whether a later pending update replaces this one (chat.update sends the
        whole message, so only the newest content matters)."""
        return self._any(
            "incident_id = ? AND op = 'update' AND target_key = ? AND status = 'pending' "
            "AND id > ?",
            (msg.incident_id, msg.target_key, msg.id),
        )

    def held_back(self, msg: OutboxMessage) -> bool:
        """Whether ``msg`` waited behind an earlier message of its incident that was
        failing when ``msg`` was queued or later (so ``msg`` is delivered late even
        though it was never attempted itself)."""
        return self._any(
            "incident_id = ? AND id < ? AND attempts > 0 AND status = 'sent' AND delivered_at >= ?",
            (msg.incident_id, msg.id, msg.created_at),
        )

    def _any(self, where: str, params: tuple[Any, ...]) -> bool:
        """Whether some message matches the SQL condition ``where``."""
        with self._tx() as db:
            r = db.execute(f"SELECT 1 FROM messages WHERE {where} LIMIT 1", params).fetchone()  # noqa: S608 (constant SQL)
        return r is not None

    def mark_sent(self, msg_id: int, ts: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET status = 'sent', ts = ?, delivered_at = ? WHERE id = ?",
                (ts, time.time(), msg_id),
            )

    def mark_failed(self, msg_id: int, error: str, next_attempt_at: float) -> int:
        """Counts a failed attempt; returns the number of attempts so far."""
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = ? WHERE id = ?",
                (error, next_attempt_at, msg_id),
            )
            r = db.execute("SELECT attempts FROM messages WHERE id = ?", (msg_id,)).fetchone()
        return int(r["attempts"])

    def mark(self, msg_id: int, status: Status, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET status = ?, last_error = COALESCE(?, last_error) WHERE id = ?",
                (status, error, msg_id),
            )

    def next_due(self, incident_ids: set[str]) -> float | None:
        """When the earliest pending message of these incidents may be retried."""
        due = [m.next_attempt_at for m in self.pending(incident_ids)]
        return min(due) if due else None

    def counts(self) -> dict[str, int]:
        with self._tx() as db:
            rows = db.execute("SELECT status, COUNT(*) AS n FROM messages GROUP BY status")
            return {r["status"]: r["n"] for r in rows}
