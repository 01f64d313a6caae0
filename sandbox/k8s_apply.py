"""Field ownership (``metadata.managedFields``) and server-side apply for the sandbox
Kubernetes API, after the Kubernetes docs ("Server-Side Apply") and the apiserver's
messages (k8s.io/apimachinery ``managedfields/internal/conflict.go``).

- Every write through the API records who set which fields: a create or update
  (PUT, JSON/merge/strategic patch, ``/scale``) is an ``Update`` by its field manager
  (``?fieldManager=``, else the User-Agent up to its first ``/``, as the apiserver
  derives it); that manager takes the fields it changed, and every other manager loses
  them.
- ``PATCH`` with ``application/apply-patch+yaml`` is an ``Apply``: the body is the
  manager's whole intent. A field it sets to a value other than the live one, while
  another manager owns that field, is a conflict — 409 ``Conflict`` with one
  ``FieldManagerConflict`` cause per field — unless ``force=true``, which takes the
  field over. Fields the manager applied before and no longer applies are removed
  when nobody else owns them. An apply to an object that does not exist creates it.

Fields are tracked at their leaves. Lists whose items have keys (containers by
``name``, container ports by ``containerPort``+``protocol``, env, volumes, volume
mounts, owner references, conditions) are merged and owned per item, as their schema's
``x-kubernetes-list-type: map`` says; every other list is atomic (owned and replaced
whole). Changes the sandbox's own controllers make (status, revision annotations) are
not attributed to a manager.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

from sandbox.k8s_store import ApiError, Resource, now_rfc3339

Path = tuple[tuple[str, str], ...]  # ("f", field) or ("k", '{"name":"x"}') elements

_UNTRACKED_META = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
}
_LIST_KEYS = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "ownerReferences": ("uid",),
    "conditions": ("type",),
    "imagePullSecrets": ("name",),
}


def _list_keys(field: str, items: list[Any]) -> tuple[str, ...] | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if field == "ports":
        if all("containerPort" in i for i in items):
            return ("containerPort", "protocol")
        return None
    keys = _LIST_KEYS.get(field)
    if keys and all(all(k in i for k in keys) for i in items):
        return keys
    return None


def _item_key(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    # protocol defaults to TCP before the key is taken (ContainerPort)
    values = {k: item.get(k, "TCP" if k == "protocol" else None) for k in keys}
    return json.dumps(values, separators=(",", ":"))


def leaves(obj: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """(path, value) of every tracked leaf of an object in wire form."""
    if not isinstance(obj, dict):
        return
    for field, value in obj.items():
        if not path and field in ("apiVersion", "kind", "status"):
            continue
        if path == (("f", "metadata"),) and field in _UNTRACKED_META:
            continue
        here = (*path, ("f", field))
        keys = _list_keys(field, value) if isinstance(value, list) else None
        if isinstance(value, dict) and value:
            yield from leaves(value, here)
        elif keys:
            for item in value:
                yield from leaves(item, (*here, ("k", _item_key(item, keys))))
        else:
            yield here, value


def _step(node: Any, element: tuple[str, str]) -> Any:
    kind, name = element
    if kind == "f":
        return node.get(name) if isinstance(node, dict) else None
    if not isinstance(node, list):
        return None
    want = json.loads(name)
    for item in node:
        if isinstance(item, dict) and all(
            item.get(k, "TCP" if k == "protocol" else None) == v for k, v in want.items()
        ):
            return item
    return None


def _keyed(node: Any, name: str) -> Any:
    """The list item with key ``name``, also once its fields were cleared (``{}``)."""
    found = _step(node, ("k", name))
    if found is None and isinstance(node, list):
        found = next((i for i in node if i == {}), None)
    return found


def display(path: Path) -> str:
    """``.spec.template.spec.containers[name="app"].image``, as conflicts name fields."""
    out = ""
    for kind, name in path:
        if kind == "f":
            out += f".{name}"
        else:
            pairs = json.loads(name)
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in pairs.items()) + "]"
    return out


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    """The ``fieldsV1`` tree of a set of leaf paths (list items carry their ``.``)."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for kind, name in path:
            node = node.setdefault(f"{kind}:{name}", {})
            if kind == "k":
                node.setdefault(".", {})
    return tree


