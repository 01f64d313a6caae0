"""Slack notifications: one thread per incident, posted with the official slack-sdk.

The opening message (target, severity, trigger, who started it) carries a status
line that ``chat.update`` keeps current; every step's start, result and duration,
every approval request (with Approve / Reject buttons), decision, escalation and
timeout is a reply in that thread. Messages are Block Kit rendered from the
Jinja2 templates ``notifications/templates/slack_*.j2`` and passed through the
incident's :class:`~core.redact.Redactor` before they are queued.

Nothing here blocks the caller: a notification is written to the durable
:class:`~notifications.outbox.Outbox` and a background thread delivers it.
slack-sdk's retry handlers absorb short rate limits (429 + Retry-After) and
connection resets; whatever still fails stays queued and is retried on the next
notification, on :meth:`SlackNotifier.flush` and by the background thread with
exponential backoff. Each failed attempt is recorded in the incident's trail as
``notification.failed`` and a message delivered after a failure as
``notification.delivered_late`` (ids, kinds and error codes only — never bodies).

This module says what to post and when; :mod:`notifications.slack_render` renders
it, :mod:`notifications.slack_delivery` delivers it, :mod:`notifications.slack_client`
resolves the settings. Their public names are re-exported here.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from slack_sdk import WebClient

from notifications.base import Notifier, RecordFn
from notifications.outbox import OPENER_KEY, Outbox
from notifications.slack_client import (
    SLACK_API_URL,
    make_client,
    resolve_channel,
    resolve_signing_secret,
    resolve_token,
)
from notifications.slack_delivery import PERMANENT_ERRORS, SlackDelivery
from notifications.slack_render import (
    ACTIONS_BLOCK,
    APPROVE_ACTION,
    DECISIONS_BLOCK,
    REJECT_ACTION,
    TEMPLATES_DIR,
    approval_status_line,
    button_value,
    decision_line,
    decisions_block,
    mrkdwn,
    render,
)

if TYPE_CHECKING:
    from core.redact import Redactor

__all__ = [  # what callers import from here (built in the modules named above)
    "ACTIONS_BLOCK",
    "APPROVE_ACTION",
    "DECISIONS_BLOCK",
    "PERMANENT_ERRORS",
    "REJECT_ACTION",
    "SLACK_API_URL",
    "TEMPLATES_DIR",
    "SlackNotifier",
    "approval_status_line",
    "button_value",
    "decision_line",
    "decisions_block",
    "make_client",
    "mrkdwn",
    "render",
    "resolve_channel",
    "resolve_signing_secret",
    "resolve_token",
]


F = TypeVar("F", bound=Callable[..., Any])


# -- the notifier ----------------------------------------------------------


def _never_raises(fn: F) -> F:
    """Notifications must never fail a step: any error while preparing a message is
    recorded in the trail (type only) instead of reaching the engine."""

    @functools.wraps(fn)
    def wrapper(self: SlackNotifier, *args: Any, **kwargs: Any) -> Any:
        try:
            # One notification at a time: each reads, changes and saves the thread
            # context, and their messages must enter the outbox in call order.
            with self._notify_lock:
                return fn(self, *args, **kwargs)
        except Exception as exc:  # the engine must not see notification errors
            self._safe_record(
                "notification.failed",
                {"stage": fn.__name__, "error": type(exc).__name__, "permanent": True},
            )
            return None

    return wrapper  # type: ignore[return-value]


class SlackNotifier(SlackDelivery, Notifier):
    """Posts an incident's thread to one channel through a durable outbox.

    Args:
        client: a slack-sdk WebClient (see :func:`make_client`).
        channel: the channel id every thread of this notifier goes to.
        state_dir: where the outbox file lives (shared across runs and restarts).
        record: appends to the incident's evidence trail (called from a thread).
        redactor: the last line of defence against secrets in messages.
        slack_users: person name -> Slack user id, for mentions.
        retry_base_s / retry_max_s: backoff of the background retries.
        background: start the delivery thread (False only for tests of flush()).
    """

    def __init__(
        self,
        client: WebClient,
        *,
        channel: str,
        state_dir: Path,
        record: RecordFn,
        redactor: Redactor,
        slack_users: dict[str, str] | None = None,
        retry_base_s: float = 2.0,
        retry_max_s: float = 300.0,
        background: bool = True,
    ) -> None:
        self.client = client
        self.channel = channel
        self.outbox = Outbox(state_dir)
        self._record = record
        self._redactor = redactor
        self._slack_users = dict(slack_users or {})
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._incidents: set[str] = set()
        self._deliver_lock = threading.Lock()
        self._notify_lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        if background:
            self._worker = threading.Thread(target=self._run, name="slack-outbox", daemon=True)
            self._worker.start()

    # -- Notifier ----------------------------------------------------------

    @_never_raises
    def incident_opened(
        self,
        incident_id: str,
        target: str,
        severity: str,
        trigger: str,
        initiator: str,
        playbook: str,
    ) -> None:
        existing = self.outbox.thread(incident_id)
        ctx = existing[1] if existing else self._new_context(incident_id)
        ctx.update(
            target=target,
            severity=severity,
            trigger=trigger,
            initiator=initiator,
            playbook=playbook,
        )
        if existing and self.outbox.has_key(incident_id, OPENER_KEY):
            # A resumed run: same thread, refreshed status line, no second opener.
            ctx["status"] = "Resumed"
            self._save(incident_id, ctx)
            self._update_opener(incident_id, ctx)
            self._post(incident_id, "run_resumed", initiator=initiator)
        else:
            ctx["status"] = "Open: starting"
            self._open_thread(incident_id, ctx)
        self._kick()

    @_never_raises
    def step_started(self, incident_id: str, step: str) -> None:
        ctx = self._context(incident_id)
        ctx["steps"][step] = {"state": "running"}
        ctx["status"] = f"Running {step}"
        self._save(incident_id, ctx)
        self._post(incident_id, "step_started", step=step)
        self._update_opener(incident_id, ctx)
        self._kick()

    @_never_raises
    def step_finished(
        self, incident_id: str, step: str, outcome: str, duration_s: float, detail: str = ""
    ) -> None:
        ctx = self._context(incident_id)
        ctx["steps"][step] = {"state": outcome, "duration_s": float(duration_s)}
        ctx["status"] = f"{step} {outcome}"
        self._save(incident_id, ctx)
        self._post(
            incident_id,
            "step_finished",
            step=step,
            outcome=outcome,
            duration_s=float(duration_s),
            detail=detail,
        )
        self._update_opener(incident_id, ctx)
        self._kick()

    @_never_raises
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
        ctx = self._context(incident_id)
        gate = {
            "key": f"approval:{step}:{plan_hash}",
            "plan_hash": plan_hash,
            "plan_summary": json.loads(json.dumps(dict(plan_summary), default=str)),
            "group": group,
            "required": int(required),
            "lines": [decision_line(a, "approve") for a in approvals_so_far],
            "approvals": list(approvals_so_far),
            "state": "waiting",
            "timeout_s": float(timeout_s),
        }
        previous = ctx["gates"].get(step)
        posted = self.outbox.target(incident_id, gate["key"])
        # The same plan asked again (a new pause round, a resumed run): refresh the
        # message that already carries its buttons instead of posting another one.
        again = (
            previous is not None
            and previous.get("key") == gate["key"]
            and previous.get("state") == "waiting"
            and posted is not None
            and posted.status in ("pending", "sent")
        )
        if again:
            gate["lines"] = previous["lines"]
        elif previous is not None and previous.get("state") == "waiting":
            # The plan changed: the old request's buttons would only be refused
            # (stale plan hash), so they go and the message points to the new one.
            previous["state"] = "superseded"
            self._update_approval(incident_id, step, previous)
        ctx["gates"][step] = gate
        ctx["status"] = f"Waiting for approval of {step} ({len(approvals_so_far)}/{required})"
        self._save(incident_id, ctx)
        self._enqueue(
            incident_id,
            op="update" if again else "post",
            key=None if again else gate["key"],
            target_key=gate["key"] if again else None,
            in_thread=True,
            payload=self._approval_message(incident_id, step, gate),
        )
        self._update_opener(incident_id, ctx)
        self._kick()

    @_never_raises
    def approval_decided(
        self, incident_id: str, step: str, approver: str, decision: str, remaining: int
    ) -> None:
        ctx = self._context(incident_id)
        gate = ctx["gates"].get(step)
        self._post(
            incident_id,
            "approval_decided",
            step=step,
            approver=approver,
            decision=decision,
            remaining=int(remaining),
        )
        if gate is not None:
            gate["lines"].append(decision_line(approver, decision))
            if decision == "approve":
                gate["approvals"].append(approver)
            if decision == "reject":
                gate["state"] = "rejected"
            elif remaining <= 0:
                gate["state"] = "approved"
            gate["remaining"] = int(remaining)
            self._update_approval(incident_id, step, gate)
        ctx["status"] = (
            f"{step} rejected by {approver}"
            if decision == "reject"
            else f"{step} approved"
            if remaining <= 0
            else f"Waiting for approval of {step} ({remaining} more needed)"
        )
        self._save(incident_id, ctx)
        self._update_opener(incident_id, ctx)
        self._kick()

    @_never_raises
    def escalated(
        self,
        incident_id: str,
        step: str,
        secondary_group: str,
        members: list[str],
        timeout_s: float | None = None,
    ) -> None:
        mentions = [
            f"<@{self._slack_users[m]}>" if m in self._slack_users else mrkdwn(m) for m in members
        ]
        self._context(incident_id)
        self._post(
            incident_id,
            "escalated",
            step=step,
            group=secondary_group,
            mentions=mentions,
            timeout_s=timeout_s,
        )
        self._kick()

    @_never_raises
    def gate_timed_out(self, incident_id: str, step: str) -> None:
        ctx = self._context(incident_id)
        gate = ctx["gates"].get(step)
        self._post(incident_id, "gate_timed_out", step=step)
        if gate is not None:
            gate["state"] = "timed_out"
            self._update_approval(incident_id, step, gate)
        ctx["status"] = f"{step}: approval timed out, rejected"
        self._save(incident_id, ctx)
        self._update_opener(incident_id, ctx)
        self._kick()

    @_never_raises
    def incident_closed(self, incident_id: str, status: str, summary: str) -> None:
        ctx = self._context(incident_id)
        ctx["status"] = f"Closed: {status}"
        ctx["closed"] = True
        self._save(incident_id, ctx)
        self._post(incident_id, "incident_closed", status=status, summary=summary)
        self._update_opener(incident_id, ctx)
        self._kick()

    def adopt(self, incident_ids: set[str]) -> None:
        """Takes over delivery of these incidents' queued messages (threads whose run
        ended with messages still in the outbox); the background thread starts now."""
        self._incidents.update(incident_ids)
        self._kick()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Delivers every queued message of this notifier's incidents now, ignoring
        backoff; returns True when none is left. Never raises."""
        try:
            deadline = time.monotonic() + timeout_s
            if not self._deliver_lock.acquire(timeout=timeout_s):
                return False
            try:
                self._deliver_locked(force=True, deadline=deadline)
            finally:
                self._deliver_lock.release()
            return not self.outbox.pending(self._incidents)
        except Exception as exc:  # flush is called from steps: it must not raise
            self._safe_record(
                "notification.failed", {"stage": "flush", "error": type(exc).__name__}
            )
            return False

    def close(self) -> None:
        """Stops the background thread; undelivered messages stay in the outbox."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=5)
            if self._worker.is_alive():
                return  # mid-request: it exits on its own; keep the database open
        self.outbox.close()

    # -- context and queueing --------------------------------------------

    def _new_context(self, incident_id: str) -> dict[str, Any]:
        return {
            "incident_id": incident_id,
            "target": "",
            "severity": "",
            "trigger": "",
            "initiator": "",
            "playbook": "",
            "status": "Open",
            "steps": {},
            "gates": {},
            "closed": False,
        }

    def _context(self, incident_id: str) -> dict[str, Any]:
        """The thread's context; opens a thread if this incident never had one
        (a notification must always land somewhere)."""
        self._incidents.add(incident_id)
        existing = self.outbox.thread(incident_id)
        if existing:
            return existing[1]
        ctx = self._new_context(incident_id)
        self._open_thread(incident_id, ctx)
        return ctx

    def _update_approval(self, incident_id: str, step: str, gate: dict[str, Any]) -> None:
        """Queues an edit of ``step``'s approval request to show ``gate`` as it is now."""
        self._enqueue(
            incident_id,
            op="update",
            target_key=gate["key"],
            payload=self._approval_message(incident_id, step, gate),
        )

    def _open_thread(self, incident_id: str, ctx: dict[str, Any]) -> None:
        """Saves the thread's context and queues its opening message (the thread's
        parent, outside the thread)."""
        self._save(incident_id, ctx)
        self._enqueue(
            incident_id,
            op="post",
            key=OPENER_KEY,
            in_thread=False,
            payload=self._message("incident_opened", **ctx),
        )

    def _save(self, incident_id: str, ctx: dict[str, Any]) -> None:
        self._incidents.add(incident_id)
        self.outbox.save_thread(incident_id, self.channel, ctx)

    def _message(self, template: str, **context: Any) -> dict[str, Any]:
        message = render(template, **context)
        return self._redactor.data(message)

    def _approval_message(
        self, incident_id: str, step: str, gate: dict[str, Any]
    ) -> dict[str, Any]:
        remaining = gate.get("remaining", gate["required"] - len(gate["approvals"]))
        return self._message(
            "approval_request",
            incident_id=incident_id,
            step=step,
            gate=gate,
            waiting=gate["state"] == "waiting",
            value=button_value(incident_id, step, gate["plan_hash"]),
            status_line=approval_status_line(gate["state"], remaining),
            approve_action=APPROVE_ACTION,
            reject_action=REJECT_ACTION,
            decisions_block_id=DECISIONS_BLOCK,
            actions_block_id=ACTIONS_BLOCK,
        )

    def _post(self, incident_id: str, template: str, **context: Any) -> None:
        self._enqueue(
            incident_id,
            op="post",
            in_thread=True,
            payload=self._message(template, incident_id=incident_id, **context),
        )

    def _update_opener(self, incident_id: str, ctx: dict[str, Any]) -> None:
        self._enqueue(
            incident_id,
            op="update",
            target_key=OPENER_KEY,
            payload=self._message("incident_opened", **ctx),
        )

    def _enqueue(self, incident_id: str, **kwargs: Any) -> None:
        self._incidents.add(incident_id)
        self.outbox.enqueue(incident_id, channel=self.channel, **kwargs)

    def _kick(self) -> None:
        """A new notification: retry what is queued now, regardless of backoff."""
        self._wake.set()
