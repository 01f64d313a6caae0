"""Managed Agents in the sandbox and tasks.sessions, through the real SDK (FACTS §3)."""

from __future__ import annotations

import time

import anthropic
import pytest

from core.errors import ConfigError, StepFailed, TransientError
from tasks import sessions as S

DOMAIN = "a1b2c3.tunnels.sandbox.example"


def _agent(servers: dict[str, str], extra_tools: list[dict] | None = None) -> dict:
    return {
        "name": "ops agent",
        "mcp_servers": [{"type": "url", "name": n, "url": u} for n, u in servers.items()],
        "tools": [{"type": "mcp_toolset", "mcp_server_name": n} for n in servers]
        + (extra_tools or []),
    }


BASH = {"type": "agent_toolset_20260401"}
CUSTOM = {
    "type": "custom",
    "name": "lookup",
    "description": "Look something up",
    "input_schema": {"type": "object", "properties": {}},
}
MIXED = {
    "tunnel": f"https://{DOMAIN}/mcp",
    "sub": f"https://jira.{DOMAIN}:8443/mcp",
    "public": "https://mcp.example.com/mcp",
    "lookalike": f"https://evil{DOMAIN}/mcp",
}


# ------------------------------------------------------------------ sandbox


def test_update_refused_while_running(anthropic_sandbox, anthropic_client):
    (session,) = anthropic_sandbox.seed(
        sessions=[{"status": "running", "agent": _agent({"t": MIXED["tunnel"]})}]
    )["sessions"]
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client.beta.sessions.update(session["id"], agent={"mcp_servers": [], "tools": []})
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert session["id"] in info.value.body["error"]["message"]
    assert "idle" in info.value.body["error"]["message"]
    after = anthropic_client.beta.sessions.retrieve(session["id"])
    assert [s.name for s in after.agent.mcp_servers] == ["t"]


def test_interrupt_then_update_replaces_both_arrays(anthropic_sandbox, anthropic_client):
    (session,) = anthropic_sandbox.seed(
        sessions=[{"status": "running", "agent": _agent({"t": MIXED["tunnel"]}, [BASH])}]
    )["sessions"]
    sent = anthropic_client.beta.sessions.events.send(
        session["id"], events=[{"type": "user.interrupt"}]
    )
    assert sent.data[0].type == "user.interrupt"
    assert anthropic_client.beta.sessions.retrieve(session["id"]).status == "idle"
    updated = anthropic_client.beta.sessions.update(
        session["id"], agent={"mcp_servers": [], "tools": [BASH]}
    )
    assert updated.agent.mcp_servers == []
    assert [t.type for t in updated.agent.tools] == ["agent_toolset_20260401"]


def test_update_rejects_unreferenced_server(anthropic_sandbox, anthropic_client):
    (session,) = anthropic_sandbox.seed(sessions=[{"status": "idle", "agent": _agent({})}])[
        "sessions"
    ]
    with pytest.raises(anthropic.BadRequestError, match="not referenced"):
        anthropic_client.beta.sessions.update(
            session["id"],
            agent={"mcp_servers": [{"type": "url", "name": "x", "url": MIXED["public"]}]},
        )


def test_running_session_cannot_be_archived(anthropic_sandbox, anthropic_client):
    (session,) = anthropic_sandbox.seed(sessions=[{"status": "running", "idle": "never"}])[
        "sessions"
    ]
    with pytest.raises(anthropic.BadRequestError, match="running"):
        anthropic_client.beta.sessions.archive(session["id"])


def test_sessions_list_filters_statuses_and_pages(anthropic_sandbox, anthropic_client):
    specs = [{"status": st} for st in ("running", "idle", "terminated", "rescheduling") * 3]
    anthropic_sandbox.seed(sessions=specs)
    live = list(anthropic_client.beta.sessions.list(statuses=["running", "idle"], limit=2))
    assert len(live) == 6 and {s.status for s in live} == {"running", "idle"}
    page = anthropic_client.beta.sessions.list(limit=5)
    assert len(page.data) == 5 and page.next_page and page.prev_page is None
    assert len(list(anthropic_client.beta.sessions.list(limit=5))) == 12
    with pytest.raises(anthropic.BadRequestError, match="statuses"):
        anthropic_client.beta.sessions.list(statuses=["sleeping"])  # type: ignore[list-item]


