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

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from core.errors import ConfigError, StepFailed
from core.redact import fingerprint
from tasks.kubernetes_calls import k8s_call, load_client
from tasks.kubernetes_capture import INSTANCE_LABEL, K8sCapture, SecretSummary, capture
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
    "isolate",
    "isolation_policy_name",
    "load_client",
    "read_release",
    "remove_credentials",
    "remove_isolation",
    "rollout_restart",
    "uninstall_release",
    "wait_ready",
    "write_credentials",
]

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
CREDENTIALS_ANNOTATION = "mcp-ir/credentials-fingerprint"
_PEM = re.compile(r"^-----BEGIN [A-Z0-9 ]+-----\n.+\n-----END [A-Z0-9 ]+-----\s*$", re.S)
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63}$")


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


@dataclass
class CredentialsRemoval:
    deleted: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)


@dataclass
class RotationResult:
    """Rotation outcome; ``fingerprints`` maps ``<secret>/<key>`` to fingerprints only."""

    secrets_written: list[str]
    fingerprints: dict[str, str]
    restarted: bool
    pod_template_hash: str | None = None
    ready_pods: list[str] = field(default_factory=list)


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


def isolate(api: client.ApiClient, namespace: str, release: str) -> IsolationResult:
    """Applies a deny-all (ingress and egress) NetworkPolicy selecting the release's pods.

    Idempotent: if the policy exists it is checked and, if someone loosened it, replaced.

    Raises:
        StepFailed: RBAC or other 4xx answers. TransientError: 5xx/unreachable.
    """
    net = client.NetworkingV1Api(api)
    name = isolation_policy_name(release)
    body = _isolation_policy(release)
    created = k8s_call(
        "isolate",
        "create",
        "NetworkPolicy",
        name,
        namespace,
        net.create_namespaced_network_policy,
        namespace,
        body,
        exists_ok=True,
    )
    if created is not None:
        return IsolationResult(policy=name, created=True)
    current = k8s_call(
        "isolate",
        "get",
        "NetworkPolicy",
        name,
        namespace,
        net.read_namespaced_network_policy,
        name,
        namespace,
    )
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
        raise StepFailed(
            op,
            f'release Secret "{newest.metadata.name}" in namespace '
            f'"{namespace}" has no data.release',
        )
    return to_release(decode_release(data, secret_name=newest.metadata.name)), names


