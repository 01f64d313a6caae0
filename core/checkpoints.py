"""Signed checkpoints of a trail's head: what a hash chain alone cannot prove.

A hash chain shows that no record *inside* it changed, but not that its tail was not
cut off, nor that somebody did not edit a record and re-hash everything after it.
The engine therefore signs, with an Ed25519 key of its own, the head of the trail
``{incident, seq, hash, time, run_ended}`` at every gate, every N records or
minutes, and when the run ends, into ``checkpoints.jsonl`` beside ``trail.jsonl``
(as CloudTrail signs its digest files). The key's private half stays with the
engine (``engine.checkpoint_key_file``); the inventory holds its public key
(``engine.checkpoint_public_key``), and ``incident.opened`` records which key
signs the incident's checkpoints.

A checkpoint line: ``{"incident", "seq", "hash", "time", "run_ended", "key", "sig"}``
where ``key`` is the OpenSSH ``SHA256:`` fingerprint of the public key and ``sig``
the base64 Ed25519 signature over ``PREFIX + canonical JSON`` of the first five.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError, EvidenceError

CHECKPOINT_FILE = "checkpoints.jsonl"
PREFIX = b"mcp-ir-checkpoint-v1\n"
SIGNED_FIELDS = ("incident", "seq", "hash", "time", "run_ended")


def _canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_fingerprint(public_line: str) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint of an ``ssh-ed25519 AAAA…`` line."""
    parts = public_line.strip().split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise ConfigError("engine key: expected an 'ssh-ed25519 AAAA…' public key line")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise ConfigError("engine key: the public key's base64 part is not valid") from None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def load_public_key(public_line: str) -> Any:
    """An ``Ed25519PublicKey`` from an ``ssh-ed25519 AAAA…`` line.

    Raises:
        ConfigError: not an Ed25519 OpenSSH public key.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    key_fingerprint(public_line)
    try:
        key = load_ssh_public_key(" ".join(public_line.split()[:2]).encode())
    except (ValueError, TypeError):
        raise ConfigError("engine key: not a valid ssh-ed25519 public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("engine key: must be an Ed25519 key")
    return key


class EngineKey:
    """The engine's signing key, loaded from its configured file (OpenSSH or PKCS#8 PEM)."""

    def __init__(self, private: Any, public_line: str) -> None:
        self._private = private
        self.public_line = public_line
        self.fingerprint = key_fingerprint(public_line)

    @classmethod
    def load(cls, path: str | Path, expected_public: str | None = None) -> EngineKey:
        """Reads the key file; when the inventory names the public key, they must match.

        Raises:
            ConfigError: the file is missing, unreadable, not an unencrypted Ed25519
                key, or not the key whose public half the inventory lists.
        """
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            PublicFormat,
            load_pem_private_key,
            load_ssh_private_key,
        )

        file = Path(path)
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"engine.checkpoint_key_file: cannot read {file}: {exc.strerror}"
            ) from None
        try:
            if b"OPENSSH PRIVATE KEY" in raw:
                private = load_ssh_private_key(raw, password=None)
            else:
                private = load_pem_private_key(raw, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"engine.checkpoint_key_file: {file} is not an unencrypted private key ({exc})"
            ) from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(f"engine.checkpoint_key_file: {file} is not an Ed25519 key")
        public = private.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
        if expected_public is not None and " ".join(expected_public.split()[:2]) != public:
            raise ConfigError(
                f"engine.checkpoint_key_file: {file} is not the key of "
                f"engine.checkpoint_public_key ({key_fingerprint(expected_public)})"
            )
        return cls(private, public)

    def sign(self, body: dict[str, Any]) -> str:
        return base64.b64encode(self._private.sign(PREFIX + _canonical(body))).decode()


