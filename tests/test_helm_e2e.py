"""breach-response on a Helm target, end to end: the real CLI in a subprocess, a real
Prefect server, the real ``kubernetes`` client over HTTP against the sandbox Kubernetes
API (calls and faults observed through its test controls), the real anthropic SDK
against the sandbox Tunnels API.

The playbook is limited to capture_evidence → stop_stack → archive_tunnel
(tests/plugins/helm_site.py) so these tests do not depend on steps still being written.
"""

from __future__ import annotations

import base64
import fnmatch
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from core.trail import verify_dir
from sandbox.site import write_inventory
from tests.plugins.helm_site import HelmTestSite
from tests.plugins.site import incident_of, kinds, waiting_at

pytestmark = [pytest.mark.prefect]

NS = "mcp-tunnel"
REL = "mcp-tunnel"
ISOLATION = f"mcp-ir-isolate-{REL}"
METHOD = {"create": "POST", "update": "PUT", "patch": "PATCH", "delete": "DELETE"}


def prefect_log_text(flow_run_ids: list[str]) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids))
        )
    return "\n".join(log.message for log in logs)


def call_line(call: dict[str, Any]) -> str:
    """A sandbox-recorded mutating call as ``METHOD path`` (how plans name them)."""
    prefix = f"/apis/{call['group']}/v1" if call["group"] else "/api/v1"
    path = f"{prefix}/namespaces/{call['namespace']}/{call['resource']}"
    if call["verb"] != "create":
        path += f"/{call['name']}"
    return f"{METHOD[call['verb']]} {path}"


def planned_k8s_calls(records: list[Any]) -> list[str]:
    """Mutating Kubernetes calls named by the plans in the trail (notes stripped)."""
    out: list[str] = []
    for r in records:
        if r.kind == "step.planned":
            out += [
                c.split(" (")[0]
                for c in r.data["api_calls"]
                if c.split()[0] in ("POST", "PUT", "PATCH", "DELETE") and "/namespaces/" in c
            ]
    return out


def assert_calls_match_plan(made: list[str], planned: list[str], optional: set[str]) -> None:
    """Every call made was planned; every planned call was made (except ``optional``)."""
    for call in made:
        assert any(fnmatch.fnmatchcase(call, p) for p in planned), f"unplanned call {call}"
    for p in planned:
        if p not in optional:
            assert any(fnmatch.fnmatchcase(c, p) for c in made), f"planned but not made: {p}"


def release_objects(site: HelmTestSite) -> dict[str, list[str]]:
    """Names of what is in the namespace, per resource (read in-process from the sandbox
    store: the assertion must not depend on the code under test)."""
    from sandbox.k8s_store import RESOURCES

    cluster = site.helm.served.cluster
    out: dict[str, list[str]] = {}
    for (_, plural), res in RESOURCES.items():
        if plural == "events":
            continue
        out[plural] = sorted(
            o["metadata"]["name"] for o in cluster.store.list(res, NS) if o is not None
        )
    return out


def run(site: HelmTestSite, *args: str, playbook: str = "helm-breach") -> Any:
    return site.cli("run", playbook, "--target", site.target, "--as", "alice", *args)


