"""Slack wired into the engine, end to end: the real ``mcp-ir`` CLI in a subprocess,
a real Prefect server, real podman containers, the real slack-sdk against the Slack
sandbox, and the interactions endpoint under uvicorn receiving clicks signed the
way Slack signs them."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from core.trail import Record, verify_dir
from notifications.slack import APPROVE_ACTION, REJECT_ACTION
from notifications.slack_interactions import SECURITY_LOG, create_app
from notifications.trail_observer import drain_outbox
from runbook.gates import gate_state
from runbook.settings import Settings
from sandbox.polling import wait_until
from sandbox.serve import ServerHandle, serve_in_thread
from sandbox.slack_api import block_actions_payload, encode_interaction, sign_request
from tests.plugins.site import waiting_at
from tests.plugins.slack_sandbox import SIGNING_SECRET, SlackSite

pytestmark = [pytest.mark.podman, pytest.mark.prefect]

STEPS = ("capture_evidence", "stop_stack", "archive_tunnel")
T = TypeVar("T")


# -- helpers -----------------------------------------------------------------


def incident_of(proc: subprocess.CompletedProcess[str]) -> str:
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("incident INC-"):
            return line.split()[1].rstrip(":")
        if line.startswith("incident: "):
            return line.split()[1]
    raise AssertionError(f"no incident id in output:\n{proc.stdout}{proc.stderr}")


def use_playbook(ss: SlackSite, directory: Path, name: str, gates: dict[str, str]) -> None:
    """A playbook of the three containment steps with the given approvals (YAML
    flow mappings, ``auto`` when absent), found through ``MCP_IR_PLAYBOOK_DIR`` so
    the test does not depend on how breach-response grows."""
    directory.mkdir(exist_ok=True)
    lines = [f"name: {name}", "steps:"]
    for step in STEPS:
        lines += [f"  - key: {step}", f"    approval: {gates.get(step, 'auto')}"]
    (directory / f"{name}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ss.site.env["MCP_IR_PLAYBOOK_DIR"] = str(directory)


def settings_of(ss: SlackSite) -> Settings:
    return Settings(config_path=ss.site.inventory, evidence_dir=ss.site.evidence)


def with_prefect_api(app: Any, api_url: str) -> Any:
    """The app with the session Prefect server as its Prefect API. (The test
    process sets it as a context-local Prefect setting, which a server thread does
    not inherit; ``mcp-ir serve`` has it in its environment from the start.)"""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            await app(scope, receive, send)

    return wrapped


@pytest.fixture
def interactions(slack_site: SlackSite, prefect_server: Any) -> Iterator[ServerHandle]:
    """``POST /slack/interactions`` served as in production, for this site."""
    app = create_app(settings_of(slack_site))
    handle = serve_in_thread(with_prefect_api(app, prefect_server.url))
    yield handle
    handle.stop()


def opener_and_replies(ss: SlackSite) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    msgs = ss.slack.state.channel_messages(ss.channel)
    openers = [m for m in msgs if m.get("thread_ts") in (None, m["ts"])]
    assert len(openers) == 1, [m["text"] for m in openers]
    opener = openers[0]
    replies = [m for m in msgs if m is not opener and m.get("thread_ts") == opener["ts"]]
    assert len(replies) == len(msgs) - 1  # every other message is in the incident's thread
    return opener, replies


def approval_message(ss: SlackSite, step: str) -> dict[str, Any] | None:
    """The approval request for ``step`` while it still has its buttons."""
    for m in ss.slack.state.channel_messages(ss.channel):
        if m["text"].startswith(f"Approval needed for {step} ") and any(
            b["type"] == "actions" for b in m.get("blocks", [])
        ):
            return m
    return None


def message_at(ss: SlackSite, ts: str) -> dict[str, Any]:
    return next(m for m in ss.slack.state.channel_messages(ss.channel) if m["ts"] == ts)


def decisions_text(message: dict[str, Any]) -> str:
    block = next(b for b in message["blocks"] if b.get("block_id") == "mcp_ir_decisions")
    return "\n".join(el["text"] for el in block["elements"])


def post(handle: ServerHandle, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        handle.url + "/slack/interactions",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        timeout=10,
    )


def click(
    handle: ServerHandle,
    ss: SlackSite,
    message: dict[str, Any],
    user: str,
    action: str = APPROVE_ACTION,
    plan_hash: str | None = None,
) -> None:
    """What Slack sends when ``user`` clicks a button of ``message``, signed."""
    payload = block_actions_payload(
        channel=ss.channel, message=message, user_id=user, action_id=action
    )
    if plan_hash is not None:  # a button from an older message of a changed plan
        value = json.loads(payload["actions"][0]["value"])
        payload["actions"][0]["value"] = json.dumps({**value, "plan_hash": plan_hash})
    body = encode_interaction(payload)
    resp = post(handle, body, sign_request(body, SIGNING_SECRET))
    assert resp.status_code == 200, resp.text


def ephemerals(ss: SlackSite, count: int) -> list[dict[str, Any]]:
    wait_until(
        lambda: len(ss.slack.state.received("chat.postEphemeral")) >= count,
        what=f"{count} ephemeral message(s)",
    )
    return [r["params"] for r in ss.slack.state.received("chat.postEphemeral")]


def last_refusal(ss: SlackSite, incident: str, count: int) -> Record:
    refusals = wait_until(
        lambda: [r for r in ss.site.trail(incident).records() if r.kind == "approval.refused"][
            count - 1 :
        ],
        what=f"refusal #{count}",
    )
    return refusals[0]


def assert_no_secret_sent(ss: SlackSite) -> None:
    """Nothing the sandbox received (every call, every argument) holds a secret."""
    sent = json.dumps(ss.slack.state.received())
    assert "chat.postMessage" in sent
    for secret in (ss.site.canary, ss.site.site.token, ss.site.sandbox.token, ss.slack.token):
        assert secret not in sent


def records_of(ss: SlackSite, incident: str, kind: str) -> list[Record]:
    return [r for r in ss.site.trail(incident).records() if r.kind == kind]


def start_contain(
    ss: SlackSite, tmp_path: Path, gates: dict[str, str]
) -> tuple[subprocess.Popen[str], str]:
    """Starts alice's run of a ``contain`` playbook with these ``gates``; returns the
    run's process and its incident id once it has printed it."""
    use_playbook(ss, tmp_path / "playbooks", "contain", gates)
    site = ss.site
    proc = site.start("run", "contain", "--target", site.target, "--as", "alice")
    return proc, site.wait_for_incident(proc).split()[1].rstrip(":")