def _workload_apis(api: client.ApiClient) -> dict[str, tuple[Callable, Callable]]:
    """kind → (read, delete) for the namespaced kinds an uninstall may meet."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    batch, net = client.BatchV1Api(api), client.NetworkingV1Api(api)
    rbac, policy = client.RbacAuthorizationV1Api(api), client.PolicyV1Api(api)
    autoscaling = client.AutoscalingV2Api(api)
    return {
        "Ingress": (net.read_namespaced_ingress, net.delete_namespaced_ingress),
        "Service": (core.read_namespaced_service, core.delete_namespaced_service),
        "CronJob": (batch.read_namespaced_cron_job, batch.delete_namespaced_cron_job),
        "Job": (batch.read_namespaced_job, batch.delete_namespaced_job),
        "StatefulSet": (apps.read_namespaced_stateful_set, apps.delete_namespaced_stateful_set),
        "HorizontalPodAutoscaler": (
            autoscaling.read_namespaced_horizontal_pod_autoscaler,
            autoscaling.delete_namespaced_horizontal_pod_autoscaler,
        ),
        "Deployment": (apps.read_namespaced_deployment, apps.delete_namespaced_deployment),
        "ReplicaSet": (apps.read_namespaced_replica_set, apps.delete_namespaced_replica_set),
        "Pod": (core.read_namespaced_pod, core.delete_namespaced_pod),
        "DaemonSet": (apps.read_namespaced_daemon_set, apps.delete_namespaced_daemon_set),
        "RoleBinding": (rbac.read_namespaced_role_binding, rbac.delete_namespaced_role_binding),
        "Role": (rbac.read_namespaced_role, rbac.delete_namespaced_role),
        "PersistentVolumeClaim": (
            core.read_namespaced_persistent_volume_claim,
            core.delete_namespaced_persistent_volume_claim,
        ),
        "ConfigMap": (core.read_namespaced_config_map, core.delete_namespaced_config_map),
        "Secret": (core.read_namespaced_secret, core.delete_namespaced_secret),
        "ServiceAccount": (
            core.read_namespaced_service_account,
            core.delete_namespaced_service_account,
        ),
        "PodDisruptionBudget": (
            policy.read_namespaced_pod_disruption_budget,
            policy.delete_namespaced_pod_disruption_budget,
        ),
        "NetworkPolicy": (
            net.read_namespaced_network_policy,
            net.delete_namespaced_network_policy,
        ),
    }


def _delete_release_pods(
    api: client.ApiClient, namespace: str, release: str, result: UninstallResult
) -> None:
    """Deletes every pod of the release with grace period 0: no graceful shutdown for a
    compromised workload (and nothing left Terminating for the verification)."""
    core = client.CoreV1Api(api)
    pods = k8s_call(
        "uninstall_release",
        "list",
        "Pod",
        None,
        namespace,
        core.list_namespaced_pod,
        namespace,
        label_selector=f"{INSTANCE_LABEL}={release}",
    )
    for pod in pods.items:
        name = pod.metadata.name
        done = k8s_call(
            "uninstall_release",
            "delete",
            "Pod",
            name,
            namespace,
            core.delete_namespaced_pod,
            name,
            namespace,
            grace_period_seconds=0,
            body=client.V1DeleteOptions(grace_period_seconds=0),
            missing_ok=True,
        )
        if done is not None and name not in result.pods_deleted:
            result.pods_deleted.append(name)


def uninstall_release(
    api: client.ApiClient, namespace: str, release: str, *, keep_isolation: bool = False
) -> UninstallResult:
    """Uninstalls ``release`` as ``helm uninstall --no-hooks`` does, then verifies.

    Steps: read the newest release Secret and decode its manifest; delete the manifest's
    resources in Helm's UninstallOrder (background propagation, as Helm does), skipping
    ``helm.sh/resource-policy: keep``; at the Pod position — right after the controllers
    that would recreate pods are gone — delete every pod of the release with grace period
    0; then delete ALL the release's Secrets (``owner=helm,name=<release>``). 404s are fine:
    a re-run finishes the job without repeating anything.

    Left by design, as ``helm uninstall`` leaves them: hook resources (the
    ``<release>-setup`` Job) and the Secrets written by setup — teardown's
    :func:`remove_credentials` deletes those; rotation overwrites them.

    Isolation policy: deleted at the end, once verification proved no pod of the release
    is left. It has done its job (cut the live pods off while evidence was captured) and
    would otherwise silently blackhole the release when it is restored. If anything fails
    before that point it stays in place, so a half-uninstalled release stays isolated.
    ``keep_isolation=True`` keeps it (then call :func:`remove_isolation` before restoring).

    Raises:
        StepFailed: RBAC/4xx answers, an undecodable release, an unsupported kind in the
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
        raise StepFailed(
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
        kwargs: dict[str, Any] = {"propagation_policy": "Background"}
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
    result.left_by_design = _verify_uninstalled(api, namespace, release, manifest)
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
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    batch, net = client.BatchV1Api(api), client.NetworkingV1Api(api)
    return {
        "Pod": core.list_namespaced_pod,
        "Deployment": apps.list_namespaced_deployment,
        "ReplicaSet": apps.list_namespaced_replica_set,
        "StatefulSet": apps.list_namespaced_stateful_set,
        "DaemonSet": apps.list_namespaced_daemon_set,
        "Service": core.list_namespaced_service,
        "ConfigMap": core.list_namespaced_config_map,
        "ServiceAccount": core.list_namespaced_service_account,
        "CronJob": batch.list_namespaced_cron_job,
        "Job": batch.list_namespaced_job,
        "NetworkPolicy": net.list_namespaced_network_policy,
    }


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
        StepFailed / TransientError: a list or read failed (naming the resource).
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
    api: client.ApiClient, namespace: str, release: str, manifest: list[ManifestResource]
) -> list[str]:
    """Raises StepFailed naming whatever of the release is still there; returns the
    resources helm uninstall leaves by design (hooks)."""
    left = release_leftovers(api, namespace, release, manifest)
    if left.remaining:
        raise StepFailed(
            "uninstall_release",
            f'release "{release}" in namespace "{namespace}" is not fully '
            f"uninstalled; still present: {', '.join(left.remaining)}",
        )
    return left.by_design


