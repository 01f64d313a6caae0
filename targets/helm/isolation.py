"""Helm isolation that holds (tasks/kubernetes_policies.py): the NetworkPolicies that
select the release's pods are stored as evidence before anything changes; the release's
own allowing policies are removed and other allowing ones narrowed beside the deny-all
policy; the effective policy set of the release's pods is read back and must allow no
ingress and no egress; the pods are then deleted so no connection opened before the
isolation survives it. ``restore`` undoes the removals and narrowings from the evidence.

Enforcement needs a CNI that implements NetworkPolicy; without one the verification
proves what the API holds, not what the network does. :func:`enforcement_check` reads
whether such a plugin is known present and warns the operator when it is not (or
cannot be seen).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from core import failpoints
from core.operations import Operation
from runbook.context import StepContext
from runbook.steps._evidence import dumps
from targets.helm.common import INSTANCE_LABEL, config, k8s_op

POLICIES_SUBJECT = "network-policies"


def plan_operations(namespace: str, release: str) -> list[Operation]:
    """The mutating calls of the isolation beyond the deny-all policy itself."""
    return [
        k8s_op(
            "DELETE",
            "NetworkPolicy",
            namespace,
            "*",
            note="the release's own policies that allow traffic to or from its pods; "
            "captured as evidence first, re-created by restore",
        ),
        k8s_op(
            "PATCH",
            "NetworkPolicy",
            namespace,
            "*",
            note="other policies selecting the release's pods that allow traffic: selector "
            f"narrowed with {INSTANCE_LABEL} NotIn ({release}); given back by restore or "
            "teardown",
        ),
        k8s_op(
            "DELETE",
            "Pod",
            namespace,
            "*",
            note=f"cut established connections: every pod labelled {INSTANCE_LABEL}={release}, "
            "gracePeriodSeconds=0, once isolated",
        ),
    ]


def isolate(ctx: StepContext) -> dict[str, Any]:
    """Isolation that holds (tasks/kubernetes_policies.py): the NetworkPolicies
    selecting the release's pods are stored as evidence BEFORE anything changes; then
    the deny-all policy, the removal of the release's own allowing policies and the
    narrowing of other allowing ones; then the effective policy set of the release's
    pods is read back and must allow no ingress and no egress. Recorded as
    ``stack.isolated``."""
    from tasks import kubernetes_policies as policies
    from tasks.kubernetes import isolation_policy_name

    cfg = config(ctx)
    api, ns, rel = ctx.clients.kubernetes, cfg.namespace, cfg.release
    plan = policies.plan_isolation(api, ns, rel)
    stored = _policy_evidence(ctx)
    if plan.changes or not stored:
        ctx.artifact(
            dumps(plan.evidence()),
            name=f"network-policies.{len(stored) + 1}.json",
            media_type="application/json",
            subject=f"{POLICIES_SUBJECT}:{rel}:{len(stored) + 1}",
            release=rel,
            namespace=ns,
        )
    failpoints.reach(ctx.step, "after_policy_capture")
    done = policies.apply_isolation(api, ns, rel, plan)
    effective = policies.verify_isolation(api, ns, rel)
    enforcement = enforcement_check(ctx)
    data = {
        "policy": isolation_policy_name(rel),
        "namespace": ns,
        "captured": [p["metadata"]["name"] for p in plan.captured],
        **done,
        "effective": [e.summary() for e in effective],
        "enforcement": enforcement["status"],
    }
    ctx.record("stack.isolated", data)
    return data


def enforcement_check(ctx: StepContext) -> dict[str, Any]:
    """Whether the cluster's network plugin enforces the policies just verified
    (tasks/kubernetes_cni.py, read-only). Recorded as ``network_policy.enforcement``;
    anything but ``enforced`` is a warning the run's console, ``mcp-ir status`` and
    the report show (runbook/plan_text.py): the API holds a deny-all set, but only an
    enforcing plugin makes the network follow it. The pods are restarted anyway
    (``cut_connections``), which ends established connections on any cluster."""
    from tasks.kubernetes_cni import detect_enforcement

    found = detect_enforcement(ctx.clients.kubernetes, op=ctx.step).as_dict()
    ctx.log.log(
        logging.INFO if found["status"] == "enforced" else logging.WARNING,
        "NetworkPolicy enforcement on the cluster: %s %s",
        found["status"],
        found["reason"],
    )
    ctx.record("network_policy.enforcement", found)
    return found


def cut_connections(ctx: StepContext) -> dict[str, Any]:
    """Deletes the release's pods once isolated (grace period 0): connections opened
    before the isolation do not outlive it, whatever the CNI does with open flows.
    Recorded as ``stack.connections_cut``."""
    from tasks import kubernetes_policies as policies

    cfg = config(ctx)
    pods = policies.cut_connections(ctx.clients.kubernetes, cfg.namespace, cfg.release)
    data = {"namespace": cfg.namespace, "pods_deleted": pods}
    ctx.record("stack.connections_cut", data)
    return data


def _policy_evidence(ctx: StepContext) -> list[dict[str, Any]]:
    """The NetworkPolicy captures of this incident (any step), oldest first."""
    cfg = config(ctx)
    prefix = f"{POLICIES_SUBJECT}:{cfg.release}:"
    return [
        json.loads(ctx.trail.read_artifact(r.data["sha256"]))
        for r in ctx.trail.records()
        if r.kind == "artifact" and r.data.get("subject", "").startswith(prefix)
    ]


def restore_policies(ctx: StepContext, *, actions: tuple[str, ...]) -> dict[str, Any]:
    """Undoes this incident's isolation changes of kind ``actions`` from the evidence
    (the first capture of a policy wins: later ones saw it already changed)."""
    from tasks import kubernetes_policies as policies

    cfg = config(ctx)
    captured: dict[str, dict[str, Any]] = {}
    changes: dict[str, dict[str, Any]] = {}
    for doc in _policy_evidence(ctx):
        for policy in doc.get("policies", []):
            captured.setdefault(policy["metadata"]["name"], policy)
        for change in doc.get("changes", []):
            if change["action"] in actions:
                changes.setdefault(change["name"], change)
    if not changes:
        return {}
    out = policies.restore_policies(
        ctx.clients.kubernetes,
        cfg.namespace,
        cfg.release,
        list(captured.values()),
        list(changes.values()),
    )
    ctx.record("network_policies.restored", out)
    return out
