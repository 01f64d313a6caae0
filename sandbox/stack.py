"""A simulated MCP tunnel stack, deployed the way Docker Compose deploys it.

Compose talks to the Docker Engine API: it creates a project network labelled
``com.docker.compose.project=<project>`` / ``com.docker.compose.network=default``
and one container per service named ``<project>-<service>-1``, labelled with the
project, service, container number and ``oneoff=False``. ``docker compose down``
later finds everything back through those labels. This module does the same
against the local podman engine (``sandbox/engine.py``) so the Compose adapter
(``tasks/compose.py``) meets what it would meet in production.

Differences from a real deployment, forced by this machine kind (FACTS §5):
the images are built locally from busybox (``sandbox/stack_logs.py`` holds the
two programs, which log like the real ones), and containers run with
``network_mode="none"`` (the project network is created and labelled but not
attached: podman has no usable container networking here).

On disk, ``write_data_dir`` lays out a Compose deployment (FACTS §1): ``data/``
with the tunnel id, domain, token, CA and server certificate (mode 0600, owned
by the containers' UID 65532), ``config/config.yaml`` and
``docker-compose.yaml`` (no secrets). The proxy gets ``config/`` bind-mounted
read-only at ``/etc/mcp-gateway`` and ``data/`` at ``/data``, as the real
compose file does.

CLI: ``python -m sandbox.stack up|down --project P --data-dir D`` (uses
``DOCKER_HOST``; ``up`` reads the token from ``TUNNEL_TOKEN`` or ``data/``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from core import certbuild
from core.errors import ConfigError, TransientError
from sandbox import stack_logs
from sandbox.engine import import_image
from tasks.credential_files import CONTAINER_UID

PROXY = "mcp-proxy"
CLOUDFLARED = "cloudflared"
SERVICES = (PROXY, CLOUDFLARED)
# How the quickstart's compose file runs the connector (token from TUNNEL_TOKEN).
CLOUDFLARED_COMMAND = (
    "cloudflared",
    "tunnel",
    "--no-autoupdate",
    "run",
    "--url",
    "http://localhost:8080",
)
IMAGE_REPOSITORY = "localhost/mcp-ir/tunnel-sim"
COMPOSE_VERSION = "2.29.7"


@dataclass(frozen=True)
class ComposeLayout:
    """Where a Compose deployment lives on disk.

    Attributes:
        root: The project directory (holds ``docker-compose.yaml``).
        data_dir: ``<root>/data`` (secrets, mode 0600).
        config_dir: ``<root>/config`` (``config.yaml``, no secrets).
        compose_file: ``<root>/docker-compose.yaml``.
    """

    root: Path
    data_dir: Path
    config_dir: Path
    compose_file: Path


@dataclass(frozen=True)
class DeployedStack:
    """A deployed simulated stack.

    Attributes:
        project: The Compose project name.
        network: Name of the project network.
        containers: Service name → container name.
        image: The image reference the containers run.
        layout: The deployment's files.
    """

    project: str
    network: str
    containers: dict[str, str]
    image: str
    layout: ComposeLayout
    timings: dict[str, float] = field(default_factory=dict)


def layout_for(data_dir: Path) -> ComposeLayout:
    """The Compose layout whose ``data/`` directory is ``data_dir``."""
    data_dir = Path(data_dir).resolve()
    root = data_dir.parent
    return ComposeLayout(
        root=root,
        data_dir=data_dir,
        config_dir=root / "config",
        compose_file=root / "docker-compose.yaml",
    )


def write_data_dir(
    data_dir: Path,
    tunnel_id: str,
    domain: str,
    token: str,
    *,
    routes: dict[str, str] | None = None,
    owner_uid: int | None = CONTAINER_UID,
) -> ComposeLayout:
    """Writes a Compose deployment's files: ``data/``, ``config/``, compose file.

    ``data/`` gets ``tunnel-id``, ``tunnel-domain``, ``tunnel-token`` and a fresh
    CA plus server certificate that meet FACTS §2 (ECDSA P-256, CA:TRUE critical,
    SKI, keyCertSign; server cert signed by the CA, AKI = CA's SKI, SAN
    ``*.<domain>``, 90 days), every file mode 0600. Existing files are replaced.

    Args:
        data_dir: The ``data/`` directory; its parent becomes the project root.
        tunnel_id: Tunnel id (``tnl_…``).
        domain: The tunnel domain.
        token: The tunnel token (written only to ``data/tunnel-token``).
        routes: Host prefix → upstream URL for the proxy config; a default pair
            when omitted.
        owner_uid: Owner of ``data/`` files (the containers run as 65532);
            ``None`` leaves the current user. Only applied when running as root.

    Returns:
        The layout written.

    Raises:
        ConfigError: a value is empty or contains a newline.
    """
    for name, value in (("tunnel_id", tunnel_id), ("domain", domain), ("token", token)):
        if not value or "\n" in value or value != value.strip():
            raise ConfigError(f"{name}: must be a non-empty single line without spaces around it")
    layout = layout_for(data_dir)
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    layout.config_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.data_dir, 0o700)
    ca_crt, ca_key, tls_crt, tls_key = _certificates(domain)
    contents = {
        "tunnel-id": f"{tunnel_id}\n".encode(),
        "tunnel-domain": f"{domain}\n".encode(),
        "tunnel-token": f"{token}\n".encode(),
        "ca.crt": ca_crt,
        "ca.key": ca_key,
        "tls.crt": tls_crt,
        "tls.key": tls_key,
    }
    chown = owner_uid is not None and os.geteuid() == 0
    for name, content in contents.items():
        path = layout.data_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.chmod(path, 0o600)
        if chown:
            os.chown(path, owner_uid, owner_uid)
    if chown:
        os.chown(layout.data_dir, owner_uid, owner_uid)
    (layout.config_dir / "config.yaml").write_text(_proxy_config(domain, routes))
    layout.compose_file.write_text(_compose_file())
    return layout


def ensure_stack_image(client: docker.DockerClient) -> str:
    """Builds the stack image (busybox + the two simulated programs) if missing.

    The tag is a hash of the scripts, so editing them yields a new image and an
    unchanged tree costs one inspect call.

    Returns:
        The image reference.
    """
    reference = f"{IMAGE_REPOSITORY}:{stack_logs.content_tag()}"
    import_image(
        client,
        reference,
        files=stack_logs.FILES,
        changes=["ENV PATH=/usr/local/bin:/bin", 'CMD ["/bin/sh"]'],
    )
    return reference


def deploy_stack(
    client: docker.DockerClient,
    project: str,
    layout: ComposeLayout,
    *,
    token: str,
    tunnel_id: str = "tnl_sandbox",
    domain: str = "sandbox.tunnel.invalid",
    canary: str | None = None,
    interval_s: float = 1.0,
    connections: int = 4,
    suspicious: bool = True,
) -> DeployedStack:
    """Deploys the stack as ``docker compose up -d`` would. Idempotent.

    A container that already exists under its Compose name is started if
    stopped and otherwise left alone; the network is created once.

    Args:
        client: Docker SDK client of the engine.
        project: Compose project name (lowercase letters, digits, ``-``, ``_``).
        layout: The deployment's files (see ``write_data_dir``).
        token: ``TUNNEL_TOKEN`` for cloudflared.
        tunnel_id: Shown in cloudflared's ``Starting tunnel`` line.
        domain: The tunnel domain, shown in request lines.
        canary: A secret to write into both containers' logs (debug lines), so a
            test can prove it is redacted from evidence; ``None`` for none.
        interval_s: Seconds between periodic log lines.
        connections: Tunnel connections cloudflared reports (4 = healthy).
        suspicious: Whether the proxy logs the suspicious lines.

    Returns:
        The deployed stack.

    Raises:
        ConfigError: the project name is invalid.
        TransientError: the engine refused a create or start.
    """
    _check_project(project)
    image = ensure_stack_image(client)
    network = f"{project}_default"
    labels = _project_labels(project, layout)
    try:
        existing = client.networks.list(filters={"label": f"com.docker.compose.project={project}"})
        if not any(n.name == network for n in existing):
            client.networks.create(
                network,
                driver="bridge",
                labels={**labels, "com.docker.compose.network": "default"},
            )
    except docker.errors.APIError as exc:
        raise TransientError(f"network {network}: {exc.explanation}") from exc

    common_env = {
        "MCP_IR_SIM_INTERVAL": f"{interval_s:g}",
        "MCP_IR_SIM_TUNNEL_ID": tunnel_id,
        "MCP_IR_SIM_DOMAIN": domain,
    }
    if canary:
        common_env["MCP_IR_CANARY"] = canary
    specs = {
        PROXY: {
            "command": ["mcp-proxy", "--config", "/etc/mcp-gateway/config.yaml"],
            "environment": {**common_env, "MCP_IR_SIM_SUSPICIOUS": "1" if suspicious else "0"},
            "volumes": {
                str(layout.config_dir): {"bind": "/etc/mcp-gateway", "mode": "ro"},
                str(layout.data_dir): {"bind": "/data", "mode": "rw"},
            },
        },
        CLOUDFLARED: {
            "command": list(CLOUDFLARED_COMMAND),
            "environment": {
                **common_env,
                "TUNNEL_TOKEN": token,
                "MCP_IR_SIM_CONNECTIONS": str(connections),
                **({"TUNNEL_LOGLEVEL": "debug"} if canary else {}),
            },
            "volumes": {},
        },
    }
    containers: dict[str, str] = {}
    for service in SERVICES:  # mcp-proxy first: cloudflared depends_on it
        name = f"{project}-{service}-1"
        containers[service] = name
        spec = specs[service]
        try:
            try:
                container = client.containers.get(name)
                if container.status != "running":
                    container.start()
                continue
            except docker.errors.NotFound:
                pass
            client.containers.run(
                image,
                spec["command"],
                name=name,
                detach=True,
                labels={
                    **labels,
                    "com.docker.compose.service": service,
                    "com.docker.compose.container-number": "1",
                    "com.docker.compose.oneoff": "False",
                    "com.docker.compose.depends_on": "mcp-proxy:service_started:false"
                    if service == CLOUDFLARED
                    else "",
                },
                environment=spec["environment"],
                volumes=spec["volumes"],
                user=str(CONTAINER_UID),
                working_dir="/",
                network_mode="none",
                hostname=service,
                restart_policy={"Name": "no"},
            )
        except docker.errors.APIError as exc:
            # The explanation comes from the engine and never quotes env values.
            raise TransientError(f"container {name}: {exc.explanation}") from exc
    return DeployedStack(
        project=project, network=network, containers=containers, image=image, layout=layout
    )


def teardown_stack(client: docker.DockerClient, project: str) -> list[str]:
    """Removes every container and network of ``project`` (test cleanup).

    Unlike the adapter's ``stop_project`` this does not verify; it just removes
    what it finds and ignores what is already gone.

    Returns:
        Names of what was removed.
    """
    label = f"com.docker.compose.project={project}"
    removed: list[str] = []
    for container in client.containers.list(all=True, filters={"label": label}):
        try:
            if container.status == "running":
                # podman's force-remove would wait 10 s for a process ignoring SIGTERM
                container.stop(timeout=0)
            container.remove(force=True)
            removed.append(container.name)
        except docker.errors.NotFound:
            pass
    for network in client.networks.list(filters={"label": label}):
        try:
            network.remove()
            removed.append(network.name)
        except docker.errors.NotFound:
            pass
    return removed


def _check_project(project: str) -> None:
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", project or ""):
        raise ConfigError(
            f"project: {project!r} is not a valid Compose project name "
            "(lowercase letters, digits, '-' and '_', starting with a letter or digit)"
        )


def _project_labels(project: str, layout: ComposeLayout) -> dict[str, str]:
    return {
        "com.docker.compose.project": project,
        "com.docker.compose.project.working_dir": str(layout.root),
        "com.docker.compose.project.config_files": str(layout.compose_file),
        "com.docker.compose.version": COMPOSE_VERSION,
    }


def _proxy_config(domain: str, routes: dict[str, str] | None) -> str:
    routes = routes or {"github": "http://github-mcp:3000", "jira": "http://jira-mcp:3000"}
    lines = [
        "# mcp-gateway configuration (no secrets: keys live in /data)",
        'listen: ":8080"',
        "tls:",
        "  cert_file: /data/tls.crt",
        "  key_file: /data/tls.key",
        "routes:",
    ]
    for prefix, upstream in routes.items():
        lines += [f"  - host: {prefix}.{domain}", f"    upstream: {upstream}"]
    return "\n".join(lines) + "\n"


def _compose_file() -> str:
    return textwrap.dedent(
        """\
        # MCP tunnel stack (no secrets: the token is exported as TUNNEL_TOKEN)
        services:
          setup:
            image: ghcr.io/anthropics/mcp-proxy:latest
            profiles: ["setup"]
            entrypoint: ["setup"]
            user: "65532"
            volumes:
              - ./data:/data
          mcp-proxy:
            image: ghcr.io/anthropics/mcp-proxy:latest
            command: ["mcp-proxy", "--config", "/etc/mcp-gateway/config.yaml"]
            user: "65532"
            restart: unless-stopped
            volumes:
              - ./config:/etc/mcp-gateway:ro
              - ./data:/data
          cloudflared:
            image: cloudflare/cloudflared:latest
            command: ["tunnel", "--no-autoupdate", "run", "--url", "http://localhost:8080"]
            network_mode: "service:mcp-proxy"
            user: "65532"
            restart: unless-stopped
            environment:
              - TUNNEL_TOKEN
            depends_on:
              - mcp-proxy
        """
    )


def _certificates(domain: str) -> tuple[bytes, bytes, bytes, bytes]:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = certbuild.subject(f"mcp-tunnel CA {domain}")
    ca_cert = certbuild.ca_builder(ca_key.public_key(), ca_name, start=now, days=3650).sign(
        ca_key, hashes.SHA256()
    )
    tls_key = ec.generate_private_key(ec.SECP256R1())
    tls_cert = certbuild.server_builder(
        tls_key.public_key(),
        common_name=f"*.{domain}",
        issuer=ca_name,
        issuer_ski=x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
        start=now,
        end=now + dt.timedelta(days=90),
        dns_names=[f"*.{domain}"],
    ).sign(ca_key, hashes.SHA256())
    return (
        certbuild.cert_pem(ca_cert).encode(),
        certbuild.key_pem(ca_key).encode(),
        certbuild.cert_pem(tls_cert).encode(),
        certbuild.key_pem(tls_key).encode(),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.stack up|down --project P --data-dir D``."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.stack")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--project", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST"))
    parser.add_argument("--tunnel-id", default="tnl_sandbox")
    parser.add_argument("--domain", default="sandbox.tunnel.invalid")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--canary-env", help="name of an env var holding a canary secret")
    args = parser.parse_args(argv)
    if not args.docker_host:
        print("error: --docker-host or DOCKER_HOST is required", file=sys.stderr)
        return 2
    client = docker.DockerClient(base_url=args.docker_host)
    if args.action == "down":
        removed = teardown_stack(client, args.project)
        print(f"removed: {', '.join(removed) or '(nothing)'}")
        return 0
    layout = layout_for(args.data_dir)
    token_file = layout.data_dir / "tunnel-token"
    token = os.environ.get("TUNNEL_TOKEN")
    if token_file.exists() and not token:
        token = token_file.read_text().strip()
    if not token_file.exists():
        token = token or f"sandbox-{secrets.token_urlsafe(24)}"
        write_data_dir(args.data_dir, args.tunnel_id, args.domain, token)
    if not token:
        print("error: no token: set TUNNEL_TOKEN or write data/tunnel-token", file=sys.stderr)
        return 2
    canary = os.environ.get(args.canary_env) if args.canary_env else None
    stack = deploy_stack(
        client,
        args.project,
        layout,
        token=token,
        tunnel_id=args.tunnel_id,
        domain=args.domain,
        canary=canary,
        interval_s=args.interval,
    )
    print(f"project={stack.project} network={stack.network} image={stack.image}")
    for service, name in stack.containers.items():
        print(f"{service}: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
