"""Sandbox Kubernetes API server: the REST wire format the official client speaks.

Serves core/v1 pods (+ ``/log``), secrets, services, serviceaccounts, configmaps, events
and nodes; apps/v1 deployments and replicasets (+ ``/scale``) and daemonsets; batch/v1
jobs and cronjobs; networking.k8s.io/v1 networkpolicies; apiextensions.k8s.io/v1
customresourcedefinitions — over HTTPS with bearer auth, so the real ``kubectl`` works against it:
discovery (``/api``, ``/apis``, ``/apis/<group>/<version>``), ``/version``, OpenAPI v2
and v3 (sandbox/k8s_openapi.py), server-side ``Table`` printing, ``watch=1`` streams,
``limit``/``continue`` pagination, ``dryRun=All``, ``fieldValidation``, validation 422s
and patch/delete preconditions (409), the ``scale`` subresource (sandbox/k8s_scale.py),
``managedFields`` and server-side apply (sandbox/k8s_apply.py), JSON or YAML answers as
``Accept`` asks (protobuf is not served: 415 for a protobuf body, 406 when only
protobuf is accepted). Errors are the apiserver's ``Status`` objects.

Test controls (not part of the Kubernetes API):

- ``GET /_sandbox/calls``: every mutating call in order (``seq, verb, resource, namespace,
  name, code``) — lets a test prove ordering; ``DELETE`` clears it.
- ``POST /_sandbox/faults``: ``{"deny": [{"verb": "delete", "resource": "secrets",
  "name": "x"?, "namespace": "ns"? ("" = cluster scope)}], "fail_next": {"count": 2, "verb"?: "...", "resource"?: "..."}}`` —
  403 Forbidden (RBAC message shape) or 500 InternalError; ``DELETE`` clears.
- ``POST /_sandbox/cni``: ``{"cni": "calico" | "cilium" | "flannel" | null, "ready"?:
  bool, "enable_policy"?: "default" | "always" | "never" (Cilium)}`` —
  installs that network plugin's DaemonSet, CRDs and node annotations from its real
  manifest, or none (sandbox/k8s_cni.py).

Run standalone for the demo::

    python -m sandbox.kubernetes_api --port 8443 --kubeconfig /tmp/kubeconfig --seed-release

Enforcement of NetworkPolicies is not simulated at the packet level: a real cluster
needs a CNI that implements NetworkPolicy (tasks/kubernetes_policies.py computes what
the policies allow; tasks/kubernetes_cni.py reads whether a plugin that enforces them
is present, from the DaemonSets, CRDs and nodes served here). Cluster-scoped kinds
(nodes, customresourcedefinitions) are served at ``/api/v1/<plural>`` and
``/apis/<group>/<version>/<plural>``; namespaced kinds are also listed and watched
across namespaces there (``/apis/apps/v1/daemonsets``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sandbox.k8s_apply import manager_from
from sandbox.k8s_cluster import POD, Cluster, WriteOptions
from sandbox.k8s_openapi import (
    SERVER_VERSION,
    api_group_list,
    api_resource_list,
    api_versions,
    field_validation,
    openapi_v2,
    openapi_v3_doc,
    openapi_v3_root,
)
from sandbox.k8s_scale import SCALABLE
from sandbox.k8s_store import (
    RESOURCES,
    ApiError,
    Resource,
    bad_request,
    fields_match,
    forbidden,
    internal_error,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from sandbox.k8s_tables import to_table, wants_table
from sandbox.k8s_tls import ServingTls, make_serving_tls

DEFAULT_TOKEN = "sandbox-k8s-token"  # noqa: S105 - a sandbox credential, not a secret
DEFAULT_USER = "system:serviceaccount:mcp-ir:mcp-ir-runner"

_NO_RESOURCE = ApiError(404, "NotFound", "the server could not find the requested resource", {})


@dataclass
class Faults:
    deny: list[dict] = field(default_factory=list)
    fail_next: dict | None = None

    def check(
        self,
        verb: str,
        res: Resource,
        name: str | None,
        namespace: str,
        user: str,
        subresource: str | None = None,
    ) -> None:
        """Raises the injected 403 or 500 for this call, if any. Deny rules name the
        resource as RBAC does (``secrets``, ``pods/log``)."""
        resource = f"{res.plural}/{subresource}" if subresource else res.plural
        for rule in self.deny:
            if (
                rule.get("verb") in (verb, "*")
                and rule.get("resource") in (resource, "*")
                and rule.get("name") in (None, name)
                and rule.get("namespace") in (None, namespace)
            ):
                raise forbidden(res, name, verb, user, namespace, subresource)
        fn = self.fail_next
        if (
            fn
            and fn.get("count", 0) > 0
            and fn.get("verb") in (None, verb)
            and fn.get("resource") in (None, resource)
        ):
            fn["count"] -= 1
            raise internal_error(fn.get("message", "etcdserver: request timed out"))


@dataclass
class SandboxState:
    cluster: Cluster
    token: str = DEFAULT_TOKEN
    user: str = DEFAULT_USER
    faults: Faults = field(default_factory=Faults)
    calls: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, verb: str, res: Resource, namespace: str, name: str | None, code: int):
        with self.lock:
            self.calls.append(
                {
                    "seq": len(self.calls) + 1,
                    "time": time.time(),
                    "verb": verb,
                    "group": res.group,
                    "resource": res.plural,
                    "namespace": namespace,
                    "name": name,
                    "code": code,
                }
            )


def _status_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body, status_code=err.code)


def _method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        {},
    )


def _resource(group: str, version: str, plural: str) -> Resource:
    res = RESOURCES.get((group, plural))
    if res is None or res.version != version:
        raise _NO_RESOURCE
    return res


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"invalid value for {name}: {value!r}") from None


async def _json_body(request: Request) -> Any:
    """The request body: JSON, or YAML when sent as ``application/yaml``. Protobuf
    (what kubectl's typed commands such as ``kubectl create configmap`` send) is not
    decoded here: 415, as from an apiserver without that serializer."""
    raw = await request.body()
    if not raw:
        return None
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype == "application/vnd.kubernetes.protobuf":
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json, application/yaml",
        )
    if ctype in ("application/yaml", "application/apply-patch+yaml"):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise bad_request(f"couldn't get version/kind; yaml parse error: {exc}") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None


_SERVED_MEDIA = "application/json, application/yaml"


def _negotiate(accept: str) -> str:
    """The media type of the answer, from the Accept header in the client's order:
    JSON (also Tables, ``*/*``) or YAML. Only protobuf (or CBOR) asked for is a 406, as
    from an apiserver that cannot serialize the asked type."""
    if not accept.strip():
        return "application/json"
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("application/json", "*/*", "application/*"):
            return "application/json"
        if media == "application/yaml":
            return media
    raise ApiError(
        406,
        "NotAcceptable",
        f"only the following media types are accepted: {_SERVED_MEDIA}",
    )


def _query_dry_run(request: Request) -> bool:
    values = request.query_params.getlist("dryRun")
    for value in values:
        if value != "All":
            raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return bool(values)


def _status_failure(code: int, reason: str, message: str) -> JSONResponse:
    return _status_response(ApiError(code, reason, message))


def build_app(
    cluster: Cluster | None = None, *, token: str = DEFAULT_TOKEN, user: str = DEFAULT_USER
) -> Starlette:
    """Builds the ASGI app; ``app.state.sandbox`` is the :class:`SandboxState`."""
    state = SandboxState(cluster=cluster or Cluster(), token=token, user=user)

    def authorised(request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {state.token}"

    def unauthorised() -> JSONResponse:
        return _status_failure(401, "Unauthorized", "Unauthorized")

    async def handle(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        p = request.path_params
        group = p.get("group", "")
        name = p.get("name")
        scoped: str | None = p.get("namespace")  # None: a path without /namespaces/<ns>
        namespace = scoped or ""
        method = request.method
        res: Resource | None = None
        verb = ""
        try:
            res = _resource(group, p["version"], p["plural"])
            if not res.namespaced and scoped is not None:
                raise _NO_RESOURCE  # /namespaces/x/nodes does not exist
            if res.namespaced and scoped is None and (name is not None or method != "GET"):
                # /api/v1/pods: only list and watch across every namespace
                raise _NO_RESOURCE if name is not None else _method_not_allowed()
            subresource = p.get("sub")
            if subresource not in (None, "log", "scale") or (
                (subresource == "log" and res is not POD)
                or (subresource == "scale" and (res.group, res.plural) not in SCALABLE)
            ):
                raise _NO_RESOURCE
            if (
                subresource
                and method not in {"log": ("GET",), "scale": ("GET", "PUT", "PATCH")}[subresource]
            ):
                return _status_response(_method_not_allowed())
            media = _negotiate(request.headers.get("accept", ""))
            verb = {
                ("GET", False): "list",
                ("GET", True): "get",
                ("POST", False): "create",
                ("PUT", True): "update",
                ("PATCH", True): "patch",
                ("DELETE", True): "delete",
                ("DELETE", False): "deletecollection",
            }.get((method, name is not None), "")
            if not verb:
                return _status_response(_method_not_allowed())
            if verb == "list" and _bool(request.query_params.get("watch")):
                verb = "watch"
            state.faults.check(verb, res, name, namespace, state.user, subresource)
            if verb == "watch":
                return _watch(request, state.cluster, res, scoped if res.namespaced else "")
            warnings: list[str] = []
            listed_ns = scoped if res.namespaced else ""
            result, code = await _dispatch(
                request,
                state.cluster,
                res,
                namespace if verb != "list" else listed_ns,
                name,
                verb,
                subresource,
                warnings,
            )
        except ApiError as err:
            if res is not None and verb not in ("get", "list", "watch"):
                state.record(verb, res, namespace, name, err.code)
            return _status_response(err)
        except Exception as exc:  # noqa: BLE001 - a bug here must look like an apiserver 500
            if res is not None and verb not in ("get", "list", "watch"):
                state.record(verb, res, namespace, name, 500)
            return _status_response(internal_error(f"{type(exc).__name__}: {exc}"))
        if verb not in ("get", "list"):
            if name is None and isinstance(result, dict):  # create: the name is in the result
                name = result.get("metadata", {}).get("name")
            state.record(verb, res, namespace, name, code)
        if isinstance(result, bytes):
            return Response(result, media_type="text/plain")
        headers = (
            {"Warning": ", ".join(f"299 - {json.dumps(w)}" for w in warnings)} if warnings else None
        )
        if (
            verb in ("get", "list")
            and subresource is None
            and wants_table(request.headers.get("accept", ""))
        ):
            items = result["items"] if verb == "list" else [result]
            result = to_table(res, items, result.get("metadata") if verb == "list" else None)
        if media == "application/yaml":
            text = yaml.safe_dump(result, sort_keys=False)
            return Response(text, status_code=code, headers=headers, media_type=media)
        return JSONResponse(result, status_code=code, headers=headers)

    async def calls(request: Request) -> Response:
        if request.method == "DELETE":
            with state.lock:
                state.calls.clear()
            return JSONResponse({"calls": []})
        with state.lock:
            return JSONResponse({"calls": list(state.calls)})

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            state.faults = Faults()
        else:
            body = await request.json()
            state.faults = Faults(
                deny=list(body.get("deny") or []), fail_next=body.get("fail_next")
            )
        return JSONResponse({"deny": state.faults.deny, "fail_next": state.faults.fail_next})

    async def cni(request: Request) -> Response:
        from sandbox.k8s_cni import set_cni

        body = await request.json()
        try:
            set_cni(
                state.cluster,
                body.get("cni"),
                ready=bool(body.get("ready", True)),
                enable_policy=body.get("enable_policy"),
            )
        except ValueError as exc:
            return _status_response(bad_request(str(exc)))
        return JSONResponse({"cni": body.get("cni"), "ready": bool(body.get("ready", True))})

    async def discovery(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        path = request.url.path.rstrip("/")
        doc: Any = None
        if path == "/version":
            doc = SERVER_VERSION
        elif path == "/api":
            doc = api_versions(f"{request.url.hostname}:{request.url.port}")
        elif path == "/apis":
            doc = api_group_list()
        elif path == "/api/v1":
            doc = api_resource_list("", "v1")
        elif path.startswith("/apis/") and path.count("/") == 3:
            _, _, group, version = path.split("/")
            doc = api_resource_list(group, version)
        if doc is None:
            return _status_response(_NO_RESOURCE)
        return JSONResponse(doc)

    async def openapi(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        path = request.url.path.rstrip("/")
        accept = request.headers.get("accept", "*/*")
        json_ok = "json" in accept or "*/*" in accept
        if not json_ok:
            return _status_failure(
                406,
                "NotAcceptable",
                f"only the following media types are accepted: "
                f"application/json (asked for {accept})",
            )
        if path == "/openapi/v2":
            return JSONResponse(openapi_v2())
        if path == "/openapi/v3":
            return JSONResponse(openapi_v3_root())
        parts = path.removeprefix("/openapi/v3/").split("/")
        doc = None
        if parts[:1] == ["api"] and len(parts) == 2:
            doc = openapi_v3_doc("", parts[1])
        elif parts[:1] == ["apis"] and len(parts) == 3:
            doc = openapi_v3_doc(parts[1], parts[2])
        if doc is None:
            return _status_response(_NO_RESOURCE)
        return JSONResponse(doc)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/_sandbox/calls", calls, methods=["GET", "DELETE"]),
        Route("/_sandbox/faults", faults, methods=["POST", "DELETE"]),
        Route("/_sandbox/cni", cni, methods=["POST"]),
        Route("/version", discovery, methods=["GET"]),
        Route("/api", discovery, methods=["GET"]),
        Route("/apis", discovery, methods=["GET"]),
        Route("/api/{version}", discovery, methods=["GET"]),
        Route("/apis/{group}/{version}", discovery, methods=["GET"]),
        Route("/openapi/v2", openapi, methods=["GET"]),
        Route("/openapi/v3", openapi, methods=["GET"]),
        Route("/openapi/v3/{rest:path}", openapi, methods=["GET"]),
    ]
    for prefix in ("/api/{version}", "/apis/{group}/{version}"):
        for base in (prefix + "/namespaces/{namespace}/{plural}", prefix + "/{plural}"):
            routes += [
                Route(base, handle, methods=methods),
                Route(base + "/{name}", handle, methods=methods),
                Route(base + "/{name}/{sub}", handle, methods=methods),
            ]
    app = Starlette(routes=routes)
    app.state.sandbox = state
    return app


def _watch(request: Request, cluster: Cluster, res: Resource, namespace: str | None) -> Response:
    """``?watch=1``: a chunked stream of ``{"type","object"}`` JSON lines — the changes
    after ``resourceVersion`` (or every current object as ADDED when it is absent or
    "0"), filtered by the selectors, until ``timeoutSeconds`` (default 30 min) or the
    client goes away. A resourceVersion older than the watch log gives an ERROR event
    with a 410 Expired Status, as from a real apiserver."""
    q = request.query_params
    labels, fields = q.get("labelSelector", ""), q.get("fieldSelector", "")
    lreqs = parse_label_selector(labels) if labels else []
    freqs = parse_field_selector(res, fields) if fields else []
    timeout = float(_int(request, "timeoutSeconds") or 1800)
    since_raw = q.get("resourceVersion", "")
    table = wants_table(request.headers.get("accept", ""))
    try:
        since = int(since_raw) if since_raw not in ("", "0") else None
    except ValueError:
        raise bad_request(f"invalid resource version: {since_raw!r}") from None

    def matches(key: tuple[str, str, str, str], obj: dict) -> bool:
        return (
            key[:2] == (res.group, res.plural)
            and namespace in (None, key[2])
            and labels_match(obj["metadata"].get("labels") or {}, lreqs)
            and fields_match(obj, freqs)
        )

    def encode(kind: str, obj: dict) -> bytes:
        body: dict = {"kind": res.kind, "apiVersion": res.api_version, **obj}
        if table:
            body = to_table(res, [obj])
        return (json.dumps({"type": kind, "object": body}) + "\n").encode()

    def stream() -> Iterator[bytes]:
        deadline = time.monotonic() + timeout
        log = cluster.watch_log
        with cluster.store.lock:
            cluster.tick()
            cluster.publish()
            if since is None:
                last = cluster.store.current_rv()
                initial = [
                    encode("ADDED", o)
                    for k, o in sorted(cluster.store.objects.items())
                    if matches(k, o)
                ]
            elif since < log.oldest_rv:
                gone = ApiError(
                    410, "Expired", f"too old resource version: {since} ({log.oldest_rv})"
                )
                initial, last = (
                    [(json.dumps({"type": "ERROR", "object": gone.body}) + "\n").encode()],
                    -1,
                )
            else:
                last, initial = since, []
        yield from initial
        if last < 0:
            return
        while time.monotonic() < deadline:
            with cluster.store.lock:
                cluster.changed.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
                cluster.tick()
                cluster.publish()
                fresh = [e for e in log.events if e.rv > last]
            for event in fresh:
                last = max(last, event.rv)
                if matches(event.key, event.object):
                    yield encode(event.type, event.object)

    return StreamingResponse(iterate_in_threadpool(stream()), media_type="application/json")


async def _dispatch(
    request: Request,
    cluster: Cluster,
    res: Resource,
    namespace: str,
    name: str | None,
    verb: str,
    subresource: str | None,
    warnings: list[str],
) -> tuple[Any, int]:
    q = request.query_params
    if subresource == "log":
        return (
            cluster.pod_log(
                namespace,
                name or "",
                container=q.get("container"),
                previous=_bool(q.get("previous")),
                timestamps=_bool(q.get("timestamps")),
                since_seconds=_int(request, "sinceSeconds"),
                since_time=q.get("sinceTime"),
                tail_lines=_int(request, "tailLines"),
                limit_bytes=_int(request, "limitBytes"),
            ),
            200,
        )
    if subresource == "scale" and verb == "get":
        return cluster.get_scale(res, namespace, name or ""), 200
    if verb == "list":
        return cluster.list(
            res,
            namespace,
            q.get("labelSelector", ""),
            q.get("fieldSelector", ""),
            limit=_int(request, "limit"),
            continue_token=q.get("continue") or None,
        ), 200
    if verb == "get":
        return cluster.get(res, namespace, name or ""), 200
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    is_apply = verb == "patch" and ctype == "application/apply-patch+yaml"
    force = q.get("force")
    if verb == "patch":
        if is_apply and not q.get("fieldManager"):
            raise _patch_options_invalid(
                "fieldManager", "FieldValueRequired", "Required value: is required for apply patch"
            )
        if not is_apply and force is not None:
            raise _patch_options_invalid(
                "force",
                "FieldValueForbidden",
                "Forbidden: may not be specified for non-apply patch",
            )
    manager = manager_from(q.get("fieldManager"), request.headers.get("user-agent", ""))
    dry_run = _query_dry_run(request)
    body = await _json_body(request)
    if subresource == "scale":
        if is_apply:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the sandbox serves no apply patch on /scale - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, "
                "application/strategic-merge-patch+json",
            )
        return cluster.write_scale(
            res,
            namespace,
            name or "",
            body,
            ctype if verb == "patch" else None,
            manager=manager,
            dry_run=dry_run,
        ), 200
    opts = WriteOptions(
        dry_run=dry_run,
        field_validation=field_validation(q.get("fieldValidation")),
        warnings=warnings,
        manager=manager,
    )
    if is_apply:
        return cluster.apply(res, namespace, name or "", body, opts, force=_bool(force))
    if verb == "create":
        return cluster.create(res, namespace, body, opts), 201
    if verb == "update":
        return cluster.replace(res, namespace, name or "", body, opts), 200
    if verb == "patch":
        return cluster.patch(res, namespace, name or "", body, ctype, opts), 200
    opts = body if isinstance(body, dict) else {}
    if opts.get("dryRun"):
        dry_run = True
    grace = _int(request, "gracePeriodSeconds")
    if grace is None:
        grace = opts.get("gracePeriodSeconds")
    propagation = q.get("propagationPolicy") or opts.get("propagationPolicy")
    if propagation is None and opts.get("orphanDependents") is not None:
        propagation = "Orphan" if opts["orphanDependents"] else "Background"
    if verb == "delete":
        return (
            cluster.delete(
                res,
                namespace,
                name or "",
                grace_period=grace,
                propagation=propagation,
                preconditions=opts.get("preconditions"),
                dry_run=dry_run,
            ),
            200,
        )
    if verb == "deletecollection":
        listed = cluster.list(
            res, namespace, q.get("labelSelector", ""), q.get("fieldSelector", "")
        )
        for item in listed["items"]:
            cluster.delete(
                res,
                namespace,
                item["metadata"]["name"],
                grace_period=grace,
                propagation=propagation,
                dry_run=dry_run,
            )
        return listed, 200
    raise _NO_RESOURCE


