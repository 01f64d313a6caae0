"""Teardown's credential removal and rotation on Helm, through the real client."""

from __future__ import annotations

import base64
import logging
import secrets
import time

import pytest
from kubernetes import client

from core.errors import ConfigError
from core.redact import fingerprint
from tasks.kubernetes import (
    remove_credentials,
    rollout_restart,
    uninstall_release,
    wait_ready,
    write_credentials,
)

NS = "mcp-tunnel"
REL = "mcp-tunnel"


def _new_creds() -> dict[str, str]:
    return {
        "token": "tnltok_" + secrets.token_urlsafe(32),
        "ca_crt": "-----BEGIN CERTIFICATE-----\nMIIBnewCA\n-----END CERTIFICATE-----\n",
        "tls_crt": "-----BEGIN CERTIFICATE-----\nMIIBnewTLS\n-----END CERTIFICATE-----\n",
        "tls_key": "-----BEGIN PRIVATE KEY-----\n"
        + secrets.token_hex(24)
        + "\n-----END PRIVATE KEY-----\n",
        "tunnel_id": "tnl_" + secrets.token_hex(12),
        "domain": "f00dcafe.tunnels.example.com",
    }


def _secret(api, name: str) -> dict[str, str]:
    data = client.CoreV1Api(api).read_namespaced_secret(name, NS).data
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _pods(api) -> list[client.V1Pod]:
    return (
        client.CoreV1Api(api)
        .list_namespaced_pod(NS, label_selector="app.kubernetes.io/instance=mcp-tunnel")
        .items
    )


def _eventually_only(api, names: set[str], timeout_s: float = 5.0) -> list[client.V1Pod]:
    """Old pods terminate gracefully (Terminating for a moment): wait until they are gone."""
    deadline = time.monotonic() + timeout_s
    while True:
        pods = _pods(api)
        if {p.metadata.name for p in pods} == names or time.monotonic() > deadline:
            return pods
        time.sleep(0.05)


def test_remove_credentials_deletes_three_secrets_and_setup_job(k8s):
    uninstall_release(k8s.api, NS, REL)
    result = remove_credentials(k8s.api, NS, REL)
    assert sorted(result.deleted) == [
        "Job/mcp-tunnel-setup",
        "Secret/mcp-tunnel",
        "Secret/mcp-tunnel-cert",
        "Secret/mcp-tunnel-token",
    ]
    core, batch = client.CoreV1Api(k8s.api), client.BatchV1Api(k8s.api)
    names = {s.metadata.name for s in core.list_namespaced_secret(NS).items}
    assert names == {"billing-db", "sh.helm.release.v1.billing.v1"}
    assert batch.list_namespaced_job(NS).items == []
    again = remove_credentials(k8s.api, NS, REL)
    assert again.deleted == [] and len(again.absent) == 4
    deletes = [c for c in k8s.calls() if c["verb"] == "delete" and c["code"] < 300]
    assert len([c for c in deletes if c["name"] == "mcp-tunnel-token"]) == 1


