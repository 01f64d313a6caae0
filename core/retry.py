"""The one retry policy, and the deadline it is measured against.

A step fails with :class:`~core.errors.TransientError` when a remote system had a
temporary problem (5xx, 429, a timeout, a lost response, an effect not in place
yet). The runner then runs the whole step again (``check`` first, so nothing is
done twice) under the step's :class:`RetryPolicy`, declared in the playbook:

.. code-block:: yaml

    - key: stop_stack
      retry: {attempts: 4, backoff: 2s, max: 30s}

Waits double from ``backoff`` up to ``max``; a ``Retry-After`` the remote system
sent is honoured, unless it is longer than what is left of the step's ``timeout``:
then the step fails at once instead of stalling past its deadline.

Adapters do not retry. They read :func:`remaining` (set by the runner with
:func:`deadline`) only to stop an SDK from sleeping past the deadline.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from core.durations import format_duration, parse_duration
from core.errors import McpIrError, TransientError

T = TypeVar("T")

_FIELDS = ("attempts", "backoff", "max")
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "mcp_ir_deadline", default=None
)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all (1 = no retry); waits ``backoff_s``, doubling, at
    most ``max_backoff_s`` (and at least what the remote system asked for)."""

    attempts: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    @classmethod
    def parse(cls, raw: Any) -> RetryPolicy:
        """From the playbook's ``retry:`` mapping (``None``: the defaults).

        Raises:
            ValueError: naming the field (``retry.attempts``…) and the problem.
        """
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ValueError("field 'retry': must be a mapping with attempts/backoff/max")
        unknown = sorted(set(raw) - set(_FIELDS))
        if unknown:
            raise ValueError(
                f"field 'retry.{unknown[0]}': unknown field (known: attempts, backoff, max)"
            )
        default = cls()
        attempts = raw.get("attempts", default.attempts)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 20:
            raise ValueError("field 'retry.attempts': must be an integer from 1 to 20")
        values = {}
        for name, fallback in (("backoff", default.backoff_s), ("max", default.max_backoff_s)):
            value = raw.get(name)
            try:
                values[name] = fallback if value is None else parse_duration(value)
            except ValueError as exc:
                raise ValueError(f"field 'retry.{name}': {exc}") from None
        if values["max"] < values["backoff"]:
            raise ValueError(
                f"field 'retry.max': {format_duration(values['max'])} is shorter than "
                f"retry.backoff {format_duration(values['backoff'])}"
            )
        return cls(attempts=attempts, backoff_s=values["backoff"], max_backoff_s=values["max"])

    def as_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "backoff_s": self.backoff_s, "max_s": self.max_backoff_s}

    def wait_before(self, attempt: int, exc: BaseException, left_s: float) -> tuple[float, str]:
        """After failed try number ``attempt`` (from 1) with ``left_s`` seconds of the
        deadline left: ``(seconds to wait, "")`` to try again, or ``(-1, why not)``."""
        if not isinstance(exc, McpIrError) or not exc.retryable:
            return -1.0, "not transient"
        if attempt >= self.attempts:
            return -1.0, f"gave up after {attempt} attempt(s)"
        asked = exc.retry_after if isinstance(exc, TransientError) else None
        if asked is not None and asked >= left_s:
            return -1.0, (
                f"the server asked to retry after {format_duration(asked)}, beyond the step's "
                f"remaining deadline of {format_duration(max(left_s, 0))}"
            )
        wait = max(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)), asked or 0.0)
        if wait >= left_s:
            return -1.0, (
                f"the next try (in {format_duration(wait)}) would start past the step's deadline"
            )
        return wait, ""

    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_retry: Callable[[int, McpIrError, float], None] | None = None,
        **kwargs: Any,
    ) -> T:
        """Runs ``fn`` under this policy within the current :func:`deadline` (none:
        unbounded). ``on_retry(attempt, error, wait)`` is told before each wait.
        The last error is raised as is, its detail extended with why it was final."""
        attempt = 1
        while True:
            try:
                return fn(*args, **kwargs)
            except McpIrError as exc:
                left = remaining()
                wait, why = self.wait_before(attempt, exc, float("inf") if left is None else left)
                if wait < 0:
                    final(exc, why)
                    raise
                if on_retry is not None:
                    on_retry(attempt, exc, wait)
                time.sleep(wait)
                attempt += 1


def final(exc: McpIrError, why: str) -> None:
    """Says in a transient error's detail why it was not retried (again)."""
    if exc.retryable and why:
        exc.detail = f"{exc.detail} ({why})"
        exc.args = (exc.detail,)


def remaining() -> float | None:
    """Seconds left before the current step's deadline (``None``: no deadline set)."""
    at = _DEADLINE.get()
    return None if at is None else at - time.monotonic()


@contextmanager
def deadline(at_monotonic: float) -> Iterator[None]:
    """Sets the deadline (a ``time.monotonic()`` value) for the calls in the block."""
    token = _DEADLINE.set(at_monotonic)
    try:
        yield
    finally:
        _DEADLINE.reset(token)
