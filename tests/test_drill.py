"""rotation-drill end to end: the real CLI in a subprocess, a real Prefect server, real
podman containers, the real anthropic SDK against the sandbox Tunnels API."""

from __future__ import annotations

from typing import Any

import pytest

from core.trail import verify_dir
from sandbox import anthropic_tunnels
from tasks.certificates import cert_fingerprint, check_server_cert
from tests.plugins.site import Site, incident_of

pytestmark = [pytest.mark.podman, pytest.mark.prefect]


def register_site_ca(site: Site) -> str:
    """Makes the sandbox site what `setup` leaves behind: the tunnel's one active CA is
    data/ca.crt (the sandbox seeds a random CA of its own). Returns its fingerprint."""
    state, tunnel = site.sandbox.state, site.site.tunnel_id
    seeded = [c.id for c in state.tunnels[tunnel].active_certificates()]
    pem = (site.site.data_dir / "ca.crt").read_text()
    anthropic_tunnels.create_certificate(state, tunnel, {"ca_certificate_pem": pem})
    for cid in seeded:
        anthropic_tunnels.archive_certificate(state, tunnel, cid)
    return cert_fingerprint(pem)


def active_cas(site: Site) -> list[str]:
    tunnel = site.sandbox.state.tunnels[site.site.tunnel_id]
    return sorted(c.fingerprint for c in tunnel.active_certificates())


def running(site: Site) -> dict[str, dict[str, Any]]:
    label = f"com.docker.compose.project={site.site.project}"
    return {
        c.name: c.attrs
        for c in site.client.containers.list(filters={"label": label})
        if c.status == "running"
    }


def cloudflared_token(site: Site) -> str:
    attrs = running(site)[f"{site.site.project}-cloudflared-1"]
    env = dict(e.partition("=")[::2] for e in attrs["Config"]["Env"])
    return env["TUNNEL_TOKEN"]


def data(site: Site, name: str) -> str:
    return (site.site.data_dir / name).read_text()


def phases(records: list[Any]) -> dict[str, dict[str, Any]]:
    return {r.data["phase"]: r.data for r in records if r.kind == "drill.phase"}


def test_drill_rotates_token_cert_and_ca_and_the_stack_keeps_running(site: Site) -> None:
    old_ca = register_site_ca(site)
    old_token, old_tls = site.site.token, data(site, "tls.crt")
    assert site.sandbox.connect(old_token) == 200

    proc = site.cli("drill", "--target", site.target, "--as", "alice", "--rotate-ca")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout)

    # Token: the old one is rejected, the new one (in data/ and in cloudflared) accepted.
    new_token = data(site, "tunnel-token").strip()
    assert new_token != old_token
    assert site.sandbox.connect(old_token) == 403
    assert site.sandbox.connect(new_token) == 200
    assert cloudflared_token(site) == new_token
    assert len(site.sandbox.state.tunnels[site.site.tunnel_id].rotations) == 1
    # Certificates: a new CA took the second slot, the old one is archived, and the
    # renewed server certificate validates against the CA now in data/.
    new_ca = cert_fingerprint(data(site, "ca.crt"))
    assert new_ca != old_ca and active_cas(site) == [new_ca]
    assert data(site, "tls.crt") != old_tls
    assert check_server_cert(data(site, "tls.crt"), data(site, "ca.crt"), site.site.domain) == []
    assert len(running(site)) == 2  # the stack still runs

    records = site.trail(incident).records()
    opened = next(r for r in records if r.kind == "incident.opened").data
    assert opened["drill"] is True and opened["playbook"] == "rotation-drill"
    got = phases(records)
    assert list(got) == ["rotate token", "renew server certificate", "rotate CA"]
    assert all(p["status"] == "succeeded" and p["duration_s"] > 0 for p in got.values())
    assert got["rotate token"]["downtime_s"] > 0  # cloudflared was re-created
    renewed = next(r for r in records if r.kind == "drill.cert.renewed").data
    assert renewed["ca"] == old_ca  # phase 2 used the CURRENT CA
    tunnel = site.site.tunnel_id
    assert sorted(set(site.mutating_calls())) == sorted(
        {
            f"POST /v1/tunnels/{tunnel}/reveal_token",
            f"POST /v1/tunnels/{tunnel}/rotate_token",
            f"POST /v1/tunnels/{tunnel}/certificates",
            f"POST /v1/tunnels/{tunnel}/certificates/"
            + next(r for r in records if r.kind == "drill.ca.before").data["certificate_id"]
            + "/archive",
        }
    )
    report = (site.evidence / incident / "drill-report.md").read_text()
    assert "| rotate token | succeeded |" in report and "| rotate CA | succeeded |" in report
    assert "Drill:** yes" in report
    evidence = b"".join(
        p.read_bytes() for p in (site.evidence / incident).rglob("*") if p.is_file()
    )
    for secret in (old_token, new_token, data(site, "ca.key"), data(site, "tls.key")):
        assert secret.strip().encode() not in evidence
        assert secret.strip() not in proc.stdout + proc.stderr
    assert verify_dir(site.evidence / incident).ok


