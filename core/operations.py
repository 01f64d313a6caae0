"""Operations as data, and the one guard every mutating call passes through.

A driver or adapter describes each mutating call it would make as an
:class:`Operation` — the system it talks to, the verb, the resource and a digest of
the parameters known when the plan is made. A step's plan lists these operations
(the plan hash covers them) and approving the plan approves exactly them.

At run time the engine binds the approved operations to a :class:`Guard` for the
duration of the step (check, apply, verify). Every mutating request the engine's
clients send is shown to :meth:`Guard.admit` first (the clients are wired to it in
one place, ``runbook/context.py``; local file writes are admitted by the driver that
makes them). An operation the plan does not list is refused: the refusal is reported
(the runner records ``operation.refused`` in the trail), the request never leaves the
process, and the step fails closed with :class:`OperationRefused`.

Matching: ``system`` and ``verb`` are compared exactly; ``resource`` is a path pattern
in which ``*`` and ``{placeholder}`` stand for a value only known at run time (one
path segment or more, like a shell glob); ``params_digest`` ``"*"`` means "decided at
run time" (a minted certificate, a new token), any other value must be equal. The
guard sees every request's digest (:func:`request_digest`: its query and body), so a
planned operation that pins one admits exactly that request.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl

from core.errors import McpIrError

ANY = "*"
_PLACEHOLDER = re.compile(r"\{[^}]*\}")


def params_digest(params: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``params`` (keys sorted)."""
    raw = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Operation:
    """One mutating call: ``system`` (``anthropic``, ``kubernetes``, ``docker``,
    ``files``, ``aws``, ``oauth``), ``verb`` (the HTTP method, or ``write``/``delete``
    for files), ``resource`` (a path; ``*``/``{x}`` where only the run knows the value),
    ``params_digest`` (see :func:`params_digest`; ``"*"`` when decided at run time)
    and a human ``note`` shown in plans."""

    system: str
    verb: str
    resource: str
    params_digest: str = ANY
    note: str = ""

    def call(self) -> str:
        """How plans have always named a call: ``METHOD path (note)``."""
        return f"{self.verb} {self.resource}" + (f" ({self.note})" if self.note else "")

    def pattern(self) -> str:
        return _PLACEHOLDER.sub("*", self.resource)

    def covers(self, actual: Operation) -> bool:
        """Whether this planned operation admits ``actual``."""
        if (self.system, self.verb) != (actual.system, actual.verb):
            return False
        if not fnmatch.fnmatchcase(actual.resource, self.pattern()):
            return False
        return ANY in (self.params_digest, actual.params_digest) or (
            self.params_digest == actual.params_digest
        )

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class OperationRefused(McpIrError):
    """A mutating call the approved plan does not list; nothing was sent. Never retried."""

    retryable = False

    def __init__(self, step: str, operation: Operation) -> None:
        super().__init__(
            f"{step}: refused {operation.system} {operation.verb} {operation.resource}: "
            "the operation is not in the approved plan (nothing was sent)",
            retryable=False,
        )
        self.step = step
        self.operation = operation


@dataclass
class _Binding:
    step: str
    approved: tuple[Operation, ...]
    on_refused: Callable[[Operation], None]
    refused: list[Operation]


class Guard:
    """Admits or refuses mutating operations against the plan bound for the running step.

    Unbound (no step running: plan previews, tools, adapter tests), every operation is
    admitted: the guard enforces an approval, and outside a run there is none. Shared by
    the threads of one step (a lock protects the binding)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._binding: _Binding | None = None

    @contextmanager
    def bound(
        self,
        step: str,
        approved: Iterable[Operation],
        on_refused: Callable[[Operation], None] = lambda op: None,
    ) -> Iterator[_Binding]:
        """Binds ``approved`` for the duration of the block. On exit, if anything was
        refused, the block's outcome is replaced by :class:`OperationRefused` (fail
        closed, whatever the adapter made of the refusal)."""
        binding = _Binding(step, tuple(approved), on_refused, [])
        with self._lock:
            previous, self._binding = self._binding, binding
        try:
            yield binding
        except OperationRefused:
            raise
        except Exception as exc:
            if binding.refused:
                raise OperationRefused(step, binding.refused[0]) from exc
            raise
        finally:
            with self._lock:
                self._binding = previous
        if binding.refused:
            raise OperationRefused(step, binding.refused[0])

    def admit(self, operation: Operation) -> None:
        """Raises :class:`OperationRefused` (after reporting it once) unless the bound
        plan lists ``operation``."""
        with self._lock:
            binding = self._binding
        if binding is None:
            return
        if any(planned.covers(operation) for planned in binding.approved):
            return
        first = operation not in binding.refused
        binding.refused.append(operation)
        if first:
            binding.on_refused(operation)
        raise OperationRefused(binding.step, operation)


MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def request_digest(query: str | Mapping[str, Any] = "", body: Any = None) -> str:
    """The ``params_digest`` of an HTTP request: its query parameters and its body.

    A plan pins a request by computing this from the same values the adapter sends
    (a dict body as the JSON it becomes); the guard computes it from the bytes on the
    wire. A JSON body is compared as parsed JSON (key order and spacing do not
    matter), any other body by its SHA-256."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else query.items()
    return params_digest({"query": sorted((str(k), str(v)) for k, v in pairs), "body": body})


def _body_value(body: bytes | str | None) -> Any:
    if body is None or body in (b"", ""):
        return None
    raw = body.encode() if isinstance(body, str) else bytes(body)
    try:
        return json.loads(raw)
    except ValueError:
        return "sha256:" + hashlib.sha256(raw).hexdigest()


def http_operation(
    system: str, method: str, path: str, *, query: str = "", body: bytes | str | None = None
) -> Operation | None:
    """The operation of an HTTP request (its ``params_digest`` from ``query`` and
    ``body``, see :func:`request_digest`), or None for a read (GET/HEAD/OPTIONS)."""
    verb = method.upper()
    if verb not in MUTATING:
        return None
    return Operation(system, verb, path, request_digest(query, _body_value(body)))
