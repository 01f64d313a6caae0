"""detach_servers: cut every Managed Agents session and agent off the tunnel (FACTS §3).

Every session and agent whose ``mcp_servers`` point at the tunnel domain (or a host
under it; ``evil<domain>`` is not under it) loses those servers and their
``mcp_toolset`` entries. Agents go first, so that no new session snapshots the
tunnel's servers while the sessions are being detached; then idle sessions are
updated directly and running ones are interrupted (``user.interrupt``), waited for
until idle (with backoff, bounded by the step timeout) and updated. A session that
does not become idle in time fails the step by id: it is never skipped.

Messages API callers keep no server-side state, so the blocklist (domain, URLs,
hosts) is published as an artifact first, before anything is changed.

Resumable: every interrupt and every update is recorded right after it happens,
and the plan of a re-run lists the trail's already-handled sessions and agents
beside the still-affected ones, so a resumed run keeps the approved plan hash and
touches nothing already detached (the adapter re-reads each object first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core import failpoints
from core.errors import ConfigError, StepFailed
from core.operations import Operation
from runbook.context import StepContext
from runbook.registry import Plan, Step, register
from runbook.steps._evidence import dumps

BLOCKLIST_SUBJECT = "blocklist"
# The share of the step timeout kept back from waiting for idle, so that the step
# fails with a named session instead of being cut off by the task timeout.
_TIMEOUT_MARGIN = 0.25
_MIN_MARGIN_S = 1.5
_MIN_WAIT_S = 0.5


@dataclass(frozen=True)
class Scope:
    """What the plan covers: session ids (with whether each needs an interrupt) and
    agent ids, from the API now plus what the trail says was already handled."""

    domain: str
    sessions: dict[str, bool]  # session id -> needs user.interrupt
    agents: list[str]


def public_url(url: str) -> str:
    """The URL without userinfo, query or fragment: a blocklist entry never carries a
    credential that may have been embedded in a server URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def tunnel_domain(ctx: StepContext) -> str:
    """The tunnel's domain: the inventory's, else the tunnel record's."""
    from tasks import sessions, tunnels

    domain = ctx.target.tunnel.domain
    if not domain:
        domain = tunnels.get_tunnel(ctx.clients.anthropic, ctx.target.tunnel.id).domain
    try:
        return sessions.normalize_domain(domain)
    except ConfigError as exc:
        raise ConfigError(f"targets.{ctx.incident.target}.tunnel.domain: {exc.detail}") from None


def _scope(ctx: StepContext) -> Scope:
    from tasks import sessions

    domain = tunnel_domain(ctx)
    affected = sessions.find_affected(ctx.clients.anthropic, domain)
    found: dict[str, bool] = {s.id: s.status != "idle" for s in affected.sessions}
    agents = {a.id for a in affected.agents}
    for rec in ctx.step_records():
        if rec.kind == "session.interrupted":
            found[rec.data["session_id"]] = True
        elif rec.kind == "session.detached":
            found[rec.data["session_id"]] = found.get(rec.data["session_id"], False) or bool(
                rec.data.get("interrupted")
            )
        elif rec.kind == "agent.detached":
            agents.add(rec.data["agent_id"])
    return Scope(domain=domain, sessions=dict(sorted(found.items())), agents=sorted(agents))


def _wait_budget(ctx: StepContext) -> float:
    """Seconds the whole step may spend waiting for sessions to become idle."""
    configured = ctx.params.get("idle_wait_s")
    budget = ctx.timeout_s - max(_MIN_MARGIN_S, ctx.timeout_s * _TIMEOUT_MARGIN)
    if configured is not None:
        try:
            value = float(configured)
        except (TypeError, ValueError):
            raise ConfigError(
                f"detach_servers.params.idle_wait_s: {configured!r} is not a number"
            ) from None
        if value <= 0:
            raise ConfigError("detach_servers.params.idle_wait_s: must be > 0")
        budget = min(budget, value)
    return max(budget, _MIN_WAIT_S)


