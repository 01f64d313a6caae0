"""Writes beyond create/patch/delete against the sandbox Kubernetes API, with the real
kubectl (v1.32) and the real ``kubernetes`` client: the ``scale`` subresource
(``kubectl scale``, autoscaling/v1 Scale), server-side apply (``kubectl apply
--server-side``: field managers, conflicts as a 409 with the documented Status body,
``--force-conflicts``, fields dropped from an applied configuration), ``managedFields``
on every write, and the media types the sandbox does not serve (protobuf: 415/406)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.test_kubectl import NS, kubectl

CM = """apiVersion: v1
kind: ConfigMap
metadata: {name: ssa, labels: {team: a}}
data: {a: "1", b: "2"}
"""


def patch_scale(k8s: Any, body: str) -> Any:
    """``kubectl patch`` of billing-api's scale subresource (a merge patch), not checked."""
    return kubectl(
        k8s,
        "patch",
        "deploy",
        "billing-api",
        "--subresource=scale",
        "--type=merge",
        "-p",
        body,
        ok=False,
    )


def server_apply(k8s: Any, manifest: str, *flags: str, ok: bool = True) -> Any:
    """``kubectl apply --server-side [flags] -f -`` of ``manifest``."""
    return kubectl(k8s, "apply", "--server-side", *flags, "-f", "-", stdin=manifest, ok=ok)


def managers(k8s: Any, kind: str, name: str) -> dict[str, dict[str, Any]]:
    out = kubectl(k8s, "get", kind, name, "-o", "json", "--show-managed-fields").stdout
    return {
        f"{e['manager']}/{e['operation']}{'/' + e['subresource'] if 'subresource' in e else ''}": e[
            "fieldsV1"
        ]
        for e in json.loads(out)["metadata"].get("managedFields") or []
    }


def test_kubectl_scale_reads_and_writes_the_scale_subresource(k8s: Any) -> None:
    resources = kubectl(k8s, "api-resources", "--no-headers").stdout  # discovery lists it
    assert "deployments" in resources
    assert kubectl(k8s, "scale", "deploy", "billing-api", "--replicas=3").stdout.strip() == (
        "deployment.apps/billing-api scaled"
    )
    scale = json.loads(
        kubectl(
            k8s, "get", "--raw", f"/apis/apps/v1/namespaces/{NS}/deployments/billing-api/scale"
        ).stdout
    )
    assert (scale["kind"], scale["apiVersion"], scale["spec"]) == (
        "Scale",
        "autoscaling/v1",
        {"replicas": 3},
    )
    assert scale["status"]["selector"] == (
        "app.kubernetes.io/instance=billing,app.kubernetes.io/name=billing-api"
    )
    assert managers(k8s, "deploy", "billing-api")["kubectl/Update/scale"] == {
        "f:spec": {"f:replicas": {}}
    }
    # --current-replicas is a client-side precondition on the Scale it reads
    proc = kubectl(
        k8s, "scale", "deploy", "billing-api", "--current-replicas=2", "--replicas=1", ok=False
    )
    assert "Expected replicas to be 2, was 3" in proc.stderr
    proc = patch_scale(k8s, '{"spec":{"replicas":-1}}')
    assert 'The Scale "billing-api" is invalid: spec.replicas: Invalid value: -1: must be' in (
        proc.stderr
    )
    stale = '{"metadata":{"resourceVersion":"1"},"spec":{"replicas":0}}'
    proc = patch_scale(k8s, stale)
    assert 'Operation cannot be fulfilled on deployments.apps "billing-api"' in proc.stderr
    assert (
        kubectl(k8s, "get", "deploy", "billing-api", "-o", "jsonpath={.spec.replicas}").stdout
        == "3"
    )
    # the Python client's typed call reads the same Scale
    got = client.AppsV1Api(k8s.api).read_namespaced_deployment_scale("billing-api", NS)
    assert got.spec.replicas == 3 and got.status.selector == scale["status"]["selector"]
    assert (
        kubectl(
            k8s, "get", "--raw", f"/api/v1/namespaces/{NS}/configmaps/x/scale", ok=False
        ).returncode
        == 1
    )


