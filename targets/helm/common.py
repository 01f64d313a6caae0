"""What every part of the Helm driver shares: the target's ``helm`` section, how plans
name API paths, and the trail's subjects. A transient failure (5xx, 429, a timeout)
propagates: the runner's one retry policy runs the step again, ``check`` first."""

from __future__ import annotations

from typing import Any

from core.errors import StepFailed
from core.operations import ANY, Operation
from runbook.context import StepContext
from runbook.inventory import HelmConfig

DEFAULT_DEADLINE_S = 5.0
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANIFEST_SUBJECT = "helm-manifest"

# kind → (API path prefix, plural): how the plan names each call as an HTTP request.
KIND_PATHS: dict[str, tuple[str, str]] = {
    "Pod": ("/api/v1", "pods"),
    "Secret": ("/api/v1", "secrets"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "Job": ("/apis/batch/v1", "jobs"),
    "CronJob": ("/apis/batch/v1", "cronjobs"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
}


def config(ctx: StepContext) -> HelmConfig:
    """The target's ``helm`` section (the inventory guarantees it for kind helm)."""
    helm = ctx.target.helm
    if helm is None:
        raise StepFailed(ctx.step, f"target {ctx.incident.target!r} has no 'helm' section")
    return helm


def api_path(kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = KIND_PATHS[kind]
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def k8s_op(
    verb: str,
    kind: str,
    namespace: str,
    name: str | None = None,
    note: str = "",
    params_digest: str = ANY,
) -> Operation:
    """A mutating Kubernetes call as an operation (``POST`` creates: no name in the path);
    ``params_digest`` pins the request body when the plan knows it."""
    return Operation("kubernetes", verb, api_path(kind, namespace, name), params_digest, note)


def subjects(ctx: StepContext, *, any_step: bool) -> set[str]:
    records = ctx.trail.records() if any_step else ctx.step_records()
    return {r.data.get("subject", "") for r in records if r.kind == "artifact"}


def subject(artifact_name: str) -> str:
    """``logs/<pod>/<c>.log`` → ``logs:<pod>/<c>.log``; ``objects/x.yaml`` → ``objects:x.yaml``."""
    head, _, rest = artifact_name.partition("/")
    return f"{head}:{rest}"


def stored_manifest(ctx: StepContext) -> Any:
    """The newest manifest artifact record of this incident (any step), or None."""
    found = [
        r
        for r in ctx.trail.records()
        if r.kind == "artifact" and r.data.get("subject", "").startswith(MANIFEST_SUBJECT + ":")
    ]
    return found[-1] if found else None
