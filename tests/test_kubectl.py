"""The real kubectl (v1.32, /usr/bin/kubectl) against the sandbox Kubernetes API.

kubectl is the strictest client we have: it refuses bearer tokens over plain http,
needs discovery and OpenAPI v3 to apply, asks for server-side Tables, watches, pages
through lists, and prints the apiserver's Status messages. These tests run the seed's
own commands and read what mcp-ir leaves after each Helm step with it.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.plugins.site import run_text

NS = "mcp-tunnel"
REL = "mcp-tunnel"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
POLICIES = Path(__file__).parent / "fixtures" / "network_policies"


def kubectl(
    k8s: Any, *args: str, stdin: str | None = None, ok: bool = True, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig or k8s.kubeconfig)}
    cache = Path(k8s.kubeconfig).parent / "kube-cache"
    proc = run_text(
        [KUBECTL, "--cache-dir", str(cache), *args],
        input=stdin,
        env=env,
        timeout=60,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_version_discovery_and_api_resources(k8s):
    out = json.loads(kubectl(k8s, "version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == "v1.32.4"
    lines = kubectl(k8s, "api-resources", "--no-headers").stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines}
    assert set(rows) >= {"pods", "secrets", "deployments", "replicasets", "networkpolicies"}
    assert rows["networkpolicies"][1:] == [
        "netpol",
        "networking.k8s.io/v1",
        "true",
        "NetworkPolicy",
    ]


def test_get_prints_the_servers_table_and_pages_through_lists(k8s):
    pods = kubectl(k8s, "get", "pods", "-l", f"app.kubernetes.io/instance={REL}").stdout
    header, *rows = pods.splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert sorted(r.split()[0] for r in rows) == sorted(k8s.seeded.pods)
    assert all(r.split()[1] == "2/2" for r in rows)
    secrets = kubectl(k8s, "get", "secrets", "-o", "name").stdout.split()
    paged = kubectl(k8s, "get", "secrets", "-o", "name", "--chunk-size=2", "-v=6")
    assert paged.stdout.split() == secrets and len(secrets) > 4
    assert paged.stderr.count("continue=") >= len(secrets) // 2 - 1


def test_apply_validates_creates_and_reapplies_the_documentation_policies(k8s):
    for name in ("test-network-policy.yaml", "multi-port-egress.yaml", "allow-all-ingress.yaml"):
        text = (POLICIES / name).read_text().replace("namespace: default", f"namespace: {NS}")
        assert "created" in kubectl(k8s, "apply", "-f", "-", stdin=text).stdout
        assert "unchanged" in kubectl(k8s, "apply", "-f", "-", stdin=text).stdout
    got = json.loads(kubectl(k8s, "get", "netpol", "multi-port-egress", "-o", "json").stdout)
    assert got["spec"]["egress"][0]["ports"][0] == {
        "endPort": 32768,
        "port": 32000,
        "protocol": "TCP",
    }
    described = kubectl(k8s, "describe", "netpol", "test-network-policy").stdout
    assert "PodSelector:     role=db" in described and "To Port: 6379/TCP" in described


def test_invalid_objects_get_the_apiservers_422_and_unknown_fields_a_strict_400(k8s):
    bad_policy = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, labels: {tier: "not a label!"}}
spec: {podSelector: {}, policyTypes: [Ingress, Sideways]}
"""
    proc = kubectl(k8s, "apply", "-f", "-", stdin=bad_policy, ok=False)
    assert proc.returncode == 1
    assert 'The NetworkPolicy "bad" is invalid:' in proc.stderr
    assert '* spec.policyTypes[1]: Unsupported value: "Sideways": supported values: ' in proc.stderr
    assert '* metadata.labels: Invalid value: "not a label!": a valid label must' in proc.stderr
    tls = f"""
apiVersion: v1
kind: Secret
metadata: {{name: half-tls}}
type: kubernetes.io/tls
data: {{tls.crt: {base64.b64encode(b"cert").decode()}}}
"""
    proc = kubectl(k8s, "apply", "-f", "-", stdin=tls, ok=False)
    assert 'The Secret "half-tls" is invalid: data[tls.key]: Required value' in proc.stderr
    unknown = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: u}\ndata: {a: b}\nbogus: 1\n"
    proc = kubectl(k8s, "apply", "-f", "-", stdin=unknown, ok=False)
    assert 'strict decoding error: unknown field "bogus"' in proc.stderr
    for name in ("bad", "half-tls", "u"):
        assert (
            kubectl(
                k8s,
                "get",
                "netpol,secret,cm",
                "--field-selector",
                f"metadata.name={name}",
                "-o",
                "name",
            ).stdout
            == ""
        )


