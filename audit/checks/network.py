"""Checks of network exposure: ``upstream.allowed_ips`` and the stack's network reach."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from audit.checks._common import result
from audit.context import AuditContext
from audit.model import CheckResult, Evidence

if TYPE_CHECKING:
    from audit.checks import CheckSpec

# The proxy's default when allowed_ips is absent (MCP tunnels reference).
RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def _upstream_section(config: dict) -> dict:
    section = config.get("upstream")
    return section if isinstance(section, dict) else {}


def allowed_ips(ctx: AuditContext, spec: CheckSpec) -> CheckResult:
    """Flags ``upstream.allowed_ips`` when missing (the proxy then allows all of
    RFC 1918), when validation is disabled, when it holds ``0.0.0.0/0`` or ``::/0``, a
    range broader than ``audit.allowed_ips_max_prefix``, or public addresses."""
    config, source = ctx.proxy_config()
    upstream = _upstream_section(config)
    items = upstream.get("allowed_ips")
    evidence = [Evidence(source, f"upstream.allowed_ips = {items!r}")]
    if upstream.get("disable_ip_validation"):
        evidence.append(Evidence(source, "upstream.disable_ip_validation = true"))
        return result(
            spec,
            "fail",
            evidence,
            "upstream IP validation is disabled (the proxy's SSRF defense is off)",
        )
    if not items:
        return result(
            spec,
            "fail",
            evidence,
            "upstream.allowed_ips is not set: the proxy allows every RFC 1918 range "
            f"({', '.join(RFC1918)}); list the smallest ranges that cover the MCP servers",
        )
    if not isinstance(items, list):
        return result(spec, "fail", evidence, "upstream.allowed_ips must be a list of CIDRs")
    problems = []
    max_prefix = ctx.settings.allowed_ips_max_prefix
    for item in items:
        try:
            net = ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            problems.append(f"{item!r} is not an address or CIDR")
            continue
        if net.prefixlen == 0:
            problems.append(f"{net} allows every address")
            continue
        if net.version == 6:
            # the reference: "IPv4 CIDR ranges or single addresses"
            problems.append(f"{net} is IPv6: upstream.allowed_ips takes IPv4 ranges only")
            continue
        if net.prefixlen < max_prefix:
            problems.append(f"{net} is broader than /{max_prefix} (audit.allowed_ips_max_prefix)")
        if not (net.is_private or net.is_loopback) or net.is_global:
            problems.append(f"{net} includes public addresses")
    return result(spec, "fail" if problems else "pass", evidence, "; ".join(problems))


def network_reach(ctx: AuditContext, spec: CheckSpec) -> CheckResult:
    """Helm: a NetworkPolicy selects the pods and limits egress to the seed's network
    requirements. Compose: what the compose file shows (host network, published
    ports, privileges); the host firewall itself is unverifiable."""
    try:
        config, _ = ctx.proxy_config()
        allowed = [str(i) for i in (_upstream_section(config).get("allowed_ips") or [])]
    except Exception:  # noqa: BLE001 (without the config, no upstream range is allowed)
        allowed = []
    view = ctx.facts.network(allowed)
    evidence = [Evidence(view.source, line) for line in view.observed]
    if view.problems:
        return result(spec, "fail", evidence, "; ".join(view.problems))
    if not view.verifiable:
        return result(spec, "unverifiable", evidence, view.unverifiable_reason)
    return result(spec, "pass", evidence)


def policy_enforcement(ctx: AuditContext, spec: CheckSpec) -> CheckResult:
    """Helm: whether a network plugin that enforces NetworkPolicy is known present
    (tasks/kubernetes_cni.py): ``enforced`` passes, ``not enforced`` fails (every
    NetworkPolicy of the cluster is a no-op), anything it cannot see is
    ``unverifiable`` — never claimed. The evidence lists the DaemonSets, CRDs and node
    annotations read, and the verdict."""
    found = ctx.facts.policy_enforcement()
    evidence = [Evidence(source, observed) for source, observed in found.evidence]
    evidence.append(Evidence("NetworkPolicy enforcement", found.status))
    status = {"enforced": "pass", "not enforced": "fail"}.get(found.status, "unverifiable")
    reason = "" if status == "pass" else f"NetworkPolicy {found.status}: {found.reason}"
    return result(spec, status, evidence, reason)  # type: ignore[arg-type]
