"""A local Slack Web API for tests and the demo, driven by the real ``slack-sdk``.

It follows the documented semantics of the methods mcp-ir calls (``auth.test``,
``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``, ``users.info``,
``conversations.info``): every method is reachable with POST (JSON or
form-encoded body) or GET (query string), the token comes from
``Authorization: Bearer`` (or a ``token`` form/query field), and failures use
Slack's shapes — HTTP 200 with ``{"ok": false, "error": "channel_not_found"}``,
``not_authed`` without a token, ``invalid_auth`` with a wrong one, and HTTP 429
with ``Retry-After`` and ``{"ok": false, "error": "ratelimited"}`` when rate
limited. Blocks are checked against the Block Kit limits Slack enforces
(``invalid_blocks``), so a message Slack would refuse is refused here too.

Tests inject faults through ``/_sandbox/*`` (or the :class:`SlackSandbox` methods
when they hold the object): a number of 429 answers, an outage (HTTP 503 with
Slack's HTML-free error body) for a period, and read back everything received
from ``/_sandbox/messages``.

Interaction helpers build a ``block_actions`` payload the way Slack sends it when
a button is clicked, and sign it as Slack does (``v0:{ts}:{body}``, HMAC-SHA256
with the signing secret).

Run standalone for the demo: ``python -m sandbox.slack_api --port 8091``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.bodies import json_object

DEFAULT_TOKEN = "xoxb-sandbox-0000000000-canary"  # noqa: S105 (sandbox credential)
TEAM_ID = "T0SANDBOX"
BOT_USER_ID = "U0MCPIRBOT"
BOT_ID = "B0MCPIRBOT"

# Block Kit limits Slack documents and enforces (invalid_blocks otherwise).
MAX_BLOCKS = 50
MAX_TEXT = 40000
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ID = 255
MAX_ACTION_ELEMENTS = 25
MAX_CONTEXT_ELEMENTS = 10
KNOWN_BLOCKS = {"section", "header", "context", "actions", "divider", "rich_text", "image"}


@dataclass
class Channel:
    id: str
    name: str
    members: set[str] = field(default_factory=set)
    is_archived: bool = False


@dataclass
class User:
    id: str
    name: str
    real_name: str = ""
    deleted: bool = False
    is_bot: bool = False


class SlackSandbox:
    """State of the fake workspace: channels, users, tokens, messages and faults."""

    def __init__(self, *, tokens: tuple[str, ...] = (DEFAULT_TOKEN,)) -> None:
        self.lock = threading.Lock()
        self.tokens = set(tokens)
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, User] = {}
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.log: list[dict[str, Any]] = []
        self._ts = itertools.count(1)
        self._ratelimit_left = 0
        self._ratelimit_retry_after = 1
        self._ratelimit_methods: set[str] | None = None
        self._down_until = 0.0
        self._down_status = 503
        self.ratelimited: list[dict[str, Any]] = []  # 429s answered (method, time)
        self.outage_hits = 0

    # -- workspace setup ---------------------------------------------------

    def add_channel(self, channel_id: str, name: str, members: tuple[str, ...] = ()) -> None:
        with self.lock:
            self.channels[channel_id] = Channel(channel_id, name, set(members))

    def add_user(self, user_id: str, name: str, real_name: str = "") -> None:
        with self.lock:
            self.users[user_id] = User(user_id, name, real_name or name)
            for ch in self.channels.values():
                ch.members.add(user_id)

    def reset(self) -> None:
        """Forgets messages, received requests and faults (channels and users stay)."""
        with self.lock:
            self.messages.clear()
            self.log.clear()
            self._ratelimit_left = 0
            self._ratelimit_methods = None
            self._down_until = 0.0
            self.ratelimited.clear()
            self.outage_hits = 0

    # -- faults ------------------------------------------------------------

    def rate_limit(self, count: int, retry_after: int = 1, methods: tuple[str, ...] = ()) -> None:
        """The next ``count`` calls (of ``methods``, or any) answer 429 + Retry-After."""
        with self.lock:
            self._ratelimit_left = count
            self._ratelimit_retry_after = retry_after
            self._ratelimit_methods = set(methods) or None

    def outage(self, seconds: float, status: int = 503) -> None:
        """Every API call answers ``status`` for ``seconds`` (``0`` ends it)."""
        with self.lock:
            self._down_until = time.monotonic() + seconds if seconds > 0 else 0.0
            self._down_status = status

    # -- records -----------------------------------------------------------

    def received(self, method: str | None = None) -> list[dict[str, Any]]:
        """Requests received (after auth), optionally for one method, oldest first."""
        with self.lock:
            return [dict(r) for r in self.log if method is None or r["method"] == method]

    def clear_received(self) -> None:
        """Forgets the received-request log only (messages stay)."""
        with self.lock:
            self.log.clear()

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        """Current state of every message in a channel, in posting order."""
        with self.lock:
            msgs = [m for (ch, _), m in self.messages.items() if ch == channel]
        return sorted(msgs, key=lambda m: float(m["ts"]))

    def next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"


def _error(error: str, status: int = 200, **extra: Any) -> JSONResponse:
    return JSONResponse({"ok": False, "error": error, **extra}, status_code=status)


def _text_of(obj: Any) -> str:
    return obj.get("text", "") if isinstance(obj, dict) else ""


def _check_text_object(obj: Any, limit: int, *, plain_only: bool = False) -> str | None:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return "must be a text object"
    if plain_only and obj["type"] != "plain_text":
        return "must be plain_text"
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return "text must be a non-empty string"
    if len(text) > limit:
        return f"must be less than {limit + 1} characters"
    return None


def validate_blocks(blocks: Any) -> str | None:
    """Why Slack would refuse these blocks (``invalid_blocks``), or None."""
    if not isinstance(blocks, list):
        return "blocks must be an array"
    if len(blocks) > MAX_BLOCKS:
        return f"no more than {MAX_BLOCKS} items allowed"
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"[json-pointer:/blocks/{i}"
        if not isinstance(block, dict) or block.get("type") not in KNOWN_BLOCKS:
            return f"unsupported type {where}/type]"
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or len(block_id) > MAX_ID:
                return f"invalid block_id {where}/block_id]"
            if block_id in seen_ids:
                return f"duplicate block_id {where}/block_id]"
            seen_ids.add(block_id)
        kind = block["type"]
        if kind == "header":
            problem = _check_text_object(block.get("text"), MAX_HEADER_TEXT, plain_only=True)
            if problem:
                return f"{problem} {where}/text]"
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                return f"must provide text or fields {where}]"
            if "text" in block:
                problem = _check_text_object(block["text"], MAX_SECTION_TEXT)
                if problem:
                    return f"{problem} {where}/text]"
            for j, f in enumerate(block.get("fields", [])):
                problem = _check_text_object(f, 2000)
                if problem:
                    return f"{problem} {where}/fields/{j}]"
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= MAX_CONTEXT_ELEMENTS:
                return f"context needs 1..{MAX_CONTEXT_ELEMENTS} elements {where}/elements]"
            for j, el in enumerate(elements):
                problem = _check_text_object(el, MAX_SECTION_TEXT)
                if problem:
                    return f"{problem} {where}/elements/{j}]"
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= MAX_ACTION_ELEMENTS:
                return f"actions needs 1..{MAX_ACTION_ELEMENTS} elements {where}/elements]"
            action_ids: set[str] = set()
            for j, el in enumerate(elements):
                problem = _check_button(el)
                if problem:
                    return f"{problem} {where}/elements/{j}]"
                if el.get("action_id") in action_ids:
                    return f"duplicate action_id {where}/elements/{j}/action_id]"
                action_ids.add(el.get("action_id"))
    return None


def _check_button(el: Any) -> str | None:
    if not isinstance(el, dict) or el.get("type") != "button":
        return "unsupported element type"
    problem = _check_text_object(el.get("text"), MAX_BUTTON_TEXT, plain_only=True)
    if problem:
        return problem
    action_id = el.get("action_id")
    if action_id is not None and (not isinstance(action_id, str) or len(action_id) > MAX_ID):
        return "invalid action_id"
    value = el.get("value")
    if value is not None and (not isinstance(value, str) or len(value) > MAX_BUTTON_VALUE):
        return f"value must be a string of at most {MAX_BUTTON_VALUE} characters"
    if el.get("style") not in (None, "primary", "danger"):
        return "style must be primary or danger"
    return None


def _invalid_json() -> Exception:
    return _BadRequest("invalid_json")


async def _params(request: Request) -> dict[str, Any]:
    """Arguments as slack-sdk sends them: query string, form body or JSON body."""
    params: dict[str, Any] = dict(request.query_params)
    ctype = request.headers.get("content-type", "")
    body = await request.body()
    if not body:
        return params
    if ctype.startswith("application/json"):
        params.update(json_object(body, _invalid_json, _invalid_json))
    elif ctype.startswith("application/x-www-form-urlencoded"):
        try:
            form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise _BadRequest("invalid_form_data") from None
        params.update(dict(form))
        # Form-encoded structured arguments arrive as JSON strings.
        for key in ("blocks", "attachments", "metadata"):
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    raise _BadRequest(f"invalid_{key}") from None
    elif not ctype:
        raise _BadRequest("missing_post_type")
    else:
        raise _BadRequest("invalid_post_type")
    return params


class _BadRequest(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def create_app(state: SlackSandbox | None = None) -> Starlette:
    """The ASGI app; ``app.state.slack`` is the :class:`SlackSandbox` behind it."""
    sb = state or SlackSandbox()

    def _token(request: Request, params: dict[str, Any]) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        tok = params.get("token")
        return tok if isinstance(tok, str) else None

    async def api(request: Request) -> Response:
        method = request.path_params["method"]
        with sb.lock:
            if sb._down_until and time.monotonic() < sb._down_until:
                sb.outage_hits += 1
                return Response("upstream unavailable", status_code=sb._down_status)
            limited = sb._ratelimit_left > 0 and (
                sb._ratelimit_methods is None or method in sb._ratelimit_methods
            )
            if limited:
                sb._ratelimit_left -= 1
                retry_after = sb._ratelimit_retry_after
                sb.ratelimited.append({"method": method, "at": time.time()})
        if limited:
            return JSONResponse(
                {"ok": False, "error": "ratelimited"},
                status_code=429,
                headers={"Retry-After": str(retry_after)},
            )
        try:
            params = await _params(request)
        except _BadRequest as exc:
            return _error(exc.error)
        token = _token(request, params)
        if not token:
            return _error("not_authed")
        if token not in sb.tokens:
            return _error("invalid_auth")
        handler = HANDLERS.get(method)
        if handler is None:
            return _error("unknown_method", req_method=method)
        with sb.lock:
            sb.log.append({"method": method, "params": params, "at": time.time()})
            return handler(sb, params)

    async def messages(request: Request) -> Response:
        method = request.query_params.get("method")
        return JSONResponse({"received": sb.received(method)})

    async def control(request: Request) -> Response:
        data = await request.json() if await request.body() else {}
        action = request.path_params["action"]
        if action == "ratelimit":
            sb.rate_limit(int(data.get("count", 1)), int(data.get("retry_after", 1)))
        elif action == "outage":
            sb.outage(float(data.get("seconds", 0)), int(data.get("status", 503)))
        elif action == "reset":
            sb.reset()
        else:
            return JSONResponse({"error": f"unknown control {action}"}, status_code=404)
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/api/{method}", api, methods=["GET", "POST"]),
            Route("/_sandbox/messages", messages, methods=["GET"]),
            Route("/_sandbox/{action}", control, methods=["POST"]),
        ]
    )
    app.state.slack = sb
    return app


# -- method handlers (called with the sandbox lock held) -------------------


def _channel(sb: SlackSandbox, params: dict[str, Any]) -> Channel | JSONResponse:
    channel_id = params.get("channel")
    if not channel_id:
        return _error("channel_not_found")
    ch = sb.channels.get(str(channel_id))
    if ch is None:
        return _error("channel_not_found")
    if ch.is_archived:
        return _error("is_archived")
    return ch


def _check_message_body(params: dict[str, Any]) -> JSONResponse | None:
    blocks = params.get("blocks")
    text = params.get("text")
    if not text and not blocks and not params.get("attachments"):
        return _error("no_text")
    if isinstance(text, str) and len(text) > MAX_TEXT:
        return _error("msg_too_long")
    if blocks is not None:
        problem = validate_blocks(blocks)
        if problem:
            return _error("invalid_blocks", errors=[problem])
    return None


def _auth_test(sb: SlackSandbox, params: dict[str, Any]) -> Response:
    return JSONResponse(
        {
            "ok": True,
            "url": "https://sandbox.slack.com/",
            "team": "mcp-ir sandbox",
            "user": "mcp-ir",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }
    )


def _post_message(sb: SlackSandbox, params: dict[str, Any]) -> Response:
    ch = _channel(sb, params)
    if isinstance(ch, JSONResponse):
        return ch
    problem = _check_message_body(params)
    if problem:
        return problem
    thread_ts = params.get("thread_ts")
    ts = sb.next_ts()
    message: dict[str, Any] = {
        "type": "message",
        "subtype": "bot_message",
        "text": params.get("text", ""),
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "ts": ts,
        "team": TEAM_ID,
    }
    if params.get("blocks") is not None:
        message["blocks"] = params["blocks"]
    if thread_ts is not None:
        # Slack documents no error for an unknown thread_ts (the reply is simply
        # not attached to any visible parent); keep it and count real parents.
        message["thread_ts"] = str(thread_ts)
        parent = sb.messages.get((ch.id, str(thread_ts)))
        if parent is not None:
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            parent.setdefault("thread_ts", parent["ts"])
    sb.messages[(ch.id, ts)] = {**message, "channel": ch.id, "edits": 0}
    return JSONResponse({"ok": True, "channel": ch.id, "ts": ts, "message": message})


def _update(sb: SlackSandbox, params: dict[str, Any]) -> Response:
    ch = _channel(sb, params)
    if isinstance(ch, JSONResponse):
        return ch
    ts = params.get("ts")
    if not ts:
        return _error("message_not_found")
    stored = sb.messages.get((ch.id, str(ts)))
    if stored is None:
        return _error("message_not_found")
    if stored.get("user") != BOT_USER_ID:
        return _error("cant_update_message")
    problem = _check_message_body(params)
    if problem:
        return problem
    if "text" in params:
        stored["text"] = params["text"]
    if params.get("blocks") is not None:
        stored["blocks"] = params["blocks"]
    stored["edits"] += 1
    stored["edited"] = {"user": BOT_USER_ID, "ts": sb.next_ts()}
    message = {k: v for k, v in stored.items() if k not in ("channel", "edits")}
    return JSONResponse(
        {"ok": True, "channel": ch.id, "ts": str(ts), "text": stored["text"], "message": message}
    )


def _post_ephemeral(sb: SlackSandbox, params: dict[str, Any]) -> Response:
    ch = _channel(sb, params)
    if isinstance(ch, JSONResponse):
        return ch
    user = params.get("user")
    if not user or str(user) not in sb.users:
        return _error("user_not_found")
    if str(user) not in ch.members:
        return _error("user_not_in_channel")
    problem = _check_message_body(params)
    if problem:
        return problem
    return JSONResponse({"ok": True, "message_ts": sb.next_ts()})


def _users_info(sb: SlackSandbox, params: dict[str, Any]) -> Response:
    user = sb.users.get(str(params.get("user", "")))
    if user is None:
        return _error("user_not_found")
    return JSONResponse(
        {
            "ok": True,
            "user": {
                "id": user.id,
                "team_id": TEAM_ID,
                "name": user.name,
                "deleted": user.deleted,
                "real_name": user.real_name,
                "is_bot": user.is_bot,
                "profile": {"real_name": user.real_name, "display_name": user.name},
            },
        }
    )


def _conversations_info(sb: SlackSandbox, params: dict[str, Any]) -> Response:
    ch = sb.channels.get(str(params.get("channel", "")))
    if ch is None:
        return _error("channel_not_found")
    return JSONResponse(
        {
            "ok": True,
            "channel": {
                "id": ch.id,
                "name": ch.name,
                "is_channel": True,
                "is_private": False,
                "is_archived": ch.is_archived,
                "is_member": BOT_USER_ID in ch.members,
                "num_members": len(ch.members),
            },
        }
    )


HANDLERS = {
    "auth.test": _auth_test,
    "chat.postMessage": _post_message,
    "chat.update": _update,
    "chat.postEphemeral": _post_ephemeral,
    "users.info": _users_info,
    "conversations.info": _conversations_info,
}


# -- interactions: what Slack sends to the app's Request URL ---------------


def sign_request(
    body: str | bytes, signing_secret: str, timestamp: int | None = None
) -> dict[str, str]:
    """Headers Slack sends with an interaction: ``X-Slack-Request-Timestamp`` and
    ``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:{ts}:{body}">``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    raw = body.decode("utf-8") if isinstance(body, bytes) else body
    digest = hmac.new(
        signing_secret.encode(), f"v0:{ts}:{raw}".encode(), hashlib.sha256
    ).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def block_actions_payload(
    *, channel: str, message: dict[str, Any], user_id: str, action_id: str, user_name: str = ""
) -> dict[str, Any]:
    """The ``block_actions`` payload Slack sends when ``user_id`` clicks the button
    ``action_id`` of ``message`` (as stored by the sandbox) in ``channel``."""
    action: dict[str, Any] | None = None
    for block in message.get("blocks", []):
        if block.get("type") != "actions":
            continue
        for el in block.get("elements", []):
            if el.get("action_id") == action_id:
                action = {
                    "action_id": action_id,
                    "block_id": block.get("block_id", ""),
                    "text": {**el["text"], "emoji": True},
                    "value": el.get("value", ""),
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
                if el.get("style"):
                    action["style"] = el["style"]
    if action is None:
        raise ValueError(f"message {message.get('ts')} has no button {action_id!r}")
    container = {
        "type": "message",
        "message_ts": message["ts"],
        "channel_id": channel,
        "is_ephemeral": False,
    }
    if message.get("thread_ts"):
        container["thread_ts"] = message["thread_ts"]
    public = {k: v for k, v in message.items() if k not in ("channel", "edits")}
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": TEAM_ID},
        "api_app_id": "A0MCPIR",
        "token": "legacy-verification-token",
        "container": container,
        "trigger_id": f"{int(time.time())}.{TEAM_ID}.sandbox",
        "team": {"id": TEAM_ID, "domain": "sandbox"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "incidents"},
        "message": public,
        "state": {"values": {}},
        "response_url": f"https://hooks.slack.com/actions/{TEAM_ID}/0/sandbox",
        "actions": [action],
    }


def encode_interaction(payload: dict[str, Any]) -> bytes:
    """The request body Slack POSTs: form-encoded ``payload=<JSON>``."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def main(argv: list[str] | None = None) -> None:
    """Runs the sandbox in the foreground for the demo."""
    import uvicorn

    parser = argparse.ArgumentParser(description="Slack Web API sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--channel", action="append", default=[], help="ID[:name]")
    parser.add_argument("--user", action="append", default=[], help="ID[:name]")
    args = parser.parse_args(argv)
    sb = SlackSandbox(tokens=(args.token,))
    for spec in args.channel or ["C0INCIDENTS:incidents"]:
        cid, _, name = spec.partition(":")
        sb.add_channel(cid, name or cid.lower(), (BOT_USER_ID,))
    for spec in args.user:
        uid, _, name = spec.partition(":")
        sb.add_user(uid, name or uid.lower())
    uvicorn.run(create_app(sb), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