def test_secret_type_is_immutable_and_a_stale_patch_is_a_409(k8s):
    proc = kubectl(
        k8s,
        "patch",
        "secret",
        "mcp-tunnel-token",
        "--type=merge",
        "-p",
        '{"type": "kubernetes.io/basic-auth", "data": {"username": "dQ=="}}',
        ok=False,
    )
    assert 'type: Invalid value: "kubernetes.io/basic-auth": field is immutable' in proc.stderr
    rv = kubectl(k8s, "get", "cm", "billing-config", "-o", "jsonpath={.metadata.resourceVersion}")
    kubectl(k8s, "patch", "cm", "billing-config", "--type=merge", "-p", '{"data":{"x":"1"}}')
    stale = json.dumps({"metadata": {"resourceVersion": rv.stdout}, "data": {"x": "2"}})
    proc = kubectl(k8s, "patch", "cm", "billing-config", "--type=merge", "-p", stale, ok=False)
    assert "Error from server (Conflict)" in proc.stderr
    assert "the object has been modified" in proc.stderr
    got = kubectl(k8s, "get", "cm", "billing-config", "-o", "jsonpath={.data.x}")
    assert got.stdout == "1"


def test_a_malformed_deployment_is_refused_and_the_namespace_keeps_working(k8s):
    broken = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  selector: {matchLabels: {app: a}}
  template: {metadata: {labels: {app: b}}, spec: {containers: [{name: c}]}}