def test_rotation_writes_new_secrets_and_rolls_new_ready_pods(k8s, caplog):
    caplog.set_level(logging.DEBUG)
    old_pods = {p.metadata.name for p in _pods(k8s.api)}
    old_hash = {p.metadata.labels["pod-template-hash"] for p in _pods(k8s.api)}
    creds = _new_creds()
    result = write_credentials(k8s.api, NS, REL, **creds, timeout_s=30)
    assert sorted(result.secrets_written) == ["mcp-tunnel", "mcp-tunnel-cert", "mcp-tunnel-token"]
    main = _secret(k8s.api, REL)
    assert main["tunnel-token"] == creds["token"]
    assert main["tls.key"] == creds["tls_key"]
    assert main["tunnel-id"] == creds["tunnel_id"]
    assert main["tunnel-domain"] == creds["domain"]
    assert _secret(k8s.api, "mcp-tunnel-token") == {"tunnel-token": creds["token"]}
    assert _secret(k8s.api, "mcp-tunnel-cert")["tls.crt"] == creds["tls_crt"]
    assert result.fingerprints["mcp-tunnel/tunnel-token"] == fingerprint(creds["token"])
    # Restarted: a new pod-template-hash, new pods all Ready, the old ones gone.
    assert result.restarted
    assert result.pod_template_hash not in old_hash
    assert len(result.ready_pods) == 2 and not set(result.ready_pods) & old_pods
    dep = client.AppsV1Api(k8s.api).read_namespaced_deployment(REL, NS)
    assert "kubectl.kubernetes.io/restartedAt" in dep.spec.template.metadata.annotations
    live = _eventually_only(k8s.api, set(result.ready_pods))
    assert {p.metadata.name for p in live} == set(result.ready_pods)
    assert all(cs.ready for p in live for cs in p.status.container_statuses)
    rs = (
        client.AppsV1Api(k8s.api)
        .list_namespaced_replica_set(NS, label_selector="app.kubernetes.io/instance=mcp-tunnel")
        .items
    )
    assert sorted(r.spec.replicas for r in rs) == [0, 2]
    # Values never reach logs or the result.
    text = caplog.text + repr(result)
    for value in (creds["token"], creds["tls_key"]):
        assert value not in text


def test_rotation_rerun_with_same_values_does_not_restart_again(k8s):
    creds = _new_creds()
    first = write_credentials(k8s.api, NS, REL, **creds, timeout_s=30)
    patches = [c for c in k8s.calls() if c["verb"] == "patch" and c["resource"] == "deployments"]
    second = write_credentials(k8s.api, NS, REL, **creds, timeout_s=30)
    assert not second.restarted
    assert second.pod_template_hash == first.pod_template_hash
    assert second.ready_pods == first.ready_pods
    assert [
        c for c in k8s.calls() if c["verb"] == "patch" and c["resource"] == "deployments"
    ] == patches


def test_rotation_after_uninstall_writes_secrets_without_restart(k8s):
    uninstall_release(k8s.api, NS, REL)
    creds = _new_creds()
    result = write_credentials(k8s.api, NS, REL, **creds, timeout_s=5)
    assert not result.restarted and result.ready_pods == []
    assert _secret(k8s.api, REL)["tunnel-token"] == creds["token"]


def test_rotation_creates_the_release_secret_when_none_exists(k8s):
    uninstall_release(k8s.api, NS, REL)
    remove_credentials(k8s.api, NS, REL)
    creds = _new_creds()
    result = write_credentials(k8s.api, NS, REL, **creds, timeout_s=5)
    assert result.secrets_written == [REL]
    assert set(_secret(k8s.api, REL)) == {
        "tunnel-id",
        "tunnel-domain",
        "tunnel-token",
        "ca.crt",
        "tls.crt",
        "tls.key",
    }


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("token", "", "tunnel-token"),
        ("tls_key", "not a pem", "tls.key"),
        ("domain", "Not A Host!", "domain"),
    ],
)
def test_rotation_rejects_bad_input_naming_the_field(k8s, field, value, named):
    creds = _new_creds() | {field: value}
    with pytest.raises(ConfigError) as err:
        write_credentials(k8s.api, NS, REL, **creds)
    assert named in err.value.detail
    if value:
        assert value not in err.value.detail
    assert not [c for c in k8s.calls() if c["verb"] == "patch"]


def test_rollout_restart_rolls_pods_like_kubectl(k8s):
    apps = client.AppsV1Api(k8s.api)
    before = {p.metadata.labels["pod-template-hash"] for p in _pods(k8s.api)}
    rollout_restart(k8s.api, NS, REL)
    dep = apps.read_namespaced_deployment(REL, NS)
    assert dep.metadata.generation == 2
    new_hash, pods = wait_ready(k8s.api, NS, REL, previous_hash=before.pop(), timeout_s=30)
    live = _eventually_only(k8s.api, set(pods))
    assert {p.metadata.labels["pod-template-hash"] for p in live} == {new_hash}
    assert dep.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    assert len(pods) == 2
