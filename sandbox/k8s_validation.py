"""The apiserver's validation of the objects the sandbox stores: 422 ``Invalid``.

Covers what the runbook and the seeded chart write, checked the way
``k8s.io/kubernetes/pkg/apis/*/validation`` does, with the same field paths and
messages (``field.Error``): object names, label keys and values, annotation size;
Secret types and their required keys (``kubernetes.io/tls`` needs ``tls.crt`` and
``tls.key``), Secret/ConfigMap keys and size, ``type`` and ``immutable`` immutability;
NetworkPolicy selectors, ``policyTypes``, ports and peers; Deployment/ReplicaSet
selectors matching their template, immutable selectors, containers and images; Pod spec
immutability. Several errors are reported together, as the apiserver aggregates them.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from sandbox.k8s_store import ApiError, Resource

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
    "[a-z0-9])?)*')"
)
LABEL_1123_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
NAME_PART_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
CONFIG_KEY_MSG = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
    "'[-._a-zA-Z0-9]+')"
)
IMMUTABLE = "field is immutable"

# Secret type → keys that must be present (pkg/apis/core/validation ValidateSecret).
SECRET_REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


@dataclass(frozen=True)
class FieldError:
    """One ``field.Error``: ``kind`` is Required, Invalid, Unsupported, Forbidden,
    TooLong or TooMany."""

    field: str
    kind: str
    value: Any = None
    detail: str = ""

    _REASONS = {
        "Required": "FieldValueRequired",
        "Invalid": "FieldValueInvalid",
        "Unsupported": "FieldValueNotSupported",
        "Forbidden": "FieldValueForbidden",
        "TooLong": "FieldValueTooLong",
        "TooMany": "FieldValueTooMany",
        "Duplicate": "FieldValueDuplicate",
    }

    def body(self) -> str:
        if self.kind == "Required":
            return "Required value" + (f": {self.detail}" if self.detail else "")
        if self.kind == "Forbidden":
            return f"Forbidden: {self.detail}"
        if self.kind == "TooLong":
            return f"Too long: {self.detail}"
        if self.kind == "Duplicate":
            return f"Duplicate value: {go_value(self.value)}"
        if self.kind == "TooMany":
            return f"Too many: {self.value}: {self.detail}"
        word = "Unsupported value" if self.kind == "Unsupported" else "Invalid value"
        return f"{word}: {go_value(self.value)}: {self.detail}"

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict[str, str]:
        return {"reason": self._REASONS[self.kind], "message": self.body(), "field": self.field}


def go_value(value: Any) -> str:
    """A value as Go's ``%#v``/``%q`` prints it in field errors."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(value.items()))
        return "map[string]string{" + inner + "}"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    return json.dumps(value, separators=(",", ":"))


def invalid_error(res: Resource, name: str, errors: list[FieldError]) -> ApiError:
    """The 422 the apiserver answers, ``<Kind>[.<group>] "<name>" is invalid: ...``."""
    kind = f"{res.kind}.{res.group}" if res.group else res.kind
    text = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    details: dict[str, Any] = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.kind
    details["causes"] = [e.cause() for e in errors]
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {text}', details)


# ------------------------------------------------------------------ metadata


def _qualified_name(key: str, path: str) -> list[FieldError]:
    prefix, _, name = key.rpartition("/")
    errs = []
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        errs.append(FieldError(path, "Invalid", key, "prefix part " + SUBDOMAIN_MSG))
    if not name:
        errs.append(FieldError(path, "Invalid", key, "name part must be non-empty"))
    elif len(name) > 63:
        errs.append(
            FieldError(path, "Invalid", key, "name part must be no more than 63 characters")
        )
    elif not _QUALIFIED.match(name):
        errs.append(FieldError(path, "Invalid", key, NAME_PART_MSG))
    return errs


