"""Kubernetes/Helm adapter: isolate, capture, uninstall, remove and rotate credentials.

Knows one system — the Kubernetes API, through the official ``kubernetes`` client whose
``ApiClient`` every function takes as its first parameter (one place to substitute it).
No helm or kubectl binary is needed: ``uninstall_release`` reads Helm's release Secrets
itself and does what ``helm uninstall --no-hooks`` does.

Containment comes before destruction: :func:`isolate` cuts the release's pods off the
network (deny-all NetworkPolicy) while they are kept for :func:`capture`; only then
:func:`uninstall_release` deletes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from core.errors import OperationFailed
from tasks.kubernetes_calls import (
    SDK_KINDS,
    create_object,
    delete_pod_now,
    k8s_call,
    list_pods,
    load_client,
    namespaced_functions,
    read_object,
)
from tasks.kubernetes_capture import INSTANCE_LABEL, K8sCapture, SecretSummary, capture
from tasks.kubernetes_credentials import (
    CredentialsRemoval,
    RotationResult,
    credential_secret_names,
    read_secret_values,
    remove_credentials,
    rollout_restart,
    wait_ready,
    write_credentials,
)
from tasks.kubernetes_gone import propagation_for, wait_gone
from tasks.kubernetes_helm import (
    RELEASE_SECRET_TYPE,
    UNINSTALL_ORDER,
    HelmRelease,
    ManifestResource,
    decode_release,
    parse_manifest,
    to_release,
    uninstall_sorted,
)

__all__ = [
    "CredentialsRemoval",
    "IsolationResult",
    "K8sCapture",
    "RotationResult",
    "SecretSummary",
    "UninstallResult",
    "capture",
    "credential_secret_names",
    "isolate",
    "isolation_policy_name",
    "isolation_present",
    "read_secret_values",
    "release_pods",
    "load_client",
    "read_release",
    "remove_credentials",
    "remove_isolation",
    "rollout_restart",
    "uninstall_release",
    "wait_ready",
    "write_credentials",
]


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class IsolationResult:
    policy: str
    created: bool  # False: it already existed (a re-run)


@dataclass
class UninstallResult:
    """What :func:`uninstall_release` did. ``revision`` is None when no release Secret was
    left (a re-run after a completed uninstall)."""

    release: str
    namespace: str
    revision: int | None
    deleted: list[str] = field(default_factory=list)
    already_absent: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    pods_deleted: list[str] = field(default_factory=list)
    release_secrets_deleted: list[str] = field(default_factory=list)
    left_by_design: list[str] = field(default_factory=list)
    isolation_removed: bool = False


# ------------------------------------------------------------------ isolation


def isolation_policy_name(release: str) -> str:
    return f"mcp-ir-isolate-{release}"


def _isolation_policy(release: str) -> client.V1NetworkPolicy:
    return client.V1NetworkPolicy(
        metadata=client.V1ObjectMeta(
            name=isolation_policy_name(release),
            labels={"app.kubernetes.io/managed-by": "mcp-ir", "mcp-ir/isolates": release},
            annotations={"mcp-ir/reason": "incident containment: deny all ingress and egress"},
        ),
        # No ingress or egress rules with both policy types: everything is denied.
        spec=client.V1NetworkPolicySpec(
            pod_selector=client.V1LabelSelector(match_labels={INSTANCE_LABEL: release}),
            policy_types=["Ingress", "Egress"],
        ),
    )


def isolation_policy_body(release: str) -> dict[str, Any]:
    """The deny-all policy exactly as :func:`isolate` creates it (the JSON sent), so a
    plan can pin the request (``core.operations.request_digest``)."""
    body: dict[str, Any] = client.ApiClient().sanitize_for_serialization(_isolation_policy(release))
    return body


def isolate(api: client.ApiClient, namespace: str, release: str) -> IsolationResult:
    """Applies a deny-all (ingress and egress) NetworkPolicy selecting the release's pods.

    Idempotent: if the policy exists it is checked and, if someone loosened it, replaced.

    Raises:
        OperationFailed: RBAC or other 4xx answers. TransientError: 5xx/unreachable.
    """
    net = client.NetworkingV1Api(api)
    name = isolation_policy_name(release)
    body = _isolation_policy(release)
    created = create_object(
        api, "NetworkPolicy", namespace, name, body, op="isolate", exists_ok=True
    )
    if created is not None:
        return IsolationResult(policy=name, created=True)
    current = read_object(api, "NetworkPolicy", namespace, name, op="isolate")
    spec = current.spec
    deny_all = (
        spec is not None
        and (spec.pod_selector.match_labels or {}) == {INSTANCE_LABEL: release}
        and not spec.pod_selector.match_expressions
        and sorted(spec.policy_types or []) == ["Egress", "Ingress"]
        and not spec.ingress
        and not spec.egress
    )
    if not deny_all:
        body.metadata.resource_version = current.metadata.resource_version
        k8s_call(
            "isolate",
            "update",
            "NetworkPolicy",
            name,
            namespace,
            net.replace_namespaced_network_policy,
            name,
            namespace,
            body,
        )
    return IsolationResult(policy=name, created=False)


def isolation_present(api: client.ApiClient, namespace: str, release: str) -> bool:
    """Whether the release's isolation policy exists."""
    name = isolation_policy_name(release)
    found = read_object(
        api, "NetworkPolicy", namespace, name, op="isolation_present", missing_ok=True
    )
    return found is not None