def test_managed_agents_beta_required(anthropic_sandbox, anthropic_client):
    import httpx

    response = httpx.get(
        anthropic_sandbox.url + "/v1/sessions",
        headers={
            "authorization": f"Bearer {anthropic_sandbox.token}",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "mcp-tunnels-2026-06-22",
        },
    )
    assert response.status_code == 400
    assert "managed-agents-2026-04-01" in response.json()["error"]["message"]


def test_agent_update_is_versioned_with_optimistic_concurrency(anthropic_sandbox, anthropic_client):
    (agent,) = anthropic_sandbox.seed(agents=[_agent({"t": MIXED["tunnel"]})])["agents"]
    v2 = anthropic_client.beta.agents.update(agent["id"], version=1, mcp_servers=[], tools=[])
    assert v2.version == 2 and v2.mcp_servers == []
    stale = anthropic_client.with_options(max_retries=0)
    with pytest.raises(anthropic.ConflictError) as info:
        stale.beta.agents.update(agent["id"], version=1, system="x")
    assert info.value.body["error"]["type"] == "conflict_error"
    v1 = anthropic_client.beta.agents.retrieve(agent["id"], version=1)
    assert [s.name for s in v1.mcp_servers] == ["t"]


def test_unknown_session_is_404(anthropic_client):
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.beta.sessions.retrieve("sesn_missing")


# ------------------------------------------------------------------ adapter


def test_host_matching_is_exact_or_subdomain():
    assert S.is_under_domain(MIXED["tunnel"], DOMAIN)
    assert S.is_under_domain(MIXED["sub"], DOMAIN.upper() + ".")
    assert S.is_under_domain(f"https://user@X.{DOMAIN}./p", DOMAIN)
    assert not S.is_under_domain(MIXED["lookalike"], DOMAIN)
    assert not S.is_under_domain(MIXED["public"], DOMAIN)
    assert not S.is_under_domain(f"https://example.com/?u=https://{DOMAIN}", DOMAIN)
    with pytest.raises(ConfigError, match="tunnel_domain"):
        S.normalize_domain("https://x.example/")


def test_find_affected_pages_all_sessions_and_agents(anthropic_sandbox, anthropic_client):
    sessions = [{"status": "running", "agent": _agent({"t": MIXED["tunnel"]})} for _ in range(105)]
    sessions += [
        {"status": "terminated", "agent": _agent({"t": MIXED["tunnel"]})},
        {"status": "idle", "agent": _agent({"l": MIXED["lookalike"], "p": MIXED["public"]})},
        {"status": "idle", "agent": _agent({"s": MIXED["sub"], "p": MIXED["public"]})},
    ]
    seeded = anthropic_sandbox.seed(
        sessions=sessions,
        agents=[_agent({"t": MIXED["tunnel"]}), _agent({"p": MIXED["public"]})],
    )
    affected = S.find_affected(anthropic_client, DOMAIN)
    assert len(affected.sessions) == 106
    terminated_id = seeded["sessions"][105]["id"]
    lookalike_id = seeded["sessions"][106]["id"]
    ids = {s.id for s in affected.sessions}
    assert terminated_id not in ids and lookalike_id not in ids
    sub = next(s for s in affected.sessions if s.id == seeded["sessions"][107]["id"])
    assert [m.name for m in sub.servers] == ["s"]
    assert [a.id for a in affected.agents] == [seeded["agents"][0]["id"]]
    assert affected.urls == sorted([MIXED["tunnel"], MIXED["sub"]])
    list_calls = [c for c in anthropic_sandbox.calls() if c["path"] == "/v1/sessions"]
    assert len(list_calls) == 2  # 107 live sessions at 100 per page
    assert list_calls[0]["query"]["statuses[]"] == ["rescheduling", "running", "idle"]