# ------------------------------------------------------------------ credentials


def _credential_secrets(release: str) -> dict[str, tuple[str, ...]]:
    """Secret name → the keys it holds (FACTS §1: programmatic and manual setup)."""
    return {
        release: ("tunnel-id", "tunnel-domain", "tunnel-token", "ca.crt", "tls.crt", "tls.key"),
        f"{release}-token": ("tunnel-token",),
        f"{release}-cert": ("tls.crt", "tls.key"),
    }


def remove_credentials(api: client.ApiClient, namespace: str, release: str) -> CredentialsRemoval:
    """Deletes the stored tunnel credentials (Secrets ``<release>``, ``<release>-token``,
    ``<release>-cert``) and the leftover setup hook Job; absent is fine. Verified gone.

    Raises:
        StepFailed: RBAC/4xx answers, or something still present afterwards.
        TransientError: 5xx answers or an unreachable API.
    """
    op = "remove_credentials"
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    targets: list[tuple[str, str, Callable, Callable, dict[str, Any]]] = [
        (kind, name, read, delete, kw)
        for kind, name, read, delete, kw in [
            *[
                ("Secret", s, core.read_namespaced_secret, core.delete_namespaced_secret, {})
                for s in _credential_secrets(release)
            ],
            (
                "Job",
                f"{release}-setup",
                batch.read_namespaced_job,
                batch.delete_namespaced_job,
                {"propagation_policy": "Background"},
            ),
        ]
    ]
    result = CredentialsRemoval()
    for kind, name, _, delete, kw in targets:
        done = k8s_call(
            op, "delete", kind, name, namespace, delete, name, namespace, missing_ok=True, **kw
        )
        (result.deleted if done is not None else result.absent).append(f"{kind}/{name}")
    still = [
        f"{kind}/{name}"
        for kind, name, read, _, _ in targets
        if k8s_call(op, "get", kind, name, namespace, read, name, namespace, missing_ok=True)
        is not None
    ]
    if still:
        raise StepFailed(
            op,
            f'credentials in namespace "{namespace}" still present after '
            f"delete: {', '.join(still)}",
        )
    return result


def _check_credentials(values: dict[str, str]) -> None:
    """Validates rotation input; errors name the field, never the value."""
    for key, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{key}: must be a non-empty string")
    for key in ("ca.crt", "tls.crt", "tls.key"):
        if not _PEM.match(values[key]):
            raise ConfigError(f"{key}: must be one PEM block (-----BEGIN ...-----)")
    if not _HOST.match(values["tunnel-domain"]):
        raise ConfigError("domain: must be a DNS host name such as abc.tunnels.example.com")


