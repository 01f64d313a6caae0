"""stop_stack on Helm: isolate → capture → uninstall, driven through the real client."""

from __future__ import annotations

import base64
import re
import time

import pytest
import yaml
from kubernetes import client

from core.errors import StepFailed
from core.redact import Redactor
from tasks.kubernetes import capture, isolate, isolation_policy_name, uninstall_release

KUBELET_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")
NS = "mcp-tunnel"
REL = "mcp-tunnel"


def _stop_stack(k8s):
    iso = isolate(k8s.api, NS, REL)
    cap = capture(k8s.api, NS, REL)
    result = uninstall_release(k8s.api, NS, REL)
    return iso, cap, result


def test_isolation_policy_is_applied_before_anything_is_deleted(k8s):
    _stop_stack(k8s)
    calls = [c for c in k8s.calls() if c["code"] < 300]
    first_delete = next(i for i, c in enumerate(calls) if c["verb"] == "delete")
    creates = [
        i
        for i, c in enumerate(calls)
        if c["verb"] == "create"
        and c["resource"] == "networkpolicies"
        and c["name"] == isolation_policy_name(REL)
    ]
    assert creates and creates[0] < first_delete
    deleted = [(c["resource"], c["name"]) for c in calls if c["verb"] == "delete"]
    # Helm's UninstallOrder: Service, CronJob, Deployment, pods, ConfigMap, ServiceAccount,
    # NetworkPolicy; then the release Secrets; the isolation policy last.
    order = [r for r, _ in deleted]
    assert order.index("services") < order.index("cronjobs") < order.index("deployments")
    assert order.index("deployments") < order.index("pods") < order.index("configmaps")
    assert order.index("configmaps") < order.index("serviceaccounts")
    assert deleted[-1] == ("networkpolicies", isolation_policy_name(REL))
    assert ("networkpolicies", REL) in deleted
    assert deleted.index(("networkpolicies", REL)) < deleted.index(
        ("secrets", "sh.helm.release.v1.mcp-tunnel.v1")
    )


def test_isolation_policy_denies_all_ingress_and_egress_of_release_pods(k8s):
    first = isolate(k8s.api, NS, REL)
    again = isolate(k8s.api, NS, REL)
    assert first.created and not again.created
    pol = client.NetworkingV1Api(k8s.api).read_namespaced_network_policy(first.policy, NS)
    assert pol.spec.pod_selector.match_labels == {"app.kubernetes.io/instance": REL}
    assert sorted(pol.spec.policy_types) == ["Egress", "Ingress"]
    assert not pol.spec.ingress and not pol.spec.egress


def test_isolate_restores_a_loosened_policy(k8s):
    isolate(k8s.api, NS, REL)
    net = client.NetworkingV1Api(k8s.api)
    net.patch_namespaced_network_policy(isolation_policy_name(REL), NS, {"spec": {"egress": [{}]}})
    assert net.read_namespaced_network_policy(isolation_policy_name(REL), NS).spec.egress
    isolate(k8s.api, NS, REL)
    assert not net.read_namespaced_network_policy(isolation_policy_name(REL), NS).spec.egress


def test_capture_has_both_containers_logs_and_previous_logs(k8s):
    isolate(k8s.api, NS, REL)
    cap = capture(k8s.api, NS, REL)
    assert cap.complete, cap.errors
    assert sorted(cap.pods) == sorted(k8s.seeded.pods)
    for pod in k8s.seeded.pods:
        proxy = cap.artifacts[f"logs/{pod}/mcp-proxy.log"].decode()
        cf = cap.artifacts[f"logs/{pod}/cloudflared.log"].decode()
        assert "IP validation failed: 203.0.113.50 is not a private address" in proxy
        assert "Registered tunnel connection connIndex=3" in cf
        # timestamps=true: every line starts with the kubelet's RFC3339Nano timestamp
        assert all(KUBELET_TS.match(line) for line in (proxy + cf).splitlines())
    restarted = k8s.seeded.pods[0]
    previous = cap.artifacts[f"logs/{restarted}/cloudflared.previous.log"].decode()
    assert "No ingress rules were defined" in previous
    assert f"logs/{restarted}/mcp-proxy.previous.log" not in cap.artifacts
    assert f"logs/{k8s.seeded.pods[1]}/cloudflared.previous.log" not in cap.artifacts


