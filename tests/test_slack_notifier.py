"""The incident thread through the real slack-sdk against the Slack sandbox:
structure, rate limits, outages, restarts, secrets."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError, CredentialsError
from core.redact import Redactor, fingerprint
from notifications.base import NullNotifier, build_notifier
from notifications.slack import SlackNotifier, make_client
from runbook.inventory import load_inventory
from sandbox.serve import free_port, serve_in_thread
from sandbox.slack_api import SlackSandbox, create_app
from tests.plugins.slack_sandbox import USERS, SlackServer, write_slack_inventory

CHANNEL = "C0PRODEU"
INC = "inc-20261121-0001"
CANARY = "canary-tnltok_9f8e7d6c5b4a39281706"  # a secret the redactor knows


class Recorder:
    """Collects what the notifier appends to the incident trail."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        with self.lock:
            self.items.append((kind, data))

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [d for k, d in self.items if k == kind]


def opened(slack: SlackServer, state_dir: Path) -> SlackNotifier:
    """A notifier on the Slack sandbox that has opened incident INC's thread."""
    n = notifier(slack.api_url, slack.token, state_dir, Recorder())
    n.incident_opened(INC, "prod-eu", "high", "manual", "alice", "breach-response")
    return n


def notifier(
    api_url: str,
    token: str,
    state_dir: Path,
    record: Recorder,
    *,
    background: bool = False,
    redactor: Redactor | None = None,
) -> SlackNotifier:
    return SlackNotifier(
        make_client(token, base_url=api_url, timeout=5),
        channel=CHANNEL,
        state_dir=state_dir,
        record=record,
        redactor=redactor or Redactor([CANARY]),
        slack_users={name: uid for uid, name in USERS.items()},
        retry_base_s=0.2,
        retry_max_s=1.0,
        background=background,
    )


def run_incident(n: SlackNotifier, call: Callable[..., Any] | None = None) -> None:
    """A short run: open, two steps, an approval, close (each call through ``call``)."""
    do = call or (lambda fn, *args: fn(*args))
    do(n.incident_opened, INC, "prod-eu", "critical", "siem:alert-42", "alice", "breach-response")
    do(n.step_started, INC, "capture_evidence")
    do(n.step_finished, INC, "capture_evidence", "succeeded", 2.4)
    do(
        n.approval_requested,
        INC,
        "stop_stack",
        "sha256:aaaabbbbccccdddd",
        {"target": "prod-eu"},
        "oncall",
        2,
        [],
        900,
    )
    do(n.approval_decided, INC, "stop_stack", "bob", "approve", 1)
    do(n.approval_decided, INC, "stop_stack", "carol", "approve", 0)
    do(n.step_started, INC, "stop_stack")
    do(n.step_finished, INC, "stop_stack", "succeeded", 0.8)
    do(n.incident_closed, INC, "contained", "stack stopped")


EXPECTED_REPLIES = [
    "Step capture_evidence started",
    "Step capture_evidence succeeded",
    "Approval needed for stop_stack",
    "bob approved stop_stack",
    "carol approved stop_stack",
    "Step stop_stack started",
    "Step stop_stack succeeded",
    "Incident inc-20261121-0001 closed",
]


def assert_thread(state: SlackSandbox) -> dict[str, Any]:
    """The channel holds exactly one incident thread, in order; returns the opener."""
    msgs = state.channel_messages(CHANNEL)
    opener = msgs[0]
    assert "thread_ts" not in opener or opener["thread_ts"] == opener["ts"]
    replies = msgs[1:]
    assert all(m["thread_ts"] == opener["ts"] for m in replies)
    assert len(replies) == len(EXPECTED_REPLIES)
    for msg, prefix in zip(replies, EXPECTED_REPLIES, strict=True):
        assert msg["text"].startswith(prefix), (msg["text"], prefix)
    return opener


def test_thread_structure_and_opener_status(slack: SlackServer, tmp_path: Path) -> None:
    rec = Recorder()
    n = notifier(slack.api_url, slack.token, tmp_path, rec)
    run_incident(n)
    assert n.flush(10) is True
    opener = assert_thread(slack.state)
    assert opener["text"].startswith(f"Incident {INC} on prod-eu: Closed: contained")
    assert opener["edits"] >= 1
    status = next(b for b in opener["blocks"] if b.get("block_id") == "mcp_ir_status")
    assert "Closed: contained" in status["text"]["text"]
    fields = " ".join(f["text"] for f in opener["blocks"][1]["fields"])
    for expected in ("prod-eu", "critical", "siem:alert-42", "alice", "breach-response"):
        assert expected in fields
    # Every reply went out with thread_ts = the opener's ts.
    posts = slack.state.received("chat.postMessage")
    assert [p["params"].get("thread_ts") for p in posts[1:]] == [opener["ts"]] * len(posts[1:])
    assert rec.items == []
    n.close()


