"""The Slack sandbox speaks the Web API as slack-sdk expects it: real client, real
HTTP, Slack's status codes and error bodies."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import URLError

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from sandbox.serve import free_port
from sandbox.slack_api import (
    DEFAULT_TOKEN,
    MAX_BUTTON_VALUE,
    block_actions_payload,
    encode_interaction,
    sign_request,
)
from tests.plugins.slack_sandbox import SIGNING_SECRET, SlackServer


def client(slack: SlackServer, token: str | None = "default") -> WebClient:
    tok = slack.token if token == "default" else token
    # No retry handlers: these tests look at the raw answers.
    return WebClient(token=tok, base_url=slack.api_url, retry_handlers=[])


def error_of(exc: pytest.ExceptionInfo[SlackApiError]) -> tuple[int, str]:
    return exc.value.response.status_code, exc.value.response["error"]


def test_missing_token_is_not_authed(slack: SlackServer) -> None:
    with pytest.raises(SlackApiError) as exc:
        client(slack, None).chat_postMessage(channel="C0INCIDENTS", text="hi")
    assert error_of(exc) == (200, "not_authed")


def test_wrong_token_is_invalid_auth(slack: SlackServer) -> None:
    with pytest.raises(SlackApiError) as exc:
        client(slack, "xoxb-not-the-right-one").auth_test()
    assert error_of(exc) == (200, "invalid_auth")
    assert slack.state.received() == []


def test_auth_test_form_encoded(slack: SlackServer) -> None:
    resp = client(slack).auth_test()
    assert resp["ok"] is True and resp["user_id"].startswith("U")
    assert slack.state.received("auth.test")


def test_post_and_update_round_trip(slack: SlackServer) -> None:
    c = client(slack)
    posted = c.chat_postMessage(channel="C0INCIDENTS", text="first")
    assert posted["channel"] == "C0INCIDENTS" and posted["message"]["text"] == "first"
    reply = c.chat_postMessage(channel="C0INCIDENTS", text="reply", thread_ts=posted["ts"])
    assert reply["message"]["thread_ts"] == posted["ts"]
    updated = c.chat_update(channel="C0INCIDENTS", ts=posted["ts"], text="edited")
    assert updated["ts"] == posted["ts"] and updated["text"] == "edited"
    msgs = slack.state.channel_messages("C0INCIDENTS")
    assert [m["text"] for m in msgs] == ["edited", "reply"]
    assert msgs[0]["reply_count"] == 1 and msgs[0]["edits"] == 1


def test_post_message_form_encoded_blocks(slack: SlackServer) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*form*"}}]
    resp = client(slack).api_call(
        "chat.postMessage",
        data={"channel": "C0INCIDENTS", "text": "form", "blocks": json.dumps(blocks)},
    )
    assert resp["message"]["blocks"] == blocks


def test_unknown_channel_and_message(slack: SlackServer) -> None:
    c = client(slack)
    with pytest.raises(SlackApiError) as exc:
        c.chat_postMessage(channel="C0NOPE", text="x")
    assert error_of(exc) == (200, "channel_not_found")
    with pytest.raises(SlackApiError) as exc:
        c.chat_update(channel="C0INCIDENTS", ts="1.000001", text="x")
    assert error_of(exc) == (200, "message_not_found")
    with pytest.raises(SlackApiError) as exc, pytest.warns(UserWarning, match="text"):
        c.chat_postMessage(channel="C0INCIDENTS")
    assert error_of(exc) == (200, "no_text")


def test_invalid_blocks_are_refused(slack: SlackServer) -> None:
    too_long = [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Go"},
                    "value": "x" * (MAX_BUTTON_VALUE + 1),
                }
            ],
        }
    ]
    with pytest.raises(SlackApiError) as exc:
        client(slack).chat_postMessage(channel="C0INCIDENTS", text="x", blocks=too_long)
    assert error_of(exc) == (200, "invalid_blocks")
    header_mrkdwn = [{"type": "header", "text": {"type": "mrkdwn", "text": "no"}}]
    with pytest.raises(SlackApiError) as exc:
        client(slack).chat_postMessage(channel="C0INCIDENTS", text="x", blocks=header_mrkdwn)
    assert error_of(exc) == (200, "invalid_blocks")


def test_ephemeral_users_info_conversations_info(slack: SlackServer) -> None:
    c = client(slack)
    assert c.chat_postEphemeral(channel="C0INCIDENTS", user="U0ALICE", text="psst")["message_ts"]
    with pytest.raises(SlackApiError) as exc:
        c.chat_postEphemeral(channel="C0INCIDENTS", user="U0NOBODY", text="psst")
    assert error_of(exc) == (200, "user_not_found")
    assert c.users_info(user="U0BOB")["user"]["name"] == "bob"
    with pytest.raises(SlackApiError) as exc:
        c.users_info(user="U0NOBODY")
    assert error_of(exc) == (200, "user_not_found")
    info = c.conversations_info(channel="C0PRODEU")["channel"]
    assert info["id"] == "C0PRODEU" and info["is_member"] is True
    # users.info and conversations.info travel as query-string arguments.
    assert slack.state.received("users.info")[0]["params"]["user"] == "U0BOB"


def test_rate_limit_is_429_with_retry_after(slack: SlackServer) -> None:
    slack.state.rate_limit(1, retry_after=7)
    with pytest.raises(SlackApiError) as exc:
        client(slack).chat_postMessage(channel="C0INCIDENTS", text="x")
    assert error_of(exc) == (429, "ratelimited")
    assert exc.value.response.headers["Retry-After"] == "7"
    assert client(slack).chat_postMessage(channel="C0INCIDENTS", text="x")["ok"]


def test_outage_answers_503_then_recovers(slack: SlackServer) -> None:
    slack.state.outage(60)
    with pytest.raises(SlackApiError) as exc:
        client(slack).chat_postMessage(channel="C0INCIDENTS", text="x")
    assert exc.value.response.status_code == 503
    httpx.post(slack.url + "/_sandbox/outage", json={"seconds": 0}).raise_for_status()
    assert client(slack).chat_postMessage(channel="C0INCIDENTS", text="x")["ok"]
    seen = httpx.get(slack.url + "/_sandbox/messages").json()["received"]
    assert [r["method"] for r in seen] == ["chat.postMessage"]


def test_signing_helper_matches_slack_sdk_verifier(slack: SlackServer) -> None:
    posted = client(slack).chat_postMessage(
        channel="C0INCIDENTS",
        text="approve?",
        blocks=[
            {
                "type": "actions",
                "block_id": "b1",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "go",
                        "text": {"type": "plain_text", "text": "Go"},
                        "value": "v",
                    }
                ],
            }
        ],
    )
    message = slack.state.channel_messages("C0INCIDENTS")[0]
    payload = block_actions_payload(
        channel="C0INCIDENTS", message=message, user_id="U0BOB", action_id="go"
    )
    assert payload["container"]["message_ts"] == posted["ts"]
    assert payload["actions"][0]["value"] == "v" and payload["actions"][0]["block_id"] == "b1"
    body = encode_interaction(payload)
    headers = sign_request(body, SIGNING_SECRET)
    verifier = SignatureVerifier(SIGNING_SECRET)
    assert verifier.is_valid_request(body, headers)
    assert not SignatureVerifier("another-secret").is_valid_request(body, headers)
    old = sign_request(body, SIGNING_SECRET, timestamp=int(time.time()) - 301)
    assert not verifier.is_valid_request(body, old)


def test_standalone_module_serves_the_api(tmp_path: Path) -> None:
    """``python -m sandbox.slack_api --port N`` (the demo) answers slack-sdk."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.slack_api", "--port", str(port), "--user", "U0ZED:zed"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        c = WebClient(token=DEFAULT_TOKEN, base_url=f"http://127.0.0.1:{port}/api/")
        deadline = time.monotonic() + 20
        while True:
            try:
                assert c.auth_test()["ok"]
                break
            except URLError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert c.chat_postMessage(channel="C0INCIDENTS", text="demo")["ok"]
        assert c.users_info(user="U0ZED")["user"]["name"] == "zed"
    finally:
        proc.terminate()
        proc.wait(10)
