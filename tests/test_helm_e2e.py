"""breach-response on a Helm target, end to end: the real CLI in a subprocess, a real
Prefect server, the real ``kubernetes`` client over HTTP against the sandbox Kubernetes
API (calls and faults observed through its test controls), the real anthropic SDK
against the sandbox Tunnels API.

The playbook is limited to capture_evidence → stop_stack → archive_tunnel
(tests/plugins/helm_site.py) so these tests do not depend on steps still being written.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
import yaml

from runbook.trail import verify_dir
from tests.plugins.helm_site import HelmTestSite

pytestmark = [pytest.mark.prefect]

NS = "mcp-tunnel"
REL = "mcp-tunnel"
ISOLATION = f"mcp-ir-isolate-{REL}"
METHOD = {"create": "POST", "update": "PUT", "patch": "PATCH", "delete": "DELETE"}


def incident_of(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("incident INC-"):
            return line.split()[1].rstrip(":")
    raise AssertionError(f"no incident id in output:\n{output}")


def kinds(records: list[Any], step: str | None = None) -> list[str]:
    return [r.kind for r in records if step is None or r.step == step]


def prefect_log_text(flow_run_ids: list[str]) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids))
        )
    return "\n".join(log.message for log in logs)


def call_line(call: dict[str, Any]) -> str:
    """A sandbox-recorded mutating call as ``METHOD path`` (how plans name them)."""
    prefix = f"/apis/{call['group']}/v1" if call["group"] else "/api/v1"
    path = f"{prefix}/namespaces/{call['namespace']}/{call['resource']}"
    if call["verb"] != "create":
        path += f"/{call['name']}"
    return f"{METHOD[call['verb']]} {path}"


def planned_k8s_calls(records: list[Any]) -> list[str]:
    """Mutating Kubernetes calls named by the plans in the trail (notes stripped)."""
    out: list[str] = []
    for r in records:
        if r.kind == "step.planned":
            out += [
                c.split(" (")[0]
                for c in r.data["api_calls"]
                if c.split()[0] in ("POST", "PUT", "PATCH", "DELETE") and "/namespaces/" in c
            ]
    return out


def assert_calls_match_plan(made: list[str], planned: list[str], optional: set[str]) -> None:
    """Every call made was planned; every planned call was made (except ``optional``)."""
    for call in made:
        assert any(fnmatch.fnmatchcase(call, p) for p in planned), f"unplanned call {call}"
    for p in planned:
        if p not in optional:
            assert any(fnmatch.fnmatchcase(c, p) for c in made), f"planned but not made: {p}"


def release_objects(site: HelmTestSite) -> dict[str, list[str]]:
    """Names of what is in the namespace, per resource (read in-process from the sandbox
    store: the assertion must not depend on the code under test)."""
    from sandbox.k8s_store import RESOURCES

    cluster = site.helm.served.cluster
    out: dict[str, list[str]] = {}
    for (_, plural), res in RESOURCES.items():
        if plural == "events":
            continue
        out[plural] = sorted(
            o["metadata"]["name"] for o in cluster.store.list(res, NS) if o is not None
        )
    return out


def run(site: HelmTestSite, *args: str, playbook: str = "helm-breach") -> Any:
    return site.cli("run", playbook, "--target", site.target, "--as", "alice", *args)


def test_stop_stack_isolates_first_captures_uninstalls_and_leaks_nothing(
    helm_site: HelmTestSite,
) -> None:
    site = helm_site
    seeded = site.helm.seeded
    before = release_objects(site)
    proc = run(site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout)
    records = site.trail(incident).records()
    calls = [c for c in site.k8s_calls() if c["code"] < 300]

    # Containment first: the deny-all policy was created before any delete.
    first_delete = next(i for i, c in enumerate(calls) if c["verb"] == "delete")
    isolation = [
        i
        for i, c in enumerate(calls)
        if c["verb"] == "create" and c["resource"] == "networkpolicies" and c["name"] == ISOLATION
    ]
    assert isolation and isolation[0] < first_delete
    isolated = next(r.seq for r in records if r.kind == "stack.isolated")
    manifest = next(
        r
        for r in records
        if r.kind == "artifact" and r.data.get("subject", "").startswith("helm-manifest:")
    )
    stopped = next(r.seq for r in records if r.kind == "stack.stopped")
    assert isolated < manifest.seq < stopped

    # Both containers' logs of every pod (and the restarted container's previous log)
    # were stored as artifacts before the uninstall.
    logs = {
        r.data["subject"]: r
        for r in records
        if r.kind == "artifact" and r.data.get("subject", "").startswith("logs:")
    }
    for pod in seeded.pods:
        for container in ("mcp-proxy", "cloudflared"):
            assert logs[f"logs:{pod}/{container}.log"].seq < stopped
    assert f"logs:{seeded.pods[0]}/cloudflared.previous.log" in logs
    trail = site.trail(incident)
    proxy = trail.read_artifact(logs[f"logs:{seeded.pods[0]}/mcp-proxy.log"].data["sha256"])
    assert b"IP validation failed: 203.0.113.50 is not a private address" in proxy
    cloudflared = trail.read_artifact(logs[f"logs:{seeded.pods[1]}/cloudflared.log"].data["sha256"])
    assert b"Registered tunnel connection connIndex=3" in cloudflared
    assert b"[REDACTED]" in cloudflared  # the canary's line was there, its value is not
    subjects = {r.data.get("subject") for r in records if r.kind == "artifact"}
    assert {
        "objects:deployments.yaml",
        "objects:replicasets.yaml",
        "objects:pods.yaml",
        "objects:events.yaml",
        "objects:networkpolicies.yaml",
        "objects:jobs.yaml",
        "objects:cronjobs.yaml",
        "objects:secrets.yaml",
        "tunnel-record",
    } <= subjects
    secrets_doc = list(
        yaml.safe_load_all(
            trail.read_artifact(
                next(
                    r.data["sha256"]
                    for r in records
                    if r.kind == "artifact" and r.data.get("subject") == "objects:secrets.yaml"
                )
            )
        )
    )
    by_name = {s["name"]: s for s in secrets_doc}
    assert by_name[REL]["keys"] == sorted(seeded.credentials)
    assert all(set(s) >= {"name", "keys", "labels"} and "data" not in s for s in secrets_doc)

    # Nothing of the release and no release Secret is left; unrelated objects untouched.
    after = release_objects(site)
    for kind, name in seeded.manifest_objects:
        plural = {"NetworkPolicy": "networkpolicies"}.get(kind, kind.lower() + "s")
        assert name not in after[plural], f"{kind}/{name} left"
    assert not [p for p in after["pods"] if p.startswith(REL)]
    assert not [s for s in after["secrets"] if s.startswith(f"sh.helm.release.v1.{REL}.")]
    assert ISOLATION not in after["networkpolicies"]  # lifted once no pod of the release runs
    for kind, name in seeded.unrelated:
        plural = kind.lower() + "s"
        assert name in after[plural], f"unrelated {kind}/{name} was touched"
    assert [p for p in after["pods"] if p.startswith("billing")] == [
        p for p in before["pods"] if p.startswith("billing")
    ]
    assert not [c for c in calls if (c["name"] or "").startswith("billing")]
    # Left by helm uninstall by design (teardown removes them): setup's Secret and hook Job.
    assert REL in after["secrets"] and f"{REL}-setup" in after["jobs"]

    # Mutating calls == planned (Kubernetes and Tunnels API).
    made = [call_line(c) for c in calls]
    optional = {f"PUT /apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/{ISOLATION}"}
    assert_calls_match_plan(made, planned_k8s_calls(records), optional)
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.helm.tunnel_id}/archive"]
    assert site.sandbox.connect(site.helm.token) == 403

    # The canary (in cloudflared's debug log, configured as a secret) and the tunnel
    # token are nowhere: evidence dir, report, Prefect logs, CLI output.
    run_ids = [r.data["flow_run_id"] for r in records if r.kind in ("run.started", "run.resumed")]
    prefect_logs = prefect_log_text(run_ids)
    assert "stop_stack" in prefect_logs
    evidence = b"".join(
        p.read_bytes() for p in (site.evidence / incident).rglob("*") if p.is_file()
    )
    for secret in (site.canary, site.helm.token, seeded.credentials["tls.key"].splitlines()[1]):
        assert secret.encode() not in evidence
        assert secret not in prefect_logs
        assert secret not in proc.stdout + proc.stderr
    assert verify_dir(site.evidence / incident).ok