def from_fields_v1(tree: dict[str, Any], path: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, sub in (tree or {}).items():
        if key == ".":
            continue
        kind, _, name = key.partition(":")
        here = (*path, (kind, name))
        children = {k: v for k, v in (sub or {}).items() if k != "."}
        if children:
            out |= from_fields_v1(children, here)
        elif kind == "f":
            out.add(here)
    return out


def manager_from(field_manager: str | None, user_agent: str) -> str:
    """The request's field manager: ``fieldManager``, else the User-Agent's prefix."""
    if field_manager:
        if len(field_manager) > 128:
            raise ApiError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Too long: may not be '
                "more than 128 bytes",
            )
        return field_manager
    return (user_agent.split("/", 1)[0] or "unknown")[:128]


def _entries(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    return copy.deepcopy(((obj or {}).get("metadata") or {}).get("managedFields") or [])


def _same(entry: dict[str, Any], manager: str, operation: str, subresource: str | None) -> bool:
    return (
        entry.get("manager") == manager
        and entry.get("operation") == operation
        and entry.get("subresource") == subresource
    )


def _set_entry(
    entries: list[dict[str, Any]],
    manager: str,
    operation: str,
    api_version: str,
    owned: set[Path],
    subresource: str | None,
) -> None:
    entry = next((e for e in entries if _same(e, manager, operation, subresource)), None)
    if entry is None:
        entry = {"manager": manager, "operation": operation}
        entries.append(entry)
    entry.update(
        apiVersion=api_version,
        time=now_rfc3339(),
        fieldsType="FieldsV1",
        fieldsV1=to_fields_v1(owned),
    )
    if subresource:
        entry["subresource"] = subresource


def _finish(entries: list[dict[str, Any]], live: set[Path]) -> list[dict[str, Any]]:
    """Drops fields no longer in the object, then entries that own nothing."""
    out = []
    for entry in entries:
        owned = from_fields_v1(entry.get("fieldsV1") or {}) & live
        if owned:
            entry["fieldsV1"] = to_fields_v1(owned)
            out.append(entry)
    return out


def track_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    manager: str,
    res: Resource,
    subresource: str | None = None,
) -> list[dict[str, Any]]:
    """``managedFields`` after a create/update by ``manager``: it takes the fields it
    changed; the others lose them."""
    before = dict(leaves(old)) if old else {}
    after = dict(leaves(new))
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    entries = _entries(old)
    for entry in entries:
        if not _same(entry, manager, "Update", subresource):
            entry["fieldsV1"] = to_fields_v1(from_fields_v1(entry.get("fieldsV1")) - changed)
    mine = next((e for e in entries if _same(e, manager, "Update", subresource)), None)
    owned = from_fields_v1(mine["fieldsV1"]) if mine else set()
    if changed or mine is not None:
        _set_entry(entries, manager, "Update", res.api_version, owned | changed, subresource)
    return _finish(entries, set(after))


def _describe(entry: dict[str, Any]) -> str:
    who = json.dumps(entry.get("manager", ""))
    if entry.get("subresource"):
        who += f" with subresource {json.dumps(entry['subresource'])}"
    if entry.get("operation") == "Update":
        who += f" using {entry.get('apiVersion', '')}"
    return who


