"""The hardening audit's sandbox: a hardened Compose target and a deliberately weak
one, each a real simulated stack on the container engine (``sandbox.site``) with its
own upstream MCP server (``sandbox.mcp_servers``, real MCP over HTTP).

hardened: ``upstream.allowed_ips: [127.0.0.1/32]``; images pinned by digest; no
published ports; ``data/`` 0600 owned by 65532; a fresh certificate; its MCP server
requires OAuth (MCP authorization spec) and lists only allowlisted tools; a log file
for review and an intake rule mapping alerts to it.

weak: ``upstream.allowed_ips: [0.0.0.0/0]``; images by tag; the proxy publishes a
port; ``data/`` world-readable; an expired server certificate; its MCP server answers
without OAuth and lists a tool outside any allowlist; no review source, no intake rule.

:func:`provision_audit_sites` builds both and returns their inventory entries (the
``oncall`` engineer's ``mcp-ir sandbox up`` calls it for ``sandbox-weak``).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from sandbox.mcp_servers import OAuthProtection, SandboxMcpServer, start_mcp_server
from sandbox.site import ComposeSite, provision_compose_site

HARDENED_TOOLS = ["search_accounts", "get_account"]
WEAK_TOOLS = ["search_pages", "delete_everything"]
AUDIT_TOKEN_ENV = "MCP_IR_SANDBOX_AUDIT_TOKEN"  # noqa: S105 (a variable name, not a secret)
OPEN_INTAKE_SECRET_ENV = "MCP_IR_SANDBOX_INTAKE_SECRET"  # noqa: S105


@dataclass
class AuditSandbox:
    """Both targets: ``targets`` are inventory entries, ``env`` what the audit needs
    in its environment (the audit token), ``intake`` an inventory ``intake`` section."""

    hardened: ComposeSite
    weak: ComposeSite
    targets: dict[str, dict[str, Any]]
    env: dict[str, str]
    intake: dict[str, Any]
    servers: list[SandboxMcpServer] = field(default_factory=list)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def proxy_config(domain: str, routes: dict[str, str], allowed_ips: list[str]) -> str:
    """A proxy config.yaml in the documented form (MCP tunnels reference, "Proxy
    configuration"): routes as a map of subdomain to ``scheme://host:port``."""
    doc = {
        "listen_addr": ":8080",
        "log_level": "info",
        "tunnel_domain": domain,
        "tls": {"cert_file": "/data/tls.crt", "key_file": "/data/tls.key"},
        "routes": routes,
        "upstream": {"allowed_ips": allowed_ips},
    }
    return "# mcp-gateway configuration (no secrets: keys live in /data)\n" + yaml.safe_dump(
        doc, sort_keys=False
    )


def compose_file(proxy_image: str, cloudflared_image: str, *, publish: bool) -> str:
    services: dict[str, Any] = {
        "setup": {
            "image": proxy_image,
            "profiles": ["setup"],
            "entrypoint": ["setup"],
            "user": "65532",
            "volumes": ["./data:/data"],
        },
        "mcp-proxy": {
            "image": proxy_image,
            "command": ["mcp-proxy", "--config", "/etc/mcp-gateway/config.yaml"],
            "user": "65532",
            "restart": "unless-stopped",
            "volumes": ["./config:/etc/mcp-gateway:ro", "./data:/data"],
        },
        "cloudflared": {
            "image": cloudflared_image,
            "command": ["tunnel", "--no-autoupdate", "run", "--url", "http://localhost:8080"],
            "network_mode": "service:mcp-proxy",
            "user": "65532",
            "restart": "unless-stopped",
            "environment": ["TUNNEL_TOKEN"],
            "depends_on": ["mcp-proxy"],
        },
    }
    if publish:
        services["mcp-proxy"]["ports"] = ["8080:8080"]
    return (
        "# MCP tunnel stack (no secrets: the token is exported as TUNNEL_TOKEN)\n"
        + yaml.safe_dump({"services": services}, sort_keys=False)
    )


def expire_server_certificate(data_dir: Path) -> None:
    """Re-signs ``data/tls.crt`` with the site's CA so that it expired yesterday."""
    ca_cert = x509.load_pem_x509_certificate((data_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((data_dir / "ca.key").read_bytes(), None)
    old = x509.load_pem_x509_certificate((data_dir / "tls.crt").read_bytes())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca_cert.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=91))
        .not_valid_after(now - dt.timedelta(days=1))
    )
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    path = data_dir / "tls.crt"
    st = os.stat(path)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, st.st_mode & 0o7777)