def test_approval_message_buttons_carry_incident_step_and_plan_hash(
    slack: SlackServer, tmp_path: Path
) -> None:
    n = opened(slack, tmp_path)
    n.approval_requested(
        INC,
        "stop_stack",
        "sha256:0123456789abcdef",
        {"target": "prod-eu", "resources": ["mcp-proxy", "cloudflared"]},
        "oncall",
        2,
        ["bob"],
        600,
    )
    assert n.flush(10)
    approval = slack.state.channel_messages(CHANNEL)[1]
    actions = next(b for b in approval["blocks"] if b["type"] == "actions")
    ids = [e["action_id"] for e in actions["elements"]]
    assert ids == ["mcp_ir_approve", "mcp_ir_reject"]
    for el in actions["elements"]:
        assert json.loads(el["value"]) == {
            "incident_id": INC,
            "step": "stop_stack",
            "plan_hash": "sha256:0123456789abcdef",
        }
    text = json.dumps(approval["blocks"])
    assert "mcp-proxy" in text and "oncall" in text and "1 more approval needed" in text
    n.close()


def test_escalation_mentions_members_and_timeout_rejects(
    slack: SlackServer, tmp_path: Path
) -> None:
    n = opened(slack, tmp_path)
    n.approval_requested(
        INC, "stop_stack", "sha256:1111", {"target": "prod-eu"}, "oncall", 2, [], 60
    )
    n.escalated(INC, "stop_stack", "security-leads", ["dave", "erin"])
    n.gate_timed_out(INC, "stop_stack")
    assert n.flush(10)
    msgs = slack.state.channel_messages(CHANNEL)
    escalation = next(m for m in msgs if m["text"].startswith("Escalation"))
    body = escalation["blocks"][0]["text"]["text"]
    assert "<@U0DAVE>" in body and "erin" in body and "security-leads" in body
    timeout = next(m for m in msgs if m["text"].startswith("Approval of stop_stack timed out"))
    assert "rejected" in timeout["text"]
    approval = next(m for m in msgs if m["text"].startswith("Approval needed"))
    assert not any(b["type"] == "actions" for b in approval["blocks"])  # buttons gone
    assert "gate rejected the step" in json.dumps(approval["blocks"])
    assert "timed out" in msgs[0]["text"]
    n.close()


def test_rate_limit_retried_honouring_retry_after(slack: SlackServer, tmp_path: Path) -> None:
    rec = Recorder()
    n = notifier(slack.api_url, slack.token, tmp_path, rec)
    slack.state.rate_limit(1, retry_after=1, methods=("chat.postMessage",))
    started = time.monotonic()
    n.incident_opened(INC, "prod-eu", "high", "manual", "alice", "breach-response")
    assert time.monotonic() - started < 5  # queued, not sent, by the caller (the retry waits 1 s+)
    n.step_started(INC, "capture_evidence")
    assert n.flush(15)
    assert len(slack.state.ratelimited) == 1
    # slack-sdk's RateLimitErrorRetryHandler slept Retry-After (1 s + jitter) before
    # the retry that succeeded.
    first_ok = slack.state.received("chat.postMessage")[0]["at"]
    assert first_ok - slack.state.ratelimited[0]["at"] >= 1.0
    assert [m["text"][:8] for m in slack.state.channel_messages(CHANNEL)] == [
        "Incident",
        "Step cap",
    ]
    assert rec.kinds("notification.failed") == []
    n.close()


def test_slack_down_for_the_whole_run(slack: SlackServer, tmp_path: Path) -> None:
    """Every call returns at once, nothing is raised; after Slack is back the
    thread is delivered in order and the trail shows the late deliveries."""
    rec = Recorder()
    n = notifier(slack.api_url, slack.token, tmp_path, rec, background=True)
    slack.state.outage(3600)
    durations: list[float] = []

    def timed(fn: Callable[..., Any], *args: Any) -> None:
        t0 = time.monotonic()
        assert fn(*args) is None
        durations.append(time.monotonic() - t0)

    run_incident(n, timed)
    assert len(durations) == 9
    assert max(durations) < 0.5, durations
    assert n.flush(5) is False  # still down: nothing delivered, nothing raised
    assert slack.state.outage_hits >= 1
    failed = rec.kinds("notification.failed")
    assert failed and all(f["kind"] == "opener" for f in failed)  # order: head only
    assert all(f["error"] == "http_503" and not f["permanent"] for f in failed)
    assert slack.state.channel_messages(CHANNEL) == []

    slack.state.outage(0)
    assert n.flush(20) is True
    assert_thread(slack.state)
    late = rec.kinds("notification.delivered_late")
    assert late[0]["kind"] == "opener" and late[0]["attempts"] >= 2
    assert {d["message_id"] for d in late} >= {failed[0]["message_id"]}
    for item in failed + late:
        assert "text" not in item and "blocks" not in item  # ids and codes, no bodies
    n.close()