def write_credentials(
    api: client.ApiClient,
    namespace: str,
    release: str,
    *,
    token: str,
    ca_crt: str,
    tls_crt: str,
    tls_key: str,
    tunnel_id: str,
    domain: str,
    deployment: str | None = None,
    timeout_s: float = 120.0,
    ca_key: str | None = None,
) -> RotationResult:
    """Writes rotated credentials into the release's credential Secrets and restarts
    the Deployment so the pods load them, verified by new ready pods.

    ``ca_key`` (optional): the CA's private key, written as key ``ca.key`` of the
    Secret ``<release>`` only (the chart does not read it; the rotation drill needs the
    current CA key to renew the server certificate). Without it nothing about
    ``ca.key`` changes (an existing key is left as it is).

    Writes every credential Secret that exists (``<release>`` gets all keys,
    ``<release>-token`` the token, ``<release>-cert`` the TLS pair); if none exists,
    creates ``<release>`` (programmatic layout). If the Deployment is absent (release
    uninstalled during a breach), only the Secrets are written: the restore uses them.
    Re-running with the same values repeats nothing: the pod template carries a
    fingerprint of the credentials and is only restarted when it changes.

    Raises:
        ConfigError: an input is empty or malformed (named; value never shown).
        StepFailed: RBAC/4xx answers, or the new pods did not become ready in time.
        TransientError: 5xx answers or an unreachable API.
    """
    op = "write_credentials"
    values = {
        "tunnel-id": tunnel_id,
        "tunnel-domain": domain,
        "tunnel-token": token,
        "ca.crt": ca_crt,
        "tls.crt": tls_crt,
        "tls.key": tls_key,
    }
    layout = _credential_secrets(release)
    if ca_key is not None:
        values["ca.key"] = ca_key
        layout[release] = (*layout[release], "ca.key")
    _check_credentials(values)
    if ca_key is not None and not _PEM.match(ca_key):
        raise ConfigError("ca.key: must be one PEM block (-----BEGIN ...-----)")
    core = client.CoreV1Api(api)
    written: list[str] = []
    for name, keys in layout.items():
        data = {k: base64.b64encode(values[k].encode()).decode() for k in keys}
        patched = k8s_call(
            op,
            "patch",
            "Secret",
            name,
            namespace,
            core.patch_namespaced_secret,
            name,
            namespace,
            {"data": data},
            missing_ok=True,
        )
        if patched is not None:
            written.append(name)
    if not written:
        data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=release, labels={"app.kubernetes.io/created-by": "mcp-ir"}
            ),
            type="Opaque",
            data=data,
        )
        k8s_call(
            op,
            "create",
            "Secret",
            release,
            namespace,
            core.create_namespaced_secret,
            namespace,
            body,
        )
        written.append(release)
    fingerprints: dict[str, str] = {}
    for name in written:
        stored = (
            k8s_call(
                op, "get", "Secret", name, namespace, core.read_namespaced_secret, name, namespace
            ).data
            or {}
        )
        for key in layout[name]:
            got = base64.b64decode(stored.get(key, "")).decode("utf-8", errors="replace")
            if got != values[key]:
                raise StepFailed(
                    op,
                    f'Secret "{name}" in namespace "{namespace}": key '
                    f"{key} does not hold the new value after the write",
                )
            fingerprints[f"{name}/{key}"] = fingerprint(values[key])
    marker = fingerprint("\n".join(f"{k}={fingerprint(v)}" for k, v in sorted(values.items())))
    result = RotationResult(secrets_written=written, fingerprints=fingerprints, restarted=False)
    deployment = deployment or release
    apps = client.AppsV1Api(api)
    dep = k8s_call(
        op,
        "get",
        "Deployment",
        deployment,
        namespace,
        apps.read_namespaced_deployment,
        deployment,
        namespace,
        missing_ok=True,
    )
    if dep is None:
        return result
    annotations = dep.spec.template.metadata.annotations or {}
    previous_hash = None
    if annotations.get(CREDENTIALS_ANNOTATION) != marker:
        previous_hash = _current_hash(api, namespace, dep)
        rollout_restart(api, namespace, deployment, annotations={CREDENTIALS_ANNOTATION: marker})
        result.restarted = True
    result.pod_template_hash, result.ready_pods = wait_ready(
        api, namespace, deployment, previous_hash=previous_hash, timeout_s=timeout_s
    )
    return result


# ------------------------------------------------------------------ rollout


