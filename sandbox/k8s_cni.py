"""The sandbox cluster's node and, when asked, its network plugin (CNI) — what a real
cluster shows of them through the API, so a check of NetworkPolicy enforcement
(tasks/kubernetes_cni.py) reads the same objects it reads on a real cluster.

- :func:`seed_node` adds the one node every sandbox pod runs on (``sandbox-node-1``)
  and kubeadm's ``kube-proxy`` DaemonSet (present whatever the plugin).
- :func:`set_cni` installs a plugin from its project's own manifest
  (sandbox/cni_manifests/, sources in SOURCES.md there) or removes it:
  ``calico`` (the ``calico-node`` DaemonSet in kube-system and Calico's CRDs; the
  node gets the ``projectcalico.org/IPv4Address`` and ``IPv4IPIPTunnelAddr``
  annotations calico-node writes), ``cilium`` (its quick-install ``cilium``
  DaemonSet and ``cilium-config`` ConfigMap, optionally in policy enforcement mode
  ``never``; ``io.cilium.network.*`` node annotations) or ``flannel`` (the ``kube-flannel-ds`` DaemonSet in
  kube-flannel; the ``flannel.alpha.coreos.com/*`` annotations flanneld writes), or
  ``None`` (no plugin object at all: what a cluster whose plugin leaves nothing in the
  API looks like).

No DaemonSet controller runs here: a plugin's DaemonSet gets the status the controller
reports when its agent runs on the node (``ready=False``: scheduled, not ready).
Packets are not simulated; this is what the API says, as on a real cluster.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from sandbox.k8s_store import RESOURCES, now_rfc3339

NODE = RESOURCES[("", "nodes")]
DAEMONSET = RESOURCES[("apps", "daemonsets")]
CRD = RESOURCES[("apiextensions.k8s.io", "customresourcedefinitions")]
NODE_NAME = "sandbox-node-1"
NODE_IP = "10.0.0.10"
MANIFESTS = Path(__file__).parent / "cni_manifests"
_KINDS = {
    "DaemonSet": RESOURCES[("apps", "daemonsets")],
    "CustomResourceDefinition": RESOURCES[("apiextensions.k8s.io", "customresourcedefinitions")],
    "ConfigMap": RESOURCES[("", "configmaps")],
}
CNIS = ("calico", "cilium", "flannel")
CONFIGMAP = RESOURCES[("", "configmaps")]

# What each plugin's agent writes on its node (calico: libcalico-go
# lib/backend/k8s/resources/node.go; flannel: pkg/subnet/kube/annotations.go).
_NODE_ANNOTATIONS: dict[str, dict[str, str]] = {
    "calico": {
        "projectcalico.org/IPv4Address": f"{NODE_IP}/24",
        "projectcalico.org/IPv4IPIPTunnelAddr": "192.168.235.192",
    },
    "cilium": {  # as on the nodes pasted in rancher/rke2#3108 (Cilium's node annotations)
        "io.cilium.network.ipv4-cilium-host": "10.244.0.1",
        "io.cilium.network.ipv4-health-ip": "10.244.0.77",
        "io.cilium.network.ipv4-pod-cidr": "10.244.0.0/24",
    },
    "flannel": {
        "flannel.alpha.coreos.com/backend-data": '{"VNI":1,"VtepMAC":"6e:2b:0f:9d:2e:41"}',
        "flannel.alpha.coreos.com/backend-type": "vxlan",
        "flannel.alpha.coreos.com/kube-subnet-manager": "true",
        "flannel.alpha.coreos.com/public-ip": NODE_IP,
    },
}
_ANNOTATION_PREFIXES = ("projectcalico.org/", "flannel.alpha.coreos.com/", "io.cilium.network.")


def seed_node(cluster: Any) -> dict[str, Any]:
    """The sandbox's node, as the kubelet registers it, and kube-proxy (idempotent)."""
    with cluster.transaction():
        _seed_base(cluster)
        found = cluster.store.find(NODE, "", NODE_NAME)
        if found is not None:
            return copy.deepcopy(found)
        now = now_rfc3339()
        node = cluster.store.insert(
            NODE,
            "",
            {
                "metadata": {
                    "name": NODE_NAME,
                    "labels": {
                        "beta.kubernetes.io/arch": "amd64",
                        "beta.kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "kubernetes.io/hostname": NODE_NAME,
                        "kubernetes.io/os": "linux",
                    },
                    "annotations": {
                        "node.alpha.kubernetes.io/ttl": "0",
                        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                    },
                },
                "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
            },
        )
        node["status"] = {
            "addresses": [
                {"address": NODE_IP, "type": "InternalIP"},
                {"address": NODE_NAME, "type": "Hostname"},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "6f0c3b86-5d1e-4a8e-9c1f-2b7d8f3a9e10",
                "machineID": "0d7c5b2e8f6a4c1d9e3b7a5f2c8d4e6b",
                "systemUUID": "9a1e4c7b-3d5f-4e2a-8b6c-0f1d2e3a4b5c",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kernelVersion": "6.1.0-31-amd64",
                "kubeProxyVersion": "v1.32.4",
                "kubeletVersion": "v1.32.4",
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
            },
        }
        return copy.deepcopy(node)