def test_stop_stack_isolates_first_captures_uninstalls_and_leaks_nothing(
    helm_site: HelmTestSite,
) -> None:
    site = helm_site
    seeded = site.helm.seeded
    before = release_objects(site)
    proc = run(site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout)
    records = site.trail(incident).records()
    calls = [c for c in site.k8s_calls() if c["code"] < 300]

    # Containment first: the deny-all policy was created before any delete.
    first_delete = next(i for i, c in enumerate(calls) if c["verb"] == "delete")
    isolation = [
        i
        for i, c in enumerate(calls)
        if c["verb"] == "create" and c["resource"] == "networkpolicies" and c["name"] == ISOLATION
    ]
    assert isolation and isolation[0] < first_delete
    isolated = next(r.seq for r in records if r.kind == "stack.isolated")
    # The sandbox cluster runs Calico: enforcement is seen, so no warning.
    assert next(r for r in records if r.kind == "stack.isolated").data["enforcement"] == (
        "enforced"
    )
    assert "warning: NetworkPolicy" not in proc.stdout + proc.stderr
    manifest = next(
        r
        for r in records
        if r.kind == "artifact" and r.data.get("subject", "").startswith("helm-manifest:")
    )
    stopped = next(r.seq for r in records if r.kind == "stack.stopped")
    assert isolated < manifest.seq < stopped

    # Both containers' logs of every pod (and the restarted container's previous log)
    # were stored as artifacts before the uninstall.
    logs = {
        r.data["subject"]: r
        for r in records
        if r.kind == "artifact" and r.data.get("subject", "").startswith("logs:")
    }
    for pod in seeded.pods:
        for container in ("mcp-proxy", "cloudflared"):
            assert logs[f"logs:{pod}/{container}.log"].seq < stopped
    assert f"logs:{seeded.pods[0]}/cloudflared.previous.log" in logs
    trail = site.trail(incident)
    proxy = trail.read_artifact(logs[f"logs:{seeded.pods[0]}/mcp-proxy.log"].data["sha256"])
    assert b"IP validation failed: 203.0.113.50 is not a private address" in proxy
    cloudflared = trail.read_artifact(logs[f"logs:{seeded.pods[1]}/cloudflared.log"].data["sha256"])
    assert b"Registered tunnel connection connIndex=3" in cloudflared
    assert b"[REDACTED]" in cloudflared  # the canary's line was there, its value is not
    subjects = {r.data.get("subject") for r in records if r.kind == "artifact"}
    assert {
        "objects:deployments.yaml",
        "objects:replicasets.yaml",
        "objects:pods.yaml",
        "objects:events.yaml",
        "objects:networkpolicies.yaml",
        "objects:jobs.yaml",
        "objects:cronjobs.yaml",
        "objects:secrets.yaml",
        "tunnel-record",
    } <= subjects
    secrets_doc = list(
        yaml.safe_load_all(
            trail.read_artifact(
                next(
                    r.data["sha256"]
                    for r in records
                    if r.kind == "artifact" and r.data.get("subject") == "objects:secrets.yaml"
                )
            )
        )
    )
    by_name = {s["name"]: s for s in secrets_doc}
    assert by_name[REL]["keys"] == sorted(seeded.credentials)
    assert all(set(s) >= {"name", "keys", "labels"} and "data" not in s for s in secrets_doc)

    # Nothing of the release and no release Secret is left; unrelated objects untouched.
    after = release_objects(site)
    for kind, name in seeded.manifest_objects:
        plural = {"NetworkPolicy": "networkpolicies"}.get(kind, kind.lower() + "s")
        assert name not in after[plural], f"{kind}/{name} left"
    assert not [p for p in after["pods"] if p.startswith(REL)]
    assert not [s for s in after["secrets"] if s.startswith(f"sh.helm.release.v1.{REL}.")]
    assert ISOLATION not in after["networkpolicies"]  # lifted once no pod of the release runs
    for kind, name in seeded.unrelated:
        plural = kind.lower() + "s"
        assert name in after[plural], f"unrelated {kind}/{name} was touched"
    assert [p for p in after["pods"] if p.startswith("billing")] == [
        p for p in before["pods"] if p.startswith("billing")
    ]
    assert not [c for c in calls if (c["name"] or "").startswith("billing")]
    # Left by helm uninstall by design (teardown removes them): setup's Secret and hook Job.
    assert REL in after["secrets"] and f"{REL}-setup" in after["jobs"]

    # Mutating calls == planned (Kubernetes and Tunnels API).
    made = [call_line(c) for c in calls]
    optional = {
        f"PUT /apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/{ISOLATION}",
        # narrowing happens only if someone else's policy selects the release's pods
        f"PATCH /apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/*",
    }
    assert_calls_match_plan(made, planned_k8s_calls(records), optional)
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.helm.tunnel_id}/archive"]
    assert site.sandbox.connect(site.helm.token) == 403

    # The canary (in cloudflared's debug log, configured as a secret) and the tunnel
    # token are nowhere: evidence dir, report, Prefect logs, CLI output.
    run_ids = [r.data["flow_run_id"] for r in records if r.kind in ("run.started", "run.resumed")]
    prefect_logs = prefect_log_text(run_ids)
    assert "stop_stack" in prefect_logs
    evidence = b"".join(
        p.read_bytes() for p in (site.evidence / incident).rglob("*") if p.is_file()
    )
    for secret in (site.canary, site.helm.token, seeded.credentials["tls.key"].splitlines()[1]):
        assert secret.encode() not in evidence
        assert secret not in prefect_logs
        assert secret not in proc.stdout + proc.stderr
    assert verify_dir(site.evidence / incident).ok