def generate_engine_key(path: Path) -> str:
    """Writes a new Ed25519 key (OpenSSH format, mode 0600) and returns its public line.
    Used by the demo and the tests; operators may use ``ssh-keygen -t ed25519`` too."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    return key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


@dataclass(frozen=True)
class Checkpoint:
    incident: str
    seq: int
    hash: str
    time: str
    run_ended: bool
    key: str
    sig: str

    def body(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in SIGNED_FIELDS}

    def line(self) -> bytes:
        return _canonical({**self.body(), "key": self.key, "sig": self.sig})

    @classmethod
    def parse(cls, raw: bytes) -> Checkpoint:
        """Raises ValueError when the line is not a checkpoint."""
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        try:
            cp = cls(
                str(d["incident"]),
                int(d["seq"]),
                str(d["hash"]),
                str(d["time"]),
                bool(d["run_ended"]),
                str(d["key"]),
                str(d["sig"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or bad field {exc}") from None
        return cp

    def signature_ok(self, public_key: Any) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            public_key.verify(base64.b64decode(self.sig), PREFIX + _canonical(self.body()))
        except (InvalidSignature, ValueError):
            return False
        return True


def read_checkpoints(incident_dir: Path) -> list[bytes] | None:
    """The checkpoint file's lines, or None when there is no checkpoint file."""
    path = Path(incident_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    return [line for line in path.read_bytes().split(b"\n") if line.strip()]


class Checkpointer:
    """Signs the trail head into ``checkpoints.jsonl``: at every gate record, every
    ``every_records`` records or ``every_s`` seconds (checked as records arrive),
    and at the end of the run (``finish``). A trail listener: it never raises."""

    GATE_KINDS = frozenset(
        {
            "gate.auto",
            "gate.opened",
            "gate.waiting",
            "gate.passed",
            "gate.rejected",
            "gate.timeout",
            "gate.escalated",
            "approval.accepted",
            "manual.waiting",
            "manual.recorded",
        }
    )

    def __init__(
        self, incident_dir: Path, key: EngineKey, *, every_records: int = 100, every_s: float = 60
    ) -> None:
        self.dir = Path(incident_dir)
        self.path = self.dir / CHECKPOINT_FILE
        self.key = key
        self.every_records = every_records
        self.every_s = every_s
        self._lock = threading.Lock()
        self._since = 0
        self._last_at = time.monotonic()
        self._last_seq = -1
        self._head: tuple[int, str] | None = None
        self.error: str = ""

    def on_record(self, record: Any) -> None:
        self._head = (record.seq, record.hash)
        self._since += 1
        due = (
            record.kind in self.GATE_KINDS
            or record.kind == "run.ended"
            or self._since >= self.every_records
            or time.monotonic() - self._last_at >= self.every_s
        )
        if due:
            self.checkpoint(record.seq, record.hash, run_ended=record.kind == "run.ended")

    def checkpoint(self, seq: int, digest: str, *, run_ended: bool = False) -> Checkpoint | None:
        """Signs and appends one checkpoint (fsynced). Errors are kept in ``error`` (the
        verifier reports the uncovered records) and never raised into the run."""
        from core.trail import utcnow

        with self._lock:
            if seq < self._last_seq or (seq == self._last_seq and not run_ended):
                return None
            body = {
                "incident": self.dir.name,
                "seq": seq,
                "hash": digest,
                "time": utcnow(),
                "run_ended": run_ended,
            }
            cp = Checkpoint(**body, key=self.key.fingerprint, sig=self.key.sign(body))
            try:
                with open(self.path, "ab") as fh:
                    fh.write(cp.line() + b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                self.error = f"checkpoint write failed: {exc.strerror}"
                return None
            self._since = 0
            self._last_at = time.monotonic()
            self._last_seq = seq
            return cp

    def finish(self, head: tuple[int, str] | None = None) -> Checkpoint | None:
        """The run-end checkpoint of the trail's current head."""
        head = head or self._head
        if head is None:
            return None
        return self.checkpoint(head[0], head[1], run_ended=True)


def head_of(trail_path: Path) -> tuple[int, str]:
    """(seq, hash) of a trail file's last record.

    Raises:
        EvidenceError: the trail is empty or its last line is not a record.
    """
    data = Path(trail_path).read_bytes().rstrip(b"\n")
    if not data:
        raise EvidenceError(f"{trail_path}: empty trail")
    last = json.loads(data.rsplit(b"\n", 1)[-1])
    return int(last["seq"]), str(last["hash"])
