"""The hardening audit on the Compose sandbox: every check passes on the hardened
target and fails on the weak one, through real files, real podman containers and real
MCP servers over HTTP; the audit changes nothing; `mcp-ir audit --all --json` prints
the documented shape."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from audit.service import run_audit
from core.trail import Trail, verify_dir
from runbook.inventory import load_inventory
from tests.plugins.audit_sandbox import AuditSite
from tests.plugins.site import mcp_ir_command, run_text

pytestmark = [pytest.mark.podman]

ALL_CHECKS = [
    "oauth_upstream",
    "allowed_ips",
    "image_digest",
    "network_reach",
    "credentials_at_rest",
    "credential_age",
    "certificate_expiry",
    "rotation_drill",
    "monitoring",
    "server_scope",
    "sso",
]


def record_drill(evidence: Path, target: str, status: str = "succeeded") -> None:
    """A rotation-drill run in the evidence store, as the runner records one."""
    from core.trail import Trail
    from runbook.launch import new_incident_id

    trail = Trail.open(evidence, new_incident_id())
    trail.append(
        "incident.opened",
        None,
        {"incident_id": trail.incident_id, "target": target, "playbook": "rotation-drill"},
    )
    trail.append("step.succeeded", "drill_rotate_token", {"duration_s": 1.0})
    trail.append("run.ended", None, {"status": status, "detail": ""})


def snapshot(site: AuditSite) -> dict[str, Any]:
    """What a change to the targets would show: containers (id, state, start time)
    and every file of both deployments (mode, owner, mtime, content hash)."""
    containers = {}
    for compose in (site.box.hardened, site.box.weak):
        label = f"com.docker.compose.project={compose.project}"
        for c in site.client.containers.list(all=True, filters={"label": label}):
            containers[c.name] = (c.id, c.status, c.attrs["State"].get("StartedAt"))
    files = {}
    for compose in (site.box.hardened, site.box.weak):
        for path in sorted(compose.data_dir.parent.rglob("*")):
            if path.is_file():
                st = path.stat()
                files[str(path)] = (
                    st.st_mode,
                    st.st_uid,
                    st.st_mtime_ns,
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                )
    return {"containers": containers, "files": files}


def statuses(result: Any) -> dict[str, str]:
    return {c.id: c.status for c in result.checks}


def test_hardened_passes_weak_fails_and_nothing_is_changed(
    audit_site: AuditSite, anthropic_sandbox: Any
) -> None:
    record_drill(audit_site.evidence, "hardened")
    record_drill(audit_site.evidence, "weak", status="failed")
    inventory = load_inventory(audit_site.inventory)
    before = snapshot(audit_site)
    anthropic_before = len(anthropic_sandbox.calls("/v1/"))
    mcp_before = [list(s.calls) for s in audit_site.box.servers]

    outcome = run_audit(
        inventory,
        ["hardened", "weak"],
        audit_site.evidence,
        initiator="alice",
        notify=False,
        env=audit_site.env,
    )

    hardened, weak = statuses(outcome.results["hardened"]), statuses(outcome.results["weak"])
    assert list(hardened) == ALL_CHECKS
    reasons = {c.id: c.reason for c in outcome.results["hardened"].checks}
    # Compose: the host firewall cannot be read, so network reach is unverifiable by
    # design (the compose file shows no problem); SSO needs a person.
    expected = {c: "pass" for c in ALL_CHECKS} | {"network_reach": "unverifiable", "sso": "manual"}
    assert hardened == expected, reasons
    assert "host's firewall" in reasons["network_reach"]
    assert weak == {c: "fail" for c in ALL_CHECKS} | {"sso": "manual"}, {
        c.id: c.reason for c in outcome.results["weak"].checks
    }
    weak_reasons = {c.id: c.reason for c in outcome.results["weak"].checks}
    assert "0.0.0.0/0 allows every address" in weak_reasons["allowed_ips"]
    assert "ghcr.io/anthropics/mcp-proxy:latest" in weak_reasons["image_digest"]
    assert "publishes ports" in weak_reasons["network_reach"]
    assert "mode 0644 (want 0600)" in weak_reasons["credentials_at_rest"]
    assert "expired" in weak_reasons["certificate_expiry"]
    assert "wiki" in weak_reasons["oauth_upstream"]
    assert "no tool_allowlist entry" in weak_reasons["server_scope"]
    assert "ended failed" in weak_reasons["rotation_drill"]
    # evidence says what was read and where, never a secret value
    oauth = next(c for c in outcome.results["hardened"].checks if c.id == "oauth_upstream")
    assert (
        "resource_metadata=" in oauth.evidence[0].observed
        and "authorization_servers" in oauth.evidence[0].observed
    )
    stored = json.dumps([r.as_dict() for r in outcome.results.values()])
    assert audit_site.env["MCP_IR_SANDBOX_AUDIT_TOKEN"] not in stored
    token = (audit_site.box.hardened.data_dir / "tunnel-token").read_text().strip()
    assert token not in stored

    # nothing changed: containers, files, the Tunnels API, the MCP servers (no tool called)
    assert snapshot(audit_site) == before
    assert anthropic_sandbox.calls("/v1/")[anthropic_before:] == []
    for server, seen in zip(audit_site.box.servers, mcp_before, strict=True):
        new = server.calls[len(seen) :]
        assert "tools/call" not in new and new, new
        assert set(new) <= {
            "initialize",
            "notifications/initialized",
            "tools/list",
            "GET /mcp",
            "DELETE /mcp",
            "GET /.well-known/oauth-protected-resource/mcp",
        }, new

    # stored in the evidence store as a verifiable trail
    audit_dir = audit_site.evidence / "_audit" / outcome.audit_id
    assert verify_dir(audit_dir).ok


def test_cli_audit_all_json(audit_site: AuditSite) -> None:
    proc = run_text(
        mcp_ir_command(audit_site.inventory, audit_site.evidence, "audit", "--all", "--json"),
        env=audit_site.env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # the weak target fails
    doc = json.loads(proc.stdout)
    assert set(doc["targets"]) == {"hardened", "weak"}
    for target in doc["targets"].values():
        assert [c["id"] for c in target["checks"]] == ALL_CHECKS
        for check in target["checks"]:
            assert {"id", "status", "severity", "evidence"} <= set(check), check
            assert check["status"] in ("pass", "fail", "unverifiable", "manual")
            assert check["severity"] in ("critical", "high", "medium", "low", "info")
            assert all({"source", "observed"} == set(e) for e in check["evidence"])
    assert "evidence:" in proc.stderr


def test_cli_bad_input_exits_2(audit_site: AuditSite) -> None:
    base = mcp_ir_command(audit_site.inventory, audit_site.evidence, "audit")
    proc = run_text(
        [*base, "--target", "nope"],
        env=audit_site.env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "unknown target 'nope'" in proc.stderr, proc.stderr
    proc = run_text(base, env=audit_site.env, timeout=60, check=False)
    assert proc.returncode == 2 and "--target" in proc.stderr


def test_cli_html_report_of_a_clean_target_exits_0(audit_site: AuditSite, tmp_path: Path) -> None:
    record_drill(audit_site.evidence, "hardened")
    out = tmp_path / "audit.html"
    proc = run_text(
        mcp_ir_command(
            audit_site.inventory,
            audit_site.evidence,
            *("audit", "--target", "hardened", "--format", "html", "--output", str(out)),
        ),
        env=audit_site.env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # nothing failed
    html = out.read_text()
    assert html.startswith("<!doctype html>") and "Drift since the previous run" in html
    assert 'class="unverifiable"><td>network_reach' in html and 'class="manual"><td>sso' in html


def test_killed_audit_leaves_a_valid_trail_and_the_next_run_diffs_against_it(
    audit_site: AuditSite,
) -> None:
    """Killed right after storing its first target's result (failpoint), an audit's
    trail still verifies; the next run completes and diffs the first target against
    the killed run's stored result."""
    from audit.store import audit_trails

    base = mcp_ir_command(audit_site.inventory, audit_site.evidence, "audit", "--all", "--json")
    env = {**audit_site.env, "MCP_IR_FAILPOINT": "posture-audit:after_store"}
    killed = run_text(base, env=env, timeout=120, check=False)
    assert killed.returncode == 137, killed.stderr
    partial = audit_trails(audit_site.evidence)[-1]
    kinds = [r.kind for r in Trail(partial).records()]
    assert kinds.count("audit.result") == 1 and "audit.closed" not in kinds
    assert verify_dir(partial).ok

    again = run_text(base, env=audit_site.env, timeout=120, check=False)
    assert again.returncode == 1, again.stderr  # weak still fails
    doc = json.loads(again.stdout)
    assert doc["targets"]["hardened"]["drift"]["previous_audit"] == partial.name
    assert verify_dir(audit_trails(audit_site.evidence)[-1]).ok
