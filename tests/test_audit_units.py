"""The audit's parsers and judges on real material (tests/fixtures/audit/SOURCES.md):
WWW-Authenticate challenges from the MCP spec, RFC 9728, GitLab and the MCP SDK; the
MCP tunnels quickstart's own compose file and proxy config; a real MCP server whose
401 lacks the resource-metadata challenge; allowed_ips and NetworkPolicy egress rules."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from audit.engine import audit_target
from audit.mcp_probe import parse_www_authenticate, probe_oauth
from audit.network_rules import judge_egress_rule, networks
from runbook.inventory import parse_inventory
from sandbox.mcp_servers import OAuthProtection, start_mcp_server
from tasks.certificates import new_ca, server_cert

FIXTURES = Path(__file__).parent / "fixtures" / "audit"


def challenges() -> list[tuple[str, str | None]]:
    out = []
    for line in (FIXTURES / "www_authenticate.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        header, _, expected = line.partition(" => ")
        out.append((header, None if expected == "-" else expected))
    return out


@pytest.mark.parametrize(("header", "expected"), challenges())
def test_www_authenticate_resource_metadata(header: str, expected: str | None) -> None:
    bearer = parse_www_authenticate(header).get("bearer") or {}
    assert bearer.get("resource_metadata") == expected


def test_www_authenticate_several_challenges_and_escapes() -> None:
    got = parse_www_authenticate(
        'Basic realm="a, b", Bearer realm="x \\"y\\"", resource_metadata="https://h/p"'
    )
    assert got["basic"] == {"realm": "a, b"}
    assert got["bearer"] == {"realm": 'x "y"', "resource_metadata": "https://h/p"}


def inventory_for(target: dict[str, Any], tmp_path: Path) -> Any:
    raw = {
        "targets": {
            "t": {
                "tunnel": {"id": "tnl_x"},
                "anthropic": {"credentials": {"bearer_env": "X"}},
                **target,
            }
        }
    }
    return parse_inventory(raw, tmp_path / "inventory.yaml")


def quickstart_inventory(root: Path, tmp_path: Path, project: str = "p", **compose: Any) -> Any:
    """An inventory whose target ``t`` is the quickstart deployment at ``root``."""
    return inventory_for(
        {
            "kind": "compose",
            "compose": {
                "project": project,
                "data_dir": str(root / "data"),
                "compose_file": str(root / "docker-compose.yaml"),
                **compose,
            },
        },
        tmp_path,
    )


def quickstart(tmp_path: Path) -> Path:
    """The quickstart's deployment directory, data/ as its steps leave it."""
    root = tmp_path / "mcp-tunnel"
    shutil.copytree(FIXTURES / "quickstart", root)
    data = root / "data"
    data.mkdir()
    ca = new_ca("mcp-tunnel-ca")
    tls = server_cert(ca, "abcd1234.tunnel.anthropic.com", days=90)
    files = {
        "ca.crt": (ca.cert_pem, 0o644),
        "ca.key": (ca.key_pem.get_secret_value(), 0o600),
        "tls.crt": (tls.cert_pem, 0o644),
        "tls.key": (tls.key_pem.get_secret_value(), 0o644),  # "chmod 644 data/tls.key"
    }
    for name, (text, mode) in files.items():
        (data / name).write_text(text)
        os.chmod(data / name, mode)
    return root


def test_the_quickstart_deployment(tmp_path: Path) -> None:
    root = quickstart(tmp_path)
    inv = quickstart_inventory(root, tmp_path, "mcp-tunnel")
    result = audit_target(
        inv,
        "t",
        tmp_path / "evidence",
        only=[
            "oauth_upstream",
            "allowed_ips",
            "image_digest",
            "network_reach",
            "credentials_at_rest",
            "certificate_expiry",
        ],
    )
    checks = {c.id: c for c in result.checks}
    assert checks["image_digest"].status == "pass"  # both images pinned by digest
    assert checks["allowed_ips"].status == "fail"
    assert (
        "not set" in checks["allowed_ips"].reason and "10.0.0.0/8" in checks["allowed_ips"].reason
    )
    # read from the file the compose file mounts at /etc/mcp-gateway/config.yaml
    assert checks["allowed_ips"].evidence[0].source == str(root / "config" / "mcp-gateway.yaml")
    assert checks["network_reach"].status == "unverifiable"
    assert "network_mode=service:mcp-gateway" in " ".join(
        e.observed for e in checks["network_reach"].evidence
    )
    assert checks["credentials_at_rest"].status == "fail"
    assert "tls.key: mode 0644 (want 0600)" in checks["credentials_at_rest"].reason
    assert checks["certificate_expiry"].status == "pass"
    # route echo -> http://hello-mcp:9000 does not resolve here
    assert checks["oauth_upstream"].status == "unverifiable"
    assert "echo" in checks["oauth_upstream"].reason


