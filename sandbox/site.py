"""A sandbox "site": a simulated Compose stack wired to a sandbox tunnel, and the
inventory that describes it. Used by the demo and the end-to-end tests, so both
exercise exactly the same set-up."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import yaml

from sandbox.anthropic_api import seed_state
from sandbox.anthropic_state import SandboxState
from sandbox.stack import deploy_stack, write_data_dir

TOKEN_ENV = "MCP_IR_SANDBOX_ANTHROPIC_TOKEN"

DEFAULT_PEOPLE = {
    "alice": {"slack_user_id": "U0ALICE", "email": "alice@example.com"},
    "bob": {"slack_user_id": "U0BOB", "email": "bob@example.com"},
    "carol": {"slack_user_id": "U0CAROL", "email": "carol@example.com"},
    "dave": {"slack_user_id": "U0DAVE", "email": "dave@example.com"},
    "mallory": {"slack_user_id": "U0MALLORY"},
}
DEFAULT_GROUPS = {"oncall": ["alice", "bob", "carol"], "security-leads": ["dave"]}


@dataclass
class ComposeSite:
    name: str
    project: str
    root: Path
    data_dir: Path
    tunnel_id: str
    domain: str
    token: str
    docker_host: str
    target: dict[str, Any]


def provision_compose_site(
    *,
    name: str,
    root: Path,
    docker_client: docker.DockerClient,
    docker_host: str,
    anthropic_state: SandboxState,
    anthropic_url: str,
    canary: str | None = None,
    project: str | None = None,
) -> ComposeSite:
    """Creates a sandbox tunnel (with a registered CA), writes the Compose files and
    deploys the simulated stack with that tunnel's token."""
    seeded = seed_state(anthropic_state, {"tunnels": [{"display_name": f"{name} (sandbox)"}]})[
        "tunnels"
    ][0]
    project = project or f"{name}-{secrets.token_hex(3)}"
    layout = write_data_dir(root / "data", seeded["id"], seeded["domain"], seeded["tunnel_token"])
    deploy_stack(
        docker_client,
        project,
        layout,
        token=seeded["tunnel_token"],
        tunnel_id=seeded["id"],
        domain=seeded["domain"],
        canary=canary,
        interval_s=0.5,
    )
    target = {
        "kind": "compose",
        "sandbox": True,
        "description": "simulated MCP tunnel stack in the local container engine",
        "labels": {"env": "sandbox"},
        "compose": {
            "project": project,
            "docker_host": docker_host,
            "data_dir": str(layout.data_dir),
            "config_dir": str(layout.config_dir),
            "compose_file": str(layout.compose_file),
        },
        "tunnel": {"id": seeded["id"], "domain": seeded["domain"]},
        "anthropic": {"base_url": anthropic_url, "credentials": {"bearer_env": TOKEN_ENV}},
    }
    return ComposeSite(
        name=name,
        project=project,
        root=root,
        data_dir=layout.data_dir,
        tunnel_id=seeded["id"],
        domain=seeded["domain"],
        token=seeded["tunnel_token"],
        docker_host=docker_host,
        target=target,
    )


def write_inventory(path: Path, targets: dict[str, dict[str, Any]], **extra: Any) -> Path:
    doc: dict[str, Any] = {"people": DEFAULT_PEOPLE, "groups": DEFAULT_GROUPS, "targets": targets}
    doc.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path
