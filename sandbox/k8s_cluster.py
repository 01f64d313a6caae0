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
- Garbage collector (sandbox/k8s_gc.py): asynchronous, as on a real cluster — with
  ``Background`` propagation the dependents go ``gc_delay_s`` after their owner, and a
  ReplicaSet that still exists recreates deleted pods meanwhile; ``Foreground`` keeps
  the owner until its dependents are gone; ``Orphan`` keeps the dependents.
- Every write is a transaction: a request that fails (or a ``dryRun=All`` one) leaves
  the store exactly as it was; writes are decoded against the OpenAPI schema
  (sandbox/k8s_openapi.py) and validated (sandbox/k8s_validation.py).
- A watch log of every change (sandbox/k8s_gc.py ``WatchLog``) and ``limit``/``continue``
  pagination of lists.
- Container logs per container, with ``previous`` logs of restarted containers.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import hashlib
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox import k8s_apply
from sandbox.k8s_gc import GarbageCollector, WatchLog, default_propagation
from sandbox.k8s_openapi import decode
from sandbox.k8s_scale import SCALABLE, scale_of, wanted_replicas
from sandbox.k8s_store import (
    RESOURCES,
    ApiError,
    Resource,
    Store,
    bad_request,
    conflict,
    json_patch,
    merge_patch,
    not_found,
    now_rfc3339,
    strategic_merge_patch,
)
from sandbox.k8s_validation import validate

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


@dataclass(frozen=True)
class WriteOptions:
    """A create/update/patch request's options: ``?dryRun``, ``?fieldValidation``
    (Warn unless the request says), the list its warnings are added to, and its field
    manager (recorded in ``managedFields``)."""

    dry_run: bool = False
    field_validation: str = "Warn"
    warnings: list[str] | None = None
    manager: str | None = None


