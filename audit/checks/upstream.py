"""Checks of the upstream MCP servers: OAuth required, scope within the allowlist."""

from __future__ import annotations

from typing import TYPE_CHECKING

from audit.checks._common import result, worst
from audit.context import AuditContext
from audit.mcp_probe import list_tools
from audit.model import CheckResult, Evidence, Status

if TYPE_CHECKING:
    from audit.checks import CheckSpec

_OAUTH_STATUS: dict[str, Status] = {
    "protected": "pass",
    "open": "fail",
    "bad_challenge": "fail",
    "unreachable": "unverifiable",
}


def oauth(ctx: AuditContext, spec: CheckSpec) -> CheckResult:
    """Every route's server must answer an unauthenticated ``initialize`` with 401 and
    the resource-metadata challenge of the MCP authorization spec."""
    probes = ctx.oauth_probes()
    evidence = [Evidence(f"route {p.route}: POST {p.url}", p.observed) for p in probes]
    statuses = [_OAUTH_STATUS[p.verdict] for p in probes]
    status = worst(statuses)
    bad = [p.route for p in probes if _OAUTH_STATUS[p.verdict] == "fail"]
    reason = ""
    if bad:
        reason = (
            f"route(s) {', '.join(bad)} do not require OAuth as the MCP authorization spec says"
        )
    elif status == "unverifiable":
        reason = "some upstream servers could not be reached: " + ", ".join(
            p.route for p in probes if p.verdict == "unreachable"
        )
    return result(spec, status, evidence, reason)


def server_scope(ctx: AuditContext, spec: CheckSpec) -> CheckResult:
    """Each route has a ``review.tool_allowlist`` entry and the tools its server lists
    (``tools/list``) all appear in it."""
    allowlist = ctx.target.review.tool_allowlist
    probes = {p.route: p for p in ctx.oauth_probes()}
    ups, source = ctx.upstreams()
    evidence: list[Evidence] = [
        Evidence(
            "inventory review.tool_allowlist",
            str(dict(allowlist)) if allowlist else "not configured",
        )
    ]
    statuses: list[Status] = []
    problems: list[str] = []
    for up in ups:
        allowed = allowlist.get(up.route)
        token = ctx.token_for(up.route)
        probe = probes.get(up.route)
        if probe is not None and probe.verdict == "protected" and not token:
            statuses.append("unverifiable" if allowed is not None else "fail")
            evidence.append(
                Evidence(
                    f"route {up.route}: {up.url}",
                    "requires OAuth and no audit token is configured (audit.mcp_tokens_env)",
                )
            )
            if allowed is None:
                problems.append(f"{up.route}: no tool_allowlist entry")
            continue
        try:
            tools = list_tools(up.url, token)
        except Exception as exc:  # noqa: BLE001 (any transport failure leaves it undecided)
            statuses.append("unverifiable" if allowed is not None else "fail")
            evidence.append(
                Evidence(f"route {up.route}: tools/list {up.url}", f"failed: {_describe(exc)}")
            )
            if allowed is None:
                problems.append(f"{up.route}: no tool_allowlist entry")
            continue
        evidence.append(
            Evidence(f"route {up.route}: tools/list {up.url}", f"lists {sorted(tools)}")
        )
        if allowed is None:
            statuses.append("fail")
            problems.append(f"{up.route}: no tool_allowlist entry (it lists {len(tools)} tool(s))")
            continue
        extra = sorted(set(tools) - set(allowed))
        if extra:
            statuses.append("fail")
            problems.append(f"{up.route}: lists tools outside its allowlist: {extra}")
        else:
            statuses.append("pass")
    return result(spec, worst(statuses), evidence, "; ".join(problems))


def _describe(exc: BaseException) -> str:
    """The innermost errors of an (anyio) exception group, by type and HTTP status."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(sorted({_describe(e) for e in exc.exceptions}))
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")