def release_pods(api: client.ApiClient, namespace: str, release: str) -> list[str]:
    """Names of the pods labelled with the release, sorted."""
    pods = list_pods(api, namespace, f"{INSTANCE_LABEL}={release}", op="release_pods")
    return sorted(p.metadata.name for p in pods)


def remove_isolation(api: client.ApiClient, namespace: str, release: str) -> bool:
    """Deletes the isolation policy; True if it existed."""
    net = client.NetworkingV1Api(api)
    name = isolation_policy_name(release)
    gone = k8s_call(
        "remove_isolation",
        "delete",
        "NetworkPolicy",
        name,
        namespace,
        net.delete_namespaced_network_policy,
        name,
        namespace,
        missing_ok=True,
    )
    return gone is not None


# ------------------------------------------------------------------ uninstall


def read_release(
    api: client.ApiClient, namespace: str, release: str, op: str = "uninstall_release"
) -> tuple[HelmRelease | None, list[str]]:
    """The newest stored revision of ``release`` (by the ``version`` label) and the names
    of all its release Secrets; ``(None, [])`` if none is stored."""
    core = client.CoreV1Api(api)
    listed = k8s_call(
        op,
        "list",
        "Secret",
        None,
        namespace,
        core.list_namespaced_secret,
        namespace,
        label_selector=f"owner=helm,name={release}",
    )
    secrets = [s for s in listed.items if s.type == RELEASE_SECRET_TYPE]
    names = sorted(s.metadata.name for s in listed.items)
    if not secrets:
        return None, names

    def version(secret: client.V1Secret) -> int:
        try:
            return int((secret.metadata.labels or {}).get("version", "0"))
        except ValueError:
            return 0

    newest = max(secrets, key=version)
    data = (newest.data or {}).get("release")
    if not data:
        raise OperationFailed(
            op,
            f'release Secret "{newest.metadata.name}" in namespace '
            f'"{namespace}" has no data.release',
        )
    return to_release(decode_release(data, secret_name=newest.metadata.name)), names


# Every kind of the adapter's SDK table can be read and deleted by an uninstall.
_UNINSTALLABLE = tuple(SDK_KINDS)


def _workload_apis(api: client.ApiClient) -> dict[str, tuple[Callable, Callable]]:
    """kind → (read, delete) for the namespaced kinds an uninstall may meet."""
    reads = namespaced_functions(api, "read", _UNINSTALLABLE)
    deletes = namespaced_functions(api, "delete", _UNINSTALLABLE)
    return {kind: (reads[kind], deletes[kind]) for kind in _UNINSTALLABLE}