def _patch_options_invalid(field: str, reason: str, message: str) -> ApiError:
    """The 422 for invalid PatchOptions (validation of the query, before any lookup)."""
    return ApiError(
        422,
        "Invalid",
        f'PatchOptions.meta.k8s.io "" is invalid: {field}: {message}',
        {
            "group": "meta.k8s.io",
            "kind": "PatchOptions",
            "causes": [{"reason": reason, "message": message, "field": field}],
        },
    )


def write_kubeconfig(
    path: str | Path, url: str, token: str, namespace: str, *, ca_pem: str | None = None
) -> Path:
    """Writes a kubeconfig (mode 0600) with one context for the sandbox: the server URL
    with its CA (``certificate-authority-data``) and a bearer-token user."""
    cluster: dict[str, Any] = {"server": url}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem.encode()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": cluster}],
        "users": [{"name": "mcp-ir", "user": {"token": token}}],
        "contexts": [
            {
                "name": "sandbox",
                "context": {"cluster": "sandbox", "user": "mcp-ir", "namespace": namespace},
            }
        ],
        "current-context": "sandbox",
        "preferences": {},
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    return target


@dataclass
class SandboxCluster:
    """A sandbox cluster served in this process (tests, ``mcp-ir demo --kind helm``,
    ``mcp-ir sandbox up``): HTTPS with its own CA, a controller thread that runs the
    kubelet/controllers/garbage collector, and a kubeconfig for it."""

    handle: Any  # sandbox.serve.ServerHandle
    cluster: Cluster
    kubeconfig: Path
    tls: ServingTls
    token: str = DEFAULT_TOKEN
    namespace: str = "mcp-tunnel"
    seeded: Any = None  # sandbox.helm_release.SeededRelease when seeded
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return self.handle.url

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    def write_kubeconfig(self, path: str | Path, *, namespace: str | None = None) -> Path:
        """Writes (another) kubeconfig for this running cluster, e.g. ``DIR/kubeconfig``
        for ``mcp-ir sandbox up``; kubectl and the Python client both accept it."""
        return write_kubeconfig(
            path, self.url, self.token, namespace or self.namespace, ca_pem=self.tls.ca_pem
        )

    def stop(self) -> None:
        self._stop.set()
        self.handle.stop()


