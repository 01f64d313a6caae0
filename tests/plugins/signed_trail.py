"""A signed, checkpointed incident trail written by the same functions the runner
calls (no Prefect): the sandbox people's SSH keys and the engine key from
``sandbox.keys`` (as the demo makes them), signatures by ``ssh-keygen -Y sign``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.checkpoints import Checkpointer, EngineKey
from core.trail import GENESIS, Trail, record_hash
from runbook import decisions
from runbook.approvals import cli_signer
from runbook.playbook import Approval, StepSpec
from runbook.settings import Settings
from sandbox.keys import person_key
from sandbox.site import offline_target, write_inventory

INC = "INC-20261203-0001-sig"
STEP = "archive_tunnel"
PLAN = "a" * 64
GATE = Approval(required=2, group="oncall", timeout_s=900)
SPEC = StepSpec(STEP, GATE, 60.0, "abort", False)
UI_SPEC = StepSpec(STEP, Approval(2, "oncall", 900, channels=("cli", "ui")), 60.0, "abort", False)


@pytest.fixture
def signed_settings(tmp_path: Path) -> Settings:
    target = offline_target("sig", tmp_path / "data")
    path = write_inventory(tmp_path / "site" / "inventory.yaml", {"t1": target})
    return Settings(config_path=path, evidence_dir=tmp_path / "evidence")


def key(settings: Settings, person: str) -> str:
    assert settings.config_path is not None
    return str(person_key(settings.config_path.parent / "keys", person))


def sign(settings: Settings, approver: str, *, as_key: str | None = None, **over: Any) -> str:
    """A proof as `mcp-ir approve --as APPROVER --key KEY` makes it."""
    what = {"step": STEP, "decision": "approve", "incident_id": INC, **over}
    return cli_signer(
        settings,
        incident_id=what["incident_id"],
        step=what["step"],
        approver=approver,
        decision=what["decision"],
        key=key(settings, as_key or approver),
    )(over.get("plan_hash", PLAN))


def open_incident(settings: Settings, every: int = 4) -> tuple[Trail, Checkpointer]:
    """incident.opened (with the keys snapshot and checkpoint key) and a waiting gate,
    checkpointed by the engine key, as the runner writes them."""
    inv = settings.inventory()
    trail = Trail.open(settings.evidence_dir, INC)
    assert inv.engine is not None and inv.engine.checkpoint_key_file is not None
    engine = EngineKey.load(inv.engine.checkpoint_key_file, inv.engine.checkpoint_public_key)
    cp = Checkpointer(trail.dir, engine, every_records=every)
    trail.subscribe(cp.on_record)
    opened = {"incident_id": INC, "target": "t1", "playbook": "breach-response"}
    trail.append(
        "incident.opened", None, {**opened, "initiator": "alice"} | decisions.opening(trail, inv)
    )
    trail.append("run.started", None, {"flow_run_id": "f1"})
    gate = {"plan_hash": PLAN, "group": "oncall", "required": 2, "channels": ["cli", "slack"]}
    trail.append(
        "gate.opened", STEP, {**gate, "members": ["alice", "bob", "carol"], "timeout_s": 900}
    )
    trail.append("gate.waiting", STEP, {"key": "archive-tunnel-1", "flow_run_id": "f1"})
    return trail, cp


def accept(
    settings: Settings, trail: Trail, approver: str, proof: str, spec: StepSpec = SPEC
) -> None:
    """What the runner does with a RunInput that passed the rules."""
    ref = decisions.accept(
        trail,
        settings.inventory(),
        spec,
        approver=approver,
        decision="approve",
        plan_hash=PLAN,
        proof_text=proof,
    )
    trail.append(
        "approval.accepted",
        STEP,
        {"approver": approver, "source": "cli", "comment": "", "plan_hash": PLAN, **ref},
    )


def finished_incident(settings: Settings) -> Trail:
    """bob and carol approve; the step runs; the run ends with a final checkpoint."""
    trail, cp = open_incident(settings)
    accept(settings, trail, "bob", sign(settings, "bob"))
    accept(settings, trail, "carol", sign(settings, "carol"))
    trail.append("gate.passed", STEP, {"plan_hash": PLAN, "approvers": ["bob", "carol"]})
    trail.append("step.started", STEP, {"plan_hash": PLAN})
    for i in range(6):
        trail.append("tunnel.archived", STEP, {"i": i})
    trail.append("step.succeeded", STEP, {"plan_hash": PLAN})
    trail.append("run.ended", None, {"status": "succeeded"})
    cp.finish()
    return trail


def rewrite(trail: Trail, edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """Edits the records and re-hashes the whole chain, as a careful forger would."""
    records = [json.loads(line) for line in trail.path.read_text().splitlines() if line]
    prev = GENESIS
    out = []
    for rec in edit(records):
        rec["prev"] = prev
        rec["hash"] = record_hash(rec)
        prev = rec["hash"]
        out.append(json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    trail.path.write_text("\n".join(out) + "\n")