def _delete_release_pods(
    api: client.ApiClient, namespace: str, release: str, result: UninstallResult
) -> None:
    """Deletes every pod of the release with grace period 0: no graceful shutdown for a
    compromised workload (and nothing left Terminating for the verification)."""
    for pod in list_pods(api, namespace, f"{INSTANCE_LABEL}={release}", op="uninstall_release"):
        name = pod.metadata.name
        done = delete_pod_now(api, namespace, name, op="uninstall_release")
        if done and name not in result.pods_deleted:
            result.pods_deleted.append(name)


def uninstall_release(
    api: client.ApiClient,
    namespace: str,
    release: str,
    *,
    keep_isolation: bool = False,
    timeout_s: float = 60.0,
) -> UninstallResult:
    """Uninstalls ``release`` as ``helm uninstall --no-hooks`` does, then verifies.

    Steps: read the newest release Secret and decode its manifest; delete the manifest's
    resources in Helm's UninstallOrder (``Foreground`` propagation for controllers that
    own pods, ``Background`` for the rest: tasks/kubernetes_gone.py), skipping
    ``helm.sh/resource-policy: keep``; at the Pod position — right after the controllers
    that would recreate pods are gone — delete every pod of the release with grace period
    0; then delete ALL the release's Secrets (``owner=helm,name=<release>``). 404s are fine:
    a re-run finishes the job without repeating anything. Garbage collection is
    asynchronous, so the verification polls (up to ``timeout_s``) until nothing of the
    release is left, killing pods a ReplicaSet recreates meanwhile.

    Left by design, as ``helm uninstall`` leaves them: hook resources (the
    ``<release>-setup`` Job) and the Secrets written by setup — teardown's
    :func:`remove_credentials` deletes those; rotation overwrites them.

    Isolation policy: deleted at the end, once verification proved no pod of the release
    is left. It has done its job (cut the live pods off while evidence was captured) and
    would otherwise silently blackhole the release when it is restored. If anything fails
    before that point it stays in place, so a half-uninstalled release stays isolated.
    ``keep_isolation=True`` keeps it (then call :func:`remove_isolation` before restoring).

    Raises:
        OperationFailed: RBAC/4xx answers, an undecodable release, an unsupported kind in the
            manifest (checked before anything is deleted), or something of the release
            still present after the uninstall (named in the detail).
        TransientError: 5xx answers or an unreachable API (retryable; re-run is safe).
    """
    op = "uninstall_release"
    helm, release_secrets = read_release(api, namespace, release)
    result = UninstallResult(
        release=release, namespace=namespace, revision=helm.version if helm else None
    )
    manifest = parse_manifest(helm.manifest) if helm else []
    apis = _workload_apis(api)
    unsupported = sorted({r.kind for r in manifest if r.kind not in apis})
    if unsupported:
        raise OperationFailed(
            op,
            f'release "{release}" in namespace "{namespace}": manifest has '
            f"kinds this adapter cannot delete: {', '.join(unsupported)}; "
            "nothing was deleted",
        )
    pod_slot = UNINSTALL_ORDER.index("Pod")
    pods_done = False
    for res in uninstall_sorted(manifest):
        if not pods_done and UNINSTALL_ORDER.index(res.kind) > pod_slot:
            _delete_release_pods(api, namespace, release, result)
            pods_done = True
        if res.keep:
            result.kept.append(res.ref)
            continue
        ns = res.namespace or namespace
        _, delete = apis[res.kind]
        kwargs: dict[str, Any] = {"propagation_policy": propagation_for(res.kind)}
        if res.kind == "Pod":
            kwargs = {"grace_period_seconds": 0}
        done = k8s_call(
            op, "delete", res.kind, res.name, ns, delete, res.name, ns, missing_ok=True, **kwargs
        )
        (result.deleted if done is not None else result.already_absent).append(res.ref)
    # Pods of controllers later in the order, and a re-run with no manifest left.
    _delete_release_pods(api, namespace, release, result)
    core = client.CoreV1Api(api)
    for name in release_secrets:
        done = k8s_call(
            op,
            "delete",
            "Secret",
            name,
            namespace,
            core.delete_namespaced_secret,
            name,
            namespace,
            missing_ok=True,
        )
        if done is not None:
            result.release_secrets_deleted.append(name)
    result.left_by_design = _verify_uninstalled(api, namespace, release, manifest, timeout_s)
    if not keep_isolation:
        result.isolation_removed = remove_isolation(api, namespace, release)
    return result