PLAIN_WRITE = WriteOptions()


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

    def __init__(
        self,
        *,
        ready_delay_s: float = 0.3,
        exit_after_s: float = 0.2,
        gc_delay_s: float = 0.5,
    ) -> None:
        self.store = Store()
        self.ready_delay_s = ready_delay_s
        self.exit_after_s = exit_after_s
        self.gc = GarbageCollector(self, gc_delay_s)
        self.watch_log = WatchLog()
        self.changed = threading.Condition(self.store.lock)
        self.runtime: dict[tuple[str, str], PodRuntime] = {}
        # container name -> log lines a new pod's container starts with
        self.log_templates: dict[str, list[str]] = {}

    # ------------------------------------------------------------ public operations

    @contextlib.contextmanager
    def transaction(self, *, dry_run: bool = False) -> Iterator[None]:
        """Runs a write under the lock; on any exception — or always for a dry run — the
        store, kubelet state and pending GC work are put back as they were, so a bad
        request can never leave the cluster half-changed."""
        with self.store.lock:
            self.tick()
            saved = (
                copy.deepcopy(self.store.objects),
                copy.deepcopy(self.runtime),
                self.gc.snapshot(),
            )
            try:
                yield
            except BaseException:
                self._restore(saved)
                raise
            if dry_run:
                self._restore(saved)
            else:
                self.publish()

    def _restore(self, saved: tuple[dict, dict, list]) -> None:
        self.store.objects, self.runtime = saved[0], saved[1]
        self.gc.restore(saved[2])

    def publish(self) -> None:
        """Records the changes since the last publish as watch events; wakes watchers."""
        with self.store.lock:
            self.watch_log.publish(self)
            self.changed.notify_all()

    def _decoded(
        self, res: Resource, body: Any, field_validation: str, warnings: list[str] | None
    ) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be an object")
        clean, warned = decode(res, body, field_validation=field_validation)
        if warnings is not None:
            warnings.extend(warned)
        return clean

    def create(
        self,
        res: Resource,
        namespace: str,
        body: dict,
        opts: WriteOptions = PLAIN_WRITE,
    ) -> dict:
        """Creates an object; ``opts.manager`` (the request's field manager) is recorded in
        its ``managedFields`` as owning every field it set."""
        with self.transaction(dry_run=opts.dry_run):
            body = self._decoded(res, body, opts.field_validation, opts.warnings)
            if (body.get("metadata") or {}).get("resourceVersion"):
                raise bad_request("resourceVersion should not be set on objects to be created")
            obj = self.store.insert(res, namespace, body)
            self._track(res, None, obj, opts.manager)
            validate(res, obj)
            self._created(res, obj)
            self._reconcile(namespace)
            return copy.deepcopy(obj)

    def _created(self, res: Resource, obj: dict) -> None:
        if res is POD:
            self._start_pod(obj)
        if res is DEPLOYMENT:
            obj.setdefault("status", {})

    @staticmethod
    def _track(
        res: Resource,
        old: dict | None,
        obj: dict,
        manager: str | None,
        subresource: str | None = None,
    ) -> None:
        given = obj["metadata"].get("managedFields")
        if given and given != ((old or {}).get("metadata") or {}).get("managedFields"):
            # A client that writes managedFields sets them (kubectl's client-side to
            # server-side apply migration does); [{}] resets them. An empty list is
            # ignored, so clients unaware of the field never strip it.
            obj["metadata"]["managedFields"] = [] if given == [{}] else given
            return
        if old is not None and "managedFields" in old["metadata"]:
            obj["metadata"]["managedFields"] = old["metadata"]["managedFields"]
        if manager:
            obj["metadata"]["managedFields"] = k8s_apply.track_update(
                old, obj, manager, res, subresource
            )

    def get(self, res: Resource, namespace: str, name: str) -> dict:
        with self.store.lock:
            self.tick()
            return copy.deepcopy(self.store.get(res, namespace, name))

    def list(
        self,
        res: Resource,
        namespace: str | None,
        labels: str = "",
        fields: str = "",
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict:
        """A list; with ``limit``, one page and a ``continue`` token for the rest (the
        token carries the list's resourceVersion and the last name returned)."""
        with self.store.lock:
            self.tick()
            self.publish()
            items = self.store.list(res, namespace, labels, fields)
            rv = self.store.current_rv()
            if continue_token:
                rv, start = _decode_continue(continue_token)
                items = [i for i in items if _item_key(i) > start]
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if limit and limit > 0 and len(items) > limit:
                rest = len(items) - limit
                items = items[:limit]
                meta["continue"] = _encode_continue(rv, _item_key(items[-1]))
                meta["remainingItemCount"] = rest
            items = copy.deepcopy(items)
            for item in items:
                item.pop("apiVersion", None)
                item.pop("kind", None)
            return {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": meta,
                "items": items,
            }

    def replace(
        self,
        res: Resource,
        namespace: str,
        name: str,
        body: dict,
        opts: WriteOptions = PLAIN_WRITE,
    ) -> dict:
        with self.transaction(dry_run=opts.dry_run):
            body = self._decoded(res, body, opts.field_validation, opts.warnings)
            old = copy.deepcopy(self.store.get(res, namespace, name))
            obj = self.store.replace(res, namespace, name, body)
            return self._updated(res, namespace, old, obj, opts)

    def _updated(
        self, res: Resource, namespace: str, old: dict, obj: dict, opts: WriteOptions
    ) -> dict:
        """The end of an update (replace or patch) once stored: the managed fields, the
        validation against the old object, reconciling; returns a copy of the object."""
        self._track(res, old, obj, opts.manager)
        validate(res, obj, old)
        self._reconcile(namespace)
        return copy.deepcopy(obj)

    def patch(
        self,
        res: Resource,
        namespace: str,
        name: str,
        patch: Any,
        content_type: str,
        opts: WriteOptions = PLAIN_WRITE,
    ) -> dict:
        """Applies a JSON, merge or strategic-merge patch. A patch that sets
        ``metadata.resourceVersion`` (or ``uid``) to something other than the stored
        object's is a precondition: it fails with 409 Conflict, as on a real server."""
        with self.transaction(dry_run=opts.dry_run):
            current = self.store.get(res, namespace, name)
            old = copy.deepcopy(current)
            new = _patched(current, patch, content_type)
            if not isinstance(new, dict):
                raise bad_request("patch did not produce an object")
            new_meta = new.get("metadata") or {}
            want_rv = new_meta.get("resourceVersion")
            if want_rv not in (None, "") and want_rv != old["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if new_meta.get("uid") not in (None, "", old["metadata"]["uid"]):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {res.qualified} "{name}": Precondition '
                    f"failed: UID in precondition: {new_meta['uid']}, UID in object meta: "
                    f"{old['metadata']['uid']}",
                    {
                        "name": name,
                        **({"group": res.group} if res.group else {}),
                        "kind": res.plural,
                    },
                )
            new = self._decoded(res, new, opts.field_validation, opts.warnings)
            obj = self.store.update(res, namespace, name, new)
            return self._updated(res, namespace, old, obj, opts)

    def apply(
        self,
        res: Resource,
        namespace: str,
        name: str,
        body: Any,
        opts: WriteOptions,
        *,
        force: bool = False,
    ) -> tuple[dict, int]:
        """Server-side apply (sandbox/k8s_apply.py): ``body`` is ``opts.manager``'s whole
        intent for the object; creates it when absent (201). Conflicts with other
        managers' fields are a 409 unless ``force``."""
        manager = opts.manager
        if not manager:
            raise bad_request("PATCH apply requires a field manager")
        with self.transaction(dry_run=opts.dry_run):
            body = self._decoded(res, body, opts.field_validation, opts.warnings)
            meta = body.get("metadata") or {}
            if body.get("apiVersion") != res.api_version:
                raise bad_request(
                    f"the API version in the data ({body.get('apiVersion')}) does not match "
                    f"the expected API version ({res.api_version})"
                )
            if body.get("kind") != res.kind:
                raise bad_request(
                    f"the kind in the data ({body.get('kind')}) does not match the expected "
                    f"kind ({res.kind})"
                )
            if meta.get("name") not in (None, "", name):
                raise bad_request(
                    f"the name of the object ({meta['name']}) does not match the name on the "
                    f"URL ({name})"
                )
            if meta.get("managedFields") is not None:
                raise bad_request("metadata.managedFields must be nil")
            current = self.store.find(res, namespace, name)
            want_rv = meta.get("resourceVersion")
            if want_rv not in (None, "") and (
                current is None or want_rv != current["metadata"]["resourceVersion"]
            ):
                raise conflict(res, name) if current is not None else not_found(res, name)
            body = {**body, "metadata": {**meta, "name": name}}
            body["metadata"].pop("resourceVersion", None)
            if current is None:
                merged = k8s_apply.apply(None, body, manager, res, force=force)
                obj = self.store.insert(res, namespace, merged)
                validate(res, obj)
                self._created(res, obj)
                code = 201
            else:
                old = copy.deepcopy(current)
                merged = k8s_apply.apply(current, body, manager, res, force=force)
                obj = self.store.update(res, namespace, name, merged)
                validate(res, obj, old)
                code = 200
            self._reconcile(namespace)
            return copy.deepcopy(obj), code

    def get_scale(self, res: Resource, namespace: str, name: str) -> dict:
        """``GET .../<name>/scale`` (sandbox/k8s_scale.py)."""
        self._scalable(res)
        return scale_of(self.get(res, namespace, name))

    def write_scale(
        self,
        res: Resource,
        namespace: str,
        name: str,
        body: Any,
        content_type: str | None,
        *,
        manager: str,
        dry_run: bool = False,
    ) -> dict:
        """``PUT`` (``content_type`` None) or ``PATCH`` of ``.../<name>/scale``: sets the
        parent's ``spec.replicas``; the field manager owns it with subresource scale."""
        self._scalable(res)
        with self.transaction(dry_run=dry_run):
            current = self.store.get(res, namespace, name)
            scale = (
                body if content_type is None else _patched(scale_of(current), body, content_type)
            )
            replicas = wanted_replicas(res, current, scale)
            old = copy.deepcopy(current)
            new = copy.deepcopy(current)
            new["spec"]["replicas"] = replicas
            obj = self.store.update(res, namespace, name, new)
            self._track(res, old, obj, manager, "scale")
            validate(res, obj, old)
            self._reconcile(namespace)
            return scale_of(obj)

    @staticmethod
    def _scalable(res: Resource) -> None:
        if (res.group, res.plural) not in SCALABLE:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def delete(
        self,
        res: Resource,
        namespace: str,
        name: str,
        *,
        grace_period: int | None = None,
        propagation: str | None = None,
        preconditions: dict | None = None,
        dry_run: bool = False,
    ) -> dict:
        """Deletes one object. Returns the object for pods and for a Foreground delete
        (it stays until its dependents are gone), a ``Status`` success otherwise.
        Dependents are collected asynchronously (see sandbox/k8s_gc.py)."""
        with self.transaction(dry_run=dry_run):
            obj = self.store.get(res, namespace, name)
            if propagation not in (None, "Orphan", "Background", "Foreground"):
                raise bad_request(
                    f'propagationPolicy: Unsupported value: "{propagation}": supported values: '
                    '"Foreground", "Background", "Orphan"'
                )
            pre = preconditions or {}
            for key in ("resourceVersion", "uid"):
                if pre.get(key) not in (None, "") and pre[key] != obj["metadata"][key]:
                    what = "ResourceVersion" if key == "resourceVersion" else "UID"
                    raise ApiError(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on {res.qualified} "{name}": '
                        f"Precondition failed: {what} in precondition: {pre[key]}, {what} in "
                        f"object meta: {obj['metadata'][key]}",
                        {
                            "name": name,
                            **({"group": res.group} if res.group else {}),
                            "kind": res.plural,
                        },
                    )
            policy = propagation or default_propagation(res)
            result: dict
            uid = obj["metadata"]["uid"]
            if res is POD:
                result = copy.deepcopy(self._delete_pod(obj, grace_period))
            elif policy == "Foreground":
                self.gc.foreground(obj)
                result = copy.deepcopy(obj)
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
                        "uid": uid,
                    },
                }
            if policy == "Orphan":
                self.gc.orphan(namespace, uid)
            elif policy == "Background" and res is not POD:
                self.gc.background(namespace, uid)
            self._reconcile(namespace)
            return result

    def step(self) -> None:
        """One beat of the cluster's controllers (the sandbox runs it in a thread)."""
        with self.store.lock:
            self.tick()
            self.publish()

    def delete_pod_gracefully(self, pod: dict) -> None:
        """The garbage collector's delete of a pod (default grace period)."""
        self._delete_pod(pod, None)

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
        changed |= self.gc.process(now)
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

    def _owned(self, res: Resource, namespace: str, uid: str) -> list[dict]:
        return [
            o
            for o in self.store.list(res, namespace)
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
        ]

    def _reconcile(self, namespace: str) -> None:
        # Controllers leave objects that are being deleted alone (foreground deletion).
        for dep in self.store.list(DEPLOYMENT, namespace):
            if not dep["metadata"].get("deletionTimestamp"):
                self._reconcile_deployment(dep)
        for rs in self.store.list(REPLICASET, namespace):
            if not rs["metadata"].get("deletionTimestamp"):
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