def conflict_error(conflicts: list[tuple[Path, dict[str, Any]]]) -> ApiError:
    """The apiserver's 409 for an apply that would take fields other managers own."""
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {_describe(entry)}",
            "field": display(path),
        }
        for path, entry in conflicts
    ]
    if len(conflicts) == 1:
        path, entry = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {_describe(entry)}: {display(path)}"
    else:
        by: dict[str, list[str]] = {}
        for path, entry in conflicts:
            by.setdefault(_describe(entry), []).append(display(path))
        lines = []
        for who in sorted(by):
            lines.append(f"conflicts with {who}:")
            lines += [f"- {p}" for p in by[who]]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def merge_applied(live: Any, applied: Any, field: str = "") -> Any:
    """The live object with the applied configuration merged in: maps merge, keyed
    lists merge per item, anything else is replaced."""
    if isinstance(live, dict) and isinstance(applied, dict):
        out = copy.deepcopy(live)
        for key, value in applied.items():
            out[key] = merge_applied(live.get(key), value, key)
        return out
    if isinstance(live, list) and isinstance(applied, list):
        keys = _list_keys(field, applied) if applied else None
        if keys and _list_keys(field, live):
            merged = {_item_key(i, keys): copy.deepcopy(i) for i in live}
            for item in applied:
                k = _item_key(item, keys)
                merged[k] = merge_applied(merged.get(k), item, field)
            return list(merged.values())
    return copy.deepcopy(applied)


def _remove(obj: dict[str, Any], path: Path) -> None:
    """Deletes a leaf, then any list item or map left holding nothing of its own."""
    trail: list[tuple[Any, tuple[str, str]]] = []
    node: Any = obj
    for element in path[:-1]:
        trail.append((node, element))
        node = _step(node, element)
        if node is None:
            return
    kind, name = path[-1]
    if len(path) > 1 and path[-2][0] == "k" and name in json.loads(path[-2][1]):
        # A key field of a list item: the item goes when nothing else is left in it.
        if not isinstance(node, dict) or not set(node) <= set(json.loads(path[-2][1])):
            return
        node.clear()
    elif kind == "f" and isinstance(node, dict):
        node.pop(name, None)
    for parent, (kind, name) in reversed(trail):
        child = _step(parent, (kind, name)) if kind == "f" else _keyed(parent, name)
        if child is None:
            break
        if child not in ({}, []) and not (
            kind == "k" and isinstance(child, dict) and set(child) <= set(json.loads(name))
        ):
            break
        if kind == "f":
            parent.pop(name, None)
        elif isinstance(parent, list):
            parent.remove(child)


def apply(
    live: dict[str, Any] | None,
    applied: dict[str, Any],
    manager: str,
    res: Resource,
    *,
    force: bool,
) -> dict[str, Any]:
    """The object after ``manager`` applies ``applied`` (None ``live``: a create), with
    its ``managedFields``; raises the 409 conflict unless ``force``."""
    entries = _entries(live)
    intent = dict(leaves(applied))
    current = dict(leaves(live)) if live else {}
    conflicts = []
    for path, value in intent.items():
        if path not in current or current[path] == value:
            continue
        for entry in entries:
            if _same(entry, manager, "Apply", None):
                continue
            if path in from_fields_v1(entry.get("fieldsV1") or {}):
                conflicts.append((path, entry))
    if conflicts and not force:
        raise conflict_error(conflicts)
    for path, entry in conflicts:  # forced: the field changes hands
        entry["fieldsV1"] = to_fields_v1(from_fields_v1(entry["fieldsV1"]) - {path})
    mine = next((e for e in entries if _same(e, manager, "Apply", None)), None)
    before = from_fields_v1(mine["fieldsV1"]) if mine else set()
    merged = merge_applied(live or {}, {k: v for k, v in applied.items() if k != "status"})
    others = set().union(
        *(
            from_fields_v1(e.get("fieldsV1") or {})
            for e in entries
            if not _same(e, manager, "Apply", None)
        )
    )
    for path in sorted(before - set(intent) - others, reverse=True):
        _remove(merged, path)
    _set_entry(entries, manager, "Apply", res.api_version, set(intent), None)
    merged.setdefault("metadata", {})["managedFields"] = _finish(entries, set(dict(leaves(merged))))
    return merged
