"""NetworkPolicy isolation that holds: the effective policy set of a release's pods.

NetworkPolicies add up (FACTS §7): a pod accepts a connection if ANY policy selecting
it allows it, and may open one if any selecting policy's egress rules allow it. A
deny-all policy beside a chart policy that allows ingress from the whole namespace
isolates nothing on ingress. So isolation here is:

1. :func:`plan_isolation` (read-only): every policy selecting the release's pods is
   captured (the caller stores them as evidence BEFORE anything changes); each one
   whose rules let traffic through is either **removed** (the release's own policies:
   labelled ``app.kubernetes.io/instance=<release>`` or annotated
   ``meta.helm.sh/release-name=<release>``) or **narrowed** (anyone else's: its pod
   selector gets ``app.kubernetes.io/instance NotIn (<release>)``, so it keeps working
   for the other pods it governs and stops selecting ours).
2. :func:`apply_isolation`: the deny-all policy (``tasks.kubernetes.isolate``), then the
   removals and narrowings, each guarded by the resourceVersion seen when planning (a
   policy changed meanwhile is a 409 and the plan is made again).
3. :func:`verify_isolation`: the policies are read again and the union of every policy
   selecting each of the release's pod label sets is computed, ingress and egress;
   anything still allowed fails the step, naming the policies that allow it.
4. :func:`cut_connections`: the release's pods are deleted (grace period 0). Whether a
   CNI cuts flows that were already open is up to the CNI; new pods start isolated.
5. :func:`restore_policies`: ``restore_service`` re-creates the removed policies and
   undoes the narrowing (only where the selector is still exactly what we set).

Enforcement needs a CNI that implements NetworkPolicy (Calico, Cilium, ...); without
one every policy here is inert and the verification only proves what the API holds.

The pure functions take policies in their JSON wire form (camelCase dicts).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from core.errors import StepFailed
from tasks.kubernetes_calls import (
    create_object,
    delete_pod_now,
    k8s_call,
    list_pods,
    read_object,
)

INSTANCE_LABEL = "app.kubernetes.io/instance"
RELEASE_ANNOTATION = "meta.helm.sh/release-name"
NARROWED_ANNOTATION = "mcp-ir/narrowed-for"
ISOLATION_PREFIX = "mcp-ir-isolate-"


# ------------------------------------------------------------------ pure functions


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector semantics: ``{}`` selects everything, ``None`` nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.get("matchExpressions") or []:
        key, op, values = req.get("key"), req.get("operator"), req.get("values") or []
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(op)
        if not ok:
            return False
    return True


def policy_types(policy: dict[str, Any]) -> set[str]:
    """``spec.policyTypes``, or its default: Ingress always, Egress if egress rules."""
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types:
        return set(types)
    return {"Ingress", *(["Egress"] if spec.get("egress") else [])}


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector_matches((policy.get("spec") or {}).get("podSelector", {}), labels)


def allow_rules(policy: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The rules by which ``policy`` lets traffic through, per direction (a rule is an
    allow whatever its peers: an empty peer list or ``{}`` peer allows everyone)."""
    spec, types = policy.get("spec") or {}, policy_types(policy)
    return {
        "ingress": list(spec.get("ingress") or []) if "Ingress" in types else [],
        "egress": list(spec.get("egress") or []) if "Egress" in types else [],
    }


def _name(policy: dict[str, Any]) -> str:
    return (policy.get("metadata") or {}).get("name", "")