def failed(records: list[Any], step: str) -> str:
    errors = [r.data["error"] for r in records if r.kind == "step.failed" and r.step == step]
    assert errors, f"no step.failed for {step}"
    return errors[-1]


def test_rbac_403_fails_the_step_naming_the_resource_and_keeps_isolation(
    helm_site: HelmTestSite,
) -> None:
    site = helm_site
    site.k8s_faults(deny=[{"verb": "delete", "resource": "deployments"}])
    proc = run(site)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    records = site.trail(incident_of(proc.stdout)).records()
    error = failed(records, "stop_stack")
    assert 'delete Deployment "mcp-tunnel" in namespace "mcp-tunnel" is forbidden by RBAC' in error
    assert 'cannot delete resource "deployments"' in error  # the apiserver's own message
    assert "archive_tunnel" not in {r.step for r in records if r.kind == "step.started"}
    after = release_objects(site)
    assert REL in after["deployments"] and ISOLATION in after["networkpolicies"]
    assert site.mutating_calls() == []


def test_stop_stack_warns_when_networkpolicy_enforcement_is_not_seen(
    helm_site: HelmTestSite,
) -> None:
    site = helm_site
    httpx.post(
        f"{site.k8s_url}/_sandbox/cni", json={"cni": None}, timeout=10, verify=site.k8s_verify
    ).raise_for_status()  # no network plugin visible in the API
    proc = run(site)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # contained all the same
    console = proc.stdout + proc.stderr
    assert "with warnings:" in console
    assert "warning: NetworkPolicy unverifiable on the cluster (stop_stack):" in console
    assert "the isolation policies hold only where the network plugin enforces them" in console
    incident = incident_of(proc.stdout)
    assert "NetworkPolicy unverifiable on the cluster" in site.cli("status", incident).stdout
    records = site.trail(incident).records()
    assert next(r for r in records if r.kind == "stack.isolated").data["enforcement"] == (
        "unverifiable"
    )
    [found] = [r for r in records if r.kind == "network_policy.enforcement"]
    assert "no NetworkPolicy-enforcing CNI is known present" in found.data["reason"]


def test_404_release_not_found_is_a_clear_failure_not_a_silent_success(
    helm_site: HelmTestSite,
) -> None:
    site = helm_site
    target = dict(site.helm.target)
    target["helm"] = {**target["helm"], "release": "mcp-tunel"}  # a typo in the inventory
    write_inventory(site.inventory, {site.target: target})
    proc = run(site)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    records = site.trail(incident_of(proc.stdout)).records()
    assert "step.succeeded" in kinds(records, "capture_evidence")
    assert "capture.incomplete" in kinds(records, "capture_evidence")  # no pod: recorded
    # ... and said: on the console, in status and in the report, not a bare "ok".
    console = proc.stdout + proc.stderr
    assert "with warnings:" in console and "warning: evidence capture incomplete" in console
    status = site.cli("status", incident_of(proc.stdout)).stdout
    assert "warning: evidence capture incomplete" in status
    error = failed(records, "stop_stack")
    assert 'Helm release "mcp-tunel" not found in namespace "mcp-tunnel" (404)' in error
    assert "helm.release" in error
    assert site.k8s_calls() == []  # nothing mutated
    assert len(release_objects(site)["pods"]) == len(site.helm.seeded.pods) + 1  # + billing


