"""``POST /slack/interactions``: Approve / Reject clicks from Slack.

Every request is authenticated before anything is read from it: the Slack
signature (``X-Slack-Signature`` over ``v0:{timestamp}:{body}`` with the signing
secret, checked by slack-sdk's :class:`~slack_sdk.signature.SignatureVerifier`)
and a timestamp within 5 minutes. Missing headers, a forged signature or a replay
answer 401, nothing is decided, and the attempt is appended to
``<evidence>/_security/slack-rejected.jsonl`` (reason, source address, body
length and digest — never the body).

A verified click is answered 200 at once (Slack wants an answer within 3 s) and
handled right after the response: the Slack user is mapped to a person of the
inventory (``people.<name>.slack_user_id``); an unknown user gets an ephemeral
explanation and nothing changes. Otherwise the decision goes to
:func:`runbook.approvals.submit_decision` with ``source="slack"`` — the one place
the gate rules live — countersigned by this service: the statement (see
:mod:`runbook.proofs`) carries the verified request's evidence (team, user, action
time, SHA-256 of the request body) and is signed with the service's own SSH key
(``slack.receiver_key_file``; its public half, ``slack.receiver_public_key``, is
what the flow and ``mcp-ir verify`` check). Without that key a click is refused
and recorded: an unproven decision would not count anyway. A refusal is explained to the clicker ephemerally; an
accepted decision updates the approval message to show who decided and what is
still needed.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.errors import ApprovalRefused, McpIrError
from core.redact import Redactor
from notifications.plugins import config_of
from notifications.slack import (
    ACTIONS_BLOCK,
    APPROVE_ACTION,
    DECISIONS_BLOCK,
    REJECT_ACTION,
    approval_status_line,
    decision_line,
    decisions_block,
    make_client,
    resolve_signing_secret,
    resolve_token,
)

SECURITY_LOG = Path("_security") / "slack-rejected.jsonl"
MAX_BODY = 64 * 1024  # Slack's interaction payloads are a few KB
TOLERANCE_S = 5 * 60
_ACTIONS = {APPROVE_ACTION: "approve", REJECT_ACTION: "reject"}


class SlackInteractions:
    """Holds what every request needs, built once when the routes are created."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        inventory = settings.inventory()
        cfg = config_of(inventory, "slack")
        self.verifier = SignatureVerifier(resolve_signing_secret(cfg))
        self.client: WebClient = make_client(resolve_token(cfg), base_url=cfg.base_url)
        self.people = {
            p.slack_user_id: name
            for name, p in inventory.people.items()
            if getattr(p, "slack_user_id", None)
        }
        self.log_path = Path(settings.evidence_dir) / SECURITY_LOG
        self._log_lock = threading.Lock()

    # -- security log -----------------------------------------------------

    def reject(self, request: Request, body: bytes, reason: str, **extra: Any) -> None:
        """Appends one rejected attempt to the security log (no body, no secret)."""
        entry = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "reason": reason,
            "remote": request.client.host if request.client else None,
            "timestamp_header": request.headers.get("x-slack-request-timestamp"),
            "signature_present": "x-slack-signature" in request.headers,
            "body_bytes": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            **extra,
        }
        with self._log_lock:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, sort_keys=True) + "\n")

    def verify(self, request: Request, body: bytes) -> str | None:
        """Why the request is not from Slack, or None when its signature is valid."""
        ts = request.headers.get("x-slack-request-timestamp")
        sig = request.headers.get("x-slack-signature")
        if not ts or not sig:
            return "missing_headers"
        try:
            ts_int = int(ts)
        except ValueError:
            return "bad_timestamp"
        if abs(time.time() - ts_int) > TOLERANCE_S:
            return "stale_timestamp"
        if not self.verifier.is_valid(body=body, timestamp=ts, signature=sig):
            return "bad_signature"
        return None

    # -- endpoint ---------------------------------------------------------

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            self.reject(request, body[:0], "body_too_large", body_length=len(body))
            return JSONResponse({"error": "request body too large"}, status_code=413)
        reason = self.verify(request, body)
        if reason is not None:
            self.reject(request, body, reason)
            return JSONResponse({"error": "invalid Slack signature"}, status_code=401)
        try:
            payload = _parse_payload(body)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if payload.get("type") != "block_actions":
            return Response(status_code=200)
        clicks = [a for a in payload.get("actions", []) if a.get("action_id") in _ACTIONS]
        if not clicks:
            return Response(status_code=200)
        request_sha256 = hashlib.sha256(body).hexdigest()
        return Response(
            status_code=200, background=BackgroundTask(self.handle, payload, request_sha256)
        )

    # -- the decision (runs after the 200) --------------------------------

    def countersigner(
        self, payload: dict[str, Any], action: dict[str, Any], request_sha256: str, **what: str
    ) -> Any:
        """A ``signer`` for submit_decision: this service's signature over the statement
        with the verified request's evidence."""
        from runbook import proofs, signing

        cfg = config_of(self.settings.inventory(), "slack")
        evidence = {
            "team": str((payload.get("team") or {}).get("id", "")),
            "user": str((payload.get("user") or {}).get("id", "")),
            "action_ts": str(action.get("action_ts", "")),
            "request_sha256": request_sha256,
        }

        def sign(plan_hash: str) -> str:
            if cfg is None or cfg.receiver_key_file is None or not cfg.receiver_public_key:
                raise ApprovalRefused(
                    "this Slack receiver has no slack.receiver_key_file/receiver_public_key "
                    "to countersign decisions, so a Slack click cannot count"
                )
            statement = proofs.make_statement(
                plan_hash=plan_hash, channel="slack", slack=evidence, **what
            )
            try:
                signature = signing.sign(
                    signing.canonical_json(statement), key_path=str(cfg.receiver_key_file)
                )
            except McpIrError as exc:
                raise ApprovalRefused(
                    f"the Slack receiver could not countersign: {exc.detail}"
                ) from None
            return proofs.encode(proofs.proof_document(statement, signature)).decode()

        return sign

    def handle(self, payload: dict[str, Any], request_sha256: str = "") -> None:
        """Maps the clicker to a person and submits the decision to the gate, with
        this service's countersignature over the verified request's evidence."""
        action = next(a for a in payload["actions"] if a.get("action_id") in _ACTIONS)
        decision = _ACTIONS[action["action_id"]]
        user_id = str((payload.get("user") or {}).get("id", ""))
        container = payload.get("container") or {}
        channel = str((payload.get("channel") or {}).get("id") or container.get("channel_id", ""))
        thread_ts = container.get("thread_ts")
        try:
            value = json.loads(action.get("value") or "")
            incident_id, step = str(value["incident_id"]), str(value["step"])
            plan_hash = str(value["plan_hash"])
        except (ValueError, KeyError, TypeError):
            self._ephemeral(channel, user_id, thread_ts, "This button carries no valid decision.")
            return
        person = self.people.get(user_id)
        if person is None:
            self._record_unknown(user_id, incident_id, step, decision)
            self._ephemeral(
                channel,
                user_id,
                thread_ts,
                f":no_entry: Your Slack account ({user_id}) is not an approver in the "
                f"mcp-ir inventory, so your {decision} of `{step}` was not counted. "
                "Nothing changed.",
            )
            return
        try:
            from runbook.approvals import submit_decision

            result = submit_decision(
                self.settings,
                incident_id=incident_id,
                step=step,
                approver=person,
                decision=decision,
                comment="via Slack",
                plan_hash=plan_hash,
                source="slack",
                signer=self.countersigner(
                    payload,
                    action,
                    request_sha256,
                    incident=incident_id,
                    step=step,
                    decision=decision,
                    approver=person,
                ),
            )
        except ApprovalRefused as exc:
            self._ephemeral(
                channel,
                user_id,
                thread_ts,
                f":no_entry: Your {decision} of `{step}` was not accepted: {exc.detail} "
                "Nothing changed.",
            )
            return
        except McpIrError as exc:
            self._ephemeral(
                channel,
                user_id,
                thread_ts,
                f":warning: Could not record your decision: {exc.detail}",
            )
            return
        self.update_approval_message(payload, person, decision, result)

    def _record_unknown(self, user_id: str, incident_id: str, step: str, decision: str) -> None:
        entry = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "reason": "unknown_slack_user",
            "slack_user_id": user_id,
            "incident_id": incident_id,
            "step": step,
            "decision": decision,
        }
        with self._log_lock:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, sort_keys=True) + "\n")

    def _ephemeral(self, channel: str, user: str, thread_ts: str | None, text: str) -> None:
        # Gate details never hold secrets; the pattern redactor is a last defence.
        kwargs: dict[str, Any] = {"channel": channel, "user": user, "text": Redactor().text(text)}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        try:
            self.client.chat_postEphemeral(**kwargs)
        except (SlackApiError, OSError):
            # The decision itself is unaffected; the clicker sees no explanation.
            return

    def update_approval_message(
        self, payload: dict[str, Any], person: str, decision: str, result: Any
    ) -> None:
        """Rewrites the approval message: the decisions list gains a line, the
        status says what is still needed, and the buttons go once the gate is done."""
        message = payload.get("message") or {}
        container = payload.get("container") or {}
        channel = str((payload.get("channel") or {}).get("id") or container.get("channel_id", ""))
        ts = container.get("message_ts") or message.get("ts")
        remaining = int(getattr(result, "remaining", 0))
        final = decision == "reject" or remaining <= 0
        state = "rejected" if decision == "reject" else ("approved" if final else "waiting")
        old = next(
            (b for b in message.get("blocks", []) if b.get("block_id") == DECISIONS_BLOCK), None
        )
        lines: list[str] = []
        if old and len(old.get("elements", [])) > 1:
            lines = str(old["elements"][0].get("text", "")).split("\n")
        lines.append(decision_line(person, decision, "Slack"))
        new_block = decisions_block(lines, approval_status_line(state, remaining))
        blocks: list[dict[str, Any]] = []
        for block in message.get("blocks", []):
            if block.get("block_id") == DECISIONS_BLOCK:
                continue
            if block.get("block_id") == ACTIONS_BLOCK:
                blocks.append(new_block)
                if not final:
                    blocks.append(block)
                new_block = {}
                continue
            blocks.append(block)
        if new_block:
            blocks.append(new_block)
        text = f"{message.get('text', 'Approval')} ({approval_status_line(state, remaining)})"
        try:
            self.client.chat_update(channel=channel, ts=ts, text=text[:3000], blocks=blocks)
        except (SlackApiError, OSError):
            # The decision is recorded in the trail; the notifier's own update of the
            # same message (approval_decided) will show it when Slack is reachable.
            return


def _parse_payload(body: bytes) -> dict[str, Any]:
    """The JSON in the form field ``payload`` (how Slack posts interactions)."""
    from urllib.parse import parse_qs

    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("body must be form-encoded with a 'payload' field") from None
    raw = form.get("payload")
    if not raw:
        raise ValueError("field 'payload' is missing")
    try:
        payload = json.loads(raw[0])
    except ValueError:
        raise ValueError("field 'payload' is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ValueError("field 'payload' must be a JSON object")
    return payload


def create_slack_routes(settings: Any) -> list[Route]:
    """The route(s) the intake app mounts. Empty when the inventory has no
    ``slack`` section (the endpoint then does not exist).

    Raises:
        ConfigError: the inventory is invalid.
        CredentialsError: the signing secret or token is not configured (named).
    """
    if config_of(settings.inventory(), "slack") is None:
        return []
    handler = SlackInteractions(settings)
    return [Route("/slack/interactions", handler.endpoint, methods=["POST"])]


def create_app(settings: Any) -> Starlette:
    """A standalone app serving only ``POST /slack/interactions``."""
    return Starlette(routes=create_slack_routes(settings))
