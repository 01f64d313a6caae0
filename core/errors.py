"""The engine's exception hierarchy.

Every failure a user can meet has its own class, a human-readable ``detail`` and a
``retryable`` flag: only transient failures are retried, and every terminal one
reaches the user verbatim.
"""

from __future__ import annotations


class McpIrError(Exception):
    """Base class. ``detail`` is shown to the user as is; it never holds a secret."""

    retryable: bool = False

    def __init__(self, detail: str, *, retryable: bool | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
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
    """A step's apply or verify failed; ``step`` names it."""

    def __init__(self, step: str, detail: str, *, retryable: bool = False) -> None:
        super().__init__(f"{step}: {detail}", retryable=retryable)
        self.step = step


class TransientError(McpIrError):
    """A remote system answered with a temporary failure (5xx, timeout, 429)."""

    retryable = True


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
