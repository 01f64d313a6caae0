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

Incident states: ``new -> launching -> launched | failed`` (a retryable launch error
goes back to ``new`` with a later ``next_attempt_at``).
"""

from __future__ import annotations

import json
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

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
"""

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
class Receipt:
    """Answer to an accepted alert: its incident, and whether this call created it."""

    incident_id: str
    created: bool


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

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> IncidentRecord:
        """Builds a record from an ``incidents`` row."""
        return cls(
            incident_id=row["incident_id"],
            source=row["source"],
            dedup_key=row["dedup_key"],
            alert_id=row["alert_id"],
            title=row["title"],
            target=row["target"],
            severity=row["severity"],
            auto_contain=bool(row["auto_contain"]),
            window_start=datetime.fromisoformat(row["window_start"]),
            window_end=datetime.fromisoformat(row["window_end"]),
            trigger=json.loads(row["trigger_json"]),
            state=row["state"],
            attempts=row["attempts"],
            last_error=row["last_error"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


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
        self._conn.executescript(SCHEMA)
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
            candidate = new_incident_id(received_at)
            # Only this thread writes, and it holds the write lock: a free id stays free.
            while conn.execute(
                "SELECT 1 FROM incidents WHERE incident_id = ?", (candidate,)
            ).fetchone():
                candidate = new_incident_id(received_at)
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
            conn.execute(
                "INSERT INTO deliveries (source, incident_id, duplicate, body_sha256, received_at)"
                " VALUES (?,?,?,?,?)",
                (source, incident_id, int(not created), body_sha256, received_at),
            )
            return Receipt(incident_id, created)

        return self.submit(operation)

    def dead_letter(
        self, *, source: str, reason: str, body: bytes, body_sha256: str, received_at: float
    ) -> Future[int]:
        """Keeps an authenticated alert that cannot become an incident; returns its id."""

        def operation(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO dead_letters (source, reason, body, body_sha256, received_at)"
                " VALUES (?,?,?,?,?)",
                (source, reason, body, body_sha256, received_at),
            )
            return int(cur.lastrowid or 0)

        return self.submit(operation)

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
                " WHERE state = 'new' AND next_attempt_at <= :at"
                " ORDER BY created_at, incident_id LIMIT 1) RETURNING *",
                {"at": at},
            ).fetchone()
            return IncidentRecord.from_row(row) if row else None

        return self.submit(operation)

    def finish(
        self, incident_id: str, *, state: str, error: str | None = None, retry_at: float = 0.0
    ) -> Future[None]:
        """Records a launch outcome: ``launched``, ``failed``, or ``new`` to retry later."""
        if state not in ("launched", "failed", "new"):
            raise ValueError(f"state: {state!r} is not a launch outcome")

        def operation(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE incidents SET state = ?, last_error = ?, next_attempt_at = ?,"
                " updated_at = ? WHERE incident_id = ? AND state = 'launching'",
                (state, error, retry_at, time.time(), incident_id),
            )

        return self.submit(operation)

    def next_due(self) -> float | None:
        """When the next ``new`` incident becomes due (None when there is none)."""
        row = self.submit(
            lambda conn: conn.execute(
                "SELECT MIN(next_attempt_at) FROM incidents WHERE state = 'new'"
            ).fetchone()
        ).result()
        return None if row[0] is None else float(row[0])


def read_incidents(path: Path) -> list[IncidentRecord]:
    """All incidents, newest first (a fresh connection: safe beside a running server)."""
    if not Path(path).exists():
        return []
    conn = connect(Path(path))
    try:
        conn.executescript(SCHEMA)
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
        conn.executescript(SCHEMA)
        return conn.execute("SELECT * FROM dead_letters ORDER BY id DESC").fetchall()
    finally:
        conn.close()


def delivery_counts(path: Path) -> dict[str, int]:
    """Deliveries per incident id (1 = first, more = duplicates seen)."""
    if not Path(path).exists():
        return {}
    conn = connect(Path(path))
    try:
        conn.executescript(SCHEMA)
        rows = conn.execute(
            "SELECT incident_id, COUNT(*) FROM deliveries GROUP BY incident_id"
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}
    finally:
        conn.close()