# -- the thread and the two-person rule through Slack clicks ------------------


def test_thread_and_two_person_rule_through_slack_clicks(
    slack_site: SlackSite, interactions: ServerHandle, tmp_path: Path
) -> None:
    ss, site = slack_site, slack_site.site
    gates = {
        "stop_stack": "{required: 1, group: oncall, timeout: 15m, allow_initiator: true}",
        "archive_tunnel": "{required: 2, group: oncall, timeout: 30m}",
    }
    proc, incident = start_contain(ss, tmp_path, gates)

    # stop_stack: 1 of oncall, the initiator may approve containment.
    site.wait_for(incident, waiting_at("stop_stack"), proc=proc)
    stop_msg = wait_until(lambda: approval_message(ss, "stop_stack"), what="stop_stack request")
    click(interactions, ss, stop_msg, "U0ALICE")
    site.wait_for(incident, waiting_at("archive_tunnel"), proc=proc)
    archive_msg = wait_until(
        lambda: approval_message(ss, "archive_tunnel"), what="archive_tunnel request"
    )
    plan = next(
        r
        for r in site.trail(incident).records()
        if r.kind == "step.planned" and r.step == "archive_tunnel"
    )
    assert plan.data["hash"] in json.dumps(archive_msg["blocks"])  # bound to this plan
    assert plan.data["summary"][:40] in archive_msg["blocks"][1]["text"]["text"]

    # archive_tunnel: 2 distinct people of oncall, not the initiator.
    click(interactions, ss, archive_msg, "U0ALICE")
    eph = ephemerals(ss, 1)[-1]
    assert eph["user"] == "U0ALICE" and "started this incident and cannot approve" in eph["text"]
    click(interactions, ss, archive_msg, "U0MALLORY")
    eph = ephemerals(ss, 2)[-1]
    assert eph["user"] == "U0MALLORY"
    assert "not a member of approver group 'oncall'" in eph["text"]
    assert "Nothing changed" in eph["text"]
    click(interactions, ss, archive_msg, "U0BOB", plan_hash="0" * 64)
    eph = ephemerals(ss, 3)[-1]
    assert eph["user"] == "U0BOB" and "does not match the step's current plan" in eph["text"]
    refusal = last_refusal(ss, incident, 3)
    assert refusal.data["source"] == "slack" and refusal.data["approver"] == "bob"
    state = gate_state(site.trail(incident).records(), "archive_tunnel")
    assert state.approvals == [] and state.status == "waiting"  # nothing changed
    assert site.mutating_calls() == []

    click(interactions, ss, archive_msg, "U0BOB")
    site.wait_for(
        incident,
        lambda rs: gate_state(rs, "archive_tunnel").approvals == ["bob"],
        proc=proc,
    )
    wait_until(
        lambda: "bob approved" in decisions_text(message_at(ss, archive_msg["ts"])),
        what="the approval message to show bob",
    )
    assert site.mutating_calls() == []  # one approval is not enough
    click(interactions, ss, archive_msg, "U0CAROL")
    assert proc.wait(90) == 0
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.site.tunnel_id}/archive"]

    records = site.trail(incident).records()
    accepted = [
        (r.step, r.data["approver"], r.data["source"])
        for r in records
        if r.kind == "approval.accepted"
    ]
    assert accepted == [
        ("stop_stack", "alice", "slack"),
        ("archive_tunnel", "bob", "slack"),
        ("archive_tunnel", "carol", "slack"),
    ]
    assert [r.data["source"] for r in records if r.kind == "approval.refused"] == ["slack"] * 3
    # Each counted click is countersigned by the receiver, with the verified request's
    # evidence (runbook.proofs): the trail alone proves it.
    from runbook.proofs import decode

    for r in records:
        if r.kind == "approval.accepted":
            assert r.data["proof"]["channel"] == "slack"
            stmt = decode(site.trail(incident).read_artifact(r.data["proof"]["sha256"]))[
                "statement"
            ]
            assert (
                stmt["approver"] == r.data["approver"] and stmt["plan_hash"] == r.data["plan_hash"]
            )
            assert stmt["slack"]["user"] == "U0" + r.data["approver"].upper()
            assert set(stmt["slack"]) == {"team", "user", "action_ts", "request_sha256"}
    verified = site.cli("verify", str(site.evidence / incident))
    assert verified.returncode == 0 and "3 signed decision(s) verified" in verified.stdout

    # The approval message shows who decided and lost its buttons.
    final = wait_until(
        lambda: (
            (m := message_at(ss, archive_msg["ts"])) and "carol approved" in decisions_text(m) and m
        ),
        what="the approval message to show carol",
    )
    assert "bob approved" in decisions_text(final) and "Approved" in decisions_text(final)
    assert not any(b["type"] == "actions" for b in final["blocks"])

    # The thread: an opener whose status line followed the run, every step's start
    # and result with its duration, the close.
    opener, replies = opener_and_replies(ss)
    texts = [m["text"] for m in replies]
    for step in STEPS:
        started = texts.index(f"Step {step} started")
        finished = next(
            i for i, t in enumerate(texts) if t.startswith(f"Step {step} succeeded in ")
        )
        assert started < finished
        assert texts[finished].endswith(" s")  # "... succeeded in 0.4 s"
    assert texts[-1] == "Incident " + incident + " closed: succeeded"
    assert opener["text"].endswith(": Closed: succeeded") and opener["edits"] >= 2
    header = opener["blocks"][0]["text"]["text"]
    assert incident in header
    fields = json.dumps(opener["blocks"][1])
    assert site.target in fields and "alice" in fields and "contain" in fields
    step_lines = opener["blocks"][-1]["elements"][0]["text"]
    assert all(f"`{s}` succeeded (" in step_lines for s in STEPS)
    updates = [
        r["params"]["text"]
        for r in ss.slack.state.received("chat.update")
        if r["params"]["ts"] == opener["ts"]
    ]
    assert any("Waiting for approval of archive_tunnel" in t for t in updates)
    assert verify_dir(site.evidence / incident).ok
    assert_no_secret_sent(ss)


