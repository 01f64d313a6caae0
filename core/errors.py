"""The engine's exception hierarchy.

Every failure a user can meet has its own class, a human-readable ``detail`` and a
``retryable`` flag: only transient failures are retried, and every terminal one
reaches the user verbatim.
"""

from __future__ import annotations


class McpIrError(Exception):
    """Base class. ``detail`` is shown to the user as is; it never holds a secret.

    ``request_id`` is the remote system's id for the failed request (the Anthropic
    API's ``request-id``), kept so that a support ticket can name it; the runner
    writes it into the trail's ``step.failed`` record.
    """

    retryable: bool = False

    def __init__(
        self, detail: str, *, retryable: bool | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.request_id = request_id
        if retryable is not None:
            self.retryable = retryable


class ConfigError(McpIrError):
    """Inventory, playbook or command-line input is invalid (CLI exit code 2)."""


class PlaybookError(ConfigError):
    """A playbook cannot be rendered, parsed or checked."""


class UnknownTargetError(ConfigError):
    """The named target is not in the inventory."""


class CredentialsError(ConfigError):
    """A credential reference cannot be resolved (missing env var, bad reference)."""


class StepFailed(McpIrError):
    """A step's apply or verify failed; ``step`` names it. Never retried: a failure
    that may pass on its own is a :class:`TransientError`."""

    def __init__(self, step: str, detail: str, *, request_id: str | None = None) -> None:
        super().__init__(f"{step}: {detail}", request_id=request_id)
        self.step = step


class OperationFailed(StepFailed):
    """An adapter's call to an external system was refused, or its effect is not in
    place. ``operation`` names the call (``tunnels.archive``, ``agents.detach``…),
    never an engine step: adapters do not know the steps that use them. It fails
    the calling step (hence a :class:`StepFailed`), which the runner names."""

    def __init__(self, operation: str, detail: str, *, request_id: str | None = None) -> None:
        super().__init__(operation, detail, request_id=request_id)
        self.operation = operation


class TransientError(McpIrError):
    """A remote system answered with a temporary failure (5xx, timeout, 429, a lost
    response). The runner's retry policy (``core.retry``) runs the step again.

    ``retry_after`` (seconds) is what the remote system asked for (``Retry-After``),
    when it said; the policy waits at least that long, or fails the step when that
    is longer than the step's remaining deadline.
    """

    retryable = True

    def __init__(
        self, detail: str, *, retry_after: float | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(detail, request_id=request_id)
        self.retry_after = retry_after


class NotInPlaceYet(OperationFailed, TransientError):
    """The calls went through but their effect is not (yet) in place (a container
    still listed after its removal): a failure of the operation, which the retry
    policy runs again because the remote system may still be converging."""


class GateError(McpIrError):
    """Base class for approval-gate outcomes that stop a step."""


class GateRejected(GateError):
    """An approver rejected the step."""


class GateTimedOut(GateError):
    """The gate did not reach its quorum before its timeout; a timeout rejects."""


class ApprovalRefused(GateError):
    """A single approval or rejection was not accepted (not a member, initiator,
    already counted, stale plan hash, gate not waiting). Nothing changes."""


class EvidenceError(McpIrError):
    """The evidence trail cannot be written or read."""


class RunSuperseded(EvidenceError):
    """A resumed run of the same incident took over the trail (a higher epoch): this
    run may not write to the trail again and must end without touching anything."""