def _daemonset_status(ready: bool) -> dict[str, Any]:
    """What the DaemonSet controller reports for an agent on the one node."""
    return {
        "currentNumberScheduled": 1,
        "desiredNumberScheduled": 1,
        "numberAvailable": 1 if ready else 0,
        "numberMisscheduled": 0,
        "numberReady": 1 if ready else 0,
        "observedGeneration": 1,
        "updatedNumberScheduled": 1,
        **({} if ready else {"numberUnavailable": 1}),
    }


def _seed_base(cluster: Any) -> None:
    """What kubeadm runs on every node whatever the plugin: the kube-proxy DaemonSet."""
    for doc in _manifest_docs("base"):
        ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
        if cluster.store.find(DAEMONSET, ns, name) is None:
            cluster.store.insert(DAEMONSET, ns, doc)["status"] = _daemonset_status(True)


def _manifest_docs(cni: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((MANIFESTS / cni).glob("*.y*ml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _installed(cluster: Any) -> list[tuple[Any, str, str]]:
    """(resource, namespace, name) of every object any known plugin installs."""
    out = []
    for cni in CNIS:
        for doc in _manifest_docs(cni):
            res = _KINDS[doc["kind"]]
            ns = doc["metadata"].get("namespace", "") if res.namespaced else ""
            out.append((res, ns, doc["metadata"]["name"]))
    return out


def set_cni(
    cluster: Any, cni: str | None, *, ready: bool = True, enable_policy: str | None = None
) -> None:
    """Installs plugin ``cni`` (one of :data:`CNIS`) in place of any other, or removes
    every plugin object (``None``). ``ready=False``: the agent is scheduled on the node
    but not ready. ``enable_policy`` (Cilium): its policy enforcement mode, written to
    ``cilium-config`` as the Helm value ``policyEnforcementMode`` does (``never``:
    nothing is enforced)."""
    if enable_policy is not None and cni != "cilium":
        raise ValueError("enable_policy: only Cilium has a policy enforcement mode")
    if enable_policy not in (None, "default", "always", "never"):
        raise ValueError(f"enable_policy: {enable_policy!r} is not default, always or never")
    if cni is not None and cni not in CNIS:
        raise ValueError(f"cni: unknown plugin {cni!r} (one of {', '.join(CNIS)} or none)")
    seed_node(cluster)
    with cluster.transaction():
        for res, ns, name in _installed(cluster):
            if cluster.store.find(res, ns, name) is not None:
                cluster.store.remove(res, ns, name)
        node = cluster.store.get(NODE, "", NODE_NAME)
        annotations = {
            k: v
            for k, v in (node["metadata"].get("annotations") or {}).items()
            if not k.startswith(_ANNOTATION_PREFIXES)
        }
        if cni is None:
            node["metadata"]["annotations"] = annotations
            node["metadata"]["resourceVersion"] = cluster.store.next_rv()
            return
        for doc in _manifest_docs(cni):
            if doc["kind"] == "DaemonSet":
                ds = cluster.store.insert(DAEMONSET, doc["metadata"]["namespace"], doc)
                ds["status"] = _daemonset_status(ready)
            elif doc["kind"] == "ConfigMap":
                cm = copy.deepcopy(doc)
                if enable_policy is not None:
                    cm["data"]["enable-policy"] = enable_policy
                cluster.store.insert(CONFIGMAP, doc["metadata"]["namespace"], cm)
            elif doc["kind"] == "CustomResourceDefinition":
                crd = cluster.store.insert(CRD, "", doc)
                crd["status"] = {
                    "acceptedNames": copy.deepcopy(doc["spec"]["names"]),
                    "conditions": [
                        {"type": t, "status": "True", "reason": r, "lastTransitionTime": now}
                        for t, r, now in (
                            ("NamesAccepted", "NoConflicts", now_rfc3339()),
                            ("Established", "InitialNamesAccepted", now_rfc3339()),
                        )
                    ],
                    "storedVersions": [
                        v["name"] for v in doc["spec"]["versions"] if v.get("storage")
                    ],
                }
            else:
                raise ValueError(f"{cni} manifest: unexpected kind {doc['kind']!r}")
        if ready:
            annotations.update(_NODE_ANNOTATIONS[cni])
        node["metadata"]["annotations"] = annotations
        node["metadata"]["resourceVersion"] = cluster.store.next_rv()
