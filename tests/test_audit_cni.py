"""`mcp-ir audit` on Helm targets reports whether NetworkPolicies are enforced: two
sandbox clusters (real ``kubernetes`` client over HTTPS from the CLI process), one
with Calico, one with flannel, then with no network plugin visible. Compose targets
do not get the check (they have no NetworkPolicies)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from audit.engine import check_ids
from sandbox.site import write_inventory
from tests.plugins.kubernetes_sandbox import start_sandbox
from tests.plugins.site import mcp_ir_command, run_text
from tests.test_audit_helm import helm_target
from tests.test_kubernetes_cni import set_cni

CHECK = "networkpolicy_enforcement"


def audit(inventory: Path, evidence: Path, *targets: str) -> tuple[int, dict[str, Any], str]:
    selection = [a for t in targets for a in ("--target", t)] or ["--all"]
    proc = run_text(
        mcp_ir_command(inventory, evidence, "audit", *selection, "--json", "--no-notify"),
        env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        timeout=180,
        check=False,
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def the_check(doc: dict[str, Any], target: str) -> dict[str, Any]:
    return next(c for c in doc["targets"][target]["checks"] if c["id"] == CHECK)


def test_mcp_ir_audit_reports_enforced_not_enforced_and_unverifiable(tmp_path: Path) -> None:
    calico = start_sandbox(tmp_path / "calico")
    flannel = start_sandbox(tmp_path / "flannel", cni="flannel")
    try:
        inventory = write_inventory(
            tmp_path / "inventory.yaml",
            {"helm-calico": helm_target(calico), "helm-flannel": helm_target(flannel)},
        )
        evidence = tmp_path / "evidence"
        before = len(calico.calls()), len(flannel.calls())

        code, doc, _ = audit(inventory, evidence)

        assert code == 1  # a check failed (this one on flannel, and the unhardened release's)
        enforced = the_check(doc, "helm-calico")
        assert enforced["status"] == "pass" and enforced["severity"] == "high"
        assert {"source": "NetworkPolicy enforcement", "observed": "enforced"} in enforced[
            "evidence"
        ]
        assert {
            "source": "DaemonSet kube-system/calico-node",
            "observed": "Calico agent, ready on 1 of 1 node(s); implements NetworkPolicy",
        } in enforced["evidence"]
        inert = the_check(doc, "helm-flannel")
        assert inert["status"] == "fail"
        assert inert["reason"].startswith("NetworkPolicy not enforced: flannel does not")
        assert [c["id"] for c in doc["targets"]["helm-flannel"]["checks"]] == check_ids("helm")

        set_cni(flannel, None)
        code, doc, _ = audit(inventory, evidence, "helm-flannel")
        unseen = the_check(doc, "helm-flannel")
        assert unseen["status"] == "unverifiable"
        assert "no NetworkPolicy-enforcing CNI is known present" in unseen["reason"]
        assert {"source": "NetworkPolicy enforcement", "observed": "unverifiable"} in unseen[
            "evidence"
        ]
        # read-only: neither cluster recorded a mutating call
        assert calico.calls()[before[0] :] == [] and flannel.calls()[before[1] :] == []
    finally:
        calico.stop()
        flannel.stop()


def test_the_check_is_helm_only() -> None:
    assert CHECK in check_ids("helm") and CHECK not in check_ids("compose")
    assert check_ids("compose") == [c for c in check_ids("helm") if c != CHECK]