def rollout_restart(
    api: client.ApiClient,
    namespace: str,
    deployment: str,
    *,
    annotations: dict[str, str] | None = None,
) -> str:
    """``kubectl rollout restart``: a strategic-merge patch setting the pod template's
    ``kubectl.kubernetes.io/restartedAt`` annotation (plus ``annotations``), which makes
    the Deployment roll out new pods. Returns the restartedAt value.

    Raises:
        StepFailed: RBAC/4xx (404 if the Deployment is absent). TransientError: 5xx.
    """
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {
        "spec": {
            "template": {"metadata": {"annotations": {RESTARTED_AT: now, **(annotations or {})}}}
        }
    }
    k8s_call(
        "rollout_restart",
        "patch",
        "Deployment",
        deployment,
        namespace,
        client.AppsV1Api(api).patch_namespaced_deployment,
        deployment,
        namespace,
        patch,
    )
    return now


def _selector(dep: client.V1Deployment) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((dep.spec.selector.match_labels or {}).items()))


def _current_hash(api: client.ApiClient, namespace: str, dep: client.V1Deployment) -> str | None:
    """pod-template-hash of the Deployment's current ReplicaSet (same revision)."""
    revision = (dep.metadata.annotations or {}).get("deployment.kubernetes.io/revision")
    rss = k8s_call(
        "wait_ready",
        "list",
        "ReplicaSet",
        None,
        namespace,
        client.AppsV1Api(api).list_namespaced_replica_set,
        namespace,
        label_selector=_selector(dep),
    ).items
    for rs in rss:
        owners = {o.uid for o in rs.metadata.owner_references or []}
        rs_rev = (rs.metadata.annotations or {}).get("deployment.kubernetes.io/revision")
        if dep.metadata.uid in owners and rs_rev == revision:
            return (rs.metadata.labels or {}).get("pod-template-hash")
    return None


def wait_ready(
    api: client.ApiClient,
    namespace: str,
    deployment: str,
    *,
    previous_hash: str | None = None,
    timeout_s: float = 120.0,
    poll_s: float = 0.2,
) -> tuple[str, list[str]]:
    """Waits until the rollout is complete (``kubectl rollout status`` conditions) and every
    pod of the NEW ReplicaSet is Ready with no old pod left running. Returns the new
    pod-template-hash and the ready pod names.

    Raises:
        StepFailed: not complete within ``timeout_s`` (the detail says what is missing),
            or the pod-template hash did not change although a restart was requested.
    """
    op = "wait_ready"
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    deadline = time.monotonic() + timeout_s
    why = "not observed yet"
    while True:
        dep = k8s_call(
            op,
            "get",
            "Deployment",
            deployment,
            namespace,
            apps.read_namespaced_deployment,
            deployment,
            namespace,
        )
        want = dep.spec.replicas if dep.spec.replicas is not None else 1
        st = dep.status
        phash = _current_hash(api, namespace, dep)
        if (st.observed_generation or 0) < (dep.metadata.generation or 0):
            why = "the controller has not observed the new generation"
        elif (st.updated_replicas or 0) < want:
            why = f"{st.updated_replicas or 0} of {want} replicas updated"
        elif (st.replicas or 0) > (st.updated_replicas or 0):
            why = (
                f"{(st.replicas or 0) - (st.updated_replicas or 0)} old replicas pending "
                "termination"
            )
        elif (st.available_replicas or 0) < want:
            why = f"{st.available_replicas or 0} of {want} updated replicas available"
        elif phash is None:
            why = "no ReplicaSet for the current revision"
        elif previous_hash is not None and phash == previous_hash:
            why = f"pod-template-hash is still {previous_hash}"
        else:
            pods = k8s_call(
                op,
                "list",
                "Pod",
                None,
                namespace,
                core.list_namespaced_pod,
                namespace,
                label_selector=f"{_selector(dep)},pod-template-hash={phash}",
            )
            ready = [
                p.metadata.name
                for p in pods.items
                if p.metadata.deletion_timestamp is None
                and p.status.container_statuses
                and all(cs.ready for cs in p.status.container_statuses)
            ]
            if len(ready) >= want:
                return phash, sorted(ready)
            why = f"{len(ready)} of {want} new pods ready"
        if time.monotonic() > deadline:
            raise StepFailed(
                op,
                f'Deployment "{deployment}" in namespace "{namespace}" did not '
                f"finish rolling out within {timeout_s:g}s: {why}",
            )
        time.sleep(poll_s)
