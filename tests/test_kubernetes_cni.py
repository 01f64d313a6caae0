"""Is NetworkPolicy enforced? tasks/kubernetes_cni.py against the sandbox Kubernetes API
(real ``kubernetes`` client over HTTPS), with the sandbox's network plugin switched
between Calico, flannel and none (sandbox/k8s_cni.py, the projects' own manifests);
real kubectl reads the same objects; the Helm isolation step warns when enforcement is
not seen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client

from sandbox.k8s_cni import MANIFESTS
from tasks.kubernetes_cni import classify, detect_enforcement
from tests.test_kubectl import kubectl

FIXTURES = Path(__file__).parent / "fixtures" / "k8s_cni"


def set_cni(box: Any, cni: str | None, *, ready: bool = True) -> None:
    httpx.post(
        f"{box.url}/_sandbox/cni", json={"cni": cni, "ready": ready}, verify=box.verify
    ).raise_for_status()


def test_each_plugin_gives_its_verdict_from_what_it_leaves_in_the_api(k8s: Any) -> None:
    before = len(k8s.calls())
    found = detect_enforcement(k8s.api, op="test")  # the sandbox default: Calico
    assert (found.status, found.cni, found.reason) == ("enforced", ["Calico"], "")
    seen = dict(found.evidence)
    assert seen["DaemonSet kube-system/calico-node"] == (
        "Calico agent, ready on 1 of 1 node(s); implements NetworkPolicy"
    )
    assert "6 CRD(s) of Calico" in seen["CustomResourceDefinitions"]
    assert "projectcalico.org/IPv4Address" in seen["Node sandbox-node-1"]

    set_cni(k8s, "flannel")
    found = detect_enforcement(k8s.api, op="test")
    assert (found.status, found.cni) == ("not enforced", ["flannel"])
    assert "flannel does not implement NetworkPolicy" in found.reason
    assert "DaemonSet kube-flannel/kube-flannel-ds" in dict(found.evidence)

    set_cni(k8s, None)
    found = detect_enforcement(k8s.api, op="test")
    assert found.status == "unverifiable"
    assert "no NetworkPolicy-enforcing CNI is known present" in found.reason
    assert dict(found.evidence) == {  # kube-proxy runs, but it is no network plugin
        "DaemonSets": "1 DaemonSet(s) in any namespace; none is a known CNI agent"
    }

    set_cni(k8s, "calico", ready=False)  # scheduled, not ready: not claimed
    found = detect_enforcement(k8s.api, op="test")
    assert found.status == "unverifiable"
    assert "calico-node: ready on 0 of 1" in found.reason
    # read-only: the cluster recorded no mutating call
    assert k8s.calls()[before:] == []


def test_cilium_enforces_unless_its_policy_enforcement_mode_is_never(k8s: Any) -> None:
    set_cni(k8s, "cilium")
    found = detect_enforcement(k8s.api, op="test")
    assert (found.status, found.cni) == ("enforced", ["Cilium"])
    seen = dict(found.evidence)
    assert seen["ConfigMap kube-system/cilium-config"] == "enable-policy: default"
    assert "io.cilium.network.ipv4-pod-cidr" in seen["Node sandbox-node-1"]
    httpx.post(
        f"{k8s.url}/_sandbox/cni",
        json={"cni": "cilium", "enable_policy": "never"},
        verify=k8s.verify,
    ).raise_for_status()
    found = detect_enforcement(k8s.api, op="test")
    assert found.status == "not enforced"
    assert found.reason.startswith(
        "Cilium enforces no NetworkPolicy (policy enforcement mode never) and no policy agent"
    )
    # the agent's config unreadable: the question stays open
    k8s.faults(deny=[{"verb": "get", "resource": "configmaps", "name": "cilium-config"}])
    found = detect_enforcement(k8s.api, op="test")
    assert found.status == "unverifiable"
    assert "cilium-config" in found.reason


def test_refused_reads_are_evidence_and_never_a_claim(k8s: Any) -> None:
    # The auditor may not list DaemonSets cluster-wide: kube-system & co. are read instead.
    k8s.faults(deny=[{"verb": "list", "resource": "daemonsets", "namespace": ""}])
    found = detect_enforcement(k8s.api, op="audit")
    assert found.status == "enforced"
    refused = dict(found.evidence)["DaemonSets (all namespaces)"]
    assert "forbidden by RBAC" in refused and "at the cluster scope" in refused
    set_cni(k8s, "flannel")  # flannel seen, but not every namespace: no "not enforced"
    found = detect_enforcement(k8s.api, op="audit")
    assert found.status == "unverifiable"
    assert found.reason.startswith("cannot read DaemonSets (all namespaces)")
    k8s.faults(deny=[{"verb": "list", "resource": "*"}])
    set_cni(k8s, "calico")
    found = detect_enforcement(k8s.api, op="audit")
    assert found.status == "unverifiable" and found.reason.startswith("cannot read")
    assert {s for s, _ in found.evidence} >= {"CustomResourceDefinitions", "Nodes"}


def test_leftovers_of_a_policy_plugin_are_not_enforcement(k8s: Any) -> None:
    """A real Cilium node's annotations (rancher/rke2#3108), no Cilium agent running."""
    set_cni(k8s, None)
    node = yaml.safe_load((FIXTURES / "rke2-cilium-node.yaml").read_text())
    client.CoreV1Api(k8s.api).create_node(node)
    found = detect_enforcement(k8s.api, op="test")
    assert found.status == "unverifiable"
    assert found.reason.startswith("Cilium left CRDs or node annotations but no agent")
    observed = dict(found.evidence)["Node rke2-node-bc427852"]
    assert "io.cilium.network.ipv4-pod-cidr" in observed


