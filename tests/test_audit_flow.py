"""The scheduled side of the audit: the ``posture-audit`` flow (the daily deployment in
prefect.yaml) runs on the real Prefect server and stores its result; the
``posture-audit`` playbook is read-only (its one step plans no API call) and runs
through the engine like any playbook."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from audit.store import latest_result
from runbook.inventory import load_inventory
from runbook.playbook import load_playbook
from tests.plugins.audit_sandbox import AuditSite
from tests.plugins.site import run_text
from tests.test_audit_compose import record_drill

pytestmark = [pytest.mark.podman, pytest.mark.prefect]


def test_flow_audits_and_stores(
    audit_site: AuditSite, prefect_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.posture_audit import posture_audit

    for key, value in audit_site.box.env.items():
        monkeypatch.setenv(key, value)
    record_drill(audit_site.evidence, "hardened")
    report = posture_audit(
        targets=["hardened"],
        notify=False,
        config_path=str(audit_site.inventory),
        evidence_dir=str(audit_site.evidence),
    )
    checks = {c["id"]: c["status"] for c in report["targets"]["hardened"]["checks"]}
    assert checks["oauth_upstream"] == "pass" and checks["credentials_at_rest"] == "pass"
    stored = latest_result(audit_site.evidence, "hardened")
    assert stored is not None and stored[0] == report["audit_id"]
    assert {c.id: c.status for c in stored[1].checks} == checks


def test_playbook_is_read_only_and_runs_through_the_engine(
    audit_site: AuditSite, prefect_server: Any
) -> None:
    inventory = load_inventory(audit_site.inventory)
    playbook = load_playbook("posture-audit", inventory=inventory, target="weak")
    assert [s.key for s in playbook.steps] == ["audit_posture"]
    assert playbook.steps[0].auto and playbook.steps[0].reversible
    env = {**audit_site.env, "PREFECT_API_URL": prefect_server.url}
    base = [
        sys.executable,
        "-m",
        "runbook.cli",
        "--config",
        str(audit_site.inventory),
        "--evidence-dir",
        str(audit_site.evidence),
    ]
    plan = run_text(
        [*base, "plan", "posture-audit", "--target", "weak"],
        env=env,
        timeout=120,
        check=False,
    )
    assert plan.returncode == 0, plan.stderr
    assert "audit_posture" in plan.stdout
    run = run_text(
        [*base, "run", "posture-audit", "--target", "weak", "--as", "alice"],
        env=env,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    stored = latest_result(audit_site.evidence, "weak")
    assert stored is not None
    assert {c.id: c.status for c in stored[1].checks}["allowed_ips"] == "fail"
