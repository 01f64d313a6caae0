"""Fidelity of the sandbox apiserver: what the real client sends and parses."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

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


def test_deleting_a_deployment_collects_its_replicasets_and_pods_later(k8s):
    """Background propagation is asynchronous: the ReplicaSet outlives its Deployment
    for a moment (and recreates a pod deleted meanwhile); then everything goes."""
    k8s.cluster.gc.delay_s = 1.0
    apps, core = client.AppsV1Api(k8s.api), client.CoreV1Api(k8s.api)
    sel = "app.kubernetes.io/instance=billing"
    apps.delete_namespaced_deployment("billing-api", NS)
    rs = apps.list_namespaced_replica_set(NS, label_selector=sel).items
    assert [r.metadata.name.startswith("billing-api-") for r in rs] == [True]
    victim = core.list_namespaced_pod(NS, label_selector=sel).items[0].metadata.name
    core.delete_namespaced_pod(victim, NS, grace_period_seconds=0)
    names = {p.metadata.name for p in core.list_namespaced_pod(NS, label_selector=sel).items}
    assert names and victim not in names  # the ReplicaSet replaced it
    deadline = time.monotonic() + 5
    while (
        apps.list_namespaced_replica_set(NS, label_selector=sel).items
        or core.list_namespaced_pod(NS, label_selector=sel).items
    ):
        assert time.monotonic() < deadline, "dependents were not garbage-collected"
        time.sleep(0.05)


def test_foreground_delete_keeps_the_owner_until_its_dependents_are_gone(k8s):
    k8s.cluster.gc.delay_s = 0.3
    apps, core = client.AppsV1Api(k8s.api), client.CoreV1Api(k8s.api)
    sel = "app.kubernetes.io/instance=billing"
    apps.delete_namespaced_deployment("billing-api", NS, propagation_policy="Foreground")
    dep = apps.read_namespaced_deployment("billing-api", NS)
    assert dep.metadata.deletion_timestamp is not None
    assert dep.metadata.finalizers == ["foregroundDeletion"]
    deadline = time.monotonic() + 5
    while True:
        dep = apps.list_namespaced_deployment(NS, field_selector="metadata.name=billing-api")
        pods = core.list_namespaced_pod(NS, label_selector=sel).items
        if not dep.items:
            assert pods == []  # the owner went last
            break
        assert time.monotonic() < deadline
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
                httpx.get(f"https://127.0.0.1:{port}/_sandbox/calls", timeout=0.5, verify=False)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{port}"
        assert config["clusters"][0]["cluster"]["certificate-authority-data"]
        assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
        api = load_client(str(kubeconfig), "sandbox")
        deps = client.AppsV1Api(api).list_namespaced_deployment(NS).items
        assert {d.metadata.name for d in deps} == {"mcp-tunnel", "billing-api"}
        api.close()
    finally:
        proc.terminate()
        proc.wait(10)


# ---------------------------------------------------------------- validation, like an apiserver

MESSAGES = json.loads(
    (Path(__file__).parent / "fixtures" / "k8s_status" / "messages.json").read_text()
)


def _secret(name: str, stype: str, **data: str) -> client.V1Secret:
    encoded = {k.replace("_", "."): base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return client.V1Secret(metadata=client.V1ObjectMeta(name=name), type=stype, data=encoded)


def test_tls_secret_without_its_keys_is_the_apiservers_422(k8s):
    core = client.CoreV1Api(k8s.api)
    name = "bind-nsd-qa-de-1-secret-env"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret(NS, _secret(name, "kubernetes.io/tls", cert_pem="x"))
    status = _status(err.value)
    assert err.value.status == 422 and status["reason"] == "Invalid"
    assert status["message"] == MESSAGES["tls_secret_missing_keys"]
    assert [c["field"] for c in status["details"]["causes"]] == ["data[tls.crt]", "data[tls.key]"]
    assert {c["reason"] for c in status["details"]["causes"]} == {"FieldValueRequired"}


def test_secret_type_and_immutable_data_cannot_change(k8s):
    core = client.CoreV1Api(k8s.api)
    core.create_namespaced_secret(NS, _secret("tls-ingress", "Opaque", a="1"))
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_secret(
            "tls-ingress",
            NS,
            {"type": "kubernetes.io/tls", "stringData": {"tls.crt": "c", "tls.key": "k"}},
        )
    assert _status(err.value)["message"] == MESSAGES["secret_type_immutable"]
    body = _secret("test", "Opaque", one="two")
    body.immutable = True
    core.create_namespaced_secret(NS, body)
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_secret("test", NS, {"data": {"one": "dGhyZWU="}})
    assert _status(err.value)["message"] == MESSAGES["immutable_secret_data"]
    assert core.read_namespaced_secret("test", NS).data == {"one": "dHdv"}


def test_stale_merge_patch_is_a_409_and_changes_nothing(k8s):
    core = client.CoreV1Api(k8s.api)
    rv = core.read_namespaced_config_map("billing-config", NS).metadata.resource_version
    core.patch_namespaced_config_map("billing-config", NS, {"data": {"x": "1"}})
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map(
            "billing-config",
            NS,
            {"metadata": {"resourceVersion": rv}, "data": {"x": "2"}},
            _content_type="application/merge-patch+json",
        )
    assert err.value.status == 409
    assert _status(err.value)["message"] == MESSAGES["conflict"]
    assert core.read_namespaced_config_map("billing-config", NS).data["x"] == "1"


def test_network_policy_fields_are_validated(k8s):
    net = client.NetworkingV1Api(k8s.api)
    body = {
        "metadata": {"name": "np"},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
            "policyTypes": ["Ingress", "Egress", "Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}],
            "egress": [{"ports": [{"protocol": "ICMP", "port": 70000}]}],
        },
    }
    with pytest.raises(ApiException) as err:
        net.create_namespaced_network_policy(NS, body)
    fields = [c["field"] for c in _status(err.value)["details"]["causes"]]
    assert fields == [
        "spec.podSelector.matchExpressions[0].values",
        "spec.ingress[0].from[0]",
        "spec.egress[0].ports[0].protocol",
        "spec.egress[0].ports[0].port",
        "spec.policyTypes",
    ]
    assert _status(err.value)["message"].startswith(
        'NetworkPolicy.networking.k8s.io "np" is invalid: ['
    )


def test_a_bad_request_never_corrupts_the_store(k8s):
    apps, core = client.AppsV1Api(k8s.api), client.CoreV1Api(k8s.api)
    before = {k: json.dumps(v, sort_keys=True) for k, v in k8s.cluster.store.objects.items()}
    broken = {
        "metadata": {"name": "broken"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {}}},
    }
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(NS, broken)
    assert err.value.status == 422
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment("billing-api", NS, {"spec": {"replicas": "two"}})
    assert err.value.status == 400 and "cannot unmarshal string" in _status(err.value)["message"]
    k8s.cluster.step()
    after = {k: json.dumps(v, sort_keys=True) for k, v in k8s.cluster.store.objects.items()}
    assert {k for k in after if k[1] != "events"} == {k for k in before if k[1] != "events"}
    core.create_namespaced_config_map(  # the namespace still takes writes
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="fine"))
    )


def test_dry_run_all_changes_nothing(k8s):
    core = client.CoreV1Api(k8s.api)
    made = core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dry")), dry_run="All"
    )
    assert made.metadata.name == "dry"
    core.delete_namespaced_secret("mcp-tunnel", NS, dry_run="All")
    core.patch_namespaced_secret("mcp-tunnel", NS, {"data": {"x": "eA=="}}, dry_run="All")
    assert "x" not in core.read_namespaced_secret("mcp-tunnel", NS).data
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("dry", NS)
    assert [c for c in k8s.calls() if c["code"] >= 300] == []


def test_limit_and_continue_page_through_a_list(k8s):
    core = client.CoreV1Api(k8s.api)
    everything = [s.metadata.name for s in core.list_namespaced_secret(NS).items]
    paged, token = [], None
    while True:
        page = core.list_namespaced_secret(NS, limit=2, _continue=token)
        paged += [s.metadata.name for s in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == len(everything) - len(paged)
    assert paged == everything
    with pytest.raises(ApiException) as err:
        core.list_namespaced_secret(NS, limit=2, _continue="not-a-token")
    assert err.value.status == 400


def test_watch_streams_events_after_a_resource_version(k8s):
    from kubernetes import watch

    core = client.CoreV1Api(k8s.api)
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w1"))
    )
    core.delete_namespaced_config_map("w1", NS)
    events = []
    for event in watch.Watch().stream(
        core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=2
    ):
        events.append((event["type"], event["object"].metadata.name))
        if len(events) == 2:
            break
    assert events == [("ADDED", "w1"), ("DELETED", "w1")]
