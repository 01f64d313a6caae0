"""The flow's side of a decision: what it checks when a gate's RunInput arrives, and
how it re-counts decisions from the trail.

The flow never takes a RunInput's word for who decided. A decision counts when
its proof verifies against the inventory's keys as the flow reads it (see
:mod:`runbook.proofs`), the statement is fresh and unused, and the gate's
``channels`` allow where it came from; then the proof is stored as an artifact and
the decision record references it. Anything else is refused and recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import ApprovalRefused, ConfigError
from core.trail import Record, Trail
from runbook import proofs
from runbook.gates import GateState, Prover, gate_state


def channels_of(spec: Any) -> tuple[str, ...]:
    """The channels a step's decisions may come from (a manual-input step without a
    gate takes the defaults)."""
    return tuple(spec.approval.channels) if spec.approval else proofs.DEFAULT_CHANNELS


def keyring(inventory: Any) -> proofs.KeyRing:
    return proofs.KeyRing.from_inventory(inventory)


def prover(trail: Trail, inventory: Any, spec: Any) -> Prover:
    """Checks decision records against the inventory's keys (not the trail's own
    snapshot: the trail is what an attacker with write access could rewrite)."""
    return proofs.make_prover(
        incident=trail.incident_id,
        keys=keyring(inventory),
        read_artifact=proofs.read_artifact_from(trail.dir),
        channels=channels_of(spec),
    )


def proven_state(trail: Trail, inventory: Any, spec: Any, target: str) -> GateState:
    """The gate's state counting only proven decisions, with the gate's rules taken
    from the playbook and the inventory (never from records in the trail)."""
    state = gate_state(trail.records(), spec.key, prove=prover(trail, inventory, spec))
    gate = spec.approval
    if gate is not None:
        state.members = inventory.group_members(target, gate.group)
        state.group = gate.group
        state.required = gate.required
        state.allow_initiator = gate.allow_initiator
        state.channels = list(gate.channels)
    return state


def report_unproven(trail: Trail, step: str, state: GateState) -> list[tuple[int, str]]:
    """Appends one ``approval.unproven`` per decision record that does not count, once
    per record; returns the new ones."""
    done = {
        r.data.get("seq")
        for r in trail.records()
        if r.kind == "approval.unproven" and r.step == step
    }
    new = [(seq, why) for seq, why in state.unproven if seq not in done]
    for seq, why in new:
        trail.append("approval.unproven", step, {"seq": seq, "reason": why, "counted": False})
    return new


def used_nonces(records: list[Record]) -> set[str]:
    return {
        str(r.data["nonce"])
        for r in records
        if r.kind in ("approval.accepted", "gate.rejected", "manual.recorded", "approval.refused")
        and isinstance(r.data.get("nonce"), str)
    }


def accept(
    trail: Trail,
    inventory: Any,
    spec: Any,
    *,
    approver: str,
    decision: str,
    plan_hash: str,
    proof_text: str,
) -> dict[str, Any]:
    """Checks a live decision's proof; stores it; returns the ``proof`` reference (and
    nonce) for the decision record.

    Raises:
        ApprovalRefused: unsigned where ``ui`` is not allowed, a bad signature, a key
            of another person, a non-person, a stale or replayed statement.
    """
    channels = channels_of(spec)
    if not proof_text:
        if "ui" not in channels:
            raise ApprovalRefused(
                f"unsigned decision (Prefect UI/API) naming {approver!r}: this gate takes "
                f"{', '.join(channels)} only; sign it with `mcp-ir {_verb(decision)}`"
            )
        return {"proof": {"channel": "ui"}}
    doc = proofs.decode(proof_text)
    proven = proofs.check(
        doc,
        keyring(inventory),
        incident=trail.incident_id,
        step=spec.key,
        approver=approver,
        decision=decision,
        plan_hash=plan_hash,
    )
    if proven.channel not in channels:
        raise ApprovalRefused(
            f"channel {proven.channel!r} is not allowed at this gate (channels: {', '.join(channels)})"
        )
    proofs.check_fresh(proven, used_nonces(trail.records()))
    # The proof is stored unredacted (redaction would break the signature): the signed
    # statement must hold nothing secret-shaped (the signature itself is public).
    statement = proofs.canonical_json(doc["statement"]).decode()
    if trail.redactor.text(statement) != statement:
        raise ApprovalRefused("the signed statement holds a value that looks like a secret")
    body = proofs.encode(doc)
    digest, _ = trail.store_artifact(body, media_type=proofs.PROOF_MEDIA)
    return {
        "proof": {"sha256": digest, "channel": proven.channel, "key": proven.key_fingerprint},
        "nonce": proven.nonce,
    }


def _verb(decision: str) -> str:
    return {"approve": "approve", "reject": "reject", "record": "record"}.get(decision, decision)


def opening(trail: Trail, inventory: Any) -> dict[str, Any]:
    """What ``incident.opened`` adds: the snapshot of the keys that prove decisions
    (an artifact) and whether, and with which key, the trail is checkpointed."""
    keys = keyring(inventory)
    body = proofs.canonical_json(keys.document())
    digest, _ = trail.store_artifact(body, media_type=proofs.KEYS_MEDIA)
    out: dict[str, Any] = {"keys": {"sha256": digest, "people": sorted(keys.people)}}
    if inventory.engine is not None:
        from core.checkpoints import key_fingerprint

        out["checkpoint"] = {
            "algorithm": "ed25519",
            "key": key_fingerprint(inventory.engine.checkpoint_public_key),
        }
    else:
        out["checkpoint"] = None
    return out


def engine_key(inventory: Any) -> Any:
    """The engine's checkpoint key (``$MCP_IR_ENGINE_KEY`` or the configured file), or
    None when the inventory has no ``engine`` section.

    Raises:
        ConfigError: configured but unreadable, or not the configured public key.
    """
    import os

    from core.checkpoints import EngineKey

    cfg = inventory.engine
    if cfg is None:
        return None
    path = os.environ.get("MCP_IR_ENGINE_KEY") or cfg.checkpoint_key_file
    if not path:
        raise ConfigError(
            "engine.checkpoint_key_file: not set (nor $MCP_IR_ENGINE_KEY): a process that "
            "runs incidents needs the engine key to checkpoint the trail"
        )
    return EngineKey.load(Path(path), cfg.checkpoint_public_key)


def check_live_record(trail: Trail, inventory: Any, step: str, record: dict[str, Any]) -> None:
    """A manual record is checked exactly as a later replay will check it (the signed
    fields must be the values kept, after the step's validation).

    Raises:
        ApprovalRefused: what the replay would say.
    """
    if (record.get("proof") or {}).get("channel") == "ui":
        return
    proofs.check_record(
        "manual.recorded",
        step,
        record,
        incident=trail.incident_id,
        keys=keyring(inventory),
        read_artifact=proofs.read_artifact_from(trail.dir),
    )
