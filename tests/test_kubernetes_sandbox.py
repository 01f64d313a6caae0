"""Fidelity of the sandbox apiserver: what the real client sends and parses."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tasks.kubernetes import load_client

NS = "mcp-tunnel"


def _status(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_create_returns_201_with_identity_and_409_already_exists(k8s):
    core = client.CoreV1Api(k8s.api)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="probe"), data={"a": "1"})
    made, code, _ = core.create_namespaced_config_map_with_http_info(NS, body)
    assert code == 201
    assert made.metadata.uid and made.metadata.resource_version
    assert made.metadata.creation_timestamp is not None
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, body)
    assert err.value.status == 409
    assert _status(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'configmaps "probe" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "probe", "kind": "configmaps"},
        "code": 409,
    }


def test_not_found_status_is_the_apiservers(k8s):
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(k8s.api).delete_namespaced_secret("x", NS)
    assert err.value.status == 404
    assert _status(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'secrets "x" not found',
        "reason": "NotFound",
        "details": {"name": "x", "kind": "secrets"},
        "code": 404,
    }


def test_stale_resource_version_is_a_conflict(k8s):
    core = client.CoreV1Api(k8s.api)
    cm = core.read_namespaced_config_map("billing-config", NS)
    cm.data = {"port": "9001"}
    core.replace_namespaced_config_map("billing-config", NS, cm)
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("billing-config", NS, cm)  # old resourceVersion
    assert err.value.status == 409 and _status(err.value)["reason"] == "Conflict"


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app.kubernetes.io/instance=billing", {"billing-config"}),
        ("app.kubernetes.io/instance in (billing, other)", {"billing-config"}),
        ("app.kubernetes.io/instance notin (billing)", {"mcp-tunnel-config"}),
        ("app.kubernetes.io/instance!=mcp-tunnel", {"billing-config"}),
        ("!helm.sh/chart", {"billing-config"}),
        ("helm.sh/chart", {"mcp-tunnel-config"}),
        ("helm.sh/chart,app.kubernetes.io/instance=billing", set()),
    ],
)
def test_label_selectors(k8s, selector, expected):
    items = client.CoreV1Api(k8s.api).list_namespaced_config_map(NS, label_selector=selector)
    assert {i.metadata.name for i in items.items} == expected


def test_field_selectors_and_unsupported_field(k8s):
    core = client.CoreV1Api(k8s.api)
    items = core.list_namespaced_secret(NS, field_selector="type=helm.sh/release.v1").items
    assert len(items) == 3
    with pytest.raises(ApiException) as err:
        core.list_namespaced_secret(NS, field_selector="data.x=1")
    assert err.value.status == 400
    assert _status(err.value)["message"] == "field label not supported: data.x"


def test_secret_data_is_base64_and_string_data_is_folded_in(k8s):
    core = client.CoreV1Api(k8s.api)
    core.create_namespaced_secret(
        NS, client.V1Secret(metadata=client.V1ObjectMeta(name="s1"), string_data={"k": "v"})
    )
    got = core.read_namespaced_secret("s1", NS)
    assert got.data == {"k": "dg=="} and got.string_data is None and got.type == "Opaque"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret(
            NS, client.V1Secret(metadata=client.V1ObjectMeta(name="s2"), data={"k": "!!"})
        )
    assert err.value.status == 400


def test_pod_logs_options(k8s):
    core = client.CoreV1Api(k8s.api)
    pod = k8s.seeded.pods[0]

    def log(**kw) -> str:
        return core.read_namespaced_pod_log(pod, NS, _preload_content=False, **kw).data.decode()

    plain = log(container="mcp-proxy")
    assert plain.splitlines()[0].startswith('{"level":"info","msg":"route configured"')
    assert log(container="mcp-proxy", tail_lines=1).count("\n") == 1
    assert log(container="mcp-proxy", since_seconds=3600) == plain
    assert "Registered tunnel connection" in log(container="cloudflared", previous=True)
    with pytest.raises(ApiException) as err:
        log()
    assert err.value.status == 400
    assert "a container name must be specified for pod" in _status(err.value)["message"]
    with pytest.raises(ApiException) as err:
        log(container="mcp-proxy", previous=True)
    assert 'previous terminated container "mcp-proxy"' in _status(err.value)["message"]


def test_pod_status_has_container_statuses_with_restarts(k8s):
    pod = client.CoreV1Api(k8s.api).read_namespaced_pod(k8s.seeded.pods[0], NS)
    statuses = {cs.name: cs for cs in pod.status.container_statuses}
    assert set(statuses) == {"mcp-proxy", "cloudflared"}
    assert statuses["cloudflared"].restart_count == 1
    assert statuses["cloudflared"].last_state.terminated.exit_code == 1
    assert all(cs.ready for cs in statuses.values())
    assert pod.metadata.owner_references[0].kind == "ReplicaSet"


def test_graceful_pod_delete_leaves_pod_terminating_and_grace_zero_removes_it(k8s):
    k8s.cluster.exit_after_s = 60
    core = client.CoreV1Api(k8s.api)
    pod = k8s.seeded.pods[0]
    returned = core.delete_namespaced_pod(pod, NS)
    assert returned.metadata.name == pod and returned.metadata.deletion_timestamp
    still = core.read_namespaced_pod(pod, NS)
    assert still.metadata.deletion_grace_period_seconds == 30
    core.delete_namespaced_pod(pod, NS, grace_period_seconds=0)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod(pod, NS)
    assert err.value.status == 404


def test_deleting_a_deployment_collects_its_replicasets_and_pods(k8s):
    apps, core = client.AppsV1Api(k8s.api), client.CoreV1Api(k8s.api)
    apps.delete_namespaced_deployment("billing-api", NS)
    sel = "app.kubernetes.io/instance=billing"
    assert apps.list_namespaced_replica_set(NS, label_selector=sel).items == []
    deadline = time.monotonic() + 5
    while core.list_namespaced_pod(NS, label_selector=sel).items:
        assert time.monotonic() < deadline, "pods were not garbage-collected"
        time.sleep(0.05)


def test_patch_media_types(k8s):
    apps = client.AppsV1Api(k8s.api)
    apps.patch_namespaced_deployment(
        "billing-api", NS, [{"op": "replace", "path": "/spec/replicas", "value": 2}]
    )  # json-patch (list body)
    assert apps.read_namespaced_deployment("billing-api", NS).spec.replicas == 2
    apps.patch_namespaced_deployment(
        "billing-api", NS, {"spec": {"replicas": 1}}, _content_type="application/merge-patch+json"
    )
    assert apps.read_namespaced_deployment("billing-api", NS).spec.replicas == 1
    # strategic merge (dict body): containers merge by name, the other one stays
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "cloudflared", "image": "cloudflare/cloudflared:2026.11.0"}
                    ]
                }
            }
        }
    }
    apps.patch_namespaced_deployment("mcp-tunnel", NS, patch)
    containers = apps.read_namespaced_deployment("mcp-tunnel", NS).spec.template.spec.containers
    assert [(c.name, c.image.split(":")[-1]) for c in containers] == [
        ("mcp-proxy", "1.4.2"),
        ("cloudflared", "2026.11.0"),
    ]


def test_calls_are_recorded_in_order(k8s):
    core = client.CoreV1Api(k8s.api)
    core.delete_namespaced_config_map("billing-config", NS)
    core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="billing-config"))
    )
    calls = [(c["verb"], c["resource"], c["name"]) for c in k8s.calls()]
    assert calls == [
        ("delete", "configmaps", "billing-config"),
        ("create", "configmaps", "billing-config"),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_standalone_server_writes_a_kubeconfig_the_client_accepts(tmp_path):
    port = _free_port()
    kubeconfig = tmp_path / "kc.yaml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.kubernetes_api",
            "--port",
            str(port),
            "--kubeconfig",
            str(kubeconfig),
            "--seed-release",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/_sandbox/calls", timeout=0.5)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == f"http://127.0.0.1:{port}"
        assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
        api = load_client(str(kubeconfig), "sandbox")
        deps = client.AppsV1Api(api).list_namespaced_deployment(NS).items
        assert {d.metadata.name for d in deps} == {"mcp-tunnel", "billing-api"}
    finally:
        proc.terminate()
        proc.wait(10)
