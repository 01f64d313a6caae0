"""Evidence trail: append and verify rates, beside baselines measured in the same run.

Append: ``Trail.append`` (redaction, flock, hash chain, fsync) against the floor of
writing the same JSON line to a file with fsync.

Verify: ``mcp-ir verify``'s full check (``runbook.evidence_verify``: chain,
artifacts, Ed25519 checkpoints every 100 records and at every gate, and every
SSH-signed approval re-checked against the keys snapshot) on a trail of
``--verify-records`` records with ``--gates`` two-person gates (two approvals each,
signed with ``ssh-keygen -Y sign`` by two sandbox people), against the floor of one
SHA-256 per record line (the least any chain check does). The verify trail's bulk
records are written in the trail's exact format without a per-record fsync (the
fsync'd append is what the append part measures).

Prints ONE JSON object last: ``{"bench": "evidence", "append_per_s", "append_floor_per_s",
"append_ratio", "verify_records_per_s", "verify_sha256_floor_per_s", "verify_ratio",
"signed_decisions", "checkpoints"}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.checkpoints import CHECKPOINT_FILE, Checkpointer, EngineKey  # noqa: E402
from core.trail import GENESIS, TRAIL_FILE, Trail, record_hash, utcnow  # noqa: E402
from runbook import decisions  # noqa: E402
from runbook.approvals import cli_signer  # noqa: E402
from runbook.evidence_verify import verify_incident_dir  # noqa: E402
from runbook.playbook import Approval, StepSpec  # noqa: E402
from runbook.settings import Settings  # noqa: E402
from sandbox.keys import person_key  # noqa: E402
from sandbox.site import offline_target, write_inventory  # noqa: E402

INCIDENT = "INC-bench-0002-signed"


def payload(i: int) -> dict[str, object]:
    return {"step": "stop_stack", "i": i, "container": f"proj-mcp-proxy-{i}", "elapsed_s": 0.123}


class BulkTrail:
    """Writes records exactly as ``Trail.append`` does (canonical JSON, hash chain),
    buffered; reports each to the checkpointer as the run's observer would."""

    def __init__(self, trail: Trail, checkpointer: Checkpointer) -> None:
        self.trail = trail
        self.cp = checkpointer
        self.fh = open(trail.path, "a", encoding="utf-8")  # noqa: SIM115
        self.seq, self.prev = -1, GENESIS

    def append(self, kind: str, step: str | None, data: dict[str, Any]) -> None:
        from core.trail import Record

        self.seq += 1
        rec = {"seq": self.seq, "ts": utcnow(), "kind": kind, "step": step, "data": data}
        rec["prev"] = self.prev
        rec["hash"] = record_hash(rec)
        self.prev = rec["hash"]
        self.fh.write(
            json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
        )
        self.fh.flush()
        self.cp.on_record(Record.from_dict(rec))

    def close(self) -> None:
        self.fh.close()
        self.cp.finish((self.seq, self.prev))


def build_signed_trail(root: Path, records: int, gates: int) -> tuple[Path, str, int, int]:
    """The signed, checkpointed trail: (directory, engine public key, signed
    decisions, records)."""
    target = offline_target("bench", root / "data")
    inventory_path = write_inventory(root / "site" / "inventory.yaml", {"bench": target})
    settings = Settings(config_path=inventory_path, evidence_dir=root / "evidence")
    inv = settings.inventory()
    assert inv.engine is not None and inv.engine.checkpoint_key_file is not None
    trail = Trail.open(settings.evidence_dir, INCIDENT)
    engine = EngineKey.load(inv.engine.checkpoint_key_file, inv.engine.checkpoint_public_key)
    bulk = BulkTrail(trail, Checkpointer(trail.dir, engine, every_records=100, every_s=3600))
    bulk.append(
        "incident.opened",
        None,
        {"incident_id": INCIDENT, "initiator": "alice", **decisions.opening(trail, inv)},
    )
    every = max(1, records // (gates + 1))
    signed = 0
    while bulk.seq < records - 2:
        i = bulk.seq + 1
        if i % every == 0 and signed < 2 * gates:
            step = f"gate_{i}"
            plan = hashlib.sha256(step.encode()).hexdigest()
            spec = StepSpec(step, Approval(2, "oncall", 900), 60.0, "abort", False)
            bulk.append("gate.opened", step, {"plan_hash": plan, "group": "oncall", "required": 2})
            for who in ("bob", "carol"):
                proof = cli_signer(
                    settings,
                    incident_id=INCIDENT,
                    step=step,
                    approver=who,
                    decision="approve",
                    key=str(person_key(inventory_path.parent / "keys", who)),
                )(plan)
                ref = decisions.accept(
                    trail,
                    inv,
                    spec,
                    approver=who,
                    decision="approve",
                    plan_hash=plan,
                    proof_text=proof,
                )
                bulk.append("approval.accepted", step, {"approver": who, "plan_hash": plan, **ref})
                signed += 1
            continue
        bulk.append("step.succeeded", "stop_stack", payload(i))
    bulk.append("run.ended", None, {"status": "succeeded"})
    bulk.close()
    return trail.dir, inv.engine.checkpoint_public_key, signed, bulk.seq + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="records appended (fsync'd)")
    parser.add_argument("--verify-records", type=int, default=50_000)
    parser.add_argument(
        "--gates", type=int, default=10, help="two-person gates in the verify trail"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        floor_path = Path(tmp) / "floor.jsonl"
        started = time.perf_counter()
        with open(floor_path, "a", encoding="utf-8") as fh:
            for i in range(args.records):
                fh.write(json.dumps(payload(i), sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        floor_append = time.perf_counter() - started

        trail = Trail.open(Path(tmp), "INC-bench-0001")
        started = time.perf_counter()
        for i in range(args.records):
            trail.append("step.succeeded", "stop_stack", payload(i))
        append = time.perf_counter() - started

        directory, engine_key, signed, total = build_signed_trail(
            Path(tmp) / "signed", args.verify_records, args.gates
        )
        lines = (directory / TRAIL_FILE).read_bytes().split(b"\n")
        started = time.perf_counter()
        for line in lines:
            if line:
                hashlib.sha256(line).hexdigest()
        floor_verify = time.perf_counter() - started
        started = time.perf_counter()
        report = verify_incident_dir(directory, engine_key=engine_key)
        verify = time.perf_counter() - started
        assert report.ok, report.lines()
        assert report.chain.records == total == args.verify_records
        assert report.decisions == signed == 2 * args.gates
        assert report.last_checkpoint is not None and report.last_checkpoint.run_ended
        checkpoints = len((directory / CHECKPOINT_FILE).read_bytes().splitlines())
    out = {
        "bench": "evidence",
        "records": args.records,
        "append_per_s": round(args.records / append, 1),
        "append_floor_per_s": round(args.records / floor_append, 1),
        "append_ratio": round(append / floor_append, 2),
        "verify_records": args.verify_records,
        "signed_decisions": signed,
        "checkpoints": checkpoints,
        "verify_records_per_s": round(args.verify_records / verify, 1),
        "verify_sha256_floor_per_s": round(args.verify_records / max(floor_verify, 1e-9), 1),
        "verify_ratio": round(verify / max(floor_verify, 1e-9), 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
