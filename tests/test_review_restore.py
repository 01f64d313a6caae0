"""review_logs and restore_service end to end: the real CLI in a subprocess, a real
Prefect server, real podman containers and the real anthropic SDK against the
sandbox. Short custom playbooks (``MCP_IR_PLAYBOOK_DIR``) keep each run small:
capture → stop → review → restore."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.redact import fingerprint
from core.trail import verify_dir
from sandbox.site import write_inventory
from tasks.anthropic_client import build_client
from tasks.tunnels import reveal_token, rotate_token
from tests.plugins.site import Site, capture_first, incident_of, waiting_at

pytestmark = [pytest.mark.podman, pytest.mark.prefect]

PLAYBOOK = (
    capture_first("review-restore")
    + """  - key: stop_stack
    approval: auto
    auto_reason: "test playbook: containment passes"
  - key: review_logs
{%- if policy == "auto-approve" %}
    approval: auto
    auto_reason: "auto-approve policy on sandbox target {{ target_name }}"
{%- elif review_auto %}
    approval: auto
    auto_reason: "misconfigured: a review nobody reads"
{%- else %}
    approval: {required: 1, group: oncall, timeout: 2h, allow_initiator: true}
{%- endif %}
    timeout: 120s
  - key: restore_service
    approval: auto
    auto_reason: "restore only after review_logs (the step refuses otherwise)"
    timeout: 120s
"""
)

NO_REVIEW = """\
name: restore-unreviewed
steps:
  - key: capture_evidence
    approval: auto
  - key: stop_stack
    approval: auto
  - key: restore_service
    approval: auto
"""

SUSPICIOUS_RULES = {"LR001", "LR002", "LR003"}


def playbooks(site: Site, tmp_path: Path, *, review_auto: bool = False) -> None:
    pb_dir = tmp_path / "playbooks"
    pb_dir.mkdir(exist_ok=True)
    text = PLAYBOOK.replace("review_auto", "true" if review_auto else "false")
    (pb_dir / "review-restore.yaml").write_text(text)
    (pb_dir / "restore-unreviewed.yaml").write_text(NO_REVIEW)
    site.env["MCP_IR_PLAYBOOK_DIR"] = str(pb_dir)


def window_args() -> list[str]:
    now = datetime.now(UTC)
    return [
        "--window-start",
        (now - timedelta(hours=1)).isoformat(),
        "--window-end",
        (now + timedelta(minutes=2)).isoformat(),
    ]


def running(site: Site) -> dict[str, Any]:
    """Service → container of the site's project that is running."""
    label = f"com.docker.compose.project={site.site.project}"
    return {
        c.labels["com.docker.compose.service"]: c
        for c in site.client.containers.list(filters={"label": label})
    }


def project_objects(site: Site) -> list[str]:
    label = f"com.docker.compose.project={site.site.project}"
    return [c.name for c in site.client.containers.list(all=True, filters={"label": label})]


def deployed_token(site: Site) -> str:
    env = running(site)["cloudflared"].attrs["Config"]["Env"]
    return next(p.split("=", 1)[1] for p in env if p.startswith("TUNNEL_TOKEN="))


def artifact_json(site: Site, incident: str, subject: str) -> Any:
    records = site.trail(incident).records()
    rec = next(r for r in records if r.kind == "artifact" and r.data.get("subject") == subject)
    return json.loads(site.trail(incident).read_artifact(rec.data["sha256"]))


def sdk(site: Site) -> Any:
    return build_client(site.sandbox.url, bearer_env="MCP_IR_SANDBOX_ANTHROPIC_TOKEN")


def new_token_into_data(site: Site, monkeypatch: pytest.MonkeyPatch) -> str:
    """What rotate_credentials does for the token, done by hand: rotate through the
    API and write the new token into data/ (the tests of restore do not depend on
    the rotation step)."""
    monkeypatch.setenv("MCP_IR_SANDBOX_ANTHROPIC_TOKEN", site.sandbox.token)
    token = rotate_token(sdk(site), site.site.tunnel_id, "test rotation").token
    (site.site.data_dir / "tunnel-token").write_text(token.get_secret_value() + "\n")
    return token.get_secret_value()


