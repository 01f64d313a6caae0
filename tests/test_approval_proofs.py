"""Signed decisions, checkpoints and offline verification, on real keys and real
trails (no Prefect here: the trail is written by the same functions the runner
calls; tests/test_approvals_e2e.py drives the real flow).

Keys: an SSH key per sandbox person made by ``ssh-keygen`` and the engine's Ed25519
key (``sandbox.keys``, as the demo does); signatures by ``ssh-keygen -Y sign``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from core.checkpoints import CHECKPOINT_FILE, Checkpointer, EngineKey, generate_engine_key
from core.errors import ApprovalRefused, ConfigError
from core.trail import Trail
from runbook import decisions, proofs, signing
from runbook.approvals import cli_signer
from runbook.cli import main
from runbook.evidence_verify import verify_incident_dir
from runbook.gates import gate_state
from runbook.inventory import load_inventory
from runbook.playbook import StepSpec
from runbook.settings import Settings
from tests.plugins.signed_trail import (
    INC,
    PLAN,
    SPEC,
    STEP,
    UI_SPEC,
    accept,
    finished_incident,
    key,
    open_incident,
    rewrite,
    sign,
)
from tests.plugins.site import run_text


@pytest.fixture
def settings(signed_settings: Settings) -> Settings:
    return signed_settings


def prover(settings: Settings, trail: Trail, spec: StepSpec = SPEC) -> Any:
    return decisions.prover(trail, settings.inventory(), spec)


# -- signatures -------------------------------------------------------------------


def test_cli_signature_is_openssh_sshsig_checked_by_ssh_keygen_too(
    settings: Settings, tmp_path: Path
) -> None:
    doc = proofs.decode(sign(settings, "bob"))
    stmt = doc["statement"]
    assert set(stmt) == {
        "incident",
        "step",
        "plan_hash",
        "decision",
        "approver",
        "time",
        "nonce",
        "channel",
    }
    assert doc["signature"].startswith("-----BEGIN SSH SIGNATURE-----")
    proven = proofs.check(doc, proofs.KeyRing.from_inventory(settings.inventory()), approver="bob")
    listed = run_text(
        ["ssh-keygen", "-lf", key(settings, "bob") + ".pub"],
        check=True,
    )
    assert proven.key_fingerprint == listed.stdout.split()[1]
    # OpenSSH itself accepts it in our namespace, and only there.
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("bob " + Path(key(settings, "bob") + ".pub").read_text())
    (tmp_path / "sig").write_text(doc["signature"])
    message = signing.canonical_json(stmt)
    for namespace, rc in ((signing.NAMESPACE, 0), ("git", 255)):
        done = subprocess.run(
            [
                "ssh-keygen",
                "-Y",
                "verify",
                "-f",
                str(allowed),
                "-I",
                "bob",
                "-n",
                namespace,
                "-s",
                str(tmp_path / "sig"),
            ],
            input=message,
            capture_output=True,
        )
        assert done.returncode == rc, done.stderr


def test_key_from_ssh_agent_when_no_key_is_named(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = run_text(["ssh-agent", "-s"], check=True).stdout
    env = dict(part.split("=", 1) for part in agent.replace(";", "\n").split() if "=" in part)
    try:
        monkeypatch.setenv("SSH_AUTH_SOCK", env["SSH_AUTH_SOCK"])
        monkeypatch.delenv(signing.KEY_ENV, raising=False)
        for who in ("mallory", "carol"):  # the agent holds two keys; carol's is picked
            subprocess.run(["ssh-add", "-q", key(settings, who)], check=True, capture_output=True)
        proof = cli_signer(
            settings, incident_id=INC, step=STEP, approver="carol", decision="approve", key=None
        )(PLAN)
        proven = proofs.check(
            proofs.decode(proof), proofs.KeyRing.from_inventory(settings.inventory())
        )
        assert proven.approver == "carol"
        assert proven.key_fingerprint == signing.fingerprint(
            settings.inventory().people["carol"].ssh_keys[0]
        )
    finally:
        os.kill(int(env["SSH_AGENT_PID"]), 15)


def test_no_key_anywhere_is_a_clear_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    signer = cli_signer(
        settings, incident_id=INC, step=STEP, approver="bob", decision="approve", key=None
    )
    with pytest.raises(ConfigError, match="no signing key: pass --key PATH"):
        signer(PLAN)
    with pytest.raises(ConfigError, match="--key: no such key file"):
        cli_signer(
            settings, incident_id=INC, step=STEP, approver="bob", decision="approve", key="/nope"
        )(PLAN)


def test_one_operator_cannot_sign_as_another_person(settings: Settings) -> None:
    keys = proofs.KeyRing.from_inventory(settings.inventory())
    forged = proofs.decode(sign(settings, "carol", as_key="bob"))
    with pytest.raises(ApprovalRefused, match="signed with bob's key SHA256:.*not one of 'carol'"):
        proofs.check(forged, keys)
    outsider = proofs.decode(sign(settings, "bob", as_key="mallory"))  # mallory: no group
    with pytest.raises(ApprovalRefused, match="signed with mallory's key"):
        proofs.check(outsider, keys)
    statement = dict(proofs.decode(sign(settings, "bob"))["statement"], approver="eve")
    with pytest.raises(ApprovalRefused, match="'eve' is not a person in the inventory"):
        proofs.check(
            {"channel": "cli", "statement": statement, "signature": forged["signature"]}, keys
        )


def test_the_signature_binds_every_field(settings: Settings) -> None:
    keys = proofs.KeyRing.from_inventory(settings.inventory())
    doc = proofs.decode(sign(settings, "bob"))
    for name, value in (
        ("plan_hash", "b" * 64),
        ("step", "stop_stack"),
        ("decision", "reject"),
        ("incident", "INC-other-1"),
    ):
        with pytest.raises(ApprovalRefused, match="signature does not verify"):
            proofs.check({**doc, "statement": {**doc["statement"], name: value}}, keys)
    with pytest.raises(ApprovalRefused, match="for plan_hash"):
        proofs.check(doc, keys, plan_hash="b" * 64)


def test_flow_refuses_unsigned_ui_votes_stale_and_replayed_statements(settings: Settings) -> None:
    trail, _ = open_incident(settings)
    inv = settings.inventory()
    with pytest.raises(ApprovalRefused, match=r"unsigned decision \(Prefect UI/API\) naming 'bob'"):
        decisions.accept(
            trail, inv, SPEC, approver="bob", decision="approve", plan_hash=PLAN, proof_text=""
        )
    assert decisions.accept(
        trail, inv, UI_SPEC, approver="bob", decision="approve", plan_hash=PLAN, proof_text=""
    ) == {"proof": {"channel": "ui"}}
    proof = sign(settings, "bob")
    accept(settings, trail, "bob", proof)
    with pytest.raises(ApprovalRefused, match="already used"):
        accept(settings, trail, "bob", proof)
    doc = proofs.decode(proof)
    old = proofs.Proven(
        "bob", "approve", STEP, PLAN, "cli", "", "n", "2026-01-01T00:00:00Z", doc["statement"]
    )
    with pytest.raises(ApprovalRefused, match="more than 15 minutes ago"):
        proofs.check_fresh(old, set())


# -- the gate counts only what is proven -------------------------------------------


def test_hand_appended_and_rehashed_approvals_are_ignored_by_the_gate(settings: Settings) -> None:
    trail, _ = open_incident(settings)
    accept(settings, trail, "bob", sign(settings, "bob"))
    bob = trail.records()[-1]
    # Appended by hand with a correct hash chain: no proof, or bob's proof under carol's name.
    trail.append(
        "approval.accepted", STEP, {"approver": "carol", "plan_hash": PLAN, "source": "cli"}
    )
    trail.append("approval.accepted", STEP, {**bob.data, "approver": "carol"})
    state = gate_state(trail.records(), STEP, prove=prover(settings, trail))
    assert state.approvals == ["bob"] and state.remaining == 1
    reasons = dict(state.unproven)
    assert "unsigned" in reasons[bob.seq + 1]
    assert "is for approver 'bob', not 'carol'" in reasons[bob.seq + 2]
    # Without proofs (what the trail merely claims) both would have counted.
    assert gate_state(trail.records(), STEP).approvals == ["bob", "carol"]

    # bob's genuine record rewritten to name carol, the chain re-hashed after it.
    rewrite(
        trail,
        lambda recs: [
            r | {"data": r["data"] | {"approver": "carol"}} if r["seq"] == bob.seq else r
            for r in recs
        ][: bob.seq + 1],
    )
    state = gate_state(trail.records(), STEP, prove=prover(settings, trail))
    assert state.approvals == [] and "not 'carol'" in dict(state.unproven)[bob.seq]


def test_ui_votes_count_only_on_gates_that_list_ui(settings: Settings) -> None:
    trail, _ = open_incident(settings)
    trail.append(
        "approval.accepted",
        STEP,
        {"approver": "bob", "plan_hash": PLAN, "proof": {"channel": "ui"}},
    )
    assert gate_state(trail.records(), STEP, prove=prover(settings, trail)).approvals == []
    assert gate_state(trail.records(), STEP, prove=prover(settings, trail, UI_SPEC)).approvals == [
        "bob"
    ]


# -- verify -----------------------------------------------------------------------


def verify(settings: Settings, trail: Trail, capsys: Any) -> tuple[int, str]:
    code = main(["--config", str(settings.config_path), "verify", str(trail.dir)])
    return code, capsys.readouterr().out


def test_intact_trail_verifies_with_checkpoints_and_signed_approvals(
    settings: Settings, capsys: Any
) -> None:
    trail = finished_incident(settings)
    code, out = verify(settings, trail, capsys)
    assert code == 0, out
    assert out.startswith("ok: ")
    assert "checked against the inventory's engine key" in out and "(run ended)" in out
    assert "2 signed decision(s) verified" in out


def test_edited_approval_fails_naming_its_seq(settings: Settings, capsys: Any) -> None:
    trail = finished_incident(settings)
    seq = next(
        r.seq
        for r in trail.records()
        if r.kind == "approval.accepted" and r.data["approver"] == "carol"
    )
    rewrite(
        trail,
        lambda recs: [
            r | {"data": r["data"] | {"approver": "dave"}} if r["seq"] == seq else r for r in recs
        ],
    )
    code, out = verify(settings, trail, capsys)
    assert code == 1
    assert (
        f"seq {seq}: approval.accepted by 'dave': the signed statement is for approver 'carol'"
        in out
    )
    assert "altered and the chain re-hashed" in out
    # The regenerated report names dave, and says his approval is not proven.
    from runbook.report import report_context

    gates = report_context(trail)["gates"]
    rows = {g["who"]: g["source"] for g in gates if g["kind"] == "accepted"}
    assert rows["dave"].startswith("UNPROVEN: the signed statement is for approver 'carol'")
    assert rows["bob"].startswith("cli, signed SHA256:")


def test_deleted_tail_fails(settings: Settings, capsys: Any) -> None:
    trail = finished_incident(settings)
    last = trail.records()[-1].seq
    rewrite(trail, lambda recs: recs[:-3])
    code, out = verify(settings, trail, capsys)
    assert code == 1
    assert f"the trail ends at seq {last - 3}" in out and "the last 3 record(s) were deleted" in out


def test_middle_record_altered_and_rehashed_fails(settings: Settings, capsys: Any) -> None:
    trail = finished_incident(settings)
    middle = next(r.seq for r in trail.records() if r.kind == "tunnel.archived")
    rewrite(
        trail, lambda recs: [r | {"data": {"i": 99}} if r["seq"] == middle else r for r in recs]
    )
    code, out = verify(settings, trail, capsys)
    assert code == 1 and "altered and the chain re-hashed" in out
    bounds = [line for line in out.splitlines() if "re-hashed" in line][0].split(":")[0].split()[1]
    low, high = (int(x) for x in bounds.split(".."))
    assert low <= middle <= high


def test_deleted_checkpoint_file_fails(settings: Settings, capsys: Any) -> None:
    trail = finished_incident(settings)
    (trail.dir / CHECKPOINT_FILE).unlink()
    code, out = verify(settings, trail, capsys)
    assert code == 1 and "checkpoints.jsonl is missing, but incident.opened (seq 0) says" in out


def test_checkpoints_signed_by_another_key_fail(
    settings: Settings, tmp_path: Path, capsys: Any
) -> None:
    """A forger re-signs the checkpoints (and the snapshot) with a key of their own."""
    trail = finished_incident(settings)
    inv = settings.inventory()
    assert inv.engine is not None
    other = EngineKey.load(tmp_path / "k", generate_engine_key(tmp_path / "k"))
    lines = (trail.dir / CHECKPOINT_FILE).read_text().splitlines()
    (trail.dir / CHECKPOINT_FILE).unlink()
    forger = Checkpointer(trail.dir, other)
    for line in lines:
        cp = json.loads(line)
        forger.checkpoint(cp["seq"], cp["hash"], run_ended=cp["run_ended"])
    code, out = verify(settings, trail, capsys)
    assert code == 1 and "its signature does not verify with key" in out


def test_old_trail_without_checkpoints_still_verifies(settings: Settings, capsys: Any) -> None:
    trail = Trail.open(settings.evidence_dir, "INC-20250101-0001-old")
    trail.append("incident.opened", None, {"incident_id": trail.incident_id, "initiator": "alice"})
    trail.append("approval.accepted", STEP, {"approver": "bob", "plan_hash": PLAN, "source": "cli"})
    trail.append("run.ended", None, {"status": "succeeded"})
    code, out = verify(settings, trail, capsys)
    assert code == 0, out
    assert "not checkpointed" in out and "predates signed approvals" in out
    report = verify_incident_dir(trail.dir)
    assert report.ok and not report.checkpointed


# -- configuration errors -----------------------------------------------------------


def test_bad_keys_in_the_inventory_are_named(settings: Settings, tmp_path: Path) -> None:
    assert settings.config_path is not None
    text = settings.config_path.read_text()
    bad = text.replace("ssh-ed25519 AAAA", "ssh-dss AAAA", 1)
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    with pytest.raises(
        ConfigError, match=r"field 'people.alice.ssh_keys': entry 0: key type 'ssh-dss'"
    ):
        load_inventory(path)
    engine = settings.inventory().engine
    assert engine is not None and engine.checkpoint_key_file is not None
    other = generate_engine_key(tmp_path / "other.key")
    with pytest.raises(ConfigError, match="is not the key of engine.checkpoint_public_key"):
        EngineKey.load(engine.checkpoint_key_file, other)


# -- the plan shown is the plan signed ---------------------------------------------


def test_approve_shows_the_plan_and_asks_on_a_terminal(settings: Settings) -> None:
    import io

    from runbook.plan_confirm import confirmer

    trail, _ = open_incident(settings)
    plan = {"step": STEP, "target": "t1", "summary": "archive tunnel tnl_0123abc", "hash": PLAN}
    trail.append(
        "step.planned", STEP, {**plan, "api_calls": ["POST /v1/tunnels/tnl_0123abc/archive"]}
    )
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "r", closefd=False) as tty:
            for answer, refused in ((b"n\n", True), (b"y\n", False)):
                out = io.StringIO()
                confirm = confirmer(
                    settings, INC, STEP, "approve as bob", assume_yes=False, stdin=tty, out=out
                )
                os.write(master, answer)
                if refused:
                    with pytest.raises(ApprovalRefused, match="did not confirm"):
                        confirm(PLAN)
                else:
                    confirm(PLAN)
                shown = out.getvalue()
                assert f"plan {PLAN}" in shown and "POST /v1/tunnels/tnl_0123abc/archive" in shown
                assert "sign this plan? [y/N]" in shown
    finally:
        os.close(master)
        os.close(slave)
    # Not a terminal and no --yes: nothing is signed.
    piped = confirmer(
        settings,
        INC,
        STEP,
        "approve",
        assume_yes=False,
        stdin=io.StringIO("y\n"),
        out=io.StringIO(),
    )
    with pytest.raises(ConfigError, match="--yes: not asking on a non-terminal"):
        piped(PLAN)