@dataclass
class Effective:
    """The effective NetworkPolicy set of pods with ``labels``: which policies select
    them, whether each direction is isolated (some selecting policy covers it), and
    which policies' rules allow traffic. Traffic in a direction is allowed when the
    direction is not isolated or any selecting policy has an allow rule for it."""

    labels: dict[str, str]
    selecting: list[str] = field(default_factory=list)
    ingress_isolated: bool = False
    egress_isolated: bool = False
    ingress_allowed_by: list[str] = field(default_factory=list)
    egress_allowed_by: list[str] = field(default_factory=list)

    @property
    def ingress_allowed(self) -> bool:
        return not self.ingress_isolated or bool(self.ingress_allowed_by)

    @property
    def egress_allowed(self) -> bool:
        return not self.egress_isolated or bool(self.egress_allowed_by)

    def problems(self) -> list[str]:
        out = []
        for direction, allowed, isolated, by in (
            ("ingress", self.ingress_allowed, self.ingress_isolated, self.ingress_allowed_by),
            ("egress", self.egress_allowed, self.egress_isolated, self.egress_allowed_by),
        ):
            if not allowed:
                continue
            if not isolated:
                out.append(f"{direction} not isolated: no selecting policy covers {direction}")
            else:
                out.append(f"{direction} allowed by NetworkPolicy {', '.join(by)}")
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "selecting": self.selecting,
            "ingress_allowed": self.ingress_allowed,
            "egress_allowed": self.egress_allowed,
            "ingress_allowed_by": self.ingress_allowed_by,
            "egress_allowed_by": self.egress_allowed_by,
        }


def effective_policy(policies: list[dict[str, Any]], labels: dict[str, str]) -> Effective:
    """The union of every policy selecting pods with ``labels`` (same namespace)."""
    eff = Effective(labels=dict(labels))
    for policy in sorted(policies, key=_name):
        if not selects(policy, labels):
            continue
        eff.selecting.append(_name(policy))
        types = policy_types(policy)
        rules = allow_rules(policy)
        eff.ingress_isolated |= "Ingress" in types
        eff.egress_isolated |= "Egress" in types
        if rules["ingress"]:
            eff.ingress_allowed_by.append(_name(policy))
        if rules["egress"]:
            eff.egress_allowed_by.append(_name(policy))
    return eff


def owned_by_release(policy: dict[str, Any], release: str) -> bool:
    meta = policy.get("metadata") or {}
    return (meta.get("labels") or {}).get(INSTANCE_LABEL) == release or (
        meta.get("annotations") or {}
    ).get(RELEASE_ANNOTATION) == release


def narrowed_selector(selector: dict[str, Any] | None, release: str) -> dict[str, Any]:
    """``selector`` that no longer matches the release's pods."""
    out = copy.deepcopy(selector) if selector else {}
    exclude = {"key": INSTANCE_LABEL, "operator": "NotIn", "values": [release]}
    if exclude not in (out.get("matchExpressions") or []):
        out.setdefault("matchExpressions", []).append(exclude)
    return out


@dataclass(frozen=True)
class PolicyChange:
    """``action`` is ``remove`` or ``narrow``; ``original`` is the policy as captured."""

    name: str
    action: str
    resource_version: str
    original: dict[str, Any]


def plan_changes(
    policies: list[dict[str, Any]], label_sets: list[dict[str, str]], release: str
) -> tuple[list[dict[str, Any]], list[PolicyChange]]:
    """(captured, changes): every policy selecting any of ``label_sets``, and what must
    change so that none of them lets traffic through. The isolation policy itself is
    captured but never changed."""
    captured, changes = [], []
    for policy in sorted(policies, key=_name):
        if not any(selects(policy, labels) for labels in label_sets):
            continue
        captured.append(policy)
        name = _name(policy)
        if name == ISOLATION_PREFIX + release:
            continue
        rules = allow_rules(policy)
        if not rules["ingress"] and not rules["egress"]:
            continue  # only denies: harmless beside ours
        action = "remove" if owned_by_release(policy, release) else "narrow"
        rv = (policy.get("metadata") or {}).get("resourceVersion", "")
        changes.append(PolicyChange(name, action, rv, policy))
    return captured, changes


# ------------------------------------------------------------------ adapter calls


def _wire(api: client.ApiClient, obj: Any) -> dict[str, Any]:
    return api.sanitize_for_serialization(obj)


def list_policies(api: client.ApiClient, namespace: str, op: str) -> list[dict[str, Any]]:
    net = client.NetworkingV1Api(api)
    listed = k8s_call(
        op, "list", "NetworkPolicy", None, namespace, net.list_namespaced_network_policy, namespace
    )
    return [_wire(api, p) for p in listed.items]


