"""teardown end to end: the real CLI in a subprocess, a real Prefect server, real podman
containers, the real anthropic SDK against the sandbox Tunnels API."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.trail import verify_dir
from sandbox.site import write_inventory
from tests.plugins.site import Site, incident_of

pytestmark = [pytest.mark.podman, pytest.mark.prefect]


def project_objects(site: Site) -> list[str]:
    label = f"com.docker.compose.project={site.site.project}"
    containers = site.client.containers.list(all=True, filters={"label": label})
    networks = site.client.networks.list(filters={"label": label})
    return [c.name for c in containers] + [n.name for n in networks]


def data_files(site: Site) -> list[str]:
    return sorted(p.name for p in site.site.data_dir.iterdir())


def test_teardown_leaves_nothing_behind_and_rerun_is_harmless(site: Site) -> None:
    layout_root = site.site.data_dir.parent
    assert len(project_objects(site)) == 3 and len(data_files(site)) == 7
    proc = site.cli(
        "teardown", "--target", site.target, "--as", "alice", "--policy", "auto-approve"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    incident = incident_of(proc.stdout)

    assert project_objects(site) == []  # no container, no network
    assert data_files(site) == []  # every secret file overwritten and unlinked
    assert site.site.data_dir.is_dir()
    assert (layout_root / "config" / "config.yaml").is_file()  # kept: no secrets
    assert (layout_root / "docker-compose.yaml").is_file()
    tunnel = site.sandbox.state.tunnels[site.site.tunnel_id]
    assert tunnel.archived_at is not None
    assert site.sandbox.connect(site.site.token) == 403
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.site.tunnel_id}/archive"]

    records = site.trail(incident).records()
    succeeded = [r.step for r in records if r.kind == "step.succeeded"]
    assert succeeded == ["stop_stack", "archive_tunnel", "remove_credentials", "verify_teardown"]
    destroyed = next(r for r in records if r.kind == "credentials.destroyed").data
    assert sorted(destroyed["destroyed"]) == [
        "ca.crt", "ca.key", "tls.crt", "tls.key", "tunnel-domain", "tunnel-id", "tunnel-token",
    ]  # fmt: skip
    verified = next(r for r in records if r.kind == "teardown.verified").data
    assert verified["ok"] and verified["containers"] == [] and verified["data_files"] == []
    evidence = b"".join(
        p.read_bytes() for p in (site.evidence / incident).rglob("*") if p.is_file()
    )
    assert site.site.token.encode() not in evidence
    assert "[1/4] stop_stack" in proc.stderr and "[4/4] verify_teardown" in proc.stderr
    assert verify_dir(site.evidence / incident).ok

    # Again, on the retired target: every step finds its effect in place, nothing is called.
    again = site.cli(
        "teardown", "--target", site.target, "--as", "alice", "--policy", "auto-approve"
    )
    assert again.returncode == 0, again.stdout + again.stderr
    second = site.trail(incident_of(again.stdout)).records()
    already = {r.step for r in second if r.kind == "step.already_done"}
    assert already == {"stop_stack", "archive_tunnel", "remove_credentials"}
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.site.tunnel_id}/archive"]
    assert (layout_root / "config" / "config.yaml").is_file()


def test_remove_config_and_resume_after_kill(site: Site) -> None:
    layout_root = site.site.data_dir.parent
    env = dict(site.env)
    site.env["MCP_IR_FAILPOINT"] = "remove_credentials:after_apply"
    args = ["teardown", "--target", site.target, "--as", "alice", "--policy", "auto-approve"]
    killed = site.cli(*args, "--remove-config", "--incident", "INC-teardown-kill-1")
    assert killed.returncode == 137, killed.stdout + killed.stderr
    assert data_files(site) == [] and not (layout_root / "config").exists()
    site.env = env
    resumed = site.cli(*args, "--incident", "INC-teardown-kill-1")  # the trail keeps the option
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = site.trail("INC-teardown-kill-1").records()
    assert [r.kind for r in records].count("run.resumed") == 1
    assert [r.kind for r in records].count("credentials.destroyed") == 1
    assert [r.kind for r in records].count("config.removed") == 1
    assert not (layout_root / "docker-compose.yaml").exists()
    assert site.mutating_calls() == [f"POST /v1/tunnels/{site.site.tunnel_id}/archive"]
    assert verify_dir(site.evidence / "INC-teardown-kill-1").ok


def _retired_inventory(site: Site, tmp_path: Path) -> list[str]:
    """Two targets that fail for real (their tunnels do not exist: 404), then the
    site's real one, all labelled env=retired, in that inventory order."""
    doc = yaml.safe_load(site.inventory.read_text())
    real = doc["targets"][site.target]
    targets: dict[str, Any] = {}
    for i in (1, 2):
        bad = copy.deepcopy(real)
        bad["compose"]["project"] = f"gone-{i}-{os.getpid()}"
        bad["compose"]["data_dir"] = str(tmp_path / f"gone{i}" / "data")
        bad["tunnel"]["id"] = f"tnl_doesnotexist{i}"
        bad["labels"] = {"env": "retired"}
        targets[f"gone{i}"] = bad
    real["labels"] = {"env": "retired"}
    targets[site.target] = real
    targets["keeper"] = {**copy.deepcopy(real), "labels": {"env": "prod"}}
    write_inventory(site.inventory, targets)
    return list(targets)


def test_max_errors_stops_the_fanout(site: Site, tmp_path: Path) -> None:
    _retired_inventory(site, tmp_path)
    proc = site.cli(
        "teardown", "--selector", "env=retired", "--max-errors", "1", "--max-concurrency", "1",
        "--as", "alice", "--policy", "auto-approve",
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "[gone1] failed" in out and "[gone2] failed" in out
    assert "tnl_doesnotexist1" in out  # the reason reaches the user
    assert f"[{site.target}] starting" not in out
    assert "stopped: 2 target(s) failed, more than --max-errors 1" in out
    assert f"not started: {site.target}" in out
    assert "ran 2 of 3 target(s): gone1, gone2" in out
    assert "[gone1] [1/4] stop_stack" in proc.stderr  # each target's progress, prefixed
    # The third target was never touched; each failed target is its own incident.
    assert len(project_objects(site)) == 3 and len(data_files(site)) == 7
    assert site.mutating_calls() == []
    assert len([p for p in site.evidence.iterdir() if p.is_dir()]) == 2


@pytest.mark.long(30)
def test_fanout_concurrency_and_success(site: Site, tmp_path: Path) -> None:
    _retired_inventory(site, tmp_path)
    proc = site.cli(
        "teardown", "--selector", "env=retired", "--max-errors", "100%",
        "--max-concurrency", "2", "--as", "alice", "--policy", "auto-approve",
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "failed: gone1, gone2" in out and f"succeeded: {site.target}" in out
    assert "not started: none" in out
    assert project_objects(site) == [] and data_files(site) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--selector", "env=nowhere"], "--selector: no target in the inventory has labels"),
        (["--selector", "envretired"], "--selector: expected KEY=VALUE"),
        (["--target", "nope"], "unknown target 'nope'"),
        (["--target", "SITE", "--max-errors", "x"], "--max-errors: must be a whole number"),
        (["--target", "SITE", "--max-concurrency", "0"], "--max-concurrency: must be at least 1"),
        ([], "--target: give at least one target"),
    ],
)
def test_bad_input_names_the_field(site: Site, args: list[str], message: str) -> None:
    args = [site.target if a == "SITE" else a for a in args]
    proc = site.cli("teardown", *args, "--policy", "auto-approve")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(project_objects(site)) == 3 and site.mutating_calls() == []