def _local_digest(client: docker.DockerClient, reference: str) -> str:
    """The image's content digest (its ID, ``sha256:<hex>``), to pin it by."""
    return str(client.images.get(reference).id)


def provision_audit_sites(
    *,
    root: Path,
    docker_client: docker.DockerClient,
    docker_host: str,
    anthropic_state: Any,
    anthropic_url: str,
    oauth_url: str,
    oauth_server_client: tuple[str, str],
    oauth_audit_client: str,
    names: tuple[str, str] = ("hardened", "weak"),
) -> AuditSandbox:
    """Builds the hardened and the weak target (see module doc).

    Args:
        oauth_url: the sandbox authorization server (``sandbox.oauth_server``).
        oauth_server_client: (client_id, secret) the protected MCP server introspects
            tokens with.
        oauth_audit_client: a client the audit's read-only token is issued to.
    """
    from sandbox.stack import ensure_stack_image

    hardened_name, weak_name = names
    protection = OAuthProtection(
        issuer_url=oauth_url,
        introspection_endpoint=f"{oauth_url}/introspect",
        client_id=oauth_server_client[0],
        client_secret=oauth_server_client[1],
    )
    crm = start_mcp_server("crm", HARDENED_TOOLS, oauth=protection)
    wiki = start_mcp_server("wiki", WEAK_TOOLS)
    issued = httpx.post(
        f"{oauth_url}/_sandbox/issue",
        json={"client_id": oauth_audit_client, "scope": "mcp:tools", "expires_in": 86400},
        timeout=5,
    )
    issued.raise_for_status()
    audit_token = issued.json()["access_token"]

    sites: dict[str, ComposeSite] = {}
    for name in (hardened_name, weak_name):
        sites[name] = provision_compose_site(
            name=name,
            root=root / name,
            docker_client=docker_client,
            docker_host=docker_host,
            anthropic_state=anthropic_state,
            anthropic_url=anthropic_url,
            project=f"{name}-{secrets.token_hex(3)}",
        )
    image = ensure_stack_image(docker_client)
    digest = _local_digest(docker_client, image)
    repo = image.rsplit(":", 1)[0]

    hard = sites[hardened_name]
    hard_root = hard.data_dir.parent
    (hard_root / "config" / "config.yaml").write_text(
        proxy_config(hard.domain, {"crm": crm.base_url}, ["127.0.0.1/32"])
    )
    (hard_root / "docker-compose.yaml").write_text(
        compose_file(f"{repo}@{digest}", f"{repo}@{digest}", publish=False)
    )
    review_log = hard_root / "logs" / "proxy.log"
    review_log.parent.mkdir(exist_ok=True)
    review_log.write_text("")

    weak = sites[weak_name]
    weak_root = weak.data_dir.parent
    (weak_root / "config" / "config.yaml").write_text(
        proxy_config(weak.domain, {"wiki": wiki.base_url}, ["0.0.0.0/0"])
    )
    (weak_root / "docker-compose.yaml").write_text(
        compose_file(
            "ghcr.io/anthropics/mcp-proxy:latest", "cloudflare/cloudflared:latest", publish=True
        )
    )
    os.chmod(weak.data_dir, 0o755)
    for path in weak.data_dir.iterdir():
        os.chmod(path, 0o644)
    expire_server_certificate(weak.data_dir)

    hard.target["review"] = {
        "tool_allowlist": {"crm": list(HARDENED_TOOLS)},
        "files": [{"name": "proxy", "path": str(review_log), "kind": "proxy"}],
    }
    hard.target["audit"] = {"mcp_tokens_env": {"crm": AUDIT_TOKEN_ENV}}
    hard.target["description"] = "hardened: every audit check passes"
    weak.target["description"] = "deliberately weak: every audit check fails"
    intake = {
        "sources": {
            "sandbox-siem": {
                "format": "generic",
                "auth": "hmac",
                "secrets_env": [OPEN_INTAKE_SECRET_ENV],
                "rules": [{"match": {}, "target": hardened_name}],
            }
        }
    }
    return AuditSandbox(
        hardened=hard,
        weak=weak,
        targets={hardened_name: hard.target, weak_name: weak.target},
        env={AUDIT_TOKEN_ENV: audit_token, OPEN_INTAKE_SECRET_ENV: secrets.token_hex(16)},
        intake=intake,
        servers=[crm, wiki],
    )


