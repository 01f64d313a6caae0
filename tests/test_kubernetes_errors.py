"""RBAC 403, 404, 500 and bad configuration become clear errors naming the resource."""

from __future__ import annotations

import pytest
from kubernetes import client

from core.errors import ConfigError, StepFailed, TransientError
from tasks.kubernetes import (
    capture,
    isolate,
    load_client,
    remove_credentials,
    rollout_restart,
    uninstall_release,
)

NS = "mcp-tunnel"
REL = "mcp-tunnel"


def test_rbac_forbidden_delete_names_verb_kind_name_and_namespace(k8s):
    k8s.faults(deny=[{"verb": "delete", "resource": "secrets", "name": "mcp-tunnel-token"}])
    with pytest.raises(StepFailed) as err:
        remove_credentials(k8s.api, NS, REL)
    detail = err.value.detail
    assert not err.value.retryable
    assert err.value.step == "kubernetes.remove_credentials"  # the operation, not a step
    assert 'delete Secret "mcp-tunnel-token" in namespace "mcp-tunnel"' in detail
    assert "403" in detail
    # The apiserver's RBAC message is quoted verbatim.
    assert (
        'secrets "mcp-tunnel-token" is forbidden: User '
        '"system:serviceaccount:mcp-ir:mcp-ir-runner" cannot delete resource "secrets" in '
        'API group "" in the namespace "mcp-tunnel"'
    ) in detail


def test_rbac_forbidden_isolation_fails_before_anything_is_deleted(k8s):
    k8s.faults(deny=[{"verb": "create", "resource": "networkpolicies"}])
    with pytest.raises(StepFailed) as err:
        isolate(k8s.api, NS, REL)
    assert 'create NetworkPolicy "mcp-ir-isolate-mcp-tunnel"' in err.value.detail
    assert 'in API group "networking.k8s.io"' in err.value.detail
    assert not [c for c in k8s.calls() if c["verb"] == "delete"]


def test_forbidden_deployment_delete_stops_uninstall_and_keeps_release_secrets(k8s):
    isolate(k8s.api, NS, REL)
    k8s.faults(deny=[{"verb": "delete", "resource": "deployments"}])
    with pytest.raises(StepFailed) as err:
        uninstall_release(k8s.api, NS, REL)
    assert 'delete Deployment "mcp-tunnel" in namespace "mcp-tunnel"' in err.value.detail
    assert 'deployments.apps "mcp-tunnel" is forbidden' in err.value.detail
    core = client.CoreV1Api(k8s.api)
    # Release Secrets still there (a re-run can finish) and the pods still isolated.
    assert len(core.list_namespaced_secret(NS, label_selector="owner=helm").items) == 3
    client.NetworkingV1Api(k8s.api).read_namespaced_network_policy("mcp-ir-isolate-mcp-tunnel", NS)
    k8s.clear_faults()
    done = uninstall_release(k8s.api, NS, REL)
    assert "Deployment/mcp-tunnel" in done.deleted
    assert "Service/mcp-tunnel" in done.already_absent


def test_internal_error_is_transient_and_a_retry_finishes(k8s):
    k8s.faults(fail_next={"count": 1, "verb": "delete", "resource": "cronjobs"})
    with pytest.raises(TransientError) as err:
        uninstall_release(k8s.api, NS, REL)
    assert err.value.retryable
    assert 'delete CronJob "mcp-tunnel-cert-renew" in namespace "mcp-tunnel"' in err.value.detail
    assert "500 InternalError" in err.value.detail
    result = uninstall_release(k8s.api, NS, REL)
    assert "CronJob/mcp-tunnel-cert-renew" in result.deleted
    assert "Service/mcp-tunnel" in result.already_absent


def test_not_found_names_the_missing_deployment(k8s):
    with pytest.raises(StepFailed) as err:
        rollout_restart(k8s.api, NS, "no-such-deploy")
    detail = err.value.detail
    assert 'patch Deployment "no-such-deploy" in namespace "mcp-tunnel"' in detail
    assert '404 NotFound: deployments.apps "no-such-deploy" not found' in detail


def test_capture_records_forbidden_logs_instead_of_failing(k8s):
    k8s.faults(deny=[{"verb": "get", "resource": "pods/log"}])
    cap = capture(k8s.api, NS, REL)
    assert not cap.complete
    log_items = [i for i in cap.incomplete if i.startswith("logs/")]
    assert len(log_items) == 5  # 2 pods x 2 containers + 1 previous log
    pod = k8s.seeded.pods[0]
    assert (
        f'pods "{pod}" is forbidden: User "system:serviceaccount:mcp-ir:mcp-ir-runner" '
        'cannot get resource "pods/log" in API group "" in the namespace "mcp-tunnel"'
    ) in cap.errors[f"logs/{pod}/cloudflared.log"]
    assert "objects/deployments.yaml" in cap.artifacts


def test_unreachable_api_is_transient(k8s):
    k8s.served.stop()
    with pytest.raises(TransientError) as err:
        isolate(k8s.api, NS, REL)
    assert "cannot reach the Kubernetes API" in err.value.detail


def test_wrong_token_is_a_clear_401(k8s, tmp_path):
    from sandbox.kubernetes_api import write_kubeconfig

    path = write_kubeconfig(
        tmp_path / "bad", k8s.url, "wrong-token", NS, ca_pem=k8s.served.tls.ca_pem
    )
    api = load_client(str(path), None)
    with pytest.raises(StepFailed) as err:
        isolate(api, NS, REL)
    assert "rejected our credentials (401)" in err.value.detail
    assert "wrong-token" not in err.value.detail


def test_load_client_honours_kubeconfig_env_and_names_bad_input(k8s, monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(k8s.kubeconfig))
    api = load_client(None, None)
    assert api.configuration.host == k8s.url
    assert client.CoreV1Api(api).read_namespaced_secret("billing-db", NS).data
    with pytest.raises(ConfigError) as err:
        load_client(str(tmp_path / "missing"), None)
    assert err.value.detail.startswith("kubeconfig:")
    with pytest.raises(ConfigError) as err:
        load_client(str(k8s.kubeconfig), "no-such-context")
    assert "no-such-context" in err.value.detail


def test_load_client_in_cluster_without_service_account_is_a_config_error(monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ConfigError) as err:
        load_client(None, None)
    assert err.value.detail.startswith("in-cluster:")
