"""Isolation that holds: NetworkPolicies add up (FACTS §7).

The pure functions are checked on the policies of the Kubernetes documentation's
NetworkPolicy examples (fixtures/network_policies, see SOURCES.md); the adapter runs
against the sandbox cluster through the real client; the step-level helpers with a
real trail. The seeded chart ships ``mcp-tunnel``, which allows ingress from every pod
in the namespace — a deny-all policy beside it isolates nothing on ingress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from core.errors import StepFailed
from tasks import kubernetes_policies as kp
from tasks.kubernetes import isolate as deny_all_only

NS = "mcp-tunnel"
REL = "mcp-tunnel"
FIXTURES = Path(__file__).parent / "fixtures" / "network_policies"
POD = {"app.kubernetes.io/name": "mcp-tunnel", "app.kubernetes.io/instance": REL}


def _doc(name: str) -> dict[str, Any]:
    return yaml.safe_load((FIXTURES / name).read_text())


# ------------------------------------------------------------------ pure functions


def test_default_deny_ingress_isolates_ingress_only():
    deny = _doc("default-deny-ingress.yaml")
    eff = kp.effective_policy([deny], POD)
    assert eff.selecting == ["default-deny-ingress"]
    assert not eff.ingress_allowed and eff.egress_allowed  # egress never isolated
    assert eff.problems() == ["egress not isolated: no selecting policy covers egress"]


def test_deny_all_does_not_override_an_allow_all_ingress_policy():
    policies = [_doc("default-deny-all.yaml"), _doc("allow-all-ingress.yaml")]
    eff = kp.effective_policy(policies, POD)
    assert eff.ingress_allowed and eff.ingress_allowed_by == ["allow-all-ingress"]
    assert not eff.egress_allowed
    assert eff.problems() == ["ingress allowed by NetworkPolicy allow-all-ingress"]


def test_the_documentation_test_network_policy_selects_by_role_and_allows_both_ways():
    policy = _doc("test-network-policy.yaml")
    assert kp.policy_types(policy) == {"Ingress", "Egress"}
    assert not kp.selects(policy, POD)
    eff = kp.effective_policy([policy], {"role": "db"})
    assert eff.ingress_allowed_by == eff.egress_allowed_by == ["test-network-policy"]


def test_policy_types_default_from_the_rules():
    ingress_only = {"spec": {"podSelector": {}, "ingress": [{}]}}
    with_egress = {"spec": {"podSelector": {}, "egress": [{}]}}
    assert kp.policy_types(ingress_only) == {"Ingress"}
    assert kp.policy_types(with_egress) == {"Ingress", "Egress"}
    # Egress listed but no egress rules: egress denied, not allowed.
    assert kp.allow_rules({"spec": {"policyTypes": ["Egress"], "podSelector": {}}}) == {
        "ingress": [],
        "egress": [],
    }


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {"a": "b"}, True),
        (None, {"a": "b"}, False),
        ({"matchLabels": {"a": "b"}}, {"a": "b", "c": "d"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["b"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "x"}, False),
    ],
)
def test_label_selector_semantics(selector, labels, expected):
    assert kp.selector_matches(selector, labels) is expected


def test_plan_removes_the_releases_own_policy_and_narrows_anyone_elses():
    chart = {
        "metadata": {"name": "mcp-tunnel", "labels": {kp.INSTANCE_LABEL: REL}},
        "spec": {
            "podSelector": {"matchLabels": {kp.INSTANCE_LABEL: REL}},
            "ingress": [{"from": [{"podSelector": {}}]}],
        },
    }
    foreign = _doc("allow-all-ingress.yaml")
    deny = _doc("default-deny-all.yaml")
    captured, changes = kp.plan_changes([chart, foreign, deny], [POD], REL)
    assert [p["metadata"]["name"] for p in captured] == [
        "allow-all-ingress",
        "default-deny-all",
        "mcp-tunnel",
    ]
    assert {(c.name, c.action) for c in changes} == {
        ("mcp-tunnel", "remove"),
        ("allow-all-ingress", "narrow"),
    }  # a policy that only denies is left alone
    narrowed = kp.narrowed_selector(foreign["spec"]["podSelector"], REL)
    assert not kp.selector_matches(narrowed, POD)
    assert kp.selector_matches(narrowed, {"app": "billing"})
    assert kp.narrowed_selector(narrowed, REL) == narrowed  # idempotent


# ------------------------------------------------------------------ against the sandbox


def _add_foreign_policies(k8s: Any) -> None:
    net = client.NetworkingV1Api(k8s.api)
    for name in ("allow-all-ingress.yaml", "allow-all-egress.yaml"):
        body = _doc(name)
        body["metadata"].pop("namespace", None)
        net.create_namespaced_network_policy(NS, body)


def _policies(k8s: Any) -> dict[str, dict]:
    net = client.NetworkingV1Api(k8s.api)
    return {
        p.metadata.name: k8s.api.sanitize_for_serialization(p)
        for p in net.list_namespaced_network_policy(NS).items
    }


def test_deny_all_alone_leaves_the_chart_policy_allowing_ingress(k8s):
    deny_all_only(k8s.api, NS, REL)
    with pytest.raises(StepFailed) as err:
        kp.verify_isolation(k8s.api, NS, REL)
    assert "ingress allowed by NetworkPolicy mcp-tunnel" in err.value.detail


def test_isolation_removes_narrows_verifies_and_restore_puts_everything_back(k8s):
    _add_foreign_policies(k8s)
    before = _policies(k8s)
    plan = kp.plan_isolation(k8s.api, NS, REL)
    assert {(c.name, c.action) for c in plan.changes} == {
        ("mcp-tunnel", "remove"),
        ("allow-all-ingress", "narrow"),
        ("allow-all-egress", "narrow"),
    }
    done = kp.apply_isolation(k8s.api, NS, REL, plan)
    assert done == {
        "removed": ["mcp-tunnel"],
        "narrowed": ["allow-all-egress", "allow-all-ingress"],
    }
    effective = kp.verify_isolation(k8s.api, NS, REL)
    assert effective and all(not e.ingress_allowed and not e.egress_allowed for e in effective)
    assert all(e.selecting == [f"mcp-ir-isolate-{REL}"] for e in effective)
    now = _policies(k8s)
    assert "mcp-tunnel" not in now
    # Other workloads keep the narrowed policies' rules.
    billing = kp.effective_policy(list(now.values()), {"app.kubernetes.io/instance": "billing"})
    assert billing.ingress_allowed_by == ["allow-all-ingress"]
    assert billing.egress_allowed_by == ["allow-all-egress"]

    evidence = plan.evidence()
    out = kp.restore_policies(k8s.api, NS, REL, evidence["policies"], evidence["changes"])
    assert out == {
        "recreated": ["mcp-tunnel"],
        "existing": [],
        "reverted": ["allow-all-egress", "allow-all-ingress"],
        "left": [],
    }
    after = _policies(k8s)
    for name in ("mcp-tunnel", "allow-all-ingress", "allow-all-egress"):
        assert after[name]["spec"] == before[name]["spec"], name
        assert kp.NARROWED_ANNOTATION not in (after[name]["metadata"].get("annotations") or {})


def test_a_policy_changed_after_planning_is_planned_again_not_overwritten(k8s):
    _add_foreign_policies(k8s)
    plan = kp.plan_isolation(k8s.api, NS, REL)
    net = client.NetworkingV1Api(k8s.api)
    net.patch_namespaced_network_policy(
        "allow-all-ingress", NS, {"metadata": {"labels": {"touched": "yes"}}}
    )
    kp.apply_isolation(k8s.api, NS, REL, plan)
    got = net.read_namespaced_network_policy("allow-all-ingress", NS)
    assert got.metadata.labels == {"touched": "yes"}  # the concurrent change survived
    assert not kp.selector_matches(k8s.api.sanitize_for_serialization(got.spec.pod_selector), POD)
    kp.verify_isolation(k8s.api, NS, REL)


def test_cut_connections_replaces_every_pod_with_an_isolated_one(k8s):
    kp.apply_isolation(k8s.api, NS, REL, kp.plan_isolation(k8s.api, NS, REL))
    deleted = kp.cut_connections(k8s.api, NS, REL)
    assert deleted == sorted(k8s.seeded.pods)
    pods = client.CoreV1Api(k8s.api).list_namespaced_pod(
        NS, label_selector=f"{kp.INSTANCE_LABEL}={REL}"
    )
    assert pods.items and not {p.metadata.name for p in pods.items} & set(deleted)


# ------------------------------------------------------------------ the step helpers


def test_stop_stack_helpers_capture_policies_before_changing_them_and_restore_them(
    tmp_path: Path, k8s: Any
) -> None:
    import json

    import targets.helm as _helm
    from targets.helm.isolation import cut_connections
    from tests.test_helm_e2e import step_context

    _add_foreign_policies(k8s)
    chart_spec = _policies(k8s)["mcp-tunnel"]["spec"]
    stop = step_context(tmp_path, k8s, "stop_stack")
    iso = _helm.isolate(stop)
    assert iso["removed"] == ["mcp-tunnel"]
    assert iso["narrowed"] == ["allow-all-egress", "allow-all-ingress"]
    assert all(not e["ingress_allowed"] and not e["egress_allowed"] for e in iso["effective"])
    records = stop.trail.records()
    art = next(r for r in records if r.data.get("subject", "").startswith("network-policies:"))
    first_change = next(
        r for r in records if r.kind == "stack.isolated"
    )  # the evidence was stored before the change was recorded
    assert records.index(art) < records.index(first_change)
    captured = json.loads(stop.trail.read_artifact(art.data["sha256"]))
    assert {p["metadata"]["name"] for p in captured["policies"]} >= {
        "mcp-tunnel",
        "allow-all-ingress",
        "allow-all-egress",
    }
    again = _helm.isolate(stop)  # a re-run changes nothing more and verifies again
    assert again["removed"] == [] and again["narrowed"] == []
    cut = cut_connections(stop)
    assert set(cut["pods_deleted"]) == set(k8s.seeded.pods)
    _helm.uninstall(stop)
    restore = step_context(tmp_path, k8s, "restore_service")
    result = _helm.restore(restore)
    assert result["network_policies"]["reverted"] == ["allow-all-egress", "allow-all-ingress"]
    after = _policies(k8s)
    assert after["mcp-tunnel"]["spec"] == chart_spec
    assert after["allow-all-ingress"]["spec"]["podSelector"] == {}  # selects all pods again