def test_refused_ca_rolls_back_and_the_stack_still_serves(site: Site) -> None:
    old_ca = register_site_ca(site)
    site.sandbox.fault(
        "/v1/tunnels/*/certificates", 400, method="POST", message="CA refused by policy"
    )
    proc = site.cli("drill", "--target", site.target, "--as", "alice", "--rotate-ca")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout)
    assert "CA refused by policy" in proc.stdout
    assert "rolled back: nothing was changed" in proc.stdout

    # The old CA is kept (files and registration), the renewed certificate from it
    # still validates, and the stack serves with the rotated token.
    assert cert_fingerprint(data(site, "ca.crt")) == old_ca and active_cas(site) == [old_ca]
    assert check_server_cert(data(site, "tls.crt"), data(site, "ca.crt"), site.site.domain) == []
    assert len(running(site)) == 2
    assert site.sandbox.connect(cloudflared_token(site)) == 200

    records = site.trail(incident).records()
    got = phases(records)
    assert got["rotate token"]["status"] == "succeeded"
    assert got["renew server certificate"]["status"] == "succeeded"
    assert got["rotate CA"]["status"] == "failed"
    assert "CA refused by policy" in got["rotate CA"]["error"]
    assert "kept the old CA" in got["rotate CA"]["rollback"]
    assert [r for r in records if r.kind == "drill.rollback"]
    report = (site.evidence / incident / "drill-report.md").read_text()
    assert "| rotate CA | failed |" in report and "## What failed" in report
    assert "kept the old CA" in report
    assert verify_dir(site.evidence / incident).ok


def test_killed_after_rotation_resumes_without_rotating_twice(site: Site) -> None:
    register_site_ca(site)
    env = dict(site.env)
    site.env["MCP_IR_FAILPOINT"] = "drill_rotate_token:after_rotate"
    killed = site.cli(
        "drill", "--target", site.target, "--as", "alice", "--incident", "INC-drill-k1"
    )
    assert killed.returncode == 137, killed.stdout + killed.stderr
    # Rotated, not deployed yet: cloudflared still runs with the (now dead) old token.
    assert site.sandbox.connect(site.site.token) == 403
    assert cloudflared_token(site) == site.site.token
    site.env = env
    resumed = site.cli("drill", "--target", site.target, "--incident", "INC-drill-k1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert len(site.sandbox.state.tunnels[site.site.tunnel_id].rotations) == 1
    token = data(site, "tunnel-token").strip()
    assert cloudflared_token(site) == token and site.sandbox.connect(token) == 200
    assert len(running(site)) == 2
    records = site.trail("INC-drill-k1").records()
    assert [r.kind for r in records].count("tunnel.token_rotated") == 1
    assert verify_dir(site.evidence / "INC-drill-k1").ok


def test_drill_refuses_when_the_current_ca_is_not_registered(site: Site) -> None:
    # As seeded, the sandbox tunnel's CA is not data/ca.crt: renewing from data/ca.crt
    # would produce a certificate the tunnel refuses. The drill stops before writing.
    old_tls = data(site, "tls.crt")
    proc = site.cli("drill", "--target", site.target, "--as", "alice")
    assert proc.returncode == 1
    assert "is not an active CA of tunnel" in proc.stdout
    assert data(site, "tls.crt") == old_tls and len(running(site)) == 2
    assert site.sandbox.connect(cloudflared_token(site)) == 200
