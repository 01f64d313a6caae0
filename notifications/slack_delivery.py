"""Delivery of the Slack outbox: a background thread (and ``flush``) sends queued
messages oldest first, keeps each thread in order, backs off on failures and
records every failed or late delivery in the incident's trail (ids, kinds and
error codes only — never bodies)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from notifications.base import RecordFn
from notifications.outbox import OPENER_KEY, Outbox, OutboxMessage

if TYPE_CHECKING:
    from core.redact import Redactor

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


class SlackDelivery:
    """The delivery half of :class:`notifications.slack.SlackNotifier`: what it
    needs from the notifier is set by its ``__init__``."""

    client: WebClient
    outbox: Outbox
    _incidents: set[str]
    _deliver_lock: threading.Lock
    _wake: threading.Event
    _stop: threading.Event
    _retry_base_s: float
    _retry_max_s: float
    _record: RecordFn
    _redactor: Redactor

    def _safe_record(self, kind: str, data: dict[str, Any]) -> None:
        # The trail's own failure must not fail a step either.
        with contextlib.suppress(Exception):
            self._record(kind, self._redactor.data(data))

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