def test_server_side_apply_owns_fields_conflicts_and_forces(k8s: Any) -> None:
    assert server_apply(k8s, CM).stdout.strip() == ("configmap/ssa serverside-applied")
    assert managers(k8s, "cm", "ssa") == {
        "kubectl/Apply": {
            "f:data": {"f:a": {}, "f:b": {}},
            "f:metadata": {"f:labels": {"f:team": {}}},
        }
    }
    other = CM.replace('a: "1"', 'a: "9"')
    proc = server_apply(k8s, other, "--field-manager=deployer", ok=False)
    assert proc.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .data.a' in proc.stderr
    server_apply(k8s, other, "--field-manager=deployer", "--force-conflicts")
    assert json.loads(kubectl(k8s, "get", "cm", "ssa", "-o", "jsonpath={.data}").stdout) == {
        "a": "9",
        "b": "2",
    }
    owners = managers(k8s, "cm", "ssa")
    assert owners["kubectl/Apply"]["f:data"] == {"f:b": {}}  # .data.a changed hands
    assert owners["deployer/Apply"]["f:data"] == {"f:a": {}, "f:b": {}}
    # kubectl stops applying label "team": deployer still applies it, so it stays;
    # and a label only kubectl applied goes when kubectl drops it
    server_apply(k8s, CM.replace("team: a", "team: a, tier: x").replace('a: "1"', 'a: "9"'))
    server_apply(k8s, 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: "9"}\n')
    labels = json.loads(
        kubectl(k8s, "get", "cm", "ssa", "-o", "jsonpath={.metadata.labels}").stdout
    )
    assert labels == {"team": "a"}


def test_apply_over_client_side_apply_conflicts_with_its_manager(k8s: Any) -> None:
    kubectl(
        k8s, "apply", "-f", "-", stdin=CM
    )  # client-side: an Update by kubectl-client-side-apply
    kubectl(k8s, "patch", "cm", "ssa", "--type=merge", "-p", '{"data":{"b":"3"}}')
    proc = server_apply(k8s, CM.replace('a: "1"', 'a: "9"'), ok=False)
    assert "Apply failed with 2 conflicts: " in proc.stderr
    assert 'conflicts with "kubectl-client-side-apply" using v1:\n- .data.a' in proc.stderr
    assert 'conflicts with "kubectl-patch" using v1:\n- .data.b' in proc.stderr
    assert kubectl(k8s, "get", "cm", "ssa", "-o", "jsonpath={.data.a}").stdout == "1"


def test_the_python_client_gets_the_documented_status_bodies(k8s: Any) -> None:
    core = client.CoreV1Api(k8s.api)
    body = yaml.safe_load(CM)
    applied = core.patch_namespaced_config_map(
        "ssa", NS, body, field_manager="mcp-ir", _content_type="application/apply-patch+yaml"
    )
    assert applied.metadata.managed_fields[0].manager == "mcp-ir"
    assert applied.metadata.managed_fields[0].operation == "Apply"
    core.patch_namespaced_config_map("ssa", NS, {"data": {"a": "2"}}, field_manager="editor")
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map(
            "ssa", NS, body, field_manager="mcp-ir", _content_type="application/apply-patch+yaml"
        )
    status = json.loads(err.value.body)
    assert err.value.status == 409 and status["reason"] == "Conflict"
    assert status["message"] == (
        'Apply failed with 1 conflict: conflict with "editor" using v1: .data.a'
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "editor" using v1',
            "field": ".data.a",
        }
    ]
    with pytest.raises(ApiException) as err:  # no fieldManager: the PatchOptions 422
        core.patch_namespaced_config_map(
            "ssa", NS, body, _content_type="application/apply-patch+yaml"
        )
    assert err.value.status == 422
    assert json.loads(err.value.body)["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for '
        "apply patch"
    )
    with pytest.raises(ApiException) as err:  # force on a merge patch
        core.patch_namespaced_config_map("ssa", NS, {"data": {"a": "3"}}, force=True)
    assert "force: Forbidden: may not be specified for non-apply patch" in err.value.body
    # a dry-run apply with force changes nothing
    core.patch_namespaced_config_map(
        "ssa",
        NS,
        body,
        field_manager="mcp-ir",
        force=True,
        dry_run="All",
        _content_type="application/apply-patch+yaml",
    )
    assert core.read_namespaced_config_map("ssa", NS).data["a"] == "2"
    # an apply to an object that does not exist creates it
    new = {**body, "metadata": {"name": "ssa-new"}}
    core.patch_namespaced_config_map(
        "ssa-new", NS, new, field_manager="mcp-ir", _content_type="application/apply-patch+yaml"
    )
    assert core.read_namespaced_config_map("ssa-new", NS).data == {"a": "1", "b": "2"}


