"""Evidence capture from a Helm release's pods and objects, bounded in time.

Runs before anything is destroyed (logs vanish with ``helm uninstall``). Returns raw
bytes keyed by artifact name and writes no files: the evidence trail stores them. A
deadline bounds the whole capture so it never delays containment by more than a few
seconds; whatever did not finish is listed in ``incomplete``. Secrets are captured as
metadata and key names only, never values.

Logs and object YAML are raw, NOT redacted (cloudflared's debug log can hold request
headers; a pod spec can hold literal env values): the caller redacts before storing, as
for the Compose adapter.

Logs and object YAML are raw, NOT redacted (cloudflared's debug log can hold request
headers; a pod spec can hold literal env values): the caller redacts before storing, as
for the Compose adapter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from kubernetes import client

from core.errors import McpIrError
from core.redact import scrub_env
from tasks.kubernetes_calls import k8s_call

OP = "kubernetes.capture"
INSTANCE_LABEL = "app.kubernetes.io/instance"
# Annotations that can hold a Secret's values (kubectl apply keeps the whole object).
# Per log stream (the API's limitBytes): keeps one runaway container from eating the
# deadline and memory; a cut log is listed in ``truncated``.
MAX_LOG_BYTES = 32 * 1024 * 1024
_VALUE_BEARING_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


@dataclass(frozen=True)
class SecretSummary:
    """A Secret as evidence: identity and key names, never values."""

    name: str
    type: str
    keys: list[str]
    labels: dict[str, str]
    annotations: dict[str, str]
    created: str
    resource_version: str
    uid: str


@dataclass
class K8sCapture:
    """What :func:`capture` collected. ``artifacts`` maps names such as
    ``logs/<pod>/<container>.log`` or ``objects/deployments.yaml`` to raw bytes."""

    namespace: str
    release: str
    artifacts: dict[str, bytes] = field(default_factory=dict)
    secrets: list[SecretSummary] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    truncated: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.incomplete


def _raw(response: Any) -> bytes:
    data = response.data
    return data if isinstance(data, bytes) else str(data).encode()


def _yaml(items: list[dict]) -> bytes:
    # Env values become fingerprints here, where the objects are serialized.
    docs = [scrub_env(item) for item in items]
    return yaml.safe_dump_all(docs, sort_keys=False).encode() if docs else b""


def capture(
    api: client.ApiClient,
    namespace: str,
    release: str,
    *,
    deadline_s: float = 5.0,
    max_log_bytes: int = MAX_LOG_BYTES,
) -> K8sCapture:
    """Captures logs (both containers of every pod, ``previous`` logs of restarted
    containers, with timestamps) and objects (Deployment, ReplicaSets, Pods, Events,
    NetworkPolicies, Jobs, CronJobs as YAML, the release's Secrets as key names).

    Failures of single items are recorded in ``errors``/``incomplete``, not raised:
    partial evidence is better than none, and capture must never block containment.
    """
    start = time.monotonic()
    out = K8sCapture(namespace=namespace, release=release)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    batch, net = client.BatchV1Api(api), client.NetworkingV1Api(api)
    selector = f"{INSTANCE_LABEL}={release}"

    def remaining() -> float:
        return deadline_s - (time.monotonic() - start)

    def fetch(
        name: str,
        kind: str,
        fn: Callable[..., Any],
        *args: Any,
        missing_ok: bool = False,
        **kw: Any,
    ) -> Any:
        """One bounded read; failures are recorded, not raised (404 → None if
        ``missing_ok``: an absent object is a fact, not a gap)."""
        left = remaining()
        if left <= 0.05:
            out.incomplete.append(name)
            return None
        try:
            return k8s_call(
                OP,
                "get",
                kind,
                None,
                namespace,
                fn,
                *args,
                _request_timeout=(min(2.0, left), left),
                missing_ok=missing_ok,
                **kw,
            )
        except McpIrError as exc:
            out.incomplete.append(name)
            out.errors[name] = exc.detail
            return None

    def listing(name: str, kind: str, fn: Callable[..., Any], **kw: Any) -> list[dict]:
        resp = fetch(f"objects/{name}.yaml", kind, fn, namespace, _preload_content=False, **kw)
        if resp is None:
            return []
        items = json.loads(_raw(resp)).get("items") or []
        return items

    pods = listing("pods", "Pod", core.list_namespaced_pod, label_selector=selector)
    out.pods = [p["metadata"]["name"] for p in pods]
    # Logs first: they are what disappears; object YAML can be re-read until uninstall.
    for pod in pods:
        pod_name = pod["metadata"]["name"]
        restarts = {
            cs["name"]: cs.get("restartCount", 0)
            for cs in (pod.get("status") or {}).get("containerStatuses") or []
        }
        for container in [c["name"] for c in pod["spec"]["containers"]]:
            variants = [False] + ([True] if restarts.get(container, 0) > 0 else [])
            for previous in variants:
                suffix = ".previous.log" if previous else ".log"
                artifact = f"logs/{pod_name}/{container}{suffix}"
                resp = fetch(
                    artifact,
                    "Pod log",
                    core.read_namespaced_pod_log,
                    pod_name,
                    namespace,
                    container=container,
                    timestamps=True,
                    previous=previous,
                    limit_bytes=max_log_bytes,
                    _preload_content=False,
                )
                if resp is not None:
                    out.artifacts[artifact] = _raw(resp)
                    if len(out.artifacts[artifact]) >= max_log_bytes:
                        out.truncated.append(artifact)
    out.artifacts["objects/pods.yaml"] = _yaml(pods)
    objects = {
        "deployments": listing(
            "deployments", "Deployment", apps.list_namespaced_deployment, label_selector=selector
        ),
        "replicasets": listing(
            "replicasets", "ReplicaSet", apps.list_namespaced_replica_set, label_selector=selector
        ),
        "jobs": listing("jobs", "Job", batch.list_namespaced_job, label_selector=selector),
        "cronjobs": listing(
            "cronjobs", "CronJob", batch.list_namespaced_cron_job, label_selector=selector
        ),
        # Every policy of the namespace: any of them may select the release's pods.
        "networkpolicies": listing(
            "networkpolicies", "NetworkPolicy", net.list_namespaced_network_policy
        ),
    }
    for name, items in objects.items():
        if f"objects/{name}.yaml" not in out.incomplete:
            out.artifacts[f"objects/{name}.yaml"] = _yaml(items)
    uids = {o["metadata"]["uid"] for items in [pods, *objects.values()] for o in items}
    events = listing("events", "Event", core.list_namespaced_event)
    if "objects/events.yaml" not in out.incomplete:
        out.artifacts["objects/events.yaml"] = _yaml(
            [e for e in events if (e.get("involvedObject") or {}).get("uid") in uids]
        )
    _capture_secrets(out, core, namespace, release, fetch)
    out.elapsed_s = time.monotonic() - start
    return out


def _capture_secrets(
    out: K8sCapture, core: client.CoreV1Api, namespace: str, release: str, fetch: Callable[..., Any]
) -> None:
    wanted = {release, f"{release}-token", f"{release}-cert"}
    seen: dict[str, dict] = {}
    for selector in (f"{INSTANCE_LABEL}={release}", f"owner=helm,name={release}"):
        resp = fetch(
            f"secrets[{selector}]",
            "Secret",
            core.list_namespaced_secret,
            namespace,
            label_selector=selector,
            _preload_content=False,
        )
        for item in json.loads(_raw(resp)).get("items", []) if resp is not None else []:
            seen[item["metadata"]["name"]] = item
    for name in sorted(wanted - set(seen)):
        resp = fetch(
            f"secrets/{name}",
            "Secret",
            core.read_namespaced_secret,
            name,
            namespace,
            _preload_content=False,
            missing_ok=True,
        )
        if resp is not None:
            seen[name] = json.loads(_raw(resp))
    for name in sorted(seen):
        meta = seen[name]["metadata"]
        annotations = {
            k: v
            for k, v in (meta.get("annotations") or {}).items()
            if k not in _VALUE_BEARING_ANNOTATIONS
        }
        out.secrets.append(
            SecretSummary(
                name=name,
                type=seen[name].get("type", "Opaque"),
                keys=sorted((seen[name].get("data") or {}).keys()),
                labels=dict(meta.get("labels") or {}),
                annotations=annotations,
                created=str(meta.get("creationTimestamp", "")),
                resource_version=str(meta.get("resourceVersion", "")),
                uid=str(meta.get("uid", "")),
            )
        )
    out.artifacts["objects/secrets.yaml"] = _yaml(
        [
            {
                "name": s.name,
                "type": s.type,
                "keys": s.keys,
                "labels": s.labels,
                "annotations": s.annotations,
                "creationTimestamp": s.created,
                "resourceVersion": s.resource_version,
                "uid": s.uid,
            }
            for s in out.secrets
        ]
    )
