"""Deleting on a cluster that deletes asynchronously (FACTS §7).

Garbage collection is eventual: with ``Background`` propagation a Deployment is gone
at once, its ReplicaSet later, and while that ReplicaSet exists it recreates any pod
deleted meanwhile. A check made right after the deletes therefore either reports a
half-uninstalled release that is about to finish, or misses pods that come back.

So:

- :func:`propagation_for` picks the policy per kind: ``Foreground`` for controllers
  that own pods (the owner stays, with ``deletionTimestamp``, until its dependents are
  gone, and a ReplicaSet being deleted creates no pods), ``Background`` for the rest.
  Never the server default: for batch/v1 Jobs that is ``Orphan``, which leaves the pods.
- :func:`wait_gone` polls until nothing of the release is left, within the step's
  timeout, deleting (grace period 0) any pod of the release it finds meanwhile — one
  recreated by a ReplicaSet the collector has not reached yet — and confirms once more
  after a short settle that nothing came back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kubernetes import client

from core.errors import StepFailed
from tasks.kubernetes_calls import delete_pod_now, list_pods

INSTANCE_LABEL = "app.kubernetes.io/instance"
FOREGROUND_KINDS = frozenset(
    {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"}
)
POLL_S = 0.2
SETTLE_S = 0.5


def propagation_for(kind: str) -> str:
    """The propagation policy a delete of ``kind`` uses."""
    return "Foreground" if kind in FOREGROUND_KINDS else "Background"


def _kill_pods(api: client.ApiClient, namespace: str, release: str, op: str) -> list[str]:
    killed = []
    for pod in list_pods(api, namespace, f"{INSTANCE_LABEL}={release}", op=op):
        name = pod.metadata.name
        if pod.metadata.deletion_timestamp and pod.metadata.deletion_grace_period_seconds == 0:
            continue
        delete_pod_now(api, namespace, name, op=op)
        killed.append(name)
    return killed


def wait_gone(
    api: client.ApiClient,
    namespace: str,
    release: str,
    leftovers: Callable[[], list[str]],
    *,
    timeout_s: float,
    op: str = "uninstall_release",
) -> list[str]:
    """Polls ``leftovers()`` (``Kind/name`` still present) until it is empty twice,
    ``SETTLE_S`` apart, killing the release's pods on the way. Returns the pods killed
    while waiting (recreated ones included).

    Raises:
        StepFailed: something is still present when ``timeout_s`` runs out (named).
    """
    deadline = time.monotonic() + timeout_s
    killed: list[str] = []
    confirmed_at: float | None = None
    while True:
        left = leftovers()
        now = time.monotonic()
        if not left:
            if confirmed_at is not None and now - confirmed_at >= SETTLE_S:
                return killed
            confirmed_at = confirmed_at or now
        else:
            confirmed_at = None
            if any(ref.startswith("Pod/") for ref in left):
                killed += [p for p in _kill_pods(api, namespace, release, op) if p not in killed]
        if now >= deadline:
            if left:
                raise StepFailed(
                    op,
                    f'release "{release}" in namespace "{namespace}" is not fully uninstalled '
                    f"after {timeout_s:g} s; still present: {', '.join(left)}",
                )
            return killed
        time.sleep(min(POLL_S, max(0.0, deadline - now)) or POLL_S)
