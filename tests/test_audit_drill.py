"""The audit reads real drill evidence: a rotation drill run by the engine (real CLI,
Prefect server, podman, Tunnels sandbox) turns ``rotation_drill`` from fail to pass,
refreshes ``credential_age`` and leaves ``credentials_at_rest`` passing; a drill that
then fails is drift on ``rotation_drill``."""

from __future__ import annotations

from typing import Any

import pytest

from audit.service import run_audit
from runbook.inventory import load_inventory
from tests.plugins.site import Site
from tests.test_drill import incident_of, register_site_ca

pytestmark = [pytest.mark.podman, pytest.mark.prefect]

CHECKS = ["rotation_drill", "credential_age", "credentials_at_rest"]


def audit(site: Site) -> Any:
    inventory = load_inventory(site.inventory)
    return run_audit(
        inventory, [site.target], site.evidence, initiator="scheduler", notify=False, env=site.env
    )


def status(outcome: Any, site: Site) -> dict[str, Any]:
    return {c.id: c for c in outcome.results[site.target].checks if c.id in CHECKS}


def test_drill_evidence_drives_the_drill_check(site: Site) -> None:
    before = status(audit(site), site)
    assert before["rotation_drill"].status == "fail"
    assert "no finished rotation drill" in before["rotation_drill"].reason

    register_site_ca(site)
    proc = site.cli("drill", "--target", site.target, "--as", "alice")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    good = incident_of(proc.stdout)

    after = status(audit(site), site)
    assert {k: c.status for k, c in after.items()} == dict.fromkeys(CHECKS, "pass"), {
        k: c.reason for k, c in after.items()
    }
    assert good in after["rotation_drill"].evidence[0].observed
    assert "started by alice" in after["rotation_drill"].evidence[0].observed
    assert any("rotated by rotation-drill" in e.observed for e in after["credential_age"].evidence)

    # the next drill fails (the Tunnels API refuses the rotation): drift
    site.sandbox.fault(f"/v1/tunnels/{site.site.tunnel_id}/rotate_token", 400, count=10)
    proc = site.cli("drill", "--target", site.target, "--as", "alice")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    outcome = audit(site)
    drift = outcome.drift[site.target]
    assert [c.id for c in drift.new_failures] == ["rotation_drill"]
    assert "ended failed" in drift.new_failures[0].reason