# -- Helm: the release's objects as the chart renders them with hardened / weak values --

DIGEST_PIN = "@sha256:" + "3f" * 32  # a pinned digest (the sandbox runs no images)
NETWORK_NAMESPACE_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
}


def _objects(served: Any, kind: str) -> dict[str, dict[str, Any]]:
    from sandbox.k8s_store import RESOURCES

    res = next(r for r in RESOURCES.values() if r.kind == kind)
    seeded = served.seeded
    return {
        o["metadata"]["name"]: o
        for o in served.cluster.store.list(res, seeded.namespace)
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == seeded.release
        or kind in ("Secret", "ConfigMap")
    }


def _put_certificate(served: Any, secret: dict[str, Any], *, expired: bool) -> None:
    import base64

    from tasks.certificates import new_ca, server_cert

    ca = new_ca("sandbox audit CA")
    tls = server_cert(ca, "audit.tunnels.sandbox.example", days=90)
    pem = tls.cert_pem.encode()
    if expired:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "ca.crt").write_text(ca.cert_pem)
            (d / "ca.key").write_text(ca.key_pem.get_secret_value())
            (d / "tls.crt").write_bytes(pem)
            expire_server_certificate(d)
            pem = (d / "tls.crt").read_bytes()
    secret.setdefault("data", {})["tls.crt"] = base64.b64encode(pem).decode()


def configure_helm_release(
    served: Any, *, hardened: bool, routes: dict[str, str], upstream_port: int
) -> None:
    """Rewrites the seeded release's ConfigMap, Deployment, CronJob, NetworkPolicy and
    certificate the way ``helm upgrade`` with hardened (or weak) values would leave
    them. Directly in the sandbox's store: no API call is made (and none recorded)."""
    seeded = served.seeded
    with served.cluster.store.lock:
        cms = _objects(served, "ConfigMap")
        cm = cms[f"{seeded.release}-config"]
        allowed = ["127.0.0.1/32"] if hardened else ["0.0.0.0/0"]
        cm["data"]["config.yaml"] = proxy_config("audit.tunnels.sandbox.example", routes, allowed)
        dep = _objects(served, "Deployment")[seeded.release]
        pod = dep["spec"]["template"]["spec"]
        if hardened:
            for c in pod["containers"]:
                c["image"] = c["image"].split(":")[0] + DIGEST_PIN
                if c["name"] == "cloudflared":
                    c.pop("env", None)
                    c["args"] = [
                        "tunnel",
                        "--no-autoupdate",
                        "run",
                        "--token-file",
                        "/etc/cloudflared/token/tunnel-token",
                        "--url",
                        "http://localhost:8080",
                    ]
                    c["volumeMounts"] = [
                        {"name": "token", "mountPath": "/etc/cloudflared/token", "readOnly": True}
                    ]
            pod["volumes"].append(
                {
                    "name": "token",
                    "secret": {
                        "secretName": seeded.release,
                        "defaultMode": 0o400,
                        "items": [{"key": "tunnel-token", "path": "tunnel-token"}],
                    },
                }
            )
            for vol in pod["volumes"]:
                if vol.get("secret"):
                    vol["secret"]["defaultMode"] = 0o400
            for cj in _objects(served, "CronJob").values():
                for c in cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]:
                    c["image"] = c["image"].split(":")[0] + DIGEST_PIN
            policy = _objects(served, "NetworkPolicy")[seeded.release]
            policy["spec"]["policyTypes"] = ["Ingress", "Egress"]
            policy["spec"]["egress"] = [
                {
                    "to": [NETWORK_NAMESPACE_DNS],
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                },
                {
                    "to": [
                        {"ipBlock": {"cidr": "198.41.192.0/19"}},
                        {"ipBlock": {"cidr": "2606:4700:a0::/44"}},
                    ],
                    "ports": [{"port": 7844, "protocol": "TCP"}, {"port": 7844, "protocol": "UDP"}],
                },
                {
                    "to": [{"ipBlock": {"cidr": "160.79.104.0/23"}}],
                    "ports": [{"port": 443, "protocol": "TCP"}],
                },
                {
                    "to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}],
                    "ports": [{"port": upstream_port, "protocol": "TCP"}],
                },
            ]
        _put_certificate(served, _objects(served, "Secret")[seeded.release], expired=not hardened)
