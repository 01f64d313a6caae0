"""rotation-drill on a Helm target end to end: the real CLI in a subprocess with the
real ``rotation-drill`` playbook, a real Prefect server, the sandbox Kubernetes API
driven by the real ``kubernetes`` client, the real anthropic SDK against the sandbox
Tunnels API."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from core.trail import verify_dir
from sandbox import anthropic_tunnels
from sandbox.k8s_store import RESOURCES
from tasks import certificates
from tasks.certificates import cert_fingerprint, check_server_cert
from tests.plugins.helm_site import HelmTestSite
from tests.plugins.site import incident_of

pytestmark = [pytest.mark.prefect]

SECRET = RESOURCES[("", "secrets")]


def secret(site: HelmTestSite, name: str) -> dict[str, str]:
    """A Secret's decoded data, read in-process from the sandbox store (the assertion
    does not depend on the code under test)."""
    cluster, ns = site.helm.served.cluster, site.helm.namespace
    with cluster.store.lock:
        obj = cluster.store.find(SECRET, ns, name)
        data = dict((obj or {}).get("data") or {})
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def install_ca(site: HelmTestSite, *, with_key: bool = True) -> dict[str, str]:
    """Makes the release what a setup (or an earlier rotation) leaves behind: a real CA
    in ``ca.crt`` (its key in ``ca.key`` when ``with_key``) that is the tunnel's one
    active CA, and a server certificate from it. Returns the values (``ca.key`` too, also
    when it was not written)."""
    ca = certificates.new_ca("sandbox helm CA")
    server = certificates.server_cert(ca, site.helm.domain, days=30)
    values = {
        "ca.crt": ca.cert_pem,
        "tls.crt": server.cert_pem,
        "tls.key": server.key_pem.get_secret_value(),
    }
    main = (*values, "ca.key") if with_key else tuple(values)
    values["ca.key"] = ca.key_pem.get_secret_value()
    cluster, ns, rel = site.helm.served.cluster, site.helm.namespace, site.helm.release
    with cluster.store.lock:
        for name, keys in ((rel, main), (f"{rel}-cert", ("tls.crt", "tls.key"))):
            obj = cluster.store.find(SECRET, ns, name)
            assert obj is not None, name
            obj["data"] = {
                **(obj.get("data") or {}),
                **{k: base64.b64encode(values[k].encode()).decode() for k in keys},
            }
    state, tunnel = site.sandbox.state, site.helm.tunnel_id
    seeded = [c.id for c in state.tunnels[tunnel].active_certificates()]
    anthropic_tunnels.create_certificate(state, tunnel, {"ca_certificate_pem": ca.cert_pem})
    for cid in seeded:
        anthropic_tunnels.archive_certificate(state, tunnel, cid)
    return values


def deployment(site: HelmTestSite) -> dict[str, Any]:
    cluster = site.helm.served.cluster
    res = RESOURCES[("apps", "deployments")]
    with cluster.store.lock:
        return cluster.store.find(res, site.helm.namespace, site.helm.release)


def pods(site: HelmTestSite) -> list[dict[str, Any]]:
    cluster = site.helm.served.cluster
    res = RESOURCES[("", "pods")]
    with cluster.store.lock:
        return [
            o
            for o in cluster.store.list(res, site.helm.namespace)
            if o is not None
            and (o["metadata"].get("labels") or {}).get("app.kubernetes.io/instance")
            == site.helm.release
        ]


def ready_hashes(site: HelmTestSite) -> set[str]:
    """pod-template-hash of every Ready pod of the release that is not terminating."""
    out = set()
    for pod in pods(site):
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if pod["metadata"].get("deletionTimestamp") or not statuses:
            continue
        if all(cs.get("ready") for cs in statuses):
            out.add(pod["metadata"]["labels"].get("pod-template-hash"))
    return out


def drill(site: HelmTestSite, *args: str) -> Any:
    site.env.pop("MCP_IR_PLAYBOOK_DIR", None)  # the real rotation-drill playbook
    return site.cli("drill", "--target", site.target, "--as", "alice", *args)


def phases(records: list[Any]) -> dict[str, dict[str, Any]]:
    return {r.data["phase"]: r.data for r in records if r.kind == "drill.phase"}


def test_drill_on_helm_rotates_the_token_the_certificate_and_the_ca(
    helm_site: HelmTestSite,
) -> None:
    site = helm_site
    rel = site.helm.release
    before = install_ca(site)
    old_token = site.helm.token
    assert site.sandbox.connect(old_token) == 200
    old_pod_names = {p["metadata"]["name"] for p in pods(site)}
    old_hashes = ready_hashes(site)
    assert old_hashes

    proc = drill(site, "--rotate-ca")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout)

    # Token: the old one is rejected, the new one (in both Secrets) accepted.
    new_token = secret(site, rel)["tunnel-token"]
    assert new_token != old_token
    assert secret(site, f"{rel}-token")["tunnel-token"] == new_token
    assert site.sandbox.connect(old_token) == 403
    assert site.sandbox.connect(new_token) == 200
    assert len(site.sandbox.state.tunnels[site.helm.tunnel_id].rotations) == 1
    # The other keys were kept: tunnel id/domain.
    now = secret(site, rel)
    assert now["tunnel-id"] == site.helm.tunnel_id and now["tunnel-domain"] == site.helm.domain
    # CA (phase 3, both CA slots): a new CA took the second slot, the old one is archived,
    # the new CA and its key are in the release Secret, and the server certificate in
    # both Secrets is from the new CA, for *.<domain>.
    assert now["ca.crt"] != before["ca.crt"] and now["ca.key"] != before["ca.key"]
    certificates.load_ca(now["ca.crt"], now["ca.key"])  # the key belongs to the CA
    tunnel = site.sandbox.state.tunnels[site.helm.tunnel_id]
    assert [c.fingerprint for c in tunnel.active_certificates()] == [
        cert_fingerprint(now["ca.crt"])
    ]
    assert now["tls.crt"] != before["tls.crt"] and now["tls.key"] != before["tls.key"]
    assert secret(site, f"{rel}-cert")["tls.crt"] == now["tls.crt"]
    assert check_server_cert(now["tls.crt"], now["ca.crt"], site.helm.domain) == []
    # The Deployment rolled: new pod-template hash, new Ready pods, old ones gone.
    template = deployment(site)["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in template
    new_hashes = ready_hashes(site)
    assert new_hashes and new_hashes.isdisjoint(old_hashes)
    ready_names = {
        p["metadata"]["name"]
        for p in pods(site)
        if p["metadata"]["labels"].get("pod-template-hash") in new_hashes
    }
    assert ready_names and ready_names.isdisjoint(old_pod_names)

    records = site.trail(incident).records()
    opened = next(r for r in records if r.kind == "incident.opened").data
    assert opened["drill"] is True and opened["playbook"] == "rotation-drill"
    got = phases(records)
    assert list(got) == ["rotate token", "renew server certificate", "rotate CA"]
    assert all(p["status"] == "succeeded" for p in got.values())
    # Phase 2 renewed from the CURRENT CA, with the key kept beside it in the Secret.
    renewed = next(r for r in records if r.kind == "drill.cert.renewed").data
    assert renewed["ca"] == cert_fingerprint(before["ca.crt"])
    assert renewed["ca_key_from"] == f"Secret {rel}/ca.key"
    report = (site.evidence / incident / "drill-report.md").read_text()
    assert "| rotate token | succeeded |" in report
    assert "| renew server certificate | succeeded |" in report
    assert "| rotate CA | succeeded |" in report
    tid = site.helm.tunnel_id
    old_ca_id = next(r for r in records if r.kind == "drill.ca.before").data["certificate_id"]
    assert sorted(set(site.mutating_calls())) == sorted(
        {
            f"POST /v1/tunnels/{tid}/reveal_token",
            f"POST /v1/tunnels/{tid}/rotate_token",
            f"POST /v1/tunnels/{tid}/certificates",
            f"POST /v1/tunnels/{tid}/certificates/{old_ca_id}/archive",
        }
    )

    evidence = b"".join(
        p.read_bytes() for p in (site.evidence / incident).rglob("*") if p.is_file()
    )
    secrets_seen = (old_token, new_token, before["ca.key"], now["ca.key"], now["tls.key"])
    for value in (*secrets_seen, before["tls.key"]):
        body = "".join(value.strip().splitlines()[1:-1]) if "-----" in value else value
        assert body.encode() not in evidence
        assert body not in proc.stdout + proc.stderr
    assert verify_dir(site.evidence / incident).ok

    # Run again with the same incident: nothing is rotated or rolled a second time.
    hashes = ready_hashes(site)
    again = site.cli("drill", "--target", site.target, "--incident", incident)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(site.sandbox.state.tunnels[site.helm.tunnel_id].rotations) == 1
    assert len(site.sandbox.state.tunnels[site.helm.tunnel_id].active_certificates()) == 1
    assert secret(site, rel)["tunnel-token"] == new_token and ready_hashes(site) == hashes


def test_drill_on_helm_without_the_ca_key_fails_before_changing_the_certificate(
    helm_site: HelmTestSite,
) -> None:
    site = helm_site
    rel = site.helm.release
    before = install_ca(site, with_key=False)
    proc = drill(site)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout)
    assert "the current CA's private key is not available" in proc.stdout
    assert f'key "ca.key" of Secret "{rel}"' in proc.stdout
    assert "aws.secrets_manager.ca_secret_id (not configured)" in proc.stdout

    # The certificate phase changed nothing: the TLS pair and the CA are as they were.
    now = secret(site, rel)
    assert now["tls.crt"] == before["tls.crt"] and now["tls.key"] == before["tls.key"]
    assert secret(site, f"{rel}-cert")["tls.crt"] == before["tls.crt"]
    assert "ca.key" not in now and now["ca.crt"] == before["ca.crt"]
    # The token phase before it did succeed: the stack runs with the rotated token.
    assert site.sandbox.connect(now["tunnel-token"]) == 200
    assert site.sandbox.connect(site.helm.token) == 403

    records = site.trail(incident).records()
    got = phases(records)
    assert got["rotate token"]["status"] == "succeeded"
    assert got["renew server certificate"]["status"] == "failed"
    assert "private key is not available" in got["renew server certificate"]["error"]
    assert "nothing to roll back" in got["renew server certificate"]["rollback"]
    assert not [r for r in records if r.kind == "drill.cert.renewed"]
    assert verify_dir(site.evidence / incident).ok


def test_drill_on_helm_renews_from_the_ca_key_kept_in_aws_secrets_manager(
    helm_site: HelmTestSite, moto_server: str
) -> None:
    import json

    from sandbox.moto import moto_env, secrets_client
    from sandbox.site import write_inventory

    site = helm_site
    rel = site.helm.release
    before = install_ca(site, with_key=False)
    site.env.update(moto_env(moto_server))
    site.env.pop("AWS_PROFILE", None)
    sm = secrets_client(moto_server)
    ca_secret = f"{site.target}/ca"
    ca_key = before["ca.key"]  # the setup kept the CA key in AWS, not in the Secret
    assert "ca.key" not in secret(site, rel)
    sm.create_secret(
        Name=ca_secret, SecretString=json.dumps({"ca.crt": before["ca.crt"], "ca.key": ca_key})
    )
    target = dict(site.helm.target)
    target["aws"] = {
        "region": "us-east-1",
        "secrets_manager": {"token_secret_id": f"{site.target}/token", "ca_secret_id": ca_secret},
    }
    write_inventory(site.inventory, {site.target: target})

    proc = drill(site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout)
    now = secret(site, rel)
    assert now["tls.crt"] != before["tls.crt"]
    assert check_server_cert(now["tls.crt"], before["ca.crt"], site.helm.domain) == []
    assert now["ca.key"] == ca_key  # kept beside ca.crt for the next drill
    renewed = next(r for r in site.trail(incident).records() if r.kind == "drill.cert.renewed")
    assert renewed.data["ca_key_from"] == f"AWS secret {ca_secret}"
    body = "".join(ca_key.strip().splitlines()[1:-1])
    evidence = b"".join(
        p.read_bytes() for p in (site.evidence / incident).rglob("*") if p.is_file()
    )
    assert body.encode() not in evidence and body not in proc.stdout + proc.stderr
    assert verify_dir(site.evidence / incident).ok


def test_drill_on_helm_killed_after_rotation_resumes_without_rotating_twice(
    helm_site: HelmTestSite,
) -> None:
    site = helm_site
    rel = site.helm.release
    install_ca(site)
    site.env["MCP_IR_FAILPOINT"] = "drill_rotate_token:after_rotate"
    killed = drill(site, "--incident", "INC-drill-h1")
    assert killed.returncode == 137, killed.stdout + killed.stderr
    # Rotated, not deployed yet: the Secrets still hold the (now dead) old token.
    assert site.sandbox.connect(site.helm.token) == 403
    assert secret(site, rel)["tunnel-token"] == site.helm.token
    site.env.pop("MCP_IR_FAILPOINT")
    resumed = site.cli("drill", "--target", site.target, "--incident", "INC-drill-h1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert len(site.sandbox.state.tunnels[site.helm.tunnel_id].rotations) == 1
    token = secret(site, rel)["tunnel-token"]
    assert token != site.helm.token and site.sandbox.connect(token) == 200
    assert secret(site, f"{rel}-token")["tunnel-token"] == token
    records = site.trail("INC-drill-h1").records()
    assert [r.kind for r in records].count("tunnel.token_rotated") == 1
    assert verify_dir(site.evidence / "INC-drill-h1").ok
