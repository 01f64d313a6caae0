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
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.error import URLError

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from core.errors import ConfigError, CredentialsError, UnknownTargetError
from notifications.base import Notifier, RecordFn
from notifications.outbox import OPENER_KEY, Outbox, OutboxMessage

if TYPE_CHECKING:
    from core.redact import Redactor

TEMPLATES_DIR = Path(__file__).parent / "templates"
SLACK_API_URL = "https://slack.com/api/"
APPROVE_ACTION = "mcp_ir_approve"
REJECT_ACTION = "mcp_ir_reject"
DECISIONS_BLOCK = "mcp_ir_decisions"
ACTIONS_BLOCK = "mcp_ir_actions"

# Slack error codes that will not change by retrying the same message: the
# message is set aside (``dead``), recorded, and the thread moves on.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_blocks_format",
        "too_many_attachments",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "invalid_arguments",
        "invalid_arg_name",
        "invalid_array_arg",
        "restricted_action",
    }
)

F = TypeVar("F", bound=Callable[..., Any])


# -- configuration ---------------------------------------------------------


def resolve_token(slack_cfg: Any) -> str:
    """The bot token, from the Prefect Secret block ``token_block`` or the
    environment variable named by ``token_env`` (never from the inventory itself).

    Raises:
        CredentialsError: naming the field, when the source is missing or empty.
    """
    if getattr(slack_cfg, "token_block", None):
        from prefect.blocks.system import Secret

        name = slack_cfg.token_block
        try:
            value = Secret.load(name).get()
        except ValueError as exc:
            raise CredentialsError(
                f"slack.token_block: cannot load Prefect Secret block {name!r}: {exc}"
            ) from None
        if not isinstance(value, str) or not value.strip():
            raise CredentialsError(f"slack.token_block: Secret block {name!r} is empty")
        return value.strip()
    env = getattr(slack_cfg, "token_env", None)
    if not env:
        raise CredentialsError("slack: set token_env (an environment variable) or token_block")
    value = os.environ.get(env, "").strip()
    if not value:
        raise CredentialsError(f"slack.token_env: environment variable {env} is not set or empty")
    return value


def resolve_signing_secret(slack_cfg: Any) -> str:
    """The signing secret from the environment variable ``signing_secret_env``.

    Raises:
        CredentialsError: naming the field when it is not configured or empty.
    """
    env = getattr(slack_cfg, "signing_secret_env", None)
    if not env:
        raise CredentialsError("slack.signing_secret_env: required for the interactions endpoint")
    value = os.environ.get(env, "").strip()
    if not value:
        raise CredentialsError(
            f"slack.signing_secret_env: environment variable {env} is not set or empty"
        )
    return value


def resolve_channel(inventory: Any, target_name: str) -> str:
    """The target's ``slack_channel``, else ``slack.default_channel``.

    Raises:
        UnknownTargetError: the target is not in the inventory.
        ConfigError: neither field is set.
    """
    targets = getattr(inventory, "targets", {})
    if target_name not in targets:
        raise UnknownTargetError(f"unknown target {target_name!r}")
    channel = getattr(targets[target_name], "slack_channel", None)
    channel = channel or getattr(inventory.slack, "default_channel", None)
    if not channel:
        raise ConfigError(
            f"target '{target_name}': field 'slack_channel': not set, and "
            "slack.default_channel is empty"
        )
    return str(channel)


def make_client(token: str, *, base_url: str | None = None, timeout: int = 10) -> WebClient:
    """A WebClient with slack-sdk's retry handlers: 429 (honours Retry-After),
    connection errors and 500/503, each retried a bounded number of times."""
    return WebClient(
        token=token,
        base_url=base_url or SLACK_API_URL,
        timeout=timeout,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=2),
            ConnectionErrorRetryHandler(max_retry_count=1),
            ServerErrorRetryHandler(max_retry_count=1),
        ],
    )


# -- rendering -------------------------------------------------------------