def test_forged_missing_and_replayed_clicks_are_refused(
    slack_site: SlackSite, interactions: ServerHandle, tmp_path: Path
) -> None:
    ss, site = slack_site, slack_site.site
    gates = {"stop_stack": "{required: 1, group: oncall, timeout: 15m}"}
    proc, incident = start_contain(ss, tmp_path, gates)
    site.wait_for(incident, waiting_at("stop_stack"), proc=proc)
    msg = wait_until(lambda: approval_message(ss, "stop_stack"), what="stop_stack request")
    before = site.trail(incident).records()

    body = encode_interaction(
        block_actions_payload(
            channel=ss.channel, message=msg, user_id="U0BOB", action_id=APPROVE_ACTION
        )
    )
    forged = sign_request(body, "not-the-signing-secret")
    stale = sign_request(body, SIGNING_SECRET, timestamp=int(time.time()) - 5 * 60 - 30)
    missing = {"X-Slack-Signature": sign_request(body, SIGNING_SECRET)["X-Slack-Signature"]}
    for headers in (forged, stale, missing, {}):
        assert post(interactions, body, headers).status_code == 401

    log = site.evidence / SECURITY_LOG
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["reason"] for e in entries] == [
        "bad_signature",
        "stale_timestamp",
        "missing_headers",
        "missing_headers",
    ]
    assert all(e["body_bytes"] == len(body) for e in entries)
    assert SIGNING_SECRET not in log.read_text()
    time.sleep(2)  # a resumed flow would have written its decision by now
    after = site.trail(incident).records()
    assert [r.kind for r in after[len(before) :]] == []  # nothing decided, nothing resumed
    assert gate_state(after, "stop_stack").status == "waiting"
    assert ss.slack.state.received("chat.postEphemeral") == []
    assert proc.poll() is None  # still paused at the gate

    # The same click, properly signed, is taken: bob rejects and the run ends.
    click(interactions, ss, msg, "U0BOB", action=REJECT_ACTION)
    assert proc.wait(90) == 1
    rejected = records_of(ss, incident, "gate.rejected")
    assert [(r.data["approver"], r.data["source"]) for r in rejected] == [("bob", "slack")]
    final = wait_until(
        lambda: (m := message_at(ss, msg["ts"])) and "bob rejected" in decisions_text(m) and m,
        what="the approval message to show bob's rejection",
    )
    assert "Rejected" in decisions_text(final)
    assert not any(b["type"] == "actions" for b in final["blocks"])


