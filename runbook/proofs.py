"""What makes a gate decision count: a statement and the signature that proves it.

A decision is the statement ``{incident, step, plan_hash, decision, approver, time,
nonce, channel}`` (``decision`` is ``approve``, ``reject`` or ``record``; a record
also carries its ``fields``; a Slack click carries the verified request's
``slack`` evidence: team, user, action time and the request's SHA-256), signed:

- ``cli``: by the approver's own SSH key, one of ``people.<name>.ssh_keys``;
- ``slack``: by the receiving service's key (``slack.receiver_public_key``), after it
  verified Slack's request signature; the Slack user must be the approver's
  ``slack_user_id``;
- ``ui``: nothing is signed (a Prefect UI/API RunInput): counts only on gates whose
  ``channels`` list ``ui``.

The proof document ``{"channel", "statement", "signature"}`` is stored as an
artifact (content-addressed, never rewritten by redaction) and the decision record
references it; the people's public keys are snapshotted the same way when the
incident opens (:func:`snapshot`), so the trail alone proves who decided which plan.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core.errors import ApprovalRefused
from runbook.signing import canonical_json, fingerprint, verify

PROOF_MEDIA = "application/vnd.mcp-ir.proof"
KEYS_MEDIA = "application/vnd.mcp-ir.keys"
CHANNELS = ("cli", "slack", "ui")
DEFAULT_CHANNELS = ("cli", "slack")
DECISIONS = ("approve", "reject", "record")
MAX_AGE = timedelta(minutes=15)
MAX_SKEW = timedelta(minutes=2)


@dataclass(frozen=True)
class KeyRing:
    """Whose keys prove what: people (SSH keys, Slack user id), the Slack receiver's
    key and the engine's checkpoint key."""

    people: dict[str, dict[str, Any]] = field(default_factory=dict)
    slack_receiver: str | None = None
    engine: str | None = None

    @classmethod
    def from_inventory(cls, inventory: Any) -> KeyRing:
        people = {
            name: {"ssh_keys": list(p.ssh_keys), "slack_user_id": p.slack_user_id}
            for name, p in inventory.people.items()
        }
        from notifications.plugins import config_of

        slack_cfg = config_of(inventory, "slack")
        slack = slack_cfg.receiver_public_key if slack_cfg else None
        engine = inventory.engine.checkpoint_public_key if inventory.engine else None
        return cls(people, slack, engine)

    def document(self) -> dict[str, Any]:
        return {
            "version": 1,
            "people": self.people,
            "slack_receiver": self.slack_receiver,
            "engine": self.engine,
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> KeyRing:
        return cls(dict(doc.get("people") or {}), doc.get("slack_receiver"), doc.get("engine"))

    def owner_of(self, fp: str) -> str | None:
        for name, person in self.people.items():
            if any(fingerprint(k) == fp for k in person.get("ssh_keys", [])):
                return name
        return None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def make_statement(
    *,
    incident: str,
    step: str,
    plan_hash: str,
    decision: str,
    approver: str,
    channel: str,
    fields: dict[str, str] | None = None,
    slack: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A fresh statement (its own time and a random nonce)."""
    stmt: dict[str, Any] = {
        "incident": incident,
        "step": step,
        "plan_hash": plan_hash,
        "decision": decision,
        "approver": approver,
        "time": now_iso(),
        "nonce": secrets.token_hex(16),
        "channel": channel,
    }
    if fields is not None:
        stmt["fields"] = dict(fields)
    if slack is not None:
        stmt["slack"] = dict(slack)
    return stmt


def proof_document(statement: dict[str, Any], signature: str) -> dict[str, Any]:
    return {"channel": statement["channel"], "statement": statement, "signature": signature}


def encode(proof: dict[str, Any]) -> bytes:
    return canonical_json(proof)


def decode(raw: str | bytes) -> dict[str, Any]:
    """Raises ApprovalRefused when ``raw`` is not a proof document."""
    try:
        doc = json.loads(raw)
    except (ValueError, TypeError):
        raise ApprovalRefused("the proof is not valid JSON") from None
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("statement"), dict)
        or not isinstance(doc.get("signature"), str)
    ):
        raise ApprovalRefused("the proof must hold a 'statement' object and a 'signature'")
    return doc


@dataclass(frozen=True)
class Proven:
    """A decision whose signature verified."""

    approver: str
    decision: str
    step: str
    plan_hash: str
    channel: str
    key_fingerprint: str
    nonce: str
    time: str
    statement: dict[str, Any]


def check(proof: dict[str, Any], keys: KeyRing, **expect: Any) -> Proven:
    """Verifies a proof document and that its statement says what is ``expect``ed
    (any of incident, step, plan_hash, decision, approver).

    Raises:
        ApprovalRefused: why it does not prove the decision (names the key's owner
            when a person signed under another person's name).
    """
    stmt = proof["statement"]
    channel = proof.get("channel")
    missing = [
        k
        for k in ("incident", "step", "plan_hash", "decision", "approver", "time", "nonce")
        if not isinstance(stmt.get(k), str)
    ]
    if missing:
        raise ApprovalRefused(f"the signed statement lacks {missing[0]!r}")
    if channel not in ("cli", "slack") or stmt.get("channel") != channel:
        raise ApprovalRefused(f"a signed proof must come from 'cli' or 'slack', not {channel!r}")
    for name, want in expect.items():
        if want is not None and stmt.get(name) != want:
            raise ApprovalRefused(
                f"the signed statement is for {name} {stmt.get(name)!r}, not {want!r}"
            )
    approver = stmt["approver"]
    person = keys.people.get(approver)
    if person is None:
        raise ApprovalRefused(f"{approver!r} is not a person in the inventory")
    message = canonical_json(stmt)
    if channel == "cli":
        allowed = list(person.get("ssh_keys") or [])
        if not allowed:
            raise ApprovalRefused(f"{approver!r} has no ssh_keys in the inventory")
        try:
            ok = verify(message, proof["signature"], allowed)
        except ApprovalRefused as exc:
            raise ApprovalRefused(_whose(exc.detail, approver, keys)) from None
    else:
        if not keys.slack_receiver:
            raise ApprovalRefused("no slack.receiver_public_key to check a Slack decision against")
        try:
            ok = verify(message, proof["signature"], [keys.slack_receiver])
        except ApprovalRefused as exc:
            raise ApprovalRefused(f"the Slack receiver's countersignature: {exc.detail}") from None
        evidence = stmt.get("slack") or {}
        want_user = person.get("slack_user_id")
        if not want_user or evidence.get("user") != want_user:
            raise ApprovalRefused(
                f"the Slack user {evidence.get('user')!r} is not {approver!r}'s slack_user_id"
            )
    return Proven(
        approver=approver,
        decision=stmt["decision"],
        step=stmt["step"],
        plan_hash=stmt["plan_hash"],
        channel=channel,
        key_fingerprint=ok.fingerprint,
        nonce=stmt["nonce"],
        time=stmt["time"],
        statement=stmt,
    )


def _whose(detail: str, approver: str, keys: KeyRing) -> str:
    """Names the owner of the key that signed, when it is somebody else."""
    if "signed with key " in detail:
        fp = detail.split("signed with key ", 1)[1].split(",", 1)[0]
        owner = keys.owner_of(fp)
        if owner and owner != approver:
            return f"signed with {owner}'s key {fp}, not one of {approver!r}'s keys"
        return f"signed with key {fp}, which is not one of {approver!r}'s keys"
    return detail


def check_fresh(proven: Proven, seen_nonces: set[str], now: datetime | None = None) -> None:
    """A live decision: signed recently, not in the future, its nonce never used.

    Raises:
        ApprovalRefused: a replayed or stale statement.
    """
    now = now or datetime.now(UTC)
    try:
        at = datetime.fromisoformat(proven.time.replace("Z", "+00:00"))
    except ValueError:
        raise ApprovalRefused(f"the statement's time {proven.time!r} is not ISO-8601") from None
    if at.tzinfo is None:
        raise ApprovalRefused("the statement's time has no time zone")
    if at > now + MAX_SKEW:
        raise ApprovalRefused(f"the statement is signed in the future ({proven.time})")
    if now - at > MAX_AGE:
        raise ApprovalRefused(
            f"the statement was signed at {proven.time}, more than {int(MAX_AGE.total_seconds() // 60)} "
            "minutes ago: decide again"
        )
    if proven.nonce in seen_nonces:
        raise ApprovalRefused("this signed statement was already used (replay)")


EXPECTED_DECISION = {
    "approval.accepted": "approve",
    "gate.rejected": "reject",
    "manual.recorded": "record",
}
_RECORD_OWN_FIELDS = frozenset({"by", "source", "plan_hash", "proof"})


def check_record(
    kind: str,
    step: str | None,
    data: dict[str, Any],
    *,
    incident: str,
    keys: KeyRing,
    read_artifact: Any,
) -> Proven | None:
    """Re-checks the proof a decision record references. Returns None for an unsigned
    Prefect UI/API vote (``proof.channel == "ui"``; whether that counts depends on
    the gate's channels).

    Raises:
        ApprovalRefused: no proof, a missing proof artifact, or a proof that does not
            verify or does not say what the record says.
    """
    ref = data.get("proof")
    if not isinstance(ref, dict):
        raise ApprovalRefused("unsigned: the record carries no proof")
    if ref.get("channel") == "ui":
        return None
    digest = ref.get("sha256")
    raw = read_artifact(digest) if isinstance(digest, str) else None
    if raw is None:
        raise ApprovalRefused(f"its proof artifact {str(digest)[:16]} is missing")
    approver = data.get("by") if kind == "manual.recorded" else data.get("approver")
    proven = check(
        decode(raw),
        keys,
        incident=incident,
        step=step,
        approver=approver,
        decision=EXPECTED_DECISION[kind],
        plan_hash=data.get("plan_hash"),
    )
    if kind == "manual.recorded":
        signed = proven.statement.get("fields") or {}
        extra = sorted(set(data) - _RECORD_OWN_FIELDS - set(signed))
        changed = sorted(k for k, v in signed.items() if data.get(k) != v)
        if extra or changed:
            raise ApprovalRefused(
                f"the record's field {(extra or changed)[0]!r} is not what {approver} signed"
            )
    return proven


def make_prover(
    *, incident: str, keys: KeyRing, read_artifact: Any, channels: list[str] | tuple[str, ...]
) -> Any:
    """A ``gates.Prover``: None when a decision record counts on a gate with these
    ``channels``, else why it does not."""

    def prove(record: Any) -> str | None:
        try:
            proven = check_record(
                record.kind,
                record.step,
                record.data,
                incident=incident,
                keys=keys,
                read_artifact=read_artifact,
            )
        except ApprovalRefused as exc:
            return exc.detail
        channel = "ui" if proven is None else proven.channel
        if channel not in channels:
            return (
                f"channel {channel!r} is not allowed at this gate (channels: {', '.join(channels)})"
            )
        return None

    return prove


def read_artifact_from(directory: Any) -> Any:
    """``read_artifact(digest) -> bytes | None`` for an incident directory."""
    import hashlib
    from pathlib import Path

    from core.trail import ARTIFACTS

    def read(digest: str) -> bytes | None:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            return None
        path = Path(directory) / ARTIFACTS / digest
        if not path.is_file():
            return None
        content = path.read_bytes()
        return content if hashlib.sha256(content).hexdigest() == digest else None

    return read