def test_interrupt_wait_and_detach_keeps_other_tools(anthropic_sandbox, anthropic_client):
    agent = _agent({"t": MIXED["tunnel"], "s": MIXED["sub"], "p": MIXED["public"]}, [BASH, CUSTOM])
    seeded = anthropic_sandbox.seed(
        sessions=[
            {"status": "running", "agent": agent, "idle": {"polls": 2}},
            {"status": "running", "agent": _agent({"p": MIXED["public"]})},
        ]
    )["sessions"]
    target, unrelated = seeded[0]["id"], seeded[1]["id"]
    (found,) = S.find_affected(anthropic_client, DOMAIN).sessions
    assert found.id == target
    assert S.interrupt_and_wait_idle(anthropic_client, target, timeout_s=5, initial_backoff_s=0.01)
    result = S.detach_session(anthropic_client, found, DOMAIN)
    assert result.as_dict() == {
        "id": target,
        "removed_servers": ["t", "s"],
        "before_count": 3,
        "after_count": 1,
    }
    after = anthropic_client.beta.sessions.retrieve(target)
    assert [s.name for s in after.agent.mcp_servers] == ["p"]
    tools = [
        (t.type, getattr(t, "mcp_server_name", getattr(t, "name", None))) for t in after.agent.tools
    ]
    assert tools == [
        ("mcp_toolset", "p"),
        ("agent_toolset_20260401", None),
        ("custom", "lookup"),
    ]
    other = anthropic_client.beta.sessions.retrieve(unrelated)
    assert other.status == "running" and [s.name for s in other.agent.mcp_servers] == ["p"]
    touched = {c["path"] for c in anthropic_sandbox.calls() if c["method"] == "POST"}
    assert all(unrelated not in p for p in touched)


def test_detach_is_idempotent(anthropic_sandbox, anthropic_client):
    (session,) = anthropic_sandbox.seed(
        sessions=[{"status": "idle", "agent": _agent({"t": MIXED["tunnel"], "p": MIXED["public"]})}]
    )["sessions"]
    first = S.detach_session(anthropic_client, session["id"], DOMAIN)
    assert first.changed and first.removed_servers == ["t"]
    second = S.detach_session(anthropic_client, session["id"], DOMAIN)
    assert not second.changed and second.removed_servers == []
    assert second.before_count == second.after_count == 1
    updates = [
        c
        for c in anthropic_sandbox.calls()
        if c["path"] == f"/v1/sessions/{session['id']}" and c["method"] == "POST"
    ]
    assert len(updates) == 1


def test_detach_running_session_refused_before_any_update(anthropic_sandbox, anthropic_client):
    (session,) = anthropic_sandbox.seed(
        sessions=[{"status": "running", "agent": _agent({"t": MIXED["tunnel"]})}]
    )["sessions"]
    with pytest.raises(StepFailed, match=session["id"]):
        S.detach_session(anthropic_client, session["id"], DOMAIN)
    assert all(c["method"] == "GET" for c in anthropic_sandbox.calls())


def test_never_idle_session_fails_naming_it(anthropic_sandbox, anthropic_client):
    (session,) = anthropic_sandbox.seed(
        sessions=[{"status": "running", "idle": "never", "agent": _agent({"t": MIXED["tunnel"]})}]
    )["sessions"]
    started = time.monotonic()
    with pytest.raises(StepFailed) as info:
        S.interrupt_and_wait_idle(
            anthropic_client,
            session["id"],
            timeout_s=0.6,
            initial_backoff_s=0.05,
            max_backoff_s=0.2,
        )
    elapsed = time.monotonic() - started
    assert session["id"] in info.value.detail and "running" in info.value.detail
    assert 0.6 <= elapsed < 15  # waited the full timeout, then stopped (a liveness bound)
    interrupts = [c for c in anthropic_sandbox.calls() if c["path"].endswith("/events")]
    assert len(interrupts) == 1
    polls = [c for c in anthropic_sandbox.calls() if c["path"] == f"/v1/sessions/{session['id']}"]
    assert 3 <= len(polls) <= 12  # backoff, not a busy loop


