"""The run-time guard: a step may only make the mutating calls its approved plan lists.

In process, through the runner's own ``run_step`` (``flows/step_tasks.py``) (the function the Prefect task runs),
with the real SDK clients over HTTP to the sandboxes: an operation the approved plan
does not list is refused before it is sent (the sandbox never receives it), recorded
as ``operation.refused`` in the trail, and the step fails closed.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from core.operations import Guard, Operation, OperationRefused
from core.redact import Redactor
from core.trail import Trail
from flows.step_tasks import run_step
from runbook.context import Clients, Incident, StepContext
from runbook.inventory import parse_inventory
from runbook.registry import get_step
from sandbox.anthropic_api import seed_state
from sandbox.site import DEFAULT_GROUPS, DEFAULT_PEOPLE

NS = REL = "mcp-tunnel"


def context(
    tmp_path: Path, step: str, target: dict[str, Any], incident: str = "INC-guard-1"
) -> StepContext:
    raw = {"people": DEFAULT_PEOPLE, "groups": DEFAULT_GROUPS, "targets": {"t": target}}
    inventory = parse_inventory(raw, tmp_path / "inventory.yaml")
    tgt = inventory.target("t")
    inc = Incident(incident, "t", "breach-response", "alice", {}, "high", None, None)
    trail = Trail.open(tmp_path / "evidence", incident, Redactor())
    return StepContext(inc, step, tgt, inventory, trail, Clients(tgt), timeout_s=60)


def helm_target(k8s: Any, sandbox: Any, tunnel: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "helm",
        "sandbox": True,
        "helm": {"kubeconfig": str(k8s.kubeconfig)} if k8s else {},
        "tunnel": {"id": tunnel["id"], "domain": tunnel["domain"]},
        "anthropic": {"base_url": sandbox.url, "credentials": {"bearer_env": "MCP_IR_GUARD_TOKEN"}},
    }


def refusals(ctx: StepContext) -> list[dict[str, Any]]:
    return [r.data for r in ctx.trail.records() if r.kind == "operation.refused"]


def test_guard_refuses_an_archive_the_approved_plan_does_not_list(
    tmp_path: Path, anthropic_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_IR_GUARD_TOKEN", anthropic_sandbox.token)
    approved_tunnel, other = seed_state(
        anthropic_sandbox.state, {"tunnels": [{"display_name": "a"}, {"display_name": "b"}]}
    )["tunnels"]
    step = get_step("archive_tunnel")()
    # Approved: archive tunnel A. Then the inventory is edited to name tunnel B.
    approved = step.plan(
        context(tmp_path, "archive_tunnel", helm_target(None, anthropic_sandbox, approved_tunnel))
    )
    ctx = context(tmp_path, "archive_tunnel", helm_target(None, anthropic_sandbox, other))
    ctx.plan = approved
    before = len(anthropic_sandbox.calls())

    with pytest.raises(OperationRefused, match="not in the approved plan"):
        run_step.fn("archive_tunnel", ctx, time.monotonic() + 60)

    made = anthropic_sandbox.calls()[before:]
    assert not [c for c in made if c["method"] == "POST"]  # the archive never reached it
    state = anthropic_sandbox.state.tunnels
    assert state[other["id"]].archived_at is None
    assert state[approved_tunnel["id"]].archived_at is None
    [refused] = refusals(ctx)
    assert refused["operation"]["resource"] == f"/v1/tunnels/{other['id']}/archive"
    assert refused["operation"]["system"] == "anthropic" and refused["sent"] is False
    assert refused["plan_hash"] == approved.digest()
    assert not [r for r in ctx.trail.records() if r.kind == "tunnel.archived"]

    # The same step under its own plan goes through (the guard is not a blanket refusal).
    ctx.plan = step.plan(ctx)
    run_step.fn("archive_tunnel", ctx, time.monotonic() + 60)
    assert state[other["id"]].archived_at is not None


def _upgrade_with_an_extra_configmap(k8s: Any) -> str:
    """What a ``helm upgrade`` after the approval leaves: revision 3, whose manifest adds
    a ConfigMap (created in the cluster and recorded in a new release Secret)."""
    from sandbox.helm_release import chart_manifest, helm_storage_encode, render_manifest

    core = client.CoreV1Api(k8s.api)
    extra = "mcp-tunnel-extra-routes"
    labels = {"app.kubernetes.io/instance": REL, "app.kubernetes.io/managed-by": "Helm"}
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": extra, "namespace": NS, "labels": labels},
        "data": {"routes": "/mcp"},
    }
    core.create_namespaced_config_map(NS, doc)
    docs = [*chart_manifest(REL, NS, revision=2), ("mcp-tunnel/templates/extra.yaml", doc)]
    release = {"name": REL, "version": 3, "namespace": NS, "manifest": render_manifest(docs)}
    release["info"] = {"status": "deployed"}
    payload = base64.b64encode(helm_storage_encode(release).encode()).decode()
    core.create_namespaced_secret(
        NS,
        {
            "metadata": {
                "name": f"sh.helm.release.v1.{REL}.v3",
                "labels": {"owner": "helm", "name": REL, "status": "deployed", "version": "3"},
            },
            "type": "helm.sh/release.v1",
            "data": {"release": payload},
        },
    )
    return extra


def test_guard_refuses_deleting_what_an_upgrade_added_after_the_approval(
    tmp_path: Path, k8s: Any, anthropic_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_IR_GUARD_TOKEN", anthropic_sandbox.token)
    [tunnel] = seed_state(anthropic_sandbox.state, {"tunnels": [{"display_name": "h"}]})["tunnels"]
    ctx = context(tmp_path, "stop_stack", helm_target(k8s, anthropic_sandbox, tunnel))
    ctx.plan = get_step("stop_stack")().plan(ctx)  # approved: revision 2
    extra = _upgrade_with_an_extra_configmap(k8s)

    with pytest.raises(OperationRefused, match=f"configmaps/{extra}"):
        run_step.fn("stop_stack", ctx, time.monotonic() + 60)

    deletes = [c for c in k8s.calls() if c["verb"] == "delete"]
    assert deletes  # the approved part of the uninstall did run...
    assert not [c for c in deletes if c["name"] == extra]  # ...the off-plan call never did
    assert client.CoreV1Api(k8s.api).read_namespaced_config_map(extra, NS)
    [refused] = refusals(ctx)
    assert refused["operation"] == {
        "system": "kubernetes",
        "verb": "DELETE",
        "resource": f"/api/v1/namespaces/{NS}/configmaps/{extra}",
        "params_digest": refused["operation"]["params_digest"],
        "note": "",
    }
    assert refused["operation"]["params_digest"].startswith("sha256:")  # what was refused
    # Fail closed: the step did not record a stop.
    assert not [r for r in ctx.trail.records() if r.kind == "stack.stopped"]


def test_operations_match_by_system_verb_and_resource_pattern() -> None:
    planned = Operation("kubernetes", "DELETE", "/api/v1/namespaces/n/pods/*")
    assert planned.covers(Operation("kubernetes", "DELETE", "/api/v1/namespaces/n/pods/p-1"))
    assert not planned.covers(Operation("kubernetes", "POST", "/api/v1/namespaces/n/pods/p-1"))
    assert not planned.covers(Operation("docker", "DELETE", "/api/v1/namespaces/n/pods/p-1"))
    assert not planned.covers(Operation("kubernetes", "DELETE", "/api/v1/namespaces/m/pods/p"))
    new = Operation("anthropic", "POST", "/v1/tunnels/{new}/certificates")
    assert new.covers(Operation("anthropic", "POST", "/v1/tunnels/tnl_1/certificates"))
    read_from = Operation("anthropic", "POST", "/v1/tunnels/{data/tunnel-id}/reveal_token")
    assert read_from.covers(Operation("anthropic", "POST", "/v1/tunnels/tnl_2/reveal_token"))
    pinned = dataclasses.replace(planned, params_digest="sha256:aa")
    assert not pinned.covers(dataclasses.replace(planned, params_digest="sha256:bb"))
    guard, seen = Guard(), []
    guard.admit(Operation("files", "write", "/x"))  # unbound: nothing to enforce
    with pytest.raises(OperationRefused), guard.bound("s", [planned], seen.append):
        guard.admit(Operation("files", "write", "/x"))
    assert seen == [Operation("files", "write", "/x")]


def test_a_pinned_body_admits_exactly_the_approved_request(
    tmp_path: Path, k8s: Any, anthropic_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop_stack's plan pins the deny-all policy's POST by the digest of its body: the
    same path with another body (the policy of another release) is refused before it is
    sent; the approved body goes through. Real client, real HTTP, sandbox API server."""
    from runbook.guarded import guard_kubernetes
    from tasks import kubernetes

    monkeypatch.setenv("MCP_IR_GUARD_TOKEN", anthropic_sandbox.token)
    [tunnel] = seed_state(anthropic_sandbox.state, {"tunnels": [{"display_name": "p"}]})["tunnels"]
    ctx = context(tmp_path, "stop_stack", helm_target(k8s, anthropic_sandbox, tunnel))
    approved = [
        op
        for op in get_step("stop_stack")().plan(ctx).operations
        if op.verb == "POST" and op.resource.endswith("/networkpolicies")
    ]
    assert len(approved) == 1 and approved[0].params_digest.startswith("sha256:")
    guard = Guard()
    api = guard_kubernetes(k8s.api, guard)
    net = client.NetworkingV1Api(api)
    before = {p.metadata.name for p in net.list_namespaced_network_policy(NS).items}
    created_before = len([c for c in k8s.calls() if c["verb"] == "create"])

    refused: list[Operation] = []
    with pytest.raises(OperationRefused), guard.bound("stop_stack", approved, refused.append):
        kubernetes.isolate(api, NS, "another-release")
    path = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"
    assert [op.resource for op in refused] == [path]
    assert refused[0].params_digest not in (approved[0].params_digest, "*")
    assert len([c for c in k8s.calls() if c["verb"] == "create"]) == created_before  # not sent
    assert {p.metadata.name for p in net.list_namespaced_network_policy(NS).items} == before

    with guard.bound("stop_stack", approved):
        assert kubernetes.isolate(api, NS, REL).created
    names = {p.metadata.name for p in net.list_namespaced_network_policy(NS).items}
    assert names == before | {kubernetes.isolation_policy_name(REL)}
