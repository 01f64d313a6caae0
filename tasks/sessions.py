"""Detaching a tunnel's MCP servers from Managed Agents sessions and agents (FACTS §3).

A server belongs to the tunnel when its URL's host IS the tunnel domain or lies
under it (``x.<domain>``); ``evil<domain>`` does not. A session's ``agent`` can
only be changed while the session is idle, so a running one is interrupted
(``user.interrupt``) and polled with backoff until idle. Removal replaces both
``mcp_servers`` and ``tools``: the tunnel's servers go with their ``mcp_toolset``
entries, every other tool stays. Agents get a new version the same way.

Every operation re-reads the object first and is a no-op when nothing under the
domain is left, so a re-run never repeats a side effect. Messages API callers keep
no server-side state: :func:`build_blocklist` gives them what to refuse.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anthropic

from core.errors import ConfigError, OperationFailed, TransientError
from tasks.anthropic_client import AnthropicConflict, api_errors

LIVE_STATUSES = ("rescheduling", "running", "idle")
_PAGE_SIZE = 100
_MAX_VERSION_RACES = 3


@dataclass(frozen=True)
class McpServer:
    """One ``{type: url, name, url}`` entry."""

    name: str
    url: str


@dataclass(frozen=True)
class AffectedSession:
    """A non-terminated session with at least one server under the tunnel domain."""

    id: str
    status: str
    agent_id: str
    servers: tuple[McpServer, ...]  # only those under the domain


@dataclass(frozen=True)
class AffectedAgent:
    """An agent whose current version has at least one server under the domain."""

    id: str
    name: str
    version: int
    servers: tuple[McpServer, ...]  # only those under the domain


@dataclass(frozen=True)
class Affected:
    """What :func:`find_affected` found for one tunnel domain."""

    domain: str
    sessions: tuple[AffectedSession, ...] = ()
    agents: tuple[AffectedAgent, ...] = ()

    @property
    def urls(self) -> list[str]:
        """Every distinct server URL under the domain, sorted."""
        found = {s.url for item in (*self.sessions, *self.agents) for s in item.servers}
        return sorted(found)

    def evidence(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "sessions": [
                {"id": s.id, "status": s.status, "servers": [m.name for m in s.servers]}
                for s in self.sessions
            ],
            "agents": [
                {"id": a.id, "version": a.version, "servers": [m.name for m in a.servers]}
                for a in self.agents
            ],
            "urls": self.urls,
        }


@dataclass(frozen=True)
class DetachResult:
    """Outcome of a detach: ``changed`` is False when there was nothing to remove."""

    id: str
    removed_servers: list[str]
    before_count: int
    after_count: int
    version: int | None = None  # the agent's version after the change (agents only)
    changed: bool = field(default=False)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "removed_servers": list(self.removed_servers),
            "before_count": self.before_count,
            "after_count": self.after_count,
        }
        if self.version is not None:
            out["version"] = self.version
        return out


def normalize_domain(domain: str) -> str:
    """Lower-cased domain without a trailing dot.

    Raises:
        ConfigError: ``domain`` is empty or not a hostname.
    """
    if not isinstance(domain, str):
        raise ConfigError("tunnel_domain: must be a string")
    value = domain.strip().lower().rstrip(".")
    if not value or "." not in value or "/" in value or ":" in value or " " in value:
        raise ConfigError(f"tunnel_domain: {domain!r} is not a hostname (e.g. abc.tunnels.example)")
    return value


def url_host(url: str) -> str | None:
    """The lower-cased host of ``url`` (no port, no trailing dot), or None."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.rstrip(".") if host else None


def is_under_domain(url: str, domain: str) -> bool:
    """True when the URL's host is ``domain`` or a subdomain of it."""
    host = url_host(url)
    if host is None:
        return False
    domain = normalize_domain(domain)
    return host == domain or host.endswith("." + domain)


def _servers(obj: Any) -> list[McpServer]:
    return [McpServer(name=s.name, url=s.url) for s in (obj.mcp_servers or [])]


