"""The sandbox cluster's garbage collector and its watch log.

Garbage collection is asynchronous, as on a real cluster (FACTS §7): deleting an owner
with ``propagationPolicy=Background`` removes the owner at once and its dependents only
``delay_s`` later — meanwhile a ReplicaSet that still exists keeps recreating the pods
someone deletes. ``Foreground`` keeps the owner (``deletionTimestamp`` and the
``foregroundDeletion`` finalizer) until its dependents are gone, then removes it.
``Orphan`` strips the owner reference from the dependents. The default when a client
names no policy is ``Background``, except for batch/v1 Jobs, which orphan their pods
(the apiserver's legacy default for Jobs).

The watch log records every change of the store as watch events with the
resourceVersion it happened at, found by comparing the store with what was last
published (controllers change status in place, as the kubelet and controllers update
through the API on a real cluster).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandbox.k8s_store import RESOURCES, Resource

if TYPE_CHECKING:
    from sandbox.k8s_cluster import Cluster

FOREGROUND_FINALIZER = "foregroundDeletion"
WATCH_LOG_SIZE = 5000


def default_propagation(res: Resource) -> str:
    """What the apiserver does when the client names no propagation policy."""
    return "Orphan" if res.kind == "Job" else "Background"


@dataclass(order=True)
class _Work:
    due: float
    action: str = field(compare=False)  # "collect" (background) | "foreground"
    namespace: str = field(compare=False)
    uid: str = field(compare=False)


class GarbageCollector:
    """Pending collection work of one cluster; :meth:`process` runs what is due."""

    def __init__(self, cluster: Cluster, delay_s: float) -> None:
        self.cluster = cluster
        self.delay_s = delay_s
        self.queue: list[_Work] = []

    def snapshot(self) -> list[_Work]:
        return list(self.queue)

    def restore(self, queue: list[_Work]) -> None:
        self.queue = queue

    def background(self, namespace: str, uid: str) -> None:
        self.queue.append(_Work(time.time() + self.delay_s, "collect", namespace, uid))

    def foreground(self, obj: dict) -> None:
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = _now()
            meta["deletionGracePeriodSeconds"] = 0
        finalizers = meta.setdefault("finalizers", [])
        if FOREGROUND_FINALIZER not in finalizers:
            finalizers.append(FOREGROUND_FINALIZER)
        meta["resourceVersion"] = self.cluster.store.next_rv()
        self.queue.append(
            _Work(time.time() + self.delay_s, "foreground", meta.get("namespace", ""), meta["uid"])
        )

    def orphan(self, namespace: str, uid: str) -> None:
        for _, obj in self.dependents(namespace, uid):
            refs = obj["metadata"].get("ownerReferences") or []
            obj["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
            if not obj["metadata"]["ownerReferences"]:
                obj["metadata"].pop("ownerReferences")
            obj["metadata"]["resourceVersion"] = self.cluster.store.next_rv()

    def dependents(self, namespace: str, uid: str) -> list[tuple[Resource, dict]]:
        out = []
        for (group, plural, ns, _), obj in list(self.cluster.store.objects.items()):
            if ns != namespace:
                continue
            if any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or []):
                out.append((RESOURCES[(group, plural)], obj))
        return out

    def _owner_alive(self, namespace: str, uid: str) -> bool:
        return any(
            o["metadata"].get("uid") == uid and not o["metadata"].get("deletionTimestamp")
            for (_, _, ns, _), o in self.cluster.store.objects.items()
            if ns == namespace
        )

    def _delete_dependent(self, res: Resource, obj: dict, owner_uid: str, foreground: bool) -> None:
        meta = obj["metadata"]
        others = [
            r
            for r in meta.get("ownerReferences") or []
            if r.get("uid") != owner_uid
            and self._owner_alive(meta.get("namespace", ""), r.get("uid"))
        ]
        if others:  # another living owner keeps it: only the dead reference goes
            meta["ownerReferences"] = others
            meta["resourceVersion"] = self.cluster.store.next_rv()
            return
        if res.kind == "Pod":
            if not meta.get("deletionTimestamp"):
                self.cluster.delete_pod_gracefully(obj)
        elif foreground:
            self.foreground(obj)
        else:
            self.cluster.store.remove(res, meta.get("namespace", ""), meta["name"])
            self.background(meta.get("namespace", ""), meta["uid"])

    def process(self, now: float) -> set[str]:
        """Runs the due work; returns the namespaces that changed."""
        changed: set[str] = set()
        due = sorted(w for w in self.queue if w.due <= now)
        if not due:
            return changed
        self.queue = [w for w in self.queue if w.due > now]
        for work in due:
            deps = self.dependents(work.namespace, work.uid)
            for res, obj in deps:
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete_dependent(res, obj, work.uid, work.action == "foreground")
                    changed.add(work.namespace)
            if work.action != "foreground":
                continue
            owner = next(
                (
                    (key, o)
                    for key, o in self.cluster.store.objects.items()
                    if o["metadata"].get("uid") == work.uid
                ),
                None,
            )
            if owner is None:
                continue
            if self.dependents(work.namespace, work.uid):
                self.queue.append(_Work(now + 0.05, "foreground", work.namespace, work.uid))
            else:
                self.cluster.store.objects.pop(owner[0])
                changed.add(work.namespace)
        return changed


def _now() -> str:
    from sandbox.k8s_store import now_rfc3339

    return now_rfc3339()


# ------------------------------------------------------------------ watch log


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    key: tuple[str, str, str, str]
    object: dict[str, Any]


class WatchLog:
    """Watch events derived from successive states of the store."""

    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.seen: dict[tuple[str, str, str, str], dict] = {}
        self.oldest_rv = 0

    def publish(self, cluster: Cluster) -> None:
        objects = cluster.store.objects
        batch: list[tuple[str, tuple[str, str, str, str], dict]] = []
        for key, obj in objects.items():
            old = self.seen.get(key)
            if old == obj:
                continue
            meta = obj["metadata"]
            if old is not None and old["metadata"].get("resourceVersion") == meta.get(
                "resourceVersion"
            ):
                meta["resourceVersion"] = cluster.store.next_rv()
            batch.append(("ADDED" if old is None else "MODIFIED", key, obj))
        for key in set(self.seen) - set(objects):
            gone = copy.deepcopy(self.seen[key])
            gone["metadata"]["resourceVersion"] = cluster.store.next_rv()
            batch.append(("DELETED", key, gone))
        for kind, key, obj in sorted(batch, key=lambda b: int(b[2]["metadata"]["resourceVersion"])):
            self._append(kind, key, obj)
            if kind == "DELETED":
                self.seen.pop(key, None)
            else:
                self.seen[key] = copy.deepcopy(obj)
        if len(self.events) > WATCH_LOG_SIZE:
            drop = len(self.events) - WATCH_LOG_SIZE
            self.oldest_rv = self.events[drop - 1].rv
            del self.events[:drop]

    def _append(self, kind: str, key: tuple[str, str, str, str], obj: dict) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self.events.append(WatchEvent(rv, kind, key, copy.deepcopy(obj)))
