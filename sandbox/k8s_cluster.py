"""The simulated cluster behind the sandbox Kubernetes API.

Adds to the object store what a cluster's controllers and kubelet do, as far as the
runbook's steps depend on it:

- Deployment controller: one ReplicaSet per pod-template hash; a template change (for
  example ``kubectl rollout restart``'s ``restartedAt`` annotation) creates a new
  ReplicaSet and scales the old ones to 0; Deployment status and revision annotations.
- ReplicaSet controller: keeps ``spec.replicas`` active pods, named ``<rs>-<5 chars>``.
- Kubelet: pods become Ready ``ready_delay_s`` after creation; a graceful delete sets
  ``deletionTimestamp`` and the pod stays (Terminating) until its containers exit
  (``exit_after_s``, capped by the grace period); grace period 0 removes it at once.
- Garbage collector: deleting an owner deletes its dependents (ownerReferences), unless
  ``propagationPolicy=Orphan``.
- Container logs per container, with ``previous`` logs of restarted containers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.k8s_store import (
    RESOURCES,
    ApiError,
    Resource,
    Store,
    bad_request,
    json_patch,
    merge_patch,
    now_rfc3339,
    strategic_merge_patch,
)

POD = RESOURCES[("", "pods")]
EVENT = RESOURCES[("", "events")]
DEPLOYMENT = RESOURCES[("apps", "deployments")]
REPLICASET = RESOURCES[("apps", "replicasets")]

# k8s.io/apimachinery/pkg/util/rand: the alphabet of generated name suffixes and hashes.
_ALNUM = "bcdfghjklmnpqrstvwxz2456789"


def _suffix(n: int = 5) -> str:
    return "".join(random.choice(_ALNUM) for _ in range(n))


def template_hash(template: dict) -> str:
    """A stable pod-template-hash (the real one is fnv32a, safe-encoded the same way)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:10])


def rfc3339nano(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond * 1000:09d}Z"


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class ContainerLogs:
    current: list[tuple[float, str]] = field(default_factory=list)
    previous: list[tuple[float, str]] | None = None


@dataclass
class PodRuntime:
    """Kubelet-side state of a pod that is not part of its API object."""

    ready_at: float
    logs: dict[str, ContainerLogs]
    gone_at: float | None = None  # when a terminating pod's containers have exited


