"""The tamper-evident evidence trail.

One directory per incident: ``trail.jsonl`` holds one JSON object per line, each
carrying the SHA-256 of the previous one, and ``artifacts/`` holds files named
by their own SHA-256. Appends are serialized with an exclusive ``flock`` so the
flow, the CLI and the intake can all write to the same trail.

Fencing: one run at a time owns an incident. A run claims the trail with
:meth:`Trail.claim`, which raises the incident's epoch (``run.epoch``) under the
trail lock and holds a lease (an ``flock`` on ``run-<epoch>.lease``) while its
process lives. Every append of a claiming ``Trail`` re-reads the epoch under the
same lock and raises :class:`~core.errors.RunSuperseded` when a later run has
claimed it, so a superseded run (a paused orphan whose worker died) can never
write again. :func:`run_owner` tells anyone with read access whether the current
owner's process still holds its lease.

The canonical form that is hashed is fixed (and pinned by a known-digest test):
the record without ``hash``, ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``, encoded as UTF-8.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import ConfigError, EvidenceError, RunSuperseded
from core.processes import lock_held
from core.redact import Redactor

GENESIS = "0" * 64
TRAIL_FILE = "trail.jsonl"
ARTIFACTS = "artifacts"
EPOCH_FILE = "run.epoch"
_INCIDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{2,80}$")


def canonical(record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def check_incident_id(incident_id: str) -> str:
    if not _INCIDENT_ID.match(incident_id):
        raise ConfigError(
            f"invalid incident id {incident_id!r}: letters, digits and dashes only (3-81 chars)"
        )
    return incident_id


_TEXTUAL = ("text/", "application/json", "application/x-ndjson", "application/yaml")


@dataclass(frozen=True)
class Record:
    seq: int
    ts: str
    kind: str
    step: str | None
    data: dict[str, Any]
    prev: str
    hash: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        return cls(
            d["seq"], d["ts"], d["kind"], d.get("step"), d.get("data") or {}, d["prev"], d["hash"]
        )


class Trail:
    """An incident's evidence trail. Every string written is redacted first."""

    def __init__(self, directory: Path, redactor: Redactor | None = None) -> None:
        self.dir = directory
        self.path = directory / TRAIL_FILE
        self.artifacts = directory / ARTIFACTS
        self.redactor = redactor or Redactor()
        self._listeners: list[Callable[[Record], None]] = []
        self._epoch: int | None = None
        self._lease: Any = None

    def subscribe(self, listener: Callable[[Record], None]) -> None:
        """Calls ``listener(record)`` after each record this object appends (in this
        process). Listeners must not raise; if one does, the error is logged and the
        append still stands."""
        self._listeners.append(listener)

    def _notify(self, record: Record) -> None:
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:  # noqa: BLE001 (an observer never fails the evidence it observes)
                logging.getLogger("mcp_ir.trail").exception(
                    "trail listener failed on seq %s", record.seq
                )

    @classmethod
    def open(cls, evidence_dir: Path, incident_id: str, redactor: Redactor | None = None) -> Trail:
        check_incident_id(incident_id)
        directory = Path(evidence_dir) / incident_id
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ARTIFACTS).mkdir(exist_ok=True)
        return cls(directory, redactor)

    @property
    def incident_id(self) -> str:
        return self.dir.name

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        with open(self.dir / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield lock
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _last(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        with open(self.path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            if end == 0:
                return None
            block = b""
            pos = end
            while pos > 0:
                step = min(4096, pos)
                pos -= step
                fh.seek(pos)
                block = fh.read(step) + block
                lines = block.rstrip(b"\n").split(b"\n")
                if len(lines) > 1 or pos == 0:
                    return json.loads(lines[-1])
        return None

    def append(
        self, kind: str, step: str | None = None, data: dict[str, Any] | None = None
    ) -> Record:
        """Appends one record (redacted), fsynced before returning.

        Raises:
            RunSuperseded: this object claimed the trail for a run and a later run has
                claimed it since (nothing is written).
        """
        clean = self.redactor.data(data or {})
        with self._locked():
            self._check_fence()
            rec = self._write(kind, step, clean)
        record = Record.from_dict(rec)
        self._notify(record)
        return record

    def _write(self, kind: str, step: str | None, clean: dict[str, Any]) -> dict[str, Any]:
        """Appends under the trail lock (the caller holds it)."""
        last = self._last()
        rec: dict[str, Any] = {
            "seq": 0 if last is None else last["seq"] + 1,
            "ts": utcnow(),
            "kind": kind,
            "step": step,
            "data": clean,
            "prev": GENESIS if last is None else last["hash"],
        }
        rec["hash"] = record_hash(rec)
        line = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return rec

    # -- fencing -----------------------------------------------------------------
    @property
    def epoch(self) -> int | None:
        """The epoch this object claimed, or None (CLI, intake: never fenced)."""
        return self._epoch

    def claim(self, kind: str, data: dict[str, Any]) -> tuple[Record, dict[str, Any] | None]:
        """Makes this process the incident's one writing run.

        Under the trail lock: reads the previous owner, raises the epoch, takes the
        new epoch's lease (held until :meth:`release` or the process dies) and appends
        ``kind`` (``run.started`` or ``run.resumed``) with ``epoch`` in its data. From
        then on every append of an older claim is refused.

        Returns:
            The record, and the previous owner (``epoch_file`` content plus ``alive``:
            whether its process still held its lease just before), or None.
        """
        clean = self.redactor.data(data)
        with self._locked():
            previous = _read_epoch(self.dir)
            if previous is not None:
                previous["alive"] = _lease_held(self.dir, int(previous["epoch"]))
            epoch = (int(previous["epoch"]) if previous else 0) + 1
            lease = open(self.dir / _lease_name(epoch), "a+")  # noqa: SIM115 (held for the run)
            fcntl.flock(lease, fcntl.LOCK_EX)
            _write_epoch(self.dir, {**clean, "epoch": epoch})
            self.release()
            self._epoch, self._lease = epoch, lease
            rec = self._write(kind, None, {**clean, "epoch": epoch})
        record = Record.from_dict(rec)
        self._notify(record)
        return record, previous

    def check_fence(self) -> None:
        """Raises :class:`RunSuperseded` when a later run has claimed the trail (call it
        before acting on anything outside the trail, e.g. Prefect state)."""
        with self._locked():
            self._check_fence()

    def _check_fence(self) -> None:
        if self._epoch is None:
            return
        current = _read_epoch(self.dir)
        if current is not None and int(current["epoch"]) != self._epoch:
            raise RunSuperseded(
                f"incident {self.incident_id}: this run (epoch {self._epoch}) was superseded by "
                f"epoch {current['epoch']} (flow run {current.get('flow_run_id') or '?'} on "
                f"{current.get('host') or '?'}); it writes nothing more and exits"
            )

    def release(self) -> None:
        """Gives up this run's lease (at its end); appends stay fenced by the epoch."""
        if self._lease is not None:
            self._lease.close()
            self._lease = None

    def store_artifact(self, content: bytes, *, media_type: str = "text/plain") -> tuple[str, int]:
        """Writes an artifact file (textual content redacted) and returns (sha256, size).
        Content-addressed, so storing the same bytes twice is a no-op."""
        if media_type.startswith(_TEXTUAL):
            content = self.redactor.bytes(content)
        digest = hashlib.sha256(content).hexdigest()
        dest = self.artifacts / digest
        if not dest.exists():
            tmp = dest.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        return digest, len(content)

    def add_artifact(
        self,
        content: bytes,
        *,
        name: str,
        media_type: str = "text/plain",
        step: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Record:
        """Stores an artifact and appends the ``artifact`` record that references it."""
        digest, size = self.store_artifact(content, media_type=media_type)
        data = {"name": name, "sha256": digest, "size": size, "media_type": media_type}
        data.update(extra or {})
        return self.append("artifact", step, data)

    def read_artifact(self, digest: str) -> bytes:
        return (self.artifacts / digest).read_bytes()

    def records(self) -> list[Record]:
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    out.append(Record.from_dict(json.loads(line)))
        return out


def read_records(path: Path) -> list[Record]:
    """A trail file's records for a reader that runs beside the writer (metrics,
    audit history): a torn last line (a write in progress) is left out, where
    :meth:`Trail.records` would raise."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                records.append(Record.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
    return records


def _lease_name(epoch: int) -> str:
    return f"run-{epoch}.lease"


def _read_epoch(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / EPOCH_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EvidenceError(f"{directory / EPOCH_FILE}: unreadable ({exc})") from exc
    return data if isinstance(data, dict) and "epoch" in data else None


def _write_epoch(directory: Path, data: dict[str, Any]) -> None:
    tmp = directory / (EPOCH_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, sort_keys=True))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / EPOCH_FILE)


def _lease_held(directory: Path, epoch: int) -> bool:
    """Whether a live process holds epoch's lease (a shared, non-blocking lock is
    refused). Needs only read access."""
    return lock_held(directory / _lease_name(epoch))


@dataclass(frozen=True)
class RunOwner:
    """The run that last claimed an incident's trail (see :meth:`Trail.claim`)."""

    epoch: int
    alive: bool
    data: dict[str, Any]


def run_owner(directory: Path) -> RunOwner | None:
    """The trail's current owner and whether its process still holds its lease, or
    None when no run ever claimed it. Read-only (a shared lock on the trail lock
    file, so a claim in progress is seen whole)."""
    directory = Path(directory)
    try:
        guard = os.open(directory / ".lock", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(guard, fcntl.LOCK_SH)
        current = _read_epoch(directory)
        if current is None:
            return None
        epoch = int(current["epoch"])
        return RunOwner(epoch, _lease_held(directory, epoch), current)
    finally:
        os.close(guard)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    bad_seq: int | None = None
    reason: str = ""
    head: str = ""

    def line(self) -> str:
        if self.ok:
            return f"ok: {self.records} records (head {self.head[:16]})"
        return f"FAILED at seq {self.bad_seq}: {self.reason}"


_REQUIRED = frozenset({"seq", "ts", "kind", "data", "prev", "hash"})
_DECODER = json.JSONDecoder()


def verify_lines(
    lines: list[bytes],
    artifact_bytes: Any,
    *,
    hashes: list[str] | None = None,
    collect: tuple[frozenset[str], list[dict[str, Any]]] | None = None,
) -> VerifyResult:
    """Checks a trail given its raw lines and a function returning an artifact's bytes
    (or None when missing). Shared by the local and remote verifiers.

    ``hashes`` (when given) receives every record's hash in seq order; ``collect``
    ``(kinds, out)`` receives the parsed records of those kinds (the approval and
    checkpoint verifier's input), so the trail is parsed once.

    The hashed bytes of a line as the trail writes it are the line without its
    ``,"hash":"…"`` member (the canonical form sorts ``hash`` right after ``data``),
    so a well-formed line is checked without re-serializing it; any other line is
    checked on its canonical form.
    """
    prev = GENESIS
    count = 0
    raw_decode = _DECODER.raw_decode
    sha256 = hashlib.sha256
    kinds, out = collect if collect is not None else (frozenset(), [])
    keep = hashes.append if hashes is not None else None
    for index, raw in enumerate(lines):
        if not raw or raw.isspace():
            continue
        try:
            text = raw.decode()
            try:
                rec, end = raw_decode(text)
            except json.JSONDecodeError:
                end = -1
            if end != len(text):
                rec = json.loads(text)  # surrounding space or a bad line: json decides
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return VerifyResult(False, count, index, f"line {index + 1} is not valid JSON ({exc})")
        if not isinstance(rec, dict) or not rec.keys() >= _REQUIRED:
            return VerifyResult(False, count, index, f"line {index + 1} is missing required fields")
        seq = rec["seq"]
        if seq != count:
            return VerifyResult(False, count, count, f"gap: expected seq {count}, found seq {seq}")
        if rec["prev"] != prev:
            return VerifyResult(
                False, count, seq, "broken link: prev does not match the previous record's hash"
            )
        digest = rec["hash"]
        marker = b',"hash":"' + str(digest).encode() + b'"'
        at = raw.find(marker)
        fast = at >= 0 and sha256(raw[:at] + raw[at + len(marker) :]).hexdigest() == digest
        if not fast and record_hash(rec) != digest:
            return VerifyResult(False, count, seq, "hash mismatch: the record was altered")
        kind = rec["kind"]
        if kind == "artifact":
            art = rec["data"].get("sha256")
            if art:
                content = artifact_bytes(art)
                if content is None:
                    return VerifyResult(False, count, seq, f"missing artifact {art}")
                if sha256(content).hexdigest() != art:
                    return VerifyResult(False, count, seq, f"altered artifact {art}")
        if kind in kinds:
            out.append(rec)
        if keep is not None:
            keep(digest)
        prev = digest
        count += 1
    if count == 0:
        return VerifyResult(False, 0, 0, "empty trail")
    return VerifyResult(True, count, head=prev)


def verify_dir(directory: Path) -> VerifyResult:
    """Verifies an incident directory offline: hashes, links, sequence, artifacts."""
    path = Path(directory) / TRAIL_FILE
    if not path.exists():
        return VerifyResult(False, 0, 0, f"no {TRAIL_FILE} in {directory}")

    def artifact(digest: str) -> bytes | None:
        p = Path(directory) / ARTIFACTS / digest
        return p.read_bytes() if p.is_file() else None

    return verify_lines(path.read_bytes().split(b"\n"), artifact)