def _matching(servers: Iterable[McpServer], domain: str) -> tuple[McpServer, ...]:
    return tuple(s for s in servers if is_under_domain(s.url, domain))


def find_affected(client: anthropic.Anthropic, tunnel_domain: str) -> Affected:
    """Pages through ALL non-terminated sessions and all agents and keeps those with
    an MCP server under ``tunnel_domain``.

    Raises:
        ConfigError: ``tunnel_domain`` is not a hostname.
        TransientError: The API is temporarily failing.
        AnthropicApiError: The API refused the listing.
    """
    domain = normalize_domain(tunnel_domain)
    sessions = []
    with api_errors("sessions.find_affected", f"sessions using {domain}"):
        for session in client.beta.sessions.list(statuses=list(LIVE_STATUSES), limit=_PAGE_SIZE):
            matched = _matching(_servers(session.agent), domain)
            if matched and session.status != "terminated":
                sessions.append(
                    AffectedSession(
                        id=session.id,
                        status=session.status,
                        agent_id=session.agent.id,
                        servers=matched,
                    )
                )
    agents = []
    with api_errors("sessions.find_affected", f"agents using {domain}"):
        for agent in client.beta.agents.list(limit=_PAGE_SIZE):
            matched = _matching(_servers(agent), domain)
            if matched:
                agents.append(
                    AffectedAgent(
                        id=agent.id, name=agent.name, version=agent.version, servers=matched
                    )
                )
    return Affected(domain=domain, sessions=tuple(sessions), agents=tuple(agents))


