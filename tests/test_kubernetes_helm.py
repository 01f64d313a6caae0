"""Helm 3 release storage: the sandbox encodes as Helm + the API do; the decoder reads it."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from kubernetes import client

from core.errors import StepFailed
from sandbox.helm_release import chart_manifest, helm_storage_encode, render_manifest
from tasks.kubernetes import read_release
from tasks.kubernetes_helm import (
    UNINSTALL_ORDER,
    decode_release,
    parse_manifest,
    uninstall_sorted,
)

NS = "mcp-tunnel"


def _decode_once(api_data: str) -> dict:
    """What a naive client does: one base64 decode, then gunzip/JSON."""
    raw = base64.b64decode(api_data)
    if raw[:3] == b"\x1f\x8b\x08":
        raw = gzip.decompress(raw)
    return json.loads(raw)


def test_release_secret_is_encoded_as_helm_and_the_api_store_it(k8s):
    secret = client.CoreV1Api(k8s.api).read_namespaced_secret(
        "sh.helm.release.v1.mcp-tunnel.v2", NS
    )
    assert secret.type == "helm.sh/release.v1"
    assert secret.metadata.labels == {
        "owner": "helm",
        "name": "mcp-tunnel",
        "status": "deployed",
        "version": "2",
        "modifiedAt": secret.metadata.labels["modifiedAt"],
    }
    once = base64.b64decode(secret.data["release"])
    # After the API layer: Helm's own base64 text, whose gzip magic encodes to "H4sI".
    assert once[:4] == b"H4sI"
    # Go's gzip.NewWriterLevel(BestCompression): magic, deflate, no flags, mtime 0,
    # XFL 2 (best compression), OS 255 (unknown).
    assert base64.b64decode(once)[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    with pytest.raises(ValueError):
        _decode_once(secret.data["release"])
    release = decode_release(secret.data["release"])
    assert release["name"] == "mcp-tunnel" and release["version"] == 2
    assert release["info"]["status"] == "deployed"
    assert release["hooks"][0]["name"] == "mcp-tunnel-setup"
    assert "mcp-tunnel-setup" not in release["manifest"]


def test_newest_revision_is_read_not_the_first(k8s):
    helm, names = read_release(k8s.api, NS, "mcp-tunnel")
    assert helm is not None and helm.version == 2 and helm.status == "deployed"
    assert names == ["sh.helm.release.v1.mcp-tunnel.v1", "sh.helm.release.v1.mcp-tunnel.v2"]
    kinds = {(r.kind, r.name) for r in parse_manifest(helm.manifest)}
    assert ("CronJob", "mcp-tunnel-cert-renew") in kinds
    assert ("ConfigMap", "mcp-tunnel-legacy-routes") not in kinds


def test_uncompressed_payload_decodes(tmp_path):
    release = {"name": "old", "version": 1, "manifest": "---\n# Source: x\nkind: ConfigMap\n"}
    api_data = base64.b64encode(helm_storage_encode(release, compress=False).encode()).decode()
    assert decode_release(api_data) == release
    gz = base64.b64encode(helm_storage_encode(release).encode()).decode()
    assert decode_release(gz) == release


@pytest.mark.parametrize(
    "bad",
    [
        "not base64!!",
        base64.b64encode(b"not base64 either!!").decode(),
        base64.b64encode(base64.b64encode(b"\x1f\x8b\x08broken")).decode(),
        base64.b64encode(base64.b64encode(b'{"no": "manifest"}')).decode(),
    ],
)
def test_bad_payloads_are_clear_errors(bad):
    with pytest.raises(StepFailed) as err:
        decode_release(bad, secret_name="sh.helm.release.v1.x.v3")
    assert "sh.helm.release.v1.x.v3" in err.value.detail


def test_manifest_split_and_uninstall_order_follow_helm():
    manifest = render_manifest(chart_manifest("mcp-tunnel", NS, revision=2))
    resources = parse_manifest(manifest)
    assert {r.source for r in resources} >= {"mcp-tunnel/templates/deployment.yaml"}
    ordered = [r.kind for r in uninstall_sorted(resources)]
    assert ordered == [
        "Service",
        "CronJob",
        "Deployment",
        "ConfigMap",
        "ServiceAccount",
        "NetworkPolicy",
    ]
    # helm/helm pkg/releaseutil/kind_sorter.go
    assert UNINSTALL_ORDER[:4] == ("APIService", "Ingress", "Service", "CronJob")
    assert UNINSTALL_ORDER[-2:] == ("NetworkPolicy", "Namespace")


def test_unknown_kinds_sort_last_and_keep_policy_is_read():
    manifest = (
        "---\n# Source: c/templates/b.yaml\napiVersion: example.com/v1\nkind: Widget\n"
        "metadata:\n  name: w\n"
        "---\n# Source: c/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        "  name: cm\n  annotations:\n    helm.sh/resource-policy: keep\n"
        "---\n# Source: c/templates/empty.yaml\n"
    )
    resources = uninstall_sorted(parse_manifest(manifest))
    assert [(r.kind, r.keep) for r in resources] == [("ConfigMap", True), ("Widget", False)]
