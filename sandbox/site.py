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
    seeded = _seed_tunnel(anthropic_state, name)
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
    compose = {
        "project": project,
        "docker_host": docker_host,
        "data_dir": str(layout.data_dir),
        "config_dir": str(layout.config_dir),
        "compose_file": str(layout.compose_file),
    }
    description = "simulated MCP tunnel stack in the local container engine"
    target = _sandbox_target("compose", compose, description, seeded, anthropic_url)
    return ComposeSite(
        project=project,
        data_dir=layout.data_dir,
        docker_host=docker_host,
        **_site_fields(name, root, seeded, target),
    )


def _seed_tunnel(anthropic_state: SandboxState, name: str) -> dict[str, Any]:
    """A new tunnel of site ``name`` in the Anthropic sandbox (id, domain, token)."""
    seeded = seed_state(anthropic_state, {"tunnels": [{"display_name": f"{name} (sandbox)"}]})
    return seeded["tunnels"][0]


def _site_fields(
    name: str, root: Path, seeded: dict[str, Any], target: dict[str, Any]
) -> dict[str, Any]:
    """What every kind of site records: its name, root, tunnel and inventory target."""
    return {
        "name": name,
        "root": root,
        "tunnel_id": seeded["id"],
        "domain": seeded["domain"],
        "token": seeded["tunnel_token"],
        "target": target,
    }


def _sandbox_target(
    kind: str,
    section: dict[str, Any],
    description: str,
    seeded: dict[str, Any],
    anthropic_url: str,
) -> dict[str, Any]:
    """A sandbox target's inventory entry: its ``kind`` section, the seeded tunnel and
    the Anthropic sandbox reached with the bearer token in ``TOKEN_ENV``."""
    return {
        "kind": kind,
        "sandbox": True,
        "description": description,
        "labels": {"env": "sandbox"},
        kind: section,
        "tunnel": {"id": seeded["id"], "domain": seeded["domain"]},
        "anthropic": {"base_url": anthropic_url, "credentials": {"bearer_env": TOKEN_ENV}},
    }


def offline_target(project: str, data_dir: Path) -> dict[str, Any]:
    """A compose sandbox target's inventory entry for work that never reaches its stack
    or the Tunnels API (signing, checkpoints, trails): fixed tunnel id, bearer token
    named but not needed."""
    return {
        "kind": "compose",
        "sandbox": True,
        "compose": {"project": project, "data_dir": str(data_dir)},
        "tunnel": {"id": "tnl_0123abc"},
        "anthropic": {"credentials": {"bearer_env": "ANTHROPIC_TEST_TOKEN"}},
    }


def write_inventory(path: Path, targets: dict[str, dict[str, Any]], **extra: Any) -> Path:
    """Writes the inventory; the sandbox people get SSH keys and the engine its
    checkpoint key, generated once into ``keys/`` beside the file (``sandbox.keys``).
    A ``slack`` section gets the receiving service's countersigning key."""
    from sandbox.keys import engine_key, people_keys, slack_receiver_key

    keys_dir = path.parent / "keys"
    public = people_keys(keys_dir, DEFAULT_PEOPLE)
    people = {n: {**p, "ssh_keys": [public[n]]} for n, p in DEFAULT_PEOPLE.items()}
    key_file, engine_public = engine_key(keys_dir)
    doc: dict[str, Any] = {
        "people": people,
        "groups": DEFAULT_GROUPS,
        "engine": {
            "checkpoint_public_key": engine_public,
            "checkpoint_key_file": str(key_file),
        },
        "targets": targets,
    }
    doc.update(extra)
    slack = doc.get("slack")
    if isinstance(slack, dict) and "receiver_key_file" not in slack:
        receiver_file, receiver_public = slack_receiver_key(keys_dir)
        doc["slack"] = {
            **slack,
            "receiver_key_file": str(receiver_file),
            "receiver_public_key": receiver_public,
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class HelmSite:
    """A sandbox Kubernetes cluster with the mcp-tunnel release installed on a sandbox
    tunnel; ``served.stop()`` ends it."""

    name: str
    namespace: str
    release: str
    root: Path
    kubeconfig: Path
    tunnel_id: str
    domain: str
    token: str
    served: Any  # sandbox.kubernetes_api.SandboxCluster
    target: dict[str, Any]

    @property
    def seeded(self) -> Any:  # sandbox.helm_release.SeededRelease
        return self.served.seeded


def _adopt_tunnel(served: Any, tunnel: dict[str, Any]) -> None:
    """Makes the seeded release run on the sandbox tunnel: its credential Secrets and
    its pods' logs name that tunnel's id, domain and token instead of the seed's."""
    import base64

    from sandbox.k8s_store import RESOURCES

    seeded = served.seeded
    swaps = {
        seeded.credentials["tunnel-id"]: tunnel["id"],
        seeded.credentials["tunnel-domain"]: tunnel["domain"],
        seeded.credentials["tunnel-token"]: tunnel["tunnel_token"],
    }

    def swap(text: str) -> str:
        for old, new in swaps.items():
            text = text.replace(old, new)
        return text

    cluster = served.cluster
    secret = RESOURCES[("", "secrets")]
    with cluster.store.lock:
        for name in (seeded.release, f"{seeded.release}-token", f"{seeded.release}-cert"):
            obj = cluster.store.find(secret, seeded.namespace, name)
            if obj is not None:
                obj["data"] = {
                    k: base64.b64encode(swap(base64.b64decode(v).decode()).encode()).decode()
                    for k, v in (obj.get("data") or {}).items()
                }
        for runtime in cluster.runtime.values():
            for logs in runtime.logs.values():
                logs.current = [(ts, swap(line)) for ts, line in logs.current]
                if logs.previous is not None:
                    logs.previous = [(ts, swap(line)) for ts, line in logs.previous]
        cluster.log_templates = {
            c: [swap(line) for line in lines] for c, lines in cluster.log_templates.items()
        }
    seeded.credentials.update(
        {
            "tunnel-id": tunnel["id"],
            "tunnel-domain": tunnel["domain"],
            "tunnel-token": tunnel["tunnel_token"],
        }
    )


def provision_helm_site(
    *,
    name: str,
    root: Path,
    anthropic_state: SandboxState,
    anthropic_url: str,
    canary: str | None = None,
    namespace: str = "mcp-tunnel",
    cluster: Any = None,
) -> HelmSite:
    """Creates a sandbox tunnel (with a registered CA), starts the sandbox Kubernetes
    API (in this process, on a loopback port) with the mcp-tunnel Helm release
    installed on that tunnel, and writes its kubeconfig under ``root``. ``canary`` is
    a secret value cloudflared's debug log leaks; ``cluster`` a pre-built
    ``sandbox.k8s_cluster.Cluster`` (e.g. with a faster simulated kubelet)."""
    from sandbox.kubernetes_api import serve_sandbox

    seeded = _seed_tunnel(anthropic_state, name)
    root.mkdir(parents=True, exist_ok=True)
    served = serve_sandbox(root / "kubeconfig", namespace=namespace, cluster=cluster, canary=canary)
    _adopt_tunnel(served, seeded)
    release = served.seeded.release
    helm = {
        "release": release,
        "namespace": namespace,
        "deployment": release,
        "kubeconfig": str(served.kubeconfig),
    }
    description = "mcp-tunnel Helm release in the sandbox Kubernetes API"
    target = _sandbox_target("helm", helm, description, seeded, anthropic_url)
    return HelmSite(
        namespace=namespace,
        release=release,
        kubeconfig=served.kubeconfig,
        served=served,
        **_site_fields(name, root, seeded, target),
    )
