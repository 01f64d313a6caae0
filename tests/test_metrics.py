"""``GET /metrics`` scraped from a real ``mcp-ir serve`` after real runs: a
breach-response run approved at stop_stack and rejected at the next gate (real
Prefect, podman, CLI), plus a real Slack outbox with undelivered messages."""

from __future__ import annotations

import shutil
import time

import pytest

from notifications.outbox import Outbox
from runbook.incident_view import ts
from runbook.metrics import read_records, summarize
from tests.plugins.site import Site, waiting_at
from tests.test_serve_e2e import (  # noqa: F401 (fixtures)
    Serve,
    serve_site,
    servers,
    start_serve,
    waiting_after_containment,
)

pytestmark = [pytest.mark.podman, pytest.mark.prefect]


def incident_of(line: str) -> str:
    return line.split()[1].rstrip(":")


def test_metrics_from_trails_and_outbox_after_real_runs(
    serve_site: Site,  # noqa: F811 (fixture imported from test_serve_e2e)
    servers: list[Serve],  # noqa: F811
) -> None:
    site = serve_site
    proc = site.start("breach", "--target", site.target, "--as", "alice")
    incident = incident_of(site.wait_for_incident(proc))
    site.wait_for(incident, waiting_at("stop_stack"), proc=proc)

    serve = start_serve(site, servers)
    waiting = serve.metrics()
    assert waiting[("mcp_ir_incidents", (("state", "waiting_for_approval"),))] == 1
    assert waiting[("mcp_ir_gate_wait_seconds_count", ())] == 0
    assert waiting[("mcp_ir_time_to_containment_seconds_count", ())] == 0

    ok = site.cli("approve", incident, "stop_stack", "--as", "alice")
    assert ok.returncode == 0, ok.stderr
    gate = site.wait_for(incident, waiting_after_containment, proc=proc, timeout=150)
    no = site.cli("reject", incident, gate.step, "--as", "bob", "--comment", "not yet")
    assert no.returncode == 0, no.stderr
    proc.wait(120)
    assert proc.returncode == 1  # rejected

    # A real outbox with two queued messages and one delivered.
    outbox = Outbox(site.evidence / "_slack")
    try:
        for n in range(3):
            outbox.enqueue(incident, op="post", channel="C0IR", payload={"text": f"m{n}"})
        first = outbox.pending({incident})[0]
        outbox.mark_sent(first.id, ts="1.0")
    finally:
        outbox.close()

    records = site.trail(incident).records()
    opened = next(r for r in records if r.kind == "incident.opened")
    stopped = next(r for r in records if r.kind == "step.succeeded" and r.step == "stop_stack")
    assert summarize(records).state == "rejected"

    time.sleep(1.2)  # the scrape cache (1 s) expires
    after = serve.metrics()
    assert after[("mcp_ir_incidents", (("state", "rejected"),))] == 1
    assert after[("mcp_ir_incidents", (("state", "waiting_for_approval"),))] == 0
    assert after[("mcp_ir_gate_wait_seconds_count", ())] == 2  # passed + rejected
    assert after[("mcp_ir_gate_wait_seconds_sum", ())] > 0
    assert after[("mcp_ir_time_to_containment_seconds_count", ())] == 1
    expected = (ts(stopped.ts) - ts(opened.ts)).total_seconds()
    assert after[("mcp_ir_time_to_containment_seconds_sum", ())] == pytest.approx(expected)
    assert after[("mcp_ir_notification_outbox_depth", ())] == 2

    # A torn last line (a write in progress) neither breaks nor changes the summary.
    copy = site.evidence / "INC-20260101-000000-cccc"
    copy.mkdir()
    shutil.copy(site.evidence / incident / "trail.jsonl", copy / "trail.jsonl")
    with open(copy / "trail.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"seq": 999, "kind": "run.en')
    assert summarize(read_records(copy / "trail.jsonl")) == summarize(records)
