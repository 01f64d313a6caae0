"""The durable alert store: SQLite in WAL mode with ``synchronous=FULL``.

One writer thread owns the only write connection. Requests hand it small operations
and wait on a future; it runs every operation queued at that moment inside ONE
``BEGIN IMMEDIATE … COMMIT`` (each under its own SAVEPOINT, so one failing operation
does not undo the others) and resolves the futures only after the commit returned.
That is group commit: an answer is never sent before its alert is on disk, and one
fsync covers every alert that arrived meanwhile.

Dedup is one ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` on the primary key
``(source, dedup_key)``: whoever inserts first creates the incident, every later copy
gets the id already stored, and the window check is part of the same statement, so
there is no check-then-insert race to lose even with 50 identical alerts at once.

Incident states: ``new -> launching -> launched | failed``. A failed launch (an
error from the launcher, or a run that died before its first trail record) stays
``failed`` with its error and a later ``next_attempt_at`` while attempts remain
(the worker claims it again then), and gets ``gave_up = 1`` when they are spent.
``started_at`` is set once the run's first trail record exists, ``ended_at`` once
the trail says the run ended. Every alert, whatever the decision, is kept in
``alerts`` (see :mod:`intake.decisions`).
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from core.rows import from_row
from intake.decisions import (
    UPSERT_DEDUP,
    IngestRequest,
    Outcome,
    decide,
    free_incident_id,
    insert_incident,
)
from intake.errors import StoreUnavailable
from intake.models import MappedAlert

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    incident_id     TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    dedup_key       TEXT NOT NULL,
    alert_id        TEXT,
    title           TEXT NOT NULL,
    target          TEXT NOT NULL,
    severity        TEXT NOT NULL,
    auto_contain    INTEGER NOT NULL,
    window_start    TEXT NOT NULL,
    window_end      TEXT NOT NULL,
    trigger_json    TEXT NOT NULL,
    alert_json      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('new', 'launching', 'launched', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_pending ON incidents (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS incidents_target ON incidents (target, created_at);
CREATE TABLE IF NOT EXISTS dedup (
    source      TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    first_seen  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    hits        INTEGER NOT NULL,
    PRIMARY KEY (source, dedup_key)
);
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    duplicate   INTEGER NOT NULL,
    body_sha256 TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    body        BLOB NOT NULL,
    body_sha256 TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    source      TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    alert_id    TEXT,
    title       TEXT NOT NULL,
    severity    TEXT,
    status      TEXT NOT NULL,
    event       TEXT,
    decision    TEXT NOT NULL,
    mode        TEXT NOT NULL,
    incident_id TEXT,
    target      TEXT,
    truncated   INTEGER NOT NULL DEFAULT 0,
    deliveries  INTEGER NOT NULL,
    first_seen  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    PRIMARY KEY (source, dedup_key)
);
CREATE INDEX IF NOT EXISTS alerts_recent ON alerts (last_seen);
CREATE TABLE IF NOT EXISTS incident_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    data_json   TEXT NOT NULL,
    created_at  REAL NOT NULL,
    written_at  REAL
);
CREATE INDEX IF NOT EXISTS incident_events_pending ON incident_events (written_at, incident_id);
CREATE TABLE IF NOT EXISTS webhook_ids (
    source      TEXT NOT NULL,
    webhook_id  TEXT NOT NULL,
    first_seen  REAL NOT NULL,
    PRIMARY KEY (source, webhook_id)
);
"""

# Columns added after the first release: added in place to an older store.
MIGRATIONS = {
    "incidents": {
        "started_at": "REAL",
        "ended_at": "REAL",
        "launched_at": "REAL",
        "run_ref": "TEXT",
        "gave_up": "INTEGER NOT NULL DEFAULT 0",
    },
    "dead_letters": {"body_bytes": "INTEGER", "meta_json": "TEXT"},
}


def migrate(conn: sqlite3.Connection) -> None:
    """Creates the tables and adds the columns an older store lacks."""
    conn.executescript(SCHEMA)
    for table, columns in MIGRATIONS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, decl in columns.items():
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


@dataclass(frozen=True)
class Receipt:
    """Answer to an accepted alert: its incident, and whether this call created it."""

    incident_id: str
    created: bool


# How an ``incidents`` column becomes an IncidentRecord field, where it is not as stored.
_INCIDENT_CONVERT: dict[str, Any] = {
    "auto_contain": bool,
    "window_start": datetime.fromisoformat,
    "window_end": datetime.fromisoformat,
    "trigger": json.loads,
    "gave_up": bool,
}


