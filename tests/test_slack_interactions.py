"""POST /slack/interactions through uvicorn with httpx: only requests signed by
Slack, within 5 minutes, reach the gate; everything else is a 401 that changes
nothing and is recorded."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.errors import CredentialsError
from notifications.slack_interactions import SECURITY_LOG, create_app, create_slack_routes
from runbook.settings import Settings
from sandbox.slack_api import sign_request
from tests.plugins.slack_sandbox import (
    SIGNING_SECRET,
    STRANGER,
    Interactions,
    SlackServer,
    interactions,
    write_slack_inventory,
)

INC = "inc-20261121-0002"
CHANNEL = "C0PRODEU"


@pytest.fixture
def ix(slack_env: SlackServer, tmp_path: Path) -> Iterator[Interactions]:
    """The endpoint serving, with an approval request posted by the notifier."""
    with interactions(
        slack_env, tmp_path, incident=INC, step="stop_stack", plan="sha256:0123456789abcdef"
    ) as served:
        yield served


def security_log(settings: Settings) -> list[dict[str, Any]]:
    path = settings.evidence_dir / SECURITY_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def slack_calls_after_setup(slack: SlackServer) -> list[str]:
    return [
        r["method"]
        for r in slack.state.received()
        if r["method"] in ("chat.update", "chat.postEphemeral")
    ]


def assert_nothing_changed(slack: SlackServer, settings: Settings, before: dict[str, Any]) -> None:
    time.sleep(0.3)  # give a (wrongly) started background task time to act
    assert slack_calls_after_setup(slack) == []
    assert slack.state.channel_messages(CHANNEL)[1] == before
    # No incident directory was touched: only the security log exists.
    assert [p.name for p in settings.evidence_dir.iterdir()] == ["_security"]


def test_forged_signature_is_401_and_recorded(ix: Interactions) -> None:
    body = ix.click_body("U0BOB")
    headers = sign_request(body, "not-the-signing-secret")
    resp = ix.post(body, headers)
    assert resp.status_code == 401
    log = security_log(ix.settings)
    assert [e["reason"] for e in log] == ["bad_signature"]
    assert log[0]["body_bytes"] == len(body) and len(log[0]["body_sha256"]) == 64
    raw = (ix.settings.evidence_dir / SECURITY_LOG).read_text()
    assert "sha256:0123456789abcdef" not in raw and "U0BOB" not in raw  # no body
    assert_nothing_changed(ix.slack, ix.settings, ix.message)


def test_signature_over_a_different_body_is_401(ix: Interactions) -> None:
    """A genuine signature replayed with a tampered body (bob's click turned into
    carol's) does not verify."""
    genuine = ix.click_body("U0BOB")
    headers = sign_request(genuine, SIGNING_SECRET)
    tampered = ix.click_body("U0CAROL")
    assert ix.post(tampered, headers).status_code == 401
    assert [e["reason"] for e in security_log(ix.settings)] == ["bad_signature"]
    assert_nothing_changed(ix.slack, ix.settings, ix.message)


@pytest.mark.parametrize(
    "drop", ["X-Slack-Signature", "X-Slack-Request-Timestamp", "both"], ids=lambda d: d
)
def test_missing_headers_are_401(drop: str, ix: Interactions) -> None:
    body = ix.click_body("U0BOB")
    headers = sign_request(body, SIGNING_SECRET)
    for name in ("X-Slack-Signature", "X-Slack-Request-Timestamp"):
        if drop in (name, "both"):
            del headers[name]
    assert ix.post(body, headers).status_code == 401
    assert [e["reason"] for e in security_log(ix.settings)] == ["missing_headers"]
    assert_nothing_changed(ix.slack, ix.settings, ix.message)


def test_replay_older_than_five_minutes_is_401(ix: Interactions) -> None:
    body = ix.click_body("U0BOB")
    headers = sign_request(body, SIGNING_SECRET, timestamp=int(time.time()) - 5 * 60 - 5)
    assert ix.post(body, headers).status_code == 401
    future = sign_request(body, SIGNING_SECRET, timestamp=int(time.time()) + 5 * 60 + 5)
    assert ix.post(body, future).status_code == 401
    garbage = {**headers, "X-Slack-Request-Timestamp": "yesterday"}
    assert ix.post(body, garbage).status_code == 401
    log = security_log(ix.settings)
    assert [e["reason"] for e in log] == ["stale_timestamp", "stale_timestamp", "bad_timestamp"]
    assert log[0]["timestamp_header"] == headers["X-Slack-Request-Timestamp"]
    assert_nothing_changed(ix.slack, ix.settings, ix.message)


def test_unknown_slack_user_gets_an_ephemeral_and_nothing_changes(ix: Interactions) -> None:
    body = ix.click_body(STRANGER)
    started = time.monotonic()
    resp = ix.post(body, sign_request(body, SIGNING_SECRET))
    elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert elapsed < 10  # liveness; Slack's own limit is 3 s, met with margin when unloaded
    deadline = time.monotonic() + 5
    while not ix.slack.state.received("chat.postEphemeral") and time.monotonic() < deadline:
        time.sleep(0.05)
    eph = ix.slack.state.received("chat.postEphemeral")
    assert len(eph) == 1
    assert eph[0]["params"]["user"] == STRANGER and eph[0]["params"]["channel"] == CHANNEL
    assert "not an approver" in eph[0]["params"]["text"]
    assert ix.slack.state.received("chat.update") == []
    assert ix.slack.state.channel_messages(CHANNEL)[1] == ix.message
    log = security_log(ix.settings)
    assert log[-1]["reason"] == "unknown_slack_user" and log[-1]["slack_user_id"] == STRANGER
    assert log[-1]["incident_id"] == INC and log[-1]["step"] == "stop_stack"
    assert not (ix.settings.evidence_dir / INC).exists()


def test_malformed_payload_is_400(ix: Interactions) -> None:
    body = b"payload=%7Bnot-json"
    resp = ix.post(body, sign_request(body, SIGNING_SECRET))
    assert resp.status_code == 400 and "payload" in resp.json()["error"]
    assert slack_calls_after_setup(ix.slack) == []


def test_routes_only_when_slack_is_configured(slack_env: SlackServer, tmp_path: Path) -> None:
    no_slack = Settings(
        config_path=write_slack_inventory(tmp_path, slack_env.api_url, slack=False),
        evidence_dir=tmp_path / "ev",
    )
    assert create_slack_routes(no_slack) == []
    routes = create_slack_routes(
        Settings(
            config_path=write_slack_inventory(tmp_path, slack_env.api_url),
            evidence_dir=tmp_path / "ev",
        )
    )
    assert [(r.path, sorted(r.methods or ())) for r in routes] == [
        ("/slack/interactions", ["POST"])
    ]


def test_missing_signing_secret_fails_closed_naming_it(
    slack_env: SlackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    settings = Settings(
        config_path=write_slack_inventory(tmp_path, slack_env.api_url),
        evidence_dir=tmp_path / "ev",
    )
    with pytest.raises(CredentialsError, match="SLACK_SIGNING_SECRET"):
        create_app(settings)
