"""Helm restore: re-creates the release's resources from the manifest ``stop`` stored
in this incident's trail, through the API, in Helm's install order
(``tasks/kubernetes_restore.py``), then waits for the Deployment's pods to be Ready.
Lifts the isolation policy first (it would blackhole the new pods); re-creates the
NetworkPolicies the isolation removed and gives the narrowed ones their selector back
(targets/helm/isolation.py). Idempotent:
objects that already exist are left as they are.

This is the ``helm install``-less restore. It does NOT: write a Helm release Secret
(``helm list`` will not show the release until the next ``helm upgrade --install``
adopts these objects through their ``meta.helm.sh`` annotations); run hooks (the
setup Job — the credential Secrets must already hold the rotated values, written by
rotation); re-create Secrets that were in the manifest (their values were never
stored; rotation writes new ones); re-render values (the stored manifest is applied
as it was); create cluster-scoped objects or kinds outside the install order (checked
before anything is created).
"""

from __future__ import annotations

from typing import Any

import yaml

from core.errors import StepFailed
from runbook.context import StepContext
from targets.base import PlanPart
from targets.helm import isolation
from targets.helm.common import KIND_PATHS, config, k8s_op, stored_manifest


def plan(ctx: StepContext) -> PlanPart:
    from tasks.kubernetes import isolation_policy_name

    cfg = config(ctx)
    ns = cfg.namespace
    return PlanPart(
        summary=f"restore Helm release {cfg.release} with the new credentials",
        resources=[f"helm-release:{ns}/{cfg.release}"],
        operations=[
            k8s_op(
                "DELETE",
                "NetworkPolicy",
                ns,
                isolation_policy_name(cfg.release),
                note="isolation lifted first",
            ),
            *(
                k8s_op("POST", kind, ns, note="from the manifest stored by stop_stack")
                for kind in KIND_PATHS
                if kind not in ("Pod", "Secret")
            ),
            k8s_op(
                "PATCH",
                "NetworkPolicy",
                ns,
                "*",
                note="policies the isolation narrowed get their selector back",
            ),
        ],
    )


def restore(ctx: StepContext) -> dict[str, Any]:
    """Raises:
    StepFailed: no manifest stored in this incident, an unsupported kind, RBAC/4xx
        answers (naming the resource), or pods not ready in time.
    """
    from tasks import kubernetes, kubernetes_restore

    cfg = config(ctx)
    api, ns = ctx.clients.kubernetes, cfg.namespace
    rec = stored_manifest(ctx)
    if rec is None:
        raise StepFailed(
            ctx.step,
            f'no stored manifest of Helm release "{cfg.release}" in this incident: nothing '
            "to restore from (stop_stack stores it before uninstalling)",
        )
    text = ctx.trail.read_artifact(rec.data["sha256"])
    docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind")]
    unsupported = sorted(
        {d["kind"] for d in docs if d["kind"] not in kubernetes_restore.CREATABLE} - {"Secret"}
    )
    if unsupported:
        raise StepFailed(
            ctx.step,
            f"stored manifest of {cfg.release} has kinds restore cannot create: "
            f"{', '.join(unsupported)}; nothing was created",
        )
    lifted = kubernetes.remove_isolation(api, ns, cfg.release)
    created: list[str] = []
    existing: list[str] = []
    skipped: list[str] = []
    for doc in kubernetes_restore.install_sorted(docs):
        ref = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Secret":
            skipped.append(ref)
            continue
        done = kubernetes_restore.create_object(api, ns, cfg.release, doc)
        (created if done else existing).append(ref)
        ctx.record("k8s.created" if done else "k8s.exists", {"ref": ref})
    policies = isolation.restore_policies(ctx, actions=("remove", "narrow"))
    data: dict[str, Any] = {
        "namespace": ns,
        "revision": rec.data.get("revision"),
        "isolation_lifted": lifted,
        "network_policies": policies,
        "created": created,
        "existing": existing,
        "skipped_secrets": skipped,
    }
    if any(d["kind"] == "Deployment" and d["metadata"]["name"] == cfg.deployment for d in docs):
        phash, ready = kubernetes.wait_ready(
            api, ns, cfg.deployment, timeout_s=min(ctx.timeout_s, 120.0)
        )
        data.update(pod_template_hash=phash, ready_pods=ready)
    ctx.record("stack.restored", data)
    return data