@register
class DetachServers(Step):
    key = "detach_servers"
    reversible = False
    description = (
        "Remove the tunnel's MCP servers from every Managed Agents session and agent; "
        "publish the blocklist for Messages API callers"
    )

    def plan(self, ctx: StepContext) -> Plan:
        scope = _scope(ctx)
        running = [sid for sid, interrupt in scope.sessions.items() if interrupt]
        calls = ["GET /v1/sessions", "GET /v1/agents"]
        ops = [Operation("anthropic", "POST", f"/v1/agents/{aid}") for aid in scope.agents]
        ops += [Operation("anthropic", "POST", f"/v1/sessions/{sid}/events") for sid in running]
        ops += [Operation("anthropic", "POST", f"/v1/sessions/{sid}") for sid in scope.sessions]
        return self.new_plan(
            ctx,
            summary=(
                f"detach servers under {scope.domain} from {len(scope.sessions)} session(s) "
                f"({len(running)} to interrupt first) and {len(scope.agents)} agent(s) "
                "(irreversible: new agent versions); publish the blocklist"
            ),
            resources=[f"session:{sid}" for sid in scope.sessions]
            + [f"agent:{aid}" for aid in scope.agents],
            api_calls=calls,
            operations=ops,
            parameters={"tunnel_domain": scope.domain, "idle_wait_s": _wait_budget(ctx)},
        )

    def check(self, ctx: StepContext) -> str | None:
        from tasks import sessions

        if not ctx.step_records("artifact"):
            return None  # the blocklist is not published yet
        domain = tunnel_domain(ctx)
        affected = sessions.find_affected(ctx.clients.anthropic, domain)
        if affected.sessions or affected.agents:
            return None
        return f"no session or agent uses a server under {domain}; blocklist already published"

    def apply(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import sessions

        client = ctx.clients.anthropic
        started = time.monotonic()
        budget = _wait_budget(ctx)
        domain = tunnel_domain(ctx)
        affected = sessions.find_affected(client, domain)
        blocklist = self._publish_blocklist(ctx, domain, affected.urls)

        agents = []
        for agent in affected.agents:
            result = sessions.detach_agent(client, agent, domain)
            if result.changed:
                ctx.record("agent.detached", {"agent_id": agent.id, **result.as_dict()})
                agents.append(agent.id)
            failpoints.reach(self.key, "after_agent")

        detached, stuck = [], []
        for session in affected.sessions:
            interrupted = False
            if session.status != "idle":
                left = budget - (time.monotonic() - started)
                try:
                    sessions.interrupt_and_wait_idle(
                        client, session.id, timeout_s=max(left, _MIN_WAIT_S)
                    )
                except StepFailed as exc:
                    ctx.record("session.not_idle", {"session_id": session.id, "error": exc.detail})
                    stuck.append(session.id)
                    continue
                interrupted = True
                ctx.record("session.interrupted", {"session_id": session.id})
            result = sessions.detach_session(client, session, domain)
            if result.changed:
                ctx.record(
                    "session.detached",
                    {
                        "session_id": session.id,
                        "agent_id": session.agent_id,
                        "status_before": session.status,
                        "interrupted": interrupted,
                        **result.as_dict(),
                    },
                )
                detached.append(session.id)
            failpoints.reach(self.key, "after_session")
        if stuck:
            raise StepFailed(
                self.key,
                f"session(s) {', '.join(stuck)} did not become idle within {budget:g}s of "
                "user.interrupt and still use servers under "
                f"{domain}; they were NOT detached (the others were)",
            )
        return {
            "tunnel_domain": domain,
            "sessions_detached": detached,
            "agents_detached": agents,
            "blocklist_sha256": blocklist,
        }

    def _publish_blocklist(self, ctx: StepContext, domain: str, urls: list[str]) -> str:
        """Stores the blocklist once per incident (a resumed run, which may have fewer
        affected objects left, keeps the first and complete one)."""
        from tasks import sessions

        for rec in ctx.step_records("artifact"):
            if rec.data.get("subject") == BLOCKLIST_SUBJECT:
                return str(rec.data["sha256"])
        doc = sessions.build_blocklist(domain, [public_url(u) for u in urls])
        doc["purpose"] = (
            "Messages API callers pass mcp_servers per request: refuse every URL whose host "
            "matches host_patterns"
        )
        record = ctx.artifact(
            dumps(doc),
            name=f"blocklist-{domain}.json",
            media_type="application/json",
            subject=BLOCKLIST_SUBJECT,
        )
        return str(record.data["sha256"])

    def verify(self, ctx: StepContext) -> dict[str, Any]:
        from tasks import sessions

        domain = tunnel_domain(ctx)
        left = sessions.find_affected(ctx.clients.anthropic, domain)
        if left.sessions or left.agents:
            names = [f"session {s.id}" for s in left.sessions] + [
                f"agent {a.id}" for a in left.agents
            ]
            raise StepFailed(self.key, f"still using servers under {domain}: {', '.join(names)}")
        return {"tunnel_domain": domain, "remaining": 0}
