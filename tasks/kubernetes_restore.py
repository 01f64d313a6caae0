"""Kubernetes adapter, restore half: re-creates a release's objects from a stored
manifest through the API, in Helm's install order, as ``helm install`` would submit
them (Helm's ownership annotations, no server-set fields). Idempotent: an object that
already exists is left as it is."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from kubernetes import client

from tasks.kubernetes_calls import k8s_call, namespaced_functions

OP = "restore_release"

# helm/helm pkg/releaseutil/kind_sorter.go: InstallOrder (the kinds restore can create).
INSTALL_ORDER: tuple[str, ...] = (
    "NetworkPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "Ingress",
)
CREATABLE = frozenset(INSTALL_ORDER) - {"Pod", "Secret"}


def creators(api: client.ApiClient) -> dict[str, Callable[..., Any]]:
    """kind → the SDK's create function, for the kinds restore can create."""
    return namespaced_functions(api, "create", [k for k in INSTALL_ORDER if k in CREATABLE])


def install_body(doc: dict[str, Any], release: str, namespace: str) -> dict[str, Any]:
    """The object as ``helm install`` would submit it: Helm's ownership annotations
    (so a later ``helm upgrade --install`` can adopt it), no server-set fields."""
    body = copy.deepcopy(doc)
    meta = body.setdefault("metadata", {})
    for transient in ("uid", "resourceVersion", "creationTimestamp", "generation"):
        meta.pop(transient, None)
    body.pop("status", None)
    meta["namespace"] = namespace
    meta.setdefault("annotations", {}).update(
        {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace}
    )
    return body


def install_sorted(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {k: i for i, k in enumerate(INSTALL_ORDER)}
    return sorted(docs, key=lambda d: order.get(d["kind"], len(order)))


def create_object(api: client.ApiClient, namespace: str, release: str, doc: dict[str, Any]) -> bool:
    """Creates one object of the manifest; False when it already existed.

    Raises:
        OperationFailed: RBAC/4xx answers (naming the object). TransientError: 5xx.
    """
    kind, name = doc["kind"], doc["metadata"]["name"]
    body = install_body(doc, release, namespace)
    done = k8s_call(
        OP, "create", kind, name, namespace, creators(api)[kind], namespace, body, exists_ok=True
    )
    return done is not None
