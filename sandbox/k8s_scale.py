"""The ``scale`` subresource of Deployments and ReplicaSets (``autoscaling/v1`` Scale):
``GET``, ``PUT`` and ``PATCH`` on ``.../deployments/<name>/scale`` read and set the
parent's ``spec.replicas`` — what ``kubectl scale`` and autoscalers call. Errors as the
apiserver words them: a negative count is a 422 on ``Scale.autoscaling``, a stale
``metadata.resourceVersion`` a 409 on the parent, a wrong type a 400."""

from __future__ import annotations

from typing import Any

from sandbox.k8s_store import ApiError, Resource
from sandbox.k8s_validation import FieldError, invalid_error

SCALE = Resource("autoscaling", "v1", "scale", "Scale")
SCALABLE = {("apps", "deployments"), ("apps", "replicasets")}


def selector_string(selector: dict[str, Any] | None) -> str:
    """A LabelSelector as the string Scale's ``status.selector`` carries."""
    parts = [f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for req in (selector or {}).get("matchExpressions") or []:
        op, key, values = req.get("operator"), req.get("key"), req.get("values") or []
        if op in ("In", "NotIn"):
            parts.append(f"{key} {op.lower()} ({','.join(sorted(values))})")
        else:
            parts.append(key if op == "Exists" else f"!{key}")
    return ",".join(parts)


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The Scale view of a Deployment or ReplicaSet."""
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": SCALE.api_version,
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": obj.get("spec", {}).get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": selector_string(obj.get("spec", {}).get("selector")),
        },
    }


def wanted_replicas(res: Resource, obj: dict[str, Any], scale: Any) -> int:
    """``spec.replicas`` of a Scale written to ``obj``'s ``/scale``, checked: a body
    that is no Scale, names another object, holds a wrong type or a stale
    resourceVersion, or asks for a negative count is refused."""
    name = obj["metadata"]["name"]
    if not isinstance(scale, dict):
        raise ApiError(400, "BadRequest", "the body of the request must be a Scale object")
    handled = 'Scale in version "v1" cannot be handled as a Scale'
    meta = scale.get("metadata") or {}
    if scale.get("kind") not in (None, "Scale"):
        raise ApiError(
            400, "BadRequest", f"{handled}: the kind in the body ({scale['kind']}) is not Scale"
        )
    if meta.get("name") not in (None, "", name):
        raise ApiError(
            400,
            "BadRequest",
            f"the name of the object ({meta['name']}) does not match the name on the URL ({name})",
        )
    rv = meta.get("resourceVersion")
    if rv not in (None, "") and rv != obj["metadata"]["resourceVersion"]:
        from sandbox.k8s_store import conflict

        raise conflict(res, name)
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        got = "string" if isinstance(replicas, str) else type(replicas).__name__
        raise ApiError(
            400,
            "BadRequest",
            f"{handled}: json: cannot unmarshal {got} into Go struct field ScaleSpec.spec."
            "replicas of type int32",
        )
    if replicas < 0:
        raise invalid_error(
            SCALE,
            name,
            [
                FieldError(
                    "spec.replicas", "Invalid", replicas, "must be greater than or equal to 0"
                )
            ],
        )
    return replicas
