"""Kubernetes adapter, credentials half: the release's credential Secrets (remove,
write, read) and the Deployment's rollout (``kubectl rollout restart``, ``rollout
status``). Same conventions as :mod:`tasks.kubernetes`: an ``ApiClient`` first, every
call through :func:`tasks.kubernetes_calls.k8s_call`, no secret value in any error.
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

from core.errors import ConfigError, OperationFailed
from core.redact import fingerprint
from tasks.kubernetes_calls import k8s_call, list_pods, read_object

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
CREDENTIALS_ANNOTATION = "mcp-ir/credentials-fingerprint"
_PEM = re.compile(r"^-----BEGIN [A-Z0-9 ]+-----\n.+\n-----END [A-Z0-9 ]+-----\s*$", re.S)
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63}$")


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
        OperationFailed: RBAC/4xx answers, or something still present afterwards.
        TransientError: 5xx answers or an unreachable API.
    """
    op = "kubernetes.remove_credentials"
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
        raise OperationFailed(
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
        OperationFailed: RBAC/4xx answers, or the new pods did not become ready in time.
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
                raise OperationFailed(
                    op,
                    f'Secret "{name}" in namespace "{namespace}": key '
                    f"{key} does not hold the new value after the write",
                )
            fingerprints[f"{name}/{key}"] = fingerprint(values[key])
    marker = fingerprint("\n".join(f"{k}={fingerprint(v)}" for k, v in sorted(values.items())))
    result = RotationResult(secrets_written=written, fingerprints=fingerprints, restarted=False)
    deployment = deployment or release
    dep = read_object(api, "Deployment", namespace, deployment, op=op, missing_ok=True)
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
        OperationFailed: RBAC/4xx (404 if the Deployment is absent). TransientError: 5xx.
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
        OperationFailed: not complete within ``timeout_s`` (the detail says what is missing),
            or the pod-template hash did not change although a restart was requested.
    """
    op = "wait_ready"
    deadline = time.monotonic() + timeout_s
    why = "not observed yet"
    while True:
        dep = read_object(api, "Deployment", namespace, deployment, op=op)
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
            pods = list_pods(api, namespace, f"{_selector(dep)},pod-template-hash={phash}", op=op)
            ready = [
                p.metadata.name
                for p in pods
                if p.metadata.deletion_timestamp is None
                and p.status.container_statuses
                and all(cs.ready for cs in p.status.container_statuses)
            ]
            if len(ready) >= want:
                return phash, sorted(ready)
            why = f"{len(ready)} of {want} new pods ready"
        if time.monotonic() > deadline:
            raise OperationFailed(
                op,
                f'Deployment "{deployment}" in namespace "{namespace}" did not '
                f"finish rolling out within {timeout_s:g}s: {why}",
            )
        time.sleep(poll_s)


def read_secret_values(
    api: client.ApiClient, namespace: str, name: str, *, op: str = "read_secret"
) -> dict[str, str] | None:
    """The decoded ``data`` of one Secret (None when it does not exist). The caller
    holds the values in memory only and registers them with its redactor.

    Raises:
        OperationFailed: RBAC/4xx answers. TransientError: 5xx/unreachable.
    """
    secret = k8s_call(
        op,
        "get",
        "Secret",
        name,
        namespace,
        client.CoreV1Api(api).read_namespaced_secret,
        name,
        namespace,
        missing_ok=True,
    )
    if secret is None:
        return None
    return {
        k: base64.b64decode(v).decode("utf-8", errors="replace")
        for k, v in (secret.data or {}).items()
    }


def credential_secret_names(release: str) -> list[str]:
    """The release's credential Secrets (FACTS §1), ``<release>`` first."""
    return list(_credential_secrets(release))