def prefect_table(key: str) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no Prefect artifact {key}"
    data = found[-1].data
    return json.loads(data) if isinstance(data, str) else data


def test_auto_approved_review_finds_the_probes_and_restore_brings_the_stack_back(
    site: Site, tmp_path: Path
) -> None:
    playbooks(site, tmp_path)
    extra_log = tmp_path / "gateway.log"
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    extra_log.write_text(
        f"{stamp} WARN no route for host host=backup.evil.example remote=10.9.9.9:4000\n"
        f"{stamp} DEBUG upstream call session={site.canary}\n"
    )
    target = {
        **site.site.target,
        "secrets_env": ["MCP_IR_TEST_CANARY"],
        "review": {"files": [{"name": "gateway-file", "path": str(extra_log), "kind": "proxy"}]},
    }
    write_inventory(site.inventory, {site.target: target})
    proxy_name = f"{site.site.project}-mcp-proxy-1"

    proc = site.run_auto_approved("review-restore", *window_args())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout + proc.stderr)
    trail = site.trail(incident)
    records = trail.records()

    # Findings from the captured proxy log: each suspicious line, with source, line
    # reference into the captured artifact, and timestamps.
    captured = next(
        r for r in records if r.kind == "artifact" and r.data.get("subject") == f"logs:{proxy_name}"
    )
    findings = artifact_json(site, incident, "log-review:findings")["findings"]
    from_proxy = {f["rule_id"]: f for f in findings if f["source"] == proxy_name}
    assert set(from_proxy) >= SUSPICIOUS_RULES, findings
    for rule in SUSPICIOUS_RULES:
        f = from_proxy[rule]
        assert f["line"].startswith(str(trail.artifacts / captured.data["sha256"]) + "@")
        offset = int(f["line"].rsplit("@", 1)[1])
        line = trail.read_artifact(captured.data["sha256"])[offset:].split(b"\n", 1)[0]
        assert line[:4].isdigit() and f["first_seen"] <= f["last_seen"] and f["count"] >= 1
    assert b"IP validation failed: 203.0.113.7" in trail.read_artifact(captured.data["sha256"])
    assert from_proxy["LR001"]["key"] == "203.0.113.7"
    # The configured extra file was collected as a hashed artifact and reviewed too.
    assert any(
        f["source"] == "gateway-file" and f["key"] == "backup.evil.example" for f in findings
    )
    assert any(r.data.get("subject") == "review-file:gateway-file" for r in records)
    # Its evidence copy: the original bytes, the line holding the canary withheld and
    # named by its fingerprint; the reviewed redacted view points at it.
    view = next(r for r in records if r.data.get("subject") == "review-file:gateway-file")
    kept = next(r for r in records if r.data.get("subject") == "review-file:gateway-file:evidence")
    raw = extra_log.read_bytes().split(b"\n")
    copy = trail.read_artifact(kept.data["sha256"]).split(b"\n")
    assert view.data["evidence_sha256"] == kept.data["sha256"] and copy[0] == raw[0]
    assert kept.data["withheld"] == [{"line": 2, "fingerprint": fingerprint(raw[1])}]
    assert fingerprint(raw[1]).encode() in copy[1] and site.canary.encode() not in copy[1]
    assert view.data["original_kept"] is False and kept.data["original_bytes"] == len(
        extra_log.read_bytes()
    )

    prepared = next(r for r in records if r.kind == "step.prepared" and r.step == "review_logs")
    assert prepared.data["result"]["needs_human"] is True
    assert "needs a human" in prepared.data["result"]["summary"]
    reviewed = next(r for r in records if r.kind == "logs.reviewed")
    assert reviewed.data["findings"] == len(findings) and reviewed.data["gate"] == "gate.auto"
    assert "auto-approve" in reviewed.data["auto_passed_needing_human"]
    assert sum(reviewed.data["severity_counts"].values()) == len(findings)
    table = prefect_table(f"log-review-{incident.lower()}")
    assert {row["rule"].split()[0] for row in table} >= SUSPICIOUS_RULES

    # Restore: both services running again, with the token in data/ (here the
    # unrotated one), which the sandbox still accepts.
    assert set(running(site)) == {"mcp-proxy", "cloudflared"}
    assert deployed_token(site) == site.site.token
    restored = next(r for r in records if r.kind == "service.restored")
    assert restored.data["token"] == fingerprint(site.site.token)
    assert any(r.kind == "restore.env_dropped" for r in records)  # the redacted canary var
    order = [r.step for r in records if r.kind == "step.succeeded"]
    assert order.index("review_logs") < order.index("restore_service")

    # Evidence intact; the canary and the token appear nowhere in it.
    assert verify_dir(site.evidence / incident).ok
    evidence = b"".join(
        p.read_bytes() for p in (site.evidence / incident).rglob("*") if p.is_file()
    )
    for secret in (site.canary, site.site.token, site.sandbox.token):
        assert secret.encode() not in evidence
        assert secret not in json.dumps(table)
    assert b"[REDACTED]" in evidence