"""
    proc = kubectl(k8s, "apply", "-f", "-", stdin=broken, ok=False)
    assert 'The Deployment "broken" is invalid:' in proc.stderr
    assert "`selector` does not match template `labels`" in proc.stderr
    assert "spec.template.spec.containers[0].image: Required value" in proc.stderr
    after = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: after}\ndata: {k: v}\n"
    kubectl(k8s, "apply", "-f", "-", stdin=after)
    kubectl(k8s, "patch", "deployment", "billing-api", "-p", '{"spec":{"replicas":2}}')
    assert kubectl(k8s, "get", "deploy", "broken", ok=False).returncode == 1


def test_dry_run_server_changes_nothing(k8s):
    before = kubectl(k8s, "get", "secret", "mcp-tunnel", "-o", "json").stdout
    out = kubectl(k8s, "delete", "secret", "mcp-tunnel", "--dry-run=server").stdout
    assert "(server dry run)" in out
    dry = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dry}\ndata: {a: b}\n"
    assert (
        "(server dry run)" in kubectl(k8s, "apply", "-f", "-", "--dry-run=server", stdin=dry).stdout
    )
    assert kubectl(k8s, "get", "secret", "mcp-tunnel", "-o", "json").stdout == before
    assert kubectl(k8s, "get", "cm", "dry", ok=False).returncode == 1


def test_get_watch_streams_changes(k8s):
    env = {**os.environ, "KUBECONFIG": str(k8s.kubeconfig)}
    watch = subprocess.Popen(
        [
            KUBECTL,
            "get",
            "pods",
            "-w",
            "-l",
            "app.kubernetes.io/instance=billing",
            "--no-headers",
            "--request-timeout=20s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        core = client.CoreV1Api(k8s.api)
        first = watch.stdout.readline().split()[0]  # the listed pod
        core.delete_namespaced_pod(first, NS, grace_period_seconds=0)
        seen: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = watch.stdout.readline()
            seen.append(line)
            if any("Running" in ln and not ln.startswith(first + " ") for ln in seen):
                break
    finally:
        watch.terminate()
        watch.wait(10)
    assert any(ln.startswith(first + " ") for ln in seen)  # its deletion
    assert any("Running" in ln and not ln.startswith(first + " ") for ln in seen)  # replacement


def test_the_seeds_commands_delete_the_credentials_and_decode_the_release(k8s):
    cmd = [
        "-n",
        NS,
        "delete",
        "secret",
        "mcp-tunnel",
        "mcp-tunnel-token",
        "mcp-tunnel-cert",
        "--ignore-not-found",
    ]
    out = kubectl(k8s, *cmd).stdout
    assert out.splitlines() == [
        'secret "mcp-tunnel" deleted',
        'secret "mcp-tunnel-token" deleted',
        'secret "mcp-tunnel-cert" deleted',
    ]
    assert kubectl(k8s, *cmd).stdout == ""  # again: nothing left, still exit 0
    # FACTS §1: kubectl's jsonpath gives the API's base64; Helm's own base64 and gzip follow.
    data = kubectl(
        k8s,
        "-n",
        NS,
        "get",
        "secret",
        f"sh.helm.release.v1.{REL}.v2",
        "-o",
        "jsonpath={.data.release}",
    ).stdout
    release = json.loads(gzip.decompress(base64.b64decode(base64.b64decode(data))))
    assert (release["name"], release["version"], release["info"]["status"]) == (REL, 2, "deployed")
    assert "kind: Deployment" in release["manifest"]


def test_a_kubeconfig_written_for_the_running_cluster_works(k8s, tmp_path):
    path = k8s.served.write_kubeconfig(tmp_path / "sandbox" / "kubeconfig")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    names = kubectl(k8s, "get", "deploy", "-o", "name", kubeconfig=path).stdout.split()
    assert names == ["deployment.apps/billing-api", "deployment.apps/mcp-tunnel"]


# ------------------------------------------------------------------ after each Helm step


def test_kubectl_sees_what_each_helm_step_leaves(tmp_path: Path, k8s: Any) -> None:
    import targets.helm as _helm
    from targets.helm.isolation import cut_connections
    from tests.test_helm_e2e import step_context

    k8s.cluster.gc.delay_s = 1.0  # slow, asynchronous garbage collection
    stop = step_context(tmp_path, k8s, "stop_stack")
    _helm.isolate(stop)
    policies = kubectl(k8s, "get", "netpol", "-o", "name").stdout.split()
    assert policies == [f"networkpolicy.networking.k8s.io/mcp-ir-isolate-{REL}"]
    described = kubectl(k8s, "describe", "netpol", f"mcp-ir-isolate-{REL}").stdout
    assert "<none> (Selected pods are isolated for ingress connectivity)" in described
    assert "<none> (Selected pods are isolated for egress connectivity)" in described
    cut_connections(stop)
    pods = kubectl(k8s, "get", "pods", "-l", f"app.kubernetes.io/instance={REL}", "-o", "name")
    assert not {p.split("/")[1] for p in pods.stdout.split()} & set(k8s.seeded.pods)
    _helm.uninstall(stop)
    for _ in range(3):  # nothing comes back while the collector finishes
        left = kubectl(
            k8s,
            "get",
            "all,netpol,cm,sa,secret",
            "-l",
            f"app.kubernetes.io/instance={REL}",
            "-o",
            "name",
        ).stdout
        assert left.split() == [f"job.batch/{REL}-setup"]  # the hook: helm leaves it too
        time.sleep(0.5)
    releases = kubectl(k8s, "get", "secret", "-l", f"owner=helm,name={REL}", "-o", "name")
    assert releases.stdout == ""
    assert kubectl(k8s, "get", "netpol", "-o", "name").stdout == ""
    _helm.restore(step_context(tmp_path, k8s, "restore_service"))
    assert kubectl(k8s, "get", "netpol", REL, "-o", "name").stdout.strip() == (
        f"networkpolicy.networking.k8s.io/{REL}"
    )
    ready = kubectl(k8s, "get", "deploy", REL, "-o", "jsonpath={.status.readyReplicas}")
    assert ready.stdout == "2"


@pytest.mark.parametrize("propagation", ["background", "foreground"])
def test_kubectl_delete_cascades_asynchronously(k8s, propagation):
    k8s.cluster.gc.delay_s = 0.5
    kubectl(k8s, "delete", "deploy", "billing-api", f"--cascade={propagation}")
    deadline = time.monotonic() + 10
    while kubectl(
        k8s, "get", "rs,pods", "-l", "app.kubernetes.io/instance=billing", "-o", "name"
    ).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.2)
