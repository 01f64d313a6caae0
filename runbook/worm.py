"""The WORM copy of an incident's evidence: every trail record and artifact is also
written to S3 with Object Lock (mode and retention from the inventory's
``evidence.s3``).

Uploads never block a step. The observer only notes what must be copied in a local
durable outbox (SQLite, ``worm-outbox.sqlite`` beside the trail) and wakes a
background thread that uploads it; ``close()`` waits briefly; whatever is left (S3
down, the process killed) is retried by the next process that touches the incident
(``mcp-ir status``/``verify``/``report``, the next run). The trail itself is the
source of truth: a sync pass first enqueues every local record and artifact the
outbox does not know yet, including records other processes (the CLI) appended.

Object layout, one object per record so that a locked object is never rewritten:
``<prefix>/<incident>/trail/<seq>.json`` (the record's exact trail line),
``<prefix>/<incident>/artifacts/<sha256>`` and, for a checkpointed trail,
``<prefix>/<incident>/checkpoints/<seq>-<digest>.json`` (each signed checkpoint).

Only what a valid checkpoint covers is uploaded, after the local chain, checkpoints
and signed decisions verify (:mod:`runbook.worm_coverage`): a trail rewritten while
S3 was down is never uploaded as genuine. Every object carries the time it was
uploaded (``uploaded-at``) and ``late: true`` when it was not copied by the run
itself within ``LATE_AFTER_S`` of being written (a catch-up after an outage, or an
incident that ran without the WORM copy), so the copy never passes for one made
as the incident ran.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.trail import ARTIFACTS, TRAIL_FILE, Record, Trail

log = logging.getLogger("mcp_ir.worm")

OUTBOX_FILE = "worm-outbox.sqlite"
CLOSE_WAIT_S = 5.0
LATE_AFTER_S = 300.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    version_id TEXT NOT NULL DEFAULT '',
    updated TEXT NOT NULL DEFAULT ''
)
"""


@dataclass(frozen=True)
class WormTarget:
    """Where and how an incident's copy is written (from the inventory's ``evidence.s3``)."""

    bucket: str
    prefix: str
    mode: str
    retention_days: int
    region: str | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> WormTarget:
        return cls(cfg.bucket, cfg.prefix.strip("/"), cfg.mode, cfg.retention_days, cfg.region)

    def base(self, incident_id: str) -> str:
        return f"{self.prefix}/{incident_id}" if self.prefix else incident_id


def record_key(seq: int) -> str:
    return f"trail/{seq}.json"


def artifact_key(digest: str) -> str:
    return f"artifacts/{digest}"