# -- escalation --------------------------------------------------------------


def gate_playbook(ss: SlackSite, directory: Path, name: str, approval: str) -> None:
    directory.mkdir()
    (directory / f"{name}.yaml").write_text(
        f"name: {name}\nsteps:\n"
        "  - key: capture_evidence\n    approval: auto\n"
        f"  - key: stop_stack\n    approval: {approval}\n"
    )
    ss.site.env["MCP_IR_PLAYBOOK_DIR"] = str(directory)


def stack_objects(ss: SlackSite) -> int:
    label = f"com.docker.compose.project={ss.site.site.project}"
    return len(ss.site.client.containers.list(all=True, filters={"label": label}))


def test_escalation_calls_the_secondary_group(slack_site: SlackSite, tmp_path: Path) -> None:
    ss, site = slack_site, slack_site.site
    gate_playbook(
        ss,
        tmp_path / "playbooks",
        "escalating-gate",
        "{required: 1, group: oncall, timeout: 5s, escalate_after: 2s,"
        " escalate_to: security-leads}",
    )
    proc = site.cli("run", "escalating-gate", "--target", site.target, "--as", "alice")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    incident = incident_of(proc)
    records = site.trail(incident).records()
    escalated = next(r for r in records if r.kind == "gate.escalated")
    opened = next(r for r in records if r.kind == "gate.opened")
    assert escalated.data["to"] == "security-leads" and escalated.data["members"] == ["dave"]
    assert "step.started" not in [r.kind for r in records if r.step == "stop_stack"]
    assert stack_objects(ss) == 2  # nobody approved: nothing was stopped

    opener, replies = opener_and_replies(ss)
    request = next(m for m in replies if m["text"].startswith("Approval needed for stop_stack "))
    call = next(m for m in replies if m["text"].startswith("Escalation: approval of stop_stack"))
    assert float(request["ts"]) < float(call["ts"])
    body = call["blocks"][0]["text"]["text"]
    assert "security-leads" in body and "<@U0DAVE>" in body  # dave is paged by Slack id
    assert "the gate rejects the step" in body and "5.0 s after the request" in body
    assert opened.seq < escalated.seq
    # After escalating, the gate still waits until its timeout, which rejects.
    timeout = next(r for r in records if r.kind == "gate.timeout")
    assert escalated.seq < timeout.seq
    assert next(r for r in records if r.kind == "run.ended").data["status"] == "timed_out"
    assert_no_secret_sent(ss)


