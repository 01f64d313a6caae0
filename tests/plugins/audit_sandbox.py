"""The hardening audit's sandbox (sandbox/audit_sites.py): a hardened and a weak
Compose target on the session's podman engine, each with its own upstream MCP server
(real MCP over HTTP, one behind the session's OAuth sandbox), and an inventory. One
per session: tests that change a target or the inventory restore them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.audit_sites import AuditSandbox, provision_audit_sites
from sandbox.site import TOKEN_ENV, write_inventory
from sandbox.stack import teardown_stack


@dataclass
class AuditSite:
    box: AuditSandbox
    inventory: Path
    evidence: Path
    env: dict[str, str]
    client: Any

    def write_inventory(self, **extra: Any) -> None:
        write_inventory(self.inventory, self.box.targets, intake=self.box.intake, **extra)


@pytest.fixture(scope="session")
def audit_site(
    tmp_path_factory: pytest.TempPathFactory,
    engine: Any,
    anthropic_sandbox: Any,
    oauth_sandbox: Any,
) -> Iterator[AuditSite]:
    root = tmp_path_factory.mktemp("audit")
    client = engine.client()
    box = provision_audit_sites(
        root=root / "sites",
        docker_client=client,
        docker_host=engine.docker_host,
        anthropic_state=anthropic_sandbox.state,
        anthropic_url=anthropic_sandbox.url,
        oauth_url=oauth_sandbox.url,
        oauth_server_client=(oauth_sandbox.client_id, oauth_sandbox.client_secret),
        oauth_audit_client=oauth_sandbox.other_client_id,
    )
    env = {
        **os.environ,
        **box.env,
        TOKEN_ENV: anthropic_sandbox.token,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    site = AuditSite(box, root / "inventory.yaml", root / "evidence", env, client)
    site.write_inventory()
    try:
        yield site
    finally:
        box.stop()
        for compose in (box.hardened, box.weak):
            teardown_stack(client, compose.project)