def test_idle_after_seconds(anthropic_sandbox, anthropic_client):
    (session,) = anthropic_sandbox.seed(sessions=[{"status": "running", "idle": {"seconds": 0.3}}])[
        "sessions"
    ]
    started = time.monotonic()
    status = S.interrupt_and_wait_idle(
        anthropic_client, session["id"], timeout_s=5, initial_backoff_s=0.05, max_backoff_s=0.1
    )
    assert status == "idle" and time.monotonic() - started >= 0.3


def test_already_idle_session_is_not_interrupted(anthropic_sandbox, anthropic_client):
    (session,) = anthropic_sandbox.seed(sessions=[{"status": "idle"}])["sessions"]
    assert S.interrupt_and_wait_idle(anthropic_client, session["id"], timeout_s=1) == "idle"
    assert not [c for c in anthropic_sandbox.calls() if c["path"].endswith("/events")]


def test_interrupt_transient_error(anthropic_sandbox, anthropic_client):
    (session,) = anthropic_sandbox.seed(sessions=[{"status": "running"}])["sessions"]
    anthropic_sandbox.fault(f"/v1/sessions/{session['id']}/events", 503, count=3)
    with pytest.raises(TransientError, match=session["id"]):
        S.interrupt_and_wait_idle(anthropic_client, session["id"], timeout_s=1)


def test_detach_agent_makes_new_version_once(anthropic_sandbox, anthropic_client):
    (agent,) = anthropic_sandbox.seed(
        agents=[_agent({"t": MIXED["tunnel"], "p": MIXED["public"]}, [BASH])]
    )["agents"]
    result = S.detach_agent(anthropic_client, agent["id"], DOMAIN)
    assert result.changed and result.version == 2 and result.removed_servers == ["t"]
    current = anthropic_client.beta.agents.retrieve(agent["id"])
    assert [s.name for s in current.mcp_servers] == ["p"]
    assert [t.type for t in current.tools] == ["mcp_toolset", "agent_toolset_20260401"]
    again = S.detach_agent(anthropic_client, agent["id"], DOMAIN)
    assert not again.changed and again.version == 2
    update_body = [c for c in anthropic_sandbox.calls() if c["method"] == "POST"][0]["body"]
    assert update_body["version"] == 1


def test_detach_agent_recovers_from_a_concurrent_version(anthropic_sandbox, anthropic_client):
    (agent,) = anthropic_sandbox.seed(agents=[_agent({"t": MIXED["tunnel"]})])["agents"]
    anthropic_sandbox.fault(f"/v1/agents/{agent['id']}", 409, count=1, method="POST")
    result = S.detach_agent(anthropic_client, agent["id"], DOMAIN)
    assert result.changed and result.after_count == 0
    statuses = [c["status"] for c in anthropic_sandbox.calls() if c["method"] == "POST"]
    assert statuses == [409, 200]


def test_build_blocklist():
    block = S.build_blocklist(
        DOMAIN.upper(), [MIXED["tunnel"], MIXED["sub"], MIXED["public"], MIXED["lookalike"]]
    )
    assert block == {
        "tunnel_domain": DOMAIN,
        "host_patterns": [DOMAIN, f"*.{DOMAIN}"],
        "urls": sorted([MIXED["tunnel"], MIXED["sub"]]),
        "hosts": sorted([DOMAIN, f"jira.{DOMAIN}"]),
    }
    with pytest.raises(ConfigError, match="tunnel_domain"):
        S.build_blocklist("", [])
