"""Object storage of the sandbox Kubernetes API: resources, selectors, patches, Status errors.

Objects are kept in their JSON wire form (camelCase, Secret ``data`` base64-encoded),
exactly as the apiserver serialises them, so what a client reads is what a real
cluster would send. Errors are ``ApiError``s carrying the apiserver's ``Status`` body.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Resource:
    """One served resource type (group "" is the core group)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """Name used in apiserver messages: ``secrets`` or ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES: dict[tuple[str, str], Resource] = {
    (r.group, r.plural): r
    for r in (
        Resource("", "v1", "pods", "Pod"),
        Resource("", "v1", "secrets", "Secret"),
        Resource("", "v1", "services", "Service"),
        Resource("", "v1", "serviceaccounts", "ServiceAccount"),
        Resource("", "v1", "configmaps", "ConfigMap"),
        Resource("", "v1", "events", "Event"),
        Resource("apps", "v1", "deployments", "Deployment"),
        Resource("apps", "v1", "replicasets", "ReplicaSet"),
        Resource("apps", "v1", "daemonsets", "DaemonSet"),
        Resource("batch", "v1", "jobs", "Job"),
        Resource("batch", "v1", "cronjobs", "CronJob"),
        Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
        # Cluster-scoped: what a CNI check reads (nodes' annotations, installed CRDs).
        Resource("", "v1", "nodes", "Node", namespaced=False),
        Resource(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            namespaced=False,
        ),
    )
}

# Field selectors the real apiserver accepts per resource (beyond metadata.name/namespace).
FIELD_LABELS: dict[str, set[str]] = {
    "pods": {"status.phase", "spec.nodeName", "spec.serviceAccountName"},
    "secrets": {"type"},
    "events": {
        "involvedObject.kind",
        "involvedObject.name",
        "involvedObject.namespace",
        "involvedObject.uid",
        "reason",
        "type",
    },
    "replicasets": {"status.replicas"},
    "jobs": {"status.successful"},
}

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An apiserver failure; ``body`` is the ``Status`` object sent on the wire."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if details is not None:
            self.body["details"] = details


def _details(res: Resource, name: str | None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if name is not None:
        d["name"] = name
    if res.group:
        d["group"] = res.group
    d["kind"] = res.plural
    return d


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{res.qualified} "{name}" already exists', _details(res, name)
    )


def conflict(res: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        _details(res, name),
    )


def forbidden(
    res: Resource,
    name: str | None,
    verb: str,
    user: str,
    namespace: str,
    subresource: str | None = None,
) -> ApiError:
    """RBAC denial; for a subresource the apiserver names ``pods "x"`` as the subject and
    ``"pods/log"`` as the resource."""
    subject = f'{res.qualified} "{name}"' if name else res.qualified
    resource = f"{res.plural}/{subresource}" if subresource else res.plural
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return ApiError(
        403,
        "Forbidden",
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
        f'in API group "{res.group}" {scope}',
        _details(res, name),
    )


def internal_error(message: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(res: Resource, name: str, field: str, value: str, why: str) -> ApiError:
    kind = f"{res.kind}.{res.group}" if res.group else res.kind
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {field}: Invalid value: "{value}": {why}',
        {
            **_details(res, name),
            "causes": [
                {
                    "reason": "FieldValueInvalid",
                    "message": f'Invalid value: "{value}": {why}',
                    "field": field,
                }
            ],
        },
    )


# ---------------------------------------------------------------- selectors


_SET_RE = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_requirements(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(selector: str) -> list[tuple[str, str, set[str]]]:
    """Parses equality- and set-based requirements into (key, op, values)."""
    reqs: list[tuple[str, str, set[str]]] = []
    for part in _split_requirements(selector):
        m = _SET_RE.match(part)
        if m:
            values = {v.strip() for v in m.group(3).split(",") if v.strip()}
            reqs.append((m.group(1), m.group(2), values))
        elif "!=" in part:
            k, v = part.split("!=", 1)
            reqs.append((k.strip(), "!=", {v.strip()}))
        elif "==" in part:
            k, v = part.split("==", 1)
            reqs.append((k.strip(), "=", {v.strip()}))
        elif "=" in part:
            k, v = part.split("=", 1)
            reqs.append((k.strip(), "=", {v.strip()}))
        elif part.startswith("!"):
            reqs.append((part[1:].strip(), "!", set()))
        elif re.fullmatch(r"[A-Za-z0-9_./-]+", part):
            reqs.append((part, "exists", set()))
        else:
            raise bad_request(f"unable to parse requirement: {part!r}")
    return reqs


def labels_match(labels: dict[str, str], reqs: list[tuple[str, str, set[str]]]) -> bool:
    for key, op, values in reqs:
        present = key in labels
        value = labels.get(key)
        ok = {
            "=": present and value in values,
            "!=": not present or value not in values,
            "in": present and value in values,
            "notin": not present or value not in values,
            "exists": present,
            "!": not present,
        }[op]
        if not ok:
            return False
    return True


def _field_value(obj: dict, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def parse_field_selector(res: Resource, selector: str) -> list[tuple[str, bool, str]]:
    """(path, equal, value) triples; unsupported field labels are a 400 as on a real server."""
    allowed = {"metadata.name", "metadata.namespace"} | FIELD_LABELS.get(res.plural, set())
    out = []
    for part in _split_requirements(selector):
        if "!=" in part:
            k, v = part.split("!=", 1)
            eq = False
        else:
            k, v = part.replace("==", "=").split("=", 1) if "=" in part else (part, "")
            eq = True
        k = k.strip()
        if k not in allowed:
            raise bad_request(f"field label not supported: {k}")
        out.append((k, eq, v.strip()))
    return out


def fields_match(obj: dict, reqs: list[tuple[str, bool, str]]) -> bool:
    return all((_field_value(obj, k) == v) == eq for k, eq, v in reqs)


# ---------------------------------------------------------------- patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch for what clients send here: maps merge, ``null`` deletes,
    lists of named items (containers, env, ports, volumes) merge by ``name``, other lists
    are replaced."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        cur = result.get(k)
        if v is None:
            result.pop(k, None)
        elif (
            isinstance(v, list)
            and isinstance(cur, list)
            and all(isinstance(i, dict) and "name" in i for i in v + cur)
        ):
            merged = {i["name"]: copy.deepcopy(i) for i in cur}
            for item in v:
                merged[item["name"]] = strategic_merge_patch(merged.get(item["name"]), item)
            result[k] = list(merged.values())
        else:
            result[k] = strategic_merge_patch(cur, v)
    return result


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def json_patch(target: dict, ops: list[dict]) -> dict:
    """RFC 6902 JSON patch (add, replace, remove, test)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = _pointer(op.get("path", ""))
        parent: Any = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        kind = op.get("op")
        try:
            if kind in ("add", "replace"):
                if isinstance(parent, list):
                    idx = len(parent) if last == "-" else int(last)
                    if kind == "add":
                        parent.insert(idx, op["value"])
                    else:
                        parent[idx] = op["value"]
                else:
                    if kind == "replace" and last not in parent:
                        raise KeyError(last)
                    parent[last] = op["value"]
            elif kind == "remove":
                if isinstance(parent, list):
                    parent.pop(int(last))
                else:
                    del parent[last]
            elif kind == "test":
                cur = parent[int(last)] if isinstance(parent, list) else parent[last]
                if cur != op.get("value"):
                    raise ApiError(
                        422,
                        "Invalid",
                        f"the server rejected our request due to an "
                        f"error in our request: testing value {op['path']} failed",
                    )
            else:
                raise bad_request(f"Unexpected kind: {kind}")
        except (KeyError, IndexError, ValueError):
            raise ApiError(
                422,
                "Invalid",
                "the server rejected our request due to an error in our request",
            ) from None
    return doc