def test_restore_waits_for_review_approval_then_uses_the_new_token(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    playbooks(site, tmp_path)
    proc = site.start(
        "run", "review-restore", "--target", site.target, "--as", "alice", *window_args()
    )
    incident = incident_of(site.wait_for_incident(proc))
    state = site.wait_for(incident, waiting_at("review_logs"), proc=proc, timeout=120)
    assert state.required == 1

    records = site.trail(incident).records()
    prepared = next(r for r in records if r.kind == "step.prepared" and r.step == "review_logs")
    assert "needs a human" in prepared.data["result"]["summary"]
    assert prepared.data["result"]["findings"] >= 3
    assert not [r for r in records if r.step == "restore_service"]  # not even planned
    assert project_objects(site) == []  # the stack stays down while the review waits

    old = site.site.token
    new = new_token_into_data(site, monkeypatch)
    ok = site.cli("approve", incident, "review_logs", "--as", "bob", "--comment", "read them")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert proc.wait(120) == 0

    records = site.trail(incident).records()
    reviewed = next(r for r in records if r.kind == "logs.reviewed")
    assert reviewed.data["approvers"] == ["bob"] and reviewed.data["gate"] == "gate.passed"
    assert "auto_passed_needing_human" not in reviewed.data
    assert set(running(site)) == {"mcp-proxy", "cloudflared"}
    assert deployed_token(site) == new != old
    verified = next(
        r for r in records if r.kind == "step.succeeded" and r.step == "restore_service"
    )
    assert verified.data["verify"]["api_token"] == fingerprint(new)
    assert verified.data["verify"]["connect"] == 200
    assert site.sandbox.connect(new) == 200 and site.sandbox.connect(old) == 403
    assert reveal_token(sdk(site), site.site.tunnel_id).fingerprint == fingerprint(new)
    assert verify_dir(site.evidence / incident).ok


def test_rejected_review_never_restores(site: Site, tmp_path: Path) -> None:
    playbooks(site, tmp_path)
    proc = site.start(
        "run", "review-restore", "--target", site.target, "--as", "alice", *window_args()
    )
    incident = incident_of(site.wait_for_incident(proc))
    site.wait_for(incident, waiting_at("review_logs"), proc=proc, timeout=120)
    r = site.cli(
        "reject", incident, "review_logs", "--as", "carol", "--comment", "lateral movement"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert proc.wait(60) == 1
    records = site.trail(incident).records()
    assert [r for r in records if r.step == "restore_service"] == []
    assert next(r for r in records if r.kind == "run.ended").data["status"] == "rejected"
    assert project_objects(site) == []


def test_restore_without_review_in_the_playbook_fails_clearly(site: Site, tmp_path: Path) -> None:
    playbooks(site, tmp_path)
    proc = site.cli(
        "run", "restore-unreviewed", "--target", site.target, "--as", "alice", *window_args()
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    records = site.trail(incident_of(proc.stdout + proc.stderr)).records()
    failed = next(r for r in records if r.kind == "step.failed")
    assert failed.step == "restore_service"
    assert "review_logs must be approved and succeed first" in failed.data["error"]
    assert "review_logs must be approved" in proc.stderr
    assert project_objects(site) == []


def test_findings_needing_a_human_are_never_auto_passed_on_standard_policy(
    site: Site, tmp_path: Path
) -> None:
    playbooks(site, tmp_path, review_auto=True)
    proc = site.cli(
        "run", "review-restore", "--target", site.target, "--as", "alice", *window_args()
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    records = site.trail(incident_of(proc.stdout + proc.stderr)).records()
    failed = next(r for r in records if r.kind == "step.failed")
    assert failed.step == "review_logs" and "need a human" in failed.data["error"]
    assert not any(r.kind == "logs.reviewed" for r in records)
    assert [r for r in records if r.step == "restore_service"] == []
    assert project_objects(site) == []


def test_crash_after_restore_then_resume_repeats_nothing(site: Site, tmp_path: Path) -> None:
    playbooks(site, tmp_path)
    site.env["MCP_IR_FAILPOINT"] = "restore_service:after_recreate"
    args = ["run", "review-restore", "--target", site.target, "--as", "alice"]
    crashed = site.cli(*args, "--policy", "auto-approve", *window_args())
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    incident = incident_of(crashed.stdout + crashed.stderr)
    ids = {s: c.id for s, c in running(site).items()}
    del site.env["MCP_IR_FAILPOINT"]

    resumed = site.cli(*args, "--incident", incident)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = site.trail(incident).records()
    assert {r.step for r in records if r.kind == "step.skipped"} == {
        "capture_evidence",
        "stop_stack",
        "review_logs",
    }
    assert any(r.kind == "step.already_done" and r.step == "restore_service" for r in records)
    assert {s: c.id for s, c in running(site).items()} == ids  # nothing re-created

    again = site.cli(*args, "--incident", incident)  # a third run: every step skipped
    assert again.returncode == 0, again.stdout + again.stderr
    assert {s: c.id for s, c in running(site).items()} == ids
    assert sum(1 for r in site.trail(incident).records() if r.kind == "service.restored") == 0
    assert verify_dir(site.evidence / incident).ok


def test_kill_while_review_waits_then_resume_reuses_the_review(site: Site, tmp_path: Path) -> None:
    playbooks(site, tmp_path)
    args = ["run", "review-restore", "--target", site.target, "--as", "alice"]
    proc = site.start(*args, *window_args())
    incident = incident_of(site.wait_for_incident(proc))
    site.wait_for(incident, waiting_at("review_logs"), proc=proc, timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    resumed = site.start(*args, "--incident", incident)
    site.wait_for(incident, waiting_at("review_logs", run=2), proc=resumed, timeout=120)
    records = site.trail(incident).records()
    assert sum(1 for r in records if r.kind == "step.prepared" and r.step == "review_logs") == 1
    assert site.cli("approve", incident, "review_logs", "--as", "bob").returncode == 0
    assert resumed.wait(120) == 0
    assert set(running(site)) == {"mcp-proxy", "cloudflared"}


@pytest.mark.parametrize(
    ("review", "field"),
    [
        ({"gap_threshold": -5}, "review.gap_threshold"),
        ({"allowed_ip_ranges": ["not-a-cidr"]}, "review.allowed_ip_ranges"),
        ({"files": [{"name": "x"}]}, "review.files.0.path"),
        ({"cloudwatch": [{"log_group": ""}]}, "review.cloudwatch.0.log_group"),
        ({"unknown_rule": 1}, "review.unknown_rule"),
    ],
)
def test_bad_review_config_names_the_field(
    tmp_path: Path, review: dict[str, Any], field: str
) -> None:
    from core.errors import ConfigError
    from runbook.inventory import load_inventory

    target = {
        "kind": "compose",
        "compose": {"project": "p1", "data_dir": str(tmp_path)},
        "tunnel": {"id": "tnl_abc"},
        "anthropic": {"credentials": {"bearer_env": "TOKEN"}},
        "review": review,
    }
    path = write_inventory(tmp_path / "inventory.yaml", {"t1": target})
    with pytest.raises(ConfigError) as err:
        load_inventory(path)
    assert f"target 't1': field '{field}'" in err.value.detail