def release_label_sets(
    api: client.ApiClient, namespace: str, release: str, op: str
) -> list[dict[str, str]]:
    """The label sets of the release's pods: the running pods and the pod templates of
    its Deployments and ReplicaSets (pods that will start). Never empty: the release
    label alone stands for pods not known yet."""
    sel = f"{INSTANCE_LABEL}={release}"
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    sets: list[dict[str, str]] = []
    pods = k8s_call(
        op, "list", "Pod", None, namespace, core.list_namespaced_pod, namespace, label_selector=sel
    )
    sets += [dict(p.metadata.labels or {}) for p in pods.items]
    for kind, lister in (
        ("Deployment", apps.list_namespaced_deployment),
        ("ReplicaSet", apps.list_namespaced_replica_set),
    ):
        items = k8s_call(op, "list", kind, None, namespace, lister, namespace, label_selector=sel)
        for item in items.items:
            template = item.spec.template.metadata if item.spec and item.spec.template else None
            if template is not None and template.labels:
                sets.append(dict(template.labels))
    sets.append({INSTANCE_LABEL: release})
    unique: list[dict[str, str]] = []
    for labels in sets:
        labels = {k: v for k, v in labels.items() if k != "pod-template-hash"}
        if labels not in unique:
            unique.append(labels)
    return unique


@dataclass
class IsolationPlan:
    """What :func:`plan_isolation` found: the captured policies (wire form) and the
    changes to make; ``label_sets`` are the release's pod label sets."""

    captured: list[dict[str, Any]]
    changes: list[PolicyChange]
    label_sets: list[dict[str, str]]

    def evidence(self) -> dict[str, Any]:
        return {
            "label_sets": self.label_sets,
            "policies": self.captured,
            "changes": [
                {"name": c.name, "action": c.action, "resourceVersion": c.resource_version}
                for c in self.changes
            ],
        }


def plan_isolation(api: client.ApiClient, namespace: str, release: str) -> IsolationPlan:
    """Read-only: the policies selecting the release's pods and what must change."""
    op = "isolate"
    label_sets = release_label_sets(api, namespace, release, op)
    policies = list_policies(api, namespace, op)
    captured, changes = plan_changes(policies, label_sets, release)
    return IsolationPlan(captured=captured, changes=changes, label_sets=label_sets)


def _apply_change(
    api: client.ApiClient, namespace: str, release: str, change: PolicyChange
) -> bool:
    """Applies one change guarded by the planned resourceVersion; False on a 409 (the
    policy changed since it was planned). A policy already gone is fine."""
    net = client.NetworkingV1Api(api)
    try:
        if change.action == "remove":
            k8s_call(
                "isolate",
                "delete",
                "NetworkPolicy",
                change.name,
                namespace,
                net.delete_namespaced_network_policy,
                change.name,
                namespace,
                body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(resource_version=change.resource_version)
                ),
                missing_ok=True,
            )
            return True
        spec = change.original.get("spec") or {}
        patch = {
            "metadata": {
                "resourceVersion": change.resource_version,
                "annotations": {NARROWED_ANNOTATION: release},
            },
            "spec": {"podSelector": narrowed_selector(spec.get("podSelector"), release)},
        }
        k8s_call(
            "isolate",
            "patch",
            "NetworkPolicy",
            change.name,
            namespace,
            net.patch_namespaced_network_policy,
            change.name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
            missing_ok=True,
        )
        return True
    except StepFailed as exc:
        if "HTTP 409" in exc.detail:
            return False
        raise


def apply_isolation(
    api: client.ApiClient, namespace: str, release: str, plan: IsolationPlan, *, attempts: int = 3
) -> dict[str, list[str]]:
    """Deny-all policy, then the plan's removals and narrowings (re-planned when a
    policy changed meanwhile). Returns ``{"removed": [...], "narrowed": [...]}``.

    Raises:
        StepFailed: RBAC/4xx answers, or policies that kept changing under us.
        TransientError: 5xx/unreachable (re-running is safe: every change is idempotent).
    """
    from tasks.kubernetes import isolate as deny_all

    deny_all(api, namespace, release)
    done: dict[str, list[str]] = {"removed": [], "narrowed": []}
    for _ in range(attempts):
        stale = []
        for change in plan.changes:
            if _apply_change(api, namespace, release, change):
                done["removed" if change.action == "remove" else "narrowed"].append(change.name)
            else:
                stale.append(change.name)
        if not stale:
            return done
        plan = plan_isolation(api, namespace, release)
    raise StepFailed(
        "isolate",
        f'NetworkPolicies in namespace "{namespace}" kept changing while being narrowed: '
        f"{', '.join(stale)}",
    )


