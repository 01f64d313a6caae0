"""The seed's network requirements, as data, and a judge of NetworkPolicy egress.

From the MCP tunnels overview ("Network requirements") and the Anthropic IP
addresses page: the setup component reaches ``api.anthropic.com`` on 443/TCP
(Anthropic's inbound ranges), cloudflared reaches the tunnel edge
(``198.41.192.0/19``, ``2606:4700:a0::/44``) on 7844 TCP and UDP, and the proxy
reaches the upstream MCP servers (``upstream.allowed_ips``) on their ports. DNS
(53) is allowed to in-cluster peers so names resolve.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

TUNNEL_EDGE = ("198.41.192.0/19", "2606:4700:a0::/44")
TUNNEL_EDGE_PORT = 7844
ANTHROPIC_API = ("160.79.104.0/23", "153.61.224.0/22", "2607:6bc0::/48")
ANTHROPIC_API_PORT = 443
DNS_PORT = 53

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(items: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(i, strict=False) for i in items]


def _within(net: Network, allowed: list[Network]) -> bool:
    return any(net.version == a.version and net.subnet_of(a) for a in allowed)  # type: ignore[arg-type]


def _ports(rule: dict[str, Any]) -> list[int | str | None]:
    ports = rule.get("ports") or []
    return [p.get("port") for p in ports] or [None]


def judge_egress_rule(rule: dict[str, Any], upstream: list[Network]) -> list[str]:
    """Problems of one ``egress`` rule of a NetworkPolicy (empty: within the seed's
    network requirements). ``upstream`` is the proxy's ``upstream.allowed_ips``."""
    peers = rule.get("to") or []
    ports = _ports(rule)
    if not peers:
        return [f"egress to every destination on port(s) {_show(ports)}"]
    problems: list[str] = []
    edge, api = networks(TUNNEL_EDGE), networks(ANTHROPIC_API)
    for peer in peers:
        block = peer.get("ipBlock")
        if block is None:
            # pod/namespace selectors: in-cluster peers (DNS, in-cluster MCP servers)
            continue
        net = ipaddress.ip_network(block.get("cidr", "0.0.0.0/0"), strict=False)
        if net.prefixlen == 0:
            problems.append(f"egress to {net} (everywhere) on port(s) {_show(ports)}")
        elif _within(net, edge):
            bad = [p for p in ports if p not in (TUNNEL_EDGE_PORT, str(TUNNEL_EDGE_PORT))]
            if bad:
                problems.append(
                    f"egress to the tunnel edge {net} on port(s) {_show(bad)} (only 7844)"
                )
        elif _within(net, api):
            bad = [p for p in ports if p not in (ANTHROPIC_API_PORT, str(ANTHROPIC_API_PORT))]
            if bad:
                problems.append(
                    f"egress to the Anthropic API {net} on port(s) {_show(bad)} (only 443)"
                )
        elif _within(net, upstream):
            continue
        else:
            problems.append(
                f"egress to {net} on port(s) {_show(ports)}: not the tunnel edge, the "
                "Anthropic API nor an upstream range of upstream.allowed_ips"
            )
    return problems


def _show(ports: list[Any]) -> str:
    return ", ".join("any" if p is None else str(p) for p in ports)