# ---------------------------------------------------------------- store


class Store:
    """Thread-safe object store with resourceVersion, uid and creationTimestamp."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str, str, str], dict] = {}
        self._rv = itertools.count(1000)
        self._last_rv = 999

    def next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    def current_rv(self) -> int:
        """The newest resourceVersion handed out (what a list is consistent with)."""
        return self._last_rv

    @staticmethod
    def key(res: Resource, namespace: str, name: str) -> tuple[str, str, str, str]:
        return (res.group, res.plural, namespace, name)

    def get(self, res: Resource, namespace: str, name: str) -> dict:
        obj = self.objects.get(self.key(res, namespace, name))
        if obj is None:
            raise not_found(res, name)
        return obj

    def find(self, res: Resource, namespace: str, name: str) -> dict | None:
        return self.objects.get(self.key(res, namespace, name))

    def list(
        self,
        res: Resource,
        namespace: str | None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[dict]:
        lreqs = parse_label_selector(label_selector) if label_selector else []
        freqs = parse_field_selector(res, field_selector) if field_selector else []
        out = []
        for (g, p, ns, _), obj in sorted(self.objects.items()):
            if (g, p) != (res.group, res.plural) or (namespace is not None and ns != namespace):
                continue
            if labels_match(obj["metadata"].get("labels") or {}, lreqs) and fields_match(
                obj, freqs
            ):
                out.append(obj)
        return out

    def insert(self, res: Resource, namespace: str, body: dict) -> dict:
        """Validates and stores a new object the way the apiserver's create does."""
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name") or ""
        if not name:
            raise invalid(res, "", "metadata.name", "", "name or generateName is required")
        if len(name) > 253 or not _DNS1123.match(name):
            raise invalid(
                res,
                name,
                "metadata.name",
                name,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        if res.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        if self.key(res, namespace, name) in self.objects:
            raise already_exists(res, name)
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind
        _set_namespace(res, meta, namespace)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["resourceVersion"] = self.next_rv()
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(transient, None)
        if "spec" in obj:
            meta["generation"] = 1
        if res.kind == "Secret":
            normalise_secret(obj, res)
        self.objects[self.key(res, namespace, name)] = obj
        return obj

    def replace(self, res: Resource, namespace: str, name: str, body: dict) -> dict:
        old = self.get(res, namespace, name)
        new = copy.deepcopy(body)
        meta = new.setdefault("metadata", {})
        if meta.get("name") not in (None, name):
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})"
            )
        if (
            meta.get("resourceVersion")
            and meta["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise conflict(res, name)
        return self.update(res, namespace, name, new)

    def update(self, res: Resource, namespace: str, name: str, new: dict) -> dict:
        """Stores ``new`` in place of the current object, keeping its identity fields."""
        old = self.get(res, namespace, name)
        meta = new.setdefault("metadata", {})
        for keep in (
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if keep in old["metadata"]:
                meta[keep] = old["metadata"][keep]
            else:
                meta.pop(keep, None)
        meta["name"] = name
        _set_namespace(res, meta, namespace)
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        if res.kind == "Secret":
            normalise_secret(new, res)
        if "spec" in new and new.get("spec") != old.get("spec"):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if "status" in old and res.kind not in ("Secret", "ConfigMap"):
            new["status"] = old["status"]  # status is a subresource: main writes keep it
        meta["resourceVersion"] = self.next_rv()
        self.objects[self.key(res, namespace, name)] = new
        return new

    def remove(self, res: Resource, namespace: str, name: str) -> dict:
        return self.objects.pop(self.key(res, namespace, name))


def _set_namespace(res: Resource, meta: dict, namespace: str) -> None:
    """Namespaced objects carry the request's namespace; cluster-scoped ones none (the
    apiserver clears a namespace sent with them)."""
    if res.namespaced:
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)


def normalise_secret(obj: dict, res: Resource) -> None:
    """Folds ``stringData`` into base64 ``data`` and rejects data that is not base64,
    as the apiserver does (Secret data is ``[]byte``, base64 in JSON)."""
    data = obj.get("data") or {}
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data '
                f"at input byte 0 (key {key!r})"
            ) from None
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    obj["data"] = data
    if not obj.get("type"):
        obj["type"] = "Opaque"
