"""Drift: a check that starts failing between two audit runs is told to Slack through
the notifier (the real slack-sdk against the Slack sandbox), raises the
``mcp_ir_audit_drift`` gauge on /metrics and gets its section in the report; a check
that recovers is listed as recovered."""

from __future__ import annotations

import os
from typing import Any

import pytest

from audit.report import render
from audit.service import run_audit
from runbook.inventory import load_inventory
from runbook.metrics import build_metrics
from tests.plugins.audit_sandbox import AuditSite
from tests.test_audit_compose import record_drill

pytestmark = [pytest.mark.podman]


def slack_texts(slack: Any) -> list[str]:
    return [
        str(r["params"].get("text", "")) + str(r["params"].get("blocks", ""))
        for r in slack.state.received("chat.postMessage")
    ]


def test_a_new_failure_is_drift_reported_to_slack_metrics_and_report(
    audit_site: AuditSite, slack_env: Any
) -> None:
    record_drill(audit_site.evidence, "hardened")
    audit_site.write_inventory(
        slack={
            "token_env": "SLACK_BOT_TOKEN",
            "base_url": slack_env.api_url,
            "default_channel": "C0INCIDENTS",
        }
    )
    inventory = load_inventory(audit_site.inventory)
    env = {**audit_site.env, "SLACK_BOT_TOKEN": os.environ["SLACK_BOT_TOKEN"]}
    first = run_audit(inventory, ["hardened"], audit_site.evidence, initiator="scheduler", env=env)
    assert not first.failed, [c.reason for c in first.results["hardened"].failing()]

    key = audit_site.box.hardened.data_dir / "tls.key"
    mode = key.stat().st_mode & 0o7777
    key.chmod(0o644)  # someone loosened the key's mode: the audit must notice
    try:
        second = run_audit(
            inventory, ["hardened"], audit_site.evidence, initiator="scheduler", env=env
        )
    finally:
        key.chmod(mode)

    drift = second.drift["hardened"]
    assert drift.previous_audit is not None
    assert [c.id for c in drift.new_failures] == ["credentials_at_rest"]

    # Slack: a thread for the drift, through the notifier, naming the check and why
    texts = "\n".join(slack_texts(slack_env))
    assert "credentials_at_rest" in texts and "tls.key" in texts, texts
    assert "hardened" in texts
    channels = {r["params"].get("channel") for r in slack_env.state.received("chat.postMessage")}
    assert channels == {"C0INCIDENTS"}

    # /metrics: the drift gauge for that target and check, and the failing gauge
    body = build_metrics(audit_site.evidence, []).render()[0].decode()
    assert 'mcp_ir_audit_drift{check="credentials_at_rest",target="hardened"} 1.0' in body
    assert 'mcp_ir_audit_drift{check="allowed_ips",target="hardened"} 0.0' in body
    assert 'mcp_ir_audit_check_failing{check="credentials_at_rest",target="hardened"} 1.0' in body

    # the report's drift section, Markdown and HTML
    md = render(second, "md")
    assert "### Drift since the previous run" in md
    assert "**credentials_at_rest** (high)" in md
    html = render(second, "html")
    assert "<strong>credentials_at_rest</strong>" in html

    # the trail of the second run records the drift
    kinds = [r.kind for r in second_trail(audit_site, second.audit_id)]
    assert "audit.drift" in kinds and kinds[-1] == "audit.closed"

    # recovered on the next run: no drift, listed as recovered, gauge back to 0
    slack_env.state.clear_received()
    third = run_audit(inventory, ["hardened"], audit_site.evidence, initiator="scheduler", env=env)
    assert not third.drift["hardened"].drifted
    assert third.drift["hardened"].resolved == ["credentials_at_rest"]
    assert slack_env.state.received("chat.postMessage") == []
    body = build_metrics(audit_site.evidence, []).render()[0].decode()
    assert 'mcp_ir_audit_drift{check="credentials_at_rest",target="hardened"} 0.0' in body
    audit_site.write_inventory()


def second_trail(site: AuditSite, audit_id: str) -> list[Any]:
    from core.trail import Trail

    return Trail(site.evidence / "_audit" / audit_id).records()