@pytest.mark.parametrize(
    ("upstream", "status", "needle"),
    [
        ({"allowed_ips": ["10.1.2.0/24", "192.168.7.5"]}, "pass", ""),
        ({}, "fail", "not set"),
        ({"disable_ip_validation": True}, "fail", "validation is disabled"),
        ({"allowed_ips": ["::/0"]}, "fail", "allows every address"),
        ({"allowed_ips": ["10.0.0.0/8"]}, "fail", "broader than /24"),
        ({"allowed_ips": ["8.8.8.0/24"]}, "fail", "public addresses"),
        ({"allowed_ips": ["fd00:1:2:3::/64"]}, "fail", "IPv4 ranges only"),
        ({"allowed_ips": ["not-an-ip"]}, "fail", "not an address"),
    ],
)
def test_allowed_ips(tmp_path: Path, upstream: dict[str, Any], status: str, needle: str) -> None:
    import yaml

    root = quickstart(tmp_path)
    cfg = root / "config" / "mcp-gateway.yaml"
    doc = yaml.safe_load(cfg.read_text())
    doc["upstream"] = upstream
    cfg.write_text(yaml.safe_dump(doc))
    inv = quickstart_inventory(root, tmp_path)
    check = audit_target(inv, "t", tmp_path / "ev", only=["allowed_ips"]).checks[0]
    assert check.status == status and needle in check.reason, check.reason


def test_a_real_mcp_server_whose_401_has_no_resource_metadata_fails(oauth_sandbox: Any) -> None:
    protection = OAuthProtection(
        oauth_sandbox.url,
        oauth_sandbox.introspection_endpoint,
        oauth_sandbox.client_id,
        oauth_sandbox.client_secret,
    )
    server = start_mcp_server("bare", ["x"], oauth=protection, advertise_metadata=False)
    try:
        probe = probe_oauth("bare", server.url)
    finally:
        server.stop()
    assert probe.verdict == "bad_challenge" and probe.status == 401
    assert "no Bearer resource_metadata" in probe.observed


def test_unreachable_target_is_unverifiable_not_failed(tmp_path: Path) -> None:
    inv = inventory_for(
        {"kind": "helm", "helm": {"kubeconfig": str(tmp_path / "missing-kubeconfig")}}, tmp_path
    )
    result = audit_target(inv, "t", tmp_path / "ev")
    statuses = {c.id: c.status for c in result.checks}
    assert statuses.pop("sso") == "manual"
    assert set(statuses.values()) == {"unverifiable"}
    assert "does not exist" in result.checks[0].reason


def test_egress_rules_against_the_network_requirements() -> None:
    upstream = networks(["10.20.0.0/24"])
    edge = {
        "to": [{"ipBlock": {"cidr": "198.41.192.0/19"}}],
        "ports": [{"port": 7844, "protocol": "UDP"}],
    }
    api = {"to": [{"ipBlock": {"cidr": "160.79.104.0/23"}}], "ports": [{"port": 443}]}
    mcp = {"to": [{"ipBlock": {"cidr": "10.20.0.7/32"}}], "ports": [{"port": 8000}]}
    dns = {"to": [{"namespaceSelector": {}}], "ports": [{"port": 53, "protocol": "UDP"}]}
    for rule in (edge, api, mcp, dns):
        assert judge_egress_rule(rule, upstream) == []
    assert "every destination" in judge_egress_rule({"ports": [{"port": 443}]}, upstream)[0]
    assert (
        "everywhere" in judge_egress_rule({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}, upstream)[0]
    )
    assert (
        "only 7844"
        in judge_egress_rule(
            {"to": [{"ipBlock": {"cidr": "198.41.192.0/24"}}], "ports": [{"port": 22}]}, upstream
        )[0]
    )
    assert (
        "not the tunnel edge"
        in judge_egress_rule({"to": [{"ipBlock": {"cidr": "10.30.0.0/16"}}]}, upstream)[0]
    )