def test_classify_reads_the_plugins_own_manifests() -> None:
    docs = [
        d
        for path in sorted(MANIFESTS.glob("*/*.y*ml"))
        for d in yaml.safe_load_all(path.read_text())
        if d and d["kind"] == "DaemonSet"
    ]
    agents = {d["metadata"]["name"]: classify(d) for d in docs}
    assert agents["calico-node"].cni == "Calico" and agents["calico-node"].enforces is True
    assert agents["kube-flannel-ds"].enforces is False
    assert agents["cilium"].cni == "Cilium" and agents["cilium"].enforces is True
    assert agents["kube-proxy"] is None  # kubeadm's, on every cluster: no network plugin
    # flannel's Helm chart can add kube-network-policies as a container of its DaemonSet
    flannel = next(d for d in docs if d["metadata"]["name"] == "kube-flannel-ds")
    flannel["spec"]["template"]["spec"]["containers"].append(
        {
            "name": "kube-network-policies",
            "image": "registry.k8s.io/networking/kube-network-policies:v0.6.0",
        }
    )
    assert classify(flannel).enforces is True
    weave = {"metadata": {"name": "weave-net"}, "spec": {"template": {"spec": {}}}}
    assert classify(weave).enforces is False  # no weave-npc container
    assert classify({"metadata": {"name": "coredns"}}) is None


def test_kubectl_reads_the_same_objects(k8s: Any) -> None:
    assert kubectl(k8s, "get", "ds", "-A", "-o", "name").stdout.split() == [
        "daemonset.apps/calico-node",
        "daemonset.apps/kube-proxy",
    ]
    rows = kubectl(k8s, "get", "ds", "-n", "kube-system", "--no-headers").stdout.split()
    assert rows[:6] == ["calico-node", "1", "1", "1", "1", "1"]
    crds = kubectl(k8s, "get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/ipamhandles.crd.projectcalico.org" in (
        crds
    )
    annotations = json.loads(
        kubectl(
            k8s, "get", "node", "sandbox-node-1", "-o", "jsonpath={.metadata.annotations}"
        ).stdout
    )
    assert annotations["projectcalico.org/IPv4Address"] == "10.0.0.10/24"
    set_cni(k8s, "flannel")
    assert kubectl(k8s, "get", "crd", "-o", "name").stdout == ""
    assert kubectl(k8s, "get", "ds", "-A", "--no-headers").stdout.split()[:2] == [
        "kube-flannel",
        "kube-flannel-ds",
    ]
    assert "Ready" in kubectl(k8s, "get", "nodes", "--no-headers").stdout


def test_isolation_warns_when_enforcement_is_not_seen(tmp_path: Path, k8s: Any) -> None:
    import targets.helm as _helm
    from runbook.plan_text import warnings
    from tests.test_helm_e2e import step_context

    set_cni(k8s, None)
    stop = step_context(tmp_path, k8s, "stop_stack")
    data = _helm.isolate(stop)
    assert data["enforcement"] == "unverifiable"
    [rec] = stop.step_records("network_policy.enforcement")
    assert rec.data["status"] == "unverifiable"
    [warning] = warnings(stop.trail.records())
    assert warning.startswith("NetworkPolicy unverifiable on the cluster (stop_stack):")
    assert "the isolation policies hold only where the network plugin enforces them" in warning

    set_cni(k8s, "calico")
    again = step_context(tmp_path / "again", k8s, "stop_stack")
    assert _helm.isolate(again)["enforcement"] == "enforced"
    assert warnings(again.trail.records()) == []