def verify_isolation(api: client.ApiClient, namespace: str, release: str) -> list[Effective]:
    """The effective policy set of every pod label set of the release, read again from
    the cluster; raises StepFailed naming what still lets traffic through."""
    op = "verify_isolation"
    policies = list_policies(api, namespace, op)
    effective = [
        effective_policy(policies, labels)
        for labels in release_label_sets(api, namespace, release, op)
    ]
    problems = sorted({p for e in effective for p in e.problems()})
    if problems:
        raise StepFailed(
            op,
            f'release "{release}" in namespace "{namespace}" is not isolated: '
            + "; ".join(problems),
        )
    return effective


def cut_connections(api: client.ApiClient, namespace: str, release: str) -> list[str]:
    """Deletes the release's pods (grace period 0) so no connection opened before the
    isolation survives it; their controllers start new, isolated pods. Returns the
    names deleted."""
    selector = f"{INSTANCE_LABEL}={release}"
    deleted = [
        pod.metadata.name
        for pod in list_pods(api, namespace, selector, op="cut_connections")
        if delete_pod_now(api, namespace, pod.metadata.name, op="cut_connections")
    ]
    return sorted(deleted)


def _creatable(policy: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(policy)
    meta = body.setdefault("metadata", {})
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        meta.pop(key, None)
    body.pop("status", None)
    return body


def restore_policies(
    api: client.ApiClient,
    namespace: str,
    release: str,
    captured: list[dict[str, Any]],
    changes: list[dict[str, Any]],
) -> dict[str, list[str]]:
    """Undoes the isolation's changes from their evidence: removed policies are created
    again as captured (already present: left alone); narrowed ones get their captured
    pod selector back if they still carry exactly our narrowing (someone who changed
    them since is not overridden: listed as ``left``)."""
    op = "restore_policies"
    net = client.NetworkingV1Api(api)
    by_name = {_name(p): p for p in captured}
    out: dict[str, list[str]] = {"recreated": [], "existing": [], "reverted": [], "left": []}
    for change in changes:
        name, original = change["name"], by_name.get(change["name"])
        if original is None:
            continue
        current = read_object(api, "NetworkPolicy", namespace, name, op=op, missing_ok=True)
        if change["action"] == "remove":
            made = None
            if current is None:
                body = _creatable(original)
                made = create_object(
                    api, "NetworkPolicy", namespace, name, body, op=op, exists_ok=True
                )
            out["recreated" if made is not None else "existing"].append(name)
            continue
        if current is None:
            out["left"].append(name)
            continue
        wire = _wire(api, current)
        selector = (original.get("spec") or {}).get("podSelector") or {}
        if (wire.get("spec") or {}).get("podSelector") != narrowed_selector(selector, release):
            out["left"].append(name)
            continue
        patch = {
            "metadata": {
                "resourceVersion": wire["metadata"]["resourceVersion"],
                "annotations": {NARROWED_ANNOTATION: None},
            },
            "spec": {"podSelector": {"matchLabels": None, "matchExpressions": None, **selector}},
        }
        try:
            k8s_call(
                op,
                "patch",
                "NetworkPolicy",
                name,
                namespace,
                net.patch_namespaced_network_policy,
                name,
                namespace,
                patch,
                _content_type="application/merge-patch+json",
            )
            out["reverted"].append(name)
        except StepFailed as exc:
            if "HTTP 409" not in exc.detail:
                raise
            out["left"].append(name)
    return out


__all__ = [
    "Effective",
    "IsolationPlan",
    "PolicyChange",
    "apply_isolation",
    "cut_connections",
    "effective_policy",
    "narrowed_selector",
    "plan_changes",
    "plan_isolation",
    "policy_types",
    "restore_policies",
    "selector_matches",
    "verify_isolation",
]
