"""Kubernetes client loading and the one place API failures become runbook errors.

Every call the Kubernetes adapter makes goes through :func:`k8s_call`, so a 403, 404,
409 or 5xx always becomes the same kind of error, naming the verb, the resource kind,
its name and the namespace. Error details quote only the apiserver's ``Status`` message,
never a request body, so written secret values cannot leak through an exception.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from core.errors import ConfigError, OperationFailed, TransientError

T = TypeVar("T")

# Seconds a single API request may take (connect, read); a hung apiserver must not hang
# a containment step.
REQUEST_TIMEOUT = (3.0, 15.0)


# kind → (the SDK's API group class, the resource's snake_case name in its method names):
# the one table the adapter's kind → function maps are made from.
SDK_KINDS: dict[str, tuple[type, str]] = {
    "Pod": (client.CoreV1Api, "pod"),
    "Service": (client.CoreV1Api, "service"),
    "ConfigMap": (client.CoreV1Api, "config_map"),
    "Secret": (client.CoreV1Api, "secret"),
    "ServiceAccount": (client.CoreV1Api, "service_account"),
    "PersistentVolumeClaim": (client.CoreV1Api, "persistent_volume_claim"),
    "Deployment": (client.AppsV1Api, "deployment"),
    "ReplicaSet": (client.AppsV1Api, "replica_set"),
    "StatefulSet": (client.AppsV1Api, "stateful_set"),
    "DaemonSet": (client.AppsV1Api, "daemon_set"),
    "Job": (client.BatchV1Api, "job"),
    "CronJob": (client.BatchV1Api, "cron_job"),
    "Ingress": (client.NetworkingV1Api, "ingress"),
    "NetworkPolicy": (client.NetworkingV1Api, "network_policy"),
    "Role": (client.RbacAuthorizationV1Api, "role"),
    "RoleBinding": (client.RbacAuthorizationV1Api, "role_binding"),
    "PodDisruptionBudget": (client.PolicyV1Api, "pod_disruption_budget"),
    "HorizontalPodAutoscaler": (client.AutoscalingV2Api, "horizontal_pod_autoscaler"),
}


def namespaced_functions(
    api: client.ApiClient, verb: str, kinds: tuple[str, ...] | list[str]
) -> dict[str, Callable[..., Any]]:
    """kind → the SDK's ``<verb>_namespaced_<kind>`` function bound to ``api``, for
    ``kinds`` in their order (``verb``: read, list, create, delete, patch, replace)."""
    groups: dict[type, Any] = {}
    functions: dict[str, Callable[..., Any]] = {}
    for kind in kinds:
        group_class, resource = SDK_KINDS[kind]
        group = groups.setdefault(group_class, group_class(api))
        functions[kind] = getattr(group, f"{verb}_namespaced_{resource}")
    return functions


def load_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """Builds an ``ApiClient`` for the target cluster.

    Order: an explicit ``kubeconfig`` path; else in-cluster service-account config when
    running in a pod (``KUBERNETES_SERVICE_HOST`` set and no ``KUBECONFIG``); else the
    ``KUBECONFIG`` environment variable (colon-separated lists are merged) or
    ``~/.kube/config``. The environment is read here, when a command runs, not at import.

    Raises:
        ConfigError: the kubeconfig is missing or invalid, the context is unknown, or the
            in-cluster service account cannot be read.
    """
    env_kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig is None and not env_kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ConfigError(f"in-cluster: cannot load the pod's service account: {exc}") from None
        return client.ApiClient(configuration=configuration)
    try:
        path = kubeconfig or env_kubeconfig or os.path.expanduser("~/.kube/config")
        if ":" not in path and not os.path.exists(path):
            field = "kubeconfig" if kubeconfig else "KUBECONFIG"
            raise ConfigError(f"{field}: kubeconfig file {path!r} does not exist")
        return config.new_client_from_config(
            config_file=path, context=context, persist_config=False
        )
    except ConfigException as exc:
        field = "context" if context and "context" in str(exc).lower() else "kubeconfig"
        raise ConfigError(f"{field}: cannot load Kubernetes configuration: {exc}") from None


def _status_message(exc: ApiException) -> tuple[str, str]:
    """(reason, message) from the apiserver's ``Status`` body, if it sent one."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    try:
        status = json.loads(body) if body else {}
    except (TypeError, ValueError):
        status = {}
    if not isinstance(status, dict):
        status = {}
    return str(status.get("reason") or exc.reason or ""), str(status.get("message") or "")