def _mrkdwn(value: Any) -> str:
    """Escapes the three characters Slack's mrkdwn gives meaning to."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(value: Any, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _duration(seconds: Any) -> str:
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    minutes, sec = divmod(int(round(s)), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


@functools.cache
def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=False,  # noqa: S701 (JSON output; values go through tojson)
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["mrkdwn"] = _mrkdwn
    env.filters["clip"] = _clip
    env.filters["duration"] = _duration
    return env


def render(template: str, **context: Any) -> dict[str, Any]:
    """Renders ``slack_<template>.j2`` into a ``{"text", "blocks"}`` message."""
    out = _env().get_template(f"slack_{template}.j2").render(**context)
    message = json.loads(out)
    if not isinstance(message, dict) or "text" not in message:
        raise ValueError(f"template slack_{template}.j2 did not render a message")
    return message


def button_value(incident_id: str, step: str, plan_hash: str) -> str:
    """What an Approve / Reject button carries back: the incident, step and plan hash."""
    return json.dumps({"incident_id": incident_id, "step": step, "plan_hash": plan_hash})


def decisions_block(lines: list[str], status: str) -> dict[str, Any]:
    """The context block under an approval request: who decided, what is still needed."""
    return render("approval_status", lines=lines, status=status)["blocks"][0]


def approval_status_line(state: str, remaining: int) -> str:
    """The one-line state of a gate as shown on its approval message."""
    if state == "rejected":
        return ":no_entry: Rejected: the step will not run."
    if state == "timed_out":
        return ":hourglass: Timed out without quorum: the gate rejected the step."
    if state == "superseded":
        return ":arrows_counterclockwise: Superseded: the plan changed; see the newer request."
    if state == "approved" or remaining <= 0:
        return ":white_check_mark: Approved: the step proceeds."
    return (
        f":hourglass_flowing_sand: {remaining} more approval{'s' if remaining != 1 else ''} needed."
    )


def decision_line(approver: str, decision: str, source: str = "") -> str:
    """One line of the decisions list: ``alice approved (slack)``."""
    verb = "approved" if decision == "approve" else "rejected"
    icon = ":white_check_mark:" if decision == "approve" else ":no_entry:"
    via = f" via {source}" if source else ""
    return f"{icon} {_mrkdwn(approver)} {verb}{via}"


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


class SlackNotifier(Notifier):
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
            self._save(incident_id, ctx)
            self._enqueue(
                incident_id,
                op="post",
                key=OPENER_KEY,
                in_thread=False,
                payload=self._message("incident_opened", **ctx),
            )
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
            self._enqueue(
                incident_id,
                op="update",
                target_key=previous["key"],
                payload=self._approval_message(incident_id, step, previous),
            )
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
            self._enqueue(
                incident_id,
                op="update",
                target_key=gate["key"],
                payload=self._approval_message(incident_id, step, gate),
            )
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
            f"<@{self._slack_users[m]}>" if m in self._slack_users else _mrkdwn(m) for m in members
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
            self._enqueue(
                incident_id,
                op="update",
                target_key=gate["key"],
                payload=self._approval_message(incident_id, step, gate),
            )
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
        self._save(incident_id, ctx)
        self._enqueue(
            incident_id,
            op="post",
            key=OPENER_KEY,
            in_thread=False,
            payload=self._message("incident_opened", **ctx),
        )
        return ctx

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

    def _safe_record(self, kind: str, data: dict[str, Any]) -> None:
        # The trail's own failure must not fail a step either.
        with contextlib.suppress(Exception):
            self._record(kind, self._redactor.data(data))

    # -- delivery ----------------------------------------------------------

    def _run(self) -> None:
        """Background delivery: on every notification at once, otherwise when the
        earliest backoff expires (checked at least every 30 s)."""
        while not self._stop.is_set():
            timeout = 30.0
            try:
                due = self.outbox.next_due(set(self._incidents))
                if due is not None:
                    timeout = min(30.0, max(0.05, due - time.time()))
            except Exception:  # noqa: S110 (database busy: try again later)
                pass
            woken = self._wake.wait(timeout)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                with self._deliver_lock:
                    self._deliver_locked(force=woken, deadline=None)
            except Exception as exc:  # the thread must survive anything
                self._safe_record(
                    "notification.failed", {"stage": "deliver", "error": type(exc).__name__}
                )

    def _deliver_locked(self, *, force: bool, deadline: float | None) -> None:
        """One pass over the queue, oldest first. A message waits while an earlier
        message of the same incident is undelivered (order within a thread), and
        the pass stops at the first transport failure (Slack is unreachable)."""
        blocked: set[str] = set()
        now = time.time()
        for msg in self.outbox.pending(set(self._incidents)):
            if self._stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                return
            if msg.incident_id in blocked:
                continue
            if not force and msg.next_attempt_at > now:
                blocked.add(msg.incident_id)
                continue
            if msg.op == "update" and self.outbox.newer_update_pending(msg):
                self.outbox.mark(msg.id, "superseded")
                continue
            call = self._call_for(msg)
            if call is None:
                blocked.add(msg.incident_id)
                continue
            outcome = self._send(msg, call)
            if outcome == "unreachable":
                return
            if outcome == "retry":
                blocked.add(msg.incident_id)

    def _call_for(self, msg: OutboxMessage) -> dict[str, Any] | None:
        """The API arguments for ``msg``; None while it must wait for its parent."""
        args: dict[str, Any] = {
            "channel": msg.channel,
            "text": msg.payload["text"],
            "blocks": msg.payload.get("blocks"),
        }
        if msg.op == "update":
            target = self.outbox.target(msg.incident_id, msg.target_key or "")
            if target is not None and target.status == "pending":
                return None
            if target is None or target.status != "sent" or not target.ts:
                self.outbox.mark(msg.id, "dead", "target message was never delivered")
                self._failed(msg, "chat.update", "target_not_delivered", attempt=0, permanent=True)
                return {}
            return {**args, "ts": target.ts}
        if msg.in_thread:
            opener = self.outbox.target(msg.incident_id, OPENER_KEY)
            if opener is not None and opener.status == "pending":
                return None
            if opener is not None and opener.status == "sent":
                args["thread_ts"] = opener.ts
        args["unfurl_links"] = False
        args["unfurl_media"] = False
        return args

    def _send(self, msg: OutboxMessage, args: dict[str, Any]) -> str:
        """Sends one message: ``sent``, ``dead``, ``retry`` or ``unreachable``."""
        if not args:  # an update whose target is gone (already recorded)
            return "dead"
        method = "chat.update" if msg.op == "update" else "chat.postMessage"
        retry_after = 0.0
        try:
            if msg.op == "update":
                resp = self.client.chat_update(**args)
            else:
                resp = self.client.chat_postMessage(**args)
        except SlackApiError as exc:
            status = exc.response.status_code
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            code = str(data.get("error", ""))
            # Slack's own error codes are snake_case words; anything else (an HTML
            # or plain-text 5xx page) is reported by its status only.
            if not re.fullmatch(r"[a-z_]{2,60}", code):
                code = ""
            error = code if status == 200 else f"http_{status}" + (f":{code}" if code else "")
            if status == 429:
                retry_after = _retry_after(exc.response.headers)
            permanent = status == 200 and error in PERMANENT_ERRORS
            if permanent:
                self.outbox.mark(msg.id, "dead", error)
                self._failed(msg, method, error, attempt=msg.attempts + 1, permanent=True)
                return "dead"
            self._retry_later(msg, method, error, retry_after)
            return "unreachable" if status >= 500 else "retry"
        except Exception as exc:  # transport: refused, reset, timeout, DNS
            reason = exc.reason if isinstance(exc, URLError) else exc
            self._retry_later(msg, method, f"{type(exc).__name__}: {reason}"[:200], 0.0)
            return "unreachable"
        ts = resp.get("ts")
        # Read before mark_sent: a message held behind a failing one is late too.
        late = msg.attempts > 0 or self.outbox.held_back(msg)
        self.outbox.mark_sent(msg.id, str(ts) if ts else None)
        if late:
            self._safe_record(
                "notification.delivered_late",
                {
                    "incident_id": msg.incident_id,
                    "message_id": msg.id,
                    "kind": msg.kind,
                    "method": method,
                    "attempts": msg.attempts + 1,
                    "queued_s": round(time.time() - msg.created_at, 3),
                },
            )
        return "sent"

    def _retry_later(self, msg: OutboxMessage, method: str, error: str, retry_after: float) -> None:
        backoff = min(self._retry_max_s, self._retry_base_s * 2 ** min(msg.attempts, 16))
        delay = max(backoff, retry_after)
        attempts = self.outbox.mark_failed(msg.id, error, time.time() + delay)
        self._failed(msg, method, error, attempt=attempts, permanent=False, retry_in_s=delay)

    def _failed(
        self,
        msg: OutboxMessage,
        method: str,
        error: str,
        *,
        attempt: int,
        permanent: bool,
        retry_in_s: float | None = None,
    ) -> None:
        data: dict[str, Any] = {
            "incident_id": msg.incident_id,
            "message_id": msg.id,
            "kind": msg.kind,
            "method": method,
            "error": error,
            "attempt": attempt,
            "permanent": permanent,
        }
        if retry_in_s is not None:
            data["retry_in_s"] = round(retry_in_s, 3)
        self._safe_record("notification.failed", data)


def _retry_after(headers: Any) -> float:
    for key, value in dict(headers or {}).items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return float(raw)
            except (TypeError, ValueError):
                return 1.0
    return 1.0