def test_connection_refused_then_background_delivery(tmp_path: Path) -> None:
    """Slack unreachable (nothing listening); when it comes up the background
    thread delivers on its own, without flush()."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api/"
    state = SlackSandbox()
    state.add_channel(CHANNEL, "prod-eu", ())
    rec = Recorder()
    n = notifier(api_url, "xoxb-sandbox-0000000000-canary", tmp_path, rec, background=True)
    n.incident_opened(INC, "prod-eu", "high", "manual", "alice", "breach-response")
    n.step_started(INC, "capture_evidence")
    deadline = time.monotonic() + 10
    while not rec.kinds("notification.failed") and time.monotonic() < deadline:
        time.sleep(0.05)
    failure = rec.kinds("notification.failed")[0]
    assert failure["error"].startswith("URLError") and "refused" in failure["error"].lower()
    server = serve_in_thread(create_app(state), port=port)
    try:
        deadline = time.monotonic() + 15
        while len(state.channel_messages(CHANNEL)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        msgs = state.channel_messages(CHANNEL)
        assert [m["text"][:8] for m in msgs] == ["Incident", "Step cap"]
        assert msgs[1]["thread_ts"] == msgs[0]["ts"]
        assert rec.kinds("notification.delivered_late")
    finally:
        n.close()
        server.stop()


def test_restart_keeps_the_thread(slack: SlackServer, tmp_path: Path) -> None:
    """Replies queued before the opener was delivered, and replies written by a new
    process after a restart, land in the one thread."""
    rec1 = Recorder()
    first = notifier(slack.api_url, slack.token, tmp_path, rec1)
    slack.state.outage(3600)
    first.incident_opened(INC, "prod-eu", "high", "manual", "alice", "breach-response")
    first.step_started(INC, "capture_evidence")
    assert first.flush(5) is False
    first.close()  # the process dies with both messages queued
    slack.state.outage(0)

    rec2 = Recorder()
    second = notifier(slack.api_url, slack.token, tmp_path, rec2)
    second.incident_opened(INC, "prod-eu", "high", "manual", "alice", "breach-response")
    second.step_finished(INC, "capture_evidence", "succeeded", 1.0)
    assert second.flush(10)
    second.close()

    third = notifier(slack.api_url, slack.token, tmp_path, Recorder())
    third.step_started(INC, "stop_stack")
    assert third.flush(10)
    third.close()

    msgs = slack.state.channel_messages(CHANNEL)
    openers = [m for m in msgs if "thread_ts" not in m or m["thread_ts"] == m["ts"]]
    assert len(openers) == 1
    assert [m["text"][:22] for m in msgs[1:]] == [
        "Step capture_evidence ",
        "Run resumed by alice",
        "Step capture_evidence ",
        "Step stop_stack starte",
    ]
    assert all(m["thread_ts"] == openers[0]["ts"] for m in msgs[1:])
    assert rec2.kinds("notification.delivered_late")
    with sqlite3.connect(tmp_path / "slack-outbox.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM messages GROUP BY status"))
    assert statuses.get("pending", 0) == 0 and statuses.get("dead", 0) == 0


def test_permanent_error_is_recorded_and_does_not_block(slack: SlackServer, tmp_path: Path) -> None:
    rec = Recorder()
    n = SlackNotifier(
        make_client(slack.token, base_url=slack.api_url),
        channel="C0DELETED",
        state_dir=tmp_path,
        record=rec,
        redactor=Redactor(),
        background=False,
    )
    n.incident_opened(INC, "prod-eu", "high", "manual", "alice", "breach-response")
    n.step_started(INC, "capture_evidence")
    assert n.flush(10) is True  # nothing left pending: set aside, not retried forever
    failed = rec.kinds("notification.failed")
    assert failed[0]["error"] == "channel_not_found" and failed[0]["permanent"] is True
    assert n.outbox.counts().get("dead", 0) >= 2
    n.close()


def test_canary_secret_never_reaches_slack_or_the_trail(slack: SlackServer, tmp_path: Path) -> None:
    rec = Recorder()
    n = notifier(slack.api_url, slack.token, tmp_path, rec)
    n.incident_opened(INC, "prod-eu", "high", f"alert with {CANARY}", "alice", "breach-response")
    n.step_started(INC, "rotate_credentials")
    n.step_finished(
        INC,
        "rotate_credentials",
        "failed",
        3.0,
        f"upstream said: Authorization: Bearer sk-ant-api03-{CANARY} token={CANARY}",
    )
    n.approval_requested(
        INC,
        "rotate_credentials",
        "sha256:feedfeedfeedfeed",
        {"token": CANARY, "env": "TUNNEL_TOKEN=eyJhIjoiYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoifQ"},
        "oncall",
        1,
        [],
        300,
    )
    n.incident_closed(INC, "failed", f"see {CANARY}")
    assert n.flush(10)
    sent = json.dumps(slack.state.received())
    assert CANARY not in sent
    assert "eyJhIjoiYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoifQ" not in sent
    assert "[REDACTED]" in sent
    assert CANARY not in json.dumps(rec.items)
    outbox_bytes = (tmp_path / "slack-outbox.sqlite3").read_bytes()
    assert CANARY.encode() not in outbox_bytes
    assert fingerprint(CANARY) not in sent  # and nothing pretends to be it
    n.close()


def test_notifier_never_raises_on_bad_input(slack: SlackServer, tmp_path: Path) -> None:
    rec = Recorder()
    n = notifier(slack.api_url, slack.token, tmp_path, rec)
    # duration_s that is not a number: the step must not see an exception.
    assert n.step_finished(INC, "capture_evidence", "succeeded", "soon") is None  # type: ignore[arg-type]
    failed = rec.kinds("notification.failed")
    assert failed and failed[0]["stage"] == "step_finished" and failed[0]["error"] == "ValueError"
    n.close()


def test_build_notifier_from_inventory(
    slack_env: SlackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = load_inventory(write_slack_inventory(tmp_path, slack_env.api_url))
    rec = Recorder()
    n = build_notifier(inv, "prod-eu", record=rec, state_dir=tmp_path / "s", redactor=Redactor())
    assert isinstance(n, SlackNotifier) and n.channel == "C0PRODEU"
    n.incident_opened(INC, "prod-eu", "low", "drill", "alice", "rotation-drill")
    assert n.flush(10)
    assert slack_env.state.channel_messages("C0PRODEU")
    n.close()
    # A target without slack_channel falls back to slack.default_channel.
    staging = build_notifier(
        inv, "staging", record=rec, state_dir=tmp_path / "s2", redactor=Redactor()
    )
    assert isinstance(staging, SlackNotifier) and staging.channel == "C0INCIDENTS"
    staging.close()

    monkeypatch.delenv("SLACK_BOT_TOKEN")
    with pytest.raises(CredentialsError, match="SLACK_BOT_TOKEN"):
        build_notifier(inv, "prod-eu", record=rec, state_dir=tmp_path / "s3", redactor=Redactor())

    no_slack = load_inventory(write_slack_inventory(tmp_path, slack_env.api_url, slack=False))
    null = build_notifier(no_slack, "prod-eu", record=rec, state_dir=tmp_path, redactor=Redactor())
    assert type(null) is NullNotifier and null.flush() is True


def test_build_notifier_without_any_channel_names_the_field(
    slack_env: SlackServer, tmp_path: Path
) -> None:
    path = write_slack_inventory(tmp_path, slack_env.api_url)
    path.write_text(path.read_text().replace("  default_channel: C0INCIDENTS\n", ""))
    inv = load_inventory(path)
    with pytest.raises(ConfigError, match="'staging'.*slack_channel"):
        build_notifier(inv, "staging", record=Recorder(), state_dir=tmp_path, redactor=Redactor())


def test_same_plan_asked_again_refreshes_one_approval_message(
    slack: SlackServer, tmp_path: Path
) -> None:
    """A new pause round for the same plan updates the message with the buttons; a
    new plan (new hash) gets a new message whose buttons carry the new hash."""
    n = opened(slack, tmp_path)
    n.approval_requested(
        INC, "stop_stack", "sha256:1111", {"target": "prod-eu"}, "oncall", 2, [], 60
    )
    n.approval_decided(INC, "stop_stack", "bob", "approve", 1)
    n.approval_requested(
        INC, "stop_stack", "sha256:1111", {"target": "prod-eu"}, "oncall", 2, ["bob"], 60
    )
    assert n.flush(10)
    approvals = [m for m in slack.state.channel_messages(CHANNEL) if "Approval needed" in m["text"]]
    assert len(approvals) == 1
    assert "bob approved" in json.dumps(approvals[0]["blocks"])
    assert "1 more approval needed" in json.dumps(approvals[0]["blocks"])

    n.approval_requested(
        INC, "stop_stack", "sha256:2222", {"target": "prod-eu"}, "oncall", 2, [], 60
    )
    assert n.flush(10)
    approvals = [m for m in slack.state.channel_messages(CHANNEL) if "Approval needed" in m["text"]]
    assert len(approvals) == 2
    buttons = next(b for b in approvals[1]["blocks"] if b["type"] == "actions")["elements"]
    assert json.loads(buttons[0]["value"])["plan_hash"] == "sha256:2222"
    assert not any(b["type"] == "actions" for b in approvals[0]["blocks"])  # stale buttons gone
    assert "Superseded" in json.dumps(approvals[0]["blocks"])
    n.close()
