"""What the engine calls to tell people about an incident.

Every method returns at once and never raises: a notification that cannot be sent
now is kept in a durable outbox and delivered later, and a notification failure
never blocks or fails a step. Channels are plugins (:mod:`notifications.plugins`);
:func:`build_notifier` builds the ones the inventory configures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.redact import Redactor
    from runbook.inventory import Inventory

RecordFn = Callable[[str, dict[str, Any]], None]


class Notifier:
    """The notification protocol. The base implementation does nothing, so a
    subclass overrides only what its channel shows."""

    def incident_opened(
        self,
        incident_id: str,
        target: str,
        severity: str,
        trigger: str,
        initiator: str,
        playbook: str,
    ) -> None:
        """An incident run started: opens its thread."""

    def step_started(self, incident_id: str, step: str) -> None:
        """A step began (after its gate, if any)."""

    def step_finished(
        self, incident_id: str, step: str, outcome: str, duration_s: float, detail: str = ""
    ) -> None:
        """A step ended with ``outcome`` (``succeeded``, ``failed``, ``skipped``…)."""

    def approval_requested(
        self,
        incident_id: str,
        step: str,
        plan_hash: str,
        plan_summary: dict[str, Any],
        group: str,
        required: int,
        approvals_so_far: list[str],
        timeout_s: float,
    ) -> None:
        """A gate is waiting: posts the plan with Approve / Reject buttons."""

    def approval_decided(
        self, incident_id: str, step: str, approver: str, decision: str, remaining: int
    ) -> None:
        """An approval or rejection was accepted by the gate (from any channel)."""

    def escalated(
        self,
        incident_id: str,
        step: str,
        secondary_group: str,
        members: list[str],
        timeout_s: float | None = None,
    ) -> None:
        """The gate had no quorum at ``escalate_after``: the secondary group is called
        (and told that at ``timeout_s`` after the request the gate rejects)."""

    def gate_timed_out(self, incident_id: str, step: str) -> None:
        """The gate reached its timeout without quorum and rejected the step."""

    def incident_closed(self, incident_id: str, status: str, summary: str) -> None:
        """The run ended with ``status``."""

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Tries to deliver every queued message now; True when nothing is left."""
        return True

    def close(self) -> None:
        """Stops background delivery (queued messages stay in the outbox)."""


class NullNotifier(Notifier):
    """Used when no notifier is configured: every notification is a no-op."""


class FanOutNotifier(Notifier):
    """Several configured notifiers: each gets every call (a notifier never raises,
    so one failing channel does not keep the others from theirs)."""

    def __init__(self, notifiers: list[Notifier]) -> None:
        self.notifiers = notifiers

    def flush(self, timeout_s: float = 10.0) -> bool:
        return all([n.flush(timeout_s) for n in self.notifiers])


def _fan_out(name: str) -> Callable[..., None]:
    def each(self: FanOutNotifier, *args: Any, **kwargs: Any) -> None:
        for notifier in self.notifiers:
            getattr(notifier, name)(*args, **kwargs)

    each.__name__ = name
    each.__doc__ = getattr(Notifier, name).__doc__
    return each


for _event in (
    "incident_opened",
    "step_started",
    "step_finished",
    "approval_requested",
    "approval_decided",
    "escalated",
    "gate_timed_out",
    "incident_closed",
    "close",
):
    setattr(FanOutNotifier, _event, _fan_out(_event))


def build_notifier(
    inventory: Inventory,
    target_name: str,
    *,
    record: RecordFn,
    state_dir: Path,
    redactor: Redactor,
) -> Notifier:
    """The notifier for ``target_name``: one per configured plugin that speaks the
    :class:`Notifier` interface (its optional ``notifier`` method; Slack does, the
    pagers observe the trail instead), see :mod:`notifications.plugins`.

    Args:
        inventory: the parsed inventory.
        target_name: the target the incident acts on.
        record: appends ``(kind, data)`` to the incident's evidence trail; used for
            delivery failures and late deliveries. Called from a background thread.
        state_dir: the root of the notifiers' durable state (a run's evidence
            dir): each plugin keeps its own (an outbox) in ``<state_dir>/_<name>``
            (:func:`notifications.plugins.state_dir`).
        redactor: every rendered message passes through it before it is queued.

    Returns:
        A :class:`NullNotifier` when no such plugin is configured, the plugin's
        notifier when one is, else a :class:`FanOutNotifier`.

    Raises:
        ConfigError, CredentialsError: a configured plugin cannot be used (named).
    """
    from notifications import plugins

    built = [
        plugin.notifier(  # type: ignore[attr-defined]
            config,
            inventory=inventory,
            target_name=target_name,
            record=record,
            state_dir=plugins.state_dir(state_dir, plugin.name),
            redactor=redactor,
        )
        for plugin, config in plugins.configured(inventory)
        if hasattr(plugin, "notifier")
    ]
    if not built:
        return NullNotifier()
    return built[0] if len(built) == 1 else FanOutNotifier(built)