@dataclass(frozen=True)
class IncidentRecord:
    """One stored incident, as the worker and ``mcp-ir alerts`` see it."""

    incident_id: str
    source: str
    dedup_key: str
    alert_id: str | None
    title: str
    target: str
    severity: str
    auto_contain: bool
    window_start: datetime
    window_end: datetime
    trigger: dict[str, Any]
    state: str
    attempts: int
    last_error: str | None
    created_at: float
    updated_at: float
    started_at: float | None = None
    ended_at: float | None = None
    launched_at: float | None = None
    run_ref: str | None = None
    gave_up: bool = False
    next_attempt_at: float = 0.0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> IncidentRecord:
        """Builds a record from an ``incidents`` row."""
        return from_row(cls, row, _INCIDENT_CONVERT, {"trigger": "trigger_json"})


def connect(path: Path) -> sqlite3.Connection:
    """Opens ``path`` with the durability settings every connection must use."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


_STOP = object()


class AlertStore:
    """The store and its writer thread.

    Args:
        path: the SQLite file (its directory is created).
        batch_max: most operations committed together.
    """

    def __init__(self, path: Path, *, batch_max: int = 256) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._batch_max = batch_max
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._conn = connect(self.path)
        migrate(self._conn)
        self._thread = threading.Thread(target=self._run, name="intake-store", daemon=True)
        self._closed = False
        self._thread.start()

    # -- writer machinery -------------------------------------------------------------

    def submit(self, operation: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Queues ``operation(conn)``; the future resolves after its transaction commits.

        Raises:
            StoreUnavailable: the store is closed.
        """
        if self._closed:
            raise StoreUnavailable("the alert store is closed")
        future: Future[T] = Future()
        self._queue.put((operation, future))
        return future

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran or the writer thread died."""
        return self._closed or not self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        """Commits what is queued, then stops the writer and closes the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._conn.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < self._batch_max:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                    break
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]]) -> None:
        conn = self._conn
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for operation, future in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = operation(conn)
                except Exception as exc:  # the operation's own failure: undo only it
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((future, None, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((future, result, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StoreUnavailable(f"alert store commit failed: {exc}")
            for _, future in batch:
                future.set_exception(failure)
            return
        for future, result, error in outcomes:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    # -- operations ---------------------------------------------------------------------

    def accept(
        self,
        *,
        source: str,
        dedup_key: str,
        mapped: MappedAlert,
        trigger: dict[str, Any],
        body_sha256: str,
        window_s: float,
        received_at: float,
    ) -> Future[Receipt]:
        """Stores an alert: a new incident, or a delivery of the existing one."""

        def operation(conn: sqlite3.Connection) -> Receipt:
            # Only this thread writes, and it holds the write lock: a free id stays free.
            candidate = free_incident_id(conn, received_at)
            row = conn.execute(
                UPSERT_DEDUP,
                {
                    "source": source,
                    "dedup_key": dedup_key,
                    "candidate": candidate,
                    "now": received_at,
                    "window": window_s,
                },
            ).fetchone()
            incident_id = row[0]
            created = incident_id == candidate
            if created:
                insert_incident(conn, incident_id, source, dedup_key, mapped, trigger, received_at)
            conn.execute(
                "INSERT INTO deliveries (source, incident_id, duplicate, body_sha256, received_at)"
                " VALUES (?,?,?,?,?)",
                (source, incident_id, int(not created), body_sha256, received_at),
            )
            return Receipt(incident_id, created)

        return self.submit(operation)

    def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        body: bytes,
        body_sha256: str,
        received_at: float,
        body_bytes: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Future[int]:
        """Keeps an alert that cannot become an incident; returns its id.

        ``body`` is what is kept (all of it, or for an over-size body its first 2 KiB
        already redacted); ``body_bytes`` the size received when that differs.
        """

        def operation(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO dead_letters (source, reason, body, body_sha256, received_at,"
                " body_bytes, meta_json) VALUES (?,?,?,?,?,?,?)",
                (
                    source,
                    reason,
                    body,
                    body_sha256,
                    received_at,
                    len(body) if body_bytes is None else body_bytes,
                    json.dumps(meta or {}, sort_keys=True),
                ),
            )
            return int(cur.lastrowid or 0)

        return self.submit(operation)

    def ingest(self, request: IngestRequest) -> Future[Outcome]:
        """Stores one parsed alert and takes its decision atomically (see
        :func:`intake.decisions.decide`)."""
        return self.submit(lambda conn: decide(conn, request))

    def recover(self) -> Future[int]:
        """At startup: incidents left ``launching`` by a crash go back to ``new``.

        Safe because a launch is idempotent on the incident id: relaunching one that
        did start finds the existing run instead of making a second.
        """

        def operation(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE incidents SET state = 'new', next_attempt_at = 0 WHERE state = 'launching'"
            )
            return cur.rowcount

        return self.submit(operation)

    def claim_next(self, now: float | None = None) -> Future[IncidentRecord | None]:
        """Moves the oldest due ``new`` incident to ``launching`` and returns it."""

        def operation(conn: sqlite3.Connection) -> IncidentRecord | None:
            at = time.time() if now is None else now
            row = conn.execute(
                "UPDATE incidents SET state = 'launching', attempts = attempts + 1,"
                " updated_at = :at WHERE incident_id = (SELECT incident_id FROM incidents"
                " WHERE state IN ('new', 'failed') AND gave_up = 0 AND next_attempt_at <= :at"
                " ORDER BY created_at, incident_id LIMIT 1) RETURNING *",
                {"at": at},
            ).fetchone()
            return IncidentRecord.from_row(row) if row else None

        return self.submit(operation)

    def finish(
        self,
        incident_id: str,
        *,
        state: str,
        error: str | None = None,
        retry_at: float = 0.0,
        gave_up: bool = False,
        run_ref: str | None = None,
    ) -> Future[None]:
        """Records a launch outcome: ``launched``, ``new``, or ``failed`` (retried at
        ``retry_at`` unless ``gave_up``)."""
        if state not in ("launched", "failed", "new"):
            raise ValueError(f"state: {state!r} is not a launch outcome")

        def operation(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute(
                "UPDATE incidents SET state = ?, last_error = ?, next_attempt_at = ?,"
                " gave_up = ?, run_ref = COALESCE(?, run_ref), updated_at = ?,"
                " launched_at = CASE WHEN ? = 'launched' THEN ? ELSE launched_at END"
                " WHERE incident_id = ? AND state = 'launching'",
                (state, error, retry_at, int(gave_up), run_ref, now, state, now, incident_id),
            )

        return self.submit(operation)

    def run_died(
        self, incident_id: str, *, error: str, retry_at: float, gave_up: bool
    ) -> Future[bool]:
        """A launched run died before its first trail record: ``failed`` with its error,
        retried at ``retry_at`` unless ``gave_up``. False when it was not in that state."""

        def operation(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE incidents SET state = 'failed', last_error = ?, next_attempt_at = ?,"
                " gave_up = ?, updated_at = ? WHERE incident_id = ? AND state = 'launched'"
                " AND started_at IS NULL",
                (error, retry_at, int(gave_up), time.time(), incident_id),
            )
            return cur.rowcount == 1

        return self.submit(operation)

    def mark(self, incident_id: str, column: str, at: float) -> Future[None]:
        """Sets ``started_at`` or ``ended_at`` (once)."""
        if column not in ("started_at", "ended_at"):
            raise ValueError(f"column: {column!r}")

        def operation(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"UPDATE incidents SET {column} = COALESCE({column}, ?), updated_at = ?"  # noqa: S608
                " WHERE incident_id = ?",
                (at, time.time(), incident_id),
            )

        return self.submit(operation)

    def watched(self) -> Future[list[IncidentRecord]]:
        """Incidents the worker watches: launched and not started, or not ended."""

        def operation(conn: sqlite3.Connection) -> list[IncidentRecord]:
            rows = conn.execute(
                "SELECT * FROM incidents WHERE state = 'launched' AND ended_at IS NULL"
            ).fetchall()
            return [IncidentRecord.from_row(r) for r in rows]

        return self.submit(operation)

    def pending_events(self, limit: int = 200) -> Future[list[sqlite3.Row]]:
        """Trail records (``alert.joined``/``alert.resolved``) not yet written, of
        incidents whose run has started (their trail exists), oldest first."""
        return self.submit(
            lambda conn: conn.execute(
                "SELECT e.* FROM incident_events e JOIN incidents i"
                " ON i.incident_id = e.incident_id"
                " WHERE e.written_at IS NULL AND i.started_at IS NOT NULL"
                " ORDER BY e.id LIMIT ?",
                (limit,),
            ).fetchall()
        )

    def event_written(self, event_id: int) -> Future[None]:
        """Marks one pending trail record as written."""
        return self.submit(
            lambda conn: (
                conn.execute(
                    "UPDATE incident_events SET written_at = ? WHERE id = ?",
                    (time.time(), event_id),
                )
                and None
            )
        )

    def backlog(self) -> Future[dict[str, int]]:
        """Incidents waiting for a (re)launch or a first record, by kind."""

        def operation(conn: sqlite3.Connection) -> dict[str, int]:
            row = conn.execute(
                "SELECT"
                " SUM(state = 'new'),"
                " SUM(state = 'launching'),"
                " SUM(state = 'failed' AND gave_up = 0),"
                " SUM(state = 'failed' AND gave_up = 1),"
                " SUM(state = 'launched' AND started_at IS NULL)"
                " FROM incidents"
            ).fetchone()
            keys = ("new", "launching", "retrying", "failed", "awaiting_first_record")
            return {k: int(v or 0) for k, v in zip(keys, row, strict=True)}

        return self.submit(operation)

    def next_due(self) -> float | None:
        """When the next ``new`` incident becomes due (None when there is none)."""
        row = self.submit(
            lambda conn: conn.execute(
                "SELECT MIN(next_attempt_at) FROM incidents"
                " WHERE state IN ('new', 'failed') AND gave_up = 0"
            ).fetchone()
        ).result()
        return None if row[0] is None else float(row[0])
