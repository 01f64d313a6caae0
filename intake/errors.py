"""Errors of the intake path, each tied to one HTTP answer or one store outcome."""

from __future__ import annotations

from core.errors import McpIrError


class MalformedPayload(McpIrError):
    """The body is not a JSON document (answered 400, the detail names the problem)."""


class PayloadSchemaError(McpIrError):
    """The JSON does not fit the source's format (answered 422).

    Attributes:
        field: dotted path of the offending field (``body`` for the whole document).
        problem: what is wrong with it.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class UnmappedAlert(McpIrError):
    """The alert parsed, but no inventory rule gives it a target and severity; it goes
    to the dead-letter table, never away."""


class StoreUnavailable(McpIrError):
    """The SQLite store could not commit; the sender gets 503 and retries."""

    retryable = True
