"""What of a local trail may go to the WORM copy: only what a valid checkpoint
covers, and only once the chain, the checkpoints and every signed decision verify.

An incident that ran while S3 was down, or without the WORM copy, is uploaded
later from the local directory, where anyone with write access could have rewritten
it. So before anything is uploaded the local evidence is verified with the
inventory's engine key (:mod:`runbook.evidence_verify`); a trail that fails is not
uploaded at all (the reason is shown by ``mcp-ir status``), and records after the
last checkpoint wait for the next one. A trail that is not checkpointed (older, or
an engine without a key) is uploaded as it is, marked so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from core.checkpoints import read_checkpoints
from runbook import proofs
from runbook.evidence_verify import verify_evidence


@dataclass(frozen=True)
class Coverage:
    """``upto``: the last seq that may be uploaded (-1: none); ``checkpoints``: the
    valid checkpoint lines (each uploaded as its own object); ``refused``: why the
    local trail may not be uploaded."""

    upto: int
    checkpointed: bool
    checkpoints: list[bytes] = field(default_factory=list)
    refused: str = ""
    artifacts: set[str] = field(default_factory=set)


def checkpoint_key(raw: bytes) -> str:
    """``checkpoints/<seq>-<digest>.json``: one object per checkpoint line."""
    seq = int(json.loads(raw)["seq"])
    return f"checkpoints/{seq:010d}-{hashlib.sha256(raw).hexdigest()[:16]}.json"


def referenced_artifacts(raw: bytes) -> list[str]:
    """Artifacts a record needs to be verified: the artifact itself, a decision's
    proof, the keys snapshot."""
    rec = json.loads(raw)
    data = rec.get("data") or {}
    out = []
    if rec.get("kind") == "artifact" and isinstance(data.get("sha256"), str):
        out.append(data["sha256"])
    for name in ("proof", "keys"):
        ref = data.get(name)
        if isinstance(ref, dict) and isinstance(ref.get("sha256"), str):
            out.append(ref["sha256"])
    return out


def coverage(incident_dir: Path, lines: dict[int, bytes], engine_key: str | None) -> Coverage:
    """Which records of the local trail (``lines`` by seq) may be uploaded."""
    if not lines:
        return Coverage(-1, False)
    ordered = [lines[s] for s in sorted(lines)]
    checkpoints = read_checkpoints(incident_dir)
    report = verify_evidence(
        ordered,
        proofs.read_artifact_from(incident_dir),
        checkpoints,
        engine_key=engine_key,
        incident=Path(incident_dir).name,
    )
    if not report.ok:
        return Coverage(
            -1,
            report.checkpointed,
            refused=report.problems[0] if report.problems else report.chain.line(),
        )
    if not report.checkpointed:
        return Coverage(max(lines), False)
    best = report.last_checkpoint
    assert best is not None
    valid = [
        raw
        for raw in checkpoints or []
        if (cp := json.loads(raw))["seq"] <= best.seq and report.hashes[cp["seq"]] == cp["hash"]
    ]
    return Coverage(best.seq, True, valid)
