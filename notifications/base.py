"""What the engine calls to tell people about an incident.

Every method returns at once and never raises: a notification that cannot be sent
now is kept in a durable outbox and delivered later, and a notification failure
never blocks or fails a step. :class:`NullNotifier` is used when the inventory has
no ``slack`` section; :func:`build_notifier` picks the right one.
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
    """Used when Slack is not configured: every notification is a no-op."""


def build_notifier(
    inventory: Inventory,
    target_name: str,
    *,
    record: RecordFn,
    state_dir: Path,
    redactor: Redactor,
) -> Notifier:
    """The notifier for runs against ``target_name``.

    Args:
        inventory: the parsed inventory (its ``slack`` section and the target's
            ``slack_channel``).
        target_name: the target the incident acts on.
        record: appends ``(kind, data)`` to the incident's evidence trail; used for
            delivery failures and late deliveries. Called from a background thread.
        state_dir: where the durable outbox lives.
        redactor: every rendered message passes through it before it is queued.

    Returns:
        A :class:`NullNotifier` when the inventory has no ``slack`` section, else a
        Slack notifier posting to the target's channel (or ``default_channel``).

    Raises:
        ConfigError: Slack is configured but no channel is known for the target.
        CredentialsError: the token's environment variable or Secret block is
            missing or empty.
    """
    slack_cfg = getattr(inventory, "slack", None)
    if slack_cfg is None:
        return NullNotifier()
    from notifications.slack import SlackNotifier, make_client, resolve_channel, resolve_token

    channel = resolve_channel(inventory, target_name)
    client = make_client(resolve_token(slack_cfg), base_url=slack_cfg.base_url)
    people = {
        name: p.slack_user_id
        for name, p in getattr(inventory, "people", {}).items()
        if getattr(p, "slack_user_id", None)
    }
    return SlackNotifier(
        client,
        channel=channel,
        state_dir=state_dir,
        record=record,
        redactor=redactor,
        slack_users=people,
    )
