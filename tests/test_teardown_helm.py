"""Teardown on a Helm target end to end: the real CLI and the real teardown playbook,
a real Prefect server, the Anthropic sandbox and the sandbox Kubernetes API with the
mcp-tunnel release installed (driven by the real kubernetes client)."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from core.trail import verify_dir
from tasks.kubernetes import load_client
from tests.plugins.helm_site import HelmTestSite

CREDENTIAL_SECRETS = {"mcp-tunnel", "mcp-tunnel-token", "mcp-tunnel-cert"}


def incident_of(output: str) -> str:
    for line in output.splitlines():
        for word in line.split():
            if word.startswith("INC-"):
                return word.rstrip(":,")
    raise AssertionError(f"no incident id in:\n{output}")


def cluster_state(site: HelmTestSite) -> dict[str, Any]:
    api = load_client(str(site.helm.kubeconfig))
    ns, release = site.helm.namespace, site.helm.release
    core, apps, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
    selector = f"app.kubernetes.io/instance={release}"
    return {
        "secrets": {s.metadata.name for s in core.list_namespaced_secret(ns).items},
        "release_pods": [
            p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=selector).items
        ],
        "deployments": {d.metadata.name for d in apps.list_namespaced_deployment(ns).items},
        "jobs": {j.metadata.name for j in batch.list_namespaced_job(ns).items},
    }


def test_helm_teardown_leaves_nothing_and_rerun_is_harmless(helm_site: HelmTestSite) -> None:
    site = helm_site
    site.env.pop("MCP_IR_PLAYBOOK_DIR")  # the real teardown playbook
    before = cluster_state(site)
    assert before["secrets"] >= CREDENTIAL_SECRETS and "mcp-tunnel-setup" in before["jobs"]
    assert before["release_pods"] and site.sandbox.connect(site.helm.token) == 200

    proc = site.cli(
        "teardown", "--target", site.target, "--as", "alice", "--policy", "auto-approve"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout + proc.stderr)
    after = cluster_state(site)
    assert not (CREDENTIAL_SECRETS & after["secrets"])
    assert not any(
        s.startswith(f"sh.helm.release.v1.{site.helm.release}.") for s in after["secrets"]
    )
    assert after["release_pods"] == [] and "mcp-tunnel" not in after["deployments"]
    assert "mcp-tunnel-setup" not in after["jobs"]
    assert site.sandbox.connect(site.helm.token) == 403  # tunnel archived, token dead
    # Resources of other releases in the namespace are untouched.
    assert (before["secrets"] - after["secrets"]) <= (
        CREDENTIAL_SECRETS
        | {s for s in before["secrets"] if s.startswith("sh.helm.release.v1.mcp-tunnel.")}
    )
    records = site.trail(incident).records()
    assert {r.step for r in records if r.kind == "step.succeeded"} == {
        "stop_stack",
        "archive_tunnel",
        "remove_credentials",
        "verify_teardown",
    }
    assert verify_dir(site.evidence / incident).ok
    evidence = b"".join(
        p.read_bytes() for p in (site.evidence / incident).rglob("*") if p.is_file()
    )
    assert site.helm.token.encode() not in evidence and site.canary.encode() not in evidence

    calls_before = len(site.k8s_calls())
    again = site.cli(
        "teardown", "--target", site.target, "--as", "alice", "--policy", "auto-approve"
    )
    assert again.returncode == 0, again.stdout + again.stderr
    second = incident_of(again.stdout + again.stderr)
    rerun = site.trail(second).records()
    assert {r.step for r in rerun if r.kind == "step.already_done"} >= {
        "stop_stack",
        "archive_tunnel",
    }
    mutating = [c for c in site.k8s_calls()[calls_before:] if c.get("method") not in ("GET", None)]
    assert mutating == []  # nothing left to delete, nothing deleted twice
