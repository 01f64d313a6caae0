"""Is NetworkPolicy enforced on this cluster? What the API shows of its CNI.

A NetworkPolicy is only data: the cluster's network plugin (CNI) enforces it, and a
plugin that does not implement NetworkPolicy leaves every policy a no-op
(kubernetes.io, "Network Policies": "Creating a NetworkPolicy resource without a
controller that implements it will have no effect"). The API does not say which plugin
runs, so this module reads what the plugins leave behind, read-only:

- **DaemonSets** (every namespace, else the plugins' usual ones: ``kube-system``,
  ``calico-system``, ``kube-flannel``): the node agents, by name (``calico-node``,
  ``canal``, ``cilium``, ``antrea-agent``, ``kube-router``, ``weave-net``,
  ``kube-flannel-ds``, ...) and container (``weave-npc``, ``kube-network-policies``),
  with how many nodes run them ready (``status.numberReady`` of
  ``desiredNumberScheduled``); for Cilium also its ``cilium-config`` ConfigMap
  (``enable-policy: never`` turns enforcement off);
- **CustomResourceDefinitions** of the policy plugins (``*.crd.projectcalico.org``,
  ``*.cilium.io``, ``*.crd.antrea.io``);
- **Node annotations** the agents write (``projectcalico.org/IPv4Address``,
  ``io.cilium.network.*`` / ``network.cilium.io/*``, ``flannel.alpha.coreos.com/*``).

The verdict never claims more than it saw:

- ``enforced``: an agent that implements NetworkPolicy runs ready on every node it is
  scheduled to;
- ``not enforced``: every DaemonSet of the cluster was read, a plugin that does not
  implement NetworkPolicy (flannel alone) runs, and nothing of a policy plugin is
  seen (no agent, CRD or node annotation);
- ``unverifiable``: anything else — a read refused, an agent not ready everywhere,
  only leftovers (CRDs, annotations) of a policy plugin, or no plugin recognised
  (managed clusters' own dataplanes). The reason says what to confirm.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes import client

from core.errors import McpIrError
from tasks.kubernetes_calls import k8s_call

ENFORCED, NOT_ENFORCED, UNVERIFIABLE = "enforced", "not enforced", "unverifiable"
AGENT_NAMESPACES = ("kube-system", "calico-system", "kube-flannel")

# CRD groups and node-annotation prefixes each policy plugin installs or writes.
_POLICY_CRD_GROUPS = {
    "crd.projectcalico.org": "Calico",
    "projectcalico.org": "Calico",
    "cilium.io": "Cilium",
    "crd.antrea.io": "Antrea",
}
_NODE_ANNOTATIONS = {
    "projectcalico.org/": ("Calico", True),
    "io.cilium.network.": ("Cilium", True),
    "network.cilium.io/": ("Cilium", True),
    "kube-router.io/": ("kube-router", True),
    "flannel.alpha.coreos.com/": ("flannel", False),
}


@dataclass(frozen=True)
class Agent:
    """A CNI node agent found as a DaemonSet.

    ``enforces``: True when the plugin implements NetworkPolicy, False when it does not,
    None when that depends on configuration the API does not show."""

    cni: str
    where: str
    enforces: bool | None
    desired: int
    ready: int
    note: str = ""
    namespace: str = ""

    @property
    def everywhere(self) -> bool:
        return self.desired > 0 and self.ready >= self.desired

    def describe(self) -> str:
        verdict = {True: "implements NetworkPolicy", False: "does not implement NetworkPolicy"}
        what = verdict.get(self.enforces, "NetworkPolicy support depends on its configuration")
        note = f"; {self.note}" if self.note else ""
        return f"{self.cni} agent, ready on {self.ready} of {self.desired} node(s); {what}{note}"


@dataclass
class Enforcement:
    """The verdict, the evidence it rests on (``(source, observed)`` pairs) and, unless
    ``enforced``, why."""

    status: str
    evidence: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""
    cni: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "cni": self.cni,
            "reason": self.reason,
            "evidence": [{"source": s, "observed": o} for s, o in self.evidence],
        }


def _containers(ds: dict[str, Any]) -> list[dict[str, Any]]:
    spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    return list(spec.get("containers") or []) + list(spec.get("initContainers") or [])


def classify(ds: dict[str, Any]) -> Agent | None:
    """The CNI agent a DaemonSet (JSON wire form) is, or None when it is none we know."""
    meta, status = ds.get("metadata") or {}, ds.get("status") or {}
    name = str(meta.get("name", ""))
    where = f"DaemonSet {meta.get('namespace', '')}/{name}"
    desired, ready = (
        int(status.get("desiredNumberScheduled") or 0),
        int(status.get("numberReady") or 0),
    )
    containers = _containers(ds)
    names = {str(c.get("name", "")) for c in containers}
    images = " ".join(str(c.get("image", "")) for c in containers)
    args = " ".join(str(a) for c in containers for a in (c.get("args") or []))

    def agent(cni: str, enforces: bool | None, note: str = "") -> Agent:
        return Agent(cni, where, enforces, desired, ready, note, str(meta.get("namespace", "")))

    if "kube-network-policies" in names or "/kube-network-policies" in images:
        return agent("kube-network-policies", True, f"container of {name}")
    if name == "calico-node":
        return agent("Calico", True)
    if name == "canal":
        return agent("Canal (Calico policy, flannel networking)", True)
    if name == "cilium":
        return agent("Cilium", True)
    if name == "antrea-agent":
        return agent("Antrea", True)
    if name == "kube-router":
        off = "--run-firewall=false" in args
        return agent("kube-router", not off, "started with --run-firewall=false" if off else "")
    if name == "weave-net":
        npc = "weave-npc" in names
        return agent("Weave Net", npc, "" if npc else "no weave-npc container")
    if name.startswith("kube-flannel-ds") or name == "kube-flannel":
        return agent("flannel", False)
    if name == "kindnet":
        return agent("kindnet", None, "NetworkPolicy support depends on the kindnet version")
    if name == "aws-node":
        return agent("Amazon VPC CNI", None, "enforcement needs its network policy agent enabled")
    return None


class _Reader:
    """Read-only calls; a failed read is kept as evidence, never raised."""

    def __init__(self, api: client.ApiClient, op: str) -> None:
        self.api, self.op = api, op
        self.failures: list[str] = []
        self.evidence: list[tuple[str, str]] = []

    def call(self, what: str, kind: str, namespace: str, fn: Any, *args: Any) -> Any:
        try:
            out = k8s_call(self.op, "list", kind, None, namespace, fn, *args)
        except McpIrError as exc:
            self.failures.append(f"{what}: {exc.detail}")
            self.evidence.append((what, f"not readable: {exc.detail}"))
            return None
        except ValueError as exc:  # the client could not decode what the server sent
            self.failures.append(f"{what}: undecodable answer ({exc})")
            self.evidence.append((what, f"not decodable: {exc}"))
            return None
        return self.api.sanitize_for_serialization(out).get("items") or []


def _cilium_mode(reader: _Reader, agent: Agent) -> Agent:
    """Cilium enforces nothing in policy enforcement mode ``never`` (``enable-policy``
    of its ``cilium-config`` ConfigMap; docs.cilium.io, "Policy Enforcement Modes");
    a config that cannot be read leaves the question open."""
    where = f"ConfigMap {agent.namespace}/cilium-config"
    try:
        cm = k8s_call(
            reader.op,
            "get",
            "ConfigMap",
            "cilium-config",
            agent.namespace,
            client.CoreV1Api(reader.api).read_namespaced_config_map,
            "cilium-config",
            agent.namespace,
        )
    except McpIrError as exc:
        reader.failures.append(f"{where}: {exc.detail}")
        reader.evidence.append((where, f"not readable: {exc.detail}"))
        return replace(agent, enforces=None, note=f"{where} not readable")
    mode = str((cm.data or {}).get("enable-policy") or "default")
    reader.evidence.append((where, f"enable-policy: {mode}"))
    if mode == "never":
        return replace(agent, enforces=False, note="policy enforcement mode never")
    return agent


def _daemonsets(reader: _Reader) -> tuple[list[dict[str, Any]], bool]:
    """(DaemonSets, whether those of every namespace were read)."""
    apps = client.AppsV1Api(reader.api)
    every = reader.call(
        "DaemonSets (all namespaces)", "DaemonSet", "", apps.list_daemon_set_for_all_namespaces
    )
    if every is not None:
        return every, True
    found: list[dict[str, Any]] = []
    for ns in AGENT_NAMESPACES:
        items = reader.call(
            f"DaemonSets in {ns}", "DaemonSet", ns, apps.list_namespaced_daemon_set, ns
        )
        found += items or []
    return found, False


def detect_enforcement(api: client.ApiClient, *, op: str) -> Enforcement:
    """Reads DaemonSets, CRDs and nodes (never writes) and judges whether
    NetworkPolicies are enforced (see the module doc for the rules)."""
    reader = _Reader(api, op)
    daemonsets, complete = _daemonsets(reader)
    agents = [a for a in (classify(d) for d in daemonsets) if a is not None]
    agents = [_cilium_mode(reader, a) if a.cni == "Cilium" else a for a in agents]
    for a in agents:
        reader.evidence.append((a.where, a.describe()))
    if not agents:
        scope = "any namespace" if complete else ", ".join(AGENT_NAMESPACES)
        read = f"{len(daemonsets)} DaemonSet(s)" if daemonsets else "no DaemonSet"
        reader.evidence.append(("DaemonSets", f"{read} in {scope}; none is a known CNI agent"))
    hints: set[str] = set()
    crds = reader.call(
        "CustomResourceDefinitions",
        "CustomResourceDefinition",
        "",
        client.ApiextensionsV1Api(api).list_custom_resource_definition,
    )
    for crd in crds or []:
        group = str((crd.get("spec") or {}).get("group", ""))
        if group in _POLICY_CRD_GROUPS:
            hints.add(_POLICY_CRD_GROUPS[group])
    for cni in sorted(hints):
        groups = sorted(g for g, c in _POLICY_CRD_GROUPS.items() if c == cni)
        count = sum(1 for c in crds or [] if (c.get("spec") or {}).get("group") in groups)
        reader.evidence.append(
            ("CustomResourceDefinitions", f"{count} CRD(s) of {cni} ({', '.join(groups)})")
        )
    nodes = reader.call("Nodes", "Node", "", client.CoreV1Api(api).list_node)
    for node in nodes or []:
        meta = node.get("metadata") or {}
        seen = sorted(
            {
                (cni, enforces, key)
                for key in meta.get("annotations") or {}
                for prefix, (cni, enforces) in _NODE_ANNOTATIONS.items()
                if key.startswith(prefix)
            }
        )
        if seen:
            reader.evidence.append(
                (f"Node {meta.get('name', '')}", "annotations " + ", ".join(k for _, _, k in seen))
            )
        hints |= {cni for cni, enforces, _ in seen if enforces}
    return _verdict(agents, hints, complete, reader)


def _verdict(agents: list[Agent], hints: set[str], complete: bool, reader: _Reader) -> Enforcement:
    evidence = reader.evidence
    enforcing = [a for a in agents if a.enforces is True]
    running = [a for a in enforcing if a.everywhere]
    if running:
        return Enforcement(ENFORCED, evidence, "", sorted({a.cni for a in running}))
    names = sorted({a.cni for a in agents})
    if enforcing:
        partial = "; ".join(f"{a.where}: ready on {a.ready} of {a.desired}" for a in enforcing)
        reason = (
            f"the NetworkPolicy agent does not run ready on every node ({partial}): pods on "
            "a node without a ready agent are not policed"
        )
        return Enforcement(UNVERIFIABLE, evidence, reason, names)
    problems = "; ".join(reader.failures)
    hints = hints - {a.cni for a in agents}  # its agent runs: not a leftover
    if hints:
        reason = (
            f"{', '.join(sorted(hints))} left CRDs or node annotations but no agent of it was "
            "found running"
            + (f" ({problems})" if problems else "")
            + ": confirm the plugin runs on every node"
        )
        return Enforcement(UNVERIFIABLE, evidence, reason, names)
    if problems:
        return Enforcement(UNVERIFIABLE, evidence, f"cannot read {problems}", names)
    inert = [a for a in agents if a.enforces is False and a.everywhere]
    depends = [a for a in agents if a.enforces is None]
    if inert and complete and not depends:
        why = "; ".join(
            f"{a.cni} enforces no NetworkPolicy ({a.note})"
            if a.note
            else f"{a.cni} does not implement NetworkPolicy"
            for a in sorted(inert, key=lambda a: a.cni)
        )
        reason = f"{why} and no policy agent runs: every NetworkPolicy is a no-op"
        return Enforcement(NOT_ENFORCED, evidence, reason, names)
    if depends:
        reason = "; ".join(f"{a.cni}: {a.note}" for a in depends) + ": confirm with the cluster"
    else:
        reason = (
            "no NetworkPolicy-enforcing CNI is known present (no calico-node, canal, cilium, "
            "antrea-agent, kube-router or weave-net DaemonSet, no policy plugin CRDs or node "
            "annotations): confirm the cluster's network plugin enforces NetworkPolicy"
        )
    return Enforcement(UNVERIFIABLE, evidence, reason, names)
