"""``mcp-ir verify``: everything the evidence alone can prove, checked offline.

1. The hash chain (``core.trail.verify_lines``): every record, link and artifact.
2. The checkpoints (``core.checkpoints``): when ``incident.opened`` says the trail
   is checkpointed, the checkpoint file must exist, every checkpoint must be signed
   by that key and match the chain at its seq. A deleted tail (the trail ends
   before a signed head) and a record edited with the chain re-hashed after it (a
   signed head no longer matches) both fail, named.
3. Every decision (``approval.accepted``, ``gate.rejected``, ``manual.recorded``):
   its proof is re-checked against the public keys snapshotted when the incident
   opened; a bad one fails, naming its seq.

A trail from before checkpoints and signed approvals still verifies; it is
reported as "not checkpointed".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.checkpoints import CHECKPOINT_FILE, Checkpoint, load_public_key, read_checkpoints
from core.errors import ApprovalRefused, ConfigError
from core.trail import TRAIL_FILE, VerifyResult, verify_lines
from runbook import proofs

_COLLECT = frozenset({"incident.opened", "gate.opened", *proofs.EXPECTED_DECISION})


@dataclass
class EvidenceReport:
    """The outcome: ``problems`` fail verification (each names a seq or the file),
    ``notes`` say what is, and is not, proven."""

    chain: VerifyResult
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checkpointed: bool = False
    last_checkpoint: Checkpoint | None = None
    decisions: int = 0
    hashes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.problems

    def lines(self) -> list[str]:
        out = [self.chain.line()]
        out += self.notes
        if self.problems:
            out.append(f"FAILED: {len(self.problems)} problem(s):")
            out += [f"  {p}" for p in self.problems]
        return out


def verify_evidence(
    lines: list[bytes],
    artifact: Any,
    checkpoint_lines: list[bytes] | None,
    *,
    engine_key: str | None = None,
    incident: str | None = None,
) -> EvidenceReport:
    """Verifies one incident's trail lines, artifacts (``artifact(digest)``) and
    checkpoint lines (None when there is no checkpoint file). ``engine_key`` is the
    inventory's engine public key, the trust anchor checkpoints are checked against
    (without it, the key recorded in the trail is used and the report says so)."""
    hashes: list[str] = []
    collected: list[dict[str, Any]] = []
    chain = verify_lines(lines, artifact, hashes=hashes, collect=(_COLLECT, collected))
    report = EvidenceReport(chain, hashes=hashes)
    if not chain.ok:
        report.problems.append(f"seq {chain.bad_seq}: {chain.reason}")
    opened = collected[0] if collected and collected[0]["kind"] == "incident.opened" else None
    if opened is None or opened["seq"] != 0:
        report.notes.append("not checkpointed: the trail does not start with incident.opened")
        return report
    data = opened["data"]
    incident = incident or str(data.get("incident_id", ""))
    keys = _keys(opened, artifact, report)
    _checkpoints(report, data, keys, checkpoint_lines, engine_key, incident)
    if keys is not None:
        _decisions(report, collected[1:], keys, artifact, incident)
    elif any(r["kind"] in proofs.EXPECTED_DECISION for r in collected):
        report.notes.append(
            "decisions: not signed (this trail predates signed approvals; who decided is "
            "only what the trail says)"
        )
    return report


def _keys(opened: dict[str, Any], artifact: Any, report: EvidenceReport) -> proofs.KeyRing | None:
    ref = opened["data"].get("keys")
    if not isinstance(ref, dict):
        return None
    raw = artifact(ref.get("sha256", "")) if isinstance(ref.get("sha256"), str) else None
    if raw is None:
        report.problems.append("seq 0: the snapshot of the approvers' keys is missing")
        return proofs.KeyRing()
    import json

    try:
        return proofs.KeyRing.from_document(json.loads(raw))
    except (ValueError, AttributeError):
        report.problems.append("seq 0: the snapshot of the approvers' keys is not valid")
        return proofs.KeyRing()


def _checkpoints(
    report: EvidenceReport,
    opened: dict[str, Any],
    keys: proofs.KeyRing | None,
    checkpoint_lines: list[bytes] | None,
    engine_key: str | None,
    incident: str,
) -> None:
    declared = opened.get("checkpoint")
    if not isinstance(declared, dict):
        report.notes.append(
            "not checkpointed: incident.opened declares no checkpoint key, so a deleted tail "
            "or a re-hashed chain cannot be detected from this trail alone"
        )
        return
    report.checkpointed = True
    fp = str(declared.get("key", ""))
    if checkpoint_lines is None:
        report.problems.append(
            f"{CHECKPOINT_FILE} is missing, but incident.opened (seq 0) says this trail is "
            f"checkpointed with key {fp}"
        )
        return
    public = keys.engine if keys else None
    if engine_key is not None:
        from core.checkpoints import key_fingerprint

        if key_fingerprint(engine_key) != fp:
            report.problems.append(
                f"seq 0: the trail's checkpoint key {fp} is not the inventory's engine key "
                f"{key_fingerprint(engine_key)}"
            )
            return
        public, anchor = engine_key, "the inventory's engine key"
    else:
        anchor = "the key recorded in the trail (compare it with your engine key)"
    if not public:
        report.problems.append("seq 0: the checkpoint key is not in the keys snapshot")
        return
    try:
        verifier = load_public_key(public)
    except ConfigError as exc:
        report.problems.append(f"seq 0: {exc.detail}")
        return
    last_seq = len(report.hashes) - 1
    matched = -1
    best: Checkpoint | None = None
    for index, raw in enumerate(checkpoint_lines, start=1):
        try:
            cp = Checkpoint.parse(raw)
        except ValueError as exc:
            report.problems.append(f"{CHECKPOINT_FILE} line {index}: not a checkpoint ({exc})")
            continue
        where = f"checkpoint of seq {cp.seq} ({CHECKPOINT_FILE} line {index}, {cp.time})"
        if cp.key != fp or not cp.signature_ok(verifier):
            report.problems.append(f"{where}: its signature does not verify with key {fp}")
            continue
        if cp.incident != incident:
            report.problems.append(f"{where}: it is for incident {cp.incident}")
            continue
        if cp.seq > last_seq:
            report.problems.append(
                f"seq {last_seq + 1}..{cp.seq}: the trail ends at seq {last_seq} but {where} "
                f"signed a head at seq {cp.seq}: the last {cp.seq - last_seq} record(s) were deleted"
            )
            continue
        if report.hashes[cp.seq] != cp.hash:
            report.problems.append(
                f"seq {matched + 1}..{cp.seq}: {where} signed hash {cp.hash[:16]} but the trail's "
                f"seq {cp.seq} is {report.hashes[cp.seq][:16]}: a record in that range was "
                "altered and the chain re-hashed"
            )
            continue
        matched = max(matched, cp.seq)
        if best is None or cp.seq > best.seq or (cp.seq == best.seq and cp.run_ended):
            best = cp
    report.last_checkpoint = best
    if best is None:
        if not report.problems:
            report.problems.append(f"{CHECKPOINT_FILE} holds no valid checkpoint")
        return
    report.notes.append(
        f"checkpointed: {len(checkpoint_lines)} checkpoint(s) by {fp}, checked against {anchor}; "
        f"last at seq {best.seq}" + (" (run ended)" if best.run_ended else "")
    )
    if best.seq < last_seq:
        report.notes.append(
            f"not covered: seq {best.seq + 1}..{last_seq} ({last_seq - best.seq} record(s) after the "
            "last checkpoint; nothing signed proves them)"
        )
    if not best.run_ended:
        report.notes.append(
            "the last checkpoint is not a run-end one: the run is going on or died, or the tail "
            "and its checkpoints were cut (only the WORM copy can tell)"
        )


def _decisions(
    report: EvidenceReport,
    records: list[dict[str, Any]],
    keys: proofs.KeyRing,
    artifact: Any,
    incident: str,
) -> None:
    channels: dict[str, list[str]] = {}
    ui = 0
    for rec in records:
        kind, step, data = rec["kind"], rec.get("step"), rec["data"]
        if kind == "gate.opened":
            channels[str(step)] = list(data.get("channels") or proofs.DEFAULT_CHANNELS)
            continue
        who = data.get("by") if kind == "manual.recorded" else data.get("approver")
        try:
            proven = proofs.check_record(
                kind, step, data, incident=incident, keys=keys, read_artifact=artifact
            )
        except ApprovalRefused as exc:
            report.problems.append(f"seq {rec['seq']}: {kind} by {who!r}: {exc.detail}")
            continue
        if proven is None:
            allowed = channels.get(str(step), list(proofs.DEFAULT_CHANNELS))
            if kind != "manual.recorded" and "ui" not in allowed:
                report.problems.append(
                    f"seq {rec['seq']}: {kind} by {who!r}: an unsigned Prefect UI vote on a gate "
                    f"whose channels are {', '.join(allowed)}"
                )
                continue
            ui += 1
            continue
        report.decisions += 1
    report.notes.append(
        f"decisions: {report.decisions} signed decision(s) verified against the keys "
        "snapshotted at incident open"
        + (
            f"; {ui} unsigned Prefect UI vote(s) (proven only by the Prefect server's SSO log)"
            if ui
            else ""
        )
    )


def verify_incident_dir(directory: Path, *, engine_key: str | None = None) -> EvidenceReport:
    """Verifies an incident's evidence directory offline."""
    directory = Path(directory)
    path = directory / TRAIL_FILE
    if not path.exists():
        return EvidenceReport(VerifyResult(False, 0, 0, f"no {TRAIL_FILE} in {directory}"))
    return verify_evidence(
        path.read_bytes().split(b"\n"),
        proofs.read_artifact_from(directory),
        read_checkpoints(directory),
        engine_key=engine_key,
        incident=directory.name,
    )
