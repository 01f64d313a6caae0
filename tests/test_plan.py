"""``mcp-ir plan PLAYBOOK --target T`` for every playbook: what it would do (resources,
API calls, gates), proved to change nothing (containers, the sandbox's mutating
calls, data/ fingerprints before and after)."""

from __future__ import annotations

from typing import Any

import pytest

from runbook.playbook import available_playbooks, load_playbook
from runbook.settings import Settings
from tasks.credential_files import read_fingerprints
from tests.plugins.site import Site

pytestmark = [pytest.mark.podman]


def state(site: Site) -> dict[str, Any]:
    label = f"com.docker.compose.project={site.site.project}"
    containers = site.client.containers.list(all=True, filters={"label": label})
    return {
        "containers": sorted((c.id, c.status, c.attrs["State"]["StartedAt"]) for c in containers),
        "mutating_calls": site.mutating_calls(),
        "data": read_fingerprints(site.site.data_dir),
        "tunnel": site.sandbox.state.tunnels[site.site.tunnel_id].token,
        "evidence": sorted(site.evidence.rglob("*")) if site.evidence.exists() else [],
    }


def compose_playbooks(site: Site) -> list[str]:
    """Every playbook in playbooks/ that applies to a Compose target."""
    from core.errors import PlaybookError

    settings = Settings.from_env(site.inventory, site.evidence)
    names = []
    for name in available_playbooks():
        try:
            load_playbook(
                name,
                inventory=settings.inventory(),
                target=site.target,
                context={"drill": name == "rotation-drill"},
            )
        except PlaybookError as exc:
            assert "does not support target kind" in exc.detail, exc.detail
            continue
        names.append(name)
    return names


def test_plan_every_playbook_changes_nothing(site: Site) -> None:
    playbooks = compose_playbooks(site)
    assert {"breach-response", "teardown", "rotation-drill"} <= set(playbooks)
    before = state(site)
    outputs = {}
    for name in playbooks:
        proc = site.cli("plan", name, "--target", site.target, timeout=120)
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"
        out = proc.stdout
        assert out.startswith(f"playbook {name} on target {site.target}")
        assert "nothing is changed" in out
        settings = Settings.from_env(site.inventory, site.evidence)
        pb = load_playbook(
            name,
            inventory=settings.inventory(),
            target=site.target,
            context={"drill": name == "rotation-drill"},
        )
        for index, spec in enumerate(pb.steps, start=1):
            assert f"{index}. {spec.key}  [" in out, f"{name}: {spec.key} missing"
        assert out.count("   gate: ") == len(pb.steps)
        assert out.count("   plan hash: ") + out.count("   plan: unavailable") == len(pb.steps)
        outputs[name] = out
    assert state(site) == before  # no container touched, no API mutation, no file changed

    tunnel, project = site.site.tunnel_id, site.site.project
    teardown = outputs["teardown"]
    assert f"call: POST /v1/tunnels/{tunnel}/archive" in teardown
    assert f"resource: {project}-cloudflared-1" in teardown
    assert f"resource: file:{site.site.data_dir / 'tunnel-token'}" in teardown
    assert "config/ and the compose file kept" in teardown
    assert "gate: 1 approver(s) from 'oncall', timeout 24.0h, not the initiator" in teardown
    drill = outputs["rotation-drill"]
    assert f"call: POST /v1/tunnels/{tunnel}/rotate_token" in drill
    assert "gate: auto (rotation drill" in drill
    assert "not requested: the CA is rotated only with --rotate-ca" in drill
    assert f"SAN': '*.{site.site.domain}'".lower() in drill.lower()
    breach = outputs["breach-response"]
    assert "gate: 2 approver(s) from 'oncall'" in breach


def test_plan_auto_approve_policy_shows_auto_gates(site: Site) -> None:
    proc = site.cli("plan", "teardown", "--target", site.target, "--policy", "auto-approve")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("gate: auto (auto-approve policy on sandbox target") == 3


def test_plan_unknown_playbook_and_target_are_bad_input(site: Site) -> None:
    proc = site.cli("plan", "no-such-playbook", "--target", site.target)
    assert proc.returncode == 2 and "unknown playbook 'no-such-playbook'" in proc.stderr
    proc = site.cli("plan", "teardown", "--target", "nope")
    assert proc.returncode == 2 and "unknown target 'nope'" in proc.stderr