def labels(values: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for key, value in (values or {}).items():
        errs += _qualified_name(key, path)
        if len(str(value)) > 63:
            errs.append(FieldError(path, "Invalid", value, "must be no more than 63 characters"))
        elif not _LABEL_VALUE.match(str(value)):
            errs.append(FieldError(path, "Invalid", value, LABEL_VALUE_MSG))
    return errs


def metadata(res: Resource, meta: dict) -> list[FieldError]:
    name = meta.get("name") or ""
    errs: list[FieldError] = []
    if res.kind == "Service":
        if len(name) > 63 or not _LABEL_1035.match(name):
            errs.append(FieldError("metadata.name", "Invalid", name, LABEL_1035_MSG))
    elif len(name) > 253 or not _SUBDOMAIN.match(name):
        errs.append(FieldError("metadata.name", "Invalid", name, SUBDOMAIN_MSG))
    errs += labels(meta.get("labels"), "metadata.labels")
    annotations = meta.get("annotations") or {}
    for key in annotations:
        errs += _qualified_name(key, "metadata.annotations")
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > 256 * 1024:
        errs.append(
            FieldError("metadata.annotations", "TooLong", None, "must have at most 262144 bytes")
        )
    return errs


def label_selector(sel: Any, path: str) -> list[FieldError]:
    if sel is None:
        return []
    errs = labels(sel.get("matchLabels"), f"{path}.matchLabels")
    for i, req in enumerate(sel.get("matchExpressions") or []):
        p = f"{path}.matchExpressions[{i}]"
        op, values = req.get("operator"), req.get("values") or []
        if op in ("In", "NotIn") and not values:
            errs.append(
                FieldError(
                    f"{p}.values",
                    "Required",
                    detail="must be specified when `operator` is 'In' or 'NotIn'",
                )
            )
        elif op in ("Exists", "DoesNotExist") and values:
            errs.append(
                FieldError(
                    f"{p}.values",
                    "Forbidden",
                    detail="may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
            )
        elif op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            errs.append(FieldError(f"{p}.operator", "Invalid", op, "not a valid selector operator"))
        errs += _qualified_name(str(req.get("key", "")), f"{p}.key")
    return errs


# ------------------------------------------------------------------ kinds


def _secret(obj: dict, old: dict | None) -> list[FieldError]:
    errs: list[FieldError] = []
    data = obj.get("data") or {}
    stype = obj.get("type") or "Opaque"
    total = 0
    for key, value in data.items():
        if not _CONFIG_KEY.match(key) or len(key) > 253:
            errs.append(FieldError(f"data[{key}]", "Invalid", key, CONFIG_KEY_MSG))
        total += len(value) * 3 // 4
    if total > 1024 * 1024:
        errs.append(FieldError("data", "TooLong", None, "must have at most 1048576 bytes"))
    for key in SECRET_REQUIRED_KEYS.get(stype, ()):
        if key not in data:
            errs.append(FieldError(f"data[{key}]", "Required"))
    if stype == "kubernetes.io/service-account-token":
        annotations = obj["metadata"].get("annotations") or {}
        if not annotations.get("kubernetes.io/service-account.name"):
            errs.append(
                FieldError("metadata.annotations[kubernetes.io/service-account.name]", "Required")
            )
    if stype == "kubernetes.io/basic-auth" and not (data.get("username") or data.get("password")):
        errs += [FieldError("data[username]", "Required"), FieldError("data[password]", "Required")]
    if old is not None:
        errs += _immutable_data(obj, old)
        if (old.get("type") or "Opaque") != stype:
            errs.append(FieldError("type", "Invalid", stype, IMMUTABLE))
    return errs


def _immutable_data(obj: dict, old: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    if old.get("immutable"):
        why = "field is immutable when `immutable` is set"
        if not obj.get("immutable"):
            errs.append(FieldError("immutable", "Forbidden", detail=why))
        if (obj.get("data") or {}) != (old.get("data") or {}):
            errs.append(FieldError("data", "Forbidden", detail=why))
        if (obj.get("binaryData") or {}) != (old.get("binaryData") or {}):
            errs.append(FieldError("binaryData", "Forbidden", detail=why))
    return errs


def _configmap(obj: dict, old: dict | None) -> list[FieldError]:
    errs: list[FieldError] = []
    for section in ("data", "binaryData"):
        for key in obj.get(section) or {}:
            if not _CONFIG_KEY.match(key) or len(key) > 253:
                errs.append(FieldError(f"{section}[{key}]", "Invalid", key, CONFIG_KEY_MSG))
    if old is not None:
        errs += _immutable_data(obj, old)
    return errs


def _port(port: dict, path: str, named_ok: bool = True) -> list[FieldError]:
    errs: list[FieldError] = []
    protocol = port.get("protocol", "TCP")
    if protocol not in ("TCP", "UDP", "SCTP"):
        errs.append(
            FieldError(
                f"{path}.protocol",
                "Unsupported",
                protocol,
                'supported values: "SCTP", "TCP", "UDP"',
            )
        )
    value = port.get("port")
    if isinstance(value, int) and not 1 <= value <= 65535:
        errs.append(
            FieldError(f"{path}.port", "Invalid", value, "must be between 1 and 65535, inclusive")
        )
    elif isinstance(value, str) and not (
        named_ok and _LABEL_1123.match(value) and len(value) <= 15
    ):
        errs.append(
            FieldError(
                f"{path}.port",
                "Invalid",
                value,
                "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            )
        )
    end = port.get("endPort")
    if end is not None:
        if value is None or isinstance(value, str):
            errs.append(
                FieldError(
                    f"{path}.endPort",
                    "Required",
                    detail="when endPort is specified, port must be specified",
                )
            )
        elif end < value:
            errs.append(
                FieldError(
                    f"{path}.endPort", "Invalid", end, "must be greater than or equal to `port`"
                )
            )
    return errs


def _peer(peer: dict, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    set_fields = [
        k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None
    ]
    if not set_fields:
        errs.append(FieldError(path, "Required", detail="must specify a peer"))
    if "ipBlock" in set_fields and len(set_fields) > 1:
        errs.append(
            FieldError(path, "Forbidden", detail="may not specify both ipBlock and another peer")
        )
    errs += label_selector(peer.get("podSelector"), f"{path}.podSelector")
    errs += label_selector(peer.get("namespaceSelector"), f"{path}.namespaceSelector")
    block = peer.get("ipBlock")
    if block is not None:
        cidr = block.get("cidr", "")
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            errs.append(
                FieldError(
                    f"{path}.ipBlock.cidr",
                    "Invalid",
                    cidr,
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                )
            )
            return errs
        for i, exc in enumerate(block.get("except") or []):
            try:
                sub = ipaddress.ip_network(exc, strict=False)
                ok = sub.version == net.version and sub.subnet_of(net) and sub != net  # type: ignore[arg-type]
            except ValueError:
                ok = False
            if not ok:
                errs.append(
                    FieldError(
                        f"{path}.ipBlock.except[{i}]",
                        "Invalid",
                        exc,
                        "must be a strict subset of `cidr`",
                    )
                )
    return errs


def _network_policy(obj: dict, old: dict | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs = label_selector(spec.get("podSelector"), "spec.podSelector")
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            base = f"spec.{direction}[{i}]"
            for j, port in enumerate(rule.get("ports") or []):
                errs += _port(port, f"{base}.ports[{j}]")
            for j, peer in enumerate(rule.get(peers) or []):
                errs += _peer(peer, f"{base}.{peers}[{j}]")
    types = spec.get("policyTypes") or []
    for i, ptype in enumerate(types):
        if ptype not in ("Ingress", "Egress"):
            errs.append(
                FieldError(
                    f"spec.policyTypes[{i}]",
                    "Unsupported",
                    ptype,
                    'supported values: "Egress", "Ingress"',
                )
            )
    if len(types) > 2:
        errs.append(
            FieldError(
                "spec.policyTypes", "Invalid", types, "may not specify more than two policyTypes"
            )
        )
    return errs


def _containers(spec: dict, path: str) -> list[FieldError]:
    containers = spec.get("containers") or []
    if not containers:
        return [FieldError(f"{path}.containers", "Required")]
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, c in enumerate(containers):
        p = f"{path}.containers[{i}]"
        name = c.get("name") or ""
        if not name:
            errs.append(FieldError(f"{p}.name", "Required"))
        elif len(name) > 63 or not _LABEL_1123.match(name):
            errs.append(FieldError(f"{p}.name", "Invalid", name, LABEL_1123_MSG))
        elif name in seen:
            errs.append(FieldError(f"{p}.name", "Duplicate", name))
        seen.add(name)
        if not c.get("image"):
            errs.append(FieldError(f"{p}.image", "Required"))
        for j, port in enumerate(c.get("ports") or []):
            cp = port.get("containerPort")
            if not isinstance(cp, int) or not 1 <= cp <= 65535:
                errs.append(
                    FieldError(
                        f"{p}.ports[{j}].containerPort",
                        "Invalid",
                        cp,
                        "must be between 1 and 65535, inclusive",
                    )
                )
    return errs


def _pod_template(spec: dict, path: str, restart: tuple[str, ...]) -> list[FieldError]:
    template = spec.get("template") or {}
    pod_spec = template.get("spec") or {}
    errs = labels((template.get("metadata") or {}).get("labels"), f"{path}.metadata.labels")
    errs += _containers(pod_spec, f"{path}.spec")
    policy = pod_spec.get("restartPolicy")
    if policy is not None and policy not in restart:
        supported = ", ".join(json.dumps(r) for r in restart)
        errs.append(
            FieldError(
                f"{path}.spec.restartPolicy",
                "Unsupported",
                policy,
                f"supported values: {supported}",
            )
        )
    return errs


def _selector_matches(selector: dict, template_labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if template_labels.get(key) != value:
            return False
    for req in selector.get("matchExpressions") or []:
        present, value = req["key"] in template_labels, template_labels.get(req["key"])
        op, values = req.get("operator"), req.get("values") or []
        ok = {
            "In": present and value in values,
            "NotIn": not present or value not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(op, False)
        if not ok:
            return False
    return True


def _workload(obj: dict, old: dict | None, kind: str) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs: list[FieldError] = []
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        errs.append(
            FieldError("spec.replicas", "Invalid", replicas, "must be greater than or equal to 0")
        )
    selector = spec.get("selector")
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector:
        errs.append(FieldError("spec.selector", "Required"))
    else:
        errs += label_selector(selector, "spec.selector")
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            errs.append(
                FieldError(
                    "spec.selector",
                    "Invalid",
                    selector,
                    f"empty selector is invalid for {kind.lower()}",
                )
            )
        elif not _selector_matches(selector, template_labels):
            errs.append(
                FieldError(
                    "spec.template.metadata.labels",
                    "Invalid",
                    template_labels,
                    "`selector` does not match template `labels`",
                )
            )
        if old is not None and selector != (old.get("spec") or {}).get("selector"):
            errs.append(FieldError("spec.selector", "Invalid", selector, IMMUTABLE))
    errs += _pod_template(spec, "spec.template", ("Always",))
    return errs


def _job(obj: dict, old: dict | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    return _pod_template(spec, "spec.template", ("OnFailure", "Never"))


def _cronjob(obj: dict, old: dict | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs: list[FieldError] = []
    schedule = spec.get("schedule")
    if not schedule:
        errs.append(FieldError("spec.schedule", "Required"))
    elif not (schedule.startswith("@") or len(schedule.split()) == 5):
        errs.append(FieldError("spec.schedule", "Invalid", schedule, "unparseable schedule"))
    job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    errs += _pod_template(job_spec, "spec.jobTemplate.spec.template", ("OnFailure", "Never"))
    return errs


def _pod(obj: dict, old: dict | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs = _containers(spec, "spec")
    if old is not None:
        mutable = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")
        strip = lambda s: {k: v for k, v in (s or {}).items() if k not in mutable}  # noqa: E731
        old_spec, new_spec = strip(old.get("spec")), strip(spec)
        for c in (*old_spec.get("containers", []), *new_spec.get("containers", [])):
            c.pop("image", None)
        if old_spec != new_spec:
            errs.append(
                FieldError(
                    "spec",
                    "Forbidden",
                    detail="pod updates may not change "
                    "fields other than `spec.containers[*].image`,"
                    "`spec.initContainers[*].image`,"
                    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                    "additions to existing tolerations),"
                    "`spec.terminationGracePeriodSeconds` (allow it to be set "
                    "to 1 if it was previously negative)",
                )
            )
    return errs


def _service(obj: dict, old: dict | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs: list[FieldError] = []
    stype = spec.get("type", "ClusterIP")
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errs.append(
            FieldError(
                "spec.type",
                "Unsupported",
                stype,
                'supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
            )
        )
    for i, port in enumerate(spec.get("ports") or []):
        errs += _port(port, f"spec.ports[{i}]", named_ok=False)
    return errs


_KINDS = {
    "Secret": _secret,
    "ConfigMap": _configmap,
    "NetworkPolicy": _network_policy,
    "Deployment": lambda o, old: _workload(o, old, "Deployment"),
    "ReplicaSet": lambda o, old: _workload(o, old, "ReplicaSet"),
    "Job": _job,
    "CronJob": _cronjob,
    "Pod": _pod,
    "Service": _service,
}


def validate(res: Resource, obj: dict, old: dict | None = None) -> None:
    """Raises the 422 for ``obj`` (``old``: the stored object on an update)."""
    meta = obj.get("metadata") or {}
    errs = metadata(res, meta)
    check = _KINDS.get(res.kind)
    if check is not None:
        errs += check(obj, old)
    if errs:
        raise invalid_error(res, meta.get("name") or "", errs)