class Cluster:
    """The store plus controllers; every API operation of the sandbox goes through here."""

    def __init__(self, *, ready_delay_s: float = 0.3, exit_after_s: float = 0.2) -> None:
        self.store = Store()
        self.ready_delay_s = ready_delay_s
        self.exit_after_s = exit_after_s
        self.runtime: dict[tuple[str, str], PodRuntime] = {}
        # container name -> log lines a new pod's container starts with
        self.log_templates: dict[str, list[str]] = {}

    # ------------------------------------------------------------ public operations

    def create(self, res: Resource, namespace: str, body: dict) -> dict:
        with self.store.lock:
            self.tick()
            obj = self.store.insert(res, namespace, body)
            if res is POD:
                self._start_pod(obj)
            if res is DEPLOYMENT:
                obj.setdefault("status", {})
            self._reconcile(namespace)
            return copy.deepcopy(obj)

    def get(self, res: Resource, namespace: str, name: str) -> dict:
        with self.store.lock:
            self.tick()
            return copy.deepcopy(self.store.get(res, namespace, name))

    def list(self, res: Resource, namespace: str, labels: str = "", fields: str = "") -> dict:
        with self.store.lock:
            self.tick()
            items = copy.deepcopy(self.store.list(res, namespace, labels, fields))
            for item in items:
                item.pop("apiVersion", None)
                item.pop("kind", None)
            return {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": self.store.next_rv()},
                "items": items,
            }

    def replace(self, res: Resource, namespace: str, name: str, body: dict) -> dict:
        with self.store.lock:
            self.tick()
            obj = self.store.replace(res, namespace, name, body)
            self._reconcile(namespace)
            return copy.deepcopy(obj)

    def patch(
        self, res: Resource, namespace: str, name: str, patch: Any, content_type: str
    ) -> dict:
        with self.store.lock:
            self.tick()
            current = self.store.get(res, namespace, name)
            if content_type == "application/json-patch+json":
                if not isinstance(patch, list):
                    raise internal_unmarshal()
                new = json_patch(current, patch)
            elif content_type == "application/merge-patch+json":
                new = merge_patch(current, patch)
            elif content_type == "application/strategic-merge-patch+json":
                new = strategic_merge_patch(current, patch)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml, application/strategic-merge-patch+json",
                )
            if not isinstance(new, dict):
                raise bad_request("patch did not produce an object")
            obj = self.store.update(res, namespace, name, new)
            self._reconcile(namespace)
            return copy.deepcopy(obj)

    def delete(
        self,
        res: Resource,
        namespace: str,
        name: str,
        *,
        grace_period: int | None = None,
        propagation: str | None = None,
    ) -> dict:
        """Deletes one object. Returns the pod object for pods (as the apiserver does) and
        a ``Status`` success for everything else."""
        with self.store.lock:
            self.tick()
            obj = self.store.get(res, namespace, name)
            if propagation not in (None, "Orphan", "Background", "Foreground"):
                raise bad_request(f"unsupported propagation policy {propagation!r}")
            result: dict
            if res is POD:
                result = self._delete_pod(obj, grace_period)
            else:
                self.store.remove(res, namespace, name)
                result = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        **({"group": res.group} if res.group else {}),
                        "kind": res.plural,
                        "uid": obj["metadata"]["uid"],
                    },
                }
            if propagation != "Orphan":
                self._collect_dependents(namespace, obj["metadata"]["uid"])
            self._reconcile(namespace)
            return result

    def pod_log(
        self,
        namespace: str,
        name: str,
        *,
        container: str | None,
        previous: bool,
        timestamps: bool,
        since_seconds: int | None,
        since_time: str | None,
        tail_lines: int | None,
        limit_bytes: int | None = None,
    ) -> bytes:
        with self.store.lock:
            self.tick()
            pod = self.store.get(POD, namespace, name)
            names = [c["name"] for c in pod["spec"]["containers"]]
            if container is None:
                if len(names) != 1:
                    raise bad_request(
                        f"a container name must be specified for pod {name}, choose one of: "
                        f"[{' '.join(names)}]"
                    )
                container = names[0]
            if container not in names:
                raise bad_request(f"container {container} is not valid for pod {name}")
            logs = self.runtime[(namespace, name)].logs[container]
            lines = logs.current
            if previous:
                if logs.previous is None:
                    raise bad_request(
                        f'previous terminated container "{container}" in pod "{name}" not found'
                    )
                lines = logs.previous
            if since_seconds is not None:
                lines = [x for x in lines if x[0] >= time.time() - since_seconds]
            elif since_time is not None:
                lines = [x for x in lines if x[0] >= _parse_time(since_time)]
            if tail_lines is not None:
                lines = lines[-tail_lines:] if tail_lines > 0 else []
            out = "".join(
                (f"{rfc3339nano(ts)} " if timestamps else "") + line + "\n" for ts, line in lines
            )
            data = out.encode()
            return data[:limit_bytes] if limit_bytes is not None else data

    # ------------------------------------------------------------ kubelet controls

    def append_log(
        self, namespace: str, pod: str, container: str, line: str, ts: float | None = None
    ) -> None:
        with self.store.lock:
            self.runtime[(namespace, pod)].logs[container].current.append((ts or time.time(), line))

    def restart_container(
        self,
        namespace: str,
        pod: str,
        container: str,
        new_lines: list[str],
        exit_code: int = 1,
        reason: str = "Error",
    ) -> None:
        """Simulates a crash and restart: current log becomes ``previous``."""
        with self.store.lock:
            obj = self.store.get(POD, namespace, pod)
            logs = self.runtime[(namespace, pod)].logs[container]
            logs.previous, logs.current = logs.current, [(time.time(), ln) for ln in new_lines]
            for cs in obj["status"]["containerStatuses"]:
                if cs["name"] == container:
                    started = cs["state"].get("running", {}).get("startedAt", now_rfc3339())
                    cs["restartCount"] += 1
                    cs["lastState"] = {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": reason,
                            "startedAt": started,
                            "finishedAt": now_rfc3339(),
                            "containerID": cs["containerID"],
                        }
                    }
                    cs["containerID"] = "containerd://" + uuid.uuid4().hex
                    cs["state"] = {"running": {"startedAt": now_rfc3339()}}
            obj["metadata"]["resourceVersion"] = self.store.next_rv()

    # ------------------------------------------------------------ internals

    def tick(self) -> None:
        """Advances kubelet state: readiness, terminated pods, Deployment status."""
        now = time.time()
        changed: set[str] = set()
        for (ns, name), rt in list(self.runtime.items()):
            pod = self.store.find(POD, ns, name)
            if pod is None:
                self.runtime.pop((ns, name), None)
                continue
            if rt.gone_at is not None and now >= rt.gone_at:
                self.store.remove(POD, ns, name)
                self.runtime.pop((ns, name), None)
                changed.add(ns)
            elif now >= rt.ready_at and pod["status"]["phase"] == "Pending":
                self._mark_running(pod)
                changed.add(ns)
        for ns in changed:
            self._reconcile(ns)

    def _start_pod(self, pod: dict) -> None:
        meta, spec = pod["metadata"], pod.setdefault("spec", {})
        spec.setdefault("nodeName", "sandbox-node-1")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("restartPolicy", "Always")
        containers = spec.get("containers") or []
        if not containers:
            raise bad_request("spec.containers: Required value")
        pod["status"] = {
            "phase": "Pending",
            "qosClass": "BestEffort",
            "hostIP": "10.0.0.10",
            "podIP": f"10.244.0.{random.randint(2, 250)}",
            "startTime": now_rfc3339(),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()},
                {
                    "type": "Ready",
                    "status": "False",
                    "lastTransitionTime": now_rfc3339(),
                    "reason": "ContainersNotReady",
                },
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                }
                for c in containers
            ],
        }
        logs = {
            c["name"]: ContainerLogs(
                current=[(time.time(), ln) for ln in self.log_templates.get(c["name"], [])]
            )
            for c in containers
        }
        self.runtime[(meta["namespace"], meta["name"])] = PodRuntime(
            ready_at=time.time() + self.ready_delay_s, logs=logs
        )
        self._event(
            pod,
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to sandbox-node-1",
            "default-scheduler",
        )

    def _mark_running(self, pod: dict) -> None:
        now = now_rfc3339()
        status = pod["status"]
        status["phase"] = "Running"
        for cond in status["conditions"]:
            if cond["type"] == "Ready":
                cond.update(status="True", lastTransitionTime=now)
                cond.pop("reason", None)
        for cs in status["containerStatuses"]:
            cs.update(
                ready=True,
                started=True,
                imageID=f"{cs['image']}@sha256:" + hashlib.sha256(cs["image"].encode()).hexdigest(),
                containerID="containerd://" + uuid.uuid4().hex,
                state={"running": {"startedAt": now}},
            )
            self._event(pod, "Started", f"Started container {cs['name']}", "kubelet")
        pod["metadata"]["resourceVersion"] = self.store.next_rv()

    def _delete_pod(self, pod: dict, grace_period: int | None) -> dict:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        if grace_period is not None:
            grace = grace_period
        if grace <= 0:
            self.store.remove(POD, *key)
            self.runtime.pop(key, None)
            return pod
        now = time.time()
        deadline = now + grace
        rt = self.runtime.get(key)
        gone_at = now + min(grace, self.exit_after_s)
        if meta.get("deletionTimestamp") and rt and rt.gone_at is not None:
            gone_at = min(rt.gone_at, gone_at)  # a shorter grace period can only hasten it
        else:
            meta["deletionTimestamp"] = datetime.fromtimestamp(deadline, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
        meta["deletionGracePeriodSeconds"] = grace
        meta["resourceVersion"] = self.store.next_rv()
        if rt:
            rt.gone_at = gone_at
        self._event(pod, "Killing", f"Stopping containers in pod {meta['name']}", "kubelet")
        return pod

    def _collect_dependents(self, namespace: str, owner_uid: str) -> None:
        for (_, plural, ns, name), obj in list(self.store.objects.items()):
            if ns != namespace:
                continue
            owners = obj["metadata"].get("ownerReferences") or []
            if any(o.get("uid") == owner_uid for o in owners):
                res = next(r for r in RESOURCES.values() if r.plural == plural)
                if self.store.find(res, ns, name) is None:
                    continue
                if res is POD:
                    if not obj["metadata"].get("deletionTimestamp"):
                        self._delete_pod(obj, None)
                else:
                    self.store.remove(res, ns, name)
                    self._collect_dependents(ns, obj["metadata"]["uid"])

    def _owned(self, res: Resource, namespace: str, uid: str) -> list[dict]:
        return [
            o
            for o in self.store.list(res, namespace)
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
        ]

    def _reconcile(self, namespace: str) -> None:
        for dep in self.store.list(DEPLOYMENT, namespace):
            self._reconcile_deployment(dep)
        for rs in self.store.list(REPLICASET, namespace):
            self._reconcile_replicaset(rs)
        for dep in self.store.list(DEPLOYMENT, namespace):
            self._deployment_status(dep)

    @staticmethod
    def _owner_ref(obj: dict) -> dict:
        return {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def _reconcile_deployment(self, dep: dict) -> None:
        meta, spec = dep["metadata"], dep["spec"]
        ns = meta["namespace"]
        template = spec["template"]
        phash = template_hash(template)
        owned = self._owned(REPLICASET, ns, meta["uid"])
        current = next(
            (r for r in owned if r["metadata"]["labels"].get("pod-template-hash") == phash), None
        )
        revisions = [
            int(r["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", 0))
            for r in owned
        ]
        if current is None:
            revision = max(revisions, default=0) + 1
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = (
                phash
            )
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = phash
            current = self.store.insert(
                REPLICASET,
                ns,
                {
                    "metadata": {
                        "name": f"{meta['name']}-{phash}",
                        "labels": dict(rs_template["metadata"]["labels"]),
                        "annotations": {
                            "deployment.kubernetes.io/desired-replicas": str(
                                spec.get("replicas", 1)
                            ),
                            "deployment.kubernetes.io/max-replicas": str(
                                spec.get("replicas", 1) + 1
                            ),
                            "deployment.kubernetes.io/revision": str(revision),
                        },
                        "ownerReferences": [self._owner_ref(dep)],
                    },
                    "spec": {
                        "replicas": spec.get("replicas", 1),
                        "selector": selector,
                        "template": rs_template,
                    },
                    "status": {"replicas": 0},
                },
            )
            self._event(
                dep,
                "ScalingReplicaSet",
                f"Scaled up replica set {current['metadata']['name']} to {spec.get('replicas', 1)}",
                "deployment-controller",
            )
            meta.setdefault("annotations", {})["deployment.kubernetes.io/revision"] = str(revision)
        for rs in owned:
            want = spec.get("replicas", 1) if rs is current else 0
            if rs is not current and rs["spec"].get("replicas") != 0:
                self._event(
                    dep,
                    "ScalingReplicaSet",
                    f"Scaled down replica set {rs['metadata']['name']} to 0",
                    "deployment-controller",
                )
            rs["spec"]["replicas"] = want

    def _reconcile_replicaset(self, rs: dict) -> None:
        meta = rs["metadata"]
        ns = meta["namespace"]
        pods = [
            p
            for p in self._owned(POD, ns, meta["uid"])
            if not p["metadata"].get("deletionTimestamp")
        ]
        want = rs["spec"].get("replicas", 1)
        for _ in range(want - len(pods)):
            template = copy.deepcopy(rs["spec"]["template"])
            pod_meta = template.get("metadata", {})
            pod = self.store.insert(
                POD,
                ns,
                {
                    "metadata": {
                        "name": f"{meta['name']}-{_suffix()}",
                        "labels": pod_meta.get("labels", {}),
                        "annotations": pod_meta.get("annotations", {}),
                        "ownerReferences": [self._owner_ref(rs)],
                    },
                    "spec": template["spec"],
                },
            )
            self._start_pod(pod)
            self._event(
                rs,
                "SuccessfulCreate",
                f"Created pod: {pod['metadata']['name']}",
                "replicaset-controller",
            )
        for pod in pods[want:] if len(pods) > want else []:
            self._delete_pod(pod, None)
        active = [
            p
            for p in self._owned(POD, ns, meta["uid"])
            if not p["metadata"].get("deletionTimestamp")
        ]
        ready = [p for p in active if p["status"]["phase"] == "Running"]
        rs["status"] = {
            "replicas": len(active),
            "fullyLabeledReplicas": len(active),
            "readyReplicas": len(ready),
            "availableReplicas": len(ready),
            "observedGeneration": meta.get("generation", 1),
        }

    def _deployment_status(self, dep: dict) -> None:
        meta, spec = dep["metadata"], dep["spec"]
        owned = self._owned(REPLICASET, meta["namespace"], meta["uid"])
        phash = template_hash(spec["template"])
        new = [r for r in owned if r["metadata"]["labels"].get("pod-template-hash") == phash]
        total = sum(r["status"].get("replicas", 0) for r in owned)
        updated = sum(r["status"].get("replicas", 0) for r in new)
        ready = sum(r["status"].get("readyReplicas", 0) for r in owned)
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if ready >= spec.get("replicas", 1) else "False",
                    "reason": "MinimumReplicasAvailable",
                    "lastUpdateTime": now_rfc3339(),
                    "lastTransitionTime": now_rfc3339(),
                }
            ],
        }
        if total - ready > 0:
            status["unavailableReplicas"] = total - ready
        dep["status"] = status

    def _event(self, obj: dict, reason: str, message: str, component: str) -> None:
        meta = obj["metadata"]
        now = now_rfc3339()
        self.store.insert(
            EVENT,
            meta["namespace"],
            {
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}"},
                "involvedObject": {
                    "apiVersion": obj.get("apiVersion", "v1"),
                    "kind": obj.get("kind", ""),
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                },
                "reason": reason,
                "message": message,
                "type": "Normal",
                "source": {"component": component},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "reportingComponent": component,
                "reportingInstance": "",
            },
        )


def internal_unmarshal() -> ApiError:
    """What the apiserver answers when a JSON patch body is not a list."""
    return ApiError(
        500, "InternalError", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
    )
