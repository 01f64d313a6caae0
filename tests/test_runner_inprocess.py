"""The runner's gate, retry and resume logic run in this test's own process (the
flow called as a function against the session's real Prefect server, the sandbox
site's real stack and Tunnels API): no ``mcp-ir`` subprocess per case."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from core.trail import Trail
from flows.incident import RunEnded
from flows.run_playbook import run_playbook
from sandbox.site import TOKEN_ENV
from tests.plugins.site import CANARY_ENV, Site


@pytest.fixture
def here(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    """The site's environment in this process, and a playbook directory of its own."""
    for name in (TOKEN_ENV, CANARY_ENV, "PREFECT_API_URL"):
        monkeypatch.setenv(name, site.env[name])
    monkeypatch.setenv("MCP_IR_QUIET", "1")
    (tmp_path / "playbooks").mkdir()
    monkeypatch.setenv("MCP_IR_PLAYBOOK_DIR", str(tmp_path / "playbooks"))
    return site


def _playbook(site: Site, name: str, steps: str) -> str:
    import os

    path = Path(os.environ["MCP_IR_PLAYBOOK_DIR"]) / f"{name}.yaml"
    path.write_text(f"name: {name}\nsteps:\n{steps}")
    return name


def _run(site: Site, playbook: str, incident: str) -> dict[str, Any]:
    try:
        return run_playbook(
            playbook=playbook,
            target=site.target,
            initiator="alice",
            incident_id=incident,
            config_path=str(site.inventory),
            evidence_dir=str(site.evidence),
        )
    except RunEnded as exc:
        return exc.result


def _kinds(site: Site, incident: str, step: str | None = None) -> list[str]:
    records = Trail.open(site.evidence, incident).records()
    return [r.kind for r in records if step is None or r.step == step]


def test_gate_without_quorum_times_out_and_nothing_is_applied(here: Site) -> None:
    name = _playbook(
        here,
        "gate-in-process",
        "  - key: archive_tunnel\n    approval: {required: 1, group: oncall, timeout: 2s}\n",
    )
    incident = f"INC-inproc-{secrets.token_hex(3)}"
    result = _run(here, name, incident)
    assert result["status"] == "timed_out" and "no quorum" in result["detail"]
    kinds = _kinds(here, incident, "archive_tunnel")
    assert kinds[:3] == ["step.planned", "gate.opened", "gate.waiting"]
    assert kinds[-1] == "gate.timeout" and "step.started" not in kinds
    assert here.mutating_calls() == []  # the tunnel was not archived


def test_transient_failure_is_retried_by_the_policy_with_the_request_id(here: Site) -> None:
    name = _playbook(
        here,
        "retry-in-process",
        "  - key: archive_tunnel\n    approval: auto\n    retry: {attempts: 2, backoff: 0s}\n",
    )
    # Three 503s: the SDK's own try and 2 retries of the first attempt all fail.
    here.sandbox.fault("/v1/tunnels/*/archive", 503, count=3, method="POST")
    incident = f"INC-inproc-{secrets.token_hex(3)}"
    result = _run(here, name, incident)
    assert result["status"] == "succeeded", result
    records = Trail.open(here.evidence, incident).records()
    (retried,) = [r for r in records if r.kind == "step.retry"]
    assert retried.data["attempt"] == 1 and retried.data["request_id"].startswith("req_")
    assert "HTTP 503" in retried.data["error"]
    statuses = [c["status"] for c in here.sandbox.calls() if c["path"].endswith("/archive")]
    assert statuses == [503, 503, 503, 200]


def test_failed_run_is_resumed_in_process_without_repeating_done_steps(here: Site) -> None:
    name = _playbook(
        here,
        "resume-in-process",
        "  - key: capture_evidence\n    approval: auto\n"
        "  - key: archive_tunnel\n    approval: auto\n    retry: {attempts: 1}\n",
    )
    here.sandbox.fault("/v1/tunnels/*/archive", 500, count=3, method="POST")
    incident = f"INC-inproc-{secrets.token_hex(3)}"
    first = _run(here, name, incident)
    assert first["status"] == "failed" and "HTTP 500" in first["detail"]
    failed = [r for r in Trail.open(here.evidence, incident).records() if r.kind == "step.failed"]
    assert failed[-1].step == "archive_tunnel" and failed[-1].data["request_id"].startswith("req_")

    second = _run(here, name, incident)
    assert second["status"] == "succeeded", second
    kinds = _kinds(here, incident)
    assert kinds.count("run.resumed") == 1
    assert _kinds(here, incident, "capture_evidence").count("step.succeeded") == 1
    assert "step.skipped" in _kinds(here, incident, "capture_evidence")
    assert here.mutating_calls().count(f"POST /v1/tunnels/{here.site.tunnel_id}/archive") == 4
