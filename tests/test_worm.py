"""The WORM copy of the evidence in S3 with Object Lock, against a real moto server:
every object locked (read back through the S3 API), locked versions cannot be
deleted, remote verification finds rewritten and hidden objects, and an S3 outage
neither blocks nor fails a run — the copy completes later."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from core.trail import Trail, verify_dir
from runbook.worm import WormCopy, WormTarget, record_key
from runbook.worm_verify import verify_remote
from sandbox.moto import moto_env
from sandbox.serve import free_port
from tests.plugins.site import Site, capture_first, run_text

PREFIX = "evidence/prod"
# The containment part of breach-response, all gates automatic (a sandbox target), so
# the run does not wait for the later steps' people (vendor ticket, log review).
CONTAINMENT = (
    capture_first()
    + """  - key: stop_stack
    approval: auto
    auto_reason: sandbox
  - key: archive_tunnel
    approval: auto
    auto_reason: sandbox
"""
)


def s3() -> Any:
    return boto3.client("s3")


@pytest.fixture
def bucket(aws_env: str) -> Iterator[str]:
    name = "worm-" + secrets.token_hex(4)
    s3().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    yield name


def objects(bucket: str, prefix: str) -> list[str]:
    resp = s3().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def write_incident(evidence: Path, incident: str, target: WormTarget) -> Trail:
    trail = Trail.open(evidence, incident)
    copy = WormCopy(trail, target)
    trail.append("incident.opened", None, {"incident_id": incident, "target": "prod"})
    trail.add_artifact(b"proxy log line\n", name="proxy.log", step="capture_evidence")
    trail.append("step.succeeded", "capture_evidence", {"duration_s": 0.1})
    trail.add_artifact(b'{"a": 1}', name="x.json", media_type="application/json")
    trail.append("run.ended", None, {"status": "succeeded"})
    status = copy.close()
    assert status.complete, status.line()
    return trail


def expected_keys(incident_dir: Path) -> list[str]:
    """Every record, every artifact a record references (artifacts, decision proofs,
    the keys snapshot) and every signed checkpoint of a finished, checkpointed run."""
    from core.checkpoints import read_checkpoints
    from runbook.worm_coverage import checkpoint_key, referenced_artifacts

    base = f"{PREFIX}/{incident_dir.name}/"
    lines = [x for x in (incident_dir / "trail.jsonl").read_bytes().split(b"\n") if x]
    keys = {f"{base}{record_key(i)}" for i in range(len(lines))}
    keys |= {f"{base}artifacts/{d}" for raw in lines for d in referenced_artifacts(raw)}
    checkpoints = read_checkpoints(incident_dir) or []
    assert checkpoints, "the run was checkpointed"
    keys |= {base + checkpoint_key(raw) for raw in checkpoints}
    return sorted(keys)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_text(
        [sys.executable, "-m", "runbook.cli", *args],
        env=env,
        timeout=120,
    )


def test_every_object_is_locked_until_the_retention_date(bucket: str, tmp_path: Path) -> None:
    target = WormTarget(bucket, PREFIX, "COMPLIANCE", 30)
    trail = write_incident(tmp_path, "INC-worm-1", target)
    keys = objects(bucket, f"{PREFIX}/INC-worm-1/")
    records = trail.records()
    digests = {r.data["sha256"] for r in records if r.kind == "artifact"}
    assert keys == sorted(
        [f"{PREFIX}/INC-worm-1/{record_key(r.seq)}" for r in records]
        + [f"{PREFIX}/INC-worm-1/artifacts/{d}" for d in digests]
    )
    low = datetime.now(UTC) + timedelta(days=29)
    high = datetime.now(UTC) + timedelta(days=31)
    for key in keys:
        head = s3().head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        assert low < head["ObjectLockRetainUntilDate"] < high, key
    # Each record object is the trail line itself.
    body = s3().get_object(Bucket=bucket, Key=f"{PREFIX}/INC-worm-1/trail/0.json")["Body"].read()
    assert body == trail.path.read_bytes().split(b"\n")[0]
    report = verify_remote(f"s3://{bucket}/{PREFIX}/INC-worm-1", trail.dir)
    assert report.ok, report.lines()
    assert report.result.head == verify_dir(trail.dir).head


def test_a_locked_version_cannot_be_deleted(bucket: str, tmp_path: Path) -> None:
    write_incident(tmp_path, "INC-worm-2", WormTarget(bucket, PREFIX, "GOVERNANCE", 1))
    key = f"{PREFIX}/INC-worm-2/trail/1.json"
    version = s3().head_object(Bucket=bucket, Key=key)["VersionId"]
    with pytest.raises(ClientError) as refused:
        s3().delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert s3().head_object(Bucket=bucket, Key=key, VersionId=version)["VersionId"] == version


def test_remote_verify_names_a_rewritten_and_a_hidden_object(
    bucket: str, tmp_path: Path, aws_env: str
) -> None:
    incident = "INC-worm-3"
    write_incident(tmp_path, incident, WormTarget(bucket, PREFIX, "GOVERNANCE", 1))
    url = f"s3://{bucket}/{PREFIX}/{incident}"
    env = {**os.environ}
    ok = cli(env, "--evidence-dir", str(tmp_path), "verify", url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "remote: ok: 5 records" in ok.stdout and "identical to local copy" in ok.stdout

    # A writer with PutObject cannot change the locked version, but can put a new
    # version on top of it: the current object differs from the local record.
    base = f"{PREFIX}/{incident}"
    original = s3().get_object(Bucket=bucket, Key=f"{base}/trail/2.json")["Body"].read()
    s3().put_object(
        Bucket=bucket,
        Key=f"{base}/trail/2.json",
        Body=original.replace(b"0.1", b"9.9"),
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1),
    )
    changed = cli(env, "--evidence-dir", str(tmp_path), "verify", url)
    assert changed.returncode == 1
    assert "FAILED at seq 2: hash mismatch" in changed.stdout, changed.stdout
    assert "changed: trail/2.json differs from local seq 2" in changed.stdout
    assert "rewritten: trail/2.json has 2 versions" in changed.stdout

    # A delete marker hides an object without deleting the locked version.
    s3().delete_object(Bucket=bucket, Key=f"{base}/trail/3.json")
    artifact = objects(bucket, f"{base}/artifacts/")[0]
    s3().delete_object(Bucket=bucket, Key=artifact)
    missing = cli(env, "--evidence-dir", str(tmp_path), "verify", url)
    assert missing.returncode == 1
    assert "missing remotely: trail/3.json" in missing.stdout, missing.stdout
    assert f"missing remotely: {artifact[len(base) + 1 :]}" in missing.stdout
    assert "hidden: trail/3.json has a delete marker" in missing.stdout

    # Without a local copy the remote one is still verified on its own.
    alone = cli(env, "--evidence-dir", str(tmp_path / "elsewhere"), "verify", url)
    assert alone.returncode == 1 and "FAILED at seq" in alone.stdout
    assert "local copy" not in alone.stdout


def test_appends_never_wait_for_an_unreachable_s3(tmp_path: Path, monkeypatch: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    trail = Trail.open(tmp_path, "INC-worm-4")
    copy = WormCopy(trail, WormTarget("worm-down", PREFIX, "GOVERNANCE", 1))
    slowest = 0.0
    for i in range(20):
        started = time.monotonic()
        trail.append("step.succeeded", f"s{i}", {"i": i})
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < 5  # liveness: an S3 outage never holds an append (uploads are async)
    started = time.monotonic()
    status = copy.close(wait_s=1.0)
    assert time.monotonic() - started < 15  # liveness: close gives up after wait_s
    assert not status.complete and status.total == 20 and status.done == 0
    assert "INCOMPLETE: 0 of 20 objects copied" in status.line()


def worm_site(site: Site, tmp_path: Path, bucket: str, mode: str, days: int) -> None:
    """Runs on ``site`` use the all-automatic CONTAINMENT playbook and keep a WORM copy
    of their trail in ``bucket`` (object lock ``mode`` for ``days``)."""
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "breach-response.yaml").write_text(CONTAINMENT)
    site.env["MCP_IR_PLAYBOOK_DIR"] = str(playbooks)
    inventory = yaml.safe_load(site.inventory.read_text())
    inventory["evidence"] = {
        "s3": {"bucket": bucket, "prefix": PREFIX, "mode": mode, "retention_days": days}
    }
    site.inventory.write_text(yaml.safe_dump(inventory))


@pytest.mark.long(25)
def test_breach_run_survives_an_s3_outage_and_the_copy_completes_later(
    site: Site, bucket: str, moto_server: str, tmp_path: Path
) -> None:
    worm_site(site, tmp_path, bucket, "GOVERNANCE", 7)
    site.env.update(moto_env(f"http://127.0.0.1:{free_port()}"))  # S3 is down
    started = time.monotonic()
    run = site.cli("breach", "--target", site.target, "--as", "alice")
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    incident = next(
        line.split()[1] for line in run.stdout.splitlines() if line.startswith("incident:")
    )
    records = site.trail(incident).records()
    assert records[-2].kind == "run.ended" and records[-2].data["status"] == "succeeded"
    assert objects(bucket, f"{PREFIX}/{incident}/") == []
    # Said on the console while the run went on, once, not once per retry.
    failing = [line for line in run.stderr.splitlines() if "evidence copy to s3://" in line]
    assert len(failing) == 1 and f"s3://{bucket}/{PREFIX}/{incident} failing (" in failing[0]
    assert "queued on disk, retrying" in failing[0]
    down = site.cli("status", incident)
    assert "remote copy: INCOMPLETE: 0 of" in down.stdout, down.stdout + down.stderr
    report = site.cli("report", incident)
    assert "WORM copy (S3) | INCOMPLETE" in report.stdout

    # S3 is back: the next process touching the incident completes the copy.
    site.env["AWS_ENDPOINT_URL"] = moto_server
    up = site.cli("status", incident)
    assert "remote copy: complete (" in up.stdout, up.stdout + up.stderr
    records = site.trail(incident).records()
    keys = objects(bucket, f"{PREFIX}/{incident}/")
    assert keys == expected_keys(site.evidence / incident)
    for key in keys:
        head = s3().head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"]
    remote = site.cli("verify", f"s3://{bucket}/{PREFIX}/{incident}")
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert f"remote: ok: {len(records)} records" in remote.stdout
    assert "identical to local copy" in remote.stdout
    print(f"breach run with S3 down took {elapsed:.1f}s")


def test_breach_run_copies_its_trail_while_it_runs(
    site: Site, bucket: str, moto_server: str, tmp_path: Path
) -> None:
    worm_site(site, tmp_path, bucket, "COMPLIANCE", 2)
    site.env.update(moto_env(moto_server))
    run = site.cli("breach", "--target", site.target, "--as", "alice")
    assert run.returncode == 0, run.stdout + run.stderr
    incident = next(
        line.split()[1] for line in run.stdout.splitlines() if line.startswith("incident:")
    )
    # No other process touched the incident: the run's own observer copied it all.
    keys = objects(bucket, f"{PREFIX}/{incident}/")
    assert keys == expected_keys(site.evidence / incident)
    assert all(
        s3().head_object(Bucket=bucket, Key=k)["ObjectLockMode"] == "COMPLIANCE" for k in keys
    )
    remote = site.cli("verify", f"s3://{bucket}/{PREFIX}/{incident}")
    assert remote.returncode == 0 and "identical to local copy" in remote.stdout, remote.stdout