def test_capture_objects_as_yaml_and_secrets_without_values(k8s):
    isolate(k8s.api, NS, REL)
    cap = capture(k8s.api, NS, REL)
    deps = list(yaml.safe_load_all(cap.artifacts["objects/deployments.yaml"]))
    assert [d["metadata"]["name"] for d in deps] == [REL]
    assert len(list(yaml.safe_load_all(cap.artifacts["objects/replicasets.yaml"]))) == 1
    assert {
        d["metadata"]["name"] for d in yaml.safe_load_all(cap.artifacts["objects/cronjobs.yaml"])
    } == {"mcp-tunnel-cert-renew"}
    assert {
        d["metadata"]["name"] for d in yaml.safe_load_all(cap.artifacts["objects/jobs.yaml"])
    } == {"mcp-tunnel-setup"}
    policies = {
        d["metadata"]["name"]
        for d in yaml.safe_load_all(cap.artifacts["objects/networkpolicies.yaml"])
    }
    assert policies == {REL, isolation_policy_name(REL)}
    events = list(yaml.safe_load_all(cap.artifacts["objects/events.yaml"]))
    assert events and {e["involvedObject"]["kind"] for e in events} >= {"Pod", "Deployment"}
    assert all(not e["involvedObject"]["name"].startswith("billing") for e in events)
    summary = {s.name: s for s in cap.secrets}
    assert set(summary) == {
        REL,
        "mcp-tunnel-token",
        "mcp-tunnel-cert",
        "sh.helm.release.v1.mcp-tunnel.v1",
        "sh.helm.release.v1.mcp-tunnel.v2",
    }
    assert summary[REL].keys == [
        "ca.crt",
        "tls.crt",
        "tls.key",
        "tunnel-domain",
        "tunnel-id",
        "tunnel-token",
    ]
    blob = b"".join(cap.artifacts.values()).decode()
    for key, value in k8s.seeded.credentials.items():
        if key in ("tunnel-token", "tls.key"):
            assert value not in blob
            assert value.encode().hex() not in blob
    assert base64.b64encode(k8s.seeded.credentials["tunnel-token"].encode()).decode() not in blob


def test_capture_logs_can_hold_a_canary_that_redaction_removes(k8s):
    cap = capture(k8s.api, NS, REL)
    raw = cap.artifacts[f"logs/{k8s.seeded.pods[1]}/cloudflared.log"].decode()
    assert "sk-ant-api03-canaryCANARYcanary" in raw  # raw evidence is exact
    assert "canaryCANARY" not in Redactor().text(raw)


def test_capture_is_bounded_by_its_deadline(k8s):
    cap = capture(k8s.api, NS, REL, deadline_s=0.0)
    assert not cap.complete
    assert "objects/pods.yaml" in cap.incomplete
    assert cap.elapsed_s < 10  # liveness: a zero deadline returns at once, not after the reads


def test_uninstall_leaves_nothing_of_the_release_and_spares_unrelated(k8s):
    _, _, result = _stop_stack(k8s)
    core, apps = client.CoreV1Api(k8s.api), client.AppsV1Api(k8s.api)
    batch, net = client.BatchV1Api(k8s.api), client.NetworkingV1Api(k8s.api)
    sel = "app.kubernetes.io/instance=mcp-tunnel"
    assert result.revision == 2
    assert core.list_namespaced_pod(NS, label_selector=sel).items == []
    assert apps.list_namespaced_deployment(NS, label_selector=sel).items == []
    assert apps.list_namespaced_replica_set(NS, label_selector=sel).items == []
    assert core.list_namespaced_service(NS, label_selector=sel).items == []
    assert batch.list_namespaced_cron_job(NS, label_selector=sel).items == []
    assert core.list_namespaced_secret(NS, label_selector="owner=helm,name=mcp-tunnel").items == []
    assert [p.metadata.name for p in net.list_namespaced_network_policy(NS).items] == []
    assert sorted(result.release_secrets_deleted) == [
        "sh.helm.release.v1.mcp-tunnel.v1",
        "sh.helm.release.v1.mcp-tunnel.v2",
    ]
    # a ReplicaSet not yet collected recreates pods meanwhile: those are deleted too
    assert set(k8s.seeded.pods) <= set(result.pods_deleted)
    # The newest revision was used: its CronJob was deleted, v1's legacy ConfigMap
    # never existed in the cluster at v2.
    assert "CronJob/mcp-tunnel-cert-renew" in result.deleted
    assert "ConfigMap/mcp-tunnel-legacy-routes" not in result.deleted + result.already_absent
    assert result.isolation_removed
    # helm uninstall leaves hooks and the setup-written Secret: teardown removes them.
    assert result.left_by_design == ["Job/mcp-tunnel-setup"]
    assert core.read_namespaced_secret(REL, NS).data["tunnel-token"]
    # Unrelated resources survive, including another release's Secret.
    assert apps.read_namespaced_deployment("billing-api", NS).status.ready_replicas == 1
    assert core.read_namespaced_secret("billing-db", NS).data
    assert core.read_namespaced_config_map("billing-config", NS).data == {"port": "9000"}
    assert core.read_namespaced_secret("sh.helm.release.v1.billing.v1", NS)
    assert core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/instance=billing").items


