"""Sandbox Kubernetes API server: the REST wire format the official client speaks.

Serves core/v1 pods (+ ``/log``), secrets, services, serviceaccounts, configmaps, events;
apps/v1 deployments and replicasets; batch/v1 jobs and cronjobs; networking.k8s.io/v1
networkpolicies. Answers errors with the apiserver's ``Status`` objects and codes.

Test controls (not part of the Kubernetes API):

- ``GET /_sandbox/calls``: every mutating call in order (``seq, verb, resource, namespace,
  name, code``) — lets a test prove ordering; ``DELETE`` clears it.
- ``POST /_sandbox/faults``: ``{"deny": [{"verb": "delete", "resource": "secrets",
  "name": "x"?}], "fail_next": {"count": 2, "verb"?: "...", "resource"?: "..."}}`` —
  403 Forbidden (RBAC message shape) or 500 InternalError; ``DELETE`` clears.

Run standalone for the demo::

    python -m sandbox.kubernetes_api --port 8443 --kubeconfig /tmp/kubeconfig --seed-release
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.k8s_cluster import POD, Cluster
from sandbox.k8s_store import RESOURCES, ApiError, Resource, bad_request, forbidden, internal_error

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
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None


def build_app(
    cluster: Cluster | None = None, *, token: str = DEFAULT_TOKEN, user: str = DEFAULT_USER
) -> Starlette:
    """Builds the ASGI app; ``app.state.sandbox`` is the :class:`SandboxState`."""
    state = SandboxState(cluster=cluster or Cluster(), token=token, user=user)

    def authorised(request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {state.token}"

    async def handle(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": "Unauthorized",
                    "reason": "Unauthorized",
                    "code": 401,
                },
                status_code=401,
            )
        p = request.path_params
        group = p.get("group", "")
        name = p.get("name")
        namespace = p["namespace"]
        method = request.method
        res: Resource | None = None
        verb = ""
        try:
            res = _resource(group, p["version"], p["plural"])
            subresource = p.get("sub")
            if subresource not in (None, "log") or (subresource == "log" and res is not POD):
                raise _NO_RESOURCE
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
                return JSONResponse(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": "the server does not allow this method on the requested "
                        "resource",
                        "reason": "MethodNotAllowed",
                        "details": {},
                        "code": 405,
                    },
                    status_code=405,
                )
            if method == "GET" and _bool(request.query_params.get("watch")):
                raise bad_request("watch is not supported by the sandbox")
            state.faults.check(verb, res, name, namespace, state.user, subresource)
            result, code = await _dispatch(
                request, state.cluster, res, namespace, name, verb, subresource
            )
        except ApiError as err:
            if res is not None and verb not in ("get", "list"):
                state.record(verb, res, namespace, name, err.code)
            return _status_response(err)
        if verb not in ("get", "list"):
            if name is None and isinstance(result, dict):  # create: the name is in the result
                name = result.get("metadata", {}).get("name")
            state.record(verb, res, namespace, name, code)
        if isinstance(result, bytes):
            return Response(result, media_type="text/plain")
        return JSONResponse(result, status_code=code)

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

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/_sandbox/calls", calls, methods=["GET", "DELETE"]),
        Route("/_sandbox/faults", faults, methods=["POST", "DELETE"]),
    ]
    for prefix in ("/api/{version}", "/apis/{group}/{version}"):
        base = prefix + "/namespaces/{namespace}/{plural}"
        routes += [
            Route(base, handle, methods=methods),
            Route(base + "/{name}", handle, methods=methods),
            Route(base + "/{name}/{sub}", handle, methods=methods),
        ]
    app = Starlette(routes=routes)
    app.state.sandbox = state
    return app


async def _dispatch(
    request: Request,
    cluster: Cluster,
    res: Resource,
    namespace: str,
    name: str | None,
    verb: str,
    subresource: str | None,
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
    if verb == "list":
        return cluster.list(
            res, namespace, q.get("labelSelector", ""), q.get("fieldSelector", "")
        ), 200
    if verb == "get":
        return cluster.get(res, namespace, name or ""), 200
    body = await _json_body(request)
    if verb == "create":
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be an object")
        return cluster.create(res, namespace, body), 201
    if verb == "update":
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be an object")
        return cluster.replace(res, namespace, name or "", body), 200
    if verb == "patch":
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        return cluster.patch(res, namespace, name or "", body, ctype), 200
    if verb == "delete":
        opts = body if isinstance(body, dict) else {}
        grace = _int(request, "gracePeriodSeconds")
        if grace is None:
            grace = opts.get("gracePeriodSeconds")
        propagation = q.get("propagationPolicy") or opts.get("propagationPolicy")
        return (
            cluster.delete(res, namespace, name or "", grace_period=grace, propagation=propagation),
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
                grace_period=_int(request, "gracePeriodSeconds"),
            )
        return listed, 200
    raise _NO_RESOURCE


def write_kubeconfig(path: str | Path, url: str, token: str, namespace: str) -> Path:
    """Writes a kubeconfig (mode 0600) with one context for the sandbox: plain-http
    server URL and a bearer-token user."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": url}}],
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
    """A sandbox cluster served in this process (tests and ``mcp-ir demo --kind helm``)."""

    handle: Any  # sandbox.serve.ServerHandle
    cluster: Cluster
    kubeconfig: Path
    seeded: Any = None  # sandbox.helm_release.SeededRelease when seeded

    @property
    def url(self) -> str:
        return self.handle.url

    def stop(self) -> None:
        self.handle.stop()


def serve_sandbox(
    kubeconfig: str | Path,
    *,
    namespace: str = "mcp-tunnel",
    seed_release: bool = True,
    token: str = DEFAULT_TOKEN,
    cluster: Cluster | None = None,
    **seed: Any,
) -> SandboxCluster:
    """Starts the sandbox API on a free loopback port in a background thread, seeded
    with the mcp-tunnel release (``seed`` goes to ``seed_release``), and writes a
    kubeconfig for it. Call ``stop()`` when done."""
    from sandbox.helm_release import seed_release as seed_helm_release
    from sandbox.serve import serve_in_thread

    cluster = cluster or Cluster()
    seeded = seed_helm_release(cluster, namespace=namespace, **seed) if seed_release else None
    handle = serve_in_thread(build_app(cluster, token=token))
    path = write_kubeconfig(kubeconfig, handle.url, token, namespace)
    return SandboxCluster(handle=handle, cluster=cluster, kubeconfig=path, seeded=seeded)


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
    args = parser.parse_args(argv)
    cluster = Cluster()
    if args.seed_release:
        from sandbox.helm_release import seed_release

        seed_release(cluster, namespace=args.namespace)
    app = build_app(cluster, token=args.token)
    write_kubeconfig(args.kubeconfig, f"http://{args.host}:{args.port}", args.token, args.namespace)
    print(
        f"sandbox kubernetes API on http://{args.host}:{args.port}; kubeconfig {args.kubeconfig}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