@dataclass(frozen=True)
class Leftovers:
    """What of a Helm release is in the cluster (``Kind/name``): ``remaining`` (the
    manifest's resources, non-hook objects labelled with the release, its release
    Secrets) and ``by_design`` (hooks, which ``helm uninstall`` leaves)."""

    remaining: list[str]
    by_design: list[str]


def _labelled_listers(api: client.ApiClient) -> dict[str, Callable]:
    return namespaced_functions(
        api,
        "list",
        (
            "Pod",
            "Deployment",
            "ReplicaSet",
            "StatefulSet",
            "DaemonSet",
            "Service",
            "ConfigMap",
            "ServiceAccount",
            "CronJob",
            "Job",
            "NetworkPolicy",
        ),
    )


def release_leftovers(
    api: client.ApiClient,
    namespace: str,
    release: str,
    manifest: list[ManifestResource],
    *,
    op: str = "uninstall_release",
) -> Leftovers:
    """Everything of ``release`` still in the cluster, by label and by the manifest's
    names (a resource that lost its label is read one by one). Read-only.

    Raises:
        OperationFailed / TransientError: a list or read failed (naming the resource).
    """
    selector = f"{INSTANCE_LABEL}={release}"
    remaining: set[str] = set()
    by_design: set[str] = set()
    present: set[str] = set()
    for kind, lister in _labelled_listers(api).items():
        if kind in ("StatefulSet", "DaemonSet") and not any(r.kind == kind for r in manifest):
            continue  # not part of this chart: skip kinds the cluster may not let us list
        items = k8s_call(
            op, "list", kind, None, namespace, lister, namespace, label_selector=selector
        ).items
        for item in items:
            ref = f"{kind}/{item.metadata.name}"
            present.add(ref)
            if "helm.sh/hook" in (item.metadata.annotations or {}):
                by_design.add(ref)
            else:
                remaining.add(ref)
    apis = _workload_apis(api)
    for res in manifest:
        if res.keep or res.ref in present or res.kind not in apis:
            continue
        read, _ = apis[res.kind]
        ns = res.namespace or namespace
        found = k8s_call(op, "get", res.kind, res.name, ns, read, res.name, ns, missing_ok=True)
        if found is not None:
            remaining.add(res.ref)
    secrets = k8s_call(
        op,
        "list",
        "Secret",
        None,
        namespace,
        client.CoreV1Api(api).list_namespaced_secret,
        namespace,
        label_selector=f"owner=helm,name={release}",
    ).items
    remaining |= {f"Secret/{s.metadata.name}" for s in secrets}
    return Leftovers(sorted(remaining), sorted(by_design))


def _verify_uninstalled(
    api: client.ApiClient,
    namespace: str,
    release: str,
    manifest: list[ManifestResource],
    timeout_s: float,
) -> list[str]:
    """Waits (tasks/kubernetes_gone.py) until nothing of the release is left, raising
    OperationFailed naming whatever still is at the timeout; returns the resources helm
    uninstall leaves by design (hooks)."""
    wait_gone(
        api,
        namespace,
        release,
        lambda: release_leftovers(api, namespace, release, manifest).remaining,
        timeout_s=timeout_s,
    )
    return release_leftovers(api, namespace, release, manifest).by_design
