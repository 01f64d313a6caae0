"""The checks, one function each, in report order.

A check takes an :class:`~audit.context.AuditContext` and returns a
:class:`~audit.model.CheckResult`. It only reads. A :class:`~audit.facts.FactUnavailable`
it lets through becomes ``unverifiable`` with that reason (``audit.engine``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from audit.context import AuditContext
from audit.model import CheckResult, Severity


@dataclass(frozen=True)
class CheckSpec:
    """One check; ``kinds``: the target kinds it applies to (others do not run it)."""

    id: str
    title: str
    severity: Severity
    run: Callable[[AuditContext, CheckSpec], CheckResult]
    kinds: tuple[str, ...] = ("compose", "helm")


def registry(kind: str | None = None) -> list[CheckSpec]:
    """Every check (of target kind ``kind``, when given), in report order."""
    from audit.checks import credentials, network, operations, supply, upstream

    specs = [
        CheckSpec("oauth_upstream", "OAuth on every upstream MCP server", "high", upstream.oauth),
        CheckSpec(
            "allowed_ips",
            "upstream.allowed_ips restricted to small private ranges",
            "high",
            network.allowed_ips,
        ),
        CheckSpec("image_digest", "Images pinned by SHA-256 digest", "medium", supply.image_digest),
        CheckSpec(
            "network_reach",
            "Network reach limited to the seed's network requirements",
            "medium",
            network.network_reach,
        ),
        CheckSpec(
            "networkpolicy_enforcement",
            "NetworkPolicies enforced by the cluster's network plugin",
            "high",
            network.policy_enforcement,
            kinds=("helm",),
        ),
        CheckSpec(
            "credentials_at_rest", "Credentials protected at rest", "high", credentials.at_rest
        ),
        CheckSpec(
            "credential_age",
            "Tunnel token and server certificate younger than rotation.max_age",
            "medium",
            credentials.age,
        ),
        CheckSpec(
            "certificate_expiry",
            "Server certificate not expired nor expiring soon",
            "high",
            credentials.expiry,
        ),
        CheckSpec(
            "rotation_drill",
            "Last scheduled rotation drill succeeded",
            "medium",
            operations.rotation_drill,
        ),
        CheckSpec(
            "monitoring",
            "Log review sources readable and an alert source mapped",
            "medium",
            operations.monitoring,
        ),
        CheckSpec(
            "server_scope",
            "Upstream servers list only allowlisted tools",
            "medium",
            upstream.server_scope,
        ),
        CheckSpec("sso", "SSO enforced for the organization", "medium", operations.sso),
    ]
    return [s for s in specs if kind is None or kind in s.kinds]