def test_pods_are_deleted_with_grace_period_zero(k8s):
    # Containers that ignore SIGTERM: a graceful delete would leave them Terminating.
    k8s.cluster.exit_after_s = 60
    result = uninstall_release(k8s.api, NS, REL)
    # a ReplicaSet not yet collected recreates pods meanwhile: those are deleted too
    assert set(k8s.seeded.pods) <= set(result.pods_deleted)
    pods = client.CoreV1Api(k8s.api).list_namespaced_pod(
        NS, label_selector="app.kubernetes.io/instance=mcp-tunnel"
    )
    assert pods.items == []


def test_rerunning_stop_stack_is_harmless(k8s):
    _stop_stack(k8s)
    before = len(k8s.calls())
    iso, cap, again = _stop_stack(k8s)
    assert again.revision is None
    assert again.deleted == [] and again.release_secrets_deleted == []
    assert again.pods_deleted == []
    assert again.isolation_removed and iso.created  # the re-run's own policy, removed again
    new_calls = k8s.calls()[before:]
    assert {(c["verb"], c["resource"]) for c in new_calls if c["code"] < 300} == {
        ("create", "networkpolicies"),
        ("delete", "networkpolicies"),
    }
    assert cap.pods == []


def test_uninstall_keep_isolation_leaves_policy_in_place(k8s):
    isolate(k8s.api, NS, REL)
    result = uninstall_release(k8s.api, NS, REL, keep_isolation=True)
    assert not result.isolation_removed
    client.NetworkingV1Api(k8s.api).read_namespaced_network_policy(isolation_policy_name(REL), NS)


@pytest.mark.parametrize("compress", [True, False])
def test_uninstall_reads_gzip_and_uncompressed_release_payloads(tmp_path, compress):
    from tests.plugins.kubernetes_sandbox import start_sandbox

    box = start_sandbox(tmp_path, compress=compress)
    try:
        result = uninstall_release(box.api, NS, REL)
        assert result.revision == 2
        assert "Deployment/mcp-tunnel" in result.deleted
        assert "CronJob/mcp-tunnel-cert-renew" in result.deleted
    finally:
        box.stop()


def test_capture_caps_each_log_stream(k8s):
    cap = capture(k8s.api, NS, REL, max_log_bytes=100)
    pod = k8s.seeded.pods[0]
    assert len(cap.artifacts[f"logs/{pod}/cloudflared.log"]) == 100
    assert f"logs/{pod}/cloudflared.log" in cap.truncated
    assert cap.complete  # truncated is reported separately from what did not finish


def test_with_slow_garbage_collection_the_uninstall_waits_and_no_pod_comes_back(k8s):
    """GC is asynchronous (FACTS §7): the ReplicaSet outlives the delete calls and would
    recreate the pods deleted at the Pod slot; the uninstall polls until nothing of the
    release is left, then nothing reappears."""
    k8s.cluster.gc.delay_s = 1.5
    sel = "app.kubernetes.io/instance=mcp-tunnel"
    core, apps = client.CoreV1Api(k8s.api), client.AppsV1Api(k8s.api)
    result = uninstall_release(k8s.api, NS, REL, timeout_s=20)
    assert set(k8s.seeded.pods) <= set(result.pods_deleted)
    deletes = [c for c in k8s.calls() if c["verb"] == "delete" and c["resource"] == "deployments"]
    assert deletes and all(c["code"] == 200 for c in deletes)
    deadline = time.monotonic() + 2.5  # longer than a GC round: nothing is recreated
    while time.monotonic() < deadline:
        assert core.list_namespaced_pod(NS, label_selector=sel).items == []
        assert apps.list_namespaced_replica_set(NS, label_selector=sel).items == []
        time.sleep(0.2)


def test_the_uninstall_fails_naming_what_is_left_when_the_collector_is_too_slow(k8s):
    k8s.cluster.gc.delay_s = 30
    with pytest.raises(StepFailed) as err:
        uninstall_release(k8s.api, NS, REL, timeout_s=1.5)
    assert "not fully uninstalled after 1.5 s" in err.value.detail
    assert "ReplicaSet/mcp-tunnel-" in err.value.detail
