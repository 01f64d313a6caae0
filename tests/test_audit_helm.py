"""The hardening audit on Helm targets: the sandbox Kubernetes API (real ``kubernetes``
client over HTTP) with the mcp-tunnel release rendered with hardened values — every
check passes, NetworkPolicy egress included — or weak values — every check fails;
the audit makes no mutating call to the cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from audit.service import run_audit
from runbook.inventory import load_inventory
from sandbox.audit_sites import configure_helm_release
from sandbox.mcp_servers import OAuthProtection, start_mcp_server
from sandbox.site import write_inventory
from tests.plugins.kubernetes_sandbox import start_sandbox
from tests.test_audit_compose import ALL_CHECKS, record_drill

AUDIT_TOKEN_ENV = "AUDIT_HELM_TOKEN"  # noqa: S105 (a variable name)
HELM_CHECKS = [*ALL_CHECKS, "networkpolicy_enforcement"]


def helm_target(box: Any, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "helm",
        "sandbox": True,
        "helm": {
            "release": box.release,
            "namespace": box.namespace,
            "deployment": box.release,
            "kubeconfig": str(box.kubeconfig),
        },
        "tunnel": {"id": "tnl_helmaudit"},
        "anthropic": {"credentials": {"bearer_env": "UNUSED_TOKEN"}},
        **extra,
    }


def test_hardened_helm_passes_weak_fails_without_mutating_calls(
    tmp_path: Path, oauth_sandbox: Any
) -> None:
    protection = OAuthProtection(
        oauth_sandbox.url,
        oauth_sandbox.introspection_endpoint,
        oauth_sandbox.client_id,
        oauth_sandbox.client_secret,
    )
    crm = start_mcp_server("crm", ["search_accounts", "get_account"], oauth=protection)
    wiki = start_mcp_server("wiki", ["search_pages", "delete_everything"])
    token = oauth_sandbox.issue(client_id=oauth_sandbox.other_client_id)["access_token"]
    hard = start_sandbox(tmp_path / "hard")
    weak = start_sandbox(tmp_path / "weak", cni="flannel")  # NetworkPolicy not enforced
    try:
        configure_helm_release(
            hard.served,
            hardened=True,
            routes={"crm": crm.base_url},
            upstream_port=int(crm.base_url.rsplit(":", 1)[1]),
        )
        configure_helm_release(
            weak.served, hardened=False, routes={"wiki": wiki.base_url}, upstream_port=0
        )
        log = tmp_path / "proxy.log"
        log.write_text("")
        evidence = tmp_path / "evidence"
        inventory_path = write_inventory(
            tmp_path / "inventory.yaml",
            {
                "helm-hardened": helm_target(
                    hard,
                    review={
                        "tool_allowlist": {"crm": ["search_accounts", "get_account"]},
                        "files": [{"name": "proxy", "path": str(log), "kind": "proxy"}],
                    },
                    audit={"mcp_tokens_env": {"crm": AUDIT_TOKEN_ENV}},
                ),
                "helm-weak": helm_target(weak),
            },
            intake={
                "sources": {
                    "siem": {
                        "format": "generic",
                        "secrets_env": ["SIEM_SECRET"],
                        "rules": [{"target": "helm-hardened"}],
                    }
                }
            },
        )
        record_drill(evidence, "helm-hardened")
        inventory = load_inventory(inventory_path)
        before_hard, before_weak = len(hard.calls()), len(weak.calls())

        outcome = run_audit(
            inventory,
            ["helm-hardened", "helm-weak"],
            evidence,
            initiator="alice",
            notify=False,
            env={**os.environ, AUDIT_TOKEN_ENV: token},
        )

        hardened = {c.id: c for c in outcome.results["helm-hardened"].checks}
        assert {k: c.status for k, c in hardened.items()} == {c: "pass" for c in HELM_CHECKS} | {
            "sso": "manual"
        }, {k: c.reason for k, c in hardened.items()}
        weak_checks = {c.id: c for c in outcome.results["helm-weak"].checks}
        assert {k: c.status for k, c in weak_checks.items()} == {c: "fail" for c in HELM_CHECKS} | {
            "sso": "manual"
        }, {k: c.reason for k, c in weak_checks.items()}
        assert "no NetworkPolicy limits egress" in weak_checks["network_reach"].reason
        assert "flannel does not implement" in weak_checks["networkpolicy_enforcement"].reason
        assert "passed as env var TUNNEL_TOKEN" in weak_checks["credentials_at_rest"].reason
        assert (
            "ConfigMap mcp-tunnel/mcp-tunnel-config"
            in weak_checks["allowed_ips"].evidence[0].source
        )
        assert any("egress rules=4" in e.observed for e in hardened["network_reach"].evidence)
        assert "mounted as files" in " ".join(
            e.observed for e in hardened["credentials_at_rest"].evidence
        )
        # read-only: the clusters recorded no mutating call
        assert hard.calls()[before_hard:] == [] and weak.calls()[before_weak:] == []
    finally:
        hard.stop()
        weak.stop()
        crm.stop()
        wiki.stop()