def test_500_is_retried_then_fails_naming_the_resource_and_a_rerun_finishes(
    helm_site: HelmTestSite,
) -> None:
    site = helm_site
    site.k8s_faults(fail_next={"count": 50, "verb": "delete", "resource": "secrets"})
    proc = run(site)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout)
    records = site.trail(incident).records()
    error = failed(records, "stop_stack")
    assert (
        'delete Secret "sh.helm.release.v1.mcp-tunnel.v1" in namespace "mcp-tunnel" failed: '
        "HTTP 500" in error
    )
    # The runner's one retry policy (the playbook's default: 3 tries) ran the step again.
    assert "gave up after 3 attempt(s)" in error
    assert len([r for r in records if r.kind == "step.retry" and r.step == "stop_stack"]) == 2

    site.clear_k8s_faults()
    resumed = run(site, "--incident", incident)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = site.trail(incident).records()
    after = release_objects(site)
    assert not [s for s in after["secrets"] if s.startswith(f"sh.helm.release.v1.{REL}.")]
    assert [r.data.get("subject") for r in records if r.kind == "artifact"].count(
        f"helm-manifest:{REL}.v2"
    ) == 1
    assert len([r for r in records if r.kind == "step.planned" and r.step == "stop_stack"]) == 1
    assert verify_dir(site.evidence / incident).ok


@pytest.mark.parametrize(
    "failpoint", ["stop_stack:after_isolate", "stop_stack:after_manifest", "stop_stack:after_apply"]
)
def test_kill_inside_stop_stack_then_resume_repeats_nothing(
    helm_site: HelmTestSite, failpoint: str
) -> None:
    site = helm_site
    site.env["MCP_IR_FAILPOINT"] = failpoint
    crashed = run(site)
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    incident = incident_of(crashed.stderr + crashed.stdout)
    del site.env["MCP_IR_FAILPOINT"]
    resumed = run(site, "--incident", incident)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = site.trail(incident).records()
    assert "run.resumed" in kinds(records)
    # The plan did not change between the runs (approvals of it would still count).
    assert len([r for r in records if r.kind == "step.planned" and r.step == "stop_stack"]) == 1
    subjects = [r.data["subject"] for r in records if r.kind == "artifact" and "subject" in r.data]
    assert len(subjects) == len(set(subjects))  # nothing captured or stored twice
    calls = [c for c in site.k8s_calls() if c["code"] < 300]
    created = [c for c in calls if c["verb"] == "create"]
    assert [c["name"] for c in created] == [ISOLATION]  # isolated once, not again
    deleted = [(c["resource"], c["name"]) for c in calls if c["verb"] == "delete"]
    assert len(deleted) == len(set(deleted))  # no delete repeated
    assert_calls_match_plan(
        [call_line(c) for c in site.k8s_calls()],
        planned_k8s_calls(records),
        {
            f"PUT /apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/{ISOLATION}",
            f"PATCH /apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/*",
        },
    )
    after = release_objects(site)
    assert REL not in after["deployments"] and ISOLATION not in after["networkpolicies"]
    if failpoint == "stop_stack:after_apply":
        assert "step.already_done" in kinds(records, "stop_stack")
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.helm.tunnel_id}/archive"]
    assert verify_dir(site.evidence / incident).ok


def test_containment_waits_for_its_gate_and_the_plan_names_the_release(
    helm_site: HelmTestSite,
) -> None:
    site = helm_site
    proc = site.start("run", "helm-breach-gated", "--target", site.target, "--as", "alice")
    incident = incident_of(site.wait_for_incident(proc))
    state = site.wait_for(incident, waiting_at("stop_stack"), proc=proc)
    assert state.required == 1
    assert [c for c in site.k8s_calls() if c["verb"] != "get"] == []  # nothing before approval
    shown = site.cli("plan", "helm-breach-gated", "--target", site.target)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"uninstall Helm release '{REL}'" in shown.stdout
    records = site.trail(incident).records()
    plan = next(r for r in records if r.kind == "step.planned" and r.step == "stop_stack").data
    assert f"Deployment/{REL}" in plan["resources"]
    assert f"Secret/sh.helm.release.v1.{REL}.v2" in plan["resources"]
    assert f"CronJob/{REL}-cert-renew" in plan["resources"]
    ok = site.cli("approve", incident, "stop_stack", "--as", "bob")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert proc.wait(90) == 0
    assert REL not in release_objects(site)["deployments"]


