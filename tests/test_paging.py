"""Paging on-call: the PagerDuty (Events API v2) and email (SMTP) notifier plugins.

The PagerDuty side talks HTTP to the Events API sandbox (sandbox/pagerduty_events.py,
written from PagerDuty's developer docs); email goes to a real SMTP server
(aiosmtpd) on loopback. The end-to-end test runs a real gated breach step (real CLI,
Prefect server, podman, the Tunnels sandbox) and reads what reached each."""

from __future__ import annotations

import json
import mailbox
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError, TransientError
from core.trail import Trail, verify_dir
from notifications.delivery import OutboxObserver
from notifications.pagerduty import PagerDutyClient, PagerDutyRejected
from notifications.paging import PageEvent, gate_key, outbox_events, run_key
from sandbox.host import start_smtp
from sandbox.pagerduty_events import PagerDutySandbox, create_app
from sandbox.serve import ServerHandle, serve_in_thread
from sandbox.site import write_inventory
from tests.plugins.site import Site, capture_first, waiting_at

ROUTING_KEY = secrets.token_hex(16)
KEY_ENV = "MCP_IR_TEST_PAGERDUTY_KEY"

PLAYBOOK = (
    capture_first("paged")
    + """  - key: stop_stack
    approval: {required: 1, group: oncall, timeout: 2m, allow_initiator: true,
               escalate_after: 3s, escalate_to: security-leads}
    timeout: 60s
"""
)


@pytest.fixture(scope="module")
def pagerduty() -> Iterator[tuple[PagerDutySandbox, ServerHandle]]:
    state = PagerDutySandbox(routing_keys={ROUTING_KEY})
    handle = serve_in_thread(create_app(state))
    yield state, handle
    handle.stop()


@pytest.fixture
def pd(pagerduty: tuple[PagerDutySandbox, ServerHandle]) -> tuple[PagerDutySandbox, str]:
    state, handle = pagerduty
    state.reset()
    return state, handle.url


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    box = tmp_path / "mail"
    host, port, stop = start_smtp(box)
    yield host, port, box
    stop()


def event(action: str = "trigger", key: str = "mcp-ir/INC-1/stop_stack/gate") -> PageEvent:
    return PageEvent(action, key, "INC-1", "stop_stack", "stop_stack waits", "error")


def test_events_api_semantics_through_the_client(pd: tuple[PagerDutySandbox, str]) -> None:
    state, url = pd
    client = PagerDutyClient(ROUTING_KEY, url)
    assert client.send(event()) == "mcp-ir/INC-1/stop_stack/gate"
    assert client.send(event()) == "mcp-ir/INC-1/stop_stack/gate"  # same alert, deduplicated
    assert len(state.alerts) == 1 and len(state.alerts[0].events) == 2
    client.send(event("resolve"))
    assert state.alerts[0].status == "resolved"
    client.send(event())  # after a resolve, a trigger opens a new alert
    assert [a.status for a in state.alerts] == ["resolved", "triggered"]

    with pytest.raises(PagerDutyRejected, match="routing_key"):
        PagerDutyClient("short", url).send(event())
    too_long = PageEvent("trigger", "k" * 300, "INC-1", None, "x")
    with pytest.raises(PagerDutyRejected, match="dedup_key"):
        client.send(too_long)
    state.fail_next(429, 502)
    for _ in range(2):
        with pytest.raises(TransientError):
            client.send(event())
    with pytest.raises(TransientError, match="unreachable"):
        PagerDutyClient(ROUTING_KEY, "http://127.0.0.1:9").send(event())


def _records(trail: Trail) -> list[Any]:
    return trail.records()


def test_outbox_delivers_late_and_records_final_refusals(
    tmp_path: Path, pd: tuple[PagerDutySandbox, str]
) -> None:
    """PagerDuty down while the gate opens: the page waits in the outbox and is
    delivered when it is back (recorded as late); a 400 is final and recorded."""
    state, url = pd
    trail = Trail.open(tmp_path, "INC-20260101-000000-beef")
    inc = trail.incident_id
    client = PagerDutyClient(ROUTING_KEY, url)
    state.fail_next(503)
    observer = OutboxObserver(
        "pagerduty",
        tmp_path,
        trail,
        lambda rec: outbox_events(inc, "t1", rec),
        lambda payload: client.send(PageEvent(**{**payload, "recipients": ()})) and None,
        flush_timeout_s=10,
    )
    trail.subscribe(observer.on_record)
    trail.append(
        "gate.opened", "stop_stack", {"plan_hash": "ab" * 32, "group": "oncall", "required": 1}
    )
    observer.close()
    assert state.alert(gate_key(inc, "stop_stack")).status == "triggered"
    late = [r for r in _records(trail) if r.kind == "notification.delivered_late"]
    assert late and late[0].data["channel"] == "pagerduty" and late[0].data["attempts"] == 2

    bad = OutboxObserver(
        "pagerduty-bad",
        tmp_path,
        trail,
        lambda rec: outbox_events(inc, "t1", rec),
        lambda payload: (
            PagerDutyClient("not-a-key", url).send(PageEvent(**{**payload, "recipients": ()}))
            and None
        ),
    )
    trail.subscribe(bad.on_record)
    trail.append("run.ended", None, {"status": "failed", "detail": "boom"})
    bad.close()
    failed = [r for r in _records(trail) if r.kind == "notification.failed"]
    assert failed and "routing_key" in failed[0].data["error"]
    assert failed[0].data["key"].startswith(run_key(inc))
    assert verify_dir(trail.dir).ok