def test_monitoring_reads_cloudwatch_and_intake(tmp_path: Path, aws_env: str) -> None:
    """Log groups are checked with DescribeLogGroups against moto; a missing group and
    a missing intake rule are failures, each named."""
    import boto3

    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName="/mcp/t/cloudflared")
    root = quickstart(tmp_path)
    base = {
        "kind": "compose",
        "compose": {
            "project": "p",
            "data_dir": str(root / "data"),
            "compose_file": str(root / "docker-compose.yaml"),
        },
        "review": {"cloudwatch": [{"log_group": "/mcp/t/cloudflared", "kind": "cloudflared"}]},
    }
    raw = {
        "intake": {
            "sources": {
                "siem": {"format": "generic", "secrets_env": ["S"], "rules": [{"target": "t"}]}
            }
        },
        "targets": {
            "t": {
                "tunnel": {"id": "tnl_x"},
                "anthropic": {"credentials": {"bearer_env": "X"}},
                **base,
            }
        },
    }
    ok = audit_target(
        parse_inventory(raw, tmp_path / "i.yaml"), "t", tmp_path / "ev", only=["monitoring"]
    ).checks[0]
    assert ok.status == "pass", ok.reason
    assert any(
        e.source == "CloudWatch Logs /mcp/t/cloudflared" and e.observed == "readable"
        for e in ok.evidence
    )

    base["review"]["cloudwatch"].append({"log_group": "/mcp/t/missing"})
    raw["intake"]["sources"]["siem"]["rules"] = [{"target": "other"}]
    raw["targets"]["other"] = {**raw["targets"]["t"]}
    bad = audit_target(
        parse_inventory(raw, tmp_path / "i.yaml"), "t", tmp_path / "ev", only=["monitoring"]
    ).checks[0]
    assert bad.status == "fail"
    assert "log group /mcp/t/missing: does not exist" in bad.reason
    assert "no intake source has a rule for this target" in bad.reason


def test_compose_file_and_dotenv_hold_no_exposed_secret(tmp_path: Path) -> None:
    import yaml

    root = quickstart(tmp_path)
    for name in ("tls.key", "ca.crt", "tls.crt"):
        os.chmod(root / "data" / name, 0o600)
    os.chmod(root / "data", 0o700)  # mkdir left it 0755
    inv = quickstart_inventory(root, tmp_path, data_uid=os.geteuid())
    # the quickstart's .env, as its Step 3 leaves it (chmod 600)
    (root / ".env").write_text(
        "TUNNEL_DOMAIN=abcd1234.tunnel.anthropic.com\nTUNNEL_TOKEN=eyJsecretvalue\n"
    )
    os.chmod(root / ".env", 0o600)
    check = audit_target(inv, "t", tmp_path / "ev", only=["credentials_at_rest"]).checks[0]
    assert check.status == "pass", check.reason
    assert any(e.source == str(root / ".env") for e in check.evidence)

    os.chmod(root / ".env", 0o644)
    compose = yaml.safe_load((root / "docker-compose.yaml").read_text())
    compose["services"]["cloudflared"]["environment"] = [
        "TUNNEL_TOKEN=eyJliteralsecret",
        "TUNNEL_LOGLEVEL=info",
    ]
    (root / "docker-compose.yaml").write_text(yaml.safe_dump(compose))
    check = audit_target(inv, "t", tmp_path / "ev", only=["credentials_at_rest"]).checks[0]
    assert check.status == "fail"
    assert ".env: mode 0644 (want 0600)" in check.reason
    assert "services.cloudflared.environment.TUNNEL_TOKEN holds a literal value" in check.reason
    assert "eyJliteralsecret" not in str(check.as_dict())