def test_protobuf_is_refused_as_an_apiserver_without_that_serializer_would(k8s: Any) -> None:
    proc = kubectl(k8s, "create", "configmap", "typed", "--from-literal=a=b", ok=False)
    assert "the body of the request was in an unknown format" in proc.stderr
    url = f"{k8s.url}/api/v1/namespaces/{NS}/configmaps"
    headers = {"Authorization": f"Bearer {k8s.served.token}"}
    only = httpx.get(
        url, headers={**headers, "Accept": "application/vnd.kubernetes.protobuf"}, verify=k8s.verify
    )
    assert only.status_code == 406 and only.json()["reason"] == "NotAcceptable"
    either = httpx.get(
        url,
        headers={**headers, "Accept": "application/vnd.kubernetes.protobuf, application/json"},
        verify=k8s.verify,
    )
    assert either.status_code == 200 and either.json()["kind"] == "ConfigMapList"
    as_yaml = httpx.get(url, headers={**headers, "Accept": "application/yaml"}, verify=k8s.verify)
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text)["kind"] == "ConfigMapList"


DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: nginx:1.27
        ports: [{containerPort: 80}]
      - name: side
        image: busybox:1.36
"""


def test_apply_merges_containers_by_name_and_drops_what_it_stops_applying(k8s: Any) -> None:
    server_apply(k8s, DEPLOYMENT)
    kubectl(k8s, "set", "image", "deploy/web", "app=nginx:1.28")
    kubectl(k8s, "scale", "deploy", "web", "--replicas=2")
    proc = server_apply(k8s, DEPLOYMENT, ok=False)
    assert "Apply failed with 2 conflicts: " in proc.stderr
    assert 'conflicts with "kubectl" with subresource "scale" using apps/v1:\n- .spec.replicas' in (
        proc.stderr
    )
    assert (
        'conflicts with "kubectl-set" using apps/v1:\n'
        '- .spec.template.spec.containers[name="app"].image'
    ) in proc.stderr
    # the same image and no replicas: no conflict; the side container is dropped
    without_side = (
        DEPLOYMENT.replace("nginx:1.27", "nginx:1.28")
        .replace("  replicas: 1\n", "")
        .replace("      - name: side\n        image: busybox:1.36\n", "")
    )
    server_apply(k8s, without_side)
    spec = json.loads(kubectl(k8s, "get", "deploy", "web", "-o", "json").stdout)["spec"]
    assert [c["name"] for c in spec["template"]["spec"]["containers"]] == ["app"]
    assert [p["containerPort"] for p in spec["template"]["spec"]["containers"][0]["ports"]] == [80]
    assert spec["replicas"] == 2  # owned by the scale, untouched
    owners = managers(k8s, "deploy", "web")
    applied = owners["kubectl/Apply"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert list(applied) == ['k:{"name":"app"}']
    assert "f:image" in applied['k:{"name":"app"}']  # co-owned with kubectl-set