def record_line(record: Record) -> bytes:
    """The record exactly as ``trail.jsonl`` holds it (without the newline)."""
    import json

    body = {
        "seq": record.seq,
        "ts": record.ts,
        "kind": record.kind,
        "step": record.step,
        "data": record.data,
        "prev": record.prev,
        "hash": record.hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def s3_client(region: str | None = None) -> Any:
    """A boto3 S3 client that fails fast (the outbox retries, not botocore)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=2,
        read_timeout=10,
        retries={"max_attempts": 1, "mode": "standard"},
        request_checksum_calculation="when_required",
    )
    return boto3.session.Session(region_name=region).client("s3", config=config)


@dataclass(frozen=True)
class CopyStatus:
    """How much of the local evidence the remote copy holds (from the outbox alone).
    ``refused``: why the local trail is not uploaded (it fails verification);
    ``uncovered``: records waiting for a checkpoint to cover them."""

    total: int
    done: int
    conflicts: list[str]
    last_error: str
    refused: str = ""
    uncovered: int = 0

    @property
    def complete(self) -> bool:
        return (
            self.total > 0 and self.done == self.total and not self.conflicts and not self.refused
        )

    def line(self) -> str:
        if self.complete:
            return f"complete ({self.done} objects)"
        text = f"INCOMPLETE: {self.done} of {self.total} objects copied"
        if self.refused:
            text = (
                f"NOT UPLOADED: the local trail fails verification ({self.refused}); "
                f"nothing more is copied; {text}"
            )
        elif self.uncovered:
            text += f"; {self.uncovered} record(s) wait for a checkpoint"
        if self.conflicts:
            text += f"; {len(self.conflicts)} key(s) hold different content: {self.conflicts[0]}"
        if self.last_error:
            text += f"; last error: {self.last_error}"
        return text


class Outbox:
    """The durable list of objects to copy, in SQLite beside the trail."""

    def __init__(self, incident_dir: Path) -> None:
        self.dir = Path(incident_dir)
        self.path = self.dir / OUTBOX_FILE
        with closing(self._connect()) as db:
            db.execute(_SCHEMA)
            db.commit()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
            db.commit()
        finally:
            db.close()

    def add(self, items: list[tuple[str, str, str]]) -> None:
        """Enqueues ``(key, kind, ref)`` rows; rows already known are left alone."""
        if items:
            with self._db() as db:
                db.executemany(
                    "INSERT OR IGNORE INTO objects (key, kind, ref) VALUES (?, ?, ?)", items
                )

    def add_record(self, record: Record) -> None:
        self.add([(record_key(record.seq), "record", str(record.seq))])

    def add_from_trail(self, lines: dict[int, bytes]) -> None:
        """Enqueues every local record and the artifacts it references (an artifact,
        a decision's proof, the keys snapshot) the outbox does not know yet."""
        from runbook.worm_coverage import referenced_artifacts

        items: list[tuple[str, str, str]] = []
        for seq, raw in lines.items():
            items.append((record_key(seq), "record", str(seq)))
            items += [(artifact_key(d), "artifact", d) for d in referenced_artifacts(raw)]
        self.add(items)

    def pending(self) -> list[tuple[str, str, str]]:
        with self._db() as db:
            return list(
                db.execute(
                    "SELECT key, kind, ref FROM objects WHERE state = 'pending' ORDER BY rowid"
                )
            )

    def mark(self, key: str, state: str, *, error: str = "", version_id: str = "") -> None:
        with self._db() as db:
            db.execute(
                "UPDATE objects SET state = ?, attempts = attempts + 1, last_error = ?, "
                "version_id = ?, updated = ? WHERE key = ?",
                (state, error[:300], version_id, datetime.now(UTC).isoformat(), key),
            )

    def status(self, lines: dict[int, bytes] | None = None) -> CopyStatus:
        """Counts against the local trail (when given) so records no process has
        enqueued yet count as not copied."""
        if lines is not None:
            self.add_from_trail(lines)
        with self._db() as db:
            rows = list(db.execute("SELECT key, state, last_error, updated FROM objects"))
        done = sum(1 for r in rows if r[1] == "done")
        conflicts = sorted(r[0] for r in rows if r[1] == "conflict")
        errors = sorted((r[3], r[2]) for r in rows if r[1] == "pending" and r[2])
        return CopyStatus(len(rows), done, conflicts, errors[-1][1] if errors else "")


def trail_lines(incident_dir: Path) -> dict[int, bytes]:
    """The local trail's lines by seq."""
    import json

    path = Path(incident_dir) / TRAIL_FILE
    out: dict[int, bytes] = {}
    if path.exists():
        for raw in path.read_bytes().split(b"\n"):
            if raw.strip():
                out[int(json.loads(raw)["seq"])] = raw
    return out


class Uploader:
    """Copies what the outbox holds, one object at a time, with Object Lock."""

    def __init__(
        self,
        incident_dir: Path,
        target: WormTarget,
        client: Any = None,
        *,
        engine_key: str | None = None,
        live: bool = False,
    ) -> None:
        self.dir = Path(incident_dir)
        self.incident_id = self.dir.name
        self.target = target
        self.outbox = Outbox(self.dir)
        self._client = client
        self.engine_key = engine_key
        self.live = live

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self.target.region)
        return self._client

    def sync(self, *, stop_on_error: bool = True) -> CopyStatus:
        """One pass: verify the local evidence, enqueue what a valid checkpoint covers,
        upload every pending object. Stops at the first transport error (S3 is
        likely down)."""
        from runbook.worm_coverage import checkpoint_key, coverage

        lines = trail_lines(self.dir)
        cov = coverage(self.dir, lines, self.engine_key)
        eligible = {seq: raw for seq, raw in lines.items() if seq <= cov.upto}
        self.outbox.add_from_trail(eligible)
        checkpoints = {checkpoint_key(raw): raw for raw in cov.checkpoints}
        self.outbox.add([(key, "checkpoint", key) for key in checkpoints])
        for key, kind, ref in self.outbox.pending():
            written: str | None = None
            if kind == "record":
                body = eligible.get(int(ref))
                if body is None:
                    continue
                written = _field(body, "ts")
            elif kind == "checkpoint":
                body = checkpoints.get(key)
                if body is None:
                    continue
                written = _field(body, "time")
            else:
                path = self.dir / ARTIFACTS / ref
                if not path.is_file():
                    self.outbox.mark(key, "pending", error="local artifact missing")
                    continue
                body = path.read_bytes()
            try:
                state, version = self._put(key, body, late=self._late(written))
            except Exception as exc:  # noqa: BLE001 (any transport/API error is retried later)
                self.outbox.mark(key, "pending", error=_describe(exc))
                if stop_on_error:
                    break
                continue
            self.outbox.mark(key, state, version_id=version)
        status = self.outbox.status(lines)
        return CopyStatus(
            status.total,
            status.done,
            status.conflicts,
            status.last_error,
            refused=cov.refused,
            uncovered=len(lines) - len(eligible),
        )

    def _late(self, written: str | None) -> bool:
        """Not copied by the run itself, or long after the object was written."""
        if not self.live or not written:
            return True
        try:
            at = datetime.fromisoformat(written.replace("Z", "+00:00"))
        except ValueError:
            return True
        return (datetime.now(UTC) - at).total_seconds() > LATE_AFTER_S

    def _put(self, key: str, body: bytes, *, late: bool = True) -> tuple[str, str]:
        """Writes one object unless it is already there; a key that already holds
        different content is a conflict (never overwritten)."""
        from botocore.exceptions import ClientError

        full = f"{self.target.base(self.incident_id)}/{key}"
        digest = hashlib.sha256(body).hexdigest()
        try:
            head = self.client.head_object(Bucket=self.target.bucket, Key=full)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
        else:
            same = head.get("Metadata", {}).get("sha256") == digest
            return ("done" if same else "conflict"), head.get("VersionId", "") or ""
        until = datetime.now(UTC) + timedelta(days=self.target.retention_days)
        resp = self.client.put_object(
            Bucket=self.target.bucket,
            Key=full,
            Body=body,
            ContentMD5=_md5_b64(body),
            ContentType="application/json"
            if key.startswith("trail/")
            else "application/octet-stream",
            Metadata={
                "sha256": digest,
                "incident": self.incident_id,
                "uploaded-at": datetime.now(UTC).isoformat(timespec="seconds"),
                "late": "true" if late else "false",
            },
            ObjectLockMode=self.target.mode,
            ObjectLockRetainUntilDate=until,
        )
        return "done", resp.get("VersionId", "") or ""


def _field(raw: bytes, name: str) -> str | None:
    import json

    try:
        value = json.loads(raw).get(name)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _md5_b64(body: bytes) -> str:
    import base64

    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


def _describe(exc: Exception) -> str:
    """A short, secret-free description of an upload failure."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return f"S3 {exc.response.get('Error', {}).get('Code', '?')}"
    return type(exc).__name__


class WormCopy:
    """The trail observer: enqueue on every record, upload in a background thread."""

    def __init__(
        self,
        trail: Trail,
        target: WormTarget,
        client: Any = None,
        engine_key: str | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.uploader = Uploader(trail.dir, target, client, engine_key=engine_key, live=True)
        self._where = f"s3://{target.bucket}/{target.base(trail.dir.name)}"
        self._say = say
        self._failing = ""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mcp-ir-worm", daemon=True)
        self._thread.start()

    def on_record(self, record: Record) -> None:
        """Notes the record (and its artifact) in the outbox; never uploads inline."""
        try:
            self.uploader.outbox.add_record(record)
        except sqlite3.Error:
            log.exception("WORM outbox write failed for seq %s (the next sync adds it)", record.seq)
        self._wake.set()

    def _loop(self) -> None:
        backoff = 0.5
        while True:
            self._wake.clear()
            # Read before the pass: a pass that began before close() may have missed
            # the last records, so the thread returns only after a pass that began
            # once stopping was requested.
            stopping = self._stop.is_set()
            try:
                status = self.uploader.sync()
                ok = not status.last_error
                self._tell(status)
            except Exception:  # noqa: BLE001 (the copy never takes the run down)
                log.exception("WORM sync pass failed")
                ok = False
            if stopping and (ok or self._deadline_passed()):
                return
            if ok:
                backoff = 0.5
                self._wake.wait(5.0)
            else:
                self._wake.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _tell(self, status: CopyStatus) -> None:
        """One console line when the copy starts failing (and on a new error), one
        when it has caught up again: the run goes on either way, the operator knows."""
        if self._say is None or status.last_error == self._failing:
            return
        if status.last_error:
            self._say(
                f"      evidence copy to {self._where} failing ({status.last_error}): "
                f"{status.total - status.done} object(s) queued on disk, retrying"
            )
        else:
            self._say(f"      evidence copy to {self._where} caught up ({status.done} objects)")
        self._failing = status.last_error

    _deadline: float = 0.0

    def _deadline_passed(self) -> bool:
        return time.monotonic() >= self._deadline

    def close(self, wait_s: float = CLOSE_WAIT_S) -> CopyStatus:
        """Waits up to ``wait_s`` for the outbox to drain; what is left stays queued."""
        self._deadline = time.monotonic() + wait_s
        self._stop.set()
        self._wake.set()
        self._thread.join(wait_s + 1)
        return self.uploader.outbox.status(trail_lines(self.uploader.dir))


def build(runner: Any) -> WormCopy | None:
    """Observer factory (``runbook.observers.FACTORIES``): None unless the inventory
    configures ``evidence.s3``."""
    target = configured_target(runner.inventory)
    if target is None:
        return None
    from flows.progress import emit

    return WormCopy(runner.trail, target, engine_key=engine_public_key(runner.inventory), say=emit)


def engine_public_key(inventory: Any) -> str | None:
    engine = getattr(inventory, "engine", None)
    return engine.checkpoint_public_key if engine else None


def configured_target(inventory: Any) -> WormTarget | None:
    evidence = getattr(inventory, "evidence", None)
    if evidence is None or evidence.s3 is None:
        return None
    return WormTarget.from_config(evidence.s3)


def catch_up(inventory: Any, incident_dir: Path) -> CopyStatus | None:
    """Retries what an earlier process left in the outbox (one pass, stops at the first
    error); None when the WORM copy is not configured."""
    target = configured_target(inventory)
    if target is None:
        return None
    return Uploader(incident_dir, target, engine_key=engine_public_key(inventory)).sync()