# ---------------------------------------------------------------------------------------
# The helpers other steps use (teardown, rotation, restore), in process: a real
# StepContext, a real trail, the real kubernetes client over HTTP to the sandbox.


def step_context(tmp_path: Path, k8s: Any, step: str) -> Any:
    from core.trail import Trail
    from runbook.context import Clients, Incident, StepContext, build_redactor
    from runbook.inventory import load_inventory

    target = {
        "kind": "helm",
        "sandbox": True,
        "helm": {"kubeconfig": str(k8s.kubeconfig)},
        "tunnel": {"id": "tnl_inprocess"},
        "anthropic": {"credentials": {"bearer_env": "MCP_IR_UNUSED_TOKEN"}},
    }
    inventory = load_inventory(write_inventory(tmp_path / "inventory.yaml", {"helm": target}))
    tgt = inventory.target("helm")
    incident = Incident(
        id="INC-20261121-000000-test",
        target="helm",
        playbook="helm-helpers",
        initiator="alice",
        trigger={"kind": "test"},
        severity="high",
        window_start=None,
        window_end=None,
    )
    trail = Trail.open(tmp_path / "evidence", incident.id, build_redactor(tgt))
    return StepContext(
        incident=incident,
        step=step,
        target=tgt,
        inventory=inventory,
        trail=trail,
        clients=Clients(tgt),
        timeout_s=60,
    )


def test_restore_recreates_the_release_from_the_stored_manifest(tmp_path: Path, k8s: Any) -> None:
    import targets.helm as _helm

    stop = step_context(tmp_path, k8s, "stop_stack")
    _helm.isolate(stop)
    stopped = _helm.uninstall(stop)
    assert stopped["revision"] == 2 and _helm.remaining(stop) == []
    restore = step_context(tmp_path, k8s, "restore_service")
    k8s_calls_before = len(k8s.calls())
    result = _helm.restore(restore)
    made = k8s.calls()[k8s_calls_before:]
    assert sorted(result["created"]) == sorted(f"{k}/{n}" for k, n in k8s.seeded.manifest_objects)
    assert len(result["ready_pods"]) == 2
    assert [c["resource"] for c in made if c["verb"] == "create"] == [
        "networkpolicies",
        "serviceaccounts",
        "configmaps",
        "services",
        "deployments",
        "cronjobs",
    ]  # Helm's install order
    dep = client.AppsV1Api(k8s.api).read_namespaced_deployment(REL, NS)
    assert dep.metadata.annotations["meta.helm.sh/release-name"] == REL
    # Restored from the revision that was deployed (v2 has the CronJob, v1 did not).
    assert client.BatchV1Api(k8s.api).read_namespaced_cron_job(f"{REL}-cert-renew", NS)
    assert (
        not client.NetworkingV1Api(k8s.api)
        .list_namespaced_network_policy(NS, field_selector=f"metadata.name={ISOLATION}")
        .items
    )
    again = _helm.restore(restore)  # idempotent: everything exists, nothing created
    assert again["created"] == [] and len(again["existing"]) == len(result["created"])
    kinds_recorded = [r.kind for r in restore.trail.records() if r.step == "restore_service"]
    assert kinds_recorded.count("stack.restored") == 2


def test_restore_without_a_stored_manifest_names_what_is_missing(tmp_path: Path, k8s: Any) -> None:
    import targets.helm as _helm
    from core.errors import StepFailed

    with pytest.raises(StepFailed, match='no stored manifest of Helm release "mcp-tunnel"'):
        _helm.restore(step_context(tmp_path, k8s, "restore_service"))


