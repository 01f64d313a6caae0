"""Discovery, ``/version`` and OpenAPI v2/v3 documents of the sandbox Kubernetes API,
plus the schema checks the apiserver's decoder makes (unknown fields, wrong types).

The schemas are derived from the official ``kubernetes`` Python client's models (which
are generated from the apiserver's own OpenAPI document): each model's
``openapi_types``/``attribute_map`` gives the fields and their types, and the required
fields are the ones its setters refuse ``None`` for. Names follow the apiserver's
definitions (``io.k8s.api.apps.v1.Deployment``, ``io.k8s.apimachinery.pkg.apis.meta.v1.
ObjectMeta``) and every write operation declares the ``fieldValidation`` query parameter
— which is what makes kubectl >= 1.27 leave validation to the server
(``fieldValidation=Strict``) instead of needing the protobuf OpenAPI v2 document.

Not served: the protobuf form of ``/openapi/v2`` (a request that only accepts protobuf
gets 406 NotAcceptable, as from an apiserver that cannot produce the asked type);
aggregated discovery (clients fall back to the legacy documents served here).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from kubernetes.client import Configuration, models

from sandbox.k8s_store import RESOURCES, ApiError, Resource

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4",
    "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335",
    "gitTreeState": "clean",
    "buildDate": "2025-04-22T16:02:27Z",
    "goVersion": "go1.23.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_SHORT_NAMES = {
    "pods": ["po"],
    "services": ["svc"],
    "serviceaccounts": ["sa"],
    "configmaps": ["cm"],
    "events": ["ev"],
    "deployments": ["deploy"],
    "replicasets": ["rs"],
    "cronjobs": ["cj"],
    "networkpolicies": ["netpol"],
    "daemonsets": ["ds"],
    "nodes": ["no"],
    "customresourcedefinitions": ["crd", "crds"],
}
_ALL_CATEGORY = {
    "pods",
    "services",
    "deployments",
    "replicasets",
    "daemonsets",
    "jobs",
    "cronjobs",
}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

_META_TYPES = {
    "ObjectMeta",
    "ListMeta",
    "LabelSelector",
    "LabelSelectorRequirement",
    "OwnerReference",
    "ManagedFieldsEntry",
    "Status",
    "StatusDetails",
    "StatusCause",
    "DeleteOptions",
    "Preconditions",
    "Condition",
}
_GROUP_PREFIXES = {
    "apps": ("Deployment", "ReplicaSet", "RollingUpdateDeployment", "StatefulSet", "DaemonSet"),
    "batch": ("Job", "CronJob", "PodFailurePolicy", "SuccessPolicy", "UncountedTerminatedPods"),
    "networking": ("NetworkPolicy", "IPBlock"),
}
# apiextensions-apiserver's own package (CustomResourceDefinition and its parts).
_APIEXTENSIONS = ("CustomResource", "JSONSchemaProps", "ExternalDocumentation", "WebhookConversion")
# Lists that strategic merge patch merges by a key (x-kubernetes-patch-merge-key).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "ownerReferences": "uid",
    "conditions": "type",
    "imagePullSecrets": "name",
}


def _definition(py_name: str) -> str:
    """``V1DeploymentSpec`` → ``io.k8s.api.apps.v1.DeploymentSpec``."""
    if py_name.startswith("CoreV1"):  # the client's names for core/v1 Event(s)
        return f"io.k8s.api.core.v1.{py_name[len('CoreV1') :]}"
    m = re.match(r"^(V\d+(?:alpha\d+|beta\d+)?)(\w+)$", py_name)
    version, name = (m.group(1).lower(), m.group(2)) if m else ("v1", py_name)
    if name in _META_TYPES:
        return f"io.k8s.apimachinery.pkg.apis.meta.{version}.{name}"
    if name.startswith(_APIEXTENSIONS):
        return f"io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{name}"
    for group, prefixes in _GROUP_PREFIXES.items():
        if name.startswith(prefixes):
            return f"io.k8s.api.{group}.{version}.{name}"
    return f"io.k8s.api.core.{version}.{name}"


@functools.cache
def _required(cls: type) -> frozenset[str]:
    """JSON names of the fields whose setter refuses None (the schema's ``required``)."""
    probe = cls.__new__(cls)
    probe.local_vars_configuration = Configuration()
    probe.local_vars_configuration.client_side_validation = True
    required = set()
    for attr, json_name in cls.attribute_map.items():
        try:
            setattr(probe, attr, None)
        except ValueError:
            required.add(json_name)
    return frozenset(required)


def _type_schema(type_name: str, out: dict[str, dict]) -> dict[str, Any]:
    simple = {
        "str": {"type": "string"},
        "int": {"type": "integer", "format": "int64"},
        "float": {"type": "number", "format": "double"},
        "bool": {"type": "boolean"},
        "datetime": {"type": "string", "format": "date-time"},
        "date": {"type": "string", "format": "date"},
        "object": {"x-kubernetes-int-or-string": True},
    }
    if type_name in simple:
        return dict(simple[type_name])
    if type_name == "V1JSONSchemaProps":
        # A CRD's schema is itself a JSON Schema (any keyword, values of any type): the
        # apiserver checks it structurally, not through the client model's Python types.
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    m = re.match(r"^list\[(.+)\]$", type_name)
    if m:
        return {"type": "array", "items": _type_schema(m.group(1), out)}
    m = re.match(r"^dict[\[(]str, (.+)[\])]$", type_name)
    if m:
        return {"type": "object", "additionalProperties": _type_schema(m.group(1), out)}
    cls = getattr(models, type_name, None)
    if cls is None:
        return {}
    name = _definition(type_name)
    if name not in out:
        out[name] = {}  # placeholder against recursion (JSONSchemaProps refers to itself)
        out[name] = _model_schema(cls, out)
    return {"$ref": f"#/definitions/{name}"}


def _model_schema(cls: type, out: dict[str, dict]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for attr, type_name in cls.openapi_types.items():
        json_name = cls.attribute_map[attr]
        schema = _type_schema(type_name, out)
        if json_name in _MERGE_KEYS and schema.get("type") == "array":
            schema["x-kubernetes-patch-merge-key"] = _MERGE_KEYS[json_name]
            schema["x-kubernetes-patch-strategy"] = "merge"
        props[json_name] = schema
    schema: dict[str, Any] = {"type": "object", "properties": props}
    required = sorted(_required(cls))
    if required:
        schema["required"] = required
    return schema


def _model_name(res: Resource) -> str:
    name = f"{res.version.capitalize()}{res.kind}"
    return name if hasattr(models, name) else f"Core{name}"


@functools.cache
def definitions() -> dict[str, dict[str, Any]]:
    """Every definition reachable from the served kinds (and their lists), v2 style."""
    out: dict[str, dict] = {}
    for res in RESOURCES.values():
        _type_schema(_model_name(res), out)
        _type_schema(_model_name(res) + "List", out)
        name = _definition(_model_name(res))
        out[name]["x-kubernetes-group-version-kind"] = [
            {"group": res.group, "kind": res.kind, "version": res.version}
        ]
    for extra in ("V1Status", "V1DeleteOptions"):
        _type_schema(extra, out)
    return out


def kind_schema(res: Resource) -> tuple[str, dict[str, dict]]:
    """(definition name of ``res``'s kind, all definitions)."""
    return _definition(_model_name(res)), definitions()


# ------------------------------------------------------------------ decoding checks


class _Walk:
    def __init__(self, defs: dict[str, dict], strict: bool) -> None:
        self.defs, self.strict = defs, strict
        self.unknown: list[str] = []
        self.type_error: str | None = None

    def resolve(self, schema: dict) -> dict:
        ref = schema.get("$ref")
        return self.defs[ref.rsplit("/", 1)[1]] if ref else schema

    def walk(self, value: Any, schema: dict, path: str, go_field: str) -> Any:
        schema = self.resolve(schema)
        if value is None or not schema or self.type_error:
            return value
        kind = schema.get("type")
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            if not isinstance(value, dict):
                return self._wrong(value, path, go_field, "object")
            return value
        if schema.get("x-kubernetes-int-or-string"):
            ok = isinstance(value, (int, str)) and not isinstance(value, bool)
            if not ok and not isinstance(value, dict):  # RawExtension-like fields
                self._wrong(value, path, go_field, "intstr.IntOrString")
            return value
        if kind == "object" and "properties" in schema:
            if not isinstance(value, dict):
                return self._wrong(value, path, go_field, "object")
            out = {}
            for key, item in value.items():
                prop = schema["properties"].get(key)
                sub = f"{path}.{key}" if path else key
                if prop is None:
                    self.unknown.append(sub)
                    continue
                out[key] = self.walk(item, prop, sub, key)
            return out
        if kind == "object":
            if not isinstance(value, dict):
                return self._wrong(value, path, go_field, "map")
            inner = schema.get("additionalProperties", {})
            return {k: self.walk(v, inner, f"{path}[{k}]", go_field) for k, v in value.items()}
        if kind == "array":
            if not isinstance(value, list):
                return self._wrong(value, path, go_field, "array")
            return [
                self.walk(v, schema.get("items", {}), f"{path}[{i}]", go_field)
                for i, v in enumerate(value)
            ]
        expected = {
            "string": (str,),
            "integer": (int,),
            "number": (int, float),
            "boolean": (bool,),
        }.get(kind or "")
        if expected:
            bad = not isinstance(value, expected) or (
                kind in ("integer", "number") and isinstance(value, bool)
            )
            if bad:
                self._wrong(value, path, go_field, {"integer": "int32"}.get(kind, kind or ""))
        return value

    def _wrong(self, value: Any, path: str, go_field: str, go_type: str) -> Any:
        got = {dict: "object", list: "array", str: "string", bool: "bool"}.get(
            type(value), "number"
        )
        self.type_error = (
            f"json: cannot unmarshal {got} into Go struct field .{path} of type {go_type}"
        )
        return value


def decode(res: Resource, body: dict, *, field_validation: str) -> tuple[dict, list[str]]:
    """Decodes a request body as the apiserver does: a field of the wrong type is a 400;
    unknown fields are a 400 under ``fieldValidation=Strict`` and otherwise dropped and
    returned as warnings (``Warn``, the server default) or silently (``Ignore``).
    ``status`` is not checked (it is a subresource the main resource ignores)."""
    name, defs = kind_schema(res)
    walker = _Walk(defs, strict=field_validation == "Strict")
    clean = walker.walk(body, {"$ref": f"#/definitions/{name}"}, "", "")
    handled = f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}'
    if walker.type_error:
        raise ApiError(400, "BadRequest", f"{handled}: {walker.type_error}")
    unknown = [u for u in walker.unknown if not u.startswith("status")]
    if unknown and field_validation == "Strict":
        detail = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise ApiError(400, "BadRequest", f"{handled}: strict decoding error: {detail}")
    warnings = [] if field_validation == "Ignore" else [f'unknown field "{u}"' for u in unknown]
    return clean, warnings


def field_validation(value: str | None) -> str:
    """The ``fieldValidation`` query parameter (default Warn), or a 400 naming it."""
    if value in (None, ""):
        return "Warn"
    if value not in ("Ignore", "Warn", "Strict"):
        raise ApiError(
            400,
            "BadRequest",
            f"fieldValidation: Unsupported value: {json.dumps(value)}: supported values: "
            '"Ignore", "Strict", "Warn"',
        )
    return value


# ------------------------------------------------------------------ discovery


def _groups() -> dict[tuple[str, str], list[Resource]]:
    out: dict[tuple[str, str], list[Resource]] = {}
    for res in RESOURCES.values():
        out.setdefault((res.group, res.version), []).append(res)
    return out


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group_list() -> dict[str, Any]:
    groups = []
    for group, version in sorted(_groups()):
        if not group:
            continue
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    served = _groups().get((group, version))
    if served is None:
        return None
    resources = []
    for res in sorted(served, key=lambda r: r.plural):
        entry: dict[str, Any] = {
            "name": res.plural,
            "singularName": res.kind.lower(),
            "namespaced": res.namespaced,
            "kind": res.kind,
            "verbs": VERBS,
            "storageVersionHash": hashlib.sha256(res.plural.encode()).hexdigest()[:11],
        }
        if res.plural in _SHORT_NAMES:
            entry["shortNames"] = _SHORT_NAMES[res.plural]
        if res.plural in _ALL_CATEGORY:
            entry["categories"] = ["all"]
        resources.append(entry)
        if (res.group, res.plural) in (("apps", "deployments"), ("apps", "replicasets")):
            resources.append(
                {
                    "name": f"{res.plural}/scale",
                    "singularName": "",
                    "namespaced": True,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
        if res.plural == "pods":
            resources.append(
                {
                    "name": "pods/log",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "Pod",
                    "verbs": ["get"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


# ------------------------------------------------------------------ OpenAPI


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _parameters(verb: str) -> list[dict[str, Any]]:
    common = [{"name": "pretty", "in": "query", "schema": {"type": "string", "uniqueItems": True}}]
    if verb in ("post", "put", "patch"):
        common += [
            {"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for n in ("dryRun", "fieldManager", "fieldValidation")
        ]
    if verb == "patch":
        common.append({"name": "force", "in": "query", "schema": {"type": "boolean"}})
    return common


def _operations(res: Resource, ref: str, v3: bool) -> dict[str, dict[str, Any]]:
    gvk = {"group": res.group, "version": res.version, "kind": res.kind}
    scope = "/namespaces/{namespace}" if res.namespaced else ""
    base = f"/{_gv_path(res.group, res.version)}{scope}/{res.plural}"
    group_id = "".join(p.capitalize() for p in (res.group or "core").split(".")[:1])
    ident = (
        f"{group_id}{res.version.capitalize()}{'Namespaced' if res.namespaced else ''}{res.kind}"
    )
    schema_ref = {"$ref": ref}

    def body(content_types: list[str]) -> dict[str, Any]:
        if v3:
            return {
                "requestBody": {"content": {ct: {"schema": schema_ref} for ct in content_types}}
            }
        return {}

    def op(action: str, verb: str, op_id: str, **extra: Any) -> dict[str, Any]:
        params = _parameters(verb)
        if not v3:
            for p in params:
                p["type"] = p.pop("schema")["type"]
            if verb in ("post", "put", "patch"):
                params.append({"name": "body", "in": "body", "required": True, "schema": {}})
        return {
            "operationId": op_id,
            "parameters": params,
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            **extra,
        }

    patch_types = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ]
    return {
        base: {
            "get": op("list", "get", f"list{ident}"),
            "post": op("post", "post", f"create{ident}", **body(["*/*"])),
            "delete": op("deletecollection", "delete", f"deletecollection{ident}"),
        },
        base + "/{name}": {
            "get": op("get", "get", f"read{ident}"),
            "put": op("put", "put", f"replace{ident}", **body(["*/*"])),
            "patch": op("patch", "patch", f"patch{ident}", **body(patch_types)),
            "delete": op("delete", "delete", f"delete{ident}"),
        },
    }


def _paths(resources: Iterable[Resource], ref_prefix: str, *, v3: bool) -> dict[str, Any]:
    """The operations of ``resources``, their schemas referenced under ``ref_prefix``."""
    paths: dict[str, Any] = {}
    for res in resources:
        name, _ = kind_schema(res)
        paths.update(_operations(res, f"{ref_prefix}{name}", v3=v3))
    return paths


def _info() -> dict[str, str]:
    return {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]}


def openapi_v2() -> dict[str, Any]:
    return {
        "swagger": "2.0",
        "info": _info(),
        "paths": _paths(RESOURCES.values(), "#/definitions/", v3=False),
        "definitions": definitions(),
    }


def _v3_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                v.replace("#/definitions/", "#/components/schemas/") if k == "$ref" else _v3_refs(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_v3_refs(v) for v in node]
    return node


@functools.cache
def openapi_v3_doc(group: str, version: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group version (``/openapi/v3/apis/apps/v1``)."""
    served = _groups().get((group, version))
    if served is None:
        return None
    return {
        "openapi": "3.0.0",
        "info": _info(),
        "paths": _paths(served, "#/components/schemas/", v3=True),
        "components": {"schemas": _v3_refs(definitions())},
    }


def openapi_v3_root() -> dict[str, Any]:
    paths = {}
    for group, version in sorted(_groups()):
        doc = openapi_v3_doc(group, version)
        digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:128]
        path = _gv_path(group, version)
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest.upper()}"}
    return {"paths": paths}