def interrupt_and_wait_idle(
    client: anthropic.Anthropic,
    session_id: str,
    timeout_s: float,
    initial_backoff_s: float = 0.2,
    max_backoff_s: float = 2.0,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Makes the session idle: sends ``user.interrupt`` if it is not idle already,
    then polls (backoff doubling from ``initial_backoff_s`` up to ``max_backoff_s``)
    until it is. Returns the final status (``idle``).

    Raises:
        OperationFailed: Not idle within ``timeout_s`` or terminated (names the session).
        TransientError: The API is temporarily failing.
    """
    if timeout_s <= 0 or initial_backoff_s <= 0 or max_backoff_s < initial_backoff_s:
        raise ConfigError(
            "interrupt_and_wait_idle: timeout_s and initial_backoff_s must be > 0 and "
            "max_backoff_s >= initial_backoff_s"
        )
    step = "sessions.interrupt"
    subject = f"session {session_id}"
    deadline = time.monotonic() + timeout_s
    with api_errors(step, subject):
        status = client.beta.sessions.retrieve(session_id).status
        if status == "idle":
            return status
        if status == "terminated":
            raise OperationFailed(step, f"{subject} is terminated; it cannot be made idle")
        client.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])
        backoff = initial_backoff_s
        while True:
            status = client.beta.sessions.retrieve(session_id).status
            if status == "idle":
                return status
            if status == "terminated":
                raise OperationFailed(step, f"{subject} terminated while waiting for idle")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OperationFailed(
                    step,
                    f"{subject} is still {status} {timeout_s:g}s after user.interrupt; "
                    "it cannot be detached while not idle",
                )
            sleep(min(backoff, remaining))
            backoff = min(backoff * 2, max_backoff_s)


def _tool_param(tool: Any) -> dict[str, Any]:
    return tool.model_dump(mode="json", exclude_none=True)


def _without(
    servers: list[McpServer], tools: list[Any], domain: str
) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """(removed names, remaining server params, remaining tool params)."""
    removed = [s.name for s in servers if is_under_domain(s.url, domain)]
    kept_servers = [
        {"type": "url", "name": s.name, "url": s.url} for s in servers if s.name not in removed
    ]
    kept_tools = [
        _tool_param(t)
        for t in tools
        if not (getattr(t, "type", None) == "mcp_toolset" and t.mcp_server_name in removed)
    ]
    return removed, kept_servers, kept_tools


def _session_id(session: AffectedSession | str) -> str:
    return session if isinstance(session, str) else session.id


def detach_session(
    client: anthropic.Anthropic, session: AffectedSession | str, domain: str
) -> DetachResult:
    """Removes the servers under ``domain`` and their ``mcp_toolset`` entries from one
    session (other sessions are untouched). Re-reads the session first; when nothing
    is under the domain the session is left alone (``changed`` False). The session
    must be idle: call :func:`interrupt_and_wait_idle` first.

    Raises:
        OperationFailed: The session is not idle, or still has servers under the domain
            after the update (names the session).
        AnthropicApiError: The API refused the update.
        TransientError: The API is temporarily failing.
    """
    domain = normalize_domain(domain)
    session_id = _session_id(session)
    step, subject = "sessions.detach", f"session {session_id}"
    with api_errors(step, subject):
        current = client.beta.sessions.retrieve(session_id)
    servers = _servers(current.agent)
    removed, kept_servers, kept_tools = _without(servers, list(current.agent.tools), domain)
    if not removed:
        return DetachResult(session_id, [], len(servers), len(servers))
    if current.status != "idle":
        raise OperationFailed(
            step, f"{subject} is {current.status}; interrupt it and wait for idle"
        )
    with api_errors(step, subject):
        updated = client.beta.sessions.update(
            session_id, agent={"mcp_servers": kept_servers, "tools": kept_tools}
        )
    after = _servers(updated.agent)
    if _matching(after, domain):
        raise OperationFailed(
            step, f"{subject} still lists servers under {domain} after the update"
        )
    return DetachResult(session_id, removed, len(servers), len(after), changed=True)


def detach_agent(
    client: anthropic.Anthropic, agent: AffectedAgent | str, domain: str
) -> DetachResult:
    """Makes a new agent version without the servers under ``domain`` (and their
    toolsets). Uses the current version for optimistic concurrency and re-reads and
    retries when another writer got there first. No-op when nothing is under the
    domain. Existing sessions keep their snapshot: detach them with
    :func:`detach_session`.

    Raises:
        TransientError: Still conflicting after retries, or the API is temporarily
            failing.
        OperationFailed: Servers remain after the update (names the agent).
        AnthropicApiError: The API refused the update.
    """
    domain = normalize_domain(domain)
    agent_id = agent if isinstance(agent, str) else agent.id
    step, subject = "agents.detach", f"agent {agent_id}"
    for _ in range(_MAX_VERSION_RACES):
        with api_errors(step, subject):
            current = client.beta.agents.retrieve(agent_id)
        servers = _servers(current)
        removed, kept_servers, kept_tools = _without(servers, list(current.tools), domain)
        if not removed:
            return DetachResult(agent_id, [], len(servers), len(servers), version=current.version)
        try:
            with api_errors(step, subject):
                updated = client.with_options(max_retries=0).beta.agents.update(
                    agent_id,
                    version=current.version,
                    mcp_servers=kept_servers,
                    tools=kept_tools,  # type: ignore[arg-type]
                )
        except AnthropicConflict:
            # Another writer made a new version (409), or the version precondition no
            # longer holds (412): re-read and recompute.
            continue
        after = _servers(updated)
        if _matching(after, domain):
            raise OperationFailed(step, f"{subject} still lists servers under {domain}")
        return DetachResult(
            agent_id, removed, len(servers), len(after), version=updated.version, changed=True
        )
    raise TransientError(
        f"{step}: {subject}: version kept changing; gave up after {_MAX_VERSION_RACES} tries "
        "(another writer is active: the step is tried again later)"
    )


def build_blocklist(domain: str, urls: Iterable[str]) -> dict[str, Any]:
    """The blocklist published for Messages API callers, who pass ``mcp_servers`` per
    request and so can only be told what to refuse: the tunnel domain, every host
    under it (``*.<domain>``), and the known URLs and hosts under it.

    Raises:
        ConfigError: ``domain`` is not a hostname.
    """
    domain = normalize_domain(domain)
    under = sorted({u for u in urls if is_under_domain(u, domain)})
    hosts = sorted({h for h in (url_host(u) for u in under) if h})
    return {
        "tunnel_domain": domain,
        "host_patterns": [domain, f"*.{domain}"],
        "urls": under,
        "hosts": hosts,
    }