def test_remove_credentials_deletes_the_three_secrets_and_the_setup_job(
    tmp_path: Path, k8s: Any
) -> None:
    import targets.helm as _helm
    from core.errors import StepFailed

    ctx = step_context(tmp_path, k8s, "remove_credentials")
    k8s.faults(deny=[{"verb": "delete", "resource": "secrets", "name": f"{REL}-cert"}])
    with pytest.raises(StepFailed, match=f'delete Secret "{REL}-cert" .* forbidden by RBAC'):
        _helm.remove_credentials(ctx)
    k8s.clear_faults()
    first = _helm.remove_credentials(ctx)
    # The denied attempt deleted what came before the refused Secret; the re-run the rest.
    assert "Secret/mcp-tunnel-cert" in first["deleted"] and f"Job/{REL}-setup" in first["deleted"]
    core = client.CoreV1Api(k8s.api)
    names = {s.metadata.name for s in core.list_namespaced_secret(NS).items}
    assert not names & {REL, f"{REL}-token", f"{REL}-cert"}
    assert "billing-db" in names
    again = _helm.remove_credentials(ctx)  # absent is fine
    assert again["deleted"] == [] and len(again["absent"]) == 4


def test_write_credentials_records_fingerprints_only_and_restarts(tmp_path: Path, k8s: Any) -> None:
    import targets.helm as _helm
    from core.errors import ConfigError

    ctx = step_context(tmp_path, k8s, "rotate_credentials")
    token = "tnltok_" + secrets.token_urlsafe(24)
    key = "-----BEGIN PRIVATE KEY-----\n" + secrets.token_hex(20) + "\n-----END PRIVATE KEY-----\n"
    cert = "-----BEGIN CERTIFICATE-----\nMIIBnew\n-----END CERTIFICATE-----\n"
    values = {
        "ca.crt": cert,
        "tls.crt": cert,
        "tls.key": key,
        "tunnel-id": "tnl_new",
        "tunnel-domain": "n.example.com",
    }
    with pytest.raises(ConfigError, match="tunnel-token: must be a non-empty string"):
        _helm.write_credentials(ctx, {**values, "tunnel-token": " "})
    old_pods = set(k8s.seeded.pods)
    result = _helm.write_credentials(ctx, {**values, "tunnel-token": token})
    assert result["restarted"] and set(result["ready_pods"]).isdisjoint(old_pods)
    assert result["fingerprints"][f"{REL}/tunnel-token"].startswith("sha256:")
    stored = client.CoreV1Api(k8s.api).read_namespaced_secret(f"{REL}-token", NS).data
    assert stored["tunnel-token"] == base64.b64encode(token.encode()).decode()
    trail_bytes = (ctx.trail.dir / "trail.jsonl").read_bytes()
    assert token.encode() not in trail_bytes and secrets_hex(key).encode() not in trail_bytes
    assert b"credentials.written" in trail_bytes


def secrets_hex(pem: str) -> str:
    return pem.splitlines()[1]


def test_stored_manifest_keeps_sources_and_drops_secret_values() -> None:
    from sandbox.helm_release import chart_manifest, render_manifest
    from targets.helm import scrub_manifest
    from tasks.kubernetes_helm import parse_manifest, uninstall_sorted

    token = "tnltok_" + secrets.token_urlsafe(24)
    docs = chart_manifest(REL, NS, revision=1)  # two ConfigMaps: order within a kind matters
    docs.append(
        (
            "mcp-tunnel/templates/secret.yaml",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "inline"},
                "stringData": {"tunnel-token": token},
            },
        )
    )
    deployment = next(obj for path, obj in docs if obj["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][1]["env"].append(
        {"name": "TUNNEL_TOKEN_LITERAL", "value": token}
    )
    manifest = render_manifest(docs)
    stored = scrub_manifest(manifest).decode()
    assert token not in stored and "sha256:" in stored
    original = [(r.ref, r.source) for r in uninstall_sorted(parse_manifest(manifest))]
    assert [(r.ref, r.source) for r in uninstall_sorted(parse_manifest(stored))] == original
