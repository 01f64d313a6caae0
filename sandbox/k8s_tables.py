"""Server-side printing: the ``meta.k8s.io/v1`` ``Table`` kubectl asks for.

``kubectl get`` sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io, ...`` and
prints the columns the server chose; these are the apiserver's default columns for the
kinds the sandbox serves (pkg/printers/internalversion), ``NAME`` and ``AGE`` always.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from sandbox.k8s_store import Resource

TABLE_ACCEPT = "as=Table"


def wants_table(accept: str) -> bool:
    """Whether the first acceptable type is a meta.k8s.io Table."""
    first = accept.split(",")[0]
    return TABLE_ACCEPT in first and "g=meta.k8s.io" in first


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y{d % 365}d" if d % 365 else f"{d // 365}y"


def _age(obj: dict) -> str:
    created = obj.get("metadata", {}).get("creationTimestamp")
    if not created:
        return "<unknown>"
    ts = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    return human_duration(time.time() - ts)


def _pod(obj: dict) -> list[Any]:
    statuses = obj.get("status", {}).get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    total = len(obj.get("spec", {}).get("containers") or [])
    phase = obj.get("status", {}).get("phase", "Pending")
    for c in statuses:
        waiting = c.get("state", {}).get("waiting")
        if waiting:
            phase = waiting.get("reason", phase)
    if obj["metadata"].get("deletionTimestamp"):
        phase = "Terminating"
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    return [f"{ready}/{total}", phase, restarts]


def _selector(sel: dict | None) -> str:
    sel = sel or {}
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for req in sel.get("matchExpressions") or []:
        op = req.get("operator", "")
        if op in ("In", "NotIn"):
            parts.append(f"{req['key']} {op.lower()} ({','.join(req.get('values') or [])})")
        else:
            parts.append(req["key"] if op == "Exists" else f"!{req['key']}")
    return ",".join(parts) or "<none>"


COLUMNS: dict[str, tuple[list[tuple[str, str]], Any]] = {
    "Pod": (
        [("Ready", "string"), ("Status", "string"), ("Restarts", "string")],
        _pod,
    ),
    "Secret": (
        [("Type", "string"), ("Data", "string")],
        lambda o: [o.get("type", ""), len(o.get("data") or {})],
    ),
    "ConfigMap": (
        [("Data", "string")],
        lambda o: [len(o.get("data") or {}) + len(o.get("binaryData") or {})],
    ),
    "Deployment": (
        [("Ready", "string"), ("Up-to-date", "string"), ("Available", "string")],
        lambda o: [
            f"{o.get('status', {}).get('readyReplicas', 0)}/{o.get('spec', {}).get('replicas', 1)}",
            o.get("status", {}).get("updatedReplicas", 0),
            o.get("status", {}).get("availableReplicas", 0),
        ],
    ),
    "ReplicaSet": (
        [("Desired", "integer"), ("Current", "integer"), ("Ready", "integer")],
        lambda o: [
            o.get("spec", {}).get("replicas", 0),
            o.get("status", {}).get("replicas", 0),
            o.get("status", {}).get("readyReplicas", 0),
        ],
    ),
    "NetworkPolicy": (
        [("Pod-Selector", "string")],
        lambda o: [_selector(o.get("spec", {}).get("podSelector"))],
    ),
    "Service": (
        [("Type", "string"), ("Cluster-IP", "string"), ("Port(s)", "string")],
        lambda o: [
            o.get("spec", {}).get("type", "ClusterIP"),
            o.get("spec", {}).get("clusterIP", "<none>"),
            ",".join(
                f"{p.get('port')}/{p.get('protocol', 'TCP')}"
                for p in o.get("spec", {}).get("ports") or []
            )
            or "<none>",
        ],
    ),
    "Node": (
        [("Status", "string"), ("Roles", "string"), ("Version", "string")],
        lambda o: [
            "Ready"
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in o.get("status", {}).get("conditions") or []
            )
            else "NotReady",
            ",".join(
                sorted(
                    k.split("/", 1)[1]
                    for k in o["metadata"].get("labels") or {}
                    if k.startswith("node-role.kubernetes.io/")
                )
            )
            or "<none>",
            o.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", ""),
        ],
    ),
    "DaemonSet": (
        [
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
            ("Node Selector", "string"),
        ],
        lambda o: [
            o.get("status", {}).get("desiredNumberScheduled", 0),
            o.get("status", {}).get("currentNumberScheduled", 0),
            o.get("status", {}).get("numberReady", 0),
            o.get("status", {}).get("updatedNumberScheduled", 0),
            o.get("status", {}).get("numberAvailable", 0),
            ",".join(
                f"{k}={v}"
                for k, v in (
                    o.get("spec", {}).get("template", {}).get("spec", {}).get("nodeSelector") or {}
                ).items()
            )
            or "<none>",
        ],
    ),
    "CronJob": (
        [("Schedule", "string"), ("Suspend", "boolean")],
        lambda o: [o.get("spec", {}).get("schedule", ""), bool(o.get("spec", {}).get("suspend"))],
    ),
}


def to_table(res: Resource, items: list[dict], list_meta: dict | None = None) -> dict[str, Any]:
    """A Table of ``items`` (each row carries its full object, as with
    ``includeObject=Object``)."""
    extra, cells = COLUMNS.get(res.kind, ([], lambda o: []))
    definitions = [
        {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}
    ]
    definitions += [
        {"name": n, "type": t, "format": "", "description": n, "priority": 0} for n, t in extra
    ]
    definitions.append(
        {"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}
    )
    rows = []
    for obj in items:
        full = {"kind": res.kind, "apiVersion": res.api_version, **obj}
        rows.append({"cells": [obj["metadata"]["name"], *cells(obj), _age(obj)], "object": full})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta or {},
        "columnDefinitions": definitions,
        "rows": rows,
    }