def describe(verb: str, kind: str, name: str | None, namespace: str) -> str:
    """``delete Secret "x" in namespace "y"`` — how every error names its target
    (``namespace`` empty: a cluster-scoped kind, or a list across every namespace)."""
    target = f'{kind} "{name}"' if name else f"{kind} objects"
    return (
        f'{verb} {target} in namespace "{namespace}"'
        if namespace
        else f"{verb} {target} cluster-wide"
    )


def api_error(
    op: str, verb: str, kind: str, name: str | None, namespace: str, exc: ApiException
) -> OperationFailed | TransientError:
    """Maps an ``ApiException`` to a runbook error naming what was being done."""
    reason, message = _status_message(exc)
    what = describe(verb, kind, name, namespace)
    text = f"{op}: {what} failed: HTTP {exc.status} {reason}" + (f": {message}" if message else "")
    if exc.status == 403:
        return OperationFailed(op, f"{what} is forbidden by RBAC (403 {reason}): {message}")
    if exc.status == 401:
        return OperationFailed(
            op, f"{what}: the cluster rejected our credentials (401); check the kubeconfig user"
        )
    if exc.status in (429,) or (exc.status or 0) >= 500:
        return TransientError(text)
    return OperationFailed(
        op, f"{what} failed: HTTP {exc.status} {reason}" + (f": {message}" if message else "")
    )


def k8s_call(
    op: str,
    verb: str,
    kind: str,
    name: str | None,
    namespace: str,
    fn: Callable[..., T],
    *args: Any,
    missing_ok: bool = False,
    exists_ok: bool = False,
    **kwargs: Any,
) -> T | None:
    """Calls ``fn`` and maps failures.

    ``missing_ok`` turns a 404 into ``None`` (idempotent deletes); ``exists_ok`` turns a
    409 AlreadyExists into ``None`` (idempotent creates).

    Raises:
        OperationFailed: 4xx answers (403 RBAC, 404, 409 ...), naming verb, kind, name and
            namespace.
        TransientError: 5xx/429 answers and connection failures (retryable).
    """
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        if missing_ok and exc.status == 404:
            return None
        if exists_ok and exc.status == 409 and _status_message(exc)[0] == "AlreadyExists":
            return None
        raise api_error(op, verb, kind, name, namespace, exc) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransientError(
            f"{op}: {describe(verb, kind, name, namespace)}: cannot reach the Kubernetes API "
            f"({type(exc).__name__})"
        ) from None


def list_pods(api: client.ApiClient, namespace: str, selector: str, *, op: str) -> list[Any]:
    """The pods matching a label selector (``list`` through :func:`k8s_call`)."""
    return k8s_call(
        op,
        "list",
        "Pod",
        None,
        namespace,
        client.CoreV1Api(api).list_namespaced_pod,
        namespace,
        label_selector=selector,
    ).items


def delete_pod_now(api: client.ApiClient, namespace: str, name: str, *, op: str) -> bool:
    """Deletes a pod with grace period 0: no graceful shutdown for a compromised
    workload, so no connection it holds outlives the call. False when it was gone."""
    done = k8s_call(
        op,
        "delete",
        "Pod",
        name,
        namespace,
        client.CoreV1Api(api).delete_namespaced_pod,
        name,
        namespace,
        grace_period_seconds=0,
        body=client.V1DeleteOptions(grace_period_seconds=0),
        missing_ok=True,
    )
    return done is not None


def read_object(
    api: client.ApiClient,
    kind: str,
    namespace: str,
    name: str,
    *,
    op: str,
    missing_ok: bool = False,
) -> Any:
    """One namespaced object of a kind in :data:`SDK_KINDS` (None when absent and
    ``missing_ok``)."""
    read = namespaced_functions(api, "read", (kind,))[kind]
    return k8s_call(op, "get", kind, name, namespace, read, name, namespace, missing_ok=missing_ok)


def create_object(
    api: client.ApiClient,
    kind: str,
    namespace: str,
    name: str,
    body: Any,
    *,
    op: str,
    exists_ok: bool = False,
) -> Any:
    """Creates a namespaced object of a kind in :data:`SDK_KINDS` (None when it exists
    already and ``exists_ok``)."""
    create = namespaced_functions(api, "create", (kind,))[kind]
    return k8s_call(
        op, "create", kind, name, namespace, create, namespace, body, exists_ok=exists_ok
    )
