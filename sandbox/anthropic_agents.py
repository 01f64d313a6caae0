"""Managed Agents semantics (FACTS §3): sessions, their events, and agents.

Documented behaviour followed here (SDK 2.12 docstrings and the API reference):

* ``POST /v1/sessions/{id}`` with ``agent={mcp_servers?, tools?}`` replaces each
  given array (omitted ones are kept). The session must not be running: the
  sandbox refuses unless it is ``idle``. The public reference names no error for
  this, so the sandbox answers 400 ``invalid_request_error`` with a message naming
  the session and its status.
* ``mcp_servers`` names must be unique and every server must be referenced by an
  ``mcp_toolset`` in the resulting ``tools`` (unreferenced servers are rejected, as
  the ``agents.update`` reference says); a toolset naming no server is rejected too.
* ``user.interrupt`` returns a running session to ``idle``; when is configured per
  session (immediately, after N retrieves, after S seconds, or never) so callers'
  waiting can be tested.
* ``POST /v1/agents/{id}`` makes a new version; ``version``, when given, must equal
  the current one or the request fails with 409 ``conflict_error`` (the reference
  says the request "fails if it does not match"; 409 is the documented type for a
  concurrent modification). An update that changes nothing keeps the version.
* Running sessions cannot be archived.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from sandbox.anthropic_state import (
    Agent,
    ApiError,
    IdlePolicy,
    SandboxState,
    Session,
    invalid,
    new_id,
    not_found,
    now,
    rfc3339,
)
from sandbox.anthropic_tunnels import paginate

STATUSES = ("rescheduling", "running", "idle", "terminated")
_DEFAULT_POLICY = {"type": "always_ask"}


def routes(route: Callable[..., Any], beta: str) -> list[Any]:
    """The Managed Agents routes, built with the app's route helper: one row per
    route (method, path, handler of (state, path params, query, body))."""
    table: list[tuple[str, str, Callable[..., Any]]] = [
        ("GET", "/v1/sessions", lambda s, p, q, b: list_sessions(s, q)),
        ("GET", "/v1/sessions/{session_id}", lambda s, p, q, b: retrieve_session(s, p["session_id"])),
        ("POST", "/v1/sessions/{session_id}", lambda s, p, q, b: update_session(s, p["session_id"], b)),
        ("POST", "/v1/sessions/{session_id}/archive", lambda s, p, q, b: archive_session(s, p["session_id"])),
        ("POST", "/v1/sessions/{session_id}/events", lambda s, p, q, b: send_events(s, p["session_id"], b)),
        ("GET", "/v1/agents", lambda s, p, q, b: list_agents(s, q)),
        ("GET", "/v1/agents/{agent_id}", lambda s, p, q, b: retrieve_agent(s, p["agent_id"], q)),
        ("POST", "/v1/agents/{agent_id}", lambda s, p, q, b: update_agent(s, p["agent_id"], b)),
        ("POST", "/v1/agents/{agent_id}/archive", lambda s, p, q, b: archive_agent(s, p["agent_id"])),
    ]  # fmt: skip
    return [route(method, path, beta, handler) for method, path, handler in table]


# ---------------------------------------------------------------- validation


def normalize_servers(value: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise invalid(f"{field}: must be an array")
    servers = []
    seen: set[str] = set()
    for i, server in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(server, dict) or server.get("type") != "url":
            raise invalid(f"{where}.type: must be 'url'")
        name, url = server.get("name"), server.get("url")
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            raise invalid(f"{where}.name: must be a string of 1-255 characters")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise invalid(f"{where}.url: must be an http(s) URL")
        if name in seen:
            raise invalid(f"{where}.name: duplicate MCP server name {name!r}")
        seen.add(name)
        servers.append({"type": "url", "name": name, "url": url})
    if len(servers) > 20:
        raise invalid(f"{field}: at most 20 MCP servers")
    return servers


def normalize_tools(value: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise invalid(f"{field}: must be an array")
    tools = []
    for i, tool in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise invalid(f"{where}.type: Field required")
        tool = copy.deepcopy(tool)
        if tool["type"] == "mcp_toolset":
            if not isinstance(tool.get("mcp_server_name"), str) or not tool["mcp_server_name"]:
                raise invalid(f"{where}.mcp_server_name: Field required")
            tool.setdefault("configs", [])
            if tool.get("default_config") is None:
                tool["default_config"] = {"enabled": True, "permission_policy": _DEFAULT_POLICY}
        elif tool["type"].startswith("agent_toolset_"):
            tool.setdefault("configs", [])
            if tool.get("default_config") is None:
                tool["default_config"] = {"enabled": True, "permission_policy": _DEFAULT_POLICY}
        elif tool["type"] == "custom":
            for key in ("name", "description", "input_schema"):
                if key not in tool:
                    raise invalid(f"{where}.{key}: Field required")
        else:
            raise invalid(f"{where}.type: unknown tool type {tool['type']!r}")
        tools.append(tool)
    return tools


def check_references(
    servers: list[dict[str, Any]], tools: list[dict[str, Any]], field: str
) -> None:
    """Every server needs an ``mcp_toolset``; every toolset needs its server."""
    names = {s["name"] for s in servers}
    referenced = {t["mcp_server_name"] for t in tools if t["type"] == "mcp_toolset"}
    for name in sorted(names - referenced):
        raise invalid(
            f"{field}.mcp_servers: server {name!r} is not referenced by any mcp_toolset in tools"
        )
    for name in sorted(referenced - names):
        raise invalid(f"{field}.tools: mcp_toolset references unknown MCP server {name!r}")


# ------------------------------------------------------------------ sessions


def _session_api(session: Session) -> dict[str, Any]:
    return {
        "type": "session",
        "id": session.id,
        "agent": copy.deepcopy(session.agent),
        "status": session.status,
        "title": session.title,
        "metadata": dict(session.metadata),
        "created_at": rfc3339(session.created_at),
        "updated_at": rfc3339(session.updated_at),
        "archived_at": rfc3339(session.archived_at),
        "environment_id": "env_sandbox",
        "outcome_evaluations": [],
        "resources": [],
        "stats": {},
        "usage": {},
        "vault_ids": [],
        "deployment_id": None,
    }


def _advance(session: Session, *, poll: bool) -> None:
    """Moves an interrupted running session to idle when its policy says so."""
    if session.status != "running" or session.interrupted_at is None:
        return
    policy = session.idle_policy
    if poll:
        session.polls_since_interrupt += 1
    reached = (
        policy.mode == "immediate"
        or (policy.mode == "polls" and session.polls_since_interrupt >= policy.polls)
        or (
            policy.mode == "seconds" and time.monotonic() - session.interrupted_at >= policy.seconds
        )
    )
    if reached:
        session.status = "idle"
        session.interrupted_at = None
        session.updated_at = now()


def _get_session(state: SandboxState, session_id: str) -> Session:
    session = state.sessions.get(session_id)
    if session is None:
        raise not_found("session", session_id)
    return session


def list_sessions(state: SandboxState, query: Any) -> dict[str, Any]:
    statuses = list(query.getlist("statuses[]")) + list(query.getlist("statuses"))
    for status in statuses:
        if status not in STATUSES:
            raise invalid(f"statuses: unknown status {status!r} (one of {', '.join(STATUSES)})")
    include_archived = query.get("include_archived", "false").lower() == "true"
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid(f"order: must be 'asc' or 'desc' (got {order!r})")
    agent_id = query.get("agent_id")
    with state.lock:
        for session in state.sessions.values():
            _advance(session, poll=False)
        sessions = sorted(
            state.sessions.values(), key=lambda s: s.created_at, reverse=order == "desc"
        )
        items = [
            _session_api(s)
            for s in sessions
            if (include_archived or s.archived_at is None)
            and (not statuses or s.status in statuses)
            and (agent_id is None or s.agent.get("id") == agent_id)
        ]
    return paginate(items, query, bidirectional=True)


def retrieve_session(state: SandboxState, session_id: str) -> dict[str, Any]:
    with state.lock:
        session = _get_session(state, session_id)
        _advance(session, poll=True)
        return _session_api(session)


def update_session(state: SandboxState, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
    with state.lock:
        session = _get_session(state, session_id)
        _advance(session, poll=False)
        if "agent" in body and body["agent"] is not None:
            update = body["agent"]
            if not isinstance(update, dict):
                raise invalid("agent: must be an object")
            unknown = set(update) - {"mcp_servers", "tools"}
            if unknown:
                raise invalid(
                    f"agent: only mcp_servers and tools are updatable mid-session "
                    f"(got {', '.join(sorted(unknown))})"
                )
            if session.status != "idle":
                raise invalid(
                    f"Session {session_id} is {session.status}; its agent can only be updated "
                    "while the session is idle. Send a user.interrupt event and wait for idle."
                )
            servers = (
                normalize_servers(update["mcp_servers"], "agent.mcp_servers")
                if "mcp_servers" in update
                else session.agent["mcp_servers"]
            )
            tools = (
                normalize_tools(update["tools"], "agent.tools")
                if "tools" in update
                else session.agent["tools"]
            )
            check_references(servers, tools, "agent")
            session.agent["mcp_servers"] = servers
            session.agent["tools"] = tools
        if "title" in body:
            session.title = body["title"]
        if isinstance(body.get("metadata"), dict):
            for key, value in body["metadata"].items():
                if value is None:
                    session.metadata.pop(key, None)
                else:
                    session.metadata[key] = str(value)
        session.updated_at = now()
        return _session_api(session)


def archive_session(state: SandboxState, session_id: str) -> dict[str, Any]:
    with state.lock:
        session = _get_session(state, session_id)
        _advance(session, poll=False)
        if session.status == "running":
            raise invalid(f"Session {session_id} is running; running sessions cannot be archived")
        if session.archived_at is None:
            session.archived_at = now()
        return _session_api(session)


def send_events(state: SandboxState, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise invalid("events: must be a non-empty array")
    with state.lock:
        session = _get_session(state, session_id)
        if session.status == "terminated":
            raise invalid(f"Session {session_id} is terminated; it accepts no events")
        sent = []
        for i, event in enumerate(events):
            kind = event.get("type") if isinstance(event, dict) else None
            if kind not in ("user.interrupt", "user.message"):
                raise invalid(
                    f"events[{i}].type: the sandbox supports user.interrupt and user.message "
                    f"(got {kind!r})"
                )
            record = {**copy.deepcopy(event), "id": new_id("sevt_"), "processed_at": rfc3339(now())}
            session.events.append(record)
            sent.append(record)
            if kind == "user.interrupt" and session.status == "running":
                if session.interrupted_at is None:
                    session.interrupted_at = time.monotonic()
                    session.polls_since_interrupt = 0
                _advance(session, poll=False)
            elif kind == "user.message":
                session.status = "running"
                session.interrupted_at = None
            session.updated_at = now()
        return {"data": sent}


def _idle_policy(spec: Any, where: str) -> IdlePolicy:
    if spec is None or spec == "immediate":
        return IdlePolicy()
    if spec == "never":
        return IdlePolicy(mode="never")
    if isinstance(spec, dict) and isinstance(spec.get("polls"), int):
        return IdlePolicy(mode="polls", polls=spec["polls"])
    if isinstance(spec, dict) and isinstance(spec.get("seconds"), int | float):
        return IdlePolicy(mode="seconds", seconds=float(spec["seconds"]))
    raise invalid(f"{where}.idle: 'immediate', 'never', {{'polls': N}} or {{'seconds': S}}")


def seed_session(state: SandboxState, spec: dict[str, Any], i: int) -> dict[str, Any]:
    """Adds a session. ``agent`` is an inline definition or ``agent_id`` names a seeded
    agent whose current version is snapshotted; ``idle`` sets the interrupt policy."""
    where = f"sessions[{i}]"
    if not isinstance(spec, dict):
        raise invalid(f"{where}: must be an object")
    status = spec.get("status", "idle")
    if status not in STATUSES:
        raise invalid(f"{where}.status: one of {', '.join(STATUSES)}")
    with state.lock:
        if spec.get("agent_id"):
            agent = _get_agent(state, spec["agent_id"])
            snapshot = _session_agent(agent.versions[-1])
        else:
            definition = _agent_definition(spec.get("agent", {}), f"{where}.agent")
            snapshot = _session_agent(
                {**definition, "id": new_id("agent_"), "version": 1, "type": "agent"}
            )
        stamp = now()
        session = Session(
            id=spec.get("id") or new_id("sesn_"),
            status=status,
            agent=snapshot,
            created_at=stamp,
            updated_at=stamp,
            title=spec.get("title"),
            metadata=dict(spec.get("metadata", {})),
            idle_policy=_idle_policy(spec.get("idle"), where),
        )
        state.sessions[session.id] = session
        return _session_api(session)


# -------------------------------------------------------------------- agents


def _agent_definition(spec: Any, where: str) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise invalid(f"{where}: must be an object")
    servers = normalize_servers(spec.get("mcp_servers", []), f"{where}.mcp_servers")
    tools = normalize_tools(spec.get("tools", []), f"{where}.tools")
    check_references(servers, tools, where)
    model = spec.get("model", "claude-sonnet-4-5")
    return {
        "name": spec.get("name", "sandbox agent"),
        "description": spec.get("description"),
        "system": spec.get("system"),
        "model": model if isinstance(model, dict) else {"id": model},
        "execution_identity": {"type": "service_account"},
        "mcp_servers": servers,
        "tools": tools,
        "skills": [],
        "metadata": dict(spec.get("metadata", {})),
    }


def _session_agent(version: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "type",
        "name",
        "description",
        "system",
        "model",
        "execution_identity",
        "mcp_servers",
        "tools",
        "skills",
        "version",
    )
    return copy.deepcopy({k: version[k] for k in keys})


def _get_agent(state: SandboxState, agent_id: str) -> Agent:
    agent = state.agents.get(agent_id)
    if agent is None:
        raise not_found("agent", agent_id)
    return agent


def _agent_api(agent: Agent, version: int | None = None) -> dict[str, Any]:
    record = agent.versions[(version or len(agent.versions)) - 1]
    return {**copy.deepcopy(record), "archived_at": rfc3339(agent.archived_at)}


def seed_agent(state: SandboxState, spec: dict[str, Any], i: int) -> dict[str, Any]:
    definition = _agent_definition(spec, f"agents[{i}]")
    stamp = rfc3339(now())
    with state.lock:
        agent_id = spec.get("id") or new_id("agent_")
        first = {
            **definition,
            "type": "agent",
            "id": agent_id,
            "version": 1,
            "created_at": stamp,
            "updated_at": stamp,
            "multiagent": None,
        }
        agent = Agent(id=agent_id, name=definition["name"], versions=[first], created_at=now())
        state.agents[agent_id] = agent
        return _agent_api(agent)


def list_agents(state: SandboxState, query: Any) -> dict[str, Any]:
    include_archived = query.get("include_archived", "false").lower() == "true"
    with state.lock:
        agents = sorted(state.agents.values(), key=lambda a: a.created_at, reverse=True)
        items = [_agent_api(a) for a in agents if include_archived or a.archived_at is None]
    return paginate(items, query)


def retrieve_agent(state: SandboxState, agent_id: str, query: Any) -> dict[str, Any]:
    with state.lock:
        agent = _get_agent(state, agent_id)
        raw = query.get("version")
        if raw is None:
            return _agent_api(agent)
        try:
            version = int(raw)
        except ValueError:
            raise invalid(f"version: must be an integer (got {raw!r})") from None
        if not 1 <= version <= len(agent.versions):
            raise not_found("agent version", f"{agent_id} v{version}")
        return _agent_api(agent, version)


_UPDATABLE = (
    "description",
    "execution_identity",
    "mcp_servers",
    "metadata",
    "model",
    "multiagent",
    "name",
    "skills",
    "system",
    "tools",
)


def update_agent(state: SandboxState, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
    with state.lock:
        agent = _get_agent(state, agent_id)
        if agent.archived_at is not None:
            raise invalid(f"Agent {agent_id} is archived and cannot be updated")
        current = agent.versions[-1]
        expected = body.get("version")
        if expected is not None:
            if not isinstance(expected, int) or expected < 1:
                raise invalid("version: must be an integer >= 1")
            if expected != current["version"]:
                raise ApiError(
                    409,
                    "conflict_error",
                    f"Agent {agent_id} is at version {current['version']}, not {expected}; "
                    "retrieve it and apply the change again",
                )
        nxt = copy.deepcopy(current)
        for key in _UPDATABLE:
            if key not in body:
                continue
            value = body[key]
            if key == "mcp_servers":
                nxt[key] = normalize_servers(value or [], "mcp_servers")
            elif key == "tools":
                nxt[key] = normalize_tools(value or [], "tools")
            elif key == "metadata":
                for mkey, mval in (value or {}).items():
                    if mval is None:
                        nxt["metadata"].pop(mkey, None)
                    else:
                        nxt["metadata"][mkey] = str(mval)
            elif key == "model":
                nxt[key] = value if isinstance(value, dict) else {"id": value}
            elif key == "execution_identity":
                nxt[key] = value or {"type": "service_account"}
            else:
                nxt[key] = value
        check_references(nxt["mcp_servers"], nxt["tools"], "agent")
        if nxt == current:
            return _agent_api(agent)
        nxt["version"] = current["version"] + 1
        nxt["updated_at"] = rfc3339(now())
        agent.versions.append(nxt)
        return _agent_api(agent)


def archive_agent(state: SandboxState, agent_id: str) -> dict[str, Any]:
    with state.lock:
        agent = _get_agent(state, agent_id)
        if agent.archived_at is None:
            agent.archived_at = now()
        return _agent_api(agent)