def _run_controllers(cluster: Cluster, stop: threading.Event, period_s: float = 0.1) -> None:
    while not stop.wait(period_s):
        cluster.step()


def serve_sandbox(
    kubeconfig: str | Path,
    *,
    namespace: str = "mcp-tunnel",
    seed_release: bool = True,
    token: str = DEFAULT_TOKEN,
    cluster: Cluster | None = None,
    tls_dir: str | Path | None = None,
    cni: str | None = "calico",
    **seed: Any,
) -> SandboxCluster:
    """Starts the sandbox API over HTTPS on a free loopback port in a background thread,
    seeded with the mcp-tunnel release (``seed`` goes to ``seed_release``), and writes a
    kubeconfig for it (CA and bearer token). ``tls_dir`` (default: beside the kubeconfig)
    receives the CA and serving certificate. ``cni``: the network plugin installed
    (sandbox/k8s_cni.py; default Calico, which enforces NetworkPolicy; ``None``: no
    plugin visible). Call ``stop()`` when done."""
    from sandbox.helm_release import seed_release as seed_helm_release
    from sandbox.k8s_cni import set_cni
    from sandbox.serve import serve_in_thread

    cluster = cluster or Cluster()
    set_cni(cluster, cni)
    seeded = seed_helm_release(cluster, namespace=namespace, **seed) if seed_release else None
    cluster.publish()
    tls = make_serving_tls(tls_dir or Path(kubeconfig).parent / "sandbox-k8s-tls")
    handle = serve_in_thread(
        build_app(cluster, token=token),
        ssl_certfile=str(tls.cert_file),
        ssl_keyfile=str(tls.key_file),
    )
    served = SandboxCluster(
        handle=handle,
        cluster=cluster,
        kubeconfig=Path(kubeconfig),
        tls=tls,
        token=token,
        namespace=namespace,
        seeded=seeded,
    )
    served.write_kubeconfig(kubeconfig)
    threading.Thread(
        target=_run_controllers, args=(cluster, served._stop), name="sandbox-k8s", daemon=True
    ).start()
    return served


