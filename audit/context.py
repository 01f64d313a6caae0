"""What a check sees: the target, its facts reader, the audit settings, the clock,
and the upstream MCP servers (from the proxy config's ``routes``), probed once."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from audit.config import AuditSettings
from audit.facts import FactUnavailable, TargetFacts
from audit.mcp_probe import OAuthProbe, probe_oauth


@dataclass(frozen=True)
class Upstream:
    """One route of the proxy: its name, its upstream and where the auditor reaches
    its MCP endpoint."""

    route: str
    upstream: str
    url: str


@dataclass
class AuditContext:
    name: str
    target: Any  # runbook.inventory.Target
    inventory: Any  # runbook.inventory.Inventory
    evidence_dir: Path
    facts: TargetFacts
    settings: AuditSettings
    now: dt.datetime
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _cache: dict[str, Any] = field(default_factory=dict)

    def proxy_config(self) -> tuple[dict[str, Any], str]:
        if "config" not in self._cache:
            try:
                got = self.facts.proxy_config()
                self._cache["config"] = (got.value, got.source)
            except FactUnavailable as exc:
                self._cache["config"] = exc
        value = self._cache["config"]
        if isinstance(value, FactUnavailable):
            raise value
        return value

    def upstreams(self) -> tuple[list[Upstream], str]:
        """The proxy's routes (documented form: a map of subdomain or hostname to
        ``scheme://host:port``) and where each MCP endpoint is reached."""
        config, source = self.proxy_config()
        routes = config.get("routes")
        pairs: list[tuple[str, str]] = []
        if isinstance(routes, dict):
            pairs = [(str(k), str(v)) for k, v in routes.items()]
        elif isinstance(routes, list):  # older list form: [{host, upstream}]
            for item in routes:
                if isinstance(item, dict) and item.get("host") and item.get("upstream"):
                    pairs.append((str(item["host"]).split(".")[0], str(item["upstream"])))
        if not pairs:
            raise FactUnavailable(f"{source} has no routes: no upstream MCP server to check")
        found = []
        for route, upstream in pairs:
            url = self.settings.mcp_urls.get(route)
            if url is None:
                parts = urlsplit(upstream)
                url = f"{parts.scheme}://{parts.netloc}{self.settings.mcp_path}"
            found.append(Upstream(route, upstream, url))
        return found, source

    def oauth_probes(self) -> list[OAuthProbe]:
        if "probes" not in self._cache:
            ups, _ = self.upstreams()
            self._cache["probes"] = [probe_oauth(u.route, u.url) for u in ups]
        return list(self._cache["probes"])

    def token_for(self, route: str) -> str | None:
        name = self.settings.mcp_tokens_env.get(route)
        return self.env.get(name) if name else None