def _patched(target: dict, patch: Any, content_type: str) -> Any:
    """``target`` with a JSON, merge or strategic-merge patch applied (415 otherwise)."""
    if content_type == "application/json-patch+json":
        if not isinstance(patch, list):
            raise internal_unmarshal()
        return json_patch(target, patch)
    if content_type == "application/merge-patch+json":
        return merge_patch(target, patch)
    if content_type == "application/strategic-merge-patch+json":
        return strategic_merge_patch(target, patch)
    raise ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, "
        "application/apply-patch+yaml, application/strategic-merge-patch+json",
    )


def internal_unmarshal() -> ApiError:
    """What the apiserver answers when a JSON patch body is not a list."""
    return ApiError(
        500, "InternalError", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
    )


def _item_key(item: dict) -> str:
    meta = item["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def _encode_continue(rv: int, start: str) -> str:
    """The apiserver's continue token: base64 of ``{"v","rv","start"}``."""
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start + "\u0000"})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError(
                "continue key is not valid: incorrect encoded start resourceVersion "
                "(version meta.k8s.io/v1)"
            )
        return int(data["rv"]), str(data["start"]).rstrip("\u0000")
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        detail = str(exc) if str(exc).startswith("continue key") else "continue key is not valid"
        raise ApiError(400, "BadRequest", detail) from None