def test_bad_notifier_config_names_the_field(site: Site) -> None:
    write_inventory(
        site.inventory,
        {site.target: site.site.target},
        notifiers={"email": {"smtp_host": "127.0.0.1", "smtp_port": 99999}},
    )
    r = site.cli("plan", "breach-response", "--target", site.target)
    assert r.returncode == 2 and "notifiers.email.smtp_port" in r.stderr, r.stderr
    write_inventory(site.inventory, {site.target: site.site.target}, notifiers={"pager": {}})
    r = site.cli("plan", "breach-response", "--target", site.target)
    assert r.returncode == 2 and "notifiers.pager: unknown notifier" in r.stderr, r.stderr
    assert "pagerduty" in r.stderr and "email" in r.stderr


def test_a_gate_pages_escalates_and_resolves(
    site: Site, tmp_path: Path, pd: tuple[PagerDutySandbox, str], smtp: tuple[str, int, Path]
) -> None:
    state, url = pd
    host, port, box = smtp
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "paged.yaml").write_text(PLAYBOOK)
    site.env["MCP_IR_PLAYBOOK_DIR"] = str(tmp_path / "playbooks")
    site.env[KEY_ENV] = ROUTING_KEY
    write_inventory(
        site.inventory,
        {site.target: site.site.target},
        notifiers={
            "pagerduty": {"routing_key_env": KEY_ENV, "url": url},
            "email": {
                "smtp_host": host,
                "smtp_port": port,
                "starttls": False,
                "sender": "mcp-ir@sandbox.example",
                "to": ["soc@example.com"],
            },
        },
    )
    proc = site.start("run", "paged", "--target", site.target, "--as", "alice")
    incident = re.search(r"(INC-\S+)", site.wait_for_incident(proc)).group(1).rstrip(":")
    gate = site.wait_for(incident, waiting_at("stop_stack"), proc=proc)
    # status shows what is approved: resources, calls and the full plan hash.
    status = site.cli("status", incident)
    assert status.returncode == 0, status.stderr
    assert f"plan hash: {gate.plan_hash}" in status.stdout
    assert f"resource:  compose-project:{site.site.project}" in status.stdout
    assert f"mcp-ir approve {incident} stop_stack --plan-hash {gate.plan_hash}" in status.stdout
    as_json = json.loads(site.cli("status", incident, "--json").stdout)
    assert as_json["waiting_plans"]["stop_stack"]["hash"] == gate.plan_hash
    # Escalation after 3 s: a second (critical) trigger on the same alert.
    site.wait_for(incident, lambda rs: any(r.kind == "gate.escalated" for r in rs), proc=proc)
    key = gate_key(incident, "stop_stack")
    site.wait_for(
        incident,
        lambda rs: (a := state.alert(key)) is not None and len(a.events) >= 2,
        proc=proc,
    )
    ok = site.cli("approve", incident, "stop_stack", "--as", "bob")
    assert ok.returncode == 0, ok.stderr
    assert proc.wait(120) == 0
    console = proc.stdout.read()
    assert "waiting for 1 more approval(s) from 'oncall'" in console
    assert f"plan hash: {gate.plan_hash}" in console and "0 approval" not in console

    alert = state.alert(key)
    assert alert.status == "resolved"
    severities = [e["payload"]["severity"] for e in alert.events if e["event_action"] == "trigger"]
    assert severities == ["error", "critical"]
    assert "waits for 1 approval(s) from group 'oncall'" in alert.summary
    assert ROUTING_KEY not in (site.evidence / incident / "trail.jsonl").read_text()

    mails = list(mailbox.Maildir(str(box), factory=None))
    subjects = [" ".join(str(m["Subject"]).split()) for m in mails]  # unfold long headers
    assert any("waits for 1 approval" in s for s in subjects), subjects
    assert any("ESCALATED" in s for s in subjects), subjects
    opened = next(m for m, s in zip(mails, subjects, strict=True) if "waits for 1 approval" in s)
    assert {a.strip() for a in opened["To"].split(",")} == {
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "soc@example.com",
    }
    escalated = next(m for m, s in zip(mails, subjects, strict=True) if "ESCALATED" in s)
    assert "dave@example.com" in escalated["To"]
    assert f"mcp-ir approve {incident} stop_stack" in opened.get_payload()
    with pytest.raises(ConfigError):
        from notifications.email import SmtpClient

        SmtpClient(host, port, starttls=False).send(
            PageEvent("trigger", "k", "INC-1", None, "x"), []
        )