def main(argv: list[str] | None = None) -> None:
    """Runs the sandbox standalone (the demo's cluster) until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    parser.add_argument("--namespace", default="mcp-tunnel")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument(
        "--seed-release", action="store_true", help="seed an installed Helm release mcp-tunnel"
    )
    parser.add_argument(
        "--cni",
        default="calico",
        choices=["calico", "cilium", "flannel", "none"],
        help="network plugin the cluster shows (default calico)",
    )
    args = parser.parse_args(argv)
    cluster = Cluster()
    from sandbox.k8s_cni import set_cni

    set_cni(cluster, None if args.cni == "none" else args.cni)
    if args.seed_release:
        from sandbox.helm_release import seed_release

        seed_release(cluster, namespace=args.namespace)
    cluster.publish()
    tls = make_serving_tls(Path(args.kubeconfig).parent / "sandbox-k8s-tls", hosts=(args.host,))
    app = build_app(cluster, token=args.token)
    write_kubeconfig(
        args.kubeconfig,
        f"https://{args.host}:{args.port}",
        args.token,
        args.namespace,
        ca_pem=tls.ca_pem,
    )
    stop = threading.Event()
    threading.Thread(target=_run_controllers, args=(cluster, stop), daemon=True).start()
    print(
        f"sandbox kubernetes API on https://{args.host}:{args.port}; kubeconfig {args.kubeconfig}",
        flush=True,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        ssl_certfile=str(tls.cert_file),
        ssl_keyfile=str(tls.key_file),
        timeout_graceful_shutdown=1,  # TLS peers that never close must not hold us up
    )


if __name__ == "__main__":
    main()
