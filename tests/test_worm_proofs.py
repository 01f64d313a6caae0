"""The WORM copy never uploads a forged trail as genuine, holds every checkpoint, says
when it was uploaded late, and catches a local rollback — on a real moto server with
Object Lock and a trail signed with real keys (tests/plugins/signed_trail.py)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from core.checkpoints import CHECKPOINT_FILE
from runbook.evidence_verify import verify_incident_dir
from runbook.settings import Settings
from runbook.worm import Uploader, WormTarget
from runbook.worm_verify import verify_remote
from tests.plugins.signed_trail import finished_incident, open_incident, rewrite

PREFIX = "evidence/prod"


@pytest.fixture
def target(aws_env: str) -> Iterator[WormTarget]:
    name = "worm-" + secrets.token_hex(4)
    boto3.client("s3").create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    yield WormTarget(name, PREFIX, "GOVERNANCE", 1)


def keys_of(target: WormTarget, incident: str) -> list[str]:
    resp = boto3.client("s3").list_objects_v2(Bucket=target.bucket, Prefix=f"{PREFIX}/{incident}/")
    return sorted(o["Key"][len(f"{PREFIX}/{incident}/") :] for o in resp.get("Contents", []))


def engine_key(settings: Settings) -> str:
    engine = settings.inventory().engine
    assert engine is not None
    return engine.checkpoint_public_key


def url(target: WormTarget, trail: Any) -> str:
    return f"s3://{target.bucket}/{PREFIX}/{trail.incident_id}"


def test_a_trail_rewritten_while_s3_was_down_is_never_uploaded(
    signed_settings: Settings, target: WormTarget
) -> None:
    trail = finished_incident(signed_settings)  # S3 was down: nothing copied yet
    middle = next(r.seq for r in trail.records() if r.kind == "tunnel.archived")
    rewrite(trail, lambda recs: [r | {"data": {"i": 7}} if r["seq"] == middle else r for r in recs])

    status = Uploader(trail.dir, target, engine_key=engine_key(signed_settings)).sync()
    assert status.refused and "altered and the chain re-hashed" in status.refused
    assert status.line().startswith("NOT UPLOADED: the local trail fails verification")
    assert not status.complete
    assert keys_of(target, trail.incident_id) == []  # not one object


def test_a_late_copy_holds_every_checkpoint_and_says_it_is_late(
    signed_settings: Settings, target: WormTarget
) -> None:
    trail = finished_incident(signed_settings)
    status = Uploader(trail.dir, target, engine_key=engine_key(signed_settings)).sync()
    assert status.complete, status.line()
    keys = keys_of(target, trail.incident_id)
    local_checkpoints = (trail.dir / CHECKPOINT_FILE).read_bytes().splitlines()
    assert len([k for k in keys if k.startswith("checkpoints/")]) == len(local_checkpoints)
    proofs = {r.data["proof"]["sha256"] for r in trail.records() if r.kind == "approval.accepted"}
    assert {f"artifacts/{p}" for p in proofs} <= set(keys)  # what the decisions need
    head = boto3.client("s3").head_object(
        Bucket=target.bucket, Key=f"{PREFIX}/{trail.incident_id}/trail/0.json"
    )
    assert head["Metadata"]["late"] == "true" and head["Metadata"]["uploaded-at"]

    report = verify_remote(url(target, trail), trail.dir, engine_key=engine_key(signed_settings))
    assert report.ok, report.lines()
    text = "\n".join(report.lines())
    assert "identical to local copy" in text
    assert "2 signed decision(s) verified" in text and "(run ended)" in text
    assert f"late: {len(local_checkpoints)} of {len(local_checkpoints)} checkpoint(s)" in text


def test_only_checkpointed_records_are_copied_while_the_run_goes_on(
    signed_settings: Settings, target: WormTarget
) -> None:
    trail, cp = open_incident(signed_settings, every=50)
    covered = json.loads((trail.dir / CHECKPOINT_FILE).read_bytes().splitlines()[-1])["seq"]
    for i in range(3):
        trail.append("note", None, {"i": i})
    uploader = Uploader(trail.dir, target, engine_key=engine_key(signed_settings), live=True)
    status = uploader.sync()
    records = [k for k in keys_of(target, trail.incident_id) if k.startswith("trail/")]
    assert sorted(int(k[6:-5]) for k in records) == list(range(covered + 1))
    assert status.uncovered == 3 and "3 record(s) wait for a checkpoint" in status.line()
    cp.finish()
    assert uploader.sync().complete
    head = boto3.client("s3").head_object(
        Bucket=target.bucket, Key=f"{PREFIX}/{trail.incident_id}/trail/0.json"
    )
    assert head["Metadata"]["late"] == "false"  # copied by the run as it ran


def test_worm_copy_catches_a_rollback_to_an_older_checkpoint(
    signed_settings: Settings, target: WormTarget
) -> None:
    trail = finished_incident(signed_settings)
    assert (
        Uploader(trail.dir, target, engine_key=engine_key(signed_settings), live=True)
        .sync()
        .complete
    )
    # Locally: cut the tail back to an older checkpoint, and those checkpoints with it.
    lines = (trail.dir / CHECKPOINT_FILE).read_bytes().splitlines()
    older = json.loads(lines[1])
    (trail.dir / CHECKPOINT_FILE).write_bytes(b"\n".join(lines[:2]) + b"\n")
    rewrite(trail, lambda recs: recs[: older["seq"] + 1])
    local = verify_incident_dir(trail.dir, engine_key=engine_key(signed_settings))
    assert local.ok  # the directory alone cannot tell …
    assert any("not a run-end one" in n for n in local.notes)  # … beyond this hint
    report = verify_remote(url(target, trail), trail.dir, engine_key=engine_key(signed_settings))
    assert not report.ok
    last = trail.records()[-1].seq
    assert any(
        d.startswith("rolled back: the WORM copy holds a checkpoint of seq")
        and f"but the local trail ends at seq {last}" in d
        for d in report.differences
    ), report.differences


def test_an_old_trail_without_checkpoints_is_copied_as_before(
    signed_settings: Settings, target: WormTarget, tmp_path: Path
) -> None:
    from core.trail import Trail

    trail = Trail.open(tmp_path, "INC-20250101-0002-old")
    trail.append("incident.opened", None, {"incident_id": trail.incident_id})
    trail.append("run.ended", None, {"status": "succeeded"})
    status = Uploader(trail.dir, target, engine_key=engine_key(signed_settings)).sync()
    assert status.complete and keys_of(target, trail.incident_id) == [
        "trail/0.json",
        "trail/1.json",
    ]
    report = verify_remote(url(target, trail), trail.dir)
    assert report.ok and any("not checkpointed" in line for line in report.lines())
