"""Wires the engine's SDK clients to the operation guard (``core/operations.py``).

One hook per client, each at the documented extension point of its SDK, each handing
every mutating request (POST, PUT, PATCH, DELETE) to the same :meth:`Guard.admit`
BEFORE anything is sent:

* anthropic: a client middleware (``Anthropic.with_middleware``); exceptions raised by
  middleware reach the caller as they are (the SDK does not retry them);
* kubernetes: the ``ApiClient``'s urllib3 pool manager, through which every request of
  the generated API classes goes;
* docker: the ``APIClient``'s ``requests`` session ``send`` (the Engine API version
  prefix, ``/v1.41``, is removed from the path).

A refused request never leaves the process. Reads pass untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

from core.operations import Guard, Operation, http_operation

_ENGINE_VERSION = re.compile(r"^/v\d+(\.\d+)?(?=/)")


def guard_anthropic(client: Any, guard: Guard) -> Any:
    """The client with a middleware that admits every mutating request."""

    def admit(request: Any, call_next: Any) -> Any:
        url = urlsplit(str(request.url))
        op = http_operation(
            "anthropic", request.method, url.path, query=url.query, body=_content(request)
        )
        if op is not None:
            guard.admit(op)
        return call_next(request)

    return client.with_middleware(admit)


def guard_kubernetes(api: Any, guard: Guard) -> Any:
    """The ``ApiClient`` with its pool manager's ``request`` admitting first."""
    pool = api.rest_client.pool_manager
    send = pool.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        # A mutating call's query is in the URL; ``fields`` are its form body, if any.
        body = kwargs.get("body")
        if body is None and kwargs.get("fields"):
            body = urlencode(kwargs["fields"])
        op = http_operation("kubernetes", method, parts.path, query=parts.query, body=body)
        if op is not None:
            guard.admit(op)
        return send(method, url, *args, **kwargs)

    pool.request = request
    return api


def guard_docker(client: Any, guard: Guard) -> Any:
    """The ``DockerClient`` with its API session's ``send`` admitting first."""
    session = client.api
    send = session.send

    def guarded_send(prepared: Any, **kwargs: Any) -> Any:
        url = urlsplit(prepared.url)
        path = _ENGINE_VERSION.sub("", url.path)
        op = http_operation("docker", prepared.method, path, query=url.query, body=prepared.body)
        if op is not None:
            guard.admit(op)
        return send(prepared, **kwargs)

    session.send = guarded_send
    return client


def _content(request: Any) -> bytes | None:
    """An httpx request's body, if it is in memory (a streamed body is not read)."""
    try:
        return bytes(request.content)
    except Exception:  # noqa: BLE001 (httpx.RequestNotRead: a stream; digest without it)
        return None


@contextmanager
def plan_bound(ctx: Any) -> Iterator[None]:
    """Binds the step's approved plan (``ctx.plan``) to the guard while the block runs
    (check, apply, verify): a mutating call the plan does not list is refused, recorded
    as ``operation.refused`` and fails the step closed (``OperationRefused``)."""
    if ctx.plan is None:
        yield
        return

    def refused(op: Operation) -> None:
        ctx.record(
            "operation.refused",
            {"operation": op.as_dict(), "plan_hash": ctx.plan.digest(), "sent": False},
        )

    with ctx.guard.bound(ctx.step, ctx.plan.operations, on_refused=refused):
        yield


_READ_PREFIXES = ("Get", "Describe", "List", "BatchGet")


def guard_boto3(client: Any, guard: Guard) -> Any:
    """A boto3 client whose mutating operations (anything but Get/Describe/List…) are
    admitted first, as ``aws`` operations ``<service>:<Operation> <SecretId|Name>``,
    through botocore's documented ``before-parameter-build`` event (the API parameters,
    before anything is serialized or sent)."""
    service = client.meta.service_model.signing_name or client.meta.service_model.service_name

    def admit(model: Any, params: dict[str, Any], **_: Any) -> None:
        if model.name.startswith(_READ_PREFIXES):
            return
        resource = str(params.get("SecretId") or params.get("Name") or "")
        guard.admit(Operation("aws", f"{service}:{model.name}", resource))

    client.meta.events.register("before-parameter-build", admit)
    return client


def guarded_http(guard: Guard, system: str) -> Any:
    """An ``httpx.Client`` whose mutating requests are admitted first (request event
    hook), as ``<system>`` operations on ``scheme://host/path``."""
    import httpx

    def admit(request: httpx.Request) -> None:
        url = request.url
        op = http_operation(
            system,
            request.method,
            f"{url.scheme}://{url.netloc.decode()}{url.path}",
            query=url.query.decode(),
            body=_content(request),
        )
        if op is not None:
            guard.admit(op)

    return httpx.Client(event_hooks={"request": [admit]})