def test_gate_timeout_rejects_and_the_thread_says_so(slack_site: SlackSite, tmp_path: Path) -> None:
    ss, site = slack_site, slack_site.site
    gate_playbook(
        ss, tmp_path / "playbooks", "quick-gate", "{required: 1, group: oncall, timeout: 3s}"
    )
    proc = site.cli("run", "quick-gate", "--target", site.target, "--as", "alice")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    incident = incident_of(proc)
    assert records_of(ss, incident, "gate.timeout")
    assert records_of(ss, incident, "run.ended")[0].data["status"] == "timed_out"
    assert stack_objects(ss) == 2

    opener, replies = opener_and_replies(ss)
    texts = [m["text"] for m in replies]
    assert "Approval of stop_stack timed out: the gate rejected the step" in texts
    request = next(m for m in replies if m["text"].startswith("Approval needed for stop_stack "))
    assert "Timed out without quorum: the gate rejected the step" in decisions_text(request)
    assert not any(b["type"] == "actions" for b in request["blocks"])  # no buttons left
    assert opener["text"].endswith(": Closed: timed_out")
    assert texts[-1] == f"Incident {incident} closed: timed_out"


# -- Slack down for the whole run ---------------------------------------------


def test_slack_down_for_the_whole_run(slack_site: SlackSite, tmp_path: Path) -> None:
    ss, site = slack_site, slack_site.site
    ss.slack.state.outage(3600)
    started = time.monotonic()
    use_playbook(ss, tmp_path / "playbooks", "contain-auto", {})
    proc = site.cli("run", "contain-auto", "--target", site.target, "--as", "alice")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc)
    assert ss.slack.state.channel_messages(ss.channel) == []
    assert ss.slack.state.outage_hits > 0  # it did try
    failed = records_of(ss, incident, "notification.failed")
    assert failed and all(r.data["error"].startswith("http_503") for r in failed)
    assert records_of(ss, incident, "run.ended")[0].data["status"] == "succeeded"
    assert elapsed < 120

    ss.slack.state.outage(0)
    result = drain_outbox(settings_of(ss))
    assert result == {"incidents": 1, "left": 0}
    opener, replies = opener_and_replies(ss)
    texts = [m["text"] for m in replies]
    assert texts[0] == "Step capture_evidence started"  # in the order things happened
    assert texts[-1] == f"Incident {incident} closed: succeeded"
    assert opener["text"].endswith(": Closed: succeeded")
    late = records_of(ss, incident, "notification.delivered_late")
    ended = records_of(ss, incident, "run.ended")[0]
    assert late and all(r.seq > ended.seq for r in late)
    # The opener was tried during the outage; every reply waited behind it.
    assert [r.data["kind"] for r in late][0] == "opener" and late[0].data["attempts"] >= 2
    assert "reply" in {r.data["kind"] for r in late}
    assert len(late) >= len(replies) and all(r.data["queued_s"] > 0 for r in late)
    assert verify_dir(site.evidence / incident).ok
    assert_no_secret_sent(ss)
    assert drain_outbox(settings_of(ss)) == {"incidents": 0, "left": 0}  # nothing twice


# -- the bot token from a Prefect Secret block --------------------------------


def test_token_from_a_prefect_secret_block(slack_site: SlackSite, tmp_path: Path) -> None:
    from prefect.blocks.system import Secret

    ss, site = slack_site, slack_site.site
    name = "mcp-ir-slack-" + secrets.token_hex(4)
    Secret(value=ss.slack.token).save(name)
    ss.use_slack(token_block=name)
    assert "SLACK_BOT_TOKEN" not in site.env
    assert ss.slack.token not in site.inventory.read_text()

    use_playbook(ss, tmp_path / "playbooks", "contain-auto", {})
    proc = site.cli("run", "contain-auto", "--target", site.target, "--as", "alice")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc)
    opener, replies = opener_and_replies(ss)
    assert opener["text"].endswith(": Closed: succeeded") and len(replies) >= 7
    assert records_of(ss, incident, "notification.unavailable") == []
    evidence = b"".join(p.read_bytes() for p in site.evidence.rglob("*") if p.is_file())
    assert ss.slack.token.encode() not in evidence
    assert_no_secret_sent(ss)


def test_a_missing_secret_block_never_blocks_the_run(slack_site: SlackSite, tmp_path: Path) -> None:
    ss, site = slack_site, slack_site.site
    ss.use_slack(token_block="mcp-ir-no-such-block-" + secrets.token_hex(4))
    use_playbook(ss, tmp_path / "playbooks", "contain-auto", {})
    proc = site.cli("run", "contain-auto", "--target", site.target, "--as", "alice")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc)
    unavailable = records_of(ss, incident, "notification.unavailable")
    assert len(unavailable) == 1 and "slack.token_block" in unavailable[0].data["error"]
    assert records_of(ss, incident, "run.ended")[0].data["status"] == "succeeded"
    assert ss.slack.state.received("chat.postMessage") == []
